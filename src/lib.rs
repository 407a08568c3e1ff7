//! cwbackup: backup, restore and verify of a Cybus Connectware installation.
//!
//! The data flows one way:
//!
//! ```text
//! task JSON ─task::parse─▶ Task ─ops::run─▶ plan ─▶ apply ─▶ TaskResult ─▶ one JSON line
//! ```
//!
//! - [`task`]: the input types, raw → validated.
//! - [`ops`]: one module per operation (backup, restore, verify, list, prune, import); each computes a
//!   plan (per component: take / skip / restore, and why), then applies it. They join the
//!   parts below, which never import each other:
//!   - [`repository`]: backup sets (manifest with components, retention) over the storage
//!     seam [`repository::backend::Backend`] (list, read a file, write a new set, delete,
//!     lock); [`repository::local`] is the directory implementation, [`repository::s3`] the
//!     S3-compatible bucket.
//!   - [`volume`]: a directory: list, digest, archive, extract safely, stage and swap.
//!   - [`connectware`]: the maintenance-API client; it downloads into a writer it is given.
//!   - [`docker`]: the Docker Engine through its API: volumes by name or compose project,
//!     containers, stop and start, volume creation.
//! - Leaves everyone may use: [`layers`] (compression, age encryption and hashing over a set's
//!   file streams, applied in one place), [`keys`] (age recipients and identities), [`hashing`],
//!   [`fsutil`], [`lockfile`], [`safe_open`], [`clock`],
//!   [`progress`], [`secrets`].
//! - [`result`] and [`error`]: the output types, the wire format in one place; [`human`]
//!   renders a result for a person (`--human`).

mod clock;
mod connectware;
pub mod docker;
pub mod error;
mod fsutil;
mod hashing;
pub mod human;
pub mod keys;
pub mod layers;
mod lockfile;
pub mod ops;
mod progress;
pub mod repository;
pub mod result;
mod safe_open;
mod secrets;
pub mod task;
mod tls;
pub mod volume;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use error::ErrorKind;
use result::TaskResult;

/// Runs one task given as raw bytes; never fails: every error becomes a failed result, and a
/// panic anywhere (a worker thread's too, which the joining code turns into an error or
/// passes on) becomes one `internal_error` result (SPEC §6 "Always one result").
pub fn run(input: &[u8]) -> TaskResult {
    let started = Instant::now();
    let mut operation = None;
    let mut dry_run = false;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match task::parse(input) {
        Err(e) => TaskResult::failed(None, false, e),
        Ok(task) => {
            operation = Some(task.op.operation());
            dry_run = task.dry_run;
            test_panic("main");
            ops::run(&task).unwrap_or_else(|e| TaskResult::failed(operation, task.dry_run, e))
        }
    }));
    let mut result = outcome.unwrap_or_else(|payload| {
        TaskResult::failed(
            operation,
            dry_run,
            error::panicked("the task", payload.as_ref()),
        )
    });
    result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    result
}

/// Test only: `CWBACKUP_TEST_PANIC=main` panics in the main thread once the task is read,
/// `CWBACKUP_TEST_PANIC=worker` in a worker thread (the database thread of a backup, the
/// checksum thread of a verify), so that the integration tests can prove that a panic still
/// ends in one `internal_error` result. Only debug builds (the ones the integration tests run)
/// read the variable.
pub(crate) fn test_panic(place: &str) {
    if cfg!(debug_assertions) && std::env::var_os("CWBACKUP_TEST_PANIC").is_some_and(|v| v == place)
    {
        panic!("CWBACKUP_TEST_PANIC={place}: a panic on purpose");
    }
}

/// Test only: with the environment variable `var` set to a file name, writes `<file>.reached`
/// and waits, at most 60 s, until `<file>` exists, so that a test can act (kill the process,
/// change a volume) at exactly that point. Only debug builds (the ones the integration tests
/// run) read the variable.
pub(crate) fn test_pause(var: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(file) = std::env::var_os(var) else {
        return;
    };
    let file = std::path::PathBuf::from(file);
    let mut reached = file.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(&reached, b"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Logs a panic on stderr as one line, with every secret of the run redacted, instead of the
/// default report (whose message could hold anything the panicking code formatted).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = error::panic_text(info.payload());
        let place = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let thread = std::thread::current()
            .name()
            .unwrap_or("a worker")
            .to_string();
        eprintln!(
            "{}",
            secrets::redact(&format!(
                "cwbackup: internal error: thread '{thread}' panicked{place}: {message}"
            ))
        );
    }));
}

/// The exit code for a result: 0 ok, 2 the task could not be read, 1 any other failure.
pub fn exit_code(result: &TaskResult) -> i32 {
    match &result.error {
        None if result.ok => 0,
        Some(e) if e.kind == ErrorKind::InvalidTask => 2,
        _ => 1,
    }
}
