//! The checks that read a set's components through: decompress and read a tree's archive
//! (or extract it), recompute its content digest and compare it with the manifest; recompute
//! the database file's content digest. They join the repository (streams of a set's files),
//! the layers (decompression) and the volume code (the safe tar reader), so they live here.
//!
//! The database file's `content_digest = "sha256:" + hex(sha256(L))`, where L joins, for every
//! tar member sorted by name as bytes, the line `HASH NAME\n` (HASH: hex sha256 of the
//! member's content): two backups of an unchanged database compare equal whatever their gzip
//! and tar timestamps.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::hashing::{hex, sha256_reader};
use crate::layers::{self, Opening};
use crate::repository::check::Problem;
use crate::repository::manifest::{Component, Tree};
use crate::volume::extract::{self, Contents, Limits};

/// Decompresses and reads a tree component's archive (or extracts it into `dest`), then
/// compares what it holds with the manifest. `Ok` holds the problems found; `Err` an archive
/// that could not be read to the end (damaged or unsafe). Called off (with an error) as soon
/// as `stop` is set.
pub fn tree(
    stored: io::Result<Box<dyn Read + Send>>,
    opening: Opening<'_>,
    component: &Component,
    tree: &Tree,
    dest: Option<&Path>,
    stop: &AtomicBool,
) -> Result<(Contents, Vec<Problem>)> {
    let stored = stored.map_err(|e| {
        Error::new(
            ErrorKind::RepositoryError,
            format!("cannot open {}: {e}", component.file),
        )
    })?;
    let reader = layers::reading(stored, component.compression, opening).map_err(|e| {
        let kind = match e.kind() {
            io::ErrorKind::PermissionDenied => ErrorKind::EncryptionError,
            io::ErrorKind::InvalidData => ErrorKind::IntegrityError,
            _ => ErrorKind::RepositoryError,
        };
        Error::new(kind, format!("cannot open {}: {e}", component.file))
    })?;
    let limits = Limits {
        max_bytes: tree.expanded_bytes,
        max_entries: tree.files,
    };
    let contents = extract::read_archive(Until { inner: reader, stop }, dest, limits)?;
    let mut problems = Vec::new();
    let name = &component.name;
    if contents.files != tree.files {
        problems.push(Problem::new(
            name,
            format!(
                "the archive holds {} entries, the manifest says {}",
                contents.files, tree.files
            ),
        ));
    }
    if contents.expanded_bytes != tree.expanded_bytes {
        problems.push(Problem::new(
            name,
            format!(
                "the archive holds {} bytes of files, the manifest says {}",
                contents.expanded_bytes, tree.expanded_bytes
            ),
        ));
    }
    if contents.content_digest != component.content_digest {
        problems.push(Problem::new(
            name,
            format!(
                "the archive's content digest is {}, the manifest says {}",
                contents.content_digest, component.content_digest
            ),
        ));
    }
    Ok((contents, problems))
}

/// A reader that fails once `stop` is set.
struct Until<'a, R> {
    inner: R,
    stop: &'a AtomicBool,
}

impl<R: Read> Read for Until<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("called off"));
        }
        self.inner.read(buf)
    }
}

/// Decompresses and reads the database file and compares its content digest with the manifest.
pub fn db(
    stored: io::Result<Box<dyn Read + Send>>,
    opening: Opening<'_>,
    component: &Component,
) -> Vec<Problem> {
    match stored
        .and_then(|s| layers::opened(s, opening, false))
        .and_then(db_content_digest)
    {
        Err(e) => vec![Problem::new(
            &component.name,
            format!("{} cannot be read as a .tgz: {e}", component.file),
        )],
        Ok(found) if found != component.content_digest => vec![Problem::new(
            &component.name,
            format!(
                "{}'s content digest is {found}, the manifest says {}",
                component.file, component.content_digest
            ),
        )],
        Ok(_) => Vec::new(),
    }
}

/// The content digest of a database backup file (a `.tgz`), read from `stored`.
pub fn db_content_digest(stored: impl Read) -> io::Result<String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(stored)));
    let mut members: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
    // Raw, with pax headers and GNU long names read here under a cap (SPEC §6).
    let mut extensions = extract::Extensions::default();
    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        let name = match extensions.take(&mut entry) {
            Ok(Some(extended)) => extended
                .path
                .unwrap_or_else(|| entry.header().path_bytes().into_owned()),
            Ok(None) => continue,
            Err(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a member is refused: {why}"),
                ));
            }
        };
        let (hash, _) = sha256_reader(&mut entry)?;
        members.push((name, hash));
    }
    members.sort();
    let mut hasher = Sha256::new();
    for (name, hash) in &members {
        hasher.update(hex(hash).as_bytes());
        hasher.update(b" ");
        hasher.update(name);
        hasher.update(b"\n");
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}
