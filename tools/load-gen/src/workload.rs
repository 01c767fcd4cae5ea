//! The SQL: `--init`, the start-up checks, one transaction, and what its failure means.
//!
//! The TPC-B-like transaction is pgbench's built-in script, statement for statement, so that
//! throughput compares with `pgbench -M prepared`. The probe row is
//! `(run_id, client_id, seq, ts)` in `load_gen_probe`; in `mixed` it is inserted inside the
//! TPC-B transaction, so every committed transaction can be checked for loss.
//!
//! Outcomes follow one rule (see [`classify`]): a transaction is *failed* when the server
//! answered the committing statement with an ERROR (it rolled back) or when the error came
//! before COMMIT was sent; it is *unknown* when COMMIT (or the single probe INSERT) was sent
//! and the answer was FATAL, PANIC, a broken connection or a timeout, because the server may
//! have committed and died before saying so.

use std::time::Instant;

use anyhow::Context as _;
use rand::Rng;
use serde_json::json;
use shared::{ErrorKind, Output, Status};
use tokio_postgres::error::Severity;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::conn::Target;
use crate::stats::Stats;
use crate::{CleanupArgs, Protocol, RunArgs, Workload};

/// The probe table (one per database, shared by runs; `run_id` tells them apart).
pub const PROBE_TABLE: &str = "load_gen_probe";

const PROBE_DDL: &str = "CREATE TABLE IF NOT EXISTS load_gen_probe (\
     run_id uuid NOT NULL, client_id int NOT NULL, seq bigint NOT NULL, \
     ts timestamptz NOT NULL DEFAULT clock_timestamp(), \
     PRIMARY KEY (run_id, client_id, seq))";

const PROBE_INSERT: &str = "INSERT INTO load_gen_probe (run_id, client_id, seq, ts) \
     VALUES ($1::text::uuid, $2, $3, clock_timestamp())";

/// The pgbench tables (`--init` makes them, `load-gen cleanup --pgbench` drops them).
pub const PGBENCH_TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_history",
    "pgbench_tellers",
];

/// `pgbench -i -I dtGvp` (drop, tables, server-side generation, vacuum, primary keys).
fn init_sql(scale: u32) -> Vec<String> {
    vec![
        "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers".into(),
        "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))".into(),
        "CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84)) WITH (fillfactor = 100)".into(),
        "CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) WITH (fillfactor = 100)".into(),
        "CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88)) WITH (fillfactor = 100)".into(),
        format!("INSERT INTO pgbench_branches (bid, bbalance) SELECT bid, 0 FROM generate_series(1, {scale}) AS bid"),
        format!("INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT tid, (tid - 1) / 10 + 1, 0 FROM generate_series(1, {}) AS tid", 10 * u64::from(scale)),
        format!("INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT aid, (aid - 1) / 100000 + 1, 0, '' FROM generate_series(1, {}) AS aid", 100_000 * u64::from(scale)),
        "VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history".into(),
        "ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)".into(),
        "ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid)".into(),
        "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)".into(),
    ]
}

/// `load-gen --init`: create and fill the pgbench tables and the probe table, then exit.
pub fn run_init(args: &RunArgs) -> anyhow::Result<Status> {
    let target = Target::parse(&args.dsn, args.connect_timeout)?;
    let mut out = Output::stdout();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let (host, database, probe_created) = rt.block_on(async {
        let (client, ep) = target.connect().await?;
        for sql in init_sql(args.scale) {
            client
                .batch_execute(&sql)
                .await
                .with_context(|| format!("initializing the pgbench tables on {ep}"))?;
        }
        let created = create_probe_table(&client).await?;
        anyhow::Ok((ep.to_string(), current_database(&client).await?, created))
    })?;
    let mut made: Vec<&str> = PGBENCH_TABLES.to_vec();
    if probe_created {
        made.push(PROBE_TABLE);
    }
    announce_created(&mut out, &database, &made)?;
    out.emit_as(
        "init",
        &json!({
            "host": host,
            "scale": args.scale,
            "accounts": 100_000 * u64::from(args.scale),
            "elapsed_ms": started.elapsed().as_millis() as u64,
        }),
    )?;
    out.finish(&json!({"scale": args.scale, "host": host}))
}

/// Create the probe table if it is missing; true if this call created it (two runs may
/// race: the one whose CREATE lost says false).
pub async fn create_probe_table(client: &Client) -> anyhow::Result<bool> {
    if table_exists(client, PROBE_TABLE).await? {
        return Ok(false);
    }
    match client.batch_execute(PROBE_DDL).await {
        Ok(()) => Ok(true),
        // Two concurrent CREATE TABLE IF NOT EXISTS can collide on the catalog.
        Err(e) if matches!(e.code().map(|c| c.code()), Some("23505" | "42P07")) => Ok(false),
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("creating the probe table {PROBE_TABLE}")))
        }
    }
}

/// True if TABLE (one of load-gen's own names) resolves on the search path.
async fn table_exists(client: &Client, table: &str) -> anyhow::Result<bool> {
    let row = client
        .query_typed_one(&format!("SELECT to_regclass('{table}') IS NOT NULL"), &[])
        .await
        .with_context(|| format!("looking for the table {table}"))?;
    Ok(row.get(0))
}

/// The name of the database `client` is connected to.
pub async fn current_database(client: &Client) -> anyhow::Result<String> {
    let row = client
        .query_typed_one("SELECT current_database()::text", &[])
        .await
        .context("asking for the current database")?;
    Ok(row.get(0))
}

/// Say that load-gen made TABLES in DATABASE: one line on stderr, and a `note` record
/// (`created_table`, with `table` and `database`) for each.
pub fn announce_created(out: &mut Output, database: &str, tables: &[&str]) -> anyhow::Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let pgbench = tables.iter().any(|t| t.starts_with("pgbench_"));
    let how = if pgbench {
        "drop them with `load-gen cleanup --pgbench`"
    } else {
        "drop it with --cleanup (at the end of a run) or `load-gen cleanup`"
    };
    let (noun, list) = match tables {
        [one] => ("table", (*one).to_owned()),
        _ => ("tables", tables.join(", ")),
    };
    shared::note!("created {noun} {list} in database {database}; {how}");
    for t in tables {
        out.emit_as(
            "note",
            &json!({
                "code": "created_table",
                "message": format!("created table {t} in database {database}"),
                "table": t,
                "database": database,
            }),
        )?;
    }
    Ok(())
}

/// Drop TABLES where they exist: the ones dropped, in order.
pub async fn drop_tables(client: &Client, tables: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut dropped = Vec::new();
    for t in tables {
        if table_exists(client, t).await? {
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {t}"))
                .await
                .with_context(|| format!("dropping the table {t}"))?;
            dropped.push((*t).to_owned());
        }
    }
    Ok(dropped)
}

/// `load-gen cleanup`: drop the probe table (and with --pgbench the pgbench tables) where
/// they exist, a `note` (`dropped_table`) for each; the summary lists them (`dropped`).
pub fn run_cleanup(args: &CleanupArgs) -> anyhow::Result<Status> {
    let target = Target::parse(&args.dsn, args.connect_timeout)?;
    let mut out = Output::stdout();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut tables = vec![PROBE_TABLE];
    if args.pgbench {
        tables.extend(PGBENCH_TABLES);
    }
    let (host, database, dropped) = rt.block_on(async {
        let (client, ep) = target.connect().await?;
        let database = current_database(&client).await?;
        let dropped = drop_tables(&client, &tables)
            .await
            .with_context(|| format!("cleaning up on {ep}"))?;
        anyhow::Ok((ep.to_string(), database, dropped))
    })?;
    for t in &dropped {
        out.emit_as(
            "note",
            &json!({"code": "dropped_table", "message": format!("dropped table {t} in database {database}"), "table": t, "database": database}),
        )?;
    }
    if dropped.is_empty() {
        shared::note!(
            "nothing to drop in database {database}: no {} there",
            tables.join(", ")
        );
    } else {
        shared::note!("dropped {} in database {database}", dropped.join(", "));
    }
    out.finish(&json!({"host": host, "database": database, "dropped": dropped}))
}

/// What a run knows about the database before it starts.
pub struct Prepared {
    /// The TPC-B scale (None for the probe workload).
    pub scale: Option<u32>,
    /// The database's name.
    pub database: String,
    /// The run made the probe table (it did not exist).
    pub created_probe: bool,
}

/// Check the database a run needs and make the probe table if it is missing. The checks come
/// first, so that a run refused here leaves no table behind.
pub async fn prepare_database(client: &Client, workload: Workload) -> anyhow::Result<Prepared> {
    let database = current_database(client).await?;
    let scale = tpcb_scale(client, workload).await?;
    let created_probe = workload.probes() && create_probe_table(client).await?;
    Ok(Prepared {
        scale,
        database,
        created_probe,
    })
}

/// The TPC-B scale from pgbench_branches, for a workload that runs TPC-B.
async fn tpcb_scale(client: &Client, workload: Workload) -> anyhow::Result<Option<u32>> {
    if !workload.tpcb() {
        return Ok(None);
    }
    // Unnamed, one round trip: works through a transaction pooler (see conn::identify).
    let row = client
        .query_typed_one("SELECT count(*) FROM pgbench_branches", &[])
        .await;
    let n: i64 = match row {
        Ok(r) => r.get(0),
        Err(e) if e.code().map(|c| c.code()) == Some("42P01") => {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "the pgbench tables do not exist (workload {}): create them with `load-gen --init --scale N` or `pgbench -i`, or use --workload probe",
                    workload.as_str()
                ),
            ))
        }
        Err(e) => return Err(anyhow::Error::new(e).context("reading the scale from pgbench_branches")),
    };
    if n < 1 {
        return Err(shared::err(
            ErrorKind::DataErr,
            "pgbench_branches is empty: run `load-gen --init --scale N` (or pgbench -i) again",
        ));
    }
    Ok(Some(n as u32))
}

/// One statement of the workload, as `--protocol` sends it.
pub enum Stmt {
    /// Prepared once on this connection (a named statement): each run is bind + execute.
    Prepared(Statement),
    /// Sent as an unnamed statement with its parameter types: parse, bind and execute in one
    /// round trip, so that a transaction pooler may hand each transaction another server
    /// connection.
    Unnamed {
        /// The SQL.
        sql: &'static str,
        /// The type of each `$n`.
        types: &'static [Type],
    },
}

impl Stmt {
    /// Run it with `params` (in the order of `$1`, `$2`, ...) and return the row count, as
    /// `execute` does. The wait for the answer is timed in `stats`, also when this future is
    /// dropped (a timeout, the stop).
    pub async fn exec(
        &self,
        client: &Client,
        stats: &Stats,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let _timed = stats.request();
        match self {
            Stmt::Prepared(st) => client.execute(st, params).await,
            Stmt::Unnamed { sql, types } => {
                let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                    params.iter().copied().zip(types.iter().cloned()).collect();
                client.execute_typed(sql, &typed).await
            }
        }
    }
}

/// The statements of one connection.
pub struct Statements {
    begin: Stmt,
    commit: Stmt,
    rollback: Stmt,
    update_account: Stmt,
    select_account: Stmt,
    update_teller: Stmt,
    update_branch: Stmt,
    insert_history: Stmt,
    probe: Stmt,
}

const INT4: &[Type] = &[Type::INT4];
const INT4_INT4: &[Type] = &[Type::INT4, Type::INT4];

impl Statements {
    /// The statements of `workload`: with `Protocol::Prepared`, prepared on `client`
    /// (pipelined: one round trip's worth of waiting); with `Protocol::Extended`, nothing is
    /// sent until they run.
    pub async fn prepare(
        client: &Client,
        workload: Workload,
        protocol: Protocol,
    ) -> Result<Statements, tokio_postgres::Error> {
        // Statements the workload does not use are a cheap stand-in, so that a missing table
        // only matters to workloads that use it.
        let tpcb = |sql: &'static str, types: &'static [Type]| -> (&'static str, &'static [Type]) {
            if workload.tpcb() {
                (sql, types)
            } else {
                ("SELECT 1", &[])
            }
        };
        let probe: (&str, &[Type]) = if workload.probes() {
            (PROBE_INSERT, &[Type::TEXT, Type::INT4, Type::INT8])
        } else {
            ("SELECT 1", &[])
        };
        let sqls = [
            ("BEGIN", &[][..]),
            ("COMMIT", &[]),
            ("ROLLBACK", &[]),
            tpcb("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", INT4_INT4),
            tpcb("SELECT abalance FROM pgbench_accounts WHERE aid = $1", INT4),
            tpcb("UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2", INT4_INT4),
            tpcb("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2", INT4_INT4),
            tpcb(
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
                &[Type::INT4, Type::INT4, Type::INT4, Type::INT4],
            ),
            probe,
        ];
        let stmts: Vec<Stmt> = match protocol {
            Protocol::Extended => sqls
                .iter()
                .map(|&(sql, types)| Stmt::Unnamed { sql, types })
                .collect(),
            Protocol::Prepared => futures_util::future::try_join_all(
                sqls.iter()
                    .map(|(sql, types)| client.prepare_typed(sql, types)),
            )
            .await?
            .into_iter()
            .map(Stmt::Prepared)
            .collect(),
        };
        let mut s = stmts.into_iter();
        let mut next = || s.next().expect("one statement per query");
        Ok(Statements {
            begin: next(),
            commit: next(),
            rollback: next(),
            update_account: next(),
            select_account: next(),
            update_teller: next(),
            update_branch: next(),
            insert_history: next(),
            probe: next(),
        })
    }
}

/// The random draws of one TPC-B transaction (pgbench's `\set` lines).
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    aid: i32,
    bid: i32,
    tid: i32,
    delta: i32,
}

impl Draw {
    /// Draw like pgbench's built-in script for `scale`.
    pub fn new(rng: &mut impl Rng, scale: u32) -> Draw {
        let scale = scale as i32;
        Draw {
            aid: rng.gen_range(1..=100_000 * scale),
            bid: rng.gen_range(1..=scale),
            tid: rng.gen_range(1..=10 * scale),
            delta: rng.gen_range(-5000..=5000),
        }
    }
}

/// The probe row of one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The run's id (a UUID).
    pub run_id: &'a str,
    /// The client's number, from 1.
    pub client: i32,
    /// The transaction's number within the client, from 1.
    pub seq: i64,
}

/// Run one transaction. `commit_sent` is set just before the statement that commits is sent,
/// so that the caller can tell failed from unknown even when this future is dropped. Every
/// statement's wait for its answer is timed in `stats` (see [`Stats::request`]).
pub async fn transaction(
    client: &Client,
    st: &Statements,
    stats: &Stats,
    workload: Workload,
    draw: Option<Draw>,
    probe: Option<Probe<'_>>,
    commit_sent: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    if workload == Workload::Probe {
        let p = probe.expect("probe workload has a probe row");
        *commit_sent = true;
        st.probe
            .exec(client, stats, &[&p.run_id, &p.client, &p.seq])
            .await?;
        return Ok(());
    }
    let d = draw.expect("tpcb workloads draw");
    st.begin.exec(client, stats, &[]).await?;
    st.update_account
        .exec(client, stats, &[&d.delta, &d.aid])
        .await?;
    st.select_account.exec(client, stats, &[&d.aid]).await?;
    st.update_teller
        .exec(client, stats, &[&d.delta, &d.tid])
        .await?;
    st.update_branch
        .exec(client, stats, &[&d.delta, &d.bid])
        .await?;
    st.insert_history
        .exec(client, stats, &[&d.tid, &d.bid, &d.aid, &d.delta])
        .await?;
    if let Some(p) = probe {
        st.probe
            .exec(client, stats, &[&p.run_id, &p.client, &p.seq])
            .await?;
    }
    *commit_sent = true;
    st.commit.exec(client, stats, &[]).await?;
    Ok(())
}

/// End an aborted transaction so the connection can be reused.
pub async fn rollback(
    client: &Client,
    st: &Statements,
    stats: &Stats,
) -> Result<(), tokio_postgres::Error> {
    st.rollback.exec(client, stats, &[]).await.map(|_| ())
}

/// What became of a transaction that did not commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Rolled back (or never committed); `reconnect` if the session is no longer usable for
    /// writes (connection gone, server shutting down, session read-only, ...).
    Failed {
        /// Drop this connection and find the primary again.
        reconnect: bool,
    },
    /// COMMIT was sent and no answer proves it either way; always reconnects.
    Unknown,
}

/// Classify a failed transaction (see the module docs). `err` is `None` for a timeout.
pub fn classify(err: Option<&tokio_postgres::Error>, commit_sent: bool) -> Failure {
    let db = err.and_then(|e| e.as_db_error());
    let rolled_back = db.is_some_and(|d| match d.parsed_severity() {
        Some(s) => s == Severity::Error,
        None => d.severity() == "ERROR",
    });
    if commit_sent && !rolled_back {
        return Failure::Unknown;
    }
    // Serialization failures and deadlocks are the only errors worth retrying on the same
    // session; anything else (read-only session, shutdown, missing table) may mean this is
    // no longer the primary, and a reconnect costs a few milliseconds.
    let retry_here = db.is_some_and(|d| d.code().code().starts_with("40"));
    Failure::Failed {
        reconnect: !retry_here,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_before_commit_failed_and_during_commit_is_unknown() {
        assert_eq!(classify(None, false), Failure::Failed { reconnect: true });
        assert_eq!(classify(None, true), Failure::Unknown);
    }

    #[test]
    fn init_matches_pgbench_sizes() {
        let sql = init_sql(3).join("\n");
        assert!(sql.contains("generate_series(1, 300000)"));
        assert!(sql.contains("generate_series(1, 30)"));
        assert!(sql.contains("generate_series(1, 3)"));
    }

    #[test]
    fn draws_stay_in_pgbench_ranges() {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let d = Draw::new(&mut rng, 2);
            assert!((1..=200_000).contains(&d.aid));
            assert!((1..=2).contains(&d.bid));
            assert!((1..=20).contains(&d.tid));
            assert!((-5000..=5000).contains(&d.delta));
        }
        // The largest scale: the highest account id still fits an int.
        let d = Draw::new(&mut rng, crate::MAX_SCALE);
        assert!((1..=2_000_000_000).contains(&d.aid));
    }
}
