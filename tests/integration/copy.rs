//! copy (SPEC §10): complete sets that `to` lacks, in every direction between directories and
//! a real S3 bucket (SeaweedFS, see `weed.rs`); idempotent; never overwriting a different set
//! of the same id; never publishing a damaged one.

use std::fs;

use cwbackup::error::ErrorKind;
use serde_json::{Value, json};

use crate::common::*;
use crate::weed::Weed;

fn copy(from: &Value, to: &Value) -> Value {
    json!({"operation": "copy", "repository": from, "to": to})
}

fn ids(repo: &Value) -> Vec<String> {
    let r = run_ok(&json!({"operation": "list", "repository": repo}));
    let mut ids: Vec<String> = r.sets.unwrap().into_iter().map(|s| s.id).collect();
    ids.sort();
    ids
}

/// A directory repository with two sets.
fn two_sets() -> (Fixture, Vec<String>) {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    write(&f.vol.join("services/next.yml"), b"next\n", 0o644);
    run_ok(&f.task("backup"));
    let ids = ids(&json!(f.repo));
    assert_eq!(ids.len(), 2);
    (f, ids)
}

#[test]
fn copy_goes_every_way_and_a_second_copy_changes_nothing() {
    let Some(w) = Weed::start("copy_goes_every_way_and_a_second_copy_changes_nothing") else {
        return;
    };
    let (f, sets) = two_sets();
    let local = json!(f.repo);
    let (one, two) = (w.repo("one"), w.repo("two"));
    let back = json!(f.path("back"));
    let other = json!(f.path("other"));

    for (from, to) in [
        (&local, &one),
        (&one, &back),
        (&one, &two),
        (&local, &other),
    ] {
        let r = run_ok(&copy(from, to));
        assert!(r.changed, "{}", r.msg);
        let mut copied = r.copied.unwrap();
        copied.sort();
        assert_eq!(copied, sets, "{from} -> {to}");
        assert_eq!(ids(to), sets);
        let again = run_ok(&copy(from, to));
        assert!(!again.changed, "nothing missing: {}", again.msg);
        assert_eq!(again.copied.unwrap(), Vec::<String>::new());
    }
    // Byte for byte, the manifest included, after a round trip through two prefixes.
    for id in &sets {
        for file in ["manifest.json", "volume.tar.gz"] {
            assert_eq!(
                fs::read(f.repo.join(id).join(file)).unwrap(),
                fs::read(f.path("back").join(id).join(file)).unwrap(),
                "{id}/{file}"
            );
            assert_eq!(
                w.get(&format!("two/{id}/{file}")).unwrap(),
                fs::read(f.repo.join(id).join(file)).unwrap()
            );
        }
    }
    let v = run_ok(&json!({"operation": "verify", "repository": two, "deep": true}));
    assert!(v.findings.unwrap().is_empty());

    // backup_id picks one set; a dry run writes nothing; keep_last prunes `to`.
    let mut one_set = copy(&local, &json!(f.path("picked")));
    one_set["backup_id"] = json!(sets[0]);
    assert_eq!(run_ok(&one_set).copied.unwrap(), vec![sets[0].clone()]);
    let mut dry = copy(&local, &w.repo("dry"));
    dry["dry_run"] = json!(true);
    let r = run_ok(&dry);
    assert!(r.changed && r.dry_run);
    assert_eq!(r.copied.unwrap().len(), 2);
    assert!(
        w.keys("dry/").iter().all(|k| !k.contains("manifest")),
        "{:?}",
        w.keys("dry/")
    );
    let mut keep = copy(&local, &w.repo("kept"));
    keep["keep_last"] = json!(1);
    let r = run_ok(&keep);
    assert_eq!(r.sets.unwrap().len(), 1, "retention deleted the older set");
    assert_eq!(ids(&w.repo("kept")), vec![sets[1].clone()]);
}

#[test]
fn a_set_of_the_same_id_with_another_manifest_is_integrity_error_and_never_overwritten() {
    let Some(w) = Weed::start(
        "a_set_of_the_same_id_with_another_manifest_is_integrity_error_and_never_overwritten",
    ) else {
        return;
    };
    let a = Fixture::sample();
    let mut task = a.task("backup");
    task["backup_id"] = json!("same-id");
    run_ok(&task);
    let b = Fixture::empty();
    write(&b.vol.join("other.txt"), b"other", 0o644);
    let mut task = b.task("backup");
    task["backup_id"] = json!("same-id");
    run_ok(&task);
    let bucket = w.repo("s");
    run_ok(&copy(&json!(a.repo), &bucket));
    let before = w.get("s/same-id/manifest.json").unwrap();
    for to in [json!(a.repo), bucket] {
        let r = run(&copy(&json!(b.repo), &to));
        assert_eq!(kind(&r), ErrorKind::IntegrityError, "{}", r.stdout);
        assert!(r.result.error.unwrap().message.contains("same-id"));
    }
    assert_eq!(
        w.get("s/same-id/manifest.json").unwrap(),
        before,
        "never overwritten"
    );
}

#[test]
fn a_damaged_set_is_not_copied_and_an_encrypted_one_is_copied_without_a_key() {
    let Some(w) =
        Weed::start("a_damaged_set_is_not_copied_and_an_encrypted_one_is_copied_without_a_key")
    else {
        return;
    };
    let f = Fixture::sample();
    let (_key, public) = crate::encryption::keygen(f.tmp.path(), "key.txt");
    let mut task = f.task("backup");
    task["encryption"] = json!({"recipients": [public]});
    let id = run_ok(&task).backup.unwrap().id;
    let r = run_ok(&copy(&json!(f.repo), &w.repo("enc")));
    assert_eq!(r.copied.unwrap(), vec![id.clone()]);
    assert_eq!(
        w.get(&format!("enc/{id}/volume.tar.gz.age")).unwrap(),
        fs::read(f.repo.join(&id).join("volume.tar.gz.age")).unwrap()
    );

    let file = f.repo.join(&id).join("volume.tar.gz.age");
    let mut bytes = fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&file, bytes).unwrap();
    let r = run(&copy(&json!(f.repo), &w.repo("damaged")));
    assert_eq!(kind(&r), ErrorKind::IntegrityError, "{}", r.stdout);
    assert!(
        w.keys("damaged/").iter().all(|k| !k.contains(&id)),
        "{:?}",
        w.keys("damaged/")
    );
}
