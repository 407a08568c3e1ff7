//! Encryption at rest (SPEC §11): sets encrypted with age to X25519 recipients, read with an
//! identity file; keys made with Debian's `age-keygen`, a set recovered by hand with `age -d`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cwbackup::error::ErrorKind;
use serde_json::{Value, json};

use crate::api::Api;
use crate::common::*;

/// A new age identity made by `age-keygen -o`: its file and its public key.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let out = Command::new("age-keygen").arg("-o").arg(&file).output().expect("age-keygen runs (apt-get install age)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = Command::new("age-keygen").arg("-y").arg(&file).output().unwrap();
    (file, String::from_utf8(public.stdout).unwrap().trim().to_string())
}

/// `task` with `encryption` set.
fn with(task: &Value, encryption: Value) -> Value {
    let mut t = task.clone();
    t["encryption"] = encryption;
    t
}

/// Every file name under a set directory.
fn files_of(set: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(set).unwrap() {
        let e = e.unwrap();
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    out
}

#[test]
fn an_encrypted_set_holds_only_age_files_and_round_trips_both_halves() {
    let a = Api::default();
    let (key, public) = keygen(a.f.tmp.path(), "key.txt");
    let enc = json!({"recipients": [public]});
    let r = run_ok(&with(&a.task("backup"), enc.clone()));
    let set = r.backup.unwrap();
    let dir = PathBuf::from(&set.path);
    assert_eq!(files_of(&dir), ["db.tgz.age", "manifest.json", "volume.tar.gz.age"]);
    let m = set.manifest.unwrap();
    let e = m.encryption.as_ref().unwrap();
    assert_eq!((e.scheme.as_str(), e.recipients.clone()), ("age", vec![public.clone()]));
    assert!(m.components.iter().all(|c| c.file.ends_with(".age")));
    // What Connectware sent, byte for byte, once decrypted by Debian's age.
    let db = Command::new("age").arg("-d").arg("-i").arg(&key).arg(dir.join("db.tgz.age")).output().unwrap();
    assert!(db.status.success(), "{}", String::from_utf8_lossy(&db.stderr));
    assert_eq!(db.stdout, a.emu.backup_file().unwrap());
    // The same content again: no new set, though the stored bytes differ (a new file key).
    let again = run_ok(&with(&a.task("backup"), enc));
    assert!(!again.changed, "{}", again.msg);
    assert_eq!(again.backup.unwrap().id, set.id);

    // Change both halves, then restore: the set's tree and database come back.
    let before = listing(&a.f.vol);
    write(&a.f.vol.join("services/new.yml"), b"x", 0o644);
    fs::remove_file(a.f.vol.join("services/a.yml")).ok();
    let mut db = a.emu.db();
    db["users"].as_array_mut().unwrap().push(json!({"username": "intruder", "roles": []}));
    a.emu.set_db(db);
    let mut restore = with(&a.task("restore"), json!({"identity_file": key}));
    restore["backup_id"] = json!(set.id);
    let r = run_ok(&restore);
    assert!(r.changed);
    assert_eq!(listing(&a.f.vol), before);
    assert!(!a.emu.db().to_string().contains("intruder"), "the database was restored");
    // The safety set holds the state before, encrypted to the same recipients.
    let safety = r.safety_backup.unwrap();
    let sm = safety.manifest.unwrap();
    assert_eq!(sm.encryption.unwrap().recipients, vec![public]);
    assert_eq!(files_of(Path::new(&safety.path)), ["db.tgz.age", "manifest.json", "volume.tar.gz.age"]);
    // Deep verify reads every set with the key.
    run_ok(&json!({"operation": "verify", "repository": a.f.repo, "deep": true, "encryption": {"identity_file": key}}));
}

#[test]
fn no_key_or_a_wrong_key_is_encryption_error_naming_the_recipients_and_nothing_is_touched() {
    let a = Api::default();
    let (_, public) = keygen(a.f.tmp.path(), "key.txt");
    let (other, _) = keygen(a.f.tmp.path(), "other.txt");
    run_ok(&with(&a.task("backup"), json!({"recipients": [public]})));
    write(&a.f.vol.join("services/new.yml"), b"x", 0o644);
    let before = listing(&a.f.vol);
    for enc in [None, Some(json!({"identity_file": other}))] {
        let task = match &enc {
            Some(e) => with(&a.task("restore"), e.clone()),
            None => a.task("restore"),
        };
        let r = run(&task);
        assert_eq!(kind(&r), ErrorKind::EncryptionError, "{}", r.stdout);
        let e = r.result.error.unwrap();
        assert!(e.message.contains(&public), "{}", e.message);
        assert_eq!(e.details["recipients"], json!([public]));
        assert_eq!(listing(&a.f.vol), before, "the volume is untouched");
        assert_eq!(a.f.set_ids().len(), 1, "no safety set");
        assert_eq!(a.emu.count("POST", "/api/maintenance/db/backup"), 1, "no server-side backup");
        assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 0);
        // A deep verify and a comparison with the live volume need the key too.
        for extra in [json!({"deep": true}), json!({"against_live": true})] {
            let mut v = a.f.task("verify");
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            if let Some(e) = &enc {
                v["encryption"] = e.clone();
            }
            assert_eq!(kind(&run(&v)), ErrorKind::EncryptionError);
        }
    }
}

#[test]
fn checksum_verify_list_and_prune_need_no_key() {
    let f = Fixture::sample();
    let (key, public) = keygen(f.tmp.path(), "key.txt");
    let enc = json!({"recipients": [public]});
    run_ok(&with(&f.task("backup"), enc.clone()));
    write(&f.vol.join("services/new.yml"), b"x", 0o644);
    run_ok(&with(&f.task("backup"), enc));
    let v = run_ok(&json!({"operation": "verify", "repository": f.repo}));
    assert!(v.msg.contains("checksums only"), "{}", v.msg);
    assert_eq!(v.warnings.len(), 2, "{:?}", v.warnings);
    let with_key = run_ok(&json!({"operation": "verify", "repository": f.repo, "encryption": {"identity_file": key}}));
    assert!(with_key.warnings.is_empty(), "{:?}", with_key.warnings);
    assert_eq!(f.set_ids().len(), 2);
    run_ok(&json!({"operation": "prune", "repository": f.repo, "keep_last": 1}));
    assert_eq!(f.set_ids().len(), 1);
}

/// Damages the set's volume archive with `damage`, then checks that restore and verify call
/// it an integrity error and that the volume stays as it was.
fn damaged_is_integrity_error(damage: impl Fn(&Path)) {
    let f = Fixture::sample();
    let (key, public) = keygen(f.tmp.path(), "key.txt");
    run_ok(&with(&f.task("backup"), json!({"recipients": [public]})));
    damage(&only_set(&f.repo).join("volume.tar.gz.age"));
    write(&f.vol.join("services/new.yml"), b"x", 0o644);
    let before = listing(&f.vol);
    let key = json!({"identity_file": key});
    let r = run(&with(&f.task("restore"), key.clone()));
    assert_eq!(kind(&r), ErrorKind::IntegrityError, "{}", r.stdout);
    assert_eq!(listing(&f.vol), before, "the volume is untouched");
    assert!(!restore_work_dir(&f.vol).exists());
    let v = run(&json!({"operation": "verify", "repository": f.repo, "encryption": key}));
    assert_eq!(kind(&v), ErrorKind::IntegrityError, "{}", v.stdout);
}

#[test]
fn a_truncated_age_file_is_integrity_error_before_the_volume_is_touched() {
    damaged_is_integrity_error(|file| {
        let len = fs::metadata(file).unwrap().len();
        fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len - 100).unwrap();
    });
    damaged_is_integrity_error(|file| {
        fs::OpenOptions::new().write(true).open(file).unwrap().set_len(20).unwrap();
    });
}

#[test]
fn a_flipped_byte_in_an_age_file_is_integrity_error_before_the_volume_is_touched() {
    damaged_is_integrity_error(|file| {
        let mut bytes = fs::read(file).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        fs::write(file, bytes).unwrap();
    });
}

#[test]
fn debians_age_cli_recovers_the_volume_by_hand() {
    let f = Fixture::sample();
    let (key, public) = keygen(f.tmp.path(), "key.txt");
    run_ok(&with(&f.task("backup"), json!({"recipients": [public]})));
    let out = f.path("by-hand");
    fs::create_dir(&out).unwrap();
    // As README says: age -d -i key.txt volume.tar.gz.age | tar xzf -
    let status = Command::new("sh")
        .arg("-c")
        .arg("age -d -i \"$1\" \"$2\" | tar xzf - -C \"$3\"")
        .arg("sh")
        .arg(&key)
        .arg(only_set(&f.repo).join("volume.tar.gz.age"))
        .arg(&out)
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(listing(&out), listing(&f.vol));
    assert_eq!(spec_digest(&out), spec_digest(&f.vol));
}

#[test]
fn a_change_of_recipients_writes_a_new_set() {
    let f = Fixture::sample();
    let (_, a) = keygen(f.tmp.path(), "a.txt");
    let (_, b) = keygen(f.tmp.path(), "b.txt");
    let backup = |enc: Option<Value>| {
        let task = match enc {
            Some(e) => with(&f.task("backup"), e),
            None => f.task("backup"),
        };
        run_ok(&task).changed
    };
    assert!(backup(Some(json!({"recipients": [a]}))));
    assert!(!backup(Some(json!({"recipients": [a]}))));
    assert!(backup(Some(json!({"recipients": [a, b]}))), "a recipient added");
    assert!(!backup(Some(json!({"recipients": [b, a]}))), "the same recipients in another order");
    let file = f.path("recipients.txt");
    fs::write(&file, format!("# the operators\n{b}\n\n  {a}  \n")).unwrap();
    assert!(!backup(Some(json!({"recipients_file": file}))), "the same, from a file");
    assert!(backup(None), "no longer encrypted");
    assert!(backup(Some(json!({"recipients": [b]}))));
    assert_eq!(f.set_ids().len(), 4);
}

#[test]
fn keys_are_checked_as_the_task_is_read() {
    let f = Fixture::sample();
    let (key, public) = keygen(f.tmp.path(), "key.txt");
    let (other, _) = keygen(f.tmp.path(), "other.txt");
    let invalid = |task: Value, says: &str| {
        let r = run(&task);
        assert_eq!(r.code, 2, "{}", r.stdout);
        let message = r.result.error.unwrap().message;
        assert!(message.contains(says), "{says}: {message}");
        let secret = fs::read_to_string(&key).unwrap();
        let secret = secret.lines().find(|l| l.starts_with("AGE-SECRET-KEY")).unwrap();
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    };
    invalid(with(&f.task("backup"), json!({"recipients": ["age1nope"]})), "/encryption/recipients/0");
    invalid(with(&f.task("backup"), json!({"recipients": [public], "recipients_file": key})), "not both");
    invalid(with(&f.task("backup"), json!({"recipients_file": key})), "line 3");
    invalid(with(&f.task("backup"), json!({"identity_file": key})), "needs `recipients`");
    invalid(with(&f.task("restore"), json!({"recipients": [public]})), "apply to a backup");
    let mut verify = with(&f.task("backup"), json!({"recipients": [public]}));
    verify["verify"] = json!(true);
    invalid(verify.clone(), "needs `identity_file`");
    invalid(with(&verify, json!({"recipients": [public], "identity_file": other})), "opens none");
    invalid(with(&json!({"operation": "list", "repository": f.repo}), json!({"identity_file": key})), "/encryption");
    fs::write(f.path("bad.txt"), "AGE-SECRET-KEY-1ABCDEFG\n").unwrap();
    invalid(with(&f.task("restore"), json!({"identity_file": f.path("bad.txt")})), "line 1");
    // With the identity, `verify` reads the new set back before publishing it.
    let r = run_ok(&with(&verify, json!({"recipients": [public], "identity_file": key})));
    assert!(r.changed);
}

#[test]
fn the_database_upload_of_an_encrypted_set_is_the_file_connectware_sent() {
    // The emulator parses what it is sent: encrypted bytes, or a wrong length, would fail.
    let a = Api::default();
    let (key, public) = keygen(a.f.tmp.path(), "key.txt");
    run_ok(&with(&a.task("backup"), json!({"recipients": [public]})));
    let mut db = a.emu.db();
    db["users"].as_array_mut().unwrap().push(json!({"username": "later", "roles": []}));
    a.emu.set_db(db);
    let r = run_ok(&with(&a.task("restore"), json!({"identity_file": key})));
    assert!(r.db.unwrap().changed);
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 1);
    assert!(!a.emu.db().to_string().contains("later"));
}
