//! Opening files that something else may have swapped under us (a container writing to the
//! volume, anyone writing to the repository): never follow a symlink in the last component,
//! never block on a FIFO or device, and accept only a regular file, so a FIFO cannot hang the
//! tool and a symlink to `/dev/zero` cannot make it read forever (SPEC §6, "nothing is read
//! that was not chosen").

use std::ffi::{CStr, CString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The most a `manifest.json` may hold: a manifest is a few KiB, so anything this large is not
/// one, and reading it whole would be unbounded memory.
pub const MAX_MANIFEST: u64 = 16 << 20;

/// Why a path could not be opened as the regular file it should be.
#[derive(Debug)]
pub enum Refused {
    /// It does not exist (any more).
    Missing(io::Error),
    /// It is a symlink, FIFO, socket, device or directory, or not the file that was listed.
    NotRegular(String),
    /// Another error (permissions, I/O).
    Io(io::Error),
}

impl Refused {
    /// The refusal as an `io::Error` that names `path`.
    pub fn into_io(self, path: &Path) -> io::Error {
        match self {
            Refused::Missing(e) | Refused::Io(e) => {
                io::Error::new(e.kind(), format!("{}: {e}", path.display()))
            }
            Refused::NotRegular(what) => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {what}, not a regular file", path.display()),
            ),
        }
    }
}

/// Opens `path` read-only (`O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`), then checks with `fstat`
/// that it is a regular file, and, with `expect = Some((dev, ino))`, the very file a listing
/// saw. The returned file reads blocking again (for a regular file `O_NONBLOCK` changes
/// nothing, but it is cleared all the same).
pub fn open_regular(path: &Path, expect: Option<(u64, u64)>) -> Result<(File, Metadata), Refused> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| Refused::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    opened(libc::AT_FDCWD, &c, expect)
}

/// `open_regular` for `name` (one path component) in the directory `dir`.
pub fn open_regular_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    expect: Option<(u64, u64)>,
) -> Result<(File, Metadata), Refused> {
    let c = CString::new(name)
        .map_err(|e| Refused::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    opened(dir.as_raw_fd(), &c, expect)
}

fn opened(
    dir: RawFd,
    name: &CStr,
    expect: Option<(u64, u64)>,
) -> Result<(File, Metadata), Refused> {
    // SAFETY: a valid C string; the returned fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Refused::Missing(e),
            Some(libc::ELOOP) => Refused::NotRegular("a symlink".to_string()),
            Some(libc::ENXIO) => Refused::NotRegular("a socket or FIFO".to_string()),
            _ => Refused::Io(e),
        });
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = file.metadata().map_err(Refused::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else {
            "a special file"
        };
        return Err(Refused::NotRegular(what.to_string()));
    }
    if let Some((dev, ino)) = expect
        && (meta.dev(), meta.ino()) != (dev, ino)
    {
        return Err(Refused::NotRegular(
            "another file than the one listed".to_string(),
        ));
    }
    clear_nonblock(&file).map_err(Refused::Io)?;
    Ok((file, meta))
}

/// `open_regular` for files of the repository, with every refusal as an `io::Error` naming
/// the path (a FIFO or symlink in a set is damage, reported like any unreadable file).
pub fn open_repo_file(path: &Path) -> io::Result<File> {
    open_regular(path, None)
        .map(|(f, _)| f)
        .map_err(|r| r.into_io(path))
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the directory `name` below the directory fd `dir` (or the working directory for
/// `libc::AT_FDCWD`), never through a symlink and without blocking.
pub fn open_dir_at(dir: libc::c_int, name: &std::ffi::CStr) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: a valid C string; the fd returned is owned below.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_or_symlink_or_other_file_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        mkfifo(&fifo);
        // Opening a FIFO for reading without O_NONBLOCK would block here until a writer came.
        assert!(matches!(
            open_regular(&fifo, None),
            Err(Refused::NotRegular(_))
        ));
        let link = tmp.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            open_regular(&link, None),
            Err(Refused::NotRegular(_))
        ));
        assert!(matches!(
            open_regular(Path::new("/dev/null"), None),
            Err(Refused::NotRegular(_))
        ));
        assert!(matches!(
            open_regular(&tmp.path().join("gone"), None),
            Err(Refused::Missing(_))
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let m = std::fs::metadata(&file).unwrap();
        assert!(open_regular(&file, Some((m.dev(), m.ino()))).is_ok());
        assert!(matches!(
            open_regular(&file, Some((m.dev(), m.ino() + 1))),
            Err(Refused::NotRegular(_))
        ));
    }
}
