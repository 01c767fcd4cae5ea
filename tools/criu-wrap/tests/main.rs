//! `criu-wrap` as a process: one integration-test binary, one module per concern.

mod cli;
