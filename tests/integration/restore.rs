use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cw_emulator::{Faults, TlsMode};
use cwbackup::error::ErrorKind;
use serde_json::json;
use sha2::Digest;

use crate::api::Api;
use crate::common::*;

/// Deletes, adds and changes files, and changes a mode.
fn modify(vol: &Path) {
    fs::remove_file(vol.join("services/secret.env")).unwrap();
    write(&vol.join("services/added.yml"), b"added", 0o644);
    write(&vol.join("bin/run.sh"), b"#!/bin/sh\necho changed\n", 0o755);
    fs::set_permissions(
        vol.join("data/blob.bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

fn volume_only(f: &Fixture, extra: serde_json::Value) -> serde_json::Value {
    let mut task = f.task("restore");
    for (k, v) in extra.as_object().unwrap() {
        task[k] = v.clone();
    }
    task
}

#[test]
fn a_modified_volume_is_brought_back_exactly() {
    let f = Fixture::sample();
    let original = listing(&f.vol);
    let digest = run_ok(&f.task("backup"))
        .backup
        .unwrap()
        .manifest
        .unwrap()
        .single_volume()
        .unwrap()
        .content_digest
        .clone();
    modify(&f.vol);
    let modified_digest = spec_digest(&f.vol);
    let r = run_ok(&volume_only(&f, json!({"diff": true})));
    assert!(r.changed && r.restart_required);
    assert_eq!(spec_digest(&f.vol), digest);
    assert_eq!(
        listing(&f.vol),
        original,
        "contents, modes, symlinks and mtimes are back"
    );
    let diff = r.diff.unwrap();
    assert_eq!(diff.after["files_added"], json!(1), "{diff:?}");
    assert_eq!(diff.after["files_removed"], json!(1));
    assert_eq!(diff.after["files_changed"], json!(2));
    assert!(r.warnings.iter().any(|w| w.contains("browser session")));
    // The safety set holds the state from before.
    let safety = r.safety_backup.unwrap();
    assert!(safety.id.starts_with("pre-restore-"));
    assert_eq!(
        safety.manifest.unwrap().single_volume().unwrap().content_digest,
        modified_digest
    );
    nothing_of_the_tool_is_left(&f);
}

/// When a task returns, the volume holds nothing of the tool's (no work directory: no staged
/// tree, old tree, journal or lock holder), and nothing was written beside it.
fn nothing_of_the_tool_is_left(f: &Fixture) {
    assert!(
        !f.vol.join(".cwbackup-work").exists(),
        "the work directory is removed"
    );
    assert!(
        !f.tmp.path().join(".cwbackup-vol").exists(),
        "nothing is written beside the volume"
    );
}

#[test]
fn a_change_that_keeps_every_size_is_found_and_an_added_file_too() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let wanted = spec_digest(&f.vol);
    // The same entries of the same sizes, one byte different: only reading the files shows it.
    let p = f.vol.join("services/opcua-server.yml");
    let mut bytes = fs::read(&p).unwrap();
    bytes[0] ^= 1;
    fs::write(&p, bytes).unwrap();
    let r = run_ok(&volume_only(&f, json!({"safety_backup": false})));
    assert!(r.changed, "{}", r.msg);
    assert_eq!(spec_digest(&f.vol), wanted);
    // One more file: the listing alone shows it.
    write(&f.vol.join("services/added.yml"), b"added", 0o644);
    let r = run_ok(&volume_only(&f, json!({"safety_backup": false})));
    assert!(r.changed, "{}", r.msg);
    assert_eq!(spec_digest(&f.vol), wanted);
    let r = run_ok(&volume_only(&f, json!({})));
    assert!(!r.changed, "{}", r.msg);
    nothing_of_the_tool_is_left(&f);
}

#[test]
fn ownership_is_restored_when_running_as_root() {
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::sample();
    std::os::unix::fs::chown(
        f.vol.join("services/opcua-server.yml"),
        Some(1234),
        Some(2345),
    )
    .unwrap();
    std::os::unix::fs::lchown(f.vol.join("links/rel"), Some(1235), Some(2346)).unwrap();
    std::os::unix::fs::chown(f.vol.join("empty"), Some(1236), Some(2347)).unwrap();
    run_ok(&f.task("backup"));
    fs::remove_dir_all(&f.vol).unwrap();
    fs::create_dir(&f.vol).unwrap();
    run_ok(&volume_only(&f, json!({"safety_backup": false})));
    let owner = |p: &str| {
        let m = fs::symlink_metadata(f.vol.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("services/opcua-server.yml"), (1234, 2345));
    assert_eq!(owner("links/rel"), (1235, 2346));
    assert_eq!(owner("empty"), (1236, 2347));
}

#[test]
fn ownership_is_exact_below_a_setgid_parent() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The set's files are root's; the volume's parent (where staging happens) is setgid with
    // another group, which every new file would inherit unless it is given its owner back.
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    std::os::unix::fs::chown(f.tmp.path(), None, Some(4321)).unwrap();
    fs::set_permissions(f.tmp.path(), fs::Permissions::from_mode(0o2775)).unwrap();
    modify(&f.vol);
    run_ok(&volume_only(&f, json!({"safety_backup": false})));
    for (path, _) in listing(&f.vol) {
        let path = f.vol.join(String::from_utf8(path).unwrap());
        let m = fs::symlink_metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{}", path.display());
    }
}

#[test]
fn restoring_again_changes_nothing_and_writes_no_safety_set() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    modify(&f.vol);
    run_ok(&volume_only(&f, json!({})));
    let sets = f.set_ids().len();
    let r = run_ok(&volume_only(&f, json!({})));
    assert!(!r.changed && !r.restart_required, "{}", r.msg);
    assert_eq!(
        f.set_ids().len(),
        sets,
        "no safety set for a restore that changes nothing"
    );
    nothing_of_the_tool_is_left(&f);
    let forced = run_ok(&volume_only(
        &f,
        json!({"force": true, "safety_backup": false}),
    ));
    assert!(forced.changed);
}

#[test]
fn the_default_set_is_the_newest_that_is_not_a_safety_set() {
    let f = Fixture::sample();
    let wanted = spec_digest(&f.vol);
    run_ok(&f.task("backup"));
    modify(&f.vol);
    run_ok(&volume_only(&f, json!({}))); // writes pre-restore-…, the newest set now
    modify_again(&f.vol);
    run_ok(&volume_only(&f, json!({})));
    assert_eq!(spec_digest(&f.vol), wanted);
}

fn modify_again(vol: &Path) {
    write(&vol.join("another.txt"), b"x", 0o644);
}

#[test]
fn a_dry_run_changes_nothing() {
    let a = Api::default();
    run_ok(&a.task("backup"));
    modify(&a.f.vol);
    let before = listing(&a.f.vol);
    let mut task = a.task("restore");
    task["dry_run"] = json!(true);
    task["diff"] = json!(true);
    let r = run_ok(&task);
    assert!(r.changed && r.dry_run);
    assert_eq!(listing(&a.f.vol), before);
    assert_eq!(a.f.set_ids().len(), 1, "no safety set");
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 0);
    assert_eq!(r.diff.unwrap().after["files_added"], json!(1));
}

#[test]
fn both_halves_are_restored_and_a_second_restore_sends_no_request() {
    let a = Api::default();
    let original_db = a.emu.db();
    run_ok(&a.task("backup"));
    modify(&a.f.vol);
    a.emu
        .set_db(json!({"users": [], "roles": [], "permissions": []}));
    let r = run_ok(&a.task("restore"));
    assert!(r.changed);
    assert!(r.db.as_ref().unwrap().changed && r.volume.as_ref().unwrap().changed);
    assert_eq!(a.emu.db(), original_db);
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 1);
    let safety = r.safety_backup.unwrap().manifest.unwrap();
    assert!(
        safety.db().is_some() && safety.single_volume().is_some(),
        "the safety set holds both halves"
    );

    let again = run_ok(&a.task("restore"));
    assert!(!again.changed, "{}", again.msg);
    assert_eq!(
        a.emu.count("POST", "/api/maintenance/db/restore"),
        1,
        "no restore request reached the server"
    );
}

#[test]
fn a_refused_database_is_version_incompatible_and_the_volume_is_untouched() {
    let a = Api::default();
    run_ok(&a.task("backup"));
    modify(&a.f.vol);
    // The database differs too, so it is to be restored (by content, not by restore id).
    a.emu
        .set_db(json!({"users": [], "roles": [], "permissions": []}));
    let before = listing(&a.f.vol);
    a.emu.set_faults(Faults {
        refuse_restore_versions: vec!["1.10.2".into()],
        last_compatible_version: Some("1.9.4".into()),
        ..Faults::default()
    });
    let r = run(&a.task("restore"));
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::VersionIncompatible, "{}", e.message);
    assert_eq!(e.details["last_compatible_version"], json!("1.9.4"));
    assert_eq!(
        listing(&a.f.vol),
        before,
        "the volume is byte for byte as it was"
    );
    assert!(!a.f.vol.join(".cwbackup-work").exists());
}

#[test]
fn a_failed_database_restore_is_db_restore_failed_with_the_message() {
    let a = Api::default();
    run_ok(&a.task("backup"));
    modify(&a.f.vol);
    // The database differs too, so it is to be restored (by content, not by restore id).
    a.emu
        .set_db(json!({"users": [], "roles": [], "permissions": []}));
    let before = listing(&a.f.vol);
    a.emu.set_faults(Faults {
        restore_fails: Some("psql: relation locked".into()),
        ..Faults::default()
    });
    let r = run(&a.task("restore"));
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::DbRestoreFailed);
    assert!(e.message.contains("relation locked"));
    // The server had accepted the request: the database may have changed, and the error
    // names the safety set that holds it as it was.
    let safety = e.details["safety_set"]
        .as_str()
        .expect("names the safety set");
    assert!(
        e.message.contains("may have changed") && e.message.contains(safety),
        "{}",
        e.message
    );
    assert_eq!(listing(&a.f.vol), before);
    assert!(
        !a.f.vol.join(".cwbackup-work").exists(),
        "no journal is left"
    );
}

#[test]
fn a_backup_from_a_newer_connectware_is_refused_unless_forced() {
    let a = Api::start(TlsMode::SelfSigned);
    a.emu.set_version("1.11.0");
    run_ok(&a.task("backup"));
    a.emu.set_version("1.10.2");
    modify(&a.f.vol);
    let r = run(&a.task("restore"));
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::VersionIncompatible);
    assert_eq!(e.details["backup_version"], json!("1.11.0"));
    assert_eq!(a.f.set_ids().len(), 1, "refused before the safety backup");
    nothing_of_the_tool_is_left(&a.f);
    let mut task = a.task("restore");
    task["force"] = json!(true);
    run_ok(&task);
}

#[test]
fn the_restart_command_runs_after_a_change_and_its_failure_is_reported() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    modify(&f.vol);
    let marker = f.path("restarted");
    let r = run_ok(&volume_only(
        &f,
        json!({"restart": ["sh", "-c", format!("echo done > {}", marker.display())]}),
    ));
    assert!(!r.restart_required);
    assert!(marker.exists());
    modify(&f.vol);
    let r = run(&volume_only(&f, json!({"restart": ["false"]})));
    assert_eq!(r.code, 1);
    assert!(r.result.changed && r.result.restart_required);
    assert_eq!(r.result.error.unwrap().kind, ErrorKind::IoError);
}

#[test]
fn a_damaged_set_is_refused_before_anything_changes() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let archive = only_set(&f.repo).join("volume.tar.gz");
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&archive, bytes).unwrap();
    modify(&f.vol);
    let before = listing(&f.vol);
    let r = run(&volume_only(&f, json!({})));
    assert_eq!(r.result.error.unwrap().kind, ErrorKind::IntegrityError);
    assert_eq!(listing(&f.vol), before);
    assert_eq!(f.set_ids().len(), 1, "no safety set");
    nothing_of_the_tool_is_left(&f);
}

#[test]
fn no_set_is_backup_not_found() {
    let f = Fixture::sample();
    fs::create_dir(&f.repo).unwrap();
    assert_eq!(
        run(&volume_only(&f, json!({}))).result.error.unwrap().kind,
        ErrorKind::BackupNotFound
    );
}

// ---- malicious archives -------------------------------------------------------------------

/// One raw tar entry: the name bytes go straight into the header, unchecked.
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub link: &'a [u8],
    pub data: &'a [u8],
    /// The size the header claims (defaults to the data's).
    pub size: Option<u64>,
}

pub fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Publishes a hand-made set whose manifest matches the archive's bytes (so only the
/// archive's content can give it away).
fn plant_set(repo: &Path, id: &str, tar: &[u8], files: u64, expanded_bytes: u64) -> PathBuf {
    let dir = repo.join(id);
    fs::create_dir_all(&dir).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    let archive = gz.finish().unwrap();
    fs::write(dir.join("volume.tar.gz"), &archive).unwrap();
    let manifest = json!({
        "format": "cwbackup/1", "id": id, "created_at": "2026-01-01T00:00:00.000Z", "tool_version": "0",
        "connectware_version": null, "db": null,
        "volume": {"file": "volume.tar.gz", "compression": "gzip", "sha256": hex(&sha2::Sha256::digest(&archive)),
                   "bytes": archive.len(), "started_at": "x", "finished_at": "x", "files": files,
                   "expanded_bytes": expanded_bytes, "content_digest": "sha256:unknown", "source": "/x"}
    });
    fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    dir
}

fn file<'a>(name: &'a [u8], data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: tar::EntryType::Regular,
        link: b"",
        data,
        size: None,
    }
}

/// Everything in the fixture but the repository, with modes, sizes, contents and mtimes (but
/// the volume directory's own mtime, which the work directory inside it moves).
fn outside_the_repository(f: &Fixture) -> std::collections::BTreeMap<Vec<u8>, Listed> {
    let mut all = listing(f.tmp.path());
    all.retain(|path, _| !path.starts_with(b"repo"));
    if let Some(vol) = all.get_mut(&b"vol"[..]) {
        vol.mtime = 0;
    }
    all
}

/// The volume's listing without cwbackup's work directory (there while a task runs).
fn volume_listing(vol: &Path) -> std::collections::BTreeMap<Vec<u8>, Listed> {
    let mut all = listing(vol);
    all.retain(|path, _| !path.starts_with(b".cwbackup-work"));
    all
}

#[test]
fn malicious_archives_are_unsafe_archive_and_write_nothing_outside() {
    let cases: Vec<(&str, Vec<Raw>, u64, u64)> = vec![
        ("dotdot", vec![file(b"../escaped.txt", b"x")], 10, 10),
        (
            "absolute",
            vec![file(b"/tmp/cwbackup-absolute-escape", b"x")],
            10,
            10,
        ),
        (
            "nested-dotdot",
            vec![file(b"a/../../escaped.txt", b"x")],
            10,
            10,
        ),
        (
            "symlink-then-write-through",
            vec![
                Raw {
                    name: b"link",
                    kind: tar::EntryType::Symlink,
                    link: b"..",
                    data: b"",
                    size: None,
                },
                file(b"link/escaped.txt", b"x"),
            ],
            10,
            10,
        ),
        (
            "write-through-inner-symlink",
            vec![
                Raw {
                    name: b"d",
                    kind: tar::EntryType::Symlink,
                    link: b"sub",
                    data: b"",
                    size: None,
                },
                file(b"d/x", b"x"),
            ],
            10,
            10,
        ),
        (
            "absolute-symlink",
            vec![Raw {
                name: b"etc",
                kind: tar::EntryType::Symlink,
                link: b"/etc",
                data: b"",
                size: None,
            }],
            10,
            10,
        ),
        (
            "climbing-symlink",
            vec![Raw {
                name: b"up",
                kind: tar::EntryType::Symlink,
                link: b"a/../..",
                data: b"",
                size: None,
            }],
            10,
            10,
        ),
        (
            "hardlink-outside",
            vec![Raw {
                name: b"passwd",
                kind: tar::EntryType::Link,
                link: b"/etc/passwd",
                data: b"",
                size: None,
            }],
            10,
            10,
        ),
        (
            "hardlink-dotdot",
            vec![Raw {
                name: b"h",
                kind: tar::EntryType::Link,
                link: b"../escaped.txt",
                data: b"",
                size: None,
            }],
            10,
            10,
        ),
        (
            "device",
            vec![Raw {
                name: b"null",
                kind: tar::EntryType::Char,
                link: b"",
                data: b"",
                size: None,
            }],
            10,
            10,
        ),
        (
            "fifo",
            vec![Raw {
                name: b"pipe",
                kind: tar::EntryType::Fifo,
                link: b"",
                data: b"",
                size: None,
            }],
            10,
            10,
        ),
        (
            "bigger-than-announced",
            vec![file(b"big", &[7u8; 4096])],
            10,
            100,
        ),
        (
            "more-entries-than-announced",
            vec![file(b"a", b"1"), file(b"b", b"2"), file(b"c", b"3")],
            2,
            10,
        ),
        (
            "duplicate",
            vec![file(b"x", b"1"), file(b"x", b"2")],
            10,
            10,
        ),
    ];
    for (name, entries, files, bytes) in cases {
        let f = Fixture::sample();
        let before = outside_the_repository(&f);
        fs::create_dir_all(&f.repo).unwrap();
        plant_set(&f.repo, name, &raw_tar(&entries), files, bytes);
        let r = run(&volume_only(
            &f,
            json!({"backup_id": name, "safety_backup": false}),
        ));
        let e = r
            .result
            .error
            .unwrap_or_else(|| panic!("{name}: the restore must fail: {}", r.stdout));
        assert_eq!(e.kind, ErrorKind::UnsafeArchive, "{name}: {}", e.message);
        assert!(
            outside_the_repository(&f) == before,
            "{name}: the volume and its surroundings are untouched"
        );
        assert!(!Path::new("/tmp/cwbackup-absolute-escape").exists());
        assert!(
            !f.vol.join(".cwbackup-work").exists(),
            "{name}: staging removed"
        );
    }
}

#[test]
fn a_truncated_archive_is_an_integrity_error() {
    let f = Fixture::sample();
    fs::create_dir_all(&f.repo).unwrap();
    let mut tar = raw_tar(&[file(b"a", &[1u8; 5000])]);
    tar.truncate(2048);
    plant_set(&f.repo, "truncated", &tar, 10, 10_000);
    let before = listing(&f.vol);
    let r = run(&volume_only(
        &f,
        json!({"backup_id": "truncated", "safety_backup": false}),
    ));
    assert_eq!(r.result.error.unwrap().kind, ErrorKind::IntegrityError);
    assert_eq!(listing(&f.vol), before);
}

// ---- crashes during the swap --------------------------------------------------------------

/// 3000 entries: a swap long enough (~80 ms here) that the test's last kill (40 ms after the
/// journal appears, plus a loaded machine's wake-up delay) still lands in it.
fn tree_a(vol: &Path) {
    for i in 0..3000 {
        write(
            &vol.join(format!("a{i:04}.yml")),
            format!("old {i}").as_bytes(),
            0o644,
        );
    }
}

fn tree_b(vol: &Path) {
    for i in 0..3000 {
        write(
            &vol.join(format!("b{i:04}.yml")),
            format!("new {i}").as_bytes(),
            0o644,
        );
    }
}

fn reset(vol: &Path, fill: fn(&Path)) {
    fs::remove_dir_all(vol).unwrap();
    fs::create_dir(vol).unwrap();
    fill(vol);
}

#[test]
fn sigkill_during_the_swap_is_finished_or_rolled_back_by_the_next_run() {
    // On tmpfs when there is one: this disk makes file creation slow, and the test makes many.
    let shm = Path::new("/dev/shm");
    let f = if shm.is_dir() {
        Fixture::empty_in(shm)
    } else {
        Fixture::empty()
    };
    tree_b(&f.vol);
    let digest_b = spec_digest(&f.vol);
    let set_b = run_ok(&f.task("backup")).backup.unwrap().id;
    reset(&f.vol, tree_a);
    let digest_a = spec_digest(&f.vol);
    let journal = restore_journal(&f.vol);
    let task = volume_only(
        &f,
        json!({"safety_backup": false, "force": true, "backup_id": set_b}),
    );
    let (mut rolled_back, mut rolled_forward) = (0, 0);
    for delay_us in [0u64, 1_000, 3_000, 6_000, 10_000, 15_000, 25_000, 40_000] {
        reset(&f.vol, tree_a);
        let mut child = spawn(&task);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !journal.exists() && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the swap never started");
            std::thread::sleep(Duration::from_micros(100));
        }
        std::thread::sleep(Duration::from_micros(delay_us));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let journal_text = fs::read_to_string(&journal).ok();
        eprintln!("kill after {delay_us}µs: {status:?}, journal {journal_text:?}");
        // The kill landed in the swap: the process died of it, with the journal on disk.
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "kill after {delay_us}µs: the restore had already ended ({status:?}); the kill must land mid-swap"
        );
        assert!(
            journal_text.is_some(),
            "kill after {delay_us}µs: no journal after the kill, so it did not land mid-swap"
        );
        // The next run that touches the volume makes it whole first (a backup, into another
        // repository so that the restore above keeps finding set B), and says what it did.
        let mut backup = f.task("backup");
        backup["repository"] = json!(f.path("recovery-repo"));
        backup["force"] = json!(true);
        let r = run_ok(&backup);
        let recovery = r
            .warnings
            .iter()
            .find(|w| w.contains("was interrupted"))
            .unwrap_or_else(|| {
                panic!(
                    "kill after {delay_us}µs: the next run reported no recovery: {:?}",
                    r.warnings
                )
            });
        let now = spec_digest(&f.vol);
        assert!(
            now == digest_a || now == digest_b,
            "after a kill {delay_us}µs into the swap the volume is a mix"
        );
        if recovery.contains("put back as it was") {
            assert_eq!(now, digest_a, "rolled back, so the old tree: {recovery}");
            rolled_back += 1
        } else {
            assert_eq!(now, digest_b, "finished, so the new tree: {recovery}");
            rolled_forward += 1
        }
        assert!(!journal.exists());
    }
    eprintln!("swap kills: {rolled_back} rolled back, {rolled_forward} finished");
}

// ---- Issue 11: nothing lost, nothing hangs (the restore and swap side) ----

/// Starts a restore that pauses just before its last check of the volume and the swap (the
/// test-only hook `CWBACKUP_TEST_PAUSE_BEFORE_SWAP`), and waits until it got there.
struct Paused {
    child: std::process::Child,
    go: PathBuf,
}

impl Paused {
    fn start(task: &serde_json::Value, go: PathBuf) -> Paused {
        let mut child = start(
            task,
            &[("CWBACKUP_TEST_PAUSE_BEFORE_SWAP", go.as_os_str())],
            std::process::Stdio::piped(),
        );
        let mut reached = go.clone().into_os_string();
        reached.push(".reached");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Path::new(&reached).exists() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the restore ended before the swap"
            );
            assert!(
                Instant::now() < deadline,
                "the restore never reached the swap"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Paused { child, go }
    }

    /// Lets it go on and returns its result.
    fn finish(self) -> cwbackup::result::TaskResult {
        fs::write(&self.go, b"").unwrap();
        let out = self.child.wait_with_output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[test]
fn a_repository_inside_the_volume_is_refused_before_anything_runs() {
    let f = Fixture::sample();
    let set = run_ok(&f.task("backup")).backup.unwrap().id;
    // The repository moved into the volume: a restore without a safety set used to move it
    // away with the old tree.
    let inside = f.vol.join("backups");
    fs::rename(&f.repo, &inside).unwrap();
    modify(&f.vol);
    let before = listing(&f.vol);
    let mut task = volume_only(&f, json!({"safety_backup": false, "backup_id": set}));
    task["repository"] = json!(inside);
    let r = run(&task);
    assert_eq!(r.code, 2, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(
        e.message.contains(&*inside.to_string_lossy())
            && e.message.contains(&*f.vol.to_string_lossy()),
        "{}",
        e.message
    );
    assert_eq!(listing(&f.vol), before, "nothing ran");
    // A backup into the volume (through a symlink, into a repository not made yet), and a
    // volume inside the repository, are refused the same way.
    std::os::unix::fs::symlink(&f.vol, f.path("link")).unwrap();
    for (repo, vol) in [
        (f.path("link/new-repo"), f.vol.clone()),
        (f.tmp.path().to_path_buf(), f.vol.clone()),
    ] {
        let r = run(&json!({"operation": "backup", "repository": repo, "volume": {"path": vol}}));
        assert_eq!(r.result.error.unwrap().kind, ErrorKind::InvalidTask);
    }
    assert_eq!(listing(&f.vol), before);
    nothing_of_the_tool_is_left(&f);
}

#[test]
fn a_restore_holding_the_volume_makes_a_backup_into_another_repository_busy() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    modify(&f.vol);
    let paused = Paused::start(
        &volume_only(&f, json!({"safety_backup": false})),
        f.path("go"),
    );
    let mut backup = f.task("backup");
    backup["repository"] = json!(f.path("other-repo"));
    let r = run(&backup);
    let e = r
        .result
        .error
        .expect("the backup must not read a volume being restored");
    assert_eq!(e.kind, ErrorKind::Busy, "{}", e.message);
    assert_eq!(e.details["operation"], json!("restore"));
    assert_eq!(e.details["pid"], json!(paused.child.id()));
    let restored = paused.finish();
    assert!(restored.ok, "{:?}", restored.error);
    // Once the restore is done the backup runs (and waiting for the lock works too).
    backup["wait_for_lock_s"] = json!(5);
    run_ok(&backup);
    nothing_of_the_tool_is_left(&f);
}

#[test]
fn restore_works_on_a_tmpfs_mount_point_and_leaves_nothing_in_it() {
    // The volume is a tmpfs of its own, inside a parent file system that is read-only (as a
    // Docker volume on NFS or a PVC's mount often is): nothing may be written beside it.
    let f = Fixture::empty();
    fs::remove_dir(&f.vol).unwrap();
    let parent = f.path("parent");
    let _parent_mount = crate::disk_full::Mount::new(&parent, "1m");
    let vol = parent.join("vol");
    let _volume_mount = crate::disk_full::Mount::new(&vol, "64m");
    let remount = |mode: &str| {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&parent)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode}");
    };
    remount("ro");
    sample_tree(&vol);
    let wanted = spec_digest(&vol);
    let task = |op: &str| json!({"operation": op, "repository": f.repo, "volume": {"path": vol}});
    run_ok(&task("backup"));
    modify(&vol);
    let r = run_ok(&task("restore"));
    assert!(r.changed && r.volume.unwrap().changed, "{}", r.msg);
    assert_eq!(spec_digest(&vol), wanted);
    assert!(
        !vol.join(".cwbackup-work").exists(),
        "nothing of the tool's is left"
    );
    // A backup of the mount point leaves nothing either, and finds it unchanged.
    let again = run_ok(&task("backup"));
    assert!(!again.changed, "{}", again.msg);
    assert!(!vol.join(".cwbackup-work").exists());
    remount("rw");
}

#[test]
fn a_volume_written_to_before_the_swap_is_a_consistency_error_and_untouched() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    modify(&f.vol);
    let paused = Paused::start(&volume_only(&f, json!({})), f.path("go"));
    write(
        &f.vol.join("services/commissioned-meanwhile.yml"),
        b"new",
        0o644,
    );
    let before = volume_listing(&f.vol);
    let r = paused.finish();
    let e = r
        .error
        .expect("the restore must not swap a volume that changed");
    assert_eq!(e.kind, ErrorKind::ConsistencyError, "{}", e.message);
    assert!(e.message.contains("not touched"), "{}", e.message);
    assert_eq!(listing(&f.vol), before, "the volume is untouched");
    nothing_of_the_tool_is_left(&f);
    // The next restore works.
    run_ok(&volume_only(&f, json!({"safety_backup": false})));
}

/// `chattr +i` on `path` (and `-i` when dropped, so that the fixture can be removed).
pub struct Immutable(PathBuf);

impl Immutable {
    pub fn set(path: &Path) -> Immutable {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "chattr +i needs root and a file system that supports it"
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_swap_that_fails_midway_is_rolled_back_by_the_same_run() {
    let f = Fixture::empty();
    for name in ["a1", "a2", "m-immutable", "z1", "z2"] {
        write(&f.vol.join(name), name.as_bytes(), 0o644);
    }
    run_ok(&f.task("backup"));
    write(&f.vol.join("a1"), b"changed", 0o644);
    write(&f.vol.join("b-added"), b"added", 0o644);
    // Entries move in name order: a1, a2 and b-added move before the immutable one fails.
    let guard = Immutable::set(&f.vol.join("m-immutable"));
    let before = listing(&f.vol);
    let r = run(&volume_only(&f, json!({"safety_backup": false})));
    let e = r.result.error.expect("an immutable entry cannot be moved");
    assert!(e.message.contains("rolled back"), "{}", e.message);
    assert_eq!(
        listing(&f.vol),
        before,
        "the volume is exactly the old tree"
    );
    nothing_of_the_tool_is_left(&f);
    drop(guard);
    let r = run_ok(&volume_only(&f, json!({"safety_backup": false})));
    assert!(r.changed);
    assert!(!f.vol.join("b-added").exists());
    nothing_of_the_tool_is_left(&f);
}

#[test]
fn a_failure_after_the_database_was_restored_puts_the_database_back() {
    let a = Api::default();
    run_ok(&a.task("backup"));
    modify(&a.f.vol);
    let changed_db =
        json!({"users": [{"username": "later", "roles": []}], "roles": [], "permissions": []});
    a.emu.set_db(changed_db.clone());
    let paused = Paused::start(&a.task("restore"), a.f.path("go"));
    write(&a.f.vol.join("services/meanwhile.yml"), b"x", 0o644);
    let before = volume_listing(&a.f.vol);
    let r = paused.finish();
    let e = r.error.unwrap();
    assert_eq!(e.kind, ErrorKind::ConsistencyError, "{}", e.message);
    assert!(
        e.message.contains("was put back from safety set"),
        "{}",
        e.message
    );
    assert_eq!(
        a.emu.db(),
        changed_db,
        "the database is as before the restore"
    );
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 2);
    assert_eq!(listing(&a.f.vol), before);

    // Without a safety set there is nothing to put back: the error says which half is new.
    let mut task = a.task("restore");
    task["safety_backup"] = json!(false);
    let paused = Paused::start(&task, a.f.path("go2"));
    write(&a.f.vol.join("services/meanwhile-2.yml"), b"x", 0o644);
    let e = paused.finish().error.unwrap();
    assert!(
        e.message.contains("the database was restored from set")
            && e.message.contains("the volume was not"),
        "{}",
        e.message
    );

    // Putting the database back fails too: the error names the safety set to restore by hand.
    a.emu.set_db(changed_db.clone());
    let paused = Paused::start(&a.task("restore"), a.f.path("go3"));
    a.emu.set_faults(Faults {
        restore_fails: Some("disk full".into()),
        ..Faults::default()
    });
    write(&a.f.vol.join("services/meanwhile-3.yml"), b"x", 0o644);
    let e = paused.finish().error.unwrap();
    let safety = e.details["safety_set"].as_str().unwrap().to_string();
    assert!(
        e.message.contains("failed too") && e.message.contains(&safety),
        "{}",
        e.message
    );
    assert!(a.f.set_ids().contains(&safety));
}

#[test]
fn the_database_is_decided_by_content_not_by_the_last_restore_id() {
    let a = Api::default();
    let original = a.emu.db();
    run_ok(&a.task("backup"));
    a.emu
        .set_db(json!({"users": [], "roles": [], "permissions": []}));
    let first = run_ok(&a.task("restore"));
    assert!(first.db.unwrap().changed);
    assert_eq!(a.emu.db(), original);
    // The database changes after the restore; the server's last restore id still names the
    // set's backup, but the content differs: restored again.
    a.emu
        .set_db(json!({"users": [{"username": "x", "roles": []}], "roles": [], "permissions": []}));
    let second = run_ok(&a.task("restore"));
    assert!(
        second.changed && second.db.unwrap().changed,
        "{}",
        second.msg
    );
    assert_eq!(a.emu.db(), original);
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 2);
    // Right after, the content is equal: nothing to do, no restore request.
    let third = run_ok(&a.task("restore"));
    assert!(!third.changed, "{}", third.msg);
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 2);
    // A dry run sends no POST at all, and says the database was not compared.
    let posts = a.emu.count("POST", "/api/maintenance/db/backup");
    let mut dry = a.task("restore");
    dry["dry_run"] = json!(true);
    let r = run_ok(&dry);
    assert!(r.db.unwrap().changed);
    assert!(
        r.warnings.iter().any(|w| w.contains("not compared")),
        "{:?}",
        r.warnings
    );
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/backup"), posts);
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 2);
}

#[test]
fn the_restart_command_gets_no_secret() {
    let a = Api::default();
    run_ok(&a.task("backup"));
    modify(&a.f.vol);
    let dump = a.f.path("restart-env");
    let mut task = a.task("restore");
    task["api"]["password"] = serde_json::Value::Null;
    task["api"].as_object_mut().unwrap().remove("password");
    task["api"]["password_env"] = json!("CWB_TEST_API_SECRET");
    task["restart"] = json!(["sh", "-c", format!("env > {}", dump.display())]);
    let r = run_raw(
        task.to_string().as_bytes(),
        &[("CWB_TEST_API_SECRET", crate::api::PASSWORD)],
    );
    assert!(r.result.ok, "{}", r.stdout);
    assert!(!r.result.restart_required);
    let env = fs::read_to_string(&dump).unwrap();
    assert!(env.contains("PATH="), "the dump is the child's environment");
    assert!(
        !env.contains(crate::api::PASSWORD),
        "the secret reached the child"
    );
    assert!(!env.contains("CWB_TEST_API_SECRET"));
}

#[test]
fn symlinks_in_place_of_the_tools_paths_are_refused_and_never_followed() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    // The repository's lock.
    let victim = f.path("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    fs::remove_file(f.repo.join(".lock")).unwrap();
    std::os::unix::fs::symlink(&victim, f.repo.join(".lock")).unwrap();
    let mut task = f.task("backup");
    task["force"] = json!(true);
    let e = run(&task).result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::RepositoryError);
    assert!(e.message.contains("symlink"), "{}", e.message);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    fs::remove_file(f.repo.join(".lock")).unwrap();
    // The work directory inside the volume.
    let victim_dir = f.path("victim-dir");
    fs::create_dir(&victim_dir).unwrap();
    std::os::unix::fs::symlink(&victim_dir, f.vol.join(".cwbackup-work")).unwrap();
    modify(&f.vol);
    for task in [volume_only(&f, json!({})), task.clone()] {
        let e = run(&task).result.error.unwrap();
        assert!(e.message.contains("symlink"), "{}", e.message);
        assert_eq!(
            fs::read_dir(&victim_dir).unwrap().count(),
            0,
            "nothing written through it"
        );
    }
    fs::remove_file(f.vol.join(".cwbackup-work")).unwrap();
    run_ok(&volume_only(&f, json!({})));
}

#[test]
fn special_files_that_backups_skip_are_kept_or_named_by_a_restore() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    modify(&f.vol);
    let mkfifo = |p: &Path| {
        assert!(
            std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap()
                .success()
        )
    };
    mkfifo(&f.vol.join("control.fifo"));
    mkfifo(&f.vol.join("services/inner.fifo"));
    let r = run_ok(&volume_only(&f, json!({})));
    assert!(r.changed);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(f.vol.join("control.fifo"))
            .unwrap()
            .file_type()
            .is_fifo(),
        "a FIFO at the root that the set does not hold stays"
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("services/inner.fifo") && w.contains("removed")),
        "a FIFO that goes with its directory is named: {:?}",
        r.warnings
    );
}

#[test]
fn a_kill_after_the_database_restore_completes_the_volume_from_the_same_set() {
    let a = Api::default();
    let original_db = a.emu.db();
    let set = run_ok(&a.task("backup")).backup.unwrap().id;
    let set_digest = spec_digest(&a.f.vol);
    modify(&a.f.vol);
    a.emu
        .set_db(json!({"users": [], "roles": [], "permissions": []}));
    // Paused after the database restore, just before the swap: the journal already says that
    // the database comes from the set. Then the process dies.
    let mut paused = Paused::start(&a.task("restore"), a.f.path("go"));
    assert_eq!(a.emu.db(), original_db, "the database was restored");
    let journal = a.f.vol.join(".cwbackup-work/journal.json");
    let recorded = fs::read_to_string(&journal).unwrap();
    assert!(
        recorded.contains("db-restoring") && recorded.contains(&set),
        "{recorded}"
    );
    paused.child.kill().unwrap();
    paused.child.wait().unwrap();
    // The next task on the volume completes the volume from the same set, and says so.
    let mut backup = a.task("backup");
    backup["force"] = json!(true);
    let r = run_ok(&backup);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("both halves are from it")),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        spec_digest(&a.f.vol),
        set_digest,
        "the volume is the set's too"
    );
    assert_eq!(a.emu.db(), original_db);
    assert!(!journal.exists());
}

#[test]
fn a_backup_of_a_read_only_volume_works() {
    // A volume mounted read-only (a tmpfs remounted ro): backup needs only the OS lock.
    let f = Fixture::empty();
    fs::remove_dir(&f.vol).unwrap();
    let _mount = crate::disk_full::Mount::new(&f.vol, "16m");
    sample_tree(&f.vol);
    let remount = |mode: &str| {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&f.vol)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode}");
    };
    remount("ro");
    let r = run(&f.task("backup"));
    remount("rw");
    let r = r.result;
    assert!(r.ok, "{:?}", r.error);
    assert!(r.changed);
    assert!(!f.vol.join(".cwbackup-work").exists());
}
