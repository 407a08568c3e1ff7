//! import (SPEC §12): backups made by hand with the vendor's own commands become sets that
//! verify and restore like any other; hostile hand-made archives are refused.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cwbackup::error::ErrorKind;
use cwbackup::repository::manifest::Source;
use serde_json::{Value, json};

use crate::common::*;
use crate::encryption::keygen;
use crate::restore::{Raw, raw_tar};

/// The files an operator made by hand, as the vendor's page says: the volume with
/// `cd /var/lib/docker/volumes; tar cvfz … ./connectware_service-manager/_data`, the database
/// with `curl … --output connectware-db-backup.tgz`.
struct HandMade {
    f: Fixture,
    /// The volume's `_data` directory the archive was made from.
    data: PathBuf,
    volume_archive: PathBuf,
    db_file: PathBuf,
    db_bytes: Vec<u8>,
}

impl HandMade {
    fn new() -> HandMade {
        let f = Fixture::empty();
        let volumes = f.path("volumes");
        let data = volumes.join("connectware_service-manager/_data");
        fs::create_dir_all(&data).unwrap();
        sample_tree(&data);
        let volume_archive = f.path("connectware-volume-backup.tgz");
        let out = Command::new("tar")
            .current_dir(&volumes)
            .arg("cvfz")
            .arg(&volume_archive)
            .arg("./connectware_service-manager/_data")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let db_bytes = cw_emulator::db_file("1.7.2", &cw_emulator::default_db());
        let db_file = f.path("connectware-db-backup.tgz");
        fs::write(&db_file, &db_bytes).unwrap();
        HandMade {
            f,
            data,
            volume_archive,
            db_file,
            db_bytes,
        }
    }

    fn task(&self) -> Value {
        json!({"operation": "import", "repository": self.f.repo,
            "volume_archive": self.volume_archive, "db_file": self.db_file,
            "connectware_version": "1.7.2"})
    }
}

#[test]
fn the_vendors_hand_made_files_import_verify_deep_and_restore_into_an_equal_tree() {
    let h = HandMade::new();
    let r = run_ok(&h.task());
    assert!(r.changed);
    assert!(r.warnings.iter().any(|w| w.contains("connectware_service-manager/_data")), "{:?}", r.warnings);
    let set = r.backup.unwrap();
    assert!(set.id.starts_with("imported-"), "{}", set.id);
    let m = set.manifest.unwrap();
    assert_eq!(m.connectware_version.as_deref(), Some("1.7.2"));
    let v = m.single_volume().unwrap();
    assert_eq!(v.file, "volume.tar.gz");
    assert_eq!(v.content_digest, spec_digest(&h.data));
    assert_eq!(v.tree().unwrap().source, Source::Import(h.volume_archive.display().to_string()));
    let db = m.db().unwrap();
    assert_eq!(db.db().unwrap().backup_id, None);
    let dir = PathBuf::from(&set.path);
    assert_eq!(fs::read(dir.join("db.tgz")).unwrap(), h.db_bytes, "kept byte for byte");
    // GNU tar reads the new archive: the volume root, no prefix.
    let out = h.f.path("by-tar");
    gnu_tar_extract(&dir.join("volume.tar.gz"), &out, &["-z"]);
    assert_eq!(listing(&out), listing(&h.data));
    run_ok(&json!({"operation": "verify", "repository": h.f.repo, "deep": true}));
    // A restore never picks an imported set unless it is named.
    let r = run(&h.f.task("restore"));
    assert_eq!(kind(&r), ErrorKind::BackupNotFound, "{}", r.stdout);
    let mut restore = h.f.task("restore");
    restore["backup_id"] = json!(set.id);
    let r = run_ok(&restore);
    assert!(r.changed);
    assert_eq!(listing(&h.f.vol), listing(&h.data));
}

#[test]
fn the_same_files_imported_again_change_nothing_and_a_dry_run_writes_nothing() {
    let h = HandMade::new();
    let mut dry = h.task();
    dry["dry_run"] = json!(true);
    let r = run_ok(&dry);
    assert!(r.changed && r.dry_run, "{}", r.msg);
    assert!(!h.f.repo.exists(), "a dry run creates no repository");
    let first = run_ok(&h.task()).backup.unwrap().id;
    let again = run_ok(&h.task());
    assert!(!again.changed, "{}", again.msg);
    assert_eq!(again.backup.unwrap().id, first);
    assert!(again.msg.contains(&first));
    let again = run_ok(&dry);
    assert!(!again.changed, "{}", again.msg);
    // The database file alone is other content: a new set.
    let mut db_only = h.task();
    db_only.as_object_mut().unwrap().remove("volume_archive");
    db_only["backup_id"] = json!("db-by-hand");
    let r = run_ok(&db_only);
    assert!(r.changed);
    assert_eq!(h.f.set_ids().len(), 2);
    assert_staging_empty(&h.f.repo);
}

#[test]
fn volume_root_archives_in_gzip_zstd_or_plain_tar_import_as_they_are() {
    let h = HandMade::new();
    for (name, flags) in [("root.tgz", "-czf"), ("root.tar.zst", "--zstd -cf"), ("root.tar", "-cf")] {
        let archive = h.f.path(name);
        let mut cmd = Command::new("tar");
        cmd.args(flags.split(' ')).arg(&archive).arg("-C").arg(&h.data).arg(".");
        assert!(cmd.status().unwrap().success());
        let repo = h.f.path(&format!("repo-{name}"));
        let r = run_ok(&json!({"operation": "import", "repository": repo, "volume_archive": archive}));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let m = r.backup.unwrap().manifest.unwrap();
        assert_eq!(m.single_volume().unwrap().content_digest, spec_digest(&h.data), "{name}");
        run_ok(&json!({"operation": "verify", "repository": repo, "deep": true}));
    }
}

#[test]
fn an_encrypted_import_holds_age_files_that_verify_with_the_key() {
    let h = HandMade::new();
    let (key, public) = keygen(h.f.tmp.path(), "key.txt");
    let mut task = h.task();
    task["encryption"] = json!({"recipients": [public]});
    let set = run_ok(&task).backup.unwrap();
    let dir = Path::new(&set.path);
    assert!(dir.join("volume.tar.gz.age").exists() && dir.join("db.tgz.age").exists());
    assert!(!dir.join("db.tgz").exists());
    run_ok(&json!({"operation": "verify", "repository": h.f.repo, "deep": true, "encryption": {"identity_file": key}}));
    assert!(!run_ok(&task).changed, "the same content, the same recipients");
}

#[test]
fn hostile_hand_made_archives_are_refused_and_nothing_is_written() {
    let h = HandMade::new();
    let file = |name: &'static [u8]| Raw { name, kind: tar::EntryType::Regular, link: b"", data: b"x", size: None };
    let dir = |name: &'static [u8]| Raw { name, kind: tar::EntryType::Directory, link: b"", data: b"", size: None };
    let cases: Vec<(&str, Vec<Raw>)> = vec![
        ("dotdot", vec![file(b"../escape")]),
        ("absolute", vec![file(b"/etc/cwbackup-test")]),
        ("through-symlink", vec![
            Raw { name: b"link", kind: tar::EntryType::Symlink, link: b"/etc", data: b"", size: None },
            file(b"link/passwd"),
        ]),
        ("outside-the-vendor-prefix", vec![
            dir(b"./connectware_service-manager/_data/"),
            file(b"./connectware_service-manager/_data/a.yml"),
            file(b"./other_volume/_data/b.yml"),
        ]),
        ("device", vec![Raw { name: b"dev", kind: tar::EntryType::Char, link: b"", data: b"", size: None }]),
    ];
    for (name, entries) in cases {
        let archive = h.f.path(&format!("{name}.tar"));
        fs::write(&archive, raw_tar(&entries)).unwrap();
        let r = run(&json!({"operation": "import", "repository": h.f.repo, "volume_archive": archive}));
        assert_eq!(kind(&r), ErrorKind::UnsafeArchive, "{name}: {}", r.stdout);
        assert!(r.result.error.unwrap().message.contains("nothing was imported"));
        assert!(h.f.set_ids().is_empty(), "{name}: no set");
        assert_staging_empty(&h.f.repo);
    }
    assert!(!Path::new("/etc/cwbackup-test").exists());
    // A database file that is not a .tgz is refused.
    let text = h.f.path("notes.txt");
    fs::write(&text, "not a database backup\n").unwrap();
    let r = run(&json!({"operation": "import", "repository": h.f.repo, "db_file": text}));
    assert_eq!(kind(&r), ErrorKind::InvalidTask, "{}", r.stdout);
}
