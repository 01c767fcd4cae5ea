//! `rowcount-diff`: per-table row counts (exact or estimated) on two PostgreSQL hosts, compared.
//!
//! The quick first pass of a consistency check: count every table on both hosts and list the
//! ones that differ, so that `pg-checksum --from-stdin` only has to hash those.
//!
//! Each host is read inside one REPEATABLE READ snapshot, exported by a leader session and
//! shared by `--jobs` worker sessions ([`shared::pg::snapshot`]), so all counts of one host
//! belong to one moment, reported as the LSN in the `host` and `table` records. The table
//! selection is [`shared::pg::tables`], the same code `pg-checksum` uses. Both hosts are read
//! at the same time; a host that cannot be reached is an `error` record and exit 69.
//!
//! `--estimate` reads `pg_class.reltuples` (or `pg_stat_user_tables.n_live_tup` where a table
//! was never analyzed) instead of counting: instant, and marked `"exact": false`. Estimates of a
//! physical standby equal its primary's (the catalog is replicated); elsewhere they are only
//! roughly comparable.

mod text;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::thread;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::json;
use shared::pg::snapshot::{self, Pending, ReadPool, SnapshotInfo};
use shared::pg::tables::{
    column_diff, list_tables_and_names, TableFilter, TableInfo, TableName, TypeDiff,
};
use shared::pg::{ConnInfo, Endpoint};
use shared::{Output, Record, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "rowcount-diff",
    version,
    about = "Per-table row counts (exact or estimated) on two PostgreSQL hosts, compared.",
    long_about = "Per-table row counts (exact or estimated) on two PostgreSQL hosts, compared.\n\n\
        Each host is read in one REPEATABLE READ snapshot (shared by the --jobs sessions) and \
        every record carries the LSN it was read at. Writes one `table` record per table \
        (JSON lines, see shared/PROTOCOL.md), then `summary`. Exit 0 when every table has the \
        same count and columns on both hosts, 1 when some differ or exist on one side only.",
    after_help = "Example:\n  rowcount-diff --source 'host=old dbname=app' --target 'host=new dbname=app' \\\n    | jq -c 'select(.type==\"table\" and .equal==false)' \\\n    | pg-checksum --from-stdin --source 'host=old dbname=app' --target 'host=new dbname=app'"
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    /// The first host (libpq conninfo or URL).
    #[arg(long, value_name = "DSN")]
    pub source: String,
    /// The second host.
    #[arg(long, value_name = "DSN")]
    pub target: String,
    #[command(flatten)]
    pub filter: TableFilter,
    /// Sessions per host counting in parallel (all in one snapshot).
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Use the planner's estimates instead of count(*) (instant; `"exact": false`).
    #[arg(long)]
    pub estimate: bool,
    /// Output format: JSON lines, or CSV (one row per table, no host/summary records).
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (shared/PROTOCOL.md).
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

/// Which host.
pub use shared::Which as Side;

/// The `host` record: where and at which point a host was read.
#[derive(Debug, Serialize)]
pub struct HostRecord {
    /// `source` or `target`.
    pub side: Side,
    /// The DSN without password.
    pub dsn: String,
    /// `server_version`.
    pub server_version: String,
    /// True for a hot standby.
    pub in_recovery: bool,
    /// The LSN the snapshot was taken at.
    pub lsn: String,
    /// Number of tables selected on this host.
    pub tables: usize,
}

impl Record for HostRecord {
    const TYPE: &'static str = "host";
}

/// The `table` record: one table compared.
#[derive(Debug, Serialize)]
pub struct TableRecord {
    /// Schema.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Same row count and same columns on both hosts.
    pub equal: bool,
    /// Rows on the source (`null` if the table is missing there).
    pub source_rows: Option<i64>,
    /// Rows on the target.
    pub target_rows: Option<i64>,
    /// False for `--estimate`.
    pub exact: bool,
    /// LSN of the source snapshot.
    pub source_lsn: String,
    /// LSN of the target snapshot.
    pub target_lsn: String,
    /// `source` or `target` if the table exists on the other side only.
    pub missing_on: Option<Side>,
    /// Same column names and types on both sides (`true` if missing on one).
    pub columns_equal: bool,
    /// Columns only the source has.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns_only_on_source: Vec<String>,
    /// Columns only the target has.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns_only_on_target: Vec<String>,
    /// Columns whose type differs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub column_type_diffs: Vec<TypeDiff>,
}

impl Record for TableRecord {
    const TYPE: &'static str = "table";
}

/// One CSV row (`--format csv`).
#[derive(Serialize)]
struct CsvRow<'a> {
    schema: &'a str,
    name: &'a str,
    equal: bool,
    source_rows: Option<i64>,
    target_rows: Option<i64>,
    exact: bool,
    missing_on: Option<&'static str>,
    columns_equal: bool,
    source_lsn: &'a str,
    target_lsn: &'a str,
}

/// One host, open: the leader session holding the snapshot, and what it listed.
struct Host {
    side: Side,
    info: ConnInfo,
    endpoint: Endpoint,
    // Holds the exported snapshot open until the workers have joined.
    _leader: postgres::Client,
    snap: SnapshotInfo,
    version: String,
    tables: Vec<TableInfo>,
    /// Every user table, before the filter.
    names: Vec<TableName>,
}

/// No timeouts cutting a long count, a bounded wait for a lock held by DDL, and every row or
/// an error: under a row-level security policy a count would be of the rows the policy
/// shows ([`shared::pg::row_security_hint`]).
const SESSION_SQL: &str =
    "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
    SET lock_timeout = '60s'; SET row_security = off";

fn open_host(side: Side, dsn: &str, filter: &TableFilter) -> anyhow::Result<Host> {
    let info = ConnInfo::parse(dsn).with_context(|| format!("--{}", side.as_str()))?;
    let what = || {
        format!(
            "reading the {0} (--{0} '{1}')",
            side.as_str(),
            info.describe()
        )
    };
    let (mut leader, endpoint) = info.connect_endpoint().with_context(what)?;
    leader.batch_execute(SESSION_SQL).with_context(what)?;
    let snap = snapshot::export(&mut leader).with_context(what)?;
    let version: String = leader
        .query_one("SELECT current_setting('server_version')", &[])
        .with_context(what)?
        .get(0);
    let (tables, names) = list_tables_and_names(&mut leader, filter).with_context(what)?;
    Ok(Host {
        side,
        info,
        endpoint,
        _leader: leader,
        snap,
        version,
        tables,
        names,
    })
}

/// The summary's counts of a run that stopped before counting anything.
fn nothing_counted() -> serde_json::Value {
    json!({"tables": 0, "equal": 0, "different": 0, "missing": 0})
}

/// Run `rowcount-diff` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    shared::human::register(text::render, text::closing);
    shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
    let csv_mode = cli.format == Format::Csv;
    let mut out = if csv_mode {
        Output::discard()
    } else {
        Output::stdout()
    };
    // Parse both DSNs first, so that a typo is a usage error before anything connects.
    ConnInfo::parse(&cli.source).context("--source")?;
    ConnInfo::parse(&cli.target).context("--target")?;
    let (src, tgt) = thread::scope(|s| {
        let a = s.spawn(|| open_host(Side::Source, &cli.source, &cli.filter));
        let b = s.spawn(|| open_host(Side::Target, &cli.target, &cli.filter));
        (join(a), join(b))
    });
    let (src, tgt) = match (src, tgt) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            for (side, r) in [(Side::Source, a.err()), (Side::Target, b.err())] {
                if let Some(e) = r {
                    out.error(&e, json!({ "host": side }))?;
                }
            }
            return out.finish(&nothing_counted());
        }
    };
    if !csv_mode {
        for h in [&src, &tgt] {
            out.emit(&HostRecord {
                side: h.side,
                dsn: h.info.describe(),
                server_version: h.version.clone(),
                in_recovery: h.snap.in_recovery,
                lsn: h.snap.lsn.clone(),
                tables: h.tables.len(),
            })?;
        }
    }

    // "Nothing compared" is never "equal".
    let names: Vec<TableName> = src.names.iter().chain(&tgt.names).cloned().collect();
    if let Err(e) = cli.filter.check_selects(&names) {
        out.error(&e, json!({}))?;
        return out.finish(&nothing_counted());
    }
    if names.is_empty() {
        out.note(
            "no_tables",
            "no user tables on either host: nothing to compare",
        )?;
    }

    // Every table of either side, in name order, with its catalog entry on each.
    let mut all: BTreeMap<TableName, (Option<&TableInfo>, Option<&TableInfo>)> = BTreeMap::new();
    for t in &src.tables {
        all.entry(t.name.clone()).or_default().0 = Some(t);
    }
    for t in &tgt.tables {
        all.entry(t.name.clone()).or_default().1 = Some(t);
    }

    let counts = if cli.estimate {
        None
    } else {
        let n = cli.jobs as usize;
        let pools = thread::scope(|s| {
            let (sa, sb) = (src.pool_spec(), tgt.pool_spec());
            let a = s.spawn(move || open_pool(sa, n));
            let b = s.spawn(move || open_pool(sb, n));
            (join(a), join(b))
        });
        match pools {
            (Ok(a), Ok(b)) => Some((a, b)),
            (a, b) => {
                for (side, r) in [(Side::Source, a.err()), (Side::Target, b.err())] {
                    if let Some(e) = r {
                        out.error(&e, json!({ "host": side }))?;
                    }
                }
                return out.finish(&nothing_counted());
            }
        }
    };

    // Submit every count at once (both hosts work in parallel), then collect in name order.
    type Counts = (Option<Pending<i64>>, Option<Pending<i64>>);
    let pending: Vec<Counts> = all
        .iter()
        .map(|(name, (s, t))| match (&counts, s, t) {
            (Some((sp, tp)), Some(_), Some(_)) => (
                Some(count_job(sp, name, "source")),
                Some(count_job(tp, name, "target")),
            ),
            _ => (None, None),
        })
        .collect();

    let mut csv = csv_mode.then(|| csv::Writer::from_writer(io::stdout()));
    let (mut n_equal, mut n_different, mut n_missing) = (0u64, 0u64, 0u64);
    // Tables counted, on stderr when it is a terminal (lines written meanwhile go above it).
    let bar = shared::progress::bar(all.len() as u64, "tables");
    for ((name, (s, t)), (ps, pt)) in all.iter().zip(pending) {
        bar.inc(1);
        let rows =
            |info: &Option<&TableInfo>, p: Option<Pending<i64>>| -> anyhow::Result<Option<i64>> {
                match (info, p) {
                    (None, _) => Ok(None),
                    (Some(_), Some(p)) => p.wait().map(Some),
                    (Some(i), None) => Ok(Some(estimate(i))),
                }
            };
        let (rs, rt) = (rows(s, ps), rows(t, pt));
        let (source_rows, target_rows) = match (rs, rt) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                for (side, r) in [(Side::Source, a.err()), (Side::Target, b.err())] {
                    if let Some(e) = r {
                        let fix = match shared::pg::row_security_hint(&e) {
                            Some(h) => format!("{h}, or "),
                            None if shared::exit::classify(&e) == shared::ErrorKind::Retry => {
                                String::new()
                            }
                            None => "grant SELECT on it, or ".to_owned(),
                        };
                        let e = e.context(format!(
                            "counting {name} on the {} ({fix}leave it out with --exclude {name})",
                            side.as_str()
                        ));
                        out.error(
                            &e,
                            json!({"schema": name.schema, "name": name.name, "host": side}),
                        )?;
                    }
                }
                continue;
            }
        };
        let missing_on = match (s, t) {
            (Some(_), None) => Some(Side::Target),
            (None, Some(_)) => Some(Side::Source),
            _ => None,
        };
        let (only_s, only_t, type_diffs) = match (s, t) {
            (Some(a), Some(b)) => column_diff(a, b),
            _ => Default::default(),
        };
        let columns_equal = only_s.is_empty() && only_t.is_empty() && type_diffs.is_empty();
        let equal = missing_on.is_none() && columns_equal && source_rows == target_rows;
        if missing_on.is_some() {
            n_missing += 1;
        }
        if equal {
            n_equal += 1;
        } else {
            n_different += 1;
            out.mark_differences();
        }
        let rec = TableRecord {
            schema: name.schema.clone(),
            name: name.name.clone(),
            equal,
            source_rows,
            target_rows,
            exact: !cli.estimate,
            source_lsn: src.snap.lsn.clone(),
            target_lsn: tgt.snap.lsn.clone(),
            missing_on,
            columns_equal,
            columns_only_on_source: only_s,
            columns_only_on_target: only_t,
            column_type_diffs: type_diffs,
        };
        match &mut csv {
            Some(w) => {
                let wrote = w.serialize(CsvRow {
                    schema: &rec.schema,
                    name: &rec.name,
                    equal: rec.equal,
                    source_rows: rec.source_rows,
                    target_rows: rec.target_rows,
                    exact: rec.exact,
                    missing_on: rec.missing_on.map(Side::as_str),
                    columns_equal: rec.columns_equal,
                    source_lsn: &rec.source_lsn,
                    target_lsn: &rec.target_lsn,
                });
                if !csv_written(wrote.and_then(|()| Ok(w.flush()?)))? {
                    csv = None;
                }
            }
            None => out.emit(&rec)?,
        }
    }
    bar.finish_and_clear();
    if let Some(mut w) = csv {
        csv_written(w.flush().map_err(Into::into))?;
        io::stdout().flush().ok();
    }
    out.finish(&json!({
        "tables": all.len(),
        "equal": n_equal,
        "different": n_different,
        "missing": n_missing,
    }))
}

fn join<T>(h: thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a host thread panicked")))
}

/// What worker sessions need to join a host's snapshot (the leader session itself is not
/// `Sync`, so it stays behind).
type PoolSpec<'a> = (Side, &'a ConnInfo, &'a Endpoint, &'a str);

impl Host {
    fn pool_spec(&self) -> PoolSpec<'_> {
        (self.side, &self.info, &self.endpoint, &self.snap.id)
    }
}

fn open_pool((side, info, endpoint, id): PoolSpec<'_>, n: usize) -> anyhow::Result<ReadPool> {
    ReadPool::open(info, endpoint, id, n, SESSION_SQL).with_context(|| {
        format!(
            "opening {n} sessions on the {} ({})",
            side.as_str(),
            info.describe()
        )
    })
}

/// Count a table in the snapshot, then check that it was the table the snapshot saw (a
/// TRUNCATE committed after the snapshot would be counted as empty: see
/// [`shared::pg::snapshot::same_file`]).
fn count_job(pool: &ReadPool, name: &TableName, host: &'static str) -> Pending<i64> {
    let table = name.sql();
    let sql = format!("SELECT count(*) FROM ONLY {table}");
    pool.submit(move |c| {
        let n = c.query_one(&sql, &[])?.get(0);
        snapshot::same_file(c, &table, host)?;
        Ok(n)
    })
}

/// The planner's idea of the row count: `reltuples`, or the statistics collector's live-tuple
/// count for a table that was never vacuumed or analyzed (`reltuples = -1`).
fn estimate(t: &TableInfo) -> i64 {
    if t.reltuples >= 0.0 {
        t.reltuples.round() as i64
    } else {
        t.live_tuples
    }
}

/// Whether stdout still takes CSV: a closed stdout (`| head`) is not a failure, the counting
/// goes on to its real exit status.
fn csv_written(r: Result<(), csv::Error>) -> anyhow::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == io::ErrorKind::BrokenPipe) => {
            Ok(false)
        }
        Err(e) => Err(anyhow::Error::new(e).context("writing CSV to standard output")),
    }
}
