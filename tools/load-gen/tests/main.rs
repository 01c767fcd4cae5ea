//! `load-gen` as a process: one integration-test binary, one module per concern.

mod cleanup;
mod cli;
mod common;
mod outcomes;
mod pooler;
mod signals;
mod steady;
mod switchover;
mod usage;
