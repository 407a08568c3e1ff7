//! restore: put a backup set back, so that a failure at any point leaves a working
//! installation.
//!
//! Plan: lock the repository and the volume, finish any swap a crash interrupted, choose the
//! set, check its checksums, and decide per half whether it differs from the live state (the
//! volume by content digest, or by its listing alone when that already differs; the database
//! by content: the digest of a fresh API backup against the set's, never by the server's last
//! restore id). Nothing differs: `changed: false`, nothing written. The volume is extracted
//! into the work directory inside it (and checked against the manifest's digest) while the
//! checksums and the live digest are read: the staged tree is used only once both say so, and
//! is removed otherwise. Apply, in this order: safety backup of the current state
//! (`pre-restore-…`, holding the fresh database backup) → check that the volume's listing is
//! still the one decided on → restore the database → check the listing again → swap the staged
//! tree in (journaled, see volume/swap.rs; an error is rolled back at once) → run `restart`
//! (without the API secret in its environment). A failure before the swap leaves the volume
//! untouched; a failure after the database was restored puts the database back from the
//! safety set, so the halves stay together, and the error says what became of each.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::clock;
use crate::connectware::{self, Client, dbfile};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::backup;
use crate::repository::{Repository, Set, check};
use crate::result::{DbOutcome, Diff, SetRef, TaskResult, VolumeOutcome};
use crate::task::{BackupOptions, Compression, Operation, RestoreOptions, Task};
use crate::volume;
use crate::volume::digest::{self, Lines};
use crate::volume::extract::Contents;
use crate::volume::swap::{self, Work};
use crate::volume::tree;

/// Test-only hook: with `CWBACKUP_TEST_PAUSE_BEFORE_SWAP=<file>`, a restore writes
/// `<file>.reached` just before its last check of the volume's listing (after the safety set
/// and the database restore) and waits, at most 60 s, until `<file>` exists, so that a test
/// can change the volume at exactly that moment. Debug builds only (`cfg!(debug_assertions)`,
/// as the integration tests run them): a release build ignores the variable.
const TEST_PAUSE_BEFORE_SWAP: &str = "CWBACKUP_TEST_PAUSE_BEFORE_SWAP";

/// What an operator must do after any restore, whoever restarts Connectware.
const BROWSER_SESSIONS: &str =
    "every Admin-UI browser session must be restarted (log out and in again) after a restore";

/// The live volume, as far as the plan needs to read it.
enum Live {
    /// Every file read: the digest lines and the content digest.
    Hashed { entries: Lines, digest: String },
    /// The listing alone differs from the set's (entry count or bytes of files), so no file
    /// was read. Only without `diff`, which needs the digest lines.
    Differs,
}

impl Live {
    fn digest(&self) -> Option<&String> {
        match self {
            Live::Hashed { digest, .. } => Some(digest),
            Live::Differs => None,
        }
    }
}

pub fn run(task: &Task, opts: &RestoreOptions) -> Result<TaskResult> {
    let volume_dir = super::resolve_volume(task)?;
    let mut warnings = Vec::new();
    let client = connectware::client_for(task.api.as_ref(), &mut warnings)?;

    let repo = Repository::open(&task.repository)?;
    let _repo_lock = repo.lock(Operation::Restore, task.wait_for_lock)?;
    let work = volume_dir.as_deref().map(Work::of).transpose()?;
    let _volume_lock = work
        .as_ref()
        .map(|w| w.lock(Operation::Restore, task.wait_for_lock, task.dry_run))
        .transpose()?;
    if !task.dry_run {
        repo.clean_staging()?;
    }
    if let Some(w) = &work {
        if task.dry_run {
            if w.pending() {
                warnings.push("an interrupted restore will be finished first".to_string());
            }
        } else {
            let (done, more) = w.recover()?;
            warnings.extend(more);
            warnings.extend(done.describe(&w.volume));
        }
    }

    let set = choose(&repo, opts)?;
    if volume_dir.is_some() && set.manifest.volume.is_none() {
        return Err(Error::new(
            ErrorKind::BackupNotFound,
            format!(
                "backup set {} has no volume half: leave out `volume` to restore its database alone",
                set.id
            ),
        ));
    }
    if client.is_some() && set.manifest.db.is_none() {
        return Err(Error::new(
            ErrorKind::BackupNotFound,
            format!(
                "backup set {} has no database half: leave out `api` to restore its volume alone",
                set.id
            ),
        ));
    }
    // Three independent reads at once: the set's checksums, the live volume's digest, and the
    // extraction of the set's volume into staging, which the restore needs if the volume
    // differs. The staged tree is only a candidate until the checksums match and the plan
    // needs it; a plan that does not calls the extraction off and removes what it wrote.
    let set_volume_digest = set
        .manifest
        .volume
        .as_ref()
        .map(|v| v.content_digest.clone());
    // The listing the plan decides on (its fingerprint: a second listing of a large volume
    // would double restore's memory): the swap happens only while the volume still has it.
    let decided = volume_dir.as_deref().map(volume::fingerprint).transpose()?;
    let speculate = match (&work, &volume_dir) {
        (Some(w), Some(dir)) if !task.dry_run => Some((w, dir.as_path())),
        _ => None,
    };
    let stop = AtomicBool::new(false);
    let (problems, live, volume_needed, staged) = std::thread::scope(|scope| {
        let sums = scope.spawn(|| check::checksums(&set.path, &set.manifest));
        let staging =
            speculate.map(|(w, dir)| scope.spawn(|| Staged::extract(w, &set, dir, &stop)));
        let live = volume_dir
            .as_deref()
            .map(|dir| live_state(dir, &set, task.diff))
            .transpose();
        let problems = crate::error::joined("the checksum thread", sums.join());
        // The plan for the volume: restore it if it differs (or `force`).
        let volume_needed =
            matches!(&live, Ok(Some(l)) if opts.force || l.digest() != set_volume_digest.as_ref());
        if !(volume_needed && problems.as_ref().is_ok_and(Vec::is_empty)) {
            stop.store(true, Ordering::Relaxed);
        }
        let staged =
            staging.map(|h| crate::error::joined("the staging thread", h.join()).and_then(|r| r));
        (problems, live, volume_needed, staged)
    });
    let problems = problems?;
    if let Some(p) = problems.first() {
        return Err(Error::new(
            ErrorKind::IntegrityError,
            format!(
                "backup set {} is damaged ({}: {}); nothing was changed: restore another set (`list` shows them)",
                set.id, p.component, p.message
            ),
        ));
    }

    // The plan.
    let live = live?;
    // Called off (and so an error) when not needed: dropping it removes it.
    let staged = if volume_needed {
        staged.transpose()?
    } else {
        None
    };
    // The database, by content: a fresh backup through the API (which the safety set then
    // holds) compared with the set's. A dry run sends no POST, so it cannot compare.
    let set_db_digest = set.manifest.db.as_ref().map(|d| d.content_digest.clone());
    let mut fresh_db = None;
    let mut live_db_digest = None;
    let db_needed = match &client {
        None => false,
        Some(_) if opts.force => true,
        Some(_) if task.dry_run => {
            warnings.push("the database is reported as to be restored: its content was not compared with the set's, which needs a server-side backup that a dry run does not start".to_string());
            true
        }
        Some(c) => {
            let fresh = FreshDbFile::take(&repo, c)?;
            live_db_digest = Some(fresh.content_digest.clone());
            let needed = live_db_digest != set_db_digest;
            fresh_db = Some(fresh);
            needed
        }
    };

    let before = json!({
        "volume_digest": live.as_ref().and_then(Live::digest),
        "db_content_digest": live_db_digest,
    });
    if !volume_needed && !db_needed {
        let mut result = TaskResult::ok(
            Operation::Restore,
            task.dry_run,
            false,
            format!(
                "the installation already matches backup set {}; nothing to do (force restores anyway)",
                set.id
            ),
        );
        result.warnings = warnings;
        fill(
            &mut result,
            &set,
            volume_dir.as_deref(),
            false,
            client.as_ref().map(|_| false),
        );
        if task.diff {
            result.diff = Some(Diff {
                before: before.clone(),
                after: before,
            });
        }
        return Ok(result);
    }
    if let Some(c) = &client {
        check_versions(c, &set, opts.force, &mut warnings)?;
    }
    let halves = match (volume_needed, db_needed) {
        (true, true) => "the volume and the database",
        (true, false) => "the volume",
        _ => "the database",
    };
    if task.dry_run {
        let mut result = TaskResult::ok(
            Operation::Restore,
            true,
            true,
            format!("would restore {halves} from backup set {}", set.id),
        );
        result.warnings = warnings;
        result.restart_required = opts.restart.is_none();
        fill(
            &mut result,
            &set,
            volume_dir.as_deref(),
            volume_needed,
            client.as_ref().map(|_| db_needed),
        );
        if task.diff {
            result.diff = Some(plan_diff(
                &set,
                live.as_ref(),
                volume_needed,
                db_needed,
                before,
                None,
            )?);
        }
        return Ok(result);
    }

    // Apply.
    let safety = if opts.safety_backup {
        Some(safety_backup(
            &repo,
            task,
            volume_dir.as_deref(),
            client.as_ref(),
            fresh_db.as_mut().and_then(FreshDbFile::hand_over),
            &mut warnings,
        )?)
    } else {
        None
    };
    drop(fresh_db);
    let diff = if task.diff {
        Some(plan_diff(
            &set,
            live.as_ref(),
            volume_needed,
            db_needed,
            before,
            staged.as_ref().map(|s| &s.contents),
        )?)
    } else {
        None
    };
    // The volume must still be the one the plan (and the safety set) saw; a failure here
    // drops `staged`, which removes it: the volume was not touched.
    if let (Some(dir), Some(decided), Some(_)) = (&volume_dir, &decided, &staged) {
        still_as_decided(dir, decided, &set, safety.as_ref())?;
    }
    if db_needed {
        let db_file = set
            .path
            .join(&set.manifest.db.as_ref().expect("checked above").file);
        // The journal says, before the database may change, that it does: a crash from here
        // on is recovered by completing the volume from the staged tree (complete and synced
        // by now), so the halves stay together.
        if let (Some(w), Some(_)) = (&work, &staged) {
            w.before_database(swap::DbHalf {
                restored_from: set.id.clone(),
                safety_set: safety.as_ref().map(|s| s.id.clone()),
                staged_digest: staged_digest(&set),
            })?;
        }
        // A failure here drops `staged`, which removes it: the volume was not touched.
        let restored = client
            .as_ref()
            .expect("db_needed implies api")
            .restore(&db_file);
        if let Err(e) = restored {
            if let Some(w) = &work {
                w.forget_database()?;
            }
            return Err(database_may_have_changed(e, safety.as_ref()));
        }
    }
    if let (Some(staged), Some(dir), Some(decided)) = (staged, &volume_dir, &decided) {
        let swapped = (|| {
            test_pause();
            let specials = still_as_decided(dir, decided, &set, safety.as_ref())?;
            let kept = special_files(
                dir,
                &specials,
                &staged.work.staged(),
                &set.id,
                &mut warnings,
            );
            staged.swap_in(&set.id, &kept)
        })();
        match swapped {
            Ok(more) => warnings.extend(more),
            Err(e) => {
                let w = work.as_ref().expect("a staged tree has a work directory");
                // A check before the swap failed: the volume was not touched.
                if let Err(again) = w.forget_database() {
                    return Err(Error {
                        message: format!("{}; {}", e.message, again.message),
                        ..e
                    });
                }
                return Err(match (db_needed, &client, w.next()) {
                    // The journal left behind completes the volume from the set: the database
                    // stays as restored.
                    (true, Some(_), swap::Next::RollForward) => Error {
                        message: format!(
                            "{}; the database was restored from set {} and stays so: the next task on {} completes the volume from the set too",
                            e.message,
                            set.id,
                            dir.display()
                        ),
                        ..e
                    },
                    (true, Some(c), next) => {
                        let (e, put_back) = put_database_back(
                            c,
                            e,
                            &set,
                            safety.as_ref(),
                            next == swap::Next::Nothing,
                        );
                        // The journal left for the next task must not complete the volume
                        // from the set under a database that was put back.
                        match (put_back, w.database_put_back()) {
                            (true, Err(again)) => Error {
                                message: format!("{}; {}", e.message, again.message),
                                ..e
                            },
                            _ => e,
                        }
                    }
                    _ => e,
                });
            }
        }
    }

    let mut msg = format!("restored {halves} from backup set {}", set.id);
    if let Some(s) = &safety {
        msg = format!("{msg}; the state before is in {}", s.id);
    }
    warnings.push(BROWSER_SESSIONS.to_string());
    let mut result = TaskResult::ok(Operation::Restore, false, true, msg);
    fill(
        &mut result,
        &set,
        volume_dir.as_deref(),
        volume_needed,
        client.as_ref().map(|_| db_needed),
    );
    result.safety_backup = safety;
    result.diff = diff;
    result.restart_required = true;
    if let Some(argv) = &opts.restart {
        let secret_env = task.api.as_ref().and_then(|a| a.secret_env.as_deref());
        match restart(argv, secret_env) {
            Ok(()) => result.restart_required = false,
            Err(e) => {
                result.ok = false;
                result.msg = e.message.clone();
                result.error = Some(e);
            }
        }
    }
    result.warnings = warnings;
    Ok(result)
}

/// The set to restore: the named one, or the newest that is not a safety set.
fn choose(repo: &Repository, opts: &RestoreOptions) -> Result<Set> {
    let (sets, broken) = repo.scan()?;
    match &opts.backup_id {
        Some(id) => sets.into_iter().find(|s| &s.id == id).ok_or_else(|| {
            let why = broken
                .iter()
                .find(|b| &b.id == id)
                .map_or_else(|| "no such set: `list` shows the sets".to_string(), |b| b.problem.clone());
            Error::new(ErrorKind::BackupNotFound, format!("backup set {id} cannot be restored: {why}"))
        }),
        None => sets.into_iter().find(|s| !s.is_safety()).ok_or_else(|| {
            Error::new(
                ErrorKind::BackupNotFound,
                format!("repository {} holds no complete backup set to restore (safety sets are only restored by name)", repo.root.display()),
            )
        }),
    }
}

/// Reads the live volume; unless `every_file` (for a diff), stops at the listing when that
/// already differs from the set's.
fn live_state(dir: &Path, set: &Set, every_file: bool) -> Result<Live> {
    let hashed = match (&set.manifest.volume, every_file) {
        (Some(v), false) => volume::live_unless_counts_differ(dir, v.files, v.expanded_bytes)?,
        _ => Some(volume::live(dir)?),
    };
    Ok(
        hashed.map_or(Live::Differs, |(entries, digest)| Live::Hashed {
            entries,
            digest,
        }),
    )
}

/// Refuses a backup from a newer Connectware than the target's (unless `force`), and warns
/// about any other difference.
fn check_versions(
    client: &Client,
    set: &Set,
    force: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Some(from) = set.manifest.connectware_version.as_deref() else {
        return Ok(());
    };
    let Some(target) = client.server_version() else {
        warnings.push(format!(
            "cannot read the running Connectware version (/api/system/info): the backup is from {from}, compatibility was not checked"
        ));
        return Ok(());
    };
    match (version_key(from), version_key(&target)) {
        (Some(a), Some(b)) if a > b && !force => Err(Error::new(
            ErrorKind::VersionIncompatible,
            format!("backup set {} was taken on Connectware {from}, newer than the running {target}: upgrade Connectware first, or set force", set.id),
        )
        .detail("backup_version", from)
        .detail("target_version", target)),
        _ if from != target => {
            warnings.push(format!("backup set {} was taken on Connectware {from}; the running version is {target}", set.id));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `1.10.2` → `[1, 10, 2]`; None for anything else.
fn version_key(v: &str) -> Option<Vec<u64>> {
    let core = v.split(['-', '+']).next()?;
    core.split('.').map(|p| p.parse().ok()).collect()
}

/// Before and after, with counts of the files a restore adds, removes and changes.
/// `staged` is what staging extracted; without it (a dry run), the archive is read here.
fn plan_diff(
    set: &Set,
    live: Option<&Live>,
    volume_needed: bool,
    db_needed: bool,
    before: Value,
    staged: Option<&Contents>,
) -> Result<Diff> {
    let mut after = before.clone();
    if db_needed {
        after["db_content_digest"] = json!(set.manifest.db.as_ref().map(|d| &d.content_digest));
    }
    if let (true, Some(Live::Hashed { entries, .. })) = (volume_needed, live) {
        let read;
        let contents = match staged {
            Some(contents) => contents,
            None => {
                read = check::volume(&set.path, &set.manifest, None)?.0;
                &read
            }
        };
        let changes = digest::changes(entries, &contents.entries);
        after["volume_digest"] = json!(contents.content_digest);
        after["files_added"] = json!(changes.added.len());
        after["files_removed"] = json!(changes.removed.len());
        after["files_changed"] = json!(changes.changed.len());
    }
    Ok(Diff { before, after })
}

/// The safety set of the current state, written before anything changes.
fn safety_backup(
    repo: &Repository,
    task: &Task,
    volume_dir: Option<&Path>,
    client: Option<&Client>,
    fresh_db: Option<backup::FreshDb>,
    warnings: &mut Vec<String>,
) -> Result<SetRef> {
    let id = repo.unique_id(&format!(
        "{}{}",
        crate::repository::SAFETY_PREFIX,
        clock::id_stamp(SystemTime::now())
    ));
    let opts = BackupOptions {
        backup_id: Some(id),
        force: true,
        retention: None,
        verify: false,
        compression: Compression::default(),
    };
    let taken = backup::take_set(
        repo,
        task,
        &opts,
        volume_dir,
        client,
        None,
        Vec::new(),
        Value::Null,
        fresh_db,
    )
    .map_err(|e| Error {
        message: format!(
            "the safety backup before the restore failed, so nothing was restored: {}",
            e.message
        ),
        ..e
    })?;
    warnings.extend(taken.warnings);
    Ok(taken.backup.expect("a written set is named"))
}

/// The set's volume extracted into the work directory inside the volume, checked against the
/// manifest and synced. Dropping it removes it, unless it was swapped in.
struct Staged<'a> {
    work: &'a Work,
    /// What the archive holds.
    contents: Contents,
    remove_on_drop: bool,
}

impl<'a> Staged<'a> {
    /// Extracts until done or `stop` is set (then an error).
    fn extract(work: &'a Work, set: &Set, dir: &Path, stop: &AtomicBool) -> Result<Staged<'a>> {
        let staged = work.fresh_staged()?;
        let outcome = check::volume_until(&set.path, &set.manifest, Some(&staged), stop).and_then(|(contents, problems)| match problems.first() {
            None => swap::sync_filesystem(&staged).map(|()| contents),
            Some(p) => Err(Error::new(
                ErrorKind::IntegrityError,
                format!("backup set {} does not extract as its manifest says ({}); the volume {} was not touched", set.id, p.message, dir.display()),
            )),
        });
        match outcome {
            Ok(contents) => Ok(Staged {
                work,
                contents,
                remove_on_drop: true,
            }),
            Err(e) => {
                let _ = work.discard_staged();
                Err(e)
            }
        }
    }

    /// Swaps the staged tree into the volume, leaving the root names in `kept` in place
    /// (journaled: an error is rolled back before this returns; after a crash the next run
    /// finishes or rolls back the swap, so the staged tree must stay).
    fn swap_in(mut self, set: &str, kept: &[OsString]) -> Result<Vec<String>> {
        self.remove_on_drop = false;
        self.work.swap(set, kept)
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = self.work.discard_staged();
        }
    }
}

/// Runs the operator's restart command; its output goes to stderr (stdout is the result's).
/// The API secret's environment variable (`password_env`) is removed from its environment.
fn restart(argv: &[String], secret_env: Option<&str>) -> Result<()> {
    let shown = argv.join(" ");
    let mut command = Command::new(&argv[0]);
    if let Some(var) = secret_env {
        command.env_remove(var);
    }
    let status = command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| {
            Error::new(ErrorKind::IoError, format!("restored, but the restart command `{shown}` could not run: {e}; restart Connectware by hand"))
        })?;
    if !status.success() {
        return Err(Error::new(
            ErrorKind::IoError,
            format!("restored, but the restart command `{shown}` failed ({status}); restart Connectware by hand"),
        )
        .detail("restart", argv));
    }
    Ok(())
}

/// Names the set and what happened to each half.
/// `db_changed` is None when the task did not ask for the database half.
fn fill(
    result: &mut TaskResult,
    set: &Set,
    volume_dir: Option<&Path>,
    volume_changed: bool,
    db_changed: Option<bool>,
) {
    result.backup = Some(SetRef {
        id: set.id.clone(),
        path: set.path.display().to_string(),
        manifest: Some(set.manifest.clone()),
    });
    if let (Some(dir), Some(v)) = (volume_dir, &set.manifest.volume) {
        result.volume = Some(VolumeOutcome {
            changed: volume_changed,
            path: dir.display().to_string(),
            files: v.files,
            bytes: v.expanded_bytes,
            content_digest: v.content_digest.clone(),
        });
    }
    if let (Some(d), Some(changed)) = (&set.manifest.db, db_changed) {
        result.db = Some(DbOutcome {
            changed,
            backup_id: Some(d.backup_id.clone()),
            status_message: None,
        });
    }
}

/// A fresh database backup taken through the API to compare with the set's, kept under the
/// repository's `.staging/` until the safety set takes it over; removed otherwise.
struct FreshDbFile {
    dir: PathBuf,
    content_digest: String,
    taken: Option<backup::FreshDb>,
}

impl FreshDbFile {
    fn take(repo: &Repository, client: &Client) -> Result<FreshDbFile> {
        let dir = repo.stage(&format!("restore-db.{}", std::process::id()))?;
        let path = dir.join("db.tgz");
        let fresh = (|| {
            let started = (std::time::Instant::now(), clock::now());
            let downloaded = client.backup(&path)?;
            let content_digest = dbfile::content_digest(&path).map_err(|e| {
                Error::new(
                    ErrorKind::ApiProtocolError,
                    format!("the database backup Connectware sent is not a readable .tgz: {e}"),
                )
            })?;
            Ok(FreshDbFile {
                dir: dir.clone(),
                content_digest,
                taken: Some(backup::FreshDb {
                    path: path.clone(),
                    downloaded,
                    started,
                    finished_at: clock::now(),
                }),
            })
        })();
        if fresh.is_err() {
            let _ = crate::repository::remove_tree(&dir);
        }
        fresh
    }

    fn hand_over(&mut self) -> Option<backup::FreshDb> {
        self.taken.take()
    }
}

impl Drop for FreshDbFile {
    fn drop(&mut self) {
        let _ = crate::repository::remove_tree(&self.dir);
    }
}

/// Refuses to swap when the volume's listing (names, types, sizes, modes, times, inodes)
/// differs from the one the plan decided on: something wrote to it meanwhile. Returns the
/// relative paths of the volume's sockets, FIFOs and devices.
fn still_as_decided(
    dir: &Path,
    decided: &tree::Fingerprint,
    set: &Set,
    safety: Option<&SetRef>,
) -> Result<Vec<Vec<u8>>> {
    let (now, specials) = volume::fingerprint_and_specials(dir)?;
    if now == *decided {
        return Ok(specials);
    }
    let kept = safety.map_or(String::new(), |s| {
        format!(" (safety set {} was kept)", s.id)
    });
    Err(Error::new(
        ErrorKind::ConsistencyError,
        format!(
            "the volume {} was written to while the restore of set {} was prepared (an entry was added, removed or changed); the volume was not touched{kept}: run the restore again when no service is being (de)commissioned",
            dir.display(),
            set.id
        ),
    ))
}

/// The live volume's sockets, FIFOs and devices, which backups skip: those at the root that
/// the set has no entry of the same name for stay in place (returned); any other is removed
/// with the old tree, and a warning names each.
fn special_files(
    dir: &Path,
    specials: &[Vec<u8>],
    staged: &Path,
    set: &str,
    warnings: &mut Vec<String>,
) -> Vec<OsString> {
    let mut kept = Vec::new();
    for path in specials {
        let name = std::ffi::OsStr::from_bytes(path);
        let shown = dir.join(name);
        let at_root = !path.contains(&b'/');
        if at_root && std::fs::symlink_metadata(staged.join(name)).is_err() {
            kept.push(name.to_os_string());
            warnings.push(format!(
                "{} is a socket, FIFO or device, which backups skip; the restore left it in place",
                shown.display()
            ));
        } else {
            warnings.push(format!(
                "{} is a socket, FIFO or device, which backups skip; it was removed with the old tree (set {set} replaces what holds it)",
                shown.display()
            ));
        }
    }
    kept
}

/// After the database was restored and the volume could not be: puts the database back from
/// the safety set, and says in the error what became of each half; true if it was put back.
/// `volume_as_before` says whether the volume holds its old tree again; if its rollback failed,
/// the journal left behind puts the old tree back in the next task on the volume.
fn put_database_back(
    client: &Client,
    error: Error,
    set: &Set,
    safety: Option<&SetRef>,
    volume_as_before: bool,
) -> (Error, bool) {
    let safety_db = safety.and_then(|s| {
        s.manifest
            .as_ref()
            .and_then(|m| m.db.as_ref())
            .map(|d| (s, Path::new(&s.path).join(&d.file)))
    });
    let mut put_back = false;
    let message = match safety_db {
        Some((s, file)) => match client.restore(&file).inspect(|_| put_back = true) {
            Ok(_) if volume_as_before => format!(
                "{}; the database, already restored from set {}, was put back from safety set {}, so both halves are as before the restore",
                error.message, set.id, s.id
            ),
            Ok(_) => format!(
                "{}; the database, already restored from set {}, was put back from safety set {}; the volume is not yet as before: the next task on it moves its old entries back (or do it by hand as said above)",
                error.message, set.id, s.id
            ),
            Err(again) => format!(
                "{}; the database was restored from set {} and putting it back from safety set {} failed too ({}): the halves are out of step, restore the database from {} by hand (see README) or run the restore again",
                error.message,
                set.id,
                s.id,
                again.message,
                file.display()
            ),
        },
        None => format!(
            "{}; the database was restored from set {} and the volume was not (no safety set to put it back from): the halves are out of step, run the restore again",
            error.message, set.id
        ),
    };
    let mut error = Error { message, ..error };
    if let Some(s) = safety {
        error = error.detail("safety_set", s.id.clone());
    }
    (error, put_back)
}

/// The staged tree's expected content digest: the set's volume digest, which staging checked.
fn staged_digest(set: &Set) -> String {
    set.manifest
        .volume
        .as_ref()
        .map(|v| v.content_digest.clone())
        .unwrap_or_default()
}

/// A failed database restore: if the server had accepted it (`restore_started` in the
/// error's details), the database may have changed, and the error names the safety set that
/// holds it as it was.
fn database_may_have_changed(e: Error, safety: Option<&SetRef>) -> Error {
    if !e.details.contains_key("restore_started") {
        return e;
    }
    let before = match safety {
        Some(s) => format!(
            "safety set {} holds it as it was before: restore that set (or its db.tgz by hand, see README) if Connectware does not work",
            s.id
        ),
        None => "no safety set was written (safety_backup was false)".to_string(),
    };
    let mut e = Error {
        message: format!(
            "{}; Connectware had accepted the restore request, so the database may have changed; the volume was not touched; {before}",
            e.message
        ),
        ..e
    };
    if let Some(s) = safety {
        e = e.detail("safety_set", s.id.clone());
    }
    e
}

/// See [`TEST_PAUSE_BEFORE_SWAP`].
fn test_pause() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(file) = std::env::var_os(TEST_PAUSE_BEFORE_SWAP) else {
        return;
    };
    let file = PathBuf::from(file);
    let mut reached = file.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(&reached, b"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
