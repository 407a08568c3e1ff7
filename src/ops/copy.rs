//! copy: the complete sets of `repository` that `to` lacks, by id (SPEC §10), in any direction
//! (directory or bucket on either side).
//!
//! Plan first: every set to copy, and every set both sides hold, whose manifests must be equal
//! (a set in `to` with the same id and another manifest is `integrity_error`, found before
//! anything is written, and never overwritten). Then each set is streamed file by file from
//! one backend into a new set of the other, each file's size and sha256 checked against the
//! manifest on the way, read back as a backup reads its new set back, and published with
//! the manifest last, byte for byte as stored. Encrypted sets are copied as they are: no key is
//! needed. `keep_last` then prunes `to`. A dry run reports the plan.

use std::io::{self, Read};

use serde_json::json;

use crate::error::{Error, ErrorKind, Result};
use crate::hashing::HashingWriter;
use crate::ops::prune;
use crate::repository::manifest::{self, Manifest};
use crate::repository::{Repository, Set};
use crate::result::{Diff, TaskResult};
use crate::task::{CopyOptions, Operation, Task};

pub fn run(task: &Task, opts: &CopyOptions) -> Result<TaskResult> {
    let from = Repository::open(&task.repository)?;
    let writing = super::Writing::open_at(&opts.to, task, Operation::Copy)?;
    let present = writing.sets()?;
    let to = writing.repo.as_ref();
    let sources = from.sets()?;
    let chosen: Vec<&Set> = match &opts.backup_id {
        Some(id) => vec![sources.iter().find(|s| &s.id == id).ok_or_else(|| {
            Error::new(
                ErrorKind::BackupNotFound,
                format!(
                    "backup set {id} is not a complete set of {}: `list` shows the sets",
                    from.location()
                ),
            )
        })?],
        // Oldest first, so that the sets arrive in the order they were taken.
        None => sources.iter().rev().collect(),
    };
    let to_location = to.map_or_else(|| opts.to.describe(), Repository::location);

    let mut missing = Vec::new();
    for set in chosen {
        match present.iter().find(|p| p.id == set.id) {
            None => missing.push(set),
            Some(there) if same_manifest(&there.manifest, &set.manifest) => {}
            Some(there) => {
                return Err(Error::new(
                    ErrorKind::IntegrityError,
                    format!(
                        "backup set {} exists in {} with another manifest than in {}: it is not overwritten; verify both and delete the wrong one, or copy with another backup_id; nothing was copied",
                        set.id,
                        to_location,
                        from.location()
                    ),
                )
                .detail("set", set.id.clone())
                .detail("to", there.location.clone())
                .detail("from", set.location.clone()));
            }
        }
    }
    // A set id that `to` holds but not as a complete set (an incomplete leftover a dry run
    // did not clean) is still copied: the real run cleans it first.
    let copied: Vec<String> = missing.iter().map(|s| s.id.clone()).collect();
    if let Some(to) = to.filter(|_| !task.dry_run) {
        for set in &missing {
            copy_set(&from, to, set)?;
        }
    }
    let deleted = match (&to, opts.retention) {
        (Some(r), Some(retention)) => prune::apply(r, retention, None, task.dry_run)?,
        _ => Vec::new(),
    };
    let changed = !copied.is_empty() || !deleted.is_empty();
    let verb = if task.dry_run { "would copy" } else { "copied" };
    let mut msg = if copied.is_empty() {
        format!(
            "{to_location} already holds every set to copy from {}; nothing to copy",
            from.location()
        )
    } else {
        format!(
            "{verb} {} set(s) from {} to {to_location}: {}",
            copied.len(),
            from.location(),
            copied.join(", ")
        )
    };
    if !deleted.is_empty() {
        let verb = if task.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        msg.push_str(&format!(
            "; retention {verb} {} older set(s) there",
            deleted.len()
        ));
    }
    let mut result = TaskResult::ok(Operation::Copy, task.dry_run, changed, msg);
    if task.diff {
        let before: Vec<&str> = present.iter().map(|s| s.id.as_str()).collect();
        let mut after: Vec<&str> = before
            .iter()
            .copied()
            .chain(copied.iter().map(String::as_str))
            .filter(|id| !deleted.iter().any(|d| d.id == *id))
            .collect();
        after.sort();
        result.diff = Some(Diff {
            before: json!({"sets": before}),
            after: json!({"sets": after}),
        });
    }
    result.copied = Some(copied);
    result.sets = opts.retention.map(|_| deleted);
    Ok(result)
}

/// Whether two manifests describe the same set (their stored formatting aside).
fn same_manifest(a: &Manifest, b: &Manifest) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Copies one set: each file streamed and checked against the manifest, the new set read
/// back, then published with the source's manifest bytes.
fn copy_set(from: &Repository, to: &Repository, set: &Set) -> Result<()> {
    let new = to.create_set()?;
    for c in &set.manifest.components {
        let source = from.file_location(set, &c.file);
        let mut reader = from
            .read(set, &c.file)
            .map_err(|e| unreadable(&source, e))?;
        let mut out = HashingWriter::new(new.create(&c.file)?);
        io::copy(&mut reader, &mut out).map_err(|e| {
            Error::new(
                ErrorKind::RepositoryError,
                format!("cannot copy {source} to {}: {e}", to.location()),
            )
        })?;
        let (writer, sha256, bytes) = out.finish().map_err(|e| Error::storing(&c.file, e))?;
        drop(writer);
        if sha256 != c.sha256 || bytes != c.bytes {
            return Err(Error::new(
                ErrorKind::IntegrityError,
                format!(
                    "{source} has {bytes} bytes with sha256 {sha256}, its manifest says {} bytes with sha256 {}: the set is damaged and was not copied; verify it",
                    c.bytes, c.sha256
                ),
            )
            .detail("set", set.id.clone())
            .detail("component", c.name.clone()));
        }
    }
    super::backup::check_before_commit(new.as_ref(), &set.manifest, false, None)?;
    let manifest = stored_manifest(from, set)?;
    new.commit(&set.id, &manifest)?;
    Ok(())
}

/// The set's manifest as stored, byte for byte (it must still read as the one listed).
fn stored_manifest(from: &Repository, set: &Set) -> Result<Vec<u8>> {
    let location = from.file_location(set, manifest::FILE);
    let mut bytes = Vec::new();
    from.read(set, manifest::FILE)
        .and_then(|r| {
            r.take(crate::safe_open::MAX_MANIFEST + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(|e| unreadable(&location, e))?;
    match Manifest::from_slice(&bytes) {
        Ok(m) if same_manifest(&m, &set.manifest) => Ok(bytes),
        _ => Err(Error::new(
            ErrorKind::IntegrityError,
            format!("{location} changed while it was being copied; run again"),
        )),
    }
}

fn unreadable(location: &str, e: io::Error) -> Error {
    Error::new(
        ErrorKind::RepositoryError,
        format!("cannot read {location}: {e}"),
    )
}
