//! Replacing a volume's contents with a staged tree, so that a crash at any point leaves the
//! old tree or the new one after the next run, never a mix, and an error leaves the old tree.
//!
//! Everything happens in a work directory inside the volume, `<volume>/.cwbackup-work/`
//! ([`super::WORK_DIR`]), so every rename stays on the volume's own file system even when the
//! volume is a mount point (tmpfs, NFS, a bind mount, a PVC): `holder.json` (who holds the
//! lock), `journal.json`, `staged/` (the new tree), `old/` (the old entries while they are
//! replaced), and `conflicts/` (entries a writer put in the way of an interrupted swap). The
//! volume directory itself is kept, because containers bind-mount it; only its entries move,
//! each with one `rename` that never replaces an existing name. Every listing, digest and
//! archive leaves the work directory out, and it is removed when the task that made it
//! returns; only a crash (or `conflicts/`, which is reported) leaves it behind.
//!
//! The lock is the OS lock on the volume directory's own descriptor, so it works where the
//! volume's parent is read-only. None of the tool's paths here is followed through a symlink:
//! a link in place of the work directory is refused.
//!
//! The journal names the phase, and each phase change is written (atomically, synced) only
//! after the moves of the phase before are synced:
//! - `moving-old`: the volume's entries go to `old/`. Interrupted: move them back (roll back).
//! - `moving-new`: the staged entries go into the volume. Interrupted: move the rest in (roll
//!   forward).
//! - `undoing-new`: an error during `moving-new` is being undone: the new entries go back to
//!   `staged/`, then the phase is `moving-old` again and the old entries go back. Interrupted:
//!   the same, again.
//! - `cleanup`: remove `old/` and `staged/`.
//!
//! A swap that fails with an error is rolled back by the same run before it returns; the
//! journal is for crashes only. Entries a restore must not delete (sockets, FIFOs and devices
//! at the volume's root that backups skip and the set does not hold) are named in the journal
//! and left in place.
//!
//! Before this layout, the work directory was `<parent>/.cwbackup-<name>/`. A swap that a crash
//! interrupted there is still recovered (same journal), then that directory is removed.

use std::ffi::{CString, OsString};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::repository::{self, fsync_dir, lock};
use crate::task::Operation;

use super::WORK_DIR;

/// The work directory of a volume.
#[derive(Debug, Clone)]
pub struct Work {
    /// The volume directory.
    pub volume: PathBuf,
    /// `<volume>/.cwbackup-work/` (or, for recovering an old crash, the old location).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    MovingOld,
    MovingNew,
    UndoingNew,
    Cleanup,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    phase: Phase,
    /// The set being restored, for messages.
    set: String,
    /// Names at the volume's root that stay in place (special files backups skip).
    #[serde(default)]
    kept: Vec<Vec<u8>>,
    /// The staged tree's root names (from `moving-new` on): undoing a failed swap moves only
    /// these back out of the volume, never an entry a writer added meanwhile.
    #[serde(default)]
    incoming: Vec<Vec<u8>>,
}

/// The root names a swap treats specially, as recorded in the journal.
#[derive(Debug, Clone, Default)]
struct Names {
    kept: Vec<OsString>,
    incoming: Vec<OsString>,
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

/// The volume's lock; dropping it removes the work directory (unless a crash-recovery
/// journal or reported conflicts must stay) and then releases the OS lock.
#[derive(Debug)]
pub struct VolumeLock {
    work: Work,
    /// Whether this task made (and so removes) the work directory: not in a dry run.
    owns_dir: bool,
    _lock: lock::Lock,
}

impl Drop for VolumeLock {
    fn drop(&mut self) {
        if self.owns_dir {
            self.work.release();
        }
    }
}

/// How a swap's entries move.
struct Moves<'a> {
    /// Names at the root of the source that do not move.
    skip: &'a [OsString],
    /// If given, only these names move.
    only: Option<&'a [OsString]>,
    /// Where a live entry that stands in the way goes (recovery and rollback only); None:
    /// an entry in the way is an error.
    conflicts: Option<&'a Path>,
}

impl Work {
    /// The work directory for `volume`: `<volume>/.cwbackup-work/`.
    pub fn of(volume: &Path) -> Result<Work> {
        Ok(Work {
            volume: volume.to_path_buf(),
            dir: volume.join(WORK_DIR),
        })
    }

    /// The work directory of cwbackup before it moved into the volume:
    /// `<parent>/.cwbackup-<name>/`.
    fn legacy(&self) -> Option<Work> {
        let name = self.volume.file_name()?;
        let parent = self.volume.parent()?;
        let mut work_name = OsString::from(".cwbackup-");
        work_name.push(name);
        Some(Work {
            volume: self.volume.clone(),
            dir: parent.join(work_name),
        })
    }

    /// Creates the work directory, refusing anything but a real directory in its place.
    fn ensure(&self) -> Result<()> {
        match fs::symlink_metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::IoError,
                format!(
                    "{} is not a directory (a symlink or a file in place of cwbackup's work directory, which it never follows): remove it and run again",
                    self.dir.display()
                ),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| Error::io("cannot create the work directory", &self.dir, e)),
            Err(e) => Err(Error::io("cannot read", &self.dir, e)),
        }
    }

    /// Takes the volume's lock: the OS lock on the volume directory, plus (unless `dry_run`,
    /// which writes nothing) the work directory with the holder record in it.
    pub fn lock(&self, operation: Operation, wait: Duration, dry_run: bool) -> Result<VolumeLock> {
        let what = format!("volume {}", self.volume.display());
        let held = lock::acquire_dir(&self.volume, &self.holder(), &what, wait)?;
        if dry_run {
            return Ok(VolumeLock {
                work: self.clone(),
                owns_dir: false,
                _lock: held,
            });
        }
        self.ensure()?;
        let holder = self.holder();
        remove_tree(&holder)?;
        (|| -> io::Result<()> {
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&holder)?;
            io::Write::write_all(&mut f, &lock::holder_record(operation))
        })()
        .map_err(|e| Error::io("cannot write the lock holder", &holder, e))?;
        Ok(VolumeLock {
            work: self.clone(),
            owns_dir: true,
            _lock: held,
        })
    }

    fn holder(&self) -> PathBuf {
        self.dir.join("holder.json")
    }

    /// Where the new tree is staged.
    pub fn staged(&self) -> PathBuf {
        self.dir.join("staged")
    }

    fn old(&self) -> PathBuf {
        self.dir.join("old")
    }

    /// Where entries that stood in the way of an interrupted swap are kept.
    pub fn conflicts(&self) -> PathBuf {
        self.dir.join("conflicts")
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

    /// Removes what this task left in the work directory, and the directory itself, unless a
    /// journal waits for recovery; `conflicts/` is kept (it was reported).
    fn release(&self) {
        if self.journal_here() {
            return;
        }
        for path in [
            self.staged(),
            self.old(),
            self.holder(),
            self.dir.join("journal.json.tmp"),
        ] {
            let _ = remove_tree(&path);
        }
        let _ = fs::remove_dir(&self.dir);
        let _ = fsync_dir(&self.volume);
    }

    /// Finishes or rolls back a swap that a crash interrupted (here or in the old work
    /// directory beside the volume). Call with the volume lock held. Returns what was done and
    /// warnings about entries moved aside.
    pub fn recover(&self) -> Result<(Recovered, Vec<String>)> {
        let mut warnings = Vec::new();
        if let Some(legacy) = self.legacy().filter(Work::journal_here) {
            let (done, more) = legacy.recover_here()?;
            warnings.extend(more);
            warnings.extend(done.describe(&self.volume).map(|d| {
                format!(
                    "{d} (from the work directory {} of an older cwbackup, now removed)",
                    legacy.dir.display()
                )
            }));
            let _ = fs::remove_file(legacy.dir.join("lock"));
            let _ = fs::remove_dir(&legacy.dir);
        }
        let (done, more) = self.recover_here()?;
        warnings.extend(more);
        if self.conflicts().exists() {
            warnings.push(format!(
                "{} holds entries that stood in the way of an interrupted restore: compare them with the volume, then delete it",
                self.conflicts().display()
            ));
        }
        Ok((done, warnings))
    }

    fn recover_here(&self) -> Result<(Recovered, Vec<String>)> {
        let journal = match self.read_journal() {
            Ok(journal) => journal,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // No swap was under way: whatever is here is a stage that never started.
                if self.dir.is_dir() {
                    remove_tree(&self.staged())?;
                    remove_tree(&self.old())?;
                }
                return Ok((Recovered::Nothing, Vec::new()));
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::new(
                    ErrorKind::IoError,
                    format!(
                        "the restore journal {} is unreadable ({e}): compare {} with old/ and staged/ beside it by hand",
                        self.journal().display(),
                        self.volume.display()
                    ),
                ));
            }
            Err(e) => return Err(Error::io("cannot read", &self.journal(), e)),
        };
        let names = Names {
            kept: journal
                .kept
                .iter()
                .cloned()
                .map(OsString::from_vec)
                .collect(),
            incoming: journal
                .incoming
                .iter()
                .cloned()
                .map(OsString::from_vec)
                .collect(),
        };
        let conflicts = self.conflicts();
        let mut warnings = Vec::new();
        let outcome = match journal.phase {
            Phase::MovingOld => {
                warnings = self.move_old_back(&conflicts)?;
                Recovered::RolledBack(journal.set)
            }
            Phase::UndoingNew => {
                self.undo_new(&journal.set, &names)?;
                warnings = self.move_old_back(&conflicts)?;
                Recovered::RolledBack(journal.set)
            }
            Phase::MovingNew => {
                warnings = move_entries(
                    &self.staged(),
                    &self.volume,
                    &Moves {
                        skip: &[],
                        only: None,
                        conflicts: Some(&conflicts),
                    },
                )?;
                Recovered::RolledForward(journal.set)
            }
            Phase::Cleanup => Recovered::CleanedUp(journal.set),
        };
        fsync_dir(&self.volume).map_err(|e| Error::io("cannot sync", &self.volume, e))?;
        self.finish()?;
        Ok((outcome, warnings))
    }

    /// Replaces the volume's entries with the staged tree's, leaving the root names in `kept`
    /// where they are. Call with the volume lock held and the staged tree complete and synced.
    /// On an error the old tree is put back before this returns, and the error says so (or,
    /// if that fails too, names the directory that holds the old entries).
    pub fn swap(&self, set: &str, kept: &[OsString]) -> Result<()> {
        let old = self.old();
        remove_tree(&old)?;
        let mut names = Names {
            kept: kept.to_vec(),
            incoming: Vec::new(),
        };
        self.write_journal(Phase::MovingOld, set, &names)?;
        let mut reached = Phase::MovingOld;
        let outcome = (|| -> Result<()> {
            DirBuilder::new()
                .mode(0o700)
                .create(&old)
                .map_err(|e| Error::io("cannot create", &old, e))?;
            move_entries(
                &self.volume,
                &old,
                &Moves {
                    skip: kept,
                    only: None,
                    conflicts: None,
                },
            )?;
            sync_dirs(&[&self.volume, &old])?;
            names.incoming = root_names(&self.staged())?;
            self.write_journal(Phase::MovingNew, set, &names)?;
            reached = Phase::MovingNew;
            move_entries(
                &self.staged(),
                &self.volume,
                &Moves {
                    skip: &[],
                    only: None,
                    conflicts: None,
                },
            )?;
            sync_dirs(&[&self.volume, &self.staged()])
        })();
        if let Err(e) = outcome {
            return Err(self.roll_back(e, reached, set, &names));
        }
        self.write_journal(Phase::Cleanup, set, &names)?;
        self.finish()
    }

    /// Undoes a swap that failed with `error` in phase `reached`; the error, saying what
    /// became of the volume.
    fn roll_back(&self, error: Error, reached: Phase, set: &str, names: &Names) -> Error {
        let undone = (|| -> Result<Vec<String>> {
            if reached == Phase::MovingNew {
                self.undo_new(set, names)?;
            }
            let warnings = self.move_old_back(&self.conflicts())?;
            fsync_dir(&self.volume).map_err(|e| Error::io("cannot sync", &self.volume, e))?;
            self.finish()?;
            Ok(warnings)
        })();
        let message = match undone {
            Ok(aside) if aside.is_empty() => format!(
                "{}; the restore was rolled back: the volume {} holds its old entries again and nothing of set {set} was swapped in",
                error.message,
                self.volume.display()
            ),
            Ok(aside) => format!(
                "{}; the restore was rolled back: the volume {} holds its old entries again ({})",
                error.message,
                self.volume.display(),
                aside.join("; ")
            ),
            Err(again) => format!(
                "{}; rolling the volume back failed too ({}): the old entries are in {}; the next task on this volume tries again, or move them back into {} by hand",
                error.message,
                again.message,
                self.old().display(),
                self.volume.display()
            ),
        };
        Error { message, ..error }.detail("old_entries", self.old().display().to_string())
    }

    /// Phase `undoing-new`: the staged tree's entries go back from the volume to `staged/`
    /// (anything else a writer added stays); then the phase is `moving-old` again.
    fn undo_new(&self, set: &str, names: &Names) -> Result<()> {
        self.write_journal(Phase::UndoingNew, set, names)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.staged())
            .map_err(|e| Error::io("cannot create", &self.staged(), e))?;
        move_entries(
            &self.volume,
            &self.staged(),
            &Moves {
                skip: &names.kept,
                only: Some(&names.incoming),
                conflicts: None,
            },
        )?;
        sync_dirs(&[&self.volume, &self.staged()])?;
        self.write_journal(Phase::MovingOld, set, names)
    }

    /// Moves the old entries back into the volume; an entry in the way goes to `conflicts`.
    fn move_old_back(&self, conflicts: &Path) -> Result<Vec<String>> {
        move_entries(
            &self.old(),
            &self.volume,
            &Moves {
                skip: &[],
                only: None,
                conflicts: Some(conflicts),
            },
        )
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

    fn read_journal(&self) -> io::Result<Journal> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.journal())?;
        let mut bytes = Vec::new();
        file.take(1 << 20).read_to_end(&mut bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes the journal atomically: a synced temporary file renamed over it, then the
    /// directory synced.
    fn write_journal(&self, phase: Phase, set: &str, names: &Names) -> Result<()> {
        let tmp = self.dir.join("journal.json.tmp");
        let _ = fs::remove_file(&tmp);
        let bytes = serde_json::to_vec(&Journal {
            phase,
            set: set.to_string(),
            kept: names.kept.iter().map(|k| k.as_bytes().to_vec()).collect(),
            incoming: names
                .incoming
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
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

    fn journal_here(&self) -> bool {
        fs::symlink_metadata(self.journal()).is_ok()
    }

    /// Whether an interrupted swap waits to be recovered (here or in the old location).
    pub fn pending(&self) -> bool {
        self.journal_here() || self.legacy().is_some_and(|l| l.journal_here())
    }
}

/// Moves every entry of `from` into `to` (one rename each, in name order, never replacing an
/// existing name); entries already moved are simply no longer in `from`, so this can be
/// repeated after a crash. The work directory never moves. An entry in the way goes to
/// `moves.conflicts` if given (a warning each), else is an error.
fn move_entries(from: &Path, to: &Path, moves: &Moves) -> Result<Vec<String>> {
    let read = match fs::read_dir(from) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read", from, e)),
    };
    let mut names = Vec::new();
    for item in read {
        let name = item
            .map_err(|e| Error::io("cannot read", from, e))?
            .file_name();
        if name != WORK_DIR
            && !moves.skip.contains(&name)
            && moves.only.is_none_or(|only| only.contains(&name))
        {
            names.push(name);
        }
    }
    names.sort();
    let mut warnings = Vec::new();
    let stamp = clock::id_stamp(std::time::SystemTime::now());
    for name in names {
        let source = from.join(&name);
        let target = to.join(&name);
        match rename_noreplace(&source, &target) {
            Ok(()) => {}
            Err(e) if in_the_way(&e) && moves.conflicts.is_some() => {
                let aside_dir = moves.conflicts.expect("checked").join(&stamp);
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&aside_dir)
                    .map_err(|e| Error::io("cannot create", &aside_dir, e))?;
                let aside = aside_dir.join(&name);
                rename_noreplace(&target, &aside).map_err(|e| {
                    Error::io("cannot move an entry in the way aside to", &aside, e)
                })?;
                rename_noreplace(&source, &target)
                    .map_err(|e| Error::io("cannot move an entry into", &target, e))?;
                warnings.push(format!(
                    "{} stood in the way of the restore's move (written while it was interrupted?) and was moved to {}",
                    target.display(),
                    aside.display()
                ));
            }
            Err(e) => return Err(Error::io("cannot move an entry into", &target, e)),
        }
    }
    Ok(warnings)
}

/// The names in `dir` (none if it is missing), without the work directory.
fn root_names(dir: &Path) -> Result<Vec<OsString>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read", dir, e)),
    };
    let mut names = Vec::new();
    for item in read {
        let name = item
            .map_err(|e| Error::io("cannot read", dir, e))?
            .file_name();
        if name != WORK_DIR {
            names.push(name);
        }
    }
    Ok(names)
}

/// Whether a rename failed because the target name is taken.
fn in_the_way(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EEXIST | libc::ENOTEMPTY | libc::ENOTDIR | libc::EISDIR)
    )
}

/// `rename` that fails with EEXIST instead of replacing `to` (plain `rename` where the file
/// system does not support that, e.g. NFS: there a taken directory name still fails).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) {
        if fs::symlink_metadata(to).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        return fs::rename(from, to);
    }
    Err(e)
}

fn sync_dirs(dirs: &[&Path]) -> Result<()> {
    for dir in dirs {
        fsync_dir(dir).map_err(|e| Error::io("cannot sync", dir, e))?;
    }
    Ok(())
}

/// Removes a tree of the work directory (nothing if it is missing; a symlink is removed,
/// never followed).
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
            .filter(|n| n != WORK_DIR)
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
        work.write_journal(Phase::MovingOld, "set", &Names::default())
            .unwrap();
        let old_moved = if phase == Phase::MovingOld { moved } else { 4 };
        for i in 1..=old_moved {
            fs::rename(
                volume.join(format!("a{i}")),
                work.old().join(format!("a{i}")),
            )
            .unwrap();
        }
        if phase != Phase::MovingOld {
            let names = Names {
                kept: Vec::new(),
                incoming: (1..=4).map(|i| OsString::from(format!("b{i}"))).collect(),
            };
            work.write_journal(phase, "set", &names).unwrap();
            let new_moved = if phase == Phase::MovingNew { moved } else { 4 };
            for i in 1..=new_moved {
                fs::rename(staged.join(format!("b{i}")), volume.join(format!("b{i}"))).unwrap();
            }
            if phase == Phase::UndoingNew {
                for i in 1..=moved {
                    fs::rename(volume.join(format!("b{i}")), staged.join(format!("b{i}"))).unwrap();
                }
            }
        }
        (tmp, work)
    }

    #[test]
    fn an_interrupted_undo_of_a_failed_swap_is_finished() {
        for moved in 0..=4 {
            let (_tmp, work) = interrupted(Phase::UndoingNew, moved);
            assert_eq!(
                work.recover().unwrap().0,
                Recovered::RolledBack("set".into())
            );
            assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
            assert!(!work.pending() && !work.old().exists() && !work.staged().exists());
        }
    }

    #[test]
    fn undoing_a_failed_swap_keeps_what_a_writer_added_meanwhile() {
        let (_tmp, work) = interrupted(Phase::UndoingNew, 1);
        fs::write(work.volume.join("written-meanwhile"), "keep me").unwrap();
        assert_eq!(
            work.recover().unwrap().0,
            Recovered::RolledBack("set".into())
        );
        assert_eq!(
            names(&work.volume),
            ["a1", "a2", "a3", "a4", "written-meanwhile"]
        );
    }

    #[test]
    fn a_roll_forward_moves_an_entry_in_its_way_aside_and_says_so() {
        let (_tmp, work) = interrupted(Phase::MovingNew, 2);
        // A writer recreated a name of the new tree while the swap was interrupted.
        fs::create_dir(work.volume.join("b3")).unwrap();
        fs::write(work.volume.join("b3/written-meanwhile"), "keep me").unwrap();
        let (done, warnings) = work.recover().unwrap();
        assert_eq!(done, Recovered::RolledForward("set".into()));
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
        assert_eq!(fs::read_to_string(work.volume.join("b3")).unwrap(), "new");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("b3") && warnings[1].contains("conflicts"));
        let stamp = fs::read_dir(work.conflicts())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            fs::read_to_string(stamp.path().join("b3/written-meanwhile")).unwrap(),
            "keep me"
        );
        assert!(!work.pending(), "later tasks are not wedged");
    }

    #[test]
    fn a_swap_interrupted_in_the_old_work_directory_beside_the_volume_is_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("vol");
        fs::create_dir(&volume).unwrap();
        let legacy = Work {
            volume: volume.clone(),
            dir: tmp.path().join(".cwbackup-vol"),
        };
        fs::create_dir_all(legacy.old()).unwrap();
        fs::create_dir_all(legacy.staged()).unwrap();
        fs::write(legacy.dir.join("lock"), "").unwrap();
        fs::write(volume.join("a1"), "old").unwrap();
        fs::write(legacy.old().join("a2"), "old").unwrap();
        fs::write(legacy.staged().join("b1"), "new").unwrap();
        legacy
            .write_journal(Phase::MovingOld, "set", &Names::default())
            .unwrap();
        let work = Work::of(&volume).unwrap();
        assert!(work.pending());
        let (_, warnings) = work.recover().unwrap();
        assert!(warnings[0].contains("older cwbackup"), "{warnings:?}");
        assert_eq!(names(&volume), ["a1", "a2"]);
        assert!(!legacy.dir.exists() && !work.pending());
    }

    #[test]
    fn a_rollback_that_fails_too_names_the_directory_holding_the_old_entries() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 2);
        // The old entries cannot leave old/: an immutable directory.
        let chattr = |flag: &str| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(work.old())
                .status()
                .unwrap()
                .success()
        };
        assert!(chattr("+i"), "chattr needs root");
        let e = work.roll_back(
            Error::new(ErrorKind::IoError, "cannot move an entry"),
            Phase::MovingOld,
            "set",
            &Names::default(),
        );
        chattr("-i");
        assert!(e.message.contains("failed too"), "{}", e.message);
        assert!(
            e.message.contains(&*work.old().to_string_lossy()),
            "{}",
            e.message
        );
        assert!(work.pending(), "the journal stays for the next task");
        assert_eq!(
            work.recover().unwrap().0,
            Recovered::RolledBack("set".into())
        );
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
    }

    #[test]
    fn kept_names_stay_in_place_through_a_swap() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        fs::remove_dir(work.old()).unwrap();
        let fifo = CString::new(work.volume.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        work.swap("set", &[OsString::from("fifo")]).unwrap();
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4", "fifo"]);
    }

    #[test]
    fn a_symlink_in_place_of_the_work_directory_is_refused_and_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("vol");
        let victim = tmp.path().join("victim");
        fs::create_dir(&volume).unwrap();
        fs::create_dir(&victim).unwrap();
        std::os::unix::fs::symlink(&victim, volume.join(WORK_DIR)).unwrap();
        let work = Work::of(&volume).unwrap();
        let e = work
            .lock(Operation::Restore, Duration::ZERO, false)
            .unwrap_err();
        assert!(e.message.contains("symlink"), "{}", e.message);
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    }

    #[test]
    fn an_interrupted_move_of_the_old_entries_is_rolled_back() {
        for moved in 0..=4 {
            let (_tmp, work) = interrupted(Phase::MovingOld, moved);
            assert_eq!(
                work.recover().unwrap().0,
                Recovered::RolledBack("set".into())
            );
            assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
            assert!(!work.pending() && !work.old().exists() && !work.staged().exists());
        }
    }

    #[test]
    fn an_interrupted_move_of_the_new_entries_is_rolled_forward() {
        for moved in 0..=4 {
            let (_tmp, work) = interrupted(Phase::MovingNew, moved);
            assert_eq!(
                work.recover().unwrap().0,
                Recovered::RolledForward("set".into())
            );
            assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
            assert!(!work.pending() && !work.old().exists() && !work.staged().exists());
        }
    }

    #[test]
    fn an_interrupted_cleanup_is_finished() {
        let (_tmp, work) = interrupted(Phase::Cleanup, 4);
        assert_eq!(
            work.recover().unwrap().0,
            Recovered::CleanedUp("set".into())
        );
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
    }

    #[test]
    fn leftovers_without_a_journal_are_removed_and_the_volume_is_untouched() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        assert_eq!(work.recover().unwrap().0, Recovered::Nothing);
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
        assert!(!work.staged().exists());
    }

    #[test]
    fn a_full_swap_keeps_the_volume_directory_itself() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        fs::remove_dir(work.old()).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&work.volume).unwrap());
        work.swap("set", &[]).unwrap();
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&work.volume).unwrap()),
            inode
        );
    }
}
