//! Two-host mode: both hosts read in their own exported snapshot, every table checked,
//! differences drilled down to rows, optionally rechecked in fresh snapshots.
//!
//! With `--wait-replay` the source's snapshot is taken first, and the target (a standby of
//! the source) is read only once it has replayed every commit that snapshot sees (the
//! source's insert LSN read right after it: see [`crate::host::ReplayPoint`]), so it holds at
//! least what the source saw. Under concurrent writes the standby holds a little more (what
//! committed meanwhile). When it is a physical standby (same system identifier, streaming the
//! source's timeline) and the source a primary, each such difference is *proven* to come from
//! a transaction the source's snapshot does not see ([`crate::proof`]) and labelled
//! `explained_by: replay`; it is not a difference. `--recheck N` reads each remaining
//! difference again in a new pair of snapshots (again waiting for replay, and proving again)
//! and labels it `transient` when it has gone, else `persistent`; it is what applies to
//! logical replicas and other hosts whose xids mean nothing to each other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use shared::pg::snapshot::{in_savepoint, same_file, ReadPool};
use shared::pg::tables::{quote_ident, TableFilter, TableInfo, TableName};
use shared::{ErrorKind, Output};

use crate::engine::{
    block_bytes, check_table, diff_rows, hash_rows, merge, read_rows, Meter, Opts,
};
use crate::host::{lsn_value, open_pool, Host, ReplayPoint};
use crate::model::{Counts, Outcome, RowDiff};
use crate::par::parallel;
use crate::plan::{plan_two, Plan};
use crate::proof::{explain, Fresh, Leader, Pair, Prover, XidSnapshot};
use crate::records::{key_json, ChunkDiffRecord, RowDiffRecord, TableRecord};
use crate::sql::KeyVal;

/// What two-host mode needs from the command line.
pub struct Args<'a> {
    pub source: &'a str,
    pub target: &'a str,
    pub filter: &'a TableFilter,
    /// Tables from `--from-stdin`, if given.
    pub only: Option<Vec<TableName>>,
    pub whole: TableFilter,
    pub opts: Opts,
    pub wait_replay: bool,
    pub timeout: Duration,
    pub recheck: u32,
    /// Text keys in the key index's order where both hosts share it (`--key-order auto`).
    pub index_order: bool,
}

pub(crate) fn join<T>(h: thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(shared::err(ErrorKind::Internal, "a worker thread panicked")))
}

/// Report the failures of a pair of per-host steps; `None` if either failed.
fn both_ok<A, B>(
    out: &mut Output,
    labels: [&str; 2],
    r: (anyhow::Result<A>, anyhow::Result<B>),
) -> anyhow::Result<Option<(A, B)>> {
    match r {
        (Ok(a), Ok(b)) => Ok(Some((a, b))),
        (a, b) => {
            if let Err(e) = a {
                out.error(&e, json!({ "host": labels[0] }))?;
            }
            if let Err(e) = b {
                out.error(&e, json!({ "host": labels[1] }))?;
            }
            Ok(None)
        }
    }
}

/// Run two-host mode.
pub fn run(args: Args<'_>, out: &mut Output) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let labels = ["source", "target"];
    let hosts = thread::scope(|s| {
        let a = s.spawn(|| Host::connect("source", "--source", args.source));
        let b = s.spawn(|| Host::connect("target", "--target", args.target));
        (join(a), join(b))
    });
    let Some((mut src, mut tgt)) = both_ok(out, labels, hosts)? else {
        return Ok(counts);
    };
    if src.system_id.is_some() && src.system_id == tgt.system_id && src.whoami == tgt.whoami {
        let e = shared::err(ErrorKind::Usage, format!(
            "--source and --target reach the same database ({} on system {}): it would be compared with itself; point --target at the other host",
            src.info.dbname(), src.system_id.as_deref().unwrap_or("?")));
        out.error(&e, json!({}))?;
        return Ok(counts);
    }
    if src.encoding != tgt.encoding {
        let e = shared::err(ErrorKind::DataErr, format!(
            "the server encodings differ (source {}, target {}): the same text has different bytes, so row hashes cannot match; compare hosts with the same encoding (rowcount-diff can still compare counts)",
            src.encoding, tgt.encoding));
        out.error(&e, json!({}))?;
        return Ok(counts);
    }
    if src.probe != tgt.probe {
        let e = shared::err(ErrorKind::DataErr, format!(
            "the hosts hash the same text differently (probe {} vs {}; different CPU byte order?), so their checksums cannot be compared",
            src.probe, tgt.probe));
        out.error(&e, json!({}))?;
        return Ok(counts);
    }
    let mut proof: Option<Pair> = None;
    if args.wait_replay {
        if let (Some(a), Some(b)) = (&src.system_id, &tgt.system_id) {
            if a != b {
                let e = shared::err(ErrorKind::Usage, format!(
                    "--wait-replay: the target is not a standby of the source (system identifiers {a} and {b} differ); drop --wait-replay"));
                out.error(&e, json!({"host": "target"}))?;
                return Ok(counts);
            }
        }
        let point = match src.begin_with(args.filter, true) {
            Ok(p) => p,
            Err(e) => {
                out.error(&e, json!({"host": "source"}))?;
                return Ok(counts);
            }
        };
        match sync_target(&mut src, &mut tgt, point, args.timeout, args.filter) {
            Ok(p) => proof = p,
            Err((host, e)) => {
                out.error(&e, json!({ "host": host }))?;
                return Ok(counts);
            }
        }
    } else {
        let r = thread::scope(|s| {
            let (a, b) = (&mut src, &mut tgt);
            let f = args.filter;
            let ha = s.spawn(move || a.begin(f));
            let hb = s.spawn(move || b.begin(f));
            (join(ha), join(hb))
        });
        if both_ok(out, labels, r)?.is_none() {
            return Ok(counts);
        }
    }
    out.emit(&src.record(true))?;
    out.emit(&tgt.record(true))?;

    let plans = plan_tables(&args, &mut src, &mut tgt, out, &mut counts)?;
    if plans.is_empty() {
        return Ok(counts);
    }
    let jobs = args.opts.jobs;
    let fresh = Fresh::new(&src.info, &src.endpoint);
    let pools = thread::scope(|s| {
        let (a, b) = (src.pool_spec(), tgt.pool_spec());
        let ha = s.spawn(move || open_pool(a, jobs));
        let hb = s.spawn(move || open_pool(b, jobs));
        if proof.is_some() {
            // Connect meanwhile (a failure shows when it is first needed).
            s.spawn(|| fresh.warm());
        }
        (join(ha), join(hb))
    });
    let Some((sp, tp)) = both_ok(out, labels, pools)? else {
        return Ok(counts);
    };
    let standby = src.in_recovery() || tgt.in_recovery();
    let lsns = (src.lsn(), tgt.lsn());
    let prover = proof.as_ref().map(|pair| Prover {
        pair,
        source: &sp,
        target: &tp,
        fresh: &fresh,
    });
    let mut buffered = run_checks(
        &args,
        [&sp, &tp],
        plans,
        prover.as_ref(),
        standby,
        &lsns,
        out,
        &mut counts,
    )?;
    drop((sp, tp));

    if !buffered.is_empty() {
        let wait = args.wait_replay.then_some(args.timeout);
        let prove = proof.is_some().then_some(&fresh);
        let rechecked = match recheck(&mut src, &mut tgt, &mut buffered, args.recheck, wait, prove)
        {
            Ok(()) => true,
            Err(e) => {
                // Report, and the tables as the first pass saw them: unlabelled differences
                // still count, but are not called persistent.
                out.error(&e.context("rechecking differences"), json!({}))?;
                false
            }
        };
        for o in &mut buffered {
            if rechecked {
                for d in o.diffs.iter_mut().filter(|d| d.open()) {
                    d.recheck = Some("persistent");
                }
                for r in o.ranges.iter_mut().filter(|r| r.recheck.is_none()) {
                    r.recheck = Some("persistent");
                }
            }
            emit_outcome(out, o, &lsns, rechecked, &mut counts)?;
        }
    }
    Ok(counts)
}

/// Pair up the tables of both hosts and plan each; tables on one side only, and tables that
/// cannot be planned, are `error` records.
fn plan_tables(
    args: &Args<'_>,
    src: &mut Host,
    tgt: &mut Host,
    out: &mut Output,
    counts: &mut Counts,
) -> anyhow::Result<Vec<Plan>> {
    let mut all: BTreeMap<TableName, [Option<&TableInfo>; 2]> = BTreeMap::new();
    for (side, tables) in [&src.tables, &tgt.tables].into_iter().enumerate() {
        for t in tables {
            all.entry(t.name.clone()).or_default()[side] = Some(t);
        }
    }
    let names: Vec<TableName> = src.names.iter().chain(&tgt.names).cloned().collect();
    if let Err(e) = args.filter.check_selects(&names) {
        out.error(&e, json!({}))?;
        return Ok(Vec::new());
    }
    if names.is_empty() && args.only.is_none() {
        out.note(
            "no_tables",
            "no user tables on either host: nothing to compare",
        )?;
    }
    if let Some(only) = &args.only {
        let wanted: HashSet<&TableName> = only.iter().collect();
        all.retain(|name, _| wanted.contains(name));
        for name in only {
            if args.filter.matches(&name.schema, &name.name) && !all.contains_key(name) {
                counts.tables += 1;
                counts.missing += 1;
                let e = shared::err(ErrorKind::DataErr, format!(
                    "table {name} (from standard input) exists on neither host; check the schema and name"));
                out.error(&e, json!({"schema": name.schema, "name": name.name}))?;
            }
        }
    }
    // The target is a physical standby of the source: the same cluster (system identifier),
    // replaying its WAL (checked by --wait-replay).
    let physical = args.wait_replay && src.system_id.is_some() && src.system_id == tgt.system_id;
    let none = crate::plan::Orders::new();
    let mut plans = Vec::new();
    for (name, sides) in &all {
        counts.tables += 1;
        let about = json!({"schema": name.schema, "name": name.name});
        let (s, t) = match sides {
            [Some(s), Some(t)] => (s, t),
            [s, _] => {
                counts.missing += 1;
                let (has, lacks) = if s.is_some() {
                    ("source", "target")
                } else {
                    ("target", "source")
                };
                let e = shared::err(ErrorKind::NotFound, format!(
                    "table {name} exists on the {has} but not on the {lacks} (create it there, or leave it out with --exclude {name})"));
                out.error(&e, about)?;
                continue;
            }
        };
        let keys = [src.keys.get(&s.oid), tgt.keys.get(&t.oid)];
        let whole = !args.whole.tables.is_empty() && args.whole.matches(&name.schema, &name.name);
        let orders = if args.index_order {
            [&src.orders, &tgt.orders]
        } else {
            [&none, &none]
        };
        let planned = plan_two(name, s, t, keys, orders, whole, physical).and_then(|p| {
            let leaders = [(&mut src.leader, src.label), (&mut tgt.leader, tgt.label)];
            let Some((side, cols)) = null_keys(leaders, [s, t], &p)? else {
                return Ok(p);
            };
            let mut p = plan_two(name, s, t, keys, orders, true, physical)?;
            p.note = Some(format!(
                "key column{} {} hold{} NULL on the {side}: no key range selects such a row, so \
                 the table is hashed whole, without row-level drill-down (make the key NOT \
                 NULL there to get row diffs)",
                if cols.len() == 1 { "" } else { "s" },
                cols.join(", "),
                if cols.len() == 1 { "s" } else { "" },
            ));
            shared::warn!("{name}: {}", p.note.as_deref().unwrap_or_default());
            Ok(p)
        });
        match planned {
            Ok(p) => {
                if let Some(n) = &p.note {
                    if !whole && p.shape.key.is_empty() {
                        shared::warn!("{name}: {n}");
                    }
                }
                plans.push(p);
            }
            Err(e) => out.error(&e, about)?,
        }
    }
    Ok(plans)
}

/// Key columns that may hold NULL on a host (the key came from the other host, whose table
/// has a primary key where this one has none): if a row there has a NULL key, no key range
/// selects it (`k >= lower AND k < upper` is never true for NULL), so chunk drill-down and
/// rechecks would never see it, and a recheck called such a table equal. Looked for in each
/// host's snapshot; returns the side and the columns, if one has such a row.
fn null_keys(
    hosts: [(&mut postgres::Client, &'static str); 2],
    infos: [&TableInfo; 2],
    p: &Plan,
) -> anyhow::Result<Option<(&'static str, Vec<String>)>> {
    if p.shape.key.is_empty() || p.key_from.as_deref() == Some("ctid") {
        return Ok(None);
    }
    for ((leader, label), info) in hosts.into_iter().zip(infos) {
        let nullable: Vec<String> = p
            .shape
            .key
            .iter()
            .filter(|k| info.columns.iter().any(|c| c.name == k.name && !c.not_null))
            .map(|k| k.name.clone())
            .collect();
        if nullable.is_empty() {
            continue;
        }
        let cond: Vec<String> = nullable
            .iter()
            .map(|c| format!("{} IS NULL", quote_ident(c)))
            .collect();
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {})",
            p.shape.table,
            cond.join(" OR ")
        );
        let found: bool = in_savepoint(leader, |c| Ok(c.query_one(&sql, &[])?.get(0)))
            .with_context(|| format!("looking for NULL keys on the {label}"))?;
        if found {
            return Ok(Some((label, nullable)));
        }
    }
    Ok(None)
}

/// Check every planned table, `jobs` at a time; emit equal tables (or every table, without
/// `--recheck`) as they finish, and return the ones to recheck.
#[allow(clippy::too_many_arguments)]
fn run_checks(
    args: &Args<'_>,
    pools: [&ReadPool; 2],
    plans: Vec<Plan>,
    prover: Option<&Prover<'_>>,
    standby: bool,
    lsns: &(String, String),
    out: &mut Output,
    counts: &mut Counts,
) -> anyhow::Result<Vec<Outcome>> {
    let meter = Meter::start(
        plans
            .iter()
            .map(|p| block_bytes(p.blocks[0]) + block_bytes(p.blocks[1]))
            .sum(),
    );
    let mut buffered = Vec::new();
    let opts = args.opts;
    let result = parallel(
        plans.len(),
        opts.jobs,
        |i| {
            let mut o = check_table(pools, plans[i].clone(), &opts, &meter)?;
            if let Some(p) = prover {
                if !o.diffs.is_empty() {
                    o.proof_error = explain(p, &o.plan.shape, &mut o.diffs).err();
                }
            }
            Ok(o)
        },
        |i, r| {
            let name = &plans[i].name;
            let r = r.and_then(|mut o| {
                if let Some(e) = o.proof_error.take() {
                    let e = e.context(format!(
                        "checking which differences of {name} come from replay (they are reported unexplained)"
                    ));
                    out.error(&e, json!({"schema": name.schema, "name": name.name}))?;
                }
                Ok(o)
            });
            match r {
                Ok(o) if args.recheck == 0 || o.data_equal() => {
                    emit_outcome(out, &o, lsns, false, counts)
                }
                Ok(o) => {
                    buffered.push(o);
                    Ok(())
                }
                Err(e) => {
                    let hint = if standby && pg_code(&e) == Some("40001") {
                        "; on a hot standby, set hot_standby_feedback = on or raise max_standby_streaming_delay so that long reads are not cancelled".to_owned()
                    } else if let Some(h) = shared::pg::row_security_hint(&e) {
                        format!("; or {h}")
                    } else {
                        String::new()
                    };
                    let e = e.context(format!(
                        "checking {name} (leave it out with --exclude {name}{hint})"
                    ));
                    out.error(&e, json!({"schema": name.schema, "name": name.name}))
                }
            }
        },
    );
    meter.finish();
    result?;
    Ok(buffered)
}

/// The SQLSTATE of a PostgreSQL error in the chain.
fn pg_code(e: &anyhow::Error) -> Option<&str> {
    e.chain()
        .find_map(|c| c.downcast_ref::<postgres::Error>())
        .and_then(|e| e.code())
        .map(|c| c.code())
}

/// Run `f` on both leaders at once (each inside a savepoint).
fn on_both<T: Send>(
    src: &mut Host,
    tgt: &mut Host,
    f: impl Fn(&mut postgres::Client) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<(T, T)> {
    let (a, b) = thread::scope(|s| {
        let f = &f;
        let (ca, cb) = (&mut src.leader, &mut tgt.leader);
        let ha = s.spawn(move || in_savepoint(ca, f));
        let hb = s.spawn(move || in_savepoint(cb, f));
        (join(ha), join(hb))
    });
    Ok((
        a.context("rechecking on the source")?,
        b.context("rechecking on the target")?,
    ))
}

/// Read every unresolved difference again, up to `rounds` times, each time in a new pair of
/// snapshots (the target's taken after it replayed the source's when `wait` is given). With
/// `prove` (a physical standby), what still differs is checked for an explanation by replay
/// in the new pair, and its kind is updated to what the new pair shows.
fn recheck(
    src: &mut Host,
    tgt: &mut Host,
    outs: &mut [Outcome],
    rounds: u32,
    wait: Option<Duration>,
    prove: Option<&Fresh>,
) -> anyhow::Result<()> {
    for _ in 0..rounds {
        let open = |o: &Outcome| {
            o.diffs.iter().any(RowDiff::open) || o.ranges.iter().any(|r| r.recheck.is_none())
        };
        if !outs.iter().any(open) {
            break;
        }
        let (sl, tl, pair) = renew_both(src, tgt, wait, prove.is_some())?;
        for o in outs.iter_mut() {
            let shape = o.plan.shape.clone();
            let width = shape.key.len();
            let keys: Vec<KeyVal> = o
                .diffs
                .iter()
                .filter(|d| d.open())
                .map(|d| d.key.clone())
                .collect();
            for batch in keys.chunks(500) {
                let sql = shape.rows_query(&shape.keys_pred(batch));
                let (a, b) = on_both(src, tgt, |c| read_rows(c, &sql, width))?;
                let mut now = diff_rows(&a, &b);
                if let (Some(pair), Some(fresh)) = (&pair, prove) {
                    let (rs, rt) = (
                        Leader(Mutex::new(&mut src.leader)),
                        Leader(Mutex::new(&mut tgt.leader)),
                    );
                    let p = Prover {
                        pair,
                        source: &rs,
                        target: &rt,
                        fresh,
                    };
                    explain(&p, &shape, &mut now)?;
                }
                let still: HashMap<KeyVal, RowDiff> =
                    now.into_iter().map(|d| (d.key.clone(), d)).collect();
                let batch: HashSet<&KeyVal> = batch.iter().collect();
                for d in o.diffs.iter_mut().filter(|d| batch.contains(&d.key)) {
                    match still.get(&d.key) {
                        Some(n) => {
                            d.lsns = Some((sl.clone(), tl.clone()));
                            if n.kind != d.kind {
                                d.kind = n.kind;
                                d.columns.clear();
                            }
                            d.explained = n.explained;
                        }
                        None => d.recheck = Some("transient"),
                    }
                }
            }
            for r in o.ranges.iter_mut().filter(|r| r.recheck.is_none()) {
                let sql = shape.hash_query(&[], &shape.range_pred(&r.range));
                let (a, b) = on_both(src, tgt, |c| hash_rows(c, &sql))?;
                if merge(1, vec![a]) == merge(1, vec![b]) {
                    r.recheck = Some("transient");
                }
            }
            // What was read in the new pair is the table both snapshots saw.
            let hosts = [src.label, tgt.label];
            thread::scope(|s| {
                let (ca, cb) = (&mut src.leader, &mut tgt.leader);
                let table = &shape.table;
                let ha = s.spawn(move || same_file(ca, table, hosts[0]));
                let hb = s.spawn(move || same_file(cb, table, hosts[1]));
                join(ha).and(join(hb))
            })?;
        }
    }
    Ok(())
}

/// A new pair of snapshots for a recheck: their LSNs, and with `prove` the pair to prove
/// differences against.
fn renew_both(
    src: &mut Host,
    tgt: &mut Host,
    wait: Option<Duration>,
    prove: bool,
) -> anyhow::Result<(String, String, Option<Pair>)> {
    let sl = src.renew(None)?;
    let Some(timeout) = wait else {
        let tl = tgt.renew(None)?;
        return Ok((sl, tl, None));
    };
    if src.in_recovery() {
        let tl = tgt.renew(Some((&sl, timeout)))?;
        return Ok((sl, tl, None));
    }
    let point = src.replay_point()?;
    tgt.end()?;
    wait_for_point(src, tgt, &point, timeout).map_err(|(_, e)| e)?;
    let tl = tgt.begin_again()?;
    if !prove {
        return Ok((sl, tl, None));
    }
    let pair = Pair {
        source: XidSnapshot::parse(&point.xids)?,
        target: XidSnapshot::parse(&tgt.xid_snapshot()?)?,
    };
    Ok((sl, tl, Some(pair)))
}

/// With `--wait-replay`, after the source's snapshot (with its replay `point` when the source
/// is a primary): wait until the target has replayed everything the source's snapshot sees, then take the target's snapshot (listing the
/// tables `filter` selects). Returns the pair of snapshots to prove differences against when the target
/// is a physical standby of the source (see [`crate::proof`]); errors come with the host
/// they are about.
fn sync_target(
    src: &mut Host,
    tgt: &mut Host,
    point: Option<ReplayPoint>,
    timeout: Duration,
    filter: &TableFilter,
) -> Result<Option<Pair>, (&'static str, anyhow::Error)> {
    let Some(point) = point else {
        // A standby as the source: its replay LSN is what it sees. Its `pg_current_snapshot()`
        // does not list running xids, so nothing is proven.
        let lsn = src.lsn();
        tgt.wait_replay(&lsn, timeout).map_err(|e| ("target", e))?;
        tgt.waited_for = Some(lsn);
        tgt.begin(filter).map_err(|e| ("target", e))?;
        return Ok(None);
    };
    let goal = wait_for_point(src, tgt, &point, timeout)?;
    tgt.waited_for = Some(goal);
    tgt.begin(filter).map_err(|e| ("target", e))?;

    let physical = src.system_id.is_some() && src.system_id == tgt.system_id;
    if !physical {
        shared::note!("the system identifiers of the hosts could not be read (pg_control_system() needs pg_monitor or superuser): differences cannot be proven to come from replay; --recheck still applies");
        return Ok(None);
    }
    if let Some(tli) = tgt.received_timeline() {
        if tli != point.timeline {
            shared::warn!("the target streams timeline {tli} but the source writes timeline {}: it may not be replaying the source's WAL, so differences are not explained by replay", point.timeline);
            return Ok(None);
        }
    }
    let t = tgt.xid_snapshot().map_err(|e| ("target", e))?;
    let pair = Pair {
        source: XidSnapshot::parse(&point.xids).map_err(|e| ("source", e))?,
        target: XidSnapshot::parse(&t).map_err(|e| ("target", e))?,
    };
    src.xids = Some(point.xids.clone());
    tgt.xids = Some(t);
    Ok(Some(pair))
}

/// Wait until the target has replayed `point`'s insert LSN, or, once the source's flush LSN
/// is known to cover every commit the snapshot sees (see [`crate::host::ReplayPoint`]), its
/// flush LSN if that is lower. Returns the LSN waited for.
fn wait_for_point(
    src: &mut Host,
    tgt: &mut Host,
    point: &ReplayPoint,
    timeout: Duration,
) -> Result<String, (&'static str, anyhow::Error)> {
    let mut goal = point.insert_lsn.clone();
    let mut lowered = false;
    let mut src_err = None;
    let r = tgt.wait_replay_until(
        &mut |_| {
            if !lowered && point.at.elapsed() >= point.grace() {
                lowered = true;
                match src.flush_lsn() {
                    Ok(f) if lsn_value(&f) < lsn_value(&goal) => goal = f,
                    Ok(_) => {}
                    Err(e) => {
                        src_err = Some(e);
                        return Err(shared::err(ErrorKind::Internal, "source failed"));
                    }
                }
            }
            Ok(goal.clone())
        },
        timeout,
    );
    if let Some(e) = src_err {
        return Err(("source", e));
    }
    r.map_err(|e| ("target", e))?;
    Ok(goal)
}

/// Write a table's `chunk`, `row_diff` and `table` records.
fn emit_outcome(
    out: &mut Output,
    o: &Outcome,
    lsns: &(String, String),
    rechecked: bool,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let name = &o.plan.name;
    let keys = o.plan.key_names();
    let bound = |b: &Option<KeyVal>| {
        b.as_ref()
            .map_or(serde_json::Value::Null, |v| key_json(&keys, v))
    };
    let differing = o.different_chunks();
    let mut explained_chunks = 0;
    for &i in &differing {
        let r = o.chunk_range(i);
        let explained = o.chunk_explained(i);
        explained_chunks += u64::from(explained);
        let (s, t) = (o.chunks[0][i], o.chunks[1][i]);
        out.emit(&ChunkDiffRecord {
            schema: name.schema.clone(),
            name: name.name.clone(),
            index: i,
            lower: bound(&r.lower),
            upper: bound(&r.upper),
            source_rows: s.rows,
            target_rows: t.rows,
            source_hash: s.hex(),
            target_hash: t.hex(),
            explained,
            source_lsn: lsns.0.clone(),
            target_lsn: lsns.1.clone(),
        })?;
    }
    let (mut transient, mut explained) = (0, 0);
    for d in &o.diffs {
        if d.recheck == Some("transient") {
            transient += 1;
        }
        if d.explained.is_some() {
            explained += 1;
        }
        let (sl, tl) = d.lsns.clone().unwrap_or_else(|| lsns.clone());
        out.emit(&RowDiffRecord {
            schema: name.schema.clone(),
            name: name.name.clone(),
            key: key_json(&keys, &d.key),
            kind: d.kind.as_str(),
            columns: d.columns.clone(),
            values: d
                .columns
                .iter()
                .zip(&d.values)
                .map(|(c, (s, t))| (c.clone(), serde_json::json!({"source": s, "target": t})))
                .collect(),
            recheck: d.recheck,
            explained_by: d.explained.map(|_| "replay"),
            xid: d.explained.map(|x| x.to_string()),
            source_lsn: sl,
            target_lsn: tl,
        })?;
    }
    let totals = o.totals();
    let because = o.equal_because().map_err(|defect| {
        shared::err(
            ErrorKind::Internal,
            format!("{name}: refusing to call the table equal: {defect} (a bug in pg-checksum; please report it)"),
        )
    })?;
    let data_equal = because.is_some();
    let equal = data_equal
        && o.plan.only_on_source.is_empty()
        && o.plan.only_on_target.is_empty()
        && o.plan.type_diffs.is_empty();
    let first_pass_differed = !(o.diffs.is_empty() && o.ranges.is_empty());
    counts.chunks += o.chunks[0].len() as u64;
    counts.different_chunks += differing.len() as u64;
    counts.row_diffs += o.diffs.len() as u64;
    counts.transient_row_diffs += transient as u64;
    counts.explained_row_diffs += explained as u64;
    counts.explained_chunks += explained_chunks;
    counts.source_rows += totals[0].rows;
    counts.target_rows += totals[1].rows;
    if equal {
        counts.equal += 1;
    } else {
        counts.different += 1;
        out.mark_differences();
    }
    if o.truncated && !data_equal {
        shared::warn!(
            "{name}: drill-down stopped at --max-row-diffs with differing ranges left unresolved, so the table cannot be proven equal{}; raise --max-row-diffs",
            if explained > 0 { " (whatever the explained differences found so far)" } else { "" }
        );
    }
    out.emit(&TableRecord {
        schema: name.schema.clone(),
        name: name.name.clone(),
        equal,
        source_rows: totals[0].rows,
        target_rows: totals[1].rows,
        source_hash: totals[0].hex(),
        target_hash: totals[1].hex(),
        key: (!keys.is_empty()).then_some(keys.clone()),
        chunked: !keys.is_empty(),
        chunks: o.chunks[0].len(),
        different_chunks: differing.len(),
        row_diffs: o.diffs.len(),
        transient_row_diffs: transient,
        explained_row_diffs: explained,
        truncated: o.truncated,
        recheck: (rechecked && first_pass_differed).then_some(if data_equal {
            "transient"
        } else {
            "persistent"
        }),
        columns_only_on_source: o.plan.only_on_source.clone(),
        columns_only_on_target: o.plan.only_on_target.clone(),
        column_type_diffs: o.plan.type_diffs.clone(),
        note: o.plan.note.clone(),
        key_order: o.plan.key_order.clone(),
        equal_because: if equal { because } else { None },
        source_lsn: lsns.0.clone(),
        target_lsn: lsns.1.clone(),
        elapsed_ms: o.elapsed.as_millis() as u64,
    })
}
