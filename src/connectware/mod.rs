//! The client of the Connectware maintenance API (SPEC §4).
//!
//! Every server-side operation follows one pattern: wait until nothing runs, note the status,
//! start ours, then poll until `running` is false **and** the operation's `id` or `startDate`
//! differs from what we noted (so a stale "finished" is never mistaken for ours). Connection
//! errors and 5xx are retried with backoff until the deadline; 4xx never are; a POST answered
//! 409/423/429/503 means "busy": wait and try again. Files are streamed both ways. Secrets go
//! in headers only, never in a URL, a log line or an error message.

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::task::{ApiConfig, Credentials};
use crate::hashing::HashingWriter;

/// Longest wait for one try of the TCP and TLS connection (never more than
/// `api.connect_timeout_s`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one small request (status, info, starting an operation), body included;
/// never past the operation's deadline (`api.timeout_s`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read from the server, except the streamed database file (SPEC §6): an
/// endless body is an error, never unbounded memory.
const MAX_BODY: u64 = 1024 * 1024;
/// First pause before a retry; doubled each time up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The pauses between retries: from [`BACKOFF_START`], doubling up to [`BACKOFF_MAX`], never
/// past the deadline.
struct Backoff {
    pause: Duration,
    deadline: Instant,
}

impl Backoff {
    fn until(deadline: Instant) -> Backoff {
        Backoff {
            pause: BACKOFF_START,
            deadline,
        }
    }

    /// The pause before the next try, or None when waiting it would pass the deadline.
    fn next(&mut self) -> Option<Duration> {
        let pause = self.pause;
        if Instant::now() + pause > self.deadline {
            return None;
        }
        self.pause = (pause * 2).min(BACKOFF_MAX);
        Some(pause)
    }
}

/// The status of the last backup or restore, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpStatus {
    pub succeeded: bool,
    pub id: Option<String>,
    pub status_message: Option<String>,
    pub start_date: Option<String>,
}

/// `GET /api/maintenance/db`.
#[derive(Debug, Clone, Default)]
pub struct DbStatus {
    pub running: bool,
    pub backup: Option<OpStatus>,
    pub restore: Option<OpStatus>,
}

#[derive(Deserialize)]
struct RawStatus {
    running: bool,
    #[serde(default)]
    backup: Option<RawOp>,
    #[serde(default)]
    restore: Option<RawOp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOp {
    /// The vendor's spelling.
    #[serde(default)]
    succeded: Option<bool>,
    #[serde(default)]
    succeeded: Option<bool>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status_message: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
}

impl From<RawOp> for OpStatus {
    fn from(r: RawOp) -> OpStatus {
        OpStatus {
            succeeded: r.succeded.or(r.succeeded).unwrap_or(false),
            id: r.id,
            status_message: r.status_message,
            start_date: r.start_date,
        }
    }
}

/// Which server-side operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Backup,
    Restore,
}

impl DbStatus {
    fn op(&self, which: Which) -> Option<&OpStatus> {
        match which {
            Which::Backup => self.backup.as_ref(),
            Which::Restore => self.restore.as_ref(),
        }
    }
}

/// A database backup downloaded into a file.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// The server's id of the backup.
    pub backup_id: String,
    pub status_message: Option<String>,
    pub sha256: String,
    pub bytes: u64,
}

/// An API client for one task.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    credentials: Credentials,
    timeout: Duration,
    poll: Duration,
    /// How long an unreachable server is retried (`api.connect_timeout_s`).
    connect_timeout: Duration,
    /// Since when every try has failed to reach the server (None once it answered): the
    /// budget of `connect_timeout` is counted over the client's whole life, so a second call
    /// after an unreachable first one does not wait that long again.
    unreachable_since: Mutex<Option<Instant>>,
}

/// The client for a task's `api`, if it has one; `validate_certs: false` adds a warning.
pub fn client_for(api: Option<&ApiConfig>, warnings: &mut Vec<String>) -> Result<Option<Client>> {
    let Some(config) = api else { return Ok(None) };
    if !config.validate_certs {
        warnings.push(
            "api.validate_certs is false: the server's identity is not checked; give api.ca_file instead".to_string(),
        );
    }
    Client::new(config).map(Some)
}

impl Client {
    pub fn new(config: &ApiConfig) -> Result<Client> {
        let tls = crate::tls::client_config(config.validate_certs, config.ca_file.as_deref())?;
        let http = crate::tls::http_client(tls, CONNECT_TIMEOUT.min(config.connect_timeout))
            .map_err(|e| {
                Error::new(
                    ErrorKind::ApiTlsError,
                    format!("cannot set up the HTTP client: {e}"),
                )
            })?;
        Ok(Client {
            http,
            base: config.url.clone(),
            credentials: config.credentials.clone(),
            timeout: config.timeout,
            poll: config.poll_interval,
            connect_timeout: config.connect_timeout,
            unreachable_since: Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.credentials {
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(&password.0))
            }
            Credentials::Bearer(token) => request.bearer_auth(&token.0),
        }
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.authed(self.http.get(self.url(path)))
    }

    /// Sends a request built by `make` until it succeeds, retrying what may pass.
    fn call(
        &self,
        what: &str,
        deadline: Instant,
        post: bool,
        make: &dyn Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut backoff = Backoff::until(deadline);
        loop {
            // Every request ends by the deadline, whatever its own limit (the database upload
            // has none of its own): the total covers connecting, sending and the body.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out(&format!("an answer to {what}")));
            }
            let mut request = make()?.build().map_err(|e| {
                Error::new(
                    ErrorKind::ApiProtocolError,
                    format!("cannot build the request {what} for {}: {e}", self.base),
                )
            })?;
            let limit = request.timeout().map_or(left, |own| left.min(*own));
            *request.timeout_mut() = Some(limit);
            let sent = self.http.execute(request);
            if sent.is_ok() {
                self.reached();
            }
            let failure = match sent {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(mut response) => {
                    let status = response.status();
                    let mut bytes = Vec::new();
                    let _ = (&mut response).take(64 * 1024).read_to_end(&mut bytes);
                    let body: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
                    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                        return Err(Error::new(
                            ErrorKind::ApiAuthFailed,
                            format!("Connectware at {} refused the credentials for {what} (HTTP {status}): check api.username and the password or token, and that the user may use /api/maintenance", self.base),
                        )
                        .detail("http_status", status.as_u16()));
                    }
                    let busy = post && matches!(status.as_u16(), 409 | 423 | 429 | 503);
                    if status == StatusCode::NOT_FOUND && what.contains("/api/maintenance") {
                        return Err(Error::new(
                            ErrorKind::ApiProtocolError,
                            format!(
                                "Connectware at {} answered HTTP 404 Not Found to {what}: api.url must be Connectware's base URL, without /api (e.g. https://connectware.example, not https://connectware.example/api){}",
                                self.base,
                                if self.base.ends_with("/api") { "; remove the /api at its end" } else { "" }
                            ),
                        )
                        .detail("http_status", status.as_u16()));
                    }
                    if !busy && !status.is_server_error() {
                        return Err(Error::new(
                            ErrorKind::ApiProtocolError,
                            format!(
                                "Connectware at {} answered HTTP {status} to {what}: {}",
                                self.base,
                                body.trim()
                            ),
                        )
                        .detail("http_status", status.as_u16()));
                    }
                    Error::new(
                        ErrorKind::ApiUnreachable,
                        format!("Connectware at {} kept answering HTTP {status} to {what} until the timeout: {}", self.base, body.trim()),
                    )
                    .detail("http_status", status.as_u16())
                }
                Err(e) => {
                    if let Some(tls) = tls_problem(&e) {
                        return Err(Error::new(
                            ErrorKind::ApiTlsError,
                            format!("the TLS connection to {} failed: {tls}", self.base),
                        ));
                    }
                    if e.is_timeout() && !e.is_connect() {
                        // Connected, but no answer in time: the server is there and slow (or
                        // stuck); waited for within the deadline like a 5xx.
                        self.reached();
                        Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "Connectware at {} did not answer {what} within {:.1}s: raise api.timeout_s, or check Connectware's state",
                                self.base,
                                limit.as_secs_f64()
                            ),
                        )
                    } else {
                        let since = self.unreachable_since();
                        let failure = Error::new(
                            ErrorKind::ApiUnreachable,
                            format!(
                                "cannot reach Connectware at {} for {what}: {}; check api.url and the network, or raise api.connect_timeout_s ({}s) to wait longer",
                                self.base,
                                chain(&e),
                                self.connect_timeout.as_secs_f64()
                            ),
                        );
                        // An unreachable server is retried for connect_timeout_s, not for the
                        // whole timeout_s.
                        let pause = backoff.pause;
                        if since.elapsed() + pause > self.connect_timeout {
                            return Err(failure);
                        }
                        failure
                    }
                }
            };
            let Some(pause) = backoff.next() else {
                return Err(failure);
            };
            crate::progress::log(&format!(
                "cwbackup: {}; retrying in {:.1}s",
                failure.message,
                pause.as_secs_f64()
            ));
            std::thread::sleep(pause);
        }
    }

    /// Notes that the server answered: an unreachable spell is over.
    fn reached(&self) {
        *self
            .unreachable_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Since when the server has been unreachable (now, if it was reachable until now).
    fn unreachable_since(&self) -> Instant {
        *self
            .unreachable_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Instant::now)
    }

    /// Reads a small answer (status, info) whole, at most [`MAX_BODY`] bytes.
    fn small_body(&self, mut response: Response, what: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        (&mut response)
            .take(MAX_BODY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                let timed_out = e.kind() == std::io::ErrorKind::TimedOut
                    || chain(&e).contains("timed out");
                Error::new(
                    if timed_out { ErrorKind::Timeout } else { ErrorKind::ApiUnreachable },
                    format!(
                        "the answer of Connectware at {} to {what} {}: {}",
                        self.base,
                        if timed_out { "did not arrive in time (raise api.timeout_s, or check Connectware's state)" } else { "broke off" },
                        chain(&e)
                    ),
                )
            })?;
        if bytes.len() as u64 > MAX_BODY {
            return Err(Error::new(
                ErrorKind::ApiProtocolError,
                format!(
                    "the answer of {} to {what} is larger than {} MiB, which Connectware never sends: is api.url Connectware?",
                    self.base,
                    MAX_BODY >> 20
                ),
            ));
        }
        Ok(bytes)
    }

    /// The maintenance status, retried until `timeout_s`.
    pub fn status(&self) -> Result<DbStatus> {
        self.status_until(crate::clock::deadline_in(self.timeout))
    }

    fn status_until(&self, deadline: Instant) -> Result<DbStatus> {
        let response = self.call("GET /api/maintenance/db", deadline, false, &|| {
            Ok(self.get("/api/maintenance/db").timeout(REQUEST_TIMEOUT))
        })?;
        let body = self.small_body(response, "GET /api/maintenance/db")?;
        let raw: RawStatus = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorKind::ApiProtocolError,
                format!(
                    "the status from {}/api/maintenance/db is not what Connectware sends: {e}",
                    self.base
                ),
            )
        })?;
        Ok(DbStatus {
            running: raw.running,
            backup: raw.backup.map(Into::into),
            restore: raw.restore.map(Into::into),
        })
    }

    /// The version Connectware reports in `/api/system/info`, if the user may read it.
    pub fn server_version(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Info {
            version: String,
        }
        let deadline = crate::clock::deadline_in(REQUEST_TIMEOUT.min(self.timeout));
        let response = self
            .call("GET /api/system/info", deadline, false, &|| {
                Ok(self.get("/api/system/info").timeout(REQUEST_TIMEOUT))
            })
            .ok()?;
        let body = self.small_body(response, "GET /api/system/info").ok()?;
        serde_json::from_slice::<Info>(&body)
            .ok()
            .map(|i| i.version)
    }

    /// Waits until no server-side operation runs; returns that status.
    fn wait_idle(&self, deadline: Instant) -> Result<DbStatus> {
        loop {
            let status = self.status_until(deadline)?;
            if !status.running {
                return Ok(status);
            }
            if Instant::now() + self.poll > deadline {
                return Err(self.timed_out("another database operation to finish"));
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Polls until our operation has finished: nothing runs and the operation differs from
    /// the one noted before we started.
    fn wait_finished(
        &self,
        which: Which,
        before: &DbStatus,
        deadline: Instant,
    ) -> Result<OpStatus> {
        let noted = before
            .op(which)
            .map(|o| (o.id.clone(), o.start_date.clone()));
        let mut waiting = crate::progress::Waiting::new(match which {
            Which::Backup => "the database backup",
            Which::Restore => "the database restore",
        });
        loop {
            waiting.tick();
            std::thread::sleep(
                self.poll
                    .min(deadline.saturating_duration_since(Instant::now())),
            );
            let status = self.status_until(deadline)?;
            if let Some(op) = status.op(which)
                && !status.running
                && noted.as_ref() != Some(&(op.id.clone(), op.start_date.clone()))
            {
                return Ok(op.clone());
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(match which {
                    Which::Backup => "the database backup to finish",
                    Which::Restore => "the database restore to finish",
                }));
            }
        }
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "waited {}s for {what} on {}: raise api.timeout_s, or check Connectware's state",
                self.timeout.as_secs(),
                self.base
            ),
        )
    }

    /// Starts a database backup on the server, waits for it, and streams the file into the
    /// writer `dest` gives (called again, to start over, when a transfer breaks; the writer
    /// must then replace what the last one wrote).
    pub fn backup(&self, dest: &mut dyn FnMut() -> Result<Box<dyn Write + Send>>) -> Result<Downloaded> {
        let deadline = crate::clock::deadline_in(self.timeout);
        let before = self.wait_idle(deadline)?;
        self.call("POST /api/maintenance/db/backup", deadline, true, &|| {
            Ok(self
                .authed(self.http.post(self.url("/api/maintenance/db/backup")))
                .timeout(REQUEST_TIMEOUT))
        })?;
        let done = self.wait_finished(Which::Backup, &before, deadline)?;
        let message = done.status_message.clone().unwrap_or_default();
        if !done.succeeded {
            return Err(Error::new(
                ErrorKind::DbBackupFailed,
                format!("Connectware's database backup failed: {message}"),
            )
            .detail("status_message", message));
        }
        let Some(backup_id) = done.id.clone() else {
            return Err(Error::new(
                ErrorKind::ApiProtocolError,
                "Connectware reported a finished backup without an id",
            ));
        };
        let (sha256, bytes) = self.download(dest, crate::clock::deadline_in(self.timeout))?;
        Ok(Downloaded {
            backup_id,
            status_message: done.status_message,
            sha256,
            bytes,
        })
    }

    /// Streams `GET /api/maintenance/db/backup` into a writer from `dest` while hashing it; a
    /// broken transfer starts again from the beginning, into a new writer, until the deadline.
    fn download(
        &self,
        dest: &mut dyn FnMut() -> Result<Box<dyn Write + Send>>,
        deadline: Instant,
    ) -> Result<(String, u64)> {
        let mut backoff = Backoff::until(deadline);
        let mut buf = vec![0u8; 256 * 1024];
        let kept_breaking = |why: &str| {
            Error::new(
                ErrorKind::ApiUnreachable,
                format!(
                    "the database backup download from {} kept breaking until the timeout: {why}",
                    self.base
                ),
            )
        };
        let mut last_break: Option<String> = None;
        loop {
            let asked = self.call("GET /api/maintenance/db/backup", deadline, false, &|| {
                Ok(self.get("/api/maintenance/db/backup"))
            });
            let mut response = match (asked, &last_break) {
                (Ok(response), _) => response,
                // The deadline came while starting again after a break: the break is the news.
                (Err(e), Some(why)) if e.kind == ErrorKind::Timeout => {
                    return Err(kept_breaking(why));
                }
                (Err(e), _) => return Err(e),
            };
            let expected = response.content_length();
            let mut progress = match expected {
                Some(total) => crate::progress::Progress::with_total("downloading db", total),
                None => crate::progress::Progress::new("downloading db"),
            };
            let mut out = HashingWriter::new(dest()?);
            let mut first = Vec::with_capacity(2);
            let broke = loop {
                match response.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        if first.len() < 2 {
                            let more = (2 - first.len()).min(n);
                            first.extend_from_slice(&buf[..more]);
                        }
                        progress.bytes(n as u64);
                        out.write_all(&buf[..n])
                            .map_err(|e| Error::storing("the database backup", e))?
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e.to_string()),
                }
            };
            let (_, sha256, bytes) = out
                .finish()
                .map_err(|e| Error::storing("the database backup", e))?;
            let broke = broke.or_else(|| {
                expected
                    .filter(|n| *n != bytes)
                    .map(|n| format!("got {bytes} of {n} bytes"))
            });
            match broke {
                None => {
                    if first != [0x1f, 0x8b] {
                        return Err(Error::new(
                            ErrorKind::ApiProtocolError,
                            format!(
                                "{}/api/maintenance/db/backup sent something that is not a .tgz: is api.url Connectware?",
                                self.base
                            ),
                        ));
                    }
                    return Ok((sha256, bytes));
                }
                Some(why) => {
                    let Some(pause) = backoff.next() else {
                        return Err(kept_breaking(&why));
                    };
                    crate::progress::log(&format!(
                        "cwbackup: the database backup download broke ({why}); starting it again"
                    ));
                    last_break = Some(why);
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// Uploads a database backup file to `POST /api/maintenance/db/restore` (streamed from the
    /// reader `open` gives, with its length; called again for each try) and waits for the
    /// restore to finish.
    pub fn restore(
        &self,
        open: &dyn Fn() -> Result<(Box<dyn Read + Send>, u64)>,
    ) -> Result<OpStatus> {
        let deadline = crate::clock::deadline_in(self.timeout);
        let before = self.wait_idle(deadline)?;
        self.call("POST /api/maintenance/db/restore", deadline, true, &|| {
            let (stored, length) = open()?;
            let part = reqwest::blocking::multipart::Part::reader_with_length(stored, length)
                .file_name("db.tgz")
                // What reqwest's Form::file gave a `.tgz` before (mime_guess), kept.
                .mime_str("application/x-compressed")
                .map_err(|e| Error::new(ErrorKind::InternalError, e.to_string()))?;
            let form = reqwest::blocking::multipart::Form::new().part("file", part);
            Ok(self
                .authed(self.http.post(self.url("/api/maintenance/db/restore")))
                .multipart(form))
        })?;
        // The server accepted the restore: from here on the database may have changed, and
        // every error says so (`restore_started`).
        let started = |e: Error| e.detail("restore_started", true);
        let done = self
            .wait_finished(Which::Restore, &before, deadline)
            .map_err(started)?;
        if done.succeeded {
            return Ok(done);
        }
        let message = done.status_message.clone().unwrap_or_default();
        if let Some(last) = last_compatible_version(&message) {
            return Err(Error::new(
                ErrorKind::VersionIncompatible,
                format!("Connectware refused to restore this database backup: {message} (restore it on Connectware {last} or older, then upgrade)"),
            )
            .detail("last_compatible_version", last)
            .detail("status_message", message));
        }
        Err(Error::new(
            ErrorKind::DbRestoreFailed,
            format!("Connectware's database restore failed: {message}"),
        )
        .detail("status_message", message)
        .detail("restore_started", true))
    }
}

/// The Connectware version in a database backup id `<version>_<ISO time>`.
pub fn version_of(backup_id: &str) -> Option<String> {
    let (version, time) = backup_id.split_once('_')?;
    (!version.is_empty() && !time.is_empty()).then(|| version.to_string())
}

/// The version a refusal message names as the last one able to restore the file: the first
/// version number after the word "last".
pub fn last_compatible_version(message: &str) -> Option<String> {
    let at = message.to_ascii_lowercase().find("last")?;
    message[at..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|w| w.trim_matches('.'))
        .find(|w| {
            w.split('.').count() >= 2
                && w.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// The TLS failure inside a request error, if that is what it is. The rustls error sits inside
/// an `io::Error`, whose `source()` skips it, so each link is also opened with `get_ref`; the
/// text check catches wrappers that hide the type altogether.
fn tls_problem(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(s), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return Some(tls_sentence(&tls.to_string()));
            }
        }
        source = s.source();
    }
    let text = chain(e);
    [
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
    ]
    .iter()
    .find_map(|needle| text.find(needle).map(|at| tls_sentence(&text[at..])))
}

/// What a TLS failure means for the operator, as a sentence that says what to do (rustls'
/// own text reads `invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`). Read from
/// the error's text, which is all that some wrappers leave of it.
fn tls_sentence(text: &str) -> String {
    const GIVE_CA: &str = "give api.ca_file: the CA that signed the server's certificate (Connectware's cybus_ca.crt) or, for a self-signed certificate, that certificate itself";
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if has(&["CaUsedAsEndEntity"]) {
        format!(
            "the server shows a CA certificate as its own (a self-signed certificate, as `openssl req -x509` makes it) that cwbackup does not trust; {GIVE_CA}"
        )
    } else if has(&[
        "UnknownIssuer",
        "BadSignature",
        "UnhandledCriticalExtension",
    ]) {
        format!(
            "the server's certificate is not signed by a CA cwbackup trusts (the api.ca_file given, if any, is not the right one); {GIVE_CA}"
        )
    } else if has(&["NotValidForName", "not valid for name"]) {
        "the server's certificate is not valid for the host name in api.url; use a name the certificate holds (e.g. the one Connectware was installed with)".to_string()
    } else if has(&["NotValidYet", "not valid before"]) {
        "the server's certificate is not valid yet; check this machine's clock".to_string()
    } else if has(&["Expired", "expired", "not valid after"]) {
        "the server's certificate has expired; renew it on Connectware, or check this machine's clock".to_string()
    } else if has(&["Revoked"]) {
        "the server's certificate has been revoked; install a new one on Connectware".to_string()
    } else if has(&["fatal alert", "AlertReceived"]) {
        format!(
            "the server refused the TLS handshake ({text}); check that api.url is Connectware's HTTPS address"
        )
    } else {
        format!("{text}; {GIVE_CA}, or check that api.url is Connectware's HTTPS address")
    }
}

/// An error with its causes, for messages.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_compatible_version() {
        let m = "Restore failed: the database backup was made with Connectware 1.0.73, which this version cannot restore. The last Connectware version that can restore it is 1.4.1.";
        assert_eq!(last_compatible_version(m).as_deref(), Some("1.4.1"));
        assert_eq!(last_compatible_version("disk full"), None);
    }

    #[test]
    fn reads_both_spellings_and_null_operations() {
        let raw: RawStatus = serde_json::from_str(
            r#"{"running":false,"backup":{"succeded":true,"id":"1.0.73_x","statusMessage":"OK","startDate":"s","endDate":"e"},"restore":null}"#,
        )
        .unwrap();
        let backup: OpStatus = raw.backup.unwrap().into();
        assert!(backup.succeeded);
        assert!(raw.restore.is_none());
        let raw: RawStatus =
            serde_json::from_str(r#"{"running":true,"backup":{"succeeded":true}}"#).unwrap();
        assert!(OpStatus::from(raw.backup.unwrap()).succeeded);
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn version_from_id() {
        assert_eq!(
            version_of("1.0.73_2022-02-16T15:37:19.242Z").as_deref(),
            Some("1.0.73")
        );
        assert_eq!(version_of("nounderscore"), None);
    }
}
