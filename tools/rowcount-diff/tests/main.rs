//! `rowcount-diff` as a process: one integration-test binary, one module per concern.

mod cli;
mod closed_stdout;
mod common;
mod compare;
mod errors;
