//! The referee's verdict: were acknowledged writes lost, and did two primaries accept writes?
//!
//! **Lost**: an `ack` whose probe row `(run_id, client_id, seq)` is not on the server checked
//! (the final primary). A correct switchover loses none, whatever the clients saw meanwhile.
//! `unknown` writes may be there or not; both are fine and both are counted.
//!
//! **Split brain** (the definition, also in `shared/PROTOCOL.md`): a write acknowledged by a
//! server X *after* load-gen had already received an acknowledgement from a server Y that
//! supersedes X, where "after" means the write's transaction began after Y's first
//! acknowledgement arrived. Y supersedes X when both have the same system identifier and Y
//! writes on a higher timeline (a promoted standby supersedes its old primary, and a server
//! promoted again later supersedes that one), or, when timelines cannot tell (unrelated
//! clusters as in a logical-replication cutover, the same timeline on two instances after a
//! double promotion, identities unknown), when Y's first acknowledgement came later than X's.
//! All times are load-gen's own clock, so hosts' clocks need not agree; a transaction in
//! flight when Y's first ack arrived is not counted (it may have committed on X first).
//!
//! This counts what clients *witnessed*: if every client stayed on the old primary while a
//! promoted standby sat idle, nothing is witnessed, but then the old primary's acknowledged
//! writes after the fork are missing on the final primary and show up as lost. Either way,
//! `lost == 0 && split_brain == 0` is the pass mark.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;

use anyhow::Context;
use futures_util::{pin_mut, TryStreamExt};
use serde::Serialize;
use serde_json::json;
use shared::{ErrorKind, Output, Status};
use tokio_postgres::types::Type;

use crate::acklog::{self, AckRecord, RunData};
use crate::conn::Target;
use crate::workload::PROBE_TABLE;
use crate::VerifyArgs;

/// A server as the split-brain rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// `server.id`.
    pub id: u32,
    /// System identifier, if known.
    pub system_identifier: Option<&'a str>,
    /// Timeline, if known.
    pub timeline: Option<u32>,
    /// When load-gen received its first acknowledgement (µs since the run started).
    pub first_ack_us: Option<u64>,
}

/// True if `y` is a newer primary than `x` (see the module docs).
pub fn supersedes(y: &Seen<'_>, x: &Seen<'_>) -> bool {
    if y.id == x.id {
        return false;
    }
    match (
        y.system_identifier,
        x.system_identifier,
        y.timeline,
        x.timeline,
    ) {
        (Some(a), Some(b), Some(ty), Some(tx)) if a == b && ty != tx => ty > tx,
        _ => matches!((y.first_ack_us, x.first_ack_us), (Some(fy), Some(fx)) if fy > fx),
    }
}

/// The server that makes a write to `x`, begun at `sent_us`, split brain: one that supersedes
/// `x` and had acknowledged a write before `sent_us`.
pub fn superseded_by<'a>(
    servers: impl IntoIterator<Item = Seen<'a>>,
    x: &Seen<'_>,
    sent_us: u64,
) -> Option<u32> {
    servers
        .into_iter()
        .find(|y| y.first_ack_us.is_some_and(|f| f < sent_us) && supersedes(y, x))
        .map(|y| y.id)
}

/// The split-brain acknowledgements of a run, with the server that superseded each one.
pub fn split_brain(run: &RunData) -> Vec<(AckRecord, u32)> {
    let mut first: std::collections::BTreeMap<u32, u64> = Default::default();
    for a in &run.acks {
        let f = first.entry(a.server).or_insert(a.ack_us);
        *f = (*f).min(a.ack_us);
    }
    let seen: Vec<Seen<'_>> = run
        .servers
        .values()
        .map(|s| Seen {
            id: s.id,
            system_identifier: s.system_identifier.as_deref(),
            timeline: s.timeline,
            first_ack_us: first.get(&s.id).copied(),
        })
        .collect();
    run.acks
        .iter()
        .filter_map(|a| {
            let x = seen.iter().find(|s| s.id == a.server)?;
            superseded_by(seen.iter().copied(), x, a.sent_us).map(|y| (*a, y))
        })
        .collect()
}

/// The result of checking one run on one server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checked {
    /// The run.
    pub run_id: String,
    /// The server checked (`host:port`).
    pub host: String,
    /// Acknowledged writes in the log.
    pub acked: u64,
    /// Of those, found.
    pub present: u64,
    /// Of those, missing.
    pub lost: u64,
    /// Writes with an unknown outcome.
    pub unknown: u64,
    /// Of those, committed after all.
    pub unknown_committed: u64,
    /// Of those, not committed.
    pub unknown_absent: u64,
    /// Rows of the run that the log lists neither as acknowledged nor as unknown (the client
    /// was told the transaction failed, or the log is incomplete).
    pub unexpected: u64,
    /// Acknowledged writes that are split brain (see the module docs).
    pub split_brain: u64,
    /// The log has the run's `end` record.
    pub complete: bool,
}

/// Check one run against the server `client` is connected to, writing a `lost` record per
/// missing write, a `split_brain` record per split-brain write, and a `verified` record.
pub async fn check(
    client: &tokio_postgres::Client,
    host: &str,
    run: &RunData,
    out: &mut Output,
) -> anyhow::Result<Checked> {
    // One unnamed statement in one round trip, not a named prepared one: `verify` may go
    // through a transaction pooler too (see conn::identify).
    let rows = match client
        .query_typed_raw(
            "SELECT client_id, seq FROM load_gen_probe WHERE run_id = $1::text::uuid",
            [(run.run_id.as_str(), Type::TEXT)],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if e.code().map(|c| c.code()) == Some("42P01") => {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!("the probe table {PROBE_TABLE} does not exist on {host}: check that --dsn names the database load-gen wrote to"),
            ))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {PROBE_TABLE} on {host}"))),
    };
    pin_mut!(rows);
    let mut found: HashSet<(u32, u64)> = HashSet::new();
    while let Some(row) = rows
        .try_next()
        .await
        .with_context(|| format!("reading {PROBE_TABLE} on {host}"))?
    {
        let c: i32 = row.get(0);
        let s: i64 = row.get(1);
        found.insert((c as u32, s as u64));
    }

    let mut r = Checked {
        run_id: run.run_id.clone(),
        host: host.to_owned(),
        acked: run.acks.len() as u64,
        unknown: run.unknowns.len() as u64,
        complete: run.complete,
        ..Checked::default()
    };
    let host_of = |id: u32| run.servers.get(&id).map(|s| s.host.clone());
    for a in &run.acks {
        if found.contains(&(a.client, a.seq)) {
            r.present += 1;
        } else {
            r.lost += 1;
            out.emit_as(
                "lost",
                &json!({
                    "run_id": run.run_id, "client": a.client, "seq": a.seq,
                    "server": a.server, "host": host_of(a.server),
                    "sent_us": a.sent_us, "ack_us": a.ack_us,
                }),
            )?;
        }
    }
    for u in &run.unknowns {
        if found.contains(&(u.client, u.seq)) {
            r.unknown_committed += 1;
        } else {
            r.unknown_absent += 1;
        }
    }
    r.unexpected = (found.len() as u64).saturating_sub(r.present + r.unknown_committed);
    for (a, y) in split_brain(run) {
        r.split_brain += 1;
        out.emit_as(
            "split_brain",
            &json!({
                "run_id": run.run_id, "client": a.client, "seq": a.seq,
                "server": a.server, "host": host_of(a.server),
                "superseded_by": y, "superseded_by_host": host_of(y),
                "sent_us": a.sent_us, "ack_us": a.ack_us,
            }),
        )?;
    }
    if r.lost > 0 {
        shared::warn!(
            "{} of the {} acknowledged writes of run {} are missing on {host} (see the lost records)",
            r.lost,
            r.acked,
            r.run_id
        );
    }
    if r.split_brain > 0 {
        shared::warn!(
            "{} acknowledged writes of run {} were accepted by a server after a newer primary had acknowledged one (see the split_brain records)",
            r.split_brain,
            r.run_id
        );
    }
    if !r.complete {
        shared::warn!(
            "the log of run {} has no end record (was load-gen killed?): the acknowledgements of its last moments may be missing",
            r.run_id
        );
    }
    if r.present == 0 && r.acked > 0 {
        shared::warn!(
            "none of the {} acknowledged writes of run {} is on {host}: is --dsn the database load-gen wrote to?",
            r.acked,
            r.run_id
        );
    }
    if r.unexpected > 0 {
        shared::warn!(
            "{} rows of run {} on {host} were neither acknowledged nor unknown to load-gen (reported as failed, or the log is incomplete)",
            r.unexpected,
            r.run_id
        );
    }
    out.emit_as("verified", &r)?;
    Ok(r)
}

/// The verdict's part of a `summary`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyTotals {
    /// The server checked.
    pub verified_on: Option<String>,
    /// Runs checked.
    pub runs: u64,
    /// Acknowledged writes.
    pub acked: u64,
    /// Found.
    pub present: u64,
    /// Missing.
    pub lost: u64,
    /// Unknown outcome.
    pub unknown: u64,
    /// Unknown, committed.
    pub unknown_committed: u64,
    /// Unknown, not committed.
    pub unknown_absent: u64,
    /// Neither acknowledged nor unknown, yet present.
    pub unexpected: u64,
    /// Split-brain writes.
    pub split_brain: u64,
    /// Every log was complete.
    pub complete: bool,
}

impl VerifyTotals {
    /// Add one run's result.
    pub fn add(&mut self, c: &Checked) {
        self.verified_on = Some(c.host.clone());
        self.runs += 1;
        self.acked += c.acked;
        self.present += c.present;
        self.lost += c.lost;
        self.unknown += c.unknown;
        self.unknown_committed += c.unknown_committed;
        self.unknown_absent += c.unknown_absent;
        self.unexpected += c.unexpected;
        self.split_brain += c.split_brain;
        self.complete = if self.runs == 1 {
            c.complete
        } else {
            self.complete && c.complete
        };
    }

    /// True if the verdict is "different" (exit 1).
    pub fn failed(&self) -> bool {
        self.lost > 0 || self.split_brain > 0
    }
}

/// Refuse a standby as the server to verify on: a hot standby may lag behind the primary
/// (writes it has not replayed look lost) or be ahead of a primary that lost writes (they
/// look present), and `--dsn` with several hosts reaches one unless it says
/// `target_session_attrs=read-write` (found by an audit: a paused standby said 0 lost while
/// the primary had lost 6).
pub async fn ensure_primary(client: &tokio_postgres::Client, host: &str) -> anyhow::Result<()> {
    let standby: bool = client
        .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
        .await
        .context("asking the server whether it is a standby")?
        .get(0);
    if !standby {
        return Ok(());
    }
    Err(shared::err(
        ErrorKind::Unavailable,
        format!(
            "{host} is a standby (in recovery): acknowledged writes are checked on the final \
             primary, since a standby may lag behind it or hold writes the primary lost; point \
             --dsn at the primary, or list the hosts with target_session_attrs=read-write"
        ),
    ))
}

/// `load-gen verify --dsn DSN --log FILE`.
pub fn run_verify(args: VerifyArgs) -> anyhow::Result<Status> {
    let runs = if args.log.as_os_str() == "-" {
        acklog::read(std::io::stdin().lock()).context("reading the ack log from stdin")?
    } else {
        let f = File::open(&args.log)
            .with_context(|| format!("opening the ack log {}", args.log.display()))?;
        acklog::read(BufReader::new(f))
            .with_context(|| format!("reading the ack log {}", args.log.display()))?
    };
    let target = Target::parse(&args.dsn, args.connect_timeout)?;
    let mut out = Output::stdout();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let totals = rt.block_on(async {
        let (client, ep) = target
            .connect()
            .await
            .context("connecting to the server to verify")?;
        ensure_primary(&client, &ep.to_string()).await?;
        let mut totals = VerifyTotals::default();
        for run in &runs {
            let c = check(&client, &ep.to_string(), run, &mut out).await?;
            totals.add(&c);
        }
        anyhow::Ok(totals)
    })?;
    if totals.failed() {
        out.mark_differences();
    }
    out.finish(&totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acklog::ServerRecord;

    fn server(id: u32, sys: &str, tli: u32) -> ServerRecord {
        ServerRecord {
            id,
            host: format!("h{id}:5432"),
            system_identifier: Some(sys.into()),
            timeline: Some(tli),
            postmaster_start: Some(format!("start{id}")),
            t_ms: 0,
        }
    }

    fn ack(server: u32, seq: u64, sent_us: u64, ack_us: u64) -> AckRecord {
        AckRecord {
            client: 1,
            seq,
            server,
            sent_us,
            ack_us,
        }
    }

    fn run(servers: Vec<ServerRecord>, acks: Vec<AckRecord>) -> RunData {
        RunData {
            run_id: "r".into(),
            servers: servers.into_iter().map(|s| (s.id, s)).collect(),
            acks,
            unknowns: vec![],
            complete: true,
        }
    }

    #[test]
    fn a_clean_switchover_is_not_split_brain() {
        // Old primary on timeline 1 until t=100, promoted standby on timeline 2 after.
        let r = run(
            vec![server(0, "s", 1), server(1, "s", 2)],
            vec![ack(0, 1, 10, 20), ack(0, 2, 90, 100), ack(1, 3, 300, 310)],
        );
        assert!(split_brain(&r).is_empty());
    }

    #[test]
    fn the_old_primary_acking_after_the_new_one_is_split_brain() {
        let r = run(
            vec![server(0, "s", 1), server(1, "s", 2)],
            vec![
                ack(0, 1, 10, 20),
                ack(1, 2, 300, 310),
                // In flight when the new primary's first ack arrived: not counted.
                ack(0, 3, 305, 320),
                ack(0, 4, 400, 410),
            ],
        );
        let s = split_brain(&r);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0.seq, s[0].1), (4, 1));
    }

    #[test]
    fn the_timeline_decides_even_if_the_old_primary_appears_later() {
        // A stale primary on timeline 1 starts taking writes after the timeline-2 primary.
        let r = run(
            vec![server(0, "s", 2), server(1, "s", 1)],
            vec![ack(0, 1, 10, 20), ack(1, 2, 300, 310), ack(0, 3, 400, 410)],
        );
        let s = split_brain(&r);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0.seq, s[0].1), (2, 0));
    }

    #[test]
    fn unrelated_clusters_are_ordered_by_first_ack() {
        // A logical-replication cutover: after the new cluster acked, the old must not.
        let r = run(
            vec![server(0, "old", 1), server(1, "new", 1)],
            vec![ack(0, 1, 10, 20), ack(1, 2, 300, 310), ack(0, 3, 400, 410)],
        );
        let s = split_brain(&r);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0.seq, 3);
    }
}
