//! The content digest of SPEC §5: one value for a tree's content, the same whether computed
//! over a live directory, an archive or an extracted tree.
//!
//! `"sha256:" + hex(sha256(L))`, where L joins, for every entry below the root sorted by
//! relative path as bytes, the line `TYPE MODE SIZE HASH PATH\n`.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::tree::{EntryRef, Kind, Listing, Opener};
use crate::hashing::{hex, hex_into, sha256_reader};
use crate::safe_open::Refused;

/// One line of the digest, as stored in [`Lines`]: fixed size, its path in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    off: u64,
    len: u32,
    /// Permission bits (`777` for a symlink).
    mode: u32,
    /// Bytes (0 for a directory, target length for a symlink).
    size: u64,
    /// sha256 of the content or of the symlink target (valid when `has_hash`).
    hash: [u8; 32],
    /// `f`, `d` or `l`.
    kind: u8,
    has_hash: bool,
}

/// One line of the digest, borrowed from [`Lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef<'a> {
    /// Relative path, `/`-separated.
    pub path: &'a [u8],
    /// `f`, `d` or `l`.
    pub kind: u8,
    /// Permission bits (`777` for a symlink).
    pub mode: u32,
    /// Bytes (0 for a directory, target length for a symlink).
    pub size: u64,
    /// sha256 of the content or of the symlink target; none for a directory, and none for a
    /// live file that vanished or was swapped before it could be read.
    pub hash: Option<&'a [u8; 32]>,
}

impl LineRef<'_> {
    fn write_line(&self, out: &mut Vec<u8>) {
        write_line(out, self.kind, self.mode, self.size, self.hash, self.path);
    }
}

fn write_line(
    out: &mut Vec<u8>,
    kind: u8,
    mode: u32,
    size: u64,
    hash: Option<&[u8; 32]>,
    path: &[u8],
) {
    use std::io::Write;
    let _ = write!(out, "{} {:o} {} ", kind as char, mode, size);
    match hash {
        Some(h) => hex_into(h, out),
        None => out.push(b'-'),
    }
    out.push(b' ');
    out.extend_from_slice(path);
    out.push(b'\n');
}

/// A tree's digest lines, compact: every path in one byte arena, every line a fixed-size
/// record (about 64 bytes plus the path, where a line of its own cost ~150), so a volume of a
/// million entries fits in the memory bound of SPEC §6.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    arena: Vec<u8>,
    items: Vec<Line>,
}

impl Lines {
    /// Room for `n` lines.
    pub fn with_capacity(n: usize) -> Lines {
        Lines {
            arena: Vec::new(),
            items: Vec::with_capacity(n),
        }
    }

    /// Adds a line.
    pub fn push(&mut self, path: &[u8], kind: u8, mode: u32, size: u64, hash: Option<[u8; 32]>) {
        let off = self.arena.len() as u64;
        self.arena.extend_from_slice(path);
        self.items.push(Line {
            off,
            len: path.len() as u32,
            mode,
            size,
            hash: hash.unwrap_or([0; 32]),
            kind,
            has_hash: hash.is_some(),
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The `i`-th line.
    pub fn get(&self, i: usize) -> LineRef<'_> {
        let l = &self.items[i];
        LineRef {
            path: &self.arena[l.off as usize..l.off as usize + l.len as usize],
            kind: l.kind,
            mode: l.mode,
            size: l.size,
            hash: l.has_hash.then_some(&l.hash),
        }
    }

    /// Every line, in the current order.
    pub fn iter(&self) -> impl Iterator<Item = LineRef<'_>> + '_ {
        (0..self.items.len()).map(|i| self.get(i))
    }

    /// Sorts the lines by path bytes.
    pub fn sort(&mut self) {
        let arena = &self.arena;
        let path = |l: &Line| &arena[l.off as usize..l.off as usize + l.len as usize];
        self.items.sort_unstable_by(|a, b| path(a).cmp(path(b)));
    }

    /// Sorts the lines and returns their content digest.
    pub fn digest(&mut self) -> String {
        self.sort();
        let mut hasher = DigestHasher::default();
        for line in self.iter() {
            hasher.line(line);
        }
        hasher.finish()
    }
}

/// The content digest computed line by line, for lines that come sorted by path already.
#[derive(Default)]
pub struct DigestHasher {
    hasher: Sha256,
    buf: Vec<u8>,
}

impl DigestHasher {
    /// Adds one line (the caller keeps the order: sorted by path bytes).
    pub fn line(&mut self, line: LineRef<'_>) {
        self.buf.clear();
        line.write_line(&mut self.buf);
        self.hasher.update(&self.buf);
    }

    /// `sha256:<hex>`.
    pub fn finish(self) -> String {
        format!("sha256:{}", hex(&self.hasher.finalize()))
    }
}

/// The kind and hash of a listed entry's digest line, given its content hash (for a file).
pub fn entry_kind_hash(
    entry: &EntryRef<'_>,
    content_hash: Option<[u8; 32]>,
) -> (u8, Option<[u8; 32]>) {
    match entry.kind {
        Kind::Dir => (b'd', None),
        Kind::Symlink => (b'l', entry.target.map(|t| Sha256::digest(t).into())),
        _ => (b'f', content_hash),
    }
}

/// Reads every file of a listed live tree and hands each digest line, in the listing's order
/// (sorted by path), to `each` (sockets, FIFOs and devices are left out, as the archive
/// leaves them out).
///
/// A listed file that vanished or was swapped for something else (a FIFO, a symlink, another
/// file) before it was opened is not read: its line gets no hash (`-`), which no archive's
/// line has, so the tree compares as changed, as it has.
pub fn live_lines(
    root: &Path,
    listing: &Listing,
    mut each: impl FnMut(LineRef<'_>),
) -> io::Result<()> {
    let total = crate::progress::total(listing.iter().map(|e| e.size));
    let mut progress = crate::progress::Progress::with_total("hashing", total);
    let mut opener = Opener::new(root)?;
    for entry in listing.iter() {
        progress.file(entry.size);
        let content = match entry.kind {
            Kind::Other => continue,
            Kind::File => match opener.open(&entry) {
                Ok((file, _)) => Some(sha256_reader(file)?.0),
                Err(Refused::Missing(_) | Refused::NotRegular(_)) => None,
                Err(Refused::Io(e)) => {
                    let path = entry.full_path(root);
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                }
            },
            _ => None,
        };
        let (kind, hash) = entry_kind_hash(&entry, content);
        each(LineRef {
            path: entry.path,
            kind,
            mode: entry.mode,
            size: entry.size,
            hash: hash.as_ref(),
        });
    }
    Ok(())
}

/// How many examples of each kind of change [`changes`] keeps.
pub const CHANGE_EXAMPLES: usize = 10;

/// Paths of one kind of change: how many, and the first few by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Paths {
    fn add(&mut self, path: &[u8]) {
        self.count += 1;
        if self.examples.len() < CHANGE_EXAMPLES {
            self.examples
                .push(String::from_utf8_lossy(path).into_owned());
        }
    }

    /// How many paths.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// How one tree differs from another, by path: counts, and a few examples (a full list of
/// names for a million changed entries would be a second copy of the tree in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// In `new` only.
    pub added: Paths,
    /// In `old` only.
    pub removed: Paths,
    /// In both, with another type, mode, size or content.
    pub changed: Paths,
}

/// Compares two sets of digest lines, each sorted by path.
pub fn changes(old: &Lines, new: &Lines) -> Changes {
    let mut out = Changes::default();
    let (mut i, mut j) = (0, 0);
    loop {
        let a = (i < old.len()).then(|| old.get(i));
        let b = (j < new.len()).then(|| new.get(j));
        match (a, b) {
            (None, None) => return out,
            (Some(a), Some(b)) if a.path == b.path => {
                if a != b {
                    out.changed.add(b.path);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.path < b.path => {
                out.removed.add(a.path);
                i += 1;
            }
            (Some(a), None) => {
                out.removed.add(a.path);
                i += 1;
            }
            (_, Some(b)) => {
                out.added.add(b.path);
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
        write_line(&mut out, b'd', 0o755, 0, None, b"a/b");
        assert_eq!(out, b"d 755 0 - a/b\n");
        out.clear();
        write_line(&mut out, b'f', 0o644, 1, Some(&[0xab; 32]), b"x");
        assert_eq!(out, format!("f 644 1 {} x\n", "ab".repeat(32)).as_bytes());
    }

    #[test]
    fn digest_is_order_independent_and_sorts_by_bytes() {
        let lines = |paths: &[&str]| {
            let mut l = Lines::default();
            for p in paths {
                l.push(p.as_bytes(), b'd', 0o700, 0, None);
            }
            l
        };
        let mut a = lines(&["a.txt", "a/b", "a"]);
        let mut b = lines(&["a/b", "a", "a.txt"]);
        assert_eq!(a.digest(), b.digest());
        // "a.txt" sorts before "a/b" because '.' (0x2e) < '/' (0x2f).
        assert_eq!(
            a.iter().map(|x| x.path.to_vec()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"a.txt".to_vec(), b"a/b".to_vec()]
        );
    }

    #[test]
    fn changes_count_all_and_keep_a_few_examples() {
        let mut old = Lines::default();
        let mut new = Lines::default();
        for i in 0..100 {
            new.push(format!("n{i:03}").as_bytes(), b'd', 0o700, 0, None);
        }
        old.push(b"gone", b'd', 0o700, 0, None);
        old.push(b"same", b'f', 0o600, 1, Some([1; 32]));
        new.push(b"same", b'f', 0o600, 1, Some([2; 32]));
        old.sort();
        new.sort();
        let c = changes(&old, &new);
        assert_eq!(
            (c.added.len(), c.removed.len(), c.changed.len()),
            (100, 1, 1)
        );
        assert_eq!(c.added.examples.len(), CHANGE_EXAMPLES);
        assert_eq!(c.changed.examples, vec!["same".to_string()]);
    }

    #[test]
    fn empty_tree_digest_is_sha256_of_nothing() {
        assert_eq!(
            Lines::default().digest(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
