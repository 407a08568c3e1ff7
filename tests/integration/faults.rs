//! The fault matrix: every fault knob of the emulator, against backup and against restore.
//! Each ends in its documented error kind or in a retried success, and nothing is lost: every
//! listed set verifies, a failed backup publishes no set, a failed restore leaves the volume as
//! it was, a successful one leaves it equal to the set.

use cw_emulator::Faults;
use cwbackup::error::ErrorKind;
use serde_json::json;

use crate::api::Api;
use crate::common::*;

struct Case {
    name: &'static str,
    faults: Faults,
    timeout_s: f64,
    backup: Option<ErrorKind>,
    restore: Option<ErrorKind>,
}

fn cases() -> Vec<Case> {
    let f = Faults::default;
    let ok = |name, faults| Case {
        name,
        faults,
        timeout_s: 10.0,
        backup: None,
        restore: None,
    };
    vec![
        ok("no fault", f()),
        ok(
            "three 503s",
            Faults {
                fail_next: 3,
                ..f()
            },
        ),
        Case {
            name: "503 forever",
            faults: Faults {
                fail_next: 100_000,
                ..f()
            },
            timeout_s: 1.0,
            backup: Some(ErrorKind::ApiUnreachable),
            restore: Some(ErrorKind::ApiUnreachable),
        },
        ok(
            "busy twice",
            Faults {
                busy_next_posts: 2,
                ..f()
            },
        ),
        ok(
            "two broken downloads",
            Faults {
                drop_downloads: 2,
                ..f()
            },
        ),
        Case {
            name: "downloads always break",
            faults: Faults {
                drop_downloads: 100_000,
                ..f()
            },
            timeout_s: 1.0,
            // The restore's safety backup downloads too.
            backup: Some(ErrorKind::ApiUnreachable),
            restore: Some(ErrorKind::ApiUnreachable),
        },
        Case {
            name: "server backup fails",
            faults: Faults {
                backup_fails: Some("disk full on server".into()),
                ..f()
            },
            timeout_s: 10.0,
            backup: Some(ErrorKind::DbBackupFailed),
            restore: Some(ErrorKind::DbBackupFailed),
        },
        Case {
            name: "server restore fails",
            faults: Faults {
                restore_fails: Some("relation locked".into()),
                ..f()
            },
            timeout_s: 10.0,
            backup: None,
            restore: Some(ErrorKind::DbRestoreFailed),
        },
        Case {
            name: "never finishes",
            faults: Faults {
                never_finish: true,
                ..f()
            },
            timeout_s: 1.0,
            backup: Some(ErrorKind::Timeout),
            restore: Some(ErrorKind::Timeout),
        },
        ok(
            "slow responses",
            Faults {
                delay_ms: 200,
                ..f()
            },
        ),
        Case {
            name: "restore refused for the version",
            faults: Faults {
                refuse_restore_versions: vec!["1.10.2".into()],
                last_compatible_version: Some("1.9.0".into()),
                ..f()
            },
            timeout_s: 10.0,
            backup: None,
            restore: Some(ErrorKind::VersionIncompatible),
        },
        ok(
            "correct spelling",
            Faults {
                correct_spelling: true,
                ..f()
            },
        ),
    ]
}

fn every_listed_set_verifies(a: &Api, case: &str) {
    let r = run(&json!({"operation": "verify", "repository": a.f.repo}));
    let none = r
        .result
        .error
        .as_ref()
        .is_some_and(|e| e.kind == ErrorKind::BackupNotFound);
    assert!(
        r.result.ok || none,
        "{case}: a listed set is damaged: {}",
        r.stdout
    );
}

#[test]
fn every_fault_against_backup() {
    for case in cases() {
        let a = Api::default();
        a.emu.set_faults(case.faults.clone());
        let r = run(&a.backup_with_timeout(case.timeout_s));
        match case.backup {
            None => assert!(r.result.ok, "{}: {}", case.name, r.stdout),
            Some(kind) => {
                assert_eq!(
                    r.result.error.as_ref().map(|e| e.kind),
                    Some(kind),
                    "{}: {}",
                    case.name,
                    r.stdout
                );
                assert!(
                    a.f.set_ids().is_empty(),
                    "{}: a failed backup published a set",
                    case.name
                );
            }
        }
        // Checked before any other task runs on the repository (verify does not clean it).
        assert_staging_empty(&a.f.repo);
        every_listed_set_verifies(&a, case.name);
    }
}

#[test]
fn every_fault_against_restore() {
    for case in cases() {
        let a = Api::default();
        let set = run_ok(&a.task("backup")).backup.unwrap().id;
        let set_digest = spec_digest(&a.f.vol);
        write(&a.f.vol.join("services/changed-since.yml"), b"x", 0o644);
        let before = listing(&a.f.vol);
        // The database differs from the set's too, so the restore needs the server.
        a.emu
            .set_db(json!({"users": [], "roles": [], "permissions": []}));
        a.emu.set_faults(case.faults.clone());
        let mut task = a.task("restore");
        task["backup_id"] = json!(set);
        task["api"]["timeout_s"] = json!(case.timeout_s);
        let r = run(&task);
        match case.restore {
            None => {
                assert!(r.result.ok, "{}: {}", case.name, r.stdout);
                assert_eq!(
                    spec_digest(&a.f.vol),
                    set_digest,
                    "{}: the volume equals the set",
                    case.name
                );
            }
            Some(kind) => {
                assert_eq!(
                    r.result.error.as_ref().map(|e| e.kind),
                    Some(kind),
                    "{}: {}",
                    case.name,
                    r.stdout
                );
                assert_eq!(
                    listing(&a.f.vol),
                    before,
                    "{}: a failed restore left the volume as it was",
                    case.name
                );
            }
        }
        assert_staging_empty(&a.f.repo);
        a.emu.set_faults(Faults::default());
        every_listed_set_verifies(&a, case.name);
    }
}
