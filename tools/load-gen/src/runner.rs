//! The load run: N client tasks, a tick every second, a clean stop on time or on a signal.
//!
//! Each client owns one session. On any error that may mean "this is no longer the primary"
//! it drops the session and reconnects through [`Target::connect`] (all hosts at once,
//! `target_session_attrs` honoured) with a backoff of 5 ms doubling to `--max-backoff`
//! (50 ms), so that it is back within a few milliseconds of a new primary accepting writes.
//!
//! The main task prints everything on stdout (clients send their `connect`, `disconnect`,
//! `server` and `split_brain` records through a channel), so the stream stays one writer's.
//! On stop (duration elapsed, SIGINT or SIGTERM) the clients finish the transaction in
//! flight, for at most [`GRACE`]; a transaction cut off while COMMIT was in flight is
//! recorded as unknown. Then the ack log is completed and fsync'd, `--verify` runs, and the
//! `summary` is written.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};
use shared::{ErrorKind, Output, Status};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;

use crate::acklog::{AckLog, AckRecord, EndRecord, RunData, RunRecord, UnknownRecord};
use crate::conn::{self, Target};
use crate::stats::{Stats, Totals};
use crate::verify::{self, Checked};
use crate::workload::{self, Draw, Failure, Probe, Statements, PROBE_TABLE};
use crate::{Protocol, RunArgs, Workload};

/// How long clients may take to finish their transaction in flight after a stop.
pub const GRACE: Duration = Duration::from_secs(2);

/// How long `--verify` keeps trying to reach the primary after the load stopped.
const VERIFY_CONNECT_FOR: Duration = Duration::from_secs(10);

/// A record for stdout, from a client task.
type Event = (&'static str, Value);

/// What the clients share.
struct Ctx {
    target: Target,
    workload: Workload,
    protocol: Protocol,
    scale: u32,
    run_id: String,
    txn_timeout: Duration,
    max_backoff: Duration,
    pace: Option<Duration>,
    clients: u32,
    stats: Stats,
    log: Option<AckLog>,
    /// Kept for `--verify` only.
    keep: bool,
    acks: Mutex<Vec<AckRecord>>,
    unknowns: Mutex<Vec<UnknownRecord>>,
    events: mpsc::UnboundedSender<Event>,
    stop: watch::Receiver<bool>,
}

impl Ctx {
    fn emit(&self, kind: &'static str, body: impl Serialize) {
        if let Ok(v) = serde_json::to_value(body) {
            // The receiver lives as long as the run; a send after it is gone is moot.
            let _ = self.events.send((kind, v));
        }
    }

    fn t_ms(&self) -> u64 {
        self.stats.now_us() / 1000
    }
}

/// `load-gen --dsn ... [--duration D]`: run the load and write the summary.
pub fn run_load(args: RunArgs) -> anyhow::Result<Status> {
    if !args.workload.probes() && (args.log.is_some() || args.verify) {
        return Err(shared::err(
            ErrorKind::Usage,
            "the tpcb workload writes no probe rows, so there is nothing to log or verify: use --workload mixed or probe with --log/--verify",
        ));
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(shared::err(
                ErrorKind::Usage,
                format!("invalid --rate {r}: give a positive number of transactions per second"),
            ));
        }
    }
    if args.cleanup && args.log.is_some() && !args.verify {
        return Err(shared::err(
            ErrorKind::Usage,
            "--cleanup drops the probe rows that a later `load-gen verify --log` reads: add --verify (it checks them before the table goes), or drop --cleanup",
        ));
    }
    if args.tick < Duration::from_millis(10) {
        return Err(shared::err(
            ErrorKind::Usage,
            "--tick must be at least 10ms",
        ));
    }
    if args.duration.is_some_and(|d| d.is_zero()) {
        return Err(shared::err(
            ErrorKind::Usage,
            "--duration must be greater than zero (leave it out to run until SIGINT or SIGTERM)",
        ));
    }
    if args.max_backoff.is_zero() || args.txn_timeout.is_zero() || args.connect_timeout.is_zero() {
        return Err(shared::err(
            ErrorKind::Usage,
            "--max-backoff, --txn-timeout and --connect-timeout must be greater than zero",
        ));
    }
    let target = Target::parse(&args.dsn, args.connect_timeout)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let res = rt.block_on(load(args, target));
    // Connections to a host that stopped answering may still be waiting: do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(200));
    res
}

/// Start the clients on `jobs` threads, each with its own single-threaded runtime (as
/// pgbench's `-j` threads each serve their share of the clients): a client task and its
/// connection task then always run on the same thread, and a round trip costs no cross-thread
/// wake-ups. Each thread's receiver resolves when its clients have ended.
fn start_jobs(ctx: &Arc<Ctx>, jobs: u32) -> anyhow::Result<Jobs> {
    let mut threads = Vec::new();
    let mut done = Vec::new();
    for j in 0..jobs {
        let ids: Vec<u32> = (1..=ctx.clients)
            .filter(|id| (id - 1) % jobs == j)
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a client thread's runtime")?;
        let (tx, rx) = oneshot::channel();
        let ctx = ctx.clone();
        let th = std::thread::Builder::new()
            .name(format!("load-gen-{j}"))
            .spawn(move || {
                rt.block_on(async {
                    let tasks: Vec<_> = ids
                        .into_iter()
                        .map(|id| tokio::spawn(client(ctx.clone(), id)))
                        .collect();
                    for t in tasks {
                        if let Err(e) = t.await {
                            if e.is_panic() {
                                std::panic::resume_unwind(e.into_panic());
                            }
                        }
                    }
                });
                // Dropping the runtime drops connections still waiting on a silent host.
                drop(rt);
                let _ = tx.send(());
            })
            .context("starting a client thread")?;
        threads.push(th);
        done.push(rx);
    }
    Ok(Jobs { threads, done })
}

/// The client threads.
struct Jobs {
    threads: Vec<std::thread::JoinHandle<()>>,
    done: Vec<oneshot::Receiver<()>>,
}

/// The current time, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[derive(Serialize)]
struct Summary<'a> {
    run_id: &'a str,
    workload: &'static str,
    protocol: &'static str,
    clients: u32,
    scale: Option<u32>,
    rate: Option<f64>,
    stopped_by: &'static str,
    log: Option<String>,
    #[serde(flatten)]
    totals: &'a Totals,
    acked: Option<u64>,
    #[serde(flatten)]
    verify: Option<RunVerify>,
    /// `--cleanup`: the tables it dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_tables: Option<Vec<String>>,
}

/// `--verify`'s fields in the summary (`split_brain` is the run's own count).
#[derive(Serialize)]
struct RunVerify {
    verified_on: String,
    present: u64,
    lost: u64,
    unknown_committed: u64,
    unknown_absent: u64,
    unexpected: u64,
}

async fn load(args: RunArgs, target: Target) -> anyhow::Result<Status> {
    let mut out = Output::stdout();
    // Listen before anything else, so a signal during start-up stops the run cleanly.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let (setup, ep) = target
        .connect()
        .await
        .context("connecting to the database to start the load")?;
    let prepared = workload::prepare_database(&setup, args.workload)
        .await
        .with_context(|| format!("preparing the database on {ep}"))?;
    let scale = prepared.scale;
    if prepared.created_probe {
        workload::announce_created(&mut out, &prepared.database, &[PROBE_TABLE])?;
    }

    let run_id = uuid::Uuid::new_v4().to_string();
    let started_at = now_rfc3339();
    let log = match args.log.as_ref().map(|p| AckLog::create(p)).transpose() {
        Ok(l) => l,
        Err(e) => {
            // Refused before any load: the table this run made goes again.
            if prepared.created_probe {
                let _ = workload::drop_tables(&setup, &[PROBE_TABLE]).await;
            }
            return Err(e);
        }
    };
    drop(setup);
    if let Some(l) = &log {
        l.write(&RunRecord {
            run_id: run_id.clone(),
            started_at: started_at.clone(),
            dsn: target.describe(),
            workload: args.workload.as_str().into(),
            clients: args.clients,
        });
    }
    out.emit_as(
        "start",
        &json!({
            "run_id": run_id,
            "started_at": started_at,
            "dsn": target.describe(),
            "host": ep.to_string(),
            "workload": args.workload.as_str(),
            "protocol": args.protocol.as_str(),
            "clients": args.clients,
            "scale": scale,
            "rate": args.rate,
            "duration_ms": args.duration.map(|d| d.as_millis() as u64),
            "log": args.log.as_ref().map(|p| p.display().to_string()),
        }),
    )?;

    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        target,
        workload: args.workload,
        protocol: args.protocol,
        scale: scale.unwrap_or(1),
        run_id: run_id.clone(),
        txn_timeout: args.txn_timeout,
        max_backoff: args.max_backoff,
        pace: args
            .rate
            .map(|r| Duration::from_secs_f64(f64::from(args.clients) / r)),
        clients: args.clients,
        stats: Stats::new(),
        log,
        keep: args.verify,
        acks: Mutex::new(Vec::new()),
        unknowns: Mutex::new(Vec::new()),
        events: events_tx,
        stop: stop_rx,
    });
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
        .min(args.clients);
    let Jobs { threads, done } = start_jobs(&ctx, jobs)?;

    // Not over a terminal's stdout: the tick lines (or records) are the live output there,
    // and a bar on stderr would erase them.
    let bar =
        (!args.json_only && !std::io::IsTerminal::is_terminal(&std::io::stdout())).then(|| {
            match args.duration {
                Some(d) => shared::progress::bar(d.as_secs().max(1), "load-gen"),
                None => shared::progress::spinner("load-gen"),
            }
        });
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(start + args.tick, args.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| start + d);
    let until_deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let mut idle_ticks = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    let stopped_by = loop {
        let res = tokio::select! {
            _ = ticker.tick() => {
                let t = ctx.stats.tick();
                if let Some(l) = &ctx.log {
                    l.flush();
                }
                if let Some(b) = &bar {
                    b.set_position(start.elapsed().as_secs());
                    b.set_message(format!(
                        "{} tps, p99 {} ms, {}",
                        t.tps,
                        t.latency_p99_ms.map_or("-".into(), |v| v.to_string()),
                        t.host.as_deref().unwrap_or("no host")
                    ));
                }
                // Say so on stderr when nothing has worked for a while.
                idle_ticks = if t.committed == 0 { idle_ticks + 1 } else { 0 };
                let every = (Duration::from_secs(10).as_millis() / args.tick.as_millis().max(1)).max(1) as u64;
                if idle_ticks > 0 && idle_ticks.is_multiple_of(every) {
                    shared::warn!(
                        "no transaction committed for {} s; last error: {}",
                        idle_ticks * args.tick.as_millis() as u64 / 1000,
                        ctx.stats.last_error().as_deref().unwrap_or("none")
                    );
                }
                out.emit_as("tick", &t)
            }
            Some((kind, body)) = events.recv() => out.emit_as(kind, &body),
            _ = &mut until_deadline => break "duration",
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
        };
        if let Err(e) = res {
            failure = Some(e);
            break "error";
        }
    };

    // Stop: clients finish what is in flight (bounded by GRACE), then everything is counted.
    ctx.stats.stop();
    let _ = stop_tx.send(true);
    let joined = futures_util::future::join_all(done);
    tokio::pin!(joined);
    loop {
        tokio::select! {
            _ = &mut joined => break,
            Some((kind, body)) = events.recv() => {
                if failure.is_none() {
                    if let Err(e) = out.emit_as(kind, &body) { failure = Some(e); }
                }
            }
        }
    }
    while let Ok((kind, body)) = events.try_recv() {
        if failure.is_none() {
            if let Err(e) = out.emit_as(kind, &body) {
                failure = Some(e);
            }
        }
    }
    let panicked = threads
        .into_iter()
        .map(|t| t.join())
        .filter(Result::is_err)
        .count();
    if panicked > 0 {
        return Err(shared::err(
            ErrorKind::Internal,
            format!("{panicked} client thread(s) panicked (see the message above)"),
        ));
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let last = ctx.stats.tick();
    let totals = ctx.stats.totals();
    if let Some(l) = &ctx.log {
        l.write(&EndRecord {
            acked: totals.committed,
            unknown: totals.unknown,
            failed: totals.failed,
            stopped_at: now_rfc3339(),
        });
    }
    let log_result = ctx.log.as_ref().map(AckLog::finish).unwrap_or(Ok(()));
    if let Some(e) = failure {
        return Err(e);
    }
    if last.interval_ms > 0 || last.committed > 0 || last.errors_by_kind.total() > 0 {
        out.emit_as("tick", &last)?;
    }
    if let Err(e) = log_result {
        out.error(
            &e,
            json!({"log": args.log.as_ref().map(|p| p.display().to_string())}),
        )?;
    }

    let mut run_verify = None;
    if args.verify {
        match verify_now(&ctx, &mut out).await {
            Ok(c) => {
                if c.lost > 0 {
                    out.mark_differences();
                }
                run_verify = Some(RunVerify {
                    verified_on: c.host,
                    present: c.present,
                    lost: c.lost,
                    unknown_committed: c.unknown_committed,
                    unknown_absent: c.unknown_absent,
                    unexpected: c.unexpected,
                });
            }
            Err(e) => out.error(&e, json!({"check": "verify"}))?,
        }
    }
    // --cleanup, after --verify (which reads the probe rows): the table this run made goes;
    // one that was there before stays (`load-gen cleanup` drops it).
    let mut dropped_tables = None;
    // The probe rows are the evidence: they stay unless the verify step got its verdict and
    // it found nothing wrong (a failed verify, a loss or a split brain can be looked at
    // again with `load-gen verify --log`).
    let evidence = match &run_verify {
        None => Some("the verify step did not get to its verdict"),
        Some(v) if v.lost > 0 => Some("acknowledged writes are lost"),
        Some(_) if totals.split_brain > 0 => Some("the run saw a split brain"),
        Some(_) => None,
    };
    if let (true, Some(why)) = (args.cleanup && prepared.created_probe, evidence) {
        out.note(
            "kept_table",
            &format!(
                "--cleanup: kept table {PROBE_TABLE} in database {} because {why}: its rows are \
                 the evidence (`load-gen verify --log` reads them; `load-gen cleanup` drops it)",
                prepared.database
            ),
        )?;
    } else if args.cleanup {
        if prepared.created_probe {
            let dropped = async {
                let (client, _) = ctx.target.connect().await?;
                workload::drop_tables(&client, &[PROBE_TABLE]).await
            }
            .await;
            match dropped {
                Ok(d) => {
                    for t in &d {
                        out.emit_as(
                            "note",
                            &json!({"code": "dropped_table", "message": format!("dropped table {t} in database {}", prepared.database), "table": t, "database": prepared.database}),
                        )?;
                    }
                    dropped_tables = Some(d);
                }
                Err(e) => out.error(&e, json!({"check": "cleanup"}))?,
            }
        } else {
            shared::note!(
                "--cleanup: kept table {PROBE_TABLE} in database {}: it was there before this run (`load-gen cleanup` drops it)",
                prepared.database
            );
            dropped_tables = Some(Vec::new());
        }
    }
    if totals.split_brain > 0 {
        shared::warn!(
            "split brain: {} writes were acknowledged by a server after a newer primary had acknowledged one (see the split_brain records)",
            totals.split_brain
        );
        out.mark_differences();
    }
    if totals.committed == 0 {
        let e = shared::err(
            ErrorKind::Unavailable,
            format!(
                "no transaction committed in {} ms; last error: {}",
                totals.duration_ms,
                totals.last_error.as_deref().unwrap_or("none")
            ),
        );
        out.error(&e, Value::Null)?;
    }
    if !args.json_only {
        shared::note!("{}", closing_line(&totals));
    }
    out.finish(&Summary {
        run_id: &run_id,
        workload: args.workload.as_str(),
        protocol: args.protocol.as_str(),
        clients: args.clients,
        scale,
        rate: args.rate,
        stopped_by,
        log: args.log.as_ref().map(|p| p.display().to_string()),
        totals: &totals,
        acked: args.workload.probes().then_some(totals.committed),
        verify: run_verify,
        dropped_tables,
    })
}

/// The one line for a person at the end, like pgbench's closing report.
fn closing_line(t: &Totals) -> String {
    let latency = match (t.latency_mean_ms, t.latency_p99_ms) {
        (Some(mean), Some(p99)) => format!("latency mean {mean:.3} ms, p99 {p99:.3} ms"),
        _ => "no latency (nothing committed)".to_owned(),
    };
    let e = &t.errors_by_kind;
    format!(
        "{} transactions committed in {:.1} s ({} tps), {latency}; {} client errors \
         (statement {}, unknown {}, connect {}); longest stall {} ms, longest write gap {} ms",
        t.committed,
        t.duration_ms as f64 / 1000.0,
        t.tps,
        t.errors_total,
        e.statement,
        e.unknown,
        e.connect,
        t.max_stall_ms,
        t.max_write_gap_ms,
    )
}

/// `--verify`: check the acknowledgements kept in memory on the primary the DSN leads to now.
async fn verify_now(ctx: &Ctx, out: &mut Output) -> anyhow::Result<Checked> {
    let run = RunData {
        run_id: ctx.run_id.clone(),
        servers: ctx
            .stats
            .server_records()
            .into_iter()
            .map(|s| (s.id, s))
            .collect(),
        acks: std::mem::take(&mut *ctx.acks.lock().expect("acks lock")),
        unknowns: std::mem::take(&mut *ctx.unknowns.lock().expect("unknowns lock")),
        complete: true,
    };
    // A standby is not yet the final primary (a promotion may be under way): wait for one.
    let deadline = tokio::time::Instant::now() + VERIFY_CONNECT_FOR;
    let (client, ep) = loop {
        let primary = async {
            let (client, ep) = ctx.target.connect().await?;
            verify::ensure_primary(&client, &ep.to_string()).await?;
            anyhow::Ok((client, ep))
        };
        match primary.await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context("connecting to the primary to verify the acknowledged writes"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    verify::check(&client, &ep.to_string(), &run, out).await
}

/// Resolves once the run is told to stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: the run is over too.
    let _ = rx.wait_for(|s| *s).await;
}

/// Resolves [`GRACE`] after the stop: the limit for a transaction in flight.
async fn grace_over(rx: watch::Receiver<bool>) {
    stopped(rx).await;
    tokio::time::sleep(GRACE).await;
}

/// A usable session.
struct Session {
    client: Client,
    host: String,
    server: u32,
    st: Statements,
}

/// Connect, identify the server, prepare the statements.
async fn open(ctx: &Ctx) -> anyhow::Result<Session> {
    let (client, ep) = ctx.target.connect().await?;
    let host = ep.to_string();
    // Bounded like a transaction: preparing waits for table locks, and a server can stop
    // answering between connect and here.
    let setup = async {
        let identity = conn::identify(&client)
            .await
            .with_context(|| format!("{host}: asking the server who it is"))?;
        let st = Statements::prepare(&client, ctx.workload, ctx.protocol)
            .await
            .map_err(|e| {
                let kind = shared::pg::classify_pg_error(&e);
                shared::err(
                    kind,
                    format!(
                        "{host}: preparing the statements: {}",
                        shared::pg::one_line(&e)
                    ),
                )
            })?;
        anyhow::Ok((identity, st))
    };
    let (identity, st) = tokio::time::timeout(ctx.txn_timeout, setup)
        .await
        .map_err(|_| {
            shared::err(
                ErrorKind::Retry,
                format!("{host}: setting up the session took longer than --txn-timeout"),
            )
        })??;
    let (server, new) = ctx.stats.server(&host, &identity);
    if let Some(rec) = new {
        if let Some(l) = &ctx.log {
            l.write(&rec);
        }
        ctx.emit("server", &rec);
    }
    Ok(Session {
        client,
        host,
        server,
        st,
    })
}

/// Run `fut` unless the stop comes first (`None`).
async fn unless_stopped<T>(rx: &watch::Receiver<bool>, fut: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        v = fut => Some(v),
        _ = stopped(rx.clone()) => None,
    }
}

/// One client: sessions and transactions until the stop.
async fn client(ctx: Arc<Ctx>, id: u32) {
    let mut rng = StdRng::from_entropy();
    let mut seq: u64 = 0;
    let mut down = false;
    let mut sessions = 0u64;
    let mut pace = ctx.pace.map(|p| {
        // Spread the clients' schedules over one period.
        let offset = p.mul_f64(f64::from(id - 1) / f64::from(ctx.clients));
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    });
    let go_down = |down: &mut bool, why: &str| {
        if !*down {
            *down = true;
            if ctx.stats.client_down() {
                shared::note!("client {id}: {why}; reconnecting");
            }
        }
    };

    'session: loop {
        if *ctx.stop.borrow() {
            break;
        }
        // Find the primary.
        let mut backoff = Duration::from_millis(5);
        let mut attempts = 0u32;
        let lost_at = ctx.t_ms();
        let s = loop {
            attempts += 1;
            // One request, from the connect to a ready session (or the failure).
            let timed = ctx.stats.request();
            let res = unless_stopped(&ctx.stop, open(&ctx)).await;
            drop(timed);
            let Some(res) = res else {
                break 'session;
            };
            match res {
                Ok(s) => break s,
                Err(e) => {
                    let msg = format!("{e:#}");
                    go_down(&mut down, &msg);
                    ctx.stats.connect_failed(msg);
                    if unless_stopped(&ctx.stop, tokio::time::sleep(backoff))
                        .await
                        .is_none()
                    {
                        break 'session;
                    }
                    backoff = (backoff * 2).min(ctx.max_backoff);
                }
            }
        };
        ctx.stats.connected(sessions > 0);
        sessions += 1;
        ctx.emit(
            "connect",
            json!({
                "client": id, "host": s.host, "server": s.server, "t_ms": ctx.t_ms(),
                "attempts": attempts,
                "reconnect": sessions > 1,
                "waited_ms": ctx.t_ms().saturating_sub(lost_at),
            }),
        );

        // Transactions until the session breaks or the run stops. One grace timer per
        // session, polled by every transaction, rather than one per transaction.
        let grace = grace_over(ctx.stop.clone());
        tokio::pin!(grace);
        loop {
            if *ctx.stop.borrow() {
                ctx.stats.disconnected();
                break 'session;
            }
            if let Some(p) = pace.as_mut() {
                if unless_stopped(&ctx.stop, p.tick()).await.is_none() {
                    ctx.stats.disconnected();
                    break 'session;
                }
            }
            let probe = ctx.workload.probes().then(|| {
                seq += 1;
                seq
            });
            let draw = ctx.workload.tpcb().then(|| Draw::new(&mut rng, ctx.scale));
            let sent_us = ctx.stats.now_us();
            let mut commit_sent = false;
            let res = {
                let txn = tokio::time::timeout(
                    ctx.txn_timeout,
                    workload::transaction(
                        &s.client,
                        &s.st,
                        &ctx.stats,
                        ctx.workload,
                        draw,
                        probe.map(|seq| Probe {
                            run_id: &ctx.run_id,
                            client: id as i32,
                            seq: seq as i64,
                        }),
                        &mut commit_sent,
                    ),
                );
                tokio::select! {
                    r = txn => match r {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err((Some(e), "")),
                        Err(_) => Err((None, "transaction timed out (--txn-timeout)")),
                    },
                    _ = &mut grace => Err((None, "transaction still running when the run stopped")),
                }
            };
            match res {
                Ok(()) => {
                    let c = ctx.stats.commit(s.server, &s.host, sent_us);
                    if let Some(seq) = probe {
                        let ack = AckRecord {
                            client: id,
                            seq,
                            server: s.server,
                            sent_us,
                            ack_us: c.ack_us,
                        };
                        if let Some(l) = &ctx.log {
                            l.write(&ack);
                        }
                        if ctx.keep {
                            ctx.acks.lock().expect("acks lock").push(ack);
                        }
                    }
                    if let Some(sb) = c.new_split {
                        ctx.emit("split_brain", &sb);
                    }
                    if down {
                        down = false;
                        if let Some(len) = ctx.stats.client_up() {
                            shared::note!("writes resumed on {} after {} ms", s.host, len / 1000);
                        }
                    }
                }
                Err((err, what)) => {
                    let failure = workload::classify(err.as_ref(), commit_sent);
                    let msg = match &err {
                        Some(e) => format!("{}: {}", s.host, shared::pg::one_line(e)),
                        None => format!("{}: {what}", s.host),
                    };
                    match failure {
                        Failure::Unknown => {
                            if let Some(seq) = probe {
                                let u = UnknownRecord {
                                    client: id,
                                    seq,
                                    server: Some(s.server),
                                    sent_us,
                                    error: msg.clone(),
                                };
                                if let Some(l) = &ctx.log {
                                    l.write(&u);
                                }
                                if ctx.keep {
                                    ctx.unknowns.lock().expect("unknowns lock").push(u);
                                }
                            }
                            ctx.stats.unknown(msg.clone());
                        }
                        Failure::Failed { .. } => ctx.stats.failed(msg.clone()),
                    }
                    go_down(&mut down, &msg);
                    let mut reconnect = !matches!(failure, Failure::Failed { reconnect: false });
                    if !reconnect
                        && workload::rollback(&s.client, &s.st, &ctx.stats)
                            .await
                            .is_err()
                    {
                        reconnect = true;
                    }
                    if reconnect {
                        ctx.stats.disconnected();
                        ctx.emit(
                            "disconnect",
                            json!({"client": id, "host": s.host, "server": s.server, "t_ms": ctx.t_ms(), "error": msg}),
                        );
                        continue 'session;
                    }
                }
            }
        }
    }
}
