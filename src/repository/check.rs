//! Checks a set's stored files against its manifest: size and sha256 of every file, read
//! through the backend. No key and no decompression is needed. verify reports what this finds;
//! backup runs it on a new set before committing it; restore before touching anything. (The
//! deeper checks that decompress and read an archive join the repository and the volume code,
//! so they live in `ops::check`.)

use std::io::{self, Read};

use super::manifest::Manifest;
use crate::hashing::{hex, sha256_reader};
use crate::progress::Progress;

/// A reader that counts what passes through it as progress.
struct Counted<'a, R> {
    inner: R,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

/// One thing wrong with a set.
#[derive(Debug, Clone)]
pub struct Problem {
    /// `manifest`, or the component's name.
    pub component: String,
    pub message: String,
}

impl Problem {
    pub fn new(component: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            component: component.into(),
            message: message.into(),
        }
    }
}

/// Re-reads every file of the set (through `open`, which streams a file of the set by name)
/// and compares its size and sha256 with the manifest.
pub fn checksums(
    open: impl Fn(&str) -> io::Result<Box<dyn Read + Send>>,
    manifest: &Manifest,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let total = crate::progress::total(manifest.components.iter().map(|c| c.bytes));
    let mut progress = Progress::with_total("checksums", total);
    for c in &manifest.components {
        let counted = open(&c.file).map(|inner| Counted {
            inner,
            progress: &mut progress,
        });
        match counted.and_then(sha256_reader) {
            Err(e) => problems.push(Problem::new(
                &c.name,
                format!("cannot read {}: {e}", c.file),
            )),
            Ok((hash, size)) => {
                if size != c.bytes {
                    problems.push(Problem::new(
                        &c.name,
                        format!("{} has {size} bytes, the manifest says {}", c.file, c.bytes),
                    ));
                }
                let hash = hex(&hash);
                if hash != c.sha256 {
                    problems.push(Problem::new(
                        &c.name,
                        format!(
                            "{} has sha256 {hash}, the manifest says {}",
                            c.file, c.sha256
                        ),
                    ));
                }
            }
        }
    }
    problems
}
