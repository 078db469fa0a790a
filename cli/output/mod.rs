//! The one way out: every command returns a report or a [`CliError`]; [`finish`] prints it in
//! the chosen [`Format`] and turns it into the process exit code.
//!
//! In: a command's `Result<impl Render, CliError>` and the global options.
//! Out: exactly one document on stdout (text, one JSON document, or CSV), progress and notes on
//! stderr ([`progress`]), and an exit code from [`exit`].

pub mod error;
pub mod progress;

use std::io::Write as _;

use serde::Serialize;

pub use error::{CliError, ErrorKind};
pub use progress::Progress;

/// Process exit codes, the same for every command.
pub mod exit {
    /// Success, or (`rollout --plan`) nothing would change.
    pub const OK: u8 = 0;
    /// A failure: invalid input (an invalid repository or spec), a failed rollout, any runtime
    /// error.
    pub const FAILURE: u8 = 1;
    /// `rollout --plan` found changes (like terraform's `-detailed-exitcode`).
    pub const CHANGES: u8 = 2;
    /// A usage error: bad flags or values, found before any work.
    pub const USAGE: u8 = 64;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: u8 = 130;
}

/// `--format`: how results are printed on stdout: human-readable `text` (`table` is the same),
/// one `json` document, or (`bench` only) `csv` with perf_analyzer's columns. (The variants have
/// no doc comments: clap would turn them into a long help listing.)
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    #[value(alias = "table")]
    Text,
    Json,
    Csv,
}

/// Why `--format csv` is refused for a command without a CSV form.
pub const CSV_IS_FOR_BENCH: &str =
    "--format csv is for `bench`; the other commands print text or json";

/// The options every command shares.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    /// The output format on stdout.
    pub format: Format,
    /// Whether text output may use colour.
    pub color: bool,
}

impl Global {
    /// Whether stdout carries human-readable text (progress and notes may go to stderr).
    pub fn text(&self) -> bool {
        self.format == Format::Text
    }

    /// The progress reporter for this output: bars on a terminal, plain lines otherwise,
    /// nothing under `--format json` or `csv`.
    pub fn progress(&self) -> Progress {
        Progress::for_format(self.format)
    }
}

/// A command's result: serializable to the JSON document and renderable as text.
pub trait Render: Serialize {
    /// The text printed on stdout.
    fn text(&self, global: &Global) -> String;

    /// Lines for stderr in text mode (e.g. push's per-layer table), printed before the text.
    fn notes(&self) -> String {
        String::new()
    }

    /// The CSV form, for the reports that have one.
    fn csv(&self) -> Option<String> {
        None
    }

    /// Whether the command already printed its output as it came (`logs --follow`): then
    /// nothing more is printed.
    fn streamed(&self) -> bool {
        false
    }

    /// The exit code of a successful run (`validate`: 1 when invalid; `rollout --plan`: 2 when
    /// something would change).
    fn exit_code(&self) -> u8 {
        exit::OK
    }
}

/// Prints `result` in `global.format` and returns the exit code: the one exit path of every
/// command.
pub fn finish<R: Render>(result: Result<R, CliError>, global: &Global) -> u8 {
    match result {
        Ok(report) => print_report(&report, global),
        Err(e) => fail(&e, global),
    }
}

fn print_report<R: Render>(report: &R, global: &Global) -> u8 {
    if report.streamed() {
        return report.exit_code();
    }
    let body = match global.format {
        Format::Json => match serde_json::to_string_pretty(report) {
            Ok(mut s) => {
                s.push('\n');
                s
            }
            Err(e) => return fail(&CliError::failed(format!("cannot serialize: {e}")), global),
        },
        Format::Csv => match report.csv() {
            Some(s) => s,
            None => {
                return fail(
                    &CliError::usage(
                        "--format csv is for `bench`; this command prints text or json",
                    ),
                    global,
                );
            }
        },
        Format::Text => {
            let notes = report.notes();
            if !notes.is_empty() {
                eprint!("{notes}");
            }
            report.text(global)
        }
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not an error of the command.
    let _ = out.write_all(body.as_bytes()).and_then(|()| out.flush());
    report.exit_code()
}

/// Prints an error (one JSON document on stdout under `--format json`, a line on stderr always)
/// and returns its exit code.
pub fn fail(e: &CliError, global: &Global) -> u8 {
    if global.format == Format::Json {
        println!("{}", e.to_json());
    }
    eprintln!("{}", e.to_text());
    e.exit_code()
}

/// Asks `question` on the terminal; `Ok(())` when the answer is yes. Without a terminal it is a
/// usage error naming `flag`, the way to say yes up front.
pub fn confirm(question: &str, flag: &str) -> Result<(), CliError> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "{question} needs an answer: pass {flag} (no terminal to ask on)"
        )));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::failed("not confirmed: nothing was changed"))
    }
}

pub use triton_deploy_aws::short_arn;
