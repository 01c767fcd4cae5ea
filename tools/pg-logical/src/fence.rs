//! The cutover: stop writes on the source and prove the target holds every change (`fence`),
//! then let the target take writes and keep a way back (`open`), or undo the fence
//! (`unfence`).
//!
//! **The fence** is a role's right to log in: every login role but pgshift's own is made
//! NOLOGIN in one transaction, which also gives each the setting `pgshift.fenced` (so the
//! servers themselves record who was fenced), and then every client session in the moved
//! databases is ended, and waited for, until a scan finds none. No GUC is involved: a
//! session can override `default_transaction_read_only`, it cannot log in without LOGIN.
//!
//! **The proofs**, each a `proof` record and each an assertion (a failed one reopens the
//! source and the run stops):
//! 1. `source_fenced`: the roles fenced and the sessions ended;
//! 2. `fenced_lsn`: `X = pg_current_wal_insert_lsn()` once no client session is left;
//! 3. `slot_confirmed` (per database): the subscription's slot on the source has
//!    `confirmed_flush_lsn >= X`: the subscriber has applied and flushed every transaction
//!    committed before X. Not `sent_lsn` (sent is not applied) and not the subscriber's
//!    origin position (it moves only on applied commits);
//! 4. `sentinel` (per database): a row written on the source after X is read on the target:
//!    the same fact seen through the data, without LSNs;
//! 5. `no_client_sessions`: still none on the source, and no prepared transaction;
//! 6. `sequences` (per database): every sequence set on the target to the source's state,
//!    and read back equal (replication does not carry sequences);
//! 7. `schema_unchanged` (per database): the source's schema fingerprint is the one setup
//!    recorded (DDL during the run is not replicated), and both sides have the same tables
//!    and columns.
//!
//! **Open**: the forward subscription is disabled (nothing more is applied), the target gets
//! a publication and a logical slot for the way back (every change from here on is kept),
//! then its fenced roles log in again, in one transaction: the moment the target takes
//! writes. The forward subscription, its slot and publication are removed after that, and
//! the old source subscribes to the target with `copy_data = false`.
//!
//! Never two sides taking writes: `open` refuses unless the source is fenced; `unfence`
//! refuses once the target was opened (its roles no longer carry the fence).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use postgres::Client;
use serde_json::{json, Value};
use shared::pg::tables::{quote_ident, quote_literal};
use shared::pg::ConnInfo;
use shared::{ErrorKind, Status};

use crate::catalog;
use crate::pair::{Pair, PairArgs};
use crate::Interrupt;

/// Arguments of `fence`.
#[derive(clap::Args, Debug, Clone)]
pub struct FenceArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// Longest wait for each proof (sessions to end, the slot to confirm, the sentinel), and
    /// for the lag to come under --max-lag before the fence.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = shared::cli::parse_duration)]
    pub timeout: Duration,
    /// Fence only once every slot's lag is at most this many bytes (what is left to apply is
    /// downtime).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_lag: i64,
}

/// Arguments of `open`.
#[derive(clap::Args, Debug, Clone)]
pub struct OpenArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// No way back: no slot and publication on the target, no subscription on the old
    /// source (`--reverse` then needs a new copy).
    #[arg(long)]
    pub no_reverse: bool,
    /// How the source's server reaches the target for the way back [default: --target with
    /// each database's name].
    #[arg(long, value_name = "CONNINFO")]
    pub target_from_source: Option<String>,
    /// Longest wait for each step.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = shared::cli::parse_duration)]
    pub timeout: Duration,
}

/// Arguments of `unfence`.
#[derive(clap::Args, Debug, Clone)]
pub struct UnfenceArgs {
    #[command(flatten)]
    pub pair: PairArgs,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// NOLOGIN, with the `pgshift.fenced` mark, for every login role of `c`'s server but `spare`,
/// in one transaction. A role that cannot be altered (a managed service's own, or any role
/// when pgshift's own is no superuser: PostgreSQL 15 lets only a superuser set the mark) is
/// left and named in the second list, with the first error in the third.
pub fn fence_roles(
    c: &mut Client,
    spare: &[String],
    run: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>, Option<String>)> {
    let mut tx = c.transaction()?;
    let roles = catalog::login_roles(&mut tx, spare)?;
    let (mut fenced, mut left) = (Vec::new(), Vec::new());
    let mut first_error = None;
    for r in roles {
        let mut sp = tx.savepoint("pgshift_fence")?;
        let sql = format!(
            "{}; {}",
            catalog::alter_role(&r, "NOLOGIN"),
            catalog::alter_role(&r, &format!("SET pgshift.fenced = {}", quote_literal(run)))
        );
        match sp.batch_execute(&sql) {
            Ok(()) => {
                sp.commit()?;
                fenced.push(r);
            }
            Err(e) => {
                sp.rollback()?;
                first_error.get_or_insert_with(|| shared::pg::one_line(&e));
                left.push(r);
            }
        }
    }
    tx.commit().context("committing the fence")?;
    Ok((fenced, left, first_error))
}

/// LOGIN again for every role pgshift fenced on `c`'s server (the mark removed), in one
/// transaction; with `run_prefix`, only those a pair's own steps fenced. Returns them.
pub fn unfence_roles(c: &mut Client, run_prefix: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut tx = c.transaction()?;
    let roles = catalog::fenced_roles(&mut tx, run_prefix)?;
    for r in &roles {
        tx.batch_execute(&format!(
            "{}; {}",
            catalog::alter_role(r, "LOGIN"),
            catalog::alter_role(r, "RESET pgshift.fenced")
        ))?;
    }
    tx.commit().context("committing the unfence")?;
    Ok(roles)
}

/// A client session: pid, role, database, application.
pub type Session = (i32, String, String, String);

/// Client sessions in `dbs` other than `own` pids.
pub fn client_sessions(
    c: &mut Client,
    dbs: &[String],
    own: &[i32],
) -> anyhow::Result<Vec<Session>> {
    Ok(c.query(
        "SELECT pid, coalesce(usename::text, ''), coalesce(datname::text, ''),
                    coalesce(application_name, '')
               FROM pg_stat_activity
              WHERE backend_type = 'client backend' AND datname = ANY($1) AND NOT (pid = ANY($2))",
        &[&dbs, &own],
    )?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect())
}

/// End every client session in `dbs` (but `own`), waiting until each is gone, until a scan
/// finds none; at most until `deadline`. Returns how many were ended, or the sessions still
/// there.
fn end_sessions(
    c: &mut Client,
    dbs: &[String],
    own: &[i32],
    deadline: Instant,
) -> anyhow::Result<Result<usize, Vec<Session>>> {
    let mut ended = 0;
    loop {
        let sessions = client_sessions(c, dbs, own)?;
        if sessions.is_empty() {
            return Ok(Ok(ended));
        }
        if Instant::now() > deadline {
            return Ok(Err(sessions));
        }
        let pids: Vec<i32> = sessions.iter().map(|s| s.0).collect();
        c.execute(
            "SELECT pg_terminate_backend(p) FROM unnest($1::int[]) p",
            &[&pids],
        )?;
        ended += pids.len();
        // pg_terminate_backend only signals: wait for the backends to be gone (a commit under
        // way is then either in the WAL or not made).
        while Instant::now() < deadline {
            let left: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[&pids],
                )?
                .get(0);
            if left == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The role each subscription of this pair logs in to the source as (spared by the fence).
fn subscription_users(p: &mut Pair) -> anyhow::Result<Vec<String>> {
    let mut users = vec![p.source.user.clone()];
    for d in p.dbs.clone() {
        let Ok(c) = p.target.db(&d.name) else {
            continue;
        };
        for r in c.query(
            "SELECT subconninfo FROM pg_subscription WHERE subname = $1",
            &[&d.names.subscription],
        )? {
            let conninfo: String = r.get(0);
            if let Ok(ci) = ConnInfo::parse_with_env(&conninfo, |_| None) {
                let u = ci.user().to_owned();
                if !users.contains(&u) {
                    users.push(u);
                }
            }
        }
    }
    Ok(users)
}

fn proof(p: &mut Pair, name: &str, fields: Value) -> anyhow::Result<()> {
    let mut rec = serde_json::Map::new();
    rec.insert("name".into(), name.into());
    if let Value::Object(m) = fields {
        rec.extend(m);
    }
    rec.entry("ok").or_insert(true.into());
    p.out.emit_as("proof", &Value::Object(rec))
}

/// Microseconds since the epoch: ids for pgshift's own rows.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Make what the subscriber of database `db` applied durable (one synchronous commit on the
/// target flushes its WAL, asynchronous commits of the apply worker included) and have it say
/// so: a row on the source wakes the apply worker, which then reports its flush position (it
/// reports one only when something changes, or at its next one-second nap).
fn nudge(p: &mut Pair, db: &str) -> anyhow::Result<()> {
    flush_target(p, db)?;
    write_sentinel(p, db, now_us(), "nudge")
}

/// One synchronous commit on the target's database `db` (an xid taken, so that it writes a
/// commit record): its WAL is flushed up to there, the apply worker's asynchronous commits
/// included. Returns the WAL position it flushed.
fn flush_target(p: &mut Pair, db: &str) -> anyhow::Result<String> {
    let mut t = p.target.db(db)?.transaction()?;
    t.batch_execute("SET LOCAL synchronous_commit = on")?;
    let lsn: String = t
        .query_one(
            "SELECT pg_current_xact_id()::text, pg_current_wal_insert_lsn()::text",
            &[],
        )?
        .get(1);
    t.commit()?;
    Ok(lsn)
}

/// Write sentinel row `id` (of `run`) in the source's database `db`: replicated like any row.
fn write_sentinel(p: &mut Pair, db: &str, id: i64, run: &str) -> anyhow::Result<()> {
    p.source.db(db)?.execute(
        "INSERT INTO pgshift.sentinel (id, run) VALUES ($1, $2)",
        &[&id, &run],
    )?;
    Ok(())
}

/// Wait until every database's slot confirmed `lsn` and sentinel `id` (written on the
/// source after `lsn`) is on the target. Emits the proofs.
fn wait_confirmed(p: &mut Pair, lsn: &str, id: i64, deadline: Instant) -> anyhow::Result<()> {
    let t0 = Instant::now();
    for d in p.dbs.clone() {
        let mut seen_ms: Option<u64> = None;
        let mut nudged: Option<Instant> = None;
        let confirmed: Option<String>;
        loop {
            let row = p.source.control().query_opt(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn, confirmed_flush_lsn::text, coalesce(wal_status, '')
                   FROM pg_replication_slots WHERE slot_name = $2",
                &[&lsn, &d.names.slot],
            )?;
            let Some(row) = row else {
                return Err(shared::err(
                    ErrorKind::DataErr,
                    format!(
                        "the slot {} of database {} is gone from the source",
                        d.names.slot, d.name
                    ),
                ));
            };
            let wal_status: String = row.get(2);
            if wal_status == "lost" {
                return Err(shared::err(
                    ErrorKind::DataErr,
                    format!("the slot {} was invalidated (max_slot_wal_keep_size): the target cannot catch up; abort and start again", d.names.slot),
                ));
            }
            if row.get::<_, Option<bool>>(0) == Some(true) {
                confirmed = row.get::<_, Option<String>>(1);
                break;
            }
            // Once the sentinel is applied, everything before it is: only the report of its
            // flush is missing.
            if seen_ms.is_none() && sentinel_seen(p, &d.name, id)? {
                seen_ms = Some(t0.elapsed().as_millis() as u64);
            }
            if seen_ms.is_some() && nudged.is_none_or(|t| t.elapsed() >= Duration::from_millis(50))
            {
                nudge(p, &d.name)?;
                nudged = Some(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(shared::err(
                    ErrorKind::Retry,
                    format!(
                        "the target did not confirm {lsn} for database {} in time (its slot is at {}): it is behind or its apply worker fails (see its log)",
                        d.name,
                        row.get::<_, Option<String>>(1).unwrap_or_else(|| "nothing".into())
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        proof(
            p,
            "slot_confirmed",
            json!({"database": d.name, "slot": d.names.slot, "fenced_lsn": lsn,
                   "confirmed_flush_lsn": confirmed, "ms": t0.elapsed().as_millis() as u64}),
        )?;
        while seen_ms.is_none() {
            if sentinel_seen(p, &d.name, id)? {
                seen_ms = Some(t0.elapsed().as_millis() as u64);
                break;
            }
            if Instant::now() > deadline {
                return Err(shared::err(
                    ErrorKind::Retry,
                    format!("the sentinel row {id} written on the source after the fence did not reach the target's database {} in time", d.name),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        proof(
            p,
            "sentinel",
            json!({"database": d.name, "id": id, "ms": seen_ms}),
        )?;
    }
    Ok(())
}

/// The largest lag of the pair's slots, in bytes (a slot missing, or a subscription whose
/// apply worker is not running, counts as unbounded).
fn max_lag(p: &mut Pair) -> anyhow::Result<i64> {
    let mut worst = 0;
    for d in p.dbs.clone() {
        let running: bool = p
            .target
            .db(&d.name)?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_subscription WHERE subname = $1 AND relid IS NULL AND pid IS NOT NULL)",
                &[&d.names.subscription],
            )?
            .get(0);
        if !running {
            return Ok(i64::MAX);
        }
        let lag: Option<i64> = p
            .source
            .control()
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&d.names.slot],
            )?
            .and_then(|r| r.get(0));
        worst = worst.max(lag.unwrap_or(i64::MAX));
    }
    Ok(worst)
}

/// Whether sentinel `id` is on the target in database `db`.
fn sentinel_seen(p: &mut Pair, db: &str, id: i64) -> anyhow::Result<bool> {
    Ok(p.target
        .db(db)?
        .query_opt("SELECT 1 FROM pgshift.sentinel WHERE id = $1", &[&id])?
        .is_some())
}

/// Wait until sentinel `id` is on the target in every database. Emits a `sentinel` proof each.
fn wait_sentinels(p: &mut Pair, id: i64, deadline: Instant) -> anyhow::Result<()> {
    let t0 = Instant::now();
    for d in p.dbs.clone() {
        loop {
            if sentinel_seen(p, &d.name, id)? {
                break;
            }
            if Instant::now() > deadline {
                return Err(shared::err(
                    ErrorKind::Retry,
                    format!("the sentinel row {id} written on the source did not reach the target's database {} in time", d.name),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        proof(
            p,
            "sentinel",
            json!({"database": d.name, "id": id, "ms": t0.elapsed().as_millis() as u64}),
        )?;
    }
    Ok(())
}

/// Proof 7 for every database: the source's schema as setup saw it, and the same tables and
/// columns on both sides.
fn check_schema(p: &mut Pair) -> anyhow::Result<()> {
    for d in p.dbs.clone() {
        let lines = catalog::schema_lines(p.source.db(&d.name)?, false)?;
        let now = catalog::fingerprint(&lines);
        let recorded = p.recorded_fingerprint(&d.name);
        if let Some(r) = &recorded {
            if *r != now {
                return Err(catalog::schema_changed(&d.name, r, &now));
            }
        }
        let a = catalog::shape_of(&lines);
        let b = catalog::schema_lines(p.target.db(&d.name)?, true)?;
        let (only_src, only_tgt) = catalog::schema_diff(&a, &b, 5);
        if !only_src.is_empty() || !only_tgt.is_empty() {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "the tables of database {} differ between the sides (source only: {}; target only: {}): DDL ran on one side since the schema was copied, and DDL is not replicated; run the same DDL on the other side (a new table also needs ALTER PUBLICATION ... ADD TABLE on the source and ALTER SUBSCRIPTION ... REFRESH PUBLICATION on the target), or abort and move again",
                    d.name,
                    if only_src.is_empty() { "none".into() } else { only_src.join("; ") },
                    if only_tgt.is_empty() { "none".into() } else { only_tgt.join("; ") }
                ),
            ));
        }
        proof(
            p,
            "schema_unchanged",
            json!({"database": d.name, "fingerprint": now, "recorded": recorded}),
        )?;
    }
    Ok(())
}

/// Proof 6: every sequence of every database copied exactly.
fn copy_sequences(p: &mut Pair) -> anyhow::Result<()> {
    for d in p.dbs.clone() {
        let src = catalog::sequences(p.source.db(&d.name)?)?;
        let tc = p.target.db(&d.name)?;
        for s in &src {
            tc.batch_execute(&catalog::setval_sql(s))
                .with_context(|| format!("setting {} on the target", s.name))?;
        }
        let tgt = catalog::sequences(tc)?;
        let same = |s: &catalog::Sequence| {
            tgt.iter().any(|t| {
                t.name == s.name && (t.last_value, t.is_called) == (s.last_value, s.is_called)
            })
        };
        let differing: Vec<String> = src
            .iter()
            .filter(|s| !same(s))
            .map(|s| s.name.clone())
            .collect();
        if !differing.is_empty() {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "sequences of database {} differ after the copy: {}",
                    d.name,
                    crate::check::list(&differing)
                ),
            ));
        }
        proof(
            p,
            "sequences",
            json!({"database": d.name, "sequences": src.len(), "equal": true}),
        )?;
    }
    Ok(())
}

/// The journal's last cutover step of this direction (fencing, fenced, unfenced, opening,
/// opened), if any.
fn last_cutover_step(p: &Pair) -> Option<String> {
    p.since_last_end()
        .iter()
        .rev()
        .filter_map(|r| r["step"].as_str())
        .find(|s| {
            matches!(
                *s,
                "fencing" | "fenced" | "unfenced" | "opening" | "opened" | "reverse_subscribed"
            )
        })
        .map(str::to_owned)
}

/// `fence`.
pub fn fence(mut p: Pair, args: &FenceArgs, interrupt: &Interrupt) -> anyhow::Result<Status> {
    let deadline = || Instant::now() + args.timeout;
    // Only a pair that replicates, fully synced, with a fenced target, can be fenced.
    for d in p.dbs.clone() {
        crate::check::require_subscribed(&mut p, &d)?;
        let not_ready: i64 = p
            .target
            .db(&d.name)?
            .query_one(
                "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                  WHERE s.subname = $1 AND r.srsubstate <> 'r'",
                &[&d.names.subscription],
            )?
            .get(0);
        if not_ready > 0 {
            return Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "{not_ready} table(s) of database {} are still being copied: run wait --until caught-up first",
                    d.name
                ),
            ));
        }
    }
    if matches!(
        last_cutover_step(&p).as_deref(),
        Some("opening" | "opened" | "reverse_subscribed")
    ) {
        return Err(shared::err(
            ErrorKind::DataErr,
            "the target was opened already (journal): nothing to fence; move back with --reverse",
        ));
    }
    let target_user = p.target.user.clone();
    let target_logins = catalog::login_roles(p.target.control(), &[target_user])?;
    if !target_logins.is_empty() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the target lets roles log in ({}): it must not take writes before the cutover; run setup again (it fences the target's roles)",
                crate::check::list(&target_logins)
            ),
        ));
    }
    // The schema first: a change refuses before anything is fenced.
    check_schema(&mut p)?;
    // What is left to apply when the fence goes up is downtime: wait for a small lag first.
    let lag_deadline = deadline();
    loop {
        let lag = max_lag(&mut p)?;
        if lag <= args.max_lag {
            break;
        }
        if Instant::now() > lag_deadline || interrupt.name().is_some() {
            return Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "the target is {} behind (more than --max-lag {}) after {} s: nothing was fenced; run wait, or fence in a quieter moment",
                    if lag == i64::MAX {
                        "an unknown amount (a subscription's apply worker is not running)".to_owned()
                    } else {
                        shared::human::bytes(lag as f64)
                    },
                    shared::human::bytes(args.max_lag as f64),
                    args.timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = format!("{}-{}", p.id, now_ms());
    // A fence already up (a run cut short, then this one): the downtime began with it.
    let fenced_at = if matches!(last_cutover_step(&p).as_deref(), Some("fencing" | "fenced")) {
        let recs = p.since_last_end();
        let from = recs
            .iter()
            .rposition(|r| r["step"] == "unfenced")
            .map_or(0, |i| i + 1);
        recs[from..]
            .iter()
            .find(|r| r["step"] == "fencing")
            .and_then(|r| r["fenced_at_ms"].as_u64())
    } else {
        None
    }
    .unwrap_or_else(now_ms);
    let t0 = Instant::now();
    p.note("fencing", json!({"run": run, "fenced_at_ms": fenced_at}))?;
    let spare = subscription_users(&mut p)?;
    let (roles, left, why_left) =
        fence_roles(p.source.control(), &spare, &run).context("fencing the source's roles")?;
    p.out.emit_as(
        "fence",
        &json!({"side": "source", "roles": roles, "not_fenced": left, "spared": spare}),
    )?;
    crate::test_pause("fence:roles");
    // A login role left unfenced can still write: the fence is no fence. Superusers are
    // what a managed service keeps for itself (rdsadmin, azuresu): named, not fatal; an
    // application's role that pgshift's cannot fence is (found by an audit: as a
    // non-superuser on PostgreSQL 15, fence fenced nothing and still proved the fence).
    let writers = catalog::non_superusers(p.source.control(), &left)?;
    if !writers.is_empty() {
        return reopen_source(
            p,
            ErrorKind::DataErr,
            &format!(
                "the role pgshift logs in as on the source cannot fence {} ({}): they could \
                 still log in and write; run the cutover as a superuser on the source",
                crate::check::list(&writers),
                why_left.as_deref().unwrap_or("?")
            ),
        );
    }
    if !left.is_empty() {
        shared::warn!(
            "superuser roles {} cannot be fenced by pgshift's role: nothing may write as them \
             until the target is open",
            crate::check::list(&left)
        );
    }
    let outcome = (|| -> anyhow::Result<Value> {
        let dbs = p.db_names();
        let own = p.source.own_pids()?;
        let ended = match end_sessions(p.source.control(), &dbs, &own, deadline())? {
            Ok(n) => n,
            Err(left) => {
                let who: Vec<String> = left
                    .iter()
                    .map(|s| format!("{} in {} ({})", s.1, s.2, s.3))
                    .collect();
                return Err(shared::err(
                    ErrorKind::Retry,
                    format!(
                        "client sessions keep coming back after the fence: {}; a role pgshift logs in as cannot be fenced: give pgshift a role of its own",
                        crate::check::list(&who)
                    ),
                ));
            }
        };
        // Writers the fence of roles does not stop: subscriptions' apply workers.
        for d in p.db_names() {
            let subs = crate::check::source_subscriptions(p.source.db(&d)?)?;
            if !subs.is_empty() {
                return Err(shared::err(
                    ErrorKind::DataErr,
                    format!(
                        "database {d} on the source has enabled subscription(s) {}: their apply \
                         workers write after the fence; ALTER SUBSCRIPTION ... DISABLE them first",
                        crate::check::list(&subs)
                    ),
                ));
            }
        }
        proof(
            &mut p,
            "source_fenced",
            json!({"roles": roles.len(), "sessions_ended": ended, "ms": t0.elapsed().as_millis() as u64}),
        )?;
        if let Some(sig) = interrupt.name() {
            return Err(shared::err(
                ErrorKind::Retry,
                format!("interrupted by {sig} during the fence"),
            ));
        }
        let x: String = p
            .source
            .control()
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])?
            .get(0);
        proof(&mut p, "fenced_lsn", json!({"lsn": x}))?;
        // The sentinel: after X, through the data. Its commit also flushes the WAL up to X.
        let id = now_us();
        for d in p.dbs.clone() {
            write_sentinel(&mut p, &d.name, id, &run)?;
        }
        wait_confirmed(&mut p, &x, id, deadline())?;
        let own = p.source.own_pids()?;
        let sessions = client_sessions(p.source.control(), &dbs, &own)?;
        let prepared: i64 = p
            .source
            .control()
            .query_one(
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = ANY($1)",
                &[&dbs],
            )?
            .get(0);
        if !sessions.is_empty() || prepared > 0 {
            return Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "{} client session(s) and {prepared} prepared transaction(s) on the source after the fence: its writes cannot be proven complete (COMMIT PREPARED or ROLLBACK PREPARED them first)",
                    sessions.len()
                ),
            ));
        }
        proof(
            &mut p,
            "no_client_sessions",
            json!({"sessions": 0, "prepared_transactions": 0}),
        )?;
        copy_sequences(&mut p)?;
        check_schema(&mut p)?;
        if let Some(sig) = interrupt.name() {
            return Err(shared::err(
                ErrorKind::Retry,
                format!("interrupted by {sig} during the fence"),
            ));
        }
        Ok(json!({"fenced_lsn": x}))
    })();
    match outcome {
        Ok(v) => {
            let x = v["fenced_lsn"].clone();
            let fence_ms = t0.elapsed().as_millis() as u64;
            // Every role under the fence (an earlier, cut-short run's too): open checks them.
            let roles = catalog::fenced_roles(p.source.control(), None)?;
            p.note(
                "fenced",
                json!({"run": run, "fenced_lsn": x, "fenced_at_ms": fenced_at, "roles": roles, "fence_ms": fence_ms}),
            )?;
            p.out.finish(
                &json!({"state": "fenced", "fenced_lsn": x, "fenced_at_ms": fenced_at,
                                 "fence_ms": fence_ms, "roles_fenced": roles.len()}),
            )
        }
        Err(e) => reopen_source(p, shared::exit::classify(&e), &format!("{e:#}")),
    }
}

/// The fence failed before the target was opened: the source takes writes again. If that
/// fails too, exit 126 with what to run.
fn reopen_source(mut p: Pair, kind: ErrorKind, why: &str) -> anyhow::Result<Status> {
    shared::msg::error_line(&format!("the cutover stops: {why}; reopening the source"));
    // Only what this pair fenced: another pair's fence on the same source (its target
    // perhaps open already) stays (found by an audit: two writable primaries).
    let own = p.id.clone();
    match unfence_roles(p.source.control(), Some(&own)) {
        Ok(roles) => {
            p.note("unfenced", json!({"reason": why, "roles": roles}))?;
            p.out.emit_as("fence", &json!({"side": "source", "lifted": roles}))?;
            Err(shared::err(
                kind,
                format!("{why}; the source takes writes again (run the same step again to retry)"),
            ))
        }
        Err(e) => Err(shared::err(
            ErrorKind::Fatal,
            format!(
                "{why}; and reopening the source failed: {e:#}. The source is fenced (its roles NOLOGIN, marked pgshift.fenced) and the target is not open: run `pg-logical unfence` with the same --source and --target once the source answers"
            ),
        )),
    }
}

/// `unfence`: the source takes writes again, unless the target was opened.
pub fn unfence(mut p: Pair, _args: &UnfenceArgs) -> anyhow::Result<Status> {
    let step = last_cutover_step(&p);
    let target_fenced = catalog::fence_marked(p.target.control())?;
    let target_user = p.target.user.clone();
    let target_logins = catalog::login_roles(p.target.control(), &[target_user])?;
    let opened = matches!(step.as_deref(), Some("opened" | "reverse_subscribed"))
        || (!target_fenced && !target_logins.is_empty());
    if opened {
        return Err(shared::err(
            ErrorKind::DataErr,
            "the target was opened (it takes writes): the source stays fenced; to move back, run the move the other way (--reverse)",
        ));
    }
    // An open that was cut short before the target took writes: the forward subscription
    // applies again, the way back's slot and publication go.
    if step.as_deref() == Some("opening") {
        for d in p.dbs.clone() {
            let rev = p.reverse_names(&d.name)?;
            let tc = p.target.db(&d.name)?;
            tc.batch_execute(&format!(
                "ALTER SUBSCRIPTION {} ENABLE",
                quote_ident(&d.names.subscription)
            ))
            .ok();
            drop_slot(tc, &rev.slot)?;
            tc.batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                quote_ident(&rev.publication)
            ))?;
        }
    }
    let own = p.id.clone();
    let roles = unfence_roles(p.source.control(), Some(&own))?;
    p.note("unfenced", json!({"reason": "unfence", "roles": roles}))?;
    p.out
        .emit_as("fence", &json!({"side": "source", "lifted": roles}))?;
    p.out
        .finish(&json!({"state": "replicating", "roles_unfenced": roles.len()}))
}

/// Drop a logical slot of `c`'s server if it is there (waiting a moment for a walsender
/// that still holds it to go).
pub fn drop_slot(c: &mut Client, slot: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        let row = c.query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )?;
        match row {
            None => return Ok(()),
            Some(r) if !r.get::<_, bool>(0) => {
                c.execute("SELECT pg_drop_replication_slot($1)", &[&slot])?;
                return Ok(());
            }
            Some(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    Err(shared::err(
        ErrorKind::Retry,
        format!("the replication slot {slot} is still in use after 5 s; drop it later with SELECT pg_drop_replication_slot('{slot}')"),
    ))
}

/// The conninfo the source's server uses to reach the target's database `db`.
fn target_conninfo(p: &Pair, args: &OpenArgs, db: &str) -> anyhow::Result<String> {
    let base = match &args.target_from_source {
        Some(s) => ConnInfo::parse(s).context("--target-from-source")?,
        None => p.target.info.clone(),
    };
    Ok(crate::setup::conninfo_for_server(&base, db, &p.reverse_id))
}

/// `open`.
pub fn open(mut p: Pair, args: &OpenArgs, interrupt: &Interrupt) -> anyhow::Result<Status> {
    let step = last_cutover_step(&p);
    let last = |p: &Pair, name: &str| {
        p.since_last_end()
            .into_iter()
            .rev()
            .find(|r| r["step"] == name)
            .unwrap_or(Value::Null)
    };
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut already = matches!(step.as_deref(), Some("opened" | "reverse_subscribed"));
    if step.as_deref() == Some("opening") {
        // An open cut short: did the target's roles log in again before it ended? (One
        // transaction: all of them or none.)
        let roles = names(&last(&p, "opening")["target_roles"]);
        let still = catalog::fenced_roles(p.target.control(), None)?;
        if roles.is_empty() || !roles.iter().any(|r| still.contains(r)) {
            p.note(
                "opened",
                json!({"writable_at_ms": null, "downtime_ms": null, "roles": roles, "found": true}),
            )?;
            already = true;
        } else {
            // Not yet: back to the fenced state. The way back's slot goes (it must start after
            // the forward subscription's last change) and the subscription applies again.
            for d in p.dbs.clone() {
                let rev = p.reverse_names(&d.name)?;
                let tc = p.target.db(&d.name)?;
                drop_slot(tc, &rev.slot)?;
                tc.batch_execute(&format!(
                    "ALTER SUBSCRIPTION {} ENABLE",
                    quote_ident(&d.names.subscription)
                ))?;
            }
        }
    }
    if !already {
        if !matches!(step.as_deref(), Some("fenced" | "opening")) {
            return Err(shared::err(
                ErrorKind::DataErr,
                "no fence is on record in the journal (its proofs are what allows open): run fence first; open never lets two sides take writes",
            ));
        }
        // The fence still holds: every role it fenced is still marked.
        // Every role it fenced is still marked, and no role but the spared ones (the
        // subscription's) and superusers can log in to the source: a role given LOGIN again
        // with its mark left in place, or made since, would write beside the target (found
        // by an audit: open went on, and so did the old source's writes).
        let fenced = names(&last(&p, "fenced")["roles"]);
        let marks = catalog::fenced_roles(p.source.control(), None)?;
        let spare = subscription_users(&mut p)?;
        let logins = catalog::login_roles(p.source.control(), &spare)?;
        let logins = catalog::non_superusers(p.source.control(), &logins)?;
        let mut loose: Vec<String> = fenced.into_iter().filter(|r| !marks.contains(r)).collect();
        for r in logins {
            if !loose.contains(&r) {
                loose.push(r);
            }
        }
        if !loose.is_empty() {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "the source's roles {} log in again since the fence: run fence again (open never lets two sides take writes)",
                    crate::check::list(&loose)
                ),
            ));
        }
        let fenced_at = last(&p, "fenced")["fenced_at_ms"].as_u64();
        let deadline = Instant::now() + args.timeout;
        let target_roles = catalog::fenced_roles(p.target.control(), None)?;
        p.note("opening", json!({"target_roles": target_roles}))?;
        // Anything committed since the fence (nothing should be) is applied before the target
        // takes writes: a second sentinel must arrive. (Not a second X confirmed by the slot:
        // reading the tables since wrote WAL of hint bits, which a subscriber confirms only at
        // its next feedback.)
        let id = now_us();
        for d in p.dbs.clone() {
            write_sentinel(&mut p, &d.name, id, "open")?;
        }
        let dbs = p.db_names();
        let own = p.source.own_pids()?;
        let sessions = client_sessions(p.source.control(), &dbs, &own)?;
        if !sessions.is_empty() {
            return Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "{} client session(s) on the fenced source: run fence again",
                    sessions.len()
                ),
            ));
        }
        // The second sentinel on the target: every commit before it was applied (in commit
        // order). Then one synchronous commit there flushes its WAL: what the subscription
        // applied (asynchronously committed) is durable before the target takes writes and
        // the forward subscription goes, without waiting for the subscriber's next feedback.
        wait_sentinels(&mut p, id, deadline)?;
        for d in p.dbs.clone() {
            let flushed = flush_target(&mut p, &d.name)
                .with_context(|| format!("flushing the target's WAL of database {}", d.name))?;
            proof(
                &mut p,
                "target_flushed",
                json!({"database": d.name, "sentinel": id, "flushed_lsn": flushed}),
            )?;
        }
        for d in p.dbs.clone() {
            let tc = p.target.db(&d.name)?;
            tc.batch_execute(&format!(
                "ALTER SUBSCRIPTION {} DISABLE",
                quote_ident(&d.names.subscription)
            ))?;
            // Not waited for: every change of the fenced source was applied (the second
            // sentinel is on the target), so the worker has nothing left to apply that the
            // way back's slot could pick up; an idle worker notices the change only at its next
            // one-second nap.
            if !args.no_reverse {
                let rev = p.reverse_names(&d.name)?;
                let tables = published_tables(p.source.db(&d.name)?, &d.names.publication)?;
                let tc = p.target.db(&d.name)?;
                if tc
                    .query_opt(
                        "SELECT 1 FROM pg_publication WHERE pubname = $1",
                        &[&rev.publication],
                    )?
                    .is_none()
                {
                    tc.batch_execute(&format!(
                        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
                        quote_ident(&rev.publication),
                        tables.join(", ")
                    ))?;
                }
                let lsn: Option<String> = match tc.query_opt(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                    &[&rev.slot],
                )? {
                    Some(r) => r.get(0),
                    None => tc
                        .query_one(
                            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                            &[&rev.slot],
                        )?
                        .get(0),
                };
                p.note(
                    "reverse_slot",
                    json!({"database": d.name, "slot": rev.slot, "lsn": lsn}),
                )?;
            }
        }
        crate::test_pause("open:disabled");
        // The moment the target takes writes.
        let roles =
            unfence_roles(p.target.control(), None).context("letting the target's roles log in")?;
        let writable_at = now_ms();
        let downtime = fenced_at.map(|f| writable_at.saturating_sub(f));
        p.note(
            "opened",
            json!({"writable_at_ms": writable_at, "downtime_ms": downtime, "roles": roles}),
        )?;
        p.out.emit_as(
            "open",
            &json!({"writable_at_ms": writable_at, "fenced_at_ms": fenced_at,
                    "downtime_ms": downtime, "roles": roles, "reverse": !args.no_reverse}),
        )?;
    }
    crate::test_pause("open:unfenced");
    if let Some(sig) = interrupt.name() {
        return Err(shared::err(
            ErrorKind::Retry,
            format!(
                "interrupted by {sig}: the target is open; run open again to finish the way back"
            ),
        ));
    }
    // Outside the downtime: the forward replication goes, the way back starts.
    for d in p.dbs.clone() {
        let tc = p.target.db(&d.name)?;
        catalog::drop_subscription(tc, &d.names.subscription)?;
        drop_slot(p.source.control(), &d.names.slot)?;
        p.source.db(&d.name)?.batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&d.names.publication)
        ))?;
        if !args.no_reverse {
            let rev = p.reverse_names(&d.name)?;
            let conninfo = target_conninfo(&p, args, &d.name)?;
            let sc = p.source.db(&d.name)?;
            if !catalog::subscription_exists(sc, &rev.subscription)? {
                crate::setup::quiet_session(sc);
                sc.batch_execute(&format!(
                    "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = false, create_slot = false, slot_name = {}, enabled = true)",
                    quote_ident(&rev.subscription),
                    quote_literal(&conninfo),
                    quote_ident(&rev.publication),
                    quote_literal(&rev.slot)
                ))
                .with_context(|| format!("subscribing the old source's database {} to the target (the way back)", d.name))?;
            }
            p.note(
                "reverse_subscribed",
                json!({"database": d.name, "subscription": rev.subscription}),
            )?;
        }
    }
    let opened = p
        .since_last_end()
        .iter()
        .rev()
        .find(|r| r["step"] == "opened")
        .cloned()
        .unwrap_or(Value::Null);
    p.out.finish(
        &json!({"state": "open", "writable_at_ms": opened["writable_at_ms"],
                         "downtime_ms": opened["downtime_ms"], "reverse": !args.no_reverse}),
    )
}

/// The tables of a publication, quoted (`"s"."t"`), for the way back's own.
fn published_tables(c: &mut Client, publication: &str) -> anyhow::Result<Vec<String>> {
    // pg_publication_rel lists what was named (roots of partitioned tables, not their leaves).
    Ok(c.query(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_publication_rel r
           JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1 ORDER BY 1",
        &[&publication],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}
