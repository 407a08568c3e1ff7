//! Any bytes as a manifest: read, or refused with a message; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(message) = cwbackup::repository::manifest::Manifest::from_slice(data) {
        assert!(!message.is_empty());
    }
});
