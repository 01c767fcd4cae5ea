//! `window-advisor`: learn a database's load pattern and recommend the best migration window.
//!
//! - `collect` samples the host (`/proc`) and the server (`pg_stat_database`, WAL position,
//!   size) into `sample` records, converts load-gen `tick` records and CSV exports, or reads
//!   the history a Prometheus server already holds ([`prometheus`]).
//! - `recommend` fits a model on the history and ranks the quietest windows of the horizon,
//!   with the resources the migration needs in each.
//! - `evaluate` backtests every model against the baselines, walk-forward.
//! - `synth` writes synthetic traces with known quiet periods (tests, benchmarks).
//!
//! The pieces: [`input`] reads histories, [`series`] cleans and resamples them, [`time`]
//! gives the local calendar (DST-correct), [`models`] forecast and choose, [`backtest`]
//! scores, [`recommend`] advises, [`collect`] samples, [`synth`] generates. `main.rs` only
//! calls [`shared::run_main`] with [`run`].

pub mod backtest;
pub mod collect;
pub mod input;
pub mod models;
pub mod prometheus;
pub mod recommend;
pub mod series;
pub mod synth;
mod text;
pub mod time;
pub mod units;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use serde_json::json;
use shared::cli::parse_duration;
use shared::{ErrorKind, Output, Status};

use crate::input::Format;
use crate::models::ModelName;
use crate::synth::TraceKind;
use crate::time::Zone;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "window-advisor",
    version,
    about = "Learn a database's load pattern and recommend the best migration window.",
    long_about = "Learn a database's load pattern and recommend the best migration window.\n\n\
        Collect samples for a few weeks (`collect`), then ask for the quietest windows \
        (`recommend`) and check how well the models would have done (`evaluate`). Output is \
        JSON lines; the record types are documented in shared/PROTOCOL.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Sample host and server metrics, or convert load-gen ticks / CSV, into `sample` records.
    Collect(CollectArgs),
    /// Rank the quietest windows of the horizon, with resource advice.
    Recommend(RecommendArgs),
    /// Walk-forward backtest of the models against the baselines.
    Evaluate(EvaluateArgs),
    /// Write a synthetic trace with known quiet periods (for tests and benchmarks).
    Synth(SynthArgs),
}

/// `collect` options.
#[derive(Args, Debug)]
#[command(
    after_help = "CSV input: a header row; a time column named t, time, timestamp, ts, \
    date or datetime (RFC 3339, a local date-time read in --tz, or Unix seconds); any other \
    column is a metric (tps, wal_bytes_per_s, cpu_pct, ... or your own). Empty, NaN, null, NA, \
    N/A and - cells are missing values."
)]
pub struct CollectArgs {
    /// The server to sample (conninfo or URL; PG* variables and ~/.pgpass apply).
    #[arg(long, value_name = "DSN", conflicts_with_all = ["input", "prometheus"])]
    pub dsn: Option<String>,
    /// Read the history from this Prometheus server instead (http://host:9090): node_exporter
    /// and postgres_exporter series through the range API (see --query).
    #[arg(long, value_name = "URL", conflicts_with = "input")]
    pub prometheus: Option<String>,
    /// What to read from Prometheus.
    #[command(flatten)]
    pub p: PrometheusArgs,
    /// Time between samples.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub interval: Duration,
    /// Stop after N samples (default: until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Convert this file instead of sampling (`-`: standard input, e.g. piped from load-gen).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Format of --input.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Time zone for local date-times in the input (default: the system's).
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// When load-gen started, for ticks that carry only elapsed seconds (default for a pipe:
    /// when the first tick arrives).
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
}

/// `collect`'s options for `--prometheus` (each requires it).
#[derive(Args, Debug)]
pub struct PrometheusArgs {
    /// With --prometheus: how far back (a duration such as 8w or 90d, or a time).
    #[arg(
        long,
        value_name = "DURATION|TIME",
        default_value = "8w",
        requires = "prometheus"
    )]
    pub since: String,
    /// With --prometheus: the end of the range (default: now).
    #[arg(long, value_name = "TIME", requires = "prometheus")]
    pub until: Option<String>,
    /// With --prometheus: seconds between points (the history's sampling interval).
    #[arg(long, value_parser = parse_duration, default_value = "5m", requires = "prometheus")]
    pub step: Duration,
    /// With --prometheus: a metric and its PromQL, replacing the default of that name or
    /// adding one (repeatable; `$rate` stands for the rate range, the step but at least 5m).
    #[arg(long = "query", value_name = "NAME=PROMQL", value_parser = prometheus::parse_query,
          requires = "prometheus")]
    pub queries: Vec<(String, String)>,
    /// With --prometheus: only the --query ones, no default query set.
    #[arg(long, requires = "prometheus")]
    pub only_queries: bool,
    /// With --prometheus: label matchers added to every node_exporter series of the default
    /// queries (e.g. 'instance="db1:9100"').
    #[arg(
        long,
        value_name = "MATCHERS",
        default_value = "",
        requires = "prometheus"
    )]
    pub node_match: String,
    /// With --prometheus: label matchers added to every postgres_exporter series (e.g.
    /// 'instance="db1:9187"').
    #[arg(
        long,
        value_name = "MATCHERS",
        default_value = "",
        requires = "prometheus"
    )]
    pub pg_match: String,
    /// With --prometheus: time-out of each request.
    #[arg(long, value_parser = parse_duration, default_value = "60s", requires = "prometheus")]
    pub timeout: Duration,
}

/// Options shared by `recommend` and `evaluate`.
#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// The history: `sample`/`tick` JSON lines or CSV (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub history: PathBuf,
    /// Format of the history.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// The load metric to minimise (default: tps, else wal_bytes_per_s, else cpu_pct).
    #[arg(long, value_name = "NAME")]
    pub metric: Option<String>,
    /// The time zone whose wall clock the load follows (default: the system's, else UTC).
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Length of the migration window.
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub window: Duration,
    /// How far ahead to look for windows.
    #[arg(long, value_parser = parse_duration, default_value = "7d")]
    pub horizon: Duration,
    /// Grid step the models work on (default: 5m, or the sampling interval if longer).
    #[arg(long, value_parser = parse_duration)]
    pub step: Option<Duration>,
    /// Seed for the random forest and the random baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// When load-gen started, for tick records that carry only elapsed seconds.
    #[arg(long, value_name = "TIME")]
    pub start: Option<String>,
    /// Distance between backtest origins.
    #[arg(long, value_parser = parse_duration, default_value = "1d")]
    pub every: Duration,
    /// History required before the first backtest origin.
    #[arg(long, value_parser = parse_duration, default_value = "7d")]
    pub min_train: Duration,
}

/// `recommend` options.
#[derive(Args, Debug)]
pub struct RecommendArgs {
    /// History and windows.
    #[command(flatten)]
    pub h: HistoryArgs,
    /// Number of windows to rank (they do not overlap).
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// The model (`auto`: chosen by a backtest on this history; see `evaluate`).
    #[arg(long, value_enum, default_value = "auto")]
    pub model: ModelName,
    /// Start of the horizon (default: the end of the history; `now` for the wall clock).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// CPUs of the target host, to judge whether it can carry the load.
    #[arg(long, value_name = "N")]
    pub target_cpus: Option<u32>,
    /// Memory of the target host (e.g. 64GiB).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub target_mem: Option<u64>,
    /// Size of the data to copy (default: the last db_size_bytes in the history).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    pub db_size: Option<u64>,
    /// Throughput of one wal-ship job, per second (sizes --jobs).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size, default_value = "32MiB")]
    pub job_rate: u64,
    /// Also write the forecast the windows were chosen from: one `forecast` record per grid
    /// step of the horizon (`pg-report html --advice` draws it).
    #[arg(long)]
    pub forecast: bool,
}

/// `evaluate` options.
#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// History and windows.
    #[command(flatten)]
    pub h: HistoryArgs,
    /// Also write one `backtest` record per strategy and origin.
    #[arg(long)]
    pub detail: bool,
}

/// `synth` options.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// What the trace contains.
    #[arg(long, value_enum, default_value = "seasonal")]
    pub kind: TraceKind,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Length in weeks.
    #[arg(long, default_value_t = 8)]
    pub weeks: usize,
    /// Sample interval.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub step: Duration,
    /// First sample, local time in --tz (or RFC 3339).
    #[arg(long, value_name = "TIME", default_value = "2026-01-05T00:00:00")]
    pub start: String,
    /// Time zone whose wall clock the load follows.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,
}

/// Run `window-advisor` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    shared::human::register(text::render, text::closing);
    // A live collector runs until it is stopped: that is its ordinary end.
    let on_stop = match &cli.command {
        Command::Collect(a) if a.dsn.is_some() => shared::signals::OnStop::Ends,
        _ => shared::signals::OnStop::Interrupted,
    };
    shared::signals::stop_with_summary(on_stop)?;
    match cli.command {
        Command::Collect(a) => collect(a),
        Command::Recommend(a) => recommend::recommend(&a),
        Command::Evaluate(a) => recommend::evaluate(&a),
        Command::Synth(a) => synth_cmd(&a),
    }
}

fn collect(a: CollectArgs) -> anyhow::Result<Status> {
    let zone = Zone::resolve(a.tz.as_deref())?;
    let start_ms = a
        .start
        .as_deref()
        .map(|s| time::parse_instant_arg(s, &zone))
        .transpose()?;
    if let Some(url) = &a.prometheus {
        return collect::from_prometheus(url, &a.p, &zone);
    }
    match (&a.dsn, &a.input) {
        (Some(dsn), None) => collect::live(&collect::Live {
            dsn,
            interval: a.interval,
            count: a.count,
        }),
        (None, Some(path)) => collect::convert(
            path,
            &input::ReadOptions {
                format: a.format,
                zone,
                start_ms,
            },
        ),
        _ => Err(shared::err(
            ErrorKind::Usage,
            "give --dsn DSN to sample a server, --prometheus URL to read its history from \
             Prometheus, or --input FILE to convert load-gen ticks or CSV",
        )),
    }
}

/// `--step` of `synth` and `collect --prometheus` in seconds: whole, at least one.
pub(crate) fn whole_seconds(step: Duration) -> anyhow::Result<i64> {
    let s = step.as_secs() as i64;
    if s < 1 || step.subsec_nanos() != 0 {
        return Err(shared::err(
            ErrorKind::Usage,
            "--step must be a whole number of seconds, at least 1s",
        ));
    }
    Ok(s)
}

fn synth_cmd(a: &SynthArgs) -> anyhow::Result<Status> {
    let zone = Zone::resolve(Some(&a.tz))?;
    let step = whole_seconds(a.step)?;
    if a.weeks == 0 || a.weeks > 520 {
        return Err(shared::err(
            ErrorKind::Usage,
            "--weeks must be between 1 and 520",
        ));
    }
    let start = time::parse_instant_arg(&a.start, &zone)? / 1000;
    let trace = synth::generate(&synth::Spec {
        kind: a.kind,
        seed: a.seed,
        weeks: a.weeks,
        step,
        start,
        zone,
    });
    let mut out = Output::stdout();
    for rec in trace.records(a.seed) {
        out.emit_as("sample", &rec)?;
    }
    out.finish(&json!({
        "samples": trace.times.len(),
        "kind": a.kind.to_possible_value().map(|v| v.get_name().to_owned()),
        "seed": a.seed,
    }))
}
