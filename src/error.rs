//! The one error type of cwbackup.
//!
//! Every failure ends up here with a `kind` from the stable list of SPEC §7, a message that tells
//! the operator what went wrong and what to do, and optional machine-readable `details`. The
//! same struct is the `error` object of the result, so what the code raises is what the operator
//! reads.

use std::fmt;
use std::io;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The kind of a failure: a stable, documented list that playbooks may match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The task could not be read or is invalid (exit code 2).
    InvalidTask,
    /// The volume directory or Docker volume does not exist.
    VolumeNotFound,
    /// The repository cannot be created, read or written.
    RepositoryError,
    /// The named backup set does not exist or is incomplete.
    BackupNotFound,
    /// A backup set does not match its manifest (checksums, digests, sizes).
    IntegrityError,
    /// An archive holds an entry that would escape or damage the target.
    UnsafeArchive,
    /// The volume kept changing while it was archived.
    ConsistencyError,
    /// The Connectware API could not be reached.
    ApiUnreachable,
    /// The Connectware API refused the credentials.
    ApiAuthFailed,
    /// The TLS connection to the Connectware API failed (certificate, host name, CA).
    ApiTlsError,
    /// The Connectware API answered something cwbackup does not understand.
    ApiProtocolError,
    /// Connectware reported that its database backup failed.
    DbBackupFailed,
    /// Connectware reported that its database restore failed.
    DbRestoreFailed,
    /// The backup was made by a Connectware version the target cannot restore.
    VersionIncompatible,
    /// A server-side operation did not finish within `timeout_s`.
    Timeout,
    /// Another cwbackup task holds the lock.
    Busy,
    /// A file system ran out of space.
    NoSpace,
    /// Any other I/O failure.
    IoError,
    /// The Docker engine could not be reached (the message says whether the daemon runs and
    /// whether this user may open its socket) or refused a request.
    DockerError,
    /// Encrypting or decrypting a set failed (SPEC §7; not raised yet: this version writes no
    /// encrypted sets).
    EncryptionError,
    /// A bug in cwbackup: a panic or an unexpected state, caught so that the run still ends in
    /// one result. Not retryable; please report it with the stderr log.
    InternalError,
}

impl ErrorKind {
    /// Whether running the same task again later may succeed without changing anything.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Busy
                | ErrorKind::Timeout
                | ErrorKind::ApiUnreachable
                | ErrorKind::ConsistencyError
                | ErrorKind::NoSpace
        )
    }
}

impl fmt::Display for ErrorKind {
    /// The wire name, e.g. `invalid_task`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_value(self) {
            Ok(Value::String(name)) => f.write_str(&name),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// A failure, as reported in the result's `error` field.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Error {
    /// What kind of failure this is (stable list, see SPEC §7).
    pub kind: ErrorKind,
    /// One human sentence: what failed, on what, and what to do about it.
    pub message: String,
    /// Whether the same task may succeed if simply run again later.
    pub retryable: bool,
    /// Machine-readable facts about the failure, e.g. the lock holder for `busy`.
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// The result type of every fallible function in cwbackup.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            retryable: kind.retryable(),
            details: Map::new(),
        }
    }

    /// Adds one machine-readable detail.
    pub fn detail(mut self, key: &str, value: impl Serialize) -> Error {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.details.insert(key.to_string(), value);
        self
    }

    /// An I/O failure on `path` while doing `what`; ENOSPC becomes `no_space`.
    pub fn io(what: &str, path: &Path, err: io::Error) -> Error {
        let kind = if is_no_space(&err) {
            ErrorKind::NoSpace
        } else {
            ErrorKind::IoError
        };
        let hint = if kind == ErrorKind::NoSpace {
            ": free some space and run again"
        } else {
            ""
        };
        Error::new(kind, format!("{what} {}: {err}{hint}", path.display()))
            .detail("path", path.display().to_string())
    }

    /// A failure writing `what` into the repository through its backend (no path to name);
    /// ENOSPC becomes `no_space`, anything else `repository_error`.
    pub fn storing(what: &str, err: io::Error) -> Error {
        if is_no_space(&err) {
            Error::new(
                ErrorKind::NoSpace,
                format!("no space left while writing {what} into the repository: {err}: free some space and run again"),
            )
        } else {
            Error::new(
                ErrorKind::RepositoryError,
                format!("cannot write {what} into the repository: {err}"),
            )
        }
    }

    /// An I/O failure in the repository; ENOSPC still becomes `no_space`.
    pub fn repo(what: &str, path: &Path, err: io::Error) -> Error {
        let e = Error::io(what, path, err);
        if e.kind == ErrorKind::IoError {
            Error {
                kind: ErrorKind::RepositoryError,
                ..e
            }
        } else {
            e
        }
    }
}

/// Whether an I/O error means a full file system or quota (the kind survives the path
/// annotations added on the way up; the raw OS code does not).
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The text of a panic's payload (`panic!` with a literal or with a formatted message).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// An `internal_error` for a thread that panicked (the panic hook has already logged where).
pub fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> Error {
    Error::new(
        ErrorKind::InternalError,
        crate::secrets::redact(&format!(
            "internal error: {what} panicked ({}); this is a bug in cwbackup: please report it with the log on stderr",
            panic_text(payload)
        )),
    )
}

/// The value of a worker thread joined in a scope, or an `internal_error` if it panicked
/// (instead of a second panic in the joining thread).
pub fn joined<T>(what: &str, outcome: std::thread::Result<T>) -> Result<T> {
    outcome.map_err(|payload| panicked(what, payload.as_ref()))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}
