//! Measures zlib-rs gzip levels on a file: size and time (for choosing GZIP_LEVEL).
//! cargo run --release --example levels -- FILE
use std::io::Write;
fn main() {
    let data = std::fs::read(std::env::args().nth(1).expect("a file")).unwrap();
    for level in 5..=9 {
        let t = std::time::Instant::now();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        gz.write_all(&data).unwrap();
        let n = gz.finish().unwrap().len();
        println!(
            "zlib-rs level {level}: {n} bytes, {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
}
