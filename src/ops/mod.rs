//! One module per operation, each `run(task, options) -> TaskResult`: first a plan (a value:
//! per component take / skip / restore, and why), then apply it; a dry run reports the plan,
//! and an empty plan is `changed: false`.
//!
//! Operations join the parts below them, which know nothing of each other: the repository
//! (sets as streams), the volume code (directories), the API client (the database file), and
//! the layers (compression, hashing) between a component and its stored file.

pub mod backup;
pub mod check;
pub mod copy;
pub mod import;
pub mod installation;
pub mod list;
pub mod prune;
pub mod restore;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::keys::Recipients;
use crate::layers::Opening;
use crate::repository::manifest::{self, Component, Manifest, Source, Tree};
use crate::repository::{Repository, Set};
use crate::result::{ComponentOutcome, TaskResult};
use crate::task::{Compression, Op, RepositoryConfig, Task, VolumeSource, Volumes};
use crate::{docker, volume};

/// Runs a validated task.
pub fn run(task: &Task) -> Result<TaskResult> {
    let mut result = match &task.op {
        Op::Backup(opts) => backup::run(task, opts),
        Op::Restore(opts) => restore::run(task, opts),
        Op::Verify(opts) => verify::run(task, opts),
        Op::List => list::run(task),
        Op::Prune(retention) => prune::run(task, *retention),
        Op::Import(opts) => import::run(task, opts),
        Op::Copy(opts) => copy::run(task, opts),
    }?;
    let to = match &task.op {
        Op::Copy(opts) => Some(&opts.to),
        _ => None,
    };
    for repo in std::iter::once(&task.repository).chain(to) {
        if let RepositoryConfig::S3(s3) = repo
            && s3.endpoint.starts_with("http://")
        {
            result.warnings.push(format!(
                "the S3 endpoint {} is plain http://: the sets travel unencrypted unless they are encrypted (`encryption`); use https://",
                s3.endpoint
            ));
        }
    }
    Ok(result)
}

/// The repository a writing task (backup, import; copy's `to`) works on: created (mode 0700)
/// unless this is a dry run — a dry run must not create it, and without one every set is new —
/// locked for `operation`, and cleaned of what interrupted tasks left. Dropping it releases the
/// lock.
pub struct Writing {
    pub repo: Option<Repository>,
    _lock: Option<crate::repository::backend::Held>,
}

impl Writing {
    /// The task's repository.
    pub fn open(task: &Task, operation: crate::task::Operation) -> Result<Writing> {
        Writing::open_at(&task.repository, task, operation)
    }

    /// Another repository the task writes to (copy's `to`).
    pub fn open_at(
        config: &RepositoryConfig,
        task: &Task,
        operation: crate::task::Operation,
    ) -> Result<Writing> {
        let repo = if task.dry_run && !Repository::exists(config) {
            None
        } else {
            Some(Repository::create(config)?)
        };
        let lock = repo
            .as_ref()
            .map(|r| r.lock(operation, task.wait_for_lock))
            .transpose()?;
        if let (Some(r), false) = (&repo, task.dry_run) {
            r.clean_staging()?;
        }
        Ok(Writing { repo, _lock: lock })
    }

    /// The complete sets, newest first (none without a repository).
    pub fn sets(&self) -> Result<Vec<crate::repository::Set>> {
        Ok(self
            .repo
            .as_ref()
            .map(Repository::sets)
            .transpose()?
            .unwrap_or_default())
    }
}

/// A volume of the task, found: the component it is, and its live directory.
#[derive(Debug, Clone)]
pub struct LiveVolume {
    /// The component's name: `volume` for the task key `volume`, else the volume's name.
    pub name: String,
    /// The live directory.
    pub dir: PathBuf,
    /// Where it came from, as the manifest records it.
    pub source: Source,
    /// Given with the task key `volumes` or `installation` (stored under `volumes/`).
    pub listed: bool,
    /// The installation's files (the component `files`): only these root entries of `dir`.
    pub only: Option<Vec<std::ffi::OsString>>,
}

impl LiveVolume {
    /// The file of its archive inside a set (`.age` appended when encrypted).
    pub fn file(&self, compression: Compression, encrypted: bool) -> String {
        let ext = match compression {
            Compression::Gzip => "tar.gz",
            Compression::Zstd => "tar.zst",
        };
        let age = if encrypted { crate::layers::AGE_SUFFIX } else { "" };
        if self.is_files() {
            format!("{}.{ext}{age}", manifest::FILES)
        } else if self.listed {
            format!("volumes/{}.{ext}{age}", self.name)
        } else {
            format!("volume.{ext}{age}")
        }
    }

    /// The component of a set this volume reads (restore, verify against_live): for the task
    /// key `volume`, the component named `volume` or the set's only volume; for `volumes`, the
    /// component of its name.
    pub fn component_in<'m>(&self, manifest: &'m Manifest) -> Result<(&'m Component, &'m Tree)> {
        let found = if self.is_files() {
            manifest.component(manifest::FILES).filter(|c| c.kind_name() == manifest::FILES)
        } else if self.listed {
            manifest.component(&self.name).filter(|c| c.is_volume())
        } else {
            manifest.single_volume()
        };
        found.and_then(|c| c.tree().map(|t| (c, t))).ok_or_else(|| {
            let volumes: Vec<&str> = manifest.volumes().map(|c| c.name.as_str()).collect();
            if volumes.is_empty() {
                Error::new(
                    ErrorKind::BackupNotFound,
                    format!(
                        "backup set {} has no volume half: leave out `volume` to restore its database alone",
                        manifest.id
                    ),
                )
            } else if self.listed {
                Error::new(
                    ErrorKind::BackupNotFound,
                    format!(
                        "backup set {} has no volume named `{}`; its volumes are: {}",
                        manifest.id,
                        self.name,
                        volumes.join(", ")
                    ),
                )
            } else {
                Error::new(
                    ErrorKind::InvalidTask,
                    format!(
                        "backup set {} holds several volumes ({}): name them with `volumes` instead of `volume`",
                        manifest.id,
                        volumes.join(", ")
                    ),
                )
                .detail("components", manifest.names())
            }
        })
    }

    /// Whether this is the installation's files rather than a volume.
    pub fn is_files(&self) -> bool {
        self.only.is_some()
    }

    /// What of its directory the component is made of.
    pub fn root(&self) -> volume::Root<'_> {
        volume::Root {
            dir: &self.dir,
            only: self.only.as_deref(),
        }
    }

    /// Whether a set's component is of this one's kind (a volume, or the files).
    pub fn same_kind(&self, c: &Component) -> bool {
        if self.is_files() {
            c.kind_name() == manifest::FILES
        } else {
            c.is_volume()
        }
    }

    /// The outcome of this volume as a component: named as the task names it, with its live
    /// directory.
    pub fn outcome(&self, component: &Component, changed: bool) -> ComponentOutcome {
        ComponentOutcome {
            name: self.name.clone(),
            ..component_outcome(component, changed, Some(self.dir.display().to_string()))
        }
    }
}

/// The outcome of any component of a set: a tree's entry count, expanded size and digest (and
/// `path`, where the caller knows one), or the database file's (see [`db_outcome`]).
pub fn component_outcome(
    component: &Component,
    changed: bool,
    path: Option<String>,
) -> ComponentOutcome {
    match component.tree() {
        Some(t) => ComponentOutcome {
            name: component.name.clone(),
            kind: component.kind_name().to_string(),
            changed,
            files: Some(t.files),
            bytes: Some(t.expanded_bytes),
            content_digest: Some(component.content_digest.clone()),
            path,
            backup_id: None,
            status_message: None,
        },
        None => db_outcome(component, changed, None),
    }
}

/// The outcome of a database component.
pub fn db_outcome(component: &Component, changed: bool, status: Option<String>) -> ComponentOutcome {
    let db = component.db();
    ComponentOutcome {
        name: component.name.clone(),
        kind: component.kind_name().to_string(),
        changed,
        files: None,
        bytes: Some(component.bytes),
        content_digest: Some(component.content_digest.clone()),
        path: None,
        backup_id: db.and_then(|d| d.backup_id.clone()),
        status_message: status.or_else(|| db.and_then(|d| d.status_message.clone())),
    }
}

/// Fills the result's `components`, and `volume` and `db` for the components of those names
/// (single-volume playbooks read them).
pub fn set_components(result: &mut TaskResult, components: Vec<ComponentOutcome>) {
    for c in &components {
        match (c.kind.as_str(), c.name.as_str()) {
            ("volume", manifest::VOLUME) => {
                result.volume = Some(crate::result::VolumeOutcome {
                    changed: c.changed,
                    path: c.path.clone().unwrap_or_default(),
                    files: c.files.unwrap_or(0),
                    bytes: c.bytes.unwrap_or(0),
                    content_digest: c.content_digest.clone().unwrap_or_default(),
                })
            }
            ("db", _) => {
                result.db = Some(crate::result::DbOutcome {
                    changed: c.changed,
                    backup_id: c.backup_id.clone(),
                    status_message: c.status_message.clone(),
                })
            }
            _ => {}
        }
    }
    result.components = Some(components);
}

/// What opens a set's files (SPEC §11): as stored when it is not encrypted, else the task's
/// `identity_file`, which must open every file of the set. A missing or wrong key is
/// `encryption_error` naming the set's recipients, found before anything is read or touched;
/// `what` says what needs the key (`a restore`). Other damage to a file is left to the
/// checksums, which report it as such.
pub fn opening<'t>(
    task: &'t Task,
    repo: &Repository,
    set: &Set,
    what: &str,
) -> Result<Opening<'t>> {
    let Some(e) = &set.manifest.encryption else {
        return Ok(Opening::Plain);
    };
    let recipients = e.recipients.join(", ");
    let refused = |message: String| {
        Error::new(ErrorKind::EncryptionError, message)
            .detail("set", set.id.clone())
            .detail("recipients", e.recipients.clone())
    };
    let Some(ids) = task.encryption.identities.as_ref() else {
        return Err(refused(format!(
            "backup set {} is encrypted (age) to {recipients}: {what} needs encryption.identity_file, the identity file of one of them",
            set.id
        )));
    };
    let wrong = || {
        refused(format!(
            "the identity in {} (public key {}) does not open backup set {}, which is encrypted to {recipients}: give the identity file of one of them; nothing was changed",
            ids.file,
            ids.public().join(", "),
            set.id
        ))
    };
    if !ids.opens(&e.recipients) {
        return Err(wrong());
    }
    // The manifest is not signed: the files' own headers have the last word.
    for c in &set.manifest.components {
        let opened = repo
            .read(set, &c.file)
            .and_then(|stored| crate::layers::opened(stored, Opening::Age(ids), false));
        if let Err(e) = opened
            && e.kind() == std::io::ErrorKind::PermissionDenied
        {
            return Err(wrong());
        }
    }
    Ok(Opening::Age(ids))
}

/// The recipients a set is encrypted to, for a set written from it (a restore's safety set).
pub fn recipients_of(set: &Set) -> Result<Option<Recipients>> {
    set.manifest
        .encryption
        .as_ref()
        .map(|e| {
            Recipients::parse(e.recipients.iter().map(String::as_str), |i| {
                format!("recipient {i}")
            })
            .map_err(|why| {
                Error::new(
                    ErrorKind::IntegrityError,
                    format!(
                        "backup set {}'s manifest names recipients that are not age X25519 public keys ({why}); nothing was changed",
                        set.id
                    ),
                )
            })
        })
        .transpose()
}

/// The task's volumes, found (a path, or a Docker volume's mountpoint), each refused as
/// `invalid_task` when it and the repository (or two volumes) lie inside one another: a
/// restore would move the repository away with the old tree, and a backup would archive its
/// own output. Every operation that has both resolves the volumes here, before it locks or
/// writes anything.
pub fn resolve_volumes(task: &Task) -> Result<Vec<LiveVolume>> {
    let given: Vec<(Option<String>, &VolumeSource, bool)> = match &task.volumes {
        Volumes::None => return Ok(Vec::new()),
        Volumes::Single(source) => vec![(Some(manifest::VOLUME.to_string()), source, false)],
        Volumes::List(list) => list.iter().map(|v| (v.name.clone(), &v.source, true)).collect(),
    };
    let mut out: Vec<LiveVolume> = Vec::with_capacity(given.len());
    let mut engine = None;
    for (name, source, listed) in given {
        let (dir, compose_name) = match source {
            VolumeSource::Path(p) => (p.clone(), None),
            VolumeSource::Docker(n) => {
                let engine = match &mut engine {
                    Some(e) => e,
                    None => engine.insert(docker::Engine::connect()?),
                };
                let v = engine.volume(n)?;
                (v.mountpoint.clone(), v.compose_name().map(str::to_string))
            }
        };
        volume::check_dir(&dir)?;
        check_repository_apart(task, &dir, source)?;
        let (source, docker_name) = match source {
            VolumeSource::Path(p) => (Source::Path(p.display().to_string()), None),
            VolumeSource::Docker(n) => (Source::DockerVolume(n.clone()), Some(n.clone())),
        };
        let name = name.or(compose_name).or(docker_name).unwrap_or_default();
        if listed && !valid_component_name(&name) {
            return Err(Error::new(
                ErrorKind::InvalidTask,
                format!("/volumes: the volume name `{name}` cannot name a component (letters, digits, `._-`, not starting with a dot, not `db` or `files`): give it a `name`"),
            ));
        }
        if out.iter().any(|v| v.name == name) {
            return Err(Error::new(
                ErrorKind::InvalidTask,
                format!("/volumes: two volumes are named `{name}`; give each a unique `name`"),
            ));
        }
        let real = canonical(&dir);
        for other in &out {
            let other_real = canonical(&other.dir);
            if real.starts_with(&other_real) || other_real.starts_with(&real) {
                return Err(Error::new(
                    ErrorKind::InvalidTask,
                    format!(
                        "/volumes: volumes {} and {} lie inside one another; give each volume once",
                        other.dir.display(),
                        dir.display()
                    ),
                ));
            }
        }
        out.push(LiveVolume {
            name,
            dir,
            source,
            listed,
            only: None,
        });
    }
    Ok(out)
}

/// Whether a name can name a volume component (not the names of the other kinds).
fn valid_component_name(name: &str) -> bool {
    manifest::safe_component_name(name) && !["db", "files"].contains(&name)
}

/// A path with its symlinks resolved; one that does not exist yet has its nearest existing
/// ancestor canonicalized and the rest appended.
fn canonical(p: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = p;
    loop {
        match at.canonicalize() {
            Ok(real) => {
                return missing
                    .iter()
                    .rev()
                    .fold(real, |acc: PathBuf, part| acc.join(part));
            }
            Err(_) => match (at.parent(), at.file_name()) {
                (Some(parent), Some(name)) => {
                    missing.push(name.to_os_string());
                    at = parent;
                }
                _ => return p.to_path_buf(),
            },
        }
    }
}

/// [`check_apart`] for the task's repository, if it is a directory (a bucket is never inside a
/// volume).
pub(crate) fn check_repository_apart(task: &Task, dir: &Path, source: &VolumeSource) -> Result<()> {
    match task.repository.dir() {
        Some(repository) => check_apart(repository, dir, source),
        None => Ok(()),
    }
}

/// Refuses a repository inside the volume, or a volume inside the repository, comparing
/// canonical paths (the repository may not exist yet).
fn check_apart(repository: &Path, volume_dir: &Path, source: &VolumeSource) -> Result<()> {
    let repo = canonical(repository);
    let vol = canonical(volume_dir);
    let shown_vol = match source {
        VolumeSource::Path(_) => volume_dir.display().to_string(),
        VolumeSource::Docker(name) => format!("{} (Docker volume {name})", volume_dir.display()),
    };
    let why = if repo.starts_with(&vol) {
        "the repository is inside the volume (a restore would move it away with the old tree, a backup would archive its own sets)"
    } else if vol.starts_with(&repo) {
        "the volume is inside the repository"
    } else {
        return Ok(());
    };
    Err(Error::new(
        ErrorKind::InvalidTask,
        format!(
            "repository {} and volume {shown_vol} overlap: {why}; put the repository outside the volume",
            repository.display()
        ),
    )
    .detail("repository", repo.display().to_string())
    .detail("volume", vol.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_paths_are_refused_through_symlinks_and_missing_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::os::unix::fs::symlink(&vol, tmp.path().join("link")).unwrap();
        let src = VolumeSource::Path(vol.clone());
        for repo in [
            vol.join("repo"),
            tmp.path().join("link/not/yet/repo"),
            tmp.path().to_path_buf(),
            vol.clone(),
        ] {
            let e = check_apart(&repo, &vol, &src).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidTask);
            assert!(
                e.message.contains(&*repo.to_string_lossy()),
                "{}",
                e.message
            );
            assert!(e.message.contains(&*vol.to_string_lossy()), "{}", e.message);
        }
        check_apart(&tmp.path().join("repo"), &vol, &src).unwrap();
        check_apart(&tmp.path().join("volume-backups"), &vol, &src).unwrap();
    }
}
