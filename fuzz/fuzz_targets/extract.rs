//! Any bytes as a gzip'd volume archive, extracted into a scratch directory: every failure is
//! `integrity_error` or `unsafe_archive`, and nothing lands outside the directory.
#![no_main]
use libfuzzer_sys::fuzz_target;

use cwbackup::error::ErrorKind;
use cwbackup::volume::extract::{Limits, read_archive};

fuzz_target!(|data: &[u8]| {
    let scratch = std::env::temp_dir().join(format!("cwbackup-fuzz-{}", std::process::id()));
    let dest = scratch.join("dest");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&dest).unwrap();
    let reader = cwbackup::layers::pgzip::reader(std::io::Cursor::new(data.to_vec()));
    if let Err(e) = read_archive(reader, Some(&dest), Limits { max_bytes: 1 << 20, max_entries: 1000 }) {
        assert!(matches!(e.kind, ErrorKind::IntegrityError | ErrorKind::UnsafeArchive), "{e}");
    }
    let outside: Vec<_> = std::fs::read_dir(&scratch).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("dest")]);
    let _ = std::fs::remove_dir_all(&scratch);
});
