//! End-to-end tests: one binary, one module per concern.

mod confirm;
mod fixture;
mod hosts;
mod human;
mod interrupt;
mod layouts;
mod logical;
mod migrate;
mod pooler;
mod report;
mod scripts_cli;
mod scripts_lib;
mod secrets;
mod ship_cron;
mod signals;
