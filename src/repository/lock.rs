//! The exclusive lock on a repository (or a volume): an OS file lock, which the kernel
//! releases when its holder dies, plus a record of who holds it, so that `busy` can say who.
//!
//! The lock file is never deleted: deleting a locked file lets a second process lock a new
//! file of the same name. A lock left by a dead process is simply taken over, because the OS
//! lock died with it; a live holder's lock is never broken.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::task::Operation;

/// How often a waiting task tries the lock again.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Who holds a lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub operation: String,
    pub since: String,
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the lock at `path` for `operation`, waiting up to `wait` for a holder to let go.
pub fn acquire(path: &Path, what: &str, operation: Operation, wait: Duration) -> Result<Lock> {
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::repo("cannot open lock file", path, e))?;
    let deadline = crate::clock::deadline_in(wait);
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(RETRY_EVERY);
            }
            Err(TryLockError::WouldBlock) => return Err(busy(&mut file, path, what, wait)),
            Err(TryLockError::Error(e)) => return Err(Error::repo("cannot lock", path, e)),
        }
    }
    let holder = Holder {
        host: hostname(),
        pid: std::process::id(),
        operation: operation.to_string(),
        since: clock::now(),
    };
    let record = serde_json::to_vec(&holder).expect("a holder is JSON");
    (|| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(&record)?;
        file.write_all(b"\n")
    })()
    .map_err(|e| Error::repo("cannot write lock file", path, e))?;
    Ok(Lock {
        _file: file,
        path: path.to_path_buf(),
    })
}

fn busy(file: &mut File, path: &Path, what: &str, wait: Duration) -> Error {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    let holder: Option<Holder> = serde_json::from_str(text.trim()).ok();
    let who = match &holder {
        Some(h) => format!(
            "{} (pid {} on {}, since {})",
            h.operation, h.pid, h.host, h.since
        ),
        None => "another cwbackup task".to_string(),
    };
    let waited = if wait.is_zero() {
        String::new()
    } else {
        format!(" after waiting {}s", wait.as_secs())
    };
    let mut error = Error::new(
        ErrorKind::Busy,
        format!("{what} is in use by {who}{waited}: run again when it has finished, or set wait_for_lock_s"),
    )
    .detail("lock_file", path.display().to_string());
    if let Some(h) = holder {
        error = error
            .detail("host", h.host)
            .detail("pid", h.pid)
            .detail("operation", h.operation)
            .detail("since", h.since);
    }
    error
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
