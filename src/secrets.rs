//! The secrets of this run (the API password or token), known to the panic hook and to
//! `internal_error` messages, so that not even a bug can print one: every text that leaves the
//! process through those paths goes through [`redact`].

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Secrets shorter than this are not redacted from text (every `a` of a message would become
/// `<secret>`); they are still never printed on purpose.
const SHORTEST: usize = 4;

/// Remembers a secret of this run.
pub fn register(secret: &str) {
    if secret.len() >= SHORTEST {
        SECRETS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(secret.to_string());
    }
}

/// `text` with every registered secret replaced by `<secret>`.
pub fn redact(text: &str) -> String {
    let secrets = SECRETS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = text.to_string();
    for secret in secrets.iter() {
        text = text.replace(secret.as_str(), "<secret>");
    }
    text
}

/// The content of a small file the operator points at (`password_file`, `ca_file`): opened
/// without blocking (a FIFO with no writer must not hang the task), refused unless it is a
/// regular file (`/dev/zero` would never end), and refused when larger than `cap` bytes, which
/// is all that is ever read (SPEC §6: everything read from outside has a cap).
pub fn read_small_file(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(
            "it is not a regular file (a FIFO, a device or a directory cannot be read as one)",
        ));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        let most = if cap >= 1 << 20 && cap.is_multiple_of(1 << 20) {
            format!("{} MiB", cap >> 20)
        } else {
            format!("{} KiB", cap >> 10)
        };
        return Err(io::Error::other(format!(
            "it is larger than {most}, the most cwbackup reads from it"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn registered_secrets_are_redacted() {
        super::register("hunter2-xyz");
        assert_eq!(
            super::redact("password hunter2-xyz refused"),
            "password <secret> refused"
        );
    }
}
