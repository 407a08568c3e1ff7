//! `manifest.json`: what a backup set holds, written last so that its presence marks the set
//! complete. `schemas/manifest.schema.json` is generated from [`Manifest`].

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::task::Compression;

/// The format tag of every manifest this version writes and reads.
pub const FORMAT: &str = "cwbackup/1";
/// The manifest's file name inside a set.
pub const FILE: &str = "manifest.json";

/// The manifest of one backup set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "cwbackup manifest")]
pub struct Manifest {
    /// Always `cwbackup/1`.
    pub format: String,
    /// The set's id, equal to its directory name.
    pub id: String,
    /// When the set was made (RFC 3339, UTC, milliseconds).
    pub created_at: String,
    /// The cwbackup version that wrote the set.
    pub tool_version: String,
    /// The Connectware version the database backup came from (from its id), else null.
    pub connectware_version: Option<String>,
    /// The version `/api/system/info` reported when the set was made, if it could be read.
    #[serde(default)]
    pub server_version: Option<String>,
    /// The volume half, if it was backed up.
    pub volume: Option<VolumeComponent>,
    /// The database half, if it was backed up.
    pub db: Option<DbComponent>,
    /// Milliseconds between the starts of the two halves, when both were taken.
    #[serde(default)]
    pub skew_ms: Option<u64>,
}

/// The volume half of a set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VolumeComponent {
    /// File name inside the set, e.g. `volume.tar.gz`.
    pub file: String,
    /// How the archive is compressed.
    pub compression: Compression,
    /// Lowercase hex SHA-256 of the archive file.
    pub sha256: String,
    /// Size of the archive file in bytes.
    pub bytes: u64,
    /// When archiving started (RFC 3339, UTC).
    pub started_at: String,
    /// When archiving ended (RFC 3339, UTC).
    pub finished_at: String,
    /// Entries in the archive, the root not counted.
    pub files: u64,
    /// Sum of the file sizes: the most an extraction may write.
    pub expanded_bytes: u64,
    /// `sha256:<hex>` over the tree's entries (SPEC §5), independent of archive bytes.
    pub content_digest: String,
    /// The volume directory the archive was taken from.
    pub source: String,
}

/// The database half of a set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DbComponent {
    /// File name inside the set: `db.tgz`.
    pub file: String,
    /// Lowercase hex SHA-256 of the file exactly as Connectware served it.
    pub sha256: String,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// When the server-side backup was requested (RFC 3339, UTC).
    pub started_at: String,
    /// When the download ended (RFC 3339, UTC).
    pub finished_at: String,
    /// The server's id of the backup, `<connectware version>_<ISO time>`.
    pub backup_id: String,
    /// `sha256:<hex>` over the tar members inside the file (names and contents), ignoring
    /// gzip and tar timestamps.
    pub content_digest: String,
    /// The server's status message for the backup.
    #[serde(default)]
    pub status_message: Option<String>,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE);
        // Not following a symlink, not blocking on a FIFO, not reading more than a manifest
        // can be: a set's files are input from outside.
        let bytes =
            crate::safe_open::read_capped(&path, crate::safe_open::MAX_MANIFEST).map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    Error::new(
                        ErrorKind::IntegrityError,
                        format!("{e}: the set is broken; delete it or restore another set"),
                    )
                } else {
                    Error::repo("cannot read", &path, e)
                }
            })?;
        Manifest::from_slice(&bytes).map_err(|message| {
            Error::new(
                ErrorKind::IntegrityError,
                format!("{}: {message}", path.display()),
            )
        })
    }

    /// Parses a manifest, refusing other formats.
    pub fn from_slice(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid manifest: {e}"))?;
        if manifest.format != FORMAT {
            return Err(format!(
                "manifest format `{}` is not `{FORMAT}`: use the cwbackup version that wrote it",
                manifest.format
            ));
        }
        Ok(manifest)
    }

    /// Bytes on disk of the set's files.
    pub fn bytes(&self) -> u64 {
        self.volume.as_ref().map_or(0, |v| v.bytes) + self.db.as_ref().map_or(0, |d| d.bytes)
    }

    /// The halves this set holds.
    pub fn components(&self) -> Vec<String> {
        let mut c = Vec::new();
        if self.volume.is_some() {
            c.push("volume".to_string());
        }
        if self.db.is_some() {
            c.push("db".to_string());
        }
        c
    }
}

/// The JSON Schema of the manifest.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Manifest)).expect("a schema is JSON")
}
