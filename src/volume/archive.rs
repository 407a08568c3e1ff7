//! Writes a listed tree as a standard ustar/pax tar stream, compressed, into one file, reading
//! every file once and hashing it on the way so the content digest costs no second read.
//!
//! Tar framing is written here (header blocks from `tar::Header`, pax records for long names,
//! long link targets and extended attributes) rather than through `tar::Builder`, because a
//! file that grows or shrinks while it is read must still yield exactly the size its header
//! announced: the archive stays well-formed and the change is reported, so the backup retries
//! instead of publishing a torn archive.
//!
//! The pax records stay hand-written because tar 0.4 (0.4.46, checked for issue 13) cannot
//! write them for us without a loss:
//! - `Builder::append_data` and `append_link` put a long path or link target in a GNU
//!   `././@LongLink` entry (`L`, `K`), never in a pax `path` or `linkpath` record, and have no
//!   switch for pax: GNU tar would still read it, but the archive would no longer be the
//!   ustar/pax one README promises (the test below holds us to it).
//! - `Builder::append_pax_extensions` writes the same records as `pax_record_bytes` (the same
//!   length rule; binary values come out byte for byte, and GNU tar `--xattrs` restores them),
//!   but takes each key as `&str`: a `SCHILY.xattr.NAME` whose attribute name is not UTF-8
//!   (Linux allows any byte but NUL) could not be written, so this code would be kept anyway.
//! - `Builder::append` copies the data with `io::copy` through `&mut dyn Write` (8 KiB reads
//!   instead of 256 KiB) and pads by what it got, so a file that shrank while read would leave a
//!   torn archive unless every file were wrapped in an exact-size reader.
//! - `Header::set_path` does the ustar prefix split, but when the rest does not fit it returns
//!   an error with the prefix already written, which would then have to be undone here.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::digest::{self, DigestHasher, LineRef};
use super::extract::symlink_target_is_safe;
use super::tree::{self, EntryRef, Kind, Listing, Opener};
use super::xattr;
use crate::progress::Progress;
use crate::safe_open::Refused;
use std::os::fd::{AsFd, BorrowedFd};

/// Buffer between the tar framing and the compressor, and between compressor and file.
const BUF: usize = 1 << 20;

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Entries archived (the root not counted).
    pub files: u64,
    /// Sum of file sizes.
    pub expanded_bytes: u64,
    /// The content digest of what went into the archive.
    pub content_digest: String,
    /// A file changed size, vanished or turned into something else while it was read.
    pub changed: bool,
    /// Entries left out because a tar archive of a volume cannot carry them (sockets, FIFOs,
    /// devices), as relative paths.
    pub skipped: Vec<String>,
    /// Sparse files (fewer blocks allocated than half their size, 1 MiB or more), as relative
    /// paths with their size: tar carries their holes as zeros, which are read and
    /// compressed in full; extraction writes them back as holes.
    pub sparse: Vec<(String, u64)>,
    /// Symlinks archived whose targets could leave the volume: a restore refuses them.
    pub escaping_links: Vec<String>,
}

/// Archives `entries` (a listing of `root`) as a tar stream into `out` (the layers of a set's
/// file: compression, hashing, the backend), buffered.
pub fn write_archive(root: &Path, entries: &Listing, out: impl Write) -> io::Result<Written> {
    let mut tar = BufWriter::with_capacity(BUF, out);
    let written = write_tar(root, entries, &mut tar)?;
    tar.flush()?;
    Ok(written)
}

/// Writes the tar stream (uncompressed) for `entries` to `out`.
pub fn write_tar(root: &Path, entries: &Listing, out: &mut impl Write) -> io::Result<Written> {
    // The listing is sorted by path, so the digest lines are hashed as they come.
    let mut digest_lines = DigestHasher::default();
    let mut line = |entry: &EntryRef<'_>, content: Option<[u8; 32]>| {
        let (kind, hash) = digest::entry_kind_hash(entry, content);
        digest_lines.line(LineRef {
            path: entry.path,
            kind,
            mode: entry.mode,
            size: entry.size,
            hash: hash.as_ref(),
        });
    };
    let mut written = Written {
        files: 0,
        expanded_bytes: 0,
        content_digest: String::new(),
        changed: false,
        skipped: Vec::new(),
        sparse: Vec::new(),
        escaping_links: Vec::new(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut progress = Progress::with_total("archiving", crate::progress::total(entries.iter().map(|e| e.size)));
    let mut opener = Opener::new(root)?;
    for entry in entries.iter() {
        let entry = &entry;
        progress.file(entry.size);
        let mut header = Header::new_ustar();
        header.set_mode(entry.mode);
        header.set_uid(entry.uid.into());
        header.set_gid(entry.gid.into());
        header.set_mtime(entry.mtime.max(0) as u64);
        header.set_size(0);
        let mut pax = Vec::new();
        match entry.kind {
            Kind::Other => {
                written
                    .skipped
                    .push(String::from_utf8_lossy(entry.path).into_owned());
                continue;
            }
            Kind::Dir => {
                header.set_entry_type(EntryType::Directory);
                let mut name = entry.path.to_vec();
                name.push(b'/');
                set_name(&mut header, &name, &mut pax);
                match opener.open_dir(entry) {
                    Ok(fd) => xattr_records(&mut pax, fd.as_fd(), root, entry)?,
                    Err(e) if tree::is_race(&e) => written.changed = true,
                    Err(e) => return Err(named(e, &entry.full_path(root))),
                }
                emit(out, &mut header, &pax)?;
                line(entry, None);
            }
            Kind::Symlink => {
                header.set_entry_type(EntryType::Symlink);
                set_name(&mut header, entry.path, &mut pax);
                let target = entry.target.unwrap_or_default();
                let parts: Vec<&[u8]> = entry.path.split(|b| *b == b'/').collect();
                if !symlink_target_is_safe(&parts, target) {
                    written.escaping_links.push(format!(
                        "{} -> {}",
                        String::from_utf8_lossy(entry.path),
                        String::from_utf8_lossy(target)
                    ));
                }
                if target.len() <= 100 {
                    header.set_link_name_literal(target)?;
                } else {
                    pax_record(&mut pax, "linkpath", target);
                }
                emit(out, &mut header, &pax)?;
                line(entry, None);
            }
            Kind::File => {
                let path = entry.full_path(root);
                let file = match opener.open(entry) {
                    Ok((f, meta)) => {
                        use std::os::unix::fs::MetadataExt;
                        if meta.size() >= 1 << 20
                            && meta.blocks().saturating_mul(512) < meta.size() / 2
                        {
                            written.sparse.push((
                                String::from_utf8_lossy(entry.path).into_owned(),
                                meta.size(),
                            ));
                        }
                        f
                    }
                    // Vanished, or replaced by a symlink, FIFO, device or another file since
                    // the listing: the volume changed (the backup's consistency retry).
                    Err(Refused::Missing(_) | Refused::NotRegular(_)) => {
                        written.changed = true;
                        continue;
                    }
                    Err(Refused::Io(e)) => {
                        return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                    }
                };
                header.set_entry_type(EntryType::Regular);
                header.set_size(entry.size);
                set_name(&mut header, entry.path, &mut pax);
                xattr_records(&mut pax, file.as_fd(), root, entry)?;
                emit(out, &mut header, &pax)?;
                let (hash, complete) = copy_exact(file, &path, entry.size, out, &mut buf)?;
                written.changed |= !complete;
                pad(out, entry.size)?;
                written.expanded_bytes += entry.size;
                line(entry, Some(hash));
            }
        }
        written.files += 1;
    }
    out.write_all(&[0u8; 1024])?;
    written.content_digest = digest_lines.finish();
    Ok(written)
}

/// Copies exactly `size` bytes of `file` to `out`, hashing them. Returns the hash and whether
/// the file had exactly `size` bytes; a short file is padded with zeros so that the tar stream
/// stays well-formed.
/// Read errors name the source file; write errors (the archive's) pass through unchanged.
fn copy_exact(
    mut file: File,
    path: &Path,
    size: u64,
    out: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<([u8; 32], bool)> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut left = size;
    let mut complete = true;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => {
                complete = false;
                buf[..want].fill(0);
                want
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(named(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    if complete && file.read(&mut buf[..1]).map_err(named)? != 0 {
        complete = false; // it grew
    }
    Ok((hasher.finalize().into(), complete))
}

/// Puts `name` into the ustar name/prefix fields, or into a pax `path` record when it does not
/// fit (then the ustar field holds a truncated stand-in, as GNU tar does).
fn set_name(header: &mut Header, name: &[u8], pax: &mut Vec<u8>) {
    let ustar = header.as_ustar_mut().expect("a ustar header");
    if name.len() <= 100 {
        ustar.name[..name.len()].copy_from_slice(name);
        return;
    }
    // Split at a '/' so that prefix ≤ 155 and name ≤ 100 (ignoring a trailing '/').
    let body = name.strip_suffix(b"/").unwrap_or(name);
    let split = (0..body.len())
        .rev()
        .find(|&i| body[i] == b'/' && i <= 155 && name.len() - i - 1 <= 100);
    match split {
        Some(i) if i > 0 => {
            ustar.prefix[..i].copy_from_slice(&name[..i]);
            ustar.name[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
        }
        _ => {
            ustar.name.copy_from_slice(&name[..100]);
            pax_record(pax, "path", name);
        }
    }
}

/// Appends a `SCHILY.xattr.NAME` pax record for every extended attribute of `fd`, as GNU tar
/// `--xattrs` writes them.
fn xattr_records(
    pax: &mut Vec<u8>,
    fd: BorrowedFd<'_>,
    root: &Path,
    entry: &EntryRef<'_>,
) -> io::Result<()> {
    let attrs = xattr::list(fd).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot read the extended attributes of {}: {e}",
                entry.full_path(root).display()
            ),
        )
    })?;
    for (name, value) in attrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(&name);
        pax_record_bytes(pax, &key, &value);
    }
    Ok(())
}

fn named(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Appends one pax record `LEN key=value\n` (LEN counts the whole record, itself included).
fn pax_record(pax: &mut Vec<u8>, key: &str, value: &[u8]) {
    pax_record_bytes(pax, key.as_bytes(), value)
}

/// `pax_record` with a key of any bytes (an attribute's name).
fn pax_record_bytes(pax: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    pax.extend_from_slice(format!("{len} ").as_bytes());
    pax.extend_from_slice(key);
    pax.push(b'=');
    pax.extend_from_slice(value);
    pax.push(b'\n');
}

/// Writes an optional pax extended header, then the entry's header.
fn emit(out: &mut impl Write, header: &mut Header, pax: &[u8]) -> io::Result<()> {
    if !pax.is_empty() {
        let mut x = Header::new_ustar();
        x.set_entry_type(EntryType::XHeader);
        x.set_mode(0o644);
        x.set_mtime(header.mtime().unwrap_or(0));
        x.set_size(pax.len() as u64);
        let name = b"././@PaxHeader";
        x.as_ustar_mut().expect("ustar").name[..name.len()].copy_from_slice(name);
        x.set_cksum();
        out.write_all(x.as_bytes())?;
        out.write_all(pax)?;
        pad(out, pax.len() as u64)?;
    }
    header.set_cksum();
    out.write_all(header.as_bytes())
}

/// Pads a data section of `len` bytes to the 512-byte block size.
fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let rem = (len % 512) as usize;
    if rem != 0 {
        out.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_and_link_targets_are_pax_records_not_gnu_long_names() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let deep = format!("{}/{}", "v".repeat(200), "w".repeat(120));
        std::fs::create_dir_all(root.join(&deep)).unwrap();
        std::fs::write(root.join(&deep).join("f"), b"x").unwrap();
        let target = "t/".repeat(80);
        symlink(&target, root.join("link")).unwrap();
        let entries = tree::scan(root).unwrap();
        let mut tar = Vec::new();
        write_tar(root, &entries, &mut tar).unwrap();

        let mut raw = tar::Archive::new(&tar[..]);
        let types: Vec<EntryType> = raw
            .entries()
            .unwrap()
            .raw(true)
            .map(|e| e.unwrap().header().entry_type())
            .collect();
        assert!(types.contains(&EntryType::XHeader), "{types:?}");
        assert!(
            !types.iter().any(|t| t.is_gnu_longname() || t.is_gnu_longlink()),
            "{types:?}"
        );
        let mut read = tar::Archive::new(&tar[..]);
        let mut found = Vec::new();
        for entry in read.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path_bytes().into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            found.push((path, link));
        }
        assert!(found.contains(&(format!("{deep}/f").into_bytes(), None)));
        assert!(found.contains(&(b"link".to_vec(), Some(target.into_bytes()))));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut pax = Vec::new();
        pax_record(&mut pax, "path", b"x");
        assert_eq!(pax, b"9 path=x\n");
        let mut pax = Vec::new();
        let long = vec![b'a'; 95];
        pax_record(&mut pax, "path", &long);
        assert_eq!(pax.len(), 105);
        assert!(pax.starts_with(b"105 path="));
    }
}
