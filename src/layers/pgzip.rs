//! gzip compressed on every core, and read back on a thread of its own.
//!
//! The writer cuts its input into 4 MiB chunks and compresses each with libdeflate, on a worker
//! thread, into a gzip member of its own. The file is those members back to back: gzip, GNU tar
//! and every gzip library read it as one stream (RFC 1952 §2.2, as `cat a.gz b.gz` makes). Each
//! member's header carries an extra field, `CW`, with the member's deflate and data sizes, so
//! that the reader can hand libdeflate (which works on whole buffers only) one whole member at
//! a time. gzip files without that field (made by other tools) are read by flate2 as a plain
//! multi-member stream.
//!
//! Why libdeflate rather than zlib: at level 6 it is 1.4 × faster than zlib-rs at level 6 and
//! its output is smaller than GNU `gzip -6`'s, where zlib-rs needs level 7 (and twice the time)
//! for that; it also inflates twice as fast. Why 4 MiB chunks: each chunk starts with an empty
//! deflate window, and below 4 MiB that cost made binary data compress worse than `gzip -6`.
//! At most one chunk per worker is in flight, so memory stays bounded whatever the size.
//!
//! Why not gzp (2.0.4, the current release; issue 13 asked): its `ParCompress<Mgzip>` is this
//! same design (libdeflate members whose header holds the member's length, in an extra field
//! `IG`), so `bench/gzp-compare/run.sh` measures both on the tar streams of the benchmark's
//! first two datasets (405 MiB of YAML, 404 MiB half random), 2 threads, level 6, alternating
//! with GNU gzip. With our 4 MiB blocks gzp writes the same size (±0.001 %) in 3–7 % more CPU
//! at 75–87 MiB peak RSS where this writer needs 32 MiB (it queues twice as many blocks as
//! threads each way and allocates every buffer anew): that alone would break a backup's 64 MiB
//! bound. With its default 128 KiB blocks the YAML archive is 2.9 % larger and the binary one
//! larger than `gzip -6`'s; `ParCompress<Gzip>` (one stream, through flate2) is 8 % larger on
//! YAML and takes 38–64 % more CPU. This reader inflates YAML at 964–1397 MiB/s in 15–19 MiB,
//! gzp's two-thread `ParDecompress` at 764–988 MiB/s in 50 MiB. Nor could its readers replace
//! this one: sets already written carry `CW`, not `IG`; `ParDecompress` ends without an error
//! at a member header cut short, panics (capacity overflow) on a length field smaller than the
//! header, and sizes its output from the trailer unchecked; `MgzipSyncReader` unwraps its
//! errors; and `ParCompress`'s `Drop` unwraps `finish()`, so a write error after an early return
//! would be a panic rather than an error. So this module stays, and gzp (with the five crates it
//! would add: flume, nanorand, core_affinity, num_cpus, byteorder) does not come in.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor, Decompressor};

/// Bytes per chunk (and so per member).
const CHUNK: usize = 4 << 20;
/// The largest member data the reader accepts: a header claiming more is damage, not ours.
const MAX_MEMBER: usize = 16 << 20;
/// A member header: magic, deflate, FEXTRA, no mtime, no extra flags, OS Unix, then XLEN = 12
/// and the subfield `CW` of 8 bytes: deflate size and data size, u32 little-endian.
const HEADER_LEN: usize = 24;
const HEADER_START: [u8; 16] = [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 3, 12, 0, b'C', b'W', 8, 0];
/// A gzip trailer: CRC-32 and size of the data.
const TRAILER_LEN: usize = 8;
/// Decompressed buffers queued ahead of the reader.
const QUEUE: usize = 2;

/// A chunk to compress into a member, in buffers that come back with the answer.
struct Job {
    data: Vec<u8>,
    member: Vec<u8>,
    reply: SyncSender<io::Result<Done>>,
}

/// A compressed chunk: the member is `member[..len]`.
struct Done {
    data: Vec<u8>,
    member: Vec<u8>,
    len: usize,
}

/// A gzip writer that compresses on `threads` worker threads.
pub struct ParGzWriter<W: Write> {
    out: W,
    chunk: Vec<u8>,
    members: u64,
    jobs: Option<mpsc::Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    in_flight: usize,
    /// Buffers back from the workers, to use again: after the first few chunks, none is
    /// allocated (which also keeps the allocator from growing the heap).
    spare_chunks: Vec<Vec<u8>>,
    spare_members: Vec<Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer at libdeflate `level` (1–12) on `threads` threads (at least one).
    pub fn new(out: W, level: i32, threads: usize) -> io::Result<Self> {
        let level = CompressionLvl::new(level)
            .map_err(|e| io::Error::other(format!("gzip level {level}: {e:?}")))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads.max(1))
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    let mut compressor = Compressor::new(level);
                    loop {
                        let Job {
                            data,
                            mut member,
                            reply,
                        } = match queue.lock().expect("the job queue").recv() {
                            Ok(job) => job,
                            Err(_) => return, // the writer is gone
                        };
                        let done = write_member(&mut compressor, &data, &mut member)
                            .map(|len| Done { data, member, len });
                        let _ = reply.send(done);
                    }
                })
            })
            .collect::<Vec<_>>();
        Ok(ParGzWriter {
            out,
            chunk: Vec::with_capacity(CHUNK),
            members: 0,
            jobs: Some(jobs),
            pending: VecDeque::new(),
            in_flight: workers.len(),
            spare_chunks: Vec::new(),
            spare_members: Vec::new(),
            workers,
        })
    }

    /// Hands the current chunk to a worker, writing finished members when too many are queued.
    fn submit(&mut self) -> io::Result<()> {
        let mut fresh = self
            .spare_chunks
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        fresh.clear();
        let data = std::mem::replace(&mut self.chunk, fresh);
        let member = self.spare_members.pop().unwrap_or_default();
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .expect("not finished")
            .send(Job {
                data,
                member,
                reply,
            })
            .map_err(|_| io::Error::other("a compression thread died"))?;
        self.members += 1;
        self.pending.push_back(answer);
        while self.pending.len() > self.in_flight {
            self.write_next()?;
        }
        Ok(())
    }

    /// Writes the oldest member once its worker is done.
    fn write_next(&mut self) -> io::Result<()> {
        let Some(answer) = self.pending.pop_front() else {
            return Ok(());
        };
        let done = answer
            .recv()
            .map_err(|_| io::Error::other("a compression thread died"))??;
        self.out.write_all(&done.member[..done.len])?;
        self.spare_chunks.push(done.data);
        self.spare_members.push(done.member);
        Ok(())
    }

    /// Writes the last chunk (an empty member if nothing was written, so the file is still
    /// valid gzip) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.chunk.is_empty() || self.members == 0 {
            self.submit()?;
        }
        while !self.pending.is_empty() {
            self.write_next()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&data[..n]);
        if self.chunk.len() == CHUNK {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Compresses `data` into one complete gzip member at the start of `member` (grown if needed,
/// never shrunk); returns the member's length.
fn write_member(
    compressor: &mut Compressor,
    data: &[u8],
    member: &mut Vec<u8>,
) -> io::Result<usize> {
    let room = HEADER_LEN + compressor.deflate_compress_bound(data.len()) + TRAILER_LEN;
    if member.len() < room {
        member.resize(room, 0);
    }
    let deflated = compressor
        .deflate_compress(data, &mut member[HEADER_LEN..room - TRAILER_LEN])
        .map_err(io::Error::other)?;
    member[..16].copy_from_slice(&HEADER_START);
    member[16..20].copy_from_slice(&(deflated as u32).to_le_bytes());
    member[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
    let end = HEADER_LEN + deflated;
    member[end..end + 4].copy_from_slice(&libdeflater::crc32(data).to_le_bytes());
    member[end + 4..end + 8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(end + TRAILER_LEN)
}

/// The deflate and data sizes a member header of ours announces; `None` for any other header.
fn sizes(header: &[u8; HEADER_LEN]) -> Option<(usize, usize)> {
    if header[..4] != HEADER_START[..4] || header[10..16] != HEADER_START[10..16] {
        return None;
    }
    let deflated = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    let data = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes")) as usize;
    Some((deflated, data))
}

fn damaged(why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("gzip data damaged: {why}"),
    )
}

/// Reads a gzip file, decompressing on a thread of its own ahead of the reader: our members
/// whole through libdeflate, anything else through flate2.
pub fn reader<R: Read + Send + 'static>(mut inner: R) -> impl Read + Send {
    on_thread(move |feed| {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut inner, &mut header)?;
        if got == HEADER_LEN && sizes(&header).is_some() {
            return members(inner, header, feed);
        }
        let stream = io::Cursor::new(header[..got].to_vec()).chain(inner);
        pump(flate2::read::MultiGzDecoder::new(stream), feed)
    })
}

/// Decompresses members of ours, `header` being the first one's, until the input ends.
fn members(mut inner: impl Read, mut header: [u8; HEADER_LEN], feed: &Feed) -> io::Result<()> {
    let mut decompressor = Decompressor::new();
    let mut input = Vec::new();
    // Where the current member starts in the file, for the operator's error message.
    let mut at = 0;
    loop {
        let here = at;
        let bad = move |why: &str| damaged(format!("the member at byte {here} {why}"));
        let (deflated, len) = sizes(&header).ok_or_else(|| bad("has no size field"))?;
        if len > MAX_MEMBER || deflated > MAX_MEMBER + MAX_MEMBER / 8 {
            return Err(bad(&format!("claims {deflated} → {len} bytes")));
        }
        input.resize(deflated + TRAILER_LEN, 0);
        inner
            .read_exact(&mut input)
            .map_err(|e| bad(&format!("is cut short ({e})")))?;
        let mut data = feed.buffer(len);
        let n = decompressor
            .deflate_decompress(&input[..deflated], &mut data)
            .map_err(|_| bad("does not inflate"))?;
        let trailer = &input[deflated..];
        let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
        let size = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes")) as usize;
        if n != len || size != len || libdeflater::crc32(&data) != crc {
            return Err(bad("does not match its CRC-32 or size"));
        }
        at += HEADER_LEN + deflated + TRAILER_LEN;
        if !data.is_empty() && !feed.send(data) {
            return Ok(()); // the reader is gone
        }
        match read_full(&mut inner, &mut header)? {
            0 => return Ok(()),
            HEADER_LEN => {}
            _ => {
                return Err(damaged(format!("the member at byte {at} is cut short")));
            }
        }
    }
}

/// Moves reading `inner` (and so decompressing it) to a thread of its own.
pub fn read_ahead<R: Read + Send + 'static>(inner: R) -> impl Read + Send {
    on_thread(move |feed| pump(inner, feed))
}

/// Sends what `inner` yields in 1 MiB buffers.
fn pump(mut inner: impl Read, feed: &Feed) -> io::Result<()> {
    loop {
        let mut buf = feed.buffer(1 << 20);
        let filled = read_full(&mut inner, &mut buf)?;
        buf.truncate(filled);
        if filled == 0 || !feed.send(buf) {
            return Ok(());
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match inner.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Runs `produce` on a thread of its own; the non-empty buffers it sends are the returned
/// reader's bytes, then its error if it fails.
fn on_thread<F>(produce: F) -> ReadAhead
where
    F: FnOnce(&Feed) -> io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let (give_back, used) = mpsc::channel();
    std::thread::spawn(move || {
        let feed = Feed { tx, used };
        // An empty buffer marks the end.
        let end = produce(&feed).map(|()| Vec::new());
        let _ = feed.tx.send(end);
    });
    ReadAhead {
        rx,
        give_back,
        current: Vec::new(),
        at: 0,
        done: false,
    }
}

/// The producing thread's end of a `ReadAhead`.
struct Feed {
    tx: SyncSender<io::Result<Vec<u8>>>,
    /// Buffers the reader is done with.
    used: Receiver<Vec<u8>>,
}

impl Feed {
    /// A buffer of `len` bytes: one the reader gave back, or a new one.
    fn buffer(&self, len: usize) -> Vec<u8> {
        let mut buf = self.used.try_recv().unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// Hands a non-empty buffer to the reader; false once the reader is gone.
    fn send(&self, buf: Vec<u8>) -> bool {
        self.tx.send(Ok(buf)).is_ok()
    }
}

struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    give_back: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    done: bool,
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    self.done = buf.is_empty();
                    let used = std::mem::replace(&mut self.current, buf);
                    let _ = self.give_back.send(used);
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => return Err(io::Error::other("the decompression thread stopped")),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 7u32;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    (state >> 24) as u8
                } else {
                    b"connectware"[i % 11]
                }
            })
            .collect()
    }

    fn compress(data: &[u8], threads: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), 6, threads).unwrap();
        for piece in data.chunks(70_001) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_back(gz: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut back = Vec::new();
        reader(io::Cursor::new(gz)).read_to_end(&mut back)?;
        Ok(back)
    }

    #[test]
    fn members_read_back_here_and_as_standard_gzip() {
        for (len, threads) in [
            (0, 2),
            (1, 2),
            (CHUNK, 2),
            (CHUNK + 1, 2),
            (2 * CHUNK + 5, 1),
        ] {
            let data = sample(len);
            let gz = compress(&data, threads);
            assert!(gz.len() > HEADER_LEN);
            let mut standard = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut standard)
                .unwrap();
            assert_eq!(standard, data, "{len} bytes on {threads} threads, flate2");
            assert_eq!(read_back(gz).unwrap(), data, "{len} bytes, our reader");
        }
    }

    #[test]
    fn other_gzip_files_are_read_too() {
        let data = sample(3 << 20);
        // One stream, as zlib or an older cwbackup writes it, and two members back to back.
        let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        one.write_all(&data).unwrap();
        let one = one.finish().unwrap();
        assert_eq!(read_back(one.clone()).unwrap(), data);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert_eq!(read_back(two).unwrap(), [&data[..], &data[..]].concat());
        assert!(read_back(b"\x1f\x8b".to_vec()).is_err());
    }

    #[test]
    fn damage_is_an_error_not_different_data() {
        let data = sample(CHUNK + 1000);
        let gz = compress(&data, 2);
        // A flipped byte in the data, in a trailer, in the size field; a cut file; junk after.
        let last = gz.len() - 1;
        for at in [HEADER_LEN + 100, last - 6, 17] {
            let mut bad = gz.clone();
            bad[at] ^= 0x40;
            let e = read_back(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "byte {at}: {e}");
        }
        assert!(read_back(gz[..gz.len() - 3].to_vec()).is_err());
        assert!(read_back([&gz[..], b"junk"].concat()).is_err());
        // The message says where: the second member starts after the first.
        let second =
            HEADER_LEN + sizes(gz[..HEADER_LEN].try_into().unwrap()).unwrap().0 + TRAILER_LEN;
        let mut bad = gz.clone();
        bad[second + HEADER_LEN + 10] ^= 0x40;
        let e = read_back(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("the member at byte {second} ")), "{e}");
    }

    #[test]
    fn the_ratio_is_zlib_level_6s() {
        // On real volumes it is better (the benchmark compares with `gzip -6`); on this
        // synthetic sample, within 0.5 % of one zlib stream.
        let data = sample(2 * CHUNK);
        let ours = compress(&data, 2).len();
        let mut zlib = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        zlib.write_all(&data).unwrap();
        let zlib = zlib.finish().unwrap().len();
        assert!(
            ours as f64 <= zlib as f64 * 1.005,
            "ours {ours}, zlib {zlib}"
        );
    }

    #[test]
    fn read_ahead_passes_errors_on() {
        let broken = b"\x1f\x8b\x08\x00garbage".to_vec();
        let mut r = read_ahead(flate2::read::GzDecoder::new(io::Cursor::new(broken)));
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
