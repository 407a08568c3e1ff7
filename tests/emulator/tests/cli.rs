//! The emulator's command line as an operator meets it: `--help` names every flag and fault
//! knob, and a start prints the URL, the credentials and the certificate to trust.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cw-emulator");

#[test]
fn help_lists_every_flag_and_fault_knob() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "--port",
        "--bind",
        "--version",
        "--username",
        "--password",
        "--token",
        "--op-duration-ms",
        "--tls",
        "--cert-out",
        "fail_next",
        "busy_next_posts",
        "drop_downloads",
        "backup_fails",
        "restore_fails",
        "never_finish",
        "delay_ms",
        "refuse_restore_versions",
        "last_compatible_version",
        "correct_spelling",
        "/_emulator/db",
        "/_emulator/requests",
        "/_emulator/faults",
    ] {
        assert!(help.contains(word), "--help does not name {word}");
    }
}

#[test]
fn a_start_prints_the_url_the_credentials_and_the_certificate_to_trust() {
    let dir = std::env::temp_dir().join(format!("cw-emulator-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("cw.pem");
    let mut child = Command::new(BIN)
        .args(["--password", "pw-for-cli-test", "--cert-out"])
        .arg(&pem)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(4)
        .map(Result::unwrap)
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        lines[0].starts_with("listening on https://127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "basic auth: user admin password pw-for-cli-test");
    assert_eq!(lines[2], "bearer token: test-token");
    assert_eq!(
        lines[3],
        format!("certificate to trust (ca_file): {}", pem.display())
    );
    assert!(
        std::fs::read_to_string(&pem)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
