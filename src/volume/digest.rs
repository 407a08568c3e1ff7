//! The content digest of SPEC §5: one value for a tree's content, the same whether computed
//! over a live directory, an archive or an extracted tree.
//!
//! `"sha256:" + hex(sha256(L))`, where L joins, for every entry below the root sorted by
//! relative path as bytes, the line `TYPE MODE SIZE HASH PATH\n`.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::tree::{Entry, Kind, Opener};
use crate::safe_open::Refused;

/// One line of the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    /// Relative path, `/`-separated.
    pub path: Vec<u8>,
    /// `f`, `d` or `l`.
    pub kind: u8,
    /// Permission bits (`777` for a symlink).
    pub mode: u32,
    /// Bytes (0 for a directory, target length for a symlink).
    pub size: u64,
    /// sha256 of the content or of the symlink target; none for a directory.
    pub hash: Option<[u8; 32]>,
}

impl DigestEntry {
    fn write_line(&self, out: &mut Vec<u8>) {
        let hash = self.hash.map_or_else(|| "-".to_string(), |h| hex(&h));
        out.extend_from_slice(
            format!(
                "{} {:o} {} {} ",
                self.kind as char, self.mode, self.size, hash
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.path);
        out.push(b'\n');
    }
}

/// The digest of a set of entries (sorted here, so callers may pass them in any order).
pub fn content_digest(entries: &mut [DigestEntry]) -> String {
    entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    let mut line = Vec::with_capacity(256);
    for entry in entries.iter() {
        line.clear();
        entry.write_line(&mut line);
        hasher.update(&line);
    }
    format!("sha256:{}", hex(&hasher.finalize()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// sha256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().into(), total))
}

/// The digest line of a listed entry whose content hash is known (or not needed).
pub fn entry_line(entry: &Entry, content_hash: Option<[u8; 32]>) -> DigestEntry {
    let (kind, hash) = match entry.kind {
        Kind::Dir => (b'd', None),
        Kind::Symlink => (
            b'l',
            entry.target.as_deref().map(|t| Sha256::digest(t).into()),
        ),
        _ => (b'f', content_hash),
    };
    DigestEntry {
        path: entry.path.clone(),
        kind,
        mode: entry.mode,
        size: entry.size,
        hash,
    }
}

/// Hashes every file of a listed live tree and returns its digest lines (sockets, FIFOs and
/// devices are left out, as the archive leaves them out).
///
/// A listed file that vanished or was swapped for something else (a FIFO, a symlink, another
/// file) before it was opened is not read: its line gets no hash (`-`), which no archive's
/// line has, so the tree compares as changed, as it has.
pub fn live_entries(root: &Path, entries: &[Entry]) -> io::Result<Vec<DigestEntry>> {
    let mut lines = Vec::with_capacity(entries.len());
    let mut progress = crate::progress::Progress::new("hashing");
    let mut opener = Opener::new(root)?;
    for entry in entries {
        progress.file(entry.size);
        let hash = match entry.kind {
            Kind::Other => continue,
            Kind::File => match opener.open(entry) {
                Ok((file, _)) => Some(sha256_reader(file)?.0),
                Err(Refused::Missing(_) | Refused::NotRegular(_)) => None,
                Err(Refused::Io(e)) => {
                    let path = entry.full_path(root);
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                }
            },
            _ => None,
        };
        lines.push(entry_line(entry, hash));
    }
    Ok(lines)
}

/// How one tree differs from another, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// In `new` only.
    pub added: Vec<String>,
    /// In `old` only.
    pub removed: Vec<String>,
    /// In both, with another type, mode, size or content.
    pub changed: Vec<String>,
}

/// Compares two sets of digest lines, each sorted by path.
pub fn changes(old: &[DigestEntry], new: &[DigestEntry]) -> Changes {
    let name = |e: &DigestEntry| String::from_utf8_lossy(&e.path).into_owned();
    let mut out = Changes::default();
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => return out,
            (Some(a), Some(b)) if a.path == b.path => {
                if a != b {
                    out.changed.push(name(b));
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.path < b.path => {
                out.removed.push(name(a));
                i += 1;
            }
            (Some(a), None) => {
                out.removed.push(name(a));
                i += 1;
            }
            (_, Some(b)) => {
                out.added.push(name(b));
                j += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_matches_spec() {
        let mut out = Vec::new();
        DigestEntry {
            path: b"a/b".to_vec(),
            kind: b'd',
            mode: 0o755,
            size: 0,
            hash: None,
        }
        .write_line(&mut out);
        assert_eq!(out, b"d 755 0 - a/b\n");
    }

    #[test]
    fn digest_is_order_independent_and_sorts_by_bytes() {
        let e = |p: &str| DigestEntry {
            path: p.into(),
            kind: b'd',
            mode: 0o700,
            size: 0,
            hash: None,
        };
        let mut a = vec![e("a.txt"), e("a/b"), e("a")];
        let mut b = vec![e("a/b"), e("a"), e("a.txt")];
        assert_eq!(content_digest(&mut a), content_digest(&mut b));
        // "a.txt" sorts before "a/b" because '.' (0x2e) < '/' (0x2f).
        assert_eq!(
            a.iter().map(|x| x.path.clone()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"a.txt".to_vec(), b"a/b".to_vec()]
        );
    }

    #[test]
    fn empty_tree_digest_is_sha256_of_nothing() {
        assert_eq!(
            content_digest(&mut []),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
