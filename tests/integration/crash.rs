//! Crashes and concurrency: a killed backup leaves no set; two tasks never share a repository.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use cw_emulator::{Config, Emulator, Faults};
use cwbackup::error::ErrorKind;
use serde_json::json;
use sha2::Digest;

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

/// `len` bytes of incompressible data from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    (0..len).map(|_| rng.below(256) as u8).collect()
}

/// The crash suite's trees: `a` (what the volume holds) and `b` (the set restores go back
/// to). The swap moves top-level entries, so EVERY top-level entry differs between the two
/// (same names, other content; plus one name each tree alone has): a volume with some entries
/// of one tree and some of the other has neither tree's digest.
fn crash_tree(vol: &Path, tag: &str) {
    let seed = if tag == "a" { 10 } else { 20 };
    for d in 0..4u64 {
        write(
            &vol.join(format!("d{d}/blob.bin")),
            &noise(seed + d, 600_000),
            0o644,
        );
    }
    for i in 0..1000 {
        write(
            &vol.join(format!("t{i:04}.yml")),
            format!("{tag} {i}").as_bytes(),
            0o644,
        );
    }
    for i in 0..100 {
        write(
            &vol.join(format!("services/s{i:03}.yml")),
            format!("{tag} {i}").as_bytes(),
            0o644,
        );
    }
    write(&vol.join(format!("only-{tag}/x")), tag.as_bytes(), 0o644);
}

fn reset_to(vol: &Path, tag: &str) {
    fs::remove_dir_all(vol).unwrap();
    fs::create_dir(vol).unwrap();
    crash_tree(vol, tag);
}

/// The digest of each top-level entry's subtree.
fn top_level_digests(vol: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (path, e) in listing(vol) {
        let top = path.split(|b| *b == b'/').next().unwrap().to_vec();
        out.entry(top)
            .or_default()
            .extend(format!("{path:?} {e:?}\n").as_bytes());
    }
    out.into_iter()
        .map(|(k, v)| (k, hex(&sha2::Sha256::digest(&v))))
        .collect()
}

/// What a task was doing at a moment, seen from outside: the restore journal's phase, the
/// emulator's request in flight or server-side operation, the restore's staged tree, the
/// repository's `.staging/` (a set being written, or checked before publishing: its manifest
/// is there), a set published by this task.
fn observe(
    f: &Fixture,
    emu: &Emulator,
    is_restore: bool,
    restore_posts_before: usize,
    sets_before: &[String],
) -> String {
    if let Ok(text) = fs::read_to_string(restore_journal(&f.vol)) {
        let phase = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|j| j["phase"].as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        return format!("swap: {phase}");
    }
    if fs::metadata(restore_work_dir(&f.vol).join("journal.json.tmp")).is_ok() {
        return "swap: writing the journal".into();
    }
    let in_flight = emu.in_flight();
    let restore_posted = emu.count("POST", "/api/maintenance/db/restore") > restore_posts_before;
    if in_flight
        .iter()
        .any(|r| r == "POST /api/maintenance/db/restore")
    {
        return "db: upload (restore POST)".into();
    }
    if in_flight
        .iter()
        .any(|r| r == "GET /api/maintenance/db/backup")
    {
        return "db: download".into();
    }
    if in_flight
        .iter()
        .any(|r| r == "POST /api/maintenance/db/backup")
    {
        return "db: backup POST".into();
    }
    match emu.running() {
        Some(op) => return format!("db: server-side {op}"),
        None if restore_posted => return "restore: db restored, before the swap".into(),
        None => {}
    }
    let staging: Vec<_> = fs::read_dir(f.repo.join(".staging"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    if staging.iter().any(|p| p.join("manifest.json").exists()) {
        return "set: publish check".into();
    }
    if !staging.is_empty() {
        return "set: writing".into();
    }
    if f.set_dirs().iter().any(|id| !sets_before.contains(id)) {
        return "set: published, task ending".into();
    }
    // (A backup's volume may hold a staged tree a killed restore left: not the backup's.)
    if is_restore && restore_work_dir(&f.vol).join("staged").exists() {
        return "restore: staging the volume".into();
    }
    if in_flight.is_empty() {
        "other (start, locks, reading)".into()
    } else {
        format!("db: {}", in_flight.join(", "))
    }
}

impl Fixture {
    /// Every set directory in the repository, complete or not (read from the file system).
    fn set_dirs(&self) -> Vec<String> {
        fs::read_dir(&self.repo)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }
}

/// The crash suite: SIGKILL at a moment of a backup or a restore, each with and without the
/// database half (against the emulator, slowed down so that its phases can be hit), again and
/// again (CWBACKUP_CRASH_KILLS, default 20; `scripts/crash-suite.sh 200` for the long mode).
/// Half the kills land at a random time of the run, half once a chosen phase is seen. Each
/// kill records whether the process was still alive and the phase it was seen in just before.
/// After every kill: the repository's lock is taken over and every listed set verifies; the
/// next run succeeds, after which `.staging/` is empty, every set directory has its manifest
/// and no swap is pending; a killed backup left the volume alone; after a killed restore the
/// volume is the old tree or the set's, never a mix.
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
    let started = Instant::now();
    let mut rng = Rng(seed);
    let shm = Path::new("/dev/shm");
    let f = if shm.is_dir() {
        Fixture::empty_in(shm)
    } else {
        Fixture::empty()
    };
    let emu = Emulator::start(Config {
        password: crate::api::PASSWORD.into(),
        op_duration: Duration::from_millis(200),
        ..Config::default()
    })
    .unwrap();
    let ca_file = f.path("ca.pem");
    fs::write(&ca_file, &emu.trust_pem).unwrap();
    let api = json!({"url": emu.url, "password": crate::api::PASSWORD, "ca_file": ca_file, "timeout_s": 30, "poll_interval_s": 0.05});

    // Set B holds tree B and a database; the volume holds tree A otherwise.
    crash_tree(&f.vol, "b");
    let mut with_api = f.task("backup");
    with_api["api"] = api.clone();
    let set_b = run_ok(&with_api).backup.unwrap().id;
    let digest_b = spec_digest(&f.vol);
    let tops_b = top_level_digests(&f.vol);
    reset_to(&f.vol, "a");
    let digest_a = spec_digest(&f.vol);
    for (name, d) in top_level_digests(&f.vol) {
        assert_ne!(
            tops_b.get(&name),
            Some(&d),
            "top-level entry {name:?} is the same in A and B"
        );
    }
    // Every API call waits 60 ms and every server-side operation runs 200 ms: the download,
    // the upload and the wait between the database restore and the swap last long enough
    // to be hit.
    emu.set_faults(Faults {
        delay_ms: 60,
        ..Faults::default()
    });

    // The four modes: backup, restore, each without and with the database half.
    let mut tasks = Vec::new();
    for (op, db) in [
        ("backup", false),
        ("restore", false),
        ("backup", true),
        ("restore", true),
    ] {
        let mut task = f.task(op);
        task["force"] = json!(true);
        if op == "restore" {
            task["backup_id"] = json!(set_b);
            task["safety_backup"] = json!(true);
        }
        if db {
            task["api"] = api.clone();
        }
        // How long each takes unkilled, to spread the kills over the whole run.
        let span = timed(&task);
        reset_to(&f.vol, "a");
        let name = format!("{op}{}", if db { " + db" } else { "" });
        eprintln!("crash suite: {name} takes {span:?} unkilled");
        tasks.push((name, task, span));
    }
    // The phases a kill may wait for, per mode.
    let targets: [&[&str]; 4] = [
        &["set: writing", "set: publish check"],
        &[
            "restore: staging the volume",
            "set: writing",
            "swap: moving-old",
            "swap: moving-new",
        ],
        &["db: server-side backup", "db: download", "set: writing"],
        &[
            "db: download",
            "db: upload",
            "db: server-side restore",
            "restore: db restored",
            "swap: moving-old",
            "swap: moving-new",
        ],
    ];
    // The next task after each kill: a backup of the volume into the same repository.
    let mut recovery = f.task("backup");
    recovery["force"] = json!(true);

    let mut per_phase: BTreeMap<String, u64> = BTreeMap::new();
    let (mut sets_checked, mut rolled_back, mut finished, mut ended_first) = (0, 0, 0, 0);
    for i in 0..kills {
        let mode = (i % 4) as usize;
        let (name, task, span) = &mut tasks[mode];
        let is_restore = task["operation"] == "restore";
        if is_restore {
            task["safety_backup"] = json!(rng.below(2) == 0);
        }
        let target = if rng.below(2) == 0 {
            None
        } else {
            let t = targets[mode];
            Some(t[rng.below(t.len() as u64) as usize])
        };
        let before = spec_digest(&f.vol);
        let sets_before = f.set_dirs();
        let restore_posts = emu.count("POST", "/api/maintenance/db/restore");
        let mut child = spawn(task);
        match target {
            None => std::thread::sleep(Duration::from_micros(
                rng.below(span.as_micros() as u64 * 11 / 10),
            )),
            Some(target) => {
                let deadline = Instant::now() + *span * 3;
                while !observe(&f, &emu, is_restore, restore_posts, &sets_before)
                    .starts_with(target)
                    && child.try_wait().unwrap().is_none()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_micros(50));
                }
                std::thread::sleep(Duration::from_micros(rng.below(1_000)));
            }
        }
        let phase = observe(&f, &emu, is_restore, restore_posts, &sets_before);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        let alive = status.signal() == Some(9);
        let phase = if alive {
            phase
        } else {
            ended_first += 1;
            format!("ended before the kill ({})", status)
        };
        *per_phase.entry(format!("{name}: {phase}")).or_default() += 1;
        let at = format!("kill {i} ({name}, {phase}, target {target:?}, seed {seed})");

        // The lock is taken over and no listed set is damaged (leftovers are still there).
        let listed = f.set_ids();
        assert!(
            listed.contains(&set_b),
            "{at}: the restored set is still there"
        );
        let verified = run(&json!({"operation": "verify", "repository": f.repo}));
        assert!(
            verified.result.ok,
            "{at}: a listed set is damaged: {}",
            verified.stdout
        );
        sets_checked += listed.len();
        // The next run that touches the volume and the repository succeeds, makes the volume
        // whole and cleans up.
        run_ok(&recovery);
        assert_staging_empty(&f.repo);
        for id in f.set_dirs() {
            assert!(
                f.repo.join(&id).join("manifest.json").exists(),
                "{at}: set directory {id} without a manifest after the next task"
            );
        }
        let work = restore_work_dir(&f.vol);
        assert!(
            !restore_journal(&f.vol).exists(),
            "{at}: a swap is still pending in {}",
            work.display()
        );
        // SPEC §6: when a task returns, the volume holds nothing of the tool's; the next task
        // on the volume removes what a crash left.
        assert!(
            !work.exists(),
            "{at}: the next task left the work directory {} in the volume",
            work.display()
        );
        let now = spec_digest(&f.vol);
        if is_restore {
            assert!(
                now == before || now == digest_b,
                "{at}: the volume is a mix of old and new"
            );
            if now == digest_b {
                finished += 1;
                reset_to(&f.vol, "a");
            } else {
                rolled_back += 1;
            }
        } else {
            assert_eq!(now, before, "{at}: a backup changed the volume");
        }
        assert_eq!(spec_digest(&f.vol), digest_a);
        // Keep the repository small: set B and the newest other set stay (checked above).
        let mut others: Vec<_> = f.set_dirs().into_iter().filter(|n| *n != set_b).collect();
        others.sort();
        others.pop();
        for id in others {
            fs::remove_dir_all(f.repo.join(id)).unwrap();
        }
    }
    eprintln!("crash suite: kills per phase (mode: phase seen just before the kill):");
    for (phase, n) in &per_phase {
        eprintln!("  {n:4}  {phase}");
    }
    eprintln!(
        "crash suite: {kills} kills ({ended_first} found the task already ended), {sets_checked} sets checked, restores {rolled_back} rolled back / {finished} finished, failures 0, {:.0} s (seed {seed})",
        started.elapsed().as_secs_f64()
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

/// Two volumes, p and q, as a restore of both (one journal for all, issue 13) leaves them
/// when killed: p's new tree completely in (its old entries in `old/`), q's old entries half
/// moved out; with the group's `committed` record or without it. A single-volume backup of
/// either volume first brings BOTH to the same side: without the record both are old, with it
/// both new; the other volume's outcome is a warning naming it, and neither keeps a work
/// directory.
#[test]
fn a_single_volume_task_finishes_a_killed_restore_of_several_volumes_on_all_of_them() {
    for committed in [false, true] {
        for by in ["p", "q"] {
            let f = Fixture::empty();
            let (p, q) = (f.path("p"), f.path("q"));
            let members: Vec<Vec<u8>> = [&p, &q]
                .iter()
                .map(|v| {
                    fs::create_dir(v).unwrap();
                    use std::os::unix::ffi::OsStrExt;
                    fs::canonicalize(v).unwrap().as_os_str().as_bytes().to_vec()
                })
                .collect();
            let group = json!({"id": "20261127T200000Z-1-000000001", "members": members});
            let (pw, qw) = (restore_work_dir(&p), restore_work_dir(&q));
            // p: swapped in completely (moving-new done), its old tree in old/.
            write(&pw.join("old/a1"), b"old p", 0o644);
            write(&p.join("b1"), b"new p", 0o644);
            fs::create_dir_all(pw.join("staged")).unwrap();
            // q: moving-old, one of two old entries moved out; its staged tree complete, or
            // (committed) moving-new finished too.
            if committed {
                write(&qw.join("old/c1"), b"old q", 0o644);
                write(&qw.join("old/c2"), b"old q", 0o644);
                write(&q.join("d1"), b"new q", 0o644);
                fs::create_dir_all(qw.join("staged")).unwrap();
            } else {
                write(&qw.join("old/c1"), b"old q", 0o644);
                write(&q.join("c2"), b"old q", 0o644);
                write(&qw.join("staged/d1"), b"new q", 0o644);
            }
            let journal = |phase: &str, incoming: &[&str]| {
                let incoming: Vec<Vec<u8>> =
                    incoming.iter().map(|n| n.as_bytes().to_vec()).collect();
                json!({"phase": phase, "set": "s1", "kept": [], "incoming": incoming, "group": group})
                    .to_string()
            };
            write(
                &pw.join("journal.json"),
                journal("moving-new", &["b1"]).as_bytes(),
                0o600,
            );
            if committed {
                write(
                    &qw.join("journal.json"),
                    journal("moving-new", &["d1"]).as_bytes(),
                    0o600,
                );
                let record = json!({"id": group["id"], "set": "s1", "members": group["members"],
                                    "decision": "committed"});
                write(&pw.join("group.json"), record.to_string().as_bytes(), 0o600);
            } else {
                write(
                    &qw.join("journal.json"),
                    journal("moving-old", &[]).as_bytes(),
                    0o600,
                );
            }
            let vol = if by == "p" { &p } else { &q };
            let r = run_ok(&json!({"operation": "backup", "repository": f.repo,
                                   "volume": {"path": vol}}));
            let other = if by == "p" { &q } else { &p };
            assert!(
                r.warnings
                    .iter()
                    .any(|w| w.contains(&*other.to_string_lossy())),
                "committed {committed}, by {by}: {:?}",
                r.warnings
            );
            let (want_p, want_q) = if committed {
                (vec![("b1", "new p")], vec![("d1", "new q")])
            } else {
                (
                    vec![("a1", "old p")],
                    vec![("c1", "old q"), ("c2", "old q")],
                )
            };
            for (v, want) in [(&p, want_p), (&q, want_q)] {
                let mut got: Vec<(String, String)> = fs::read_dir(v)
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        let name = e.file_name().into_string().unwrap();
                        let content = fs::read_to_string(e.path()).unwrap_or_default();
                        (name, content)
                    })
                    .collect();
                got.sort();
                let want: Vec<(String, String)> = want
                    .into_iter()
                    .map(|(n, c)| (n.to_string(), c.to_string()))
                    .collect();
                assert_eq!(got, want, "committed {committed}, by {by}, {}", v.display());
            }
        }
    }
}
