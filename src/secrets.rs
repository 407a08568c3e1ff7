//! The secrets of this run (the API password or token), known to the panic hook and to
//! `internal_error` messages, so that not even a bug can print one: every text that leaves the
//! process through those paths goes through [`redact`].

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
