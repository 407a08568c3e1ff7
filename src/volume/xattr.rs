//! Extended attributes (user and security attributes, POSIX ACLs as `system.posix_acl_*`,
//! file capabilities as `security.capability`): read from an open file or directory when
//! archiving, carried as pax `SCHILY.xattr.NAME` records as GNU tar `--xattrs` writes them,
//! and set again on extraction. They are not part of the content digest (SPEC §5).
//! Symlinks' attributes are not kept, nor `security.selinux`: an SELinux label belongs to the
//! host's policy (GNU tar carries it only with `--selinux`), and setting it on another host or
//! on NFS fails. A file system that supports no extended attributes at all (`ENOTSUP`) gets
//! none on extraction.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Every extended attribute of the open file `fd`, as (name, value), in the kernel's order.
pub fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = loop {
        // SAFETY: size 0 asks for the length only.
        let len = unsafe { libc::flistxattr(fd.as_raw_fd(), std::ptr::null_mut(), 0) };
        if len < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: a buffer of the given length.
        let got = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            break buf;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e); // ERANGE: it grew in between; ask again
        }
    };
    let mut out = Vec::new();
    for name in names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && !is_host_label(n))
    {
        let c = CString::new(name)?;
        let value = loop {
            // SAFETY: size 0 asks for the length only.
            let len =
                unsafe { libc::fgetxattr(fd.as_raw_fd(), c.as_ptr(), std::ptr::null_mut(), 0) };
            if len < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENODATA) {
                    break None; // removed in between
                }
                return Err(e);
            }
            let mut buf = vec![0u8; len as usize];
            // SAFETY: a buffer of the given length.
            let got = unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    c.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if got >= 0 {
                buf.truncate(got as usize);
                break Some(buf);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ERANGE) {
                return Err(e);
            }
        };
        if let Some(value) = value {
            out.push((name.to_vec(), value));
        }
    }
    Ok(out)
}

/// Sets one extended attribute on the open file `fd`.
pub fn set(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = CString::new(name)?;
    // SAFETY: valid fd, C string and value buffer.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            c.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an attribute is the host's SELinux label, which is never carried.
pub fn is_host_label(name: &[u8]) -> bool {
    name == b"security.selinux"
}

/// Whether an attribute can be set by the current user: without root, only `user.*` (and
/// ACLs on one's own files); the others are left out of a non-root extraction.
pub fn settable(name: &[u8], as_root: bool) -> bool {
    !is_host_label(name) && as_root
        || name.starts_with(b"user.")
        || name.starts_with(b"system.posix_acl_")
}
