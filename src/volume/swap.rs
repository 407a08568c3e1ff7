//! Replacing a volume's contents with a staged tree, so that a crash at any point leaves the
//! old tree or the new one after the next run, never a mix.
//!
//! Everything happens in a work directory beside the volume, on the same file system
//! (`<parent>/.cwbackup-<name>/`): `lock`, `journal.json`, `staged/` (the new tree), `old/`
//! (the old entries while they are replaced). The volume directory itself is kept, because
//! containers bind-mount it; only its entries move, each with one `rename`.
//!
//! The journal names the phase, and each phase change is written (atomically, synced) only
//! after the moves of the phase before are synced:
//! - `moving-old`: the volume's entries go to `old/`. Interrupted: move them back (roll back).
//! - `moving-new`: the staged entries go into the volume. Interrupted: move the rest in (roll
//!   forward).
//! - `cleanup`: remove `old/` and `staged/`.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::repository::{self, fsync_dir, lock};
use crate::task::Operation;

/// The work directory of a volume.
#[derive(Debug, Clone)]
pub struct Work {
    /// The volume directory.
    pub volume: PathBuf,
    /// `<parent>/.cwbackup-<name>/`.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    MovingOld,
    MovingNew,
    Cleanup,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    phase: Phase,
    /// The set being restored, for messages.
    set: String,
}

/// What recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// No interrupted swap.
    Nothing,
    /// The old tree was put back.
    RolledBack(String),
    /// The new tree was completed.
    RolledForward(String),
    /// Only leftovers were removed.
    CleanedUp(String),
}

impl Recovered {
    /// What recovery did, for a warning; None when there was nothing to do.
    pub fn describe(&self, volume: &Path) -> Option<String> {
        let v = volume.display();
        match self {
            Recovered::Nothing => None,
            Recovered::RolledBack(set) => Some(format!(
                "a restore of set {set} into {v} was interrupted before its new tree was moved in; the volume was put back as it was"
            )),
            Recovered::RolledForward(set) => Some(format!(
                "a restore of set {set} into {v} was interrupted while its new tree was moved in; the move was finished"
            )),
            Recovered::CleanedUp(set) => Some(format!(
                "a restore of set {set} into {v} was interrupted while cleaning up; the leftovers were removed"
            )),
        }
    }
}

impl Work {
    /// The work directory for `volume` (created on demand).
    pub fn of(volume: &Path) -> Result<Work> {
        let name = volume.file_name().ok_or_else(|| {
            Error::new(
                ErrorKind::VolumeNotFound,
                format!("volume {} has no directory name", volume.display()),
            )
        })?;
        let parent = volume.parent().ok_or_else(|| {
            Error::new(
                ErrorKind::VolumeNotFound,
                format!("volume {} has no parent directory", volume.display()),
            )
        })?;
        let mut work_name = OsString::from(".cwbackup-");
        work_name.push(name);
        Ok(Work {
            volume: volume.to_path_buf(),
            dir: parent.join(work_name),
        })
    }

    fn ensure(&self) -> Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io("cannot create the work directory", &self.dir, e))
    }

    /// Takes the volume's lock.
    pub fn lock(&self, operation: Operation, wait: Duration) -> Result<lock::Lock> {
        self.ensure()?;
        let what = format!("volume {}", self.volume.display());
        lock::acquire(&self.dir.join("lock"), &what, operation, wait)
    }

    /// Where the new tree is staged.
    pub fn staged(&self) -> PathBuf {
        self.dir.join("staged")
    }

    fn old(&self) -> PathBuf {
        self.dir.join("old")
    }

    fn journal(&self) -> PathBuf {
        self.dir.join("journal.json")
    }

    /// A fresh, empty staging directory.
    pub fn fresh_staged(&self) -> Result<PathBuf> {
        self.ensure()?;
        let staged = self.staged();
        remove_tree(&staged)?;
        DirBuilder::new()
            .mode(0o700)
            .create(&staged)
            .map_err(|e| Error::io("cannot create", &staged, e))?;
        Ok(staged)
    }

    /// Removes the staging directory (after a failure before the swap, or a finished swap).
    pub fn discard_staged(&self) -> Result<()> {
        remove_tree(&self.staged())
    }

    /// Finishes or rolls back a swap that a crash interrupted. Call with the volume lock held.
    pub fn recover(&self) -> Result<Recovered> {
        let journal = match fs::read(self.journal()) {
            Ok(bytes) => serde_json::from_slice::<Journal>(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::IoError,
                    format!("the restore journal {} is unreadable ({e}): compare {} with old/ and staged/ beside it by hand", self.journal().display(), self.volume.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // No swap was under way: whatever is here is a stage that never started.
                if self.dir.exists() {
                    remove_tree(&self.staged())?;
                    remove_tree(&self.old())?;
                }
                return Ok(Recovered::Nothing);
            }
            Err(e) => return Err(Error::io("cannot read", &self.journal(), e)),
        };
        let outcome = match journal.phase {
            Phase::MovingOld => {
                move_entries(&self.old(), &self.volume)?;
                Recovered::RolledBack(journal.set)
            }
            Phase::MovingNew => {
                move_entries(&self.staged(), &self.volume)?;
                Recovered::RolledForward(journal.set)
            }
            Phase::Cleanup => Recovered::CleanedUp(journal.set),
        };
        fsync_dir(&self.volume).map_err(|e| Error::io("cannot sync", &self.volume, e))?;
        self.finish()?;
        Ok(outcome)
    }

    /// Replaces the volume's entries with the staged tree's. Call with the volume lock held and
    /// the staged tree complete and synced.
    pub fn swap(&self, set: &str) -> Result<()> {
        let old = self.old();
        remove_tree(&old)?;
        self.write_journal(Phase::MovingOld, set)?;
        DirBuilder::new()
            .mode(0o700)
            .create(&old)
            .map_err(|e| Error::io("cannot create", &old, e))?;
        move_entries(&self.volume, &old)?;
        sync_dirs(&[&self.volume, &old])?;
        self.write_journal(Phase::MovingNew, set)?;
        move_entries(&self.staged(), &self.volume)?;
        sync_dirs(&[&self.volume, &self.staged()])?;
        self.write_journal(Phase::Cleanup, set)?;
        self.finish()
    }

    /// Removes `old/`, `staged/` and the journal (last).
    fn finish(&self) -> Result<()> {
        remove_tree(&self.old())?;
        remove_tree(&self.staged())?;
        match fs::remove_file(self.journal()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", &self.journal(), e)),
        }
        fsync_dir(&self.dir).map_err(|e| Error::io("cannot sync", &self.dir, e))
    }

    /// Writes the journal atomically: a synced temporary file renamed over it, then the
    /// directory synced.
    fn write_journal(&self, phase: Phase, set: &str) -> Result<()> {
        let tmp = self.dir.join("journal.json.tmp");
        let _ = fs::remove_file(&tmp);
        let bytes = serde_json::to_vec(&Journal {
            phase,
            set: set.to_string(),
        })
        .expect("a journal is JSON");
        (|| -> io::Result<()> {
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.journal())?;
            fsync_dir(&self.dir)
        })()
        .map_err(|e| Error::io("cannot write the restore journal", &self.journal(), e))
    }

    /// Whether an interrupted swap waits to be recovered.
    pub fn pending(&self) -> bool {
        self.journal().exists()
    }
}

/// Moves every entry of `from` into `to` (one rename each); entries already moved are simply
/// no longer in `from`, so this can be repeated after a crash.
fn move_entries(from: &Path, to: &Path) -> Result<()> {
    let read = match fs::read_dir(from) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("cannot read", from, e)),
    };
    for item in read {
        let item = item.map_err(|e| Error::io("cannot read", from, e))?;
        let target = to.join(item.file_name());
        fs::rename(item.path(), &target)
            .map_err(|e| Error::io("cannot move an entry into", &target, e))?;
    }
    Ok(())
}

fn sync_dirs(dirs: &[&Path]) -> Result<()> {
    for dir in dirs {
        fsync_dir(dir).map_err(|e| Error::io("cannot sync", dir, e))?;
    }
    Ok(())
}

/// Removes a tree of the work directory (nothing if it is missing).
fn remove_tree(path: &Path) -> Result<()> {
    repository::remove_tree(path).map_err(|e| Error::io("cannot remove", path, e))
}

/// Flushes every file system buffer of the file system holding `path` (one call instead of
/// an fsync per extracted file).
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    if rc != 0 {
        return Err(Error::io("cannot sync", path, io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// A volume with old entries a1..a4, a staged tree b1..b4, and the journal at `phase` with
    /// `moved` entries of that phase already moved.
    fn interrupted(phase: Phase, moved: usize) -> (tempfile::TempDir, Work) {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("vol");
        fs::create_dir(&volume).unwrap();
        let work = Work::of(&volume).unwrap();
        let staged = work.fresh_staged().unwrap();
        for i in 1..=4 {
            fs::write(volume.join(format!("a{i}")), "old").unwrap();
            fs::write(staged.join(format!("b{i}")), "new").unwrap();
        }
        fs::create_dir(work.old()).unwrap();
        work.write_journal(Phase::MovingOld, "set").unwrap();
        let old_moved = if phase == Phase::MovingOld { moved } else { 4 };
        for i in 1..=old_moved {
            fs::rename(
                volume.join(format!("a{i}")),
                work.old().join(format!("a{i}")),
            )
            .unwrap();
        }
        if phase != Phase::MovingOld {
            work.write_journal(phase, "set").unwrap();
            let new_moved = if phase == Phase::MovingNew { moved } else { 4 };
            for i in 1..=new_moved {
                fs::rename(staged.join(format!("b{i}")), volume.join(format!("b{i}"))).unwrap();
            }
        }
        (tmp, work)
    }

    #[test]
    fn an_interrupted_move_of_the_old_entries_is_rolled_back() {
        for moved in 0..=4 {
            let (_tmp, work) = interrupted(Phase::MovingOld, moved);
            assert_eq!(work.recover().unwrap(), Recovered::RolledBack("set".into()));
            assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
            assert!(!work.pending() && !work.old().exists() && !work.staged().exists());
        }
    }

    #[test]
    fn an_interrupted_move_of_the_new_entries_is_rolled_forward() {
        for moved in 0..=4 {
            let (_tmp, work) = interrupted(Phase::MovingNew, moved);
            assert_eq!(
                work.recover().unwrap(),
                Recovered::RolledForward("set".into())
            );
            assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
            assert!(!work.pending() && !work.old().exists() && !work.staged().exists());
        }
    }

    #[test]
    fn an_interrupted_cleanup_is_finished() {
        let (_tmp, work) = interrupted(Phase::Cleanup, 4);
        assert_eq!(work.recover().unwrap(), Recovered::CleanedUp("set".into()));
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
    }

    #[test]
    fn leftovers_without_a_journal_are_removed_and_the_volume_is_untouched() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        assert_eq!(work.recover().unwrap(), Recovered::Nothing);
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
        assert!(!work.staged().exists());
    }

    #[test]
    fn a_full_swap_keeps_the_volume_directory_itself() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        fs::remove_dir(work.old()).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&work.volume).unwrap());
        work.swap("set").unwrap();
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&work.volume).unwrap()),
            inode
        );
    }
}
