//! Crashes and concurrency: a killed backup leaves no set; two tasks never share a repository.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cwbackup::error::ErrorKind;
use serde_json::json;

use crate::common::*;

/// Starts a backup in the background; returns once it is writing its archive.
fn start_backup(f: &Fixture) -> Child {
    let mut child = Command::new(BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(f.task("backup").to_string().as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let writing = fs::read_dir(f.repo.join(".staging"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|set| fs::metadata(set.path().join("volume.tar.gz")).is_ok_and(|m| m.len() > 0));
        if writing {
            return child;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was caught writing"
        );
        assert!(
            Instant::now() < deadline,
            "the backup never started writing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigkill_during_a_large_backup_leaves_no_set_and_the_next_backup_succeeds() {
    let f = Fixture::empty();
    big_tree(&f.vol, 60, 1_000_000);
    let mut child = start_backup(&f);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        f.set_ids().is_empty(),
        "a killed backup must not leave a listed set"
    );
    let leftovers = fs::read_dir(f.repo.join(".staging")).unwrap().count();
    assert_eq!(
        leftovers, 1,
        "the interrupted set stays in staging until the next run"
    );

    let r = run_ok(&f.task("backup"));
    assert!(r.changed);
    assert_eq!(
        fs::read_dir(f.repo.join(".staging")).unwrap().count(),
        0,
        "leftovers cleaned"
    );
    assert_eq!(f.set_ids().len(), 1);
    run_ok(&json!({"operation": "verify", "repository": f.repo}));
}

#[test]
fn a_second_backup_while_one_runs_is_busy_and_names_the_holder() {
    let f = Fixture::empty();
    big_tree(&f.vol, 60, 1_000_000);
    let mut child = start_backup(&f);
    let r = run(&f.task("backup"));
    let holder = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    let e = r.result.error.expect("busy");
    assert_eq!(e.kind, ErrorKind::Busy, "{}", e.message);
    assert!(e.retryable);
    assert_eq!(e.details["pid"], json!(holder));
    assert_eq!(e.details["operation"], json!("backup"));
    assert!(e.details["host"].is_string() && e.details["since"].is_string());
}

#[test]
fn wait_for_lock_s_waits_for_the_holder_to_finish() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    // Hold the repository's OS lock from here, as another process would, for one second.
    let lock = fs::File::options()
        .read(true)
        .write(true)
        .open(f.repo.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        drop(lock);
    });
    let mut task = json!({"operation": "prune", "repository": f.repo, "keep_last": 1});
    let busy = run(&task);
    assert_eq!(busy.result.error.unwrap().kind, ErrorKind::Busy);
    task["wait_for_lock_s"] = json!(10);
    run_ok(&task);
    releaser.join().unwrap();
}
