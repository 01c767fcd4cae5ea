//! pg-logical's tests: real clusters (testkit), the tool run as a process.

mod cli;
mod flow;
mod guards;
mod pair;
