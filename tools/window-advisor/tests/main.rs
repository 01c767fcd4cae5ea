//! `window-advisor` as a process: one integration-test binary, one module per concern.

mod bad_input;
mod cli;
mod collect;
mod evaluate;
mod prometheus;
mod real;
mod recommend;
mod util;
