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
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
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
}

/// Opens (creating, 0600) a lock file, never through a symlink and without blocking.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Takes the lock at `path` for `operation`, waiting up to `wait` for a holder to let go.
pub fn acquire(path: &Path, what: &str, operation: Operation, wait: Duration) -> Result<Lock> {
    let mut file = open_lock_file(path)
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
    })
}

/// Takes the OS lock of the directory `dir` itself (opened read-only, never through a
/// symlink), waiting up to `wait`. When busy, the holder is read from `holder_file`. The caller
/// writes the holder record (see [`holder_record`]) once it holds the lock.
///
/// Some network file systems (NFS, CIFS) refuse `flock` on a descriptor opened read-only, or on
/// a directory (EBADF, ENOLCK, EINVAL, EOPNOTSUPP): there the lock is taken on `fallback`
/// instead (a file inside the volume's work directory, opened read-write without following a
/// symlink, and never deleted). Whether such a lock excludes a task on another NFS client
/// depends on the server's lock manager; docs/RELIABILITY.md says so.
pub fn acquire_dir(
    dir: &Path,
    holder_file: &Path,
    fallback: &Path,
    what: &str,
    wait: Duration,
) -> Result<Lock> {
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
    let outcome = wait_for_io(&file, wait);
    after_dir_lock(file, outcome, dir, holder_file, fallback, what, wait)
}

/// The seam between the directory's `flock` and what follows: held, busy, or (where the file
/// system refuses to lock a directory) the fallback lock file. Separate so that a test can
/// give it the errors an NFS mount gives.
fn after_dir_lock(
    file: File,
    outcome: std::io::Result<bool>,
    dir: &Path,
    holder_file: &Path,
    fallback: &Path,
    what: &str,
    wait: Duration,
) -> Result<Lock> {
    match outcome {
        Ok(true) => Ok(Lock {
            _file: file,
        }),
        Ok(false) => {
            let text = read_small(holder_file).unwrap_or_default();
            Err(busy(&text, holder_file, what, wait))
        }
        Err(e) if unsupported(&e) => acquire_fallback(fallback, holder_file, what, wait),
        Err(e) => Err(Error::repo("cannot lock", dir, e)),
    }
}

/// Whether a failed `flock` means that the file system cannot lock this descriptor (rather
/// than a real error).
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOLCK | libc::EINVAL | libc::EOPNOTSUPP)
    )
}

/// The fallback lock: `path` (its directory is created if missing, never through a symlink)
/// opened read-write with O_NOFOLLOW and locked; after locking, `path` must still name the
/// locked file (same device and inode), else someone replaced it meanwhile and the lock is
/// taken again.
fn acquire_fallback(path: &Path, holder_file: &Path, what: &str, wait: Duration) -> Result<Lock> {
    if let Some(parent) = path.parent() {
        match std::fs::symlink_metadata(parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::IoError,
                    format!(
                        "{} is not a directory (a symlink, which cwbackup never follows?): remove it and run again",
                        parent.display()
                    ),
                ));
            }
            Err(_) => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(parent)
                    .or_else(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => Ok(()),
                        _ => Err(e),
                    })
                    .map_err(|e| Error::io("cannot create", parent, e))?;
            }
        }
    }
    let deadline = crate::clock::deadline_in(wait);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let file =
            open_lock_file(path).map_err(|e| Error::io("cannot open the lock file", path, e))?;
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_for_io(&file, left) {
            Ok(true) => {}
            Ok(false) => {
                let text = read_small(holder_file).unwrap_or_default();
                return Err(busy(&text, holder_file, what, wait));
            }
            Err(e) => return Err(Error::repo("cannot lock", path, e)),
        }
        let held = file
            .metadata()
            .map_err(|e| Error::io("cannot read", path, e))?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) && now.is_file() => {
                return Ok(Lock {
                    _file: file,
                });
            }
            // Replaced (or removed) between the open and the lock: lock what is there now.
            _ if Instant::now() < deadline || attempts < 10 => continue,
            _ => {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{what}: the lock file {} keeps being replaced: run again",
                        path.display()
                    ),
                ));
            }
        }
    }
}

/// Tries the OS lock of `file` until `wait` has passed; false when another holds it.
fn wait_for(file: &File, path: &Path, wait: Duration) -> Result<bool> {
    wait_for_io(file, wait).map_err(|e| Error::repo("cannot lock", path, e))
}

/// [`wait_for`], with the OS error as it is.
fn wait_for_io(file: &File, wait: Duration) -> std::io::Result<bool> {
    let deadline = crate::clock::deadline_in(wait);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(RETRY_EVERY);
            }
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(e),
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
    in_use(what, holder, "", wait).detail("lock_file", path.display().to_string())
}

/// The `busy` error of any lock (a lock file here, the lock object of an S3 repository): `what`
/// is in use by `holder` (unknown: another task), `more` added to its description, after
/// waiting `wait`; the holder's fields go into `details`.
pub fn in_use(what: &str, holder: Option<Holder>, more: &str, wait: Duration) -> Error {
    let who = match &holder {
        Some(h) => format!(
            "{} (pid {} on {}, since {}{more})",
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
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `flock` on the directory is refused (as NFS and CIFS do), the lock is taken on
    /// the fallback file, and that lock excludes a second task.
    #[test]
    fn a_refused_directory_lock_falls_back_to_a_lock_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        std::fs::create_dir(&dir).unwrap();
        let fallback = dir.join(".cwbackup-work/lock");
        let holder = dir.join(".cwbackup-work/holder.json");
        for errno in [libc::EBADF, libc::ENOLCK, libc::EINVAL, libc::EOPNOTSUPP] {
            let refused = || Err(std::io::Error::from_raw_os_error(errno));
            let open = || File::open(&dir).unwrap();
            let held = after_dir_lock(
                open(),
                refused(),
                &dir,
                &holder,
                &fallback,
                "volume",
                Duration::ZERO,
            )
            .unwrap();
            let locked = held._file.metadata().unwrap();
            let file = std::fs::metadata(&fallback).unwrap();
            assert_eq!(
                (locked.dev(), locked.ino()),
                (file.dev(), file.ino()),
                "the fallback file is the one locked"
            );
            assert!(std::fs::symlink_metadata(&fallback).unwrap().is_file());
            let e = after_dir_lock(
                open(),
                refused(),
                &dir,
                &holder,
                &fallback,
                "volume",
                Duration::ZERO,
            )
            .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Busy, "{}", e.message);
            drop(held);
        }
        // Any other error is an error, not a fallback.
        let e = after_dir_lock(
            File::open(&dir).unwrap(),
            Err(std::io::Error::from_raw_os_error(libc::EIO)),
            &dir,
            &holder,
            &fallback,
            "volume",
            Duration::ZERO,
        )
        .unwrap_err();
        assert_ne!(e.kind, ErrorKind::Busy);
    }

    #[test]
    fn a_symlink_in_place_of_the_fallback_lock_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, work.join("lock")).unwrap();
        let e = acquire_fallback(
            &work.join("lock"),
            &work.join("holder.json"),
            "volume",
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(e.message.contains("lock"), "{}", e.message);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
