//! `load-gen`: transactional load that survives a switchover and measures what clients saw.
//!
//! pgbench cannot referee a live migration: its clients abort when their connection drops.
//! `load-gen` runs N clients (one tokio task each; prepared statements, or unnamed ones with
//! `--protocol extended` for a transaction pooler in between) that reconnect to
//! whichever host of a multi-host DSN accepts their session, within milliseconds, and keep
//! going. It reports what clients saw, every second (`tick`) and at the end (`summary`):
//! throughput, latency percentiles, the longest time no client could commit a write
//! (`max_write_gap_ms`) and how long clients were failing (`unavailable_ms`).
//!
//! The probe (`--workload probe`, or `mixed` = TPC-B plus probe) inserts one row
//! `(run_id, client_id, seq, ts)` per transaction and records the seq as *acknowledged* only
//! once COMMIT returned; a commit whose connection died in flight is *unknown*. The acks go to
//! an append-only log (`--log`), which `load-gen verify` checks against the final primary:
//! every acknowledged row must be there (`lost == 0`), and no acknowledged write may have been
//! accepted by a server after a newer primary had already acknowledged one (`split_brain`).
//!
//! Module map: [`conn`] (fast multi-host reconnects, server identity), [`workload`] (SQL,
//! `--init`, one transaction and how its failure is classified), [`stats`] (what clients saw:
//! histograms, write gaps, outages, split brain), [`acklog`] (the log's record types),
//! [`verify`] (the lost-write and split-brain checks), [`runner`] (clients, ticks, signals).

pub mod acklog;
pub mod conn;
pub mod runner;
pub mod stats;
mod text;
pub mod verify;
pub mod workload;

/// The largest `--scale`: 100000 × it account ids fit an int (pgbench's threshold for bigint
/// ids is the same 20000).
pub const MAX_SCALE: u32 = 20_000;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shared::Status;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "load-gen",
    version,
    about = "Transactional load that survives a switchover and measures what clients saw.",
    long_about = "Transactional load that survives a switchover and measures what clients saw.\n\n\
        Without a subcommand, runs the load: N clients, each reconnecting (backoff <= 50 ms) to \
        whichever host of the DSN accepts its session, until --duration elapses or SIGINT/SIGTERM \
        arrives. Writes a `tick` record every second and a `summary` at the end (JSON lines on \
        stdout). `load-gen verify` checks an acknowledgement log against the final primary.",
    after_help = "Examples:\n  \
        DSN='host=a,b dbname=app target_session_attrs=read-write'\n  \
        load-gen --dsn \"$DSN\" --init -s 10\n  \
        load-gen --dsn \"$DSN\" -c 4 --log acked.jsonl > run.jsonl &\n  \
        load-gen --dsn 'host=pgbouncer port=6432 dbname=app' -M extended -c 8 -T 60s\n  \
        kill -INT $!; wait $!    # stop early: the summary is still written\n  \
        load-gen verify --dsn \"$DSN\" --log acked.jsonl",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    /// What to do (default: run the load).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the load run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check that every write acknowledged in an ack log exists on the (final) primary, and
    /// report split-brain writes; exit 1 if any acknowledged write is lost.
    Verify(VerifyArgs),
    /// Drop the tables load-gen makes in the database: the probe table (`load_gen_probe`)
    /// and, with --pgbench, the pgbench tables of `--init`.
    Cleanup(CleanupArgs),
}

/// The workload each client runs.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// pgbench's built-in TPC-B-like transaction (needs `--init` or `pgbench -i` tables).
    Tpcb,
    /// One INSERT of (run_id, client_id, seq, ts) per transaction, checked for lost writes.
    Probe,
    /// The TPC-B-like transaction with the probe INSERT in the same transaction.
    Mixed,
}

impl Workload {
    /// The name on the command line and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Tpcb => "tpcb",
            Workload::Probe => "probe",
            Workload::Mixed => "mixed",
        }
    }

    /// True if every transaction inserts a probe row (and can be checked for loss).
    pub fn probes(self) -> bool {
        self != Workload::Tpcb
    }

    /// True if the transaction touches the pgbench tables.
    pub fn tpcb(self) -> bool {
        self != Workload::Probe
    }
}

/// How the workload's statements reach the server (pgbench's `-M`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Prepare each statement once per connection (named), then only bind and execute it:
    /// the fastest, and what `pgbench -M prepared` does.
    Prepared,
    /// Send every statement unnamed (parse, bind and execute in one round trip): works
    /// through a transaction pooler such as PgBouncer in pool_mode=transaction, which may run
    /// each transaction on another server connection, where a named statement would not exist.
    Extended,
}

impl Protocol {
    /// The name on the command line and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Prepared => "prepared",
            Protocol::Extended => "extended",
        }
    }
}

/// Options of the load run (the default command).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Connection string (conninfo or URL; PG* variables fill in the rest). List several hosts
    /// with target_session_attrs=read-write to follow the primary across a switchover.
    #[arg(
        long,
        value_name = "DSN",
        default_value = "",
        hide_default_value = true
    )]
    pub dsn: String,

    /// Number of concurrent clients (one connection each).
    #[arg(short = 'c', long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,

    /// Stop after this long (e.g. 60s, 5m); without it, run until SIGINT or SIGTERM.
    #[arg(short = 'T', long, value_name = "DURATION", value_parser = shared::cli::parse_duration)]
    pub duration: Option<Duration>,

    /// Limit the total rate to this many transactions per second (spread over the clients).
    #[arg(short = 'R', long, value_name = "TPS")]
    pub rate: Option<f64>,

    /// What each transaction does.
    #[arg(short = 'w', long, value_enum, default_value_t = Workload::Mixed)]
    pub workload: Workload,

    /// How statements are sent, like pgbench's -M. Use `extended` behind PgBouncer in
    /// pool_mode=transaction (before 1.21: no max_prepared_statements).
    #[arg(short = 'M', long, value_enum, value_name = "PROTOCOL",
          default_value_t = Protocol::Prepared)]
    pub protocol: Protocol,

    /// Create the pgbench tables (like `pgbench -i`, data generated on the server) and the
    /// probe table, then exit.
    #[arg(short = 'i', long)]
    pub init: bool,

    /// Scale factor for --init: 100000 accounts, 10 tellers and 1 branch per unit. At most
    /// 20000 (2 billion accounts): account ids are int here; pgbench switches to bigint
    /// above that, load-gen does not (an id past 2^31 would overflow).
    #[arg(short = 's', long, default_value_t = 1, value_name = "S",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SCALE)))]
    pub scale: u32,

    /// Write the acknowledgement log (JSON lines: run, server, ack, unknown, end) to FILE,
    /// for `load-gen verify`.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// At the end of the run (after --verify), drop the probe table if this run created it
    /// (one that was there before stays: `load-gen cleanup` drops it).
    #[arg(long)]
    pub cleanup: bool,

    /// At the end of the run, check every acknowledged write on the primary the DSN now
    /// leads to (as `load-gen verify` does); exit 1 if any is lost. Keeps the acknowledgements
    /// in memory (about 40 bytes each).
    #[arg(long)]
    pub verify: bool,

    /// Give up on one connection attempt to one host after this long.
    #[arg(long, value_name = "DURATION", default_value = "2s",
          value_parser = shared::cli::parse_duration)]
    pub connect_timeout: Duration,

    /// Abandon a transaction that takes longer than this (its outcome is then failed, or
    /// unknown if COMMIT was in flight) and reconnect.
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = shared::cli::parse_duration)]
    pub txn_timeout: Duration,

    /// Longest pause between reconnection attempts (the first is 5 ms, then doubling).
    #[arg(long, value_name = "DURATION", default_value = "50ms",
          value_parser = shared::cli::parse_duration)]
    pub max_backoff: Duration,

    /// Interval between `tick` records.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = shared::cli::parse_duration)]
    pub tick: Duration,

    /// Client threads, like pgbench's -j (default: the number of CPUs, at most --clients).
    #[arg(short = 'j', long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,

    /// No progress line and no closing one-line summary on stderr, even on a terminal.
    #[arg(long)]
    pub json_only: bool,
}

/// Options of `load-gen verify`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Connection string of the final primary (several hosts with
    /// target_session_attrs=read-write find it).
    #[arg(
        long,
        value_name = "DSN",
        default_value = "",
        hide_default_value = true
    )]
    pub dsn: String,

    /// The acknowledgement log written by `load-gen --log` (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,

    /// Give up on connecting to one host after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = shared::cli::parse_duration)]
    pub connect_timeout: Duration,
}

/// Options of `load-gen cleanup`.
#[derive(Args, Debug, Clone)]
pub struct CleanupArgs {
    /// Connection string of the database (its primary).
    #[arg(
        long,
        value_name = "DSN",
        default_value = "",
        hide_default_value = true
    )]
    pub dsn: String,

    /// Also drop the pgbench tables (pgbench_accounts, _branches, _history, _tellers), as
    /// `--init` made them. Only if they are load-gen's: pgbench -i makes the same tables.
    #[arg(long)]
    pub pgbench: bool,

    /// Give up on connecting to one host after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = shared::cli::parse_duration)]
    pub connect_timeout: Duration,
}

/// Run `load-gen` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    shared::human::register(text::render, text::closing);
    // The load handles its own signals (clients finish, then the summary); the short
    // commands end at once with an error of kind retry and the summary.
    if cli.command.is_some() || cli.run.init {
        shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
    }
    match cli.command {
        Some(Command::Verify(v)) => verify::run_verify(v),
        Some(Command::Cleanup(c)) => workload::run_cleanup(&c),
        None if cli.run.init => workload::run_init(&cli.run),
        None => runner::run_load(cli.run),
    }
}
