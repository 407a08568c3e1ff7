//! prune: keep the `keep_last` newest complete sets and delete the rest. The newest set, and
//! so the only complete one, is never deleted (`keep_last` is at least 1). Safety sets of
//! restores count like any other set.

use serde_json::json;

use crate::clock;
use crate::error::Result;
use crate::repository::{Repository, Set};
use crate::result::{Diff, SetSummary, TaskResult};
use crate::task::{Operation, Task};

pub fn run(task: &Task, keep_last: u32) -> Result<TaskResult> {
    let repo = Repository::open(&task.repository)?;
    let _lock = repo.lock(Operation::Prune, task.wait_for_lock)?;
    if !task.dry_run {
        repo.clean_staging()?;
    }
    let before: Vec<String> = repo.sets()?.into_iter().map(|s| s.id).collect();
    let deleted = apply(&repo, keep_last, task.dry_run)?;
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
            "{verb} {} of {} set(s), keeping the {keep_last} newest",
            deleted.len(),
            before.len()
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

/// Deletes (or, in a dry run, only names) every complete set but the `keep_last` newest.
pub fn apply(repo: &Repository, keep_last: u32, dry_run: bool) -> Result<Vec<SetSummary>> {
    let sets = repo.sets()?;
    let keep = (keep_last.max(1)) as usize;
    let mut deleted = Vec::new();
    for set in sets.iter().skip(keep) {
        if !dry_run {
            repo.delete(set)?;
        }
        deleted.push(summary(set));
    }
    Ok(deleted)
}

/// A set as listed in results.
pub fn summary(set: &Set) -> SetSummary {
    SetSummary {
        id: set.id.clone(),
        created_at: set.manifest.created_at.clone(),
        bytes: set.manifest.bytes(),
        connectware_version: set.manifest.connectware_version.clone(),
        age_s: clock::age_s(&set.manifest.created_at),
        components: set.manifest.components(),
    }
}
