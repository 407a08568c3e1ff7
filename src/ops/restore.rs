//! restore: put a backup set back, so that a failure at any point leaves a working
//! installation.
//!
//! Plan: lock the repository and every volume, finish any swap a crash interrupted, choose the
//! set, check its checksums, and decide per component whether it differs from the live state
//! ([`decide`]: each volume by content digest, or by its listing alone when that already
//! differs; the database by content: the digest of a fresh API backup against the set's,
//! never by the server's last restore id). Nothing differs: `changed: false`, nothing written.
//! Each volume's archive is extracted into the work directory inside that volume (and checked
//! against the manifest's digest) while the checksums and the live digest are read: a staged
//! tree is used only once both say so, and is removed otherwise.
//!
//! Apply, in this order: safety backup of the current state (`pre-restore-…`, holding the
//! fresh database backup) → check that every volume's listing is still the one decided on →
//! restore the database → check the listings again → swap the staged trees in (journaled,
//! see volume/swap.rs; an error is rolled back at once) → run `restart` (without the API
//! secret in its environment). A failure before the swap leaves the volumes untouched; a
//! failure after the database was restored puts the database back from the safety set, so
//! the halves stay together, and the error says what became of each.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::backup::{self, DbTaken, Taken, Taking};
use super::{LiveVolume, check, db_outcome, installation, set_components};
use crate::clock;
use crate::connectware::{self, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::Recipients;
use crate::layers::{self, Opening};
use crate::repository::backend::NewSet;
use crate::repository::manifest::{Component, InstallationInfo, Source, Tree};
use crate::repository::{Repository, SAFETY_PREFIX, Set};
use crate::result::{Diff, SetRef, TaskResult};
use crate::task::{Compression, Operation, Quiesce, RestoreOptions, Task};
use crate::volume;
use crate::volume::digest::{self, Lines};
use crate::volume::extract::Contents;
use crate::volume::swap::{self, Group, Work};
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

/// What the plan knows of the live database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveDb {
    /// The task has no `api`.
    NotAsked,
    /// Not compared: a dry run (that needs a server-side backup, which a dry run does not
    /// start), or `force`.
    NotCompared,
    /// The content digest of a fresh backup through the API.
    Digest(String),
}

/// The plan of a restore: per component, restore or leave, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Per volume of the task: (name, restore it, why).
    pub volumes: Vec<(String, bool, String)>,
    /// The database, if the task asks for it: (restore it, why).
    pub db: Option<(bool, String)>,
}

impl Plan {
    /// Nothing to restore.
    pub fn is_empty(&self) -> bool {
        self.volumes.iter().all(|(_, needed, _)| !needed)
            && self.db.as_ref().is_none_or(|(needed, _)| !needed)
    }

    fn volume_needed(&self, i: usize) -> bool {
        self.volumes[i].1
    }

    fn db_needed(&self) -> bool {
        self.db.as_ref().is_some_and(|(needed, _)| *needed)
    }

    /// `the volume and the database`, `the volumes a, b`, …
    fn describe(&self, single: bool) -> String {
        let volumes: Vec<&str> = self
            .volumes
            .iter()
            .filter(|(_, needed, _)| *needed)
            .map(|(n, _, _)| n.as_str())
            .collect();
        let volumes = match (volumes.len(), single) {
            (0, _) => None,
            (1, true) => Some("the volume".to_string()),
            (1, false) => Some(format!("the volume {}", volumes[0])),
            _ => Some(format!("the volumes {}", volumes.join(", "))),
        };
        match (volumes, self.db_needed()) {
            (Some(v), true) => format!("{v} and the database"),
            (Some(v), false) => v,
            (None, _) => "the database".to_string(),
        }
    }
}

/// Decides per component whether the restore changes it. `volumes`: each volume's name, the
/// set's content digest and the live one (None: its listing alone already differs).
pub fn decide(volumes: &[(&str, &str, Option<&str>)], db: (&LiveDb, Option<&str>), force: bool) -> Plan {
    let volumes = volumes
        .iter()
        .map(|(name, set, live)| {
            let (needed, why) = match live {
                _ if force => (true, "force".to_string()),
                None => (true, "its listing differs from the set's".to_string()),
                Some(l) if l == set => (false, "already equal to the set's".to_string()),
                Some(_) => (true, "its content differs from the set's".to_string()),
            };
            (name.to_string(), needed, why)
        })
        .collect();
    let db = match db {
        (LiveDb::NotAsked, _) => None,
        (_, _) if force => Some((true, "force".to_string())),
        (LiveDb::NotCompared, _) => Some((
            true,
            "not compared: that needs a server-side backup, which a dry run does not start"
                .to_string(),
        )),
        (LiveDb::Digest(live), Some(set)) if live == set => {
            Some((false, "already equal to the set's".to_string()))
        }
        (LiveDb::Digest(_), _) => Some((true, "its content differs from the set's".to_string())),
    };
    Plan { volumes, db }
}

/// One volume of the restore, with the component of the set it is restored from.
struct Target<'s> {
    live: LiveVolume,
    component: &'s Component,
    tree: &'s Tree,
    work: &'s Work,
}

pub fn run(task: &Task, opts: &RestoreOptions) -> Result<TaskResult> {
    let engine = task
        .installation
        .as_ref()
        .map(|_| crate::docker::Engine::connect())
        .transpose()?;
    let mut volumes = match &task.installation {
        None => super::resolve_volumes(task)?,
        Some(_) => Vec::new(),
    };
    let mut warnings = Vec::new();
    let mut client = connectware::client_for(task.api.as_ref(), &mut warnings)?;

    let repo = Repository::open(&task.repository)?;
    let _repo_lock = repo.lock(Operation::Restore, task.wait_for_lock)?;
    // An installation's volumes are the set's (SPEC §9): the set is chosen first, and a volume
    // this host lacks is created (not in a dry run, where an empty stand-in takes its place).
    let mut chosen = None;
    let mut fresh = None;
    if let (Some(inst), Some(e)) = (&task.installation, &engine) {
        let set = choose(&repo, opts)?;
        // The key opens the set before anything is stopped or created (SPEC §11); a host that
        // lacks a volume or the install directory gets nothing before the checksums pass.
        super::opening(task, &repo, &set, "a restore")?;
        let mut verify_first = || {
            let problems = crate::repository::check::checksums(repo.opener(&set), &set.manifest);
            match problems.first() {
                None => Ok(()),
                Some(p) => Err(damaged(&set, p)),
            }
        };
        let found =
            installation::for_restore(task, inst, e, &set.manifest, &mut verify_first, &mut warnings)?;
        volumes = found.volumes.clone();
        // The database comes back inside the postgresql volume: no API restore beside it.
        if client.is_some() && volumes.iter().any(|v| v.name == "postgresql") {
            client = None;
            warnings.push("the database is restored inside the postgresql volume, so `api` is not used to restore it".to_string());
        }
        chosen = Some(set);
        fresh = Some(found);
    }
    let single = !volumes.iter().any(|v| v.listed);
    // Every volume of the task, locked together (in one order, so two tasks never wait for
    // each other in a cycle), and made whole first if a killed restore left any half-swapped.
    let mut all = volumes
        .iter()
        .map(|v| Work::of(&v.dir))
        .collect::<Result<Vec<_>>>()?;
    // An installation's install directory too, even when no file of it is restored: a killed
    // restore may have left its files half-swapped.
    if let Some(inst) = &task.installation
        && !volumes.iter().any(LiveVolume::is_files)
        && inst.install_dir.is_dir()
    {
        all.push(Work::of(&inst.install_dir)?);
    }
    let all = if all.is_empty() { None } else { Some(Group::new(all)?) };
    let _volume_locks = all
        .as_ref()
        .map(|g| g.lock(Operation::Restore, task.wait_for_lock, task.dry_run))
        .transpose()?;
    if !task.dry_run {
        repo.clean_staging()?;
    }
    if let Some(g) = &all {
        if task.dry_run {
            if g.pending() {
                warnings.push("an interrupted restore will be finished first".to_string());
            }
        } else {
            let (done, more) = g.recover()?;
            warnings.extend(more);
            warnings.extend(done.iter().filter_map(|(dir, d)| d.describe(dir)));
        }
    }
    let works = all.as_ref().map(Group::members).unwrap_or_default();
    if let (Some(inst), Some(e)) = (&task.installation, &engine) {
        warnings.extend(installation::recover(e, inst, Operation::Restore, task.dry_run)?);
    }
    // With `quiesce: stop`, the project's running containers stop before the volumes are
    // read for the plan (a running service writes to them), unless the database is restored
    // through the API, which needs Connectware running: then they stop just before the swap.
    let stopping = task
        .installation
        .as_ref()
        .zip(engine.as_ref())
        .filter(|(inst, _)| inst.quiesce == Quiesce::Stop && !task.dry_run);
    let mut quiesced = match (stopping, &chosen) {
        (Some((inst, e)), Some(set))
            if client.is_none() && (opts.force || !all_equal(&volumes, &set.manifest)?) =>
        {
            Some(installation::stop(e, inst, Operation::Restore, task.wait_for_lock)?)
        }
        _ => None,
    };

    let set = match chosen {
        Some(set) => set,
        None => choose(&repo, opts)?,
    };
    // The key is checked before anything is read or written (SPEC §11); the safety set is
    // encrypted to the recipients of the set restored.
    let opening = super::opening(task, &repo, &set, "a restore")?;
    let to = super::recipients_of(&set)?;
    let mut targets = Vec::with_capacity(volumes.len());
    for (live, work) in volumes.into_iter().zip(works) {
        let (component, tree) = live.component_in(&set.manifest)?;
        targets.push(Target {
            live,
            component,
            tree,
            work,
        });
    }
    // The database half: the API and the set's database file, together.
    let db_target = match (&client, set.manifest.db()) {
        (None, _) => None,
        (Some(c), Some(d)) => Some((c, d)),
        (Some(_), None) => {
            return Err(Error::new(
                ErrorKind::BackupNotFound,
                format!(
                    "backup set {} has no database half: leave out `api` to restore its volume alone",
                    set.id
                ),
            ));
        }
    };

    // The listing each volume's plan decides on (its fingerprint: a second listing of a large
    // volume would double restore's memory): the swap happens only while the volume still
    // has it.
    let decided = targets
        .iter()
        .map(|t| volume::fingerprint(t.live.root()))
        .collect::<Result<Vec<_>>>()?;
    // Independent reads at once: the set's checksums (one thread for the whole set), and per
    // volume its live digest and the extraction of the set's archive into its staging, which
    // the restore needs if the volume differs. A staged tree is only a candidate until the
    // checksums match and the plan needs it; a plan that does not calls the extraction off
    // and removes what it wrote.
    // One flag per volume calls its extraction off: set when the volume turns out equal, and
    // for every volume as soon as the checksums find the set damaged.
    let stops: Vec<AtomicBool> = targets.iter().map(|_| AtomicBool::new(false)).collect();
    let (problems, read) = std::thread::scope(|scope| {
        let sums = scope.spawn(|| {
            let problems =
                crate::repository::check::checksums(repo.opener(&set), &set.manifest);
            if !problems.is_empty() {
                for stop in &stops {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            problems
        });
        let read: Vec<Result<(Live, Option<Staged>)>> = targets
            .iter()
            .zip(&stops)
            .map(|(t, stop)| {
                std::thread::scope(|inner| {
                    let staging = (!task.dry_run)
                        .then(|| inner.spawn(|| Staged::extract(t.work, &repo, &set, opening, t, stop)));
                    let live = live_state(t.live.root(), t.tree, task.diff);
                    let needed = matches!(&live, Ok(l) if opts.force || l.digest() != Some(&t.component.content_digest));
                    if !needed {
                        stop.store(true, Ordering::Relaxed);
                    }
                    let staged = staging
                        .map(|h| crate::error::joined("the staging thread", h.join()).and_then(|r| r));
                    let live = live?;
                    // Called off (and so an error) when not needed: dropping it removes it.
                    let staged = if needed { staged.transpose()? } else { None };
                    Ok((live, staged))
                })
            })
            .collect();
        (crate::error::joined("the checksum thread", sums.join()), read)
    });
    let problems = problems?;
    if let Some(p) = problems.first() {
        return Err(damaged(&set, p));
    }
    let mut live = Vec::with_capacity(read.len());
    let mut staged: Vec<Option<Staged>> = Vec::with_capacity(read.len());
    for r in read {
        let (l, s) = r?;
        live.push(l);
        staged.push(s);
    }

    // The database, by content: a fresh backup through the API (which the safety set then
    // holds) compared with the set's. A dry run sends no POST, so it cannot compare.
    let set_db = set.manifest.db();
    let mut fresh_db: Option<(Box<dyn NewSet>, DbTaken)> = None;
    let live_db = match &client {
        None => LiveDb::NotAsked,
        // `force` restores it whatever it holds: no backup to compare (the safety set, if
        // any, takes its own), so a broken server-side backup cannot stop a forced restore.
        Some(_) if task.dry_run || opts.force => LiveDb::NotCompared,
        Some(c) => {
            let new_set = repo.create_set()?;
            let taken = backup::take_db(c, new_set.as_ref(), to.as_ref())?;
            let digest = taken.content_digest.clone();
            fresh_db = Some((new_set, taken));
            LiveDb::Digest(digest)
        }
    };
    let plan = decide(
        &targets
            .iter()
            .zip(&live)
            .map(|(t, l)| {
                (
                    t.live.name.as_str(),
                    t.component.content_digest.as_str(),
                    l.digest().map(String::as_str),
                )
            })
            .collect::<Vec<_>>(),
        (&live_db, set_db.map(|d| d.content_digest.as_str())),
        opts.force,
    );
    if live_db == LiveDb::NotCompared && !opts.force {
        warnings.push("the database is reported as to be restored: its content was not compared with the set's, which needs a server-side backup that a dry run does not start".to_string());
    }
    let live_db_digest = match &live_db {
        LiveDb::Digest(d) => Some(d.clone()),
        _ => None,
    };
    let before = if single {
        json!({
            "volume_digest": live.first().and_then(Live::digest),
            "db_content_digest": live_db_digest,
        })
    } else {
        json!({
            "volume_digests": targets.iter().zip(&live).map(|(t, l)| (t.live.name.clone(), json!(l.digest()))).collect::<serde_json::Map<_, _>>(),
            "db_content_digest": live_db_digest,
        })
    };
    if plan.is_empty() {
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
        fill(&mut result, &set, &targets, &plan);
        if task.diff {
            result.diff = Some(Diff {
                before: before.clone(),
                after: before,
            });
        }
        if let Some(q) = &quiesced {
            if let Err(e) = q.resume() {
                result.warnings.push(e.message);
            }
            report_quiesce(&mut result, q);
        }
        return Ok(result);
    }
    if let Some(c) = &client {
        check_versions(c, &set, opts.force, &mut warnings)?;
    }
    let what = plan.describe(single);
    if task.dry_run {
        let mut result = TaskResult::ok(
            Operation::Restore,
            true,
            true,
            format!("would restore {what} from backup set {}", set.id),
        );
        result.warnings = warnings;
        result.restart_required = opts.restart.is_none();
        fill(&mut result, &set, &targets, &plan);
        if task.diff {
            result.diff = Some(plan_diff(&repo, &set, opening, &targets, &live, &plan, before, &staged)?);
        }
        return Ok(result);
    }

    // Apply.
    // The safety set holds what exists of what the restore changes: not the volumes (or the
    // install directory) this run created on a fresh host; nothing at all if none existed.
    let existed: Vec<LiveVolume> = targets
        .iter()
        .filter(|t| {
            fresh.as_ref().is_none_or(|f| match &t.live.source {
                Source::DockerVolume(name) if !t.live.is_files() => !f.created.contains(name),
                _ => !f.created_dir,
            })
        })
        .map(|t| t.live.clone())
        .collect();
    let safety = if opts.safety_backup && (!existed.is_empty() || client.is_some()) {
        Some(safety_backup(
            &repo,
            &existed,
            client.as_ref(),
            to.as_ref(),
            fresh_db.take(),
            set.manifest.installation.as_ref(),
            &mut warnings,
        )?)
    } else {
        None
    };
    drop(fresh_db);
    let diff = if task.diff {
        Some(plan_diff(&repo, &set, opening, &targets, &live, &plan, before, &staged)?)
    } else {
        None
    };
    // Every volume must still be the one the plan (and the safety set) saw; a failure here
    // drops the staged trees, which removes them: no volume was touched.
    for (i, t) in targets.iter().enumerate() {
        if staged[i].is_some() {
            still_as_decided(t.live.root(), &decided[i], &set, safety.as_ref())?;
        }
    }
    // The volumes to swap in, as one group: one journal for all of them, so that after an
    // error all keep their old trees, and after a kill all end old or all new.
    let restoring: Vec<usize> = (0..targets.len()).filter(|i| staged[*i].is_some()).collect();
    // Whether the install directory's docker-compose.yml changes (its Connectware version).
    let compose_changes = restoring.iter().any(|&i| {
        let t = &targets[i];
        let name = "docker-compose.yml";
        t.live.is_files()
            && t.live.only.iter().flatten().any(|f| f == name)
            && std::fs::read(t.work.staged().join(name)).ok() != std::fs::read(t.live.dir.join(name)).ok()
    });
    let swap = if restoring.is_empty() {
        None
    } else {
        Some(Group::new(
            restoring.iter().map(|&i| targets[i].work.clone()).collect(),
        )?)
    };
    if let (true, Some((c, db))) = (plan.db_needed(), db_target) {
        // The journal says, before the database may change, that it does: a crash from here
        // on is recovered by completing the volumes from the staged trees (complete and synced
        // by now), so the halves stay together.
        if let Some(g) = &swap {
            let halves: Vec<swap::DbHalf> = restoring
                .iter()
                .map(|&i| swap::DbHalf {
                    restored_from: set.id.clone(),
                    safety_set: safety.as_ref().map(|s| s.id.clone()),
                    staged_digest: targets[i].component.content_digest.clone(),
                })
                .collect();
            g.before_database(&halves)?;
        }
        // A failure here drops the staged trees, which removes them: no volume was touched.
        if let Err(e) = c.restore(&|| open_db(&repo, &set, db, opening)) {
            if let Some(g) = &swap {
                g.forget_database()?;
            }
            return Err(database_may_have_changed(e, safety.as_ref()));
        }
    }
    if let (Some((inst, e)), None) = (stopping, &quiesced) {
        quiesced = Some(installation::stop(e, inst, Operation::Restore, task.wait_for_lock)?);
    }
    if let Some(g) = &swap {
        let swapped = (|| {
            test_pause();
            // Every volume must still have the listing decided on, checked again just before.
            let mut kept = Vec::with_capacity(restoring.len());
            for &i in &restoring {
                let t = &targets[i];
                let specials = still_as_decided(t.live.root(), &decided[i], &set, safety.as_ref())?;
                let mut keep = special_files(
                    &t.live.dir,
                    &specials,
                    &t.work.staged(),
                    &set.id,
                    &mut warnings,
                );
                // The install directory's other entries are none of the files component's.
                if let Some(only) = &t.live.only {
                    keep.extend(others_in(&t.live.dir, only)?);
                }
                kept.push(keep);
            }
            // From here on the staged trees belong to the swap's journal: recovery needs them
            // after a kill, and the volume lock's release removes them otherwise.
            for s in staged.iter_mut().flatten() {
                s.remove_on_drop = false;
            }
            // A signal while the entries move leaves the containers stopped (see
            // installation::swapping): the journals finish the job in the next task.
            installation::swapping(true);
            let swapped = g.swap(&set.id, &kept);
            installation::swapping(false);
            swapped
        })();
        match swapped {
            Ok(more) => warnings.extend(more),
            Err(e) => {
                // A check before the swap failed: no volume was touched.
                if let Err(again) = g.forget_database() {
                    return Err(Error {
                        message: format!("{}; {}", e.message, again.message),
                        ..e
                    });
                }
                let dirs = restoring
                    .iter()
                    .map(|&i| targets[i].live.dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(match (plan.db_needed(), &client, g.next()) {
                    // The journal left behind completes the volumes from the set: the database
                    // stays as restored.
                    (true, Some(_), swap::Next::RollForward) => Error {
                        message: format!(
                            "{}; the database was restored from set {} and stays so: the next task on {dirs} completes the {} from the set too",
                            e.message,
                            set.id,
                            if restoring.len() == 1 { "volume" } else { "volumes" }
                        ),
                        ..e
                    },
                    (true, Some(c), next) => {
                        let (e, put_back) = put_database_back(
                            &repo,
                            opening,
                            c,
                            e,
                            &set,
                            safety.as_ref(),
                            next == swap::Next::Nothing,
                        );
                        // The journal left for the next task must not complete the volumes
                        // from the set under a database that was put back.
                        match (put_back, g.database_put_back()) {
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

    let mut msg = format!("restored {what} from backup set {}", set.id);
    if let Some(s) = &safety {
        msg = format!("{msg}; the state before is in {}", s.id);
    }
    warnings.push(BROWSER_SESSIONS.to_string());
    let mut result = TaskResult::ok(Operation::Restore, false, true, msg);
    fill(&mut result, &set, &targets, &plan);
    result.safety_backup = safety.map(|s| SetRef {
        id: s.id,
        path: s.location,
        manifest: Some(s.manifest),
    });
    result.diff = diff;
    result.restart_required = true;
    if compose_changes {
        result.warnings.push(format!(
            "the restore put back the set's docker-compose.yml, and with it the Connectware version of set {} ({}): the containers run the images it names",
            set.id,
            set.manifest.connectware_version.as_deref().unwrap_or("version not recorded")
        ));
    }
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
    // Exactly the containers this run stopped run again (after `restart`, which may have
    // started them already: starting a running container changes nothing).
    // The restore is done: a container that does not start again is said, not an error
    // that would hide what was restored.
    if let Some(q) = &quiesced {
        match q.resume() {
            Ok(_) if !q.containers().is_empty() && result.error.is_none() => {
                result.restart_required = false
            }
            Ok(_) => {}
            Err(e) => result.warnings.push(e.message),
        }
        report_quiesce(&mut result, q);
    }
    warnings.append(&mut result.warnings);
    result.warnings = warnings;
    Ok(result)
}

/// Whether every volume (and the files) already holds the set's content, read while the
/// containers run: then a restore has nothing to do and stops nothing. A listing that already
/// differs (a fresh host's empty volume) says no without reading a file.
fn all_equal(volumes: &[LiveVolume], set: &crate::repository::manifest::Manifest) -> Result<bool> {
    for v in volumes {
        let (c, t) = v.component_in(set)?;
        match volume::live_unless_counts_differ(v.root(), t.files, t.expanded_bytes)? {
            Some((_, digest)) if digest == c.content_digest => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// A set whose files do not match its manifest: nothing was changed.
fn damaged(set: &Set, p: &crate::repository::check::Problem) -> Error {
    Error::new(
        ErrorKind::IntegrityError,
        format!(
            "backup set {} is damaged ({}: {}); nothing was changed: restore another set (`list` shows them)",
            set.id, p.component, p.message
        ),
    )
}

/// The containers a restore stopped, and for how long.
fn report_quiesce(result: &mut TaskResult, q: &installation::Quiesced<'_>) {
    result.containers = Some(q.containers());
    result.downtime_ms = q.downtime_ms();
}

/// The root entries of the install directory that are not among the files component's.
fn others_in(dir: &Path, only: &[OsString]) -> Result<Vec<OsString>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read", dir, e))?;
    let mut others = Vec::new();
    for entry in entries {
        let name = entry.map_err(|e| Error::io("cannot read", dir, e))?.file_name();
        if name != volume::WORK_DIR && !only.contains(&name) {
            others.push(name);
        }
    }
    Ok(others)
}

/// The set's database file, streamed (decrypted when the set is encrypted), with its length
/// (for the upload).
fn open_db(
    repo: &Repository,
    set: &Set,
    db: &Component,
    opening: Opening<'_>,
) -> Result<(Box<dyn std::io::Read + Send>, u64)> {
    repo.read(set, &db.file)
        .and_then(|stored| layers::opened_with_length(stored, db.bytes, opening))
        .map_err(|e| {
            Error::new(
                ErrorKind::RepositoryError,
                format!("cannot read {}: {e}", repo.file_location(set, &db.file)),
            )
        })
}

/// The set to restore: the named one, or the newest that is neither a safety set nor an
/// imported one (SPEC §12).
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
        None => sets.into_iter().find(|s| !s.is_safety() && !s.is_imported()).ok_or_else(|| {
            Error::new(
                ErrorKind::BackupNotFound,
                format!("repository {} holds no complete backup set to restore (safety sets and imported sets are only restored by name)", repo.location()),
            )
        }),
    }
}

/// Reads the live volume; unless `every_file` (for a diff), stops at the listing when that
/// already differs from the set's.
fn live_state(root: volume::Root<'_>, tree: &Tree, every_file: bool) -> Result<Live> {
    let hashed = if every_file {
        Some(volume::live(root)?)
    } else {
        volume::live_unless_counts_differ(root, tree.files, tree.expanded_bytes)?
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
#[allow(clippy::too_many_arguments)]
fn plan_diff(
    repo: &Repository,
    set: &Set,
    opening: Opening<'_>,
    targets: &[Target<'_>],
    live: &[Live],
    plan: &Plan,
    before: Value,
    staged: &[Option<Staged<'_>>],
) -> Result<Diff> {
    let mut after = before.clone();
    if plan.db_needed() {
        after["db_content_digest"] = json!(set.manifest.db().map(|d| &d.content_digest));
    }
    let single = targets.len() == 1 && !targets[0].live.listed;
    for (i, t) in targets.iter().enumerate() {
        let (true, Live::Hashed { entries, .. }) = (plan.volume_needed(i), &live[i]) else {
            continue;
        };
        let read;
        let contents = match &staged[i] {
            Some(s) => &s.contents,
            None => {
                read = check::tree(
                    repo.read(set, &t.component.file),
                    opening,
                    t.component,
                    t.tree,
                    None,
                    &AtomicBool::new(false),
                )?
                .0;
                &read
            }
        };
        let changes = digest::changes(entries, &contents.entries);
        let counts = json!({
            "files_added": changes.added.len(),
            "files_removed": changes.removed.len(),
            "files_changed": changes.changed.len(),
        });
        if single {
            after["volume_digest"] = json!(contents.content_digest);
            for (k, v) in counts.as_object().into_iter().flatten() {
                after[k] = v.clone();
            }
        } else {
            after["volume_digests"][&t.live.name] = json!(contents.content_digest);
            after["volume_changes"][&t.live.name] = counts;
        }
    }
    Ok(Diff { before, after })
}

/// The safety set of the current state, written before anything changes: every volume of the
/// task and, with `api`, the database backup already taken (in `fresh_db`'s new set).
fn safety_backup(
    repo: &Repository,
    volumes: &[LiveVolume],
    client: Option<&Client>,
    to: Option<&Recipients>,
    fresh_db: Option<(Box<dyn NewSet>, DbTaken)>,
    installation: Option<&InstallationInfo>,
    warnings: &mut Vec<String>,
) -> Result<Set> {
    let id = repo.unique_id(&format!(
        "{SAFETY_PREFIX}{}",
        clock::id_stamp(SystemTime::now())
    ))?;
    let taking = Taking {
        repo,
        volumes,
        client,
        compression: Compression::default(),
        verify: false,
        to,
        identities: None,
        id: Some(id),
        comparable: None,
        // Restorable as an installation: the files it holds are those that existed.
        installation: installation.map(|i| InstallationInfo {
            quiesced: false,
            downtime_ms: None,
            files: volumes
                .iter()
                .flat_map(|v| {
                    v.only
                        .iter()
                        .flatten()
                        .filter(|f| std::fs::symlink_metadata(v.dir.join(f)).is_ok())
                })
                .map(|f| f.to_string_lossy().into_owned())
                .collect(),
            ..i.clone()
        }),
        quiesce: None,
    };
    let mut more = Vec::new();
    let taken = taking.take(fresh_db, &mut more).map_err(|e| Error {
        message: format!(
            "the safety backup before the restore failed, so nothing was restored: {}",
            e.message
        ),
        ..e
    })?;
    warnings.extend(more);
    // With nothing to compare with, a set is always written.
    Ok(match taken {
        Taken::Written(set) => *set,
        Taken::Unchanged(set, _) => set.clone(),
    })
}

/// A set's volume extracted into the work directory inside the volume, checked against the
/// manifest and synced. Dropping it removes it, unless it was swapped in.
struct Staged<'a> {
    work: &'a Work,
    /// What the archive holds.
    contents: Contents,
    /// Until the swap starts: from then on the swap's journal owns the staged tree.
    remove_on_drop: bool,
}

impl<'a> Staged<'a> {
    /// Extracts until done or `stop` is set (then an error).
    fn extract(
        work: &'a Work,
        repo: &Repository,
        set: &Set,
        opening: Opening<'_>,
        target: &Target<'_>,
        stop: &AtomicBool,
    ) -> Result<Staged<'a>> {
        let staged = work.fresh_staged()?;
        let outcome = check::tree(
            repo.read(set, &target.component.file),
            opening,
            target.component,
            target.tree,
            Some(&staged),
            stop,
        )
        .and_then(|(contents, problems)| match problems.first() {
            None => swap::sync_filesystem(&staged).map(|()| contents),
            Some(p) => Err(Error::new(
                ErrorKind::IntegrityError,
                format!(
                    "backup set {} does not extract as its manifest says ({}); the volume {} was not touched",
                    set.id,
                    p.message,
                    target.live.dir.display()
                ),
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

}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = self.work.discard_staged();
        }
    }
}

/// Names the set and what the plan did (or would do) to each component.
fn fill(result: &mut TaskResult, set: &Set, targets: &[Target<'_>], plan: &Plan) {
    result.backup = Some(SetRef {
        id: set.id.clone(),
        path: set.location.clone(),
        manifest: Some(set.manifest.clone()),
    });
    let mut outcomes: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| t.live.outcome(t.component, plan.volume_needed(i)))
        .collect();
    if let (Some(d), Some((needed, _))) = (set.manifest.db(), &plan.db) {
        let mut outcome = db_outcome(d, *needed, None);
        outcome.status_message = None;
        outcomes.push(outcome);
    }
    set_components(result, outcomes);
}

/// Refuses to swap when the volume's listing (names, types, sizes, modes, times, inodes)
/// differs from the one the plan decided on: something wrote to it meanwhile. Returns the
/// relative paths of the volume's sockets, FIFOs and devices.
fn still_as_decided(
    root: volume::Root<'_>,
    decided: &tree::Fingerprint,
    set: &Set,
    safety: Option<&Set>,
) -> Result<Vec<Vec<u8>>> {
    let dir = root.dir;
    let (now, specials) = volume::fingerprint_and_specials(root)?;
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

/// After the database was restored and the volume could not be: puts the database back from
/// the safety set, and says in the error what became of each half; true if it was put back.
/// `volume_as_before` says whether the volume holds its old tree again; if its rollback failed,
/// the journal left behind puts the old tree back in the next task on the volume.
fn put_database_back(
    repo: &Repository,
    opening: Opening<'_>,
    client: &Client,
    error: Error,
    set: &Set,
    safety: Option<&Set>,
    volume_as_before: bool,
) -> (Error, bool) {
    let safety_db = safety.and_then(|s| s.manifest.db().map(|d| (s, d)));
    let mut put_back = false;
    let message = match safety_db {
        Some((s, d)) => {
            let file = repo.file_location(s, &d.file);
            match client
                .restore(&|| open_db(repo, s, d, opening))
                .inspect(|_| put_back = true)
            {
                Ok(_) if volume_as_before => format!(
                    "{}; the database, already restored from set {}, was put back from safety set {}, so both halves are as before the restore",
                    error.message, set.id, s.id
                ),
                Ok(_) => format!(
                    "{}; the database, already restored from set {}, was put back from safety set {}; the volume is not yet as before: the next task on it moves its old entries back (or do it by hand as said above)",
                    error.message, set.id, s.id
                ),
                Err(again) => format!(
                    "{}; the database was restored from set {} and putting it back from safety set {} failed too ({}): the halves are out of step, restore the database from {file} by hand (see README) or run the restore again",
                    error.message, set.id, s.id, again.message
                ),
            }
        }
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

/// A failed database restore: if the server had accepted it (`restore_started` in the
/// error's details), the database may have changed, and the error names the safety set that
/// holds it as it was.
fn database_may_have_changed(e: Error, safety: Option<&Set>) -> Error {
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

/// See [`TEST_PAUSE_BEFORE_SWAP`].
fn test_pause() {
    crate::test_pause(TEST_PAUSE_BEFORE_SWAP);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_volumes_and_database_plan_nothing() {
        let plan = decide(
            &[("a", "sha256:1", Some("sha256:1")), ("b", "sha256:2", Some("sha256:2"))],
            (&LiveDb::Digest("sha256:d".into()), Some("sha256:d")),
            false,
        );
        assert!(plan.is_empty(), "{plan:?}");
        assert!(plan.volumes.iter().all(|(_, _, why)| why.contains("already equal")));
    }

    #[test]
    fn each_component_is_decided_on_its_own() {
        let plan = decide(
            &[("a", "sha256:1", Some("sha256:1")), ("b", "sha256:2", None)],
            (&LiveDb::Digest("sha256:x".into()), Some("sha256:d")),
            false,
        );
        assert!(!plan.volume_needed(0));
        assert!(plan.volume_needed(1));
        assert!(plan.volumes[1].2.contains("listing differs"));
        assert!(plan.db_needed());
        assert_eq!(plan.describe(false), "the volume b and the database");
    }

    #[test]
    fn force_restores_everything_and_a_dry_run_never_assumes_the_database_equal() {
        let forced = decide(
            &[("volume", "sha256:1", Some("sha256:1"))],
            (&LiveDb::Digest("sha256:d".into()), Some("sha256:d")),
            true,
        );
        assert!(forced.volume_needed(0) && forced.db_needed());
        assert_eq!(forced.describe(true), "the volume and the database");
        let dry = decide(&[], (&LiveDb::NotCompared, Some("sha256:d")), false);
        assert!(dry.db_needed());
        assert!(dry.db.unwrap().1.contains("not compared"));
        let no_api = decide(&[("volume", "sha256:1", Some("sha256:1"))], (&LiveDb::NotAsked, None), false);
        assert!(no_api.db.is_none() && no_api.is_empty());
    }
}
