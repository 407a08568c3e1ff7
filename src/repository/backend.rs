//! The storage seam: the one narrow interface every kind of repository implements (shaped like
//! restic's `Backend` and rustic's `ReadBackend`/`WriteBackend`). Everything above it sees set
//! ids and file names inside a set, never a path or a request. Hashing, compression and
//! (later) encryption are layers over the streams it hands out (see `crate::layers`), applied
//! once by the caller.
//!
//! The local directory ([`super::local::Local`]) is the first implementation, an S3-compatible
//! bucket ([`super::s3::S3`]) the second.

use std::any::Any;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::error::Result;
use crate::task::Operation;

/// A held repository lock; dropping it releases it.
pub type Held = Box<dyn Any + Send>;

/// Where backup sets are stored.
pub trait Backend: Send + Sync {
    /// Where the repository is, for messages: a directory or a URL.
    fn location(&self) -> String;
    /// Where a set is, for results and messages.
    fn set_location(&self, id: &str) -> String;
    /// The ids of the sets it holds, complete or not (a set without its manifest is
    /// incomplete), in no order; never the backend's own entries (names starting with `.`).
    fn list(&self) -> Result<Vec<String>>;
    /// Whether a set of this id exists, complete or not.
    fn exists(&self, id: &str) -> Result<bool>;
    /// Streams a file of a set. A missing file is an `io::ErrorKind::NotFound` error; a file
    /// that is not a plain file (a FIFO, a symlink) is refused, never followed or waited on.
    fn read(&self, id: &str, file: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Starts writing a new set; it becomes visible only when committed.
    fn create(&self) -> Result<Box<dyn NewSet>>;
    /// Deletes a set, complete or not: it is gone at once, never half there.
    fn delete(&self, id: &str) -> Result<()>;
    /// Takes the repository's exclusive lock for `operation`, waiting up to `wait`; `busy`
    /// names the holder.
    fn lock(&self, operation: Operation, wait: Duration) -> Result<Held>;
    /// Removes what interrupted tasks left behind (sets being written or deleted). Call with
    /// the lock held.
    fn clean(&self) -> Result<()>;
    /// A fresh local directory for temporary work on this repository's sets (the extraction
    /// of a deep verify), removed by the caller or by the next [`Backend::clean`].
    fn scratch(&self, name: &str) -> Result<std::path::PathBuf>;
}

/// A set being written: files first, then the manifest on commit. Dropping it without
/// committing aborts it: nothing of it stays visible. Several threads may write files of one
/// set at once (the database file and the volumes).
pub trait NewSet: Send + Sync {
    /// A new file of the set: `NAME` or `volumes/NAME`. Creating a file again replaces it (a
    /// download that starts over).
    fn create(&self, file: &str) -> Result<Box<dyn Write + Send>>;
    /// Reads back a file written so far (the check before commit).
    fn read(&self, file: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Publishes the set as `id`, with every file durable before `manifest` is written last.
    /// Returns the set's location. An existing set of that id is an error, never replaced.
    ///
    /// The id comes only now, because a backup learns it at the end (the database backup
    /// names the Connectware version). So a backend builds the set somewhere of its own and
    /// moves it into place here: a directory renames `.staging/new.*` to `<id>`; a bucket,
    /// which cannot rename, copies each file server-side from `.staging/<token>/` into
    /// `<id>/` (CopyObject), uploads the manifest last and deletes the staged objects.
    fn commit(self: Box<Self>, id: &str, manifest: &[u8]) -> Result<String>;
}
