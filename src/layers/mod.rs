//! The layers a set's file passes through, applied in this one place, above the storage
//! backend:
//!
//! ```text
//! write: tar ─▶ compression ─▶ age encryption ─▶ hashing ─▶ backend file
//! read:  backend file ─▶ age decryption ─▶ decompression ─▶ tar reader
//! ```
//!
//! The sha256 recorded in the manifest is that of the stored bytes, so checking a set needs no
//! key and no decompression. Encryption (SPEC §11) is age's format to X25519 recipients, so
//! `age -d -i key.txt FILE.age` reads a stored file by hand; each layer runs on a thread of
//! its own where it can (compression on every core, decryption ahead of decompression).

pub mod pgzip;

use std::io::{self, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hashing::HashingWriter;
use crate::keys::{Identities, Recipients};
use crate::task::Compression;
use pgzip::ParGzWriter;

/// The suffix of an encrypted file's name: `volume.tar.gz.age`.
pub const AGE_SUFFIX: &str = ".age";
/// age's plaintext chunk and the tag each stored chunk adds (age-encryption.org/v1, STREAM).
const AGE_CHUNK: u64 = 64 * 1024;
const AGE_TAG: u64 = 16;

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

/// The bottom of every write: the stored bytes hashed, after age encryption if the set is
/// encrypted.
pub enum Sealed {
    Plain(HashingWriter<Raw>),
    Age(age::stream::StreamWriter<HashingWriter<Raw>>),
}

impl Sealed {
    /// Hashes what goes into `out`, encrypting it first to `to` if given.
    pub fn new(out: Raw, to: Option<&Recipients>) -> io::Result<Sealed> {
        let hashed = HashingWriter::new(out);
        Ok(match to {
            None => Sealed::Plain(hashed),
            Some(recipients) => {
                let encryptor = age::Encryptor::with_recipients(recipients.as_age())
                    .map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
                Sealed::Age(encryptor.wrap_output(hashed)?)
            }
        })
    }

    /// Ends the stream (age's last chunk) and returns the stored file's checksum and size.
    pub fn finish(self) -> io::Result<Stored> {
        let hashed = match self {
            Sealed::Plain(w) => w,
            Sealed::Age(w) => w.finish()?,
        };
        let (_, sha256, bytes) = hashed.finish()?;
        Ok(Stored { sha256, bytes })
    }
}

impl Write for Sealed {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(data),
            Sealed::Age(w) => w.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

/// A compressing, (encrypting,) hashing writer into a backend file.
pub enum Sink {
    Gzip(ParGzWriter<Sealed>),
    Zstd(zstd::stream::write::Encoder<'static, Sealed>),
    Plain(Sealed),
}

impl Sink {
    /// Compresses with `compression` (None: stores the bytes as they come), encrypts to `to`
    /// (None: not encrypted) into `out`.
    pub fn new(out: Raw, compression: Option<Compression>, to: Option<&Recipients>) -> io::Result<Sink> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let hashed = Sealed::new(out, to)?;
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
        match self {
            Sink::Gzip(w) => w.finish()?,
            Sink::Zstd(w) => w.finish()?,
            Sink::Plain(w) => w,
        }
        .finish()
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

/// How a set's files are read: as stored, or decrypted with these identities (the set's
/// manifest says whether it is encrypted; `ops` gets the opening for a set once, checked).
#[derive(Debug, Clone, Copy)]
pub enum Opening<'a> {
    Plain,
    Age(&'a Identities),
}

/// A stored file decrypted (as stored when `Plain`); with `ahead`, decryption runs on a
/// thread of its own, ahead of the reader.
pub fn opened(stored: Box<dyn Read + Send>, opening: Opening<'_>, ahead: bool) -> io::Result<Box<dyn Read + Send>> {
    Ok(opened_counting(stored, opening, ahead)?.0)
}

/// [`opened`], and how many bytes of `stored` the age header and nonce took.
fn opened_counting(
    stored: Box<dyn Read + Send>,
    opening: Opening<'_>,
    ahead: bool,
) -> io::Result<(Box<dyn Read + Send>, u64)> {
    let Opening::Age(identities) = opening else {
        return Ok((stored, 0));
    };
    let count = Arc::new(AtomicU64::new(0));
    let counted = Counting {
        inner: stored,
        count: count.clone(),
    };
    // The unbuffered parser reads no further than the header and nonce.
    let decryptor = age::Decryptor::new(counted).map_err(age_error)?;
    let header = count.load(Ordering::Relaxed);
    let plain = decryptor.decrypt(identities.as_age()).map_err(age_error)?;
    Ok(if ahead {
        (Box::new(pgzip::read_ahead(plain)), header)
    } else {
        (Box::new(plain), header)
    })
}

/// A stored file decrypted, with the length of its plaintext (for an upload that must say
/// it first), computed from the stored size: age stores 64 KiB chunks with a 16-byte tag each.
pub fn opened_with_length(
    stored: Box<dyn Read + Send>,
    stored_bytes: u64,
    opening: Opening<'_>,
) -> io::Result<(Box<dyn Read + Send>, u64)> {
    let (reader, header) = opened_counting(stored, opening, false)?;
    if let Opening::Plain = opening {
        return Ok((reader, stored_bytes));
    }
    Ok((reader, age_plaintext_len(stored_bytes.saturating_sub(header))))
}

/// The plaintext length of an age payload of `chunks` bytes (after the header and nonce):
/// every chunk but the last holds 64 KiB, each with its tag.
fn age_plaintext_len(chunks: u64) -> u64 {
    let n = chunks.div_ceil(AGE_CHUNK + AGE_TAG).max(1);
    chunks.saturating_sub(n * AGE_TAG)
}

/// A decryption that cannot start, as an I/O error: a key that does not open the file is
/// `PermissionDenied`, anything else (a damaged or foreign file) `InvalidData`.
fn age_error(e: age::DecryptError) -> io::Error {
    match e {
        age::DecryptError::NoMatchingKeys => io::Error::new(
            io::ErrorKind::PermissionDenied,
            "no identity of encryption.identity_file opens it",
        ),
        age::DecryptError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::InvalidData,
            "it ends inside its age header: the file is truncated",
        ),
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it cannot be decrypted: {other}"),
        ),
    }
}

/// Counts the bytes read through it.
struct Counting {
    inner: Box<dyn Read + Send>,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Decrypts (see [`Opening`]) and decompresses a stored file: each on a thread of its own,
/// ahead of the reader.
pub fn reading(
    stored: Box<dyn Read + Send>,
    compression: Option<Compression>,
    opening: Opening<'_>,
) -> io::Result<Box<dyn Read + Send>> {
    let plain = opened(stored, opening, compression.is_some())?;
    decompressing(plain, compression)
}

/// Decompresses a (decrypted) stored file; decompression runs on a thread of its own, ahead of the reader.
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

/// A writer that also hands what passes through it to a reader on a thread of its own, to
/// compute something over the stream while it is written (the database file's content
/// digest, which an encrypted set could not read back without a key).
pub struct Tee<W, T> {
    out: W,
    pipe: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    reader: std::thread::JoinHandle<io::Result<T>>,
}

impl<W: Write, T: Send + 'static> Tee<W, T> {
    pub fn new(out: W, read: impl FnOnce(Piped) -> io::Result<T> + Send + 'static) -> Self {
        let (pipe, rx) = std::sync::mpsc::sync_channel(16);
        let reader = std::thread::spawn(move || {
            read(Piped {
                rx,
                buf: Vec::new(),
                at: 0,
            })
        });
        Tee {
            out,
            pipe: Some(pipe),
            reader,
        }
    }

    /// Ends the stream; returns the writer and what the reader computed.
    pub fn finish(mut self) -> io::Result<(W, T)> {
        self.pipe = None;
        let got = self
            .reader
            .join()
            .map_err(|_| io::Error::other("the thread reading along panicked"))??;
        Ok((self.out, got))
    }
}

impl<W: Write, T> Write for Tee<W, T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        if let Some(pipe) = &self.pipe {
            // A reader that stopped early says why when it is joined.
            let _ = pipe.send(data[..n].to_vec());
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The reading end of a [`Tee`].
pub struct Piped {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for Piped {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.recv() {
                Ok(buf) => {
                    self.buf = buf;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_files_read_back_with_the_right_key_and_their_plaintext_length_is_known() {
        let id = age::x25519::Identity::generate();
        let to = Recipients::parse([id.to_public().to_string().as_str()], |i| i.to_string()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("key");
        std::fs::write(&key, age::secrecy::ExposeSecret::expose_secret(&id.to_string())).unwrap();
        let ids = Identities::from_file(&key).unwrap();
        let other = tmp.path().join("other");
        std::fs::write(
            &other,
            age::secrecy::ExposeSecret::expose_secret(&age::x25519::Identity::generate().to_string()),
        )
        .unwrap();
        let other = Identities::from_file(&other).unwrap();
        for len in [0usize, 1, 65_535, 65_536, 65_537, 3 * 65_536, 200_001] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let file = tmp.path().join(format!("f{len}"));
            let mut sink = Sink::new(Box::new(std::fs::File::create(&file).unwrap()), None, Some(&to)).unwrap();
            sink.write_all(&plain).unwrap();
            let stored = sink.finish().unwrap();
            assert_eq!(stored.bytes, std::fs::metadata(&file).unwrap().len());
            let open = || Box::new(std::fs::File::open(&file).unwrap()) as Box<dyn Read + Send>;
            let (mut r, n) = opened_with_length(open(), stored.bytes, Opening::Age(&ids)).unwrap();
            assert_eq!(n, len as u64, "plaintext length of {len}");
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert!(back == plain, "round trip of {len}");
            let e = opened(open(), Opening::Age(&other), false).err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        }
    }
}
