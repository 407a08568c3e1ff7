//! verify: check sets against their manifests and collect every finding instead of stopping
//! at the first. Checksums of every file; a full decompress and read of the volume archive
//! with its digest recomputed; `deep` also extracts it and digests the extracted tree;
//! `against_live` reports how the live volume drifted from the named set, or else from the newest
//! set that is not a safety set (as warnings).

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::repository::{self, Repository, Set, check};
use crate::result::{Finding, Level, TaskResult};
use crate::task::{Operation, Task, VerifyOptions};
use crate::volume;
use crate::volume::digest::{self, Lines};

/// How many paths a drift warning names.
const DRIFT_EXAMPLES: usize = 10;

pub fn run(task: &Task, opts: &VerifyOptions) -> Result<TaskResult> {
    let repo = Repository::open(&task.repository)?;
    let _lock = repo.lock(Operation::Verify, task.wait_for_lock)?;
    let (sets, broken) = repo.scan()?;
    let mut findings = Vec::new();
    let chosen: Vec<&Set> = match &opts.backup_id {
        Some(id) => match sets.iter().find(|s| &s.id == id) {
            Some(set) => vec![set],
            None => {
                let why = broken.iter().find(|b| &b.id == id).map_or_else(
                    || "no such set: `list` shows the sets".to_string(),
                    |b| b.problem.clone(),
                );
                return Err(Error::new(
                    ErrorKind::BackupNotFound,
                    format!("backup set {id} cannot be verified: {why}"),
                ));
            }
        },
        None => {
            for b in &broken {
                let level = if b.incomplete {
                    Level::Warning
                } else {
                    Level::Error
                };
                findings.push(Finding {
                    level,
                    set: b.id.clone(),
                    component: "manifest".into(),
                    message: b.problem.clone(),
                });
            }
            sets.iter().collect()
        }
    };
    if chosen.is_empty() && findings.is_empty() {
        return Err(Error::new(
            ErrorKind::BackupNotFound,
            format!(
                "repository {} holds no complete backup set to verify",
                repo.root.display()
            ),
        ));
    }

    // The set the live volume is compared with: the named one, else the newest that is not a
    // `pre-restore-…` safety set (SPEC §3): right after a restore, the newest set is the safety
    // set of the state before, and comparing with it would report false drift.
    let live_target = chosen
        .iter()
        .position(|s| opts.backup_id.is_some() || !s.is_safety())
        .or(if chosen.is_empty() { None } else { Some(0) });
    let mut newest_entries = None;
    for (i, set) in chosen.iter().enumerate() {
        let entries = check_set(&repo, set, opts.deep, &mut findings)?;
        if Some(i) == live_target {
            newest_entries = entries;
        }
    }
    if opts.against_live {
        let Some(dir) = super::resolve_volume(task)? else {
            return Err(Error::new(
                ErrorKind::InvalidTask,
                "/against_live: needs `volume` to compare with",
            ));
        };
        match (live_target.map(|i| chosen[i]), newest_entries) {
            (Some(set), Some(set_entries)) => drift(set, &dir, &set_entries, &mut findings)?,
            (Some(set), None) => findings.push(Finding {
                level: Level::Warning,
                set: set.id.clone(),
                component: "live".into(),
                message: "no drift report: the set's volume half could not be read or is absent"
                    .into(),
            }),
            (None, _) => {}
        }
    }

    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.len() - errors;
    let checked = chosen.len();
    if errors > 0 {
        let first = findings
            .iter()
            .find(|f| f.level == Level::Error)
            .expect("an error finding");
        let error = Error::new(
            ErrorKind::IntegrityError,
            format!(
                "{errors} problem(s) in {checked} set(s) checked, first in {} ({}): {}; do not restore from a damaged set",
                first.set, first.component, first.message
            ),
        );
        let mut result = TaskResult::failed(Some(Operation::Verify), task.dry_run, error);
        result.findings = Some(findings);
        return Ok(result);
    }
    let mut result = TaskResult::ok(
        Operation::Verify,
        task.dry_run,
        false,
        format!(
            "{checked} set(s) verified, no problem found{}",
            if warnings > 0 {
                format!(", {warnings} warning(s)")
            } else {
                String::new()
            }
        ),
    );
    result.findings = Some(findings);
    Ok(result)
}

/// Checks one set; returns the digest lines of its volume archive when it could be read.
fn check_set(
    repo: &Repository,
    set: &Set,
    deep: bool,
    findings: &mut Vec<Finding>,
) -> Result<Option<Lines>> {
    let mut add = |component: &str, message: String| {
        findings.push(Finding {
            level: Level::Error,
            set: set.id.clone(),
            component: component.into(),
            message,
        })
    };
    // With `deep`, the one read of the archive extracts it into a scratch directory.
    let scratch = match (&set.manifest.volume, deep) {
        (Some(_), true) => Some(repo.stage(&format!("verify-{}", set.id))?),
        _ => None,
    };
    // The checksums and the full read of the archive are independent: one core each.
    let (sums, read) = std::thread::scope(|scope| {
        let sums = scope.spawn(|| {
            crate::test_panic("worker");
            let mut problems = check::checksums(&set.path, &set.manifest);
            problems.extend(check::db(&set.path, &set.manifest));
            problems
        });
        let read = set
            .manifest
            .volume
            .as_ref()
            .map(|_| check::volume(&set.path, &set.manifest, scratch.as_deref()));
        (
            crate::error::joined("the checksum thread", sums.join()),
            read,
        )
    });
    for p in sums? {
        add(p.component, p.message);
    }
    let entries = match read {
        None => None,
        Some(Ok((contents, problems))) => {
            for p in problems {
                add(p.component, p.message);
            }
            Some(contents.entries)
        }
        Some(Err(e)) if e.kind == ErrorKind::NoSpace => {
            if let Some(scratch) = &scratch {
                let _ = repository::remove_tree(scratch);
            }
            return Err(e);
        }
        Some(Err(e)) => {
            add("volume", e.message);
            None
        }
    };
    if let Some(scratch) = scratch {
        // The digest of the tree as it landed on disk, computed afresh from the files.
        if entries.is_some() {
            let expected = &set
                .manifest
                .volume
                .as_ref()
                .expect("volume present")
                .content_digest;
            match volume::live_digest(&scratch) {
                Ok(extracted) if &extracted == expected => {}
                Ok(extracted) => add(
                    "volume",
                    format!(
                        "the extracted tree's digest is {extracted}, the manifest says {expected}"
                    ),
                ),
                Err(e) => add("volume", format!("deep check: {}", e.message)),
            }
        }
        let _ = repository::remove_tree(&scratch);
    }
    Ok(entries)
}

/// Compares the set's entries with the live volume and reports differences as warnings.
fn drift(set: &Set, dir: &Path, set_entries: &Lines, findings: &mut Vec<Finding>) -> Result<()> {
    let (live, live_digest_value) = volume::live(dir)?;
    let expected = &set
        .manifest
        .volume
        .as_ref()
        .expect("volume present")
        .content_digest;
    if &live_digest_value == expected {
        return Ok(());
    }
    let digest::Changes {
        added,
        removed,
        changed,
    } = digest::changes(set_entries, &live);
    let examples = |v: &digest::Paths| {
        v.examples
            .iter()
            .take(DRIFT_EXAMPLES)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    findings.push(Finding {
        level: Level::Warning,
        set: set.id.clone(),
        component: "live".into(),
        message: format!(
            "the live volume drifted from the set: {} added [{}], {} removed [{}], {} changed [{}]",
            added.len(),
            examples(&added),
            removed.len(),
            examples(&removed),
            changed.len(),
            examples(&changed)
        ),
    });
    Ok(())
}
