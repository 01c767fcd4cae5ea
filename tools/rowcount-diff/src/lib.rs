//! `rowcount-diff`: per-table row counts (exact or estimated) on two PostgreSQL hosts, compared.
//!
//! The command line is parsed here (so tests can reuse it); `main.rs` only calls
//! [`shared::run_main`] with [`run`].

use std::ffi::OsString;

use clap::Parser;
use shared::{ErrorKind, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "rowcount-diff",
    version,
    about = "Per-table row counts (exact or estimated) on two PostgreSQL hosts, compared."
)]
pub struct Cli {}

/// Run `rowcount-diff` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let _cli = Cli::try_parse_from(args)?;
    Err(shared::err(
        ErrorKind::Internal,
        "not implemented yet (issue #3)",
    ))
}
