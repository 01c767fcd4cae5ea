//! `wait`: the initial copy's progress, then the lag from the publisher's slots, until the
//! target is synced (every table copied) or caught up (every slot's lag under a limit).
//!
//! The lag is measured where it matters for the cutover: on the source, from
//! `pg_current_wal_lsn()` to each slot's `confirmed_flush_lsn` (what the subscriber has
//! applied and flushed), not from `sent_lsn`. When the lag does not shrink for
//! `--converge-window`, the target cannot keep up with the source's writes: the run stops
//! (exit 75) with the rates, instead of waiting for a deadline. A slot the source invalidated
//! (`max_slot_wal_keep_size`) stops it at once (exit 65). DDL on the source during the wait
//! (the schema's fingerprint changed) stops it too: DDL is not replicated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use postgres::types::PgLsn;
use serde_json::json;
use shared::pg::tables::TableName;
use shared::{ErrorKind, Status};

use crate::catalog;
use crate::pair::{Pair, PairArgs};

/// What to wait for.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Every table copied (state ready).
    Synced,
    /// Synced, and every slot's lag at most --max-lag.
    CaughtUp,
}

/// Arguments of `wait`.
#[derive(clap::Args, Debug, Clone)]
pub struct WaitArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// What to wait for.
    #[arg(long, value_enum, default_value = "caught-up")]
    pub until: Until,
    /// The lag (bytes of WAL not yet confirmed by the subscriber) that counts as caught up.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_lag: i64,
    /// Longest wait.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = shared::cli::parse_duration)]
    pub timeout: Duration,
    /// Give up (exit 75) when the lag has not shrunk for this long.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = shared::cli::parse_duration)]
    pub converge_window: Duration,
    /// How long a server may stay unreachable (restarting) before the wait gives up.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = shared::cli::parse_duration)]
    pub reconnect_for: Duration,
    /// How often to write a progress record.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = shared::cli::parse_duration)]
    pub interval: Duration,
}

/// One look at the pair.
#[derive(Debug, Default, Clone)]
pub struct Look {
    /// Tables per subscription state (`i`, `d`, `f`, `s`, `r`), all databases.
    pub states: BTreeMap<String, i64>,
    /// Tables in all.
    pub tables: i64,
    /// Bytes of the published tables (on the source), and of those copied so far (about).
    pub bytes_total: i64,
    /// See `bytes_total`.
    pub bytes_done: i64,
    /// The largest lag of any slot, in bytes (None: a slot not there yet).
    pub lag: Option<i64>,
    /// The source's WAL position.
    pub source_lsn: String,
    /// Failed apply and copy attempts the subscriptions report (PostgreSQL 15 and later).
    pub errors: i64,
    /// A slot the source invalidated.
    pub lost_slot: Option<String>,
    /// Subscriptions whose apply worker is not running yet (the launcher starts one per
    /// `wal_retrieve_retry_interval`): not caught up, whatever the lag says.
    pub workers_missing: i64,
}

impl Look {
    /// Every table copied.
    pub fn synced(&self) -> bool {
        self.tables > 0 && self.states.get("r").copied().unwrap_or(0) == self.tables
    }
}

/// Look at the pair once.
pub fn look(p: &mut Pair, sizes: &BTreeMap<(String, TableName), i64>) -> anyhow::Result<Look> {
    let mut l = Look {
        source_lsn: p
            .source
            .control()
            .query_one("SELECT pg_current_wal_lsn()::text", &[])?
            .get(0),
        ..Look::default()
    };
    let mut lag = Some(0i64);
    let stats = p.target.major() >= 15;
    for d in p.dbs.clone() {
        let tc = p.target.db(&d.name)?;
        // COPY's progress only for a table the subscription is still synchronising (with
        // pgshift's own copy, copy_data = false, every table is ready from the start): this
        // runs at every poll of wait.
        for r in tc.query(
            "SELECT r.srsubstate::text, n.nspname::text, c.relname::text,
                    CASE WHEN r.srsubstate IN ('r', 's', 'f') THEN 0
                         ELSE coalesce((SELECT sum(bytes_processed) FROM pg_stat_progress_copy pc
                                         WHERE pc.relid = r.srrelid AND pc.command = 'COPY FROM'), 0)
                    END::bigint
               FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
               JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE s.subname = $1",
            &[&d.names.subscription],
        )? {
            let state: String = r.get(0);
            let name = TableName::new(r.get::<_, String>(1), r.get::<_, String>(2));
            let copying: i64 = r.get(3);
            let size = sizes.get(&(d.name.clone(), name)).copied().unwrap_or(0);
            l.bytes_done += match state.as_str() {
                "r" | "s" | "f" => size,
                _ => copying.min(size),
            };
            *l.states.entry(state).or_default() += 1;
            l.tables += 1;
        }
        let running: bool = tc
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL AND pid IS NOT NULL)",
                &[&d.names.subscription],
            )?
            .get(0);
        l.workers_missing += i64::from(!running);
        if stats {
            if let Some(r) = tc.query_opt(
                "SELECT (apply_error_count + sync_error_count)::bigint FROM pg_stat_subscription_stats WHERE subname = $1",
                &[&d.names.subscription],
            )? {
                l.errors += r.get::<_, i64>(0);
            }
        }
        let slot = p.source.control().query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, coalesce(wal_status, '')
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&d.names.slot],
        )?;
        match slot {
            Some(r) => {
                if r.get::<_, String>(1) == "lost" {
                    l.lost_slot = Some(d.names.slot.clone());
                }
                let v: Option<i64> = r.get(0);
                lag = match (lag, v) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            None => lag = None,
        }
    }
    l.bytes_total = sizes.values().sum();
    l.bytes_done = l.bytes_done.min(l.bytes_total);
    l.lag = lag;
    Ok(l)
}

/// The published tables' sizes on the source, per database and table.
pub fn sizes(p: &mut Pair) -> anyhow::Result<BTreeMap<(String, TableName), i64>> {
    let mut out = BTreeMap::new();
    for d in p.dbs.clone() {
        let all = catalog::tables(p.source.db(&d.name)?)?;
        for t in catalog::published(&all, &p.exclude) {
            out.insert((d.name.clone(), t.name.clone()), t.bytes);
        }
    }
    Ok(out)
}

/// `wait`.
pub fn run(mut p: Pair, args: &WaitArgs) -> anyhow::Result<Status> {
    for d in p.dbs.clone() {
        crate::check::require_subscribed(&mut p, &d)?;
    }
    let sizes = sizes(&mut p)?;
    let fingerprints: Vec<(String, Option<String>)> = p
        .dbs
        .clone()
        .iter()
        .map(|d| (d.name.clone(), p.recorded_fingerprint(&d.name)))
        .collect();
    let started = Instant::now();
    let bar = shared::progress::bar(1, "copy");
    let mut last_record: Option<Instant> = None;
    let mut last_ddl_check = Instant::now();
    let mut best_lag: Option<(i64, Instant)> = None;
    let mut window: Vec<(Instant, i64, u64)> = Vec::new(); // (when, lag, source lsn bytes)
    let mut errors_seen = 0;
    let mut copy_t0: Option<(Instant, i64)> = None;
    // DDL on the source is not replicated: say so now, not at the fence (and not only after
    // the first ten seconds).
    let ddl = |p: &mut Pair| -> anyhow::Result<()> {
        for (db, recorded) in &fingerprints {
            let Some(recorded) = recorded else { continue };
            let lines = catalog::schema_lines(p.source.db(db)?, false)?;
            let fp = catalog::fingerprint(&lines);
            if &fp != recorded {
                return Err(catalog::schema_changed(db, recorded, &fp));
            }
        }
        Ok(())
    };
    ddl(&mut p)?;
    let mut down_since: Option<Instant> = None;
    loop {
        // A server that restarts (a crash, a failover of a managed service) is waited for:
        // the subscription resumes by itself from its slot, and so does this wait.
        let l = match look(&mut p, &sizes) {
            Ok(l) => {
                down_since = None;
                l
            }
            Err(e)
                if matches!(
                    shared::exit::classify(&e),
                    ErrorKind::Unavailable | ErrorKind::Retry
                ) =>
            {
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() > args.reconnect_for {
                    return Err(e.context(format!(
                        "a server did not answer again within {} s",
                        args.reconnect_for.as_secs()
                    )));
                }
                shared::warn!("{e:#}; trying again");
                std::thread::sleep(Duration::from_secs(1));
                let _ = p.source.reconnect();
                let _ = p.target.reconnect();
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(slot) = &l.lost_slot {
            bar.finish_and_clear();
            return Err(shared::err(
                ErrorKind::DataErr,
                format!("the slot {slot} was invalidated on the source (it fell more than max_slot_wal_keep_size behind): abort and start again, in a quieter window or with a larger max_slot_wal_keep_size"),
            ));
        }
        if l.errors > errors_seen {
            shared::warn!(
                "the subscriptions report {} failed apply or copy attempt(s) so far (the target's server log says why); they are retried",
                l.errors
            );
            errors_seen = l.errors;
        }
        let now = Instant::now();
        let lsn_bytes = l.source_lsn.parse::<PgLsn>().map_or(0, u64::from);
        if let Some(lag) = l.lag {
            window.push((now, lag, lsn_bytes));
            window.retain(|w| now.duration_since(w.0) <= Duration::from_secs(30));
        }
        let synced = l.synced();
        if !synced {
            copy_t0.get_or_insert((now, l.bytes_done));
            bar.set_length(l.bytes_total.max(1) as u64);
            bar.set_position(l.bytes_done.max(0) as u64);
        } else {
            bar.set_message(match l.lag {
                Some(lag) => format!("lag {}", shared::human::bytes(lag as f64)),
                None => "lag ?".into(),
            });
        }
        let due = last_record.is_none_or(|t| now.duration_since(t) >= args.interval);
        let done = synced
            && (args.until == Until::Synced
                || (l.workers_missing == 0 && l.lag.is_some_and(|lag| lag <= args.max_lag)));
        if due || done {
            last_record = Some(now);
            if !synced || copy_t0.is_some() {
                let (t0, b0) = copy_t0.unwrap_or((started, 0));
                let secs = now.duration_since(t0).as_secs_f64();
                let rate = if secs > 0.0 {
                    ((l.bytes_done - b0) as f64 / secs) as i64
                } else {
                    0
                };
                let eta = (rate > 0 && !synced).then(|| (l.bytes_total - l.bytes_done) / rate);
                p.out.emit_as(
                    "copy_progress",
                    &json!({"tables_ready": l.states.get("r").copied().unwrap_or(0),
                            "tables_total": l.tables, "states": l.states,
                            "bytes_done": l.bytes_done, "bytes_total": l.bytes_total,
                            "bytes_per_s": rate, "eta_s": eta,
                            "elapsed_ms": started.elapsed().as_millis() as u64}),
                )?;
                if synced {
                    copy_t0 = None;
                }
            }
            if synced {
                let (wal_rate, apply_rate) = rates(&window);
                let eta = match (l.lag, apply_rate, wal_rate) {
                    (Some(lag), a, w) if a > w && lag > args.max_lag => {
                        Some((lag - args.max_lag) as f64 / (a - w))
                    }
                    _ => None,
                };
                p.out.emit_as(
                    "lag",
                    &json!({"lag_bytes": l.lag, "max_lag_bytes": args.max_lag,
                            "source_lsn": l.source_lsn,
                            "source_wal_bytes_per_s": wal_rate as i64,
                            "apply_bytes_per_s": apply_rate as i64,
                            "eta_s": eta.map(|e| e.ceil() as i64),
                            "apply_errors": l.errors}),
                )?;
            }
        }
        if done {
            bar.finish_and_clear();
            ddl(&mut p)?;
            return p.out.finish(
                &json!({"state": if args.until == Until::Synced { "synced" } else { "caught_up" },
                                        "lag_bytes": l.lag, "tables": l.tables,
                                        "bytes_total": l.bytes_total}),
            );
        }
        if now.duration_since(last_ddl_check) >= Duration::from_secs(10) {
            last_ddl_check = now;
            if let Err(e) = ddl(&mut p) {
                bar.finish_and_clear();
                return Err(e);
            }
        }
        if synced {
            if let Some(lag) = l.lag {
                match best_lag {
                    Some((b, _)) if lag >= b => {}
                    _ => best_lag = Some((lag, now)),
                }
                if let Some((b, since)) = best_lag {
                    if lag > args.max_lag && now.duration_since(since) >= args.converge_window {
                        let (wal_rate, apply_rate) = rates(&window);
                        bar.finish_and_clear();
                        return Err(shared::err(
                            ErrorKind::Retry,
                            format!(
                                "the target cannot catch up: its lag has not gone below {} for {} s (now {}); the source writes {}/s of WAL, the target confirms {}/s. Choose a quieter window (window-advisor), or the physical mode; the subscription keeps going (abort removes it)",
                                shared::human::bytes(b as f64),
                                args.converge_window.as_secs(),
                                shared::human::bytes(lag as f64),
                                shared::human::bytes(wal_rate),
                                shared::human::bytes(apply_rate)
                            ),
                        ));
                    }
                }
            }
        }
        if started.elapsed() > args.timeout {
            bar.finish_and_clear();
            return Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "not {} after {} s: {} of {} tables copied, lag {}",
                    if args.until == Until::Synced {
                        "synced"
                    } else {
                        "caught up"
                    },
                    args.timeout.as_secs(),
                    l.states.get("r").copied().unwrap_or(0),
                    l.tables,
                    l.lag
                        .map_or("unknown".into(), |x| shared::human::bytes(x as f64))
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The source's WAL rate and the subscriber's confirm rate over the window, bytes/s.
fn rates(window: &[(Instant, i64, u64)]) -> (f64, f64) {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return (0.0, 0.0);
    };
    let secs = last.0.duration_since(first.0).as_secs_f64();
    if secs < 1.0 {
        return (0.0, 0.0);
    }
    let wal = last.2.saturating_sub(first.2) as f64 / secs;
    // Confirmed = position - lag.
    let confirmed = (last.2 as i64 - last.1) - (first.2 as i64 - first.1);
    (wal, (confirmed.max(0) as f64) / secs)
}
