//! The shared crate against real PostgreSQL servers from the fixture.

mod pg_connect;
