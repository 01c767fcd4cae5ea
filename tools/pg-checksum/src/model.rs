//! The plain results of a check, shared by every layer above the engine: what kind of
//! difference a row has ([`Kind`], [`RowDiff`]), differing ranges not resolved to rows
//! ([`Unresolved`]), a table's result ([`Outcome`]) and the two-host `summary` counts
//! ([`Counts`], also what `compare` reports). Data only: no SQL, no sessions.

use std::time::Duration;

use crate::plan::Plan;
use crate::sql::{KeyVal, Range};
use crate::sum::Sum;

/// What kind of difference a row has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The source has the key, the target does not.
    MissingOnTarget,
    /// The target has the key, the source does not.
    ExtraOnTarget,
    /// Both have the key, with different rows.
    Changed,
}

impl Kind {
    /// The `kind` field of `row_diff`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingOnTarget => "missing_on_target",
            Kind::ExtraOnTarget => "extra_on_target",
            Kind::Changed => "changed",
        }
    }
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDiff {
    pub key: KeyVal,
    pub kind: Kind,
    /// Columns that differ (for `Changed`).
    pub columns: Vec<String>,
    /// Their values as text on the source and the target (`None`: NULL), cut to
    /// `--show-values` characters; empty with `--show-values 0`.
    pub values: Vec<(Option<String>, Option<String>)>,
    /// Set by rechecks: `transient` or `persistent`.
    pub recheck: Option<&'static str>,
    /// LSNs of the snapshots it was last seen different in (empty: the first pass).
    pub lsns: Option<(String, String)>,
    /// Proven to come from replay: the 64-bit xid that created the target's version, or
    /// deleted the source's (see [`crate::proof`]).
    pub explained: Option<u64>,
    /// The chunk it is in.
    pub chunk: usize,
}

impl RowDiff {
    /// Neither explained nor labelled by a recheck yet.
    pub fn open(&self) -> bool {
        self.explained.is_none() && self.recheck.is_none()
    }
}

/// A differing range not resolved to rows.
#[derive(Debug, Clone)]
pub struct Unresolved {
    pub range: Range,
    /// Set by rechecks: `transient` or `persistent`.
    pub recheck: Option<&'static str>,
    /// The chunk it is in.
    pub chunk: usize,
}

/// A table's result.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Chunk boundaries (`bounds.len() + 1` chunks).
    pub bounds: Vec<KeyVal>,
    /// Per-chunk sums on the source and the target.
    pub chunks: [Vec<Sum>; 2],
    /// Differing rows found by drill-down.
    pub diffs: Vec<RowDiff>,
    /// Differing ranges not resolved to rows (whole-table hash, `--max-row-diffs` reached),
    /// with whether a recheck found them equal.
    pub ranges: Vec<Unresolved>,
    /// Drill-down stopped at `--max-row-diffs`.
    pub truncated: bool,
    pub elapsed: Duration,
    /// Why the differences could not be checked for an explanation by replay (they are
    /// reported unexplained, and this as an `error`).
    pub proof_error: Option<anyhow::Error>,
}

impl Outcome {
    /// Whole-table sums on each side.
    pub fn totals(&self) -> [Sum; 2] {
        [0, 1].map(|s| self.chunks[s].iter().fold(Sum::default(), |a, b| a + *b))
    }

    /// Indices of chunks that differ.
    pub fn different_chunks(&self) -> Vec<usize> {
        (0..self.chunks[0].len())
            .filter(|&i| self.chunks[0][i] != self.chunks[1][i])
            .collect()
    }

    /// The key range of chunk `i`.
    pub fn chunk_range(&self, i: usize) -> Range {
        Range {
            lower: i.checked_sub(1).map(|j| self.bounds[j].clone()),
            upper: self.bounds.get(i).cloned(),
        }
    }

    /// True if the data is the same: nothing differs, or every difference was transient or
    /// explained by replay. An unresolved range (a whole-table hash, drill-down stopped at
    /// `--max-row-diffs`) is never explained, so a truncated table is not equal unless a
    /// recheck finds its unresolved ranges equal.
    pub fn data_equal(&self) -> bool {
        if self.diffs.is_empty() && self.ranges.is_empty() {
            let t = self.totals();
            return t[0] == t[1];
        }
        self.diffs
            .iter()
            .all(|d| d.explained.is_some() || d.recheck == Some("transient"))
            && self.ranges.iter().all(|r| r.recheck == Some("transient"))
    }

    /// Why the data counts as the same, or `None` if it does not: `hashes` (every chunk's
    /// sums are equal), `replay` (each difference is explained by replay), `recheck` (each
    /// was gone when read again in fresh snapshots), or `replay, recheck`. An error if the
    /// outcome says equal without that evidence: a differing chunk with no difference found
    /// in it, or equal totals over differing chunks with nothing explained. That is a defect
    /// of pg-checksum and must never become a verdict.
    pub fn equal_because(&self) -> Result<Option<&'static str>, String> {
        let differing = self.different_chunks();
        if !self.data_equal() {
            return Ok(None);
        }
        if differing.is_empty() && self.diffs.is_empty() && self.ranges.is_empty() {
            return Ok(Some("hashes"));
        }
        for i in &differing {
            let covered = self.diffs.iter().any(|d| d.chunk == *i)
                || self.ranges.iter().any(|r| r.chunk == *i);
            if !covered {
                return Err(format!(
                    "chunk {i} differs but no difference was recorded in it"
                ));
            }
        }
        let replay = self.diffs.iter().any(|d| d.explained.is_some());
        let recheck = self.diffs.iter().any(|d| d.explained.is_none()) || !self.ranges.is_empty();
        Ok(Some(match (replay, recheck) {
            (true, false) => "replay",
            (false, _) => "recheck",
            (true, true) => "replay, recheck",
        }))
    }

    /// True if every difference in chunk `i` is explained by replay (and there is one).
    pub fn chunk_explained(&self, i: usize) -> bool {
        let mut diffs = self.diffs.iter().filter(|d| d.chunk == i).peekable();
        diffs.peek().is_some()
            && diffs.all(|d| d.explained.is_some())
            && !self.ranges.iter().any(|r| r.chunk == i)
    }
}

/// Counts for the `summary` record.
#[derive(Debug, Default, serde::Serialize)]
pub struct Counts {
    pub tables: u64,
    pub equal: u64,
    pub different: u64,
    pub missing: u64,
    pub chunks: u64,
    pub different_chunks: u64,
    pub row_diffs: u64,
    pub transient_row_diffs: u64,
    /// Row differences proven to come from replay (not differences).
    pub explained_row_diffs: u64,
    /// Differing chunks whose every difference is explained by replay.
    pub explained_chunks: u64,
    pub source_rows: i64,
    pub target_rows: i64,
}
