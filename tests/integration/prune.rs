use serde_json::json;

use crate::common::*;

fn three_sets(f: &Fixture) -> Vec<String> {
    let mut task = f.task("backup");
    task["force"] = json!(true);
    for _ in 0..3 {
        run_ok(&task);
    }
    f.set_ids()
}

#[test]
fn keeps_the_newest_sets() {
    let f = Fixture::sample();
    let ids = three_sets(&f);
    let r =
        run_ok(&json!({"operation": "prune", "repository": f.repo, "keep_last": 1, "diff": true}));
    assert!(r.changed);
    assert_eq!(r.sets.unwrap().len(), 2);
    assert_eq!(f.set_ids(), vec![ids[0].clone()]);
    assert!(r.diff.is_some());
    let again = run_ok(&json!({"operation": "prune", "repository": f.repo, "keep_last": 1}));
    assert!(!again.changed, "the only set is never deleted");
    assert_eq!(f.set_ids().len(), 1);
}

#[test]
fn dry_run_names_what_would_go_and_deletes_nothing() {
    let f = Fixture::sample();
    let ids = three_sets(&f);
    let r = run_ok(
        &json!({"operation": "prune", "repository": f.repo, "keep_last": 2, "dry_run": true}),
    );
    assert!(r.changed && r.dry_run);
    assert_eq!(
        r.sets
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        vec![ids[2].clone()]
    );
    assert_eq!(f.set_ids(), ids);
}

/// Rewrites a set's manifest `created_at` (as a manifest restored from a host with another
/// clock would carry it).
fn set_created_at(f: &Fixture, id: &str, created_at: &str) {
    let path = f.repo.join(id).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["created_at"] = json!(created_at);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn retention_never_deletes_the_set_the_backup_just_wrote_whatever_other_clocks_say() {
    let f = Fixture::sample();
    let first = run_ok(&f.task("backup")).backup.unwrap().id;
    // The older set claims to be from the far future.
    set_created_at(&f, &first, "2999-01-01T00:00:00Z");
    write(&f.vol.join("new-file"), b"changed", 0o644);
    let mut task = f.task("backup");
    task["keep_last"] = json!(1);
    let r = run_ok(&task);
    let written = r.backup.unwrap().id;
    assert!(r.changed);
    assert!(
        f.set_ids().contains(&written),
        "the set just written was deleted: {:?}",
        f.set_ids()
    );
    // A re-run keeps the set it names too (the set that claims the future lists as newest,
    // so idempotency compares with it and writes again: never deleting its own set).
    let again = run_ok(&task).backup.unwrap().id;
    assert!(f.set_ids().contains(&again), "{:?}", f.set_ids());
}

#[test]
fn an_unchanged_backup_with_keep_last_still_applies_retention() {
    let f = Fixture::sample();
    three_sets(&f);
    let newest = f.set_ids()[0].clone();
    let mut task = f.task("backup");
    task["keep_last"] = json!(1);
    let r = run_ok(&task);
    assert_eq!(r.backup.unwrap().id, newest, "nothing changed: no new set");
    assert_eq!(r.sets.unwrap().len(), 2);
    assert!(r.changed, "retention deleted sets");
    assert_eq!(f.set_ids(), vec![newest]);
    assert!(!run_ok(&task).changed, "the second run changes nothing");
}

#[test]
fn prune_after_a_restore_keeps_regular_sets_and_safety_sets_apart() {
    let f = Fixture::sample();
    let ids = three_sets(&f);
    // Two restores, each writing a pre-restore safety set.
    for _ in 0..2 {
        write(&f.vol.join("services/opcua-server.yml"), b"edited", 0o644);
        run_ok(&f.task("restore"));
    }
    let all = f.set_ids();
    let safety: Vec<&String> = all
        .iter()
        .filter(|id| id.starts_with("pre-restore-"))
        .collect();
    assert_eq!(safety.len(), 2, "{all:?}");
    let r = run_ok(
        &json!({"operation": "prune", "repository": f.repo, "keep_last": 1,
                           "keep_safety": 1}),
    );
    let left = f.set_ids();
    assert_eq!(r.sets.unwrap().len(), 3, "{left:?}");
    assert!(
        left.contains(&ids[0]),
        "the newest regular set is kept: {left:?}"
    );
    assert!(
        left.contains(safety[0]),
        "the newest safety set is kept: {left:?}"
    );
    assert_eq!(left.len(), 2, "{left:?}");
    // Default keep_safety (3): safety sets do not crowd out regular ones.
    let f2 = Fixture::sample();
    let ids2 = three_sets(&f2);
    write(&f2.vol.join("services/opcua-server.yml"), b"edited", 0o644);
    run_ok(&f2.task("restore"));
    run_ok(&json!({"operation": "prune", "repository": f2.repo, "keep_last": 2}));
    let left2 = f2.set_ids();
    assert!(
        left2.contains(&ids2[0]) && left2.contains(&ids2[1]),
        "{left2:?}"
    );
    assert_eq!(left2.len(), 3, "{left2:?}");
}

#[test]
fn keep_safety_without_keep_last_is_refused() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["keep_safety"] = json!(1);
    let r = run(&task);
    assert_eq!(r.code, 2);
    assert!(r.result.error.unwrap().message.contains("keep_last"));
}
