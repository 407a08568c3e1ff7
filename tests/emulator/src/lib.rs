//! A Connectware maintenance-API emulator: a real HTTPS server on 127.0.0.1 (or `Config::bind`) that behaves like
//! the vendor documents (SPEC §4), with knobs for the faults a backup tool must survive.
//!
//! API (basic auth or bearer token):
//! - `GET  /api/maintenance/db`          status: `running`, `backup`, `restore` (vendor spelling
//!   `succeded`)
//! - `POST /api/maintenance/db/backup`   202; the backup runs for `op_duration_ms`
//! - `GET  /api/maintenance/db/backup`   the newest backup file (`.tgz`), streamed
//! - `POST /api/maintenance/db/restore`  multipart field `file`; 202; runs asynchronously
//! - `GET  /api/system/info`             `{"time": …, "version": …}`
//!
//! Test hooks, no auth: `GET|PUT /_emulator/db` (the database: users, roles, permissions),
//! `GET|PUT /_emulator/faults` (see [`Faults`]), `GET /_emulator/requests` (every request seen:
//! method, path, query, and whether it carried credentials — never their values).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Fault knobs; every field defaults to "behave".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer the next N `/api` requests with 503.
    pub fail_next: u32,
    /// Answer the next N POSTs with 409, as a server that is busy with another operation.
    pub busy_next_posts: u32,
    /// Drop the connection halfway through the next N downloads.
    pub drop_downloads: u32,
    /// Make backups fail with this status message.
    pub backup_fails: Option<String>,
    /// Make restores fail with this status message.
    pub restore_fails: Option<String>,
    /// Started operations never finish (`running` stays true).
    pub never_finish: bool,
    /// Delay every `/api` response by this many milliseconds.
    pub delay_ms: u64,
    /// Refuse to restore files made by these Connectware versions, naming
    /// `last_compatible_version` in the status message.
    pub refuse_restore_versions: Vec<String>,
    /// The version named when a restore is refused.
    pub last_compatible_version: Option<String>,
    /// Spell the status field `succeeded` instead of the vendor's `succeded`.
    pub correct_spelling: bool,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `basic`, `bearer` or `none`: which credentials came, never their values.
    pub auth: String,
}

/// The status of the last backup or restore.
#[derive(Debug, Clone, Serialize)]
struct OpStatus {
    succeeded: bool,
    id: String,
    status_message: String,
    start_date: String,
    end_date: Option<String>,
}

struct Inner {
    version: String,
    username: String,
    password: String,
    token: String,
    op_duration: Duration,
    db: Value,
    running: bool,
    backup: Option<OpStatus>,
    restore: Option<OpStatus>,
    backup_file: Option<Vec<u8>>,
    /// Every backup file this server made, with its id: a restore of one of them reports
    /// that id as `restore.id`.
    made: Vec<(Vec<u8>, String)>,
    faults: Faults,
    requests: Vec<Seen>,
    /// `/api` requests being answered now (id, "METHOD path"), for tests that observe what a
    /// client is doing at a given moment.
    in_flight: Vec<(u64, String)>,
    next_request: u64,
    /// The server-side operation that runs (or ran last): `backup` or `restore`.
    last_op: &'static str,
}

type Shared = Arc<Mutex<Inner>>;

/// How the server's certificate is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// One self-signed certificate marked CA:TRUE, as `openssl req -x509` makes it.
    SelfSigned,
    /// A CA (like Connectware's `cybus_ca.crt`) and a server certificate signed by it.
    Ca,
    /// A self-signed certificate whose validity ended in 2020.
    ExpiredSelfSigned,
}

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct Config {
    pub version: String,
    pub username: String,
    pub password: String,
    pub token: String,
    /// How long a backup or restore runs on the "server".
    pub op_duration: Duration,
    pub tls: TlsMode,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Address to listen on (default 127.0.0.1). The certificate names `localhost` and
    /// `127.0.0.1` only: listening on e.g. 127.0.0.2 serves a certificate that does not name
    /// the address the client connects to.
    pub bind: std::net::IpAddr,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: "1.10.2".into(),
            username: "admin".into(),
            password: "admin-secret".into(),
            token: "test-token".into(),
            op_duration: Duration::from_millis(150),
            tls: TlsMode::SelfSigned,
            port: 0,
            bind: std::net::IpAddr::from([127, 0, 0, 1]),
        }
    }
}

/// A running emulator; it stops when dropped.
pub struct Emulator {
    /// e.g. `https://127.0.0.1:4443`
    pub url: String,
    /// PEM of the certificate a client should trust: the CA in [`TlsMode::Ca`], else the
    /// server's own certificate.
    pub trust_pem: String,
    /// PEM of the server's certificate.
    pub server_pem: String,
    state: Shared,
    handle: axum_server::Handle<SocketAddr>,
    _thread: Option<std::thread::JoinHandle<()>>,
}

/// The initial database: what a fresh Connectware holds.
pub fn default_db() -> Value {
    json!({
        "users": [{"username": "admin", "password_hash": "$2b$10$adminhash", "roles": ["admin"]}],
        "roles": [{"name": "admin", "permissions": ["*"]}],
        "permissions": [{"id": "*", "resource": "**", "operation": "readWrite"}]
    })
}

impl Emulator {
    /// Starts the emulator on a thread of its own and waits until it listens.
    pub fn start(config: Config) -> std::io::Result<Emulator> {
        let (cert_pem, key_pem, trust_pem) = make_certificates(config.tls);
        let listener = std::net::TcpListener::bind((config.bind, config.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::new(Mutex::new(Inner {
            version: config.version,
            username: config.username,
            password: config.password,
            token: config.token,
            op_duration: config.op_duration,
            db: default_db(),
            running: false,
            backup: None,
            restore: None,
            backup_file: None,
            made: Vec::new(),
            faults: Faults::default(),
            requests: Vec::new(),
            in_flight: Vec::new(),
            next_request: 0,
            last_op: "",
        }));
        let handle = axum_server::Handle::new();
        let (server_state, server_handle) = (state.clone(), handle.clone());
        let (cert, key) = (cert_pem.clone().into_bytes(), key_pem.into_bytes());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
                    .await
                    .expect("the generated certificate loads");
                let app = router(server_state);
                axum_server::from_tcp_rustls(listener, tls)
                    .expect("the listener is usable")
                    .handle(server_handle)
                    .serve(app.into_make_service())
                    .await
                    .expect("the server runs");
            });
        });
        let started = std::thread::scope(|_| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(handle.listening())
        });
        if started.is_none() {
            return Err(std::io::Error::other("the emulator did not start"));
        }
        Ok(Emulator {
            url: format!("https://{}:{}", config.bind, addr.port()),
            trust_pem,
            server_pem: cert_pem,
            state,
            handle,
            _thread: Some(thread),
        })
    }

    /// Replaces the fault knobs.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// The current fault knobs (counters go down as faults are served).
    pub fn faults(&self) -> Faults {
        self.state.lock().unwrap().faults.clone()
    }

    /// The database.
    pub fn db(&self) -> Value {
        self.state.lock().unwrap().db.clone()
    }

    /// Replaces the database.
    pub fn set_db(&self, db: Value) {
        self.state.lock().unwrap().db = db;
    }

    /// Changes the version the server reports and writes into backups.
    pub fn set_version(&self, version: &str) {
        self.state.lock().unwrap().version = version.to_string();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests matched `method` and `path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// The `/api` requests being answered at this moment, as `"METHOD path"` (a request
    /// delayed by `delay_ms` counts from its arrival).
    pub fn in_flight(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.in_flight.iter().map(|(_, r)| r.clone()).collect()
    }

    /// The server-side operation running now: `Some("backup")`, `Some("restore")`, or None.
    pub fn running(&self) -> Option<&'static str> {
        let s = self.state.lock().unwrap();
        s.running.then_some(s.last_op)
    }

    /// The last backup file the server made, as it serves it.
    pub fn backup_file(&self) -> Option<Vec<u8>> {
        self.state.lock().unwrap().backup_file.clone()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A certificate as the emulator makes it for `mode`: `(server certificate PEM, its key PEM,
/// PEM to trust)`. Public so that tests can run servers of their own (hostile ones) with it.
pub fn make_certificates(mode: TlsMode) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let key = KeyPair::generate().expect("a key");
    match mode {
        TlsMode::SelfSigned | TlsMode::ExpiredSelfSigned => {
            let mut params = CertificateParams::new(names).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "connectware");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            if mode == TlsMode::ExpiredSelfSigned {
                params.not_before = rcgen::date_time_ymd(2019, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 1, 1);
            }
            let cert = params.self_signed(&key).expect("a certificate");
            (cert.pem(), key.serialize_pem(), cert.pem())
        }
        TlsMode::Ca => {
            let ca_key = KeyPair::generate().expect("a key");
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca_params
                .distinguished_name
                .push(DnType::CommonName, "cybus_ca");
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_cert = ca_params.self_signed(&ca_key).expect("a CA");
            let issuer = Issuer::new(ca_params, ca_key);
            let mut params = CertificateParams::new(names).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "cybus_server");
            let cert = params
                .signed_by(&key, &issuer)
                .expect("a server certificate");
            (cert.pem(), key.serialize_pem(), ca_cert.pem())
        }
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/maintenance/db", get(status))
        .route(
            "/api/maintenance/db/backup",
            get(download).post(start_backup),
        )
        .route(
            "/api/maintenance/db/restore",
            axum::routing::post(start_restore),
        )
        .route("/api/system/info", get(system_info))
        .route_layer(middleware::from_fn_with_state(state.clone(), api_gate))
        .route("/_emulator/db", get(get_db).put(put_db))
        .route("/_emulator/faults", get(get_faults).put(put_faults))
        .route("/_emulator/requests", get(get_requests))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Logs, delays, fails on request, and checks credentials, before any `/api` handler.
async fn api_gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = if auth.starts_with("Basic ") {
        "basic"
    } else if auth.starts_with("Bearer ") {
        "bearer"
    } else {
        "none"
    };
    let (delay, fail, busy, allowed, request_id) = {
        let mut s = state.lock().unwrap();
        let request_id = s.next_request;
        s.next_request += 1;
        let name = format!("{} {}", request.method(), request.uri().path());
        s.in_flight.push((request_id, name));
        s.requests.push(Seen {
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            query: request.uri().query().map(str::to_string),
            auth: kind.to_string(),
        });
        let fail = s.faults.fail_next > 0;
        if fail {
            s.faults.fail_next -= 1;
        }
        let busy = !fail && request.method() == "POST" && s.faults.busy_next_posts > 0;
        if busy {
            s.faults.busy_next_posts -= 1;
        }
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", s.username, s.password))
        );
        let allowed = auth == basic || auth == format!("Bearer {}", s.token);
        (s.faults.delay_ms, fail, busy, allowed, request_id)
    };
    // Removed from `in_flight` when answered, or when the client goes away (the future is
    // dropped then).
    let _in_flight = InFlight(state.clone(), request_id);
    answer(delay, fail, busy, allowed, request, next).await
}

struct InFlight(Shared, u64);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight.retain(|(id, _)| *id != self.1);
        }
    }
}

async fn answer(
    delay: u64,
    fail: bool,
    busy: bool,
    allowed: bool,
    request: Request,
    next: Next,
) -> Response {
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if fail {
        return (StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable").into_response();
    }
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Unauthorized"})),
        )
            .into_response();
    }
    if busy {
        return already_running();
    }
    next.run(request).await
}

use axum::Json;

fn op_json(op: &Option<OpStatus>, correct_spelling: bool) -> Value {
    match op {
        None => Value::Null,
        Some(o) => {
            let key = if correct_spelling {
                "succeeded"
            } else {
                "succeded"
            };
            json!({
                key: o.succeeded,
                "id": o.id,
                "statusMessage": o.status_message,
                "startDate": o.start_date,
                "endDate": o.end_date,
            })
        }
    }
}

async fn status(State(state): State<Shared>) -> Response {
    let s = state.lock().unwrap();
    let spelling = s.faults.correct_spelling;
    Json(json!({
        "running": s.running,
        "backup": op_json(&s.backup, spelling),
        "restore": op_json(&s.restore, spelling),
    }))
    .into_response()
}

async fn system_info(State(state): State<Shared>) -> Response {
    let s = state.lock().unwrap();
    Json(json!({"time": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64, "version": s.version})).into_response()
}

/// Marks a server-side operation as running and returns its start time; None when one
/// already runs.
fn begin(s: &mut Inner) -> Option<String> {
    if s.running {
        return None;
    }
    s.running = true;
    Some(now())
}

/// The answer to a POST while an operation runs.
fn already_running() -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({"message": "an operation is already running"})),
    )
        .into_response()
}

async fn start_backup(State(state): State<Shared>) -> Response {
    let (duration, never, id) = {
        let mut s = state.lock().unwrap();
        let Some(started) = begin(&mut s) else {
            return already_running();
        };
        s.last_op = "backup";
        let id = format!("{}_{}", s.version, started);
        s.backup = Some(OpStatus {
            succeeded: false,
            id: id.clone(),
            status_message: "running".into(),
            start_date: started,
            end_date: None,
        });
        (s.op_duration, s.faults.never_finish, id)
    };
    if !never {
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            let mut s = state.lock().unwrap();
            let outcome = match s.faults.backup_fails.clone() {
                Some(message) => (false, message),
                None => {
                    let file = db_file(&s.version, &s.db);
                    s.made.push((file.clone(), id.clone()));
                    s.backup_file = Some(file);
                    (true, "OK".to_string())
                }
            };
            s.running = false;
            if let Some(b) = s.backup.as_mut().filter(|b| b.id == id) {
                b.succeeded = outcome.0;
                b.status_message = outcome.1;
                b.end_date = Some(now());
            }
        });
    }
    StatusCode::ACCEPTED.into_response()
}

/// A database backup file: a gzip'd tar of `VERSION` and `dump.json`, with the time of making
/// in the tar and gzip headers (so two backups of the same database differ in bytes only).
pub fn db_file(version: &str, db: &Value) -> Vec<u8> {
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let gz = flate2::GzBuilder::new()
        .mtime(mtime as u32)
        .write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let members: [(&str, Vec<u8>); 2] = [
        ("VERSION", format!("{version}\n").into_bytes()),
        ("dump.json", serde_json::to_vec_pretty(db).unwrap()),
    ];
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    let mut gz = tar.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

/// Reads `VERSION` and `dump.json` back out of a database backup file.
pub fn read_db_file(bytes: &[u8]) -> Result<(String, Value), String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let (mut version, mut db) = (None, None);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(|e| e.to_string())?;
        match name.as_str() {
            "VERSION" => version = Some(String::from_utf8_lossy(&data).trim().to_string()),
            "dump.json" => db = Some(serde_json::from_slice(&data).map_err(|e| e.to_string())?),
            _ => {}
        }
    }
    match (version, db) {
        (Some(v), Some(d)) => Ok((v, d)),
        _ => Err("not a Connectware database backup (VERSION or dump.json missing)".into()),
    }
}

async fn download(State(state): State<Shared>) -> Response {
    let (file, drop_it) = {
        let mut s = state.lock().unwrap();
        let drop_it = s.faults.drop_downloads > 0;
        if drop_it {
            s.faults.drop_downloads -= 1;
        }
        (s.backup_file.clone(), drop_it)
    };
    let Some(file) = file else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "no backup available"})),
        )
            .into_response();
    };
    let len = file.len();
    let body = if drop_it {
        // Announce the whole length, send half, then break the connection.
        // The pause lets the headers and the first half reach the client before the break.
        use futures_util::StreamExt;
        let half = Bytes::from(file[..len / 2].to_vec());
        let first = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(half)]);
        let broken = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(std::io::Error::other("connection dropped by the emulator"))
        });
        Body::from_stream(first.chain(broken))
    } else {
        Body::from(file)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/gzip")
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"backup.tgz\"",
        )
        .body(body)
        .unwrap()
}

async fn start_restore(State(state): State<Shared>, mut multipart: Multipart) -> Response {
    let mut file = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("file") {
            match field.bytes().await {
                Ok(bytes) => file = Some(bytes.to_vec()),
                Err(e) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"message": e.to_string()})),
                    )
                        .into_response();
                }
            }
        }
    }
    let Some(file) = file else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "multipart field `file` is missing"})),
        )
            .into_response();
    };
    let (duration, never, started) = {
        let mut s = state.lock().unwrap();
        let Some(started) = begin(&mut s) else {
            return already_running();
        };
        s.last_op = "restore";
        (s.op_duration, s.faults.never_finish, started)
    };
    let parsed = read_db_file(&file);
    {
        let mut s = state.lock().unwrap();
        let id = match (s.made.iter().find(|(f, _)| *f == file), &parsed) {
            (Some((_, id)), _) => id.clone(),
            (None, Ok((v, _))) => format!("{v}_{started}"),
            (None, Err(_)) => format!("unknown_{started}"),
        };
        s.restore = Some(OpStatus {
            succeeded: false,
            id,
            status_message: "running".into(),
            start_date: started,
            end_date: None,
        });
    }
    if !never {
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            let mut s = state.lock().unwrap();
            let outcome = match parsed {
                Err(e) => (false, format!("Restore failed: {e}")),
                Ok((v, _)) if s.faults.refuse_restore_versions.contains(&v) => {
                    let last = s
                        .faults
                        .last_compatible_version
                        .clone()
                        .unwrap_or_else(|| "unknown".into());
                    (
                        false,
                        format!(
                            "Restore failed: the database backup was made with Connectware {v}, which this version cannot restore. The last Connectware version that can restore it is {last}."
                        ),
                    )
                }
                Ok(_) if s.faults.restore_fails.is_some() => {
                    (false, s.faults.restore_fails.clone().unwrap())
                }
                Ok((v, db)) => {
                    s.db = db;
                    (true, format!("OK (restored a backup of Connectware {v})"))
                }
            };
            s.running = false;
            if let Some(r) = s.restore.as_mut() {
                r.succeeded = outcome.0;
                r.status_message = outcome.1;
                r.end_date = Some(now());
            }
        });
    }
    StatusCode::ACCEPTED.into_response()
}

async fn get_db(State(state): State<Shared>) -> Response {
    Json(state.lock().unwrap().db.clone()).into_response()
}

async fn put_db(State(state): State<Shared>, Json(db): Json<Value>) -> Response {
    state.lock().unwrap().db = db;
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(state): State<Shared>) -> Response {
    Json(state.lock().unwrap().faults.clone()).into_response()
}

async fn put_faults(State(state): State<Shared>, Json(faults): Json<Faults>) -> Response {
    state.lock().unwrap().faults = faults;
    StatusCode::NO_CONTENT.into_response()
}

async fn get_requests(State(state): State<Shared>) -> Response {
    Json(state.lock().unwrap().requests.clone()).into_response()
}
