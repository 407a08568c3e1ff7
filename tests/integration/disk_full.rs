//! Running out of space: a real, size-limited tmpfs (these tests run as root, as CI does).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cwbackup::error::ErrorKind;
use serde_json::json;

use crate::common::*;

/// A tmpfs of `size` mounted at `at`, unmounted when dropped.
pub struct Mount(PathBuf);

impl Mount {
    pub fn new(at: &Path, size: &str) -> Mount {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "these tests mount a small tmpfs and need root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_repository_is_no_space_and_leaves_no_set() {
    let f = Fixture::empty();
    big_tree(&f.vol, 4, 1_000_000);
    let _m = Mount::new(&f.repo, "1m");
    let r = run(&f.task("backup"));
    let e = r.result.error.expect("the backup fails");
    assert_eq!(e.kind, ErrorKind::NoSpace, "{}", e.message);
    assert!(e.retryable);
    assert!(f.set_ids().is_empty());
    assert_staging_empty(&f.repo);
}

#[test]
fn a_full_volume_file_system_during_staging_leaves_the_volume_untouched() {
    let f = Fixture::empty();
    let mount_dir = f.path("small");
    // The volume lives on a small file system; the set to restore does not fit beside it.
    let source = f.path("source");
    big_tree(&source, 3, 1_000_000);
    let task = json!({"operation": "backup", "repository": f.repo, "volume": {"path": source}});
    let set = run_ok(&task).backup.unwrap().id;
    let _m = Mount::new(&mount_dir, "2m");
    let vol = mount_dir.join("vol");
    write(&vol.join("services/current.yml"), &[1u8; 300_000], 0o644);
    let before = listing(&vol);
    let r = run(
        &json!({"operation": "restore", "repository": f.repo, "backup_id": set,
                        "volume": {"path": vol}, "safety_backup": false}),
    );
    let e = r.result.error.expect("the restore fails");
    assert_eq!(e.kind, ErrorKind::NoSpace, "{}", e.message);
    assert_eq!(
        listing(&vol),
        before,
        "the volume is byte for byte as it was"
    );
    assert!(!vol.join(".cwbackup-work").exists(), "staging is removed");
}
