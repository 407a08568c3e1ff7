//! Repositories in an S3 bucket (SPEC §10), against a real SeaweedFS (see `weed.rs`): every
//! operation as on a directory, the lock, the server's refusals, and what a set without its
//! manifest is.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cwbackup::error::ErrorKind;
use serde_json::{Value, json};

use crate::common::*;
use crate::faultproxy::{Faults, Proxy};
use crate::weed::{self, Weed};

/// A task on an S3 repository: `f`'s task with `repository` replaced.
fn on(task: Value, repo: &Value) -> Value {
    let mut task = task;
    task["repository"] = repo.clone();
    task
}

fn ids(repo: &Value) -> Vec<String> {
    let r = run_ok(&json!({"operation": "list", "repository": repo}));
    r.sets.unwrap().into_iter().map(|s| s.id).collect()
}

/// A file of `mib` MiB that does not compress, so that a backup of it takes a while.
pub fn big_file(path: &std::path::Path, mib: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = Vec::with_capacity(mib << 20);
    while data.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    write(path, &data, 0o644);
}

/// Waits until `key` exists.
fn wait_for_object(w: &Weed, key: &str) {
    let start = Instant::now();
    while w.get(key).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{key} never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn every_operation_works_on_a_bucket_as_on_a_directory() {
    let Some(w) = Weed::start("every_operation_works_on_a_bucket_as_on_a_directory") else {
        return;
    };
    let repo = w.repo("plant-7/cw");
    let f = Fixture::sample();
    let original = spec_digest(&f.vol);

    let first = run_ok(&on(f.task("backup"), &repo));
    assert!(first.changed);
    assert!(
        first.warnings.iter().any(|m| m.contains("http://")),
        "plain http is warned about: {:?}",
        first.warnings
    );
    let id = first.backup.as_ref().unwrap().id.clone();
    let keys = w.keys("plant-7/cw/");
    assert!(
        keys.contains(&format!("plant-7/cw/{id}/manifest.json")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("plant-7/cw/{id}/volume.tar.gz")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains(".staging/")),
        "staging emptied: {keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.ends_with("lock.json")),
        "lock released: {keys:?}"
    );
    // The stored archive is what GNU tar reads.
    let archive = f.path("volume.tar.gz");
    std::fs::write(
        &archive,
        w.get(&format!("plant-7/cw/{id}/volume.tar.gz")).unwrap(),
    )
    .unwrap();
    let out = f.path("by-hand");
    gnu_tar_extract(&archive, &out, &["-z"]);
    assert_eq!(spec_digest(&out), original);

    let again = run_ok(&on(f.task("backup"), &repo));
    assert!(
        !again.changed,
        "an identical second backup changes nothing: {}",
        again.msg
    );
    assert_eq!(again.backup.unwrap().id, id);

    write(&f.vol.join("services/new.yml"), b"new: true\n", 0o644);
    let second = run_ok(&on(f.task("backup"), &repo));
    assert!(second.changed);
    assert_eq!(ids(&repo).len(), 2);

    let v = run_ok(&json!({"operation": "verify", "repository": repo, "deep": true}));
    assert_eq!(v.findings.unwrap().len(), 0);

    let mut restore = on(f.task("restore"), &repo);
    restore["backup_id"] = json!(id);
    let r = run_ok(&restore);
    assert!(r.changed);
    assert_eq!(spec_digest(&f.vol), original, "the first set is back");
    let safety = r
        .safety_backup
        .expect("a safety set was written to the bucket")
        .id;
    assert!(ids(&repo).contains(&safety));

    write(&f.vol.join("services/imported.yml"), b"by hand\n", 0o644);
    let archive = f.path("made-by-hand.tgz");
    let tar = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&f.vol)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let imported =
        run_ok(&json!({"operation": "import", "repository": repo, "volume_archive": archive}));
    assert!(imported.changed);

    let pruned = run_ok(&json!({"operation": "prune", "repository": repo, "keep_last": 1}));
    assert!(pruned.changed);
    let left = ids(&repo);
    assert!(
        left.contains(&safety),
        "safety sets are kept apart: {left:?}"
    );
    assert_eq!(left.len(), 2, "{left:?}");
    for gone in pruned.sets.unwrap() {
        assert!(
            w.keys(&format!("plant-7/cw/{}/", gone.id)).is_empty(),
            "{} is gone whole",
            gone.id
        );
    }
}

#[test]
fn an_encrypted_set_round_trips_through_a_bucket() {
    let Some(w) = Weed::start("an_encrypted_set_round_trips_through_a_bucket") else {
        return;
    };
    let repo = w.repo("enc");
    let f = Fixture::sample();
    let original = spec_digest(&f.vol);
    let (key, public) = crate::encryption::keygen(f.tmp.path(), "key.txt");
    let mut backup = on(f.task("backup"), &repo);
    backup["encryption"] = json!({"recipients": [public]});
    let id = run_ok(&backup).backup.unwrap().id;
    assert!(w.get(&format!("enc/{id}/volume.tar.gz.age")).is_some());
    write(&f.vol.join("services/opcua-server.yml"), b"changed", 0o644);
    let mut restore = on(f.task("restore"), &repo);
    restore["encryption"] = json!({"identity_file": key});
    restore["safety_backup"] = json!(false);
    run_ok(&restore);
    assert_eq!(spec_digest(&f.vol), original);
}

#[test]
fn a_set_without_manifest_is_never_used_and_the_next_backup_deletes_it() {
    let Some(w) =
        Weed::start("a_set_without_manifest_is_never_used_and_the_next_backup_deletes_it")
    else {
        return;
    };
    let repo = w.repo("p");
    let f = Fixture::sample();
    let good = run_ok(&on(f.task("backup"), &repo)).backup.unwrap().id;
    // An interrupted publication: the marker that names the set, files of it, no manifest.
    w.put(
        "p/29991231T000000.000Z-volume/volume.tar.gz",
        b"half an archive",
    );
    w.put("p/.staging/1.2.3/volume.tar.gz", b"left behind");
    w.put("p/.staging/1.2.3/.publishing", b"29991231T000000.000Z-volume");
    // Another repository below this prefix (or anything else that is not cwbackup's): no
    // clean ever deletes it.
    w.put("p/other/repo/20260101T000000.000Z-volume/volume.tar.gz", b"someone else's");
    let listed = run_ok(&json!({"operation": "list", "repository": repo}));
    assert_eq!(listed.sets.unwrap().len(), 1);
    assert!(
        listed
            .warnings
            .iter()
            .any(|m| m.contains("29991231T000000.000Z-volume"))
    );
    let mut restore = on(f.task("restore"), &repo);
    restore["safety_backup"] = json!(false);
    restore["force"] = json!(true);
    let r = run_ok(&restore);
    assert_eq!(
        r.backup.unwrap().id,
        good,
        "the incomplete set is never restored"
    );
    write(&f.vol.join("x"), b"x", 0o644);
    run_ok(&on(f.task("backup"), &repo));
    assert!(w.keys("p/29991231T000000.000Z-volume/").is_empty());
    assert!(w.keys("p/.staging/").is_empty());
    assert_eq!(
        w.keys("p/other/"),
        ["p/other/repo/20260101T000000.000Z-volume/volume.tar.gz"],
        "a folder no marker names is never deleted"
    );
    run_ok(&json!({"operation": "prune", "repository": repo, "keep_last": 1}));
    assert_eq!(w.keys("p/other/").len(), 1);
}

#[test]
fn a_second_backup_is_busy_naming_the_holder_and_a_killed_holders_lock_is_taken_over() {
    let Some(w) = Weed::start(
        "a_second_backup_is_busy_naming_the_holder_and_a_killed_holders_lock_is_taken_over",
    ) else {
        return;
    };
    let repo = w.repo("locks");
    let f = Fixture::sample();
    big_file(&f.vol.join("data/big.bin"), 48);
    let task = on(f.task("backup"), &repo);
    let ttl = [("CWBACKUP_TEST_S3_LOCK_TTL_S", OsStr::new("2"))];

    let mut holder = start(&task, &ttl, Stdio::null());
    wait_for_object(&w, "locks/lock.json");
    signal(holder.id(), libc::SIGSTOP);
    let busy = run(&task);
    signal(holder.id(), libc::SIGCONT);
    assert_eq!(kind(&busy), ErrorKind::Busy, "{}", busy.stdout);
    let details = &busy.result.error.as_ref().unwrap().details;
    assert_eq!(details["pid"], json!(holder.id()), "{}", busy.stdout);
    assert_eq!(details["operation"], json!("backup"));
    assert!(details["host"].is_string() && details["since"].is_string());
    assert!(holder.wait().unwrap().success(), "the holder finished");
    assert!(w.get("locks/lock.json").is_none(), "released");

    // A holder killed mid-upload: its lock stays until it expires, then is taken over; what
    // it uploaded is cleaned.
    write(&f.vol.join("services/changed.yml"), b"1", 0o644);
    let mut dead = start(&task, &ttl, Stdio::null());
    wait_for_object(&w, "locks/lock.json");
    std::thread::sleep(Duration::from_millis(300));
    signal(dead.id(), libc::SIGKILL);
    let _ = dead.wait();
    let still = run_raw(
        task.to_string().as_bytes(),
        &[("CWBACKUP_TEST_S3_LOCK_TTL_S", "2")],
    );
    assert_eq!(
        kind(&still),
        ErrorKind::Busy,
        "not yet expired: {}",
        still.stdout
    );
    let mut waiting = task.clone();
    waiting["wait_for_lock_s"] = json!(30);
    let started = Instant::now();
    let r = run_raw(
        waiting.to_string().as_bytes(),
        &[("CWBACKUP_TEST_S3_LOCK_TTL_S", "2")],
    );
    assert!(r.result.ok, "{}", r.stdout);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        w.keys("locks/.staging/").is_empty(),
        "the dead task's upload was cleaned"
    );
    assert_eq!(ids(&repo).len(), 2);
}

#[test]
fn the_servers_refusals_are_repository_errors_with_its_code_and_never_the_secret() {
    let Some(w) = Weed::start(
        "the_servers_refusals_are_repository_errors_with_its_code_and_never_the_secret",
    ) else {
        return;
    };
    let mut wrong = w.repo("x");
    wrong["s3"]["secret_access_key"] = json!(weed::WRONG_SECRET);
    let r = run(&json!({"operation": "list", "repository": wrong}));
    assert_eq!(kind(&r), ErrorKind::RepositoryError, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert_eq!(e.details["code"], "SignatureDoesNotMatch", "{}", r.stdout);
    assert!(
        e.message.contains("access_key_id"),
        "says what to check: {}",
        e.message
    );

    let mut missing = w.repo("x");
    missing["s3"]["bucket"] = json!("no-such-bucket");
    let f = Fixture::sample();
    let r = run(&on(f.task("backup"), &missing));
    assert_eq!(kind(&r), ErrorKind::RepositoryError, "{}", r.stdout);
    assert_eq!(
        r.result.error.unwrap().details["code"],
        "NoSuchBucket",
        "{}",
        r.stdout
    );

    // The secret from a file and from the environment work as well.
    let file = f.path("secret");
    std::fs::write(&file, format!("{}\n", weed::SECRET)).unwrap();
    let by_file = json!({"s3": {"endpoint": w.endpoint(), "bucket": weed::BUCKET, "prefix": "x",
                                "access_key_id": weed::KEY_ID, "secret_access_key_file": file}});
    run_ok(&json!({"operation": "list", "repository": by_file}));
    let by_env = json!({"s3": {"endpoint": w.endpoint(), "bucket": weed::BUCKET}});
    let r = run_raw(
        json!({"operation": "list", "repository": by_env})
            .to_string()
            .as_bytes(),
        &[
            ("AWS_ACCESS_KEY_ID", weed::KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", weed::SECRET),
        ],
    );
    assert!(r.result.ok, "{}", r.stdout);
}

#[test]
fn an_unreachable_endpoint_is_repository_error_naming_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let repo = json!({"s3": {"endpoint": format!("http://127.0.0.1:{port}"), "bucket": "some-bucket",
                             "access_key_id": weed::KEY_ID, "secret_access_key": weed::SECRET}});
    let r = run(&json!({"operation": "list", "repository": repo}));
    assert_eq!(kind(&r), ErrorKind::RepositoryError, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert!(
        e.message.contains(&format!("127.0.0.1:{port}/some-bucket")),
        "{}",
        e.message
    );
    assert!(e.message.contains("tried"), "{}", e.message);
    assert!(
        !r.stdout.contains("X-Amz-Signature"),
        "no signed URL: {}",
        r.stdout
    );
}

/// The test bucket's repository at `prefix`, reached through `proxy`.
fn through(proxy: &Proxy, prefix: &str) -> Value {
    json!({"s3": {"endpoint": proxy.endpoint(), "bucket": weed::BUCKET, "prefix": prefix,
                  "access_key_id": weed::KEY_ID, "secret_access_key": weed::SECRET}})
}

#[test]
fn slow_down_answers_and_cut_uploads_are_retried() {
    let Some(w) = Weed::start("slow_down_answers_and_cut_uploads_are_retried") else {
        return;
    };
    let f = Fixture::sample();
    // Three parts of a multipart upload.
    big_file(&f.vol.join("data/big.bin"), 20);
    let proxy = Proxy::start(
        w.port,
        Faults {
            slow_down: 3,
            cut_uploads: 3,
            ..Faults::default()
        },
    );
    let repo = through(&proxy, "flaky");
    let r = run_ok(&on(f.task("backup"), &repo));
    let left = proxy.faults();
    assert_eq!(
        (left.slow_down, left.cut_uploads),
        (0, 0),
        "every fault was met"
    );
    let id = r.backup.unwrap().id;
    proxy.faults.lock().unwrap().slow_down = 2;
    let v = run_ok(&json!({"operation": "verify", "repository": repo, "backup_id": id}));
    assert!(v.findings.unwrap().is_empty());
    assert_eq!(ids(&w.repo("flaky")), vec![id]);
}

#[test]
fn an_upload_that_keeps_failing_leaves_no_set_behind() {
    let Some(w) = Weed::start("an_upload_that_keeps_failing_leaves_no_set_behind") else {
        return;
    };
    let f = Fixture::sample();
    let proxy = Proxy::start(
        w.port,
        Faults {
            cut_uploads: 1000,
            ..Faults::default()
        },
    );
    let r = run(&on(f.task("backup"), &through(&proxy, "cut")));
    assert_eq!(kind(&r), ErrorKind::RepositoryError, "{}", r.stdout);
    let message = r.result.error.unwrap().message;
    assert!(
        message.contains("volume.tar.gz") && message.contains("tried"),
        "{message}"
    );
    assert!(ids(&w.repo("cut")).is_empty());
    let keys = w.keys("cut/");
    assert!(
        keys.iter()
            .all(|k| !k.contains("manifest") && !k.contains(".staging/")),
        "{keys:?}"
    );
}

#[test]
fn a_server_that_ignores_conditional_writes_is_refused() {
    let Some(w) = Weed::start("a_server_that_ignores_conditional_writes_is_refused") else {
        return;
    };
    let f = Fixture::sample();
    let proxy = Proxy::start(
        w.port,
        Faults {
            strip_conditions: true,
            ..Faults::default()
        },
    );
    let r = run(&on(f.task("backup"), &through(&proxy, "nocond")));
    assert_eq!(kind(&r), ErrorKind::RepositoryError, "{}", r.stdout);
    assert!(
        r.result
            .error
            .unwrap()
            .message
            .contains("conditional writes")
    );
    assert!(ids(&w.repo("nocond")).is_empty());
}

#[test]
fn a_holder_that_works_longer_than_the_lock_lives_keeps_it_by_renewing_it() {
    let Some(w) =
        Weed::start("a_holder_that_works_longer_than_the_lock_lives_keeps_it_by_renewing_it")
    else {
        return;
    };
    let f = Fixture::sample();
    // The holder's uploads are answered SlowDown four times: it backs off for almost 4 s,
    // four lifetimes of a 1 s lock.
    let proxy = Proxy::start(
        w.port,
        Faults {
            slow_down_staged: 4,
            ..Faults::default()
        },
    );
    let ttl = [("CWBACKUP_TEST_S3_LOCK_TTL_S", OsStr::new("1"))];
    let mut holder = start(
        &on(f.task("backup"), &through(&proxy, "renew")),
        &ttl,
        Stdio::null(),
    );
    wait_for_object(&w, "renew/lock.json");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the holder still works"
    );
    let other = run_raw(
        on(f.task("backup"), &w.repo("renew"))
            .to_string()
            .as_bytes(),
        &[("CWBACKUP_TEST_S3_LOCK_TTL_S", "1")],
    );
    assert_eq!(kind(&other), ErrorKind::Busy, "{}", other.stdout);
    assert!(holder.wait().unwrap().success());
    assert_eq!(proxy.faults().slow_down_staged, 0, "the faults were met");
    assert_eq!(ids(&w.repo("renew")).len(), 1);
}

#[test]
fn a_self_signed_server_is_trusted_through_ca_file_and_refused_without_it() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let Some(w) = Weed::start_tls(
        "a_self_signed_server_is_trusted_through_ca_file_and_refused_without_it",
        &cert,
        &key,
    ) else {
        return;
    };
    let mut repo = w.repo("tls");
    repo["s3"]["endpoint"] = json!(format!("https://127.0.0.1:{}", w.https_port.unwrap()));
    let f = Fixture::sample();
    let refused = run(&on(f.task("backup"), &repo));
    assert_eq!(
        kind(&refused),
        ErrorKind::RepositoryError,
        "{}",
        refused.stdout
    );
    assert!(refused.result.error.unwrap().message.contains("ca_file"));
    assert!(
        !refused.stdout.contains("X-Amz-"),
        "no signed URL: {}",
        refused.stdout
    );
    repo["s3"]["ca_file"] = json!(cert);
    let r = run_ok(&on(f.task("backup"), &repo));
    assert!(r.changed);
    assert!(
        r.warnings.iter().all(|m| !m.contains("http://")),
        "{:?}",
        r.warnings
    );
    assert_eq!(ids(&repo).len(), 1);
}

#[test]
fn a_holder_that_lost_its_lock_publishes_and_deletes_nothing() {
    let Some(w) = Weed::start("a_holder_that_lost_its_lock_publishes_and_deletes_nothing") else {
        return;
    };
    let repo = w.repo("lost");
    let f = Fixture::sample();
    big_file(&f.vol.join("data/big.bin"), 48);
    let task = on(f.task("backup"), &repo);
    let ttl = [("CWBACKUP_TEST_S3_LOCK_TTL_S", OsStr::new("2"))];
    // The holder stalls (SIGSTOP: a network stall, a paused VM) past its lock's lifetime;
    // another task takes the lock over and finishes.
    let stalled = start(&task, &ttl, Stdio::piped());
    wait_for_object(&w, "lost/lock.json");
    signal(stalled.id(), libc::SIGSTOP);
    // Another backup, of another volume, into the same repository.
    let g = Fixture::sample();
    let mut other = on(g.task("backup"), &repo);
    other["wait_for_lock_s"] = json!(30);
    let r = run_raw(other.to_string().as_bytes(), &[("CWBACKUP_TEST_S3_LOCK_TTL_S", "2")]);
    assert!(r.result.ok, "{}", r.stdout);
    let taken = r.result.backup.unwrap().id;
    // The stalled task goes on: it must notice, and neither publish nor clean anything.
    signal(stalled.id(), libc::SIGCONT);
    let out = stalled.wait_with_output().unwrap();
    let result: cwbackup::result::TaskResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!result.ok, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(result.error.unwrap().kind, ErrorKind::Busy);
    assert_eq!(ids(&repo), [taken], "only the set of the task that held the lock");
}
