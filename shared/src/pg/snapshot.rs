//! Reading one host at one consistent point: a REPEATABLE READ snapshot, exported once and
//! shared by every worker session, with the WAL position it was taken at.
//!
//! The pattern is `pg_dump --jobs`: one leader session runs `BEGIN ISOLATION LEVEL REPEATABLE
//! READ READ ONLY` and `pg_export_snapshot()`; each worker session begins the same way and
//! runs `SET TRANSACTION SNAPSHOT` with the leader's id, so all of them see exactly the same
//! rows, however long the run takes and whatever commits meanwhile. The leader keeps its
//! transaction open until the workers have joined (PostgreSQL forgets an exported snapshot when
//! the exporting transaction ends).
//!
//! This works on a hot standby too (PostgreSQL 10 and later export and import snapshots during
//! recovery; checked against 15 by this crate's tests). The LSN is read in the statement that
//! takes the snapshot: `pg_current_wal_lsn()` on a primary (every commit the snapshot sees was
//! written at or before it), `pg_last_wal_replay_lsn()` on a standby.
//!
//! [`ReadPool`] is the worker side: `n` sessions on the same server as the leader (a
//! multi-host DSN is pinned to the host the leader reached, since a snapshot only exists on
//! the server that exported it), each running closures in its own thread. Each job runs in a
//! savepoint, so a failing query (a table dropped meanwhile, a permission error) fails that job
//! only and the session's snapshot stays usable for the next one.

use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use anyhow::Context;

use super::{ConnInfo, Endpoint};
use crate::exit::ErrorKind;

/// `BEGIN` for a consistent read-only view of the database.
pub const BEGIN_SQL: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// What the leader's snapshot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The exported snapshot id (`pg_export_snapshot()`), for [`join`].
    pub id: String,
    /// The WAL position the snapshot was taken at (see the module docs), e.g. `0/3000148`.
    pub lsn: String,
    /// True if the server is a hot standby.
    pub in_recovery: bool,
}

/// Begin the leader's transaction on `client` and export its snapshot. The transaction stays
/// open; end it with `COMMIT` when the workers have joined and the work is done.
pub fn export(client: &mut postgres::Client) -> anyhow::Result<SnapshotInfo> {
    client
        .batch_execute(BEGIN_SQL)
        .context("beginning a repeatable-read transaction")?;
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_export_snapshot(), pg_catalog.pg_is_in_recovery(), \
             (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
              ELSE pg_catalog.pg_current_wal_lsn() END)::text",
            &[],
        )
        .context("exporting a snapshot")?;
    Ok(SnapshotInfo {
        id: row.get(0),
        in_recovery: row.get(1),
        lsn: row.get::<_, Option<String>>(2).unwrap_or_default(),
    })
}

/// Begin a transaction on `client` that sees exactly the snapshot `id` exported by a leader on
/// the same server.
pub fn join(client: &mut postgres::Client, id: &str) -> anyhow::Result<()> {
    let quoted = id.replace('\'', "''");
    client
        .batch_execute(&format!("{BEGIN_SQL}; SET TRANSACTION SNAPSHOT '{quoted}'"))
        .with_context(|| format!("importing snapshot {id}"))
}

/// `info` pinned to one host: what a worker uses to reach the server its leader reached.
pub fn pin(info: &ConnInfo, endpoint: &Endpoint) -> ConnInfo {
    let mut c = info.clone();
    c.set("host", endpoint.host.clone())
        .set("port", endpoint.port.to_string())
        .set("hostaddr", endpoint.hostaddr.clone().unwrap_or_default())
        .set("target_session_attrs", "any");
    c
}

type Job = Box<dyn FnOnce(&mut postgres::Client) + Send>;

/// Worker sessions sharing one exported snapshot; see the module docs.
pub struct ReadPool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<thread::JoinHandle<()>>,
}

/// The result of a job submitted to a [`ReadPool`], to wait for.
#[must_use = "wait for the job's result"]
pub struct Pending<T>(mpsc::Receiver<anyhow::Result<T>>);

impl<T> Pending<T> {
    /// Block until the job has run.
    pub fn wait(self) -> anyhow::Result<T> {
        self.0.recv().unwrap_or_else(|_| {
            Err(crate::err(
                ErrorKind::Internal,
                "a worker session stopped before finishing its job",
            ))
        })
    }
}

impl ReadPool {
    /// Open `n` sessions (at least one) on `endpoint`, run `setup` (SQL, may be empty) in
    /// each, then join snapshot `snapshot_id`. Sessions connect in parallel.
    pub fn open(
        info: &ConnInfo,
        endpoint: &Endpoint,
        snapshot_id: &str,
        n: usize,
        setup: &str,
    ) -> anyhow::Result<ReadPool> {
        let pinned = pin(info, endpoint);
        let clients: Vec<anyhow::Result<postgres::Client>> = thread::scope(|s| {
            let handles: Vec<_> = (0..n.max(1))
                .map(|_| {
                    s.spawn(|| {
                        let mut c = pinned.connect()?;
                        if !setup.is_empty() {
                            c.batch_execute(setup)
                                .context("setting up a worker session")?;
                        }
                        join(&mut c, snapshot_id)?;
                        Ok(c)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(crate::err(
                            ErrorKind::Internal,
                            "a worker session panicked while connecting",
                        ))
                    })
                })
                .collect()
        });
        let clients = clients.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = clients
            .into_iter()
            .map(|mut client| {
                let rx = Arc::clone(&rx);
                thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(&mut client),
                        Err(_) => return,
                    }
                })
            })
            .collect();
        Ok(ReadPool {
            jobs: Some(tx),
            workers,
        })
    }

    /// Number of sessions.
    pub fn size(&self) -> usize {
        self.workers.len()
    }

    /// Run `f` on the next free session, inside a savepoint (see the module docs).
    pub fn submit<T, F>(&self, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut postgres::Client) -> anyhow::Result<T> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |client| {
            let _ = tx.send(in_savepoint(client, f));
        });
        if let Some(jobs) = &self.jobs {
            // If every worker is gone the job is dropped, and `wait` reports it.
            let _ = jobs.send(job);
        }
        Pending(rx)
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Run `f` inside `SAVEPOINT`, rolling back to it if `f` fails so that the transaction (and
/// its snapshot) survive the error.
pub fn in_savepoint<T>(
    client: &mut postgres::Client,
    f: impl FnOnce(&mut postgres::Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    client.batch_execute("SAVEPOINT pgshift_job")?;
    match f(client) {
        Ok(v) => {
            client.batch_execute("RELEASE SAVEPOINT pgshift_job")?;
            Ok(v)
        }
        Err(e) => {
            let _ = client
                .batch_execute("ROLLBACK TO SAVEPOINT pgshift_job; RELEASE SAVEPOINT pgshift_job");
            Err(e)
        }
    }
}

/// Fails unless `table` (its SQL name) is still the relation this session's snapshot saw,
/// once it has been read in it (`host` names the server in the message). PostgreSQL reads a
/// table's current file whatever the snapshot: a TRUNCATE or a table-rewriting ALTER TABLE
/// (not MVCC-safe), VACUUM FULL, CLUSTER, or a DROP and CREATE committed after the snapshot
/// was taken and before the first read gives it a new file, which the old snapshot sees
/// empty or partly, so two hosts could hash or count nothing alike and look equal. The
/// snapshot's own `pg_class` row (MVCC) must name the file the server now reads
/// (`pg_relation_filenode`, the current catalog). Once read, every session that read it
/// holds its ACCESS SHARE lock until it ends, so no rewrite can commit after this check.
pub fn same_file(c: &mut postgres::Client, table: &str, host: &str) -> anyhow::Result<()> {
    let same: bool = c
        .query_one(
            "SELECT coalesce((SELECT c.relfilenode = pg_catalog.pg_relation_filenode(c.oid) \
             FROM pg_catalog.pg_class c WHERE c.oid = $1::text::pg_catalog.regclass), false)",
            &[&table],
        )?
        .get(0);
    if same {
        return Ok(());
    }
    Err(crate::err(
        ErrorKind::Retry,
        format!(
            "{table} was rewritten on the {host} after the snapshot was taken (TRUNCATE, VACUUM \
             FULL, CLUSTER, a table-rewriting ALTER TABLE, or dropped and created again), so \
             the rows the snapshot saw could not be read; run again"
        ),
    ))
}
