//! The Docker Engine, for real: `cwbackup::docker` and `docker_volume` tasks against the
//! machine's engine, with a compose-labelled project made from the offline test image
//! (`scripts/docker-test-image.sh`; nothing is pulled). Fixtures are made and inspected with
//! the `docker` CLI, independently of the code under test, and removed by a guard whatever
//! the test's outcome.
//!
//! An engine that cannot be reached skips these tests with a note on stderr, except under CI
//! (`CI` set), where it fails them: CI's machine has the engine, and a silent skip would hide
//! that the tests never ran.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cwbackup::docker::{Engine, PROJECT_LABEL, SERVICE_LABEL, VOLUME_LABEL};
use cwbackup::error::ErrorKind;
use cwbackup::repository::manifest::Source;
use serde_json::json;

use crate::common::*;

pub(crate) const IMAGE: &str = "cwbackup-test/busybox:1";

/// A container's loop: write the time into its volume five times a second; exit at once on
/// SIGTERM (a shell that is PID 1 would otherwise ignore it until the stop timeout).
pub(crate) const WRITER: &str = "trap 'exit 0' TERM; while true; do date > /data/now; sleep 0.2; done";

/// Runs the docker CLI; its stdout, trimmed, or a panic with its stderr.
pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The engine, with the test image built; `None` (after saying why) when the engine cannot be
/// reached outside CI. Under CI an unreachable engine or a missing image fails the test.
pub(crate) fn engine(test: &str) -> Option<Engine> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        Engine::connect().map_err(|e| e.message)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/docker-test-image.sh");
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let built = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
        if built {
            Ok(())
        } else {
            Err(format!(
                "the test image {IMAGE} could not be built: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match ready {
        Ok(()) => Some(Engine::connect().expect("the engine was reachable a moment ago")),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: the Docker engine is needed under CI: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped, no usable Docker engine: {why}");
            None
        }
    }
}

/// A name no other test or run uses: `cwbt<pid>x<n>`.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cwbt{}x{}{prefix}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A compose-labelled project on the engine: its volumes and containers, removed on drop.
pub(crate) struct Project {
    pub(crate) name: String,
    pub(crate) volumes: Vec<String>,
    pub(crate) containers: Vec<String>,
}

impl Project {
    pub(crate) fn new() -> Project {
        Project {
            name: unique("proj"),
            volumes: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// Creates the volume `<project>_<short>` with the compose labels; its full name.
    pub(crate) fn volume(&mut self, short: &str) -> String {
        let full = format!("{}_{short}", self.name);
        self.volumes.push(full.clone());
        docker(&[
            "volume",
            "create",
            "--label",
            &format!("{PROJECT_LABEL}={}", self.name),
            "--label",
            &format!("{VOLUME_LABEL}={short}"),
            &full,
        ]);
        full
    }

    /// Starts a container of service `service` that runs `script` with `volume` at /data;
    /// its id.
    pub(crate) fn container(&mut self, service: &str, volume: &str, script: &str) -> String {
        let name = format!("{}-{service}-1", self.name);
        self.containers.push(name.clone());
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &format!("{PROJECT_LABEL}={}", self.name),
            "--label",
            &format!("{SERVICE_LABEL}={service}"),
            "-v",
            &format!("{volume}:/data"),
            IMAGE,
            "sh",
            "-c",
            script,
        ])
    }

    /// A volume that belongs to no project (removed with the project).
    pub(crate) fn plain_volume(&mut self) -> String {
        let name = unique("plain");
        self.volumes.push(name.clone());
        docker(&["volume", "create", &name]);
        name
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Containers first: a volume in use cannot be removed.
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for v in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

/// The mountpoint the CLI reports for a volume.
pub(crate) fn cli_mountpoint(volume: &str) -> PathBuf {
    PathBuf::from(docker(&[
        "volume",
        "inspect",
        "--format",
        "{{ .Mountpoint }}",
        volume,
    ]))
}

/// Whether `file` changes within `within` (a container is writing it).
pub(crate) fn changes(file: &Path, within: Duration) -> bool {
    let before = fs::read(file).ok();
    let started = Instant::now();
    while started.elapsed() < within {
        std::thread::sleep(Duration::from_millis(100));
        if fs::read(file).ok() != before {
            return true;
        }
    }
    false
}

/// Waits until `file` exists (a container's first write).
pub(crate) fn wait_for(file: &Path) {
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn running(engine: &Engine, project: &str, id: &str) -> bool {
    engine
        .project_containers(project)
        .unwrap()
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("container {id} is listed"))
        .running
}

#[test]
fn a_volume_is_resolved_by_name_to_its_mountpoint_and_compose_short_name() {
    let Some(engine) = engine("a_volume_is_resolved_by_name") else {
        return;
    };
    let mut p = Project::new();
    let full = p.volume("service-manager");
    let plain = p.plain_volume();

    let v = engine.volume(&full).unwrap();
    assert_eq!(v.name, full);
    assert_eq!(v.mountpoint, cli_mountpoint(&full));
    assert!(v.mountpoint.is_dir(), "{}", v.mountpoint.display());
    assert_eq!(v.compose_name(), Some("service-manager"));
    assert_eq!(v.project(), Some(p.name.as_str()));
    assert_eq!(v.labels.get(PROJECT_LABEL), Some(&p.name));

    let v = engine.volume(&plain).unwrap();
    assert_eq!(v.compose_name(), None);
    assert_eq!(v.mountpoint, cli_mountpoint(&plain));

    let missing = unique("missing");
    let e = engine.volume(&missing).unwrap_err();
    assert_eq!(e.kind, ErrorKind::VolumeNotFound, "{e}");
    assert!(e.message.contains(&missing), "{}", e.message);
    assert!(e.message.contains("docker volume ls"), "{}", e.message);
    assert_eq!(e.details["docker_volume"], json!(missing));

    // A name that would leave the request's path never reaches the engine.
    let e = engine.volume("../containers/json").unwrap_err();
    assert_eq!(e.kind, ErrorKind::VolumeNotFound, "{e}");
}

#[test]
fn a_project_s_volumes_and_containers_are_found_by_the_compose_labels() {
    let Some(engine) = engine("a_project_s_volumes_and_containers") else {
        return;
    };
    let mut p = Project::new();
    let data = p.volume("data");
    let broker = p.volume("brokerData");
    let a = p.container("writer", &data, WRITER);
    let b = p.container("broker", &broker, WRITER);
    // Another project's and unlabelled objects must not be listed.
    let mut other = Project::new();
    let other_vol = other.volume("data");
    other.container("writer", &other_vol, WRITER);
    p.plain_volume();

    let volumes = engine.project_volumes(&p.name).unwrap();
    let mut expected = vec![data.clone(), broker.clone()];
    expected.sort();
    assert_eq!(
        volumes.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
        expected
    );
    for v in &volumes {
        assert_eq!(v.mountpoint, cli_mountpoint(&v.name));
    }
    let mut shorts: Vec<_> = volumes.iter().filter_map(|v| v.compose_name()).collect();
    shorts.sort();
    assert_eq!(shorts, ["brokerData", "data"]);

    let containers = engine.project_containers(&p.name).unwrap();
    assert_eq!(containers.len(), 2, "{containers:?}");
    let by_id: BTreeMap<_, _> = containers.iter().map(|c| (c.id.as_str(), c)).collect();
    for (id, service) in [(&a, "writer"), (&b, "broker")] {
        let c = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} listed"));
        assert!(c.running, "{c:?}");
        assert_eq!(c.service.as_deref(), Some(service));
        assert_eq!(c.name, format!("{}-{service}-1", p.name));
    }
    // The containers really write into the volumes the engine resolved.
    for v in &volumes {
        let now = v.mountpoint.join("now");
        wait_for(&now);
        assert!(changes(&now, Duration::from_secs(5)), "{}", v.name);
    }
}

#[test]
fn a_container_is_stopped_and_started_and_reports_its_state() {
    let Some(engine) = engine("a_container_is_stopped_and_started") else {
        return;
    };
    let mut p = Project::new();
    let vol = p.volume("data");
    let id = p.container("writer", &vol, WRITER);
    let now = engine.volume(&vol).unwrap().mountpoint.join("now");
    wait_for(&now);
    assert!(running(&engine, &p.name, &id));

    engine.stop(&id, 10).unwrap();
    assert!(!running(&engine, &p.name, &id));
    assert_eq!(
        docker(&["inspect", "--format", "{{ .State.Running }}", &id]),
        "false"
    );
    assert!(
        !changes(&now, Duration::from_millis(800)),
        "a stopped container still writes"
    );
    // Stopping a stopped container is no error.
    engine.stop(&id, 10).unwrap();

    engine.start(&id).unwrap();
    assert!(running(&engine, &p.name, &id));
    assert!(
        changes(&now, Duration::from_secs(5)),
        "the started container writes again"
    );
    // Starting a running container is no error.
    engine.start(&id).unwrap();

    let e = engine.stop(&unique("nosuch"), 1).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DockerError, "{e}");
}

#[test]
fn a_container_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let Some(engine) = engine("a_container_that_ignores_sigterm") else {
        return;
    };
    let mut p = Project::new();
    let vol = p.volume("data");
    // A shell that is PID 1 and traps nothing ignores SIGTERM: only the SIGKILL ends it.
    let id = p.container("stubborn", &vol, "while true; do sleep 0.2; done");
    assert!(running(&engine, &p.name, &id));
    let started = Instant::now();
    engine.stop(&id, 1).unwrap();
    let took = started.elapsed();
    assert!(!running(&engine, &p.name, &id));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(30),
        "stop took {took:?}"
    );
}

#[test]
fn create_volume_sets_the_labels() {
    let Some(engine) = engine("create_volume_sets_the_labels") else {
        return;
    };
    let mut p = Project::new();
    let full = format!("{}_certs", p.name);
    p.volumes.push(full.clone());
    let labels = BTreeMap::from([
        (PROJECT_LABEL.to_string(), p.name.clone()),
        (VOLUME_LABEL.to_string(), "certs".to_string()),
    ]);
    let v = engine.create_volume(&full, &labels).unwrap();
    assert_eq!(v.name, full);
    assert_eq!(v.labels, labels);
    assert_eq!(v.mountpoint, cli_mountpoint(&full));
    assert!(v.mountpoint.is_dir());
    let cli_labels: BTreeMap<String, String> = serde_json::from_str(&docker(&[
        "volume",
        "inspect",
        "--format",
        "{{ json .Labels }}",
        &full,
    ]))
    .unwrap();
    assert_eq!(cli_labels, labels);
    // Found as the project's, by its short name.
    let found = engine.project_volumes(&p.name).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].compose_name(), Some("certs"));

    let e = engine.create_volume("a/b", &labels).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DockerError, "{e}");
}

#[test]
fn an_unknown_project_is_volume_not_found_naming_the_projects_the_engine_has() {
    let Some(engine) = engine("an_unknown_project") else {
        return;
    };
    let mut p = Project::new();
    p.volume("data");
    let unknown = unique("unknown");
    let e = engine.project_volumes(&unknown).unwrap_err();
    assert_eq!(e.kind, ErrorKind::VolumeNotFound, "{e}");
    assert!(e.message.contains(&unknown), "{}", e.message);
    assert!(e.message.contains(&p.name), "{}", e.message);
    let projects = e.details["projects"].as_array().unwrap();
    assert!(projects.contains(&json!(p.name)), "{projects:?}");
    assert!(!projects.contains(&json!(unknown)));
    // A project without containers has none, which is no error.
    assert!(engine.project_containers(&unknown).unwrap().is_empty());
}

#[test]
fn an_engine_that_cannot_be_reached_is_docker_error_with_a_hint() {
    // Needs no engine: DOCKER_HOST points where none listens.
    let f = Fixture::sample();
    let task = json!({"operation": "backup", "repository": f.repo,
                      "volume": {"docker_volume": "connectware_service-manager"}});
    // No socket at all, and a socket file nobody listens on (a daemon that died).
    let dead = f.path("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    for host in [
        "unix:///nonexistent.sock".to_string(),
        format!("unix://{}", dead.display()),
    ] {
        let r = run_raw(task.to_string().as_bytes(), &[("DOCKER_HOST", &host)]);
        assert_eq!(r.code, 1, "{}", r.stdout);
        let e = r.result.error.unwrap();
        assert_eq!(e.kind, ErrorKind::DockerError, "{}", e.message);
        assert!(e.message.contains("daemon running"), "{}", e.message);
        assert!(e.message.contains("docker` group"), "{}", e.message);
        assert!(
            e.message.contains(host.trim_start_matches("unix://")),
            "{}",
            e.message
        );
        assert_eq!(e.details["docker_host"], json!(host));
        assert!(!f.repo.exists(), "nothing written");
    }
}

#[test]
fn a_user_who_may_not_open_the_socket_is_told_so() {
    let Some(engine) = engine("a_user_who_may_not_open_the_socket") else {
        return;
    };
    let Some(socket) = engine.host().strip_prefix("unix://") else {
        eprintln!("a_user_who_may_not_open_the_socket: skipped, the engine is not on a socket");
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("runuser").arg("--help").output().is_err() {
        eprintln!("a_user_who_may_not_open_the_socket: skipped, needs root and runuser");
        return;
    }
    // The binary where `nobody` may run it; `nobody` is in no `docker` group.
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = tmp.path().join("cwbackup");
    fs::copy(BIN, &bin).unwrap();
    let task = json!({"operation": "backup", "repository": tmp.path().join("repo"),
                      "volume": {"docker_volume": "connectware_service-manager"}});
    let mut child = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        task.to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let result: cwbackup::result::TaskResult = serde_json::from_slice(&out.stdout).unwrap();
    let e = result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::DockerError, "{}", e.message);
    assert!(e.message.contains("Permission denied"), "{}", e.message);
    assert!(e.message.contains(socket), "{}", e.message);
    assert!(e.message.contains("docker` group"), "{}", e.message);
}

#[test]
fn a_backup_reads_a_docker_volume_through_the_engine() {
    let Some(engine) = engine("a_backup_reads_a_docker_volume") else {
        return;
    };
    let mut p = Project::new();
    let full = p.volume("service-manager");
    let plain = p.plain_volume();
    let mountpoint = engine.volume(&full).unwrap().mountpoint;
    sample_tree(&mountpoint);
    write(
        &engine.volume(&plain).unwrap().mountpoint.join("x.conf"),
        b"x\n",
        0o644,
    );
    let f = Fixture::empty();

    // `volume`: the component named `volume`, from the mountpoint.
    let task = json!({"operation": "backup", "repository": f.repo,
                      "volume": {"docker_volume": full}});
    let r = run_ok(&task);
    let v = r.volume.as_ref().unwrap();
    assert_eq!(v.path, mountpoint.display().to_string());
    assert_eq!(v.content_digest, spec_digest(&mountpoint));
    let m = r.backup.unwrap().manifest.unwrap();
    let c = m.component("volume").unwrap();
    assert_eq!(c.tree().unwrap().source, Source::DockerVolume(full.clone()));

    // `volumes`: each a component named by its compose short name, else by its full name.
    let task = json!({"operation": "backup", "repository": f.repo, "volumes": [
        {"docker_volume": full}, {"docker_volume": plain}]});
    let r = run_ok(&task);
    let names: Vec<_> = r
        .components
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["service-manager".to_string(), plain.clone()]);
    let m = r.backup.unwrap().manifest.unwrap();
    let c = m.component("service-manager").unwrap();
    assert_eq!(c.file, "volumes/service-manager.tar.gz");
    assert_eq!(c.content_digest, spec_digest(&mountpoint));
    assert_eq!(c.tree().unwrap().source, Source::DockerVolume(full.clone()));

    // A volume the engine lacks.
    let missing = unique("missing");
    let task = json!({"operation": "backup", "repository": f.repo,
                      "volume": {"docker_volume": missing}});
    let r = run(&task);
    assert_eq!(r.code, 1);
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::VolumeNotFound, "{}", e.message);
    assert!(e.message.contains("docker volume ls"), "{}", e.message);
}
