//! The `cwbackup` command: read one JSON task (stdin, or the file named as the only argument),
//! run it, print exactly one JSON result line on stdout, and exit 0 (ok), 1 (failed) or 2
//! (invalid task). Logs go to stderr only. With `--human`, the same task runs the same way, and
//! stdout holds a short summary for a person instead of the JSON line (`cwbackup::human`).

use std::io::{IsTerminal, Read, Write};

const USAGE: &str =
    "usage: cwbackup [TASK_FILE]      run the JSON task from TASK_FILE or standard input
       cwbackup --human [TASK_FILE]
                                 the same, printing a short summary instead of the JSON line
       cwbackup schema task|result|manifest
       cwbackup --version

example: echo '{\"operation\": \"list\", \"repository\": \"/backup/connectware\"}' | cwbackup";

fn main() {
    cwbackup::install_panic_hook();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `--human` changes only how the result is printed, so it may stand anywhere.
    let human = args.iter().any(|a| a == "--human");
    args.retain(|a| a != "--human");
    let input = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["schema", ..] | ["--version" | "-V" | "--help" | "-h"] if human => {
            refuse("--human applies to a task, not to schema, --version or --help", human)
        }
        ["--version" | "-V"] => {
            println!("cwbackup {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        ["--help" | "-h"] => {
            println!("{USAGE}");
            return;
        }
        ["schema", which] => {
            let schema = match *which {
                "task" => cwbackup::task::schema(),
                "result" => cwbackup::result::schema(),
                "manifest" => cwbackup::repository::manifest::schema(),
                other => refuse(
                    &format!("unknown schema {other:?}: give task, result or manifest"),
                    human,
                ),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema is JSON")
            );
            return;
        }
        [] if std::io::stdin().is_terminal() => refuse(
            "no task given: pipe a JSON task into standard input, or name a task file",
            human,
        ),
        [] => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map(|_| buf)
                .map_err(|e| format!("cannot read the task from standard input: {e}"))
        }
        [option] if option.starts_with('-') => refuse(&format!("unknown option {option:?}"), human),
        [path] => std::fs::read(path).map_err(|e| {
            format!("cannot read the task file {path}: {e}; name a readable JSON task file, or pipe the task into standard input")
        }),
        _ => refuse(
            &format!(
                "{} arguments given; cwbackup takes at most one, the task file",
                args.len()
            ),
            human,
        ),
    };
    let result = match input {
        Ok(bytes) => cwbackup::run(&bytes),
        Err(message) => invalid(message),
    };
    print_result(&result, human);
}

/// A result for a task that could not be read.
fn invalid(message: String) -> cwbackup::result::TaskResult {
    cwbackup::result::TaskResult::failed(
        None,
        false,
        cwbackup::error::Error::new(cwbackup::error::ErrorKind::InvalidTask, message),
    )
}

/// A command line cwbackup does not understand: usage on stderr and, as for any task it
/// cannot read, one `invalid_task` result on stdout (SPEC §2); exit 2.
fn refuse(problem: &str, human: bool) -> ! {
    eprintln!("cwbackup: {problem}\n{USAGE}");
    print_result(&invalid(format!("{problem}; see `cwbackup --help`")), human)
}

/// Prints the one result line (or, with `--human`, its summary) and exits with its code.
fn print_result(result: &cwbackup::result::TaskResult, human: bool) -> ! {
    let line = if human {
        cwbackup::human::render(result).into_bytes()
    } else {
        let mut line = serde_json::to_vec(result).expect("a result is JSON");
        line.push(b'\n');
        line
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&line).and_then(|_| stdout.flush());
    std::process::exit(cwbackup::exit_code(result));
}
