//! Measures gzip levels on a file, for choosing GZIP_LEVEL: cwbackup's writer (libdeflate, 4 MiB
//! members, on every core) against one zlib-rs stream; compare with `gzip -6 -c FILE | wc -c`.
//! cargo run --release --example levels -- FILE
use std::io::Write;

use cwbackup::layers::pgzip::ParGzWriter;

fn main() {
    let data = std::fs::read(std::env::args().nth(1).expect("a file")).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for level in 4..=9 {
        let t = std::time::Instant::now();
        let mut gz = ParGzWriter::new(Vec::new(), level, threads).unwrap();
        gz.write_all(&data).unwrap();
        let n = gz.finish().unwrap().len();
        let ours = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let mut gz =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level as u32));
        gz.write_all(&data).unwrap();
        let z = gz.finish().unwrap().len();
        println!(
            "level {level}: cwbackup {n} bytes in {ours:.2} s on {threads} threads; zlib-rs {z} bytes in {:.2} s on one",
            t.elapsed().as_secs_f64()
        );
    }
}
