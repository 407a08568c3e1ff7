//! Parallel gzip, as pigz does it: one standard gzip stream (GNU tar and gzip read it as
//! usual), compressed on every core.
//!
//! The input is cut into 1 MiB chunks. Each is compressed on a worker thread as raw deflate,
//! primed with the previous chunk's last 32 KiB (the deflate window, so the ratio matches a
//! single stream) and ended with a sync flush (so the pieces concatenate into one valid
//! deflate stream); the last chunk ends the stream. The writer appends the pieces in order
//! between a gzip header and a trailer whose CRC-32 combines the chunks' CRCs. At most two
//! chunks per worker are in flight, so memory stays bounded whatever the input's size.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Bytes per chunk.
const CHUNK: usize = 1 << 20;
/// The deflate window: how much of the previous chunk primes the next.
const WINDOW: usize = 32 * 1024;
/// A gzip header: magic, deflate, no flags, no mtime, no extra flags, OS Unix.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A compressed chunk and the CRC-32 of its input.
type Compressed = io::Result<(Vec<u8>, Crc)>;

struct Job {
    data: Vec<u8>,
    dictionary: Vec<u8>,
    last: bool,
    reply: SyncSender<Compressed>,
}

/// A gzip writer that compresses on `threads` worker threads.
pub struct ParGzWriter<W: Write> {
    out: W,
    chunk: Vec<u8>,
    dictionary: Vec<u8>,
    crc: Crc,
    jobs: Option<mpsc::Sender<Job>>,
    pending: VecDeque<Receiver<Compressed>>,
    in_flight: usize,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer at gzip `level` on `threads` threads (at least one).
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        out.write_all(&HEADER)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads.max(1))
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = match queue.lock().expect("the job queue").recv() {
                            Ok(job) => job,
                            Err(_) => return, // the writer is gone
                        };
                        let result = compress(level, &job.dictionary, &job.data, job.last);
                        let _ = job.reply.send(result);
                    }
                })
            })
            .collect::<Vec<_>>();
        Ok(ParGzWriter {
            out,
            chunk: Vec::with_capacity(CHUNK),
            dictionary: Vec::new(),
            crc: Crc::new(),
            jobs: Some(jobs),
            pending: VecDeque::new(),
            in_flight: 2 * workers.len(),
            workers,
        })
    }

    /// Hands the current chunk to a worker, writing finished chunks when too many are queued.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        let tail = data.len().saturating_sub(WINDOW);
        let dictionary = std::mem::replace(&mut self.dictionary, data[tail..].to_vec());
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            data,
            dictionary,
            last,
            reply,
        };
        self.jobs
            .as_ref()
            .expect("not finished")
            .send(job)
            .map_err(|_| io::Error::other("a compression thread died"))?;
        self.pending.push_back(answer);
        while self.pending.len() > self.in_flight {
            self.write_next()?;
        }
        Ok(())
    }

    /// Writes the oldest chunk once its worker is done.
    fn write_next(&mut self) -> io::Result<()> {
        let Some(answer) = self.pending.pop_front() else {
            return Ok(());
        };
        let (bytes, crc) = answer
            .recv()
            .map_err(|_| io::Error::other("a compression thread died"))??;
        self.crc.combine(&crc);
        self.out.write_all(&bytes)
    }

    /// Ends the stream (last chunk, trailer) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_next()?;
        }
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
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
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Compresses one chunk as raw deflate, primed with `dictionary`; a sync flush ends it, or
/// the end of the stream for the `last` chunk.
fn compress(level: u32, dictionary: &[u8], data: &[u8], last: bool) -> Compressed {
    let mut crc = Crc::new();
    crc.update(data);
    let mut deflate = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 64 * 1024);
    loop {
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = deflate.total_in() as usize == data.len();
        let done = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok((out, crc));
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

/// Moves reading (and so decompressing) `inner` to a thread of its own, handing 1 MiB buffers
/// over a short queue: the consumer writes files while the next buffer is decompressed.
pub fn read_ahead<R: Read + Send + 'static>(mut inner: R) -> impl Read {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    std::thread::spawn(move || {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            let result = loop {
                match inner.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            match result {
                // An empty buffer marks the end; a send fails once the consumer is gone.
                Ok(()) => {
                    let end = buf.is_empty();
                    if tx.send(Ok(buf)).is_err() || end {
                        return;
                    }
                }
                Err(e) => {
                    if !buf.is_empty() {
                        let _ = tx.send(Ok(buf));
                    }
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    ReadAhead {
        rx,
        current: Vec::new(),
        at: 0,
        done: false,
    }
}

struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
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
                    self.current = buf;
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

    fn round_trip(len: usize, threads: usize) {
        let data = sample(len);
        let mut w = ParGzWriter::new(Vec::new(), 6, threads).unwrap();
        for piece in data.chunks(70_001) {
            w.write_all(piece).unwrap();
        }
        let gz = w.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data, "{len} bytes on {threads} threads");
        let mut back = Vec::new();
        read_ahead(flate2::read::GzDecoder::new(std::io::Cursor::new(gz)))
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn one_standard_gzip_stream_for_any_size() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            round_trip(len, 2);
        }
        round_trip(2 * CHUNK + 5, 1);
    }

    #[test]
    fn the_ratio_matches_a_single_stream() {
        let data = sample(4 * CHUNK);
        let mut w = ParGzWriter::new(Vec::new(), 6, 2).unwrap();
        w.write_all(&data).unwrap();
        let parallel = w.finish().unwrap().len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap().len();
        assert!(
            parallel as f64 <= single as f64 * 1.002,
            "parallel {parallel}, single {single}"
        );
    }

    #[test]
    fn read_ahead_passes_errors_on() {
        let mut broken = &b"\x1f\x8b\x08\x00garbage"[..];
        let mut data = Vec::new();
        let _ = std::io::copy(&mut broken, &mut data);
        let mut r = read_ahead(flate2::read::GzDecoder::new(std::io::Cursor::new(data)));
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
