//! File-system helpers everyone may use: synced writes, directory syncs, tree removal.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes a new file with mode 0600 and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Syncs a directory, so that renames and new entries in it survive a crash.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    // O_DIRECTORY: something swapped in for a directory (a FIFO) fails instead of blocking.
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?
        .sync_all()
}

/// Removes a file, or a directory tree (nothing if it is missing). A read-only directory (a
/// restored 0555 one) blocks deleting its entries even for its owner, so directories are made
/// writable first when a plain removal fails.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if remove_dir_on_two_threads(path).is_ok() {
        return Ok(());
    }
    for dir in walk_dirs(path) {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
    }
    fs::remove_dir_all(path)
}

/// `remove_dir_all` on two threads: unlinking a volume's many small files is system-call
/// bound, so the tree is opened up breadth-first until there are a few entries to share, each
/// thread removes half of them, and the opened directories go last, deepest first.
fn remove_dir_on_two_threads(path: &Path) -> io::Result<()> {
    let mut opened = vec![path.to_path_buf()];
    let mut share: Vec<(PathBuf, bool)> = list(path)?;
    while share.len() < 16 && share.iter().any(|(_, is_dir)| *is_dir) {
        let mut next = Vec::new();
        for (item, is_dir) in share {
            if is_dir {
                next.extend(list(&item)?);
                opened.push(item);
            } else {
                next.push((item, false));
            }
        }
        share = next;
    }
    let remove = |items: &[(PathBuf, bool)]| -> io::Result<()> {
        for (item, is_dir) in items {
            if *is_dir {
                fs::remove_dir_all(item)?;
            } else {
                fs::remove_file(item)?;
            }
        }
        Ok(())
    };
    let (first, second) = share.split_at(share.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| remove(second));
        let mine = remove(first);
        match other.join() {
            Ok(theirs) => theirs.and(mine),
            Err(payload) => Err(std::io::Error::other(format!(
                "a removing thread panicked: {}",
                crate::error::panic_text(payload.as_ref())
            ))),
        }
    })?;
    for dir in opened.iter().rev() {
        fs::remove_dir(dir)?;
    }
    Ok(())
}

/// A directory's entries, each with whether it is a directory (not following symlinks).
fn list(dir: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    fs::read_dir(dir)?
        .map(|item| {
            let item = item?;
            Ok((item.path(), item.file_type()?.is_dir()))
        })
        .collect()
}

/// `root` and every directory below it (not following symlinks).
fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(read) = fs::read_dir(&dirs[i]) {
            for item in read.flatten() {
                if item.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(item.path());
                }
            }
        }
        i += 1;
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_shares_a_deep_tree_and_never_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        // One directory per level at the top, so the removal must open levels up to share.
        let tree = tmp.path().join("tree");
        let wide = tree.join("only/child");
        for d in 0..5 {
            fs::create_dir_all(wide.join(format!("d{d}/sub"))).unwrap();
            for f in 0..7 {
                fs::write(wide.join(format!("d{d}/f{f}")), "x").unwrap();
                fs::write(wide.join(format!("d{d}/sub/f{f}")), "x").unwrap();
            }
        }
        fs::write(wide.join("top-file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, wide.join("d0/link-to-outside")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("only/link-to-outside")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(
            outside.join("keep").exists(),
            "links are removed, not followed"
        );
    }

    #[test]
    fn remove_tree_removes_read_only_trees_files_and_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("ro/inner")).unwrap();
        fs::write(tree.join("ro/inner/f"), "x").unwrap();
        fs::set_permissions(tree.join("ro/inner"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
        remove_tree(&tmp.path().join("missing")).unwrap();
    }
}
