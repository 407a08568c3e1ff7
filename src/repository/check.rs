//! Checks a backup set against its manifest. verify reports what these find; backup runs them
//! on a new set before publishing it; restore runs them before touching anything.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::manifest::Manifest;
use crate::error::{Error, ErrorKind};
use crate::volume::digest;
use crate::volume::extract::{self, Contents, Limits};

/// One thing wrong with a set.
#[derive(Debug, Clone)]
pub struct Problem {
    /// `manifest`, `volume` or `db`.
    pub component: &'static str,
    pub message: String,
}

impl Problem {
    fn new(component: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            component,
            message: message.into(),
        }
    }
}

/// Re-reads every file of the set and compares its size and sha256 with the manifest.
pub fn checksums(dir: &Path, manifest: &Manifest) -> Vec<Problem> {
    let mut problems = Vec::new();
    let files = [
        manifest
            .volume
            .as_ref()
            .map(|v| ("volume", &v.file, &v.sha256, v.bytes)),
        manifest
            .db
            .as_ref()
            .map(|d| ("db", &d.file, &d.sha256, d.bytes)),
    ];
    for (component, file, sha256, bytes) in files.into_iter().flatten() {
        if file.contains('/') || file.starts_with('.') {
            problems.push(Problem::new(
                component,
                format!("the manifest names an unsafe file name {file:?}"),
            ));
            continue;
        }
        let path = dir.join(file);
        match crate::safe_open::open_repo_file(&path).and_then(digest::sha256_reader) {
            Err(e) => problems.push(Problem::new(
                component,
                format!("cannot read {}: {e}", path.display()),
            )),
            Ok((hash, size)) => {
                if size != bytes {
                    problems.push(Problem::new(
                        component,
                        format!("{file} has {size} bytes, the manifest says {bytes}"),
                    ));
                }
                let hash = digest::hex(&hash);
                if &hash != sha256 {
                    problems.push(Problem::new(
                        component,
                        format!("{file} has sha256 {hash}, the manifest says {sha256}"),
                    ));
                }
            }
        }
    }
    problems
}

/// The limits an archive must respect, from the manifest.
pub fn limits(manifest: &Manifest) -> Option<Limits> {
    manifest.volume.as_ref().map(|v| Limits {
        max_bytes: v.expanded_bytes,
        max_entries: v.files,
    })
}

/// Decompresses and reads the whole volume archive (or extracts it into `dest`), then compares
/// what it holds with the manifest. `Ok` holds the problems found; `Err` an archive that could
/// not be read to the end (damaged or unsafe).
pub fn volume(
    dir: &Path,
    manifest: &Manifest,
    dest: Option<&Path>,
) -> Result<(Contents, Vec<Problem>), Error> {
    volume_until(dir, manifest, dest, &AtomicBool::new(false))
}

/// `volume`, called off (with an error) as soon as `stop` is set.
pub fn volume_until(
    dir: &Path,
    manifest: &Manifest,
    dest: Option<&Path>,
    stop: &AtomicBool,
) -> Result<(Contents, Vec<Problem>), Error> {
    let Some(v) = &manifest.volume else {
        return Err(Error::new(
            ErrorKind::BackupNotFound,
            format!("set {} has no volume half", manifest.id),
        ));
    };
    let path = dir.join(&v.file);
    let reader =
        extract::open(&path, v.compression).map_err(|e| Error::repo("cannot open", &path, e))?;
    let reader = Until {
        inner: reader,
        stop,
    };
    let contents = extract::read_archive(reader, dest, limits(manifest).expect("volume present"))?;
    let mut problems = Vec::new();
    if contents.files != v.files {
        problems.push(Problem::new(
            "volume",
            format!(
                "the archive holds {} entries, the manifest says {}",
                contents.files, v.files
            ),
        ));
    }
    if contents.expanded_bytes != v.expanded_bytes {
        problems.push(Problem::new(
            "volume",
            format!(
                "the archive holds {} bytes of files, the manifest says {}",
                contents.expanded_bytes, v.expanded_bytes
            ),
        ));
    }
    if contents.content_digest != v.content_digest {
        problems.push(Problem::new(
            "volume",
            format!(
                "the archive's content digest is {}, the manifest says {}",
                contents.content_digest, v.content_digest
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
pub fn db(dir: &Path, manifest: &Manifest) -> Vec<Problem> {
    let Some(d) = &manifest.db else {
        return Vec::new();
    };
    match crate::connectware::dbfile::content_digest(&dir.join(&d.file)) {
        Err(e) => vec![Problem::new(
            "db",
            format!("{} cannot be read as a .tgz: {e}", d.file),
        )],
        Ok(found) if found != d.content_digest => vec![Problem::new(
            "db",
            format!(
                "{}'s content digest is {found}, the manifest says {}",
                d.file, d.content_digest
            ),
        )],
        Ok(_) => Vec::new(),
    }
}
