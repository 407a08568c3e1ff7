//! The task key `volumes`: several volumes in one set, each a component of its own
//! (`volumes/<name>.tar.gz`), through every operation; and sets written by the first release
//! (`cwbackup/1`), which every operation still reads.

use std::fs;
use std::path::{Path, PathBuf};

use cwbackup::error::ErrorKind;
use serde_json::{Value, json};

use crate::common::*;

/// Two volumes, `a` (the sample tree) and `b` (a few files), beside a repository.
struct Two {
    f: Fixture,
    a: PathBuf,
    b: PathBuf,
}

impl Two {
    fn new() -> Two {
        let f = Fixture::empty();
        let a = f.path("a");
        let b = f.path("b");
        fs::create_dir(&a).unwrap();
        sample_tree(&a);
        write(&b.join("postgresql.conf"), b"max_connections = 100\n", 0o600);
        write(&b.join("base/1/1259"), &[7u8; 70_000], 0o600);
        Two { f, a, b }
    }

    fn task(&self, operation: &str) -> Value {
        json!({"operation": operation, "repository": self.f.repo, "volumes": [
            {"path": self.a, "name": "a"},
            {"path": self.b, "name": "b"},
        ]})
    }
}

#[test]
fn backup_of_volumes_writes_one_archive_per_volume_and_gnu_tar_reads_each() {
    let t = Two::new();
    let r = run_ok(&t.task("backup"));
    assert!(r.changed);
    let components = r.components.as_ref().unwrap();
    assert_eq!(
        components.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(components.iter().all(|c| c.changed && c.kind == "volume"));
    assert!(r.volume.is_none(), "`volume` is for the component named volume");
    let m = r.backup.unwrap().manifest.unwrap();
    assert_eq!(m.format, "cwbackup/2");
    let set = only_set(&t.f.repo);
    for (name, dir) in [("a", &t.a), ("b", &t.b)] {
        let c = m.component(name).unwrap();
        assert_eq!(c.file, format!("volumes/{name}.tar.gz"));
        assert_eq!(c.content_digest, spec_digest(dir), "{name}");
        let out = t.f.path(&format!("x-{name}"));
        gnu_tar_extract(&set.join(&c.file), &out, &["-z"]);
        assert_eq!(listing(&out), listing(dir), "{name}");
    }
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&set.join("volumes")), 0o700);
    assert_eq!(mode(&set.join("volumes/a.tar.gz")), 0o600);
}

#[test]
fn an_unchanged_set_of_volumes_is_not_written_again_and_one_change_writes_all() {
    let t = Two::new();
    let first = run_ok(&t.task("backup"));
    let again = run_ok(&t.task("backup"));
    assert!(!again.changed, "{}", again.msg);
    assert!(again.msg.contains("the volumes are unchanged"), "{}", again.msg);
    assert_eq!(again.backup.unwrap().id, first.backup.unwrap().id);
    write(&t.b.join("postgresql.conf"), b"max_connections = 200\n", 0o600);
    let changed = run_ok(&t.task("backup"));
    assert!(changed.changed);
    let m = changed.backup.unwrap().manifest.unwrap();
    assert_eq!(m.names(), ["a", "b"], "an unchanged volume still belongs in the new set");
    // A volume added to the task is a change too.
    let c = t.f.path("c");
    write(&c.join("f"), b"x", 0o644);
    let mut task = t.task("backup");
    task["volumes"].as_array_mut().unwrap().push(json!({"path": c, "name": "c"}));
    let added = run_ok(&task);
    assert!(added.changed);
    assert_eq!(added.backup.unwrap().manifest.unwrap().names(), ["a", "b", "c"]);
}

#[test]
fn verify_deep_and_against_live_read_every_volume() {
    let t = Two::new();
    run_ok(&t.task("backup"));
    let mut task = t.task("verify");
    task["deep"] = json!(true);
    task["against_live"] = json!(true);
    let clean = run_ok(&task);
    assert!(clean.findings.unwrap().is_empty());
    let checked = clean.components.unwrap();
    assert_eq!(checked.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(checked[1].content_digest.as_deref(), Some(spec_digest(&t.b).as_str()));
    write(&t.b.join("new-table"), b"rows", 0o600);
    let drift = run_ok(&task);
    let findings = drift.findings.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].message.contains("live volume b drifted"), "{findings:?}");
    assert!(findings[0].message.contains("1 added [new-table]"), "{findings:?}");
    // A damaged archive of one volume is found and named.
    let set = only_set(&t.f.repo);
    let path = set.join("volumes/b.tar.gz");
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&path, bytes).unwrap();
    let damaged = run(&json!({"operation": "verify", "repository": t.f.repo}));
    assert_eq!(damaged.result.error.unwrap().kind, ErrorKind::IntegrityError);
    assert!(
        damaged.result.findings.unwrap().iter().any(|f| f.component == "b"),
        "{}",
        damaged.stdout
    );
}

#[test]
fn list_and_prune_see_the_components() {
    let t = Two::new();
    run_ok(&t.task("backup"));
    write(&t.a.join("more"), b"x", 0o644);
    run_ok(&t.task("backup"));
    let list = run_ok(&json!({"operation": "list", "repository": t.f.repo}));
    let sets = list.sets.unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].components, ["a", "b"]);
    let pruned = run_ok(&json!({"operation": "prune", "repository": t.f.repo, "keep_last": 1}));
    assert_eq!(pruned.sets.unwrap().len(), 1);
    assert_eq!(t.f.set_ids().len(), 1);
}

#[test]
fn a_component_name_that_is_a_path_is_refused_and_deep_verify_touches_nothing_outside() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let set = only_set(&f.repo);
    let path = set.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    m["components"][0]["name"] = json!("x/../../../victim");
    fs::write(&path, m.to_string()).unwrap();
    let victim = f.path("victim");
    write(&victim.join("keep"), b"mine", 0o644);
    let r = run(&json!({"operation": "verify", "repository": f.repo, "deep": true}));
    assert_eq!(r.result.error.unwrap().kind, ErrorKind::IntegrityError);
    assert!(r.stdout.contains("names a component"), "{}", r.stdout);
    assert_eq!(fs::read(victim.join("keep")).unwrap(), b"mine");
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 1);
}

#[test]
fn volumes_are_refused_when_names_repeat_or_trees_nest() {
    let t = Two::new();
    let mut task = t.task("backup");
    task["volumes"][1]["name"] = json!("a");
    let e = run(&task).result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(e.message.contains("two volumes are named `a`"), "{}", e.message);
    let mut task = t.task("backup");
    task["volumes"][1] = json!({"path": t.a.join("sub"), "name": "sub"});
    fs::create_dir_all(t.a.join("sub")).unwrap();
    let e = run(&task).result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(e.message.contains("inside one another"), "{}", e.message);
    let mut task = t.task("backup");
    task["volumes"][0] = json!({"path": t.a});
    let e = run(&task).result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(e.message.contains("needs a `name`"), "{}", e.message);
    // The same tree through a symlinked parent is the same volume.
    std::os::unix::fs::symlink(t.f.tmp.path(), t.f.path("alias")).unwrap();
    let mut task = t.task("backup");
    task["volumes"][1] = json!({"path": t.f.path("alias/a/sub"), "name": "sub"});
    let e = run(&task).result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(e.message.contains("inside one another"), "{}", e.message);
    let mut task = t.task("backup");
    task["volume"] = json!({"path": t.a});
    let e = run(&task).result.error.unwrap();
    assert!(e.message.contains("not both"), "{}", e.message);
}

#[test]
fn the_key_volume_reads_a_set_of_one_named_volume_and_refuses_a_set_of_several() {
    let t = Two::new();
    run_ok(&json!({"operation": "backup", "repository": t.f.repo,
                   "volumes": [{"path": t.a, "name": "a"}]}));
    // One volume in the set: `volume` reads it, whatever its name.
    let live = run_ok(&json!({"operation": "verify", "repository": t.f.repo, "against_live": true,
                              "volume": {"path": t.a}}));
    assert!(live.findings.unwrap().is_empty());
    write(&t.a.join("more"), b"x", 0o644);
    run_ok(&t.task("backup"));
    let e = run(&json!({"operation": "restore", "repository": t.f.repo, "volume": {"path": t.a}}))
        .result
        .error
        .unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(e.message.contains("holds several volumes (a, b)"), "{}", e.message);
}

/// The set in `tests/fixtures/v1-set/`, made by the first release (format `cwbackup/1`), copied
/// into a fresh repository; returns its id.
fn plant_v1_set(repo: &Path) -> String {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-set");
    let item = fs::read_dir(&fixtures)
        .unwrap()
        .map(|i| i.unwrap())
        .find(|i| i.file_type().unwrap().is_dir())
        .unwrap();
    let id = item.file_name().into_string().unwrap();
    let dest = repo.join(&id);
    fs::create_dir_all(&dest).unwrap();
    for file in fs::read_dir(item.path()).unwrap() {
        let file = file.unwrap();
        fs::copy(file.path(), dest.join(file.file_name())).unwrap();
    }
    let m: Value = serde_json::from_slice(&fs::read(dest.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["format"], "cwbackup/1", "the fixture is a first-release set");
    id
}

#[test]
fn a_set_written_by_the_first_release_is_listed_verified_and_restored() {
    let f = Fixture::empty();
    let id = plant_v1_set(&f.repo);
    let list = run_ok(&json!({"operation": "list", "repository": f.repo}));
    let sets = list.sets.unwrap();
    assert_eq!(sets[0].id, id);
    assert_eq!(sets[0].components, ["volume", "db"]);
    let verified = run_ok(&json!({"operation": "verify", "repository": f.repo, "deep": true}));
    assert!(verified.findings.unwrap().is_empty());
    // Restore its volume into an empty directory: the tree the first release archived.
    let r = run_ok(&f.task("restore"));
    assert!(r.changed && r.volume.as_ref().unwrap().changed, "{}", r.msg);
    let m = r.backup.unwrap().manifest.unwrap();
    assert_eq!(m.format, "cwbackup/1");
    assert_eq!(spec_digest(&f.vol), m.single_volume().unwrap().content_digest);
    assert!(fs::read(f.vol.join("services/opcua.yml")).is_ok());
    // A backup of the restored volume into the same repository writes format 2 beside it.
    let again = run_ok(&f.task("backup"));
    assert_eq!(again.backup.unwrap().manifest.unwrap().format, "cwbackup/2");
    let v = run_ok(&json!({"operation": "verify", "repository": f.repo}));
    assert!(v.findings.unwrap().is_empty());
}

#[test]
fn the_database_of_a_first_release_set_is_restored_through_the_api() {
    let a = crate::api::Api::default();
    fs::remove_dir_all(&a.f.vol).unwrap();
    fs::create_dir(&a.f.vol).unwrap();
    let id = plant_v1_set(&a.f.repo);
    // A database that differs from the set's, so that the restore has to send it.
    a.emu
        .set_db(json!({"users": [{"name": "changed-since"}], "roles": [], "permissions": []}));
    let r = run_ok(&a.task("restore"));
    assert!(r.changed, "{}", r.msg);
    assert!(r.db.as_ref().unwrap().changed && r.volume.as_ref().unwrap().changed);
    assert_eq!(r.backup.unwrap().id, id);
    assert_eq!(
        a.emu.count("POST", "/api/maintenance/db/restore"),
        1,
        "the first release's db.tgz went to the server"
    );
    let again = run_ok(&a.task("restore"));
    assert!(!again.changed, "{}", again.msg);
}

/// Asserts that no volume holds anything of the tool's once the task returned.
fn nothing_left(volumes: &[&Path]) {
    for v in volumes {
        assert!(
            !restore_work_dir(v).exists(),
            "{}: the work directory is removed",
            v.display()
        );
    }
}

#[test]
fn a_restore_of_volumes_puts_back_each_that_changed() {
    let t = Two::new();
    run_ok(&t.task("backup"));
    let (old_a, old_b) = (listing(&t.a), listing(&t.b));
    write(&t.a.join("services/new.yml"), b"x", 0o644);
    write(&t.b.join("postgresql.conf"), b"max_connections = 5\n", 0o600);
    let (changed_a, changed_b) = (spec_digest(&t.a), spec_digest(&t.b));
    let r = run_ok(&t.task("restore"));
    assert!(r.changed, "{}", r.msg);
    assert!(r.msg.contains("restored the volumes a, b"), "{}", r.msg);
    let components = r.components.unwrap();
    assert!(components.iter().all(|c| c.changed), "{components:?}");
    assert_eq!(listing(&t.a), old_a);
    assert_eq!(listing(&t.b), old_b);
    // The safety set holds both volumes as they were.
    let safety = r.safety_backup.unwrap().manifest.unwrap();
    assert_eq!(safety.component("a").unwrap().content_digest, changed_a);
    assert_eq!(safety.component("b").unwrap().content_digest, changed_b);
    assert_eq!(safety.component("b").unwrap().file, "volumes/b.tar.gz");
    nothing_left(&[&t.a, &t.b]);
    // Nothing differs: nothing written.
    let again = run_ok(&t.task("restore"));
    assert!(!again.changed, "{}", again.msg);
    // One volume differs: only that one is restored.
    write(&t.b.join("base/1/1259"), b"truncated", 0o600);
    let one = run_ok(&t.task("restore"));
    assert!(one.msg.contains("restored the volume b "), "{}", one.msg);
    let components = one.components.unwrap();
    assert!(!components[0].changed && components[1].changed, "{components:?}");
    assert_eq!(listing(&t.b), old_b);
    nothing_left(&[&t.a, &t.b]);
}

#[test]
fn a_dry_run_of_a_restore_of_volumes_reports_the_plan_and_changes_nothing() {
    let t = Two::new();
    run_ok(&t.task("backup"));
    write(&t.b.join("extra"), b"x", 0o644);
    let before = (listing(&t.a), listing(&t.b));
    let mut task = t.task("restore");
    task["dry_run"] = json!(true);
    task["diff"] = json!(true);
    let r = run_ok(&task);
    assert!(r.changed && r.dry_run);
    assert!(r.msg.contains("would restore the volume b "), "{}", r.msg);
    let diff = r.diff.unwrap();
    assert_eq!(diff.after["volume_changes"]["b"]["files_removed"], json!(1), "{diff:?}");
    assert_eq!((listing(&t.a), listing(&t.b)), before);
    assert_eq!(t.f.set_ids().len(), 1, "no safety set in a dry run");
}

#[test]
fn a_swap_that_fails_in_the_second_volume_leaves_both_volumes_old() {
    let t = Two::new();
    write(&t.b.join("m-immutable"), b"m", 0o644);
    run_ok(&t.task("backup"));
    write(&t.a.join("services/new.yml"), b"x", 0o644);
    write(&t.b.join("a-changed"), b"x", 0o644);
    // The volumes swap in the order of their paths: a is in, then b's old entries cannot move.
    let guard = crate::restore::Immutable::set(&t.b.join("m-immutable"));
    let before = (listing(&t.a), listing(&t.b));
    let mut task = t.task("restore");
    task["safety_backup"] = json!(false);
    let r = run(&task);
    let e = r.result.error.expect("an immutable entry cannot be moved");
    assert!(e.message.contains("rolled back"), "{}", e.message);
    assert_eq!((listing(&t.a), listing(&t.b)), before, "both volumes keep their old trees");
    nothing_left(&[&t.a, &t.b]);
    drop(guard);
    let r = run_ok(&task);
    assert!(r.changed);
    assert!(!t.a.join("services/new.yml").exists() && !t.b.join("a-changed").exists());
    nothing_left(&[&t.a, &t.b]);
}

#[test]
fn sigkill_during_a_restore_of_volumes_leaves_all_old_or_all_new() {
    let shm = Path::new("/dev/shm");
    let f = if shm.is_dir() {
        Fixture::empty_in(shm)
    } else {
        Fixture::empty()
    };
    let (a, b) = (f.path("a"), f.path("b"));
    let fill = |dir: &Path, tag: &str| {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir(dir).unwrap();
        for i in 0..1500 {
            write(&dir.join(format!("{tag}{i:04}")), tag.as_bytes(), 0o644);
        }
    };
    fill(&a, "new-a");
    fill(&b, "new-b");
    let new = (spec_digest(&a), spec_digest(&b));
    let task = |op: &str| {
        json!({"operation": op, "repository": f.repo, "volumes": [
            {"path": a, "name": "a"}, {"path": b, "name": "b"}]})
    };
    let set = run_ok(&task("backup")).backup.unwrap().id;
    fill(&a, "old-a");
    fill(&b, "old-b");
    let old = (spec_digest(&a), spec_digest(&b));
    let mut restore = task("restore");
    restore["safety_backup"] = json!(false);
    restore["backup_id"] = json!(set);
    let (mut all_old, mut all_new) = (0, 0);
    for delay_us in [0u64, 2_000, 5_000, 10_000, 20_000, 35_000, 60_000] {
        fill(&a, "old-a");
        fill(&b, "old-b");
        let mut child = spawn(&restore);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !restore_journal(&a).exists()
            && !restore_journal(&b).exists()
            && child.try_wait().unwrap().is_none()
        {
            assert!(std::time::Instant::now() < deadline, "the swap never started");
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        child.kill().unwrap();
        child.wait().unwrap();
        // The next task on ONE of the volumes (a backup of b alone, into another repository)
        // brings both to the same side.
        run_ok(&json!({"operation": "backup", "repository": f.path("other-repo"),
                       "volume": {"path": b}, "force": true}));
        // The volumes' content, as every digest of the tool sees it: without the work
        // directory, which a kill before the group's journals were all written leaves in the
        // volume not yet touched again (its tree is the old one; its own next task removes it).
        let content = |v: &Path| {
            let mut l = listing(v);
            l.retain(|k, _| !k.starts_with(b".cwbackup-work"));
            spec_digest_of(&l)
        };
        let now = (content(&a), content(&b));
        assert!(
            now == old || now == new,
            "after a kill {delay_us}µs into the swap the volumes are out of step"
        );
        if now == old {
            all_old += 1
        } else {
            all_new += 1
        }
        // The next task on a leaves nothing of the tool's in either volume.
        run_ok(&json!({"operation": "backup", "repository": f.path("other-repo"),
                       "volume": {"path": a}, "force": true}));
        assert_eq!((content(&a), content(&b)), now, "a's own task changed nothing more");
        nothing_left(&[&a, &b]);
    }
    eprintln!("two-volume swap kills: {all_old} all old, {all_new} all new");
}
