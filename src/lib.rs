//! cwbackup: backup, restore and verify of a Cybus Connectware installation.
//!
//! The data flows one way:
//!
//! ```text
//! task JSON ──task::parse──▶ Task ──ops::run──▶ TaskResult ──▶ one JSON line on stdout
//! ```
//!
//! - [`task`]: the input types, raw → validated.
//! - [`ops`]: one module per operation (backup, verify, list, prune).
//! - [`volume`]: archive, extract and content digest of a directory.
//! - [`repository`]: backup sets on disk: staging, manifest, lock, atomic publish.
//! - [`connectware`]: the REST client for the maintenance API (the database half).
//! - [`result`] and [`error`]: the output types, the wire format in one place.

pub mod clock;
pub mod connectware;
pub mod error;
pub mod ops;
pub mod progress;
pub mod repository;
pub mod result;
pub mod safe_open;
pub mod task;
pub mod volume;

use std::time::Instant;

use error::ErrorKind;
use result::TaskResult;

/// Runs one task given as raw bytes; never fails: every error becomes a failed result.
pub fn run(input: &[u8]) -> TaskResult {
    let started = Instant::now();
    let mut result = match task::parse(input) {
        Err(e) => TaskResult::failed(None, false, e),
        Ok(task) => {
            let operation = task.op.operation();
            ops::run(&task).unwrap_or_else(|e| TaskResult::failed(Some(operation), task.dry_run, e))
        }
    };
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

/// The exit code for a result: 0 ok, 2 the task could not be read, 1 any other failure.
pub fn exit_code(result: &TaskResult) -> i32 {
    match &result.error {
        None if result.ok => 0,
        Some(e) if e.kind == ErrorKind::InvalidTask => 2,
        _ => 1,
    }
}
