//! The SQL pg-checksum sends, built in one place: the row hash, chunk buckets, key ranges.
//!
//! # The row hash, and why it is collision-safe
//!
//! Each row is hashed on the server as
//! `hashtextextended(ROW(c1, c2, ...)::text, seed)`, columns in byte order of their names (so
//! two hosts agree on the order without talking to each other, whatever their `attnum`s).
//!
//! - **The encoding is injective.** `ROW(...)::text` is `record_out`: `(` fields `,`-separated
//!   `)`, where a NULL is an empty field, and a value is written bare only if it is non-empty
//!   and contains no `"`, `\`, `(`, `)`, `,` or whitespace; otherwise it is double-quoted with
//!   `"` and `\` doubled. Reading left to right, a field that starts with `"` ends at the
//!   first undoubled `"`, any other field ends at the next `,` or `)`, so the list of fields
//!   (each NULL or a string) is recovered uniquely for a fixed column list. NULL (empty) and
//!   `''` (`""`) differ; `('a|b', NULL)` and `('a', '|b')` are `(a|b,)` and `(a,|b)`;
//!   `('a,b', 'c')` and `('a', 'b,c')` are `("a,b",c)` and `(a,"b,c")`. Nested arrays and
//!   composites quote the same way. No `coalesce(col, '<null>') || '|'` anywhere.
//! - **The text of each value is pinned.** Every session sets the settings that change output
//!   functions ([`SESSION_SQL`]: `DateStyle`, `IntervalStyle`, `TimeZone`,
//!   `extra_float_digits`, `bytea_output`, `lc_monetary`, `search_path` for `regclass` & co.),
//!   so the same value prints the same on both hosts. The server encodings must match (checked
//!   at start-up).
//! - **The hash is wide and order-independent.** Two 64-bit hashes with different seeds
//!   (`hashtextextended` is PostgreSQL's own, stable across versions because hash partitioning
//!   depends on it) are summed per chunk modulo 2^64 each: 128 bits, independent of row order
//!   and physical layout, and a multiset hash (a duplicated row counts twice, where XOR would
//!   cancel it). Chunk sums add up to the table sum. A probe hash of a fixed text is compared
//!   between hosts at start-up, to refuse hosts whose hash function differs (byte order).
//!
//! # Keys and chunks
//!
//! Key ranges compare text-like columns with `COLLATE "C"` (byte order, the same on every
//! host whatever its locale or ICU version) unless both hosts order the key index's collation
//! alike (then in that order, so the index serves: [`crate::plan`]), everything else with its
//! type's own btree order. Boundary values travel as text and come back as
//! `'literal'::schema.type` (the base type's catalog name: `bpchar`, never `character`,
//! which in a cast means `character(1)`); [`crate::engine::round_trip`] checks that they find
//! their rows. A chunk is found for
//! each row by a binary search written as nested `CASE` over the boundaries, so one scan of
//! the table (split by `ctid` ranges between workers) hashes every chunk at once, sequentially
//! and whatever the physical order of the key.

use std::fmt::Write as _;

use shared::pg::tables::quote_ident;

/// Seed of the first 64-bit row hash.
pub const SEED1: i64 = 0x243F_6A88_85A3_08D3;
/// Seed of the second 64-bit row hash.
pub const SEED2: i64 = 0x1319_8A2E_0370_7344;

/// Session settings that make every value print the same on every host, plus
/// predictable resource use (no parallel workers beyond `--jobs`, no timeouts cutting a long
/// scan, a bounded wait for a table lock held by DDL), and every row or an error: with
/// `row_security` on, a role under a row-level security policy would hash only the rows the
/// policy shows it, on both hosts alike, and call tables equal that are not
/// ([`shared::pg::row_security_hint`]).
pub const SESSION_SQL: &str = "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
    SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET bytea_output = 'hex'; \
    SET lc_monetary = 'C'; SET standard_conforming_strings = on; SET search_path = pg_catalog; \
    SET xmloption = content; SET max_parallel_workers_per_gather = 0; SET statement_timeout = 0; \
    SET idle_in_transaction_session_timeout = 0; SET lock_timeout = '60s'; \
    SET row_security = off";

/// A fixed text whose hash both hosts must agree on.
pub const PROBE_SQL: &str =
    "SELECT pg_catalog.hashtextextended('pgshift hash probe', 2607523876544694483)";

/// A key value: the text of each key column, in key order.
pub type KeyVal = Vec<String>;

/// One key column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCol {
    /// Column name.
    pub name: String,
    /// The type to cast boundary literals to (`integer`, `text`, ...).
    pub cast: String,
    /// Compare with `COLLATE "C"` (text-like types).
    pub collate: bool,
}

/// A key range: `lower <= key < upper`, each end open when `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    /// Inclusive lower bound.
    pub lower: Option<KeyVal>,
    /// Exclusive upper bound.
    pub upper: Option<KeyVal>,
}

/// What a query reads: the table, the hashed columns and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// `"schema"."table"`.
    pub table: String,
    /// Hashed columns, in hash order (byte order of names).
    pub columns: Vec<String>,
    /// The key (empty: whole-table hash).
    pub key: Vec<KeyCol>,
}

pub use shared::pg::tables::quote_literal as literal;

fn alias(i: usize) -> String {
    format!("pgshift_k{i}")
}

/// The key as an SQL tuple over `exprs` (one per key column), collated where needed.
fn key_tuple(key: &[KeyCol], exprs: &[String]) -> String {
    let parts: Vec<String> = key
        .iter()
        .zip(exprs)
        .map(|(k, e)| {
            if k.collate {
                format!("{e} COLLATE \"C\"")
            } else {
                e.clone()
            }
        })
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("({})", parts.join(", "))
    }
}

/// A key value as an SQL tuple of typed literals.
fn key_literal(key: &[KeyCol], val: &KeyVal) -> String {
    let parts: Vec<String> = key
        .iter()
        .zip(val)
        .map(|(k, v)| format!("{}::{}", literal(v), k.cast))
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("({})", parts.join(", "))
    }
}

impl Shape {
    fn column_exprs(&self) -> Vec<String> {
        self.key.iter().map(|k| quote_ident(&k.name)).collect()
    }

    /// The key columns' text (`"k"::text`), as every query that reads keys back selects them.
    fn key_texts(&self) -> Vec<String> {
        self.column_exprs()
            .iter()
            .map(|c| format!("{c}::text"))
            .collect()
    }

    fn alias_exprs(&self) -> Vec<String> {
        (0..self.key.len()).map(alias).collect()
    }

    /// `key ORDER BY` list over the subquery aliases.
    fn order_by(&self) -> String {
        let a = self.alias_exprs();
        self.key
            .iter()
            .zip(&a)
            .map(|(k, e)| {
                if k.collate {
                    format!("{e} COLLATE \"C\"")
                } else {
                    e.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The predicate for a key range, over the table's columns (`true` if unbounded).
    pub fn range_pred(&self, r: &Range) -> String {
        let k = key_tuple(&self.key, &self.column_exprs());
        let mut parts = Vec::new();
        if let Some(lo) = &r.lower {
            parts.push(format!("{k} >= {}", key_literal(&self.key, lo)));
        }
        if let Some(hi) = &r.upper {
            parts.push(format!("{k} < {}", key_literal(&self.key, hi)));
        }
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" AND ")
        }
    }

    /// The chunk number (0..=bounds.len()) of a row, over the subquery aliases: a binary
    /// search over `bounds` (sorted) as nested `CASE`.
    pub fn bucket_expr(&self, bounds: &[KeyVal]) -> String {
        let k = key_tuple(&self.key, &self.alias_exprs());
        let mut s = String::new();
        self.gen_bucket(&k, bounds, 0, bounds.len(), &mut s);
        s
    }

    fn gen_bucket(&self, k: &str, bounds: &[KeyVal], lo: usize, hi: usize, s: &mut String) {
        if lo == hi {
            let _ = write!(s, "{lo}");
            return;
        }
        let mid = (lo + hi).div_ceil(2);
        let _ = write!(
            s,
            "CASE WHEN {k} < {} THEN ",
            key_literal(&self.key, &bounds[mid - 1])
        );
        self.gen_bucket(k, bounds, lo, mid - 1, s);
        s.push_str(" ELSE ");
        self.gen_bucket(k, bounds, mid, hi, s);
        s.push_str(" END");
    }

    /// `SELECT key aliases, row text FROM ONLY table WHERE pred` (the subquery every hash
    /// query reads; `OFFSET 0` keeps the planner from computing the row text twice).
    fn inner(&self, pred: &str, sample: Option<f64>) -> String {
        let mut sel: Vec<String> = self
            .column_exprs()
            .iter()
            .zip(self.alias_exprs())
            .map(|(c, a)| format!("{c} AS {a}"))
            .collect();
        let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(c)).collect();
        sel.push(format!(
            "ROW({})::text COLLATE \"C\" AS pgshift_r",
            cols.join(", ")
        ));
        let sample = sample
            .map(|pct| format!(" TABLESAMPLE SYSTEM ({pct})"))
            .unwrap_or_default();
        format!(
            "SELECT {} FROM ONLY {}{sample} WHERE {pred} OFFSET 0",
            sel.join(", "),
            self.table
        )
    }

    /// Per-chunk row count and the two hash sums (as text: they are `numeric`) of the rows
    /// matching `pred`, chunked by `bounds`: rows of `(chunk, count, sum1, sum2)`.
    pub fn hash_query(&self, bounds: &[KeyVal], pred: &str) -> String {
        let bucket = if self.key.is_empty() {
            "0".to_owned()
        } else {
            self.bucket_expr(bounds)
        };
        format!(
            "SELECT {bucket} AS pgshift_chunk, count(*)::int8, \
             sum(pg_catalog.hashtextextended(pgshift_r, {SEED1}))::text, \
             sum(pg_catalog.hashtextextended(pgshift_r, {SEED2}))::text \
             FROM ({}) pgshift_s GROUP BY 1",
            self.inner(pred, None)
        )
    }

    /// Every row of a key range as `(key text..., hash1, hash2)`, in key order.
    pub fn rows_query(&self, pred: &str) -> String {
        let keys: Vec<String> = self
            .alias_exprs()
            .iter()
            .map(|a| format!("{a}::text"))
            .collect();
        format!(
            "SELECT {}, pg_catalog.hashtextextended(pgshift_r, {SEED1}), \
             pg_catalog.hashtextextended(pgshift_r, {SEED2}) FROM ({}) pgshift_s ORDER BY {}",
            keys.join(", "),
            self.inner(pred, None),
            self.order_by()
        )
    }

    /// Keys spaced `step` rows apart in key order, among the rows matching `pred` (of a
    /// `TABLESAMPLE SYSTEM (pct)` sample when `sample` is given): the rows numbered
    /// `step + 1`, `2 step + 1`, ... (never the first row, so every key returned is above the
    /// range's lower bound).
    pub fn sample_query(&self, pred: &str, sample: Option<f64>, step: u64) -> String {
        let keys: Vec<String> = self
            .alias_exprs()
            .iter()
            .map(|a| format!("{a}::text"))
            .collect();
        let sel: Vec<String> = self
            .column_exprs()
            .iter()
            .zip(self.alias_exprs())
            .map(|(c, a)| format!("{c} AS {a}"))
            .collect();
        let sample = sample
            .map(|pct| format!(" TABLESAMPLE SYSTEM ({pct})"))
            .unwrap_or_default();
        let step = step.max(1);
        format!(
            "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS pgshift_rn \
             FROM (SELECT {} FROM ONLY {}{sample} WHERE {pred}) pgshift_t) pgshift_s \
             WHERE pgshift_rn % {step} = {} AND pgshift_rn > 1 ORDER BY pgshift_rn",
            keys.join(", "),
            self.alias_exprs().join(", "),
            self.order_by(),
            sel.join(", "),
            self.table,
            1 % step,
        )
    }

    /// The text of the keys of up to `n` rows, any rows (no order: no sort of a big table).
    pub fn any_keys_query(&self, n: usize) -> String {
        let sel = self.key_texts();
        format!(
            "SELECT {} FROM ONLY {} LIMIT {n}",
            sel.join(", "),
            self.table
        )
    }

    /// How many rows have one of `keys`.
    pub fn count_keys_query(&self, keys: &[KeyVal]) -> String {
        format!(
            "SELECT count(*) FROM ONLY {} WHERE {}",
            self.table,
            self.keys_pred(keys)
        )
    }

    /// The predicate "key is one of `keys`".
    pub fn keys_pred(&self, keys: &[KeyVal]) -> String {
        let k = key_tuple(&self.key, &self.column_exprs());
        let lits: Vec<String> = keys.iter().map(|v| key_literal(&self.key, v)).collect();
        format!("{k} IN ({})", lits.join(", "))
    }

    /// For the rows with these keys: `(key text..., extra)`, where `extra` is a list of text
    /// expressions over the table (system columns: `xmin::text`, `ctid::text`).
    pub fn system_query(&self, keys: &[KeyVal], extra: &str) -> String {
        let sel = self.key_texts();
        format!(
            "SELECT {}, {extra} FROM ONLY {} WHERE {}",
            sel.join(", "),
            self.table,
            self.keys_pred(keys)
        )
    }

    /// For the rows with these keys: `(key text..., md5 of each hashed column's text)`, to
    /// name the columns that differ.
    /// With `show_values` > 0, each column's value as text follows the hashes, cut to one
    /// character more than shown (so that a cut can be told).
    pub fn columns_query(&self, keys: &[KeyVal], show_values: usize) -> String {
        let mut sel = self.key_texts();
        for c in &self.columns {
            sel.push(format!("pg_catalog.md5(ROW({})::text)", quote_ident(c)));
        }
        if show_values > 0 {
            for c in &self.columns {
                sel.push(format!(
                    "pg_catalog.left(({})::text, {})",
                    quote_ident(c),
                    show_values + 1
                ));
            }
        }
        format!(
            "SELECT {} FROM ONLY {} WHERE {}",
            sel.join(", "),
            self.table,
            self.keys_pred(keys)
        )
    }
}

/// A `ctid` range predicate for blocks `[lo, hi)`; either end open when `None`.
pub fn ctid_pred(lo: Option<i64>, hi: Option<i64>) -> String {
    match (lo, hi) {
        (None, None) => "true".into(),
        (Some(a), None) => format!("ctid >= '({a},0)'::tid"),
        (None, Some(b)) => format!("ctid < '({b},0)'::tid"),
        (Some(a), Some(b)) => format!("ctid >= '({a},0)'::tid AND ctid < '({b},0)'::tid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(key: &[(&str, &str, bool)]) -> Shape {
        Shape {
            table: "\"public\".\"t\"".into(),
            columns: vec!["id".into(), "v".into()],
            key: key
                .iter()
                .map(|(n, c, coll)| KeyCol {
                    name: n.to_string(),
                    cast: c.to_string(),
                    collate: *coll,
                })
                .collect(),
        }
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\b"), "'a\\b'");
    }

    #[test]
    fn range_predicates() {
        let s = shape(&[("id", "integer", false)]);
        assert_eq!(s.range_pred(&Range::default()), "true");
        let r = Range {
            lower: Some(vec!["10".into()]),
            upper: Some(vec!["20".into()]),
        };
        assert_eq!(
            s.range_pred(&r),
            "\"id\" >= '10'::integer AND \"id\" < '20'::integer"
        );
        let s = shape(&[("a", "text", true), ("b", "integer", false)]);
        let r = Range {
            lower: None,
            upper: Some(vec!["x'y".into(), "3".into()]),
        };
        assert_eq!(
            s.range_pred(&r),
            "(\"a\" COLLATE \"C\", \"b\") < ('x''y'::text, '3'::integer)"
        );
    }

    #[test]
    fn buckets_are_a_binary_search() {
        let s = shape(&[("id", "integer", false)]);
        assert_eq!(s.bucket_expr(&[]), "0");
        assert_eq!(
            s.bucket_expr(&[vec!["5".into()]]),
            "CASE WHEN pgshift_k0 < '5'::integer THEN 0 ELSE 1 END"
        );
        let b: Vec<KeyVal> = ["10", "20", "30"]
            .iter()
            .map(|x| vec![x.to_string()])
            .collect();
        assert_eq!(
            s.bucket_expr(&b),
            "CASE WHEN pgshift_k0 < '20'::integer THEN CASE WHEN pgshift_k0 < '10'::integer THEN 0 ELSE 1 END \
             ELSE CASE WHEN pgshift_k0 < '30'::integer THEN 2 ELSE 3 END END"
        );
        // Every bucket number appears exactly once.
        let b: Vec<KeyVal> = (0..100).map(|x| vec![x.to_string()]).collect();
        let e = s.bucket_expr(&b);
        for i in 0..=100 {
            let n =
                e.matches(&format!("THEN {i} ")).count() + e.matches(&format!("ELSE {i} ")).count();
            assert_eq!(n, 1, "bucket {i}");
        }
    }

    #[test]
    fn hash_query_shape() {
        let s = shape(&[("id", "integer", false)]);
        let q = s.hash_query(&[], "true");
        assert!(
            q.contains("ROW(\"id\", \"v\")::text COLLATE \"C\" AS pgshift_r"),
            "{q}"
        );
        assert!(
            q.contains("FROM ONLY \"public\".\"t\" WHERE true OFFSET 0"),
            "{q}"
        );
        assert!(q.starts_with("SELECT 0 AS pgshift_chunk"), "{q}");
        let whole = Shape {
            key: vec![],
            ..s.clone()
        };
        assert!(whole.hash_query(&[], "true").starts_with("SELECT 0 AS"));
    }

    #[test]
    fn ctid_ranges() {
        assert_eq!(ctid_pred(None, None), "true");
        assert_eq!(
            ctid_pred(Some(0), Some(8)),
            "ctid >= '(0,0)'::tid AND ctid < '(8,0)'::tid"
        );
        assert_eq!(ctid_pred(Some(8), None), "ctid >= '(8,0)'::tid");
    }
}
