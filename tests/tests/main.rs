//! End-to-end tests: one binary, one module per concern.

mod fixture;
mod scripts_lib;
