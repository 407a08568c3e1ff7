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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::LiveVolume;
use crate::docker::{self, ContainerInfo, Engine};
use crate::error::{Error, ErrorKind, Result};
use crate::repository::manifest::{self, Manifest, Source};
use crate::task::{Installation, Operation, Quiesce, Task, VolumeSource};

/// The journal of a quiesce, in the install directory.
pub const JOURNAL: &str = ".cwbackup-quiesce.json";
/// The lock a task holds while the project's containers are stopped: another task's
/// recovery leaves a journal alone while its owner is alive, and two tasks never stop the
/// project at once.
pub const LOCK: &str = ".cwbackup-quiesce.lock";

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
        super::check_repository_apart(task, &v.mountpoint, &VolumeSource::Docker(v.name.clone()))?;
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
    Ok(volumes)
}

/// The files component a backup takes (None: no file to take). Call with the install
/// directory locked and recovered (a killed restore may have its files in its work directory).
/// A listed entry must be a regular file: a symlink's target would not be in the set (and an
/// absolute one is refused on restore), a directory is more than a file.
pub fn files_for_backup(
    task: &Task,
    inst: &Installation,
    warnings: &mut Vec<String>,
) -> Result<Option<LiveVolume>> {
    for name in &inst.files {
        check_file_apart(task, &inst.install_dir.join(name))?;
    }
    let mut present = Vec::new();
    for name in &inst.files {
        let path = inst.install_dir.join(name);
        let problem = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {
                present.push(OsString::from(name));
                continue;
            }
            Ok(m) => format!(
                "is a {}, not a regular file, so it cannot be backed up as one of the installation's files",
                if m.is_symlink() { "symlink" } else if m.is_dir() { "directory" } else { "special file" }
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "does not exist, so the set holds no copy of it".to_string()
            }
            Err(e) => format!("cannot be read ({e})"),
        };
        if inst.files_given {
            return Err(Error::new(
                ErrorKind::VolumeNotFound,
                format!(
                    "{} {problem}: check installation.install_dir and installation.files",
                    path.display()
                ),
            )
            .detail("install_dir", inst.install_dir.display().to_string()));
        }
        warnings.push(format!("{} {problem}", path.display()));
    }
    if present.iter().any(|f| f == ".env") && task.encryption.to.is_none() {
        warnings.push(
            "the set holds .env, which has the license key and other secrets, unencrypted: give `encryption` to encrypt the set"
                .to_string(),
        );
    }
    Ok((!present.is_empty()).then(|| files_of(&inst.install_dir, present)))
}

/// Refuses a directory repository at or below one of the installation's files (a restore
/// would replace it with the set's entry).
fn check_file_apart(task: &Task, path: &Path) -> Result<()> {
    super::check_repository_apart(task, path, &VolumeSource::Path(path.to_path_buf()))
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
    verify_first: &mut dyn FnMut() -> Result<()>,
    warnings: &mut Vec<String>,
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
    // The set is checked (key, checksums) before this host gets anything new.
    let mut checked = false;
    let mut check = |checked: &mut bool| -> Result<()> {
        if !*checked {
            verify_first()?;
            *checked = true;
        }
        Ok(())
    };
    for name in wanted {
        let found = existing
            .iter()
            .find(|v| short_name(&inst.compose_project, v) == name);
        let full = format!("{}_{name}", inst.compose_project);
        // A volume of that name without the project's labels still holds data: it is restored
        // like any existing one (into the safety set first), never taken as new.
        let unlabelled = match found {
            Some(_) => None,
            None => match engine.volume(&full) {
                Ok(v) => Some(v),
                Err(e) if e.kind == ErrorKind::VolumeNotFound => None,
                Err(e) => return Err(e),
            },
        };
        if let Some(v) = &unlabelled {
            warnings.push(format!(
                "Docker volume {} exists without the labels of compose project {} (com.docker.compose.project, com.docker.compose.volume): it is restored as it is, and `docker compose up` may refuse to adopt it",
                v.name, inst.compose_project
            ));
        }
        let (dir, full) = match found.or(unlabelled.as_ref()) {
            Some(v) => (v.mountpoint.clone(), v.name.clone()),
            None if task.dry_run => (placeholder(&mut out)?, full),
            None => {
                check(&mut checked)?;
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
        super::check_repository_apart(task, &dir, &VolumeSource::Docker(full.clone()))?;
        out.volumes.push(LiveVolume {
            name: name.to_string(),
            dir,
            source: Source::DockerVolume(full),
            listed: true,
            only: None,
        });
    }
    let in_set = set
        .installation
        .as_ref()
        .map(|i| i.files.clone())
        .unwrap_or_default();
    // `files` given: `[]` leaves the install directory alone; otherwise the set's files come
    // back together (one component, one digest), so the list must name all of them.
    let files = if inst.files_given && inst.files.is_empty() {
        Vec::new()
    } else if inst.files_given {
        let mut given = inst.files.clone();
        let mut all = in_set.clone();
        given.sort();
        all.sort();
        if given != all {
            return Err(Error::new(
                ErrorKind::InvalidTask,
                format!(
                    "/installation/files: a restore puts back the set's files together ({}): name all of them, or give [] to leave the install directory alone",
                    in_set.join(", ")
                ),
            ));
        }
        in_set
    } else {
        in_set
    };
    for f in &files {
        check_file_apart(task, &inst.install_dir.join(f))?;
    }
    if set.component(manifest::FILES).is_some() && !files.is_empty() {
        let dir = if inst.install_dir.is_dir() {
            inst.install_dir.clone()
        } else if task.dry_run {
            placeholder(&mut out)?
        } else {
            check(&mut checked)?;
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

/// What a SIGTERM, SIGINT or SIGHUP needs to start the containers a task stopped: set from
/// the first stop until they run again. `systemctl stop`, a CI timeout or Ctrl-C then leaves
/// the installation running, not down until the next task reads the journal.
struct OnSignal {
    engine: Engine,
    containers: Vec<(String, String)>,
    journal: PathBuf,
}

static ON_SIGNAL: Mutex<Option<OnSignal>> = Mutex::new(None);
/// Set while a restore swaps the volumes in: starting the containers then would run them on a
/// half-swapped volume, so a signal leaves them stopped (the swap's journal and the quiesce
/// journal let the next task finish the restore and start them).
static SWAPPING: AtomicBool = AtomicBool::new(false);

/// Marks the swap of a restore: signals leave the containers stopped while it runs.
pub fn swapping(on: bool) {
    SWAPPING.store(on, Ordering::SeqCst);
}

/// Starts (once per process) the thread that answers SIGTERM, SIGINT and SIGHUP: it starts the
/// stopped containers (unless a swap runs), removes the journal, and ends the process as the
/// signal would have.
fn watch_signals() {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    WATCHING.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let pending = ON_SIGNAL.lock().unwrap_or_else(|e| e.into_inner()).take();
                match pending {
                    Some(_) if SWAPPING.load(Ordering::SeqCst) => crate::progress::log(
                        "cwbackup: interrupted while the restore swaps the volumes: the containers stay stopped; the next task finishes the restore and starts them",
                    ),
                    Some(p) => {
                        let mut started = 0;
                        for (id, name) in &p.containers {
                            match p.engine.start(id) {
                                Ok(()) => started += 1,
                                Err(e) => crate::progress::log(&format!(
                                    "cwbackup: cannot start container {name} again: {}",
                                    e.message
                                )),
                            }
                        }
                        if started == p.containers.len() {
                            let _ = remove_journal(&p.journal);
                        }
                        crate::progress::log(&format!(
                            "cwbackup: interrupted (signal {signal}): started {started} of the {} container(s) it had stopped; the next task cleans up what the interrupted one left",
                            p.containers.len()
                        ));
                    }
                    None => {}
                }
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        });
    });
}

/// The project's containers, stopped by this run until [`Quiesced::resume`] (or drop) starts
/// exactly those again.
pub struct Quiesced<'e> {
    engine: &'e Engine,
    /// Held until the containers are started again.
    lock: Mutex<Option<crate::lockfile::Lock>>,
    journal: PathBuf,
    stopped: Vec<ContainerInfo>,
    since: Instant,
    /// The downtime once resumed.
    resumed: Mutex<Option<u64>>,
}

/// Stops the project's running containers (`stop_timeout_s` each), after writing the journal
/// that names them. A container that had to be killed fails the stop: the ones stopped are
/// started again first.
pub fn stop<'e>(
    engine: &'e Engine,
    inst: &Installation,
    operation: Operation,
    wait: Duration,
) -> Result<Quiesced<'e>> {
    let running: Vec<ContainerInfo> = engine
        .project_containers(&inst.compose_project)?
        .into_iter()
        .filter(|c| c.running)
        .collect();
    let journal = inst.install_dir.join(JOURNAL);
    let lock = if running.is_empty() {
        None
    } else {
        Some(quiesce_lock(inst, operation, wait)?)
    };
    let quiesced = Quiesced {
        engine,
        lock: Mutex::new(lock),
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
    watch_signals();
    *ON_SIGNAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(OnSignal {
        engine: engine.clone(),
        containers: running.iter().map(|c| (c.id.clone(), c.name.clone())).collect(),
        journal: quiesced.journal.clone(),
    });
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
                "container(s) {} did not stop within stop_timeout_s ({} s) and were killed; the task stopped there, nothing was changed, and the stopped containers were started again: raise installation.stop_timeout_s",
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
        // From here on this task starts them; a signal meanwhile waits for it, then finds
        // nothing to do.
        let mut on_signal = ON_SIGNAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut failed = Vec::new();
        for c in &self.stopped {
            // A container that is gone (`docker compose up` in a restore's `restart`
            // recreated it) has nothing to start.
            let result = match self.engine.state(&c.id) {
                Ok(None) => Ok(()),
                Ok(Some(_)) => self.engine.start(&c.id),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                failed.push(format!("{}: {}", c.name, e.message));
            }
        }
        let ms = self.since.elapsed().as_millis() as u64;
        *resumed = Some(ms);
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        if !failed.is_empty() {
            return Err(Error::new(
                ErrorKind::DockerError,
                format!(
                    "container(s) stopped by this task could not be started again ({}); start them by hand (`docker compose up -d` in the install directory); the journal {} is kept, so the next installation task tries again",
                    failed.join("; "),
                    self.journal.display()
                ),
            ));
        }
        if !self.stopped.is_empty() {
            remove_journal(&self.journal)?;
        }
        *on_signal = None;
        drop(lock);
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
pub fn recover(
    engine: &Engine,
    inst: &Installation,
    operation: Operation,
    dry_run: bool,
) -> Result<Vec<String>> {
    let path = inst.install_dir.join(JOURNAL);
    if !path.exists() {
        return Ok(Vec::new());
    }
    // A journal whose owner still holds the lock is a live task's, not a crashed one's.
    let _lock = match quiesce_lock(inst, operation, Duration::ZERO) {
        Ok(lock) => lock,
        Err(e) if e.kind == ErrorKind::Busy => {
            return Ok(vec![format!(
                "another cwbackup task has the containers of project {} stopped ({}); they are left to it",
                inst.compose_project, e.message
            )]);
        }
        Err(e) => return Err(e),
    };
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
        // The container itself, or the stopped one `docker compose up` made for its service
        // (never a one-off `docker compose run` container).
        let target = match engine.state(&c.id)? {
            Some(_) => Some((c.id.clone(), c.name.clone())),
            None => now
                .iter()
                .find(|n| !n.running && !n.oneoff && n.service.is_some() && n.service == c.service)
                .map(|n| (n.id.clone(), n.name.clone())),
        };
        match target {
            Some((id, name)) => match engine.start(&id) {
                Ok(()) => warnings.push(format!(
                    "an interrupted task (pid {}, since {}) had stopped container {name}: started it again",
                    journal.pid, journal.since
                )),
                // One that cannot start must not block every later task: said, and left.
                Err(e) => warnings.push(format!(
                    "an interrupted task (pid {}) had stopped container {name}, which does not start again ({}): start the project by hand (`docker compose up -d` in the install directory)",
                    journal.pid, e.message
                )),
            },
            None => warnings.push(format!(
                "an interrupted task had stopped container {}, which no longer exists: start the project with `docker compose up -d`",
                c.name
            )),
        }
    }
    remove_journal(&path)?;
    Ok(warnings)
}

/// The quiesce lock of the installation (in its install directory), waiting up to `wait`.
fn quiesce_lock(inst: &Installation, operation: Operation, wait: Duration) -> Result<crate::lockfile::Lock> {
    if !inst.install_dir.is_dir() {
        return Err(Error::new(
            ErrorKind::VolumeNotFound,
            format!(
                "install directory {} does not exist, so the containers cannot be stopped safely (the journal that restarts them after a crash lives there): check installation.install_dir",
                inst.install_dir.display()
            ),
        ));
    }
    crate::lockfile::acquire(
        &inst.install_dir.join(LOCK),
        &format!("the containers of compose project {}", inst.compose_project),
        operation,
        wait,
    )
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
