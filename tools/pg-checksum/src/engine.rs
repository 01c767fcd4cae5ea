//! Checking one table on two hosts: chunk boundaries from the key distribution, one hashing
//! scan per host split between workers, then bisection of the chunks that differ down to rows.
//!
//! Boundaries come from a `TABLESAMPLE SYSTEM` sample of the key on the larger host (every
//! `chunk_rows`-th key of the sample, scaled by the sample fraction), so chunks follow the
//! real distribution of the key, however skewed. Both hosts are then hashed with the same
//! boundaries, each by `ctid` ranges spread over its worker sessions.
//!
//! A chunk that differs is bisected: keys spaced `rows / FANOUT` apart are read from the host
//! with more rows in it, both hosts hash the sub-ranges (one query each), and only the
//! sub-ranges that differ are followed, until a range holds at most `leaf_rows` rows; then
//! both hosts send `(key, row hash)` for that range and the rows are compared by key.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::pg::snapshot::{same_file, Pending, ReadPool};
use shared::progress::ProgressBar;

use crate::model::{Kind, Outcome, RowDiff, Unresolved};
use crate::par::parallel;
use crate::plan::Plan;
use crate::sql::{ctid_pred, KeyVal, Range, Shape};
use crate::sum::Sum;

/// How many sub-ranges a differing range is split into per bisection step.
pub const FANOUT: i64 = 16;

/// Tuning knobs from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Target rows per chunk.
    pub chunk_rows: u64,
    /// Bisection stops at ranges of at most this many rows.
    pub leaf_rows: i64,
    /// Stop drilling a table after this many row differences.
    pub max_row_diffs: usize,
    /// Characters of each differing value shown in `row_diff` (0: none).
    pub show_values: usize,
    /// Worker sessions per host.
    pub jobs: usize,
}

/// Number of `ctid` slices a table of `blocks` blocks is hashed in.
fn slices(blocks: i64, jobs: usize) -> i64 {
    if blocks < 2048 {
        1
    } else {
        (blocks / 1024).clamp(1, (jobs * 2) as i64)
    }
}

/// Read keys from a sample or range query (one text column per key column).
fn read_keys(c: &mut postgres::Client, sql: &str, width: usize) -> anyhow::Result<Vec<KeyVal>> {
    Ok(c.query(sql, &[])?
        .iter()
        .map(|r| (0..width).map(|i| r.get::<_, String>(i)).collect())
        .collect())
}

/// Chunk boundaries for a table of `blocks` blocks: see the module docs.
pub fn sample_bounds(
    pool: &ReadPool,
    shape: &Shape,
    blocks: i64,
    chunk_rows: u64,
) -> Pending<Vec<KeyVal>> {
    let b = blocks.max(1) as f64;
    let mut f = (256.0 / b).max(200.0 / chunk_rows.max(1) as f64).min(1.0);
    if f >= 0.5 {
        f = 1.0;
    }
    let step = ((chunk_rows as f64) * f).round().max(1.0) as u64;
    let sql = shape.sample_query("true", (f < 1.0).then_some(f * 100.0), step);
    let width = shape.key.len();
    pool.submit(move |c| read_keys(c, &sql, width))
}

/// Check that key values read as text select their rows again when written back as
/// literals (`'abc  '::pg_catalog.bpchar`): bisection, row comparison and rechecks all find
/// rows that way, and a cast that lost part of a value (the `character` = `character(1)`
/// trap) would make every recheck read nothing on both hosts and call a real difference
/// transient. Checked on the keys of `bounds` (up to three) and of two rows of the table, in
/// the same snapshot they were read in; a failure is an internal error, never a verdict.
pub fn round_trip(
    c: &mut postgres::Client,
    shape: &Shape,
    bounds: &[KeyVal],
) -> anyhow::Result<()> {
    if shape.key.is_empty() {
        return Ok(());
    }
    let width = shape.key.len();
    let mut keys = read_keys(c, &shape.any_keys_query(2), width)?;
    if let (Some(first), Some(last)) = (bounds.first(), bounds.last()) {
        keys.push(first.clone());
        keys.push(bounds[bounds.len() / 2].clone());
        keys.push(last.clone());
    }
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    let found: i64 = c.query_one(&shape.count_keys_query(&keys), &[])?.get(0);
    if found != keys.len() as i64 {
        return Err(shared::err(
            shared::ErrorKind::Internal,
            format!(
                "key values of {} read back as literals ({}) select {found} of {} rows, so drill-down and rechecks would look in the wrong place (a bug in pg-checksum: please report it with the key's type); compare the table with --whole-table meanwhile",
                shape.table,
                shape.keys_pred(&keys[..1]),
                keys.len()
            ),
        ));
    }
    Ok(())
}

/// Hash a whole table on one host with these boundaries: per-chunk sums.
pub fn hash_table(
    pool: &ReadPool,
    shape: &Shape,
    bounds: &[KeyVal],
    blocks: i64,
    jobs: usize,
    meter: &Meter,
) -> Vec<Pending<Vec<(usize, Sum)>>> {
    let n = slices(blocks, jobs);
    (0..n)
        .map(|i| {
            let lo = (i > 0).then(|| blocks * i / n);
            let hi = (i < n - 1).then(|| blocks * (i + 1) / n);
            let sql = shape.hash_query(bounds, &ctid_pred(lo, hi));
            let size = block_bytes(hi.unwrap_or(blocks) - lo.unwrap_or(0));
            let meter = meter.clone();
            pool.submit(move |c| {
                let sums = hash_rows(c, &sql)?;
                meter.hashed(size, sums.iter().map(|(_, s)| s.rows.max(0) as u64).sum());
                Ok(sums)
            })
        })
        .collect()
}

/// [`shared::pg::snapshot::same_file`] on `pool`, once `table` has been read there (`host`:
/// `source`, `target`, `host`, for the message).
pub fn check_same_file(pool: &ReadPool, table: &str, host: &'static str) -> Pending<()> {
    let table = table.to_owned();
    pool.submit(move |c| same_file(c, &table, host))
}

/// The bytes of table data `blocks` of PostgreSQL's 8 kB blocks hold (none for a negative
/// count).
pub fn block_bytes(blocks: i64) -> u64 {
    blocks.max(0) as u64 * 8192
}

/// Progress on a terminal while tables are hashed: the bytes of table data read so far (both
/// hosts, as each slice of blocks is done) with the rows, rate and ETA; not the number of
/// tables (one big table would sit at 0 of 1 for its whole run). Hidden on a pipe. Clones
/// share the bar and the row count: one goes with each slice's job.
#[derive(Clone)]
pub struct Meter {
    bar: ProgressBar,
    rows: Arc<AtomicU64>,
}

impl Meter {
    /// Start showing progress over `total` bytes (a run's tables on every host it reads).
    pub fn start(total: u64) -> Meter {
        Meter {
            bar: shared::progress::bytes_bar(total.max(1), "hashing"),
            rows: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `bytes` of table data and `rows` more were hashed.
    fn hashed(&self, bytes: u64, rows: u64) {
        let total = self.rows.fetch_add(rows, Ordering::SeqCst) + rows;
        self.bar.inc(bytes);
        self.bar.set_message(format!("{total} rows"));
    }

    /// Clear the bar (a slice that ends later, of a table that failed, draws nothing on it).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Run a hash query: `(chunk, sum)` per chunk that has rows.
pub fn hash_rows(c: &mut postgres::Client, sql: &str) -> anyhow::Result<Vec<(usize, Sum)>> {
    c.query(sql, &[])?
        .iter()
        .map(|r| {
            let chunk: i32 = r.get(0);
            let s = Sum::from_sql(
                r.get(1),
                r.get::<_, Option<&str>>(2),
                r.get::<_, Option<&str>>(3),
            )?;
            Ok((chunk as usize, s))
        })
        .collect()
}

/// Add up slices into `n` chunk sums.
pub fn merge(n: usize, parts: Vec<Vec<(usize, Sum)>>) -> Vec<Sum> {
    let mut out = vec![Sum::default(); n];
    for (i, s) in parts.into_iter().flatten() {
        out[i] = out[i] + s;
    }
    out
}

fn wait_all<T>(p: Vec<Pending<T>>) -> anyhow::Result<Vec<T>> {
    p.into_iter().map(Pending::wait).collect()
}

/// Check one table present on both hosts.
pub fn check_table(
    pools: [&ReadPool; 2],
    plan: Plan,
    opts: &Opts,
    meter: &Meter,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let shape = &plan.shape;
    let bounds = if shape.key.is_empty() {
        Vec::new()
    } else {
        let side = usize::from(plan.blocks[1] > plan.blocks[0]);
        sample_bounds(pools[side], shape, plan.blocks[side], opts.chunk_rows).wait()?
    };
    let side = usize::from(plan.blocks[1] > plan.blocks[0]);
    let (check, b) = (shape.clone(), bounds.clone());
    pools[side]
        .submit(move |c| round_trip(c, &check, &b))
        .wait()?;
    let pending =
        [0, 1].map(|s| hash_table(pools[s], shape, &bounds, plan.blocks[s], opts.jobs, meter));
    let [ps, pt] = pending;
    let (rs, rt) = (wait_all(ps), wait_all(pt));
    let n = bounds.len() + 1;
    let chunks = [merge(n, rs?), merge(n, rt?)];
    let same = [(0, "source"), (1, "target")]
        .map(|(s, host)| check_same_file(pools[s], &shape.table, host));
    for p in same {
        p.wait()?;
    }
    let mut out = Outcome {
        plan,
        bounds,
        chunks,
        diffs: Vec::new(),
        ranges: Vec::new(),
        truncated: false,
        elapsed: Duration::ZERO,
        proof_error: None,
    };
    let differing = out.different_chunks();
    if out.plan.shape.key.is_empty() {
        if !differing.is_empty() {
            out.ranges.push(Unresolved {
                range: Range::default(),
                recheck: None,
                chunk: 0,
            });
        }
    } else {
        // Drill the differing chunks in parallel (up to `jobs` at a time), sharing one
        // `--max-row-diffs` budget, and keep the results in chunk order.
        let found = AtomicUsize::new(0);
        let mut per_chunk: Vec<Option<Drilled>> = differing.iter().map(|_| None).collect();
        let (shape, ranges) = (
            &out.plan.shape,
            differing
                .iter()
                .map(|&i| (out.chunk_range(i), [out.chunks[0][i], out.chunks[1][i]]))
                .collect::<Vec<_>>(),
        );
        parallel(
            ranges.len(),
            opts.jobs,
            |k| {
                let mut d = Drill {
                    pools,
                    shape,
                    opts,
                    found: &found,
                    diffs: Vec::new(),
                    pending: Vec::new(),
                    truncated: false,
                };
                d.drill(ranges[k].0.clone(), ranges[k].1, 0)?;
                Ok(Drilled {
                    diffs: d.diffs,
                    pending: d.pending,
                    truncated: d.truncated,
                })
            },
            |k, r: anyhow::Result<Drilled>| {
                per_chunk[k] = Some(r?);
                Ok(())
            },
        )?;
        for (d, &chunk) in per_chunk.into_iter().zip(&differing) {
            let Some(d) = d else { continue };
            out.diffs
                .extend(d.diffs.into_iter().map(|r| RowDiff { chunk, ..r }));
            out.ranges
                .extend(d.pending.into_iter().map(|range| Unresolved {
                    range,
                    recheck: None,
                    chunk,
                }));
            out.truncated |= d.truncated;
        }
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

/// What drilling one chunk found.
struct Drilled {
    diffs: Vec<RowDiff>,
    pending: Vec<Range>,
    truncated: bool,
}

struct Drill<'a> {
    pools: [&'a ReadPool; 2],
    shape: &'a Shape,
    opts: &'a Opts,
    /// Row differences found so far in the whole table (the `--max-row-diffs` budget).
    found: &'a AtomicUsize,
    diffs: Vec<RowDiff>,
    /// Differing ranges left unresolved.
    pending: Vec<Range>,
    truncated: bool,
}

impl Drill<'_> {
    fn drill(&mut self, range: Range, sums: [Sum; 2], depth: u32) -> anyhow::Result<()> {
        if self.found.load(Ordering::SeqCst) >= self.opts.max_row_diffs {
            self.truncated = true;
            self.pending.push(range);
            return Ok(());
        }
        let rows = sums[0].rows.max(sums[1].rows);
        if rows <= self.opts.leaf_rows || depth >= 24 {
            return self.leaf(&range);
        }
        let pred = self.shape.range_pred(&range);
        let side = usize::from(sums[1].rows > sums[0].rows);
        let step = (rows + FANOUT - 1) / FANOUT;
        let sql = self.shape.sample_query(&pred, None, step as u64);
        let width = self.shape.key.len();
        let sub: Vec<KeyVal> = self.pools[side]
            .submit(move |c| read_keys(c, &sql, width))
            .wait()?;
        if sub.is_empty() {
            return self.leaf(&range);
        }
        let sql = self.shape.hash_query(&sub, &pred);
        let p = [0, 1].map(|s| {
            let sql = sql.clone();
            self.pools[s].submit(move |c| hash_rows(c, &sql))
        });
        let [p0, p1] = p;
        let (r0, r1) = (p0.wait(), p1.wait());
        let n = sub.len() + 1;
        let parts = [merge(n, vec![r0?]), merge(n, vec![r1?])];
        for i in 0..n {
            if parts[0][i] != parts[1][i] {
                let r = Range {
                    lower: if i == 0 {
                        range.lower.clone()
                    } else {
                        Some(sub[i - 1].clone())
                    },
                    upper: if i == n - 1 {
                        range.upper.clone()
                    } else {
                        Some(sub[i].clone())
                    },
                };
                self.drill(r, [parts[0][i], parts[1][i]], depth + 1)?;
            }
        }
        Ok(())
    }

    /// Compare a small range row by row.
    fn leaf(&mut self, range: &Range) -> anyhow::Result<()> {
        let sql = self.shape.rows_query(&self.shape.range_pred(range));
        let width = self.shape.key.len();
        let p = [0, 1].map(|s| {
            let sql = sql.clone();
            self.pools[s].submit(move |c| read_rows(c, &sql, width))
        });
        let [p0, p1] = p;
        let (a, b) = (p0.wait(), p1.wait());
        let found = diff_rows(&a?, &b?);
        if found.is_empty() {
            // The range's sums differed but no row does: keep it as a range difference.
            self.pending.push(range.clone());
            return Ok(());
        }
        // Reserve room in the table's budget (other chunks are drilled at the same time).
        let max = self.opts.max_row_diffs;
        let want = found.len();
        let before = self
            .found
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some((n + want).min(max.max(n)))
            })
            .unwrap_or(max);
        let room = max.saturating_sub(before).min(want);
        if room < want {
            // The rest of the range (from the first difference left out, in key order) stays
            // unresolved, so the table cannot pass for equal on the differences kept.
            self.truncated = true;
            self.pending.push(Range {
                lower: Some(found[room].key.clone()),
                upper: range.upper.clone(),
            });
        }
        let mut found: Vec<RowDiff> = found.into_iter().take(room).collect();
        name_changed_columns(self.pools, self.shape, &mut found, self.opts.show_values)?;
        self.diffs.extend(found);
        Ok(())
    }
}

/// `(key, hash1, hash2)` rows of a range, in key order.
pub type KeyedRows = Vec<(KeyVal, i64, i64)>;

/// Run a rows query.
pub fn read_rows(c: &mut postgres::Client, sql: &str, width: usize) -> anyhow::Result<KeyedRows> {
    Ok(c.query(sql, &[])?
        .iter()
        .map(|r| {
            let key = (0..width).map(|i| r.get::<_, String>(i)).collect();
            (key, r.get(width), r.get(width + 1))
        })
        .collect())
}

/// Compare two key-ordered row lists (the same order on both hosts: see [`crate::sql`]).
pub fn diff_rows(src: &KeyedRows, tgt: &KeyedRows) -> Vec<RowDiff> {
    let in_tgt: HashSet<&KeyVal> = tgt.iter().map(|r| &r.0).collect();
    let mut out = Vec::new();
    let diff = |key: &KeyVal, kind| RowDiff {
        key: key.clone(),
        kind,
        columns: Vec::new(),
        values: Vec::new(),
        recheck: None,
        lsns: None,
        explained: None,
        chunk: 0,
    };
    let (mut i, mut j) = (0, 0);
    while i < src.len() || j < tgt.len() {
        match (src.get(i), tgt.get(j)) {
            (Some(a), Some(b)) if a.0 == b.0 => {
                if (a.1, a.2) != (b.1, b.2) {
                    out.push(diff(&a.0, Kind::Changed));
                }
                i += 1;
                j += 1;
            }
            // The target's row sorts before the source's: the source has no such key.
            (Some(a), Some(b)) if in_tgt.contains(&a.0) => {
                out.push(diff(&b.0, Kind::ExtraOnTarget));
                j += 1;
            }
            (Some(a), _) => {
                out.push(diff(&a.0, Kind::MissingOnTarget));
                i += 1;
            }
            (None, Some(b)) => {
                out.push(diff(&b.0, Kind::ExtraOnTarget));
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// For `Changed` rows, read each column's hash on both hosts and name the ones that differ,
/// with their values cut to `show_values` characters (0: no values).
pub fn name_changed_columns(
    pools: [&ReadPool; 2],
    shape: &Shape,
    diffs: &mut [RowDiff],
    show_values: usize,
) -> anyhow::Result<()> {
    let keys: Vec<KeyVal> = diffs
        .iter()
        .filter(|d| d.kind == Kind::Changed)
        .map(|d| d.key.clone())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let width = shape.key.len();
    let ncols = shape.columns.len();
    // Per key: each column's hash, and (with show_values) its value as text.
    type Cols = Vec<(Option<String>, Option<String>)>;
    let mut per_side: Vec<std::collections::HashMap<KeyVal, Cols>> = Vec::new();
    for pool in pools {
        let mut m = std::collections::HashMap::new();
        for batch in keys.chunks(500) {
            let sql = shape.columns_query(batch, show_values);
            let rows = pool
                .submit(move |c| {
                    Ok(c.query(&sql, &[])?
                        .iter()
                        .map(|r| {
                            let k: KeyVal = (0..width).map(|i| r.get::<_, String>(i)).collect();
                            let v: Cols = (0..ncols)
                                .map(|i| {
                                    let value = (show_values > 0)
                                        .then(|| r.get::<_, Option<String>>(width + ncols + i))
                                        .flatten();
                                    (r.get(width + i), value)
                                })
                                .collect();
                            (k, v)
                        })
                        .collect::<Vec<_>>())
                })
                .wait()?;
            m.extend(rows);
        }
        per_side.push(m);
    }
    for d in diffs.iter_mut().filter(|d| d.kind == Kind::Changed) {
        if let (Some(a), Some(b)) = (per_side[0].get(&d.key), per_side[1].get(&d.key)) {
            let differing: Vec<_> = shape
                .columns
                .iter()
                .zip(a.iter().zip(b))
                .filter(|(_, (x, y))| x.0 != y.0)
                .collect();
            d.columns = differing.iter().map(|(c, _)| (*c).clone()).collect();
            if show_values > 0 {
                let cut = |v: &Option<String>| {
                    v.as_deref()
                        .map(|s| shared::human::truncate(s, show_values))
                };
                d.values = differing
                    .iter()
                    .map(|(_, (x, y))| (cut(&x.1), cut(&y.1)))
                    .collect();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[(&str, i64)]) -> KeyedRows {
        v.iter()
            .map(|(k, h)| (vec![k.to_string()], *h, 0))
            .collect()
    }

    #[test]
    fn row_lists_merge_by_key() {
        let s = rows(&[("a", 1), ("b", 2), ("d", 4), ("e", 5)]);
        let t = rows(&[("a", 1), ("c", 3), ("d", 9), ("f", 6)]);
        let d: Vec<(String, Kind)> = diff_rows(&s, &t)
            .into_iter()
            .map(|d| (d.key[0].clone(), d.kind))
            .collect();
        assert_eq!(
            d,
            [
                ("b".to_string(), Kind::MissingOnTarget),
                ("c".to_string(), Kind::ExtraOnTarget),
                ("d".to_string(), Kind::Changed),
                ("e".to_string(), Kind::MissingOnTarget),
                ("f".to_string(), Kind::ExtraOnTarget),
            ]
        );
        assert!(diff_rows(&s, &s).is_empty());
        assert_eq!(diff_rows(&s, &Vec::new()).len(), 4);
    }

    #[test]
    fn slicing() {
        assert_eq!(slices(0, 4), 1);
        assert_eq!(slices(100_000, 2), 4);
        assert_eq!(slices(3000, 8), 2);
    }
}
