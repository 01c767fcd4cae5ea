//! `criu-wrap`: checkpoint and restore a running process with CRIU, and migrate it to another host.
//!
//! The command line is parsed here (so tests can reuse it); `main.rs` only calls
//! [`shared::run_main`] with [`run`].

use std::ffi::OsString;

use clap::Parser;
use shared::{ErrorKind, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "criu-wrap",
    version,
    about = "Checkpoint and restore a running process with CRIU, and migrate it to another host."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// `criu-wrap check` (see issue #8).
    Check,
    /// `criu-wrap dump` (see issue #8).
    Dump,
    /// `criu-wrap restore` (see issue #8).
    Restore,
    /// `criu-wrap migrate` (see issue #8).
    Migrate,
}

/// Run `criu-wrap` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let _cli = Cli::try_parse_from(args)?;
    Err(shared::err(
        ErrorKind::Internal,
        "not implemented yet (issue #8)",
    ))
}
