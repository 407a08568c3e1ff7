//! A repository in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS): the second [`Backend`]
//! (SPEC §10).
//!
//! ```text
//! <prefix>/
//!   lock.json             the repository lock: {host, pid, operation, since, expires_at}
//!   .cwbackup-probe       the object that shows the server honours conditional writes
//!   .staging/<token>/     sets being uploaded; emptied by the next task that locks
//!   <backup_id>/          a set: its files, manifest.json written last
//! ```
//!
//! Requests are signed by `rusty-s3` (sans-IO, presigned URLs) and sent with the blocking
//! reqwest client; TLS is set up as for the API (`ca_file`, `validate_certs`). Connection
//! errors, 5xx, 429 and `SlowDown` are retried with backoff; any other refusal is
//! `repository_error` with the server's `Code` and `Message` in `details`.
//!
//! A new set's id is known only at commit (the database backup names the version), so its
//! files are uploaded under `.staging/<token>/` — streamed, multipart in [`PART`]-byte parts,
//! two in memory per file (the one being sent, the one being filled; their buffers reused) —
//! and read back by the
//! caller's checksums before commit. Commit copies each file server-side into `<id>/`
//! (CopyObject), confirms each copy's size, uploads `manifest.json` last, then deletes the
//! staged objects. A set whose manifest is missing is incomplete: never used, and deleted
//! (with whatever `.staging/` holds) by [`Backend::clean`], which backup, import, prune and
//! copy call while holding the lock. A set is deleted manifest first, so an interrupted
//! deletion leaves an incomplete set, never a damaged complete one.
//!
//! The lock is the object `lock.json`, created with `If-None-Match: *` and renewed by a
//! background thread with `If-Match: <etag>` every quarter of its lifetime (10 minutes, or
//! `CWBACKUP_TEST_S3_LOCK_TTL_S` seconds: a test-only knob). A lock past its `expires_at`
//! (its holder died) is taken over with `If-Match` on the stale lock's ETag. A server that
//! ignores conditional writes could let two tasks hold the lock at once: it is detected with
//! a probe object (a second `If-None-Match: *` PUT must fail) and refused.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use reqwest::Url;
use reqwest::blocking::Response;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::backend::{Backend, Held, NewSet};
use crate::error::{Error, ErrorKind, Result};
use crate::task::{Operation, S3Config};

/// Size of one part of a multipart upload (S3 wants at least 5 MiB but for the last).
pub const PART: usize = 5 << 20;
/// Parts waiting for the upload thread, besides the one it sends and the one being filled:
/// none (the writer hands a full part over when the thread is ready for it). Measured: a
/// queued part cost 5 MiB of peak RSS and bought no speed.
const QUEUED_PARTS: usize = 0;
/// Largest object a single CopyObject may copy; larger ones are copied in parts.
const COPY_MAX: u64 = 5 << 30;
/// Size of one part of a multipart copy.
const COPY_PART: u64 = 1 << 30;
/// Largest listing page read.
const MAX_LISTING: u64 = 16 << 20;
/// The longest one download request may take; a longer download goes on from where it
/// stopped (a `Range` request), so this bounds a stalled connection, not a file's size.
const DOWNLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Where a set being published (or deleted) is named, inside its staging directory, so that
/// a clean after an interruption deletes exactly that set's leftovers and nothing else.
const PUBLISHING: &str = ".publishing";
/// How long a presigned request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Attempts of one request before giving up (connection errors, 5xx, 429, SlowDown).
const ATTEMPTS: u32 = 6;
/// The first wait between two attempts; doubled each time, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// The longest a request other than a download may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lock lives without renewal.
const LOCK_TTL: Duration = Duration::from_secs(600);
/// Test-only: a shorter lock lifetime, in seconds.
pub const LOCK_TTL_ENV: &str = "CWBACKUP_TEST_S3_LOCK_TTL_S";
/// How often a waiting task tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(500);
/// Largest lock or error body read.
const SMALL_BODY: u64 = 64 * 1024;

const STAGING: &str = ".staging/";
const LOCK: &str = "lock.json";
const PROBE: &str = ".cwbackup-probe";

/// A repository in a bucket.
#[derive(Clone)]
pub struct S3 {
    client: Arc<Client>,
}

/// The signing keys, the HTTP client and where the repository is.
struct Client {
    http: reqwest::blocking::Client,
    bucket: Bucket,
    credentials: Credentials,
    /// `<prefix>/`, or empty for the bucket's root.
    root: String,
    /// The repository lock this task holds, as far as its renewals know: every destructive
    /// step (publishing a manifest, deleting) checks it first, so a task that lost its lock
    /// (taken over after a stall) never publishes or deletes under another's.
    lock: Mutex<Option<LockState>>,
}

/// What the renewals of a held lock know.
#[derive(Debug, Clone, Copy)]
struct LockState {
    /// Another task took the lock over.
    lost: bool,
    /// Until when the lock is surely still ours: the last renewal plus three quarters of the
    /// lifetime (another task takes it over only after its `expires_at`).
    until: Instant,
}

impl Client {
    /// Refuses a destructive step when this task held the lock and may have lost it.
    fn check_lock(&self, what: &str) -> Result<()> {
        match *self.lock.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(state) if state.lost || Instant::now() > state.until => Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "the repository lock {} was lost (taken over after this task could not renew it), so cwbackup did not {what}: run the task again",
                    self.url(&format!("{}{LOCK}", self.root))
                ),
            )),
            _ => Ok(()),
        }
    }

    fn set_lock(&self, state: Option<LockState>) {
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }
}

/// The methods the backend sends.
#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

/// What a request sends.
enum Payload<'a> {
    /// A small body, copied for each attempt.
    Bytes(&'a [u8]),
    /// A part of a multipart upload: each attempt reads the one shared buffer (no copy of
    /// the part, so an upload holds its parts once).
    Shared(&'a Arc<Vec<u8>>),
}

/// A shared buffer as a reader's bytes.
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One request: signed again for every attempt.
struct Request<'a> {
    method: Method,
    /// The object's key (for messages), or empty for the bucket.
    key: &'a str,
    sign: &'a dyn Fn() -> Url,
    /// Headers sent as they are (signed ones are also in the action).
    headers: &'a [(&'a str, &'a str)],
    body: Option<Payload<'a>>,
    /// Statuses besides 2xx handed back to the caller (404, 412…).
    accept: &'a [u16],
    /// None for a download, whose body may take long.
    timeout: Option<Duration>,
}

impl S3 {
    /// The repository described by `config`; the bucket is asked once (a listing), so that a
    /// wrong endpoint, key or bucket fails here with the server's answer.
    pub fn open(config: &S3Config) -> Result<S3> {
        let tls = crate::tls::client_config(config.validate_certs, config.ca_file.as_deref())
            .map_err(|e| Error::new(ErrorKind::RepositoryError, e.message))?;
        let http = crate::tls::http_client(tls, CONNECT_TIMEOUT).map_err(|e| {
                Error::new(
                    ErrorKind::RepositoryError,
                    format!("cannot set up the HTTP client: {e}"),
                )
            })?;
        let endpoint = Url::parse(&config.endpoint).map_err(|e| {
            Error::new(
                ErrorKind::InvalidTask,
                format!("/repository/s3/endpoint: {e}"),
            )
        })?;
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidTask,
                format!(
                    "/repository/s3: cannot address bucket {} at {}: {e}",
                    config.bucket, config.endpoint
                ),
            )
        })?;
        let root = if config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", config.prefix)
        };
        let client = Client {
            http,
            bucket,
            credentials: Credentials::new(
                config.access_key_id.clone(),
                config.secret_access_key.0.clone(),
            ),
            root,
            lock: Mutex::new(None),
        };
        client.list_page(&client.root, Some("/"), None, Some(1))?;
        Ok(S3 {
            client: Arc::new(client),
        })
    }
}

impl Client {
    /// The URL of a key, without a signature (for messages).
    fn url(&self, key: &str) -> String {
        self.bucket.object_url(key).to_string()
    }

    /// Sends a request, retrying connection errors, 5xx, 429 and `SlowDown` with backoff.
    /// A 2xx answer, or one in `accept`, is returned; any other is `repository_error` with the
    /// server's code and message.
    fn send(&self, what: &str, r: &Request<'_>) -> Result<Response> {
        let mut wait = FIRST_BACKOFF;
        let url = self.url(r.key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let method = match r.method {
                Method::Get => reqwest::Method::GET,
                Method::Head => reqwest::Method::HEAD,
                Method::Put => reqwest::Method::PUT,
                Method::Post => reqwest::Method::POST,
                Method::Delete => reqwest::Method::DELETE,
            };
            let mut req = self.http.request(method, (r.sign)());
            for (k, v) in r.headers {
                req = req.header(*k, *v);
            }
            match &r.body {
                Some(Payload::Bytes(b)) => req = req.body(b.to_vec()),
                Some(Payload::Shared(part)) => {
                    let len = part.len() as u64;
                    let reader = std::io::Cursor::new(SharedBytes(Arc::clone(part)));
                    req = req.body(reqwest::blocking::Body::sized(reader, len));
                }
                None => {}
            }
            if let Some(t) = r.timeout {
                req = req.timeout(t);
            }
            let retry_because = match req.send() {
                Err(e) => {
                    if let Some(why) = tls_problem(&e) {
                        return Err(Error::new(
                            ErrorKind::RepositoryError,
                            format!(
                                "cannot {what} {url}: the TLS handshake failed: {why}: give the server's certificate or CA in `ca_file` (validate_certs: false is insecure)"
                            ),
                        )
                        .detail("url", url));
                    }
                    format!("{}", e.without_url())
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if resp.status().is_success() || r.accept.contains(&status) {
                        return Ok(resp);
                    }
                    let body = small_body(resp);
                    let (code, message) = (tag(&body, "Code"), tag(&body, "Message"));
                    if status >= 500 || status == 429 || code == "SlowDown" {
                        format!("{status} {code} {message}")
                    } else {
                        return Err(refused(what, &url, status, &code, &message));
                    }
                }
            };
            if attempt >= ATTEMPTS {
                return Err(Error::new(
                    ErrorKind::RepositoryError,
                    format!(
                        "cannot {what} {url}: {retry_because} (tried {attempt} times): check that the endpoint is reachable and healthy, then run again"
                    ),
                )
                .detail("url", url));
            }
            crate::progress::log(&format!(
                "cwbackup: {what} {url}: {retry_because}; trying again in {wait:?}"
            ));
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }

    /// One page of a listing under `prefix`.
    fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        max: Option<usize>,
    ) -> Result<rusty_s3::actions::ListObjectsV2Response> {
        let sign = || {
            let mut a = self.bucket.list_objects_v2(Some(&self.credentials));
            a.with_prefix(prefix);
            if let Some(d) = delimiter {
                a.with_delimiter(d);
            }
            if let Some(t) = token {
                a.with_continuation_token(t);
            }
            if let Some(m) = max {
                a.with_max_keys(m);
            }
            a.sign(SIGNED_FOR)
        };
        let resp = self.send(
            "list",
            &Request {
                method: Method::Get,
                key: prefix,
                sign: &sign,
                headers: &[],
                body: None,
                accept: &[],
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        // A listing page is small (1000 keys); an endless or huge answer is refused, not held.
        let mut text = String::new();
        resp.take(MAX_LISTING + 1)
            .read_to_string(&mut text)
            .map_err(|e| {
                // The error's text may quote the signed URL: only its kind is shown.
                Error::new(
                    ErrorKind::RepositoryError,
                    format!("cannot read the listing of {}: {}", self.url(prefix), e.kind()),
                )
            })?;
        if text.len() as u64 > MAX_LISTING {
            return Err(Error::new(
                ErrorKind::RepositoryError,
                format!(
                    "the listing of {} is larger than {} MiB, which no S3 server sends: check the endpoint",
                    self.url(prefix),
                    MAX_LISTING >> 20
                ),
            ));
        }
        rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| {
            Error::new(
                ErrorKind::RepositoryError,
                format!("cannot read the listing of {}: {e}", self.url(prefix)),
            )
        })
    }

    /// Every key under `prefix` (no delimiter).
    fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, None, token.as_deref(), None)?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(keys),
            }
        }
    }

    /// PUTs a small object; `conditions` are `If-None-Match`/`If-Match` headers. Returns the
    /// status (2xx or one of `accept`) and the new ETag.
    fn put(
        &self,
        key: &str,
        body: &[u8],
        conditions: &[(&str, &str)],
        accept: &[u16],
    ) -> Result<(u16, String)> {
        let checksum = b64(&Sha256::digest(body));
        let sign = || {
            let mut a = self.bucket.put_object(Some(&self.credentials), key);
            a.headers_mut()
                .insert("x-amz-checksum-sha256", checksum.as_str());
            a.sign(SIGNED_FOR)
        };
        let mut headers = vec![("x-amz-checksum-sha256", checksum.as_str())];
        headers.extend_from_slice(conditions);
        let resp = self.send(
            "upload",
            &Request {
                method: Method::Put,
                key,
                sign: &sign,
                headers: &headers,
                body: Some(Payload::Bytes(body)),
                accept,
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        Ok((resp.status().as_u16(), etag(&resp)))
    }

    /// GETs a small object: its body and ETag, or None when missing.
    fn get_small(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let sign = || {
            self.bucket
                .get_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR)
        };
        let resp = self.send(
            "read",
            &Request {
                method: Method::Get,
                key,
                sign: &sign,
                headers: &[],
                body: None,
                accept: &[404],
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let tag = etag(&resp);
        let mut body = Vec::new();
        resp.take(SMALL_BODY).read_to_end(&mut body).map_err(|e| {
            Error::new(
                ErrorKind::RepositoryError,
                format!("cannot read {}: {e}", self.url(key)),
            )
        })?;
        Ok(Some((body, tag)))
    }

    /// The size of an object, or None when missing.
    fn size(&self, key: &str) -> Result<Option<u64>> {
        let sign = || {
            self.bucket
                .head_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR)
        };
        let resp = self.send(
            "look up",
            &Request {
                method: Method::Head,
                key,
                sign: &sign,
                headers: &[],
                body: None,
                accept: &[404],
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        Ok(resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let sign = || {
            self.bucket
                .delete_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR)
        };
        self.send(
            "delete",
            &Request {
                method: Method::Delete,
                key,
                sign: &sign,
                headers: &[],
                body: None,
                accept: &[404],
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        Ok(())
    }

    /// Deletes every object under `prefix`.
    fn delete_all(&self, prefix: &str) -> Result<()> {
        for key in self.keys(prefix)? {
            self.delete(&key)?;
        }
        Ok(())
    }

    /// Copies `from` to `to` inside the bucket, server-side; `size` picks a single copy or a
    /// multipart one.
    fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let source = format!("/{}/{from}", self.bucket.name());
        if size <= COPY_MAX {
            let sign = || {
                let mut a = self.bucket.put_object(Some(&self.credentials), to);
                a.headers_mut().insert("x-amz-copy-source", source.as_str());
                a.sign(SIGNED_FOR)
            };
            let resp = self.send(
                "copy into",
                &Request {
                    method: Method::Put,
                    key: to,
                    sign: &sign,
                    headers: &[("x-amz-copy-source", source.as_str())],
                    body: None,
                    accept: &[],
                    timeout: Some(REQUEST_TIMEOUT),
                },
            )?;
            // A copy may fail after its 200 has been sent: the error is then in the body.
            return self.no_error_in(resp, "copy into", to).map(drop);
        }
        let upload_id = self.create_multipart(to)?;
        let result = (|| {
            let mut etags = Vec::new();
            let mut start = 0;
            let mut number: u16 = 1;
            while start < size {
                let end = (start + COPY_PART).min(size) - 1;
                let range = format!("bytes={start}-{end}");
                let sign = || {
                    let mut a =
                        self.bucket
                            .upload_part(Some(&self.credentials), to, number, &upload_id);
                    a.headers_mut().insert("x-amz-copy-source", source.as_str());
                    a.headers_mut()
                        .insert("x-amz-copy-source-range", range.as_str());
                    a.sign(SIGNED_FOR)
                };
                let resp = self.send(
                    "copy into",
                    &Request {
                        method: Method::Put,
                        key: to,
                        sign: &sign,
                        headers: &[
                            ("x-amz-copy-source", source.as_str()),
                            ("x-amz-copy-source-range", range.as_str()),
                        ],
                        body: None,
                        accept: &[],
                        timeout: Some(REQUEST_TIMEOUT),
                    },
                )?;
                let body = self.no_error_in(resp, "copy into", to)?;
                etags.push(tag(&body, "ETag"));
                start = end + 1;
                number += 1;
            }
            self.complete_multipart(to, &upload_id, &etags)
        })();
        if result.is_err() {
            self.abort_multipart(to, &upload_id);
        }
        result
    }

    /// The body of a 200 answer, refused when it is an `<Error>` (CopyObject,
    /// CompleteMultipartUpload).
    fn no_error_in(&self, resp: Response, what: &str, key: &str) -> Result<String> {
        let status = resp.status().as_u16();
        let body = small_body(resp);
        if body.contains("<Error>") {
            return Err(refused(
                what,
                &self.url(key),
                status,
                &tag(&body, "Code"),
                &tag(&body, "Message"),
            ));
        }
        Ok(body)
    }

    fn create_multipart(&self, key: &str) -> Result<String> {
        let sign = || {
            self.bucket
                .create_multipart_upload(Some(&self.credentials), key)
                .sign(SIGNED_FOR)
        };
        let resp = self.send(
            "start an upload of",
            &Request {
                method: Method::Post,
                key,
                sign: &sign,
                headers: &[],
                body: None,
                accept: &[],
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        let body = small_body(resp);
        rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map(|r| r.upload_id().to_string())
            .map_err(|e| {
                Error::new(
                    ErrorKind::RepositoryError,
                    format!(
                        "cannot start an upload of {}: unreadable answer: {e}",
                        self.url(key)
                    ),
                )
            })
    }

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        part: &Arc<Vec<u8>>,
    ) -> Result<String> {
        let sign = || {
            self.bucket
                .upload_part(Some(&self.credentials), key, number, upload_id)
                .sign(SIGNED_FOR)
        };
        let resp = self.send(
            "upload",
            &Request {
                method: Method::Put,
                key,
                sign: &sign,
                headers: &[],
                body: Some(Payload::Shared(part)),
                accept: &[],
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        Ok(etag(&resp))
    }

    fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<()> {
        let body = self
            .bucket
            .complete_multipart_upload(
                Some(&self.credentials),
                key,
                upload_id,
                etags.iter().map(String::as_str),
            )
            .body();
        let sign = || {
            self.bucket
                .complete_multipart_upload(
                    Some(&self.credentials),
                    key,
                    upload_id,
                    etags.iter().map(String::as_str),
                )
                .sign(SIGNED_FOR)
        };
        let resp = self.send(
            "finish the upload of",
            &Request {
                method: Method::Post,
                key,
                sign: &sign,
                headers: &[],
                body: Some(Payload::Bytes(body.as_bytes())),
                accept: &[],
                timeout: Some(REQUEST_TIMEOUT),
            },
        )?;
        self.no_error_in(resp, "finish the upload of", key)
            .map(drop)
    }

    /// Best effort: an upload left unfinished costs storage until a lifecycle rule removes it.
    fn abort_multipart(&self, key: &str, upload_id: &str) {
        let sign = || {
            self.bucket
                .abort_multipart_upload(Some(&self.credentials), key, upload_id)
                .sign(SIGNED_FOR)
        };
        let _ = self.send(
            "abort the upload of",
            &Request {
                method: Method::Delete,
                key,
                sign: &sign,
                headers: &[],
                body: None,
                accept: &[404],
                timeout: Some(REQUEST_TIMEOUT),
            },
        );
    }

    /// Opens a download of `key` from byte `offset`; a missing object is `NotFound`.
    fn open(&self, key: &str, offset: u64) -> io::Result<Response> {
        let sign = || {
            self.bucket
                .get_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR)
        };
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 {
            &[("range", &range)]
        } else {
            &[]
        };
        let resp = self
            .send(
                "download",
                &Request {
                    method: Method::Get,
                    key,
                    sign: &sign,
                    headers,
                    body: None,
                    accept: &[404],
                    timeout: Some(DOWNLOAD_REQUEST_TIMEOUT),
                },
            )
            .map_err(|e| io::Error::other(e.message))?;
        match resp.status().as_u16() {
            404 => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", self.url(key)),
            )),
            206 => Ok(resp),
            200 if offset == 0 => Ok(resp),
            s => Err(io::Error::other(format!(
                "{} answered {s} to a request from byte {offset}",
                self.url(key)
            ))),
        }
    }
}

/// The TLS error under a failed request (a certificate not trusted…), which no retry mends.
fn tls_problem(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let inner = s
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(s), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return Some(tls.to_string());
            }
        }
        source = s.source();
    }
    // Some layers keep only the message of the error underneath (the top one, which names
    // the signed URL, is left out).
    let mut text = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    [
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
    ]
    .iter()
    .find_map(|needle| text.find(needle).map(|at| text[at..].to_string()))
}

/// Base64 of bytes, as S3's checksum headers take it.
fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An answer's ETag, as sent (with its quotes).
fn etag(resp: &Response) -> String {
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// At most [`SMALL_BODY`] bytes of an answer, as text.
fn small_body(resp: Response) -> String {
    let mut body = Vec::new();
    let _ = resp.take(SMALL_BODY).read_to_end(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

/// The text of the first `<name>…</name>` in an XML answer (S3's errors are that simple).
fn tag(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    xml.find(&open)
        .and_then(|i| {
            let rest = &xml[i + open.len()..];
            rest.find(&close).map(|j| rest[..j].to_string())
        })
        .unwrap_or_default()
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// A refusal by the server: `repository_error` with its code and message, and what to do.
fn refused(what: &str, url: &str, status: u16, code: &str, message: &str) -> Error {
    let hint = match code {
        "NoSuchBucket" => ": create the bucket, or correct `bucket`",
        "SignatureDoesNotMatch" | "InvalidAccessKeyId" => {
            ": check access_key_id and the secret access key"
        }
        "AccessDenied" => {
            ": the key needs s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on the prefix"
        }
        _ => "",
    };
    let code_shown = if code.is_empty() { "(no code)" } else { code };
    Error::new(
        ErrorKind::RepositoryError,
        format!("cannot {what} {url}: the server answered {status} {code_shown}: {message}{hint}"),
    )
    .detail("url", url)
    .detail("status", status)
    .detail("code", code)
    .detail("message", message)
}

impl Backend for S3 {
    fn location(&self) -> String {
        self.client.url(&self.client.root)
    }

    fn set_location(&self, id: &str) -> String {
        self.client.url(&format!("{}{id}", self.client.root))
    }

    fn list(&self) -> Result<Vec<String>> {
        let c = &self.client;
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = c.list_page(&c.root, Some("/"), token.as_deref(), None)?;
            for p in page.common_prefixes {
                let id = p
                    .prefix
                    .strip_prefix(&c.root)
                    .unwrap_or(&p.prefix)
                    .trim_end_matches('/');
                if !id.is_empty() && !id.starts_with('.') {
                    ids.push(id.to_string());
                }
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(ids),
            }
        }
    }

    fn exists(&self, id: &str) -> Result<bool> {
        let c = &self.client;
        let page = c.list_page(&format!("{}{id}/", c.root), None, None, Some(1))?;
        Ok(!page.contents.is_empty())
    }

    fn read(&self, id: &str, file: &str) -> io::Result<Box<dyn Read + Send>> {
        if !super::manifest::safe_file_name(file) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsafe file name {file:?} in a set"),
            ));
        }
        let key = format!("{}{id}/{file}", self.client.root);
        Ok(Box::new(Download::start(self.client.clone(), key)?))
    }

    fn create(&self) -> Result<Box<dyn NewSet>> {
        let token = unique_token();
        Ok(Box::new(S3NewSet {
            client: self.client.clone(),
            staging: format!("{}{STAGING}{token}/", self.client.root),
            files: Arc::default(),
            committed: false,
        }))
    }

    fn delete(&self, id: &str) -> Result<()> {
        let c = &self.client;
        c.check_lock("delete set")?;
        let dir = format!("{}{id}/", c.root);
        // A marker names the set, then the manifest goes first: from then on the set is
        // incomplete, never used, and what an interruption leaves the next clean removes.
        let marker = format!("{}{STAGING}delete.{}/", c.root, unique_token());
        c.put(&format!("{marker}{PUBLISHING}"), id.as_bytes(), &[], &[])?;
        c.delete(&format!("{dir}{}", super::manifest::FILE))?;
        c.delete_all(&dir)?;
        c.delete_all(&marker)
    }

    fn lock(&self, operation: Operation, wait: Duration) -> Result<Held> {
        Ok(Box::new(S3Lock::acquire(
            self.client.clone(),
            operation,
            wait,
        )?))
    }

    fn clean(&self) -> Result<()> {
        let c = &self.client;
        c.check_lock("clean the repository")?;
        // Only what cwbackup left: a set named by a marker of an interrupted publication or
        // deletion (never any other folder under the prefix: it may be another repository),
        // then the staging area itself.
        let staging = format!("{}{STAGING}", c.root);
        let mut token: Option<String> = None;
        let mut named = Vec::new();
        loop {
            let page = c.list_page(&staging, None, token.as_deref(), None)?;
            for o in &page.contents {
                if o.key.ends_with(&format!("/{PUBLISHING}"))
                    && let Some((body, _)) = c.get_small(&o.key)?
                    && let Ok(id) = String::from_utf8(body)
                    && super::manifest::safe_component_name(&id)
                {
                    named.push(id);
                }
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        for id in named {
            let dir = format!("{}{id}/", c.root);
            if c.size(&format!("{dir}{}", super::manifest::FILE))?.is_none() {
                c.delete_all(&dir)?;
            }
        }
        c.delete_all(&staging)
    }

    fn scratch(&self, name: &str) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::new(
                ErrorKind::InternalError,
                format!("{name:?} cannot name a scratch directory"),
            ));
        }
        // A fresh directory of its own in the temporary directory (created, never reused:
        // another user may have put something at a name they could guess).
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("cwbackup-{name}.{}.{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("cannot create the scratch directory", &dir, e))?;
        Ok(dir)
    }
}

/// A name no other task or call of this process uses: pid, time, counter.
fn unique_token() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}.{nanos}.{n}", std::process::id())
}

/// A streamed download that resumes from where it broke off (a `Range` request), as often as
/// a request is retried.
struct Download {
    client: Arc<Client>,
    key: String,
    offset: u64,
    resp: Option<Response>,
    resumes_left: u32,
    /// Bytes came since the last request: an error then resumes without using up an attempt.
    progressed: bool,
}

impl Download {
    fn start(client: Arc<Client>, key: String) -> io::Result<Download> {
        let resp = client.open(&key, 0)?;
        Ok(Download {
            client,
            key,
            offset: 0,
            resp: Some(resp),
            resumes_left: ATTEMPTS,
            progressed: false,
        })
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let resp = match &mut self.resp {
                Some(r) => r,
                None => self.resp.insert(self.client.open(&self.key, self.offset)?),
            };
            match resp.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    self.progressed |= n > 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if self.progressed || self.resumes_left > 0 => {
                    if !std::mem::take(&mut self.progressed) {
                        self.resumes_left -= 1;
                    }
                    self.resp = None;
                    std::thread::sleep(FIRST_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// What became of each file of a new set: its size once uploaded, or why not.
type Files = Arc<Mutex<Vec<(String, std::result::Result<u64, String>)>>>;

/// A set being uploaded under `.staging/<token>/`.
struct S3NewSet {
    client: Arc<Client>,
    /// `<prefix>/.staging/<token>/`.
    staging: String,
    files: Files,
    committed: bool,
}

impl S3NewSet {
    fn outcome(&self, file: &str) -> Option<std::result::Result<u64, String>> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .iter()
            .rev()
            .find(|(f, _)| f == file)
            .map(|(_, o)| o.clone())
    }
}

impl NewSet for S3NewSet {
    fn create(&self, file: &str) -> Result<Box<dyn Write + Send>> {
        if !super::manifest::safe_file_name(file) {
            return Err(Error::new(
                ErrorKind::InternalError,
                format!("unsafe file name {file:?} in a set"),
            ));
        }
        Ok(Box::new(Upload {
            client: self.client.clone(),
            file: file.to_string(),
            key: format!("{}{file}", self.staging),
            buf: Vec::with_capacity(PART),
            parts: None,
            bytes: 0,
            dirty: true,
            failed: None,
            files: self.files.clone(),
        }))
    }

    fn read(&self, file: &str) -> io::Result<Box<dyn Read + Send>> {
        if let Some(Err(why)) = self.outcome(file) {
            return Err(io::Error::other(why));
        }
        Ok(Box::new(Download::start(
            self.client.clone(),
            format!("{}{file}", self.staging),
        )?))
    }

    fn commit(mut self: Box<Self>, id: &str, manifest: &[u8]) -> Result<String> {
        let c = self.client.clone();
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut last: Vec<(String, u64)> = Vec::new();
        for (file, outcome) in files {
            let size = outcome.map_err(|why| {
                Error::new(
                    ErrorKind::RepositoryError,
                    format!("cannot upload {file}: {why}"),
                )
            })?;
            last.retain(|(f, _)| *f != file);
            last.push((file, size));
        }
        // Only the files the manifest names are published (an abandoned attempt's are not).
        let named: Vec<String> = serde_json::from_slice::<serde_json::Value>(manifest)
            .ok()
            .and_then(|m| {
                m["components"].as_array().map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["file"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default();
        if let Some(missing) = named.iter().find(|f| !last.iter().any(|(l, _)| l == *f)) {
            return Err(Error::new(
                ErrorKind::InternalError,
                format!("the manifest of set {id} names {missing}, which was never uploaded"),
            ));
        }
        last.retain(|(f, _)| named.contains(f));
        let dir = format!("{}{id}/", c.root);
        if !c.list_page(&dir, None, None, Some(1))?.contents.is_empty() {
            return Err(Error::new(
                ErrorKind::RepositoryError,
                format!("cannot publish set {id}: {} already exists", c.url(&dir)),
            ));
        }
        // The marker first: a clean after an interruption from here on deletes `<id>/`.
        c.put(&format!("{}{PUBLISHING}", self.staging), id.as_bytes(), &[], &[])?;
        for (file, size) in &last {
            let to = format!("{dir}{file}");
            c.copy(&format!("{}{file}", self.staging), &to, *size)?;
            match c.size(&to)? {
                Some(s) if s == *size => {}
                other => {
                    return Err(Error::new(
                        ErrorKind::RepositoryError,
                        format!(
                            "the copy of {file} into {} has {} bytes instead of {size}; the set was not published",
                            c.url(&to),
                            other.map_or("no".to_string(), |s| s.to_string())
                        ),
                    ));
                }
            }
        }
        let key = format!("{dir}{}", super::manifest::FILE);
        c.check_lock("publish the set")?;
        let (status, _) = c.put(&key, manifest, &[("if-none-match", "*")], &[412])?;
        // A 412 after a retry may be this task's own PUT, whose answer was lost.
        if status == 412 && c.get_small(&key)?.is_none_or(|(body, _)| body != manifest) {
            return Err(Error::new(
                ErrorKind::RepositoryError,
                format!("cannot publish set {id}: {} already exists", c.url(&key)),
            ));
        }
        self.committed = true;
        let _ = c.delete_all(&self.staging);
        Ok(c.url(&dir).trim_end_matches('/').to_string())
    }
}

impl Drop for S3NewSet {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.client.delete_all(&self.staging);
        }
    }
}

/// A multipart upload in progress: the thread that sends the parts, and the queue to it.
struct Parts {
    upload_id: String,
    queue: Option<mpsc::SyncSender<(u16, Vec<u8>)>>,
    /// Part buffers the upload thread is done with, filled again (so an upload allocates its
    /// few buffers once, and the allocator is not left holding freed parts).
    spare: mpsc::Receiver<Vec<u8>>,
    sender: Option<JoinHandle<Result<Vec<String>>>>,
    next: u16,
}

/// One file being uploaded: a single PUT when it fits in one part, else multipart. `Write`
/// has no close, so a file that fits in one part is PUT on every `flush` that follows a
/// write (the layers flush at the end, so a failure there is the writer's error), and a
/// multipart upload is finished when the writer is dropped; the outcome is recorded for
/// [`NewSet::read`] and [`NewSet::commit`].
struct Upload {
    client: Arc<Client>,
    file: String,
    key: String,
    buf: Vec<u8>,
    parts: Option<Parts>,
    bytes: u64,
    /// Written to since the last PUT of a one-part file.
    dirty: bool,
    failed: Option<String>,
    files: Files,
}

impl Upload {
    /// Hands the full buffer to the upload thread (starting the multipart upload first).
    fn ship(&mut self) -> Result<()> {
        if self.parts.is_none() {
            let upload_id = self.client.create_multipart(&self.key)?;
            let (tx, rx) = mpsc::sync_channel::<(u16, Vec<u8>)>(QUEUED_PARTS);
            let (back, spare) = mpsc::channel::<Vec<u8>>();
            let (client, key, id) = (self.client.clone(), self.key.clone(), upload_id.clone());
            let sender = std::thread::spawn(move || {
                let mut etags = Vec::new();
                for (number, part) in rx {
                    let part = Arc::new(part);
                    etags.push(client.upload_part(&key, &id, number, &part)?);
                    if let Ok(mut buffer) = Arc::try_unwrap(part) {
                        buffer.clear();
                        let _ = back.send(buffer);
                    }
                }
                Ok(etags)
            });
            self.parts = Some(Parts {
                upload_id,
                queue: Some(tx),
                spare,
                sender: Some(sender),
                next: 1,
            });
        }
        let parts = self.parts.as_mut().expect("started above");
        let fresh = parts
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(PART));
        let part = std::mem::replace(&mut self.buf, fresh);
        let number = parts.next;
        parts.next = parts.next.checked_add(1).ok_or_else(|| {
            Error::new(
                ErrorKind::RepositoryError,
                format!("{} is larger than 10000 parts of {PART} bytes", self.file),
            )
        })?;
        let sent = parts.queue.as_ref().map(|q| q.send((number, part)));
        if !matches!(sent, Some(Ok(()))) {
            // The thread stopped: its error says why.
            return Err(self.join().err().unwrap_or_else(|| {
                Error::new(ErrorKind::RepositoryError, "the upload thread stopped")
            }));
        }
        Ok(())
    }

    /// Waits for the upload thread; the parts' ETags.
    fn join(&mut self) -> Result<Vec<String>> {
        let parts = self.parts.as_mut().expect("a multipart upload");
        parts.queue = None;
        match parts.sender.take() {
            Some(h) => crate::error::joined("the upload thread", h.join()).and_then(|r| r),
            None => Err(Error::new(
                ErrorKind::RepositoryError,
                "the upload thread stopped",
            )),
        }
    }

    /// Sends what is left and finishes the upload.
    fn finish(&mut self) -> Result<u64> {
        if self.parts.is_none() {
            if self.dirty {
                self.client.put(&self.key, &self.buf, &[], &[])?;
            }
            return Ok(self.bytes);
        }
        if !self.buf.is_empty() {
            self.ship()?;
        }
        let etags = self.join()?;
        let upload_id = self
            .parts
            .as_ref()
            .expect("a multipart upload")
            .upload_id
            .clone();
        self.client
            .complete_multipart(&self.key, &upload_id, &etags)?;
        Ok(self.bytes)
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(why.clone()));
        }
        let n = data.len().min(PART - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        self.dirty = true;
        if self.buf.len() == PART
            && let Err(e) = self.ship()
        {
            self.failed = Some(e.message.clone());
            return Err(io::Error::other(e.message));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(why.clone()));
        }
        let outcome = match &self.parts {
            None if self.dirty => self
                .client
                .put(&self.key, &self.buf, &[], &[])
                .map(|_| self.dirty = false),
            // The upload thread ended before it was told to: it failed.
            Some(p) if p.sender.as_ref().is_some_and(JoinHandle::is_finished) => {
                Err(self.join().err().unwrap_or_else(|| {
                    Error::new(ErrorKind::RepositoryError, "the upload thread stopped")
                }))
            }
            _ => Ok(()),
        };
        outcome.map_err(|e| {
            self.failed = Some(e.message.clone());
            io::Error::other(e.message)
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let outcome = match self.failed.take() {
            Some(why) => Err(why),
            None => self.finish().map_err(|e| e.message),
        };
        if outcome.is_err()
            && let Some(p) = &self.parts
        {
            self.client.abort_multipart(&self.key, &p.upload_id);
        }
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.file.clone(), outcome));
    }
}

/// The record in `lock.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    host: String,
    pid: u32,
    operation: String,
    since: String,
    expires_at: String,
    /// Unique to the task that wrote it: a write whose answer was lost and whose retry is
    /// refused (412) is recognised as the task's own by it.
    #[serde(default)]
    nonce: String,
}

/// A held lock: renewed by a thread until dropped, then deleted.
struct S3Lock {
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<bool>>,
    client: Arc<Client>,
}

fn lock_ttl() -> Duration {
    std::env::var(LOCK_TTL_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(LOCK_TTL, Duration::from_secs)
}

impl S3Lock {
    fn acquire(client: Arc<Client>, operation: Operation, wait: Duration) -> Result<S3Lock> {
        let c = &client;
        probe_conditional_writes(c)?;
        let key = format!("{}{LOCK}", c.root);
        let ttl = lock_ttl();
        let since = crate::clock::now();
        let nonce = unique_token();
        let record = |since: &str| {
            serde_json::to_vec(&LockRecord {
                host: crate::lockfile::hostname(),
                pid: std::process::id(),
                operation: operation.to_string(),
                since: since.to_string(),
                expires_at: crate::clock::rfc3339(SystemTime::now() + ttl),
                nonce: nonce.clone(),
            })
            .expect("a lock record is JSON")
        };
        let deadline = crate::clock::deadline_in(wait);
        loop {
            // 409: another conditional write to the same key is in progress.
            let (status, mut tag) = c.put(
                &key,
                &record(&since),
                &[("if-none-match", "*")],
                &[412, 409],
            )?;
            let mut held = (200..300).contains(&status);
            let mut holder = None;
            if !held && let Some((body, stale_tag)) = c.get_small(&key)? {
                let found: Option<LockRecord> = serde_json::from_slice(&body).ok();
                // Our own write, whose answer was lost: the lock is ours.
                if found.as_ref().is_some_and(|r| r.nonce == nonce) {
                    held = true;
                    tag = stale_tag.clone();
                }
                let expired = found.as_ref().is_none_or(|r| {
                    humantime::parse_rfc3339(&r.expires_at).is_ok_and(|t| t < SystemTime::now())
                });
                if expired && !held {
                    let (status, new_tag) = c.put(
                        &key,
                        &record(&since),
                        &[("if-match", stale_tag.as_str())],
                        &[412, 409],
                    )?;
                    held = (200..300).contains(&status);
                    tag = new_tag;
                }
                holder = found;
            }
            if held {
                c.set_lock(Some(LockState {
                    lost: false,
                    until: Instant::now() + ttl * 3 / 4,
                }));
                return Ok(S3Lock::hold(
                    client.clone(),
                    key,
                    tag,
                    since,
                    operation,
                    ttl,
                    nonce,
                ));
            }
            if Instant::now() >= deadline {
                return Err(busy(c, holder, wait));
            }
            std::thread::sleep(LOCK_RETRY);
        }
    }

    /// Starts renewing the lock every quarter of its lifetime.
    fn hold(
        client: Arc<Client>,
        key: String,
        tag: String,
        since: String,
        operation: Operation,
        ttl: Duration,
        nonce: String,
    ) -> S3Lock {
        let (stop, stopped) = mpsc::channel::<()>();
        let c = client.clone();
        let renewer = std::thread::spawn(move || {
            let mut tag = tag;
            loop {
                match stopped.recv_timeout(ttl / 4) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return true,
                }
                let record = serde_json::to_vec(&LockRecord {
                    host: crate::lockfile::hostname(),
                    pid: std::process::id(),
                    operation: operation.to_string(),
                    since: since.clone(),
                    expires_at: crate::clock::rfc3339(SystemTime::now() + ttl),
                    nonce: nonce.clone(),
                })
                .expect("a lock record is JSON");
                match c.put(&key, &record, &[("if-match", tag.as_str())], &[412]) {
                    // A renewal whose answer was lost, refused on its retry: still ours.
                    Ok((412, _))
                        if let Ok(Some((body, now_tag))) = c.get_small(&key)
                            && serde_json::from_slice::<LockRecord>(&body)
                                .is_ok_and(|r| r.nonce == nonce) =>
                    {
                        tag = now_tag;
                        c.set_lock(Some(LockState {
                            lost: false,
                            until: Instant::now() + ttl * 3 / 4,
                        }));
                    }
                    Ok((412, _)) => {
                        crate::progress::log(&format!(
                            "cwbackup: the repository lock {} was taken over by another task",
                            c.url(&key)
                        ));
                        c.set_lock(Some(LockState {
                            lost: true,
                            until: Instant::now(),
                        }));
                        return false;
                    }
                    Ok((_, new_tag)) => {
                        tag = new_tag;
                        c.set_lock(Some(LockState {
                            lost: false,
                            until: Instant::now() + ttl * 3 / 4,
                        }));
                    }
                    // Not renewed this time; the next attempt may be, before it expires.
                    Err(e) => crate::progress::log(&format!(
                        "cwbackup: cannot renew the repository lock: {}",
                        e.message
                    )),
                }
            }
        });
        S3Lock {
            stop: Some(stop),
            renewer: Some(renewer),
            client,
        }
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        // A renewal stalled on the network must not hold the task's end: wait a little, then
        // leave the lock to expire.
        let deadline = Instant::now() + Duration::from_secs(10);
        let still_ours = self.renewer.take().is_some_and(|h| {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            h.is_finished() && h.join().unwrap_or(false)
        });
        if still_ours && self.client.check_lock("release the lock").is_ok() {
            let _ = self.client.delete(&format!("{}{LOCK}", self.client.root));
        }
        self.client.set_lock(None);
    }
}

/// Refuses a server that ignores `If-None-Match: *`: the probe object exists after the first
/// PUT, so the second must be refused with 412.
fn probe_conditional_writes(c: &Client) -> Result<()> {
    let key = format!("{}{PROBE}", c.root);
    c.put(
        &key,
        b"cwbackup checks conditional writes here\n",
        &[("if-none-match", "*")],
        &[412, 409],
    )?;
    let (status, _) = c.put(
        &key,
        b"cwbackup checks conditional writes here\n",
        &[("if-none-match", "*")],
        &[412, 409],
    )?;
    // And If-Match, which renewals and takeovers rely on: an ETag the object never had.
    let (if_match, _) = c.put(
        &key,
        b"cwbackup checks conditional writes here\n",
        &[("if-match", "\"cwbackup-never-an-etag\"")],
        &[412, 409],
    )?;
    if (200..300).contains(&status) || (200..300).contains(&if_match) {
        return Err(Error::new(
            ErrorKind::RepositoryError,
            format!(
                "the server at {} ignores conditional writes (If-None-Match, If-Match), so its lock could not keep two tasks apart: use a server that supports them (AWS S3, MinIO, SeaweedFS, Ceph RGW)",
                c.url(&c.root)
            ),
        ));
    }
    Ok(())
}

fn busy(c: &Client, holder: Option<LockRecord>, wait: Duration) -> Error {
    let what = format!("repository {}", c.url(&c.root));
    let expires = holder.as_ref().map(|h| h.expires_at.clone());
    let more = expires
        .as_ref()
        .map_or(String::new(), |t| format!(", lock expires at {t}"));
    let holder = holder.map(|h| crate::lockfile::Holder {
        host: h.host,
        pid: h.pid,
        operation: h.operation,
        since: h.since,
    });
    let mut e = crate::lockfile::in_use(&what, holder, &more, wait)
        .detail("lock", c.url(&format!("{}{LOCK}", c.root)));
    if let Some(t) = expires {
        e = e.detail("expires_at", t);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_gives_its_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        let e = refused(
            "list",
            "http://h/b/",
            404,
            &tag(body, "Code"),
            &tag(body, "Message"),
        );
        assert_eq!(e.kind, ErrorKind::RepositoryError);
        assert_eq!(e.details["code"], "NoSuchBucket");
        assert_eq!(e.details["message"], "The specified bucket does not exist");
        assert!(e.message.contains("create the bucket"), "{}", e.message);
    }
}
