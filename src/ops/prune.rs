//! prune: keep the `keep_last` newest regular sets and the `keep_safety` newest
//! `pre-restore-…` safety sets, and delete the rest (SPEC §3, §6).
//!
//! The choice of what to delete is a pure function of the listing ([`doomed`]), so it is
//! unit-tested without a repository. It never deletes the set the task wrote or found
//! unchanged (`protect`), whatever the clocks of other sets say (a manifest restored from
//! another host may carry a `created_at` in the future), nor the newest complete set: so a
//! repository is never left with safety sets alone, nor empty.

use serde_json::json;

use crate::clock;
use crate::error::Result;
use crate::repository::{Repository, Set};
use crate::result::{Diff, SetSummary, TaskResult};
use crate::task::{Operation, Retention, Task};

pub fn run(task: &Task, retention: Retention) -> Result<TaskResult> {
    let keep_last = retention.keep_last;
    let repo = Repository::open(&task.repository)?;
    let _lock = repo.lock(Operation::Prune, task.wait_for_lock)?;
    if !task.dry_run {
        repo.clean_staging()?;
    }
    let before: Vec<String> = repo.sets()?.into_iter().map(|s| s.id).collect();
    let deleted = apply(&repo, retention, None, task.dry_run)?;
    let verb = if task.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let msg = if deleted.is_empty() {
        format!(
            "{} set(s), keep_last {keep_last}: nothing to delete",
            before.len()
        )
    } else {
        format!(
            "{verb} {} of {} set(s), keeping the {keep_last} newest regular and {} newest safety set(s)",
            deleted.len(),
            before.len(),
            retention.keep_safety
        )
    };
    let mut result = TaskResult::ok(Operation::Prune, task.dry_run, !deleted.is_empty(), msg);
    if task.diff {
        let after: Vec<&String> = before
            .iter()
            .filter(|id| !deleted.iter().any(|d| &d.id == *id))
            .collect();
        result.diff = Some(Diff {
            before: json!({"sets": before}),
            after: json!({"sets": after}),
        });
    }
    result.sets = Some(deleted);
    Ok(result)
}

/// Deletes (or, in a dry run, only names) every complete set that retention does not keep;
/// `protect` is the set this task wrote or found unchanged.
pub fn apply(
    repo: &Repository,
    retention: Retention,
    protect: Option<&str>,
    dry_run: bool,
) -> Result<Vec<SetSummary>> {
    let sets = repo.sets()?;
    let mut deleted = Vec::new();
    for set in doomed(&sets, retention, protect) {
        if !dry_run {
            repo.delete(set)?;
        }
        deleted.push(summary(set));
    }
    Ok(deleted)
}

/// The sets retention deletes, of `sets` listed newest first. Kept: `protect`, the newest set,
/// the first `keep_last` regular sets (at least one) and the first `keep_safety` safety sets.
/// `protect` counts as the newest regular (or safety) set, whatever its `created_at`.
pub fn doomed<'a>(sets: &'a [Set], retention: Retention, protect: Option<&str>) -> Vec<&'a Set> {
    let is_protected = |s: &Set| protect == Some(s.id.as_str());
    // The protected set first, then the others in listing order.
    let ordered = sets
        .iter()
        .filter(|s| is_protected(s))
        .chain(sets.iter().filter(|s| !is_protected(s)));
    let (mut regular, mut safety) = (0u32, 0u32);
    let mut doomed = Vec::new();
    for (i, set) in ordered.enumerate() {
        let (seen, keep) = if set.is_safety() {
            (&mut safety, retention.keep_safety)
        } else {
            (&mut regular, retention.keep_last.max(1))
        };
        *seen += 1;
        let newest = std::ptr::eq(set, &sets[0]);
        if *seen > keep && i > 0 && !newest && !is_protected(set) {
            doomed.push(set);
        }
    }
    doomed
}

/// A set as listed in results.
pub fn summary(set: &Set) -> SetSummary {
    SetSummary {
        id: set.id.clone(),
        created_at: set.manifest.created_at.clone(),
        bytes: set.manifest.bytes(),
        connectware_version: set.manifest.connectware_version.clone(),
        age_s: clock::age_s(&set.manifest.created_at),
        components: set.manifest.names(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::manifest::Manifest;

    /// Sets listed newest first, as `Repository::sets` lists them.
    fn sets(ids: &[&str]) -> Vec<Set> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let manifest: Manifest = serde_json::from_value(serde_json::json!({
                    "format": "cwbackup/2", "id": id,
                    "created_at": format!("2026-11-{:02}T00:00:00Z", 28 - i),
                    "tool_version": "0.1.0", "connectware_version": null,
                    "components": []
                }))
                .unwrap();
                Set {
                    id: id.to_string(),
                    location: id.to_string(),
                    manifest,
                }
            })
            .collect()
    }

    fn ids(doomed: Vec<&Set>) -> Vec<&str> {
        doomed.into_iter().map(|s| s.id.as_str()).collect()
    }

    fn keep(keep_last: u32, keep_safety: u32) -> Retention {
        Retention {
            keep_last,
            keep_safety,
        }
    }

    #[test]
    fn the_set_just_written_is_kept_even_when_another_claims_to_be_newer() {
        // "future" has a created_at ahead of the clock: it lists first.
        let s = sets(&["future", "new", "old"]);
        assert_eq!(ids(doomed(&s, keep(1, 3), Some("new"))), ["old"]);
    }

    #[test]
    fn safety_sets_are_counted_apart_and_never_crowd_out_regular_sets() {
        let s = sets(&["pre-restore-3", "pre-restore-2", "b", "pre-restore-1", "a"]);
        assert_eq!(
            ids(doomed(&s, keep(1, 1), None)),
            ["pre-restore-2", "pre-restore-1", "a"]
        );
        assert_eq!(ids(doomed(&s, keep(2, 3), None)), Vec::<&str>::new());
        assert_eq!(
            ids(doomed(&s, keep(1, 0), None)),
            ["pre-restore-2", "pre-restore-1", "a"],
            "the newest set is kept even with keep_safety 0"
        );
    }

    #[test]
    fn a_repository_of_safety_sets_alone_keeps_its_newest() {
        let s = sets(&["pre-restore-2", "pre-restore-1"]);
        assert_eq!(ids(doomed(&s, keep(1, 0), None)), ["pre-restore-1"]);
    }

    #[test]
    fn keep_last_keeps_the_newest_regular_sets() {
        let s = sets(&["c", "b", "a"]);
        assert_eq!(ids(doomed(&s, keep(2, 3), None)), ["a"]);
        assert_eq!(ids(doomed(&s, keep(1, 3), Some("c"))), ["b", "a"]);
    }
}
