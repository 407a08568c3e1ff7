//! list: the complete sets, newest first. Takes no lock, so it can run beside a backup; a
//! set being written is not listed until its rename makes it complete.

use crate::error::Result;
use crate::ops::prune::summary;
use crate::repository::Repository;
use crate::result::TaskResult;
use crate::task::{Operation, Task};

pub fn run(task: &Task) -> Result<TaskResult> {
    let repo = Repository::open(&task.repository)?;
    let (sets, broken) = repo.scan()?;
    let msg = match sets.first() {
        Some(newest) => format!("{} complete set(s), the newest {}", sets.len(), newest.id),
        None => "no complete backup set".to_string(),
    };
    let mut result = TaskResult::ok(Operation::List, task.dry_run, false, msg);
    result.sets = Some(sets.iter().map(summary).collect());
    result.warnings = broken
        .into_iter()
        .map(|b| format!("{} is not a usable set: {}", b.id, b.problem))
        .collect();
    Ok(result)
}
