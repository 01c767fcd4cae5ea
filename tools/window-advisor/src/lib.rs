//! `window-advisor`: learn a database's load pattern and recommend the best migration window.
//!
//! The command line is parsed here (so tests can reuse it); `main.rs` only calls
//! [`shared::run_main`] with [`run`].

use std::ffi::OsString;

use clap::Parser;
use shared::{ErrorKind, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "window-advisor",
    version,
    about = "Learn a database's load pattern and recommend the best migration window."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// `window-advisor collect` (see issue #7).
    Collect,
    /// `window-advisor recommend` (see issue #7).
    Recommend,
    /// `window-advisor evaluate` (see issue #7).
    Evaluate,
}

/// Run `window-advisor` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let _cli = Cli::try_parse_from(args)?;
    Err(shared::err(
        ErrorKind::Internal,
        "not implemented yet (issue #7)",
    ))
}
