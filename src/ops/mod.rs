//! One module per operation, each `run(task, options) -> TaskResult`: plan first, then apply
//! (a dry run stops after the plan).

pub mod backup;
pub mod list;
pub mod prune;
pub mod restore;
pub mod verify;

use crate::error::Result;
use crate::result::TaskResult;
use crate::task::{Op, Task};

/// Runs a validated task.
pub fn run(task: &Task) -> Result<TaskResult> {
    match &task.op {
        Op::Backup(opts) => backup::run(task, opts),
        Op::Restore(opts) => restore::run(task, opts),
        Op::Verify(opts) => verify::run(task, opts),
        Op::List => list::run(task),
        Op::Prune(retention) => prune::run(task, *retention),
    }
}
