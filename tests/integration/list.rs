use std::fs;

use cwbackup::error::ErrorKind;
use serde_json::json;

use crate::common::*;

#[test]
fn lists_complete_sets_newest_first_with_size_and_age() {
    let f = Fixture::sample();
    let mut task = f.task("backup");
    task["force"] = json!(true);
    let first = run_ok(&task).backup.unwrap().id;
    let second = run_ok(&task).backup.unwrap().id;
    fs::create_dir(f.repo.join("incomplete")).unwrap();
    let r = run_ok(&json!({"operation": "list", "repository": f.repo}));
    assert!(!r.changed);
    let sets = r.sets.unwrap();
    assert_eq!(
        sets.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![second, first]
    );
    assert!(sets[0].bytes > 0);
    assert!(sets[0].age_s < 600);
    assert_eq!(sets[0].components, vec!["volume"]);
    assert!(
        r.warnings.iter().any(|w| w.contains("incomplete")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn a_missing_repository_is_a_repository_error() {
    let f = Fixture::empty();
    let r = run(&json!({"operation": "list", "repository": f.repo}));
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::RepositoryError);
    assert!(e.message.contains("does not exist"), "{}", e.message);
}
