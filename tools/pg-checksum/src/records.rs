//! The records pg-checksum writes (documented in `shared/PROTOCOL.md`, `### pg-checksum`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::Record;

use crate::sql::KeyVal;

/// A key value (or chunk bound) as `{"column": {"text": "value"}, ...}` in key order.
pub fn key_json(columns: &[String], val: &KeyVal) -> Value {
    let mut m = Map::new();
    for (c, v) in columns.iter().zip(val) {
        m.insert(c.clone(), serde_json::json!({ "text": v }));
    }
    Value::Object(m)
}

/// Read back what [`key_json`] wrote; `None` for JSON `null` or a malformed value.
pub fn key_from_json(columns: &[String], v: &Value) -> Option<KeyVal> {
    let m = v.as_object()?;
    columns
        .iter()
        .map(|c| m.get(c)?.get("text")?.as_str().map(str::to_owned))
        .collect()
}

/// `host`: where and at which point one host was read.
#[derive(Debug, Serialize, Deserialize, Clone, Default)]
pub struct HostRecord {
    /// `source` or `target` (absent in one-host mode).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub side: Option<String>,
    /// The DSN without password.
    pub dsn: String,
    /// `server_version`.
    pub server_version: String,
    /// True for a hot standby.
    pub in_recovery: bool,
    /// The LSN the snapshot was taken at.
    pub lsn: String,
    /// The exported snapshot id shared by the worker sessions.
    pub snapshot: String,
    /// `pg_control_system().system_identifier` (`null` without the privilege to read it).
    pub system_identifier: Option<String>,
    /// `server_encoding`.
    pub server_encoding: String,
    /// The hash of a fixed text: hosts that disagree on it cannot be compared.
    pub hash_probe: i64,
    /// The snapshot as `pg_current_snapshot()` (`xmin:xmax:xip,...`), when differences are
    /// explained by replay.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub xid_snapshot: Option<String>,
    /// With `--wait-replay`, on the target: the source LSN it replayed before its snapshot.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wait_lsn: Option<String>,
}

impl Record for HostRecord {
    const TYPE: &'static str = "host";
}

/// `table` in two-host and compare mode: one table compared.
#[derive(Debug, Serialize, Default)]
pub struct TableRecord {
    pub schema: String,
    pub name: String,
    /// No (persistent) difference in rows or columns.
    pub equal: bool,
    pub source_rows: i64,
    pub target_rows: i64,
    pub source_hash: String,
    pub target_hash: String,
    /// Key columns the table was chunked by; `null` for a whole-table hash.
    pub key: Option<Vec<String>>,
    /// False for a whole-table hash (no usable key).
    pub chunked: bool,
    /// Number of chunks compared.
    pub chunks: usize,
    /// Chunks whose count or hash differed.
    pub different_chunks: usize,
    /// `row_diff` records written for this table (transient and explained ones included).
    pub row_diffs: usize,
    /// Of those, how many a recheck found equal.
    #[serde(skip_serializing_if = "is_zero")]
    pub transient_row_diffs: usize,
    /// Of those, how many are explained by replay.
    #[serde(skip_serializing_if = "is_zero")]
    pub explained_row_diffs: usize,
    /// True if drill-down stopped at `--max-row-diffs`: more rows may differ, and the table
    /// is not equal unless a recheck finds the rest equal.
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// After `--recheck`, for a table that differed at first: `transient` or `persistent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns_only_on_source: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns_only_on_target: Vec<String>,
    /// Common columns whose type differs (as rowcount-diff reports them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub column_type_diffs: Vec<shared::pg::tables::TypeDiff>,
    /// Why the table was hashed whole, or chunks could not be compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// How a text-like key was ordered: `index (provider:locale:version)` (the key index's
    /// collation, ordered alike on both hosts) or `bytes (COLLATE "C")`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_order: Option<String>,
    /// For an equal table, the evidence: `hashes`, `replay`, `recheck` or `replay, recheck`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equal_because: Option<&'static str>,
    pub source_lsn: String,
    pub target_lsn: String,
    pub elapsed_ms: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Record for TableRecord {
    const TYPE: &'static str = "table";
}

/// `chunk` in two-host and compare mode: a chunk whose count or hash differs.
#[derive(Debug, Serialize)]
pub struct ChunkDiffRecord {
    pub schema: String,
    pub name: String,
    /// Chunk number, from 0 in key order.
    pub index: usize,
    /// Inclusive lower bound (`null`: open).
    pub lower: Value,
    /// Exclusive upper bound (`null`: open).
    pub upper: Value,
    pub source_rows: i64,
    pub target_rows: i64,
    pub source_hash: String,
    pub target_hash: String,
    /// Every difference found in the chunk is explained by replay: equal but for what
    /// committed after the source's snapshot (absent when false).
    #[serde(skip_serializing_if = "is_false")]
    pub explained: bool,
    pub source_lsn: String,
    pub target_lsn: String,
}

impl Record for ChunkDiffRecord {
    const TYPE: &'static str = "chunk";
}

/// `row_diff`: one key whose row differs.
#[derive(Debug, Serialize)]
pub struct RowDiffRecord {
    pub schema: String,
    pub name: String,
    /// The key, `{"column": {"text": "value"}}`.
    pub key: Value,
    /// `missing_on_target`, `extra_on_target` or `changed`.
    pub kind: &'static str,
    /// For `changed`: the columns whose values differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// For `changed`, with `--show-values` above 0: each differing column's values as text,
    /// `{"balance": {"source": "10", "target": "12"}}` (null: NULL; cut values end in `…`).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub values: Map<String, Value>,
    /// After `--recheck`: `transient` (equal when read again) or `persistent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck: Option<&'static str>,
    /// `replay`: proven to come from a transaction the source's snapshot does not see (a
    /// physical standby with `--wait-replay`); not a difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained_by: Option<&'static str>,
    /// With `explained_by`: that transaction (64-bit xid), which created the target's row
    /// version (`changed`, `extra_on_target`) or deleted the source's (`missing_on_target`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xid: Option<String>,
    /// The LSNs of the snapshots the difference was (last) seen in.
    pub source_lsn: String,
    pub target_lsn: String,
}

impl Record for RowDiffRecord {
    const TYPE: &'static str = "row_diff";
}

/// `table` in one-host mode: the checksum of one table on this host.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct HostTableRecord {
    pub schema: String,
    pub name: String,
    pub rows: i64,
    pub hash: String,
    /// Key columns (`null`: whole-table hash).
    pub key: Option<Vec<String>>,
    pub chunked: bool,
    pub chunks: usize,
    /// The hashed columns, in hash order.
    pub columns: Vec<String>,
    pub lsn: String,
}

impl Record for HostTableRecord {
    const TYPE: &'static str = "table";
}

/// `chunk` in one-host mode: every chunk of a keyed table, in key order.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct HostChunkRecord {
    pub schema: String,
    pub name: String,
    pub index: usize,
    pub lower: Value,
    pub upper: Value,
    pub rows: i64,
    pub hash: String,
    /// The snapshot's LSN (absent in files from before it was added).
    #[serde(default)]
    pub lsn: String,
}

impl Record for HostChunkRecord {
    const TYPE: &'static str = "chunk";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let cols = vec!["a".to_string(), "b".to_string()];
        let v = vec!["x\"y".to_string(), "3".to_string()];
        let j = key_json(&cols, &v);
        assert_eq!(j.to_string(), r#"{"a":{"text":"x\"y"},"b":{"text":"3"}}"#);
        assert_eq!(key_from_json(&cols, &j), Some(v));
        assert_eq!(key_from_json(&cols, &Value::Null), None);
    }
}
