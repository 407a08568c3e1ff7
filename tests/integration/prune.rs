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
