//! A repository in a local directory: the first [`Backend`].
//!
//! ```text
//! <repository>/
//!   .lock              the repository lock (see crate::lockfile)
//!   .staging/          sets being built or deleted; emptied by the next task that locks
//!   <backup_id>/       a set: its files (volume.tar.gz, volumes/<name>.tar.gz, db.tgz),
//!                      manifest.json written last
//! ```
//!
//! A set is built under `.staging/`, every file and directory fsynced, the manifest written
//! last, then renamed into place and the repository directory fsynced: a crash leaves either
//! no set or a complete one. A set is deleted by renaming it into `.staging/` first, so it
//! never appears half-deleted. Files are 0600, directories 0700.

use std::fs::{self, DirBuilder, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::backend::{Backend, Held, NewSet};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{fsync_dir, remove_tree, write_synced};
use crate::lockfile;
use crate::task::Operation;

/// Where sets are built and deleted.
pub const STAGING: &str = ".staging";
/// The lock file.
pub const LOCK: &str = ".lock";
/// The one directory level a set may have.
const SUBDIR: &str = "volumes";

/// A repository directory.
#[derive(Debug, Clone)]
pub struct Local {
    root: PathBuf,
}

impl Local {
    /// An existing repository directory.
    pub fn open(root: &Path) -> Result<Local> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => Ok(Local {
                root: root.to_path_buf(),
            }),
            Ok(_) => Err(Error::new(
                ErrorKind::RepositoryError,
                format!("repository {} is not a directory", root.display()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::new(
                ErrorKind::RepositoryError,
                format!(
                    "repository {} does not exist: check the path, or run a backup first",
                    root.display()
                ),
            )),
            Err(e) => Err(Error::repo("cannot read repository", root, e)),
        }
    }

    /// The repository at `root`, created with mode 0700 if missing.
    pub fn create(root: &Path) -> Result<Local> {
        if !root.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| Error::repo("cannot create repository", root, e))?;
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::repo("cannot set mode of repository", root, e))?;
            if let Some(parent) = root.parent() {
                let _ = fsync_dir(parent);
            }
        }
        Local::open(root)
    }

    fn staging(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    /// A fresh, empty directory under `.staging/`; `name` is one plain name (never a path).
    fn stage(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::new(
                ErrorKind::InternalError,
                format!("{name:?} cannot name a directory in .staging"),
            ));
        }
        let staging = self.staging();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&staging)
            .map_err(|e| Error::repo("cannot create", &staging, e))?;
        let dir = staging.join(name);
        remove_tree(&dir).map_err(|e| Error::repo("cannot clean", &dir, e))?;
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::repo("cannot create", &dir, e))?;
        Ok(dir)
    }
}

/// Opens a file of the repository for reading: never through a symlink, never blocking on a
/// FIFO, only a plain file.
fn open_file(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    Ok(Box::new(crate::safe_open::open_repo_file(path)?))
}

/// A file name of a set as a relative path, or an error for one that could leave the set.
fn inside(dir: &Path, file: &str) -> io::Result<PathBuf> {
    if super::manifest::safe_file_name(file) {
        Ok(dir.join(file))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsafe file name {file:?} in a set"),
        ))
    }
}

impl Backend for Local {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn set_location(&self, id: &str) -> String {
        self.root.join(id).display().to_string()
    }

    fn list(&self) -> Result<Vec<String>> {
        let read = fs::read_dir(&self.root)
            .map_err(|e| Error::repo("cannot read repository", &self.root, e))?;
        let mut ids = Vec::new();
        for item in read {
            let item = item.map_err(|e| Error::repo("cannot read repository", &self.root, e))?;
            let Ok(id) = item.file_name().into_string() else {
                continue;
            };
            if !id.starts_with('.') && item.file_type().is_ok_and(|t| t.is_dir()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn exists(&self, id: &str) -> Result<bool> {
        Ok(fs::symlink_metadata(self.root.join(id)).is_ok())
    }

    fn read(&self, id: &str, file: &str) -> io::Result<Box<dyn Read + Send>> {
        open_file(&inside(&self.root.join(id), file)?)
    }

    fn create(&self) -> Result<Box<dyn NewSet>> {
        // One directory per set, even for two sets written at once by one process.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.stage(&format!("new.{}.{n}", std::process::id()))?;
        Ok(Box::new(LocalNewSet {
            root: self.root.clone(),
            dir,
            files: Default::default(),
            committed: false,
        }))
    }

    fn delete(&self, id: &str) -> Result<()> {
        let path = self.root.join(id);
        let trash = self.stage(&format!("{id}.deleted"))?;
        fs::remove_dir(&trash).map_err(|e| Error::repo("cannot prepare deletion in", &trash, e))?;
        fs::rename(&path, &trash).map_err(|e| Error::repo("cannot delete set", &path, e))?;
        fsync_dir(&self.root).map_err(|e| Error::repo("cannot sync", &self.root, e))?;
        remove_tree(&trash).map_err(|e| Error::repo("cannot remove", &trash, e))
    }

    fn lock(&self, operation: Operation, wait: Duration) -> Result<Held> {
        let what = format!("repository {}", self.root.display());
        Ok(Box::new(lockfile::acquire(
            &self.root.join(LOCK),
            &what,
            operation,
            wait,
        )?))
    }

    fn clean(&self) -> Result<()> {
        let staging = self.staging();
        match fs::read_dir(&staging) {
            Ok(read) => {
                for item in read.flatten() {
                    let path = item.path();
                    remove_tree(&path)
                        .map_err(|e| Error::repo("cannot clean leftover", &path, e))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::repo("cannot read", &staging, e)),
        }
    }

    fn scratch(&self, name: &str) -> Result<PathBuf> {
        self.stage(name)
    }
}

/// A set being built under `.staging/new.<pid>/`.
struct LocalNewSet {
    root: PathBuf,
    dir: PathBuf,
    /// The files created, to sync before the manifest is written.
    files: std::sync::Mutex<Vec<PathBuf>>,
    committed: bool,
}

impl NewSet for LocalNewSet {
    fn create(&self, file: &str) -> Result<Box<dyn Write + Send>> {
        let path = inside(&self.dir, file).map_err(|e| Error::repo("cannot create", &self.dir, e))?;
        if file.starts_with(SUBDIR) {
            let sub = self.dir.join(SUBDIR);
            match DirBuilder::new().mode(0o700).create(&sub) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(Error::repo("cannot create", &sub, e));
                }
                _ => {}
            }
        }
        let out = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::repo("cannot create", &path, e))?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if !files.contains(&path) {
            files.push(path);
        }
        Ok(Box::new(BufWriter::with_capacity(1 << 20, out)))
    }

    fn read(&self, file: &str) -> io::Result<Box<dyn Read + Send>> {
        open_file(&inside(&self.dir, file)?)
    }

    fn commit(mut self: Box<Self>, id: &str, manifest: &[u8]) -> Result<String> {
        let files = std::mem::take(self.files.get_mut().unwrap_or_else(|e| e.into_inner()));
        for path in &files {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::repo("cannot sync", path, e))?;
        }
        let sub = self.dir.join(SUBDIR);
        if sub.exists() {
            fsync_dir(&sub).map_err(|e| Error::repo("cannot sync", &sub, e))?;
        }
        let manifest_path = self.dir.join(super::manifest::FILE);
        write_synced(&manifest_path, manifest)
            .map_err(|e| Error::repo("cannot write", &manifest_path, e))?;
        fsync_dir(&self.dir).map_err(|e| Error::repo("cannot sync", &self.dir, e))?;
        let target = self.root.join(id);
        if fs::symlink_metadata(&target).is_ok() {
            return Err(Error::new(
                ErrorKind::RepositoryError,
                format!(
                    "cannot publish set {id}: {} already exists",
                    target.display()
                ),
            ));
        }
        fs::rename(&self.dir, &target)
            .map_err(|e| Error::repo("cannot publish set into", &target, e))?;
        self.committed = true;
        fsync_dir(&self.root).map_err(|e| Error::repo("cannot sync", &self.root, e))?;
        Ok(target.display().to_string())
    }
}

impl Drop for LocalNewSet {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}
