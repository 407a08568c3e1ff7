use std::fs;

use cwbackup::error::ErrorKind;
use cwbackup::result::Level;
use serde_json::json;

use crate::common::*;

fn verify(f: &Fixture) -> Run {
    run(&json!({"operation": "verify", "repository": f.repo}))
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_good_set_verifies() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let r = verify(&f);
    assert!(r.result.ok, "{}", r.stdout);
    assert!(!r.result.changed);
}

#[test]
fn a_corrupted_byte_is_an_integrity_error() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let archive = only_set(&f.repo).join("volume.tar.gz");
    let len = fs::metadata(&archive).unwrap().len() as usize;
    flip_byte(&archive, len / 2);
    let r = verify(&f);
    assert_eq!(r.code, 1);
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::IntegrityError);
    let findings = r.result.findings.unwrap();
    assert!(
        findings.iter().any(|f| f.level == Level::Error
            && f.component == "volume"
            && f.message.contains("sha256")),
        "{findings:?}"
    );
}

#[test]
fn every_problem_in_every_set_is_collected() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["force"] = json!(true);
    run_ok(&task);
    run_ok(&task);
    let ids = f.set_ids();
    for id in &ids {
        flip_byte(&f.repo.join(id).join("volume.tar.gz"), 100);
    }
    fs::create_dir(f.repo.join("half-written")).unwrap();
    let findings = verify(&f).result.findings.unwrap();
    for id in &ids {
        assert!(
            findings
                .iter()
                .any(|x| &x.set == id && x.level == Level::Error),
            "{id}: {findings:?}"
        );
    }
    assert!(
        findings
            .iter()
            .any(|x| x.set == "half-written" && x.level == Level::Warning)
    );
}

#[test]
fn a_manifest_that_lies_about_the_content_is_caught_by_reading_the_archive() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let set = only_set(&f.repo);
    let path = set.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    m["components"][0]["content_digest"] = json!("sha256:0000");
    fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let r = verify(&f);
    assert_eq!(r.result.error.unwrap().kind, ErrorKind::IntegrityError);
    assert!(
        r.result
            .findings
            .unwrap()
            .iter()
            .any(|x| x.message.contains("content digest"))
    );
}

#[test]
fn deep_verify_extracts_and_compares_the_tree() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let r = run_ok(&json!({"operation": "verify", "repository": f.repo, "deep": true}));
    assert!(r.findings.unwrap().is_empty());
    let leftovers: Vec<_> = fs::read_dir(f.repo.join(".staging")).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "deep verify cleans up its scratch tree"
    );
}

/// An archive written by hand (as `tar czf x.tgz dir/file.txt` makes it) that holds
/// `dir/file.txt` but no entry for `dir`: the stream the shallow verify reads matches the
/// manifest (its checksum, entry count, bytes and content digest all say one file), but
/// extracting it makes the directory too, so the tree on disk is not what the manifest
/// describes. Only the deep verify, which digests the extracted tree, finds that.
#[test]
fn deep_verify_finds_what_the_shallow_verify_misses() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let set = only_set(&f.repo);
    let archive = set.join("volume.tar.gz");

    let content = b"written by hand\n";
    let tree = f.path("hand");
    write(&tree.join("dir/file.txt"), content, 0o644);
    let mut entries = listing(&tree);
    entries.remove(b"dir".as_slice()).expect("dir is listed");
    let stream_digest = spec_digest_of(&entries);

    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "dir/file.txt", &content[..])
        .unwrap();
    let bytes = builder.into_inner().unwrap().finish().unwrap();
    fs::write(&archive, &bytes).unwrap();

    let path = set.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    m["components"][0]["sha256"] = json!(hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    m["components"][0]["bytes"] = json!(bytes.len());
    m["components"][0]["files"] = json!(1);
    m["components"][0]["expanded_bytes"] = json!(content.len());
    m["components"][0]["content_digest"] = json!(stream_digest);
    fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();

    let shallow = verify(&f);
    assert!(
        shallow.result.ok,
        "the shallow verify sees nothing wrong: {}",
        shallow.stdout
    );
    let deep = run(&json!({"operation": "verify", "repository": f.repo, "deep": true}));
    assert_eq!(
        deep.result.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::IntegrityError),
        "{}",
        deep.stdout
    );
    let findings = deep.result.findings.unwrap();
    assert!(
        findings
            .iter()
            .any(|x| x.level == Level::Error && x.message.contains("extracted tree")),
        "{findings:?}"
    );
    assert_staging_empty(&f.repo);
}

#[test]
fn against_live_reports_drift_as_warnings() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let mut task = f.task("verify");
    task["against_live"] = json!(true);
    assert!(run_ok(&task).findings.unwrap().is_empty(), "no drift yet");
    write(&f.vol.join("services/added.yml"), b"new", 0o644);
    fs::remove_file(f.vol.join("services/secret.env")).unwrap();
    write(&f.vol.join("bin/run.sh"), b"changed", 0o755);
    let r = run_ok(&task);
    let findings = r.findings.unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    let m = &findings[0].message;
    assert_eq!(findings[0].level, Level::Warning);
    assert!(
        m.contains("1 added [services/added.yml]")
            && m.contains("1 removed [services/secret.env]")
            && m.contains("1 changed [bin/run.sh]"),
        "{m}"
    );
}

#[test]
fn an_unknown_set_is_backup_not_found() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let r = run(&json!({"operation": "verify", "repository": f.repo, "backup_id": "nope"}));
    assert_eq!(r.result.error.unwrap().kind, ErrorKind::BackupNotFound);
}

#[test]
fn against_live_right_after_a_restore_compares_with_the_restored_set_not_the_safety_set() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    write(
        &f.vol.join("services/opcua-server.yml"),
        b"edited by hand",
        0o644,
    );
    let restored = run_ok(&f.task("restore"));
    assert!(restored.safety_backup.is_some(), "a safety set was written");
    let mut task = f.task("verify");
    task["against_live"] = json!(true);
    let findings = run_ok(&task).findings.unwrap();
    assert!(
        findings.is_empty(),
        "the live volume equals the restored set: {findings:?}"
    );
}
