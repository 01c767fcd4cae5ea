//! `pg-checksum`: chunked, snapshot-consistent checksums of PostgreSQL tables on one or two
//! hosts, down to the differing rows.
//!
//! - [`two`]: `--source` and `--target`: both hosts read at once, each in one exported
//!   REPEATABLE READ snapshot shared by its `--jobs` sessions ([`shared::pg::snapshot`]);
//!   differing chunks bisected to `row_diff` records; `--wait-replay` and `--recheck` for live
//!   replicas, and [`proof`]: proofs that a physical standby's differences come from
//!   transactions the source's snapshot does not see.
//! - [`one`] and [`compare`]: `--dsn` writes one host's checksums as JSON lines;
//!   `compare A B` compares two such files (hosts that cannot reach each other).
//! - [`engine`]: chunking and bisection; [`sql`]: the queries, and why the row hash is
//!   collision-safe; [`plan`]: keys and columns; [`host`]: sessions and snapshots.
//!
//! The modules form layers, each using only the ones below it: this file (the command line),
//! then [`mode`] ([`two`], [`one`], [`compare`]), then [`proof`], then [`engine`], then
//! [`model`] (the result types), [`par`] (worker threads), [`plan`], [`sql`], [`sum`],
//! [`records`] and [`host`].
//!
//! The hashing happens on the servers (one scan per table and host, one row of sums per
//! chunk back), so a check moves almost nothing over the network and costs about what a
//! `COPY` of the table costs the server. Table selection is [`shared::pg::tables`], the same as
//! `rowcount-diff`, whose `table` records `--from-stdin` accepts.

pub mod engine;
pub mod host;
pub mod mode;
pub mod model;
pub mod par;
pub mod plan;
pub mod proof;
pub mod records;
pub mod sql;
pub mod sum;
mod text;

use mode::{compare, one, two};

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;
use shared::pg::tables::{TableFilter, TableName};
use shared::pg::ConnInfo;
use shared::{ErrorKind, Output, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "pg-checksum",
    version,
    about = "Chunked, snapshot-consistent checksums of PostgreSQL tables on one or two hosts, down to the differing rows.",
    long_about = "Chunked, snapshot-consistent checksums of PostgreSQL tables on one or two hosts, down to the differing rows.\n\n\
        Two hosts: pg-checksum --source DSN --target DSN [filters]\n\
        One host:  pg-checksum --dsn DSN [filters] > a.jsonl   (then: pg-checksum compare a.jsonl b.jsonl)\n\n\
        Each host is read in one REPEATABLE READ snapshot shared by its --jobs sessions; every record \
        carries the LSN it was read at. Rows are hashed on the server (record text, two 64-bit hashes \
        summed per key-range chunk); differing chunks are bisected down to row_diff records. \
        Exit 0 when equal, 1 when different, sysexits codes on failure.",
    args_conflicts_with_subcommands = true,
    after_help = "Example:\n  rowcount-diff --source \"$A\" --target \"$B\" | jq -c 'select(.type==\"table\" and .equal==false)' \\\n    | pg-checksum --from-stdin --source \"$A\" --target \"$B\""
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The first host (libpq conninfo or URL).
    #[arg(long, value_name = "DSN", requires = "target", conflicts_with = "dsn")]
    pub source: Option<String>,
    /// The second host.
    #[arg(long, value_name = "DSN", requires = "source")]
    pub target: Option<String>,
    /// One-host mode: write this host's checksums (compare two outputs with `compare`).
    #[arg(long, value_name = "DSN", conflicts_with_all = ["wait_replay", "recheck"])]
    pub dsn: Option<String>,
    #[command(flatten)]
    pub filter: TableFilter,
    /// Take the tables to check from `table` records on standard input (schema + name, e.g.
    /// rowcount-diff's); other records and fields are ignored.
    #[arg(long)]
    pub from_stdin: bool,
    /// Sessions per host (all in one snapshot).
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Rows per chunk (chunks follow the key distribution).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_rows: u64,
    /// Bisect a differing chunk until a range has at most N rows, then compare rows.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub leaf_rows: u64,
    /// Stop drilling a table down after N differing rows (the table record says `truncated`).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_row_diffs: u64,
    /// Show each differing value of a changed row (in `row_diff`'s `values`), cut to N
    /// characters; 0 shows none (values that must not reach a log)
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub show_values: u64,
    /// The target is a standby of the source: read it only once it has replayed every commit
    /// the source's snapshot sees (bounded by --timeout). On a physical standby of a primary,
    /// differences are then proven to come from later transactions (`explained_by: replay`,
    /// from the rows' xmin/xmax) and do not count.
    #[arg(long)]
    pub wait_replay: bool,
    /// How long --wait-replay waits for the standby.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = shared::cli::parse_duration)]
    pub timeout: Duration,
    /// Read each difference again up to N times in fresh snapshots; label it `transient` if it
    /// goes away, else `persistent`. Only persistent differences make the exit code 1. (With
    /// --wait-replay on a physical standby, each new pair is also used to explain by replay.)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub recheck: u32,
    /// Hash these tables whole (no key ranges, no row drill-down): NAME or SCHEMA.NAME, globs.
    #[arg(long, value_name = "PATTERN")]
    pub whole_table: Vec<String>,
    /// How text-like keys are ordered for chunks and drill-down: `auto` uses the key index's
    /// collation when both hosts order it alike (drill-down then reads ranges through the
    /// index), else byte order; `bytes` always compares `COLLATE "C"` (cheaper comparisons
    /// in the hashing scan, but every drill-down step scans the table).
    #[arg(long, value_enum, value_name = "ORDER", default_value = "auto")]
    pub key_order: KeyOrder,
    /// One-host mode: reuse the chunk boundaries of an earlier --dsn output, so that
    /// `compare` can compare chunk by chunk.
    #[arg(long, value_name = "FILE", requires = "dsn")]
    pub chunks_from: Option<PathBuf>,
}

/// `--key-order`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// The key index's collation where both hosts share it, else bytes.
    Auto,
    /// Always byte order (`COLLATE "C"`).
    Bytes,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compare two one-host outputs (`pg-checksum --dsn ... > FILE`): A as source, B as target.
    Compare {
        /// The source host's output.
        a: PathBuf,
        /// The target host's output.
        b: PathBuf,
    },
}

/// Run `pg-checksum` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    shared::human::register(text::render, text::closing);
    shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
    let opts = engine::Opts {
        chunk_rows: cli.chunk_rows,
        leaf_rows: cli.leaf_rows as i64,
        max_row_diffs: cli.max_row_diffs as usize,
        show_values: cli.show_values as usize,
        jobs: cli.jobs as usize,
    };
    let whole = TableFilter {
        tables: cli.whole_table.clone(),
        ..Default::default()
    };
    match (&cli.command, &cli.source, &cli.target, &cli.dsn) {
        (Some(Command::Compare { a, b }), ..) => {
            let mut out = Output::stdout();
            let counts = compare::run(a, b, &mut out)?;
            out.finish(&counts)
        }
        (None, Some(source), Some(target), None) => {
            // A malformed DSN is a usage error before anything connects.
            ConnInfo::parse(source).map_err(|e| e.context("--source"))?;
            ConnInfo::parse(target).map_err(|e| e.context("--target"))?;
            let mut out = Output::stdout();
            let only = read_stdin_tables(&cli, &mut out)?;
            let counts = two::run(
                two::Args {
                    source,
                    target,
                    filter: &cli.filter,
                    only,
                    whole,
                    opts,
                    wait_replay: cli.wait_replay,
                    timeout: cli.timeout,
                    recheck: cli.recheck,
                    index_order: cli.key_order == KeyOrder::Auto,
                },
                &mut out,
            )?;
            out.finish(&counts)
        }
        (None, None, None, Some(dsn)) => {
            ConnInfo::parse(dsn).map_err(|e| e.context("--dsn"))?;
            let mut out = Output::stdout();
            let only = read_stdin_tables(&cli, &mut out)?;
            let counts = one::run(
                one::Args {
                    dsn,
                    filter: &cli.filter,
                    only,
                    whole,
                    opts,
                    chunks_from: cli.chunks_from.as_deref(),
                },
                &mut out,
            )?;
            out.finish(&counts)
        }
        _ => Err(shared::err(
            ErrorKind::Usage,
            "say which hosts: --source DSN --target DSN (two hosts), --dsn DSN (one host), or compare A.jsonl B.jsonl",
        )),
    }
}

/// A `table` record from standard input: only its name matters.
#[derive(Deserialize)]
struct StdinTable {
    schema: String,
    name: String,
}

/// With `--from-stdin`, the tables named by `table` records on standard input, in order and
/// without repeats; malformed lines are `error` records (the others are still used).
fn read_stdin_tables(cli: &Cli, out: &mut Output) -> anyhow::Result<Option<Vec<TableName>>> {
    if !cli.from_stdin {
        return Ok(None);
    }
    let mut names: Vec<TableName> = Vec::new();
    let stdin = std::io::stdin();
    for rec in shared::jsonl::records(stdin.lock()) {
        let parsed = rec.and_then(|r| {
            if r.kind == "table" {
                r.parse::<StdinTable>().map(Some)
            } else {
                Ok(None)
            }
        });
        match parsed {
            Ok(Some(t)) => {
                let n = TableName::new(t.schema, t.name);
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            Ok(None) => {}
            Err(e) => {
                let e = e.context("--from-stdin: expected `table` records with schema and name");
                out.error(&e, json!({"input": "stdin"}))?;
            }
        }
    }
    if names.is_empty() {
        out.note(
            "no_input_tables",
            "--from-stdin: standard input named no table: nothing to compare",
        )?;
    }
    Ok(Some(names))
}
