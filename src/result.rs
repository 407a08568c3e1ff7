//! The result: the one JSON line cwbackup prints on standard output.
//!
//! This file is the wire format, documented in one place; `schemas/result.schema.json` is
//! generated from it. Every run prints exactly one [`TaskResult`], on success and on failure.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::repository::manifest::Manifest;
use crate::task::Operation;

/// The outcome of one cwbackup task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "cwbackup result")]
pub struct TaskResult {
    /// The task succeeded (exit code 0). When false, `error` says why.
    pub ok: bool,
    /// Something was written, deleted or restored (or, in a dry run, would be).
    pub changed: bool,
    /// The operation that ran; null when the task could not be read.
    pub operation: Option<Operation>,
    /// This was a dry run (check mode): nothing was changed.
    pub dry_run: bool,
    /// One human sentence saying what happened.
    pub msg: String,
    /// The backup set that was written, restored, or found unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<SetRef>,
    /// restore: the `pre-restore-…` set that holds the state from before the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_backup: Option<SetRef>,
    /// What happened to the volume half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOutcome>,
    /// What happened to the database half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<DbOutcome>,
    /// backup, restore: one entry per component written, found unchanged or restored; verify:
    /// the components of the named set, or else of the newest set that is not a safety set.
    /// (`volume` and `db` above repeat the components of those names, for single-volume
    /// playbooks.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<ComponentOutcome>>,
    /// list: the complete sets, newest first; prune, and backup or copy with `keep_last`: the
    /// sets deleted (or that would be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sets: Option<Vec<SetSummary>>,
    /// copy: the ids of the sets copied to `to` (or, in a dry run, that would be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied: Option<Vec<String>>,
    /// verify: every problem found, in every set checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<Finding>>,
    /// installation with `quiesce: stop`: the containers this run stopped and started again
    /// (a dry run: those it would stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    /// installation with `quiesce: stop`: how long the containers were stopped, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Connectware must be restarted (and Admin-UI sessions renewed) to use what was restored.
    pub restart_required: bool,
    /// Before and after, when the task asked for `diff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// Things the operator should know that did not stop the task.
    pub warnings: Vec<String>,
    /// Why the task failed; present exactly when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    /// Wall-clock time of the whole task in milliseconds.
    pub duration_ms: u64,
}

/// A backup set named in a result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRef {
    /// The set's id (its directory name).
    pub id: String,
    /// Where the set is (its directory).
    pub path: String,
    /// The set's manifest (in a dry run, the one that would be written, without checksums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

/// What happened to the volume half.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeOutcome {
    /// The volume half was written (backup) or the live volume was changed (restore).
    pub changed: bool,
    /// The volume directory.
    pub path: String,
    /// Entries below the volume root.
    pub files: u64,
    /// Sum of the file sizes in bytes.
    pub bytes: u64,
    /// The volume's content digest (SPEC §5).
    pub content_digest: String,
}

/// What happened to one component.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentOutcome {
    /// The component's name (`volume`, a volume's name, `files`, `db`).
    pub name: String,
    /// `volume`, `files` or `db`.
    pub kind: String,
    /// The component was written (backup) or the live state changed (restore).
    pub changed: bool,
    /// Entries below the tree's root (trees only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Sum of the file sizes in bytes (trees), or the file's size (db).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The component's content digest (SPEC §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<String>,
    /// The live directory (trees only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The server's id of the database backup (db only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The server's last status message (db only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
}

/// What happened to the database half.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbOutcome {
    /// A database backup was taken (backup) or restored (restore).
    pub changed: bool,
    /// The server's id of the database backup, `<version>_<ISO time>`.
    pub backup_id: Option<String>,
    /// The server's last status message.
    pub status_message: Option<String>,
}

/// One backup set in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSummary {
    /// The set's id.
    pub id: String,
    /// When the set was made (RFC 3339, UTC).
    pub created_at: String,
    /// Bytes on disk of the set's files.
    pub bytes: u64,
    /// The Connectware version the set was taken from, if known.
    pub connectware_version: Option<String>,
    /// Seconds since the set was made.
    pub age_s: u64,
    /// The names of the set's components, e.g. `volume`, `db`.
    pub components: Vec<String>,
}

/// One problem found by verify.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// `error` makes the set unusable; `warning` is worth knowing (e.g. drift).
    pub level: Level,
    /// The set the finding is about.
    pub set: String,
    /// The part of the set: `manifest`, a component's name (`volume`, `db`, a volume's name),
    /// or `live`.
    pub component: String,
    /// What is wrong.
    pub message: String,
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The set cannot be trusted.
    Error,
    /// Worth knowing; the set is intact.
    Warning,
}

/// Before and after, for Ansible's diff mode.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Diff {
    /// The state before the task.
    pub before: Value,
    /// The state after the task (or that a dry run would leave).
    pub after: Value,
}

impl TaskResult {
    /// A successful result with nothing else filled in.
    pub fn ok(operation: Operation, dry_run: bool, changed: bool, msg: impl Into<String>) -> Self {
        TaskResult {
            ok: true,
            changed,
            operation: Some(operation),
            dry_run,
            msg: msg.into(),
            backup: None,
            safety_backup: None,
            volume: None,
            db: None,
            components: None,
            sets: None,
            copied: None,
            findings: None,
            containers: None,
            downtime_ms: None,
            restart_required: false,
            diff: None,
            warnings: Vec::new(),
            error: None,
            duration_ms: 0,
        }
    }

    /// A failed result carrying `error`.
    pub fn failed(operation: Option<Operation>, dry_run: bool, error: Error) -> Self {
        let msg = error.message.clone();
        TaskResult {
            ok: false,
            error: Some(error),
            operation,
            ..TaskResult::ok(Operation::List, dry_run, false, msg)
        }
    }
}

/// The JSON Schema of the result.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(TaskResult)).expect("a schema is JSON")
}
