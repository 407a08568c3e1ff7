//! Progress of long work on stderr (SPEC §2): per phase (archiving, hashing, extracting,
//! reading, checksums) the files and bytes done, and where the total is known, the total, the
//! percent and an estimate of the time left. Stdout is the result's alone.
//!
//! On a terminal, each phase is an `indicatif` bar, redrawn in place; phases that run at the
//! same time (a restore stages while it checks) get a line each, so they never interleave.
//! Otherwise (a log, Ansible, cron) plain lines, at most one every [`LINES_EVERY`] per phase,
//! each a whole line written at once: work shorter than that prints nothing.
//! `CWBACKUP_PROGRESS=1` asks for plain lines even on a terminal, and a last line per phase with
//! its totals; `CWBACKUP_PROGRESS=0` shows nothing.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The most often a plain progress line is printed, per phase.
pub const LINES_EVERY: Duration = Duration::from_secs(5);
/// The most often a terminal bar is updated (indicatif redraws at most as often).
const BAR_EVERY: Duration = Duration::from_millis(100);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    /// An indicatif bar on the terminal.
    Bar,
    /// Plain lines every `every`; with `last`, a closing line with the totals.
    Lines {
        every: Duration,
        last: bool,
    },
}

fn mode() -> Mode {
    match std::env::var("CWBACKUP_PROGRESS").as_deref() {
        Ok("0") => Mode::Off,
        Ok("1") => Mode::Lines {
            every: Duration::from_millis(500),
            last: true,
        },
        _ if std::io::stderr().is_terminal() => Mode::Bar,
        _ => Mode::Lines {
            every: test_every().unwrap_or(LINES_EVERY),
            last: false,
        },
    }
}

/// `CWBACKUP_TEST_PROGRESS_EVERY_MS`: a shorter interval for plain lines, so that the tests
/// see them on a small tree; read only by debug builds.
fn test_every() -> Option<Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let ms = std::env::var("CWBACKUP_TEST_PROGRESS_EVERY_MS").ok()?;
    Some(Duration::from_millis(ms.parse().ok()?))
}

/// The terminal's bars, shared by the phases that run at the same time.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)))
}

/// The sum of `sizes`, saturating: a hostile manifest may claim sizes that add up past
/// `u64::MAX`.
pub fn total(sizes: impl Iterator<Item = u64>) -> u64 {
    sizes.fold(0, u64::saturating_add)
}

/// Logs one line on stderr without breaking the terminal's bars (they are drawn again below
/// it).
pub fn log(line: &str) {
    let write = || {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    match BARS.get() {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// A reporter for one phase of long work.
pub struct Progress {
    mode: Mode,
    what: &'static str,
    files: u64,
    bytes: u64,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    started: Instant,
    shown: Instant,
    /// A plain line was printed (so the phase gets its closing line).
    printed: bool,
}

impl Progress {
    /// A reporter for `what` ("archiving", "hashing", …) whose total is not known.
    pub fn new(what: &'static str) -> Progress {
        Progress::start(what, None)
    }

    /// A reporter for `what` that will count up to `total` bytes.
    pub fn with_total(what: &'static str, total: u64) -> Progress {
        Progress::start(what, Some(total))
    }

    fn start(what: &'static str, total: Option<u64>) -> Progress {
        let mode = mode();
        let bar = (mode == Mode::Bar).then(|| new_bar(what, total));
        let now = Instant::now();
        Progress {
            mode,
            what,
            files: 0,
            bytes: 0,
            total,
            bar,
            started: now,
            shown: now,
            printed: false,
        }
    }

    /// Counts one more file of `bytes`.
    pub fn file(&mut self, bytes: u64) {
        self.files += 1;
        self.add(bytes);
    }

    /// Counts `bytes` more of a stream.
    pub fn bytes(&mut self, bytes: u64) {
        self.add(bytes);
    }

    fn add(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        let every = match self.mode {
            Mode::Off => return,
            Mode::Bar => BAR_EVERY,
            Mode::Lines { every, .. } => every,
        };
        if self.shown.elapsed() >= every {
            self.shown = Instant::now();
            self.show();
        }
    }

    fn show(&mut self) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.bytes);
                if self.files > 0 {
                    bar.set_message(format!("{} files", self.files));
                }
            }
            None => {
                let line = line(
                    self.what,
                    self.files,
                    self.bytes,
                    self.total,
                    self.started.elapsed(),
                );
                self.printed = true;
                // One write of the whole line, so that phases never interleave within a line.
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }
}

impl Drop for Progress {
    /// A terminal bar stays with its final figures; plain lines end with a closing line when
    /// asked for, or when the phase printed any.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            self.show_bar_final(&bar);
            return;
        }
        if let Mode::Lines { last, .. } = self.mode
            && (last || self.printed)
        {
            let line = closing_line(self.what, self.files, self.bytes, self.started.elapsed());
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

impl Progress {
    fn show_bar_final(&self, bar: &ProgressBar) {
        if self.started.elapsed() < Duration::from_millis(500) {
            bar.finish_and_clear(); // too quick to be worth a line
            return;
        }
        if let Some(total) = self.total {
            bar.set_length(total.max(self.bytes));
        }
        bar.set_position(self.bytes);
        bar.finish_with_message(format!("{}done", files_part(self.files)));
    }
}

/// A reporter for a wait on someone else (Connectware's database backup or restore): the time
/// waited so far, since no total is known.
pub struct Waiting {
    mode: Mode,
    what: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    shown: Instant,
}

impl Waiting {
    /// A reporter for waiting for `what` ("the database backup", …).
    pub fn new(what: &'static str) -> Waiting {
        let mode = mode();
        let bar = (mode == Mode::Bar).then(|| {
            let style = ProgressStyle::with_template("cwbackup: waiting for {prefix}, {elapsed}")
                .expect("a valid template");
            bars().add(
                ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
                    .with_style(style)
                    .with_prefix(what),
            )
        });
        let now = Instant::now();
        Waiting {
            mode,
            what,
            bar,
            started: now,
            shown: now,
        }
    }

    /// Called on every poll: redraws the bar, or prints a line at most once an interval.
    pub fn tick(&mut self) {
        if let Some(bar) = &self.bar {
            bar.tick();
        } else if let Mode::Lines { every, .. } = self.mode
            && self.shown.elapsed() >= every
        {
            self.shown = Instant::now();
            log(&format!(
                "cwbackup: waiting for {}, {} so far",
                self.what,
                eta(self.started.elapsed())
            ));
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn new_bar(what: &'static str, total: Option<u64>) -> ProgressBar {
    let template = match total {
        Some(_) => {
            "cwbackup: {prefix:10} [{bar:24}] {binary_bytes}/{binary_total_bytes} {percent:>3}% \
             {binary_bytes_per_sec} {eta} left  {msg}"
        }
        None => "cwbackup: {prefix:10} {binary_bytes} {binary_bytes_per_sec}  {msg}",
    };
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden())
        .with_style(style)
        .with_prefix(what);
    bars().add(bar)
}

const MIB: f64 = 1024.0 * 1024.0;

/// One plain progress line: files, bytes, rate, and with a total the percent and time left.
fn line(what: &str, files: u64, bytes: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = bytes as f64 / secs;
    let done = bytes as f64 / MIB;
    match total {
        Some(total) => {
            let percent = if total == 0 {
                100
            } else {
                (u128::from(bytes.min(total)) * 100 / u128::from(total)) as u32
            };
            let left = if rate > 0.0 {
                let secs = total.saturating_sub(bytes) as f64 / rate;
                let left = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
                format!("{} left", eta(left))
            } else {
                "time left unknown".to_string()
            };
            format!(
                "cwbackup: {what} {percent}% ({}{done:.1} of {:.1} MiB), {:.1} MiB/s, {left}\n",
                files_part(files),
                total as f64 / MIB,
                rate / MIB
            )
        }
        None => format!(
            "cwbackup: {what} {}{done:.1} MiB, {:.1} MiB/s\n",
            files_part(files),
            rate / MIB
        ),
    }
}

/// The closing line of a phase.
fn closing_line(what: &str, files: u64, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "cwbackup: {what} done: {}{:.1} MiB in {secs:.1} s, {:.1} MiB/s\n",
        files_part(files),
        bytes as f64 / MIB,
        bytes as f64 / MIB / secs
    )
}

/// "N files, ", or nothing for a phase that reads streams (checksums).
fn files_part(files: u64) -> String {
    if files == 0 {
        String::new()
    } else {
        format!("{files} files, ")
    }
}

/// Time left, rounded to what a person cares about.
fn eta(left: Duration) -> String {
    let s = left.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_with_a_total_has_the_percent_and_the_time_left() {
        let l = line(
            "archiving",
            10,
            25 * 1024 * 1024,
            Some(100 * 1024 * 1024),
            Duration::from_secs(5),
        );
        assert_eq!(
            l,
            "cwbackup: archiving 25% (10 files, 25.0 of 100.0 MiB), 5.0 MiB/s, 15 s left\n"
        );
    }

    #[test]
    fn a_line_without_a_total_has_files_bytes_and_rate() {
        let l = line("hashing", 3, 2 * 1024 * 1024, None, Duration::from_secs(2));
        assert_eq!(l, "cwbackup: hashing 3 files, 2.0 MiB, 1.0 MiB/s\n");
    }

    #[test]
    fn the_percent_never_passes_100_and_an_empty_total_is_done() {
        let over = line("reading", 1, 150, Some(100), Duration::from_secs(1));
        assert!(over.starts_with("cwbackup: reading 100% "), "{over}");
        assert!(over.contains(", 0 s left"), "{over}");
        let huge = line("reading", 1, u64::MAX - 1, Some(u64::MAX), Duration::from_secs(1));
        assert!(huge.starts_with("cwbackup: reading 99% "), "{huge}");
        assert_eq!(total([u64::MAX, 5].into_iter()), u64::MAX);
        let empty = line("checksums", 0, 0, Some(0), Duration::from_secs(1));
        assert!(
            empty.starts_with("cwbackup: checksums 100% (0.0 of 0.0 MiB)"),
            "{empty}"
        );
        assert!(empty.ends_with("time left unknown\n"), "{empty}");
    }

    #[test]
    fn time_left_reads_in_minutes_and_hours() {
        assert_eq!(eta(Duration::from_secs(59)), "59 s");
        assert_eq!(eta(Duration::from_secs(125)), "2 min 05 s");
        assert_eq!(eta(Duration::from_secs(7260)), "2 h 01 min");
    }
}
