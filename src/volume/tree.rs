//! A listing of a directory tree: every entry below the root with the metadata the archive,
//! the digest and the consistency check need, sorted by relative path as bytes.
//!
//! The walk goes from directory fd to directory fd (`openat` with `O_DIRECTORY | O_NOFOLLOW`),
//! never through a path string: a directory swapped for a symlink while the tool walks is
//! not followed, and paths longer than `PATH_MAX` are no limit. An entry that vanishes while
//! it is listed is left out: the listing taken after the archive then differs, which is the
//! backup's consistency retry, not an error. [`Opener`] opens the listed files the same way.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::WORK_DIR;
use crate::safe_open::{self, Refused};

/// A tree to read: a whole directory (a volume), or only some of its root entries (an
/// installation's files in its install directory, among files that are none of ours).
#[derive(Debug, Clone, Copy)]
pub struct Root<'a> {
    pub dir: &'a Path,
    /// The root names the tree is made of; None: every entry.
    pub only: Option<&'a [OsString]>,
}

impl<'a> From<&'a Path> for Root<'a> {
    fn from(dir: &'a Path) -> Root<'a> {
        Root { dir, only: None }
    }
}

impl<'a> From<&'a PathBuf> for Root<'a> {
    fn from(dir: &'a PathBuf) -> Root<'a> {
        Root { dir, only: None }
    }
}

impl Root<'_> {
    /// Whether a root entry of this name belongs to the tree.
    fn has(&self, name: &OsStr) -> bool {
        name.as_bytes() != WORK_DIR.as_bytes()
            && self.only.is_none_or(|only| only.iter().any(|n| n == name))
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A socket, FIFO or device: not archived (warned about).
    Other,
}

/// One entry below the root, fixed size: its path (and a symlink's target) live in the
/// [`Listing`]'s arena, so a million entries cost ~90 MB rather than ~170 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    off: u64,
    path_len: u32,
    target_len: u32,
    pub kind: Kind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// File size (0 for directories, target length for symlinks).
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Change time: any write or metadata change moves it, so it catches edits that keep mtime.
    pub ctime: i64,
    pub ctime_nsec: u32,
    pub dev: u64,
    pub ino: u64,
}

/// A listed entry with its path and target.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// Path relative to the root, `/`-separated, as bytes.
    pub path: &'a [u8],
    /// A symlink's target.
    pub target: Option<&'a [u8]>,
    entry: &'a Entry,
}

impl std::ops::Deref for EntryRef<'_> {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        self.entry
    }
}

impl EntryRef<'_> {
    /// The entry's path below `root`.
    pub fn full_path(&self, root: &Path) -> PathBuf {
        root.join(OsStr::from_bytes(self.path))
    }
}

/// Every entry below a root, sorted by path bytes. Two listings are equal when they hold the
/// same entries with the same metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Paths and targets, in the entries' order.
    arena: Vec<u8>,
    entries: Vec<Entry>,
}

impl Listing {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `i`-th entry.
    pub fn get(&self, i: usize) -> EntryRef<'_> {
        let e = &self.entries[i];
        let start = e.off as usize;
        let mid = start + e.path_len as usize;
        EntryRef {
            path: &self.arena[start..mid],
            target: (e.kind == Kind::Symlink)
                .then(|| &self.arena[mid..mid + e.target_len as usize]),
            entry: e,
        }
    }

    /// Every entry, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> + Clone + '_ {
        (0..self.entries.len()).map(|i| self.get(i))
    }

    fn push(&mut self, path: &[u8], target: Option<&[u8]>, mut entry: Entry) {
        entry.off = self.arena.len() as u64;
        entry.path_len = path.len() as u32;
        entry.target_len = target.map_or(0, |t| t.len() as u32);
        self.arena.extend_from_slice(path);
        self.arena.extend_from_slice(target.unwrap_or_default());
        self.entries.push(entry);
    }

    /// Sorts by path and lays the arena out in that order (so equal trees give equal
    /// listings, whatever order the directories were read in).
    fn sort(&mut self) {
        let arena = &self.arena;
        let path = |e: &Entry| &arena[e.off as usize..e.off as usize + e.path_len as usize];
        self.entries.sort_unstable_by(|a, b| path(a).cmp(path(b)));
        let mut sorted = Vec::with_capacity(self.arena.len());
        for e in &mut self.entries {
            let start = e.off as usize;
            let len = e.path_len as usize + e.target_len as usize;
            e.off = sorted.len() as u64;
            sorted.extend_from_slice(&self.arena[start..start + len]);
        }
        self.arena = sorted;
    }
}

/// Lists every entry below `root` (not following symlinks), sorted by path bytes, leaving out
/// restore's work directory [`WORK_DIR`] at the root.
pub fn scan<'a>(root: impl Into<Root<'a>>) -> io::Result<Listing> {
    let mut listing = Listing::default();
    walk(root, |path, target, entry| {
        listing.push(path, target, entry)
    })?;
    listing.sort();
    Ok(listing)
}

/// The [`Listing::fingerprint`] of `root`'s listing, without keeping the listing: a backup
/// compares the listing after its archive with the one before by this, so it holds one
/// listing of the volume, not two.
pub fn fingerprint<'a>(root: impl Into<Root<'a>>) -> io::Result<Fingerprint> {
    let mut hashes = Vec::new();
    walk(root, |path, target, entry| {
        hashes.push(entry_hash(path, target, &entry))
    })?;
    Ok(Fingerprint::of(hashes))
}

/// [`fingerprint`] of the tree below `root`, and the paths of its sockets, FIFOs and devices
/// (which backups skip), in one walk that keeps no listing: restore's check just before its
/// swap, which must not hold a second listing of a large volume.
pub fn fingerprint_and_specials<'a>(
    root: impl Into<Root<'a>>,
) -> io::Result<(Fingerprint, Vec<Vec<u8>>)> {
    let mut hashes = Vec::new();
    let mut specials = Vec::new();
    walk(root, |path, target, entry| {
        if entry.kind == Kind::Other {
            specials.push(path.to_vec());
        }
        hashes.push(entry_hash(path, target, &entry))
    })?;
    specials.sort();
    Ok((Fingerprint::of(hashes), specials))
}

/// A listing's identity: sha256 over the sorted 16-byte hashes of its entries (path, target
/// and every metadata field), so equal listings have equal fingerprints and any change to
/// an entry changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    fn of(mut hashes: Vec<[u8; 16]>) -> Fingerprint {
        use sha2::{Digest, Sha256};
        hashes.sort_unstable();
        let mut h = Sha256::new();
        for e in &hashes {
            h.update(e);
        }
        Fingerprint(h.finalize().into())
    }
}

fn entry_hash(path: &[u8], target: Option<&[u8]>, e: &Entry) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((path.len() as u64).to_le_bytes());
    h.update(path);
    h.update(target.map_or(u64::MAX, |t| t.len() as u64).to_le_bytes());
    h.update(target.unwrap_or_default());
    h.update([e.kind as u8]);
    for v in [e.mode, e.uid, e.gid, e.mtime_nsec, e.ctime_nsec] {
        h.update(v.to_le_bytes());
    }
    for v in [e.size, e.mtime as u64, e.ctime as u64, e.dev, e.ino] {
        h.update(v.to_le_bytes());
    }
    let full: [u8; 32] = h.finalize().into();
    full[..16].try_into().expect("16 of 32 bytes")
}

impl Listing {
    /// This listing's [`Fingerprint`], equal to `fingerprint(root)` of an unchanged tree.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(
            self.iter()
                .map(|e| entry_hash(e.path, e.target, &e))
                .collect(),
        )
    }
}

/// Calls `each` for every entry below `root`, in no particular order.
fn walk<'a>(
    root: impl Into<Root<'a>>,
    mut each: impl FnMut(&[u8], Option<&[u8]>, Entry),
) -> io::Result<()> {
    let scope = root.into();
    let root = scope.dir;
    let root_fd = open_root(root)?;
    let mut pending = vec![Vec::<u8>::new()];
    let mut rel = Vec::new();
    while let Some(dir_rel) = pending.pop() {
        let dir = match open_dir_below(root_fd.as_fd(), &dir_rel) {
            Ok(fd) => fd,
            // Vanished or swapped for something else since it was listed: the listing after
            // the archive will show it.
            Err(e) if is_race(&e) => continue,
            Err(e) => return Err(annotate(e, root, &dir_rel)),
        };
        let names = match read_names(&dir) {
            Ok(names) => names,
            Err(e) if is_race(&e) => continue,
            Err(e) => return Err(annotate(e, root, &dir_rel)),
        };
        for name in names {
            if dir_rel.is_empty() && !scope.has(OsStr::from_bytes(name.as_bytes())) {
                continue;
            }
            rel.clear();
            rel.extend_from_slice(&dir_rel);
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let st = match fstatat(dir.as_fd(), &name) {
                Ok(st) => st,
                Err(e) if is_race(&e) => continue,
                Err(e) => return Err(annotate(e, root, &rel)),
            };
            let fmt = st.st_mode & libc::S_IFMT;
            let (kind, target) = match fmt {
                libc::S_IFDIR => {
                    pending.push(rel.clone());
                    (Kind::Dir, None)
                }
                libc::S_IFREG => (Kind::File, None),
                libc::S_IFLNK => match readlinkat(dir.as_fd(), &name) {
                    Ok(t) => (Kind::Symlink, Some(t)),
                    Err(e) if is_race(&e) => continue,
                    Err(e) => return Err(annotate(e, root, &rel)),
                },
                _ => (Kind::Other, None),
            };
            let size = match kind {
                Kind::File => st.st_size as u64,
                Kind::Symlink => target.as_ref().map_or(0, |t| t.len() as u64),
                _ => 0,
            };
            let entry = Entry {
                off: 0,
                path_len: 0,
                target_len: 0,
                kind,
                mode: if kind == Kind::Symlink {
                    0o777
                } else {
                    st.st_mode & 0o7777
                },
                size,
                uid: st.st_uid,
                gid: st.st_gid,
                mtime: st.st_mtime,
                mtime_nsec: st.st_mtime_nsec as u32,
                ctime: st.st_ctime,
                ctime_nsec: st.st_ctime_nsec as u32,
                dev: st.st_dev,
                ino: st.st_ino,
            };
            each(&rel, target.as_deref(), entry);
        }
    }
    Ok(())
}

/// Opens listed files of one tree, walking to each file's directory fd by fd (never through
/// a symlink, whatever the path's length) and checking that the file opened is the regular
/// file listed (same device and inode).
pub struct Opener {
    root: OwnedFd,
    /// The directory of the last file opened, kept for the next file in the same directory.
    cached: Option<(Vec<u8>, OwnedFd)>,
}

impl Opener {
    /// Opens `root` (a directory, not a symlink).
    pub fn new(root: &Path) -> io::Result<Opener> {
        Ok(Opener {
            root: open_root(root)?,
            cached: None,
        })
    }

    /// Opens the listed regular file `entry`; `Err(Refused::Missing | NotRegular)` means the
    /// tree changed since the listing.
    pub fn open(&mut self, entry: &EntryRef<'_>) -> Result<(File, Metadata), Refused> {
        let (dir_rel, name) = match entry.path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&entry.path[..i], &entry.path[i + 1..]),
            None => (&entry.path[..0], entry.path),
        };
        if self.cached.as_ref().is_none_or(|(rel, _)| rel != dir_rel) {
            self.cached = None;
            let fd = open_dir_below(self.root.as_fd(), dir_rel).map_err(|e| {
                if is_race(&e) {
                    Refused::Missing(e)
                } else {
                    Refused::Io(e)
                }
            })?;
            self.cached = Some((dir_rel.to_vec(), fd));
        }
        let dir = &self.cached.as_ref().expect("just set").1;
        safe_open::open_regular_at(dir.as_fd(), name, Some((entry.dev, entry.ino)))
    }
}

impl Opener {
    /// Opens the listed directory `entry` (for its extended attributes); an `Err` of kind
    /// `NotFound`, `NotADirectory` or a symlink loop means the tree changed since the listing.
    pub fn open_dir(&mut self, entry: &EntryRef<'_>) -> io::Result<OwnedFd> {
        let fd = open_dir_below(self.root.as_fd(), entry.path)?;
        let st = fstatat(fd.as_fd(), c".")?;
        if (st.st_dev, st.st_ino) != (entry.dev, entry.ino) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(fd)
    }
}

/// Whether an error means that the entry vanished or was replaced while we looked.
pub fn is_race(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(root.as_os_str().as_bytes())?;
    safe_open::open_dir_at(libc::AT_FDCWD, &c)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))
}

/// Opens the directory `rel` below `root` one component at a time, never following a symlink.
fn open_dir_below(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let dot = CString::new(".").expect("no NUL");
    let mut cur = safe_open::open_dir_at(root.as_raw_fd(), &dot)?;
    for part in rel.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
        let c = CString::new(part)?;
        cur = safe_open::open_dir_at(cur.as_raw_fd(), &c)?;
    }
    Ok(cur)
}

/// The names in a directory (without `.` and `..`).
fn read_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // fdopendir takes the fd over, so give it a duplicate.
    let dup = dir.try_clone()?;
    // SAFETY: `dup` is a valid directory fd, handed over to the DIR stream.
    let stream = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dup); // closedir closes it
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; clearing it distinguishes the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a valid, open DIR stream.
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: d_name is a NUL-terminated string inside the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    };
    // SAFETY: the stream is open and closed once.
    unsafe { libc::closedir(stream) };
    result.map(|()| names)
}

fn fstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat64> {
    let mut st = std::mem::MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: valid fd, C string and output buffer.
    let rc = unsafe {
        libc::fstatat64(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat filled it.
    Ok(unsafe { st.assume_init() })
}

fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid fd, C string and buffer of the given length.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

fn annotate(e: io::Error, root: &Path, rel: &[u8]) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{}: {e}", root.join(OsStr::from_bytes(rel)).display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_directory_is_left_out_at_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join(WORK_DIR).join("staged")).unwrap();
        std::fs::create_dir_all(root.join("sub").join(WORK_DIR)).unwrap();
        std::fs::write(root.join("a"), "x").unwrap();
        let paths: Vec<Vec<u8>> = scan(root)
            .unwrap()
            .iter()
            .map(|e| e.path.to_vec())
            .collect();
        assert_eq!(
            paths,
            vec![
                b"a".to_vec(),
                b"sub".to_vec(),
                format!("sub/{WORK_DIR}").into_bytes()
            ]
        );
    }

    #[test]
    fn the_fingerprint_matches_the_listing_and_changes_with_any_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink("d/f", root.join("l")).unwrap();
        let before = scan(root).unwrap().fingerprint();
        assert_eq!(fingerprint(root).unwrap(), before);
        std::fs::write(root.join("d/f"), "y").unwrap(); // same size, new mtime/ctime
        assert_ne!(fingerprint(root).unwrap(), before);
    }

    #[test]
    fn entries_vanishing_during_the_scan_are_left_out_not_an_error() {
        // Files and directories appear and vanish while the tree is scanned, over and over:
        // each scan must succeed (the backup compares two listings and retries), never fail
        // with "No such file or directory" between readdir and lstat.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir(root.join("churn")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let d = root.join("churn").join(format!("d{}", i % 50));
                    let _ = std::fs::create_dir(&d);
                    let _ = std::fs::write(d.join("f"), "x");
                    let _ = std::fs::write(root.join("churn").join(format!("f{}", i % 50)), "x");
                    let _ = std::fs::remove_file(d.join("f"));
                    let _ = std::fs::remove_dir(&d);
                    let _ = std::fs::remove_file(
                        root.join("churn").join(format!("f{}", (i + 25) % 50)),
                    );
                    i += 1;
                }
            })
        };
        let mut failures = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut scans = 0;
        while std::time::Instant::now() < until {
            if let Err(e) = scan(&root) {
                failures.push(e.to_string());
            }
            scans += 1;
        }
        assert!(scans > 10);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} scans failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }

    #[test]
    fn the_opener_refuses_a_fifo_or_symlink_swapped_in_for_a_listed_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        std::fs::write(root.join("d/g"), "y").unwrap();
        let listing = scan(root).unwrap();
        let f = &listing.iter().find(|e| e.path == b"d/f").unwrap();
        let g = &listing.iter().find(|e| e.path == b"d/g").unwrap();
        let mut opener = Opener::new(root).unwrap();
        assert!(opener.open(f).is_ok());
        // Swap: a FIFO for f (opening it blocking would hang), a symlink to /dev/zero for g.
        std::fs::remove_file(root.join("d/f")).unwrap();
        let c = CString::new(root.join("d/f").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::fs::remove_file(root.join("d/g")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("d/g")).unwrap();
        let mut opener = Opener::new(root).unwrap();
        assert!(matches!(opener.open(f), Err(Refused::NotRegular(_))));
        assert!(matches!(opener.open(g), Err(Refused::NotRegular(_))));
        // A directory swapped for a symlink to another directory is not followed.
        std::fs::rename(root.join("d"), root.join("e")).unwrap();
        std::fs::create_dir(root.join("e2")).unwrap();
        std::fs::write(root.join("e2/f"), "x").unwrap();
        std::os::unix::fs::symlink("e2", root.join("d")).unwrap();
        let mut opener = Opener::new(root).unwrap();
        assert!(matches!(opener.open(f), Err(Refused::Missing(_))));
    }
}
