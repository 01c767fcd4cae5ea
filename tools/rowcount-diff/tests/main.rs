//! `rowcount-diff` as a process: one integration-test binary, one module per concern.

mod cli;
mod common;
mod compare;
mod errors;
