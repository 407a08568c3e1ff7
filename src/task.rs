//! The task: what the operator asks for, read from one JSON object.
//!
//! Input flows one way: bytes → JSON → checked against the task schema generated from
//! [`RawTask`] (so the schema and the code cannot drift, and a bad key is named by its JSON
//! pointer) → keys checked against the operation → [`RawTask`] → [`Task`], whose fields are
//! resolved and valid. Nothing after [`parse`] looks at raw input again.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// One cwbackup task, read as one JSON object on standard input. Unknown keys are refused at
/// every level, except top-level keys that begin with `_ansible_`, which are ignored.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "cwbackup task")]
pub struct RawTask {
    /// What to do: `backup` writes a new backup set, `restore` puts one back, `verify` checks
    /// sets against their manifests, `list` shows the sets, `prune` applies retention, `copy`
    /// copies complete sets to another repository (`to`), `import` turns backups made by hand
    /// into a set.
    pub operation: Operation,

    /// Where the backup sets are: a directory (created with mode 0700 on the first backup),
    /// `{"path": DIR}`, or an S3-compatible bucket `{"s3": {…}}` (SPEC §10).
    pub repository: RepositorySpec,

    /// copy: the repository the sets are copied to, in the same forms as `repository`.
    #[serde(default)]
    #[schemars(with = "RepositorySpec")]
    pub to: Option<RepositorySpec>,

    /// The service-manager volume to back up or restore. Absent: the volume half is skipped.
    #[serde(default)]
    #[schemars(with = "VolumeSpec")]
    pub volume: Option<VolumeSpec>,

    /// Several volumes, each a component of its own (stored as `volumes/<name>.tar.gz`):
    /// `{"docker_volume": NAME}` (named by its compose label `com.docker.compose.volume`, else
    /// by its full name) or `{"path": DIR, "name": NAME}`. Names must be unique. Not together
    /// with `volume`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub volumes: Option<Vec<NamedVolumeSpec>>,

    /// The whole compose installation (SPEC §9): every volume of the compose project (or the
    /// ones named), the install directory's files, with the containers stopped while they are
    /// read. backup and restore only; not together with `volume` or `volumes`.
    #[serde(default)]
    #[schemars(with = "InstallationSpec")]
    pub installation: Option<InstallationSpec>,

    /// Access to the Connectware REST API for the database half. Absent: the database half is
    /// skipped.
    #[serde(default)]
    #[schemars(with = "ApiSpec")]
    pub api: Option<ApiSpec>,

    /// Encryption of the sets with age (SPEC §11). backup: `recipients` or `recipients_file`
    /// (every file of the new set is encrypted to them, stored as `<file>.age`); restore,
    /// verify: `identity_file`, which opens an encrypted set (checksum-only verify needs none).
    #[serde(default)]
    #[schemars(with = "EncryptionSpec")]
    pub encryption: Option<EncryptionSpec>,

    /// Decide and report exactly what would change, but change nothing (Ansible check mode).
    #[serde(default)]
    pub dry_run: bool,

    /// Add `diff: {before, after}` to the result (Ansible diff mode).
    #[serde(default)]
    pub diff: bool,

    /// How long to wait for another cwbackup task to release the repository lock; 0 fails at
    /// once with `busy`. At most 604800 (7 days).
    #[serde(default)]
    #[schemars(range(min = 0, max = 604_800))]
    pub wait_for_lock_s: u64,

    /// backup: name of the new set (default `<UTC time>-<Connectware version or "volume">`);
    /// restore: the set to restore (default the newest complete set that is not a
    /// `pre-restore-…` safety set); verify: the set to check (default every set); copy: the
    /// one set to copy (default every complete set).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$"))]
    pub backup_id: Option<String>,

    /// backup: write a new set even if nothing changed since the newest set; restore: apply
    /// even where the target already matches the set, and restore a backup taken on a newer
    /// Connectware.
    #[serde(default)]
    pub force: bool,

    /// backup: after a successful backup, keep only this many newest regular sets; prune:
    /// required, the number of newest regular sets to keep; copy: retention applied to `to`
    /// after the copy. `pre-restore-…` safety sets are
    /// not counted here (see `keep_safety`). The set the task wrote or found unchanged, the
    /// newest set and the only complete set are never deleted. 1 to 10000.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_KEEP_LAST))]
    pub keep_last: Option<u32>,

    /// backup, prune, copy: how many of the newest `pre-restore-…` safety sets retention keeps
    /// (default 3, at most 10000); applied only together with `keep_last`.
    #[serde(default)]
    #[schemars(range(max = MAX_KEEP_LAST))]
    pub keep_safety: Option<u32>,

    /// backup: also decompress and read the whole new set before publishing it.
    #[serde(default)]
    pub verify: bool,

    /// backup: how to compress the volume archive; the manifest records it.
    #[serde(default)]
    pub compression: Compression,

    /// restore: back up the current state as a `pre-restore-…` set before changing anything.
    #[serde(default = "yes")]
    pub safety_backup: bool,

    /// restore: command (argv list, no shell) run after a successful restore that changed
    /// something, e.g. `["docker", "compose", "-p", "connectware", "restart"]`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub restart: Option<Vec<String>>,

    /// verify: also extract the volume archive into a temporary directory and compare the
    /// extracted tree with the manifest.
    #[serde(default)]
    pub deep: bool,

    /// verify: compare the set with the live volume and report drift as warnings.
    #[serde(default)]
    pub against_live: bool,

    /// import: a volume archive made by hand: the vendor's `tar cvfz … ./<volume>/_data`
    /// (entries below `./<volume>/_data/`) or an archive of the volume root itself; gzip, zstd
    /// or plain tar. It becomes the component `volume`.
    #[serde(default)]
    pub volume_archive: Option<PathBuf>,

    /// import: a database backup file as Connectware's API served it (`curl … --output
    /// connectware-db-backup.tgz`), kept byte for byte as the component `db`.
    #[serde(default)]
    pub db_file: Option<PathBuf>,

    /// import: the Connectware version the files were taken from, recorded in the manifest.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._+-]{1,64}$"))]
    pub connectware_version: Option<String>,
}

fn yes() -> bool {
    true
}

/// The operation a task performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Write a new backup set.
    Backup,
    /// Restore a backup set.
    Restore,
    /// Check backup sets against their manifests.
    Verify,
    /// List the complete backup sets.
    List,
    /// Delete old backup sets.
    Prune,
    /// Turn backups made by hand (the vendor's tar and curl commands) into a set.
    Import,
    /// Copy the complete sets that another repository (`to`) lacks.
    Copy,
}

impl Operation {
    /// Every operation, in the order the README presents them.
    pub const ALL: [Operation; 7] = [
        Operation::Backup,
        Operation::Restore,
        Operation::Verify,
        Operation::List,
        Operation::Prune,
        Operation::Copy,
        Operation::Import,
    ];
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Backup => "backup",
            Operation::Restore => "restore",
            Operation::Verify => "verify",
            Operation::List => "list",
            Operation::Prune => "prune",
            Operation::Import => "import",
            Operation::Copy => "copy",
        })
    }
}

/// Compression of the volume archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip (`volume.tar.gz`): GNU tar reads it anywhere (`tar -xzf`).
    #[default]
    Gzip,
    /// zstd (`volume.tar.zst`): several times faster; GNU tar reads it with `tar --zstd -xf`.
    Zstd,
}

/// age encryption: whom a backup encrypts to, and the identity that opens a set.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSpec {
    /// backup: the age X25519 public keys (`age1…`, as `age-keygen` prints them) every file
    /// of the new set is encrypted to. Not together with `recipients_file`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub recipients: Option<Vec<String>>,
    /// backup: a file of recipients, one `age1…` a line, `#` comments allowed.
    #[serde(default)]
    pub recipients_file: Option<PathBuf>,
    /// restore, verify (deep or against_live; a plain verify reads the contents too when
    /// given), backup with `verify`: an age identity file as `age-keygen -o` writes it
    /// (`AGE-SECRET-KEY-1…`), which opens the set's files. Keep it readable by root only.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

/// Where the service-manager volume is: exactly one of `path` or `docker_volume`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// The volume's directory, e.g.
    /// `/var/lib/docker/volumes/connectware_service-manager/_data`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The Docker volume's name, e.g. `connectware_service-manager`; its mountpoint is asked of
    /// the Docker engine (`docker volume inspect`).
    #[serde(default)]
    pub docker_volume: Option<String>,
}

/// One of several volumes: exactly one of `path` or `docker_volume`, and a `name` (required
/// with `path`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedVolumeSpec {
    /// The volume's directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The Docker volume's name, e.g. `connectware_postgresql`.
    #[serde(default)]
    pub docker_volume: Option<String>,
    /// The component's name in the set (`[A-Za-z0-9_-][A-Za-z0-9._-]*`, not `db` or
    /// `files`); default for a Docker volume: its compose short name, else its full name.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"))]
    pub name: Option<String>,
}

/// A compose installation (SPEC §9); every key has a default.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallationSpec {
    /// The compose project: its volumes and containers carry the label
    /// `com.docker.compose.project=<compose_project>`.
    #[serde(default = "default_project")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub compose_project: String,
    /// The directory holding `.env` and `docker-compose.yml`; a restore creates it if missing.
    #[serde(default = "default_install_dir")]
    pub install_dir: PathBuf,
    /// `"all"` the project's volumes, or a list of their short names (label
    /// `com.docker.compose.volume`, e.g. `service-manager`, `postgresql`). restore: the set's
    /// volumes, or the ones named.
    #[serde(default)]
    pub volumes: InstallationVolumes,
    /// Regular files directly in `install_dir`, archived with their modes as the component
    /// `files`. Default `[".env", "docker-compose.yml"]` (one missing is a warning); a file
    /// named here that is missing is `volume_not_found`. `[]`: no files. restore: the set's
    /// files come back together; name all of them, or `[]` to leave `install_dir` alone.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub files: Option<Vec<String>>,
    /// `stop`: the project's running containers are stopped while the volumes are read (a
    /// running PostgreSQL copied by tar is not a usable database) and started again after,
    /// also on failure; `none`: nothing is stopped (warns about live databases).
    #[serde(default)]
    pub quiesce: Quiesce,
    /// How long one container may take to stop (SIGTERM, then SIGKILL), in seconds; a
    /// container killed after it fails the task once the others were started again. 1 to 3600.
    #[serde(default = "default_stop_timeout_s")]
    #[schemars(range(min = 1, max = 3600))]
    pub stop_timeout_s: u32,
}

/// Which volumes of the project.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum InstallationVolumes {
    /// Every volume.
    All(AllVolumes),
    /// These short names.
    Named(#[schemars(length(min = 1, max = 64))] Vec<String>),
}

impl Default for InstallationVolumes {
    fn default() -> Self {
        InstallationVolumes::All(AllVolumes::All)
    }
}

/// `"all"`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllVolumes {
    All,
}

/// Whether an installation's containers are stopped while it is read or restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quiesce {
    /// Stop the project's running containers while reading, start exactly those again.
    #[default]
    Stop,
    /// Stop nothing.
    None,
}

fn default_project() -> String {
    "connectware".to_string()
}
fn default_install_dir() -> PathBuf {
    PathBuf::from("/opt/connectware")
}
fn default_stop_timeout_s() -> u32 {
    30
}

/// The files an installation backup takes by default.
pub const DEFAULT_FILES: [&str; 2] = [".env", "docker-compose.yml"];

/// A repository: a directory path, `{"path": DIR}`, or `{"s3": {…}}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RepositorySpec {
    /// Directory that holds the backup sets; created with mode 0700 on the first backup.
    Path(PathBuf),
    /// The same directory, as an object.
    Dir(DirSpec),
    /// An S3-compatible bucket (AWS S3, MinIO, SeaweedFS, …).
    S3(S3RepositorySpec),
}

/// A repository directory, as an object.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirSpec {
    /// Directory that holds the backup sets; created with mode 0700 on the first backup.
    pub path: PathBuf,
}

/// A repository in an S3-compatible bucket.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3RepositorySpec {
    /// The bucket and where in it the sets are.
    pub s3: S3Spec,
}

/// An S3-compatible bucket. Give at most one secret: `secret_access_key`,
/// `secret_access_key_file` or `secret_access_key_env`; with neither `access_key_id` nor a
/// secret, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are read from the environment.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Spec {
    /// The server, e.g. `https://s3.eu-central-1.amazonaws.com` or `https://minio.example:9000`:
    /// `https://` or `http://` (with `http://` the data travels unencrypted unless the set is
    /// encrypted; the request signature never carries the secret).
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: String,
    /// The bucket (it must exist; cwbackup never creates one).
    pub bucket: String,
    /// Where in the bucket the sets are (`connectware/plant-7`): no leading `/`, no `..`.
    #[serde(default)]
    pub prefix: String,
    /// The region the requests are signed for.
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// File whose content (without a trailing LF or CRLF) is the secret access key: a regular
    /// file of at most 64 KiB.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// Name of an environment variable that holds the secret access key.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Path-style URLs (`https://HOST/BUCKET/KEY`, what MinIO and SeaweedFS expect) rather
    /// than virtual-hosted ones (`https://BUCKET.HOST/KEY`).
    #[serde(default = "yes")]
    pub path_style: bool,
    /// PEM bundle of certificates to trust, e.g. a self-signed MinIO certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Check the server's TLS certificate. `false` is insecure.
    #[serde(default = "yes")]
    pub validate_certs: bool,
}

impl fmt::Debug for S3Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, even in a debug log.
        f.debug_struct("S3Spec")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn default_region() -> String {
    "us-east-1".to_string()
}

/// A validated repository.
#[derive(Debug, Clone)]
pub enum RepositoryConfig {
    /// A directory (absolute).
    Dir(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Config),
}

impl RepositoryConfig {
    /// The directory, for a local repository.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            RepositoryConfig::Dir(p) => Some(p),
            RepositoryConfig::S3(_) => None,
        }
    }

    /// Where it is, for messages: the directory, or the bucket's URL and prefix.
    pub fn describe(&self) -> String {
        match self {
            RepositoryConfig::Dir(p) => p.display().to_string(),
            RepositoryConfig::S3(s) => format!("{}/{}/{}", s.endpoint, s.bucket, s.prefix),
        }
    }
}

/// A validated S3 repository.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http(s)://HOST[:PORT][/PATH]`, without a trailing slash.
    pub endpoint: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub path_style: bool,
    pub ca_file: Option<PathBuf>,
    pub validate_certs: bool,
}

/// Checks a repository of the task; `at` is its place (`/repository`, `/to`).
fn repository_config(spec: RepositorySpec, at: &str) -> Result<RepositoryConfig> {
    let path = match spec {
        RepositorySpec::Path(p) | RepositorySpec::Dir(DirSpec { path: p }) => p,
        RepositorySpec::S3(S3RepositorySpec { s3 }) => return s3_config(s3, &format!("{at}/s3")).map(RepositoryConfig::S3),
    };
    if path.as_os_str().is_empty() {
        return Err(invalid(format!("{at}: the repository path is empty")));
    }
    Ok(RepositoryConfig::Dir(absolute(&path)?))
}

/// Checks an S3 repository and resolves its secret.
fn s3_config(spec: S3Spec, at: &str) -> Result<S3Config> {
    let url = reqwest::Url::parse(&spec.endpoint).map_err(|e| {
        invalid(format!(
            "{at}/endpoint: not a URL ({e}): give http(s)://HOST[:PORT], e.g. https://minio.example:9000"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
    {
        return Err(invalid(format!(
            "{at}/endpoint: give http(s)://HOST[:PORT] without a user, password or query, e.g. https://minio.example:9000 (keys go in access_key_id and secret_access_key_file)"
        )));
    }
    if let Some(why) = bad_bucket_name(&spec.bucket) {
        return Err(invalid(format!(
            "{at}/bucket: `{}` is not a bucket name S3 accepts: {why}",
            spec.bucket
        )));
    }
    let prefix = spec.prefix.trim_end_matches('/').to_string();
    let bad_prefix = prefix.starts_with('/')
        || (!prefix.is_empty()
            && prefix.split('/').any(|part| {
                part.is_empty()
                    || part == "."
                    || part == ".."
                    || !part.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            }));
    if bad_prefix {
        return Err(invalid(format!(
            "{at}/prefix: `{}` is not a usable prefix: give segments of letters, digits and `._-` separated by `/`, without a leading `/`, `.` or `..`",
            spec.prefix
        )));
    }
    if spec.region.is_empty() || !spec.region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(invalid(format!("{at}/region: give a region such as us-east-1")));
    }
    let given = [
        spec.secret_access_key.is_some(),
        spec.secret_access_key_file.is_some(),
        spec.secret_access_key_env.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    let (key_id, secret) = match (spec.access_key_id, given) {
        (_, 2..) => {
            return Err(invalid(format!(
                "{at}: give one of `secret_access_key`, `secret_access_key_file` or `secret_access_key_env`, not several"
            )));
        }
        (None, 0) => {
            let id = std::env::var("AWS_ACCESS_KEY_ID").ok();
            let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok();
            match (id, secret) {
                (Some(id), Some(secret)) => (id, secret),
                _ => {
                    return Err(invalid(format!(
                        "{at}: no credentials: give `access_key_id` and `secret_access_key_file` (or `secret_access_key`, `secret_access_key_env`), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    )));
                }
            }
        }
        (None, _) => {
            return Err(invalid(format!(
                "{at}/access_key_id: a secret access key is given, but no `access_key_id`"
            )));
        }
        (Some(_), 0) => {
            return Err(invalid(format!(
                "{at}: `access_key_id` needs one of `secret_access_key`, `secret_access_key_file` or `secret_access_key_env`"
            )));
        }
        (Some(id), _) => {
            let secret = if let Some(s) = spec.secret_access_key {
                s
            } else if let Some(file) = &spec.secret_access_key_file {
                let bytes = crate::secrets::read_small_file(file, MAX_SECRET_FILE).map_err(|e| {
                    invalid(format!(
                        "{at}/secret_access_key_file: cannot read {}: {e}",
                        file.display()
                    ))
                })?;
                String::from_utf8(bytes)
                    .map_err(|_| {
                        invalid(format!(
                            "{at}/secret_access_key_file: {} is not UTF-8 text",
                            file.display()
                        ))
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string()
            } else {
                let var = spec.secret_access_key_env.unwrap_or_default();
                std::env::var(&var).map_err(|_| {
                    invalid(format!(
                        "{at}/secret_access_key_env: environment variable {var} is not set"
                    ))
                })?
            };
            (id, secret)
        }
    };
    if secret.is_empty() || key_id.is_empty() {
        return Err(invalid(format!("{at}: the access key id or secret is empty")));
    }
    crate::secrets::register(&secret);
    Ok(S3Config {
        endpoint: spec.endpoint.trim_end_matches('/').to_string(),
        bucket: spec.bucket,
        prefix,
        region: spec.region,
        access_key_id: key_id,
        secret_access_key: Secret(secret),
        path_style: spec.path_style,
        ca_file: spec.ca_file.as_deref().map(absolute).transpose()?,
        validate_certs: spec.validate_certs,
    })
}

/// Why S3 refuses a bucket name (its naming rules), or None.
fn bad_bucket_name(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Some("3 to 63 characters");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
    {
        return Some("lowercase letters, digits, `.` and `-` only");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
        return Some("it must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Some("no two adjacent dots");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some("not an IP address");
    }
    None
}

/// The upper bounds of the task's numbers (SPEC §6: no value may make the tool panic). Each is
/// far above any sane setting and far below what a `Duration` or an `Instant` can hold.
///
/// Longest `timeout_s`, `connect_timeout_s` and `wait_for_lock_s`: 7 days.
pub const MAX_WAIT_S: u32 = 604_800;
/// Longest `poll_interval_s`: 1 hour.
pub const MAX_POLL_INTERVAL_S: u32 = 3_600;
/// Largest `keep_last`.
pub const MAX_KEEP_LAST: u32 = 10_000;
/// Largest `password_file` (and any other secret file) read, in bytes.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Access to the Connectware REST API. Give exactly one secret: `password`, `password_file`,
/// `password_env` or `token`.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// Base URL of Connectware, e.g. `https://connectware.example`: `https://` only (basic
    /// auth over plain HTTP would send the password in clear) and without a user or password
    /// in it (give those in `username` and one of the secret keys).
    #[schemars(regex(pattern = r"^https://"))]
    pub url: String,
    /// User for basic authentication.
    #[serde(default = "default_username")]
    pub username: String,
    /// Password for basic authentication.
    #[serde(default)]
    pub password: Option<String>,
    /// File whose content (without a trailing LF or CRLF) is the password: a regular file of
    /// at most 64 KiB.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable that holds the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Bearer token (a JWT from `POST /api/login`), sent in the `Authorization` header.
    #[serde(default)]
    pub token: Option<String>,
    /// Check the server's TLS certificate. `false` is insecure and adds a warning.
    #[serde(default = "yes")]
    pub validate_certs: bool,
    /// PEM bundle of certificates to trust, e.g. Connectware's `cybus_ca.crt` or a
    /// self-signed server certificate: a regular file of at most 1 MiB.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The longest wait, in seconds, for one server-side backup or restore to finish; every
    /// request (the database upload and download included) ends by then. At most 604800
    /// (7 days).
    #[serde(default = "default_timeout_s")]
    #[schemars(range(min = 0.001, max = MAX_WAIT_S))]
    pub timeout_s: f64,
    /// How long, in seconds, a server that cannot be reached (connection refused, no route,
    /// DNS, TLS handshake cut or never answered) is retried before `api_unreachable`;
    /// independent of `timeout_s`. At most 604800 (7 days).
    #[serde(default = "default_connect_timeout_s")]
    #[schemars(range(min = 0.001, max = MAX_WAIT_S))]
    pub connect_timeout_s: f64,
    /// Seconds between two status requests while a server-side operation runs. At most 3600.
    #[serde(default = "default_poll_interval_s")]
    #[schemars(range(min = 0.001, max = MAX_POLL_INTERVAL_S))]
    pub poll_interval_s: f64,
}

impl fmt::Debug for ApiSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, even in a debug log.
        f.debug_struct("ApiSpec")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish()
    }
}

fn default_username() -> String {
    "admin".to_string()
}
fn default_timeout_s() -> f64 {
    1800.0
}
fn default_connect_timeout_s() -> f64 {
    60.0
}
fn default_poll_interval_s() -> f64 {
    2.0
}

/// A validated task: everything resolved, every combination checked.
#[derive(Debug)]
pub struct Task {
    /// The repository: a directory or a bucket.
    pub repository: RepositoryConfig,
    /// The volumes, if any: none, the one of `volume`, or the list of `volumes`.
    pub volumes: Volumes,
    /// The compose installation, if the task names one (then `volumes` is `None`).
    pub installation: Option<Installation>,
    /// The API, if the database half is wanted.
    pub api: Option<ApiConfig>,
    /// age keys: whom new sets are encrypted to, and what opens a set.
    pub encryption: Encryption,
    /// Plan only.
    pub dry_run: bool,
    /// Report before/after.
    pub diff: bool,
    /// How long to wait for the repository lock.
    pub wait_for_lock: Duration,
    /// The operation and its own options.
    pub op: Op,
}

/// The volumes a task names.
#[derive(Debug, Clone)]
pub enum Volumes {
    /// Neither `volume` nor `volumes`: the volume half is skipped.
    None,
    /// `volume`: one volume, the component named `volume` (`volume.tar.gz`).
    Single(VolumeSource),
    /// `volumes`: each a component of its own name (`volumes/<name>.tar.gz`).
    List(Vec<NamedVolume>),
}

impl Volumes {
    pub fn is_none(&self) -> bool {
        matches!(self, Volumes::None)
    }
}

/// The task's `installation`, checked.
#[derive(Debug, Clone)]
pub struct Installation {
    pub compose_project: String,
    /// Absolute.
    pub install_dir: PathBuf,
    /// The short names asked for; None: all.
    pub volumes: Option<Vec<String>>,
    /// The file names to take.
    pub files: Vec<String>,
    /// Whether `files` was given (then a missing file is an error, not a warning).
    pub files_given: bool,
    pub quiesce: Quiesce,
    pub stop_timeout_s: u64,
}

/// One of the task's `volumes`.
#[derive(Debug, Clone)]
pub struct NamedVolume {
    /// The name given, if any (a Docker volume is named by its compose label otherwise).
    pub name: Option<String>,
    pub source: VolumeSource,
}

/// Where a volume is.
#[derive(Debug, Clone)]
pub enum VolumeSource {
    /// A directory.
    Path(PathBuf),
    /// A Docker volume name.
    Docker(String),
}

/// A secret that never shows in debug output.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// How to authenticate to the API.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Basic authentication.
    Basic { username: String, password: Secret },
    /// A bearer token.
    Bearer(Secret),
}

/// Validated API access.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base URL without a trailing slash.
    pub url: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// Check certificates.
    pub validate_certs: bool,
    /// Extra trusted certificates.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one server-side operation.
    pub timeout: Duration,
    /// How long an unreachable server is retried.
    pub connect_timeout: Duration,
    /// Status poll interval.
    pub poll_interval: Duration,
    /// The environment variable that held the password (`password_env`), removed from the
    /// environment of child processes.
    pub secret_env: Option<String>,
}

/// The task's `encryption`, read.
#[derive(Debug, Clone, Default)]
pub struct Encryption {
    /// Whom a backup encrypts its new set to (None: not encrypted).
    pub to: Option<crate::keys::Recipients>,
    /// What opens an encrypted set.
    pub identities: Option<crate::keys::Identities>,
}

/// The operation with its own options.
#[derive(Debug, Clone)]
pub enum Op {
    Backup(BackupOptions),
    Restore(RestoreOptions),
    Verify(VerifyOptions),
    List,
    Prune(Retention),
    Import(ImportOptions),
    Copy(CopyOptions),
}

/// What a copy copies, and where to.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The repository the sets are copied to.
    pub to: RepositoryConfig,
    /// Only this set (default every complete set).
    pub backup_id: Option<String>,
    /// Retention applied to `to` afterwards.
    pub retention: Option<Retention>,
}

/// What an import takes in.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub volume_archive: Option<PathBuf>,
    pub db_file: Option<PathBuf>,
    pub backup_id: Option<String>,
    pub connectware_version: Option<String>,
}

/// What retention keeps: the newest `keep_last` regular sets and the newest `keep_safety`
/// safety sets (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: u32,
    pub keep_safety: u32,
}

/// How many safety sets retention keeps when the task does not say.
pub const DEFAULT_KEEP_SAFETY: u32 = 3;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub backup_id: Option<String>,
    pub force: bool,
    /// Retention after a successful backup (`keep_last` given).
    pub retention: Option<Retention>,
    pub verify: bool,
    pub compression: Compression,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub backup_id: Option<String>,
    pub force: bool,
    pub safety_backup: bool,
    pub restart: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub backup_id: Option<String>,
    pub deep: bool,
    pub against_live: bool,
}

impl Op {
    /// The operation's name.
    pub fn operation(&self) -> Operation {
        match self {
            Op::Backup(_) => Operation::Backup,
            Op::Restore(_) => Operation::Restore,
            Op::Verify(_) => Operation::Verify,
            Op::List => Operation::List,
            Op::Prune { .. } => Operation::Prune,
            Op::Import(_) => Operation::Import,
            Op::Copy(_) => Operation::Copy,
        }
    }
}

/// Keys every operation accepts.
const COMMON_KEYS: &[&str] = &[
    "operation",
    "repository",
    "volume",
    "volumes",
    "api",
    "dry_run",
    "diff",
    "wait_for_lock_s",
];

/// Keys only some operations accept.
fn operation_keys(op: Operation) -> &'static [&'static str] {
    match op {
        Operation::Backup => &[
            "installation",
            "encryption",
            "backup_id",
            "force",
            "keep_last",
            "keep_safety",
            "verify",
            "compression",
        ],
        Operation::Restore => &["installation", "encryption", "backup_id", "force", "safety_backup", "restart"],
        Operation::Verify => &["encryption", "backup_id", "deep", "against_live"],
        Operation::List => &[],
        Operation::Prune => &["keep_last", "keep_safety"],
        Operation::Copy => &["to", "backup_id", "keep_last", "keep_safety"],
        Operation::Import => &[
            "encryption",
            "volume_archive",
            "db_file",
            "backup_id",
            "connectware_version",
        ],
    }
}

/// The JSON Schema of the task, generated from [`RawTask`].
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(RawTask)).expect("a schema is JSON")
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidTask, message)
}

/// Reads a task from raw bytes: the only way into the engine.
pub fn parse(input: &[u8]) -> Result<Task> {
    let mut value: Value = serde_json::from_slice(input)
        .map_err(|e| invalid(format!("the task is not valid JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(invalid(
            "the task must be a JSON object, e.g. {\"operation\": \"list\", \"repository\": \"/backup\"}",
        ));
    };
    object.retain(|key, _| !key.starts_with("_ansible_"));
    check_operation(object.get("operation"))?;

    for key in ["repository", "to"] {
        check_repository_form(&value, key)?;
    }
    check_against_schema(&value)?;
    let operation: Operation = serde_json::from_value(value["operation"].clone())
        .map_err(|e| invalid(format!("/operation: {e}")))?;
    let allowed = operation_keys(operation);
    for key in value.as_object().into_iter().flat_map(|o| o.keys()) {
        if !COMMON_KEYS.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
            return Err(invalid(format!(
                "/{key}: `{key}` does not apply to operation `{operation}` (it accepts {})",
                COMMON_KEYS
                    .iter()
                    .chain(allowed)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .detail("pointer", format!("/{key}")));
        }
    }
    // The schema has checked every type and bound; should serde still refuse something, its
    // message is not shown, since it may quote a value (a secret).
    let raw: RawTask = serde_json::from_value(value).map_err(|_| {
        invalid("invalid task: a value does not have the type or range the schema gives")
    })?;
    validate(raw)
}

/// Refuses a missing or unknown `operation` with the list of valid ones (the schema's own
/// message for it would only say that no branch of its `oneOf` matched).
fn check_operation(operation: Option<&Value>) -> Result<()> {
    let valid = || {
        Operation::ALL
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match operation {
        None => Err(invalid(format!(
            "/operation: missing; give one of {}",
            valid()
        ))),
        Some(Value::String(name)) if Operation::ALL.iter().any(|o| o.to_string() == *name) => {
            Ok(())
        }
        Some(Value::String(name)) => {
            let shown: String = name.chars().take(40).collect();
            Err(invalid(format!(
                "/operation: `{shown}` is not an operation; give one of {}",
                valid()
            )))
        }
        Some(_) => Err(invalid(format!(
            "/operation: must be a string, one of {}",
            valid()
        ))),
    }
    .map_err(|e| e.detail("pointer", "/operation"))
}

/// Keys whose value is, or may hold, a secret: never echoed in an error message. `url` is one
/// because it may carry `user:password@`.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "token", "secret", "url", "key", "endpoint"]
        .iter()
        .any(|s| key.contains(s))
}

/// Whether a schema error would show a secret: its instance sits under a secret key, or holds
/// one (an object or list that contains a secret key, e.g. the whole `api`).
fn may_show_secret(pointer: &str, instance: &Value) -> bool {
    fn holds_secret(v: &Value) -> bool {
        match v {
            Value::Object(o) => o.iter().any(|(k, v)| is_secret_key(k) || holds_secret(v)),
            Value::Array(a) => a.iter().any(holds_secret),
            _ => false,
        }
    }
    pointer.split('/').any(is_secret_key) || holds_secret(instance)
}

/// What is wrong with a value, without the value.
fn redacted_problem(kind: &jsonschema::error::ValidationErrorKind) -> String {
    use jsonschema::error::{TypeKind, ValidationErrorKind as K};
    match kind {
        K::Type {
            kind: TypeKind::Single(t),
        } => format!("must be of type {t} (the value given is not shown: it may be a secret)"),
        K::Pattern { pattern } => {
            format!("does not match {pattern} (the value given is not shown: it may be a secret)")
        }
        K::AdditionalProperties { unexpected } => {
            format!("unknown key(s) {}", unexpected.join(", "))
        }
        K::Required { property } => format!("{property} is required"),
        _ => "is not valid here (the value given is not shown: it may be a secret)".to_string(),
    }
}

/// A repository given as an object (`repository`, `to`) checked against the schema of its
/// form, so that a bad key inside is named by its pointer rather than by "matches none of the
/// forms".
fn check_repository_form(task: &Value, key: &str) -> Result<()> {
    let Some(Value::Object(form)) = task.get(key) else {
        return Ok(());
    };
    let schema = if form.contains_key("s3") {
        schemars::schema_for!(S3RepositorySpec)
    } else {
        schemars::schema_for!(DirSpec)
    };
    let schema = serde_json::to_value(schema).expect("a schema is JSON");
    check_with(&schema, &task[key], &format!("/{key}"))
}

/// Checks the task JSON against the generated schema and names every bad key by pointer. A
/// value that is or may hold a secret is never echoed (SPEC §4).
fn check_against_schema(value: &Value) -> Result<()> {
    check_with(&schema(), value, "")
}

/// Checks `value` against `schema`; pointers are prefixed with `at` (where `value` is in the
/// task).
fn check_with(schema: &Value, value: &Value, at: &str) -> Result<()> {
    let validator = jsonschema::validator_for(schema).expect("the generated task schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let pointer = format!("{at}{}", e.instance_path().as_str());
            let at = if pointer.is_empty() { "/" } else { &pointer };
            if may_show_secret(&pointer, e.instance()) {
                format!("{at}: {}", redacted_problem(e.kind()))
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(invalid(format!("invalid task: {}", problems.join("; "))).detail("problems", problems))
}

/// Turns a schema-valid [`RawTask`] into a [`Task`], resolving secrets and checking what the
/// schema cannot express.
fn validate(raw: RawTask) -> Result<Task> {
    let volumes = match (raw.volume, raw.volumes) {
        (None, None) => Volumes::None,
        (Some(spec), None) => Volumes::Single(volume_source(spec.path, spec.docker_volume, "/volume")?),
        (None, Some(list)) => Volumes::List(named_volumes(list)?),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "/volumes: give `volume` (one volume) or `volumes` (a list), not both",
            ));
        }
    };
    let repository = repository_config(raw.repository, "/repository")?;
    let api = raw.api.map(api_config).transpose()?;
    if raw.keep_safety.is_some() && raw.keep_last.is_none() {
        return Err(invalid(
            "/keep_safety: applies only together with `keep_last`; add `keep_last` or leave `keep_safety` out",
        ));
    }
    let retention = raw.keep_last.map(|keep_last| Retention {
        keep_last,
        keep_safety: raw.keep_safety.unwrap_or(DEFAULT_KEEP_SAFETY),
    });
    let op = match raw.operation {
        Operation::Backup => Op::Backup(BackupOptions {
            backup_id: raw.backup_id,
            force: raw.force,
            retention,
            verify: raw.verify,
            compression: raw.compression,
        }),
        Operation::Restore => Op::Restore(RestoreOptions {
            backup_id: raw.backup_id,
            force: raw.force,
            safety_backup: raw.safety_backup,
            restart: raw.restart,
        }),
        Operation::Verify => Op::Verify(VerifyOptions {
            backup_id: raw.backup_id,
            deep: raw.deep,
            against_live: raw.against_live,
        }),
        Operation::List => Op::List,
        Operation::Prune => Op::Prune(
            retention.ok_or_else(|| invalid("/keep_last: prune needs `keep_last` (at least 1)"))?,
        ),
        Operation::Copy => {
            if !volumes.is_none() || api.is_some() {
                return Err(invalid(
                    "/to: a copy copies stored sets; leave out `volume`, `volumes` and `api`",
                ));
            }
            let to = raw
                .to
                .ok_or_else(|| invalid("/to: copy needs `to`, the repository to copy the sets to"))?;
            Op::Copy(CopyOptions {
                to: repository_config(to, "/to")?,
                backup_id: raw.backup_id,
                retention,
            })
        }
        Operation::Import => {
            if raw.volume_archive.is_none() && raw.db_file.is_none() {
                return Err(invalid(
                    "import needs `volume_archive`, `db_file` or both: there is nothing to import",
                ));
            }
            if !volumes.is_none() || api.is_some() {
                return Err(invalid(
                    "/volume: an import reads only `volume_archive` and `db_file`; leave out `volume`, `volumes` and `api`",
                ));
            }
            Op::Import(ImportOptions {
                volume_archive: raw.volume_archive.as_deref().map(absolute).transpose()?,
                db_file: raw.db_file.as_deref().map(absolute).transpose()?,
                backup_id: raw.backup_id,
                connectware_version: raw.connectware_version,
            })
        }
    };
    let encryption = raw
        .encryption
        .map(|spec| encryption(spec, &op))
        .transpose()?
        .unwrap_or_default();
    let installation = raw.installation.map(installation).transpose()?;
    if installation.is_some() && !volumes.is_none() {
        return Err(invalid(
            "/installation: names the volumes itself (`installation.volumes`); leave out `volume` and `volumes`",
        ));
    }
    if matches!(op, Op::Backup(_) | Op::Restore(_))
        && volumes.is_none()
        && installation.is_none()
        && api.is_none()
    {
        return Err(invalid(format!(
            "{} needs `installation`, `volume` (or `volumes`), `api` or both: there is nothing to {0}",
            raw.operation
        )));
    }
    Ok(Task {
        repository,
        volumes,
        installation,
        api,
        encryption,
        dry_run: raw.dry_run,
        diff: raw.diff,
        wait_for_lock: Duration::from_secs(raw.wait_for_lock_s.min(u64::from(MAX_WAIT_S))),
        op,
    })
}

/// Reads the task's `encryption`: recipients only where a set is written, an identity only
/// where one is read, and a backup that reads its new set back (`verify`) needs both.
fn encryption(spec: EncryptionSpec, op: &Op) -> Result<Encryption> {
    use crate::keys::{Identities, Recipients};
    let writes = matches!(op, Op::Backup(_) | Op::Import(_));
    let to = match (spec.recipients, spec.recipients_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "/encryption: give `recipients` or `recipients_file`, not both",
            ));
        }
        (Some(list), None) => Some(
            Recipients::parse(list.iter().map(String::as_str), |i| {
                format!("/encryption/recipients/{i}")
            })
            .map_err(invalid)?,
        ),
        (None, Some(file)) => Some(
            Recipients::from_file(&file)
                .map_err(|e| invalid(format!("/encryption/recipients_file: {e}")))?,
        ),
        (None, None) => None,
    };
    let operation = op.operation();
    if to.is_some() && !writes {
        return Err(invalid(format!(
            "/encryption: `recipients` and `recipients_file` apply to a backup or an import (a {operation} writes no set of its own; a restore's safety set is encrypted to the recipients of the set it restores)"
        )));
    }
    if writes && to.is_none() {
        return Err(invalid(
            "/encryption: a backup or an import needs `recipients` or `recipients_file` to encrypt to",
        ));
    }
    let identities = spec
        .identity_file
        .map(|file| {
            Identities::from_file(&file)
                .map_err(|e| invalid(format!("/encryption/identity_file: {e}")))
        })
        .transpose()?;
    if let (Op::Backup(b), Some(to)) = (op, &to) {
        match &identities {
            Some(ids) if !ids.opens(&to.strings()) => {
                return Err(invalid(format!(
                    "/encryption/identity_file: {} opens none of the recipients ({}), so the new set could not be read back",
                    ids.file,
                    to.strings().join(", ")
                )));
            }
            None if b.verify => {
                return Err(invalid(
                    "/encryption: `verify` reads the new set back, which needs `identity_file` besides the recipients",
                ));
            }
            _ => {}
        }
    }
    Ok(Encryption { to, identities })
}

/// The task's `installation`, checked: short names unique, files plain names in `install_dir`.
fn installation(spec: InstallationSpec) -> Result<Installation> {
    let volumes = match spec.volumes {
        InstallationVolumes::All(_) => None,
        InstallationVolumes::Named(names) => {
            for (i, name) in names.iter().enumerate() {
                if !crate::repository::manifest::safe_component_name(name)
                    || RESERVED_NAMES.contains(&name.as_str())
                {
                    return Err(invalid(format!(
                        "/installation/volumes/{i}: `{name}` is not a volume's short name (letters, digits, `._-`), e.g. `service-manager`"
                    )));
                }
                if names[..i].contains(name) {
                    return Err(invalid(format!(
                        "/installation/volumes/{i}: `{name}` is named twice"
                    )));
                }
            }
            Some(names)
        }
    };
    let files_given = spec.files.is_some();
    let files = spec
        .files
        .unwrap_or_else(|| DEFAULT_FILES.iter().map(|f| f.to_string()).collect());
    for (i, file) in files.iter().enumerate() {
        if !crate::repository::manifest::installation_file_name(file) {
            return Err(invalid(format!(
                "/installation/files/{i}: `{file}` is not the name of a file directly in install_dir (no `/`), e.g. `.env`"
            )));
        }
        if files[..i].contains(file) {
            return Err(invalid(format!("/installation/files/{i}: `{file}` is named twice")));
        }
    }
    Ok(Installation {
        compose_project: spec.compose_project,
        install_dir: absolute(&spec.install_dir)?,
        volumes,
        files,
        files_given,
        quiesce: spec.quiesce,
        stop_timeout_s: u64::from(spec.stop_timeout_s),
    })
}

/// A volume given as exactly one of `path` or `docker_volume`; `at` is its place in the task.
fn volume_source(
    path: Option<PathBuf>,
    docker_volume: Option<String>,
    at: &str,
) -> Result<VolumeSource> {
    match (path, docker_volume) {
        (Some(p), None) => Ok(VolumeSource::Path(absolute(&p)?)),
        (None, Some(name)) if name.is_empty() => Err(invalid(format!(
            "{at}/docker_volume: the Docker volume name is empty"
        ))),
        (None, Some(name)) => Ok(VolumeSource::Docker(name)),
        _ => Err(invalid(format!(
            "{at}: give exactly one of `path` or `docker_volume`, e.g. {{\"docker_volume\": \"connectware_service-manager\"}}"
        ))),
    }
}

/// The names a volume component may not have: the other kinds' components.
const RESERVED_NAMES: &[&str] = &["db", "files"];

/// The task's `volumes`, each checked; names given must be unique and not reserved (the names
/// of Docker volumes are known, and checked again, once the engine has named them).
fn named_volumes(list: Vec<NamedVolumeSpec>) -> Result<Vec<NamedVolume>> {
    let mut out: Vec<NamedVolume> = Vec::with_capacity(list.len());
    for (i, spec) in list.into_iter().enumerate() {
        let at = format!("/volumes/{i}");
        let source = volume_source(spec.path, spec.docker_volume, &at)?;
        if matches!(source, VolumeSource::Path(_)) && spec.name.is_none() {
            return Err(invalid(format!(
                "{at}: a volume given by `path` needs a `name`, e.g. {{\"path\": \"/data/x\", \"name\": \"x\"}}"
            )));
        }
        if let Some(name) = &spec.name {
            if RESERVED_NAMES.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "{at}/name: `{name}` is the name of another kind of component; choose another name"
                )));
            }
            if out.iter().any(|v| v.name.as_ref() == Some(name)) {
                return Err(invalid(format!(
                    "{at}/name: two volumes are named `{name}`; names must be unique"
                )));
            }
        }
        out.push(NamedVolume {
            name: spec.name,
            source,
        });
    }
    Ok(out)
}

/// Paths in results and logs are absolute, whatever directory the task ran from.
fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| invalid(format!("cannot make {} absolute: {e}", path.display())))
}

/// Resolves the API secret (reading `password_file` or `password_env`) and checks the rest.
fn api_config(spec: ApiSpec) -> Result<ApiConfig> {
    let given = [
        spec.password.is_some(),
        spec.password_file.is_some(),
        spec.password_env.is_some(),
        spec.token.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(invalid(
            "/api: give exactly one of `password`, `password_file`, `password_env` or `token`",
        ));
    }
    let url = checked_url(&spec.url)?;
    let password = if let Some(p) = spec.password {
        Some(p)
    } else if let Some(file) = &spec.password_file {
        let bytes = crate::secrets::read_small_file(file, MAX_SECRET_FILE).map_err(|e| {
            invalid(format!(
                "/api/password_file: cannot read {}: {e}",
                file.display()
            ))
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            invalid(format!(
                "/api/password_file: {} is not UTF-8 text",
                file.display()
            ))
        })?;
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    } else if let Some(var) = &spec.password_env {
        Some(std::env::var(var).map_err(|_| {
            invalid(format!(
                "/api/password_env: environment variable {var} is not set"
            ))
        })?)
    } else {
        None
    };
    for secret in password.iter().chain(spec.token.iter()) {
        crate::secrets::register(secret);
    }
    let credentials = match (password, spec.token) {
        (Some(p), _) => Credentials::Basic {
            username: spec.username,
            password: Secret(p),
        },
        (None, Some(t)) => Credentials::Bearer(Secret(t)),
        (None, None) => unreachable!("exactly one secret was checked above"),
    };
    Ok(ApiConfig {
        url,
        credentials,
        validate_certs: spec.validate_certs,
        ca_file: spec.ca_file,
        timeout: seconds("/api/timeout_s", spec.timeout_s, MAX_WAIT_S)?,
        connect_timeout: seconds("/api/connect_timeout_s", spec.connect_timeout_s, MAX_WAIT_S)?,
        poll_interval: seconds(
            "/api/poll_interval_s",
            spec.poll_interval_s,
            MAX_POLL_INTERVAL_S,
        )?,
        secret_env: spec.password_env.clone(),
    })
}

/// A number of seconds from the task as a `Duration`, checked again here (the schema bounds it
/// already) so that no value can make the conversion panic.
fn seconds(pointer: &str, value: f64, max: u32) -> Result<Duration> {
    if !(value > 0.0 && value <= f64::from(max)) {
        return Err(invalid(format!(
            "{pointer}: must be more than 0 and at most {max} seconds"
        )));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|_| invalid(format!("{pointer}: not a number of seconds")))
}

/// The API's base URL without a trailing slash: `https://` with a host, and no user or password
/// in it (SPEC §3). The URL itself is never quoted in the message: it may hold a password.
fn checked_url(text: &str) -> Result<String> {
    const HOW: &str = "give the base URL as https://HOST[:PORT], e.g. https://connectware.example, and the user and secret in api.username and api.password (or password_file, password_env, token)";
    let url = reqwest::Url::parse(text)
        .map_err(|e| invalid(format!("/api/url: not a URL ({e}): {HOW}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "/api/url: must not hold a user or password (the URL is not shown, since it holds one): {HOW}"
        )));
    }
    if url.scheme() != "https" {
        return Err(invalid(format!(
            "/api/url: must start with https:// (basic auth over plain HTTP sends the password in clear): {HOW}"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("/api/url: has no host: {HOW}")));
    }
    Ok(text.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_unknown_or_missing_operation_lists_the_valid_ones() {
        for input in [
            r#"{"operation":"backpu","repository":"/r"}"#,
            r#"{"repository":"/r"}"#,
            r#"{"operation":7,"repository":"/r"}"#,
        ] {
            let e = parse_str(input).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidTask);
            assert!(
                e.message.starts_with("/operation")
                    && e.message
                        .contains("`backup`, `restore`, `verify`, `list`, `prune`"),
                "{input}: {}",
                e.message
            );
        }
    }
    use super::*;

    fn parse_str(s: &str) -> Result<Task> {
        parse(s.as_bytes())
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_str(r#"{"operation":"list","repository":"/r","repositry":"x"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidTask);
        assert!(e.message.contains("repositry"), "{}", e.message);
    }

    #[test]
    fn nested_unknown_key_is_named() {
        let e =
            parse_str(r#"{"operation":"backup","repository":"/r","volume":{"path":"/v","pth":1}}"#)
                .unwrap_err();
        assert!(
            e.message.contains("/volume") && e.message.contains("pth"),
            "{}",
            e.message
        );
    }

    #[test]
    fn ansible_keys_are_ignored() {
        let t = parse_str(r#"{"operation":"list","repository":"/r","_ansible_check_mode":false}"#)
            .unwrap();
        assert!(matches!(t.op, Op::List));
    }

    #[test]
    fn key_of_another_operation_is_refused() {
        let e = parse_str(
            r#"{"operation":"backup","repository":"/r","volume":{"path":"/v"},"deep":true}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("/deep") && e.message.contains("backup"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_value_is_named_by_pointer() {
        let e = parse_str(r#"{"operation":"prune","repository":"/r","keep_last":0}"#).unwrap_err();
        assert!(e.message.contains("/keep_last"), "{}", e.message);
        let e = parse_str(
            r#"{"operation":"backup","repository":"/r","volume":{"path":"/v"},"backup_id":"../x"}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("/backup_id"), "{}", e.message);
    }

    #[test]
    fn prune_needs_keep_last() {
        let e = parse_str(r#"{"operation":"prune","repository":"/r"}"#).unwrap_err();
        assert!(e.message.contains("keep_last"), "{}", e.message);
    }

    #[test]
    fn exactly_one_secret() {
        let e = parse_str(
            r#"{"operation":"backup","repository":"/r","api":{"url":"https://x","password":"a","token":"b"}}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("exactly one"), "{}", e.message);
    }

    #[test]
    fn secret_is_not_in_debug_output() {
        let t = parse_str(
            r#"{"operation":"backup","repository":"/r","api":{"url":"https://x/","password":"hunter2"}}"#,
        )
        .unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(t.api.unwrap().url, "https://x");
    }

    fn s3_task(s3: &str) -> Result<Task> {
        parse_str(&format!(r#"{{"operation":"list","repository":{{"s3":{s3}}}}}"#))
    }

    #[test]
    fn an_s3_repository_is_checked_as_the_task_is_read() {
        let ok = r#""endpoint":"https://minio.example:9000","bucket":"backups","access_key_id":"AKID","secret_access_key":"wJalrXUtnFEMI""#;
        let t = s3_task(&format!("{{{ok},\"prefix\":\"connectware/plant-7/\"}}")).unwrap();
        let RepositoryConfig::S3(c) = &t.repository else { panic!("an S3 repository") };
        assert_eq!((c.prefix.as_str(), c.region.as_str(), c.path_style), ("connectware/plant-7", "us-east-1", true));
        assert!(!format!("{t:?}").contains("wJalrXUtnFEMI"), "the secret is not in Debug output");
        for (bad, named) in [
            (r#""endpoint":"minio.example:9000""#, "/repository/s3/endpoint"),
            (r#""endpoint":"ftp://minio.example""#, "/repository/s3/endpoint"),
            (r#""bucket":"Backups_1""#, "/repository/s3/bucket"),
            (r#""bucket":"ab""#, "/repository/s3/bucket"),
            (r#""prefix":"a/../b""#, "/repository/s3/prefix"),
            (r#""prefix":"/a""#, "/repository/s3/prefix"),
            (r#""secret_access_key_env":"X""#, "not several"),
            (r#""secret_acess_key":"x""#, "secret_acess_key"),
        ] {
            // The later key wins in serde_json, so `bad` replaces the good one of its name.
            let e = s3_task(&format!("{{{ok},{bad}}}")).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidTask, "{bad}");
            assert!(e.message.contains(named), "{bad}: {}", e.message);
            assert!(!e.message.contains("wJalrXUtnFEMI"), "{}", e.message);
        }
        let e = parse_str(r#"{"operation":"copy","repository":"/r"}"#).unwrap_err();
        assert!(e.message.contains("/to"), "{}", e.message);
        let e = parse_str(r#"{"operation":"list","repository":"/r","to":"/s"}"#).unwrap_err();
        assert!(e.message.contains("/to"), "{}", e.message);
    }
}
