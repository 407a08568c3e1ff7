//! `manifest.json`: what a backup set holds, written last so that its presence marks the set
//! complete. `schemas/manifest.schema.json` is generated from [`Manifest`].
//!
//! A set is a list of components (SPEC §5): volumes (one or many, by name), the
//! installation's files, the database file. Sets written by the first release (format
//! `cwbackup/1`, with a top-level `volume` and `db` object) are read as the components
//! `volume` and `db`, so every operation reads both formats the same way.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::Compression;

/// The format tag of every manifest this version writes.
pub const FORMAT: &str = "cwbackup/2";
/// The format the first release wrote, still read.
pub const FORMAT_V1: &str = "cwbackup/1";
/// The manifest's file name inside a set.
pub const FILE: &str = "manifest.json";
/// The component name of the task key `volume` (and of a v1 set's volume half).
pub const VOLUME: &str = "volume";
/// The component name of an installation's files.
pub const FILES: &str = "files";
/// The component name of the database file.
pub const DB: &str = "db";

/// The manifest of one backup set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "cwbackup manifest")]
pub struct Manifest {
    /// `cwbackup/2` (sets written by the first release say `cwbackup/1` and are read as
    /// the components `volume` and `db`).
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
    /// Milliseconds between the starts of the database backup and the first volume, when
    /// both were taken.
    #[serde(default)]
    pub skew_ms: Option<u64>,
    /// The compose installation the set was taken from, or null.
    #[serde(default)]
    pub installation: Option<InstallationInfo>,
    /// How the set's files are encrypted, or null (not encrypted).
    #[serde(default)]
    pub encryption: Option<EncryptionInfo>,
    /// What the set holds: one entry per file of the set.
    pub components: Vec<Component>,
}

/// The compose installation a set was taken from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InstallationInfo {
    pub compose_project: String,
    pub install_dir: String,
    /// The project's containers were stopped while the volumes were read.
    pub quiesced: bool,
    /// How long they were stopped, in milliseconds.
    pub downtime_ms: Option<u64>,
    /// The names of the files (in `install_dir`) the component `files` holds.
    #[serde(default)]
    pub files: Vec<String>,
}

/// How a set's files are encrypted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EncryptionInfo {
    /// Always `age`.
    pub scheme: String,
    /// The recipients' public keys (`age1…`).
    pub recipients: Vec<String>,
}

/// One component of a set: one file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Component {
    /// The component's name: `volume` (task key `volume`), a volume's short name (task key
    /// `volumes`), `files` or `db`.
    pub name: String,
    /// Path of the file inside the set, e.g. `volume.tar.gz`, `volumes/postgresql.tar.gz`.
    pub file: String,
    /// How the file is compressed; null for the database file, kept as Connectware served it.
    pub compression: Option<Compression>,
    /// Lowercase hex SHA-256 of the stored file.
    pub sha256: String,
    /// Size of the stored file in bytes.
    pub bytes: u64,
    /// When taking the component started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended (RFC 3339, UTC).
    pub finished_at: String,
    /// `sha256:<hex>`: for a tree, over its entries (SPEC §5), independent of archive bytes;
    /// for the database file, over the tar members inside it, ignoring timestamps.
    pub content_digest: String,
    /// What kind of component, and what only that kind has.
    #[serde(flatten)]
    pub kind: Kind,
}

/// The kinds of component, each with its own fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// A volume directory, archived.
    Volume(Tree),
    /// The installation's files, archived.
    Files(Tree),
    /// The database backup file exactly as Connectware served it.
    Db(DbFile),
}

/// What an archived directory tree holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Tree {
    /// Entries in the archive, the root not counted.
    pub files: u64,
    /// Sum of the file sizes: the most an extraction may write.
    pub expanded_bytes: u64,
    /// Where it was taken from.
    pub source: Source,
}

/// Where a tree was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A directory.
    Path(String),
    /// A Docker volume, by its full name.
    DockerVolume(String),
    /// An archive made by hand, brought in by `import` (SPEC §12).
    Import(String),
}

/// What a database component has beyond the common fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DbFile {
    /// The server's id of the backup, `<connectware version>_<ISO time>`.
    pub backup_id: Option<String>,
    /// The server's status message for the backup.
    #[serde(default)]
    pub status_message: Option<String>,
}

impl Component {
    /// The tree of a volume or files component.
    pub fn tree(&self) -> Option<&Tree> {
        match &self.kind {
            Kind::Volume(t) | Kind::Files(t) => Some(t),
            Kind::Db(_) => None,
        }
    }

    /// The database fields of a db component.
    pub fn db(&self) -> Option<&DbFile> {
        match &self.kind {
            Kind::Db(d) => Some(d),
            _ => None,
        }
    }

    pub fn is_volume(&self) -> bool {
        matches!(self.kind, Kind::Volume(_))
    }

    /// `volume`, `files` or `db`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Volume(_) => "volume",
            Kind::Files(_) => "files",
            Kind::Db(_) => "db",
        }
    }
}

impl Manifest {
    /// Parses a manifest of either format, refusing anything else.
    pub fn from_slice(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Format {
            format: String,
        }
        let format: Format =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid manifest: {e}"))?;
        let manifest = match format.format.as_str() {
            FORMAT => serde_json::from_slice::<Manifest>(bytes)
                .map_err(|e| format!("not a valid manifest: {e}"))?,
            FORMAT_V1 => serde_json::from_slice::<v1::Manifest>(bytes)
                .map_err(|e| format!("not a valid manifest: {e}"))?
                .into(),
            other => {
                return Err(format!(
                    "manifest format `{other}` is not `{FORMAT}` or `{FORMAT_V1}`: use the cwbackup version that wrote it"
                ));
            }
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// Refuses what no set this tool writes can have: no component, two components of one
    /// name or one file, an unsafe file name.
    fn check(&self) -> std::result::Result<(), String> {
        if self.components.is_empty() {
            return Err("the manifest lists no component: a set holds at least one".to_string());
        }
        let mut names = std::collections::BTreeSet::new();
        let mut files = std::collections::BTreeSet::new();
        for c in &self.components {
            if !safe_component_name(&c.name) {
                return Err(format!(
                    "the manifest names a component {:?}: a name is letters, digits and `._-`, not starting with a dot",
                    c.name
                ));
            }
            if !names.insert(&c.name) {
                return Err(format!("the manifest names component {:?} twice", c.name));
            }
            if !files.insert(&c.file) {
                return Err(format!("the manifest names file {:?} twice", c.file));
            }
            if !safe_file_name(&c.file) {
                return Err(format!("the manifest names an unsafe file name {:?}", c.file));
            }
        }
        for f in self.installation.iter().flat_map(|i| &i.files) {
            if !installation_file_name(f) {
                return Err(format!("the manifest names an installation file {f:?} that is not a plain name"));
            }
        }
        Ok(())
    }

    /// Bytes stored of the set's files.
    pub fn bytes(&self) -> u64 {
        self.components.iter().map(|c| c.bytes).sum()
    }

    /// The component of a name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The volume components.
    pub fn volumes(&self) -> impl Iterator<Item = &Component> {
        self.components.iter().filter(|c| c.is_volume())
    }

    /// The component the task key `volume` reads: the one named `volume`, else the set's only
    /// volume component.
    pub fn single_volume(&self) -> Option<&Component> {
        self.component(VOLUME).filter(|c| c.is_volume()).or_else(|| {
            let mut volumes = self.volumes();
            match (volumes.next(), volumes.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
    }

    /// The database component.
    pub fn db(&self) -> Option<&Component> {
        self.components.iter().find(|c| c.db().is_some())
    }

    /// The names of the components, in order.
    pub fn names(&self) -> Vec<String> {
        self.components.iter().map(|c| c.name.clone()).collect()
    }
}

/// A component name: `[A-Za-z0-9_-][A-Za-z0-9._-]*`, at most 128 bytes (it becomes part of
/// file names, as `volumes/<name>.tar.gz`).
pub fn safe_component_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A file name a set may hold: `NAME` or `volumes/NAME`, where NAME has no `/` and does not
/// start with a dot.
pub fn safe_file_name(file: &str) -> bool {
    let name = file.strip_prefix("volumes/").unwrap_or(file);
    !name.is_empty() && !name.contains('/') && !name.starts_with('.') && !name.contains('\0')
}

/// A name an installation's file may have: a plain name directly in the install directory
/// (no `/`, not `.` or `..`), and none of the tool's own entries there (the swap's work
/// directory, the quiesce journal and lock).
pub fn installation_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name != crate::volume::WORK_DIR
        && !name.starts_with(".cwbackup-quiesce")
}

/// The first release's manifest, read and converted.
mod v1 {
    use serde::Deserialize;

    use super::{Component, DbFile, Kind, Source, Tree};
    use crate::task::Compression;

    #[derive(Deserialize)]
    pub struct Manifest {
        format: String,
        id: String,
        created_at: String,
        tool_version: String,
        connectware_version: Option<String>,
        #[serde(default)]
        server_version: Option<String>,
        volume: Option<Volume>,
        db: Option<Db>,
        #[serde(default)]
        skew_ms: Option<u64>,
    }

    #[derive(Deserialize)]
    struct Volume {
        file: String,
        compression: Compression,
        sha256: String,
        bytes: u64,
        started_at: String,
        finished_at: String,
        files: u64,
        expanded_bytes: u64,
        content_digest: String,
        source: String,
    }

    #[derive(Deserialize)]
    struct Db {
        file: String,
        sha256: String,
        bytes: u64,
        started_at: String,
        finished_at: String,
        backup_id: String,
        content_digest: String,
        #[serde(default)]
        status_message: Option<String>,
    }

    impl From<Manifest> for super::Manifest {
        fn from(m: Manifest) -> super::Manifest {
            let mut components = Vec::new();
            if let Some(v) = m.volume {
                components.push(Component {
                    name: super::VOLUME.to_string(),
                    file: v.file,
                    compression: Some(v.compression),
                    sha256: v.sha256,
                    bytes: v.bytes,
                    started_at: v.started_at,
                    finished_at: v.finished_at,
                    content_digest: v.content_digest,
                    kind: Kind::Volume(Tree {
                        files: v.files,
                        expanded_bytes: v.expanded_bytes,
                        source: Source::Path(v.source),
                    }),
                });
            }
            if let Some(d) = m.db {
                components.push(Component {
                    name: super::DB.to_string(),
                    file: d.file,
                    compression: None,
                    sha256: d.sha256,
                    bytes: d.bytes,
                    started_at: d.started_at,
                    finished_at: d.finished_at,
                    content_digest: d.content_digest,
                    kind: Kind::Db(DbFile {
                        backup_id: Some(d.backup_id),
                        status_message: d.status_message,
                    }),
                });
            }
            super::Manifest {
                format: m.format,
                id: m.id,
                created_at: m.created_at,
                tool_version: m.tool_version,
                connectware_version: m.connectware_version,
                server_version: m.server_version,
                skew_ms: m.skew_ms,
                installation: None,
                encryption: None,
                components,
            }
        }
    }
}

/// The JSON Schema of the manifest.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Manifest)).expect("a schema is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_manifest_reads_as_the_components_volume_and_db() {
        let v1 = serde_json::json!({
            "format": "cwbackup/1", "id": "s", "created_at": "2026-01-01T00:00:00.000Z",
            "tool_version": "0.1.0", "connectware_version": "1.10.2", "server_version": null,
            "volume": {"file": "volume.tar.gz", "compression": "gzip", "sha256": "aa", "bytes": 3,
                "started_at": "a", "finished_at": "b", "files": 2, "expanded_bytes": 5,
                "content_digest": "sha256:x", "source": "/v"},
            "db": {"file": "db.tgz", "sha256": "bb", "bytes": 4, "started_at": "a",
                "finished_at": "b", "backup_id": "1.10.2_t", "content_digest": "sha256:y"},
            "skew_ms": 7
        });
        let m = Manifest::from_slice(v1.to_string().as_bytes()).unwrap();
        assert_eq!(m.names(), ["volume", "db"]);
        let v = m.single_volume().unwrap();
        assert_eq!(v.tree().unwrap().source, Source::Path("/v".into()));
        assert_eq!(v.tree().unwrap().expanded_bytes, 5);
        assert_eq!(m.db().unwrap().db().unwrap().backup_id.as_deref(), Some("1.10.2_t"));
        assert_eq!(m.bytes(), 7);
    }

    #[test]
    fn a_v2_manifest_round_trips_and_refuses_unsafe_or_repeated_files() {
        let component = |name: &str, file: &str| Component {
            name: name.into(),
            file: file.into(),
            compression: Some(Compression::Gzip),
            sha256: "aa".into(),
            bytes: 1,
            started_at: "a".into(),
            finished_at: "b".into(),
            content_digest: "sha256:x".into(),
            kind: Kind::Volume(Tree {
                files: 1,
                expanded_bytes: 1,
                source: Source::DockerVolume("p_x".into()),
            }),
        };
        let mut m = Manifest {
            format: FORMAT.into(),
            id: "s".into(),
            created_at: "t".into(),
            tool_version: "0".into(),
            connectware_version: None,
            server_version: None,
            skew_ms: None,
            installation: None,
            encryption: None,
            components: vec![
                component("a", "volumes/a.tar.gz"),
                component("b", "volumes/b.tar.gz"),
            ],
        };
        let text = serde_json::to_vec(&m).unwrap();
        let back = Manifest::from_slice(&text).unwrap();
        assert_eq!(back.names(), ["a", "b"]);
        assert!(back.single_volume().is_none(), "two volumes: none is `the` volume");
        assert!(String::from_utf8(text).unwrap().contains(r#""kind":"volume""#));
        for bad in ["../x", "volumes/../x", ".x", "volumes/a/b", "a/b"] {
            m.components[1].file = bad.into();
            let e = Manifest::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap_err();
            assert!(e.contains("unsafe"), "{bad}: {e}");
        }
        m.components[1].file = "volumes/a.tar.gz".into();
        assert!(Manifest::from_slice(&serde_json::to_vec(&m).unwrap()).is_err());
    }
}
