//! The initial copy, in parallel, from one snapshot: the way pgcopydb and pglogical do it,
//! not the subscription's own table synchronisation.
//!
//! A subscription that copies its tables itself (`copy_data = true`) starts a worker per table,
//! at most `max_sync_workers_per_subscription` at once, each launched by the apply worker's
//! loop (up to a second apart) and each with its own temporary slot and catch-up: seconds per
//! table of overhead, minutes for a schema of a thousand small tables. Here instead:
//!
//! 1. the slot is created on a replication connection (`CREATE_REPLICATION_SLOT ... LOGICAL
//!    pgoutput EXPORT_SNAPSHOT`, through `psql` with `replication=database`), which exports the
//!    snapshot of its consistent point and keeps it while that session waits;
//! 2. `--copy-jobs` sessions on the source join that snapshot (`SET TRANSACTION SNAPSHOT`) and
//!    stream each table's rows with `COPY ... TO STDOUT` straight into `COPY ... FROM STDIN` on
//!    the target, largest tables first, before the indexes and constraints exist (pg_dump's
//!    post-data section is restored afterwards);
//! 3. the subscription is then created on that slot with `copy_data = false`: it streams every
//!    change after the snapshot, so each row is in the copy or in the stream, exactly once.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use shared::pg::ConnInfo;
use shared::{ErrorKind, Output};

use crate::catalog::Table;

/// A logical slot made on a replication connection, with its exported snapshot, kept for as
/// long as this lives (the session that exported it waits).
pub struct SlotSnapshot {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The snapshot to join (`SET TRANSACTION SNAPSHOT`).
    pub snapshot: String,
    /// Where the slot starts: the first change it streams is after it.
    pub consistent_point: String,
}

impl SlotSnapshot {
    /// Create logical slot `slot` (pgoutput) on `info`'s server and database, exporting its
    /// snapshot.
    pub fn create(pg_bin: &Path, info: &ConnInfo, slot: &str) -> anyhow::Result<SlotSnapshot> {
        let (mut cmd, conninfo) = crate::setup::program(pg_bin, "psql", info);
        let mut child = cmd
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("{conninfo} replication=database"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running psql for the replication connection")?;
        let mut stdin = child.stdin.take().expect("piped");
        // The slot name is pgshift's own (lower-case letters, digits, underscores).
        writeln!(
            stdin,
            "CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput EXPORT_SNAPSHOT;"
        )
        .context("writing to psql")?;
        stdin.flush().ok();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading the slot's snapshot")?;
        // slot_name|consistent_point|snapshot_name|output_plugin
        let parts: Vec<&str> = line.trim().split('|').collect();
        if parts.len() < 4 || parts[2].is_empty() {
            drop(stdin);
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err).ok();
            }
            let _ = child.wait();
            return Err(shared::err(
                ErrorKind::Unavailable,
                format!(
                    "creating the replication slot {slot} on the source failed: {}",
                    err.trim().lines().last().unwrap_or(line.trim())
                ),
            ));
        }
        Ok(SlotSnapshot {
            consistent_point: parts[1].to_owned(),
            snapshot: parts[2].to_owned(),
            child,
            stdin: Some(stdin),
        })
    }
}

impl Drop for SlotSnapshot {
    fn drop(&mut self) {
        // End of input: psql ends its session, and the snapshot with it (the slot stays).
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// The columns a COPY carries: every column but the generated ones (the target computes its
/// own), quoted, in order.
fn columns(c: &mut postgres::Client, t: &Table) -> anyhow::Result<String> {
    let rows = c.query(
        "SELECT quote_ident(attname) FROM pg_attribute
          WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
          ORDER BY attnum",
        &[&t.sql()],
    )?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join(", "))
}

/// A reader that counts what passes.
struct Counting<'a, R> {
    inner: R,
    bytes: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Copy `tables` (largest first) from `source` in `snapshot` to `target`, `jobs` at a time.
/// Writes a `copy_progress` record every `interval` and draws a bar on a terminal. Returns the
/// bytes copied (COPY's text).
#[allow(clippy::too_many_arguments)]
pub fn tables(
    source: &ConnInfo,
    target: &ConnInfo,
    snapshot: &str,
    tables: &[Table],
    jobs: usize,
    db: &str,
    out: &mut Output,
    interval: Duration,
) -> anyhow::Result<u64> {
    let mut order: Vec<&Table> = tables.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    let total: u64 = order.iter().map(|t| t.bytes.max(0) as u64).sum();
    let bytes = AtomicU64::new(0);
    let done = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let bar = shared::progress::bytes_bar(total.max(1), "copying");
    let started = Instant::now();
    let jobs = jobs.clamp(1, order.len().max(1));
    // One worker: tables from `next` until none is left or a worker has failed (its error in
    // `failure`, so that the others stop after their current table).
    let work = || -> anyhow::Result<()> {
        let mut src = source
            .connect()
            .context("connecting a copy session to the source")?;
        shared::pg::snapshot::join(&mut src, snapshot).context("joining the slot's snapshot")?;
        let mut tgt = target
            .connect()
            .context("connecting a copy session to the target")?;
        loop {
            if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                return Ok(());
            }
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(t) = order.get(i) else { return Ok(()) };
            let cols = columns(&mut src, t)?;
            // A partitioned table is read with its partitions and written through its
            // root (rows routed); a plain one without tables inheriting from it.
            let from = if t.kind == "p" {
                t.sql()
            } else {
                format!("ONLY {}", t.sql())
            };
            let reader = src
                .copy_out(&format!("COPY (SELECT {cols} FROM {from}) TO STDOUT"))
                .with_context(|| format!("reading {} from the source", t.display()))?;
            let mut writer = tgt
                .copy_in(&format!("COPY {} ({cols}) FROM STDIN", t.sql()))
                .with_context(|| format!("writing {} to the target", t.display()))?;
            let mut counting = Counting {
                inner: reader,
                bytes: &bytes,
            };
            std::io::copy(&mut counting, &mut writer)
                .with_context(|| format!("copying {}", t.display()))?;
            drop(counting);
            writer
                .finish()
                .with_context(|| format!("writing {} to the target", t.display()))?;
            done.fetch_add(1, Ordering::SeqCst);
        }
    };
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..jobs {
            handles.push(s.spawn(|| {
                if let Err(e) = work() {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                }
            }));
        }
        // Progress while the workers copy.
        let mut last = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            let b = bytes.load(Ordering::Relaxed);
            bar.set_position(b.min(total.max(1)));
            bar.set_message(format!(
                "{}/{} tables",
                done.load(Ordering::SeqCst),
                order.len()
            ));
            if last.elapsed() >= interval {
                last = Instant::now();
                progress(out, db, &order, &done, b, total, started)?;
            }
        }
        for h in handles {
            h.join().expect("copy worker");
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let b = bytes.load(Ordering::Relaxed);
    progress(out, db, &order, &done, b, total, started)?;
    Ok(b)
}

fn progress(
    out: &mut Output,
    db: &str,
    order: &[&Table],
    done: &AtomicUsize,
    bytes: u64,
    total: u64,
    started: Instant,
) -> anyhow::Result<()> {
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    };
    let eta = (rate > 0 && total > bytes).then(|| (total - bytes) / rate);
    out.emit_as(
        "copy_progress",
        &json!({"database": db, "tables_ready": done.load(Ordering::SeqCst),
                "tables_total": order.len(), "bytes_done": bytes, "bytes_total": total,
                "bytes_per_s": rate, "eta_s": eta,
                "elapsed_ms": started.elapsed().as_millis() as u64}),
    )
}
