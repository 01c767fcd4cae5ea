//! `pg-checksum compare A B`: compare two one-host outputs (`pg-checksum --dsn`), A as the
//! source and B as the target, with the same `table`/`chunk` records as two-host mode (minus
//! row drill-down, which needs the databases).
//!
//! A file is only as good as the run that wrote it: its `error` records (a table that could
//! not be checksummed is not in it) are passed on, and a file without a final `summary` (a
//! run killed halfway) is an error too, so that what was never checksummed cannot read as
//! equal. Nothing to compare is an error as well.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::Context;
use serde_json::json;
use shared::pg::tables::TableName;
use shared::{ErrorKind, Output, ResultExt};

use crate::model::Counts;
use crate::records::{ChunkDiffRecord, HostChunkRecord, HostRecord, HostTableRecord, TableRecord};
use crate::sum::Sum;

/// One parsed file.
struct Side {
    host: HostRecord,
    tables: BTreeMap<TableName, HostTableRecord>,
    chunks: HashMap<TableName, Vec<HostChunkRecord>>,
    /// The messages of its `error` records, with what they were about.
    errors: Vec<(String, serde_json::Value)>,
    /// Whether it ends with a `summary`.
    finished: bool,
}

fn read(path: &Path) -> anyhow::Result<Side> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut host = None;
    let mut tables = BTreeMap::new();
    let mut chunks: HashMap<TableName, Vec<HostChunkRecord>> = HashMap::new();
    let mut errors = Vec::new();
    let mut finished = false;
    for rec in shared::jsonl::records(BufReader::new(f)) {
        let rec = rec.with_context(|| path.display().to_string())?;
        let ctx = || path.display().to_string();
        match rec.kind.as_str() {
            "host" => host = Some(rec.parse::<HostRecord>().with_context(ctx)?),
            "table" => {
                let t: HostTableRecord = rec.parse().with_context(ctx)?;
                tables.insert(TableName::new(t.schema.clone(), t.name.clone()), t);
            }
            "chunk" => {
                let c: HostChunkRecord = rec.parse().with_context(ctx)?;
                chunks
                    .entry(TableName::new(c.schema.clone(), c.name.clone()))
                    .or_default()
                    .push(c);
            }
            "error" => {
                let v = &rec.value;
                let message = v["message"].as_str().unwrap_or("(no message)").to_owned();
                let about: serde_json::Map<String, serde_json::Value> = ["schema", "name"]
                    .iter()
                    .filter(|k| !v[**k].is_null())
                    .map(|k| ((*k).to_owned(), v[*k].clone()))
                    .collect();
                let about = serde_json::Value::Object(about);
                errors.push((message, about));
            }
            "summary" => finished = true,
            _ => {}
        }
    }
    let host = host.ok_or_else(|| {
        shared::err(
            ErrorKind::DataErr,
            format!(
                "{} has no host record: is it the output of pg-checksum --dsn?",
                path.display()
            ),
        )
    })?;
    for c in chunks.values_mut() {
        c.sort_by_key(|c| c.index);
    }
    Ok(Side {
        host,
        tables,
        chunks,
        errors,
        finished,
    })
}

fn sum_of(rows: i64, hex: &str, what: &str) -> anyhow::Result<Sum> {
    Sum::from_hex(rows, hex).ok_or_else(|| {
        shared::err(
            ErrorKind::DataErr,
            format!("{what}: malformed hash {hex:?} (expected 32 hex digits)"),
        )
    })
}

/// Compare file `a` (source) with file `b` (target).
pub fn run(a: &Path, b: &Path, out: &mut Output) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let (sa, sb) = (
        read(a).kind_context(ErrorKind::DataErr, format!("reading {}", a.display()))?,
        read(b).kind_context(ErrorKind::DataErr, format!("reading {}", b.display()))?,
    );
    if sa.host.server_encoding != sb.host.server_encoding
        || sa.host.hash_probe != sb.host.hash_probe
    {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the files come from hosts that hash differently (encodings {} and {}, probes {} and {}), so their checksums cannot be compared",
                sa.host.server_encoding, sb.host.server_encoding, sa.host.hash_probe, sb.host.hash_probe
            ),
        ));
    }
    for (path, side) in [(a, &sa), (b, &sb)] {
        for (message, about) in &side.errors {
            let e = shared::err(
                ErrorKind::DataErr,
                format!(
                    "{} records an error, so what it names was not checksummed: {message}",
                    path.display()
                ),
            );
            out.error(&e, about.clone())?;
        }
        if !side.finished {
            let e = shared::err(
                ErrorKind::DataErr,
                format!(
                    "{} ends without a summary record: the run that wrote it was cut short, so \
                     tables may be missing from it; checksum that host again",
                    path.display()
                ),
            );
            out.error(&e, json!({}))?;
        }
    }
    let mut names: Vec<&TableName> = sa.tables.keys().chain(sb.tables.keys()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "neither {} nor {} holds a table: nothing to compare",
                a.display(),
                b.display()
            ),
        ));
    }
    for name in names {
        counts.tables += 1;
        let about = json!({"schema": name.schema, "name": name.name});
        let (ta, tb) = match (sa.tables.get(name), sb.tables.get(name)) {
            (Some(x), Some(y)) => (x, y),
            (x, _) => {
                counts.missing += 1;
                let (has, lacks) = if x.is_some() { (a, b) } else { (b, a) };
                let e = shared::err(
                    ErrorKind::NotFound,
                    format!(
                        "table {name} is in {} but not in {} (create it there, or leave it out with --exclude {name} when checksumming)",
                        has.display(),
                        lacks.display()
                    ),
                );
                out.error(&e, about)?;
                continue;
            }
        };
        let what = format!("table {name}");
        let (s, t) = (
            sum_of(ta.rows, &ta.hash, &what)?,
            sum_of(tb.rows, &tb.hash, &what)?,
        );
        let only = |x: &HostTableRecord, y: &HostTableRecord| -> Vec<String> {
            x.columns
                .iter()
                .filter(|c| !y.columns.contains(c))
                .cloned()
                .collect()
        };
        let (only_a, only_b) = (only(ta, tb), only(tb, ta));
        let (ca, cb) = (
            sa.chunks.get(name).map(Vec::as_slice).unwrap_or_default(),
            sb.chunks.get(name).map(Vec::as_slice).unwrap_or_default(),
        );
        let same_layout = ta.key == tb.key
            && ca.len() == cb.len()
            && ca
                .iter()
                .zip(cb)
                .all(|(x, y)| x.lower == y.lower && x.upper == y.upper);
        let mut different_chunks = 0;
        let mut note = None;
        if s != t {
            if same_layout {
                for (x, y) in ca.iter().zip(cb) {
                    if x.rows != y.rows || x.hash != y.hash {
                        different_chunks += 1;
                        out.emit(&ChunkDiffRecord {
                            schema: name.schema.clone(),
                            name: name.name.clone(),
                            index: x.index,
                            lower: x.lower.clone(),
                            upper: x.upper.clone(),
                            source_rows: x.rows,
                            target_rows: y.rows,
                            source_hash: x.hash.clone(),
                            target_hash: y.hash.clone(),
                            explained: false,
                            source_lsn: ta.lsn.clone(),
                            target_lsn: tb.lsn.clone(),
                        })?;
                    }
                }
            } else if ta.chunked && tb.chunked {
                note = Some(format!(
                    "the two files chunk {name} differently, so only whole tables are compared; checksum the second host with --chunks-from {} to compare chunk by chunk",
                    a.display()
                ));
            }
        }
        let equal = s == t && only_a.is_empty() && only_b.is_empty();
        if equal {
            counts.equal += 1;
        } else {
            counts.different += 1;
            out.mark_differences();
        }
        counts.chunks += ca.len().max(1) as u64;
        counts.different_chunks += different_chunks as u64;
        counts.source_rows += s.rows;
        counts.target_rows += t.rows;
        out.emit(&TableRecord {
            schema: name.schema.clone(),
            name: name.name.clone(),
            equal,
            source_rows: s.rows,
            target_rows: t.rows,
            source_hash: ta.hash.clone(),
            target_hash: tb.hash.clone(),
            key: ta.key.clone(),
            chunked: ta.chunked && same_layout,
            chunks: ta.chunks,
            different_chunks,
            columns_only_on_source: only_a,
            columns_only_on_target: only_b,
            note,
            equal_because: equal.then_some("hashes"),
            source_lsn: ta.lsn.clone(),
            target_lsn: tb.lsn.clone(),
            ..Default::default()
        })?;
    }
    Ok(counts)
}
