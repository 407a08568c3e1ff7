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
//! a link in place of the work directory is refused, and before each destructive step the
//! work directory must still be the one first seen (device and inode) and `old/`, `staged/`,
//! `conflicts/` real directories. Moves go further: each directory is opened one component at
//! a time below the volume with O_NOFOLLOW, and entries move with `renameat2` between those
//! descriptors, so a link a container swaps in after the check is never followed. Removals
//! and journal writes go through a descriptor of their parent opened the same way
//! (`/proc/self/fd/<n>/<name>`).
//!
//! The journal names the phase, and each phase change is written (atomically, synced) only
//! after the moves of the phase before are synced:
//! - `db-restoring` (only for a restore that also restores the database, written before the
//!   database restore starts, with the set, the safety set and the staged tree's digest):
//!   nothing of the volume moved yet. Interrupted: the database may come from the set, so the
//!   staged tree is swapped in if its digest is still the recorded one; otherwise a warning
//!   says that the halves are out of step and names the safety set.
//! - `moving-old`: the volume's entries go to `old/`. Interrupted: move them back (roll back);
//!   with the database half recorded, then swap the staged tree in as for `db-restoring`.
//! - `moving-new`: the staged entries go into the volume. Interrupted: move the rest in (roll
//!   forward), unless a name of the staged tree is neither in the volume nor in `staged/`
//!   (deleted meanwhile): then roll back, saying so.
//! - `undoing-new`: an error during `moving-new` is being undone: the staged tree's entries
//!   that moved in go back to `staged/` (a name still in `staged/` never moved in, so the
//!   volume's entry of that name is a writer's and stays), then the phase is `moving-old`
//!   again and the old entries go back. Interrupted: the same, again.
//! - `cleanup`: remove `old/` and `staged/`.
//!
//! Once `moving-new` is finished and synced the swap is committed: a failure to write
//! `cleanup` or to remove the leftovers is a warning naming the path, never an error, and a
//! leftover never blocks a later task.
//!
//! A swap that fails with an error is rolled back by the same run before it returns; the
//! journal is for crashes only. Entries a restore must not delete (sockets, FIFOs and devices
//! at the volume's root that backups skip and the set does not hold) are named in the journal
//! and left in place.
//!
//! Several volumes swapped by one restore form a [`Group`], under one journal: after an error
//! every member holds its old tree again before the task returns, and after a crash the next
//! task that recovers any member brings every member to the same side, never some. A group of
//! one member is exactly the swap above (same journal, nothing more). For more members:
//! - Each member keeps its own journal and phases as above, plus `group`: the group's id and
//!   every member's volume directory (canonical, sorted). The first is the leader.
//! - One atomic record decides for all: `group.json` in the leader's work directory (written
//!   like the journal: synced temporary file, rename, directory synced). No record of the
//!   group: it did not commit, every member is rolled back (a member in `moving-new` too).
//!   `database` (written after every member's `db-restoring` journal, before the database
//!   restore starts): every member is completed from its staged tree if each still has its
//!   recorded digest, else all are rolled back and a warning names the safety set
//!   (`out-of-step` is written first, so that a crash keeps the warning). `committed`
//!   (written once every member finished `moving-new` and synced): the commit point; only
//!   cleanup is left (a member journal in `cleanup` is evidence of it too).
//! - A swap writes every member's `moving-old` journal before the first entry moves, so any
//!   member's next task finds the group; then moves the members one after the other, keeping
//!   every `old/` until the record says `committed`. A failure rolls every member back (the
//!   journals stay until all are back, so a failed rollback leaves all of them for the next
//!   task). After the commit, each member's `old/`, `staged/` and journal go, and the record
//!   last, only once no member's journal is left.
//! - Recovery of one member (a [`Work::recover`] of a single-volume task too) locks the
//!   group's other volumes itself, in sorted order, waiting as long as [`Work::lock`] was told
//!   to (`wait_for_lock_s`); a volume still busy after that is a `busy` error naming it, with
//!   nothing moved. Two tasks holding one member each may both wait and fail `busy`, never
//!   deadlock. [`Group::recover`] expects every member locked by the caller
//!   ([`Group::lock`] takes them in sorted order).
//! - A crash while the first journals are written (before every member has one) leaves
//!   nothing moved: the members are old; a member whose journal was written is cleaned by its
//!   own next task.
//! - The database half as for one volume: [`Group::next`] says `RollBack` while a member is
//!   being moved back under the `database` record (its rollback failed); the caller then puts
//!   the database back and calls [`Group::database_put_back`], which removes the record, so
//!   the next task rolls every member back. [`Group::forget_database`] removes the record,
//!   then the `db-restoring` journals, as long as nothing moved.
//! - Once [`Group::swap`] started, every member's `staged/` belongs to the journal (recovery
//!   may complete it from there): the caller must not remove it. Volumes inside one another
//!   cannot be in one group (moving the outer's entries would move the inner).
//!
//! Before this layout, the work directory was `<parent>/.cwbackup-<name>/`. A swap that a crash
//! interrupted there is still recovered (same journal), then that directory is removed.

use std::ffi::{CString, OsString};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, fsync_dir};
use crate::lockfile as lock;
use crate::task::Operation;

use super::WORK_DIR;

/// The work directory of a volume.
#[derive(Debug, Clone)]
pub struct Work {
    /// The volume directory.
    pub volume: PathBuf,
    /// `<volume>/.cwbackup-work/` (or, for recovering an old crash, the old location).
    pub dir: PathBuf,
    /// The work directory's (device, inode) when this task first saw it as a real directory:
    /// before each destructive step it must still be that directory, so that a symlink (or
    /// another directory) a container swapped in is refused, never followed.
    seen: OnceLock<(u64, u64)>,
    /// How long [`Work::lock`] was told to wait: recovering a group waits as long for the
    /// locks of the group's other volumes.
    wait: OnceLock<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    /// The staged tree is complete and synced and the database restore is about to start (or
    /// under way, or done): nothing of the volume moved yet.
    DbRestoring,
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
    /// The database half of the same restore, if it has one (recorded before its database
    /// restore starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    db: Option<DbHalf>,
    /// The group this volume is swapped with (several volumes under one journal); absent for
    /// a swap of one volume, as in journals written before groups existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<GroupRef>,
}

/// What the journal records about a restore's database half, so that recovery keeps the
/// halves together: the database may already come from `set` while the volume does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbHalf {
    /// The set the database is restored from.
    pub restored_from: String,
    /// The safety set holding the database as it was before, if one was written.
    pub safety_set: Option<String>,
    /// The staged tree's content digest: recovery rolls the volume forward only when
    /// `staged/` still has it.
    pub staged_digest: String,
}

/// The root names a swap treats specially, and the database half, as recorded in the journal.
#[derive(Debug, Clone, Default)]
struct Names {
    kept: Vec<OsString>,
    incoming: Vec<OsString>,
    db: Option<DbHalf>,
    group: Option<GroupRef>,
}

impl Names {
    /// The names a journal records.
    fn of(journal: &Journal) -> Names {
        let names = |v: &[Vec<u8>]| v.iter().cloned().map(OsString::from_vec).collect();
        Names {
            kept: names(&journal.kept),
            incoming: names(&journal.incoming),
            db: journal.db.clone(),
            group: journal.group.clone(),
        }
    }
}

/// What the journal on disk says the next task on this volume will do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// No journal: the volume is as this task left it.
    Nothing,
    /// The old tree is put back (phases `moving-old`, `undoing-new`).
    RollBack,
    /// The new tree is completed (phases `db-restoring`, `moving-new`, `cleanup`).
    RollForward,
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
    /// The database had been restored from the set (or its restore had started) when the
    /// task was interrupted, and the staged tree was complete: the volume was swapped in too,
    /// so both halves are from the set.
    Finished(String),
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
            Recovered::Finished(set) => Some(format!(
                "a restore of set {set} into {v} was interrupted after its database restore had started; the staged tree was complete, so the volume was restored from set {set} too and both halves are from it (if Connectware's database restore did not finish before the interruption, run the restore of set {set} again)"
            )),
        }
    }
}

/// What recovery did to each volume it recovered (one, or every volume of a group).
pub type Outcomes = Vec<(PathBuf, Recovered)>;

/// The volume's lock; dropping it removes the work directory (unless a crash-recovery
/// journal or reported conflicts must stay) and then releases the OS lock.
#[derive(Debug)]
pub struct VolumeLock {
    work: Work,
    /// Whether this task made (and so removes) the work directory: not in a dry run, nor on a
    /// read-only volume (which a backup may read).
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
    /// The directory below which no symlink is followed: the volume (or, for the old layout,
    /// the volume's parent). `from`, `to` and `conflicts` are opened one component at a time
    /// below it, and the moves act on the directories opened, never on names resolved again.
    root: &'a Path,
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
            seen: OnceLock::new(),
            wait: OnceLock::new(),
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
            seen: OnceLock::new(),
            wait: OnceLock::new(),
        })
    }

    /// See [`Moves::root`].
    fn root(&self) -> PathBuf {
        if self.dir.starts_with(&self.volume) {
            self.volume.clone()
        } else {
            self.dir
                .parent()
                .map_or_else(|| self.dir.clone(), Path::to_path_buf)
        }
    }

    /// Creates the work directory, refusing anything but a real directory in its place.
    fn ensure(&self) -> Result<()> {
        self.try_ensure()?
            .map_err(|e| Error::io("cannot create the work directory", &self.dir, e))
    }

    /// Like [`Work::ensure`], but a failure to create the directory comes back as the inner
    /// `io::Error` (a read-only volume: EROFS), while anything in its place is refused.
    fn try_ensure(&self) -> Result<io::Result<()>> {
        match fs::symlink_metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(self.not_a_directory(&self.dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Err(e) = DirBuilder::new().mode(0o700).create(&self.dir) {
                    return Ok(Err(e));
                }
            }
            Err(e) => return Err(Error::io("cannot read", &self.dir, e)),
        }
        self.guard(&[]).map(Ok)
    }

    fn not_a_directory(&self, path: &Path) -> Error {
        Error::new(
            ErrorKind::IoError,
            format!(
                "{} is not a directory (a symlink or a file in place of cwbackup's work directory, which it never follows): remove it and run again",
                path.display()
            ),
        )
    }

    /// Before a destructive step: the work directory must still be the real directory this
    /// task saw first (same device and inode), and each of `subs` (inside it) a real
    /// directory on the same device, or missing. A symlink (or anything else) a container
    /// put in their place after the first check is refused, never followed.
    fn guard(&self, subs: &[&Path]) -> Result<()> {
        let m =
            fs::symlink_metadata(&self.dir).map_err(|e| Error::io("cannot read", &self.dir, e))?;
        let id = (m.dev(), m.ino());
        if !m.is_dir() || *self.seen.get_or_init(|| id) != id {
            return Err(Error::new(
                ErrorKind::IoError,
                format!(
                    "{} was replaced while cwbackup worked in it (now a symlink or another directory, which it never follows); nothing more was moved: remove what is there, put back the work directory if you moved it, and run again",
                    self.dir.display()
                ),
            ));
        }
        for sub in subs {
            match fs::symlink_metadata(sub) {
                Ok(s) if s.is_dir() && s.dev() == m.dev() => {}
                Ok(_) => return Err(self.not_a_directory(sub)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("cannot read", sub, e)),
            }
        }
        Ok(())
    }

    /// Takes the volume's lock: the OS lock on the volume directory (or, where the file system
    /// refuses that, on `.cwbackup-work/lock`), plus (unless `dry_run`, which writes nothing)
    /// the work directory with the holder record in it. A backup of a read-only volume needs
    /// only the OS lock: there is no holder record then.
    pub fn lock(&self, operation: Operation, wait: Duration, dry_run: bool) -> Result<VolumeLock> {
        let _ = self.wait.set(wait);
        let what = format!("volume {}", self.volume.display());
        let held = lock::acquire_dir(
            &self.volume,
            &self.holder(),
            &self.dir.join("lock"),
            &what,
            wait,
        )?;
        let without_dir = |held| VolumeLock {
            work: self.clone(),
            owns_dir: false,
            _lock: held,
        };
        if dry_run {
            return Ok(without_dir(held));
        }
        match self.try_ensure()? {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EROFS) && operation == Operation::Backup => {
                return Ok(without_dir(held));
            }
            Err(e) => return Err(Error::io("cannot create the work directory", &self.dir, e)),
        }
        let holder = self.holder();
        self.remove(&holder)?;
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

    /// Removes a tree inside the work directory (nothing if it is missing; a symlink is
    /// removed, never followed), reached through a descriptor of its parent opened below the
    /// volume without following a symlink: a link swapped in place of the work directory after
    /// the check is not followed either.
    fn remove(&self, path: &Path) -> Result<()> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return remove_tree(path);
        };
        if fs::symlink_metadata(parent).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            return Ok(());
        }
        let fd = open_dir(&self.root(), parent)?;
        let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
        fsutil::remove_tree(&at).map_err(|e| Error::io("cannot remove", path, e))
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
        self.guard(&[&staged])?;
        self.remove(&staged)?;
        make_dir(&self.root(), &staged)?;
        Ok(staged)
    }

    /// Removes the staging directory (after a failure before the swap, or a finished swap).
    pub fn discard_staged(&self) -> Result<()> {
        self.guard(&[&self.staged()])?;
        self.remove(&self.staged())
    }

    /// Removes what this task left in the work directory, and the directory itself, unless a
    /// journal waits for recovery; `conflicts/` is kept (it was reported), and so is `lock`
    /// (the fallback lock file, still held).
    fn release(&self) {
        if self.journal_here()
            || self.group_record_here()
            || self.guard(&[&self.staged(), &self.old()]).is_err()
        {
            return;
        }
        for path in [
            self.staged(),
            self.old(),
            self.holder(),
            self.dir.join("journal.json.tmp"),
            self.dir.join(format!("{GROUP_RECORD}.tmp")),
        ] {
            let _ = self.remove(&path);
        }
        let _ = fs::remove_dir(&self.dir);
        let _ = fsync_dir(&self.volume);
    }

    /// Records, before the database restore of a restore that also swaps the volume, that the
    /// database is about to change (phase `db-restoring`): a crash from here on is recovered
    /// by completing the volume from the staged tree (complete and synced before this), or,
    /// where that cannot be, with a warning naming the safety set.
    pub fn before_database(&self, db: DbHalf) -> Result<()> {
        let set = db.restored_from.clone();
        self.write_journal(
            Phase::DbRestoring,
            &set,
            &Names {
                db: Some(db),
                ..Names::default()
            },
        )
    }

    /// Forgets a `db-restoring` journal: the swap will not happen (the database restore
    /// failed, or the volume changed before the swap and the database is put back). Any
    /// other journal stays.
    pub fn forget_database(&self) -> Result<()> {
        match self.read_journal() {
            Ok(j) if j.phase == Phase::DbRestoring => {
                self.guard(&[])?;
                fs::remove_file(self.journal())
                    .map_err(|e| Error::io("cannot remove", &self.journal(), e))?;
                fsync_dir(&self.dir).map_err(|e| Error::io("cannot sync", &self.dir, e))
            }
            _ => Ok(()),
        }
    }

    /// The database was put back from the safety set after a failed swap whose rollback the
    /// next task must still finish: the journal no longer says that the database comes from
    /// the set, so that recovery rolls the volume back and does not complete it from the set.
    pub fn database_put_back(&self) -> Result<()> {
        match self.read_journal() {
            Ok(j) if j.db.is_some() => {
                let names = Names {
                    db: None,
                    ..Names::of(&j)
                };
                self.write_journal(j.phase, &j.set, &names)
            }
            _ => Ok(()),
        }
    }

    /// What the journal on disk says the next task on this volume will do.
    pub fn next(&self) -> Next {
        match self.read_journal() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Next::Nothing,
            Ok(j) if matches!(j.phase, Phase::MovingOld | Phase::UndoingNew) => Next::RollBack,
            Ok(_) => Next::RollForward,
            // An unreadable journal stops the next task until an operator looks: the volume
            // is not what this task leaves behind either way; treat it as not swapped in.
            Err(_) => Next::RollBack,
        }
    }

    /// Finishes or rolls back a swap that a crash interrupted (here or in the old work
    /// directory beside the volume). Call with the volume lock held. Returns what was done and
    /// warnings about entries moved aside (or leftovers that could not be removed).
    ///
    /// If the interrupted swap was one of several volumes swapped together (a [`Group`]),
    /// the group's other volumes are locked here too (waiting as long as [`Work::lock`] was
    /// told to) and brought to the same side; their outcomes come back as warnings.
    pub fn recover(&self) -> Result<(Recovered, Vec<String>)> {
        let (list, mut warnings) = self.recover_with(&[self])?;
        let mut mine = Recovered::Nothing;
        for (volume, done) in list {
            if same_dir(&volume, &self.volume) {
                mine = done;
            } else {
                warnings.extend(done.describe(&volume));
            }
        }
        Ok((mine, warnings))
    }

    /// [`Work::recover`], where the volumes in `held` are locked by the caller already; one
    /// outcome per volume recovered (this one, and the other members of its group if it was
    /// swapped in a group).
    fn recover_with(&self, held: &[&Work]) -> Result<(Outcomes, Vec<String>)> {
        let mut warnings = Vec::new();
        if let Some(legacy) = self.legacy().filter(Work::journal_here) {
            let (done, more) = legacy.recover_here().map_err(interrupted)?;
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
        let list = match self.pending_group()? {
            Some(group) => {
                let (list, more) =
                    recover_group(&group, held, self.lock_wait()).map_err(interrupted)?;
                warnings.extend(more);
                list
            }
            None => {
                let (done, more) = self.recover_here().map_err(interrupted)?;
                warnings.extend(more);
                vec![(self.volume.clone(), done)]
            }
        };
        for (volume, _) in &list {
            let conflicts = volume.join(WORK_DIR).join("conflicts");
            if conflicts.exists() {
                warnings.push(format!(
                    "{} holds entries that stood in the way of an interrupted restore: compare them with the volume, then delete it",
                    conflicts.display()
                ));
            }
        }
        Ok((list, warnings))
    }

    fn recover_here(&self) -> Result<(Recovered, Vec<String>)> {
        let journal = match self.read_journal() {
            Ok(journal) => journal,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // No swap was under way: whatever is here is a stage that never started, or
                // leftovers of a finished one. Removing them is best effort: a leftover never
                // blocks a task.
                let mut warnings = Vec::new();
                if fs::symlink_metadata(&self.dir).is_ok_and(|m| m.is_dir()) {
                    self.guard(&[&self.staged(), &self.old()])?;
                    for path in [self.staged(), self.old()] {
                        if let Err(e) = self.remove(&path) {
                            warnings.push(leftover(&path, &e));
                        }
                    }
                }
                return Ok((Recovered::Nothing, warnings));
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Error::new(
                    ErrorKind::IoError,
                    format!(
                        "the restore journal {} is unreadable ({e}): compare {} with old/ and staged/ beside it by hand, then remove {}",
                        self.journal().display(),
                        self.volume.display(),
                        self.journal().display()
                    ),
                ));
            }
            Err(e) => return Err(Error::io("cannot read", &self.journal(), e)),
        };
        self.guard(&[&self.staged(), &self.old(), &self.conflicts()])?;
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
            db: journal.db.clone(),
            group: None,
        };
        let set = journal.set;
        let conflicts = self.conflicts();
        let mut warnings = Vec::new();
        let outcome = match journal.phase {
            Phase::DbRestoring => Recovered::RolledBack(set.clone()),
            Phase::MovingOld => {
                warnings = self.move_old_back(&conflicts)?;
                Recovered::RolledBack(set.clone())
            }
            Phase::UndoingNew => {
                self.undo_new(&set, &names)?;
                warnings = self.move_old_back(&conflicts)?;
                Recovered::RolledBack(set.clone())
            }
            Phase::MovingNew => match self.missing_incoming(&names) {
                None => {
                    warnings = move_entries(
                        &self.staged(),
                        &self.volume,
                        &Moves {
                            root: &self.root(),
                            skip: &[],
                            only: None,
                            conflicts: Some(&conflicts),
                        },
                    )?;
                    Recovered::RolledForward(set.clone())
                }
                Some(missing) => {
                    // The new tree cannot be completed: put the old one back rather than
                    // delete it.
                    warnings.push(format!(
                        "the new tree of the interrupted restore of set {set} lacks {} (neither in {} nor in {}: deleted meanwhile?), so it was not completed and the old tree was put back instead",
                        missing.to_string_lossy(),
                        self.volume.display(),
                        self.staged().display()
                    ));
                    self.undo_new(&set, &names)?;
                    warnings.extend(self.move_old_back(&conflicts)?);
                    Recovered::RolledBack(set.clone())
                }
            },
            Phase::Cleanup => Recovered::CleanedUp(set.clone()),
        };
        fsync_dir(&self.volume).map_err(|e| Error::io("cannot sync", &self.volume, e))?;
        // The database half: if it may come from the set while the volume is the old tree
        // again, complete the volume from the staged tree, or say loudly what to do.
        if let (Recovered::RolledBack(_), Some(db)) = (&outcome, &names.db) {
            return self.forward_after_database(&set, db, warnings);
        }
        warnings.extend(self.finish());
        Ok((outcome, warnings))
    }

    /// The first name of the staged tree that is neither in the volume nor in `staged/`.
    fn missing_incoming(&self, names: &Names) -> Option<OsString> {
        names
            .incoming
            .iter()
            .find(|n| {
                fs::symlink_metadata(self.volume.join(n)).is_err()
                    && fs::symlink_metadata(self.staged().join(n)).is_err()
            })
            .cloned()
    }

    /// Recovery of a restore whose database may already come from `db.restored_from` while
    /// the volume holds its old tree again: swaps the staged tree in when it is still complete
    /// (its digest is the one recorded), else warns naming the safety set to restore the
    /// database from.
    fn forward_after_database(
        &self,
        set: &str,
        db: &DbHalf,
        mut warnings: Vec<String>,
    ) -> Result<(Recovered, Vec<String>)> {
        let complete = fs::symlink_metadata(self.staged()).is_ok_and(|m| m.is_dir())
            && crate::volume::live(&self.staged()).is_ok_and(|(_, d)| d == db.staged_digest);
        let failed = if complete {
            let kept = special_at_root(&self.volume, &self.staged());
            let names = Names {
                kept,
                incoming: Vec::new(),
                db: Some(db.clone()),
                group: None,
            };
            match self.swap_with(set, names) {
                Ok(more) => {
                    warnings.extend(more);
                    return Ok((Recovered::Finished(set.to_string()), warnings));
                }
                // The swap's own rollback failed: its journal stays for the next task.
                Err(e) if self.journal_here() => return Err(e),
                Err(e) => format!("swapping the staged tree in failed ({})", e.message),
            }
        } else {
            format!(
                "its staged tree in {} is no longer complete",
                self.staged().display()
            )
        };
        let before = match &db.safety_set {
            Some(s) => format!(
                "restore the database from safety set {s} (its db.tgz, see README) to put the installation back as it was, or run the restore of set {set} again"
            ),
            None => format!(
                "no safety set was written: run the restore of set {set} again to bring the volume in line"
            ),
        };
        warnings.push(format!(
            "the database may have been restored from set {set} by an interrupted restore, but the volume {} holds its old tree ({failed}): the halves are out of step; {before}",
            self.volume.display()
        ));
        warnings.extend(self.finish());
        Ok((Recovered::RolledBack(set.to_string()), warnings))
    }

    /// Replaces the volume's entries with the staged tree's, leaving the root names in `kept`
    /// where they are. Call with the volume lock held and the staged tree complete and synced.
    /// On an error the old tree is put back before this returns, and the error says so (or,
    /// if that fails too, names the directory that holds the old entries). Once every new
    /// entry is in and synced the swap is done: a failure to clean up after it is a warning
    /// (returned), never an error.
    pub fn swap(&self, set: &str, kept: &[OsString]) -> Result<Vec<String>> {
        let db = match self.read_journal() {
            Ok(j) if j.phase == Phase::DbRestoring => j.db,
            _ => None,
        };
        self.swap_with(
            set,
            Names {
                kept: kept.to_vec(),
                incoming: Vec::new(),
                db,
                group: None,
            },
        )
    }

    fn swap_with(&self, set: &str, mut names: Names) -> Result<Vec<String>> {
        match self.move_in(set, &mut names) {
            Ok(()) => {}
            Err((e, None)) => return Err(e),
            Err((e, Some(reached))) => return Err(self.roll_back(e, reached, set, &names)),
        }
        // Committed: every new entry is in and synced. From here on nothing is undone.
        let mut warnings = Vec::new();
        if let Err(e) = self.write_journal(Phase::Cleanup, set, &names) {
            warnings.push(format!(
                "set {set} was swapped in completely, but {}; the leftovers are removed by the next task",
                e.message
            ));
        }
        warnings.extend(self.finish());
        Ok(warnings)
    }

    /// The moves of a swap, journaled: phase `moving-old` (the volume's entries go to
    /// `old/`), then `moving-new` (the staged entries come in), each synced before the next
    /// phase is written. On an error, the phase reached (None: nothing was journaled or moved
    /// yet), for the caller to roll back; `old/` and the journal are left for it.
    fn move_in(
        &self,
        set: &str,
        names: &mut Names,
    ) -> std::result::Result<(), (Error, Option<Phase>)> {
        self.start_move(set, names).map_err(|e| (e, None))?;
        self.move_rest(set, names)
    }

    /// The start of a swap: no `old/`, and the journal in phase `moving-old` (nothing moved).
    fn start_move(&self, set: &str, names: &Names) -> Result<()> {
        let old = self.old();
        self.guard(&[&old, &self.staged()])?;
        self.remove(&old)?;
        self.write_journal(Phase::MovingOld, set, names)
    }

    /// The moves of a swap after [`Work::start_move`]; on an error, the phase reached.
    fn move_rest(
        &self,
        set: &str,
        names: &mut Names,
    ) -> std::result::Result<(), (Error, Option<Phase>)> {
        let old = self.old();
        let mut reached = Phase::MovingOld;
        let kept = names.kept.clone();
        let outcome = (|| -> Result<()> {
            self.guard(&[&old])?;
            make_dir(&self.root(), &old)?;
            self.guard(&[&old])?;
            move_entries(
                &self.volume,
                &old,
                &Moves {
                    root: &self.root(),
                    skip: &kept,
                    only: None,
                    conflicts: None,
                },
            )?;
            sync_dirs(&[&self.volume, &old])?;
            names.incoming = root_names(&self.staged())?;
            self.write_journal(Phase::MovingNew, set, names)?;
            reached = Phase::MovingNew;
            self.guard(&[&self.staged()])?;
            move_entries(
                &self.staged(),
                &self.volume,
                &Moves {
                    root: &self.root(),
                    skip: &[],
                    only: None,
                    conflicts: None,
                },
            )?;
            sync_dirs(&[&self.volume, &self.staged()])
        })();
        outcome.map_err(|e| (e, Some(reached)))
    }

    /// Undoes a swap that failed with `error` in phase `reached`; the error, saying what
    /// became of the volume.
    fn roll_back(&self, error: Error, reached: Phase, set: &str, names: &Names) -> Error {
        let mut leftovers = Vec::new();
        let undone = (|| -> Result<Vec<String>> {
            if reached == Phase::MovingNew {
                self.undo_new(set, names)?;
            }
            let warnings = self.move_old_back(&self.conflicts())?;
            fsync_dir(&self.volume).map_err(|e| Error::io("cannot sync", &self.volume, e))?;
            leftovers = self.finish();
            Ok(warnings)
        })();
        let leftovers = if leftovers.is_empty() {
            String::new()
        } else {
            format!(" ({})", leftovers.join("; "))
        };
        let message = match undone {
            Ok(aside) if aside.is_empty() => format!(
                "{}; the restore was rolled back: the volume {} holds its old entries again and nothing of set {set} was swapped in{leftovers}",
                error.message,
                self.volume.display()
            ),
            Ok(aside) => format!(
                "{}; the restore was rolled back: the volume {} holds its old entries again ({}){leftovers}",
                error.message,
                self.volume.display(),
                aside.join("; ")
            ),
            Err(again) => format!(
                "{}; rolling the volume back failed too ({}): the old entries are in {}; the next task on this volume tries again, or by hand: move the entries of {} back into {} (an entry of set {set} in the way goes to {}), then remove {}",
                error.message,
                again.message,
                self.old().display(),
                self.old().display(),
                self.volume.display(),
                self.staged().display(),
                self.journal().display()
            ),
        };
        Error { message, ..error }.detail("old_entries", self.old().display().to_string())
    }

    /// Phase `undoing-new`: the staged tree's entries go back from the volume to `staged/`
    /// (anything else a writer added stays); then the phase is `moving-old` again. A name
    /// still in `staged/` never moved in: the volume's entry of that name is a writer's, and
    /// stays (if the old tree has that name too, [`Work::move_old_back`] moves it to
    /// `conflicts/` and says so).
    fn undo_new(&self, set: &str, names: &Names) -> Result<()> {
        self.write_journal(Phase::UndoingNew, set, names)?;
        let staged = self.staged();
        self.guard(&[&staged])?;
        if fs::symlink_metadata(&staged).is_err() {
            make_dir(&self.root(), &staged)?;
        }
        let moved_in: Vec<OsString> = names
            .incoming
            .iter()
            .filter(|n| fs::symlink_metadata(staged.join(n)).is_err())
            .cloned()
            .collect();
        self.guard(&[&staged])?;
        move_entries(
            &self.volume,
            &staged,
            &Moves {
                root: &self.root(),
                skip: &names.kept,
                only: Some(&moved_in),
                conflicts: None,
            },
        )?;
        sync_dirs(&[&self.volume, &staged])?;
        self.write_journal(Phase::MovingOld, set, names)
    }

    /// Moves the old entries back into the volume; an entry in the way goes to `conflicts`.
    fn move_old_back(&self, conflicts: &Path) -> Result<Vec<String>> {
        self.guard(&[&self.old(), conflicts])?;
        move_entries(
            &self.old(),
            &self.volume,
            &Moves {
                root: &self.root(),
                skip: &[],
                only: None,
                conflicts: Some(conflicts),
            },
        )
    }

    /// Removes `old/`, `staged/` and then the journal, each as far as it can: the volume is
    /// final when this is called, so what cannot be removed is a warning naming it (the next
    /// task tries again), never an error.
    fn finish(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Err(e) = self.guard(&[&self.old(), &self.staged()]) {
            warnings.push(format!(
                "the leftovers in {} were not removed: {}",
                self.dir.display(),
                e.message
            ));
            return warnings;
        }
        for path in [self.old(), self.staged()] {
            if let Err(e) = self.remove(&path) {
                warnings.push(leftover(&path, &e));
            }
        }
        match fs::remove_file(self.journal()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!(
                "cannot remove the finished restore's journal {} ({e}): the next task on this volume finds nothing left to do and tries again",
                self.journal().display()
            )),
        }
        let _ = fsync_dir(&self.dir);
        warnings
    }

    fn read_journal(&self) -> io::Result<Journal> {
        read_json(&self.journal())
    }

    /// Writes the journal atomically: a synced temporary file renamed over it, then the
    /// directory synced.
    fn write_journal(&self, phase: Phase, set: &str, names: &Names) -> Result<()> {
        let bytes = serde_json::to_vec(&Journal {
            phase,
            set: set.to_string(),
            kept: names.kept.iter().map(|k| k.as_bytes().to_vec()).collect(),
            incoming: names
                .incoming
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            db: names.db.clone(),
            group: names.group.clone(),
        })
        .expect("a journal is JSON");
        self.write_atomic("journal.json", &bytes, "cannot write the restore journal")
    }

    /// Writes `name` in the work directory atomically: a synced temporary file renamed over
    /// it, then the directory synced; all through a descriptor of the work directory opened
    /// without following a symlink.
    fn write_atomic(&self, name: &str, bytes: &[u8], what: &str) -> Result<()> {
        self.guard(&[])?;
        let dir_fd = open_dir(&self.root(), &self.dir)?;
        let at = PathBuf::from(format!("/proc/self/fd/{}", dir_fd.as_raw_fd()));
        let tmp = at.join(format!("{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        (|| -> io::Result<()> {
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            io::Write::write_all(&mut f, bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, at.join(name))?;
            fsync_dir(&at)
        })()
        .map_err(|e| Error::io(what, &self.dir.join(name), e))?;
        crash_point();
        Ok(())
    }

    fn journal_here(&self) -> bool {
        fs::symlink_metadata(self.journal()).is_ok()
    }

    /// Whether an interrupted swap waits to be recovered (here or in the old location).
    pub fn pending(&self) -> bool {
        self.journal_here()
            || self.group_record_here()
            || self.legacy().is_some_and(|l| l.journal_here())
    }
}

// ----- Several volumes under one journal -----

/// The file in the leader's work directory that holds a group's decision.
const GROUP_RECORD: &str = "group.json";

/// The group a member's journal belongs to: the group's id (unique to one swap) and its
/// members' volume directories, canonical and sorted; the first is the leader, whose work
/// directory holds the group's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GroupRef {
    id: String,
    members: Vec<Vec<u8>>,
}

impl GroupRef {
    fn paths(&self) -> Vec<PathBuf> {
        self.members
            .iter()
            .map(|m| PathBuf::from(OsString::from_vec(m.clone())))
            .collect()
    }
}

/// A group's decision, the one atomic record that says which side every member ends on. No
/// record of the group (none, or another group's) means that it never committed and that
/// no database restore was under way: every member is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Decision {
    /// Every member's staged tree is complete and synced and the database restore may have
    /// started: every member is completed from its staged tree (if each still has its digest;
    /// else every member is rolled back and a warning names the safety set).
    Database,
    /// Every member's new tree is in and synced: only cleanup is left.
    Committed,
    /// The database may come from the set, but a staged tree was incomplete: every member is
    /// rolled back and a warning says that the halves are out of step.
    OutOfStep,
}

/// `group.json` in the leader's work directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupRecord {
    id: String,
    set: String,
    members: Vec<Vec<u8>>,
    decision: Decision,
    /// The database half, one for each member (in `members`' order, for its staged digest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    db: Vec<DbHalf>,
}

/// Several volumes swapped under one journal: after an error, every member holds its old
/// tree again before [`Group::swap`] returns; after a crash, the next task that recovers any
/// member (through [`Group::recover`] or [`Work::recover`]) brings all of them to the same
/// side. A group of one member is exactly the single-volume swap of [`Work`] (same journal,
/// no group record).
#[derive(Debug)]
pub struct Group {
    /// The members, sorted by their canonical volume directory; the first is the leader.
    works: Vec<Work>,
    /// For each member in the caller's order, its index in `works`.
    position: Vec<usize>,
    group: GroupRef,
}

impl Group {
    /// A group of the given volumes' work directories (in any order: the caller's order is
    /// the order of [`Group::before_database`]'s and [`Group::swap`]'s per-member arguments).
    /// Refuses no member, the same volume twice, and a volume inside another (moving the
    /// outer volume's entries would move the inner one).
    pub fn new(members: Vec<Work>) -> Result<Group> {
        if members.is_empty() {
            return Err(Error::new(
                ErrorKind::InternalError,
                "a restore group needs at least one volume",
            ));
        }
        let canonical = members
            .iter()
            .map(|w| {
                fs::canonicalize(&w.volume).map_err(|e| Error::io("cannot read", &w.volume, e))
            })
            .collect::<Result<Vec<PathBuf>>>()?;
        for (i, a) in canonical.iter().enumerate() {
            for (j, b) in canonical.iter().enumerate() {
                if i != j && a.starts_with(b) {
                    return Err(Error::new(
                        ErrorKind::InvalidTask,
                        format!(
                            "volume {} is {} volume {}: volumes restored together must be apart",
                            members[i].volume.display(),
                            if a == b { "the same as" } else { "inside" },
                            members[j].volume.display()
                        ),
                    ));
                }
            }
        }
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| canonical[a].cmp(&canonical[b]));
        let mut position = vec![0; members.len()];
        for (sorted, &i) in order.iter().enumerate() {
            position[i] = sorted;
        }
        let now = std::time::SystemTime::now();
        let nanos = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let group = GroupRef {
            id: format!("{}-{}-{nanos:09}", clock::id_stamp(now), std::process::id()),
            members: order
                .iter()
                .map(|&i| canonical[i].as_os_str().as_bytes().to_vec())
                .collect(),
        };
        let works = order.iter().map(|&i| members[i].clone()).collect();
        Ok(Group {
            works,
            position,
            group,
        })
    }

    /// The members, in the caller's order.
    pub fn members(&self) -> Vec<&Work> {
        self.position.iter().map(|&p| &self.works[p]).collect()
    }

    /// Takes every member's lock ([`Work::lock`]) in the order of their canonical paths, so
    /// that two tasks locking overlapping groups never wait for each other in a cycle.
    pub fn lock(
        &self,
        operation: Operation,
        wait: Duration,
        dry_run: bool,
    ) -> Result<Vec<VolumeLock>> {
        self.works
            .iter()
            .map(|w| w.lock(operation, wait, dry_run))
            .collect()
    }

    /// The only member of a group of one: everything is then [`Work`]'s single-volume code.
    fn single(&self) -> Option<&Work> {
        (self.works.len() == 1).then(|| &self.works[0])
    }

    /// Per-member arguments in the caller's order, in `works`' order.
    fn sorted<T: Clone>(&self, per_member: &[T]) -> Result<Vec<T>> {
        if per_member.len() != self.works.len() {
            return Err(Error::new(
                ErrorKind::InternalError,
                format!(
                    "{} values given for a restore group of {} volumes",
                    per_member.len(),
                    self.works.len()
                ),
            ));
        }
        let mut sorted = per_member.to_vec();
        for (i, v) in per_member.iter().enumerate() {
            sorted[self.position[i]] = v.clone();
        }
        Ok(sorted)
    }

    /// Whether an interrupted swap waits to be recovered on any member.
    pub fn pending(&self) -> bool {
        self.works.iter().any(Work::pending)
    }

    /// Finishes or rolls back every interrupted swap on the members (call with every
    /// member's lock held): a single-volume one as [`Work::recover`] does, a group's for all
    /// of its volumes together, locking those of them that are not members of this group
    /// (waiting as long as the members' locks were told to). One outcome per volume
    /// recovered (for [`Recovered::describe`]), and warnings.
    pub fn recover(&self) -> Result<(Outcomes, Vec<String>)> {
        if let Some(w) = self.single() {
            let (done, warnings) = w.recover()?;
            return Ok((vec![(w.volume.clone(), done)], warnings));
        }
        let held: Vec<&Work> = self.works.iter().collect();
        let mut done: Vec<(PathBuf, Recovered)> = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        for w in &self.works {
            let (list, more) = w.recover_with(&held)?;
            for m in more {
                if !warnings.contains(&m) {
                    warnings.push(m);
                }
            }
            for (volume, outcome) in list {
                match done.iter_mut().find(|(v, _)| same_dir(v, &volume)) {
                    Some(slot) if slot.1 == Recovered::Nothing => slot.1 = outcome,
                    Some(_) => {}
                    None => done.push((volume, outcome)),
                }
            }
        }
        Ok((done, warnings))
    }

    /// Records, before the database restore, that the database is about to change: every
    /// member's journal in phase `db-restoring`, then the group's record `database` (the
    /// commit point of this half: a crash from then on completes every member from its staged
    /// tree). `halves` holds one [`DbHalf`] per member, in the caller's order, each with its
    /// staged tree's digest and the same set and safety set. On an error nothing is left
    /// recorded.
    pub fn before_database(&self, halves: &[DbHalf]) -> Result<()> {
        if let Some(w) = self.single() {
            let half = self.sorted(halves)?.remove(0);
            return w.before_database(half);
        }
        let halves = self.sorted(halves)?;
        let first = &halves[0];
        if halves
            .iter()
            .any(|h| h.restored_from != first.restored_from || h.safety_set != first.safety_set)
        {
            return Err(Error::new(
                ErrorKind::InternalError,
                "the volumes of one restore group name different sets",
            ));
        }
        let set = first.restored_from.clone();
        let names = Names {
            group: Some(self.group.clone()),
            ..Names::default()
        };
        let written = (|| -> Result<()> {
            for w in &self.works {
                w.write_journal(Phase::DbRestoring, &set, &names)?;
            }
            self.works[0].write_group_record(&GroupRecord {
                id: self.group.id.clone(),
                set: set.clone(),
                members: self.group.members.clone(),
                decision: Decision::Database,
                db: halves.clone(),
            })
        })();
        if let Err(e) = written {
            let _ = self.forget(true);
            return Err(e);
        }
        Ok(())
    }

    /// Forgets what [`Group::before_database`] recorded, as long as nothing moved yet (the
    /// database restore failed, or a volume changed before the swap): the group's record
    /// first, then the members' `db-restoring` journals. Any other journal stays.
    pub fn forget_database(&self) -> Result<()> {
        if let Some(w) = self.single() {
            return w.forget_database();
        }
        self.forget(false)
    }

    fn forget(&self, anyway: bool) -> Result<()> {
        let record = group_record_of(&self.works, &self.group);
        let mut ours = Vec::new();
        for w in &self.works {
            if let Ok(j) = w.read_journal()
                && j.group.as_ref().is_some_and(|g| g.id == self.group.id)
            {
                ours.push((w, j.phase));
            }
        }
        let untouched = ours.iter().all(|(_, p)| *p == Phase::DbRestoring)
            && matches!(
                &record,
                Ok(None)
                    | Ok(Some(GroupRecord {
                        decision: Decision::Database,
                        ..
                    }))
            );
        if !untouched && !anyway {
            return Ok(());
        }
        if matches!(record, Ok(Some(_))) || anyway {
            self.works[0].remove_group_record(&self.group)?;
        }
        for (w, phase) in ours {
            if phase == Phase::DbRestoring {
                w.guard(&[])?;
                fs::remove_file(w.journal())
                    .map_err(|e| Error::io("cannot remove", &w.journal(), e))?;
                fsync_dir(&w.dir).map_err(|e| Error::io("cannot sync", &w.dir, e))?;
                crash_point();
            }
        }
        Ok(())
    }

    /// The database was put back from the safety set after a failed swap whose rollback the
    /// next task must still finish: the group's record no longer says that the database comes
    /// from the set, so that recovery rolls every member back and completes none from the set.
    pub fn database_put_back(&self) -> Result<()> {
        if let Some(w) = self.single() {
            return w.database_put_back();
        }
        match group_record_of(&self.works, &self.group) {
            Ok(Some(r)) if r.decision == Decision::Database => {
                self.works[0].remove_group_record(&self.group)
            }
            _ => Ok(()),
        }
    }

    /// What the journals and the group's record on disk say the next task does with the
    /// members: the new trees are completed when the group committed, or when the database
    /// restore may have started and no member is being moved back; else the old trees are
    /// put back.
    pub fn next(&self) -> Next {
        if let Some(w) = self.single() {
            return w.next();
        }
        let record = match group_record_of(&self.works, &self.group) {
            Ok(r) => r,
            Err(_) => return Next::RollBack,
        };
        let mut phases = Vec::new();
        for w in &self.works {
            match w.read_journal() {
                Ok(j) if j.group.as_ref().is_some_and(|g| g.id == self.group.id) => {
                    phases.push(j.phase)
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => return Next::RollBack,
            }
        }
        let decision = record.map(|r| r.decision);
        if decision.is_none() && phases.is_empty() {
            return Next::Nothing;
        }
        if decision == Some(Decision::Committed) || phases.contains(&Phase::Cleanup) {
            return Next::RollForward;
        }
        if decision == Some(Decision::Database)
            && !phases
                .iter()
                .any(|p| matches!(p, Phase::MovingOld | Phase::UndoingNew))
        {
            return Next::RollForward;
        }
        Next::RollBack
    }

    /// Replaces every member's entries with its staged tree's, leaving the root names in its
    /// `kept` (one list per member, in the caller's order) in place. Call with every member's
    /// lock held and every staged tree complete and synced. Members move one after the other
    /// (`moving-old`, `moving-new`), every `old/` kept; when all are in and synced, the group's
    /// record `committed` is written: that is the commit point. On an error before it, every
    /// member is rolled back before this returns, and the error says so (or, if a rollback
    /// fails too, names the directory holding that member's old entries; the journals stay
    /// for the next task, which rolls all of them back). After it, a failure to clean up is a
    /// warning (returned), never an error.
    pub fn swap(&self, set: &str, kept: &[Vec<OsString>]) -> Result<Vec<String>> {
        if let Some(w) = self.single() {
            let kept = self.sorted(kept)?.remove(0);
            return w.swap(set, &kept);
        }
        let kept = self.sorted(kept)?;
        swap_members(&self.works, &self.group, set, &kept)
    }
}

impl Work {
    fn group_record(&self) -> PathBuf {
        self.dir.join(GROUP_RECORD)
    }

    fn group_record_here(&self) -> bool {
        fs::symlink_metadata(self.group_record()).is_ok()
    }

    fn write_group_record(&self, record: &GroupRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).expect("a group record is JSON");
        self.write_atomic(
            GROUP_RECORD,
            &bytes,
            "cannot write the record of the restore group",
        )
    }

    /// Removes this (the leader's) record of `group`, if it is that group's.
    fn remove_group_record(&self, group: &GroupRef) -> Result<()> {
        match read_json::<GroupRecord>(&self.group_record()) {
            Ok(r) if r.id != group.id => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            _ => {}
        }
        self.guard(&[])?;
        match fs::remove_file(self.group_record()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", &self.group_record(), e)),
        }
        fsync_dir(&self.dir).map_err(|e| Error::io("cannot sync", &self.dir, e))?;
        crash_point();
        Ok(())
    }

    fn lock_wait(&self) -> Duration {
        self.wait.get().copied().unwrap_or(Duration::ZERO)
    }

    /// The group of an interrupted swap that this volume belongs to: its journal's, or (for
    /// a leader whose own journal is gone already) its group record's.
    fn pending_group(&self) -> Result<Option<GroupRef>> {
        match self.read_journal() {
            Ok(j) => return Ok(j.group),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // An unreadable journal: recover_here says so.
            Err(_) => return Ok(None),
        }
        match read_json::<GroupRecord>(&self.group_record()) {
            Ok(r) => Ok(Some(GroupRef {
                id: r.id,
                members: r.members,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unreadable(&self.group_record(), &e, &self.volume)),
        }
    }
}

/// The error for an unreadable journal or group record.
fn unreadable(path: &Path, e: &io::Error, volume: &Path) -> Error {
    Error::new(
        ErrorKind::IoError,
        format!(
            "the restore journal {} is unreadable ({e}): compare {} with old/ and staged/ beside it by hand, then remove {}",
            path.display(),
            volume.display(),
            path.display()
        ),
    )
}

/// Whether two paths name the same directory (device and inode; the paths themselves when
/// either cannot be read).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => a == b,
    }
}

/// The leader's record of `group` (`works` sorted, the leader first); None when there is
/// none or it is another group's.
fn group_record_of(works: &[Work], group: &GroupRef) -> Result<Option<GroupRecord>> {
    let leader = &works[0];
    match read_json::<GroupRecord>(&leader.group_record()) {
        Ok(r) if r.id == group.id => Ok(Some(r)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unreadable(&leader.group_record(), &e, &leader.volume)),
    }
}

fn volumes_of(works: &[Work]) -> String {
    works
        .iter()
        .map(|w| w.volume.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The group swap (`works` sorted, the leader first; `kept` in the same order).
fn swap_members(
    works: &[Work],
    group: &GroupRef,
    set: &str,
    kept: &[Vec<OsString>],
) -> Result<Vec<String>> {
    let previous = group_record_of(works, group)?;
    // Every member's journal first (phase moving-old, nothing moved yet), so that the next
    // task on any member knows the whole group, whatever it finds.
    let mut touched: Vec<(usize, Phase, Names)> = Vec::new();
    for (i, w) in works.iter().enumerate() {
        let names = Names {
            kept: kept[i].clone(),
            group: Some(group.clone()),
            ..Names::default()
        };
        if let Err(e) = w.start_move(set, &names) {
            return Err(roll_back_members(works, group, &touched, e, set));
        }
        touched.push((i, Phase::MovingOld, names));
    }
    // Then each member's moves, one member after the other; every old/ is kept.
    for t in 0..touched.len() {
        let i = touched[t].0;
        let moved = works[i].move_rest(set, &mut touched[t].2);
        match moved {
            Ok(()) => touched[t].1 = Phase::MovingNew,
            Err((e, reached)) => {
                touched[t].1 = reached.unwrap_or(Phase::MovingOld);
                return Err(roll_back_members(works, group, &touched, e, set));
            }
        }
    }
    // The commit point: one atomic record for the whole group.
    let committed = works[0].write_group_record(&GroupRecord {
        id: group.id.clone(),
        set: set.to_string(),
        members: group.members.clone(),
        decision: Decision::Committed,
        db: previous.as_ref().map(|r| r.db.clone()).unwrap_or_default(),
    });
    if let Err(e) = committed {
        // The record may have been renamed into place before the error (a failed directory
        // sync): put back what it said before rolling back.
        let restored = match &previous {
            Some(r) => works[0].write_group_record(r),
            None => works[0].remove_group_record(group),
        };
        if let Err(again) = restored {
            return Err(Error {
                message: format!(
                    "{}; and it could not be taken back ({}): the volumes {} hold the trees of set {set} for now, and the next task on any of them finishes or rolls back all of them as {} says",
                    e.message,
                    again.message,
                    volumes_of(works),
                    works[0].group_record().display()
                ),
                ..e
            });
        }
        return Err(roll_back_members(works, group, &touched, e, set));
    }
    // Committed: every member's new tree is in and synced. From here on nothing is undone.
    let mut warnings = Vec::new();
    for (i, _, names) in &touched {
        let w = &works[*i];
        if let Err(e) = w.write_journal(Phase::Cleanup, set, names) {
            warnings.push(format!(
                "set {set} was swapped into {} completely, but {}; the leftovers are removed by the next task",
                w.volume.display(),
                e.message
            ));
        }
    }
    warnings.extend(finish_members(works, &vec![true; works.len()], group));
    Ok(warnings)
}

/// Undoes a group swap that failed with `error`: every member in `touched` (with the phase it
/// reached) goes back to its old tree. Only when all are back is anything removed (`old/`,
/// `staged/`, the journals, then the group's record), so that a crash or a failed rollback
/// leaves every journal for the next task. The error, saying what became of the volumes.
fn roll_back_members(
    works: &[Work],
    group: &GroupRef,
    touched: &[(usize, Phase, Names)],
    error: Error,
    set: &str,
) -> Error {
    let mut aside = Vec::new();
    let mut failed: Option<(usize, Error)> = None;
    for (i, reached, names) in touched.iter().rev() {
        let w = &works[*i];
        let undone = (|| -> Result<Vec<String>> {
            if *reached == Phase::MovingNew {
                w.undo_new(set, names)?;
            }
            let moved = w.move_old_back(&w.conflicts())?;
            fsync_dir(&w.volume).map_err(|e| Error::io("cannot sync", &w.volume, e))?;
            Ok(moved)
        })();
        match undone {
            Ok(moved) => aside.extend(moved),
            Err(e) => {
                if failed.is_none() {
                    failed = Some((*i, e));
                }
            }
        }
    }
    let volumes = volumes_of(works);
    if let Some((i, again)) = failed {
        let w = &works[i];
        let message = format!(
            "{}; rolling the volume {} back failed too ({}): its old entries are in {}; the next task on {} rolls back every volume of the group ({volumes}), or by hand: move the entries of {} back into {} (an entry of set {set} in the way goes to {}), then remove the journal.json in each volume's {WORK_DIR} and {}",
            error.message,
            w.volume.display(),
            again.message,
            w.old().display(),
            w.volume.display(),
            w.old().display(),
            w.volume.display(),
            w.staged().display(),
            works[0].group_record().display()
        );
        return Error { message, ..error }.detail("old_entries", w.old().display().to_string());
    }
    let leftovers = finish_members(works, &vec![true; works.len()], group);
    let leftovers = if leftovers.is_empty() {
        String::new()
    } else {
        format!(" ({})", leftovers.join("; "))
    };
    let message = if aside.is_empty() {
        format!(
            "{}; the restore was rolled back: the volumes {volumes} hold their old entries again and nothing of set {set} was swapped in{leftovers}",
            error.message
        )
    } else {
        format!(
            "{}; the restore was rolled back: the volumes {volumes} hold their old entries again ({}){leftovers}",
            error.message,
            aside.join("; ")
        )
    };
    Error { message, ..error }
}

/// Removes every member's leftovers (those of `ours` only) and journal, then the group's
/// record once no journal of it is left; what cannot be removed is a warning.
fn finish_members(works: &[Work], ours: &[bool], group: &GroupRef) -> Vec<String> {
    let mut warnings = Vec::new();
    for (w, ours) in works.iter().zip(ours) {
        if *ours {
            warnings.extend(w.finish());
        }
    }
    let left = works
        .iter()
        .zip(ours)
        .any(|(w, ours)| *ours && w.journal_here());
    if left {
        warnings.push(format!(
            "the record {} of the restore group stays until every volume's journal is removed; the next task removes it",
            works[0].group_record().display()
        ));
    } else if let Err(e) = works[0].remove_group_record(group) {
        warnings.push(leftover(&works[0].group_record(), &e));
    }
    warnings
}

/// A member back to its old tree, from the phase its journal says (the journal stays).
fn to_old(w: &Work, journal: &Journal) -> Result<Vec<String>> {
    let names = Names::of(journal);
    let conflicts = w.conflicts();
    w.guard(&[&w.staged(), &w.old(), &conflicts])?;
    let aside = match journal.phase {
        Phase::DbRestoring => Vec::new(),
        Phase::MovingOld => w.move_old_back(&conflicts)?,
        Phase::MovingNew | Phase::UndoingNew => {
            w.undo_new(&journal.set, &names)?;
            w.move_old_back(&conflicts)?
        }
        Phase::Cleanup => {
            return Err(Error::new(
                ErrorKind::InternalError,
                format!(
                    "the journal {} says that the new tree is complete, but its group did not commit",
                    w.journal().display()
                ),
            ));
        }
    };
    fsync_dir(&w.volume).map_err(|e| Error::io("cannot sync", &w.volume, e))?;
    Ok(aside)
}

/// Recovery of a group that a crash interrupted: every member (those not in `held` are locked
/// here, in the group's sorted order, waiting up to `wait`) goes to the side the group's
/// record decides.
fn recover_group(
    group: &GroupRef,
    held: &[&Work],
    wait: Duration,
) -> Result<(Outcomes, Vec<String>)> {
    let paths = group.paths();
    let mut works = Vec::new();
    let mut _locks = Vec::new();
    for path in &paths {
        if let Some(w) = held.iter().find(|w| same_dir(&w.volume, path)) {
            works.push((*w).clone());
            continue;
        }
        let w = Work::of(path)?;
        let lock = w.lock(Operation::Restore, wait, false).map_err(|e| Error {
            message: format!(
                "an interrupted restore swapped the volumes {} together, so they are finished or rolled back together, but {} cannot be locked: {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                path.display(),
                e.message
            ),
            ..e
        })?;
        _locks.push(lock);
        works.push(w);
    }
    let record = group_record_of(&works, group)?;
    let mut journals: Vec<Option<Journal>> = Vec::new();
    // Whether the member's work directory is this group's to clean (no journal of another
    // swap in it).
    let mut ours = Vec::new();
    for w in &works {
        match w.read_journal() {
            Ok(j) if j.group.as_ref().is_some_and(|g| g.id == group.id) => {
                journals.push(Some(j));
                ours.push(true);
            }
            Ok(_) => {
                journals.push(None);
                ours.push(false);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                journals.push(None);
                ours.push(true);
            }
            Err(e) => return Err(unreadable(&w.journal(), &e, &w.volume)),
        }
    }
    let set = record
        .as_ref()
        .map(|r| r.set.clone())
        .or_else(|| journals.iter().flatten().next().map(|j| j.set.clone()))
        .unwrap_or_default();
    let mut warnings = Vec::new();
    let decision = record.as_ref().map(|r| r.decision);
    let committed = decision == Some(Decision::Committed)
        || journals.iter().flatten().any(|j| j.phase == Phase::Cleanup);
    if committed {
        let mut list = Vec::new();
        for (w, j) in works.iter().zip(&journals) {
            let done = match j.as_ref().map(|j| j.phase) {
                Some(Phase::MovingNew) => {
                    w.guard(&[&w.staged(), &w.old(), &w.conflicts()])?;
                    warnings.extend(move_entries(
                        &w.staged(),
                        &w.volume,
                        &Moves {
                            root: &w.root(),
                            skip: &[],
                            only: None,
                            conflicts: Some(&w.conflicts()),
                        },
                    )?);
                    fsync_dir(&w.volume).map_err(|e| Error::io("cannot sync", &w.volume, e))?;
                    Recovered::RolledForward(set.clone())
                }
                Some(Phase::Cleanup) | None => Recovered::CleanedUp(set.clone()),
                Some(_) => {
                    return Err(Error::new(
                        ErrorKind::InternalError,
                        format!(
                            "the restore group of {} committed, but the journal {} says that the volume is not swapped in: compare the volume with old/ and staged/ beside it by hand",
                            volumes_of(&works),
                            w.journal().display()
                        ),
                    ));
                }
            };
            list.push((w.volume.clone(), done));
        }
        warnings.extend(finish_members(&works, &ours, group));
        return Ok((list, warnings));
    }
    // Not committed: every member back to its old tree first (the journals stay).
    for (w, j) in works.iter().zip(&journals) {
        if let Some(j) = j {
            warnings.extend(to_old(w, j)?);
        }
    }
    let rolled_back = |works: &[Work]| {
        works
            .iter()
            .map(|w| (w.volume.clone(), Recovered::RolledBack(set.clone())))
            .collect::<Vec<_>>()
    };
    let record = match (decision, record) {
        (Some(Decision::Database | Decision::OutOfStep), Some(r)) => r,
        _ => {
            warnings.extend(finish_members(&works, &ours, group));
            return Ok((rolled_back(&works), warnings));
        }
    };
    // The database may come from the set: complete every member from its staged tree if all
    // are complete, else say loudly that the halves are out of step.
    let failed = if record.decision == Decision::OutOfStep {
        "a staged tree was found incomplete".to_string()
    } else {
        // A member whose work directory holds another swap's journal (it cannot have one
        // while the group waits, unless someone meddled) counts as incomplete.
        let incomplete = works.iter().enumerate().find(|(i, w)| {
            !(ours[*i]
                && fs::symlink_metadata(w.staged()).is_ok_and(|m| m.is_dir())
                && record.db.get(*i).is_some_and(|d| {
                    crate::volume::live_digest(&w.staged()).is_ok_and(|got| got == d.staged_digest)
                }))
        });
        match incomplete {
            None => {
                let kept: Vec<Vec<OsString>> = works
                    .iter()
                    .map(|w| special_at_root(&w.volume, &w.staged()))
                    .collect();
                match swap_members(&works, group, &set, &kept) {
                    Ok(more) => {
                        warnings.extend(more);
                        let list = works
                            .iter()
                            .map(|w| (w.volume.clone(), Recovered::Finished(set.clone())))
                            .collect();
                        return Ok((list, warnings));
                    }
                    // A rollback failed too: the journals stay for the next task.
                    Err(e) if works.iter().any(Work::journal_here) => return Err(e),
                    Err(e) => format!("swapping the staged trees in failed ({})", e.message),
                }
            }
            Some((_, w)) => format!(
                "the staged tree in {} is no longer complete",
                w.staged().display()
            ),
        }
    };
    // Every member is old again; the record says so before anything is removed, so that a
    // crash from here on still ends with this warning.
    works[0].write_group_record(&GroupRecord {
        decision: Decision::OutOfStep,
        ..record.clone()
    })?;
    let safety = record.db.first().and_then(|d| d.safety_set.clone());
    let before = match &safety {
        Some(s) => format!(
            "restore the database from safety set {s} (its db.tgz, see README) to put the installation back as it was, or run the restore of set {set} again"
        ),
        None => format!(
            "no safety set was written: run the restore of set {set} again to bring the volumes in line"
        ),
    };
    warnings.push(format!(
        "the database may have been restored from set {set} by an interrupted restore, but the volumes {} hold their old trees ({failed}): the halves are out of step; {before}",
        volumes_of(&works)
    ));
    warnings.extend(finish_members(&works, &ours, group));
    Ok((rolled_back(&works), warnings))
}

/// A test's simulated crash: with `CRASH_AFTER` set to n, the n+1-th step (a journal or
/// record written, an entry moved, a record or journal removed) panics right after it is
/// done, leaving the disk as a SIGKILL would. Nothing in other builds.
fn crash_point() {
    #[cfg(test)]
    tests::CRASH_AFTER.with(|c| match c.get() {
        Some(0) => {
            c.set(None);
            panic!("simulated crash");
        }
        Some(n) => c.set(Some(n - 1)),
        None => {}
    });
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut bytes = Vec::new();
    file.take(1 << 20).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// An error of recovery, saying that it came from finishing an interrupted restore.
fn interrupted(e: Error) -> Error {
    Error {
        message: format!(
            "an interrupted restore was being finished (or rolled back) first, and that failed: {}",
            e.message
        ),
        ..e
    }
}

/// The warning for a leftover of the work directory that could not be removed.
fn leftover(path: &Path, e: &Error) -> String {
    format!(
        "{} was left behind ({}): it is not part of the volume's content (backups leave it out); remove it by hand (chattr -i first if a file in it is immutable)",
        path.display(),
        e.message
    )
}

/// The sockets, FIFOs and devices at the root of `volume` that `staged` has no entry of the
/// same name for: a swap leaves them in place.
fn special_at_root(volume: &Path, staged: &Path) -> Vec<OsString> {
    root_names(volume)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| {
            fs::symlink_metadata(volume.join(n)).is_ok_and(|m| {
                let t = m.file_type();
                !(t.is_file() || t.is_dir() || t.is_symlink())
            }) && fs::symlink_metadata(staged.join(n)).is_err()
        })
        .collect()
}

/// Creates one directory (mode 0700) with `mkdirat` in its parent, opened below `root`
/// without following a symlink: an existing real directory is fine, anything else in its
/// place is refused.
fn make_dir(root: &Path, path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::new(
            ErrorKind::IoError,
            format!("{} has no parent", path.display()),
        ));
    };
    let parent_fd = open_dir(root, parent)?;
    let c_name = CString::new(name.as_bytes())
        .map_err(|e| Error::io("cannot create", path, io::Error::other(e)))?;
    let rc = unsafe { libc::mkdirat(parent_fd.as_raw_fd(), c_name.as_ptr(), 0o700) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(Error::io("cannot create", path, e));
        }
    }
    // Whatever is there now must be a real directory.
    open_dir(root, path).map(drop)
}

/// `path` (at or below `root`) opened as a directory, each component below `root` with
/// O_NOFOLLOW: a symlink anywhere below `root` is refused, and the descriptor keeps naming
/// that directory even if a symlink is swapped in afterwards.
fn open_dir(root: &Path, path: &Path) -> Result<OwnedFd> {
    let refused = |e: io::Error| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) => Error::new(
            ErrorKind::IoError,
            format!(
                "{} is not a directory (a symlink, which cwbackup never follows?): nothing was moved; remove it and run again",
                path.display()
            ),
        ),
        _ => Error::io("cannot open", path, e),
    };
    let rel = path.strip_prefix(root).map_err(|_| {
        Error::new(
            ErrorKind::IoError,
            format!("{} is not below {}", path.display(), root.display()),
        )
    })?;
    let c = |p: &std::ffi::OsStr| CString::new(p.as_bytes()).map_err(io::Error::other);
    let flags = libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC;
    let base = c(root.as_os_str()).map_err(refused)?;
    let raw = unsafe { libc::open(base.as_ptr(), flags) };
    if raw < 0 {
        return Err(refused(io::Error::last_os_error()));
    }
    let mut fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for comp in rel.components() {
        let name = c(comp.as_os_str()).map_err(refused)?;
        let raw = unsafe { libc::openat(fd.as_raw_fd(), name.as_ptr(), flags | libc::O_NOFOLLOW) };
        if raw < 0 {
            return Err(refused(io::Error::last_os_error()));
        }
        fd = unsafe { OwnedFd::from_raw_fd(raw) };
    }
    Ok(fd)
}

/// The names in the directory open at `fd` (through `/proc/self/fd`, so the listing is of that
/// directory whatever its path names now).
fn list_fd(fd: &OwnedFd, shown: &Path) -> Result<Vec<OsString>> {
    let at = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let mut names = Vec::new();
    for item in fs::read_dir(&at).map_err(|e| Error::io("cannot read", shown, e))? {
        names.push(
            item.map_err(|e| Error::io("cannot read", shown, e))?
                .file_name(),
        );
    }
    Ok(names)
}

/// Moves every entry of `from` into `to` (one rename each, in name order, never replacing an
/// existing name); entries already moved are simply no longer in `from`, so this can be
/// repeated after a crash. The work directory never moves. An entry in the way goes to
/// `moves.conflicts` if given (a warning each), else is an error.
fn move_entries(from: &Path, to: &Path, moves: &Moves) -> Result<Vec<String>> {
    if fs::symlink_metadata(from).is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
        return Ok(Vec::new());
    }
    let from_fd = open_dir(moves.root, from)?;
    let to_fd = open_dir(moves.root, to)?;
    let mut names: Vec<OsString> = list_fd(&from_fd, from)?
        .into_iter()
        .filter(|name| {
            name != WORK_DIR
                && !moves.skip.contains(name)
                && moves.only.is_none_or(|only| only.contains(name))
        })
        .collect();
    names.sort();
    let mut warnings = Vec::new();
    let stamp = clock::id_stamp(std::time::SystemTime::now());
    for name in names {
        let target = to.join(&name);
        match rename_noreplace_at(&from_fd, &name, &to_fd, &name) {
            Ok(()) => crash_point(),
            Err(e) if let (true, Some(conflicts)) = (in_the_way(&e), moves.conflicts) => {
                make_dir(moves.root, conflicts)?;
                let aside_dir = conflicts.join(&stamp);
                make_dir(moves.root, &aside_dir)?;
                let aside_fd = open_dir(moves.root, &aside_dir)?;
                let aside = aside_dir.join(&name);
                rename_noreplace_at(&to_fd, &name, &aside_fd, &name).map_err(|e| {
                    Error::io("cannot move an entry in the way aside to", &aside, e)
                })?;
                rename_noreplace_at(&from_fd, &name, &to_fd, &name)
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

/// `renameat2` of `from_name` in the directory `from` to `to_name` in `to`, failing with
/// EEXIST instead of replacing it (plain `renameat` after a check where the file system does
/// not support that, e.g. NFS: there a taken directory name still fails).
fn rename_noreplace_at(
    from: &OwnedFd,
    from_name: &std::ffi::OsStr,
    to: &OwnedFd,
    to_name: &std::ffi::OsStr,
) -> io::Result<()> {
    let c = |p: &std::ffi::OsStr| CString::new(p.as_bytes()).map_err(io::Error::other);
    let (f, t) = (c(from_name)?, c(to_name)?);
    let rc = unsafe {
        libc::renameat2(
            from.as_raw_fd(),
            f.as_ptr(),
            to.as_raw_fd(),
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let taken = unsafe {
            libc::fstatat(
                to.as_raw_fd(),
                t.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } == 0;
        if taken {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let rc =
            unsafe { libc::renameat(from.as_raw_fd(), f.as_ptr(), to.as_raw_fd(), t.as_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
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
    fsutil::remove_tree(path).map_err(|e| Error::io("cannot remove", path, e))
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
    use std::cell::Cell;

    thread_local! {
        /// See [`crash_point`].
        pub(super) static CRASH_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    }

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
                db: None,
                group: None,
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
            seen: OnceLock::new(),
            wait: OnceLock::new(),
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

    fn chattr(flag: &str, path: &Path) -> bool {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(path)
            .status()
            .unwrap()
            .success()
    }

    /// `interrupted(MovingNew, 2)` where the old tree also had `b3`, and a writer recreated
    /// `b3` in the volume while it was empty of it: the move of `staged/b3` fails with EEXIST.
    fn writer_recreated_b3() -> (tempfile::TempDir, Work, Names) {
        let (tmp, work) = interrupted(Phase::MovingNew, 2);
        fs::write(work.old().join("b3"), "old").unwrap();
        fs::create_dir(work.volume.join("b3")).unwrap();
        fs::write(work.volume.join("b3/written-meanwhile"), "keep me").unwrap();
        let names = Names {
            kept: Vec::new(),
            incoming: (1..=4).map(|i| OsString::from(format!("b{i}"))).collect(),
            db: None,
            group: None,
        };
        (tmp, work, names)
    }

    fn conflict_b3(work: &Work) -> String {
        let stamp = fs::read_dir(work.conflicts())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        fs::read_to_string(stamp.path().join("b3/written-meanwhile")).unwrap()
    }

    #[test]
    fn undoing_a_failed_swap_leaves_a_name_a_writer_recreated_and_sets_it_aside() {
        // In the same run: the rollback after moving-new failed on the writer's b3.
        let (_tmp, work, recorded) = writer_recreated_b3();
        let e = work.roll_back(
            Error::new(ErrorKind::IoError, "cannot move an entry into b3"),
            Phase::MovingNew,
            "set",
            &recorded,
        );
        assert!(e.message.contains("rolled back"), "{}", e.message);
        assert!(e.message.contains("conflicts"), "{}", e.message);
        assert!(!work.pending(), "later tasks are not wedged: {}", e.message);
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4", "b3"]);
        assert_eq!(fs::read_to_string(work.volume.join("b3")).unwrap(), "old");
        assert_eq!(conflict_b3(&work), "keep me");

        // After a crash in phase undoing-new: recovery does the same.
        let (_tmp, work, recorded) = writer_recreated_b3();
        work.write_journal(Phase::UndoingNew, "set", &recorded)
            .unwrap();
        let (done, warnings) = work.recover().unwrap();
        assert_eq!(done, Recovered::RolledBack("set".into()));
        assert!(
            warnings.iter().any(|w| w.contains("conflicts")),
            "{warnings:?}"
        );
        assert!(!work.pending());
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4", "b3"]);
        assert_eq!(conflict_b3(&work), "keep me");
    }

    #[test]
    fn a_failure_after_every_new_entry_is_in_is_a_warning_and_leftovers_never_block() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        fs::remove_dir(work.old()).unwrap();
        // An old entry that cannot be deleted once it is in old/: an immutable file in a1/.
        fs::remove_file(work.volume.join("a1")).unwrap();
        fs::create_dir(work.volume.join("a1")).unwrap();
        let stuck = work.volume.join("a1/stuck");
        fs::write(&stuck, "old").unwrap();
        assert!(chattr("+i", &stuck), "chattr needs root");
        let swapped = work.swap("set", &[]);
        let stuck = work.old().join("a1/stuck");
        let later = work.recover();
        chattr("-i", &stuck);
        let warnings = swapped.expect("the swap is complete: cleaning up is not part of it");
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&*work.old().to_string_lossy())),
            "{warnings:?}"
        );
        assert!(!work.pending(), "no journal waits");
        // The next task is not blocked by the leftover; it warns and goes on.
        let (done, warnings) = later.expect("a leftover never blocks a task");
        assert_eq!(done, Recovered::Nothing);
        assert!(
            warnings.iter().any(|w| w.contains("left behind")),
            "{warnings:?}"
        );
        // Once it can be removed, the next recovery removes it.
        work.recover().unwrap();
        assert!(!work.old().exists());
    }

    #[test]
    fn a_roll_forward_whose_staged_tree_was_lost_rolls_back_instead() {
        let (_tmp, work) = interrupted(Phase::MovingNew, 2);
        // Someone deleted staged/ (b3, b4) while the swap was interrupted.
        fs::remove_dir_all(work.staged()).unwrap();
        let (done, warnings) = work.recover().unwrap();
        assert_eq!(done, Recovered::RolledBack("set".into()));
        assert!(
            warnings.iter().any(|w| w.contains("lacks b3")),
            "{warnings:?}"
        );
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
        assert!(!work.pending());
    }

    fn with_database(work: &Work, phase: Phase) {
        // The digest of the complete staged tree, b1..b4.
        let full = tempfile::tempdir().unwrap();
        for i in 1..=4 {
            fs::write(full.path().join(format!("b{i}")), "new").unwrap();
        }
        let staged_digest = crate::volume::live(full.path()).unwrap().1;
        let mut j = work.read_journal().unwrap();
        j.phase = phase;
        j.db = Some(DbHalf {
            restored_from: "set".into(),
            safety_set: Some("pre-restore-1".into()),
            staged_digest,
        });
        let names = Names {
            kept: Vec::new(),
            incoming: j.incoming.iter().cloned().map(OsString::from_vec).collect(),
            db: j.db,
            group: None,
        };
        work.write_journal(phase, "set", &names).unwrap();
    }

    #[test]
    fn a_crash_after_the_database_restore_started_completes_the_volume_from_the_set() {
        // Killed in db-restoring (nothing of the volume moved), and in moving-old.
        for (phase, moved) in [
            (Phase::DbRestoring, 0),
            (Phase::MovingOld, 2),
            (Phase::UndoingNew, 1),
        ] {
            let (_tmp, work) = interrupted(
                if phase == Phase::DbRestoring {
                    Phase::MovingOld
                } else {
                    phase
                },
                moved,
            );
            with_database(&work, phase);
            let (done, warnings) = work.recover().unwrap();
            assert_eq!(
                done,
                Recovered::Finished("set".into()),
                "{phase:?} {warnings:?}"
            );
            assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"], "{phase:?}");
            assert!(!work.pending());
            assert!(done.describe(&work.volume).unwrap().contains("both halves"));
        }
    }

    #[test]
    fn a_crash_after_the_database_restore_started_with_an_incomplete_staged_tree_names_the_safety_set()
     {
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        with_database(&work, Phase::DbRestoring);
        fs::remove_file(work.staged().join("b2")).unwrap();
        let (done, warnings) = work.recover().unwrap();
        assert_eq!(done, Recovered::RolledBack("set".into()));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("out of step") && w.contains("pre-restore-1")),
            "{warnings:?}"
        );
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
        assert!(!work.pending());
    }

    #[test]
    fn the_journal_on_disk_says_what_the_next_task_does() {
        let (_tmp, work) = interrupted(Phase::MovingOld, 1);
        assert_eq!(work.next(), Next::RollBack);
        with_database(&work, Phase::DbRestoring);
        assert_eq!(work.next(), Next::RollForward);
        work.forget_database().unwrap();
        assert_eq!(work.next(), Next::Nothing);
        let (_tmp, work) = interrupted(Phase::MovingNew, 1);
        assert_eq!(work.next(), Next::RollForward);
        work.forget_database().unwrap();
        assert!(work.pending(), "only a db-restoring journal is forgotten");
        // A rollback left for the next task, after the database was put back in the same
        // run: the next task rolls the volume back, never forward from the set.
        let (_tmp, work) = interrupted(Phase::MovingOld, 2);
        with_database(&work, Phase::MovingOld);
        work.database_put_back().unwrap();
        assert_eq!(work.next(), Next::RollBack);
        assert_eq!(
            work.recover().unwrap().0,
            Recovered::RolledBack("set".into())
        );
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
    }

    #[test]
    fn a_symlink_planted_in_place_of_old_is_refused_and_its_target_untouched() {
        let (tmp, work) = interrupted(Phase::MovingOld, 2);
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("precious"), "keep").unwrap();
        fs::rename(work.old(), tmp.path().join("old-aside")).unwrap();
        std::os::unix::fs::symlink(&victim, work.old()).unwrap();
        let e = work.recover().unwrap_err();
        assert!(e.message.contains("symlink"), "{}", e.message);
        assert!(e.message.contains("interrupted restore"), "{}", e.message);
        assert_eq!(fs::read_to_string(victim.join("precious")).unwrap(), "keep");
        assert_eq!(names(&work.volume), ["a3", "a4"]);
        // The whole work directory swapped for a link after it was checked: refused too.
        let (tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        fs::remove_dir(work.old()).unwrap();
        let moved = tmp.path().join("work-aside");
        fs::rename(&work.dir, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &work.dir).unwrap();
        let e = work.swap("set", &[]).unwrap_err();
        assert!(e.message.contains("symlink"), "{}", e.message);
        assert_eq!(names(&work.volume), ["a1", "a2", "a3", "a4"]);
        assert!(!moved.join("old").exists() && !moved.join("journal.json").exists());
    }

    /// Unmounts on drop.
    struct Mounted(PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn a_backup_of_a_read_only_volume_needs_only_the_os_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("vol");
        fs::create_dir(&volume).unwrap();
        let mount = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .status()
                .unwrap()
                .success()
        };
        assert!(
            mount(&["-t", "tmpfs", "tmpfs", volume.to_str().unwrap()]),
            "mount needs root"
        );
        let _mounted = Mounted(volume.clone());
        fs::write(volume.join("a1"), "old").unwrap();
        assert!(mount(&["-o", "remount,ro", volume.to_str().unwrap()]));
        let work = Work::of(&volume).unwrap();
        let held = work.lock(Operation::Backup, Duration::ZERO, false).unwrap();
        assert_eq!(work.recover().unwrap().0, Recovered::Nothing);
        // The OS lock still excludes a second task.
        let e = Work::of(&volume)
            .unwrap()
            .lock(Operation::Restore, Duration::ZERO, false)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Busy);
        drop(held);
        // A restore needs to write: it still fails, naming the work directory.
        let e = work
            .lock(Operation::Restore, Duration::ZERO, false)
            .unwrap_err();
        assert!(e.message.contains(WORK_DIR), "{}", e.message);
    }

    #[test]
    fn moves_never_follow_a_symlink_swapped_in_after_the_last_check() {
        // The last line of defence, without the checks before it: move_entries itself opens
        // each directory below the volume without following a symlink.
        let (tmp, work) = interrupted(Phase::MovingOld, 1);
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("a1"), "precious").unwrap();
        fs::rename(work.old(), tmp.path().join("old-aside")).unwrap();
        std::os::unix::fs::symlink(&victim, work.old()).unwrap();
        let moves = |conflicts| Moves {
            root: &work.volume,
            skip: &[],
            only: None,
            conflicts,
        };
        let into_old = move_entries(&work.volume, &work.old(), &moves(None)).unwrap_err();
        assert!(into_old.message.contains("symlink"), "{}", into_old.message);
        let out_of_old = move_entries(&work.old(), &work.volume, &moves(None)).unwrap_err();
        assert!(
            out_of_old.message.contains("symlink"),
            "{}",
            out_of_old.message
        );
        assert_eq!(names(&victim), ["a1"]);
        assert_eq!(names(&work.volume), ["a2", "a3", "a4"]);
        // conflicts/ swapped for a link: the entry in the way is not moved through it.
        fs::remove_file(work.old()).unwrap();
        fs::rename(tmp.path().join("old-aside"), work.old()).unwrap();
        fs::write(work.volume.join("a1"), "written meanwhile").unwrap();
        std::os::unix::fs::symlink(&victim, work.conflicts()).unwrap();
        let conflicts = work.conflicts();
        let e = move_entries(&work.old(), &work.volume, &moves(Some(&conflicts))).unwrap_err();
        assert!(e.message.contains("symlink"), "{}", e.message);
        assert_eq!(names(&victim), ["a1"]);
        assert_eq!(fs::read_to_string(victim.join("a1")).unwrap(), "precious");
        assert_eq!(
            fs::read_to_string(work.volume.join("a1")).unwrap(),
            "written meanwhile"
        );
    }

    #[test]
    fn removals_never_follow_a_work_directory_swapped_for_a_symlink() {
        let (tmp, work) = interrupted(Phase::MovingOld, 0);
        let victim = tmp.path().join("victim");
        fs::create_dir_all(victim.join("old")).unwrap();
        fs::write(victim.join("old/precious"), "keep").unwrap();
        fs::rename(&work.dir, tmp.path().join("work-aside")).unwrap();
        std::os::unix::fs::symlink(&victim, &work.dir).unwrap();
        // Without the checks before it: the removal itself does not follow the link.
        let e = work.remove(&work.old()).unwrap_err();
        assert!(e.message.contains("symlink"), "{}", e.message);
        assert_eq!(
            fs::read_to_string(victim.join("old/precious")).unwrap(),
            "keep"
        );
        let e = work.finish();
        assert!(!e.is_empty());
        assert!(victim.join("old/precious").exists());
    }

    // ----- Groups -----

    /// Two volumes, p (old tree a1, a2/f) and q (old tree c1, c2/f), with staged trees
    /// (p: b1, b2/f; q: d1, d2/f), and the group of both (p is the leader).
    fn two_volumes() -> (tempfile::TempDir, Vec<PathBuf>, Group) {
        let tmp = tempfile::tempdir().unwrap();
        let mut volumes = Vec::new();
        for (v, old, new) in [
            ("p", ["a1", "a2"], ["b1", "b2"]),
            ("q", ["c1", "c2"], ["d1", "d2"]),
        ] {
            let volume = tmp.path().join(v);
            fs::create_dir(&volume).unwrap();
            let staged = Work::of(&volume).unwrap().fresh_staged().unwrap();
            fs::write(volume.join(old[0]), "old").unwrap();
            fs::create_dir(volume.join(old[1])).unwrap();
            fs::write(volume.join(old[1]).join("f"), "old").unwrap();
            fs::write(staged.join(new[0]), "new").unwrap();
            fs::create_dir(staged.join(new[1])).unwrap();
            fs::write(staged.join(new[1]).join("f"), "new").unwrap();
            volumes.push(volume);
        }
        // The caller's order is q, p: the group sorts its members itself.
        let group = Group::new(vec![
            Work::of(&volumes[1]).unwrap(),
            Work::of(&volumes[0]).unwrap(),
        ])
        .unwrap();
        (tmp, volumes, group)
    }

    /// Every path below `dir` (the work directory left out at the root) with the content of
    /// its files.
    fn tree(dir: &Path) -> Vec<(String, String)> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
            for name in names(dir) {
                let path = dir.join(&name);
                let rel = format!("{prefix}{name}");
                if path.is_dir() {
                    out.push((format!("{rel}/"), String::new()));
                    walk(&path, &format!("{rel}/"), out);
                } else {
                    out.push((rel, fs::read_to_string(&path).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, "", &mut out);
        out
    }

    fn expected(a: &str, b: &str, content: &str) -> Vec<(String, String)> {
        vec![
            (a.to_string(), content.to_string()),
            (format!("{b}/"), String::new()),
            (format!("{b}/f"), content.to_string()),
        ]
    }

    /// "old" when both volumes hold their old trees, "new" when both hold the staged ones,
    /// else what they hold.
    fn side(volumes: &[PathBuf]) -> String {
        let (p, q) = (tree(&volumes[0]), tree(&volumes[1]));
        if p == expected("a1", "a2", "old") && q == expected("c1", "c2", "old") {
            "old".into()
        } else if p == expected("b1", "b2", "new") && q == expected("d1", "d2", "new") {
            "new".into()
        } else {
            format!("mixed: p {p:?}, q {q:?}")
        }
    }

    /// Nothing of a swap is left in either volume's work directory.
    fn nothing_left(volumes: &[PathBuf]) {
        for v in volumes {
            let work = Work::of(v).unwrap();
            for path in [
                work.journal(),
                work.group_record(),
                work.old(),
                work.staged(),
            ] {
                assert!(!path.exists(), "{} is left", path.display());
            }
        }
    }

    /// The side the group's record (and journals) on disk decide for the next task.
    fn decided(volumes: &[PathBuf]) -> &'static str {
        let leader = Work::of(&volumes[0]).unwrap();
        let record = read_json::<GroupRecord>(&leader.group_record()).ok();
        let cleanup = volumes.iter().any(|v| {
            Work::of(v)
                .unwrap()
                .read_journal()
                .is_ok_and(|j| j.phase == Phase::Cleanup)
        });
        let journals = volumes
            .iter()
            .any(|v| Work::of(v).unwrap().journal().exists());
        match record.map(|r| r.decision) {
            Some(Decision::Committed | Decision::Database) => "new",
            _ if cleanup => "new",
            // Nothing left to recover: the swap had finished, only its last removal was done.
            None if !journals => "new",
            _ => "old",
        }
    }

    fn digest(dir: &Path) -> String {
        crate::volume::live(dir).unwrap().1
    }

    fn halves(group: &Group) -> Vec<DbHalf> {
        group
            .members()
            .iter()
            .map(|w| DbHalf {
                restored_from: "set".into(),
                safety_set: Some("pre-restore-1".into()),
                staged_digest: digest(&w.staged()),
            })
            .collect()
    }

    /// Runs `f` with a simulated crash after `steps` steps; whether it crashed.
    fn crashing<T>(steps: usize, f: impl FnOnce() -> T) -> Option<T> {
        CRASH_AFTER.with(|c| c.set(Some(steps)));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        CRASH_AFTER.with(|c| c.set(None));
        outcome.ok()
    }

    #[test]
    fn a_group_swaps_every_volume_and_leaves_nothing_of_its_own() {
        let (_tmp, volumes, group) = two_volumes();
        assert_eq!(group.members()[0].volume, volumes[1], "the caller's order");
        let warnings = group.swap("set", &[vec![], vec![]]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(side(&volumes), "new");
        nothing_left(&volumes);
        assert_eq!(group.next(), Next::Nothing);
        assert!(!group.pending());
    }

    #[test]
    fn an_error_in_the_second_volume_rolls_back_both() {
        // q's own entry cannot move out (phase moving-old of the second member), and then
        // q's staged entry cannot move in (moving-new of the second member, after p's new
        // tree was in completely).
        for stuck_in_staged in [false, true] {
            let (_tmp, volumes, group) = two_volumes();
            let q = Work::of(&volumes[1]).unwrap();
            let stuck = if stuck_in_staged {
                q.staged().join("d2")
            } else {
                volumes[1].join("c2")
            };
            assert!(chattr("+i", &stuck), "chattr needs root");
            let swapped = group.swap("set", &[vec![], vec![]]);
            chattr("-i", &stuck);
            let e = swapped.unwrap_err();
            assert!(e.message.contains("rolled back"), "{}", e.message);
            assert!(
                e.message.contains(&*volumes[0].to_string_lossy())
                    && e.message.contains(&*volumes[1].to_string_lossy()),
                "{}",
                e.message
            );
            assert_eq!(side(&volumes), "old", "stuck in staged: {stuck_in_staged}");
            assert_eq!(
                group.next(),
                Next::Nothing,
                "the journal is for crashes only"
            );
            for v in &volumes {
                let w = Work::of(v).unwrap();
                assert!(!w.journal().exists() && !w.group_record().exists());
                assert!(!w.old().exists());
            }
        }
    }

    #[test]
    fn a_group_rollback_that_fails_too_leaves_the_journals_and_the_next_task_rolls_all_back() {
        // With the database half, the journals left complete both volumes from their staged
        // trees instead (the caller did not put the database back), so those must be intact.
        for database in [false, true] {
            let (_tmp, volumes, group) = two_volumes();
            if database {
                group.before_database(&halves(&group)).unwrap();
            }
            let works = &group.works;
            // Both members journaled, p's new tree in completely; then q fails, and p's old
            // entries cannot leave its old/ (immutable).
            let mut touched = Vec::new();
            for (i, w) in works.iter().enumerate() {
                let names = Names {
                    group: Some(group.group.clone()),
                    ..Names::default()
                };
                w.start_move("set", &names).unwrap();
                touched.push((i, Phase::MovingOld, names));
            }
            works[0]
                .move_rest("set", &mut touched[0].2)
                .map_err(|(e, _)| e)
                .unwrap();
            touched[0].1 = Phase::MovingNew;
            assert!(chattr("+i", &works[0].old()), "chattr needs root");
            let e = roll_back_members(
                works,
                &group.group,
                &touched,
                Error::new(ErrorKind::IoError, "cannot move an entry of q"),
                "set",
            );
            chattr("-i", &works[0].old());
            assert!(e.message.contains("failed too"), "{}", e.message);
            assert!(
                e.message.contains(&*works[0].old().to_string_lossy()),
                "{}",
                e.message
            );
            assert_eq!(group.next(), Next::RollBack);
            assert!(group.pending());
            // The next task, on q alone, brings p to the same side.
            let (done, warnings) = Work::of(&volumes[1]).unwrap().recover().unwrap();
            let (want_done, want) = if database {
                (Recovered::Finished("set".into()), "new")
            } else {
                (Recovered::RolledBack("set".into()), "old")
            };
            assert_eq!(done, want_done, "{warnings:?}");
            assert_eq!(side(&volumes), want);
            nothing_left(&volumes);
        }
    }

    #[test]
    fn a_crash_at_any_step_of_a_group_swap_leaves_all_old_or_all_new() {
        for database in [false, true] {
            let mut seen = Vec::new();
            for steps in 0.. {
                let (_tmp, volumes, group) = two_volumes();
                let halves = halves(&group);
                let finished = crashing(steps, || {
                    if database {
                        group.before_database(&halves).unwrap();
                    }
                    group.swap("set", &[vec![], vec![]]).unwrap()
                });
                if finished.is_some() {
                    assert_eq!(side(&volumes), "new");
                    nothing_left(&volumes);
                    break;
                }
                let want = decided(&volumes);
                // What the caller is told the next task does agrees with what it does (with
                // the database half, a member being moved back says RollBack, as for one
                // volume: the caller then puts the database back and says so with
                // database_put_back).
                let next = group.next();
                assert!(
                    match (want, database) {
                        ("new", false) => matches!(next, Next::RollForward | Next::Nothing),
                        ("new", true) => {
                            next != Next::RollBack
                                || volumes.iter().any(|v| {
                                    Work::of(v).unwrap().read_journal().is_ok_and(|j| {
                                        matches!(j.phase, Phase::MovingOld | Phase::UndoingNew)
                                    })
                                })
                        }
                        _ => next == Next::RollBack,
                    },
                    "step {steps}: next {next:?}, the record says {want}"
                );
                // The next task recovers one of the volumes: sometimes p, sometimes q.
                let by = &volumes[steps % 2];
                let (done, warnings) = Work::of(by).unwrap().recover().unwrap();
                let got = side(&volumes);
                assert_eq!(
                    got,
                    want,
                    "database {database}, crash after {steps} steps, recovered by {}: {done:?} {warnings:?}",
                    by.display()
                );
                if database && want == "new" {
                    assert!(
                        matches!(
                            done,
                            Recovered::Finished(_)
                                | Recovered::RolledForward(_)
                                | Recovered::CleanedUp(_)
                                // killed after its very last step
                                | Recovered::Nothing
                        ),
                        "{done:?}"
                    );
                }
                // The other volume's outcome is said too.
                if done != Recovered::Nothing {
                    assert!(
                        warnings
                            .iter()
                            .any(|w| w.contains(&*volumes[(steps + 1) % 2].to_string_lossy())),
                        "{warnings:?}"
                    );
                }
                nothing_left(&volumes);
                seen.push(got);
            }
            assert!(seen.contains(&"old".to_string()) && seen.contains(&"new".to_string()));
            // Old up to the commit point (or the database record), new from there on.
            let first_new = seen.iter().position(|s| s == "new").unwrap();
            assert!(seen[first_new..].iter().all(|s| s == "new"), "{seen:?}");
            if database {
                // Only the two db-restoring journals come before the database record.
                assert_eq!(first_new, 2, "{seen:?}");
            }
        }
    }

    #[test]
    fn a_crash_during_the_recovery_of_a_group_is_recovered_to_the_same_side() {
        for database in [false, true] {
            for steps in (0..).step_by(3) {
                let (_tmp, volumes, group) = two_volumes();
                let halves = halves(&group);
                let finished = crashing(steps, || {
                    if database {
                        group.before_database(&halves).unwrap();
                    }
                    group.swap("set", &[vec![], vec![]]).unwrap()
                });
                if finished.is_some() {
                    break;
                }
                let want = decided(&volumes);
                let snapshot = _tmp.path().join("snapshot");
                copy_tree(_tmp.path(), &snapshot, &["snapshot"]);
                for again in 0.. {
                    // Back to the state the first crash left.
                    for v in ["p", "q"] {
                        let _ = fs::remove_dir_all(_tmp.path().join(v));
                        copy_tree(&snapshot.join(v), &_tmp.path().join(v), &[]);
                    }
                    let by = &volumes[again % 2];
                    let recovered = crashing(again, || Work::of(by).unwrap().recover().unwrap());
                    if recovered.is_some() {
                        assert_eq!(side(&volumes), want);
                        break;
                    }
                    let (done, warnings) = Work::of(&volumes[(again + 1) % 2])
                        .unwrap()
                        .recover()
                        .unwrap();
                    Work::of(by).unwrap().recover().unwrap();
                    assert_eq!(
                        side(&volumes),
                        want,
                        "database {database}, swap crashed after {steps}, recovery after {again}: {done:?} {warnings:?}"
                    );
                    nothing_left(&volumes);
                }
            }
        }
    }

    /// Copies a tree of plain files and directories (`skip`: root names left out).
    fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
        fs::create_dir_all(to).unwrap();
        for item in fs::read_dir(from).unwrap() {
            let item = item.unwrap();
            let name = item.file_name();
            if skip.iter().any(|s| name == *s) {
                continue;
            }
            let (src, dst) = (item.path(), to.join(&name));
            if item.file_type().unwrap().is_dir() {
                copy_tree(&src, &dst, &[]);
            } else {
                fs::copy(&src, &dst).unwrap();
            }
        }
    }

    #[test]
    fn recovering_one_volume_of_a_group_locks_the_others_or_says_which_is_busy() {
        let (_tmp, volumes, group) = two_volumes();
        // Crash while q's new tree moves in: p is all new, q half.
        let mut steps = 0;
        loop {
            let (_t, v, g) = two_volumes();
            drop(crashing(steps, || {
                g.swap("set", &[vec![], vec![]]).unwrap()
            }));
            let q = Work::of(&v[1]).unwrap();
            if q.read_journal().is_ok_and(|j| j.phase == Phase::MovingNew)
                && q.staged().join("d2").exists()
            {
                break;
            }
            steps += 1;
        }
        drop(crashing(steps, || {
            group.swap("set", &[vec![], vec![]]).unwrap()
        }));
        let before = (tree(&volumes[0]), tree(&volumes[1]));
        assert_eq!(before.0, expected("b1", "b2", "new"));
        // Another task holds q.
        let other = Work::of(&volumes[1]).unwrap();
        let held = other
            .lock(Operation::Backup, Duration::ZERO, false)
            .unwrap();
        let p = Work::of(&volumes[0]).unwrap();
        let _p_lock = p
            .lock(Operation::Backup, Duration::from_millis(300), false)
            .unwrap();
        let started = std::time::Instant::now();
        let e = p.recover().unwrap_err();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it waits as lock() was told"
        );
        assert_eq!(e.kind, ErrorKind::Busy);
        assert!(
            e.message.contains(&*volumes[1].to_string_lossy()),
            "{}",
            e.message
        );
        assert_eq!(
            (tree(&volumes[0]), tree(&volumes[1])),
            before,
            "nothing moved"
        );
        drop(held);
        let (done, warnings) = p.recover().unwrap();
        assert_eq!(done, Recovered::RolledBack("set".into()), "{warnings:?}");
        assert_eq!(side(&volumes), "old");
        nothing_left(&volumes);
    }

    #[test]
    fn a_journal_written_before_groups_is_recovered_and_a_group_of_one_writes_none_else() {
        // A journal exactly as the single-volume code wrote it before groups existed.
        let (_tmp, work) = interrupted(Phase::MovingNew, 2);
        fs::write(
            work.journal(),
            r#"{"phase":"moving-new","set":"set","kept":[],"incoming":[[98,49],[98,50],[98,51],[98,52]]}"#,
        )
        .unwrap();
        let group = Group::new(vec![Work::of(&work.volume).unwrap()]).unwrap();
        assert_eq!(group.next(), Next::RollForward);
        let (done, _) = group.recover().unwrap();
        assert_eq!(
            done,
            vec![(work.volume.clone(), Recovered::RolledForward("set".into()))]
        );
        assert_eq!(names(&work.volume), ["b1", "b2", "b3", "b4"]);
        assert!(!work.pending());

        // A group of one journals exactly as the single-volume swap: no group, no record.
        let (_tmp, work) = interrupted(Phase::MovingOld, 0);
        fs::remove_file(work.journal()).unwrap();
        fs::remove_dir(work.old()).unwrap();
        let group = Group::new(vec![Work::of(&work.volume).unwrap()]).unwrap();
        drop(crashing(1, || group.swap("set", &[vec![]]).unwrap()));
        let text = fs::read_to_string(work.journal()).unwrap();
        assert!(
            text.starts_with(r#"{"phase":"moving-old","set":"set","kept":[],"incoming":[]"#),
            "{text}"
        );
        assert!(
            !text.contains("group") && !work.group_record().exists(),
            "{text}"
        );
    }

    #[test]
    fn a_group_of_one_crashes_and_recovers_exactly_as_the_single_volume_swap() {
        for database in [false, true] {
            for steps in 0.. {
                let mut outcomes = Vec::new();
                for as_group in [false, true] {
                    let (_tmp, work) = interrupted(Phase::MovingOld, 0);
                    fs::remove_file(work.journal()).unwrap();
                    fs::remove_dir(work.old()).unwrap();
                    let half = DbHalf {
                        restored_from: "set".into(),
                        safety_set: None,
                        staged_digest: digest(&work.staged()),
                    };
                    let group = Group::new(vec![Work::of(&work.volume).unwrap()]).unwrap();
                    let finished = crashing(steps, || {
                        if as_group {
                            if database {
                                group.before_database(&[half]).unwrap();
                            }
                            group.swap("set", &[vec![]]).unwrap()
                        } else {
                            if database {
                                work.before_database(half).unwrap();
                            }
                            work.swap("set", &[]).unwrap()
                        }
                    });
                    let journal = fs::read(work.journal()).ok();
                    let next = if as_group { group.next() } else { work.next() };
                    let recovered = work.recover().unwrap();
                    outcomes.push((finished, journal, next, recovered, names(&work.volume)));
                }
                assert_eq!(
                    outcomes[0], outcomes[1],
                    "database {database}, crash after {steps}"
                );
                if outcomes[0].0.is_some() {
                    break;
                }
            }
        }
    }

    #[test]
    fn a_group_whose_database_restore_started_is_completed_or_rolled_back_as_a_whole() {
        // Crashed during the database restore: completed from the staged trees.
        let (_tmp, volumes, group) = two_volumes();
        group.before_database(&halves(&group)).unwrap();
        assert_eq!(group.next(), Next::RollForward);
        let (done, warnings) = Work::of(&volumes[1]).unwrap().recover().unwrap();
        assert_eq!(done, Recovered::Finished("set".into()));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("both halves") && w.contains(&*volumes[0].to_string_lossy())),
            "{warnings:?}"
        );
        assert_eq!(side(&volumes), "new");
        nothing_left(&volumes);

        // One staged tree lost a file meanwhile: no volume is completed, and the warning
        // names the safety set.
        let (_tmp, volumes, group) = two_volumes();
        group.before_database(&halves(&group)).unwrap();
        fs::remove_file(Work::of(&volumes[1]).unwrap().staged().join("d1")).unwrap();
        let (done, warnings) = Work::of(&volumes[0]).unwrap().recover().unwrap();
        assert_eq!(done, Recovered::RolledBack("set".into()));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("out of step") && w.contains("pre-restore-1")),
            "{warnings:?}"
        );
        assert_eq!(side(&volumes), "old");
        nothing_left(&volumes);

        // The database restore failed: forgetting leaves nothing for the next task.
        let (_tmp, volumes, group) = two_volumes();
        group.before_database(&halves(&group)).unwrap();
        group.forget_database().unwrap();
        assert_eq!(group.next(), Next::Nothing);
        assert!(!group.pending());
        assert_eq!(side(&volumes), "old");

        // The database was put back after a failed swap whose rollback is left for the next
        // task: it rolls every volume back, never forward from the set.
        let (_tmp, volumes, group) = two_volumes();
        group.before_database(&halves(&group)).unwrap();
        let mut names = Names {
            group: Some(group.group.clone()),
            ..Names::default()
        };
        group.works[0]
            .move_in("set", &mut names)
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(group.next(), Next::RollForward);
        group.works[0].undo_new("set", &names).unwrap();
        assert_eq!(
            group.next(),
            Next::RollBack,
            "moving back: the caller puts the database back"
        );
        group.database_put_back().unwrap();
        assert_eq!(group.next(), Next::RollBack);
        let (done, _) = group.recover().unwrap();
        assert!(
            done.iter()
                .all(|(_, d)| *d == Recovered::RolledBack("set".into())),
            "{done:?}"
        );
        assert_eq!(side(&volumes), "old");
        nothing_left(&volumes);
    }

    #[test]
    fn a_volume_inside_another_cannot_be_in_its_group() {
        let tmp = tempfile::tempdir().unwrap();
        let outer = tmp.path().join("outer");
        fs::create_dir_all(outer.join("inner")).unwrap();
        let e = Group::new(vec![
            Work::of(&outer).unwrap(),
            Work::of(&outer.join("inner")).unwrap(),
        ])
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidTask);
        assert!(e.message.contains("inside"), "{}", e.message);
    }
}
