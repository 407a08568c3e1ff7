use std::fs;
use std::os::unix::fs::MetadataExt;

use serde_json::json;

use crate::common::*;

#[test]
fn gnu_tar_extracts_the_archive_into_an_equal_tree() {
    let f = Fixture::sample();
    let r = run_ok(&f.task("backup"));
    assert!(r.changed);
    let set = only_set(&f.repo);
    let out = f.path("extracted");
    gnu_tar_extract(&set.join("volume.tar.gz"), &out, &["-z"]);
    let (a, b) = (listing(&f.vol), listing(&out));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same paths"
    );
    for (path, live) in &a {
        let got = &b[path];
        assert_eq!(live, got, "entry {:?}", String::from_utf8_lossy(path));
    }
}

#[test]
fn live_archive_and_extracted_digests_are_equal() {
    let f = Fixture::sample();
    let r = run_ok(&f.task("backup"));
    let manifest = r.backup.unwrap().manifest.unwrap();
    let recorded = manifest.single_volume().unwrap().content_digest.clone();
    // The live tree, digested by an independent implementation of SPEC §5.
    assert_eq!(recorded, spec_digest(&f.vol));
    // The tree GNU tar extracts.
    let out = f.path("x");
    gnu_tar_extract(&only_set(&f.repo).join("volume.tar.gz"), &out, &["-z"]);
    assert_eq!(recorded, spec_digest(&out));
    // The archive as cwbackup reads it (verify recomputes it from the entries) and as it
    // extracts it (deep).
    let v = run_ok(&json!({"operation": "verify", "repository": f.repo, "deep": true}));
    assert_eq!(v.findings.unwrap().len(), 0);
}

#[test]
fn manifest_records_the_volume_half() {
    let f = Fixture::sample();
    let r = run_ok(&f.task("backup"));
    let set = only_set(&f.repo);
    let m: cwbackup::repository::manifest::Manifest =
        serde_json::from_slice(&fs::read(set.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m.format, "cwbackup/2");
    assert_eq!(m.names(), ["volume"]);
    assert_eq!(m.id, r.backup.as_ref().unwrap().id);
    assert!(m.id.ends_with("-volume"), "{}", m.id);
    assert_eq!(m.connectware_version, None);
    let v = m.single_volume().unwrap();
    assert_eq!(v.name, "volume");
    let t = v.tree().unwrap();
    let live = listing(&f.vol);
    assert_eq!(t.files, live.len() as u64);
    assert_eq!(
        t.expanded_bytes,
        live.values()
            .filter(|e| e.kind == 'f')
            .map(|e| e.size)
            .sum::<u64>()
    );
    let archive = fs::read(set.join("volume.tar.gz")).unwrap();
    assert_eq!(v.bytes, archive.len() as u64);
    assert_eq!(
        v.sha256,
        hex(&<sha2::Sha256 as sha2::Digest>::digest(&archive))
    );
    assert!(
        v.sha256
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}

#[test]
fn set_files_are_0600_and_directories_0700() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    assert_eq!(fs::metadata(&f.repo).unwrap().mode() & 0o7777, 0o700);
    let set = only_set(&f.repo);
    assert_eq!(fs::metadata(&set).unwrap().mode() & 0o7777, 0o700);
    for file in ["manifest.json", "volume.tar.gz"] {
        assert_eq!(
            fs::metadata(set.join(file)).unwrap().mode() & 0o7777,
            0o600,
            "{file}"
        );
    }
}

#[test]
fn unchanged_second_backup_reports_changed_false_and_names_the_set() {
    let f = Fixture::sample();
    let first = run_ok(&f.task("backup"));
    let second = run_ok(&f.task("backup"));
    assert!(!second.changed, "{}", second.msg);
    assert_eq!(second.backup.unwrap().id, first.backup.unwrap().id);
    assert_eq!(f.set_ids().len(), 1);
}

#[test]
fn a_changed_volume_gets_a_new_set() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    write(&f.vol.join("services/new.yml"), b"new", 0o644);
    let r = run_ok(&f.task("backup"));
    assert!(r.changed);
    assert_eq!(f.set_ids().len(), 2);
    // A mode change alone is a change too.
    fs::set_permissions(
        f.vol.join("services/new.yml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert!(run_ok(&f.task("backup")).changed);
}

#[test]
fn force_writes_a_new_set_even_if_nothing_changed() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let mut task = f.task("backup");
    task["force"] = json!(true);
    assert!(run_ok(&task).changed);
    assert_eq!(f.set_ids().len(), 2);
}

#[test]
fn an_existing_backup_id_is_not_written_again() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["backup_id"] = json!("nightly-1");
    assert!(run_ok(&task).changed);
    write(&f.vol.join("changed"), b"x", 0o644);
    let again = run_ok(&task);
    assert!(!again.changed);
    assert_eq!(again.backup.unwrap().id, "nightly-1");
}

#[test]
fn default_ids_do_not_collide() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["force"] = json!(true);
    let ids: Vec<String> = (0..3).map(|_| run_ok(&task).backup.unwrap().id).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
}

#[test]
fn dry_run_reports_the_plan_and_writes_nothing() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["dry_run"] = json!(true);
    task["diff"] = json!(true);
    let r = run_ok(&task);
    assert!(r.changed && r.dry_run);
    assert!(r.diff.is_some());
    assert!(!f.repo.exists(), "a dry run must not create the repository");
    run_ok(&f.task("backup"));
    let r = run_ok(&task);
    assert!(!r.changed, "unchanged volume: a dry run predicts no change");
    write(&f.vol.join("new"), b"x", 0o644);
    assert!(run_ok(&task).changed);
    assert_eq!(f.set_ids().len(), 1, "dry runs wrote no set");
}

#[test]
fn keep_last_applies_retention_after_the_backup() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["force"] = json!(true);
    for _ in 0..3 {
        run_ok(&task);
    }
    task["keep_last"] = json!(2);
    let r = run_ok(&task);
    let new_id = r.backup.unwrap().id;
    assert_eq!(r.sets.unwrap().len(), 2, "two older sets deleted");
    let ids = f.set_ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], new_id, "the new set is kept");
}

/// A backup whose staged set is damaged (by the binary's test-only hook
/// `CWBACKUP_TEST_DAMAGE_STAGED`) after it was written and before the publish check.
fn backup_with_damage(f: &Fixture, verify: bool, how: &str) -> Run {
    let mut task = f.task("backup");
    task["verify"] = json!(verify);
    run_raw(
        task.to_string().as_bytes(),
        &[("CWBACKUP_TEST_DAMAGE_STAGED", how)],
    )
}

fn assert_refused_and_nothing_published(f: &Fixture, r: &Run) {
    let e = r
        .result
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("the damaged set was published: {}", r.stdout));
    assert_eq!(
        e.kind,
        cwbackup::error::ErrorKind::IntegrityError,
        "{}",
        e.message
    );
    assert!(e.message.contains("was not published"), "{}", e.message);
    assert!(f.set_ids().is_empty(), "no set listed");
    assert_staging_empty(&f.repo);
}

#[test]
fn verify_true_reads_the_new_set_back_before_publishing() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["verify"] = json!(true);
    assert!(run_ok(&task).changed);

    // Checksums are re-read before every publish, with or without `verify`.
    for verify in [false, true] {
        let f = Fixture::sample();
        let r = backup_with_damage(&f, verify, "bytes");
        assert_refused_and_nothing_published(&f, &r);
    }
    // An archive whose checksums hold but whose content differs from the manifest: only the
    // full read of `verify: true` finds it.
    let f = Fixture::sample();
    let r = backup_with_damage(&f, true, "content");
    assert_refused_and_nothing_published(&f, &r);
    assert!(
        r.result.error.unwrap().message.contains("content digest"),
        "{}",
        r.stdout
    );
    let f = Fixture::sample();
    let r = backup_with_damage(&f, false, "content");
    assert!(
        r.result.ok,
        "without verify the content is not read back: {}",
        r.stdout
    );
}

#[test]
fn a_missing_volume_is_volume_not_found() {
    let f = Fixture::empty();
    let task =
        json!({"operation": "backup", "repository": f.repo, "volume": {"path": f.path("nope")}});
    let r = run(&task);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.result.error.unwrap().kind,
        cwbackup::error::ErrorKind::VolumeNotFound
    );
}

#[test]
fn a_volume_that_keeps_changing_is_a_consistency_error() {
    let f = Fixture::empty();
    big_tree(&f.vol, 20, 200_000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), f.vol.join("busy.log"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                fs::write(&file, n.to_string().repeat((n % 50) as usize + 1)).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let r = run(&f.task("backup"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let e = r.result.error.expect("the backup fails");
    assert_eq!(
        e.kind,
        cwbackup::error::ErrorKind::ConsistencyError,
        "{}",
        e.message
    );
    assert!(e.retryable);
    assert!(r.stderr.contains("changed while it was archived"));
    assert_eq!(f.set_ids().len(), 0, "no set published");
    assert_staging_empty(&f.repo);
}

#[test]
fn zstd_archives_extract_with_gnu_tar_and_every_reader_follows_the_manifest() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["compression"] = json!("zstd");
    let r = run_ok(&task);
    let m = r.backup.unwrap().manifest.unwrap();
    let v = m.single_volume().unwrap();
    assert_eq!(v.file, "volume.tar.zst");
    assert_eq!(v.compression, Some(cwbackup::task::Compression::Zstd));
    let out = f.path("x");
    gnu_tar_extract(&only_set(&f.repo).join("volume.tar.zst"), &out, &["--zstd"]);
    assert_eq!(listing(&out), listing(&f.vol));
    run_ok(&json!({"operation": "verify", "repository": f.repo, "deep": true}));
    write(&f.vol.join("new.txt"), b"x", 0o644);
    let restored = run_ok(&f.task("restore"));
    assert!(restored.changed);
    assert_eq!(spec_digest(&f.vol), v.content_digest);
}

#[test]
fn progress_goes_to_stderr_only_for_long_work_or_when_asked() {
    let f = Fixture::sample();
    let quiet = run_raw(f.task("backup").to_string().as_bytes(), &[]);
    assert!(
        !quiet.stderr.contains("archiving"),
        "stderr is not a terminal and the work is shorter than one interval: no progress"
    );
    let mut task = f.task("backup");
    task["force"] = json!(true);
    let asked = run_raw(task.to_string().as_bytes(), &[("CWBACKUP_PROGRESS", "1")]);
    assert!(asked.result.ok);
    let line = asked
        .stderr
        .lines()
        .find(|l| l.starts_with("cwbackup: archiving"))
        .expect("a progress line");
    assert!(line.contains("files") && line.contains("MiB/s"), "{line}");
    assert!(
        !asked.stdout.contains("archiving"),
        "stdout holds the result alone"
    );
}

#[test]
fn progress_lines_on_a_captured_stderr_carry_the_percent_and_stdout_stays_one_json_line() {
    // Enough data to take a while; the debug-only hook shortens the 5 s between plain lines
    // so that the test needs seconds, not minutes.
    let f = Fixture::empty();
    big_tree(&f.vol, 48, 1 << 20);
    let every_ms = 50;
    let started = std::time::Instant::now();
    let r = run_raw(
        f.task("backup").to_string().as_bytes(),
        &[("CWBACKUP_TEST_PROGRESS_EVERY_MS", &every_ms.to_string())],
    );
    let took = started.elapsed();
    assert!(r.result.ok, "{}", r.stdout);
    // run_raw checked that stdout is exactly one JSON line; no progress went there.
    assert!(!r.stdout.contains("cwbackup:"), "{}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    let progress: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("cwbackup: archiving ") && !l.contains(" done: "))
        .collect();
    assert!(!progress.is_empty(), "progress lines: {}", r.stderr);
    for line in &progress {
        // "cwbackup: archiving 42% (20 files, 20.0 of 48.0 MiB), 95.1 MiB/s, 1 s left"
        let percent = line["cwbackup: archiving ".len()..]
            .split('%')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("a percent first: {line}"));
        assert!(percent <= 100, "{line}");
        assert!(
            line.contains(" of 48.0 MiB)") && line.contains(" left"),
            "{line}"
        );
    }
    assert!(
        progress.len() as u128 <= took.as_millis() / every_ms + 1,
        "at most one line per interval: {} lines in {took:?}",
        progress.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cwbackup: archiving done: ")),
        "a phase that printed progress closes with its totals: {}",
        r.stderr
    );
    assert!(
        lines.iter().all(|l| l.starts_with("cwbackup")),
        "whole lines, never two phases in one: {}",
        r.stderr
    );
}

#[test]
fn a_symlink_that_a_restore_would_refuse_is_warned_about_at_backup() {
    let f = Fixture::sample();
    std::os::unix::fs::symlink("/etc/hostname", f.vol.join("absolute-link")).unwrap();
    let r = run_ok(&f.task("backup"));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("absolute-link -> /etc/hostname") && w.contains("unsafe_archive")),
        "{:?}",
        r.warnings
    );
    assert!(
        !r.warnings.iter().any(|w| w.contains("links/rel")),
        "inside links are fine: {:?}",
        r.warnings
    );
}
