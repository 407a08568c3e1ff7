//! age keys (SPEC §11): the X25519 recipients a new set is encrypted to, and the identities
//! that open a set, read from the task (`encryption.recipients`, `recipients_file`,
//! `identity_file`). Only X25519 (`age1…` / `AGE-SECRET-KEY-1…`): what `age-keygen` writes and
//! Debian's `age` reads, so that a set stays recoverable by hand.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use age::x25519;

/// The largest recipients or identity file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Whom a new set's files are encrypted to.
#[derive(Clone)]
pub struct Recipients(Vec<x25519::Recipient>);

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.strings()).finish()
    }
}

impl Recipients {
    /// Parses `age1…` public keys; `at(i)` names the i-th for an error. Duplicates are kept
    /// once. Refuses an empty list.
    pub fn parse<'a>(
        keys: impl IntoIterator<Item = &'a str>,
        at: impl Fn(usize) -> String,
    ) -> Result<Recipients, String> {
        let mut out: Vec<x25519::Recipient> = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let key = key.trim();
            let r = x25519::Recipient::from_str(key).map_err(|_| {
                format!(
                    "{}: not an age X25519 recipient (a public key `age1…`, as `age-keygen` prints it; other kinds of recipient are not supported)",
                    at(i)
                )
            })?;
            if !out.iter().any(|o| o.to_string() == r.to_string()) {
                out.push(r);
            }
        }
        if out.is_empty() {
            return Err("no recipient given: name at least one public key `age1…`".to_string());
        }
        Ok(Recipients(out))
    }

    /// A recipients file: one `age1…` a line; blank lines and `#` comments skipped.
    pub fn from_file(path: &Path) -> Result<Recipients, String> {
        let text = read_text(path)?;
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(n, l)| (n + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        Recipients::parse(lines.iter().map(|(_, l)| *l), |i| {
            format!("{} line {}", path.display(), lines[i].0)
        })
        .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The public keys as text, in order.
    pub fn strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// The recipients as age takes them.
    pub fn as_age(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.0.iter().map(|r| r as &dyn age::Recipient)
    }

    /// Whether these are the same recipients as `others`, in any order.
    pub fn same_as(&self, others: &[String]) -> bool {
        let mut mine = self.strings();
        let mut theirs = others.to_vec();
        mine.sort();
        theirs.sort();
        theirs.dedup();
        mine == theirs
    }
}

/// The identities that open a set's files. Never printed.
#[derive(Clone)]
pub struct Identities {
    keys: Vec<x25519::Identity>,
    /// Where they came from, for messages.
    pub file: String,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({}: <secret>)", self.file)
    }
}

impl Identities {
    /// An identity file as `age-keygen` writes it: `AGE-SECRET-KEY-1…` lines, `#` comments.
    /// An error names the line, never its content.
    pub fn from_file(path: &Path) -> Result<Identities, String> {
        let text = read_text(path)?;
        if text.starts_with("age-encryption.org/") || text.starts_with("-----BEGIN AGE") {
            return Err(format!(
                "{} is a passphrase-protected identity file, which cwbackup cannot open without a terminal: give a plain identity file (keep it readable by root only)",
                path.display()
            ));
        }
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            crate::secrets::register(line);
            let key = x25519::Identity::from_str(line).map_err(|_| {
                format!(
                    "{} line {}: not an age X25519 identity (`AGE-SECRET-KEY-1…`, as `age-keygen` writes it; the line is not shown)",
                    path.display(),
                    n + 1
                )
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(format!(
                "{} holds no identity (`AGE-SECRET-KEY-1…`)",
                path.display()
            ));
        }
        Ok(Identities {
            keys,
            file: path.display().to_string(),
        })
    }

    /// The public keys of these identities.
    pub fn public(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.to_public().to_string()).collect()
    }

    /// Whether one of these identities is one of `recipients`.
    pub fn opens(&self, recipients: &[String]) -> bool {
        self.public().iter().any(|p| recipients.contains(p))
    }

    /// The identities as age takes them.
    pub fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k as &dyn age::Identity)
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    let bytes = crate::secrets::read_small_file(path, MAX_KEY_FILE)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_parse_dedupe_and_compare_in_any_order() {
        let a = x25519::Identity::generate().to_public().to_string();
        let b = x25519::Identity::generate().to_public().to_string();
        let r = Recipients::parse([a.as_str(), b.as_str(), a.as_str()], |i| format!("#{i}")).unwrap();
        assert_eq!(r.strings(), [a.clone(), b.clone()]);
        assert!(r.same_as(&[b.clone(), a.clone()]));
        assert!(!r.same_as(std::slice::from_ref(&a)));
        let e = Recipients::parse(["ssh-ed25519 AAAA"], |i| format!("#{i}")).unwrap_err();
        assert!(e.starts_with("#0:"), "{e}");
        assert!(Recipients::parse([], |i| format!("#{i}")).is_err());
    }

    #[test]
    fn an_identity_file_as_age_keygen_writes_it_opens_its_recipient_and_never_shows_a_key() {
        let tmp = tempfile::tempdir().unwrap();
        let id = x25519::Identity::generate();
        let public = id.to_public().to_string();
        let file = tmp.path().join("key.txt");
        std::fs::write(
            &file,
            format!("# created: now\n# public key: {public}\n{}\n", age::secrecy::ExposeSecret::expose_secret(&id.to_string())),
        )
        .unwrap();
        let ids = Identities::from_file(&file).unwrap();
        assert_eq!(ids.public(), std::slice::from_ref(&public));
        assert!(ids.opens(&[public]));
        assert!(!format!("{ids:?}").contains("AGE-SECRET"));
        std::fs::write(&file, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let e = Identities::from_file(&file).unwrap_err();
        assert!(e.contains("line 1") && !e.contains("NOTAKEY"), "{e}");
    }
}
