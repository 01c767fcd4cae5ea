//! `pg-checksum` as a process: one integration-test binary, one module per concern.

mod cli;
mod common;
mod differential;
mod diffs;
mod errors;
mod keys;
mod modes;
mod replay;
mod standby;
