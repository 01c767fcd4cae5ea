//! One-host mode: checksum the tables of one host into JSON lines, for hosts that cannot reach
//! each other; `pg-checksum compare` then compares two such files.
//!
//! Chunks can only be compared if both hosts used the same boundaries: run the first host
//! plainly, and the second with `--chunks-from FIRST.jsonl`, which reuses the first file's
//! boundaries. Without it each host samples its own boundaries and `compare` still compares
//! whole tables (chunk sums add up to the table sum whatever the boundaries), just without
//! telling which chunk differs.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::Context;
use serde_json::json;
use shared::pg::tables::{TableFilter, TableName};
use shared::{ErrorKind, Output};

use crate::engine::{block_bytes, check_same_file, hash_table, merge, sample_bounds, Meter, Opts};
use crate::host::{open_pool, Host};
use crate::par::parallel;
use crate::plan::plan_one;
use crate::records::{key_from_json, key_json, HostChunkRecord, HostTableRecord};
use crate::sql::KeyVal;
use crate::sum::Sum;

/// What one-host mode needs from the command line.
pub struct Args<'a> {
    pub dsn: &'a str,
    pub filter: &'a TableFilter,
    pub only: Option<Vec<TableName>>,
    pub whole: TableFilter,
    pub opts: Opts,
    pub chunks_from: Option<&'a Path>,
}

/// Counts for the `summary` record.
#[derive(Debug, Default, serde::Serialize)]
pub struct Counts {
    pub tables: u64,
    pub chunks: u64,
    pub rows: i64,
}

/// Chunk boundaries per table from an earlier one-host output: key columns and bounds.
type Layout = HashMap<TableName, (Vec<String>, Vec<KeyVal>)>;

/// Read the boundaries of every keyed table in a one-host output file.
pub fn read_layout(path: &Path) -> anyhow::Result<Layout> {
    let f = File::open(path)
        .with_context(|| format!("--chunks-from: cannot open {}", path.display()))?;
    let mut keys: HashMap<TableName, Vec<String>> = HashMap::new();
    let mut chunks: HashMap<TableName, Vec<HostChunkRecord>> = HashMap::new();
    for rec in shared::jsonl::records(BufReader::new(f)) {
        let rec = rec.with_context(|| format!("--chunks-from {}", path.display()))?;
        match rec.kind.as_str() {
            "table" => {
                let t: HostTableRecord = rec.parse()?;
                if let Some(k) = t.key {
                    keys.insert(TableName::new(t.schema, t.name), k);
                }
            }
            "chunk" => {
                let c: HostChunkRecord = rec.parse()?;
                chunks
                    .entry(TableName::new(c.schema.clone(), c.name.clone()))
                    .or_default()
                    .push(c);
            }
            _ => {}
        }
    }
    let mut out = Layout::new();
    for (name, key) in keys {
        let mut cs = chunks.remove(&name).unwrap_or_default();
        cs.sort_by_key(|c| c.index);
        let bounds: Option<Vec<KeyVal>> = cs
            .iter()
            .take(cs.len().saturating_sub(1))
            .map(|c| key_from_json(&key, &c.upper))
            .collect();
        let bounds = bounds.ok_or_else(|| {
            shared::err(
                ErrorKind::DataErr,
                format!(
                    "--chunks-from {}: the chunks of {name} have malformed bounds (expected pg-checksum --dsn output)",
                    path.display()
                ),
            )
        })?;
        out.insert(name, (key, bounds));
    }
    Ok(out)
}

/// Run one-host mode.
pub fn run(args: Args<'_>, out: &mut Output) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let layout = match args.chunks_from {
        // Classified by its cause: a file that cannot be read is I/O (74), one that is not
        // pg-checksum output is bad input (65).
        Some(p) => read_layout(p)?,
        None => Layout::new(),
    };
    let mut host = match Host::connect("host", "--dsn", args.dsn).and_then(|mut h| {
        h.begin(args.filter)?;
        Ok(h)
    }) {
        Ok(h) => h,
        Err(e) => {
            out.error(&e, json!({"host": "host"}))?;
            return Ok(counts);
        }
    };
    out.emit(&host.record(false))?;
    if let Err(e) = args.filter.check_selects(&host.names) {
        out.error(&e, json!({}))?;
        return Ok(counts);
    }
    if host.names.is_empty() && args.only.is_none() {
        out.note("no_tables", "no user tables on this host: nothing to hash")?;
    }
    let mut tables = std::mem::take(&mut host.tables);
    if let Some(only) = &args.only {
        tables.retain(|t| only.contains(&t.name));
        for name in only {
            if args.filter.matches(&name.schema, &name.name)
                && !tables.iter().any(|t| &t.name == name)
            {
                let e = shared::err(
                    ErrorKind::DataErr,
                    format!("table {name} (from standard input) does not exist on this host"),
                );
                out.error(&e, json!({"schema": name.schema, "name": name.name}))?;
            }
        }
    }
    let mut plans = Vec::new();
    for t in &tables {
        let whole =
            !args.whole.tables.is_empty() && args.whole.matches(&t.name.schema, &t.name.name);
        match plan_one(&t.name, t, host.keys.get(&t.oid), whole) {
            Ok(p) => {
                if let (Some(n), false) = (&p.note, whole) {
                    shared::warn!("{}: {n}", t.name);
                }
                plans.push(p);
            }
            Err(e) => out.error(&e, json!({"schema": t.name.schema, "name": t.name.name}))?,
        }
    }
    if plans.is_empty() {
        return Ok(counts);
    }
    let pool = match open_pool(host.pool_spec(), args.opts.jobs) {
        Ok(p) => p,
        Err(e) => {
            out.error(&e, json!({"host": "host"}))?;
            return Ok(counts);
        }
    };
    let lsn = host.lsn();
    let opts = args.opts;
    let meter = Meter::start(plans.iter().map(|p| block_bytes(p.blocks[0])).sum());
    let work = |i: usize| -> anyhow::Result<(Vec<KeyVal>, Vec<Sum>)> {
        let p = &plans[i];
        let names = p.key_names();
        let bounds = match layout.get(&p.name) {
            _ if names.is_empty() => Vec::new(),
            Some((k, b)) if *k == names => b.clone(),
            other => {
                if other.is_some() {
                    shared::warn!(
                        "{}: --chunks-from has other key columns; sampling this host's own chunk boundaries",
                        p.name
                    );
                }
                sample_bounds(&pool, &p.shape, p.blocks[0], opts.chunk_rows).wait()?
            }
        };
        let parts = hash_table(&pool, &p.shape, &bounds, p.blocks[0], opts.jobs, &meter)
            .into_iter()
            .map(|x| x.wait())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sums = merge(bounds.len() + 1, parts);
        check_same_file(&pool, &p.shape.table, "host").wait()?;
        Ok((bounds, sums))
    };
    let result = parallel(plans.len(), opts.jobs, work, |i, r| {
        let p = &plans[i];
        let about = json!({"schema": p.name.schema, "name": p.name.name});
        let (bounds, sums) = match r {
            Ok(x) => x,
            Err(e) => {
                let hint = shared::pg::row_security_hint(&e)
                    .map(|h| format!("; or {h}"))
                    .unwrap_or_default();
                let e = e.context(format!(
                    "checksumming {} (leave it out with --exclude {}{hint})",
                    p.name, p.name
                ));
                return out.error(&e, about);
            }
        };
        let keys = p.key_names();
        let total = sums.iter().fold(Sum::default(), |a, b| a + *b);
        if !keys.is_empty() {
            for (i, s) in sums.iter().enumerate() {
                let bound =
                    |b: Option<&KeyVal>| b.map_or(serde_json::Value::Null, |v| key_json(&keys, v));
                out.emit(&HostChunkRecord {
                    schema: p.name.schema.clone(),
                    name: p.name.name.clone(),
                    index: i,
                    lower: bound(i.checked_sub(1).map(|j| &bounds[j])),
                    upper: bound(bounds.get(i)),
                    rows: s.rows,
                    hash: s.hex(),
                    lsn: lsn.clone(),
                })?;
            }
        }
        counts.tables += 1;
        counts.chunks += sums.len() as u64;
        counts.rows += total.rows;
        out.emit(&HostTableRecord {
            schema: p.name.schema.clone(),
            name: p.name.name.clone(),
            rows: total.rows,
            hash: total.hex(),
            key: (!keys.is_empty()).then_some(keys),
            chunked: !p.shape.key.is_empty(),
            chunks: sums.len(),
            columns: p.shape.columns.clone(),
            lsn: lsn.clone(),
        })
    });
    meter.finish();
    result?;
    Ok(counts)
}
