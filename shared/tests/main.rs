//! The shared crate against real PostgreSQL servers from the fixture.

mod pg_connect;
mod pg_snapshot;
