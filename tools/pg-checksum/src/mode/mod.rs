//! The three ways to run `pg-checksum`, one module each, called by the command line in
//! [`crate::run`]: [`two`] (`--source` and `--target`), [`one`] (`--dsn`) and [`compare`]
//! (`compare A B`). They drive [`crate::engine`] (and [`crate::proof`] for a standby) and
//! write the records; nothing below them calls back up.

pub mod compare;
pub mod one;
pub mod two;
