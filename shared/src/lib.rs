//! What every pgshift tool has in common, and nothing else.
//!
//! - [`run_main`] and [`exit`]: the one exit-code table and the one place errors become codes.
//! - [`jsonl`]: the JSON-lines records on stdout (`"type"` first, a final `summary`), and the
//!   reader for records piped in from another tool. The wire format is in `PROTOCOL.md`.
//! - [`host`]: where a command runs (`local`, `netns://NAME`, `ssh://user@host`), with the one
//!   ssh policy every tool and script follows.
//! - [`human`]: text for a person on a terminal (`--text`/`--json`), the closing line.
//! - [`journal`]: the append-only, fsynced, locked journal of the steps that must survive an
//!   interruption (pg-switch, pg-logical, migrate.sh).
//! - [`msg`]: one-line messages on stderr, prefixed with the tool's name.
//! - [`pg`] (feature `pg`): libpq-compatible connection options (conninfo and URLs, `PG*`
//!   variables, `~/.pgpass`, multi-host with `target_session_attrs`, `sslmode` up to
//!   `verify-full`), for both rust-postgres and tokio-postgres.
//!   Also [`pg::tables`] (the table filters and catalog listing tools share) and
//!   [`pg::snapshot`] (one exported REPEATABLE READ snapshot per host, shared by workers).
//! - [`signals`]: SIGINT/SIGTERM end a run with its `error` and `summary` records.
//! - [`progress`] (feature `progress`): indicatif bars, only when stderr is a terminal.
//!
//! A type moves here when a second tool needs it; tool logic stays in the tool.

pub mod cli;
pub mod exit;
pub mod host;
pub mod human;
pub mod journal;
pub mod jsonl;
pub mod msg;
#[cfg(feature = "pg")]
pub mod pg;
#[cfg(feature = "progress")]
pub mod progress;
mod run;
pub mod signals;

pub use exit::{err, Error, ErrorKind, ResultExt, Status};
pub use jsonl::{Output, Record};
pub use run::{one_line_clap, report, run_main};

/// Which of the two servers a record or message is about: `source` (where the data is now)
/// or `target` (where it goes), the words of every tool's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// `--source`: where the data is now (the primary a switchover leaves).
    Source,
    /// `--target`: where it goes (the standby a switchover promotes).
    Target,
}

impl Which {
    /// `source` or `target`.
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Source => "source",
            Which::Target => "target",
        }
    }
}
