//! `criu-wrap` as a process: one integration-test binary, one module per concern.
//!
//! This host's kernel may break the distribution's CRIU, so most tests drive a fake CRIU
//! (`tests/fake-criu`) that records its arguments and writes image files; `vm` runs the real
//! CRIU in a VM with Debian's own kernel.

mod check;
mod cli;
mod common;
mod dump;
mod migrate;
mod recipe;
mod restore;
mod vm;
