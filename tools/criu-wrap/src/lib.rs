//! `criu-wrap`: checkpoint and restore a running process with CRIU, and migrate it to another
//! host.
//!
//! CRIU does the work; criu-wrap adds what a person moving a service needs around it:
//!
//! - `check`: which migration modes this host supports, from `criu check` and
//!   `criu check --feature` ([`check`]);
//! - `dump`: P.Haul's iterative pre-copy when the kernel tracks dirty memory (pre-dump rounds
//!   while the process runs, until the delta stops shrinking), else one stop-and-copy dump;
//!   per-round pages, bytes and times, and the frozen time ([`dump`]);
//! - `restore`, with the flags the dump needed repeated from its manifest ([`restore`]);
//! - `migrate`: dump, copy (rsync, every file's SHA-256 compared on both sides), restore on
//!   the target; after any failure past the freeze the source runs again, so the process runs
//!   in exactly one place ([`migrate`]);
//! - every CRIU run logs with `-o LOG -v4`, and a failure quotes the log lines that matter
//!   with a cause and a fix ([`diagnose`]).
//!
//! The command line is parsed here; `main.rs` only calls [`shared::run_main`] with [`run`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use shared::Status;

pub mod check;
pub mod criu;
pub mod diagnose;
pub mod dump;
pub mod images;
pub mod migrate;
pub mod procs;
pub mod records;
pub mod restore;
pub mod stats;
pub mod transport;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "criu-wrap",
    version,
    about = "Checkpoint and restore a running process with CRIU, and migrate it to another host.",
    long_about = "Checkpoint and restore a running process with CRIU, and migrate it to another host.\n\n\
        Writes JSON lines on stdout (PROTOCOL.md); CRIU logs with -o LOG -v4 into the images \
        directory, and failures quote the relevant lines with a cause and a fix."
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    /// The CRIU executable.
    #[arg(
        long,
        env = "CRIU",
        default_value = "criu",
        global = true,
        value_name = "PATH"
    )]
    pub criu: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check CRIU and the kernel: one `feature` record each, and a `verdict` naming the
    /// migration modes this host supports.
    Check,
    /// Checkpoint a process tree into an images directory.
    Dump(dump::DumpArgs),
    /// Restore a process tree from an images directory.
    Restore(restore::RestoreArgs),
    /// Move a running process to another host (or directory): dump, copy, verify, restore.
    Migrate(migrate::MigrateArgs),
}

/// Run `criu-wrap` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    let criu = criu::Criu { path: cli.criu };
    let out = shared::Output::stdout();
    match cli.command {
        Command::Check => check::run(&criu, out),
        Command::Dump(a) => dump::run(&criu, &a, out),
        Command::Restore(a) => restore::run(&criu, &a, out),
        Command::Migrate(a) => migrate::run(&criu, &a, out),
    }
}

/// A failed CRIU run, diagnosed: the root of the error chain, under a context naming the
/// action ("criu dump failed"). Its fields become the `error` record's `cause`, `problem`,
/// `fix`, `log` and `log_file`.
#[derive(Debug)]
pub struct CriuFailed {
    /// The diagnosis.
    pub diagnosis: diagnose::Diagnosis,
    /// The full log.
    pub log_file: Option<PathBuf>,
}

impl std::fmt::Display for CriuFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; fix: {}", self.diagnosis.problem, self.diagnosis.fix)?;
        if let Some(first) = self.diagnosis.log.first() {
            write!(f, " (CRIU: {first})")?;
        }
        if let Some(p) = &self.log_file {
            write!(f, " [log: {}]", p.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for CriuFailed {}

impl CriuFailed {
    /// The error for a failed CRIU run: `what` ("criu dump failed") over the diagnosis.
    pub fn error(
        what: impl Into<String>,
        diagnosis: diagnose::Diagnosis,
        log_file: Option<PathBuf>,
    ) -> anyhow::Error {
        let kind = diagnosis.kind;
        anyhow::Error::new(CriuFailed {
            diagnosis,
            log_file,
        })
        .context(shared::Error::new(kind, what))
    }
}

/// The `error` record's extra fields for an error: the diagnosis when CRIU failed.
pub fn about(err: &anyhow::Error) -> serde_json::Value {
    match shared::exit::find::<CriuFailed>(err) {
        Some(f) => serde_json::json!({
            "cause": f.diagnosis.cause,
            "problem": f.diagnosis.problem,
            "fix": f.diagnosis.fix,
            "log": f.diagnosis.log,
            "log_file": f.log_file,
        }),
        None => serde_json::Value::Null,
    }
}

/// Report a failure that ended the run: the `error` record (with the diagnosis) and the
/// quoted CRIU log lines on stderr.
pub fn report(out: &mut shared::Output, err: &anyhow::Error) -> anyhow::Result<()> {
    out.error(err, about(err))?;
    if let Some(f) = shared::exit::find::<CriuFailed>(err) {
        for l in f.diagnosis.log.iter().skip(1) {
            shared::note!("  | {l}");
        }
    }
    Ok(())
}

/// Milliseconds of a duration, for records.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}
