//! A listing of a directory tree: every entry below the root with the metadata the archive,
//! the digest and the consistency check need, sorted by relative path as bytes.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A socket, FIFO or device: not archived (warned about).
    Other,
}

/// One entry below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root, `/`-separated, as bytes.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// File size (0 for directories, target length for symlinks).
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// Change time: any write or metadata change moves it, so it catches edits that keep mtime.
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub ino: u64,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
}

impl Entry {
    /// The entry's path below `root`.
    pub fn full_path(&self, root: &Path) -> PathBuf {
        root.join(OsStr::from_bytes(&self.path))
    }
}

/// Lists every entry below `root` (not following symlinks), sorted by path bytes; the tool's
/// work directory at the root ([`super::WORK_DIR`]) is left out.
pub fn scan(root: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut pending = vec![Vec::<u8>::new()];
    while let Some(dir_rel) = pending.pop() {
        let dir = root.join(OsStr::from_bytes(&dir_rel));
        let read = fs::read_dir(&dir).map_err(|e| annotate(e, &dir))?;
        for item in read {
            let item = item.map_err(|e| annotate(e, &dir))?;
            if dir_rel.is_empty() && item.file_name() == super::WORK_DIR {
                continue;
            }
            let mut rel = dir_rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(item.file_name().as_bytes());
            let path = item.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| annotate(e, &path))?;
            let ft = meta.file_type();
            let (kind, target) = if ft.is_dir() {
                pending.push(rel.clone());
                (Kind::Dir, None)
            } else if ft.is_file() {
                (Kind::File, None)
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| annotate(e, &path))?;
                (Kind::Symlink, Some(target.into_os_string().into_vec()))
            } else {
                (Kind::Other, None)
            };
            let size = match kind {
                Kind::File => meta.size(),
                Kind::Symlink => target.as_ref().map_or(0, |t| t.len() as u64),
                _ => 0,
            };
            entries.push(Entry {
                path: rel,
                kind,
                mode: if kind == Kind::Symlink {
                    0o777
                } else {
                    meta.mode() & 0o7777
                },
                size,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec(),
                ctime: meta.ctime(),
                ctime_nsec: meta.ctime_nsec(),
                ino: meta.ino(),
                target,
            });
        }
    }
    entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

use std::os::unix::ffi::OsStringExt;

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
