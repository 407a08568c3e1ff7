//! The `cwbackup` command: read one JSON task (stdin, or the file named as the only argument),
//! run it, print exactly one JSON result line on stdout, and exit 0 (ok), 1 (failed) or 2
//! (invalid task). Logs go to stderr only.

use std::io::{Read, Write};

const USAGE: &str =
    "usage: cwbackup [TASK_FILE]      run the JSON task from TASK_FILE or standard input
       cwbackup schema task|result|manifest
       cwbackup --version";

fn main() {
    cwbackup::install_panic_hook();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let input = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
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
                other => {
                    eprintln!("cwbackup: unknown schema {other:?}\n{USAGE}");
                    std::process::exit(2);
                }
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema is JSON")
            );
            return;
        }
        [] => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map(|_| buf)
        }
        [path] => std::fs::read(path),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let result = match input {
        Ok(bytes) => cwbackup::run(&bytes),
        Err(e) => cwbackup::result::TaskResult::failed(
            None,
            false,
            cwbackup::error::Error::new(
                cwbackup::error::ErrorKind::InvalidTask,
                format!("cannot read the task: {e}"),
            ),
        ),
    };
    let mut line = serde_json::to_vec(&result).expect("a result is JSON");
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&line).and_then(|_| stdout.flush());
    std::process::exit(cwbackup::exit_code(&result));
}
