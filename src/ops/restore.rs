//! restore: put a backup set back, so that a failure at any point leaves a working
//! installation.
//!
//! Plan: lock the repository and the volume, finish any swap a crash interrupted, choose the
//! set, check its checksums, and decide per half whether it differs from the live state (the
//! volume by content digest, or by its listing alone when that already differs; the database
//! by the server's last restore id). Nothing differs: `changed: false`, nothing written. The
//! volume is extracted into a staging directory beside it (and checked against the manifest's
//! digest) while the checksums and the live digest are read: the staged tree is used only once
//! both say so, and is removed otherwise. Apply, in this order: safety backup of the current
//! state (`pre-restore-…`) → restore the database → swap the staged tree in (journaled, see
//! volume/swap.rs) → run `restart`. A failure before the swap leaves the volume untouched.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::clock;
use crate::connectware::{self, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::backup;
use crate::repository::{Repository, Set, check};
use crate::result::{DbOutcome, Diff, SetRef, TaskResult, VolumeOutcome};
use crate::task::{BackupOptions, Compression, Operation, RestoreOptions, Task};
use crate::volume;
use crate::volume::digest::{self, Lines};
use crate::volume::extract::Contents;
use crate::volume::swap::{self, Work};

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
    let volume_dir = task.volume.as_ref().map(volume::resolve).transpose()?;
    let mut warnings = Vec::new();
    let client = connectware::client_for(task.api.as_ref(), &mut warnings)?;

    let repo = Repository::open(&task.repository)?;
    let _repo_lock = repo.lock(Operation::Restore, task.wait_for_lock)?;
    let work = volume_dir.as_deref().map(Work::of).transpose()?;
    let _volume_lock = work
        .as_ref()
        .map(|w| w.lock(Operation::Restore, task.wait_for_lock))
        .transpose()?;
    if !task.dry_run {
        repo.clean_staging()?;
    }
    if let Some(w) = &work {
        if task.dry_run {
            if w.pending() {
                warnings.push("an interrupted restore will be finished first".to_string());
            }
        } else if let Some(what) = w.recover()?.describe(&w.volume) {
            warnings.push(what);
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
        let problems = sums.join().expect("the checksum thread does not panic");
        // The plan for the volume: restore it if it differs (or `force`).
        let volume_needed =
            matches!(&live, Ok(Some(l)) if opts.force || l.digest() != set_volume_digest.as_ref());
        if !(volume_needed && problems.is_empty()) {
            stop.store(true, Ordering::Relaxed);
        }
        let staged = staging.map(|h| h.join().expect("the staging thread does not panic"));
        (problems, live, volume_needed, staged)
    });
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
    let db_status = match &client {
        Some(c) => Some(c.status()?),
        None => None,
    };
    let set_db_id = set.manifest.db.as_ref().map(|d| d.backup_id.clone());
    let last_restore = db_status.as_ref().and_then(|s| s.restore.clone());
    let db_matches = last_restore
        .as_ref()
        .is_some_and(|r| r.succeeded && r.id == set_db_id);
    let db_needed = client.is_some() && (opts.force || !db_matches);

    let before = json!({
        "volume_digest": live.as_ref().and_then(Live::digest),
        "db_restore_id": last_restore.as_ref().and_then(|r| r.id.clone()),
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
            &mut warnings,
        )?)
    } else {
        None
    };
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
    if db_needed {
        let db_file = set
            .path
            .join(&set.manifest.db.as_ref().expect("checked above").file);
        // A failure here drops `staged`, which removes it: the volume was not touched.
        client
            .as_ref()
            .expect("db_needed implies api")
            .restore(&db_file)?;
    }
    if let Some(staged) = staged {
        staged.swap_in(&set.id)?;
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
        match restart(argv) {
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
        after["db_restore_id"] = json!(set.manifest.db.as_ref().map(|d| &d.backup_id));
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
        keep_last: None,
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

/// The set's volume extracted into the work directory beside the volume, checked against the
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

    /// Swaps the staged tree into the volume (journaled: if this fails half-way, the next run
    /// finishes or rolls back the swap, so the staged tree must stay).
    fn swap_in(mut self, set: &str) -> Result<()> {
        self.remove_on_drop = false;
        self.work.swap(set)
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
fn restart(argv: &[String]) -> Result<()> {
    let shown = argv.join(" ");
    let status = Command::new(&argv[0])
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
