//! The database half against the project's Connectware emulator: a real HTTPS server on
//! 127.0.0.1, started in this process, driven through its fault knobs.

use std::fs;
use std::process::Command;

use cw_emulator::{Config, Emulator, Faults, TlsMode};
use cwbackup::error::ErrorKind;
use serde_json::{Value, json};

use crate::common::*;

pub const PASSWORD: &str = "s3cr3t-Passw0rd!";
pub const TOKEN: &str = "t0ken-eyJhbGciOi-secret";
pub const WRONG_PASSWORD: &str = "wr0ng-Passw0rd?";

/// A fixture with a running emulator and its certificate written to disk.
pub struct Api {
    pub f: Fixture,
    pub emu: Emulator,
    pub ca_file: std::path::PathBuf,
}

impl Default for Api {
    /// An emulator with a self-signed certificate, trusted through `ca_file`.
    fn default() -> Api {
        Api::start(TlsMode::SelfSigned)
    }
}

impl Api {
    pub fn start(tls: TlsMode) -> Api {
        let f = Fixture::sample();
        let emu = Emulator::start(Config {
            password: PASSWORD.into(),
            token: TOKEN.into(),
            tls,
            ..Config::default()
        })
        .unwrap();
        let ca_file = f.path("ca.pem");
        fs::write(&ca_file, &emu.trust_pem).unwrap();
        Api { f, emu, ca_file }
    }

    /// The `api` object of a task.
    pub fn api(&self) -> Value {
        json!({"url": self.emu.url, "password": PASSWORD, "ca_file": self.ca_file, "timeout_s": 10, "poll_interval_s": 0.05})
    }

    pub fn task(&self, operation: &str) -> Value {
        let mut t = self.f.task(operation);
        t["api"] = self.api();
        t
    }

    /// A backup task whose API waits at most `timeout_s`.
    pub fn backup_with_timeout(&self, timeout_s: f64) -> Value {
        let mut t = self.task("backup");
        t["api"]["timeout_s"] = json!(timeout_s);
        t
    }

    fn assert_no_set(&self) {
        assert!(self.f.set_ids().is_empty(), "no set may be published");
    }
}

#[test]
fn both_halves_are_backed_up_and_db_tgz_is_what_the_server_sent() {
    let a = Api::default();
    let r = run_ok(&a.task("backup"));
    assert!(r.changed);
    let set = r.backup.unwrap();
    let manifest = set.manifest.unwrap();
    let db = manifest.db().unwrap().db().unwrap();
    assert_eq!(manifest.connectware_version.as_deref(), Some("1.10.2"));
    assert_eq!(manifest.server_version.as_deref(), Some("1.10.2"));
    assert!(set.id.ends_with("-1.10.2"), "{}", set.id);
    assert!(db.backup_id.as_deref().unwrap().starts_with("1.10.2_"));
    assert!(manifest.skew_ms.is_some());
    assert!(manifest.single_volume().is_some());
    let ours = fs::read(std::path::Path::new(&set.path).join("db.tgz")).unwrap();
    assert_eq!(
        ours,
        a.emu.backup_file().unwrap(),
        "db.tgz is byte-identical to the server's file"
    );
    let r_db = r.db.unwrap();
    assert!(r_db.changed);
    assert_eq!(r_db.backup_id.as_deref(), db.backup_id.as_deref());
    run_ok(&json!({"operation": "verify", "repository": a.f.repo}));
}

#[test]
fn an_unchanged_installation_writes_no_second_set() {
    let a = Api::default();
    let first = run_ok(&a.task("backup")).backup.unwrap().id;
    let second = run_ok(&a.task("backup"));
    assert!(!second.changed, "{}", second.msg);
    assert_eq!(second.backup.unwrap().id, first);
    assert_eq!(
        a.emu.count("POST", "/api/maintenance/db/backup"),
        2,
        "a fresh server backup was compared"
    );
    // A database change alone makes a new set, volume included.
    let mut db = a.emu.db();
    db["users"]
        .as_array_mut()
        .unwrap()
        .push(json!({"username": "operator", "roles": []}));
    a.emu.set_db(db);
    let third = run_ok(&a.task("backup"));
    assert!(third.changed);
    assert!(third.backup.unwrap().manifest.unwrap().single_volume().is_some());
    // A volume change alone does too.
    write(&a.f.vol.join("services/new.yml"), b"x", 0o644);
    assert!(run_ok(&a.task("backup")).changed);
    assert_eq!(a.f.set_ids().len(), 3);
}

#[test]
fn the_vendors_curl_restore_accepts_our_db_tgz() {
    let a = Api::default();
    let r = run_ok(&a.task("backup"));
    let db_tgz = std::path::Path::new(&r.backup.unwrap().path).join("db.tgz");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(&a.ca_file)
        .args(["-u", &format!("admin:{PASSWORD}"), "-F"])
        .arg(format!("file=@{}", db_tgz.display()))
        .arg(format!("{}/api/maintenance/db/restore", a.emu.url))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "202",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bearer_token_goes_in_the_header_never_the_url() {
    let a = Api::default();
    let mut task = a.task("backup");
    task["api"] =
        json!({"url": a.emu.url, "token": TOKEN, "ca_file": a.ca_file, "poll_interval_s": 0.05});
    run_ok(&task);
    let requests = a.emu.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r.auth == "bearer" && r.query.is_none()),
        "{requests:?}"
    );
}

#[test]
fn password_file_and_password_env_are_read() {
    let a = Api::default();
    let file = a.f.path("pw");
    fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let mut task = a.task("backup");
    task["api"] = json!({"url": a.emu.url, "password_file": file, "ca_file": a.ca_file, "poll_interval_s": 0.05});
    run_ok(&task);
    task["api"] = json!({"url": a.emu.url, "password_env": "CW_PW", "ca_file": a.ca_file, "poll_interval_s": 0.05});
    task["force"] = json!(true);
    let r = run_raw(task.to_string().as_bytes(), &[("CW_PW", PASSWORD)]);
    assert!(r.result.ok, "{}", r.stdout);
}

#[test]
fn a_wrong_password_is_api_auth_failed_and_not_retried() {
    let a = Api::default();
    let mut task = a.task("backup");
    task["api"]["password"] = json!(WRONG_PASSWORD);
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::ApiAuthFailed);
    assert_eq!(
        a.emu.requests().len(),
        2,
        "one status request (and the version probe), no retries"
    );
    a.assert_no_set();
}

#[test]
fn server_errors_are_retried_until_they_pass() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        fail_next: 3,
        ..Faults::default()
    });
    let r = run(&a.task("backup"));
    assert!(r.result.ok, "{}", r.stdout);
    assert!(r.stderr.contains("retrying"), "{}", r.stderr);
}

#[test]
fn server_errors_until_the_timeout_are_api_unreachable() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        fail_next: 10_000,
        ..Faults::default()
    });
    let r = run(&a.backup_with_timeout(1.0));
    assert_eq!(kind(&r), ErrorKind::ApiUnreachable);
    assert!(r.result.error.unwrap().retryable);
    a.assert_no_set();
}

#[test]
fn a_dropped_download_is_started_again() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        drop_downloads: 2,
        ..Faults::default()
    });
    let r = run(&a.task("backup"));
    assert!(r.result.ok, "{}", r.stdout);
    assert!(r.stderr.contains("download broke"), "{}", r.stderr);
    let path = std::path::Path::new(&r.result.backup.unwrap().path).join("db.tgz");
    assert_eq!(fs::read(path).unwrap(), a.emu.backup_file().unwrap());
}

#[test]
fn downloads_that_always_break_leave_no_set_with_a_partial_file() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        drop_downloads: 10_000,
        ..Faults::default()
    });
    let r = run(&a.backup_with_timeout(1.0));
    assert_eq!(kind(&r), ErrorKind::ApiUnreachable);
    a.assert_no_set();
    assert_eq!(
        fs::read_dir(a.f.repo.join(".staging")).unwrap().count(),
        0,
        "the partial download is removed"
    );
}

#[test]
fn a_failed_server_backup_is_db_backup_failed_with_its_message() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        backup_fails: Some("pg_dump: out of disk space".into()),
        ..Faults::default()
    });
    let r = run(&a.task("backup"));
    assert_eq!(kind(&r), ErrorKind::DbBackupFailed);
    assert!(
        r.result
            .error
            .unwrap()
            .message
            .contains("pg_dump: out of disk space")
    );
    a.assert_no_set();
}

#[test]
fn a_forced_restore_without_safety_set_needs_no_server_side_backup() {
    // Disaster recovery: the database is broken, so its backups fail; `force` with
    // `safety_backup: false` still restores both halves, without asking for a backup.
    let a = Api::default();
    run_ok(&a.task("backup"));
    a.emu.set_faults(Faults {
        backup_fails: Some("database is corrupt".into()),
        ..Faults::default()
    });
    let mut task = a.task("restore");
    task["force"] = json!(true);
    task["safety_backup"] = json!(false);
    let r = run_ok(&task);
    assert!(r.db.unwrap().changed && r.volume.unwrap().changed);
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/backup"), 1, "only the first backup's");
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/restore"), 1);
}

#[test]
fn a_backup_that_never_finishes_is_a_timeout() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        never_finish: true,
        ..Faults::default()
    });
    let r = run(&a.backup_with_timeout(1.0));
    assert_eq!(kind(&r), ErrorKind::Timeout);
    assert!(r.result.error.unwrap().message.contains("timeout_s"));
    a.assert_no_set();
}

#[test]
fn slow_responses_are_waited_for() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        delay_ms: 300,
        ..Faults::default()
    });
    run_ok(&a.task("backup"));
}

#[test]
fn a_busy_server_is_waited_for() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        busy_next_posts: 2,
        ..Faults::default()
    });
    run_ok(&a.task("backup"));
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/backup"), 3);
}

#[test]
fn the_correct_spelling_succeeded_is_accepted_too() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        correct_spelling: true,
        ..Faults::default()
    });
    run_ok(&a.task("backup"));
}

#[test]
fn nothing_listening_is_api_unreachable() {
    let a = Api::default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut task = a.backup_with_timeout(0.5);
    task["api"]["url"] = json!(format!("https://127.0.0.1:{port}"));
    assert_eq!(kind(&run(&task)), ErrorKind::ApiUnreachable);
}

#[test]
fn a_ca_signed_server_certificate_is_trusted_through_the_ca() {
    let a = Api::start(TlsMode::Ca);
    run_ok(&a.task("backup"));
}

#[test]
fn without_ca_file_a_self_signed_server_is_api_tls_error_with_a_hint() {
    let a = Api::default();
    let mut task = a.task("backup");
    task["api"].as_object_mut().unwrap().remove("ca_file");
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::ApiTlsError);
    assert!(r.result.error.unwrap().message.contains("ca_file"));
    a.assert_no_set();
}

#[test]
fn an_expired_pinned_certificate_is_refused() {
    let a = Api::start(TlsMode::ExpiredSelfSigned);
    let r = run(&a.task("backup"));
    assert_eq!(kind(&r), ErrorKind::ApiTlsError, "{}", r.stdout);
}

#[test]
fn a_pinned_certificate_is_still_checked_against_the_host_name() {
    // The emulator listens on 127.0.0.2 (still this machine's loopback), serving the pinned
    // certificate, which names localhost and 127.0.0.1 only.
    let f = Fixture::sample();
    let emu = Emulator::start(Config {
        password: PASSWORD.into(),
        bind: std::net::IpAddr::from([127, 0, 0, 2]),
        ..Config::default()
    })
    .expect("the emulator listens on 127.0.0.2");
    assert!(emu.url.starts_with("https://127.0.0.2:"), "{}", emu.url);
    let ca_file = f.path("ca.pem");
    fs::write(&ca_file, &emu.trust_pem).unwrap();
    let mut task = f.task("backup");
    task["api"] = json!({"url": emu.url, "password": PASSWORD, "ca_file": ca_file, "timeout_s": 10, "poll_interval_s": 0.05});
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::ApiTlsError, "{}", r.stdout);
    assert!(f.set_ids().is_empty(), "no set is written");
    // The same server is reachable and works without certificate checks: the refusal above
    // is the certificate check's, not an unreachable address.
    task["api"]["validate_certs"] = json!(false);
    task["api"].as_object_mut().unwrap().remove("ca_file");
    run_ok(&task);
}

#[test]
fn validate_certs_false_works_with_a_warning() {
    let a = Api::default();
    let mut task = a.task("backup");
    task["api"] = json!({"url": a.emu.url, "password": PASSWORD, "validate_certs": false, "poll_interval_s": 0.05});
    let r = run_ok(&task);
    assert!(r.warnings.iter().any(|w| w.contains("validate_certs")));
}

#[test]
fn the_password_never_appears_in_argv_output_logs_or_results() {
    let a = Api::default();
    a.emu.set_faults(Faults {
        delay_ms: 100,
        fail_next: 1,
        ..Faults::default()
    });
    let mut child = Command::new(BIN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cmdline = fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(a.task("backup").to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut wrong = a.task("backup");
    wrong["api"]["password"] = json!(WRONG_PASSWORD);
    let failed = run(&wrong);
    for (what, text) in [
        ("argv", String::from_utf8_lossy(&cmdline).into_owned()),
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("stderr", String::from_utf8_lossy(&out.stderr).into_owned()),
        ("failed stdout", failed.stdout.clone()),
        ("failed stderr", failed.stderr.clone()),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password leaked into {what}: {text}"
        );
    }
    let manifests: String =
        a.f.set_ids()
            .iter()
            .map(|id| fs::read_to_string(a.f.repo.join(id).join("manifest.json")).unwrap())
            .collect();
    assert!(!manifests.contains(PASSWORD));
}

/// Runs a restore (with `api`, `secret` as its secret, `envs` for the binary) whose `restart`
/// command is a script that writes its argv and its environment to files; returns them.
fn restart_child_sees(a: &Api, secret: Value, envs: &[(&str, &str)]) -> (String, String) {
    let set = run_ok(&a.task("backup")).backup.unwrap().id;
    write(&a.f.vol.join("services/changed-since.yml"), b"x", 0o644);
    let (argv_out, env_out) = (a.f.path("restart.argv"), a.f.path("restart.env"));
    let script = a.f.path("restart.sh");
    write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > '{}'\nenv > '{}'\n",
            argv_out.display(),
            env_out.display()
        )
        .as_bytes(),
        0o755,
    );
    let mut task = a.task("restore");
    task["backup_id"] = json!(set);
    task["force"] = json!(true);
    task["restart"] = json!([script, "--project", "connectware"]);
    let api = task["api"].as_object_mut().unwrap();
    api.remove("password");
    for (k, v) in secret.as_object().unwrap() {
        api.insert(k.clone(), v.clone());
    }
    let r = run_raw(task.to_string().as_bytes(), envs);
    assert!(r.result.ok, "{}", r.stdout);
    assert!(
        !r.result.restart_required,
        "the restart command ran: {}",
        r.stdout
    );
    let argv = fs::read_to_string(&argv_out).expect("the restart script wrote its argv");
    let env = fs::read_to_string(&env_out).expect("the restart script wrote its environment");
    assert!(argv.contains("--project\nconnectware"), "{argv}");
    (argv, env)
}

fn assert_no_secret(place: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "a secret reached the restart child's {place}:\n{text}"
        );
    }
}

#[test]
fn the_restart_child_gets_no_secret_in_argv_or_environment() {
    let a = Api::default();
    let file = a.f.path("pw");
    fs::write(&file, PASSWORD).unwrap();
    for secret in [
        json!({"password": PASSWORD}),
        json!({"password_file": file}),
        json!({"token": TOKEN}),
    ] {
        let (argv, env) = restart_child_sees(&a, secret, &[]);
        assert_no_secret("argv", &argv);
        assert_no_secret("environment", &env);
    }
}

/// SPEC §6: a `password_env` variable is removed from the restart command's environment.
#[test]
fn the_restart_child_does_not_inherit_the_password_env_variable() {
    let a = Api::default();
    let (argv, env) = restart_child_sees(
        &a,
        json!({"password_env": "CW_RESTART_PW"}),
        &[("CW_RESTART_PW", PASSWORD)],
    );
    assert_no_secret("argv", &argv);
    assert!(
        !env.contains("CW_RESTART_PW"),
        "the variable reached the restart child:\n{env}"
    );
    assert_no_secret("environment", &env);
}

#[test]
fn a_dry_run_starts_no_server_side_backup() {
    let a = Api::default();
    let mut task = a.task("backup");
    task["dry_run"] = json!(true);
    let r = run_ok(&task);
    assert!(r.changed && r.dry_run);
    assert!(r.warnings.iter().any(|w| w.contains("dry run")));
    assert_eq!(a.emu.count("POST", "/api/maintenance/db/backup"), 0);
    assert!(!a.f.repo.exists());
}

// ---- Hostile and broken servers (SPEC §4, §6: nothing hangs, nothing grows without bound) ----

/// A port on 127.0.0.1 where a thread accepts connections and does `with` each of them.
fn raw_server(with: fn(std::net::TcpStream)) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || with(stream));
        }
    });
    port
}

/// Accepts, then says nothing, ever (and never closes).
fn silent(stream: std::net::TcpStream) {
    std::thread::sleep(std::time::Duration::from_secs(3600));
    drop(stream);
}

/// Accepts, reads the TLS ClientHello, and hangs up: a TLS handshake cut.
fn hang_up(mut stream: std::net::TcpStream) {
    use std::io::Read;
    let _ = stream.read(&mut [0u8; 512]);
}

/// Slowloris: the start of a TLS record announcing 16 KiB, then one byte a second forever.
fn trickle(mut stream: std::net::TcpStream) {
    use std::io::Write;
    for byte in [0x16u8, 0x03, 0x03, 0x40, 0x00]
        .into_iter()
        .chain(std::iter::repeat(0))
    {
        if stream.write_all(&[byte]).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// What a TLS server of the test does after reading a request's head.
#[derive(Clone, Copy)]
enum Answer {
    /// Never answers.
    Silent,
    /// Answers 200 with a body that never ends.
    Endless,
    /// Answers 200 announcing a megabyte, then sends one byte a second.
    Trickle,
    /// Answers GETs as an idle Connectware would; never answers a POST (e.g. the upload).
    StuckOnPost,
}

/// An HTTPS server on 127.0.0.1 with the emulator's kind of self-signed certificate; returns
/// its URL and the PEM to trust.
fn tls_server(answer: Answer) -> (String, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    use std::sync::Arc;
    let (cert, key, trust) = cw_emulator::make_certificates(TlsMode::SelfSigned);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let reply = |tls: &mut rustls::StreamOwned<_, _>, body: &str| {
                    let _ = write!(
                        tls,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.flush();
                };
                match answer {
                    Answer::Silent => std::thread::sleep(std::time::Duration::from_secs(3600)),
                    Answer::Endless => {
                        let _ = tls.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
                        );
                        let chunk = vec![b' '; 64 * 1024];
                        while tls.write_all(&chunk).is_ok() {}
                    }
                    Answer::Trickle => {
                        let _ = tls.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
                        );
                        let _ = tls.flush();
                        while tls.write_all(b" ").and_then(|()| tls.flush()).is_ok() {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                    Answer::StuckOnPost => {
                        if head.starts_with("POST") {
                            std::thread::sleep(std::time::Duration::from_secs(3600));
                        } else if head.starts_with("GET /api/system/info") {
                            reply(&mut tls, r#"{"version":"1.10.2"}"#);
                        } else {
                            reply(
                                &mut tls,
                                r#"{"running":false,"backup":null,"restore":null}"#,
                            );
                        }
                    }
                }
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), trust)
}

/// A backup task against `url` (trusting `trust`) with the given limits (`connect_timeout_s`
/// left at its default when None).
fn backup_against(
    a: &Api,
    url: &str,
    trust: &str,
    timeout_s: f64,
    connect_timeout_s: Option<f64>,
) -> Value {
    let ca = a.f.path("hostile-ca.pem");
    fs::write(&ca, trust).unwrap();
    let mut task = a.task("backup");
    task["api"] = json!({"url": url, "password": PASSWORD, "ca_file": ca,
        "timeout_s": timeout_s, "poll_interval_s": 0.05});
    if let Some(c) = connect_timeout_s {
        task["api"]["connect_timeout_s"] = json!(c);
    }
    task
}

const LIMIT: std::time::Duration = std::time::Duration::from_secs(40);

#[test]
fn a_closed_port_is_api_unreachable_within_connect_timeout_s() {
    let a = Api::default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let task = backup_against(
        &a,
        &format!("https://127.0.0.1:{port}"),
        &a.emu.trust_pem,
        600.0,
        Some(1.0),
    );
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::ApiUnreachable, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert!(e.message.contains("connect_timeout_s"), "{}", e.message);
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    a.assert_no_set();
}

#[test]
fn a_server_that_accepts_but_never_speaks_tls_is_cut_off_within_connect_timeout_s() {
    let a = Api::default();
    let port = raw_server(silent);
    let task = backup_against(
        &a,
        &format!("https://127.0.0.1:{port}"),
        &a.emu.trust_pem,
        600.0,
        Some(1.0),
    );
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::ApiUnreachable, "{}", r.stdout);
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
}

#[test]
fn a_tls_handshake_cut_is_retried_for_connect_timeout_s_then_api_unreachable() {
    let a = Api::default();
    let port = raw_server(hang_up);
    let task = backup_against(
        &a,
        &format!("https://127.0.0.1:{port}"),
        &a.emu.trust_pem,
        600.0,
        Some(1.0),
    );
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::ApiUnreachable, "{}", r.stdout);
    assert!(r.stderr.contains("retrying"), "{}", r.stderr);
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_slowloris_server_that_trickles_a_byte_a_second_is_cut_off() {
    let a = Api::default();
    let port = raw_server(trickle);
    let task = backup_against(
        &a,
        &format!("https://127.0.0.1:{port}"),
        &a.emu.trust_pem,
        600.0,
        Some(2.0),
    );
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::ApiUnreachable, "{}", r.stdout);
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_tls_server_that_never_answers_is_cut_off_at_timeout_s() {
    let a = Api::default();
    let (url, trust) = tls_server(Answer::Silent);
    let task = backup_against(&a, &url, &trust, 2.0, None);
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::Timeout, "{}", r.stdout);
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    a.assert_no_set();
}

#[test]
fn a_body_trickled_a_byte_a_second_is_cut_off_at_timeout_s() {
    let a = Api::default();
    let (url, trust) = tls_server(Answer::Trickle);
    let task = backup_against(&a, &url, &trust, 2.0, None);
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::Timeout, "{}", r.stdout);
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

#[test]
fn an_endless_body_is_refused_at_one_mebibyte() {
    let a = Api::default();
    let (url, trust) = tls_server(Answer::Endless);
    let task = backup_against(&a, &url, &trust, 30.0, None);
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::ApiProtocolError, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert!(e.message.contains("larger than 1 MiB"), "{}", e.message);
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_database_upload_the_server_never_answers_ends_at_timeout_s() {
    let a = Api::default();
    run_ok(&a.task("backup"));
    let (url, trust) = tls_server(Answer::StuckOnPost);
    let ca = a.f.path("stuck-ca.pem");
    fs::write(&ca, trust).unwrap();
    let task = json!({"operation": "restore", "repository": a.f.repo, "safety_backup": false,
        "api": {"url": url, "password": PASSWORD, "ca_file": ca, "timeout_s": 3, "poll_interval_s": 0.05}});
    let (r, took) = run_within(&task, LIMIT);
    assert_eq!(kind(&r), ErrorKind::Timeout, "{}", r.stdout);
    assert!(took < std::time::Duration::from_secs(12), "took {took:?}");
}

// ---- Messages that say what to do (SPEC §4) ----

#[test]
fn a_url_ending_in_api_gets_a_404_hint() {
    let a = Api::default();
    let mut task = a.task("backup");
    task["api"]["url"] = json!(format!("{}/api", a.emu.url));
    let r = run(&task);
    assert_eq!(kind(&r), ErrorKind::ApiProtocolError, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert!(e.message.contains("without /api"), "{}", e.message);
}

#[test]
fn tls_failures_read_as_sentences_that_say_what_to_do() {
    // No ca_file for a self-signed (CA:TRUE) server certificate.
    let a = Api::default();
    let mut task = a.task("backup");
    task["api"].as_object_mut().unwrap().remove("ca_file");
    let e = run(&task).result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::ApiTlsError);
    assert!(
        e.message.contains("self-signed") && e.message.contains("api.ca_file"),
        "{}",
        e.message
    );
    assert!(
        !e.message.contains("Other(") && !e.message.contains("CaUsedAsEndEntity"),
        "{}",
        e.message
    );
    // A ca_file that is not the server's CA.
    let b = Api::start(TlsMode::Ca);
    let other = b.f.path("other.pem");
    fs::write(
        &other,
        cw_emulator::make_certificates(TlsMode::SelfSigned).2,
    )
    .unwrap();
    let mut task = b.task("backup");
    task["api"]["ca_file"] = json!(other);
    let e = run(&task).result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::ApiTlsError);
    assert!(e.message.contains("not signed by a CA"), "{}", e.message);
    assert!(!e.message.contains("UnknownIssuer"), "{}", e.message);
}

/// SPEC §6 "no thread's failure is lost": a panic in the backup's database thread (the
/// test-only trigger `CWBACKUP_TEST_PANIC=worker`) is one `internal_error` result, exit 1, and
/// publishes nothing.
#[test]
fn a_panic_in_the_database_thread_is_one_internal_error_result() {
    let a = Api::default();
    let r = run_raw(
        a.task("backup").to_string().as_bytes(),
        &[("CWBACKUP_TEST_PANIC", "worker")],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    let e = r.result.error.unwrap();
    assert_eq!(e.kind, ErrorKind::InternalError, "{}", e.message);
    assert!(e.message.contains("the database thread"), "{}", e.message);
    a.assert_no_set();
}
