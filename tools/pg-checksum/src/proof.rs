//! Proving that a difference between a primary and its physical standby comes from replay.
//!
//! With `--wait-replay` against a physical standby of the source (same system identifier,
//! target in recovery, source a primary), the source's snapshot S is taken first, the standby
//! is read in a snapshot T taken once it has replayed every commit S sees, and the standby may
//! then hold a little more than S: whatever committed after S. Those rows are not "different";
//! rechecks cannot make them go away for rows every transaction updates (a pgbench branch row
//! differs again in every fresh pair of snapshots). They can instead be *proven* to be newer
//! than S, because a physical standby's heap tuples are the primary's, byte for byte,
//! including the system columns `xmin` (the inserting transaction) and `xmax` (the deleting or
//! locking one). So a differing row is **explained by replay** when:
//!
//! - `changed` or `extra_on_target`: the xid that created the target's row version (its
//!   `xmin`) is not visible in S: it is at or above S's xmax or in S's in-progress list. The
//!   version came after S, so S cannot hold it ([`created_after`]).
//! - `missing_on_target`: the source's row version (visible in S) is deleted: a fresh
//!   statement on the source, taken after T, no longer sees it (the server decides, so a row
//!   that is merely locked, whose `xmax` is a locker, is still seen and stays unexplained);
//!   its final `xmax` is then the deleter's xid (checked not to be a multixact id); and that
//!   xid is below T's xmin, so it had finished, committed, before T was taken, and T sees the
//!   delete ([`deleted_after`]).
//!
//! Corroboration on the source: every such xid must be committed there
//! (`pg_xact_status`), which also refuses an xid the source has not even assigned.
//!
//! Anything else is a real divergence as far as this run can tell: a target version created
//! by a transaction S sees (the standby holds an *older* version, or a row S knows was
//! deleted), a source row still live after T, a delete that may not have been replayed. Those
//! stay `persistent` (or go to `--recheck`).
//!
//! # Xids
//!
//! Row headers hold 32-bit xids; snapshots (`pg_current_snapshot()`, a `pg_snapshot`) hold
//! 64-bit ones. A 32-bit xid is widened relative to S's xmax ([`XidSnapshot::full`]): every
//! xid that can appear in a live row version is within 2^31 of it (wraparound protection), so
//! the nearest 64-bit value with the same low 32 bits is the right one. The special xids 0-2
//! (invalid, bootstrap, frozen) are older than every snapshot and never explain anything. On a
//! standby `pg_current_snapshot()` has an empty in-progress list (a standby keeps its running
//! xids elsewhere), so only its xmin and xmax are used, and conservatively.
//!
//! # What it cannot see
//!
//! - A row inserted in a subtransaction that was still running at S is judged visible to S
//!   (the in-progress list holds top-level xids only), so it stays unexplained: the safe side.
//! - A row version created after S is taken as the standby has it: if the standby corrupted
//!   exactly such a row, this run calls it explained (the next run, or a quiet moment, compares
//!   it).
//! - A frozen row version whose raw `xmin` happens to equal, modulo 2^32, an xid assigned
//!   between S and T, on a cluster that has wrapped around.
//! - A "standby" that replays another primary's WAL with the same system identifier and
//!   timeline (two standbys of one primary both promoted): the timeline is compared when the
//!   standby streams, the xids are checked to be committed on the source, but a fork with a
//!   busier source can still look explained.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use anyhow::Context;
use shared::pg::snapshot::{in_savepoint, pin, ReadPool};
use shared::pg::{ConnInfo, Endpoint};
use shared::ErrorKind;

use crate::model::{Kind, RowDiff};
use crate::sql::{KeyVal, Shape, SESSION_SQL};

/// A `pg_snapshot` (`xmin:xmax:xip,...`), with 64-bit xids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidSnapshot {
    /// Every xid below it had finished when the snapshot was taken.
    pub xmin: u64,
    /// Every xid from it on had not finished (or not started).
    pub xmax: u64,
    /// Top-level xids in progress (empty on a standby).
    pub xip: Vec<u64>,
}

impl XidSnapshot {
    /// Parse `pg_current_snapshot()::text`.
    pub fn parse(s: &str) -> anyhow::Result<XidSnapshot> {
        let bad = || {
            shared::err(
                ErrorKind::Internal,
                format!("unexpected pg_snapshot text from the server: {s:?}"),
            )
        };
        let mut parts = s.trim().splitn(3, ':');
        let num = |p: Option<&str>| -> anyhow::Result<u64> {
            p.and_then(|v| v.parse().ok()).ok_or_else(bad)
        };
        let xmin = num(parts.next())?;
        let xmax = num(parts.next())?;
        let xip = match parts.next() {
            None | Some("") => Vec::new(),
            Some(l) => l
                .split(',')
                .map(|v| v.parse().map_err(|_| bad()))
                .collect::<anyhow::Result<Vec<u64>>>()?,
        };
        if xmin > xmax || xip.iter().any(|&x| x < xmin || x >= xmax) {
            return Err(bad());
        }
        Ok(XidSnapshot { xmin, xmax, xip })
    }

    /// The 64-bit xid of a 32-bit one from a row header, as seen from this snapshot; `None`
    /// for the special xids 0-2 (and anything that would fall before the first epoch).
    pub fn full(&self, xid: u32) -> Option<u64> {
        if xid < 3 {
            return None;
        }
        let diff = xid.wrapping_sub(self.xmax as u32) as i32 as i64;
        let f = self.xmax as i64 + diff;
        (f >= 3).then_some(f as u64)
    }

    /// True if the snapshot sees (counts as committed before it) this xid, assuming it
    /// committed; `pg_visible_in_snapshot`.
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.xip.contains(&xid))
    }
}

/// The two snapshots a proof relates: the source's (S) and the target's (T, a standby's: its
/// in-progress list is not used).
#[derive(Debug, Clone)]
pub struct Pair {
    pub source: XidSnapshot,
    pub target: XidSnapshot,
}

/// The xid that created the target's row version explains a `changed` or `extra_on_target`
/// row if the source's snapshot does not see it (and the target's, which does see the
/// version, could: below its xmax). Returns the 64-bit xid.
pub fn created_after(pair: &Pair, xmin: u32) -> Option<u64> {
    let x = pair.source.full(xmin)?;
    (!pair.source.sees(x) && x < pair.target.xmax).then_some(x)
}

/// A `missing_on_target` row is explained if the source's row version, no longer `live` in a
/// fresh statement after T, has as its final `xmax` a plain xid (`multi == Some(false)`: not
/// a multixact id) that the source's snapshot does not see and that had finished before T was
/// taken (below T's xmin). Returns the 64-bit xid.
pub fn deleted_after(pair: &Pair, live: bool, xmax: u32, multi: Option<bool>) -> Option<u64> {
    if live || multi != Some(false) {
        return None;
    }
    let d = pair.source.full(xmax)?;
    (!pair.source.sees(d) && d < pair.target.xmin).then_some(d)
}

/// Run a query whose columns are all text, in some snapshot: a worker pool's, or a leader's.
pub trait Reader: Sync {
    fn rows(&self, sql: String) -> anyhow::Result<Vec<Vec<Option<String>>>>;
}

fn text_rows(c: &mut postgres::Client, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    Ok(c.query(sql, &[])?
        .iter()
        .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
        .collect())
}

impl Reader for ReadPool {
    fn rows(&self, sql: String) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        self.submit(move |c| text_rows(c, &sql)).wait()
    }
}

/// A leader session (in its snapshot) as a [`Reader`]; each query in a savepoint.
pub struct Leader<'a>(pub Mutex<&'a mut postgres::Client>);

impl Reader for Leader<'_> {
    fn rows(&self, sql: String) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        let mut c = self
            .0
            .lock()
            .map_err(|_| shared::err(ErrorKind::Internal, "a leader session lock was poisoned"))?;
        in_savepoint(&mut c, |c| text_rows(c, &sql))
    }
}

/// A session on the source outside any snapshot (each statement sees the latest commits),
/// opened when first needed, on the server the source's leader reached.
pub struct Fresh {
    info: ConnInfo,
    client: Mutex<Option<postgres::Client>>,
}

impl Fresh {
    pub fn new(info: &ConnInfo, endpoint: &Endpoint) -> Fresh {
        Fresh {
            info: pin(info, endpoint),
            client: Mutex::new(None),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut g = self
            .client
            .lock()
            .map_err(|_| shared::err(ErrorKind::Internal, "the fresh session lock was poisoned"))?;
        if g.is_none() {
            let mut c = self.info.connect().with_context(|| {
                format!(
                    "opening a session on the source ({}) to check deleted rows",
                    self.info.describe()
                )
            })?;
            c.batch_execute(SESSION_SQL)?;
            // is_multi tells a plain xid from a multixact id by the server's message (both
            // are XX000): untranslated, whatever the server's lc_messages. Only a superuser
            // may set it; for another role under translated messages such a delete stays
            // unexplained (a difference, never a false equal).
            let _ = c.batch_execute("SET lc_messages TO 'C'");
            *g = Some(c);
        }
        let c = g.as_mut().expect("just opened");
        f(c)
    }

    /// Connect now rather than when first needed; a failure is reported then.
    pub fn warm(&self) {
        let _ = self.with(|_| Ok(()));
    }

    /// Of these `(ctid, xmin)` row versions, the ones a statement now still sees.
    fn live(
        &self,
        table: &str,
        versions: &[(String, String)],
    ) -> anyhow::Result<HashSet<(String, String)>> {
        let sql = format!(
            "SELECT ctid::text, xmin::text FROM ONLY {table} WHERE ctid = ANY($1::text::tid[])"
        );
        let arr = tid_array(versions.iter().map(|v| v.0.as_str()));
        self.with(|c| {
            Ok(c.query(&sql, &[&arr])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    /// Whether a raw `xmax` value is an existing multixact id: `Some(false)` when the server
    /// says no such multixact exists (so the value is a plain xid), `None` if it cannot tell.
    fn is_multi(&self, xmax: u32) -> Option<bool> {
        self.with(|c| {
            match c.query(
                "SELECT count(*) FROM pg_catalog.pg_get_multixact_members($1::text::xid)",
                &[&xmax.to_string()],
            ) {
                Ok(_) => Ok(Some(true)),
                Err(e) => {
                    let m = e.as_db_error().map(|d| d.message()).unwrap_or("");
                    Ok((m.contains("has not been created yet")
                        || m.contains("does no longer exist"))
                    .then_some(false))
                }
            }
        })
        .ok()
        .flatten()
    }

    /// Of these 64-bit xids, the ones the source says are committed (an xid it has not
    /// assigned yet is not).
    fn committed(&self, xids: &[u64]) -> anyhow::Result<HashSet<u64>> {
        if xids.is_empty() {
            return Ok(HashSet::new());
        }
        let arr = format!(
            "{{{}}}",
            xids.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        self.with(|c| {
            Ok(c.query(
                // CASE, not AND: pg_xact_status() fails on an xid not assigned yet, so it
                // must only see the others.
                "SELECT x::text FROM unnest($1::text::xid8[]) AS x \
                 WHERE CASE WHEN x < pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()) \
                       THEN pg_catalog.pg_xact_status(x) = 'committed' END",
                &[&arr],
            )?
            .iter()
            .filter_map(|r| r.get::<_, String>(0).parse().ok())
            .collect())
        })
    }
}

/// A `tid[]` literal.
fn tid_array<'a>(tids: impl Iterator<Item = &'a str>) -> String {
    format!(
        "{{{}}}",
        tids.map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Everything a proof needs: the snapshot pair, readers in those snapshots, the source's
/// fresh session.
pub struct Prover<'a> {
    pub pair: &'a Pair,
    pub source: &'a dyn Reader,
    pub target: &'a dyn Reader,
    pub fresh: &'a Fresh,
}

/// `(key, extra columns)` of the rows with these keys.
fn by_key(
    r: &dyn Reader,
    shape: &Shape,
    keys: &[KeyVal],
    extra: &str,
) -> anyhow::Result<HashMap<KeyVal, Vec<String>>> {
    let width = shape.key.len();
    let mut out = HashMap::new();
    for batch in keys.chunks(500) {
        let sql = shape.system_query(batch, extra);
        for row in r.rows(sql)? {
            let mut it = row.into_iter().map(Option::unwrap_or_default);
            let key: KeyVal = it.by_ref().take(width).collect();
            out.insert(key, it.collect());
        }
    }
    Ok(out)
}

/// Mark the differences in `diffs` that replay explains (sets `explained`); see the module
/// docs. Differences already explained or rechecked are left alone.
pub fn explain(p: &Prover<'_>, shape: &Shape, diffs: &mut [RowDiff]) -> anyhow::Result<()> {
    let open = |d: &RowDiff| d.explained.is_none() && d.recheck.is_none();
    let mut found: HashMap<KeyVal, u64> = HashMap::new();

    // Versions on the target created after S.
    let newer: Vec<KeyVal> = diffs
        .iter()
        .filter(|d| open(d) && d.kind != Kind::MissingOnTarget)
        .map(|d| d.key.clone())
        .collect();
    if !newer.is_empty() {
        for (key, v) in by_key(p.target, shape, &newer, "xmin::text")? {
            if let Some(x) = v.first().and_then(|x| x.parse().ok()) {
                if let Some(full) = created_after(p.pair, x) {
                    found.insert(key, full);
                }
            }
        }
    }

    // Versions on the source deleted before T.
    let gone: Vec<KeyVal> = diffs
        .iter()
        .filter(|d| open(d) && d.kind == Kind::MissingOnTarget)
        .map(|d| d.key.clone())
        .collect();
    if !gone.is_empty() {
        // (ctid, xmin) of each source version, in S.
        let versions: Vec<(KeyVal, (String, String))> =
            by_key(p.source, shape, &gone, "ctid::text, xmin::text")?
                .into_iter()
                .filter_map(|(k, v)| match v.as_slice() {
                    [c, x] => Some((k, (c.clone(), x.clone()))),
                    _ => None,
                })
                .collect();
        let mut live = HashSet::new();
        for batch in versions.chunks(500) {
            let v: Vec<(String, String)> = batch.iter().map(|(_, v)| v.clone()).collect();
            live.extend(p.fresh.live(&shape.table, &v)?);
        }
        let dead: Vec<&(KeyVal, (String, String))> =
            versions.iter().filter(|(_, v)| !live.contains(v)).collect();
        // Only now, after the fresh statement found them deleted, is their xmax final.
        let mut xmax: HashMap<String, u32> = HashMap::new();
        for batch in dead.chunks(500) {
            let sql = format!(
                "SELECT ctid::text, xmax::text FROM ONLY {} WHERE ctid = ANY('{}'::tid[])",
                shape.table,
                tid_array(batch.iter().map(|(_, v)| v.0.as_str())).replace('\'', "''")
            );
            for row in p.source.rows(sql)? {
                if let [Some(c), Some(x)] = row.as_slice() {
                    if let Ok(x) = x.parse() {
                        xmax.insert(c.clone(), x);
                    }
                }
            }
        }
        let mut multi: HashMap<u32, Option<bool>> = HashMap::new();
        for (key, (ctid, _)) in dead {
            let Some(&x) = xmax.get(ctid) else { continue };
            // Cheap tests first: only a candidate is looked up as a multixact id.
            if deleted_after(p.pair, false, x, Some(false)).is_none() {
                continue;
            }
            let m = *multi.entry(x).or_insert_with(|| p.fresh.is_multi(x));
            if let Some(full) = deleted_after(p.pair, false, x, m) {
                found.insert(key.clone(), full);
            }
        }
    }

    if found.is_empty() {
        return Ok(());
    }
    let xids: Vec<u64> = found
        .values()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let committed = p.fresh.committed(&xids)?;
    for d in diffs.iter_mut().filter(|d| open(d)) {
        if let Some(x) = found.get(&d.key).filter(|x| committed.contains(x)) {
            d.explained = Some(*x);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 1 << 32;

    fn snap(xmin: u64, xmax: u64, xip: &[u64]) -> XidSnapshot {
        XidSnapshot {
            xmin,
            xmax,
            xip: xip.to_vec(),
        }
    }

    #[test]
    fn parses_pg_snapshot_text() {
        assert_eq!(
            XidSnapshot::parse("725:727:725").unwrap(),
            snap(725, 727, &[725])
        );
        assert_eq!(XidSnapshot::parse("725:727:").unwrap(), snap(725, 727, &[]));
        assert_eq!(
            XidSnapshot::parse("4294967290:4294967305:4294967292,4294967300").unwrap(),
            snap(E - 6, E + 9, &[E - 4, E + 4])
        );
        for bad in ["", "1", "a:b:", "5:3:", "3:5:7", "3:5:x"] {
            assert!(XidSnapshot::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn widening_across_wraparound() {
        // Epoch 1, just after the wrap; xmin still in epoch 0.
        let s = snap(E - 10, E + 5, &[E - 8, E + 3]);
        assert_eq!(s.full(0xFFFF_FFF0), Some(E - 16));
        assert_eq!(s.full(0xFFFF_FFF8), Some(E - 8));
        assert_eq!(s.full(7), Some(E + 7));
        assert_eq!(s.full(3), Some(E + 3));
        // Special xids never widen: frozen (2), bootstrap (1), invalid (0).
        for x in 0..3 {
            assert_eq!(s.full(x), None);
        }
        // Far in the past (more than 2^31 back) would be in the future: the nearest wins.
        let s = snap(100, 200, &[]);
        assert_eq!(s.full(150), Some(150));
        assert_eq!(s.full(u32::MAX), None, "before the first epoch");
        let s = snap(5 * E + 100, 5 * E + 200, &[]);
        assert_eq!(s.full(u32::MAX), Some(5 * E - 1));
        assert_eq!(s.full(0x8000_0000 + 300), Some(4 * E + 0x8000_0000 + 300));
    }

    #[test]
    fn visibility_is_pg_visible_in_snapshot() {
        let s = snap(E - 10, E + 5, &[E - 8, E + 3]);
        assert!(s.sees(E - 11));
        assert!(s.sees(E - 9));
        assert!(!s.sees(E - 8), "in progress");
        assert!(s.sees(E + 2));
        assert!(!s.sees(E + 3), "in progress");
        assert!(s.sees(E + 4));
        assert!(!s.sees(E + 5), "at xmax");
        assert!(!s.sees(E + 100));
    }

    fn pair() -> Pair {
        Pair {
            // S: 1000..1010 with 1003 and 1007 running.
            source: snap(1003, 1010, &[1003, 1007]),
            // T: taken later; 1012 still running then.
            target: snap(1012, 1020, &[]),
        }
    }

    #[test]
    fn a_target_version_is_explained_only_if_s_cannot_see_its_creator() {
        let p = pair();
        assert_eq!(created_after(&p, 1010), Some(1010), "committed after S");
        assert_eq!(created_after(&p, 1015), Some(1015));
        assert_eq!(created_after(&p, 1007), Some(1007), "running at S");
        assert_eq!(created_after(&p, 1003), Some(1003), "running at S (xmin)");
        // An older version: S sees its creator, so S should have it (or a newer one).
        assert_eq!(created_after(&p, 1005), None);
        assert_eq!(created_after(&p, 999), None);
        // Frozen and special xids are older than everything.
        assert_eq!(created_after(&p, 2), None);
        assert_eq!(created_after(&p, 1), None);
        assert_eq!(created_after(&p, 0), None);
        // T cannot see a version created at or above its own xmax: not a replayed row.
        assert_eq!(created_after(&p, 1020), None);
        assert_eq!(created_after(&p, 4_000_000_000), None);
    }

    #[test]
    fn wraparound_and_xip_membership_in_proofs() {
        let p = Pair {
            source: snap(E - 10, E + 5, &[E - 8, E + 3]),
            target: snap(E + 8, E + 9, &[]),
        };
        assert_eq!(
            created_after(&p, 0xFFFF_FFF8),
            Some(E - 8),
            "in xip, epoch 0"
        );
        assert_eq!(created_after(&p, 0xFFFF_FFF7), None, "seen, epoch 0");
        assert_eq!(created_after(&p, 3), Some(E + 3), "in xip, epoch 1");
        assert_eq!(created_after(&p, 4), None, "seen, epoch 1");
        assert_eq!(created_after(&p, 6), Some(E + 6), "after S");
        assert_eq!(deleted_after(&p, false, 6, Some(false)), Some(E + 6));
        assert_eq!(
            deleted_after(&p, false, 0xFFFF_FFF8, Some(false)),
            Some(E - 8)
        );
        assert_eq!(
            deleted_after(&p, false, 8, Some(false)),
            None,
            "not before T's xmin"
        );
    }

    #[test]
    fn a_missing_row_needs_a_finished_deleter_s_cannot_see() {
        let p = pair();
        assert_eq!(deleted_after(&p, false, 1010, Some(false)), Some(1010));
        assert_eq!(deleted_after(&p, false, 1007, Some(false)), Some(1007));
        // Still live in a fresh statement: a lock-only xmax (or an aborted deleter).
        assert_eq!(deleted_after(&p, true, 1010, Some(false)), None);
        // A multixact id, or unknown whether it is one.
        assert_eq!(deleted_after(&p, false, 1010, Some(true)), None);
        assert_eq!(deleted_after(&p, false, 1010, None), None);
        // S sees the deleter: S should not have had the row at all.
        assert_eq!(deleted_after(&p, false, 1005, Some(false)), None);
        // The deleter may still have been running when T was taken (T's xmin and above).
        assert_eq!(deleted_after(&p, false, 1012, Some(false)), None);
        assert_eq!(deleted_after(&p, false, 1015, Some(false)), None);
        // No xmax, frozen or special.
        assert_eq!(deleted_after(&p, false, 0, Some(false)), None);
        assert_eq!(deleted_after(&p, false, 2, Some(false)), None);
    }

    #[test]
    fn tid_arrays() {
        assert_eq!(
            tid_array(["(0,1)", "(12,3)"].into_iter()),
            "{\"(0,1)\",\"(12,3)\"}"
        );
    }

    /// Under translated server messages (German, from a locale the test makes) a plain xid is
    /// still told from a multixact id: the server's "has not been created yet" is matched in
    /// English, so the fresh session asks for its messages untranslated. (With German ones
    /// no delete was explained by replay: each was a `missing_on_target` difference.)
    #[test]
    fn multixact_ids_are_told_apart_under_translated_messages() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let made = std::process::Command::new("localedef")
            .args(["-i", "de_DE", "-f", "UTF-8"])
            .arg(dir.path().join("de_DE.UTF-8"))
            .output();
        if !made.as_ref().is_ok_and(|o| o.status.success()) {
            testkit::skip!(
                "cannot make the de_DE locale (localedef, Debian's locales package): {made:?}"
            );
        }
        let c = testkit::Cluster::builder()
            .name("de")
            .env("LOCPATH", dir.path().to_str().unwrap())
            .setting("lc_messages", "'de_DE.UTF-8'")
            .start();
        let dsn = c.dsn("postgres");
        let mut a = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
        let german = a.simple_query("SELECT 1/0").unwrap_err();
        let german = german.as_db_error().map(|d| d.message().to_owned());
        assert_eq!(german.as_deref(), Some("Division durch Null"), "translated");
        let fresh = Fresh {
            info: ConnInfo::parse(&dsn).unwrap(),
            client: Mutex::new(None),
        };
        // A plain xid: no multixact has that id yet.
        let xid: u32 = c
            .psql("postgres", "SELECT txid_current() % 4294967296")
            .parse()
            .unwrap();
        assert_eq!(fresh.is_multi(xid), Some(false), "plain xid {xid}");
        // Two sessions share a row lock: the row's xmax is a multixact id.
        c.psql("postgres", "CREATE TABLE m (id int PRIMARY KEY)");
        c.psql("postgres", "INSERT INTO m VALUES (1)");
        let mut b = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
        let mut ta = a.transaction().unwrap();
        let mut tb = b.transaction().unwrap();
        ta.batch_execute("SELECT * FROM m FOR SHARE").unwrap();
        tb.batch_execute("SELECT * FROM m FOR SHARE").unwrap();
        let multi: u32 = c
            .psql("postgres", "SELECT xmax::text FROM m")
            .parse()
            .unwrap();
        assert_eq!(fresh.is_multi(multi), Some(true), "multixact {multi}");
        ta.commit().unwrap();
        tb.commit().unwrap();
    }
}
