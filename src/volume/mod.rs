//! A volume directory: list it, digest it, archive it and read or extract archives of it
//! safely. It knows nothing of Docker: the operations find a Docker volume's directory through
//! `crate::docker` and hand the path in.

pub mod archive;
pub mod digest;
pub mod extract;
pub mod swap;
pub mod tree;
pub mod xattr;

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
pub use tree::Root;

/// The tool's work directory inside a volume (staged tree, old entries, journal, lock
/// holder), so that every rename stays on the volume's own file system. Every listing,
/// digest, archive and swap leaves this root entry out.
pub const WORK_DIR: &str = ".cwbackup-work";

/// The live volume's content: its digest lines (sorted by path) and its content digest, from
/// one read of every file.
pub fn live<'a>(root: impl Into<Root<'a>>) -> Result<(digest::Lines, String)> {
    let root = root.into();
    hash_listed(root.dir, &scan(root)?)
}

/// The live volume's content digest alone, from one read of every file, keeping no line.
pub fn live_digest<'a>(root: impl Into<Root<'a>>) -> Result<String> {
    let root = root.into();
    let dir = root.dir;
    let listing = scan(root)?;
    let mut hasher = digest::DigestHasher::default();
    digest::live_lines(dir, &listing, |line| hasher.line(line))
        .map_err(|e| Error::io("cannot read volume", dir, e))?;
    Ok(hasher.finish())
}

/// Like `live`, but `None`, without reading any file, when the listing alone shows that the
/// volume is not the tree of an archive with `files` entries and `bytes` bytes of files
/// (different counts make different digest lines, so a different digest). The lines returned
/// are empty: only the digest is computed, so a restore that needs no diff does not hold a
/// million entries' lines (~77 MB) while it extracts the set beside.
pub fn live_unless_counts_differ<'a>(
    root: impl Into<Root<'a>>,
    files: u64,
    bytes: u64,
) -> Result<Option<(digest::Lines, String)>> {
    let root = root.into();
    let dir = root.dir;
    let listing = scan(root)?;
    let archived = listing.iter().filter(|e| e.kind != tree::Kind::Other);
    let live_files = archived.clone().count() as u64;
    let live_bytes: u64 = archived
        .filter(|e| e.kind == tree::Kind::File)
        .map(|e| e.size)
        .sum();
    if (live_files, live_bytes) != (files, bytes) {
        return Ok(None);
    }
    let mut hasher = digest::DigestHasher::default();
    digest::live_lines(dir, &listing, |line| hasher.line(line))
        .map_err(|e| Error::io("cannot read volume", dir, e))?;
    Ok(Some((digest::Lines::default(), hasher.finish())))
}

/// The fingerprint of a live volume's cheap listing (names, types, sizes, times, inodes; no
/// file read), without the work directory: 32 bytes however large the volume.
pub fn fingerprint<'a>(root: impl Into<Root<'a>>) -> Result<tree::Fingerprint> {
    let root = root.into();
    tree::fingerprint(root).map_err(|e| Error::io("cannot read volume", root.dir, e))
}

/// [`fingerprint`], and the relative paths of the volume's sockets, FIFOs and devices.
pub fn fingerprint_and_specials<'a>(
    root: impl Into<Root<'a>>,
) -> Result<(tree::Fingerprint, Vec<Vec<u8>>)> {
    let root = root.into();
    tree::fingerprint_and_specials(root).map_err(|e| Error::io("cannot read volume", root.dir, e))
}

fn scan(root: Root<'_>) -> Result<tree::Listing> {
    tree::scan(root).map_err(|e| Error::io("cannot read volume", root.dir, e))
}

fn hash_listed(dir: &Path, listing: &tree::Listing) -> Result<(digest::Lines, String)> {
    let mut lines = digest::Lines::with_capacity(listing.len());
    let mut hasher = digest::DigestHasher::default();
    digest::live_lines(dir, listing, |line| {
        hasher.line(line);
        lines.push(
            line.path,
            line.kind,
            line.mode,
            line.size,
            line.hash.copied(),
        );
    })
    .map_err(|e| Error::io("cannot read volume", dir, e))?;
    Ok((lines, hasher.finish()))
}

/// Refuses anything but an existing directory (a symlink to one is refused: we would archive
/// the link's target but restore into the link).
pub fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::new(
            ErrorKind::VolumeNotFound,
            format!(
                "volume {} is not a directory: give the volume's data directory",
                dir.display()
            ),
        )),
        Err(e) => Err(Error::new(
            ErrorKind::VolumeNotFound,
            format!("volume directory {} cannot be read: {e}", dir.display()),
        )),
    }
}
