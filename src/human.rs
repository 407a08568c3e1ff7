//! The human summary of a result (`cwbackup --human`, SPEC §2): what `--human` prints on
//! stdout instead of the JSON line. A pure function of the [`TaskResult`], so that what a
//! person reads is always what a playbook would have read, only shorter: per component what
//! changed and why, sizes in KiB/MiB/GiB, `list` and `prune` as an aligned table, verify
//! findings one a line, the error with its kind and a hint, the warnings.

use std::fmt::Write as _;

use crate::error::{Error, ErrorKind};
use crate::result::{ComponentOutcome, Finding, Level, SetSummary, TaskResult};
use crate::task::Operation;

/// The summary of `result`, newline-terminated.
pub fn render(result: &TaskResult) -> String {
    let mut out = String::new();
    let operation = result
        .operation
        .map(|o| o.to_string())
        .unwrap_or_else(|| "task".to_string());
    let reads_only = matches!(result.operation, Some(Operation::List | Operation::Verify));
    let status = match (result.ok, result.dry_run, result.changed) {
        (false, _, _) => "FAILED",
        (true, _, false) if reads_only => "ok",
        (true, true, true) => "ok, dry run: would change",
        (true, true, false) => "ok, dry run: nothing to change",
        (true, false, true) => "ok, changed",
        (true, false, false) => "ok, unchanged",
    };
    line(&mut out, format!("{operation}: {status}"));
    if !result.msg.is_empty() && result.error.as_ref().map(|e| &e.message) != Some(&result.msg) {
        line(&mut out, format!("  {}", result.msg));
    }
    if let Some(set) = &result.backup {
        line(&mut out, format!("set:      {}  ({})", set.id, set.path));
    }
    if let Some(set) = &result.safety_backup {
        line(&mut out, format!("safety:   {}  ({})", set.id, set.path));
    }
    components(&mut out, result);
    if let Some(containers) = result.containers.as_ref().filter(|c| !c.is_empty()) {
        let down = result
            .downtime_ms
            .map_or_else(String::new, |ms| format!(", stopped for {}", duration(ms)));
        line(
            &mut out,
            format!("stopped:  {} container(s){down}: {}", containers.len(), containers.join(", ")),
        );
    }
    if let Some(sets) = &result.sets {
        sets_table(&mut out, result, sets);
    }
    if let Some(findings) = &result.findings {
        findings_lines(&mut out, findings);
    }
    if result.restart_required {
        line(
            &mut out,
            "restart:  Connectware must be restarted (and Admin-UI sessions renewed) to use \
             what was restored"
                .to_string(),
        );
    }
    if let Some(error) = &result.error {
        error_lines(&mut out, error);
    }
    for warning in &result.warnings {
        line(&mut out, format!("warning:  {warning}"));
    }
    line(&mut out, format!("took {}", duration(result.duration_ms)));
    out
}

fn line(out: &mut String, text: String) {
    out.push_str(&text);
    out.push('\n');
}

/// The components of the result: `components` when present, else `volume` and `db`.
fn components(out: &mut String, result: &TaskResult) {
    let list: Vec<ComponentOutcome> = match &result.components {
        Some(list) => list.clone(),
        None => {
            let mut list = Vec::new();
            if let Some(v) = &result.volume {
                list.push(ComponentOutcome {
                    name: "volume".into(),
                    kind: "volume".into(),
                    changed: v.changed,
                    files: Some(v.files),
                    bytes: Some(v.bytes),
                    content_digest: Some(v.content_digest.clone()),
                    path: Some(v.path.clone()),
                    backup_id: None,
                    status_message: None,
                });
            }
            if let Some(d) = &result.db {
                list.push(ComponentOutcome {
                    name: "db".into(),
                    kind: "db".into(),
                    changed: d.changed,
                    files: None,
                    bytes: None,
                    content_digest: None,
                    path: None,
                    backup_id: d.backup_id.clone(),
                    status_message: d.status_message.clone(),
                });
            }
            list
        }
    };
    if list.is_empty() {
        return;
    }
    let name_width = list.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let rows: Vec<(String, String)> = list
        .iter()
        .map(|c| (what_happened(result, c), figures(c)))
        .collect();
    let what_width = rows.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
    for (c, (what, figures)) in list.iter().zip(rows) {
        let text = format!("  {:name_width$}  {what:what_width$}  {figures}", c.name);
        line(out, text.trim_end().to_string());
    }
}

/// What happened to one component, and why, in a few words.
fn what_happened(result: &TaskResult, c: &ComponentOutcome) -> String {
    let dry = result.dry_run;
    match (result.operation, c.changed) {
        (Some(Operation::Backup), true) if dry => "would be written: new or changed content",
        (Some(Operation::Backup), true) if c.kind == "db" => "written: a new database backup",
        (Some(Operation::Backup), true) => "written: new or changed content",
        (Some(Operation::Backup), false) => "unchanged: same content as the last set",
        (Some(Operation::Restore), true) if dry => "would be restored: differs from the set",
        (Some(Operation::Restore), true) => "restored: differed from the set",
        (Some(Operation::Restore), false) => "unchanged: already equal to the set",
        (Some(Operation::Verify), _) => "checked",
        (_, true) => "changed",
        (_, false) => "unchanged",
    }
    .to_string()
}

/// Files, size and, for the database, the server's id and status.
fn figures(c: &ComponentOutcome) -> String {
    let mut parts = Vec::new();
    if let Some(files) = c.files {
        parts.push(format!(
            "{} {}",
            count(files),
            plural(files, "entry", "entries")
        ));
    }
    if let Some(bytes) = c.bytes {
        parts.push(size(bytes));
    }
    if let Some(id) = &c.backup_id {
        parts.push(format!("server backup {id}"));
    }
    if let Some(status) = &c.status_message {
        parts.push(format!("status {status:?}"));
    }
    if let Some(path) = &c.path {
        parts.push(path.clone());
    }
    parts.join(", ")
}

/// `list`: the sets; `prune`: the sets deleted (or that would be).
fn sets_table(out: &mut String, result: &TaskResult, sets: &[SetSummary]) {
    let prune = result.operation == Some(Operation::Prune);
    if sets.is_empty() {
        line(
            out,
            if prune {
                "no set to delete"
            } else {
                "no backup sets"
            }
            .to_string(),
        );
        return;
    }
    if prune {
        let verb = if result.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        line(
            out,
            format!(
                "{verb} {} {}:",
                sets.len(),
                plural(sets.len() as u64, "set", "sets")
            ),
        );
    }
    let header = ["ID", "AGE", "SIZE", "VERSION", "COMPONENTS"];
    let rows: Vec<[String; 5]> = sets
        .iter()
        .map(|s| {
            [
                s.id.clone(),
                age(s.age_s),
                size(s.bytes),
                s.connectware_version.clone().unwrap_or_else(|| "-".into()),
                s.components.join(","),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(&rows) {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Ages and sizes (and their headers) read best right-aligned.
            let pad = w.saturating_sub(cell.chars().count());
            let right = i == 1 || i == 2;
            if right {
                let _ = write!(text, "{}{cell}  ", " ".repeat(pad));
            } else {
                let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
            }
        }
        line(out, text.trim_end().to_string());
    }
}

/// verify: one finding a line, errors first as verify reports them.
fn findings_lines(out: &mut String, findings: &[Finding]) {
    if findings.is_empty() {
        line(out, "findings: none".to_string());
        return;
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    line(
        out,
        format!(
            "findings: {} ({errors} {}, {} {})",
            findings.len(),
            plural(errors as u64, "error", "errors"),
            findings.len() - errors,
            plural((findings.len() - errors) as u64, "warning", "warnings"),
        ),
    );
    for f in findings {
        let level = match f.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        line(
            out,
            format!("  {level:7}  {}  {}: {}", f.set, f.component, f.message),
        );
    }
}

fn error_lines(out: &mut String, error: &Error) {
    let retry = if error.retryable {
        ", may succeed if run again"
    } else {
        ""
    };
    line(out, format!("error:    {}{retry}", error.kind));
    line(out, format!("  {}", error.message));
    for (key, value) in &error.details {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        line(out, format!("  {key}: {value}"));
    }
    line(out, format!("hint:     {}", hint(error.kind)));
}

/// What to try next for each kind of failure.
pub fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidTask => {
            "fix the task: `cwbackup schema task` prints what it may hold, `cwbackup --help` the usage"
        }
        ErrorKind::VolumeNotFound => "check the volume's path, or its name in `docker volume ls`",
        ErrorKind::RepositoryError => {
            "check that the repository's path is a directory this user can read and write"
        }
        ErrorKind::BackupNotFound => "run a `list` task to see which sets there are",
        ErrorKind::IntegrityError => {
            "the set does not match its manifest: restore another set (see `list`) and take a new backup"
        }
        ErrorKind::UnsafeArchive => {
            "the set holds entries that could escape or damage the volume: do not extract it by hand either"
        }
        ErrorKind::ConsistencyError => {
            "the volume kept changing: run again when nothing writes to it, or stop its containers"
        }
        ErrorKind::ApiUnreachable => {
            "check that Connectware runs and that `api.url` is its base URL (without /api)"
        }
        ErrorKind::ApiAuthFailed => {
            "check the admin password (password, password_file, password_env) or the token"
        }
        ErrorKind::ApiTlsError => {
            "give Connectware's CA (cybus_ca.crt) or the server's certificate as `api.ca_file`"
        }
        ErrorKind::ApiProtocolError => {
            "check that `api.url` is Connectware's base URL, not another service or a proxy page"
        }
        ErrorKind::DbBackupFailed => {
            "Connectware could not back up its database: see its status message and logs"
        }
        ErrorKind::DbRestoreFailed => {
            "Connectware could not restore its database: see its status message and logs"
        }
        ErrorKind::VersionIncompatible => {
            "restore onto the same or a newer Connectware version, or set `force` if you are sure"
        }
        ErrorKind::Timeout => {
            "raise `timeout_s`, or check why Connectware's operation does not finish"
        }
        ErrorKind::Busy => {
            "another cwbackup task holds the lock: wait for it, or set `wait_for_lock_s`"
        }
        ErrorKind::NoSpace => "free space on the file system named above, then run again",
        ErrorKind::IoError => "check the path and the permissions named above",
        ErrorKind::DockerError => {
            "check that Docker runs and that this user may open its socket (root, or the docker group)"
        }
        ErrorKind::EncryptionError => "check the key or passphrase given for the repository",
        ErrorKind::InternalError => {
            "a bug in cwbackup: please report it with the lines it logged on stderr"
        }
    }
}

/// Bytes in B, KiB, MiB, GiB or TiB (powers of 1024), three significant digits.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.digits$} {}", UNITS[unit])
}

/// A duration of work: milliseconds, seconds, or minutes and seconds.
pub fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// How long ago, in the largest whole unit.
fn age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7_200 => format!("{} min", secs / 60),
        7_200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// A count with thousands separators.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{DbOutcome, SetRef, VolumeOutcome};

    fn component(
        name: &str,
        kind: &str,
        changed: bool,
        files: u64,
        bytes: u64,
    ) -> ComponentOutcome {
        ComponentOutcome {
            name: name.into(),
            kind: kind.into(),
            changed,
            files: (kind != "db").then_some(files),
            bytes: Some(bytes),
            content_digest: Some("sha256:00".into()),
            path: (kind != "db").then(|| format!("/srv/{name}")),
            backup_id: (kind == "db").then(|| "1.10.2_2026-11-27T02:15:00Z".into()),
            status_message: (kind == "db").then(|| "OK".into()),
        }
    }

    #[test]
    fn sizes_use_binary_units_with_three_digits() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.00 KiB");
        assert_eq!(size(1536), "1.50 KiB");
        assert_eq!(size(12 * 1024 * 1024 + 300 * 1024), "12.3 MiB");
        assert_eq!(size(391 * 1024 * 1024), "391 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.50 GiB");
    }

    #[test]
    fn durations_and_ages_read_in_the_largest_unit() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(1_234), "1.2 s");
        assert_eq!(duration(125_000), "2 min 05 s");
        assert_eq!(duration(3_720_000), "1 h 02 min");
        assert_eq!(age(59), "59 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(10_800), "3 h");
        assert_eq!(age(3 * 86_400), "3 d");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
    }

    #[test]
    fn a_backup_names_the_set_and_says_per_component_what_was_written() {
        let mut r = TaskResult::ok(Operation::Backup, false, true, "wrote backup set S1");
        r.backup = Some(SetRef {
            id: "S1".into(),
            path: "/backup/S1".into(),
            manifest: None,
        });
        r.components = Some(vec![
            component("volume", "volume", true, 20_000, 410_000_000),
            component("db", "db", false, 0, 2048),
        ]);
        r.duration_ms = 1_780;
        r.warnings = vec!["skipped the socket run/app.sock".into()];
        let text = render(&r);
        assert_eq!(
            text,
            "backup: ok, changed\n\
             \x20 wrote backup set S1\n\
             set:      S1  (/backup/S1)\n\
             \x20 volume  written: new or changed content          20,000 entries, 391 MiB, /srv/volume\n\
             \x20 db      unchanged: same content as the last set  2.00 KiB, server backup 1.10.2_2026-11-27T02:15:00Z, status \"OK\"\n\
             warning:  skipped the socket run/app.sock\n\
             took 1.8 s\n"
        );
    }

    #[test]
    fn a_quiesced_backup_names_the_containers_it_stopped_and_for_how_long() {
        let mut r = TaskResult::ok(Operation::Backup, false, true, "wrote backup set S1");
        r.containers = Some(vec!["connectware-postgresql-1".into(), "connectware-broker-1".into()]);
        r.downtime_ms = Some(4_200);
        let text = render(&r);
        assert!(
            text.contains("stopped:  2 container(s), stopped for 4.2 s: connectware-postgresql-1, connectware-broker-1\n"),
            "{text}"
        );
        r.containers = Some(Vec::new());
        assert!(!render(&r).contains("stopped:"));
    }

    #[test]
    fn without_components_the_volume_and_db_halves_are_shown() {
        let mut r = TaskResult::ok(Operation::Restore, true, true, "would restore S1");
        r.volume = Some(VolumeOutcome {
            changed: true,
            path: "/srv/vol".into(),
            files: 1,
            bytes: 10,
            content_digest: "sha256:00".into(),
        });
        r.db = Some(DbOutcome {
            changed: false,
            backup_id: None,
            status_message: None,
        });
        let text = render(&r);
        assert!(
            text.starts_with("restore: ok, dry run: would change\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  volume  would be restored: differs from the set  1 entry, 10 B, /srv/vol\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  db      unchanged: already equal to the set\n"),
            "{text}"
        );
    }

    #[test]
    fn list_is_an_aligned_table_newest_first() {
        let mut r = TaskResult::ok(Operation::List, false, false, "2 backup sets");
        r.sets = Some(vec![
            SetSummary {
                id: "20261127T021500.123Z-1.10.2".into(),
                created_at: "2026-11-27T02:15:00.123Z".into(),
                bytes: 64 * 1024 * 1024,
                connectware_version: Some("1.10.2".into()),
                age_s: 3 * 3600,
                components: vec!["volume".into(), "db".into()],
            },
            SetSummary {
                id: "pre-restore-20261120T000000Z".into(),
                created_at: "2026-11-20T00:00:00Z".into(),
                bytes: 900,
                connectware_version: None,
                age_s: 7 * 86_400,
                components: vec!["volume".into()],
            },
        ]);
        let text = render(&r);
        assert!(text.starts_with("list: ok\n  2 backup sets\n"), "{text}");
        let table: Vec<&str> = text.lines().skip(2).take(3).collect();
        assert_eq!(
            table,
            [
                "ID                            AGE      SIZE  VERSION  COMPONENTS",
                "20261127T021500.123Z-1.10.2   3 h  64.0 MiB  1.10.2   volume,db",
                "pre-restore-20261120T000000Z  7 d     900 B  -        volume",
            ],
            "{text}"
        );
        let empty = render(&TaskResult {
            sets: Some(vec![]),
            ..TaskResult::ok(Operation::List, false, false, "no backup sets")
        });
        assert!(empty.contains("\nno backup sets\n"), "{empty}");
    }

    #[test]
    fn verify_findings_are_one_a_line_with_the_error_kind_and_hint() {
        let error = Error::new(ErrorKind::IntegrityError, "1 set of 2 is damaged");
        let mut r = TaskResult::failed(Some(Operation::Verify), false, error);
        r.findings = Some(vec![
            Finding {
                level: Level::Error,
                set: "S1".into(),
                component: "volume".into(),
                message: "volume.tar.gz has sha256 ab, the manifest says cd".into(),
            },
            Finding {
                level: Level::Warning,
                set: "S2".into(),
                component: "live".into(),
                message: "the live volume differs from the set".into(),
            },
        ]);
        let text = render(&r);
        assert!(text.starts_with("verify: FAILED\n"), "{text}");
        assert!(
            text.contains("findings: 2 (1 error, 1 warning)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  error    S1  volume: volume.tar.gz has sha256 ab, the manifest says cd\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  warning  S2  live: the live volume differs from the set\n"),
            "{text}"
        );
        assert!(
            text.contains("error:    integrity_error\n  1 set of 2 is damaged\n"),
            "{text}"
        );
        assert!(text.contains(&format!("hint:     {}\n", hint(ErrorKind::IntegrityError))));
        assert_eq!(
            text.matches("1 set of 2 is damaged").count(),
            1,
            "message once: {text}"
        );
    }

    #[test]
    fn an_error_shows_its_details_and_says_when_a_retry_may_help() {
        let error = Error::new(ErrorKind::Busy, "the repository is locked")
            .detail("host", "h1")
            .detail("pid", 42);
        let text = render(&TaskResult::failed(Some(Operation::Backup), false, error));
        assert!(
            text.contains(
                "error:    busy, may succeed if run again\n  the repository is locked\n  host: h1\n  pid: 42\nhint:     another cwbackup task"
            ),
            "{text}"
        );
        let unread = render(&TaskResult::failed(
            None,
            false,
            Error::new(ErrorKind::InvalidTask, "unknown option \"--x\""),
        ));
        assert!(
            unread.starts_with("task: FAILED\nerror:    invalid_task\n"),
            "{unread}"
        );
    }

    #[test]
    fn prune_says_what_it_deleted() {
        let mut r = TaskResult::ok(Operation::Prune, true, true, "would delete 1 set");
        r.sets = Some(vec![SetSummary {
            id: "old".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            bytes: 5 * 1024 * 1024 * 1024,
            connectware_version: Some("1.9.0".into()),
            age_s: 100 * 86_400,
            components: vec!["volume".into()],
        }]);
        let text = render(&r);
        assert!(text.contains("would delete 1 set:\nID "), "{text}");
        assert!(
            text.contains("old  100 d  5.00 GiB  1.9.0    volume\n"),
            "{text}"
        );
    }
}
