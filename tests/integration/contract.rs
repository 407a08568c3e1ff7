//! The contract of SPEC §2 and §3: one result line, exit codes, schemas that match the code.

use std::fs;
use std::process::Command;

use cwbackup::error::ErrorKind;
use serde_json::json;

use crate::common::*;

#[test]
fn committed_schemas_match_the_code() {
    for which in ["task", "result", "manifest"] {
        let out = Command::new(BIN).args(["schema", which]).output().unwrap();
        assert!(out.status.success());
        let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let path = format!("{}/schemas/{which}.schema.json", env!("CARGO_MANIFEST_DIR"));
        let committed: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert!(
            generated == committed,
            "schemas/{which}.schema.json is out of date; regenerate it with:\n    scripts/gen-schemas.sh"
        );
    }
}

#[test]
fn invalid_json_is_exit_2_with_a_result() {
    let r = run_raw(b"{not json", &[]);
    assert_eq!(r.code, 2);
    assert_eq!(r.result.error.unwrap().kind, ErrorKind::InvalidTask);
    assert_eq!(r.result.operation, None);
}

#[test]
fn an_unknown_key_is_named_by_its_pointer() {
    let r = run(&json!({"operation": "list", "repository": "/tmp/x", "keep_lats": 3}));
    assert_eq!(r.code, 2);
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(e.message.contains("keep_lats"), "{}", e.message);
}

#[test]
fn a_bad_nested_value_is_named_by_its_pointer() {
    let r = run(&json!({"operation": "backup", "repository": "/tmp/x", "volume": {"path": 5}}));
    assert_eq!(r.code, 2);
    assert!(r.result.error.unwrap().message.contains("/volume/path"));
}

#[test]
fn ansible_internal_keys_are_ignored() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["_ansible_check_mode"] = json!(false);
    task["_ansible_no_log"] = json!(true);
    run_ok(&task);
}

#[test]
fn the_task_can_come_from_a_file() {
    let f = Fixture::sample();
    let path = f.path("task.json");
    fs::write(&path, f.task("backup").to_string()).unwrap();
    let out = Command::new(BIN).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let result: cwbackup::result::TaskResult = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result.changed);
}

#[test]
fn version_is_printed() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("cwbackup ")
    );
}

/// SPEC §6 "Always one result": a panic in the main thread, or in a worker thread (here the
/// checksum thread of verify), still prints one valid result line with `internal_error` and
/// exits 1. `CWBACKUP_TEST_PANIC` is the test-only trigger in src/lib.rs.
#[test]
fn a_panic_in_the_main_thread_or_a_worker_is_one_internal_error_result() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    for (place, task) in [
        ("main", json!({"operation": "list", "repository": f.repo})),
        (
            "worker",
            json!({"operation": "verify", "repository": f.repo}),
        ),
    ] {
        let r = run_raw(
            task.to_string().as_bytes(),
            &[("CWBACKUP_TEST_PANIC", place)],
        );
        assert_eq!(r.code, 1, "{place}: {}", r.stdout);
        let e = r.result.error.unwrap();
        assert_eq!(e.kind, ErrorKind::InternalError, "{place}: {}", e.message);
        assert!(!e.retryable);
        assert!(e.message.contains("a panic on purpose"), "{}", e.message);
        assert!(
            r.stderr.contains("internal error") && r.stderr.contains("a panic on purpose"),
            "{place}: the panic is logged on stderr: {}",
            r.stderr
        );
    }
}

/// Runs a task and insists that `secret` appears nowhere in its stdout or stderr.
fn run_hiding(task: &serde_json::Value, secret: &str) -> Run {
    let (r, _) = run_within(task, std::time::Duration::from_secs(30));
    assert!(
        !r.stdout.contains(secret) && !r.stderr.contains(secret),
        "the secret {secret:?} was echoed:\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    r
}

/// SPEC §3/§4: `api.url` is `https://` without a user or password, and a secret given with the
/// wrong JSON type is refused without echoing it.
#[test]
fn secrets_in_urls_or_of_the_wrong_type_are_refused_and_never_echoed() {
    let secret = "Xy9-unechoed-Secret";
    let api = |extra: serde_json::Value| {
        let mut api =
            json!({"url": "https://127.0.0.1:9", "password": "a-password", "timeout_s": 1});
        for (k, v) in extra.as_object().unwrap() {
            api[k] = v.clone();
        }
        json!({"operation": "backup", "repository": "/tmp/cw-r", "api": api})
    };
    let cases = [
        api(json!({"url": format!("https://admin:{secret}@127.0.0.1:9")})),
        api(json!({"url": format!("http://admin:{secret}@127.0.0.1:9")})),
        api(json!({"url": format!("https://{secret}@127.0.0.1:9")})),
        api(json!({"password": {"nested": secret}})),
        api(json!({"password": [secret]})),
        api(json!({"password": null, "token": {"t": secret}})),
        api(json!({"password": null, "password_env": [secret]})),
        api(json!({"password": null, "password_file": {"f": secret}})),
    ];
    for task in cases {
        let r = run_hiding(&task, secret);
        assert_eq!(r.code, 2, "{}", r.stdout);
        assert_eq!(r.result.error.unwrap().kind, ErrorKind::InvalidTask);
    }
    // A number as the password: its digits are not echoed either.
    let r = run_hiding(&api(json!({"password": 12345678})), "12345678");
    assert_eq!(r.code, 2);
    let e = r.result.error.unwrap();
    assert!(e.message.contains("/api/password"), "{}", e.message);
    // Plain http is refused even without a password in it, and says why.
    let r = run(&api(json!({"url": "http://127.0.0.1:9"})));
    assert_eq!(r.code, 2);
    assert!(r.result.error.unwrap().message.contains("https://"));
}

/// SPEC §6: `password_file` and `ca_file` are read with a cap and without blocking: `/dev/zero`,
/// a FIFO without a writer and an oversized file fail at once with a message.
#[test]
fn password_file_and_ca_file_are_capped_and_never_block() {
    let f = Fixture::sample();
    let fifo = f.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = f.path("big");
    fs::write(&big, vec![b'p'; 65 * 1024]).unwrap();
    let big_pem = f.path("big.pem");
    fs::write(&big_pem, vec![b'-'; 1024 * 1024 + 1]).unwrap();
    let api_task = |api: serde_json::Value| {
        let mut t = f.task("backup");
        t["api"] = api;
        t
    };
    let limit = std::time::Duration::from_secs(20);
    for (file, says) in [
        ("/dev/zero".into(), "regular file"),
        (fifo.clone(), "regular file"),
        (big.clone(), "64 KiB"),
    ] {
        let task = api_task(json!({"url": "https://127.0.0.1:9", "password_file": file}));
        let (r, _) = run_within(&task, limit);
        assert_eq!(r.code, 2, "{}", r.stdout);
        let e = r.result.error.unwrap();
        assert_eq!(e.kind, ErrorKind::InvalidTask);
        assert!(
            e.message.contains("password_file") && e.message.contains(says),
            "{}",
            e.message
        );
    }
    for (file, says) in [
        ("/dev/zero".into(), "regular file"),
        (fifo.clone(), "regular file"),
        (big_pem.clone(), "1 MiB"),
    ] {
        let task =
            api_task(json!({"url": "https://127.0.0.1:9", "password": "pw-1234", "ca_file": file}));
        let (r, _) = run_within(&task, limit);
        assert_eq!(r.code, 1, "{}", r.stdout);
        let e = r.result.error.unwrap();
        assert_eq!(e.kind, ErrorKind::ApiTlsError);
        assert!(
            e.message.contains("ca_file") && e.message.contains(says),
            "{}",
            e.message
        );
    }
}

/// Runs the binary with `args` and no standard input; returns its one result, exit code and
/// stderr.
fn run_args(args: &[&str]) -> (cwbackup::result::TaskResult, i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.ends_with('\n') && stdout.matches('\n').count() == 1,
        "{args:?}: one result line, got {stdout:?}"
    );
    let result: cwbackup::result::TaskResult = serde_json::from_str(&stdout).unwrap();
    (
        result,
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_command_line_it_does_not_understand_is_usage_on_stderr_and_one_invalid_task_result() {
    for args in [
        &["a", "b"][..],
        &["--frobnicate"][..],
        &["schema", "nope"][..],
        &["schema", "task", "extra"][..],
    ] {
        let (result, code, stderr) = run_args(args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(
            result.error.unwrap().kind,
            ErrorKind::InvalidTask,
            "{args:?}"
        );
        assert!(stderr.contains("usage: cwbackup"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_missing_task_file_is_named_in_the_error() {
    let (result, code, _) = run_args(&["/nonexistent/cwbackup-task.json"]);
    assert_eq!(code, 2);
    let e = result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidTask);
    assert!(
        e.message.contains("/nonexistent/cwbackup-task.json"),
        "{}",
        e.message
    );
}

#[test]
fn an_unknown_operation_lists_the_valid_ones() {
    let r = run(&json!({"operation": "backpu", "repository": "/r"}));
    assert_eq!(r.code, 2);
    let m = r.result.error.unwrap().message;
    assert!(
        m.contains("`backpu` is not an operation")
            && m.contains("`backup`, `restore`, `verify`, `list`, `prune`"),
        "{m}"
    );
}

#[test]
fn on_a_terminal_with_no_task_it_says_how_to_give_one_instead_of_waiting() {
    // `script` (util-linux) gives the binary a terminal as standard input.
    let out = Command::new("timeout")
        .args(["20", "script", "-qec", BIN, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "not killed by timeout: {text}");
    assert!(text.contains("no task given"), "{text}");
    assert!(text.contains("\"kind\":\"invalid_task\""), "{text}");
}
