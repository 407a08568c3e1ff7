//! The whole compose installation (SPEC §9): its volumes found through the Docker engine by
//! the compose labels, its files in the install directory, and its containers stopped while
//! the volumes are read or replaced.
//!
//! Backup and restore see an installation as what they already handle: a list of
//! [`LiveVolume`]s (one per Docker volume, named by its compose short name, and the files as
//! one more tree: the install directory limited to the named files). This module finds them
//! and stops and starts the containers; the operations do the rest as for `volumes`.
//!
//! Stopping follows offen/docker-volume-backup: only the containers that were running are
//! stopped, and exactly those are started again, also when the task fails. Before the first
//! stop, a journal (`<install_dir>/.cwbackup-quiesce.json`) names them; the next installation
//! task on the project starts them again if a kill left them stopped, finding a container
//! that `docker compose up` recreated meanwhile by its service label. The journal lives on
//! the host, in the install directory, not in the repository (SPEC §9 says the repository's
//! work area): a repository may be a bucket shared by many hosts, and the journal names this
//! host's containers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::LiveVolume;
use crate::docker::{self, ContainerInfo, Engine};
use crate::error::{Error, ErrorKind, Result};
use crate::repository::manifest::{self, Manifest, Source};
use crate::task::{Installation, Quiesce, Task};

/// The journal of a quiesce, in the install directory.
pub const JOURNAL: &str = ".cwbackup-quiesce.json";

/// Test-only hook: with `CWBACKUP_TEST_PAUSE_QUIESCED=<file>`, a task that stopped the
/// containers writes `<file>.reached` and waits (at most 60 s) for `<file>`; debug builds only.
const TEST_PAUSE_QUIESCED: &str = "CWBACKUP_TEST_PAUSE_QUIESCED";

/// Volumes that hold a live database, which a backup without `quiesce: stop` copies while it
/// is written.
const LIVE_DATABASES: [&str; 2] = ["postgresql", "brokerData"];

/// The project's volumes a backup takes (all, or the ones named) and the files component
/// (last), with the warnings of SPEC §9.
pub fn for_backup(
    task: &Task,
    inst: &Installation,
    engine: &Engine,
    warnings: &mut Vec<String>,
) -> Result<Vec<LiveVolume>> {
    let found = engine.project_volumes(&inst.compose_project)?;
    let by_name: Vec<(String, &docker::VolumeInfo)> = found
        .iter()
        .map(|v| (short_name(&inst.compose_project, v), v))
        .collect();
    let chosen: Vec<&(String, &docker::VolumeInfo)> = match &inst.volumes {
        None => by_name.iter().collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                by_name.iter().find(|(short, _)| short == n).ok_or_else(|| {
                    missing_volume(&inst.compose_project, n, by_name.iter().map(|(s, _)| s.as_str()))
                })
            })
            .collect::<Result<_>>()?,
    };
    let mut volumes = Vec::with_capacity(chosen.len() + 1);
    for (short, v) in chosen {
        crate::volume::check_dir(&v.mountpoint)?;
        if let Some(repository) = task.repository.dir() {
            super::check_apart(
                repository,
                &v.mountpoint,
                &crate::task::VolumeSource::Docker(v.name.clone()),
            )?;
        }
        volumes.push(LiveVolume {
            name: short.clone(),
            dir: v.mountpoint.clone(),
            source: Source::DockerVolume(v.name.clone()),
            listed: true,
            only: None,
        });
    }
    if inst.quiesce == Quiesce::None {
        for v in &volumes {
            if LIVE_DATABASES.contains(&v.name.as_str()) {
                warnings.push(format!(
                    "the volume {} holds a live database, copied while it may be written (quiesce is `none`): restore the database from the API backup (`api`), or back up with quiesce `stop`",
                    v.name
                ));
            }
        }
    }
    let mut present = Vec::new();
    for name in &inst.files {
        let path = inst.install_dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => present.push(OsString::from(name)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !inst.files_given => {
                warnings.push(format!(
                    "{} does not exist, so the set holds no copy of it",
                    path.display()
                ));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::VolumeNotFound,
                    format!(
                        "{} cannot be read ({e}): check installation.install_dir and installation.files",
                        path.display()
                    ),
                )
                .detail("install_dir", inst.install_dir.display().to_string()));
            }
        }
    }
    if present.iter().any(|f| f == ".env") && task.encryption.to.is_none() {
        warnings.push(
            "the set holds .env, which has the license key and other secrets, unencrypted: give `encryption` to encrypt the set"
                .to_string(),
        );
    }
    if !present.is_empty() {
        volumes.push(files_of(&inst.install_dir, present));
    }
    Ok(volumes)
}

/// The files component: the install directory, limited to `names`.
pub fn files_of(install_dir: &Path, names: Vec<OsString>) -> LiveVolume {
    LiveVolume {
        name: manifest::FILES.to_string(),
        dir: install_dir.to_path_buf(),
        source: Source::Path(install_dir.display().to_string()),
        listed: true,
        only: Some(names),
    }
}

/// A volume's short name in its project: its compose label, else its name without the
/// `<project>_` prefix.
fn short_name(project: &str, v: &docker::VolumeInfo) -> String {
    v.compose_name().map(str::to_string).unwrap_or_else(|| {
        v.name
            .strip_prefix(&format!("{project}_"))
            .unwrap_or(&v.name)
            .to_string()
    })
}

fn missing_volume<'a>(project: &str, name: &str, has: impl Iterator<Item = &'a str>) -> Error {
    let has: Vec<&str> = has.collect();
    Error::new(
        ErrorKind::VolumeNotFound,
        format!(
            "the compose project `{project}` has no volume `{name}`; its volumes are: {}",
            has.join(", ")
        ),
    )
    .detail("volumes", has)
}

/// A volume of the set the restore needs on this host: found, or to be created.
pub struct ForRestore {
    /// The volumes of the set to restore, in the set's order, and then the files.
    pub volumes: Vec<LiveVolume>,
    /// The full names of the volumes this run created (a fresh host).
    pub created: Vec<String>,
    /// Whether the files component's install directory was created.
    pub created_dir: bool,
    /// Placeholder directories of a dry run, standing for volumes not created.
    pub _placeholders: Vec<Placeholder>,
}

/// The set's volumes (all, or the ones named) on this host, each found by its compose labels
/// or, unless this is a dry run, created as `<project>_<name>` with those labels; and the
/// set's files in the install directory (created if missing). A dry run creates nothing: a
/// missing volume or directory stands as an empty one.
pub fn for_restore(
    task: &Task,
    inst: &Installation,
    engine: &Engine,
    set: &Manifest,
) -> Result<ForRestore> {
    let in_set: Vec<&str> = set
        .components
        .iter()
        .filter(|c| c.is_volume())
        .map(|c| c.name.as_str())
        .collect();
    let wanted: Vec<&str> = match &inst.volumes {
        None => in_set.clone(),
        Some(names) => {
            for n in names {
                if !in_set.contains(&n.as_str()) {
                    return Err(Error::new(
                        ErrorKind::BackupNotFound,
                        format!(
                            "backup set {} has no volume `{n}`; its volumes are: {}",
                            set.id,
                            in_set.join(", ")
                        ),
                    ));
                }
            }
            names.iter().map(String::as_str).collect()
        }
    };
    // The project's volumes on this host (none on a fresh host).
    let existing = match engine.project_volumes(&inst.compose_project) {
        Ok(v) => v,
        Err(e) if e.kind == ErrorKind::VolumeNotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = ForRestore {
        volumes: Vec::new(),
        created: Vec::new(),
        created_dir: false,
        _placeholders: Vec::new(),
    };
    for name in wanted {
        let found = existing
            .iter()
            .find(|v| short_name(&inst.compose_project, v) == name);
        let full = format!("{}_{name}", inst.compose_project);
        let (dir, full) = match found {
            Some(v) => (v.mountpoint.clone(), v.name.clone()),
            None if task.dry_run => (placeholder(&mut out)?, full),
            None => {
                let labels = [
                    (docker::PROJECT_LABEL.to_string(), inst.compose_project.clone()),
                    (docker::VOLUME_LABEL.to_string(), name.to_string()),
                ]
                .into();
                let v = engine.create_volume(&full, &labels)?;
                out.created.push(v.name.clone());
                (v.mountpoint, v.name)
            }
        };
        crate::volume::check_dir(&dir)?;
        if let Some(repository) = task.repository.dir() {
            super::check_apart(repository, &dir, &crate::task::VolumeSource::Docker(full.clone()))?;
        }
        out.volumes.push(LiveVolume {
            name: name.to_string(),
            dir,
            source: Source::DockerVolume(full),
            listed: true,
            only: None,
        });
    }
    let files = set
        .installation
        .as_ref()
        .map(|i| i.files.clone())
        .unwrap_or_default();
    if set.component(manifest::FILES).is_some() && !files.is_empty() {
        let dir = if inst.install_dir.is_dir() {
            inst.install_dir.clone()
        } else if task.dry_run {
            placeholder(&mut out)?
        } else {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(&inst.install_dir)
                .map_err(|e| Error::io("cannot create the install directory", &inst.install_dir, e))?;
            out.created_dir = true;
            inst.install_dir.clone()
        };
        crate::volume::check_dir(&dir)?;
        out.volumes
            .push(files_of(&dir, files.into_iter().map(OsString::from).collect()));
    }
    Ok(out)
}

/// An empty directory that stands, in a dry run, for a volume or install directory the
/// restore would create; removed on drop.
pub struct Placeholder(PathBuf);

impl Drop for Placeholder {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_tree(&self.0);
    }
}

fn placeholder(out: &mut ForRestore) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "cwbackup-dry-run-{}-{}",
        std::process::id(),
        out._placeholders.len()
    ));
    let _ = crate::fsutil::remove_tree(&path);
    std::fs::DirBuilder::new()
        .create(&path)
        .map_err(|e| Error::io("cannot create a temporary directory", &path, e))?;
    out._placeholders.push(Placeholder(path.clone()));
    Ok(path)
}

/// What the journal of a quiesce holds.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    compose_project: String,
    /// The containers this run stops: id, name, service.
    containers: Vec<Stopped>,
    since: String,
    pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stopped {
    id: String,
    name: String,
    service: Option<String>,
}

/// The project's containers, stopped by this run until [`Quiesced::resume`] (or drop) starts
/// exactly those again.
pub struct Quiesced<'e> {
    engine: &'e Engine,
    journal: PathBuf,
    stopped: Vec<ContainerInfo>,
    since: Instant,
    /// The downtime once resumed.
    resumed: Mutex<Option<u64>>,
}

/// Stops the project's running containers (`stop_timeout_s` each), after writing the journal
/// that names them. A container that had to be killed fails the stop: the ones stopped are
/// started again first.
pub fn stop<'e>(engine: &'e Engine, inst: &Installation) -> Result<Quiesced<'e>> {
    let running: Vec<ContainerInfo> = engine
        .project_containers(&inst.compose_project)?
        .into_iter()
        .filter(|c| c.running)
        .collect();
    let journal = inst.install_dir.join(JOURNAL);
    let quiesced = Quiesced {
        engine,
        journal,
        stopped: Vec::new(),
        since: Instant::now(),
        resumed: Mutex::new(None),
    };
    if running.is_empty() {
        return Ok(quiesced);
    }
    let record = Journal {
        compose_project: inst.compose_project.clone(),
        containers: running
            .iter()
            .map(|c| Stopped {
                id: c.id.clone(),
                name: c.name.clone(),
                service: c.service.clone(),
            })
            .collect(),
        since: crate::clock::now(),
        pid: std::process::id(),
    };
    write_journal(&quiesced.journal, &record)?;
    let mut quiesced = quiesced;
    quiesced.since = Instant::now();
    crate::progress::log(&format!(
        "cwbackup: stopping {} container(s) of project {}",
        running.len(),
        inst.compose_project
    ));
    let mut killed = Vec::new();
    for c in &running {
        // Recorded before the stop: a stop that fails half-way still gets a start.
        quiesced.stopped.push(c.clone());
        engine.stop(&c.id, inst.stop_timeout_s)?;
        if let Some((false, Some(137))) = engine.state(&c.id)? {
            killed.push(c.name.clone());
        }
    }
    // Test only (debug builds): a test kills the task here, with the containers stopped.
    crate::test_pause(TEST_PAUSE_QUIESCED);
    if !killed.is_empty() {
        let started = quiesced.resume();
        let mut e = Error::new(
            ErrorKind::DockerError,
            format!(
                "container(s) {} did not stop within stop_timeout_s ({} s) and were killed; nothing was backed up and the stopped containers were started again: raise installation.stop_timeout_s",
                killed.join(", "),
                inst.stop_timeout_s
            ),
        )
        .detail("containers", killed);
        if let Err(again) = started {
            e.message = format!("{}; {}", e.message, again.message);
        }
        return Err(e);
    }
    Ok(quiesced)
}

impl Quiesced<'_> {
    /// The names of the containers stopped.
    pub fn containers(&self) -> Vec<String> {
        self.stopped.iter().map(|c| c.name.clone()).collect()
    }

    /// Starts the stopped containers again (once; later calls return the same downtime) and
    /// removes the journal. Every container is tried; the first failure is returned after.
    pub fn resume(&self) -> Result<u64> {
        let mut resumed = self.resumed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ms) = *resumed {
            return Ok(ms);
        }
        let mut failed = None;
        for c in &self.stopped {
            if let Err(e) = self.engine.start(&c.id) {
                failed.get_or_insert(e);
            }
        }
        let ms = self.since.elapsed().as_millis() as u64;
        *resumed = Some(ms);
        if let Some(e) = failed {
            return Err(Error {
                message: format!(
                    "{}; the journal {} is kept, so the next installation task starts the project's stopped containers again",
                    e.message,
                    self.journal.display()
                ),
                ..e
            });
        }
        if !self.stopped.is_empty() {
            remove_journal(&self.journal)?;
        }
        Ok(ms)
    }

    /// The downtime, if the containers were started again.
    pub fn downtime_ms(&self) -> Option<u64> {
        *self.resumed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Quiesced<'_> {
    fn drop(&mut self) {
        let _ = self.resume();
    }
}

/// Starts what a killed task left stopped: the containers its journal names (by id, or, when
/// `docker compose up` recreated one, the project's stopped container of that service), then
/// removes the journal. Returns a warning per container started.
pub fn recover(engine: &Engine, inst: &Installation, dry_run: bool) -> Result<Vec<String>> {
    let path = inst.install_dir.join(JOURNAL);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read the quiesce journal", &path, e)),
    };
    let journal: Journal = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::DockerError,
            format!(
                "the quiesce journal {} cannot be read ({e}): start the project's containers by hand (`docker compose up -d` in the install directory), then delete the file",
                path.display()
            ),
        )
    })?;
    if dry_run {
        return Ok(vec![format!(
            "an interrupted task left {} container(s) of project {} stopped; the next task that is not a dry run starts them",
            journal.containers.len(),
            journal.compose_project
        )]);
    }
    let mut warnings = Vec::new();
    let now = engine.project_containers(&journal.compose_project)?;
    for c in &journal.containers {
        let target = match engine.state(&c.id)? {
            Some(_) => Some(c.id.clone()),
            None => now
                .iter()
                .find(|n| !n.running && n.service.is_some() && n.service == c.service)
                .map(|n| n.id.clone()),
        };
        match target {
            Some(id) => {
                engine.start(&id)?;
                warnings.push(format!(
                    "an interrupted task (pid {}, since {}) had stopped container {}: started it again",
                    journal.pid, journal.since, c.name
                ));
            }
            None => warnings.push(format!(
                "an interrupted task had stopped container {}, which no longer exists: start the project with `docker compose up -d`",
                c.name
            )),
        }
    }
    remove_journal(&path)?;
    Ok(warnings)
}

fn write_journal(path: &Path, journal: &Journal) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::VolumeNotFound,
            format!(
                "install directory {} does not exist, so the containers cannot be stopped safely (the journal that restarts them after a crash lives there): check installation.install_dir",
                dir.display()
            ),
        ));
    }
    let tmp = dir.join(format!("{JOURNAL}.{}", std::process::id()));
    let text = serde_json::to_vec_pretty(journal).expect("a journal is JSON");
    let _ = std::fs::remove_file(&tmp);
    crate::fsutil::write_synced(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| crate::fsutil::fsync_dir(dir))
        .map_err(|e| Error::io("cannot write the quiesce journal", path, e))
}

fn remove_journal(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove the quiesce journal", path, e)),
    }
    if let Some(dir) = path.parent() {
        let _ = crate::fsutil::fsync_dir(dir);
    }
    Ok(())
}
