//! backup: write a new backup set of the task's components (volumes, the database), unless
//! nothing changed since the newest one.
//!
//! Plan: resolve the volumes, lock the repository and each volume, finish any restore a crash
//! interrupted, and decide per component whether it differs from the newest comparable set
//! ([`decide`]: a pure function over content digests). An existing `backup_id`, or every
//! component unchanged, is `changed: false`. The database is only known after a server-side
//! backup, so it runs first thing, on its own thread, while the volumes are hashed (when the
//! newest set can be compared with) or archived straight away.
//!
//! Apply: every component goes through the layers (tar → compression → hashing) into a new
//! set of the backend; the manifest is written last, every file re-read and checked before the
//! set is committed, then retention runs.

use std::time::{Instant, SystemTime};

use serde_json::json;

use super::{LiveVolume, check, db_outcome, installation, set_components};
use crate::clock;
use crate::connectware::{self, Client, Downloaded};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{Identities, Recipients};
use crate::layers::{Opening, Sealed, Sink, Tee};
use crate::ops::prune;
use crate::repository::backend::NewSet;
use crate::repository::check::{Problem, checksums};
use crate::repository::manifest::{
    self, Component, DbFile, EncryptionInfo, InstallationInfo, Kind, Manifest, Tree,
};
use crate::repository::{Repository, Set};
use crate::result::{Diff, SetRef, TaskResult};
use crate::task::{BackupOptions, Compression, Operation, Quiesce, Task};
use crate::volume::{self, archive, swap, tree};

/// How often a volume is archived again when it changed while being archived.
const CONSISTENCY_ATTEMPTS: u32 = 3;
/// The database file's name inside a set.
pub const DB_FILE: &str = "db.tgz";

/// What a backup will do with one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write it into the new set.
    Take,
    /// Equal to the newest set's: a set is written only if another component changed.
    Same,
}

/// The plan of a backup: per component, take or keep, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<(String, Action, String)>,
}

impl Plan {
    /// Nothing to write: every component equals the newest set's.
    pub fn is_empty(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|(_, a, _)| *a == Action::Same)
    }
}

/// Decides per component, from content digests, whether a new set is needed. `newest` is the
/// newest set that is not a safety set (None: no set, or `force`, or a named `backup_id`);
/// `live` the task's components with their current content digests (None: not read).
pub fn decide(newest: Option<&Manifest>, live: &[(&str, Option<&str>)]) -> Plan {
    let same_names = newest.is_some_and(|m| {
        m.components.len() == live.len() && live.iter().all(|(n, _)| m.component(n).is_some())
    });
    let steps = live
        .iter()
        .map(|(name, digest)| {
            let (action, why) = match (newest, digest) {
                (None, _) => (Action::Take, "no set to compare with".to_string()),
                (Some(m), _) if !same_names => (
                    Action::Take,
                    format!(
                        "set {} holds other components ({})",
                        m.id,
                        m.names().join(", ")
                    ),
                ),
                (Some(m), None) => (Action::Take, format!("not compared with set {}", m.id)),
                (Some(m), Some(d)) => match m.component(name) {
                    Some(c) if c.content_digest == *d => {
                        (Action::Same, format!("unchanged since set {}", m.id))
                    }
                    _ => (Action::Take, format!("changed since set {}", m.id)),
                },
            };
            (name.to_string(), action, why)
        })
        .collect();
    Plan { steps }
}

pub fn run(task: &Task, opts: &BackupOptions) -> Result<TaskResult> {
    let mut warnings = Vec::new();
    // An installation's volumes and files are found through the engine (SPEC §9).
    let engine = task
        .installation
        .as_ref()
        .map(|_| crate::docker::Engine::connect())
        .transpose()?;
    let mut volumes = match (&task.installation, &engine) {
        (Some(inst), Some(e)) => installation::for_backup(task, inst, e, &mut warnings)?,
        _ => super::resolve_volumes(task)?,
    };
    let client = connectware::client_for(task.api.as_ref(), &mut warnings)?;

    let writing = super::Writing::open(task, Operation::Backup)?;
    // Backup and restore of one volume exclude each other, whatever repositories they use.
    let mut works = volumes
        .iter()
        .map(|v| swap::Work::of(&v.dir))
        .collect::<Result<Vec<_>>>()?;
    // An installation's install directory too, files or not: a killed restore may have its
    // files half-swapped, which must be made whole before they are looked for.
    if let Some(inst) = &task.installation
        && inst.install_dir.is_dir()
    {
        works.push(swap::Work::of(&inst.install_dir)?);
    }
    let group = if works.is_empty() {
        None
    } else {
        Some(swap::Group::new(works)?)
    };
    let _volume_locks = group
        .as_ref()
        .map(|g| g.lock(Operation::Backup, task.wait_for_lock, task.dry_run))
        .transpose()?;
    // A volume left half-swapped by a killed restore is made whole before it is read (with
    // every other volume that restore swapped together with it).
    if let (Some(g), false) = (&group, task.dry_run) {
        let (done, more) = g.recover()?;
        warnings.extend(more);
        warnings.extend(done.iter().filter_map(|(dir, d)| d.describe(dir)));
    }
    // Containers a killed backup or restore of the installation left stopped start again.
    if let (Some(inst), Some(e)) = (&task.installation, &engine) {
        warnings.extend(installation::recover(e, inst, Operation::Backup, task.dry_run)?);
        volumes.extend(installation::files_for_backup(task, inst, &mut warnings)?);
    }
    let sets = writing.sets()?;
    // The lock stays held by `writing` until the task returns.
    let repo = writing.repo;

    if let Some(id) = &opts.backup_id
        && let Some(set) = sets.iter().find(|s| &s.id == id)
    {
        let msg = format!("backup set {id} already exists; nothing to do");
        let result = unchanged(task, set, &volumes, msg, warnings);
        return retain(repo.as_ref(), task, opts, result);
    }
    let newest = sets.iter().find(|s| !s.is_safety());
    // The set an unchanged installation would equal: the same components, and no reason to
    // write anyway. Without one, every component is archived straight away (no hashing).
    let to = task.encryption.to.as_ref();
    let comparable = newest.filter(|s| {
        opts.backup_id.is_none()
            && !opts.force
            && same_components(&s.manifest, &volumes, client.is_some())
            && same_encryption(&s.manifest, to)
    });
    let before = json!({"newest_set": newest.map(|s| &s.id)});

    // Without the database, the plan needs only the volumes' digests.
    if client.is_none()
        && let Some(set) = comparable
    {
        let digests = volumes
            .iter()
            .map(|v| Ok(Some(volume::live_digest(v.root())?)))
            .collect::<Result<Vec<_>>>()?;
        let plan = decide(Some(&set.manifest), &named(&volumes, &digests));
        if plan.is_empty() {
            let msg = format!(
                "{} unchanged since backup set {}; nothing to do (force writes a new set)",
                what_is(&volumes, false),
                set.id
            );
            let result = unchanged(task, set, &volumes, msg, warnings);
            return retain(repo.as_ref(), task, opts, result);
        }
    }

    if task.dry_run {
        let mut msg = "would write a new backup set".to_string();
        if client.is_some() {
            msg = if volumes.len() > 1 {
                "would take a database backup and write a new set, unless every component turns out unchanged"
            } else {
                "would take a database backup and write a new set, unless both halves turn out unchanged"
            }
            .to_string();
            warnings.push(
                "a dry run cannot tell whether the database changed: that needs a server-side backup, which a dry run does not start"
                    .to_string(),
            );
        }
        // The containers a real run would stop, as the engine lists them now.
        let would_stop = match (&task.installation, &engine) {
            (Some(inst), Some(e)) if inst.quiesce == Quiesce::Stop => Some(
                e.project_containers(&inst.compose_project)?
                    .into_iter()
                    .filter(|c| c.running)
                    .map(|c| c.name)
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        if let Some(names) = &would_stop {
            msg = format!(
                "{msg}; would stop {} running container(s) while the volumes are read",
                names.len()
            );
        }
        let mut result = TaskResult::ok(Operation::Backup, true, true, msg);
        result.containers = would_stop;
        result.warnings = warnings;
        if task.diff {
            result.diff = Some(Diff {
                before,
                after: json!({"newest_set": "(new set)"}),
            });
        }
        return Ok(result);
    }
    // Only a dry run may go without a repository; a real run has created it above.
    let repo = match repo {
        Some(repo) => repo,
        None => Repository::create(&task.repository)?,
    };
    let stopping = task
        .installation
        .as_ref()
        .zip(engine.as_ref())
        .filter(|(inst, _)| inst.quiesce == Quiesce::Stop);
    let mut taking = Taking {
        repo: &repo,
        volumes: &volumes,
        client: client.as_ref(),
        compression: opts.compression,
        verify: opts.verify,
        to,
        identities: task.encryption.identities.as_ref(),
        id: opts.backup_id.clone(),
        // Without the database, the volumes were compared above: they changed.
        comparable: comparable.filter(|_| client.is_some()),
        installation: task.installation.as_ref().map(|inst| InstallationInfo {
            compose_project: inst.compose_project.clone(),
            install_dir: inst.install_dir.display().to_string(),
            quiesced: stopping.is_some(),
            downtime_ms: None,
            files: volumes
                .iter()
                .filter_map(|v| v.only.as_ref())
                .flatten()
                .map(|f| f.to_string_lossy().into_owned())
                .collect(),
        }),
        quiesce: None,
    };
    // With `quiesce: stop` (SPEC §9): the database through the API first, while Connectware
    // runs; whether anything changed is found without a stop; then the project's running
    // containers stop while every volume is archived, and start again before the set is
    // checked and committed.
    let mut started = None;
    let quiesced;
    if let Some((inst, e)) = stopping {
        if let Some(c) = &client {
            let new_set = repo.create_set()?;
            let db = take_db(c, new_set.as_ref(), to)?;
            if let Some(set) = taking.comparable {
                let digests = volumes
                    .iter()
                    .map(|v| Ok(Some(volume::live_digest(v.root())?)))
                    .collect::<Result<Vec<_>>>()?;
                let mut live = named(&volumes, &digests);
                live.push((manifest::DB, Some(db.content_digest.as_str())));
                if decide(Some(&set.manifest), &live).is_empty() {
                    let msg = format!(
                        "{} and the database are unchanged since backup set {}; nothing to do (force writes a new set)",
                        what_is(&volumes, true),
                        set.id
                    );
                    let mut result = unchanged(task, set, &volumes, msg, warnings);
                    if let Some(r) = result.db.as_mut() {
                        r.status_message = db.downloaded.status_message.clone();
                    }
                    return retain(Some(&repo), task, opts, result);
                }
            }
            started = Some((new_set, db));
        }
        quiesced = Some(installation::stop(e, inst, Operation::Backup, task.wait_for_lock)?);
        taking.comparable = None;
        taking.quiesce = quiesced.as_ref();
    } else {
        quiesced = None;
    }
    let taken = taking.take(started, &mut warnings);
    // Started again whatever the outcome (dropping it would too, without the error). A set
    // already taken stays: a container that does not start is said in a warning (by take).
    let resumed = quiesced.as_ref().map(installation::Quiesced::resume).transpose();
    let taken = match (taken, resumed) {
        (Ok(taken), _) => taken,
        (Err(e), Ok(_)) => return Err(e),
        (Err(e), Err(again)) => {
            return Err(Error {
                message: format!("{}; {}", e.message, again.message),
                ..e
            });
        }
    };
    let result = match taken {
        Taken::Unchanged(set, status) => {
            let msg = format!(
                "{} and the database are unchanged since backup set {}; nothing to do (force writes a new set)",
                what_is(&volumes, true),
                set.id
            );
            let mut result = unchanged(task, set, &volumes, msg, warnings);
            if let (Some(r), Some(s)) = (result.db.as_mut(), status) {
                r.status_message = Some(s);
            }
            result
        }
        Taken::Written(set) => {
            let mut result = TaskResult::ok(
                Operation::Backup,
                false,
                true,
                format!("wrote backup set {}", set.id),
            );
            fill(&mut result, &set, &volumes, true);
            result.warnings = warnings;
            if task.diff {
                result.diff = Some(Diff {
                    before,
                    after: json!({"newest_set": set.id}),
                });
            }
            result
        }
    };
    let mut result = result;
    if let Some(q) = &quiesced {
        result.containers = Some(q.containers());
        result.downtime_ms = q.downtime_ms();
    }
    retain(Some(&repo), task, opts, result)
}

/// Whether a set holds exactly the components a task would write: its volumes, and the
/// database with `api`.
fn same_components(m: &Manifest, volumes: &[LiveVolume], with_db: bool) -> bool {
    m.components.len() == volumes.len() + usize::from(with_db)
        && volumes.iter().all(|v| m.component(&v.name).is_some_and(|c| v.same_kind(c)))
        && (!with_db || m.db().is_some())
}

/// Whether a set is encrypted exactly as a new set would be: not at all, or to the same
/// recipients (in any order). A change of recipients writes a new set (SPEC §11).
pub fn same_encryption(m: &Manifest, to: Option<&Recipients>) -> bool {
    match (&m.encryption, to) {
        (None, None) => true,
        (Some(e), Some(to)) => to.same_as(&e.recipients),
        _ => false,
    }
}

/// `the volume is` / `the volumes are` (`the volume` / `the volumes` before `and the
/// database`, as a single-volume or database-only task has always said).
fn what_is(volumes: &[LiveVolume], and: bool) -> &'static str {
    match (volumes.len() > 1, and) {
        (false, false) => "the volume is",
        (true, false) => "the volumes are",
        (false, true) => "the volume",
        (true, true) => "the volumes",
    }
}

/// The volumes' names beside their digests, as [`decide`] takes them.
fn named<'a>(volumes: &'a [LiveVolume], digests: &'a [Option<String>]) -> Vec<(&'a str, Option<&'a str>)> {
    volumes
        .iter()
        .zip(digests)
        .map(|(v, d)| (v.name.as_str(), d.as_deref()))
        .collect()
}

/// Applies the task's retention, with the repository lock still held, to a successful
/// backup's result. The set the backup wrote or found unchanged is never deleted, whatever the
/// `created_at` of the other sets says (SPEC §6).
fn retain(
    repo: Option<&Repository>,
    task: &Task,
    opts: &BackupOptions,
    mut result: TaskResult,
) -> Result<TaskResult> {
    let (Some(repo), Some(retention), false) = (repo, opts.retention, task.dry_run) else {
        return Ok(result);
    };
    let protect = result.backup.as_ref().map(|b| b.id.clone());
    let deleted = prune::apply(repo, retention, protect.as_deref(), false)?;
    if !deleted.is_empty() {
        result.changed = true;
        result.msg = format!(
            "{}; retention deleted {} older set(s)",
            result.msg,
            deleted.len()
        );
    }
    result.sets = Some(deleted);
    Ok(result)
}

/// A database backup taken into a new set as `db.tgz` (`db.tgz.age` when encrypted).
pub struct DbTaken {
    pub downloaded: Downloaded,
    /// The file in the set, and what is stored of it.
    pub file: String,
    pub stored: crate::layers::Stored,
    pub started: Instant,
    pub started_at: String,
    pub finished_at: String,
    pub content_digest: String,
}

impl DbTaken {
    fn component(&self) -> Component {
        Component {
            name: manifest::DB.to_string(),
            file: self.file.clone(),
            compression: None,
            sha256: self.stored.sha256.clone(),
            bytes: self.stored.bytes,
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            content_digest: self.content_digest.clone(),
            kind: Kind::Db(DbFile {
                backup_id: Some(self.downloaded.backup_id.clone()),
                status_message: self.downloaded.status_message.clone(),
            }),
        }
    }
}

/// The database file's name in a set.
pub fn db_file(encrypted: bool) -> String {
    if encrypted {
        format!("{DB_FILE}{}", crate::layers::AGE_SUFFIX)
    } else {
        DB_FILE.to_string()
    }
}

/// Takes a database backup through the API into `set` as `db.tgz` (encrypted to `to`, as
/// `db.tgz.age`), computing its content digest from the bytes as they arrive.
pub fn take_db(client: &Client, set: &dyn NewSet, to: Option<&Recipients>) -> Result<DbTaken> {
    type Slot = std::sync::Arc<std::sync::Mutex<Option<Tee<Sealed, String>>>>;
    /// The writer the client gets: the slot's current tee (a new one when it starts over).
    struct Current(Slot);
    impl std::io::Write for Current {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                Some(tee) => tee.write(data),
                None => Err(std::io::Error::other("the database file was already closed")),
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            match self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                Some(tee) => tee.flush(),
                None => Ok(()),
            }
        }
    }
    let file = db_file(to.is_some());
    let slot: Slot = Default::default();
    let started = Instant::now();
    let started_at = clock::now();
    let downloaded = client.backup(&mut || {
        let sealed = Sealed::new(set.create(&file)?, to).map_err(|e| Error::storing(&file, e))?;
        *slot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Tee::new(sealed, check::db_content_digest));
        Ok(Box::new(Current(slot.clone())))
    })?;
    let finished_at = clock::now();
    let tee = slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| Error::new(ErrorKind::InternalError, "no database file was written"))?;
    let (sealed, content_digest) = tee.finish().map_err(|e| {
        Error::new(
            ErrorKind::ApiProtocolError,
            format!("the database backup Connectware sent is not a readable .tgz: {e}"),
        )
    })?;
    let stored = sealed.finish().map_err(|e| Error::storing(&file, e))?;
    Ok(DbTaken {
        file,
        stored,
        downloaded,
        started,
        started_at,
        finished_at,
        content_digest,
    })
}

/// What a backup takes, from where, into which repository.
pub struct Taking<'a> {
    pub repo: &'a Repository,
    pub volumes: &'a [LiveVolume],
    pub client: Option<&'a Client>,
    pub compression: Compression,
    /// Also decompress and read every archive before committing.
    pub verify: bool,
    /// Whom the new set is encrypted to (None: not encrypted).
    pub to: Option<&'a Recipients>,
    /// What opens the new set, for `verify` (needed with `to`).
    pub identities: Option<&'a Identities>,
    /// The new set's id; None: `<UTC time>-<version or "volume">`, made unique.
    pub id: Option<String>,
    /// The set to compare with: if every component equals it, nothing is written.
    pub comparable: Option<&'a Set>,
    /// The installation the set is taken from (SPEC §9), for the manifest.
    pub installation: Option<InstallationInfo>,
    /// The containers stopped while the volumes are read: started again as soon as every
    /// component is archived, before the set is checked.
    pub quiesce: Option<&'a installation::Quiesced<'a>>,
}

/// What taking a set came to.
pub enum Taken<'a> {
    /// Every component equals this set's; with the database's status message.
    Unchanged(&'a Set, Option<String>),
    /// A new set was written.
    Written(Box<Set>),
}

/// A volume's part of a backup: hashed only (equal to the comparable set's), or archived.
enum VolumeTaken {
    Same,
    Archived(Box<Component>, Instant),
}

impl<'a> Taking<'a> {
    /// Takes every component into a new set and commits it, or finds all equal to
    /// `comparable`. Call with the repository and volume locks held and the volumes whole (no
    /// interrupted restore pending). Restore takes its safety set this way, handing over the
    /// new set that already holds the database backup it took (`started`).
    pub fn take(
        &self,
        started: Option<(Box<dyn NewSet>, DbTaken)>,
        warnings: &mut Vec<String>,
    ) -> Result<Taken<'a>> {
        let created = SystemTime::now();
        let (set, fresh_db) = match started {
            Some((set, db)) => (set, Some(db)),
            None => (self.repo.create_set()?, None),
        };
        let comparable = self.comparable.map(|s| &s.manifest);
        let server_version = self.client.and_then(Client::server_version);

        // The database first, on its own thread, while the volumes are hashed or archived.
        let shared: &dyn NewSet = set.as_ref();
        let (db, volumes) = std::thread::scope(|scope| match (self.client, fresh_db) {
            (Some(c), None) => {
                let handle = scope.spawn(move || {
                    crate::test_panic("worker");
                    take_db(c, shared, self.to)
                });
                let volumes = self.volumes_first_pass(shared, comparable, warnings);
                let db =
                    crate::error::joined("the database thread", handle.join()).and_then(|r| r);
                (db.map(Some), volumes)
            }
            (_, fresh) => (Ok(fresh), self.volumes_first_pass(shared, comparable, warnings)),
        });
        let db = db?;
        let mut volumes = volumes?;

        let db_component = db.as_ref().map(DbTaken::component);
        if let Some(base) = self.comparable {
            let mut live: Vec<(&str, Option<&str>)> = Vec::new();
            for (v, taken) in self.volumes.iter().zip(&volumes) {
                let digest = match taken {
                    VolumeTaken::Same => base.manifest.component(&v.name).map(|c| c.content_digest.as_str()),
                    VolumeTaken::Archived(c, _) => Some(c.content_digest.as_str()),
                };
                live.push((v.name.as_str(), digest));
            }
            if let Some(d) = &db_component {
                live.push((manifest::DB, Some(d.content_digest.as_str())));
            }
            if decide(Some(&base.manifest), &live).is_empty() {
                return Ok(Taken::Unchanged(
                    base,
                    db.and_then(|d| d.downloaded.status_message),
                ));
            }
        }
        // Another component changed: an unchanged volume still belongs in the new set.
        for (v, taken) in self.volumes.iter().zip(volumes.iter_mut()) {
            if let VolumeTaken::Same = taken {
                let start = Instant::now();
                *taken = VolumeTaken::Archived(
                    Box::new(archive_volume(v, set.as_ref(), self.compression, self.to, warnings)?),
                    start,
                );
            }
        }
        let first_volume_start = volumes
            .iter()
            .filter_map(|v| match v {
                VolumeTaken::Archived(_, start) => Some(*start),
                VolumeTaken::Same => None,
            })
            .min();
        let skew_ms = match (&db, first_volume_start) {
            (Some(d), Some(v)) => {
                let skew = if v > d.started { v - d.started } else { d.started - v };
                Some(skew.as_millis() as u64)
            }
            _ => None,
        };
        let mut components: Vec<Component> = volumes
            .into_iter()
            .filter_map(|v| match v {
                VolumeTaken::Archived(c, _) => Some(*c),
                VolumeTaken::Same => None,
            })
            .collect();
        components.extend(db_component);
        // Every component is archived: the containers start again before the set is checked.
        // One that does not start is said, and the set is kept (it is complete).
        let downtime_ms = match self.quiesce.map(|q| q.resume()) {
            None => None,
            Some(Ok(ms)) => Some(ms),
            Some(Err(e)) => {
                warnings.push(e.message);
                self.quiesce.and_then(|q| q.downtime_ms())
            }
        };
        let connectware_version = db
            .as_ref()
            .and_then(|d| connectware::version_of(&d.downloaded.backup_id));
        let id = match &self.id {
            Some(id) => id.clone(),
            None => {
                let label = connectware_version
                    .clone()
                    .filter(|v| valid_id_part(v))
                    .unwrap_or_else(|| "volume".to_string());
                self.repo
                    .unique_id(&format!("{}-{label}", clock::id_stamp(created)))?
            }
        };
        let manifest = Manifest {
            format: manifest::FORMAT.to_string(),
            id: id.clone(),
            created_at: clock::rfc3339(created),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            connectware_version,
            server_version,
            skew_ms,
            installation: self.installation.clone().map(|i| InstallationInfo { downtime_ms, ..i }),
            encryption: self.to.map(|to| EncryptionInfo {
                scheme: "age".to_string(),
                recipients: to.strings(),
            }),
            components,
        };
        let manifest = test_hook_damage_staged(set.as_ref(), manifest);
        let opening = match (self.to, self.identities) {
            (None, _) => Some(Opening::Plain),
            (Some(_), Some(ids)) => Some(Opening::Age(ids)),
            (Some(_), None) => None,
        };
        check_before_commit(set.as_ref(), &manifest, self.verify, opening)?;
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest is JSON");
        let location = set.commit(&id, &text)?;
        Ok(Taken::Written(Box::new(Set {
            id,
            location,
            manifest,
        })))
    }

    /// Each volume: hashed only when the comparable set has it (equal: not archived yet),
    /// else archived into the new set.
    fn volumes_first_pass(
        &self,
        set: &dyn NewSet,
        comparable: Option<&Manifest>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<VolumeTaken>> {
        self.volumes
            .iter()
            .map(|v| {
                if let Some(c) = comparable.and_then(|m| m.component(&v.name))
                    && volume::live_digest(v.root())? == c.content_digest
                {
                    return Ok(VolumeTaken::Same);
                }
                let start = Instant::now();
                archive_volume(v, set, self.compression, self.to, warnings)
                    .map(|c| VolumeTaken::Archived(Box::new(c), start))
            })
            .collect()
    }
}

/// Whether a Connectware version can be part of a set id.
fn valid_id_part(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Fills a backup result's set and components from the set and the task's volumes.
fn fill(result: &mut TaskResult, set: &Set, volumes: &[LiveVolume], changed: bool) {
    let mut outcomes = Vec::new();
    for v in volumes {
        if let Ok((c, _)) = v.component_in(&set.manifest) {
            outcomes.push(v.outcome(c, changed));
        }
    }
    if let Some(d) = set.manifest.db() {
        outcomes.push(db_outcome(d, changed, None));
    }
    set_components(result, outcomes);
    result.backup = Some(SetRef {
        id: set.id.clone(),
        path: set.location.clone(),
        manifest: Some(set.manifest.clone()),
    });
}

/// The result for a backup that found its work already done.
fn unchanged(
    task: &Task,
    set: &Set,
    volumes: &[LiveVolume],
    msg: String,
    warnings: Vec<String>,
) -> TaskResult {
    let mut result = TaskResult::ok(Operation::Backup, task.dry_run, false, msg);
    fill(&mut result, set, volumes, false);
    result.warnings = warnings;
    if task.diff {
        let same = json!({"newest_set": &set.id});
        result.diff = Some(Diff {
            before: same.clone(),
            after: same,
        });
    }
    result
}

/// Archives a volume into the new set, again while it changes under us: the listing before
/// and after archiving must be equal, and every file must have kept its size.
pub fn archive_volume(
    v: &LiveVolume,
    set: &dyn NewSet,
    compression: Compression,
    to: Option<&Recipients>,
    warnings: &mut Vec<String>,
) -> Result<Component> {
    let dir = &v.dir;
    let file = v.file(compression, to.is_some());
    for attempt in 1..=CONSISTENCY_ATTEMPTS {
        let started_at = clock::now();
        let before = tree::scan(v.root()).map_err(|e| Error::io("cannot read volume", dir, e))?;
        let out = set.create(&file)?;
        let mut sink = Sink::new(out, Some(compression), to)
            .map_err(|e| Error::io("cannot archive volume", dir, e))?;
        let written = archive::write_archive(dir, &before, &mut sink).map_err(|e| {
            if crate::error::is_no_space(&e) {
                Error::storing(&file, e)
            } else {
                Error::io("cannot archive volume", dir, e)
            }
        })?;
        let stored = sink.finish().map_err(|e| Error::storing(&file, e))?;
        let after =
            tree::fingerprint(v.root()).map_err(|e| Error::io("cannot read volume", dir, e))?;
        if !written.changed && before.fingerprint() == after {
            for link in &written.escaping_links {
                warnings.push(format!(
                    "symlink {link} points outside the volume (absolute, or `..` after a name): it is backed up, but a restore of this set will refuse it as unsafe_archive; make it relative and inside the volume"
                ));
            }
            for (sparse, size) in &written.sparse {
                warnings.push(format!(
                    "{sparse} in the volume is a sparse file of {size} bytes: its holes are read and archived as zeros (slow for a large file) and restored as holes"
                ));
            }
            for skipped in &written.skipped {
                warnings.push(format!(
                    "{skipped} in the volume is a socket, FIFO or device and was not archived"
                ));
            }
            let tree = Tree {
                files: written.files,
                expanded_bytes: written.expanded_bytes,
                source: v.source.clone(),
            };
            return Ok(Component {
                name: v.name.clone(),
                file,
                compression: Some(compression),
                sha256: stored.sha256,
                bytes: stored.bytes,
                started_at,
                finished_at: clock::now(),
                content_digest: written.content_digest,
                kind: if v.is_files() { Kind::Files(tree) } else { Kind::Volume(tree) },
            });
        }
        crate::progress::log(&format!(
            "cwbackup: the volume changed while it was archived (attempt {attempt} of {CONSISTENCY_ATTEMPTS})"
        ));
    }
    Err(Error::new(
        ErrorKind::ConsistencyError,
        format!(
            "the volume {} kept changing while it was archived ({CONSISTENCY_ATTEMPTS} attempts): run the backup when no service is being (de)commissioned",
            dir.display()
        ),
    ))
}

/// TEST-ONLY hook, for tests/integration/backup.rs: with `CWBACKUP_TEST_DAMAGE_STAGED` set, damages
/// the new set after it is written and before the check that precedes its commit, to prove
/// that the check runs. `bytes`: flips one byte in the middle of the first volume archive (the
/// checksums differ); `content`: the archive keeps its checksums but no longer holds what the
/// manifest says (simulated by changing the content digest the check expects). Not for
/// operators: only debug builds (the ones the integration tests run) read the variable.
fn test_hook_damage_staged(set: &dyn NewSet, mut manifest: Manifest) -> Manifest {
    let how = match std::env::var("CWBACKUP_TEST_DAMAGE_STAGED") {
        Ok(how) if cfg!(debug_assertions) => how,
        _ => return manifest,
    };
    if let Some(v) = manifest.components.iter_mut().find(|c| c.is_volume()) {
        match how.as_str() {
            "bytes" => {
                let mut bytes = Vec::new();
                if set
                    .read(&v.file)
                    .and_then(|mut r| std::io::Read::read_to_end(&mut r, &mut bytes))
                    .is_ok()
                    && let Ok(mut out) = set.create(&v.file)
                {
                    let at = bytes.len() / 2;
                    bytes[at] ^= 0x40;
                    let _ = std::io::Write::write_all(&mut out, &bytes)
                        .and_then(|()| std::io::Write::flush(&mut out));
                }
            }
            "content" => v.content_digest = format!("sha256:{}", "0".repeat(64)),
            _ => {}
        }
    }
    manifest
}

/// Re-reads the new set and compares it with its manifest; with `full`, also decrypts,
/// decompresses and reads everything (`opening` is what opens it: the task checked that an
/// encrypted set with `verify` has its identity).
pub fn check_before_commit(
    set: &dyn NewSet,
    manifest: &Manifest,
    full: bool,
    opening: Option<Opening<'_>>,
) -> Result<()> {
    let mut problems: Vec<Problem> = checksums(|file| set.read(file), manifest);
    if let (true, true, Some(opening)) = (full, problems.is_empty(), opening) {
        let stop = std::sync::atomic::AtomicBool::new(false);
        for c in &manifest.components {
            match &c.kind {
                Kind::Volume(t) | Kind::Files(t) => {
                    problems.extend(check::tree(set.read(&c.file), opening, c, t, None, &stop)?.1)
                }
                Kind::Db(_) => problems.extend(check::db(set.read(&c.file), opening, c)),
            }
        }
    }
    match problems.first() {
        None => Ok(()),
        Some(p) => Err(Error::new(
            ErrorKind::IntegrityError,
            format!(
                "the new set {} did not read back as written ({}: {}); it was not published: check the repository's disk",
                manifest.id, p.component, p.message
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::manifest::Source;

    fn manifest(components: &[(&str, &str)]) -> Manifest {
        Manifest {
            format: manifest::FORMAT.into(),
            id: "base".into(),
            created_at: "t".into(),
            tool_version: "0".into(),
            connectware_version: None,
            server_version: None,
            skew_ms: None,
            installation: None,
            encryption: None,
            components: components
                .iter()
                .map(|(name, digest)| Component {
                    name: name.to_string(),
                    file: format!("volumes/{name}.tar.gz"),
                    compression: Some(Compression::Gzip),
                    sha256: String::new(),
                    bytes: 0,
                    started_at: String::new(),
                    finished_at: String::new(),
                    content_digest: digest.to_string(),
                    kind: Kind::Volume(Tree {
                        files: 0,
                        expanded_bytes: 0,
                        source: Source::Path("/v".into()),
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn an_unchanged_installation_plans_nothing_and_any_change_plans_a_set() {
        let base = manifest(&[("a", "sha256:1"), ("b", "sha256:2")]);
        let same = decide(Some(&base), &[("a", Some("sha256:1")), ("b", Some("sha256:2"))]);
        assert!(same.is_empty());
        assert!(same.steps.iter().all(|(_, _, why)| why.contains("unchanged since set base")));
        let one = decide(Some(&base), &[("a", Some("sha256:1")), ("b", Some("sha256:9"))]);
        assert!(!one.is_empty());
        assert_eq!(one.steps[0].1, Action::Same);
        assert_eq!(one.steps[1].1, Action::Take);
        assert!(one.steps[1].2.contains("changed since set base"));
    }

    #[test]
    fn other_components_no_set_or_an_unread_digest_take_everything() {
        let base = manifest(&[("a", "sha256:1")]);
        // A component more than the newest set has (a volume added to the task).
        let added = decide(Some(&base), &[("a", Some("sha256:1")), ("b", Some("sha256:2"))]);
        assert!(added.steps.iter().all(|(_, a, _)| *a == Action::Take));
        assert!(added.steps[0].2.contains("other components (a)"));
        // A component fewer.
        let two = manifest(&[("a", "sha256:1"), ("b", "sha256:2")]);
        assert!(!decide(Some(&two), &[("a", Some("sha256:1"))]).is_empty());
        // No set to compare with (or force, or a named backup_id).
        let none = decide(None, &[("a", Some("sha256:1"))]);
        assert_eq!(none.steps[0].1, Action::Take);
        // A digest not read (the database in a dry run) is never assumed equal.
        assert!(!decide(Some(&base), &[("a", None)]).is_empty());
        // Nothing at all is not an empty plan.
        assert!(!decide(None, &[]).is_empty());
    }

    #[test]
    fn a_set_encrypted_otherwise_is_not_comparable() {
        let key = |_: u8| age::x25519::Identity::generate().to_public().to_string();
        let (a, b) = (key(0), key(1));
        let to = |keys: &[&String]| {
            Recipients::parse(keys.iter().map(|k| k.as_str()), |i| i.to_string()).unwrap()
        };
        let mut m = manifest(&[("a", "sha256:1")]);
        assert!(same_encryption(&m, None));
        assert!(!same_encryption(&m, Some(&to(&[&a]))), "a plain set, an encrypted backup");
        m.encryption = Some(EncryptionInfo {
            scheme: "age".into(),
            recipients: vec![a.clone(), b.clone()],
        });
        assert!(!same_encryption(&m, None), "an encrypted set, a plain backup");
        assert!(same_encryption(&m, Some(&to(&[&b, &a]))), "the same recipients in another order");
        assert!(!same_encryption(&m, Some(&to(&[&a]))), "a recipient fewer");
    }
}
