//! The layers a set's file passes through, applied in this one place, above the storage
//! backend:
//!
//! ```text
//! write: tar ─▶ compression ─▶ (encryption, later) ─▶ hashing ─▶ backend file
//! read:  backend file ─▶ (decryption, later) ─▶ decompression ─▶ tar reader
//! ```
//!
//! The sha256 recorded in the manifest is that of the stored bytes, so checking a set needs no
//! key and no decompression.

pub mod pgzip;

use std::io::{self, BufReader, Read, Write};

use crate::hashing::HashingWriter;
use crate::task::Compression;
use pgzip::ParGzWriter;

/// gzip level (libdeflate's, see `pgzip`). Level 6, as `tar czf` uses: on the benchmark's
/// 391 MiB of YAML it writes 66.8 MB in 2.8 s of CPU where GNU `gzip -6` writes 68.9 MB in 7.1 s;
/// on half-random data it matches `gzip -6` within 0.01 %
/// (`cargo run --release --example levels -- FILE` measures it).
const GZIP_LEVEL: i32 = 6;
/// zstd level: zstd's default.
const ZSTD_LEVEL: i32 = 3;
/// Bytes per zstd worker job.
const ZSTD_JOB: u32 = 2 << 20;

/// The stored file's sha256 (hex) and size in bytes.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sha256: String,
    pub bytes: u64,
}

type Raw = Box<dyn Write + Send>;

/// A compressing, hashing writer into a backend file.
pub enum Sink {
    Gzip(ParGzWriter<HashingWriter<Raw>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<Raw>>),
    Plain(HashingWriter<Raw>),
}

impl Sink {
    /// Compresses with `compression` (None: stores the bytes as they come) into `out`.
    pub fn new(out: Raw, compression: Option<Compression>) -> io::Result<Sink> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let hashed = HashingWriter::new(out);
        Ok(match compression {
            Some(Compression::Gzip) => Sink::Gzip(ParGzWriter::new(hashed, GZIP_LEVEL, threads)?),
            Some(Compression::Zstd) => {
                let mut zstd = zstd::stream::write::Encoder::new(hashed, ZSTD_LEVEL)?;
                zstd.multithread(threads as u32)?;
                // zstd's default job (4 windows, 8 MiB) per worker pushed peak RSS past 64 MiB.
                zstd.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
                Sink::Zstd(zstd)
            }
            None => Sink::Plain(hashed),
        })
    }

    /// Ends the stream and flushes it to the backend; the backend makes it durable on commit.
    pub fn finish(self) -> io::Result<Stored> {
        let hashed = match self {
            Sink::Gzip(w) => w.finish()?,
            Sink::Zstd(w) => w.finish()?,
            Sink::Plain(w) => w,
        };
        let (_, sha256, bytes) = hashed.finish()?;
        Ok(Stored { sha256, bytes })
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Gzip(w) => w.write(data),
            Sink::Zstd(w) => w.write(data),
            Sink::Plain(w) => w.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
            Sink::Plain(w) => w.flush(),
        }
    }
}

/// Decompresses a stored file; decompression runs on a thread of its own, ahead of the reader.
pub fn decompressing(
    stored: Box<dyn Read + Send>,
    compression: Option<Compression>,
) -> io::Result<Box<dyn Read + Send>> {
    let stored = BufReader::with_capacity(1 << 20, stored);
    Ok(match compression {
        Some(Compression::Gzip) => Box::new(pgzip::reader(stored)),
        Some(Compression::Zstd) => Box::new(pgzip::read_ahead(
            zstd::stream::read::Decoder::with_buffer(stored)?,
        )),
        None => Box::new(stored),
    })
}
