//! Backup sets on disk.
//!
//! ```text
//! <repository>/
//!   .lock              the repository lock (see lock.rs)
//!   .staging/          sets being built or deleted; emptied by the next task that locks
//!   <backup_id>/       a set: manifest.json (written last), volume.tar.gz, db.tgz
//! ```
//!
//! A set is built under `.staging/`, every file and directory fsynced, then renamed into place
//! and the repository directory fsynced: a crash leaves either no set or a complete one. A set
//! is deleted by renaming it into `.staging/` first, so it never appears half-deleted.

pub mod check;
pub mod lock;
pub mod manifest;

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::task::Operation;
use manifest::Manifest;

/// Where sets are built.
pub const STAGING: &str = ".staging";
/// The lock file.
pub const LOCK: &str = ".lock";
/// Prefix of the safety sets a restore writes.
pub const SAFETY_PREFIX: &str = "pre-restore-";

/// A repository directory.
#[derive(Debug, Clone)]
pub struct Repository {
    pub root: PathBuf,
}

/// A complete backup set.
#[derive(Debug, Clone)]
pub struct Set {
    pub id: String,
    pub path: PathBuf,
    pub manifest: Manifest,
}

impl Set {
    /// Whether a restore wrote this set as its safety backup.
    pub fn is_safety(&self) -> bool {
        self.id.starts_with(SAFETY_PREFIX)
    }
}

/// A directory in the repository that is not a usable set, and why.
#[derive(Debug, Clone)]
pub struct Broken {
    pub id: String,
    pub problem: String,
    /// No manifest at all: a set that never completed, as opposed to a damaged one.
    pub incomplete: bool,
}

impl Repository {
    /// An existing repository.
    pub fn open(root: &Path) -> Result<Repository> {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => Ok(Repository {
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

    /// Whether `root` exists (for dry runs, which must not create it).
    pub fn exists(root: &Path) -> bool {
        root.is_dir()
    }

    /// The repository at `root`, created with mode 0700 if missing.
    pub fn create(root: &Path) -> Result<Repository> {
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
        Repository::open(root)
    }

    /// Takes the repository lock, waiting up to `wait`.
    pub fn lock(&self, operation: Operation, wait: Duration) -> Result<lock::Lock> {
        let what = format!("repository {}", self.root.display());
        lock::acquire(&self.root.join(LOCK), &what, operation, wait)
    }

    /// Every directory of the repository: complete sets newest first, and the rest.
    pub fn scan(&self) -> Result<(Vec<Set>, Vec<Broken>)> {
        let mut sets = Vec::new();
        let mut broken = Vec::new();
        let read = fs::read_dir(&self.root)
            .map_err(|e| Error::repo("cannot read repository", &self.root, e))?;
        for item in read {
            let item = item.map_err(|e| Error::repo("cannot read repository", &self.root, e))?;
            let Ok(id) = item.file_name().into_string() else {
                continue;
            };
            if id.starts_with('.') || !item.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = item.path();
            // Not following a symlink: a symlink or FIFO as manifest.json is a broken set
            // (refused when read), not an incomplete one.
            if fs::symlink_metadata(path.join(manifest::FILE)).is_err() {
                broken.push(Broken {
                    id,
                    problem: "no manifest.json: an incomplete set, never used".into(),
                    incomplete: true,
                });
                continue;
            }
            match Manifest::read(&path) {
                Ok(m) if m.id == id => sets.push(Set {
                    id,
                    path,
                    manifest: m,
                }),
                Ok(m) => broken.push(Broken {
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

    /// The complete set named `id`.
    pub fn find(&self, id: &str) -> Result<Option<Set>> {
        Ok(self.sets()?.into_iter().find(|s| s.id == id))
    }

    fn staging(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    /// Removes what an interrupted task left under `.staging/`. Call only with the lock held.
    pub fn clean_staging(&self) -> Result<()> {
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

    /// A fresh, empty directory under `.staging/` to build something in.
    pub fn stage(&self, name: &str) -> Result<PathBuf> {
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

    /// Moves a fully written and synced staged set into place, atomically.
    pub fn publish(&self, staged: &Path, id: &str) -> Result<PathBuf> {
        fsync_dir(staged).map_err(|e| Error::repo("cannot sync", staged, e))?;
        let target = self.root.join(id);
        if target.exists() {
            return Err(Error::new(
                ErrorKind::RepositoryError,
                format!(
                    "cannot publish set {id}: {} already exists",
                    target.display()
                ),
            ));
        }
        fs::rename(staged, &target)
            .map_err(|e| Error::repo("cannot publish set into", &target, e))?;
        fsync_dir(&self.root).map_err(|e| Error::repo("cannot sync", &self.root, e))?;
        Ok(target)
    }

    /// Deletes a set: it disappears at once (rename into `.staging/`), then is removed.
    pub fn delete(&self, set: &Set) -> Result<()> {
        let trash = self.stage(&format!("{}.deleted", set.id))?;
        fs::remove_dir(&trash).map_err(|e| Error::repo("cannot prepare deletion in", &trash, e))?;
        fs::rename(&set.path, &trash)
            .map_err(|e| Error::repo("cannot delete set", &set.path, e))?;
        fsync_dir(&self.root).map_err(|e| Error::repo("cannot sync", &self.root, e))?;
        remove_tree(&trash).map_err(|e| Error::repo("cannot remove", &trash, e))
    }

    /// `base`, or `base-2`, `base-3`… if a directory of that name exists.
    pub fn unique_id(&self, base: &str) -> String {
        let mut id = base.to_string();
        let mut n = 2;
        while self.root.join(&id).exists() {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }
}

/// Writes a new file with mode 0600 and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Syncs a directory, so that renames and new entries in it survive a crash.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    // O_DIRECTORY: something swapped in for a directory (a FIFO) fails instead of blocking.
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?
        .sync_all()
}

/// Removes a file, or a directory tree (nothing if it is missing). A read-only directory (a
/// restored 0555 one) blocks deleting its entries even for its owner, so directories are made
/// writable first when a plain removal fails.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if remove_dir_on_two_threads(path).is_ok() {
        return Ok(());
    }
    for dir in walk_dirs(path) {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
    }
    fs::remove_dir_all(path)
}

/// `remove_dir_all` on two threads: unlinking a volume's many small files is system-call
/// bound, so the tree is opened up breadth-first until there are a few entries to share, each
/// thread removes half of them, and the opened directories go last, deepest first.
fn remove_dir_on_two_threads(path: &Path) -> io::Result<()> {
    let mut opened = vec![path.to_path_buf()];
    let mut share: Vec<(PathBuf, bool)> = list(path)?;
    while share.len() < 16 && share.iter().any(|(_, is_dir)| *is_dir) {
        let mut next = Vec::new();
        for (item, is_dir) in share {
            if is_dir {
                next.extend(list(&item)?);
                opened.push(item);
            } else {
                next.push((item, false));
            }
        }
        share = next;
    }
    let remove = |items: &[(PathBuf, bool)]| -> io::Result<()> {
        for (item, is_dir) in items {
            if *is_dir {
                fs::remove_dir_all(item)?;
            } else {
                fs::remove_file(item)?;
            }
        }
        Ok(())
    };
    let (first, second) = share.split_at(share.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| remove(second));
        let mine = remove(first);
        match other.join() {
            Ok(theirs) => theirs.and(mine),
            Err(payload) => Err(std::io::Error::other(format!(
                "a removing thread panicked: {}",
                crate::error::panic_text(payload.as_ref())
            ))),
        }
    })?;
    for dir in opened.iter().rev() {
        fs::remove_dir(dir)?;
    }
    Ok(())
}

/// A directory's entries, each with whether it is a directory (not following symlinks).
fn list(dir: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    fs::read_dir(dir)?
        .map(|item| {
            let item = item?;
            Ok((item.path(), item.file_type()?.is_dir()))
        })
        .collect()
}

/// `root` and every directory below it (not following symlinks).
fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(read) = fs::read_dir(&dirs[i]) {
            for item in read.flatten() {
                if item.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(item.path());
                }
            }
        }
        i += 1;
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_shares_a_deep_tree_and_never_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        // One directory per level at the top, so the removal must open levels up to share.
        let tree = tmp.path().join("tree");
        let wide = tree.join("only/child");
        for d in 0..5 {
            fs::create_dir_all(wide.join(format!("d{d}/sub"))).unwrap();
            for f in 0..7 {
                fs::write(wide.join(format!("d{d}/f{f}")), "x").unwrap();
                fs::write(wide.join(format!("d{d}/sub/f{f}")), "x").unwrap();
            }
        }
        fs::write(wide.join("top-file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, wide.join("d0/link-to-outside")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("only/link-to-outside")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(
            outside.join("keep").exists(),
            "links are removed, not followed"
        );
    }

    #[test]
    fn remove_tree_removes_read_only_trees_files_and_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("ro/inner")).unwrap();
        fs::write(tree.join("ro/inner/f"), "x").unwrap();
        fs::set_permissions(tree.join("ro/inner"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
        remove_tree(&tmp.path().join("missing")).unwrap();
    }
}
