//! The exclusive lock on a repository (or a volume): an OS file lock, which the kernel
//! releases when its holder dies, plus a record of who holds it, so that `busy` can say who.
//!
//! The lock file is never deleted: deleting a locked file lets a second process lock a new
//! file of the same name. It is opened without following a symlink: a link planted in its
//! place is refused, never written through.
//!
//! A volume is locked differently ([`acquire_dir`]): its parent may be read-only (a mount
//! point), so the OS lock is taken on the volume directory's own descriptor and the holder
//! record is a file the caller names (inside the volume's work directory). A lock left by a dead process is simply taken over, because the OS
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
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::new(
                    ErrorKind::RepositoryError,
                    format!("lock file {} is a symlink, which cwbackup never follows: remove the link and run again", path.display()),
                )
            } else {
                Error::repo("cannot open lock file", path, e)
            }
        })?;
    let is_file = file
        .metadata()
        .map_err(|e| Error::repo("cannot read lock file", path, e))?
        .is_file();
    if !is_file {
        return Err(Error::new(
            ErrorKind::RepositoryError,
            format!(
                "lock file {} is not a regular file: remove it and run again",
                path.display()
            ),
        ));
    }
    if !wait_for(&file, path, wait)? {
        let mut text = String::new();
        let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
        return Err(busy(&text, path, what, wait));
    }
    let record = holder_record(operation);
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

/// Takes the OS lock of the directory `dir` itself (opened read-only, never through a
/// symlink), waiting up to `wait`. When busy, the holder is read from `holder_file`. The caller
/// writes the holder record (see [`holder_record`]) once it holds the lock.
pub fn acquire_dir(dir: &Path, holder_file: &Path, what: &str, wait: Duration) -> Result<Lock> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => Error::new(
                ErrorKind::VolumeNotFound,
                format!("{what} is not a directory (a symlink?): give the real directory"),
            ),
            _ => Error::io("cannot open", dir, e),
        })?;
    if !wait_for(&file, dir, wait)? {
        let text = read_small(holder_file).unwrap_or_default();
        return Err(busy(&text, holder_file, what, wait));
    }
    Ok(Lock {
        _file: file,
        path: dir.to_path_buf(),
    })
}

/// Tries the OS lock of `file` until `wait` has passed; false when another holds it.
fn wait_for(file: &File, path: &Path, wait: Duration) -> Result<bool> {
    let deadline = crate::clock::deadline_in(wait);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(RETRY_EVERY);
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(Error::repo("cannot lock", path, e)),
        }
    }
}

/// This process's holder record, as written into a lock or holder file.
pub fn holder_record(operation: Operation) -> Vec<u8> {
    let holder = Holder {
        host: hostname(),
        pid: std::process::id(),
        operation: operation.to_string(),
        since: clock::now(),
    };
    serde_json::to_vec(&holder).expect("a holder is JSON")
}

/// At most 64 KiB of a holder file, never through a symlink, never blocking on a FIFO.
fn read_small(path: &Path) -> std::io::Result<String> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut text = String::new();
    file.take(64 * 1024).read_to_string(&mut text)?;
    Ok(text)
}

fn busy(text: &str, path: &Path, what: &str, wait: Duration) -> Error {
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
