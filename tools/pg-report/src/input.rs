//! Reading the JSON lines a report is made of: migrate.sh's report, load-gen's run output and
//! window-advisor's recommendation (all documented in shared/PROTOCOL.md).
//!
//! Records stay `serde_json::Value`s: the page prints their fields as they are, and a field
//! that a later producer adds or leaves out must not make the report fail. Only what the
//! report cannot do without is checked here, each with a message naming the file and the fix.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use shared::jsonl::{records, RawRecord};
use shared::{err, ErrorKind};

/// One migration: the records of one migrate.sh run.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Its name in the page: the demo's `migration` tag, else the file's stem.
    pub label: String,
    /// The file it came from.
    pub file: String,
    /// migrate.sh's `summary` (success or failure).
    pub summary: Value,
    /// The `phase` records, in order.
    pub phases: Vec<Value>,
    /// The `proof` records (pg-switch's, passed through), in order.
    pub proofs: Vec<Value>,
    /// demo.sh's `load` record for this migration (load-gen's summary fields), if any.
    pub load: Option<Value>,
    /// demo.sh's `load_verified` record (`load-gen verify`'s totals), if any.
    pub load_verified: Option<Value>,
}

impl Migration {
    /// The phase record called `name`.
    pub fn phase(&self, name: &str) -> Option<&Value> {
        self.phases.iter().find(|p| p["name"] == name)
    }
}

/// One load-gen run: its `start`, `tick`s and `summary`.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// The file it came from.
    pub file: String,
    /// `start.started_at` as epoch milliseconds: `t_ms` 0 of the ticks (load-gen takes both
    /// moments one after the other, before the clients start).
    pub started_at_ms: i64,
    /// The `tick` records.
    pub ticks: Vec<Value>,
    /// The `summary` (absent when load-gen was killed).
    pub summary: Option<Value>,
}

/// What window-advisor recommended: `history`, `window`s, and the `forecast` of the horizon.
#[derive(Debug, Clone)]
pub struct Advice {
    /// The file it came from.
    pub file: String,
    /// The `history` record.
    pub history: Option<Value>,
    /// The `window` records, best first.
    pub windows: Vec<Value>,
    /// The `forecast` records (`recommend --forecast`), in time order.
    pub forecast: Vec<Value>,
}

/// All records of a file; a missing or unreadable file is an I/O error (74), a line that is
/// not a JSON record a data error (65), both naming the file.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<RawRecord>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    records(BufReader::new(f))
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("{}: not JSON lines", path.display()))
}

fn data_err(path: &Path, what: String) -> anyhow::Error {
    err(ErrorKind::DataErr, format!("{}: {what}", path.display()))
}

/// The migrations of a migrate.sh report (`migrate.sh --report FILE`, or its stdout), or of
/// demo.sh's combined report, whose records carry a `migration` tag: then every tagged group
/// is one migration and untagged records (the hosts, the demo's own summary) are skipped.
pub fn migrations(path: &Path) -> anyhow::Result<Vec<Migration>> {
    let recs = read_records(path)?;
    let tagged = recs.iter().any(|r| r.value.get("migration").is_some());
    // Groups in the order their first record appears.
    let mut groups: Vec<(String, Vec<&RawRecord>)> = Vec::new();
    for r in &recs {
        let label = if tagged {
            match r.value.get("migration").and_then(Value::as_str) {
                Some(l) => l.to_owned(),
                None => continue,
            }
        } else {
            path.file_stem()
                .map_or_else(|| "migration".into(), |s| s.to_string_lossy().into_owned())
        };
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, g)) => g.push(r),
            None => groups.push((label, vec![r])),
        }
    }
    let fix =
        "pass the file that `migrate.sh --report FILE` wrote (or its stdout), after the run ended";
    if groups.is_empty() {
        return Err(data_err(path, format!("no records of a migration; {fix}")));
    }
    let mut out = Vec::new();
    for (label, g) in groups {
        let of = |t: &str| -> Vec<Value> {
            g.iter()
                .filter(|r| r.kind == t)
                .map(|r| r.value.clone())
                .collect()
        };
        if !g.iter().any(|r| r.kind == "phase" || r.kind == "resume") {
            return Err(data_err(
                path,
                format!(
                    "no migrate.sh records (`resume`, `phase`) for {label}: is this another tool's output? {fix}"
                ),
            ));
        }
        let summary = of("summary").pop().ok_or_else(|| {
            data_err(
                path,
                format!(
                    "no `summary` record for {label}: the run was cut short or the file is incomplete; {fix}"
                ),
            )
        })?;
        out.push(Migration {
            label,
            file: path.display().to_string(),
            summary,
            phases: of("phase"),
            proofs: of("proof"),
            load: of("load").pop(),
            load_verified: of("load_verified").pop(),
        });
    }
    Ok(out)
}

/// A load-gen run's output (its stdout, ticks included).
pub fn load_run(path: &Path) -> anyhow::Result<LoadRun> {
    let recs = read_records(path)?;
    let start = recs.iter().find(|r| r.kind == "start").ok_or_else(|| {
        data_err(
            path,
            "no load-gen `start` record; pass load-gen's stdout of the run (`load-gen --dsn ... > FILE`)"
                .into(),
        )
    })?;
    let started_at = start.value["started_at"].as_str().ok_or_else(|| {
        data_err(
            path,
            format!("line {}: `start` has no `started_at` string", start.line),
        )
    })?;
    let started_at_ms = epoch_ms(started_at).map_err(|e| {
        data_err(
            path,
            format!("line {}: `started_at` {started_at:?}: {e}", start.line),
        )
    })?;
    let ticks: Vec<Value> = recs
        .iter()
        .filter(|r| r.kind == "tick")
        .map(|r| r.value.clone())
        .collect();
    if let Some(bad) = recs
        .iter()
        .find(|r| r.kind == "tick" && r.value["t_ms"].as_i64().is_none())
    {
        return Err(data_err(
            path,
            format!("line {}: `tick` has no integer `t_ms`", bad.line),
        ));
    }
    let summary = recs
        .iter()
        .rev()
        .find(|r| r.kind == "summary")
        .map(|r| r.value.clone());
    Ok(LoadRun {
        file: path.display().to_string(),
        started_at_ms,
        ticks,
        summary,
    })
}

/// window-advisor's recommend output (`window-advisor recommend --forecast ...`).
pub fn advice(path: &Path) -> anyhow::Result<Advice> {
    let recs = read_records(path)?;
    let of = |t: &str| -> Vec<Value> {
        recs.iter()
            .filter(|r| r.kind == t)
            .map(|r| r.value.clone())
            .collect()
    };
    let a = Advice {
        file: path.display().to_string(),
        history: of("history").pop(),
        windows: of("window"),
        forecast: of("forecast"),
    };
    if a.windows.is_empty() {
        return Err(data_err(
            path,
            "no `window` records; pass the output of `window-advisor recommend --forecast`".into(),
        ));
    }
    if a.forecast.is_empty() {
        return Err(data_err(
            path,
            "no `forecast` records, so there is no week to draw; run `window-advisor recommend` with `--forecast`".into(),
        ));
    }
    if let Some(bad) = a
        .forecast
        .iter()
        .find(|f| f["t"].as_str().map(epoch_ms).is_none_or(|r| r.is_err()))
    {
        return Err(data_err(
            path,
            format!("a `forecast` record has no RFC 3339 `t`: {bad}"),
        ));
    }
    Ok(a)
}

/// RFC 3339 to epoch milliseconds.
pub fn epoch_ms(ts: &str) -> anyhow::Result<i64> {
    let t: jiff::Timestamp = ts.parse().context("not an RFC 3339 time")?;
    Ok(t.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_epoch_ms() {
        assert_eq!(epoch_ms("1970-01-01T00:00:01.250Z").unwrap(), 1250);
        assert_eq!(
            epoch_ms("2026-11-25T19:27:52.591Z").unwrap(),
            1_795_634_872_591
        );
        assert!(epoch_ms("yesterday").is_err());
    }
}
