//! One host: the leader session that holds the snapshot, what the catalog says, and the
//! worker sessions that share the snapshot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use shared::pg::snapshot::{self, ReadPool, SnapshotInfo};
use shared::pg::tables::{
    collation_orders, list_tables_and_names, TableFilter, TableInfo, TableName,
};
use shared::pg::{ConnInfo, Endpoint};
use shared::ErrorKind;

use crate::plan::{find_keys, Orders, TableKey};
use crate::records::HostRecord;
use crate::sql::{PROBE_SQL, SESSION_SQL};

/// A connected host.
pub struct Host {
    /// `source`, `target`, or `host` (one-host mode): for messages and records.
    pub label: &'static str,
    /// The option its DSN came from (`--source`, `--target`, `--dsn`).
    pub flag: &'static str,
    pub info: ConnInfo,
    pub endpoint: Endpoint,
    /// Holds the exported snapshot; also runs the rechecks.
    pub leader: postgres::Client,
    pub version: String,
    pub encoding: String,
    pub system_id: Option<String>,
    pub probe: i64,
    /// The database name and the server's start time.
    pub whoami: String,
    pub snap: Option<SnapshotInfo>,
    /// The snapshot as a `pg_snapshot` (`xmin:xmax:xip`), when replay proofs use it.
    pub xids: Option<String>,
    /// With `--wait-replay`, on the target: the source LSN it had replayed before its snapshot.
    pub waited_for: Option<String>,
    pub tables: Vec<TableInfo>,
    pub keys: HashMap<u32, TableKey>,
    /// Every user table's name, before the filter (to tell a filter that selects nothing).
    pub names: Vec<TableName>,
    /// How each collation a column of `tables` uses orders text here (see
    /// [`collation_orders`]).
    pub orders: Orders,
}

/// What worker sessions need from a host (the leader session is not `Sync`).
#[derive(Clone, Copy)]
pub struct PoolSpec<'a> {
    label: &'static str,
    info: &'a ConnInfo,
    endpoint: &'a Endpoint,
    snapshot: &'a str,
}

impl Host {
    /// Connect, pin the session settings and read what the host is. Not in a snapshot yet.
    pub fn connect(label: &'static str, flag: &'static str, dsn: &str) -> anyhow::Result<Host> {
        let info = ConnInfo::parse(dsn).with_context(|| flag.to_owned())?;
        let what = || format!("reading the {label} ({flag} '{}')", info.describe());
        let (mut leader, endpoint) = info.connect_endpoint().with_context(what)?;
        leader.batch_execute(SESSION_SQL).with_context(what)?;
        let row = leader
            .query_one(
                "SELECT current_setting('server_version'), current_setting('server_encoding')",
                &[],
            )
            .with_context(what)?;
        let probe: i64 = leader.query_one(PROBE_SQL, &[]).with_context(what)?.get(0);
        // Which database of which running server this is: two DSNs that reach the same one
        // would compare it with itself.
        let whoami = leader
            .query_one(
                "SELECT current_database() || ' ' || pg_postmaster_start_time()::text",
                &[],
            )
            .with_context(what)?
            .get(0);
        // Needs pg_monitor or superuser on some setups: optional.
        let system_id = leader
            .query_one(
                "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
                &[],
            )
            .ok()
            .map(|r| r.get::<_, String>(0));
        Ok(Host {
            label,
            flag,
            version: row.get(0),
            encoding: row.get(1),
            info,
            endpoint,
            leader,
            system_id,
            probe,
            whoami,
            snap: None,
            xids: None,
            waited_for: None,
            tables: Vec::new(),
            keys: HashMap::new(),
            names: Vec::new(),
            orders: Orders::new(),
        })
    }

    fn what(&self) -> String {
        format!(
            "reading the {} ({} '{}')",
            self.label,
            self.flag,
            self.info.describe()
        )
    }

    /// Take and export the snapshot, then list the tables and their keys inside it.
    pub fn begin(&mut self, filter: &TableFilter) -> anyhow::Result<()> {
        self.begin_with(filter, false).map(drop)
    }

    /// [`Host::begin`]; with `point`, on a primary, also read the snapshot's
    /// [`ReplayPoint`] right after taking it (before the catalog queries).
    pub fn begin_with(
        &mut self,
        filter: &TableFilter,
        point: bool,
    ) -> anyhow::Result<Option<ReplayPoint>> {
        let what = self.what();
        let snap = snapshot::export(&mut self.leader).with_context(|| what.clone())?;
        let in_recovery = snap.in_recovery;
        self.snap = Some(snap);
        let point = if point && !in_recovery {
            Some(self.replay_point()?)
        } else {
            None
        };
        (self.tables, self.names) =
            list_tables_and_names(&mut self.leader, filter).with_context(|| what.clone())?;
        self.keys = find_keys(&mut self.leader, &self.tables).with_context(|| what.clone())?;
        let mut collations: Vec<u32> = self
            .tables
            .iter()
            .flat_map(|t| t.columns.iter().map(|c| c.collation))
            .filter(|c| *c != 0)
            .collect();
        collations.sort_unstable();
        collations.dedup();
        self.orders = collation_orders(&mut self.leader, &collations);
        Ok(point)
    }

    /// The snapshot's LSN.
    pub fn lsn(&self) -> String {
        self.snap
            .as_ref()
            .map(|s| s.lsn.clone())
            .unwrap_or_default()
    }

    /// True if the host is a hot standby.
    pub fn in_recovery(&self) -> bool {
        self.snap.as_ref().is_some_and(|s| s.in_recovery)
    }

    /// The `host` record.
    pub fn record(&self, side: bool) -> HostRecord {
        HostRecord {
            side: side.then(|| self.label.to_owned()),
            dsn: self.info.describe(),
            server_version: self.version.clone(),
            in_recovery: self.in_recovery(),
            lsn: self.lsn(),
            snapshot: self.snap.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
            system_identifier: self.system_id.clone(),
            server_encoding: self.encoding.clone(),
            hash_probe: self.probe,
            xid_snapshot: self.xids.clone(),
            wait_lsn: self.waited_for.clone(),
        }
    }

    /// For [`open_pool`].
    pub fn pool_spec(&self) -> PoolSpec<'_> {
        PoolSpec {
            label: self.label,
            info: &self.info,
            endpoint: &self.endpoint,
            snapshot: self.snap.as_ref().map(|s| s.id.as_str()).unwrap_or(""),
        }
    }

    /// Wait (outside any transaction) until this standby has replayed `lsn`, up to `timeout`.
    pub fn wait_replay(&mut self, lsn: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_replay_until(&mut |_| Ok(lsn.to_owned()), timeout)
    }

    /// Wait (outside any transaction) until this standby has replayed the LSN `goal` returns
    /// (asked again at every poll, with the time waited so far), up to `timeout`.
    pub fn wait_replay_until(
        &mut self,
        goal: &mut dyn FnMut(Duration) -> anyhow::Result<String>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = self.what();
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let lsn = goal(started.elapsed())?;
            let row = self
                .leader
                .query_one(
                    "SELECT pg_catalog.pg_is_in_recovery(), \
                     coalesce(pg_catalog.pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false), \
                     pg_catalog.pg_last_wal_replay_lsn()::text",
                    &[&lsn],
                )
                .with_context(|| what.clone())?;
            let (in_recovery, done): (bool, bool) = (row.get(0), row.get(1));
            if !in_recovery {
                return Err(shared::err(
                    ErrorKind::Usage,
                    format!("--wait-replay: the {} is not a standby (not in recovery), so it will not replay the source's WAL; drop --wait-replay", self.label),
                ));
            }
            if done {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                let at: Option<String> = row.get(2);
                return Err(shared::err(
                    ErrorKind::Retry,
                    format!(
                        "--wait-replay: the {} replayed only up to {} within {:?}, not the source's {lsn}; check replication (pg_stat_wal_receiver on the standby, pg_stat_replication on the source) or raise --timeout",
                        self.label,
                        at.as_deref().unwrap_or("nothing"),
                        timeout
                    ),
                ));
            }
            // Poll often at first: every millisecond waited lets more commits in between the
            // two snapshots.
            std::thread::sleep(pause);
            pause = (pause * 3 / 2).min(Duration::from_millis(20));
        }
    }

    /// End the current snapshot and read from a fresh one (for rechecks): returns its LSN.
    /// When `replay` is given, first wait until this standby has replayed it.
    pub fn renew(&mut self, replay: Option<(&str, Duration)>) -> anyhow::Result<String> {
        self.end()?;
        if let Some((lsn, timeout)) = replay {
            self.wait_replay(lsn, timeout)?;
        }
        self.begin_again()
    }

    /// End the leader's transaction (and with it its snapshot).
    pub fn end(&mut self) -> anyhow::Result<()> {
        let what = self.what();
        self.leader.batch_execute("COMMIT").with_context(|| what)
    }

    /// Begin a new snapshot on the leader (not exported): returns its LSN.
    pub fn begin_again(&mut self) -> anyhow::Result<String> {
        let what = self.what();
        self.leader
            .batch_execute(snapshot::BEGIN_SQL)
            .with_context(|| what.clone())?;
        let lsn: Option<String> = self
            .leader
            .query_one(
                "SELECT (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
                 ELSE pg_catalog.pg_current_wal_lsn() END)::text",
                &[],
            )
            .with_context(|| what.clone())?
            .get(0);
        Ok(lsn.unwrap_or_default())
    }

    /// The leader's snapshot as a `pg_snapshot` (inside its transaction).
    pub fn xid_snapshot(&mut self) -> anyhow::Result<String> {
        let what = self.what();
        Ok(self
            .leader
            .query_one("SELECT pg_catalog.pg_current_snapshot()::text", &[])
            .with_context(|| what)?
            .get(0))
    }

    /// On a primary, inside the leader's snapshot: what a standby must replay to hold
    /// everything the snapshot sees (see [`ReplayPoint`]).
    pub fn replay_point(&mut self) -> anyhow::Result<ReplayPoint> {
        let what = self.what();
        let row = self
            .leader
            .query_one(
                "SELECT pg_catalog.pg_current_snapshot()::text, \
                 pg_catalog.pg_current_wal_insert_lsn()::text, \
                 (SELECT setting::int8 FROM pg_catalog.pg_settings WHERE name = 'wal_writer_delay'), \
                 ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int8",
                &[],
            )
            .with_context(|| what.clone())?;
        let delay: Option<i64> = row.get(2);
        Ok(ReplayPoint {
            xids: row.get(0),
            insert_lsn: row.get(1),
            wal_writer_delay: Duration::from_millis(delay.unwrap_or(200).max(1) as u64),
            timeline: row.get(3),
            at: Instant::now(),
        })
    }

    /// The source's WAL flushed so far.
    pub fn flush_lsn(&mut self) -> anyhow::Result<String> {
        let what = self.what();
        Ok(self
            .leader
            .query_one("SELECT pg_catalog.pg_current_wal_flush_lsn()::text", &[])
            .with_context(|| what)?
            .get(0))
    }

    /// On a standby: the timeline its WAL receiver streams, if it streams and we may see it.
    pub fn received_timeline(&mut self) -> Option<i64> {
        self.leader
            .query_opt(
                "SELECT received_tli::int8 FROM pg_catalog.pg_stat_wal_receiver",
                &[],
            )
            .ok()
            .flatten()
            .and_then(|r| r.get::<_, Option<i64>>(0))
    }
}

/// Where a primary's snapshot stands in its WAL.
///
/// `pg_current_wal_insert_lsn()` read after the snapshot is at or past the end of every
/// commit record the snapshot sees: a transaction becomes visible only after its commit
/// record is inserted. The write LSN is not enough: with `synchronous_commit = off` a commit
/// is visible once inserted, before it is written. The insert LSN itself may stay unflushed
/// (so unsent) for long on an idle primary when the last records are not commits; but an
/// asynchronous commit is flushed within three `wal_writer_delay`s, so after that the flush
/// LSN also covers every commit the snapshot sees ([`ReplayPoint::goal`]).
#[derive(Debug, Clone)]
pub struct ReplayPoint {
    /// `pg_current_snapshot()` of the snapshot.
    pub xids: String,
    pub insert_lsn: String,
    pub wal_writer_delay: Duration,
    /// The primary's timeline.
    pub timeline: i64,
    /// When it was read.
    pub at: Instant,
}

impl ReplayPoint {
    /// How long after the snapshot the flush LSN is known to cover its commits.
    pub fn grace(&self) -> Duration {
        self.wal_writer_delay * 3 + Duration::from_millis(200)
    }
}

/// An LSN (`X/Y`) as a number.
pub fn lsn_value(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Open `n` worker sessions in the host's snapshot.
pub fn open_pool(spec: PoolSpec<'_>, n: usize) -> anyhow::Result<ReadPool> {
    ReadPool::open(spec.info, spec.endpoint, spec.snapshot, n, SESSION_SQL).with_context(|| {
        format!(
            "opening {n} worker sessions on the {} ({})",
            spec.label,
            spec.info.describe()
        )
    })
}
