//! Backup sets: what a repository holds, read through one narrow storage interface.
//!
//! ```text
//! ops ──▶ Repository (sets, manifests, ids) ──▶ dyn Backend (bytes: list, read, write, lock)
//!                                                  ├─ Local: a directory (local.rs)
//!                                                  └─ S3: a bucket (s3.rs)
//! ```
//!
//! Nothing above this module sees a set's path: sets are named by id, their files by their
//! name inside the set, and bytes come and go as streams.

pub mod backend;
pub mod check;
pub mod local;
pub mod manifest;
pub mod s3;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::task::{Operation, RepositoryConfig};
use backend::{Backend, Held, NewSet};
use manifest::Manifest;

/// Prefix of the safety sets a restore writes.
pub const SAFETY_PREFIX: &str = "pre-restore-";

/// A repository: sets over a storage backend.
pub struct Repository {
    backend: Box<dyn Backend>,
}

/// A complete backup set.
#[derive(Debug, Clone)]
pub struct Set {
    pub id: String,
    /// Where it is, for results and messages (a directory, or a URL).
    pub location: String,
    pub manifest: Manifest,
}

impl Set {
    /// Whether a restore wrote this set as its safety backup.
    pub fn is_safety(&self) -> bool {
        self.id.starts_with(SAFETY_PREFIX)
    }

    /// Whether `import` made this set from files made by hand (SPEC §12): a volume taken from
    /// an imported archive, or a database file that no server backup named.
    pub fn is_imported(&self) -> bool {
        self.manifest.components.iter().any(|c| {
            matches!(c.tree().map(|t| &t.source), Some(manifest::Source::Import(_)))
                || c.db().is_some_and(|d| d.backup_id.is_none())
        })
    }
}

/// A set in the repository that is not usable, and why.
#[derive(Debug, Clone)]
pub struct Broken {
    pub id: String,
    pub problem: String,
    /// No manifest at all: a set that never completed, as opposed to a damaged one.
    pub incomplete: bool,
}

impl Repository {
    /// An existing repository: a directory, or a bucket (whose answer is checked here).
    pub fn open(config: &RepositoryConfig) -> Result<Repository> {
        match config {
            RepositoryConfig::Dir(root) => Ok(Repository::over(local::Local::open(root)?)),
            RepositoryConfig::S3(s3) => Ok(Repository::over(s3::S3::open(s3)?)),
        }
    }

    /// The repository, created if missing: a directory with mode 0700 (a bucket is never
    /// created: it must exist).
    pub fn create(config: &RepositoryConfig) -> Result<Repository> {
        match config {
            RepositoryConfig::Dir(root) => Ok(Repository::over(local::Local::create(root)?)),
            RepositoryConfig::S3(s3) => Ok(Repository::over(s3::S3::open(s3)?)),
        }
    }

    /// Whether the repository exists (for dry runs, which must not create it): a directory
    /// that is there; a bucket always (nothing is created in it before the first set).
    pub fn exists(config: &RepositoryConfig) -> bool {
        match config {
            RepositoryConfig::Dir(root) => root.is_dir(),
            RepositoryConfig::S3(_) => true,
        }
    }

    /// An existing local repository directory.
    pub fn open_dir(root: &Path) -> Result<Repository> {
        Ok(Repository::over(local::Local::open(root)?))
    }

    /// A repository over any backend.
    pub fn over(backend: impl Backend + 'static) -> Repository {
        Repository {
            backend: Box::new(backend),
        }
    }

    /// Where it is, for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Takes the repository lock, waiting up to `wait`.
    pub fn lock(&self, operation: Operation, wait: Duration) -> Result<Held> {
        self.backend.lock(operation, wait)
    }

    /// Every set of the repository: complete sets newest first, and the rest.
    pub fn scan(&self) -> Result<(Vec<Set>, Vec<Broken>)> {
        let mut sets = Vec::new();
        let mut broken = Vec::new();
        for id in self.backend.list()? {
            match self.manifest(&id) {
                Ok(None) => broken.push(Broken {
                    id,
                    problem: "no manifest.json: an incomplete set, never used".into(),
                    incomplete: true,
                }),
                Ok(Some(m)) if m.id == id => sets.push(Set {
                    location: self.backend.set_location(&id),
                    id,
                    manifest: m,
                }),
                Ok(Some(m)) => broken.push(Broken {
                    id,
                    problem: format!("its manifest names another set, {}", m.id),
                    incomplete: false,
                }),
                Err(e) => broken.push(Broken {
                    id,
                    problem: e.message,
                    incomplete: false,
                }),
            }
        }
        sets.sort_by(|a, b| (&b.manifest.created_at, &b.id).cmp(&(&a.manifest.created_at, &a.id)));
        Ok((sets, broken))
    }

    /// Complete sets, newest first.
    pub fn sets(&self) -> Result<Vec<Set>> {
        Ok(self.scan()?.0)
    }

    /// A set's manifest; None when it has none (an incomplete set).
    fn manifest(&self, id: &str) -> Result<Option<Manifest>> {
        let location = format!("{}/{}", self.backend.set_location(id), manifest::FILE);
        let reader = match self.backend.read(id, manifest::FILE) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(refused_manifest(&location, e)),
        };
        // Not reading more than a manifest can be: a set's files are input from outside.
        let cap = crate::safe_open::MAX_MANIFEST;
        let mut bytes = Vec::new();
        reader
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| refused_manifest(&location, e))?;
        if bytes.len() as u64 > cap {
            return Err(Error::new(
                ErrorKind::IntegrityError,
                format!(
                    "{location} holds more than the {cap} bytes a manifest may hold: the set is broken; delete it or restore another set"
                ),
            ));
        }
        Manifest::from_slice(&bytes)
            .map(Some)
            .map_err(|message| Error::new(ErrorKind::IntegrityError, format!("{location}: {message}")))
    }

    /// Streams a file of a set.
    pub fn read(&self, set: &Set, file: &str) -> io::Result<Box<dyn Read + Send>> {
        self.backend.read(&set.id, file)
    }

    /// A reader factory for a set's files, as the checks take it.
    pub fn opener<'a>(&'a self, set: &'a Set) -> impl Fn(&str) -> io::Result<Box<dyn Read + Send>> + Sync + 'a {
        move |file| self.backend.read(&set.id, file)
    }

    /// Where a file of a set is, for messages.
    pub fn file_location(&self, set: &Set, file: &str) -> String {
        format!("{}/{file}", set.location)
    }

    /// Starts writing a new set.
    pub fn create_set(&self) -> Result<Box<dyn NewSet>> {
        self.backend.create()
    }

    /// Removes what an interrupted task left behind. Call only with the lock held.
    pub fn clean_staging(&self) -> Result<()> {
        self.backend.clean()
    }

    /// A fresh local scratch directory (see [`Backend::scratch`]).
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        self.backend.scratch(name)
    }

    /// Deletes a set.
    pub fn delete(&self, set: &Set) -> Result<()> {
        self.backend.delete(&set.id)
    }

    /// `base`, or `base-2`, `base-3`… if a set of that id exists (complete or not).
    pub fn unique_id(&self, base: &str) -> Result<String> {
        let mut id = base.to_string();
        let mut n = 2;
        while self.backend.exists(&id)? {
            id = format!("{base}-{n}");
            n += 1;
        }
        Ok(id)
    }
}

/// A manifest that cannot be read: refused (a FIFO, a symlink, too large) is damage.
fn refused_manifest(location: &str, e: io::Error) -> Error {
    if matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    ) || e.raw_os_error() == Some(libc::ELOOP)
    {
        Error::new(
            ErrorKind::IntegrityError,
            format!("{e}: the set is broken; delete it or restore another set"),
        )
    } else {
        Error::new(
            ErrorKind::RepositoryError,
            format!("cannot read {location}: {e}"),
        )
    }
}
