//! `wal-ship` as a process: one integration-test binary, one module per concern.

mod cli;
mod cluster;
mod fatal;
mod faults;
mod push_fetch;
mod ssh;
mod sweep;
mod util;
mod verify_clean;
