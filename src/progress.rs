//! Progress of long work on stderr: files, bytes and rate, at most twice a second. Shown when
//! stderr is a terminal; `CWBACKUP_PROGRESS=1` shows it anyway (one line per update, for
//! logs), `CWBACKUP_PROGRESS=0` never. Stdout is the result's alone.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(500);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    /// Redrawn in place on a terminal.
    Terminal,
    /// One line per update.
    Lines,
}

/// A reporter for one long piece of work.
pub struct Progress {
    mode: Mode,
    what: &'static str,
    files: u64,
    bytes: u64,
    started: Instant,
    shown: Instant,
}

impl Progress {
    /// A reporter for `what` ("archiving", "hashing", …).
    pub fn new(what: &'static str) -> Progress {
        let mode = match std::env::var("CWBACKUP_PROGRESS").as_deref() {
            Ok("0") => Mode::Off,
            Ok("1") => Mode::Lines,
            _ if std::io::stderr().is_terminal() => Mode::Terminal,
            _ => Mode::Off,
        };
        let now = Instant::now();
        Progress {
            mode,
            what,
            files: 0,
            bytes: 0,
            started: now,
            shown: now,
        }
    }

    /// Counts one more file of `bytes`.
    pub fn file(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
        if self.mode != Mode::Off && self.shown.elapsed() >= EVERY {
            self.shown = Instant::now();
            self.show(false);
        }
    }

    fn show(&self, last: bool) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        let line = format!(
            "cwbackup: {} {} files, {mib:.1} MiB, {:.1} MiB/s",
            self.what,
            self.files,
            mib / secs
        );
        let mut err = std::io::stderr().lock();
        let _ = match (self.mode, last) {
            (Mode::Terminal, false) => write!(err, "\r\x1b[K{line}"),
            (Mode::Terminal, true) => writeln!(err, "\r\x1b[K{line}"),
            _ => writeln!(err, "{line}"),
        };
    }
}

impl Drop for Progress {
    /// The final figures: always when asked for, on a terminal when the work took long
    /// enough to show progress at all.
    fn drop(&mut self) {
        if self.mode == Mode::Lines
            || (self.mode == Mode::Terminal && self.started.elapsed() >= EVERY)
        {
            self.show(true);
        }
    }
}
