//! Crashes and concurrency: a killed backup leaves no set; two tasks never share a repository.

use std::fs;
use std::process::Child;
use std::time::{Duration, Instant};

use cwbackup::error::ErrorKind;
use serde_json::json;

use crate::common::*;

/// Starts a backup in the background; returns once it is writing its archive.
fn start_backup(f: &Fixture) -> Child {
    let mut child = spawn(&f.task("backup"));
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

/// A small xorshift generator: the seed is printed, so a failing run can be repeated with
/// CWBACKUP_CRASH_SEED.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn timed(task: &serde_json::Value) -> Duration {
    let start = Instant::now();
    run_ok(task);
    start.elapsed()
}

/// The crash suite: SIGKILL at a random moment of a backup or a restore, again and again
/// (CWBACKUP_CRASH_KILLS, default 20; `scripts/crash-suite.sh 200` for the long mode). After
/// every kill: the repository's lock is taken over and every listed set verifies; the next run
/// succeeds; a killed backup left the volume alone; after a killed restore the volume is the
/// old tree or the set's, never a mix.
#[test]
fn random_sigkills_during_backup_and_restore_lose_nothing() {
    let kills: u64 = std::env::var("CWBACKUP_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CWBACKUP_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash suite: {kills} kills, CWBACKUP_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let shm = std::path::Path::new("/dev/shm");
    let f = if shm.is_dir() {
        Fixture::empty_in(shm)
    } else {
        Fixture::empty()
    };

    // Tree B is the set restores go back to; tree A is what the volume holds otherwise.
    let make_a = |vol: &std::path::Path| {
        big_tree(vol, 4, 1_500_000);
        for i in 0..400 {
            write(
                &vol.join(format!("services/a{i:03}.yml")),
                format!("a {i}").as_bytes(),
                0o644,
            );
        }
    };
    let reset_a = |vol: &std::path::Path| {
        fs::remove_dir_all(vol).unwrap();
        fs::create_dir(vol).unwrap();
        make_a(vol);
    };
    make_a(&f.vol);
    for i in 0..400 {
        write(
            &f.vol.join(format!("services/b{i:03}.yml")),
            format!("b {i}").as_bytes(),
            0o644,
        );
    }
    let set_b = run_ok(&f.task("backup")).backup.unwrap().id;
    let digest_b = spec_digest(&f.vol);
    reset_a(&f.vol);

    let mut backup = f.task("backup");
    backup["force"] = json!(true);
    let mut restore = f.task("restore");
    restore["backup_id"] = json!(set_b);
    restore["force"] = json!(true);
    // How long each takes unkilled, to spread the kills over the whole run.
    let backup_time = timed(&backup);
    restore["safety_backup"] = json!(true);
    let restore_time = timed(&restore);
    reset_a(&f.vol);
    let mut recovery = f.task("backup");
    recovery["repository"] = json!(f.path("recovery-repo"));
    recovery["force"] = json!(true);

    let (mut sets_checked, mut rolled_back, mut finished) = (0, 0, 0);
    for i in 0..kills {
        let is_restore = i % 2 == 1;
        let (task, span) = if is_restore {
            restore["safety_backup"] = json!(rng.below(2) == 0);
            (&restore, restore_time)
        } else {
            (&backup, backup_time)
        };
        let before = spec_digest(&f.vol);
        let mut child = spawn(task);
        std::thread::sleep(Duration::from_micros(
            rng.below(span.as_micros() as u64 * 11 / 10),
        ));
        child.kill().unwrap();
        child.wait().unwrap();

        // The lock is taken over and no listed set is damaged.
        let listed = f.set_ids();
        assert!(
            listed.contains(&set_b),
            "kill {i}: the restored set is still there"
        );
        let verified = run(&json!({"operation": "verify", "repository": f.repo}));
        assert!(
            verified.result.ok,
            "kill {i} (seed {seed}): a listed set is damaged: {}",
            verified.stdout
        );
        sets_checked += listed.len();
        // The next run that touches the volume succeeds and makes it whole.
        run_ok(&recovery);
        let now = spec_digest(&f.vol);
        if is_restore {
            assert!(
                now == before || now == digest_b,
                "kill {i} (seed {seed}): the volume is a mix of old and new"
            );
            if now == digest_b {
                finished += 1;
                reset_a(&f.vol);
            } else {
                rolled_back += 1;
            }
        } else {
            assert_eq!(
                now, before,
                "kill {i} (seed {seed}): a backup changed the volume"
            );
        }
        // Keep the repositories small: set B and the newest other set stay.
        for repo in [f.repo.clone(), f.path("recovery-repo")] {
            let mut others: Vec<_> = fs::read_dir(&repo)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| {
                    let name = e.file_name().into_string().unwrap();
                    !name.starts_with('.') && name != set_b
                })
                .map(|e| e.path())
                .collect();
            others.sort();
            others.pop();
            for path in others {
                fs::remove_dir_all(path).unwrap();
            }
        }
    }
    eprintln!(
        "crash suite: {kills} kills, {sets_checked} sets checked, restores {rolled_back} rolled back / {finished} finished, failures 0 (seed {seed})"
    );
}

#[test]
fn a_backup_during_a_restore_is_busy_or_waits() {
    let f = Fixture::empty();
    big_tree(&f.vol, 40, 1_000_000);
    let set = run_ok(&f.task("backup")).backup.unwrap().id;
    write(&f.vol.join("changed.txt"), b"x", 0o644);
    let mut restore = f.task("restore");
    restore["backup_id"] = json!(set);
    let mut child = spawn(&restore);
    // Wait until the restore holds the repository lock (its safety set is being written).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_dir(f.repo.join(".staging")).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it was caught"
        );
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    let busy = run(&f.task("backup"));
    let e = busy.result.error.expect("busy");
    assert_eq!(e.kind, ErrorKind::Busy, "{}", e.message);
    assert_eq!(e.details["operation"], json!("restore"));
    let mut waiting = f.task("backup");
    waiting["wait_for_lock_s"] = json!(60);
    let r = run_ok(&waiting);
    assert!(child.wait().unwrap().success(), "the restore finished");
    // The waiting backup ran after the restore: it saw the restored volume, equal to the set.
    assert!(!r.changed, "{}", r.msg);
    run_ok(&json!({"operation": "verify", "repository": f.repo}));
}
