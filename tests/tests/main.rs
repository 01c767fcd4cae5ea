//! End-to-end tests: one binary, one module per concern.

mod fixture;
mod migrate;
mod scripts_lib;
mod ship_cron;
