//! `pg-checksum`: chunked, snapshot-consistent checksums of PostgreSQL tables on one or two hosts, down to the differing rows.
//!
//! The command line is parsed here (so tests can reuse it); `main.rs` only calls
//! [`shared::run_main`] with [`run`].

use std::ffi::OsString;

use clap::Parser;
use shared::{ErrorKind, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "pg-checksum",
    version,
    about = "Chunked, snapshot-consistent checksums of PostgreSQL tables on one or two hosts, down to the differing rows."
)]
pub struct Cli {}

/// Run `pg-checksum` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let _cli = Cli::try_parse_from(args)?;
    Err(shared::err(
        ErrorKind::Internal,
        "not implemented yet (issue #3)",
    ))
}
