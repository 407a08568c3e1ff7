//! import: turn backups made by hand with the vendor's commands (SPEC §12) into a set that
//! verifies and restores like any other.
//!
//! Plan: read the volume archive (gzip, zstd or plain tar; the vendor's `./<volume>/_data/`
//! prefix found from its first entry, or the volume root itself), checking every entry as a
//! restore does (unsafe → `unsafe_archive`, nothing written), and digest the database file;
//! a set of equal digests (and encryption) already there is `changed: false`, naming it. A
//! dry run reads without extracting and stops there.
//!
//! Apply: the archive is extracted into the repository's scratch area, archived again in the
//! tool's own format (`volume.tar.gz`, `source: {"import": PATH}`) through the same layers as
//! a backup, the database file copied byte for byte (`db.tgz`, its server id null), the set
//! checked and committed. The default id is `imported-<UTC time>`; a restore never picks an
//! imported set unless it is named.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::time::SystemTime;

use serde_json::json;

use super::backup::{self, same_encryption};
use super::{LiveVolume, check, component_outcome, set_components};
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::remove_tree;
use crate::layers::{self, Sealed};
use crate::repository::manifest::{self, Component, DbFile, EncryptionInfo, Kind, Manifest, Source};
use crate::repository::{Repository, Set};
use crate::result::{Diff, SetRef, TaskResult};
use crate::task::{Compression, ImportOptions, Operation, Task};
use crate::volume::extract::{self, Contents, Layout, Limits};

/// Prefix of the ids of imported sets.
pub const IMPORTED_PREFIX: &str = "imported-";

/// An archive made by hand announces no size: the disk is its limit.
const NO_LIMITS: Limits = Limits {
    max_bytes: u64::MAX,
    max_entries: u64::MAX,
};

/// What the plan found in the files.
struct Found {
    /// The volume archive's contents and the prefix taken as its root.
    volume: Option<(Contents, Option<String>)>,
    /// The database file's content digest.
    db: Option<String>,
}

impl Found {
    /// Whether `set` holds exactly these components with these digests, encrypted alike.
    fn equals(&self, set: &Set, task: &Task) -> bool {
        let m = &set.manifest;
        let count = usize::from(self.volume.is_some()) + usize::from(self.db.is_some());
        m.components.len() == count
            && self.volume.as_ref().is_none_or(|(c, _)| {
                m.component(manifest::VOLUME)
                    .is_some_and(|v| v.is_volume() && v.content_digest == c.content_digest)
            })
            && self
                .db
                .as_ref()
                .is_none_or(|d| m.db().is_some_and(|c| c.content_digest == *d))
            && same_encryption(m, task.encryption.to.as_ref())
    }
}

pub fn run(task: &Task, opts: &ImportOptions) -> Result<TaskResult> {
    let mut warnings = Vec::new();
    let writing = super::Writing::open(task, Operation::Import)?;
    let sets = writing.sets()?;
    // The lock stays held by `writing` until the task returns.
    let repo = writing.repo;
    if let Some(id) = &opts.backup_id
        && let Some(set) = sets.iter().find(|s| &s.id == id)
    {
        return Ok(unchanged(task, set, format!("backup set {id} already exists; nothing to do")));
    }

    // Read (a dry run) or extract into the scratch area (a real run) the volume archive.
    let scratch = match (&repo, &opts.volume_archive, task.dry_run) {
        (Some(r), Some(_), false) => Some(r.scratch("import")?),
        _ => None,
    };
    let cleanup = Cleanup(scratch.clone());
    let volume = opts
        .volume_archive
        .as_deref()
        .map(|path| read_volume(path, scratch.as_deref()))
        .transpose()?;
    if let Some((_, Some(prefix))) = &volume {
        warnings.push(format!(
            "the volume archive has the vendor's layout: its entries below {prefix}/ were taken as the volume"
        ));
    }
    let db = opts.db_file.as_deref().map(db_digest).transpose()?;
    let found = Found { volume, db };

    if let Some(set) = sets.iter().find(|s| found.equals(s, task)) {
        let mut result = unchanged(
            task,
            set,
            format!(
                "backup set {} already holds this content; nothing to do",
                set.id
            ),
        );
        result.warnings = warnings;
        return Ok(result);
    }
    let what = match (&found.volume, &found.db) {
        (Some(_), Some(_)) => "the volume archive and the database file",
        (Some(_), None) => "the volume archive",
        _ => "the database file",
    };
    if task.dry_run {
        let mut result = TaskResult::ok(
            Operation::Import,
            true,
            true,
            format!("would import {what} as a new set: no set holds this content"),
        );
        result.warnings = warnings;
        if task.diff {
            result.diff = Some(Diff {
                before: json!({"set": null}),
                after: json!({"set": "(new set)"}),
            });
        }
        return Ok(result);
    }
    let repo = match repo {
        Some(r) => r,
        None => Repository::create(&task.repository)?,
    };
    let set = write_set(&repo, task, opts, &found, scratch.as_deref(), &mut warnings)?;
    drop(cleanup);
    let mut result = TaskResult::ok(
        Operation::Import,
        false,
        true,
        format!("imported {what} as backup set {}", set.id),
    );
    fill(&mut result, &set, true);
    result.warnings = warnings;
    if task.diff {
        result.diff = Some(Diff {
            before: json!({"set": null}),
            after: json!({"set": set.id}),
        });
    }
    Ok(result)
}

/// Removes the scratch directory when the import ends, however it ends.
struct Cleanup(Option<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = remove_tree(dir);
        }
    }
}

/// Writes the new set: the extracted volume archived again, the database file as it is.
fn write_set(
    repo: &Repository,
    task: &Task,
    opts: &ImportOptions,
    found: &Found,
    scratch: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Result<Set> {
    let created = SystemTime::now();
    let to = task.encryption.to.as_ref();
    let new = repo.create_set()?;
    let mut components = Vec::new();
    if let (Some(path), Some((contents, _)), Some(dir)) = (&opts.volume_archive, &found.volume, scratch) {
        let live = LiveVolume {
            name: manifest::VOLUME.to_string(),
            dir: dir.to_path_buf(),
            source: Source::Import(path.display().to_string()),
            listed: false,
            only: None,
        };
        let c = backup::archive_volume(&live, new.as_ref(), Compression::Gzip, to, warnings)?;
        if c.content_digest != contents.content_digest {
            return Err(Error::new(
                ErrorKind::IntegrityError,
                format!(
                    "the volume extracted from {} has digest {}, the archive said {}: nothing was imported; check the disk of the repository",
                    path.display(),
                    c.content_digest,
                    contents.content_digest
                ),
            ));
        }
        components.push(c);
    }
    if let (Some(path), Some(digest)) = (&opts.db_file, &found.db) {
        let started_at = clock::now();
        let file = backup::db_file(to.is_some());
        let mut sealed = Sealed::new(new.create(&file)?, to).map_err(|e| Error::storing(&file, e))?;
        let mut input = File::open(path).map_err(|e| Error::io("cannot read db_file", path, e))?;
        io::copy(&mut input, &mut sealed).map_err(|e| Error::storing(&file, e))?;
        let stored = sealed.finish().map_err(|e| Error::storing(&file, e))?;
        components.push(Component {
            name: manifest::DB.to_string(),
            file,
            compression: None,
            sha256: stored.sha256,
            bytes: stored.bytes,
            started_at,
            finished_at: clock::now(),
            content_digest: digest.clone(),
            kind: Kind::Db(DbFile {
                backup_id: None,
                status_message: None,
            }),
        });
    }
    let id = match &opts.backup_id {
        Some(id) => id.clone(),
        None => repo.unique_id(&format!("{IMPORTED_PREFIX}{}", clock::id_stamp(created)))?,
    };
    let manifest = Manifest {
        format: manifest::FORMAT.to_string(),
        id: id.clone(),
        created_at: clock::rfc3339(created),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        connectware_version: opts.connectware_version.clone(),
        server_version: None,
        skew_ms: None,
        installation: None,
        encryption: to.map(|to| EncryptionInfo {
            scheme: "age".to_string(),
            recipients: to.strings(),
        }),
        components,
    };
    backup::check_before_commit(new.as_ref(), &manifest, false, None)?;
    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest is JSON");
    let location = new.commit(&id, &text)?;
    Ok(Set {
        id,
        location,
        manifest,
    })
}

/// Reads a volume archive made by hand, checking every entry (and extracting it into `dest`
/// if given): gzip, zstd or plain tar, found from its first bytes.
fn read_volume(path: &Path, dest: Option<&Path>) -> Result<(Contents, Option<String>)> {
    let refused = |e: io::Error| {
        Error::new(
            ErrorKind::InvalidTask,
            format!("/volume_archive: cannot read {}: {e}", path.display()),
        )
    };
    let file = File::open(path).map_err(refused)?;
    if !file.metadata().map_err(refused)?.is_file() {
        return Err(refused(io::Error::other("not a regular file")));
    }
    let mut input = BufReader::with_capacity(1 << 20, file);
    let magic = input.fill_buf().map_err(refused)?;
    let compression = if magic.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    };
    let reader: Box<dyn Read + Send> = Box::new(input);
    let reader = layers::decompressing(reader, compression).map_err(refused)?;
    extract::read_archive_as(reader, dest, NO_LIMITS, Layout::Detect).map_err(|e| {
        let message = e
            .message
            .replace("; the set may have been tampered with, so restore another set", "");
        Error {
            message: format!(
                "{}: {message}; nothing was imported",
                path.display()
            ),
            ..e
        }
    })
}

/// The content digest of a database file made by hand.
fn db_digest(path: &Path) -> Result<String> {
    File::open(path)
        .and_then(check::db_content_digest)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidTask,
                format!(
                    "/db_file: {} is not a readable database backup (.tgz, as Connectware's API serves it): {e}",
                    path.display()
                ),
            )
        })
}

/// Names the set and its components in the result.
fn fill(result: &mut TaskResult, set: &Set, changed: bool) {
    let outcomes = set
        .manifest
        .components
        .iter()
        .map(|c| {
            let path = c.tree().and_then(|t| match &t.source {
                Source::Import(p) | Source::Path(p) => Some(p.clone()),
                Source::DockerVolume(_) => None,
            });
            component_outcome(c, changed, path)
        })
        .collect();
    set_components(result, outcomes);
    result.backup = Some(SetRef {
        id: set.id.clone(),
        path: set.location.clone(),
        manifest: Some(set.manifest.clone()),
    });
}

/// The result for an import whose content is already there.
fn unchanged(task: &Task, set: &Set, msg: String) -> TaskResult {
    let mut result = TaskResult::ok(Operation::Import, task.dry_run, false, msg);
    fill(&mut result, set, false);
    if task.diff {
        let same = json!({"set": &set.id});
        result.diff = Some(Diff {
            before: same.clone(),
            after: same,
        });
    }
    result
}
