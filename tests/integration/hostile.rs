//! Hostile input never panics and always ends in a documented error: tasks, manifests and
//! archives, random and mutated (proptest). `fuzz/` has cargo-fuzz targets for longer runs.

use std::fs;
use std::io::{Read, Write};

use cwbackup::error::ErrorKind;
use cwbackup::repository::manifest::Manifest;
use cwbackup::volume::extract::{Limits, read_archive};
use cwbackup::layers::pgzip;
use cwbackup::volume::{archive, tree};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::*;

/// 5 MiB of text-like data: two gzip members.
fn gzip_sample() -> &'static [u8] {
    static DATA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        (0..5u32 << 20)
            .map(|i| {
                b"sensor: line-4\n"[(i as usize) % 15]
                    ^ ((i.wrapping_mul(2_654_435_761) >> 29) as u8)
            })
            .collect()
    })
}

/// `gzip_sample` as cwbackup writes it.
fn our_gzip() -> &'static [u8] {
    static GZ: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    GZ.get_or_init(|| {
        let mut w = pgzip::ParGzWriter::new(Vec::new(), 6, 2).unwrap();
        w.write_all(gzip_sample()).unwrap();
        w.finish().unwrap()
    })
}

/// Keys and values from the task's own vocabulary, so that generated tasks get past the first
/// checks and reach the deeper ones.
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "operation",
        "repository",
        "volume",
        "api",
        "path",
        "docker_volume",
        "url",
        "password",
        "token",
        "backup_id",
        "keep_last",
        "force",
        "deep",
        "restart",
        "timeout_s",
        "_ansible_x",
        "unknown",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "backup",
            "restore",
            "verify",
            "list",
            "prune",
            "/r",
            "https://x",
            "../x",
            ""
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// A small, valid, uncompressed archive of a sample tree, and its limits.
fn valid_tar() -> (Vec<u8>, Limits) {
    let f = Fixture::empty();
    write(&f.vol.join("a/b.txt"), b"hello", 0o644);
    write(&f.vol.join("c.bin"), &[9u8; 3000], 0o600);
    std::os::unix::fs::symlink("a/b.txt", f.vol.join("link")).unwrap();
    let entries = tree::scan(&f.vol).unwrap();
    let mut out = Vec::new();
    let w = archive::write_tar(&f.vol, &entries, &mut out).unwrap();
    (
        out,
        Limits {
            max_bytes: w.expanded_bytes,
            max_entries: w.files,
        },
    )
}

/// A set with both halves, made once by the binary against the emulator: its directory and
/// its manifest.
fn real_set() -> (std::path::PathBuf, Value) {
    static SET: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf, Value)> =
        std::sync::OnceLock::new();
    let (_, dir, m) = SET.get_or_init(|| {
        let a = crate::api::Api::default();
        run_ok(&a.task("backup"));
        let dir = only_set(&a.f.repo);
        let keep = tempfile::tempdir().unwrap();
        let copy = keep.path().join("set");
        fs::create_dir(&copy).unwrap();
        for item in fs::read_dir(&dir).unwrap() {
            let item = item.unwrap();
            fs::copy(item.path(), copy.join(item.file_name())).unwrap();
        }
        let m: Value =
            serde_json::from_slice(&fs::read(copy.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["components"][0]["kind"], "volume", "{m}");
        assert_eq!(m["components"][1]["kind"], "db", "{m}");
        (keep, copy, m)
    });
    (dir.clone(), m.clone())
}

/// Every refusal of the set `id` in `repo` by the code that reads sets, as messages: parsing,
/// the repository scan, the checksums, the full read of the volume archive, the database file.
fn refusals_of(repo: &std::path::Path, dir: &std::path::Path, id: &str) -> Vec<String> {
    use cwbackup::ops::check;
    use cwbackup::repository::{Repository, check::checksums, manifest::Kind};
    let mut out = Vec::new();
    let manifest = match Manifest::from_slice(&fs::read(dir.join("manifest.json")).unwrap()) {
        Ok(m) => m,
        Err(message) => return vec![message],
    };
    let (sets, broken) = Repository::open_dir(repo).unwrap().scan().unwrap();
    out.extend(broken.into_iter().filter(|b| b.id == id).map(|b| b.problem));
    if !sets.iter().any(|s| s.id == id) && out.is_empty() {
        out.push(String::new()); // refused without a message: caught by the caller
    }
    let open = |file: &str| -> std::io::Result<Box<dyn Read + Send>> {
        if !cwbackup::repository::manifest::safe_file_name(file) {
            return Err(std::io::Error::other(format!("unsafe file name {file:?}")));
        }
        Ok(Box::new(fs::File::open(dir.join(file))?))
    };
    out.extend(checksums(open, &manifest).into_iter().map(|p| p.message));
    let stop = std::sync::atomic::AtomicBool::new(false);
    for c in &manifest.components {
        match &c.kind {
            Kind::Volume(t) | Kind::Files(t) => match check::tree(open(&c.file), cwbackup::layers::Opening::Plain, c, t, None, &stop) {
                Ok((_, problems)) => out.extend(problems.into_iter().map(|p| p.message)),
                Err(e) => out.push(e.message),
            },
            Kind::Db(_) => out.extend(check::db(open(&c.file), cwbackup::layers::Opening::Plain, c).into_iter().map(|p| p.message)),
        }
    }
    out
}

/// One change to a real manifest that must make it refused.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value at this path with one of another JSON type.
    WrongType(&'static [&'static str], Value),
    /// Remove a required key.
    Missing(&'static [&'static str]),
    /// Put this (out of range or wrong) number at this path.
    Number(&'static [&'static str], Value),
    /// Another set id.
    Id(String),
    /// Another file name for a half.
    File(&'static str, String),
    /// Another format.
    Format(String),
    /// Another name for the volume component.
    Name(String),
    /// Another content digest or checksum.
    Digest(&'static [&'static str], String),
}

/// Required (non-optional) keys of a manifest with a volume (component 0) and the database
/// (component 1).
const REQUIRED: &[&[&str]] = &[
    &["format"],
    &["id"],
    &["created_at"],
    &["tool_version"],
    &["components"],
    &["components", "0", "name"],
    &["components", "0", "kind"],
    &["components", "0", "file"],
    &["components", "0", "sha256"],
    &["components", "0", "bytes"],
    &["components", "0", "started_at"],
    &["components", "0", "finished_at"],
    &["components", "0", "files"],
    &["components", "0", "expanded_bytes"],
    &["components", "0", "content_digest"],
    &["components", "0", "source"],
    &["components", "1", "name"],
    &["components", "1", "kind"],
    &["components", "1", "file"],
    &["components", "1", "sha256"],
    &["components", "1", "bytes"],
    &["components", "1", "started_at"],
    &["components", "1", "finished_at"],
    &["components", "1", "content_digest"],
];
/// Keys whose value the checks compare with the set (a wrong value is found).
const CHECKED: &[&[&str]] = &[
    &["components", "0", "bytes"],
    &["components", "0", "files"],
    &["components", "0", "expanded_bytes"],
    &["components", "1", "bytes"],
];

impl Mutation {
    /// Applies the mutation; returns a description.
    fn apply(&self, m: &mut Value) -> String {
        fn at<'v>(m: &'v mut Value, path: &[&str]) -> &'v mut Value {
            path.iter().fold(m, |v, k| match k.parse::<usize>() {
                Ok(i) => &mut v[i],
                Err(_) => &mut v[*k],
            })
        }
        match self {
            Mutation::WrongType(path, v) | Mutation::Number(path, v) => *at(m, path) = v.clone(),
            Mutation::Missing(path) => {
                let (last, parent) = path.split_last().unwrap();
                at(m, parent).as_object_mut().unwrap().remove(*last);
            }
            Mutation::Id(id) => m["id"] = json!(id),
            Mutation::File(half, name) => {
                let i = usize::from(*half == "db");
                m["components"][i]["file"] = json!(name)
            }
            Mutation::Format(f) => m["format"] = json!(f),
            Mutation::Name(n) => m["components"][0]["name"] = json!(n),
            Mutation::Digest(path, d) => *at(m, path) = json!(d),
        }
        format!("{self:?}")
    }
}

fn manifest_mutation() -> impl Strategy<Value = Mutation> {
    let required = prop::sample::select(REQUIRED.to_vec());
    let checked = prop::sample::select(CHECKED.to_vec());
    // A value of another type than each required key holds (strings, or numbers for the sizes).
    let wrong_type = (required.clone(), 0..5usize).prop_map(|(path, pick)| {
        let is_number = matches!(path.last(), Some(&"bytes" | &"files" | &"expanded_bytes"));
        let is_list = path == ["components"];
        let others = [
            json!(null),
            json!(true),
            json!([1, 2]),
            json!({"x": 1}),
            if is_number || is_list { json!("12") } else { json!(12) },
        ];
        Mutation::WrongType(path, others[pick].clone())
    });
    let missing = required.prop_map(Mutation::Missing);
    let number = (
        checked,
        prop_oneof![
            Just(json!(u64::MAX)),
            Just(json!(-1)),
            Just(json!(1.5)),
            Just(json!(1e30)),
            Just(json!(0)),
            (1u64..1_000_000_000).prop_map(|n| json!(n * 7 + 1_000_003)),
        ],
    )
        .prop_map(|(path, v)| Mutation::Number(path, v));
    let id = prop_oneof![
        Just(String::new()),
        Just("../escape".to_string()),
        Just("a/b".to_string()),
        Just(".staging".to_string()),
        "[a-zA-Z0-9._-]{1,40}".prop_map(|s| format!("other-{s}")),
        "\\PC{0,20}".prop_map(|s| format!("{s}\u{0}x")),
    ]
    .prop_map(Mutation::Id);
    let file = (
        prop::sample::select(vec!["volume", "db"]),
        prop_oneof![
            Just("../volume.tar.gz".to_string()),
            Just("/etc/passwd".to_string()),
            Just("sub/volume.tar.gz".to_string()),
            Just("volumes/../volume.tar.gz".to_string()),
            Just("volumes/".to_string()),
            Just(".hidden".to_string()),
            Just(String::new()),
            Just("manifest.json".to_string()),
            Just("missing.tar.gz".to_string()),
            Just("x".repeat(5000)),
        ],
    )
        .prop_map(|(half, name)| {
            // The other half's file is a wrong file, not an unsafe name.
            let name = if name == "db.tgz" || name == "volume.tar.gz" {
                "missing".into()
            } else {
                name
            };
            Mutation::File(half, name)
        });
    let format = prop_oneof![
        Just("cwbackup/3".to_string()),
        Just("cwbackup/1".to_string()),
        Just(String::new()),
        "\\PC{0,30}"
    ]
    .prop_filter("another format", |f| f != "cwbackup/2")
    .prop_map(Mutation::Format);
    let digest = (
        prop::sample::select(vec![
            &["components", "0", "content_digest"][..],
            &["components", "0", "sha256"],
            &["components", "1", "sha256"],
            &["components", "1", "content_digest"],
        ]),
        prop_oneof![
            Just(String::new()),
            Just("sha256:".to_string()),
            "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
            "[0-9a-f]{64}"
        ],
    )
        .prop_map(|(path, d)| Mutation::Digest(path, d));
    let name = prop_oneof![
        Just("x/../../../victim".to_string()),
        Just("../x".to_string()),
        Just(".hidden".to_string()),
        Just(String::new()),
        Just("db".to_string()), // the database component's name: two components named db
        Just("x".repeat(200)),
        "[a-z]{1,8}[ /\\\\:]{1,3}[a-z]{0,8}",
    ]
    .prop_map(Mutation::Name);
    prop_oneof![wrong_type, missing, number, id, file, format, digest, name]
}

fn documented_archive_error(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::IntegrityError | ErrorKind::UnsafeArchive)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_an_invalid_task(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = cwbackup::task::parse(&bytes) {
            prop_assert_eq!(e.kind, ErrorKind::InvalidTask);
        }
    }

    #[test]
    fn random_json_tasks_are_read_or_refused_as_invalid_task(value in json_value()) {
        if let Err(e) = cwbackup::task::parse(value.to_string().as_bytes()) {
            prop_assert_eq!(e.kind, ErrorKind::InvalidTask, "{}", e.message);
            prop_assert!(!e.message.is_empty());
        }
    }

    /// Mutations of a real manifest (with both halves): a required key of the wrong type or
    /// missing, a number out of range or wrong, another id, an unsafe or wrong file name, an
    /// unknown format. Each is refused with a message by the code that reads sets: parsing,
    /// the repository scan (a manifest naming another set), or the checks of the set against
    /// its manifest (checksums, and the full read of the archive). Never a panic.
    #[test]
    fn random_manifests_are_refused_with_a_message(mutation in manifest_mutation()) {
        let (good_dir, good) = real_set();
        let mut m = good.clone();
        let described = mutation.apply(&mut m);
        let tmp = tempfile::tempdir().unwrap();
        let id = good["id"].as_str().unwrap();
        let dir = tmp.path().join(id);
        fs::create_dir(&dir).unwrap();
        for file in ["volume.tar.gz", "db.tgz"] {
            fs::copy(good_dir.join(file), dir.join(file)).unwrap();
        }
        fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
        let refusals = refusals_of(tmp.path(), &dir, id);
        prop_assert!(!refusals.is_empty(), "{} was accepted: {}", described, m);
        for r in &refusals {
            prop_assert!(!r.trim().is_empty(), "{}: a refusal without a message", described);
        }
    }

    #[test]
    fn random_bytes_read_as_gzip_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..2048), ours in any::<bool>()) {
        // Half the cases start with the header of one of our members, to get past the first check.
        let mut input = if ours { our_gzip()[..24].to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        let mut out = Vec::new();
        if let Err(e) = pgzip::reader(std::io::Cursor::new(input)).read_to_end(&mut out) {
            // A panic on the decompression thread would surface as this.
            prop_assert!(!e.to_string().contains("thread stopped"), "{}", e);
        }
    }

    #[test]
    fn a_changed_byte_in_gzip_is_an_error_or_changes_nothing(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut gz = our_gzip().to_vec();
        let i = at.index(gz.len());
        gz[i] ^= xor;
        let mut out = Vec::new();
        match pgzip::reader(std::io::Cursor::new(gz)).read_to_end(&mut out) {
            // Only the header's mtime and OS bytes may change without notice.
            Ok(_) => prop_assert!(out == gzip_sample(), "byte {} changed the data unnoticed", i),
            Err(e) => prop_assert!(!e.to_string().contains("thread stopped"), "{}", e),
        }
    }

    #[test]
    fn random_tar_streams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let limits = Limits { max_bytes: 1 << 20, max_entries: 100 };
        if let Err(e) = read_archive(&bytes[..], None, limits) {
            prop_assert!(documented_archive_error(e.kind), "{:?}: {}", e.kind, e.message);
        }
    }

    #[test]
    fn mutated_archives_extract_only_inside_their_destination(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (mut tar, limits) = valid_tar();
        for (at, byte) in flips {
            let i = at.index(tar.len());
            tar[i] = byte;
        }
        if truncate {
            tar.truncate(cut.index(tar.len()));
        }
        let f = Fixture::empty();
        let dest = f.path("dest");
        fs::create_dir(&dest).unwrap();
        let outside = listing(f.tmp.path()).into_keys().filter(|k| !k.starts_with(b"dest")).collect::<Vec<_>>();
        if let Err(e) = read_archive(&tar[..], Some(&dest), limits) {
            prop_assert!(documented_archive_error(e.kind), "{:?}: {}", e.kind, e.message);
        }
        let after = listing(f.tmp.path()).into_keys().filter(|k| !k.starts_with(b"dest")).collect::<Vec<_>>();
        prop_assert_eq!(outside, after, "nothing is written outside the destination");
    }
}

/// A regular-file header announcing `size` bytes.
fn header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

#[test]
fn a_header_announcing_a_huge_file_is_refused_before_reading_it() {
    let mut tar = header("huge", 8 << 30).as_bytes().to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    let e = read_archive(
        &tar[..],
        None,
        Limits {
            max_bytes: 1 << 20,
            max_entries: 10,
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsafeArchive, "{}", e.message);
}

#[test]
fn a_gzip_bomb_is_stopped_at_the_manifests_size() {
    // 64 MiB of zeros in one entry compresses to ~64 KiB; the manifest allows 1 MiB.
    let h = header("bomb", 64 << 20);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let f = Fixture::empty();
    let dest = f.path("dest");
    fs::create_dir(&dest).unwrap();
    let reader = flate2::read::GzDecoder::new(&bomb[..]);
    let e = read_archive(
        reader,
        Some(&dest),
        Limits {
            max_bytes: 1 << 20,
            max_entries: 10,
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsafeArchive, "{}", e.message);
    assert!(
        !dest.join("bomb").exists(),
        "nothing of the bomb was written"
    );
}

/// SPEC §6: every number in a task has an upper bound; huge values (which used to panic in
/// `Duration::from_secs_f64` or `Instant + Duration`, with no result) are `invalid_task`, exit
/// 2, one result line, for every numeric key.
#[test]
fn huge_numbers_in_every_numeric_key_are_an_invalid_task() {
    let huge: [Value; 6] = [
        json!(1e300),
        json!(1e19),
        json!(u64::MAX),
        json!(4_294_967_296u64),
        json!(604_801),
        json!(-1),
    ];
    let api = |key: &str, v: &Value| {
        let mut api = json!({"url": "https://127.0.0.1:9", "password": "x"});
        api[key] = v.clone();
        api
    };
    for v in &huge {
        let tasks = [
            json!({"operation": "list", "repository": "/tmp/r", "wait_for_lock_s": v}),
            json!({"operation": "prune", "repository": "/tmp/r", "keep_last": v}),
            json!({"operation": "backup", "repository": "/tmp/r", "keep_last": v, "api": api("timeout_s", &json!(1))}),
            json!({"operation": "backup", "repository": "/tmp/r", "api": api("timeout_s", v)}),
            json!({"operation": "backup", "repository": "/tmp/r", "api": api("connect_timeout_s", v)}),
            json!({"operation": "backup", "repository": "/tmp/r", "api": api("poll_interval_s", v)}),
        ];
        for task in tasks {
            let r = run(&task);
            assert_eq!(r.code, 2, "{task}: {}", r.stdout);
            assert_eq!(
                r.result.error.unwrap().kind,
                ErrorKind::InvalidTask,
                "{task}"
            );
        }
    }
}
