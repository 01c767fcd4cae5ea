//! `load-gen`: transactional load that survives a switchover and measures what clients saw.
//!
//! The command line is parsed here (so tests can reuse it); `main.rs` only calls
//! [`shared::run_main`] with [`run`].

use std::ffi::OsString;

use clap::Parser;
use shared::{ErrorKind, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "load-gen",
    version,
    about = "Transactional load that survives a switchover and measures what clients saw."
)]
pub struct Cli {}

/// Run `load-gen` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let _cli = Cli::try_parse_from(args)?;
    Err(shared::err(
        ErrorKind::Internal,
        "not implemented yet (issue #5)",
    ))
}
