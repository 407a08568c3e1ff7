//! The database backup file (`db.tgz`) as Connectware serves it: kept byte for byte, and
//! identified by a content digest that ignores gzip and tar timestamps, so that two backups of
//! an unchanged database compare equal.
//!
//! `content_digest = "sha256:" + hex(sha256(L))`, where L joins, for every tar member sorted by
//! name as bytes, the line `HASH NAME\n` (HASH: hex sha256 of the member's content).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::volume::digest::{hex, sha256_reader};

/// The content digest of a `.tgz` file.
pub fn content_digest(path: &Path) -> io::Result<String> {
    let file = BufReader::new(crate::safe_open::open_repo_file(path)?);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut members: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
    // Raw, with pax headers and GNU long names read here under a cap (SPEC §6).
    let mut extensions = crate::volume::extract::Extensions::default();
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

/// Whether a file starts like gzip.
pub fn looks_like_gzip(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = File::open(path)?;
    let n = file.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// The Connectware version in a database backup id `<version>_<ISO time>`.
pub fn version_of(backup_id: &str) -> Option<String> {
    let (version, time) = backup_id.split_once('_')?;
    (!version.is_empty() && !time.is_empty()).then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_id() {
        assert_eq!(
            version_of("1.0.73_2022-02-16T15:37:19.242Z").as_deref(),
            Some("1.0.73")
        );
        assert_eq!(version_of("nounderscore"), None);
    }
}
