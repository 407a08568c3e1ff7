//! `cw-emulator`: run the Connectware maintenance-API emulator for tests and playbooks.
//!
//! ```text
//! cw-emulator [--bind ADDR] [--port N] [--version V] [--password P] [--token T] [--op-duration-ms MS]
//!             [--tls self-signed|ca] [--cert-out FILE]
//! ```
//! Prints `listening on https://ADDR:PORT` (ADDR default 127.0.0.1) on stdout, writes the PEM to trust (the
//! self-signed certificate, or the CA) to `--cert-out`, and serves until killed.

use std::time::Duration;

use cw_emulator::{Config, Emulator, TlsMode};

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
                println!("see the comment at the top of tests/emulator/src/main.rs, or README.md");
                return;
            }
            other => die(&format!("unknown flag {other}")),
        }
    }
    let emulator = Emulator::start(config).unwrap_or_else(|e| die(&e.to_string()));
    if let Some(path) = cert_out {
        std::fs::write(&path, &emulator.trust_pem).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    }
    println!("listening on {}", emulator.url);
    loop {
        std::thread::park();
    }
}

fn die(message: &str) -> ! {
    eprintln!("cw-emulator: {message}");
    std::process::exit(2);
}
