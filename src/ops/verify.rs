//! verify: check sets against their manifests and collect every finding instead of stopping
//! at the first. Checksums of every file; a full decompress and read of the volume archive
//! with its digest recomputed; `deep` also extracts it and digests the extracted tree;
//! `against_live` reports how the live volume drifted from the named set, or else from the newest
//! set that is not a safety set (as warnings).

use std::sync::atomic::AtomicBool;

use super::{LiveVolume, check};
use crate::error::{Error, ErrorKind, Result};
use crate::layers::Opening;
use crate::fsutil::remove_tree;
use crate::repository::manifest::Kind;
use crate::repository::{Repository, Set};
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
                repo.location()
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
    // What opens each set, decided before any set is read: `deep`, and `against_live` for the
    // set it compares with, need the key of an encrypted set (`encryption_error` otherwise);
    // any other check of an encrypted set without its key is checksums only (SPEC §11).
    let mut openings = Vec::with_capacity(chosen.len());
    let mut unread = Vec::new();
    for (i, set) in chosen.iter().enumerate() {
        let needs = opts.deep || (opts.against_live && Some(i) == live_target);
        let what = if opts.deep { "a deep verify" } else { "verify against_live" };
        match super::opening(task, &repo, set, what) {
            Ok(o) => openings.push(Some(o)),
            Err(e) if !needs && e.kind == ErrorKind::EncryptionError => {
                unread.push(set.id.clone());
                openings.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    let mut newest_entries = Vec::new();
    for (i, set) in chosen.iter().enumerate() {
        let entries = check_set(&repo, set, opts.deep, openings[i], &mut findings)?;
        if Some(i) == live_target {
            newest_entries = entries;
        }
    }
    if opts.against_live {
        let volumes = super::resolve_volumes(task)?;
        if volumes.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidTask,
                "/against_live: needs `volume` (or `volumes`) to compare with",
            ));
        }
        if let Some(set) = live_target.map(|i| chosen[i]) {
            for v in &volumes {
                let read = v.component_in(&set.manifest).ok().and_then(|(c, _)| {
                    newest_entries
                        .iter()
                        .find(|(name, _)| *name == c.name)
                        .map(|(_, entries)| (c, entries))
                });
                match read {
                    Some((c, entries)) => drift(set, v, &c.content_digest, entries, &mut findings)?,
                    None => findings.push(Finding {
                        level: Level::Warning,
                        set: set.id.clone(),
                        component: "live".into(),
                        message: if v.listed {
                            format!(
                                "no drift report for {}: the set's volume {} could not be read or is absent",
                                v.dir.display(),
                                v.name
                            )
                        } else {
                            "no drift report: the set's volume half could not be read or is absent"
                                .to_string()
                        },
                    }),
                }
            }
        }
    }

    // The components of the set the live volumes are compared with (the named set, or the
    // newest that is not a safety set), as checked.
    let components = live_target.map(|i| {
        chosen[i]
            .manifest
            .components
            .iter()
            .map(|c| super::component_outcome(c, false, None))
            .collect::<Vec<_>>()
    });
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.len() - errors;
    let checked = chosen.len();
    if let Some(first) = findings.iter().find(|f| f.level == Level::Error) {
        let error = Error::new(
            ErrorKind::IntegrityError,
            format!(
                "{errors} problem(s) in {checked} set(s) checked, first in {} ({}): {}; do not restore from a damaged set",
                first.set, first.component, first.message
            ),
        );
        let mut result = TaskResult::failed(Some(Operation::Verify), task.dry_run, error);
        result.findings = Some(findings);
        result.components = components;
        return Ok(result);
    }
    let mut result = TaskResult::ok(
        Operation::Verify,
        task.dry_run,
        false,
        format!(
            "{checked} set(s) verified, no problem found{}{}",
            if warnings > 0 {
                format!(", {warnings} warning(s)")
            } else {
                String::new()
            },
            if unread.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} encrypted set(s) checked by checksums only",
                    unread.len()
                )
            }
        ),
    );
    result.warnings = unread
        .iter()
        .map(|id| {
            format!(
                "backup set {id} is encrypted and no identity_file that opens it was given: only its checksums were checked, not its contents"
            )
        })
        .collect();
    result.findings = Some(findings);
    result.components = components;
    Ok(result)
}

/// Checks one set; returns the digest lines of each volume archive that could be read.
/// Without an opening (an encrypted set without its key), checks the checksums only.
fn check_set(
    repo: &Repository,
    set: &Set,
    deep: bool,
    opening: Option<Opening<'_>>,
    findings: &mut Vec<Finding>,
) -> Result<Vec<(String, Lines)>> {
    let mut add = |component: &str, message: String| {
        findings.push(Finding {
            level: Level::Error,
            set: set.id.clone(),
            component: component.into(),
            message,
        })
    };
    let stop = AtomicBool::new(false);
    // The checksums (and the database file's digest) and the full read of the archives are
    // independent: one core each.
    let (sums, reads) = std::thread::scope(|scope| -> Result<_> {
        let sums = scope.spawn(|| {
            crate::test_panic("worker");
            let mut problems = crate::repository::check::checksums(repo.opener(set), &set.manifest);
            for c in set.manifest.components.iter().filter(|c| c.db().is_some()) {
                if let Some(opening) = opening {
                    problems.extend(check::db(repo.read(set, &c.file), opening, c));
                }
            }
            problems
        });
        let mut reads = Vec::new();
        for (i, c) in set.manifest.components.iter().enumerate() {
            let (Kind::Volume(tree) | Kind::Files(tree), Some(opening)) = (&c.kind, opening) else {
                continue;
            };
            // With `deep`, the one read of the archive extracts it into a scratch directory
            // (named by the set's id, a directory name, and the component's place, never by
            // text from the manifest).
            let scratch = if deep {
                Some(repo.scratch(&format!("verify-{}-{i}", set.id))?)
            } else {
                None
            };
            let read = check::tree(repo.read(set, &c.file), opening, c, tree, scratch.as_deref(), &stop);
            reads.push((c, scratch, read));
        }
        Ok((crate::error::joined("the checksum thread", sums.join()), reads))
    })?;
    for p in sums? {
        add(&p.component, p.message);
    }
    let mut entries = Vec::new();
    let mut no_space = None;
    for (c, scratch, read) in reads {
        match read {
            Ok((contents, problems)) => {
                for p in problems {
                    add(&p.component, p.message);
                }
                if let Some(scratch) = &scratch {
                    // The digest of the tree as it landed on disk, computed afresh.
                    match volume::live_digest(scratch) {
                        Ok(extracted) if extracted == c.content_digest => {}
                        Ok(extracted) => add(
                            &c.name,
                            format!(
                                "the extracted tree's digest is {extracted}, the manifest says {}",
                                c.content_digest
                            ),
                        ),
                        Err(e) => add(&c.name, format!("deep check: {}", e.message)),
                    }
                }
                entries.push((c.name.clone(), contents.entries));
            }
            Err(e) if e.kind == ErrorKind::NoSpace => no_space = Some(e),
            Err(e) => add(&c.name, e.message),
        }
        if let Some(scratch) = scratch {
            let _ = remove_tree(&scratch);
        }
    }
    match no_space {
        Some(e) => Err(e),
        None => Ok(entries),
    }
}

/// Compares the set's entries of a volume with the live volume and reports differences as
/// warnings.
fn drift(
    set: &Set,
    v: &LiveVolume,
    expected: &str,
    set_entries: &Lines,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    let (live, live_digest_value) = volume::live(v.root())?;
    if live_digest_value == expected {
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
            "the live volume {}drifted from the set: {} added [{}], {} removed [{}], {} changed [{}]",
            if v.listed { format!("{} ", v.name) } else { String::new() },
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
