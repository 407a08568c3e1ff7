//! Helpers shared by the integration tests: run the real binary, read its result back into
//! the typed result (checked against the committed result schema), build sample trees, and
//! list or digest trees independently of cwbackup's own code.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use cwbackup::result::TaskResult;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_cwbackup");

/// Every secret the suite hands to cwbackup: each run's argv, stdout and stderr are scanned
/// for all of them.
pub const SECRETS: &[&str] = &[
    crate::api::PASSWORD,
    crate::api::TOKEN,
    crate::api::WRONG_PASSWORD,
    crate::weed::SECRET,
    crate::weed::WRONG_SECRET,
];

/// One run of the binary.
#[derive(Debug)]
pub struct Run {
    pub result: TaskResult,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn result_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/result.schema.json");
        let schema: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    })
}

/// Starts `cwbackup` in the background with `task` on stdin (for tests that kill it).
pub fn spawn(task: &Value) -> std::process::Child {
    start(task, &[], Stdio::null())
}

/// Starts `cwbackup` in the background with `task` on stdin, `envs` set and its stdout as
/// given (for tests that watch, pause or kill it); stderr is discarded.
pub fn start(
    task: &Value,
    envs: &[(&str, &std::ffi::OsStr)],
    stdout: Stdio,
) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(task.to_string().as_bytes())
        .unwrap();
    child
}

/// Runs `cwbackup` with `input` on stdin and checks the output contract: exactly one line of
/// JSON on stdout that validates against schemas/result.schema.json and whose `ok` matches
/// the exit code.
pub fn run_raw(input: &[u8], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary runs");
    let argv = fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for secret in SECRETS {
        for (place, text) in [
            ("argv", String::from_utf8_lossy(&argv).as_ref()),
            ("stdout", &stdout),
            ("stderr", &stderr),
        ] {
            assert!(
                !text.contains(secret),
                "a secret leaked into {place}: {text}"
            );
        }
    }
    assert!(
        stdout.ends_with('\n') && stdout.matches('\n').count() == 1,
        "one result line, got {stdout:?}"
    );
    let value: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    let errors: Vec<String> = result_validator()
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "result does not match the schema: {errors:?}\n{stdout}"
    );
    let result: TaskResult = serde_json::from_value(value).expect("the result reads back typed");
    let code = out.status.code().expect("exited, not killed");
    assert_eq!(result.ok, code == 0, "ok and exit code agree: {stdout}");
    assert_eq!(
        result.ok,
        result.error.is_none(),
        "error is present exactly when not ok"
    );
    Run {
        result,
        code,
        stdout,
        stderr,
    }
}

/// Runs a task on a thread and fails the test if it has not ended within `limit` (so that a
/// hang is a failure, not a stuck suite); returns the run and how long it took.
pub fn run_within(task: &Value, limit: std::time::Duration) -> (Run, std::time::Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let input = task.to_string();
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let r = run_raw(input.as_bytes(), &[]);
        let _ = tx.send((r, started.elapsed()));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the task did not end within {limit:?}: it hangs"))
}

pub fn run(task: &Value) -> Run {
    run_raw(task.to_string().as_bytes(), &[])
}

/// Runs and insists on success.
/// The error kind of a run that must have failed.
pub fn kind(r: &Run) -> cwbackup::error::ErrorKind {
    r.result
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure: {}", r.stdout))
        .kind
}

pub fn run_ok(task: &Value) -> TaskResult {
    let r = run(task);
    assert!(
        r.result.ok,
        "task failed: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    r.result
}

/// A temporary volume and repository.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub vol: PathBuf,
    pub repo: PathBuf,
}

impl Fixture {
    /// An empty volume directory and a repository path that does not exist yet.
    pub fn empty() -> Fixture {
        Fixture::empty_in(&std::env::temp_dir())
    }

    /// An empty fixture under `dir` (e.g. /dev/shm, where creating files is cheap).
    pub fn empty_in(dir: &Path) -> Fixture {
        let tmp = tempfile::tempdir_in(dir).unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir(&vol).unwrap();
        let repo = tmp.path().join("repo");
        Fixture { tmp, vol, repo }
    }

    /// A volume holding [`sample_tree`].
    pub fn sample() -> Fixture {
        let f = Fixture::empty();
        sample_tree(&f.vol);
        f
    }

    /// A task for `operation` on this fixture's repository and volume.
    pub fn task(&self, operation: &str) -> Value {
        json!({"operation": operation, "repository": self.repo, "volume": {"path": self.vol}})
    }

    /// Ids of the complete sets, newest first, as `list` reports them.
    pub fn set_ids(&self) -> Vec<String> {
        let r = run_ok(&json!({"operation": "list", "repository": self.repo}));
        r.sets.unwrap().into_iter().map(|s| s.id).collect()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

pub fn write(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with what a service-manager volume may hold, and the corners of the tar format:
/// modes (setuid included), empty and read-only directories, relative and dangling symlinks,
/// names longer than ustar's 100 and 255 bytes, a long symlink target, non-ASCII names, a
/// binary file, and an old mtime.
pub fn sample_tree(root: &Path) {
    write(
        &root.join("services/opcua-server.yml"),
        b"description: OPC UA\nresources: {}\n",
        0o644,
    );
    write(&root.join("services/secret.env"), b"TOKEN=abc\n", 0o600);
    write(&root.join("bin/run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&root.join("bin/setuid"), b"x", 0o4755);
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o750)).unwrap();
    write(&root.join("readonly/inside.txt"), b"kept", 0o444);
    fs::set_permissions(root.join("readonly"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::create_dir_all(root.join("links")).unwrap();
    std::os::unix::fs::symlink("../services/opcua-server.yml", root.join("links/rel")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("links/dangling")).unwrap();
    let long_target = format!("{}/x", "t".repeat(120));
    std::os::unix::fs::symlink(&long_target, root.join("links/long-target")).unwrap();
    let deep = root.join(format!("{}/{}", "d".repeat(90), "e".repeat(90)));
    write(
        &deep.join("file-in-a-long-path.txt"),
        b"ustar prefix split",
        0o644,
    );
    let very = root.join(format!("{}/{}", "v".repeat(200), "w".repeat(120)));
    write(&very.join("needs-pax.txt"), b"pax path", 0o644);
    write(&root.join("Übersicht ✓.txt"), "grüße".as_bytes(), 0o644);
    let binary: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write(&root.join("data/blob.bin"), &binary, 0o640);
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(root.join("services/opcua-server.yml"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// One entry of an independent listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub kind: char,
    pub mode: u32,
    pub size: u64,
    /// sha256 of content or symlink target, hex; empty for directories.
    pub hash: String,
    pub mtime: i64,
}

/// Lists a tree with std alone: path → (type, mode, size, hash, mtime).
pub fn listing(root: &Path) -> BTreeMap<Vec<u8>, Listed> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<Vec<u8>, Listed>) {
        for item in fs::read_dir(root.join(rel)).unwrap() {
            let item = item.unwrap();
            let rel = rel.join(item.file_name());
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let key = rel.as_os_str().as_bytes().to_vec();
            let ft = meta.file_type();
            let (kind, mode, size, hash) = if ft.is_symlink() {
                let t = fs::read_link(root.join(&rel)).unwrap();
                let t = t.as_os_str().as_bytes();
                ('l', 0o777, t.len() as u64, hex(&Sha256::digest(t)))
            } else if ft.is_dir() {
                walk(root, &rel, out);
                ('d', meta.mode() & 0o7777, 0, String::new())
            } else {
                let content = fs::read(root.join(&rel)).unwrap();
                (
                    'f',
                    meta.mode() & 0o7777,
                    content.len() as u64,
                    hex(&Sha256::digest(&content)),
                )
            };
            out.insert(
                key,
                Listed {
                    kind,
                    mode,
                    size,
                    hash,
                    mtime: meta.mtime(),
                },
            );
        }
    }
    walk(root, Path::new(""), &mut out);
    out
}

/// SPEC §5's content digest, written again from the spec text, over a listing.
pub fn spec_digest(root: &Path) -> String {
    spec_digest_of(&listing(root))
}

/// SPEC §5's content digest of the entries of a listing (e.g. one with entries left out).
pub fn spec_digest_of(entries: &BTreeMap<Vec<u8>, Listed>) -> String {
    let mut l = Vec::new();
    for (path, e) in entries.clone() {
        let hash = if e.kind == 'd' {
            "-".to_string()
        } else {
            e.hash.clone()
        };
        l.extend_from_slice(format!("{} {:o} {} {} ", e.kind, e.mode, e.size, hash).as_bytes());
        l.extend_from_slice(&path);
        l.push(b'\n');
    }
    format!("sha256:{}", hex(&Sha256::digest(&l)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Extracts an archive with GNU tar.
pub fn gnu_tar_extract(archive: &Path, dest: &Path, extra: &[&str]) {
    fs::create_dir_all(dest).unwrap();
    let out = Command::new("tar")
        .args(extra)
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GNU tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The work directory a restore into `vol` keeps while it stages and swaps (`journal.json`,
/// `staged/`, `old/`, `holder.json`): `<volume>/.cwbackup-work/`, on the volume's own file
/// system. The one place the tests name it.
pub fn restore_work_dir(vol: &Path) -> PathBuf {
    vol.join(".cwbackup-work")
}

/// The journal of a restore's swap into `vol` (present exactly while a swap is under way).
pub fn restore_journal(vol: &Path) -> PathBuf {
    restore_work_dir(vol).join("journal.json")
}

/// Asserts that the repository's `.staging/` holds nothing (a failed or finished task leaves
/// no leftovers). A repository never created counts as empty.
pub fn assert_staging_empty(repo: &Path) {
    let leftovers: Vec<PathBuf> = match fs::read_dir(repo.join(".staging")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", repo.join(".staging").display()),
    };
    assert!(leftovers.is_empty(), "leftovers in .staging: {leftovers:?}");
}

/// The one set directory in a repository (panics unless exactly one).
pub fn only_set(repo: &Path) -> PathBuf {
    let sets: Vec<PathBuf> = fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().as_bytes().starts_with(b"."))
        .collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
    sets[0].clone()
}

/// Fills `dir` with `count` files of `size` bytes of incompressible data.
pub fn big_tree(dir: &Path, count: usize, size: usize) {
    let mut state: u64 = 0x9E3779B97F4A7C15;
    for i in 0..count {
        let mut data = vec![0u8; size];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        write(&dir.join(format!("d{}/f{i}.bin", i % 10)), &data, 0o644);
    }
}
