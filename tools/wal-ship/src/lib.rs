//! `wal-ship`: ship PostgreSQL WAL segments into an archive (local or ssh): compressed, checksummed, atomic, idempotent.
//!
//! The command line is parsed here (so tests can reuse it); `main.rs` only calls
//! [`shared::run_main`] with [`run`].

use std::ffi::OsString;

use clap::Parser;
use shared::{ErrorKind, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "wal-ship",
    version,
    about = "Ship PostgreSQL WAL segments into an archive (local or ssh): compressed, checksummed, atomic, idempotent."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// `wal-ship push` (see issue #4).
    Push,
    /// `wal-ship fetch` (see issue #4).
    Fetch,
    /// `wal-ship sweep` (see issue #4).
    Sweep,
    /// `wal-ship status` (see issue #4).
    Status,
    /// `wal-ship verify` (see issue #4).
    Verify,
    /// `wal-ship clean` (see issue #4).
    Clean,
}

/// Run `wal-ship` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let _cli = Cli::try_parse_from(args)?;
    Err(shared::err(
        ErrorKind::Internal,
        "not implemented yet (issue #4)",
    ))
}
