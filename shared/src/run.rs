//! `run_main`: the one place where a tool's result becomes an exit code.
//!
//! Every `main.rs` is `fn main() -> ExitCode { shared::run_main("tool", tool::run) }`.
//! `run` parses its own arguments (so tests can call it with a vector) and returns
//! `anyhow::Result<Status>`; here the error is printed once, as one line, and classified, and
//! the stdout stream gets its `error` and `summary` records if the tool did not end it.

use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Instant;

use crate::exit::{classify, ErrorKind, Status};
use crate::{jsonl, msg};

/// Run a tool and map its outcome to the exit-code table (see [`crate::exit`]).
pub fn run_main<F>(tool: &'static str, run: F) -> ExitCode
where
    F: FnOnce(Vec<OsString>) -> anyhow::Result<Status>,
{
    msg::set_tool(tool);
    let started = Instant::now();
    jsonl::set_started(started);
    let args: Vec<OsString> = std::env::args_os().collect();
    let end_stream = |kind: ErrorKind, err: &anyhow::Error| {
        jsonl::end_after_fatal(BufWriter::new(std::io::stdout()), kind, err, started);
    };
    let code = match std::panic::catch_unwind(AssertUnwindSafe(|| run(args))) {
        Ok(Ok(status)) => status.code(),
        Ok(Err(err)) => {
            let code = report(tool, &err);
            // Usage errors and --help from clap write no records; "not there" is an answer
            // the tool gives itself (wal-ship fetch).
            let kind = classify(&err);
            if crate::exit::find::<clap::Error>(&err).is_none() && kind != ErrorKind::NotFound {
                end_stream(kind, &err);
            }
            code
        }
        // The panic hook already printed the message and location.
        Err(_) => {
            let message =
                "internal error (a bug in pgshift; please report it with the message above)";
            msg::error_line(message);
            end_stream(ErrorKind::Internal, &anyhow::anyhow!(message));
            ErrorKind::Internal.code()
        }
    };
    // Anything still buffered: a closed stdout here is not an error either.
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

/// Print `err` as the user should see it (stderr) and return its exit code.
pub fn report(tool: &str, err: &anyhow::Error) -> u8 {
    if let Some(e) = crate::exit::find::<clap::Error>(err) {
        return report_clap(tool, e);
    }
    let kind = classify(err);
    match kind {
        // "Not there" is an ordinary answer (restore_command asks for files that do not exist
        // yet); the tool prints what it wants to say itself.
        ErrorKind::NotFound => {}
        ErrorKind::Usage => msg::error_line(&format!("{err:#} (try '{tool} --help')")),
        _ => msg::error_line(&format!("{err:#}")),
    }
    kind.code()
}

fn report_clap(tool: &str, e: &clap::Error) -> u8 {
    use clap::error::ErrorKind as K;
    match e.kind() {
        K::DisplayHelp | K::DisplayVersion => {
            let _ = write!(std::io::stdout(), "{}", e.render());
            0
        }
        K::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = write!(std::io::stderr(), "{}", e.render());
            ErrorKind::Usage.code()
        }
        _ => {
            msg::error_line(&format!("{} (try '{tool} --help')", one_line_clap(e)));
            ErrorKind::Usage.code()
        }
    }
}

/// Clap's message is several lines (error, tip, usage); keep the first, without `error: `,
/// and the indented lines that complete it ("the following required arguments were not
/// provided:" is followed by the arguments, one per line).
pub fn one_line_clap(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid arguments").trim();
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if line.ends_with(':') {
        let rest: Vec<&str> = lines
            .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
            .map(str::trim)
            .collect();
        if !rest.is_empty() {
            line.push(' ');
            line.push_str(&rest.join(", "));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    #[command(name = "demo")]
    struct Cli {
        #[arg(long)]
        jobs: Option<u32>,
    }

    fn parse(args: &[&str]) -> anyhow::Result<Status> {
        Cli::try_parse_from(args)?;
        Ok(Status::Ok)
    }

    #[test]
    fn clap_errors_are_usage_and_one_line() {
        let err = parse(&["demo", "--bogus"]).unwrap_err();
        assert_eq!(report("demo", &err), 2);
        let e = err.downcast_ref::<clap::Error>().unwrap();
        let line = one_line_clap(e);
        assert!(!line.contains('\n'));
        assert!(line.contains("--bogus"), "{line}");

        let err = parse(&["demo", "--jobs", "many"]).unwrap_err();
        assert_eq!(report("demo", &err), 2);
    }

    #[test]
    fn a_missing_argument_is_named_on_the_line() {
        #[derive(Parser, Debug)]
        #[command(name = "demo")]
        struct Two {
            #[arg(long)]
            source: String,
            #[arg(long)]
            target: String,
        }
        let err = Two::try_parse_from(["demo", "--source", "x"]).unwrap_err();
        let line = one_line_clap(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.ends_with("not provided: --target <TARGET>"), "{line}");
    }

    #[test]
    fn help_and_version_are_success() {
        let err = parse(&["demo", "--help"]).unwrap_err();
        assert_eq!(report("demo", &err), 0);
    }

    #[test]
    fn classified_errors_map_to_their_code() {
        let err = crate::err(ErrorKind::Unavailable, "cannot connect").context("checking a");
        assert_eq!(report("demo", &err), 69);
        let err = crate::err(ErrorKind::NotFound, "no such segment");
        assert_eq!(report("demo", &err), 1);
    }
}
