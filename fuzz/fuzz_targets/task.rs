//! Any bytes as a task: parsed, or refused as `invalid_task`; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cwbackup::task::parse(data) {
        assert_eq!(e.kind, cwbackup::error::ErrorKind::InvalidTask);
    }
});
