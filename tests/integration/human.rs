//! `cwbackup --human` (SPEC §2): the task runs exactly as without it, with the same exit code,
//! but stdout is a short summary for a person instead of the JSON line.

use std::fs;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::*;

/// Runs `cwbackup --human TASK_FILE` (the task written to a file in the fixture) and returns
/// stdout and the exit code.
fn human(f: &Fixture, task: &Value) -> (String, i32) {
    let path = f.tmp.path().join("task.json");
    fs::write(&path, task.to_string()).unwrap();
    let out = Command::new(BIN)
        .arg("--human")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    assert!(
        serde_json::from_str::<Value>(text.trim()).is_err(),
        "not the JSON line: {text}"
    );
    (text, out.status.code().expect("exited"))
}

#[test]
fn human_backup_says_what_was_written_and_then_that_nothing_changed() {
    let f = Fixture::sample();
    let (text, code) = human(&f, &f.task("backup"));
    assert_eq!(code, 0, "{text}");
    let id = only_set(&f.repo)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(text.starts_with("backup: ok, changed\n"), "{text}");
    assert!(text.contains(&format!("set:      {id}  (")), "{text}");
    let volume = text
        .lines()
        .find(|l| l.starts_with("  volume  "))
        .unwrap_or_else(|| panic!("a line for the volume: {text}"));
    assert!(
        volume.contains("written: new or changed content") && volume.contains(" KiB"),
        "{volume}"
    );
    assert!(text.lines().last().unwrap().starts_with("took "), "{text}");
    // The task really ran: the same backup again finds nothing to do.
    let (again, code) = human(&f, &f.task("backup"));
    assert_eq!(code, 0);
    assert!(again.starts_with("backup: ok, unchanged\n"), "{again}");
    assert!(
        again.contains("unchanged: same content as the last set"),
        "{again}"
    );
}

#[test]
fn human_list_is_a_table_with_a_header_and_one_row_a_set() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let (text, code) = human(&f, &json!({"operation": "list", "repository": f.repo}));
    assert_eq!(code, 0, "{text}");
    let id = only_set(&f.repo)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("ID "))
        .unwrap_or_else(|| panic!("a header: {text}"));
    for column in ["AGE", "SIZE", "VERSION", "COMPONENTS"] {
        assert!(lines[header].contains(column), "{text}");
    }
    let row = lines[header + 1];
    assert!(row.starts_with(&id) && row.ends_with("volume"), "{row}");
    assert!(row.contains(" KiB") || row.contains(" B "), "a size: {row}");
    // Columns line up: VERSION starts at the same place in the header and the row.
    let at = lines[header].find("VERSION").unwrap();
    assert_eq!(&row[at..at + 1], "-", "{text}");
}

#[test]
fn human_verify_prints_each_finding_on_its_line_and_exits_1() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let archive = only_set(&f.repo).join("volume.tar.gz");
    let mut bytes = fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&archive, bytes).unwrap();
    let (text, code) = human(&f, &json!({"operation": "verify", "repository": f.repo}));
    assert_eq!(code, 1, "as without --human: {text}");
    assert!(text.starts_with("verify: FAILED\n"), "{text}");
    let finding = text
        .lines()
        .find(|l| l.starts_with("  error ") && l.contains("volume: "))
        .unwrap_or_else(|| panic!("a finding line: {text}"));
    assert!(finding.contains("sha256"), "{finding}");
    assert!(text.contains("\nerror:    integrity_error\n"), "{text}");
    assert!(text.contains("\nhint:     "), "{text}");
}

#[test]
fn human_failures_keep_their_exit_code_and_show_kind_message_and_hint() {
    let f = Fixture::empty();
    let missing = json!({"operation": "backup", "repository": f.repo,
                         "volume": {"path": f.tmp.path().join("nowhere")}});
    let (text, code) = human(&f, &missing);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with("backup: FAILED\n"), "{text}");
    assert!(text.contains("\nerror:    volume_not_found\n"), "{text}");
    assert!(
        text.contains("nowhere"),
        "the message names the path: {text}"
    );
    assert!(
        text.contains("\nhint:     check the volume's path"),
        "{text}"
    );

    let (text, code) = human(&f, &json!({"operation": "backpu", "repository": f.repo}));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("error:    invalid_task\n"), "{text}");

    // A command line it does not understand: usage on stderr, the result shown human too.
    let out = Command::new(BIN)
        .args(["--human", "--frobnicate"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("task: FAILED\nerror:    invalid_task\n"),
        "{text}"
    );
    assert!(text.contains("unknown option \"--frobnicate\""), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: cwbackup"));
}
