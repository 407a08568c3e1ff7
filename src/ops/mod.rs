//! One module per operation, each `run(task, options) -> TaskResult`: plan first, then apply
//! (a dry run stops after the plan).

pub mod backup;
pub mod list;
pub mod prune;
pub mod restore;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::result::TaskResult;
use crate::task::{Op, Task, VolumeSource};
use crate::volume;

/// Runs a validated task.
pub fn run(task: &Task) -> Result<TaskResult> {
    match &task.op {
        Op::Backup(opts) => backup::run(task, opts),
        Op::Restore(opts) => restore::run(task, opts),
        Op::Verify(opts) => verify::run(task, opts),
        Op::List => list::run(task),
        Op::Prune(retention) => prune::run(task, *retention),
    }
}

/// The task's volume directory (a path, or a Docker volume's mountpoint), refused as
/// `invalid_task` when it and the repository lie inside one another: a restore would move the
/// repository away with the old tree, and a backup would archive its own output. Every
/// operation that has both resolves the volume here, before it locks or writes anything.
pub fn resolve_volume(task: &Task) -> Result<Option<PathBuf>> {
    let Some(source) = &task.volume else {
        return Ok(None);
    };
    let dir = volume::resolve(source)?;
    check_apart(&task.repository, &dir, source)?;
    Ok(Some(dir))
}

/// Refuses a repository inside the volume, or a volume inside the repository, comparing
/// canonical paths (the repository may not exist yet: its nearest existing ancestor is
/// canonicalized and the rest appended).
fn check_apart(repository: &Path, volume_dir: &Path, source: &VolumeSource) -> Result<()> {
    let canonical = |p: &Path| -> Result<PathBuf> {
        let mut missing = Vec::new();
        let mut at = p;
        loop {
            match at.canonicalize() {
                Ok(real) => {
                    return Ok(missing
                        .iter()
                        .rev()
                        .fold(real, |acc: PathBuf, part| acc.join(part)));
                }
                Err(_) => match (at.parent(), at.file_name()) {
                    (Some(parent), Some(name)) => {
                        missing.push(name.to_os_string());
                        at = parent;
                    }
                    _ => return Ok(p.to_path_buf()),
                },
            }
        }
    };
    let repo = canonical(repository)?;
    let vol = canonical(volume_dir)?;
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
