//! The whole installation (SPEC §9) on the machine's real Docker Engine: a compose-labelled
//! project of several volumes with running containers (from the offline test image), an
//! install directory with `.env` and `docker-compose.yml`, backed up with the containers
//! stopped, restored on the same host and onto a "fresh host" (containers, volumes and
//! install directory gone). Fixtures are made and inspected with the `docker` CLI, never with
//! the code under test.
//!
//! Skipped with a note outside CI when the engine cannot be reached; under CI they must run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cwbackup::error::ErrorKind;
use cwbackup::repository::manifest::Source;
use serde_json::{Value, json};

use crate::common::*;
use crate::docker::{IMAGE, Project, WRITER, cli_mountpoint, docker, engine, unique, wait_for};

/// A container that writes nothing and stops at once on SIGTERM.
const IDLE: &str = "trap 'exit 0' TERM; while true; do sleep 1 & wait; done";
/// A container that ignores SIGTERM (a shell as PID 1 has no default handler): only the
/// SIGKILL after the stop timeout ends it.
const STUBBORN: &str = "while true; do sleep 1; done";

/// Removes every container of the project, also those `docker-compose up` made.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=com.docker.compose.project={}", self.0)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// `docker inspect` of one field of a container.
fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, id])
}

fn is_running(id: &str) -> bool {
    inspect(id, "{{.State.Running}}") == "true"
}

/// The compose file of the test project: two services on the test image, each with its volume.
fn compose_file(script: &str) -> String {
    let command = serde_json::to_string(&["sh", "-c", script]).unwrap();
    format!(
        "version: \"2.4\"\nservices:\n  service-manager:\n    image: {IMAGE}\n    command: {command}\n    volumes: [\"service-manager:/data\"]\n  postgresql:\n    image: {IMAGE}\n    command: {command}\n    volumes: [\"postgresql:/data\"]\nvolumes:\n  service-manager: {{}}\n  postgresql: {{}}\n"
    )
}

/// A project with the volumes `service-manager` and `postgresql` (some content in each), a
/// container of each running `script`, and an install directory.
struct Installation {
    project: Project,
    _containers: Containers,
    ids: Vec<String>,
    install_dir: PathBuf,
    fixture: Fixture,
}

impl Installation {
    fn new(script: &str) -> Installation {
        let mut project = Project::new();
        let containers = Containers(project.name.clone());
        let sm = project.volume("service-manager");
        let pg = project.volume("postgresql");
        write(
            &cli_mountpoint(&sm).join("services/opcua.yml"),
            b"description: OPC UA\n",
            0o644,
        );
        write(&cli_mountpoint(&pg).join("PG_VERSION"), b"13\n", 0o600);
        write(&cli_mountpoint(&pg).join("base/1/112"), &[7u8; 70_000], 0o600);
        let ids = vec![
            project.container("service-manager", &sm, script),
            project.container("postgresql", &pg, script),
        ];
        let fixture = Fixture::empty();
        let install_dir = fixture.path("connectware");
        write(&install_dir.join(".env"), b"CYBUS_LICENSE_KEY=not-a-real-key\n", 0o600);
        write(&install_dir.join("docker-compose.yml"), compose_file(IDLE).as_bytes(), 0o644);
        write(&install_dir.join("notes.txt"), b"the operator's own file\n", 0o644);
        Installation {
            project,
            _containers: containers,
            ids,
            install_dir,
            fixture,
        }
    }

    fn task(&self, operation: &str) -> Value {
        json!({"operation": operation, "repository": self.fixture.repo,
               "installation": {"compose_project": self.project.name,
                                "install_dir": self.install_dir, "stop_timeout_s": 10}})
    }

    /// When each of its containers last started.
    fn started_at(&self) -> Vec<String> {
        self.ids.iter().map(|id| inspect(id, "{{.State.StartedAt}}")).collect()
    }

    fn mountpoint(&self, short: &str) -> PathBuf {
        cli_mountpoint(&format!("{}_{short}", self.project.name))
    }
}

fn component_names(r: &cwbackup::result::TaskResult) -> Vec<String> {
    r.components
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

/// RFC 3339 UTC times to the millisecond compare as strings.
fn ms(t: &str) -> &str {
    &t[..23]
}

#[test]
fn a_quiesced_backup_reads_every_volume_with_the_running_containers_stopped_and_starts_them_again() {
    if engine("a_quiesced_backup").is_none() {
        return;
    }
    let mut inst = Installation::new(WRITER);
    for short in ["service-manager", "postgresql"] {
        wait_for(&inst.mountpoint(short).join("now"));
    }
    // A container of the project that is not running stays stopped.
    let pg = format!("{}_postgresql", inst.project.name);
    let stopped = inst.project.container("worker", &pg, "true");
    wait_until(|| !is_running(&stopped));
    let stopped_started_at = inspect(&stopped, "{{.State.StartedAt}}");

    let r = run_ok(&inst.task("backup"));
    assert!(r.changed);
    assert_eq!(component_names(&r), ["postgresql", "service-manager", "files"]);
    let mut names = r.containers.clone().unwrap();
    names.sort();
    let mut expected: Vec<String> = inst.ids.iter().map(|id| inspect(id, "{{.Name}}").trim_start_matches('/').to_string()).collect();
    expected.sort();
    assert_eq!(names, expected, "exactly the running containers were stopped");
    let downtime = r.downtime_ms.unwrap();
    let m = r.backup.as_ref().unwrap().manifest.clone().unwrap();
    let i = m.installation.as_ref().unwrap();
    assert!(i.quiesced);
    assert_eq!(i.downtime_ms, Some(downtime));
    assert_eq!(i.files, [".env", "docker-compose.yml"]);
    assert_eq!(i.compose_project, inst.project.name);
    assert!(
        r.warnings.iter().any(|w| w.contains(".env") && w.contains("encryption")),
        "{:?}",
        r.warnings
    );
    // Each container stopped before its volume was read and started after every volume was.
    for (id, short) in inst.ids.iter().zip(["service-manager", "postgresql"]) {
        assert!(is_running(id), "{short} runs again");
        let c = m.component(short).unwrap();
        assert_eq!(
            c.tree().unwrap().source,
            Source::DockerVolume(format!("{}_{short}", inst.project.name))
        );
        assert_eq!(c.file, format!("volumes/{short}.tar.gz"));
        let finished = inspect(id, "{{.State.FinishedAt}}");
        let started = inspect(id, "{{.State.StartedAt}}");
        assert!(ms(&finished) <= ms(&c.started_at), "{short}: stopped {finished}, read from {}", c.started_at);
        assert!(ms(&started) >= ms(&c.finished_at), "{short}: started {started}, read until {}", c.finished_at);
    }
    assert!(!is_running(&stopped));
    assert_eq!(inspect(&stopped, "{{.State.StartedAt}}"), stopped_started_at, "never started");
    // The files component holds the two files with their modes, and nothing else of the
    // install directory.
    let files = m.component("files").unwrap();
    assert_eq!(files.kind_name(), "files");
    let out = inst.fixture.path("files-out");
    gnu_tar_extract(&only_set(&inst.fixture.repo).join("files.tar.gz"), &out, &[]);
    assert_eq!(fs::metadata(out.join(".env")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(out.join("docker-compose.yml").is_file());
    assert!(!out.join("notes.txt").exists());
    assert!(!inst.install_dir.join(".cwbackup-quiesce.json").exists(), "journal removed");
}

/// Polls `cond` for up to 20 s.
fn wait_until(cond: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < Duration::from_secs(20), "condition never held");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unchanged_installation_is_not_stopped_and_check_mode_changes_nothing() {
    if engine("an_unchanged_installation").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    let mut dry = inst.task("backup");
    dry["dry_run"] = json!(true);
    let r = run_ok(&dry);
    assert!(r.changed && r.dry_run);
    assert!(!inst.fixture.repo.exists(), "a dry run creates no repository");
    let started: Vec<String> = inst.started_at();
    assert_eq!(r.containers.as_ref().map(Vec::len), Some(2), "the containers it would stop");
    assert!(r.msg.contains("would stop 2 running container(s)"), "{}", r.msg);

    let first = run_ok(&inst.task("backup"));
    assert!(first.changed);
    let after_first: Vec<String> = inst.started_at();
    assert_ne!(started, after_first, "the first backup stopped and started them");

    let second = run_ok(&inst.task("backup"));
    assert!(!second.changed, "{}", second.msg);
    assert!(second.containers.is_none(), "nothing changed: no stop");
    let after_second: Vec<String> = inst.started_at();
    assert_eq!(after_first, after_second);
    assert_eq!(inst.fixture.set_ids().len(), 1);

    // A change to .env alone is a new set.
    write(&inst.install_dir.join(".env"), b"CYBUS_LICENSE_KEY=another\n", 0o600);
    let third = run_ok(&inst.task("backup"));
    assert!(third.changed);
    let files = third.components.unwrap().into_iter().find(|c| c.name == "files").unwrap();
    assert!(files.changed);
}

#[test]
fn a_kill_while_the_containers_are_stopped_leaves_them_started_by_the_next_task() {
    if engine("a_kill_while_the_containers_are_stopped").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    let pause = inst.fixture.path("pause");
    let mut reached = pause.clone().into_os_string();
    reached.push(".reached");
    let mut child = start(
        &inst.task("backup"),
        &[("CWBACKUP_TEST_PAUSE_QUIESCED", pause.as_os_str())],
        std::process::Stdio::null(),
    );
    wait_for(Path::new(&reached));
    for id in &inst.ids {
        assert!(!is_running(id), "stopped while the backup reads");
    }
    let journal = inst.install_dir.join(".cwbackup-quiesce.json");
    assert!(journal.is_file());
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for id in &inst.ids {
        assert!(!is_running(id), "a SIGKILL starts nothing");
    }

    // The next task on the installation (a dry run only reports it).
    let mut dry = inst.task("backup");
    dry["dry_run"] = json!(true);
    let r = run_ok(&dry);
    assert!(r.warnings.iter().any(|w| w.contains("left 2 container(s)")), "{:?}", r.warnings);
    assert!(journal.is_file());
    let r = run_ok(&inst.task("backup"));
    assert!(
        r.warnings.iter().filter(|w| w.contains("started it again")).count() == 2,
        "{:?}",
        r.warnings
    );
    for id in &inst.ids {
        assert!(is_running(id));
    }
    assert!(!journal.exists());
}

#[test]
fn a_container_that_does_not_stop_in_time_fails_the_backup_after_all_are_started_again() {
    if engine("a_container_that_does_not_stop_in_time").is_none() {
        return;
    }
    let mut inst = Installation::new(IDLE);
    let pg = format!("{}_postgresql", inst.project.name);
    let stubborn = inst.project.container("broker", &pg, STUBBORN);
    let mut task = inst.task("backup");
    task["installation"]["stop_timeout_s"] = json!(1);
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::DockerError, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert!(e.message.contains("-broker-1"), "{}", e.message);
    assert!(e.message.contains("stop_timeout_s"), "{}", e.message);
    for id in inst.ids.iter().chain([&stubborn]) {
        assert!(is_running(id), "every stopped container runs again");
    }
    assert!(inst.fixture.set_ids().is_empty(), "no set");
}

#[test]
fn unknown_projects_volumes_and_files_are_named() {
    if engine("unknown_projects_volumes_and_files").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    let mut task = inst.task("backup");
    task["installation"]["compose_project"] = json!(unique("nope"));
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::VolumeNotFound);
    let e = r.result.error.unwrap();
    assert!(e.message.contains(&inst.project.name), "names the projects it has: {}", e.message);

    let mut task = inst.task("backup");
    task["installation"]["volumes"] = json!(["postgresql", "workbench"]);
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::VolumeNotFound);
    let e = r.result.error.unwrap();
    assert!(e.message.contains("no volume `workbench`"), "{}", e.message);
    assert!(e.message.contains("postgresql, service-manager"), "{}", e.message);

    let mut task = inst.task("backup");
    task["installation"]["files"] = json!([".env", "missing.yml"]);
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::VolumeNotFound);
    assert!(r.result.error.unwrap().message.contains("missing.yml"));

    let mut task = inst.task("backup");
    task["installation"]["files"] = json!(["../etc/passwd"]);
    assert_eq!(kind(&run(&task)), ErrorKind::InvalidTask);
    let mut task = inst.task("backup");
    task["volume"] = json!({"path": "/tmp"});
    assert_eq!(kind(&run(&task)), ErrorKind::InvalidTask);
    for id in &inst.ids {
        assert!(is_running(id));
    }
}

#[test]
fn a_restore_on_the_same_host_puts_back_volumes_and_files_with_the_containers_stopped() {
    if engine("a_restore_on_the_same_host").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    let backup = run_ok(&inst.task("backup"));
    let set = backup.backup.unwrap().id;
    let sm = inst.mountpoint("service-manager");
    let pg = inst.mountpoint("postgresql");
    let (sm_digest, pg_digest) = (spec_digest(&sm), spec_digest(&pg));
    let env_before = fs::read(inst.install_dir.join(".env")).unwrap();

    // Damage both volumes and .env; the operator's own file changes too and must stay so.
    fs::remove_file(sm.join("services/opcua.yml")).unwrap();
    write(&pg.join("base/1/112"), b"garbage", 0o600);
    write(&inst.install_dir.join(".env"), b"CYBUS_LICENSE_KEY=lost\n", 0o644);
    write(&inst.install_dir.join("notes.txt"), b"changed by the operator\n", 0o644);

    let mut dry = inst.task("restore");
    dry["dry_run"] = json!(true);
    dry["diff"] = json!(true);
    let r = run_ok(&dry);
    assert!(r.changed);
    assert!(r.components.as_ref().unwrap().iter().all(|c| c.changed), "{:?}", r.components);
    assert_ne!(spec_digest(&sm), sm_digest, "a dry run changes nothing");

    let started: Vec<String> = inst.started_at();
    let r = run_ok(&inst.task("restore"));
    assert!(r.changed, "{}", r.msg);
    assert_eq!(r.backup.as_ref().unwrap().id, set);
    assert_eq!(spec_digest(&sm), sm_digest);
    assert_eq!(spec_digest(&pg), pg_digest);
    assert_eq!(fs::read(inst.install_dir.join(".env")).unwrap(), env_before);
    assert_eq!(
        fs::metadata(inst.install_dir.join(".env")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read(inst.install_dir.join("notes.txt")).unwrap(), b"changed by the operator\n");
    assert_eq!(r.containers.as_ref().unwrap().len(), 2);
    assert!(!r.restart_required, "the containers stopped were started on the restored data");
    for (id, before) in inst.ids.iter().zip(&started) {
        assert!(is_running(id));
        assert_ne!(&inspect(id, "{{.State.StartedAt}}"), before, "stopped and started");
    }
    // The safety set holds the damaged state, restorable as an installation.
    let safety = r.safety_backup.unwrap();
    let m = safety.manifest.unwrap();
    assert_eq!(m.installation.as_ref().unwrap().files, [".env", "docker-compose.yml"]);
    assert!(m.component("postgresql").is_some() && m.component("files").is_some());

    let started: Vec<String> = inst.started_at();
    let again = run_ok(&inst.task("restore"));
    assert!(!again.changed, "{}", again.msg);
    assert!(again.containers.is_none(), "nothing to restore: nothing stopped");
    let after: Vec<String> = inst.started_at();
    assert_eq!(started, after);
}

#[test]
fn a_lost_host_is_rebuilt_from_the_set_volumes_labels_files_and_all() {
    if engine("a_lost_host_is_rebuilt").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    run_ok(&inst.task("backup"));
    let digests: Vec<String> = ["service-manager", "postgresql"]
        .iter()
        .map(|s| spec_digest(&inst.mountpoint(s)))
        .collect();
    let env = fs::read(inst.install_dir.join(".env")).unwrap();
    let compose = fs::read(inst.install_dir.join("docker-compose.yml")).unwrap();

    // The host is lost: containers, volumes and the install directory are gone.
    for id in &inst.ids {
        docker(&["rm", "-f", id]);
    }
    for v in &inst.project.volumes {
        docker(&["volume", "rm", v]);
    }
    fs::remove_dir_all(&inst.install_dir).unwrap();

    // Check mode says what it would do and creates nothing.
    let mut dry = inst.task("restore");
    dry["dry_run"] = json!(true);
    let r = run_ok(&dry);
    assert!(r.changed);
    assert!(!inst.install_dir.exists());
    let listed = docker(&["volume", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={}", inst.project.name)]);
    assert!(listed.is_empty(), "no volume created: {listed}");

    let mut task = inst.task("restore");
    let compose_cli = Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success());
    if compose_cli {
        let file = inst.install_dir.join("docker-compose.yml");
        task["restart"] = json!(["docker-compose", "-p", inst.project.name, "-f", file, "up", "-d"]);
    } else {
        eprintln!("a_lost_host_is_rebuilt: no docker-compose here; the restore's restart is not run through it");
    }
    let r = run_ok(&task);
    assert!(r.changed);
    assert!(r.safety_backup.is_none(), "nothing existed: no safety set");
    for (short, digest) in ["service-manager", "postgresql"].iter().zip(&digests) {
        let full = format!("{}_{short}", inst.project.name);
        assert_eq!(
            docker(&["volume", "inspect", "--format", "{{index .Labels \"com.docker.compose.project\"}} {{index .Labels \"com.docker.compose.volume\"}}", &full]),
            format!("{} {short}", inst.project.name)
        );
        assert_eq!(&spec_digest(&cli_mountpoint(&full)), digest, "{short}");
    }
    assert_eq!(fs::read(inst.install_dir.join(".env")).unwrap(), env);
    assert_eq!(fs::metadata(inst.install_dir.join(".env")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::read(inst.install_dir.join("docker-compose.yml")).unwrap(), compose);
    if compose_cli {
        assert!(!r.restart_required);
        let running = docker(&["ps", "-q", "--filter", &format!("label=com.docker.compose.project={}", inst.project.name)]);
        assert_eq!(running.lines().count(), 2, "compose adopted the volumes and started both services");
        // The services run on the restored volumes.
        let sm = docker(&["ps", "-q", "--filter", &format!("label=com.docker.compose.project={}", inst.project.name), "--filter", "label=com.docker.compose.service=service-manager"]);
        let out = docker(&["exec", &sm, "cat", "/data/services/opcua.yml"]);
        assert_eq!(out, "description: OPC UA");
    }
    let again = run_ok(&inst.task("restore"));
    assert!(!again.changed, "{}", again.msg);
}

#[test]
fn a_restart_that_removes_a_stopped_container_still_reports_the_restore() {
    if engine("a_restart_that_removes_a_stopped_container").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    run_ok(&inst.task("backup"));
    fs::remove_file(inst.mountpoint("service-manager").join("services/opcua.yml")).unwrap();
    // `docker compose up` recreating a container looks like this to the task: a container it
    // stopped is gone when it starts them again.
    let mut task = inst.task("restore");
    task["restart"] = json!(["docker", "rm", "-f", inst.ids[0]]);
    let r = run_ok(&task);
    assert!(r.changed, "{}", r.msg);
    assert!(r.msg.contains("restored"), "{}", r.msg);
    assert!(r.safety_backup.is_some());
    assert!(is_running(&inst.ids[1]));
    assert!(!inst.install_dir.join(".cwbackup-quiesce.json").exists());
    assert!(inst.mountpoint("service-manager").join("services/opcua.yml").is_file());
}

#[test]
fn the_install_directory_is_locked_by_every_installation_task_and_a_live_journal_left_alone() {
    if engine("the_install_directory_is_locked").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    let pause = inst.fixture.path("pause");
    let mut reached = pause.clone().into_os_string();
    reached.push(".reached");
    // A backup of postgresql alone, held with the containers stopped.
    let mut a = inst.task("backup");
    a["installation"]["volumes"] = json!(["postgresql"]);
    let child = start(
        &a,
        &[("CWBACKUP_TEST_PAUSE_QUIESCED", pause.as_os_str())],
        std::process::Stdio::piped(),
    );
    wait_for(Path::new(&reached));
    // Another of service-manager alone, without files, into another repository: the install
    // directory is still the first task's, so it is busy, and the containers stay stopped.
    let mut b = inst.task("backup");
    b["repository"] = json!(inst.fixture.path("repo-b"));
    b["installation"]["volumes"] = json!(["service-manager"]);
    b["installation"]["files"] = json!([]);
    b["installation"]["quiesce"] = json!("none");
    let r = run(&b);
    assert_eq!(kind(&r), ErrorKind::Busy, "{}", r.stdout);
    for id in &inst.ids {
        assert!(!is_running(id), "the first task's containers are left to it");
    }
    fs::write(&pause, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let result: cwbackup::result::TaskResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result.ok && result.changed, "{}", result.msg);
    for id in &inst.ids {
        assert!(is_running(id));
    }
}

#[test]
fn a_repository_inside_the_install_directory_is_never_one_of_its_files() {
    if engine("a_repository_inside_the_install_directory").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    let mut task = inst.task("backup");
    task["repository"] = json!(inst.install_dir.join("backups"));
    task["installation"]["files"] = json!([".env", "backups"]);
    fs::create_dir_all(inst.install_dir.join("backups")).unwrap();
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::InvalidTask, "{}", r.stdout);
    // Not listed, the repository in the install directory is fine, and a restore keeps it.
    task["installation"]["files"] = json!([".env", "docker-compose.yml"]);
    run_ok(&task);
    write(&inst.install_dir.join(".env"), b"CYBUS_LICENSE_KEY=lost\n", 0o600);
    let mut restore = task.clone();
    restore["operation"] = json!("restore");
    let r = run_ok(&restore);
    assert!(r.changed);
    assert!(inst.install_dir.join("backups").is_dir());
    assert_eq!(fs::read(inst.install_dir.join(".env")).unwrap(), b"CYBUS_LICENSE_KEY=not-a-real-key\n");
    // A symlink named as a file is refused; as a default file it is a warning.
    std::os::unix::fs::symlink("/etc/hostname", inst.install_dir.join("link.env")).unwrap();
    task["installation"]["files"] = json!(["link.env"]);
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::VolumeNotFound, "{}", r.stdout);
    assert!(r.result.error.unwrap().message.contains("symlink"));
}

#[test]
fn a_restore_keeps_an_unlabelled_volume_of_that_name_in_its_safety_set_and_files_all_or_none() {
    if engine("a_restore_keeps_an_unlabelled_volume").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    run_ok(&inst.task("backup"));
    // The host loses the project, but a volume of postgresql's name exists without labels
    // and holds data.
    for id in &inst.ids {
        docker(&["rm", "-f", id]);
    }
    let pg = format!("{}_postgresql", inst.project.name);
    docker(&["volume", "rm", &pg]);
    docker(&["volume", "create", &pg]);
    write(&cli_mountpoint(&pg).join("precious"), b"not in any set\n", 0o600);
    // `files: []` leaves the install directory alone; a part of the set's files is refused.
    write(&inst.install_dir.join("docker-compose.yml"), b"# the operator's newer compose file\n", 0o644);
    let mut part = inst.task("restore");
    part["installation"]["files"] = json!([".env"]);
    assert_eq!(kind(&run(&part)), ErrorKind::InvalidTask);
    let mut task = inst.task("restore");
    task["installation"]["files"] = json!([]);
    let r = run_ok(&task);
    assert!(r.changed);
    assert!(r.warnings.iter().any(|w| w.contains("without the labels")), "{:?}", r.warnings);
    let safety = r.safety_backup.expect("what existed is kept");
    let m = safety.manifest.unwrap();
    assert!(m.component("postgresql").is_some(), "{:?}", m.names());
    assert_eq!(fs::read(inst.install_dir.join("docker-compose.yml")).unwrap(), b"# the operator's newer compose file\n");
    assert!(!r.components.unwrap().iter().any(|c| c.name == "files"));
    assert!(!r.warnings.iter().any(|w| w.contains("docker-compose.yml")), "{:?}", r.warnings);
    // The whole installation: the compose file comes back, with the warning it deserves.
    let r = run_ok(&inst.task("restore"));
    assert!(r.changed);
    assert!(r.warnings.iter().any(|w| w.contains("docker-compose.yml")), "{:?}", r.warnings);
}

#[test]
fn a_fresh_host_gets_nothing_before_the_set_is_checked() {
    if engine("a_fresh_host_gets_nothing").is_none() {
        return;
    }
    let inst = Installation::new(IDLE);
    let r = run_ok(&inst.task("backup"));
    for id in &inst.ids {
        docker(&["rm", "-f", id]);
    }
    for v in &inst.project.volumes {
        docker(&["volume", "rm", v]);
    }
    fs::remove_dir_all(&inst.install_dir).unwrap();
    // Damage the set: the restore refuses it before any volume or directory is created.
    let set = inst.fixture.repo.join(r.backup.unwrap().id);
    let archive = set.join("volumes/postgresql.tar.gz");
    let mut bytes = fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&archive, bytes).unwrap();
    let r = run(&inst.task("restore"));
    assert_eq!(kind(&r), ErrorKind::IntegrityError, "{}", r.stdout);
    assert!(!inst.install_dir.exists());
    let listed = docker(&["volume", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={}", inst.project.name)]);
    assert!(listed.is_empty(), "{listed}");
}

#[test]
fn a_sigterm_while_the_containers_are_stopped_starts_them_before_the_process_ends() {
    if engine("a_sigterm_while_the_containers_are_stopped").is_none() {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let inst = Installation::new(IDLE);
    for (signal, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
        let pause = inst.fixture.path(&format!("pause-{name}"));
        let mut reached = pause.clone().into_os_string();
        reached.push(".reached");
        let mut child = start(
            &inst.task("backup"),
            &[("CWBACKUP_TEST_PAUSE_QUIESCED", pause.as_os_str())],
            std::process::Stdio::null(),
        );
        wait_for(Path::new(&reached));
        for id in &inst.ids {
            assert!(!is_running(id), "stopped while the backup reads");
        }
        // systemctl stop, a CI timeout, Ctrl-C.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(signal), "ends as the signal would: {status:?}");
        for id in &inst.ids {
            assert!(is_running(id), "SIG{name}: the containers run again");
        }
        assert!(!inst.install_dir.join(".cwbackup-quiesce.json").exists(), "SIG{name}: no journal left");
        assert!(inst.fixture.set_ids().is_empty(), "SIG{name}: no set");
    }
}
