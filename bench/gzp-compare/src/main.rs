//! cwbackup's pgzip (its very source) against gzp 2.0.4, one mode a run, for /usr/bin/time.
//! Usage: gzp-compare c-ours|c-mgzip|c-mgzip128k|c-gzip IN OUT  or  d-ours|d-mgzip|d-flate2 IN
#[allow(dead_code)]
#[path = "../../../src/layers/pgzip.rs"]
mod pgzip;

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use gzp::deflate::{Gzip, Mgzip};
use gzp::par::compress::{Compression, ParCompressBuilder};
use gzp::par::decompress::ParDecompressBuilder;
use gzp::ZWriter;

const BUF: usize = 1 << 20;

/// Feeds `input` in 1 MiB writes, as archive.rs's BufWriter does.
fn feed(input: &str, w: &mut impl Write) -> io::Result<()> {
    let mut f = File::open(input)?;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n])?;
    }
}

fn drain(mut r: impl Read) -> io::Result<u64> {
    io::copy(&mut r, &mut io::sink())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, input) = (&args[1], &args[2]);
    let out = || -> io::Result<BufWriter<File>> { Ok(BufWriter::with_capacity(BUF, File::create(&args[3])?)) };
    let threads = 2;
    match mode.as_str() {
        "c-ours" => {
            let mut w = pgzip::ParGzWriter::new(out()?, 6, threads)?;
            feed(input, &mut w)?;
            w.finish()?.flush()?;
        }
        "c-mgzip" | "c-mgzip128k" => {
            let size = if mode == "c-mgzip" { 4 << 20 } else { 128 << 10 };
            let mut w = ParCompressBuilder::<Mgzip>::new()
                .num_threads(threads).unwrap()
                .buffer_size(size).unwrap()
                .compression_level(Compression::new(6))
                .from_writer(out()?);
            feed(input, &mut w)?;
            w.finish().map_err(io::Error::other)?.flush()?;
        }
        "c-gzip" => {
            let mut w = ParCompressBuilder::<Gzip>::new()
                .num_threads(threads).unwrap()
                .compression_level(Compression::new(6))
                .from_writer(out()?);
            feed(input, &mut w)?;
            w.finish().map_err(io::Error::other)?.flush()?;
        }
        "d-ours" => {
            println!("{}", drain(pgzip::reader(File::open(input)?))?);
        }
        "d-mgzip" => {
            let r = ParDecompressBuilder::<Mgzip>::new().num_threads(threads).unwrap().from_reader(File::open(input)?);
            println!("{}", drain(r)?);
        }
        "d-flate2" => {
            println!("{}", drain(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(BUF, File::open(input)?)))?);
        }
        _ => panic!("mode"),
    }
    Ok(())
}
