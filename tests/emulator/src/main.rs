//! `cw-emulator`: run the Connectware maintenance-API emulator for tests and playbooks.
//!
//! ```text
//! cw-emulator [--bind ADDR] [--port N] [--version V] [--password P] [--token T] [--op-duration-ms MS]
//!             [--tls self-signed|ca] [--cert-out FILE]
//! ```
//! Prints `listening on https://ADDR:PORT` (ADDR default 127.0.0.1), the credentials and the
//! path of the certificate to trust on stdout, writes that PEM (the self-signed certificate, or
//! the CA) to `--cert-out`, and serves until killed. `--help` lists the flags and fault knobs.

use std::time::Duration;

use cw_emulator::{Config, Emulator, TlsMode};

const HELP: &str = "\
cw-emulator: a Connectware maintenance-API emulator (HTTPS on 127.0.0.1) for tests and playbooks

usage: cw-emulator [FLAGS]

flags:
  --port N              port to listen on (default: a free one)
  --bind ADDR           address to listen on (default 127.0.0.1; the certificate names
                        localhost and 127.0.0.1 only)
  --version V           the Connectware version it reports (default 1.10.2)
  --username U          basic-auth user (default admin)
  --password P          basic-auth password (default admin-secret)
  --token T             bearer token it accepts (default test-token)
  --op-duration-ms MS   how long a server-side backup or restore runs (default 150)
  --tls self-signed|ca  a self-signed certificate (default), or a CA and a server
                        certificate signed by it
  --cert-out FILE       write the PEM to trust (the certificate, or the CA) to FILE
  -h, --help            this text

API: GET /api/maintenance/db, POST /api/maintenance/db/backup, GET /api/maintenance/db/backup,
     POST /api/maintenance/db/restore (multipart field `file`), GET /api/system/info

test hooks (no auth):
  GET|PUT /_emulator/db       the database: users, roles, permissions
  GET     /_emulator/requests every request seen (method, path, which kind of auth)
  GET|PUT /_emulator/faults   fault knobs, as JSON:
    fail_next N                 answer the next N /api requests with 503
    busy_next_posts N           answer the next N POSTs with 409
    drop_downloads N            break the next N downloads halfway
    backup_fails \"MSG\"         make backups fail with this status message
    restore_fails \"MSG\"        make restores fail with this status message
    never_finish true           started operations never finish
    delay_ms MS                 delay every /api response
    refuse_restore_versions [V] refuse files made by these versions, naming
    last_compatible_version V   this version in the status message
    correct_spelling true       spell `succeeded` instead of the vendor's `succeded`

example: curl -X PUT --data '{\"fail_next\": 2}' --cacert cw.pem https://127.0.0.1:8443/_emulator/faults
";

fn main() {
    let mut config = Config::default();
    let mut cert_out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--port" => {
                config.port = value()
                    .parse()
                    .unwrap_or_else(|_| die("--port takes a number"))
            }
            "--bind" => {
                config.bind = value()
                    .parse()
                    .unwrap_or_else(|_| die("--bind takes an IP address"))
            }
            "--version" => config.version = value(),
            "--username" => config.username = value(),
            "--password" => config.password = value(),
            "--token" => config.token = value(),
            "--op-duration-ms" => {
                config.op_duration = Duration::from_millis(
                    value()
                        .parse()
                        .unwrap_or_else(|_| die("--op-duration-ms takes a number")),
                )
            }
            "--tls" => {
                config.tls = match value().as_str() {
                    "self-signed" => TlsMode::SelfSigned,
                    "ca" => TlsMode::Ca,
                    other => die(&format!("--tls {other}: use self-signed or ca")),
                }
            }
            "--cert-out" => cert_out = Some(value()),
            "--help" | "-h" => {
                print!("{HELP}");
                return;
            }
            other => die(&format!("unknown flag {other}")),
        }
    }
    let (username, password, token) = (
        config.username.clone(),
        config.password.clone(),
        config.token.clone(),
    );
    let emulator = Emulator::start(config).unwrap_or_else(|e| die(&e.to_string()));
    if let Some(path) = &cert_out {
        std::fs::write(path.as_str(), &emulator.trust_pem).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    }
    println!("listening on {}", emulator.url);
    println!("basic auth: user {} password {}", username, password);
    println!("bearer token: {token}");
    match &cert_out {
        Some(path) => println!("certificate to trust (ca_file): {path}"),
        None => println!("certificate to trust: not written (give --cert-out FILE)"),
    }
    loop {
        std::thread::park();
    }
}

fn die(message: &str) -> ! {
    eprintln!("cw-emulator: {message}");
    std::process::exit(2);
}
