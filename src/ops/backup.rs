//! backup: write a new backup set, unless nothing changed since the newest one.
//!
//! Plan: resolve the volume, lock the repository, decide whether a set is needed (an existing
//! `backup_id`, or content equal to the newest set's, means no). Apply: archive into
//! `.staging/<id>/` (retrying while the volume changes under us), write the manifest, re-read
//! and check every file, publish atomically, then apply retention.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::json;

use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::ops::prune;
use crate::repository::check;
use crate::repository::manifest::{self, Manifest, VolumeComponent};
use crate::repository::{self, Repository, Set};
use crate::result::{Diff, SetRef, TaskResult, VolumeOutcome};
use crate::task::{BackupOptions, Compression, Operation, Task};
use crate::volume::{self, archive, digest, tree};

/// How often the volume is archived again when it changed while being archived.
const CONSISTENCY_ATTEMPTS: u32 = 3;

/// File name of the volume archive for a compression.
fn volume_file(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => "volume.tar.gz",
    }
}

pub fn run(task: &Task, opts: &BackupOptions) -> Result<TaskResult> {
    if task.api.is_some() {
        return Err(Error::new(
            ErrorKind::InvalidTask,
            "/api: the database half is not supported by this build yet; back up the volume alone by leaving out `api`",
        ));
    }
    let volume_dir = task.volume.as_ref().map(volume::resolve).transpose()?;

    // A dry run must not create the repository; without one, every set would be new.
    let repo = if task.dry_run && !Repository::exists(&task.repository) {
        None
    } else {
        Some(Repository::create(&task.repository)?)
    };
    let _lock = repo
        .as_ref()
        .map(|r| r.lock(Operation::Backup, task.wait_for_lock))
        .transpose()?;
    if let (Some(r), false) = (&repo, task.dry_run) {
        r.clean_staging()?;
    }
    let sets = repo
        .as_ref()
        .map(Repository::sets)
        .transpose()?
        .unwrap_or_default();

    if let Some(id) = &opts.backup_id
        && let Some(set) = sets.iter().find(|s| &s.id == id)
    {
        return Ok(unchanged(
            task,
            set,
            volume_dir.as_deref(),
            format!("backup set {id} already exists; nothing to do"),
        ));
    }
    let newest = sets.iter().find(|s| !s.is_safety());
    if let (Some(newest), None, false) = (newest, &opts.backup_id, opts.force)
        && let (Some(dir), Some(v)) = (&volume_dir, &newest.manifest.volume)
        && newest.manifest.db.is_none()
        && live_digest(dir)? == v.content_digest
    {
        return Ok(unchanged(
            task,
            newest,
            Some(dir),
            format!(
                "the volume is unchanged since backup set {}; nothing to do (force writes a new set)",
                newest.id
            ),
        ));
    }

    let base_id = opts
        .backup_id
        .clone()
        .unwrap_or_else(|| format!("{}-volume", clock::id_stamp(SystemTime::now())));
    let id = match &repo {
        Some(r) => r.unique_id(&base_id),
        None => base_id,
    };
    let set_path = task.repository.join(&id);
    let before = json!({"newest_set": newest.map(|s| &s.id)});
    let after = json!({"newest_set": &id});

    if task.dry_run {
        let mut result = TaskResult::ok(
            Operation::Backup,
            true,
            true,
            format!("would write backup set {id}"),
        );
        result.backup = Some(SetRef {
            id: id.clone(),
            path: set_path.display().to_string(),
            manifest: None,
        });
        if task.diff {
            result.diff = Some(Diff { before, after });
        }
        return Ok(result);
    }
    let repo = repo.expect("a real run created the repository");

    let created = SystemTime::now();
    let staged = repo.stage(&id)?;
    let mut warnings = Vec::new();
    let volume = match &volume_dir {
        Some(dir) => Some(archive_volume(
            dir,
            &staged,
            opts.compression,
            &mut warnings,
        )?),
        None => None,
    };
    let manifest = Manifest {
        format: manifest::FORMAT.to_string(),
        id: id.clone(),
        created_at: clock::rfc3339(created),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        connectware_version: None,
        volume,
        db: None,
        skew_ms: None,
    };
    let manifest_path = staged.join(manifest::FILE);
    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest is JSON");
    repository::write_synced(&manifest_path, &text)
        .map_err(|e| Error::repo("cannot write", &manifest_path, e))?;

    check_before_publish(&staged, &manifest, opts.verify)?;
    let path = repo.publish(&staged, &id)?;

    let mut result = TaskResult::ok(
        Operation::Backup,
        false,
        true,
        format!("wrote backup set {id}"),
    );
    if let Some(keep_last) = opts.keep_last {
        let deleted = prune::apply(&repo, keep_last, false)?;
        if !deleted.is_empty() {
            result.msg = format!(
                "{}; retention deleted {} older set(s)",
                result.msg,
                deleted.len()
            );
        }
        result.sets = Some(deleted);
    }
    if let (Some(dir), Some(v)) = (&volume_dir, &manifest.volume) {
        result.volume = Some(volume_outcome(dir, v, true));
    }
    result.backup = Some(SetRef {
        id,
        path: path.display().to_string(),
        manifest: Some(manifest),
    });
    result.warnings = warnings;
    if task.diff {
        result.diff = Some(Diff { before, after });
    }
    Ok(result)
}

/// The result for a backup that found its work already done.
fn unchanged(task: &Task, set: &Set, volume_dir: Option<&Path>, msg: String) -> TaskResult {
    let mut result = TaskResult::ok(Operation::Backup, task.dry_run, false, msg);
    if let (Some(dir), Some(v)) = (volume_dir, &set.manifest.volume) {
        result.volume = Some(volume_outcome(dir, v, false));
    }
    result.backup = Some(SetRef {
        id: set.id.clone(),
        path: set.path.display().to_string(),
        manifest: Some(set.manifest.clone()),
    });
    if task.diff {
        let same = json!({"newest_set": &set.id});
        result.diff = Some(Diff {
            before: same.clone(),
            after: same,
        });
    }
    result
}

fn volume_outcome(dir: &Path, v: &VolumeComponent, changed: bool) -> VolumeOutcome {
    VolumeOutcome {
        changed,
        path: dir.display().to_string(),
        files: v.files,
        bytes: v.expanded_bytes,
        content_digest: v.content_digest.clone(),
    }
}

/// The content digest of the live volume (one read of every file, no compression).
pub fn live_digest(dir: &Path) -> Result<String> {
    let entries = tree::scan(dir).map_err(|e| Error::io("cannot read volume", dir, e))?;
    let mut lines =
        digest::live_entries(dir, &entries).map_err(|e| Error::io("cannot read volume", dir, e))?;
    Ok(digest::content_digest(&mut lines))
}

/// Archives the volume into `staged`, again while it changes under us: the listing before
/// and after archiving must be equal, and every file must have kept its size.
fn archive_volume(
    dir: &Path,
    staged: &Path,
    compression: Compression,
    warnings: &mut Vec<String>,
) -> Result<VolumeComponent> {
    let file_name = volume_file(compression);
    let path: PathBuf = staged.join(file_name);
    for attempt in 1..=CONSISTENCY_ATTEMPTS {
        let started_at = clock::now();
        let before = tree::scan(dir).map_err(|e| Error::io("cannot read volume", dir, e))?;
        let file = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::repo("cannot create", &path, e))?;
        let written = archive::write_archive(dir, &before, file, compression).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::io("no space left while writing", &path, e)
            } else {
                Error::io("cannot archive volume", dir, e)
            }
        })?;
        let after = tree::scan(dir).map_err(|e| Error::io("cannot read volume", dir, e))?;
        if !written.changed && before == after {
            for skipped in &written.skipped {
                warnings.push(format!(
                    "{skipped} in the volume is a socket, FIFO or device and was not archived"
                ));
            }
            return Ok(VolumeComponent {
                file: file_name.to_string(),
                compression,
                sha256: written.sha256,
                bytes: written.bytes,
                started_at,
                finished_at: clock::now(),
                files: written.files,
                expanded_bytes: written.expanded_bytes,
                content_digest: written.content_digest,
                source: dir.display().to_string(),
            });
        }
        eprintln!(
            "cwbackup: the volume changed while it was archived (attempt {attempt} of {CONSISTENCY_ATTEMPTS})"
        );
    }
    Err(Error::new(
        ErrorKind::ConsistencyError,
        format!(
            "the volume {} kept changing while it was archived ({CONSISTENCY_ATTEMPTS} attempts): run the backup when no service is being (de)commissioned",
            dir.display()
        ),
    ))
}

/// Re-reads the staged set and compares it with its manifest; with `full`, also decompresses
/// and reads the whole archive.
fn check_before_publish(staged: &Path, manifest: &Manifest, full: bool) -> Result<()> {
    let mut problems = check::checksums(staged, manifest);
    if full && problems.is_empty() && manifest.volume.is_some() {
        let (_, more) = check::volume(staged, manifest, None)?;
        problems.extend(more);
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
