//! Reads a volume archive safely: checks every entry, computes the content digest from what
//! the archive holds, and, given a destination, extracts into it.
//!
//! Refused (`unsafe_archive`): absolute paths, `..` in paths, an entry below a symlink (a
//! write through it), a symlink whose target is absolute or could leave the root, a hardlink
//! to anything but an earlier regular file of the same archive, device nodes, FIFOs and other
//! special types, duplicate paths, and more bytes or entries than the manifest announced.
//!
//! A symlink target may use `..` only as leading components, and not more of them than the
//! link's depth: then resolving it starts from a real directory inside the root and only
//! descends, so no chain of links can leave the root. (`a -> .` with `b -> a/..` would look
//! harmless lexically and yet escape.)

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::digest::Lines;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::safe_open;

/// The most an archive may hold, from its manifest.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sum of file sizes.
    pub max_bytes: u64,
    /// Entries below the root.
    pub max_entries: u64,
}

/// What an archive holds.
#[derive(Debug, Clone)]
pub struct Contents {
    /// Entries below the root.
    pub files: u64,
    /// Sum of file sizes.
    pub expanded_bytes: u64,
    /// The content digest of the entries.
    pub content_digest: String,
    /// The digest lines, sorted by path.
    pub entries: Lines,
}

fn unsafe_entry(path: &[u8], why: &str) -> Error {
    Error::new(
        ErrorKind::UnsafeArchive,
        format!(
            "archive entry {:?} is refused: {why}; the set may have been tampered with, so restore another set",
            String::from_utf8_lossy(path)
        ),
    )
    .detail("entry", String::from_utf8_lossy(path))
}

fn damaged(e: io::Error) -> Error {
    Error::new(
        ErrorKind::IntegrityError,
        format!("the volume archive is damaged: {e}"),
    )
}

/// The components of `parts` below `prefix` (empty for the prefix itself), or None when it
/// does not lie below it.
fn below<'p>(parts: &[&'p [u8]], prefix: &[Vec<u8>]) -> Option<Vec<&'p [u8]>> {
    (parts.len() >= prefix.len() && parts.iter().zip(prefix).all(|(a, b)| *a == b.as_slice()))
        .then(|| parts[prefix.len()..].to_vec())
}

/// Splits a path into its components, dropping `.` and empty ones; refuses absolute paths and
/// `..`.
fn components(path: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    if path.starts_with(b"/") {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("`..` in path"),
            p => out.push(p),
        }
    }
    Ok(out)
}

/// Whether a symlink at `link` (components) pointing to `target` stays inside the root under
/// the rule in the module comment.
pub fn symlink_target_is_safe(link: &[&[u8]], target: &[u8]) -> bool {
    if target.is_empty() || target.starts_with(b"/") {
        return false;
    }
    let depth = link.len().saturating_sub(1); // the link's parent directory
    let mut ups = 0;
    let mut descended = false;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if descended => return false,
            b".." => ups += 1,
            _ => descended = true,
        }
    }
    ups <= depth
}

/// The most a pax extended header or a GNU long name or long link record may hold (SPEC §6):
/// a path is at most a few KiB, so more is an attack on memory, refused before it is read.
pub const MAX_EXTENSION: u64 = 1 << 20;

/// What the extension records (pax `x`, GNU `L` and `K`) before an entry say about it.
#[derive(Debug, Default)]
pub struct Extended {
    /// The entry's path (pax `path` or GNU long name).
    pub path: Option<Vec<u8>>,
    /// A link's target (pax `linkpath` or GNU long link).
    pub linkpath: Option<Vec<u8>>,
    /// Extended attributes (pax `SCHILY.xattr.NAME`), in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads the extension records of a raw tar stream (`Entries::raw(true)`, so the tar crate
/// never reads one whole into memory itself), each refused above [`MAX_EXTENSION`] before it
/// is read, and hands them to the entry they precede.
#[derive(Debug, Default)]
pub struct Extensions {
    pending: Extended,
    /// A pax header was read and not yet used.
    pax_pending: bool,
}

impl Extensions {
    /// Consumes `entry` if it is an extension record (`Ok(None)`); else returns what the
    /// records before it said (`Ok(Some)`). An oversized or malformed record is an `Err`
    /// whose message says why.
    pub fn take<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> std::result::Result<Option<Extended>, String> {
        let etype = entry.header().entry_type();
        let is_ext = matches!(
            etype,
            EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        );
        if !is_ext {
            self.pax_pending = false;
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        let size = entry.header().size().map_err(|e| e.to_string())?;
        if size > MAX_EXTENSION {
            return Err(format!(
                "its pax header or GNU long name record holds {size} bytes, more than the {MAX_EXTENSION} allowed"
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .take(MAX_EXTENSION)
            .read_to_end(&mut data)
            .map_err(|e| e.to_string())?;
        match etype {
            EntryType::XHeader => {
                if self.pax_pending {
                    return Err("two pax headers precede it".to_string());
                }
                self.pax_pending = true;
                for record in tar::PaxExtensions::new(&data) {
                    let record = record.map_err(|e| format!("its pax header is malformed: {e}"))?;
                    let key = record.key_bytes();
                    let value = record.value_bytes().to_vec();
                    match key {
                        b"path" => self.pending.path = Some(value),
                        b"linkpath" => self.pending.linkpath = Some(value),
                        b"size" => {
                            return Err(
                                "its pax header has a `size` record (a file over 8 GiB written by another tar), which this reader does not take"
                                    .to_string(),
                            );
                        }
                        _ => {
                            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                                self.pending.xattrs.push((name.to_vec(), value));
                            }
                        }
                    }
                }
            }
            _ => {
                let value = data.split(|b| *b == 0).next().unwrap_or_default().to_vec();
                if etype == EntryType::GNULongName {
                    self.pending.path = Some(value);
                } else {
                    self.pending.linkpath = Some(value);
                }
            }
        }
        Ok(None)
    }
}

/// Finds digest lines by path without a second copy of every path (a set of a million paths
/// was most of a restore's memory): a map from the path's 64-bit hash, keyed at random per
/// run, to the line's index, the path itself compared in the lines' arena. A second path with
/// the same hash (practically never) goes to a small map of its own.
#[derive(Default)]
struct PathIndex {
    hasher: std::hash::RandomState,
    first: HashMap<u64, u32>,
    collided: HashMap<Vec<u8>, u32>,
}

impl PathIndex {
    /// The index of the line with `path`, if one was inserted.
    fn get(&self, path: &[u8], lines: &Lines) -> Option<usize> {
        use std::hash::BuildHasher;
        match self.first.get(&self.hasher.hash_one(path)) {
            Some(&i) if (i as usize) >= lines.len() || lines.get(i as usize).path == path => {
                Some(i as usize)
            }
            Some(_) => self.collided.get(path).map(|&i| i as usize),
            None => None,
        }
    }

    /// Records that line `index` (about to be pushed) has `path`; false if a line has it
    /// already.
    fn insert(&mut self, path: &[u8], index: usize, lines: &Lines) -> bool {
        use std::hash::BuildHasher;
        if self.get(path, lines).is_some() {
            return false;
        }
        match self.first.entry(self.hasher.hash_one(path)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(index as u32);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(path.to_vec(), index as u32);
            }
        }
        true
    }
}

/// Reads the whole archive from `reader`, checking every entry; with `dest` (an empty
/// directory), extracts into it, keeping modes, mtimes, and ownership when running as root.
pub fn read_archive(reader: impl Read, dest: Option<&Path>, limits: Limits) -> Result<Contents> {
    read_archive_as(reader, dest, limits, Layout::Root).map(|(c, _)| c)
}

/// Where an archive's volume root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The archive's root is the volume's (cwbackup's own, `tar czf x.tgz -C …/_data .`).
    Root,
    /// Found from the first entry: the vendor's `tar cvfz x.tgz ./<volume>/_data` puts every
    /// entry below `./<volume>/_data/`, which is then the root; anything else is [`Layout::Root`].
    Detect,
}

/// The first entry of a vendor archive: a directory `<volume>/_data`.
const VENDOR_DATA: &[u8] = b"_data";

/// [`read_archive`] of an archive in `layout`; also returns the prefix that was taken as the
/// root (`connectware_service-manager/_data`), if any. Every entry must then lie below it.
pub fn read_archive_as(
    reader: impl Read,
    dest: Option<&Path>,
    limits: Limits,
    layout: Layout,
) -> Result<(Contents, Option<String>)> {
    let mut prefix: Option<Vec<Vec<u8>>> = None;
    let mut first = layout == Layout::Detect;
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut archive = tar::Archive::new(reader);
    let mut lines = Lines::default();
    let mut seen = PathIndex::default();
    let mut hardlinks: HashSet<u32> = HashSet::new();
    let mut symlinks: HashSet<Vec<u8>> = HashSet::new();
    let mut dirs: Vec<(Vec<u8>, u32, u64, u64, u64)> = Vec::new();
    let mut dest = dest.map(Dest::open).transpose()?;
    let mut expanded: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    // The manifest's expanded size is the total (pax headers add a little; the percent stops
    // at 100).
    let what = if dest.is_some() {
        "extracting"
    } else {
        "reading"
    };
    let mut progress = Progress::with_total(what, limits.max_bytes);

    let mut extensions = Extensions::default();
    // Raw: pax headers and GNU long names come to us, so their size is checked before they
    // are read (the tar crate would read any size into memory).
    for entry in archive.entries().map_err(damaged)?.raw(true) {
        let mut entry = entry.map_err(damaged)?;
        progress.file(entry.size());
        let etype = entry.header().entry_type();
        if etype == EntryType::XGlobalHeader {
            continue; // skipped unread
        }
        let extended = match extensions.take(&mut entry) {
            Ok(Some(extended)) => extended,
            Ok(None) => continue,
            Err(why) => {
                return Err(unsafe_entry(&entry.header().path_bytes(), &why));
            }
        };
        let raw = extended
            .path
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let parts = components(&raw).map_err(|why| unsafe_entry(&raw, why))?;
        if std::mem::take(&mut first)
            && etype == EntryType::Directory
            && parts.len() == 2
            && parts[1] == VENDOR_DATA
        {
            prefix = Some(parts.iter().map(|p| p.to_vec()).collect());
            continue;
        }
        let parts = match &prefix {
            None => parts,
            Some(pre) => match below(&parts, pre) {
                Some(rest) => rest,
                None => {
                    return Err(unsafe_entry(
                        &raw,
                        &format!(
                            "it lies outside {}/, where the archive's first entry puts the volume",
                            String::from_utf8_lossy(&pre.join(&b'/'))
                        ),
                    ));
                }
            },
        };
        if parts.is_empty() {
            if etype == EntryType::Directory {
                continue; // the root itself ("./")
            }
            return Err(unsafe_entry(&raw, "empty path"));
        }
        let rel = parts.join(&b'/');
        if !seen.insert(&rel, lines.len(), &lines) {
            return Err(unsafe_entry(&rel, "the path appears twice"));
        }
        if lines.len() as u64 >= limits.max_entries {
            return Err(unsafe_entry(
                &rel,
                &format!(
                    "the archive holds more than the {} entries its manifest announces",
                    limits.max_entries
                ),
            ));
        }
        for i in 1..parts.len() {
            if symlinks.contains(&parts[..i].join(&b'/')) {
                return Err(unsafe_entry(&rel, "it would be written through a symlink"));
            }
        }
        let header = entry.header();
        let mode = header.mode().map_err(damaged)? & 0o7777;
        let mtime = header.mtime().map_err(damaged)?;
        let uid = header.uid().map_err(damaged)?;
        let gid = header.gid().map_err(damaged)?;
        let target_path = dest.as_ref().map(|d| d.path(&rel));
        let (parent_rel, name) = split(&rel);
        let name = CString::new(name).map_err(|_| unsafe_entry(&rel, "a NUL byte in its name"))?;
        // The parent's fd stays open in `dest`'s cache until the next `dir` call (only a
        // directory entry makes one, and it uses no `parent` after it).
        let parent: Option<RawFd> = match dest.as_mut() {
            Some(d) => {
                let path = d.path(parent_rel);
                Some(
                    d.dir(parent_rel)
                        .map_err(|e| Error::io("cannot create directory", &path, e))?
                        .as_raw_fd(),
                )
            }
            None => None,
        };
        // SAFETY: see above: the fd outlives every use of `parent_fd`.
        let parent_fd = parent.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });

        match etype {
            EntryType::Directory => {
                if let (Some(d), Some(path)) = (dest.as_mut(), &target_path) {
                    d.dir(&rel)
                        .map_err(|e| Error::io("cannot create directory", path, e))?;
                    // Attributes now, while the directory is new and writable (0700, ours):
                    // nothing of them is kept until the end, whatever the archive holds.
                    let dir = File::from(
                        d.dir_uncached(&rel)
                            .map_err(|e| Error::io("cannot open directory", path, e))?,
                    );
                    set_xattrs(dir.as_fd(), path, &extended.xattrs, as_root)?;
                    dirs.push((rel.clone(), mode, mtime, uid, gid));
                }
                lines.push(&rel, b'd', mode, 0, None);
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                expanded = expanded.saturating_add(size);
                if expanded > limits.max_bytes {
                    return Err(unsafe_entry(
                        &rel,
                        &format!(
                            "the archive expands beyond the {} bytes its manifest announces",
                            limits.max_bytes
                        ),
                    ));
                }
                let mut out = match (parent_fd, &target_path) {
                    (Some(dir), Some(path)) => Some(
                        create_file(dir, &name).map_err(|e| Error::io("cannot create", path, e))?,
                    ),
                    _ => None,
                };
                let mut hasher = Sha256::new();
                let mut got = 0u64;
                loop {
                    // Whole buffers, so hole blocks line up with the file's blocks.
                    let n = match read_full(&mut entry, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(damaged(e)),
                    };
                    hasher.update(&buf[..n]);
                    got += n as u64;
                    if let (Some(f), Some(path)) = (out.as_mut(), &target_path) {
                        write_sparse(f, &buf[..n])
                            .map_err(|e| Error::io("cannot write", path, e))?;
                    }
                }
                if let (Some(f), Some(path)) = (out.as_ref(), &target_path) {
                    // Holes at the end were skipped over, not written: give the file its size.
                    f.set_len(got)
                        .map_err(|e| Error::io("cannot write", path, e))?;
                }
                if got != size {
                    return Err(damaged(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} ends after {got} of {size} bytes",
                            String::from_utf8_lossy(&rel)
                        ),
                    )));
                }
                if let (Some(f), Some(path)) = (out, &target_path) {
                    finish_file(
                        &f,
                        path,
                        mode,
                        mtime,
                        as_root.then_some((uid, gid)),
                        &extended.xattrs,
                    )?;
                }
                let hash: [u8; 32] = hasher.finalize().into();
                lines.push(&rel, b'f', mode, size, Some(hash));
            }
            EntryType::Symlink => {
                let target = link_target(extended.linkpath.as_deref(), &entry);
                if !symlink_target_is_safe(&parts, &target) {
                    return Err(unsafe_entry(
                        &rel,
                        &format!(
                            "its symlink target {:?} could leave the volume",
                            String::from_utf8_lossy(&target)
                        ),
                    ));
                }
                if let (Some(dir), Some(path)) = (parent_fd, &target_path) {
                    let c = CString::new(target.clone())
                        .map_err(|_| unsafe_entry(&rel, "a NUL byte in its symlink target"))?;
                    // SAFETY: valid C strings and directory fd.
                    check(unsafe { libc::symlinkat(c.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
                        .map_err(|e| Error::io("cannot create symlink", path, e))?;
                    if as_root {
                        // SAFETY: as above.
                        check(unsafe {
                            libc::fchownat(
                                dir.as_raw_fd(),
                                name.as_ptr(),
                                uid as libc::uid_t,
                                gid as libc::gid_t,
                                libc::AT_SYMLINK_NOFOLLOW,
                            )
                        })
                        .map_err(|e| Error::io("cannot set owner of", path, e))?;
                    }
                    set_mtime_at(dir, &name, mtime)
                        .map_err(|e| Error::io("cannot set mtime of", path, e))?;
                }
                lines.push(
                    &rel,
                    b'l',
                    0o777,
                    target.len() as u64,
                    Some(Sha256::digest(&target).into()),
                );
                symlinks.insert(rel);
            }
            EntryType::Link => {
                let target = link_target(extended.linkpath.as_deref(), &entry);
                let target_parts = components(&target)
                    .map_err(|why| unsafe_entry(&rel, &format!("hardlink target: {why}")))?;
                let target_parts = match &prefix {
                    None => Some(target_parts),
                    Some(pre) => below(&target_parts, pre),
                };
                let target_rel = target_parts
                    .ok_or_else(|| unsafe_entry(&rel, "hardlink target outside the volume"))?
                    .join(&b'/');
                let info = seen
                    .get(&target_rel, &lines)
                    .filter(|&i| i < lines.len() && !hardlinks.contains(&(i as u32)))
                    .map(|i| lines.get(i))
                    .filter(|l| l.kind == b'f')
                    .map(|l| (l.size, *l.hash.expect("a file's line has a hash"), l.mode));
                let Some((size, hash, mode)) = info else {
                    return Err(unsafe_entry(
                        &rel,
                        "hardlink to something that is not an earlier file of this archive",
                    ));
                };
                if let (Some(dir), Some(path), Some(d)) = (parent_fd, &target_path, dest.as_ref()) {
                    let (from_rel, from_name) = split(&target_rel);
                    let from = d
                        .dir_uncached(from_rel)
                        .map_err(|e| Error::io("cannot create hardlink", path, e))?;
                    let from_name = CString::new(from_name).expect("no NUL: it was extracted");
                    // SAFETY: valid C strings and directory fds.
                    check(unsafe {
                        libc::linkat(
                            from.as_raw_fd(),
                            from_name.as_ptr(),
                            dir.as_raw_fd(),
                            name.as_ptr(),
                            0,
                        )
                    })
                    .map_err(|e| Error::io("cannot create hardlink", path, e))?;
                }
                hardlinks.insert(lines.len() as u32);
                lines.push(&rel, b'f', mode, size, Some(hash));
            }
            other => {
                return Err(unsafe_entry(
                    &rel,
                    &format!(
                        "entry type {other:?} (devices, FIFOs and special files are never restored)"
                    ),
                ));
            }
        }
    }

    // Directory modes and times last, deepest first: a read-only directory must not stop its
    // own contents from being written, and writing contents moves a directory's mtime.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    if let Some(d) = dest.as_mut() {
        for (rel, mode, mtime, uid, gid) in dirs {
            let path = d.path(&rel);
            let dir = File::from(
                d.dir_uncached(&rel)
                    .map_err(|e| Error::io("cannot open directory", &path, e))?,
            );
            finish_file(&dir, &path, mode, mtime, as_root.then_some((uid, gid)), &[])?;
        }
    }
    let files = lines.len() as u64;
    let content_digest = lines.digest();
    Ok((Contents {
        files,
        expanded_bytes: expanded,
        content_digest,
        entries: lines,
    },
        prefix.map(|p| String::from_utf8_lossy(&p.join(&b'/')).into_owned()),
    ))
}

/// Reads until `buf` is full or the reader ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The block a run of zeros must fill to be skipped as a hole instead of written.
const HOLE_BLOCK: usize = 4096;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Writes `data` at the file's position, seeking over every whole `HOLE_BLOCK` of zeros
/// instead of writing it, so a sparse file restores sparse (a 10 GiB empty file restored as
/// 11 GB on disk). The caller sets the final length (a hole at the end is not written).
/// Chunks are read at block-aligned offsets (the tar reader hands whole buffers), so blocks
/// here line up with the file system's.
fn write_sparse(f: &mut File, data: &[u8]) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut start = 0;
    while start < data.len() {
        let end = (start + HOLE_BLOCK).min(data.len());
        let block = &data[start..end];
        // A slice comparison is one memcmp, fast even in a debug build.
        if block == &ZEROS[..] {
            f.seek(SeekFrom::Current(HOLE_BLOCK as i64))?;
        } else {
            f.write_all(block)?;
        }
        start = end;
    }
    Ok(())
}

/// The destination of an extraction, reached fd by fd from its root: never through a path
/// string (so paths longer than `PATH_MAX` extract) and never through a symlink.
struct Dest {
    root: PathBuf,
    fd: OwnedFd,
    /// The last parent directory used, kept for the next entry in it.
    cached: Option<(Vec<u8>, OwnedFd)>,
}

impl Dest {
    fn open(root: &Path) -> Result<Dest> {
        let c = CString::new(root.as_os_str().as_bytes())
            .map_err(|e| Error::io("cannot open", root, io::Error::other(e)))?;
        let fd = safe_open::open_dir_at(libc::AT_FDCWD, &c)
            .map_err(|e| Error::io("cannot open", root, e))?;
        Ok(Dest {
            root: root.to_path_buf(),
            fd,
            cached: None,
        })
    }

    /// `rel` below the destination, for messages.
    fn path(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    /// The directory `rel`, made (0700) with any missing parent (an archive may omit them;
    /// they are ours, in a fresh destination), kept for the next call.
    fn dir(&mut self, rel: &[u8]) -> io::Result<BorrowedFd<'_>> {
        if self.cached.as_ref().is_none_or(|(r, _)| r != rel) {
            self.cached = None;
            let fd = self.dir_uncached(rel)?;
            self.cached = Some((rel.to_vec(), fd));
        }
        Ok(self.cached.as_ref().expect("just set").1.as_fd())
    }

    /// `dir`, without the cache.
    fn dir_uncached(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let mut cur = self.fd.try_clone()?;
        for part in rel.split(|b| *b == b'/').filter(|p| !p.is_empty()) {
            let c = CString::new(part)?;
            cur = match safe_open::open_dir_at(cur.as_raw_fd(), &c) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // SAFETY: valid fd and C string.
                    let rc = unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o700) };
                    if rc != 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e);
                        }
                    }
                    safe_open::open_dir_at(cur.as_raw_fd(), &c)?
                }
                other => other?,
            };
        }
        Ok(cur)
    }
}

/// A symlink's or hardlink's target: the pax `linkpath` record if the archive had one, else the
/// header's own link name.
fn link_target<R: Read>(linkpath: Option<&[u8]>, entry: &tar::Entry<'_, R>) -> Vec<u8> {
    match linkpath {
        Some(t) => t.to_vec(),
        None => entry
            .header()
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default(),
    }
}

/// A path's parent (possibly empty) and last component.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

/// Creates a new file (0600, never through a symlink, never over an existing entry).
fn create_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    // SAFETY: a valid fd and C string; the fd returned is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the extended attributes an archive carried for `path` (after its owner: chown clears
/// `security.capability`). Without root, only those a user may set are tried.
fn set_xattrs(
    fd: std::os::fd::BorrowedFd<'_>,
    path: &Path,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    as_root: bool,
) -> Result<()> {
    for (name, value) in xattrs {
        if !super::xattr::settable(name, as_root) {
            continue;
        }
        match super::xattr::set(fd, name, value) {
            Ok(()) => {}
            // A file system without extended attributes (documented in xattr.rs).
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
            Err(e) => {
                return Err(Error::io(
                    &format!(
                        "cannot set extended attribute {} on",
                        String::from_utf8_lossy(name)
                    ),
                    path,
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// Sets owner (first: chown clears setuid bits), mode and mtime of a written file.
fn finish_file(
    f: &File,
    path: &Path,
    mode: u32,
    mtime: u64,
    owner: Option<(u64, u64)>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(f, Some(uid as u32), Some(gid as u32))
            .map_err(|e| Error::io("cannot set owner of", path, e))?;
    }
    // After the owner (chown clears `security.capability`), before the mode: a `user.*`
    // attribute needs write permission, which a read-only mode would take away.
    set_xattrs(f.as_fd(), path, xattrs, owner.is_some())?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Error::io("cannot set mode of", path, e))?;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    f.set_times(fs::FileTimes::new().set_modified(when).set_accessed(when))
        .map_err(|e| Error::io("cannot set mtime of", path, e))?;
    Ok(())
}

/// Sets the mtime (and atime) of `name` in `dir` without following a symlink.
fn set_mtime_at(dir: BorrowedFd<'_>, name: &CStr, mtime: u64) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid fd, C string and two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_ok(link: &str, target: &str) -> bool {
        let parts = components(link.as_bytes()).unwrap();
        symlink_target_is_safe(&parts, target.as_bytes())
    }

    #[test]
    fn symlink_rule() {
        assert!(link_ok("a/l", "../b"));
        assert!(link_ok("a/l", "c/d"));
        assert!(link_ok("l", "."));
        assert!(!link_ok("l", ".."));
        assert!(!link_ok("a/l", "../../x"));
        assert!(!link_ok("l", "/etc/passwd"));
        assert!(
            !link_ok("l", "a/.."),
            "`..` after a name could climb through a symlink"
        );
        assert!(!link_ok("l", ""));
    }

    #[test]
    fn paths_with_dotdot_or_root_are_refused() {
        assert!(components(b"/etc").is_err());
        assert!(components(b"a/../b").is_err());
        assert_eq!(components(b"./a//b/").unwrap(), vec![&b"a"[..], &b"b"[..]]);
    }
}
