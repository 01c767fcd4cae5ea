//! Reading metric history: `sample` records, load-gen `tick` records, and CSV.
//!
//! Everything becomes one [`Table`]: a time column (epoch milliseconds) and one column per
//! numeric metric, `NaN` where a row has no value. Columns are not fixed, so that any metric
//! export can be fed in and `--metric` can name any of them. A value that is present but not
//! a number is remembered per column and becomes an error only if that column is the one
//! being modelled: a text column like `host` in a CSV export is harmless, `tps = "abc"` is not.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use shared::{ErrorKind, ResultExt};

use crate::time::{epoch_number, parse_time, Zone};

/// Fields of JSON records that are not metrics.
const META_FIELDS: &[&str] = &[
    "type",
    "t",
    "time",
    "timestamp",
    "ts",
    "at",
    "interval_s",
    "elapsed_s",
    "elapsed_ms",
    "t_ms",
    "interval_ms",
    "source",
    "started_at",
    "start",
];

/// Names of the time column in a CSV, tried in this order (case-insensitive).
pub const CSV_TIME_COLUMNS: &[&str] = &["t", "time", "timestamp", "ts", "date", "datetime"];

/// Cell texts that mean "no value" rather than "not a number".
const MISSING: &[&str] = &["", "nan", "null", "none", "na", "n/a", "-"];

/// The input format of a history file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON lines if the first character is `{`, else CSV (`.csv` files are always CSV).
    Auto,
    /// JSON lines: `sample` and load-gen `tick` records (other types are skipped).
    Jsonl,
    /// CSV with a header row: a time column and numeric metric columns.
    Csv,
}

/// A value that was there but not a number.
#[derive(Clone, Debug)]
pub struct BadCell {
    /// 1-based line of the first one.
    pub line: usize,
    /// Its text.
    pub text: String,
    /// How many cells of this column were bad.
    pub count: usize,
}

/// Metric history as read: rows in input order.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Epoch milliseconds of each row.
    pub times: Vec<i64>,
    /// Input line of each row (for messages).
    pub lines: Vec<usize>,
    /// Metric columns, `NaN` where a row has no value.
    pub columns: BTreeMap<String, Vec<f64>>,
    /// Non-numeric values per column.
    pub bad: BTreeMap<String, BadCell>,
    /// Records skipped because of their type (e.g. `summary`).
    pub skipped: usize,
    /// `tick` records read.
    pub ticks: usize,
}

impl Table {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    fn push_row(&mut self, t: i64, line: usize) {
        self.times.push(t);
        self.lines.push(line);
        for col in self.columns.values_mut() {
            col.push(f64::NAN);
        }
    }

    fn set(&mut self, name: &str, v: f64) {
        let n = self.times.len();
        let col = self
            .columns
            .entry(name.to_owned())
            .or_insert_with(|| vec![f64::NAN; n]);
        col[n - 1] = v;
    }

    fn bad_cell(&mut self, name: &str, line: usize, text: &str) {
        self.bad
            .entry(name.to_owned())
            .and_modify(|b| b.count += 1)
            .or_insert_with(|| BadCell {
                line,
                text: text.chars().take(40).collect(),
                count: 1,
            });
    }

    /// Record a cell given as text: a number, a "missing" marker, or a bad value.
    fn set_text(&mut self, name: &str, line: usize, text: &str) {
        match text_cell(text) {
            Cell::Num(v) => self.set(name, v),
            Cell::Missing => {
                // Make sure the column exists even if every value is missing.
                let n = self.times.len();
                self.columns
                    .entry(name.to_owned())
                    .or_insert_with(|| vec![f64::NAN; n]);
            }
            Cell::Bad(t) => self.bad_cell(name, line, &t),
        }
    }

    /// The column to model: `wanted` if given (case-insensitive), else the first of `tps`,
    /// `wal_bytes_per_s`, `cpu_pct` present, else the only column.
    pub fn pick_metric(&self, wanted: Option<&str>) -> anyhow::Result<String> {
        let available = || {
            if self.columns.is_empty() {
                "none".to_owned()
            } else {
                self.columns.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        let name = match wanted {
            Some(w) => self
                .columns
                .keys()
                .chain(self.bad.keys())
                .find(|k| k.eq_ignore_ascii_case(w))
                .cloned()
                .ok_or_else(|| {
                    shared::err(
                        ErrorKind::DataErr,
                        format!(
                            "the history has no metric '{w}' (it has: {}); pick one with --metric",
                            available()
                        ),
                    )
                })?,
            None => ["tps", "wal_bytes_per_s", "cpu_pct"]
                .iter()
                .find(|m| self.columns.contains_key(**m))
                .map(|m| (*m).to_owned())
                .or_else(|| {
                    (self.columns.len() == 1).then(|| self.columns.keys().next().unwrap().clone())
                })
                .ok_or_else(|| {
                    shared::err(
                        ErrorKind::DataErr,
                        format!(
                            "the history has no tps, wal_bytes_per_s or cpu_pct column (it has: \
                             {}); name the load metric with --metric",
                            available()
                        ),
                    )
                })?,
        };
        if let Some(b) = self.bad.get(&name) {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "line {}: {name} is '{}', not a number ({} such value{} in the history); \
                     fix or remove those rows, or leave the value empty to mark it missing",
                    b.line,
                    b.text,
                    b.count,
                    if b.count == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(name)
    }
}

/// How to read the history.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The format.
    pub format: Format,
    /// Zone for civil (offset-less) times.
    pub zone: Zone,
    /// Epoch ms at which load-gen started, for ticks that carry only elapsed time.
    pub start_ms: Option<i64>,
}

/// Read a history file (`-` is stdin).
pub fn read_path(path: &Path, opts: &ReadOptions) -> anyhow::Result<Table> {
    let name = path.display().to_string();
    let bytes = if name == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the history from standard input")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("reading the history {name}"))?
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        shared::err(
            ErrorKind::DataErr,
            format!(
                "{name}: not UTF-8 text (invalid byte at offset {}); expected JSON lines or CSV",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let mut format = opts.format;
    if format == Format::Auto {
        format = if name.to_ascii_lowercase().ends_with(".csv") {
            Format::Csv
        } else if text.trim_start().starts_with('{') || text.trim().is_empty() {
            Format::Jsonl
        } else {
            Format::Csv
        };
    }
    // A history is read as a whole, after the fact: elapsed-only ticks need --start (the
    // wall clock now says nothing about when they happened).
    let table = match format {
        Format::Csv => read_csv(&text, opts),
        _ => read_jsonl(&text, opts, Anchor::Required),
    }
    .with_context(|| format!("reading {name}"))?;
    if table.is_empty() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "{name}: no samples (expected `sample` or load-gen `tick` records, or CSV rows \
                 with a time column; see `window-advisor collect --help`)"
            ),
        ));
    }
    Ok(table)
}

/// What to do with ticks that carry only elapsed time and no `--start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// Fail with a message asking for `--start`.
    Required,
    /// Anchor at the wall clock when the first such tick is read (live pipe from load-gen).
    ArrivalIfMissing,
}

/// One value of a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// A number.
    Num(f64),
    /// Explicitly missing (`null`, empty, `NaN`).
    Missing,
    /// Present but not a number (the text).
    Bad(String),
}

/// One `sample` or `tick` record, decoded.
#[derive(Clone, Debug)]
pub struct Row {
    /// Epoch milliseconds.
    pub t: i64,
    /// Input line.
    pub line: usize,
    /// True for a load-gen tick.
    pub tick: bool,
    /// Metric fields in record order.
    pub cells: Vec<(String, Cell)>,
}

/// Decodes JSON-lines records one at a time (so `collect --input -` can stream).
pub struct JsonlDecoder {
    zone: Zone,
    start_ms: Option<i64>,
    anchor: Anchor,
}

impl JsonlDecoder {
    /// A decoder; `anchor` says what to do with elapsed-only ticks without a start time.
    pub fn new(opts: &ReadOptions, anchor: Anchor) -> JsonlDecoder {
        JsonlDecoder {
            zone: opts.zone.clone(),
            start_ms: opts.start_ms,
            anchor,
        }
    }

    /// The row of a `sample` or `tick` record; `None` for other types (a header with
    /// `started_at` anchors later elapsed-only ticks).
    pub fn decode(&mut self, rec: &shared::jsonl::RawRecord) -> anyhow::Result<Option<Row>> {
        let line = rec.line;
        let Value::Object(map) = &rec.value else {
            return Ok(None);
        };
        if rec.kind != "sample" && rec.kind != "tick" {
            if self.start_ms.is_none() {
                if let Some(s) = map
                    .get("started_at")
                    .or_else(|| map.get("start"))
                    .and_then(Value::as_str)
                {
                    self.start_ms = parse_time(s, &self.zone).ok();
                }
            }
            return Ok(None);
        }
        let tick = rec.kind == "tick";
        let t = record_time(map, &self.zone, &mut self.start_ms, tick, self.anchor)
            .map_err(|e| shared::err(ErrorKind::DataErr, format!("line {line}: {e}")))?;
        let mut cells = Vec::with_capacity(map.len());
        for (k, v) in map {
            if META_FIELDS.contains(&k.as_str()) {
                continue;
            }
            let cell = match v {
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.is_finite() => Cell::Num(f),
                    _ => Cell::Bad(n.to_string()),
                },
                Value::String(s) => text_cell(s),
                Value::Null => Cell::Missing,
                // Booleans, arrays and objects are not metrics (e.g. a latency histogram).
                _ => continue,
            };
            cells.push((k.clone(), cell));
        }
        Ok(Some(Row {
            t,
            line,
            tick,
            cells,
        }))
    }
}

/// A cell given as text: a number, a "missing" marker, or a bad value.
pub fn text_cell(text: &str) -> Cell {
    let t = text.trim();
    if MISSING.iter().any(|m| t.eq_ignore_ascii_case(m)) {
        return Cell::Missing;
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Cell::Num(v),
        _ => Cell::Bad(t.chars().take(40).collect()),
    }
}

impl Table {
    /// Append a decoded row.
    pub fn add_row(&mut self, row: &Row) {
        self.push_row(row.t, row.line);
        if row.tick {
            self.ticks += 1;
        }
        for (k, c) in &row.cells {
            match c {
                Cell::Num(v) => self.set(k, *v),
                Cell::Missing => {
                    let n = self.times.len();
                    self.columns
                        .entry(k.clone())
                        .or_insert_with(|| vec![f64::NAN; n]);
                }
                Cell::Bad(text) => self.bad_cell(k, row.line, text),
            }
        }
    }
}

/// Read JSON lines.
pub fn read_jsonl(text: &str, opts: &ReadOptions, anchor: Anchor) -> anyhow::Result<Table> {
    let mut table = Table::default();
    let mut dec = JsonlDecoder::new(opts, anchor);
    for rec in shared::jsonl::records(text.as_bytes()) {
        match dec.decode(&rec?)? {
            Some(row) => table.add_row(&row),
            None => table.skipped += 1,
        }
    }
    Ok(table)
}

/// The time of a `sample` or `tick` record, in epoch ms.
fn record_time(
    map: &serde_json::Map<String, Value>,
    zone: &Zone,
    start_ms: &mut Option<i64>,
    is_tick: bool,
    anchor: Anchor,
) -> Result<i64, String> {
    for key in ["time", "timestamp", "ts", "at"] {
        if let Some(v) = map.get(key) {
            return value_time(v, zone).map_err(|e| format!("{key}: {e}"));
        }
    }
    match map.get("t") {
        Some(Value::String(s)) => return parse_time(s, zone).map_err(|e| format!("t: {e}")),
        Some(Value::Number(n)) if !is_tick => {
            return epoch_number(n.as_f64().unwrap_or(f64::NAN)).map_err(|e| format!("t: {e}"))
        }
        _ => {}
    }
    // A tick with elapsed time only: t or elapsed_s (seconds), t_ms or elapsed_ms (load-gen's
    // milliseconds since its `start` record).
    let num = |k: &str| map.get(k).and_then(Value::as_f64);
    let elapsed_s = num("t")
        .or_else(|| num("elapsed_s"))
        .or_else(|| num("t_ms").map(|ms| ms / 1000.0))
        .or_else(|| num("elapsed_ms").map(|ms| ms / 1000.0));
    let Some(elapsed_s) = elapsed_s.filter(|e| e.is_finite() && *e >= 0.0) else {
        return Err(if is_tick {
            "tick record has no time: expected a string \"time\" or \"t\" (RFC 3339), or an \
             elapsed \"t_ms\" (load-gen) or \"t\"/\"elapsed_s\" in seconds"
                .into()
        } else {
            "sample record has no time: expected \"t\" (RFC 3339 or Unix seconds)".into()
        });
    };
    let base = match (*start_ms, anchor) {
        (Some(s), _) => s,
        (None, Anchor::ArrivalIfMissing) => {
            let now = jiff::Timestamp::now().as_millisecond();
            let s = now - (elapsed_s * 1000.0) as i64;
            *start_ms = Some(s);
            s
        }
        (None, Anchor::Required) => {
            return Err(format!(
                "tick t={elapsed_s} is elapsed time, and the input does not say when the run \
                 started; pass --start TIME (when load-gen started)"
            ))
        }
    };
    Ok(base + (elapsed_s * 1000.0).round() as i64)
}

fn value_time(v: &Value, zone: &Zone) -> Result<i64, String> {
    match v {
        Value::String(s) => parse_time(s, zone),
        Value::Number(n) => epoch_number(n.as_f64().unwrap_or(f64::NAN)),
        other => Err(format!("{other} is not a time")),
    }
}

/// Read CSV with a header row. Columns: a time column (`t`, `time`, `timestamp`, `ts`, `date`
/// or `datetime`), then any metric columns; cells that are empty, `NaN`, `null`, `NA`, `N/A`
/// or `-` are missing values.
pub fn read_csv(text: &str, opts: &ReadOptions) -> anyhow::Result<Table> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .kind_context(ErrorKind::DataErr, "reading the CSV header")?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let time_col = CSV_TIME_COLUMNS
        .iter()
        .find_map(|want| headers.iter().position(|h| h.eq_ignore_ascii_case(want)))
        .ok_or_else(|| {
            shared::err(
                ErrorKind::DataErr,
                format!(
                    "the CSV header ({}) has no time column; name it one of: {}",
                    headers.join(","),
                    CSV_TIME_COLUMNS.join(", ")
                ),
            )
        })?;
    let mut table = Table::default();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            shared::err(ErrorKind::DataErr, format!("line {line}: {e}"))
        })?;
        let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
        if rec.iter().all(|c| c.is_empty()) {
            continue;
        }
        let t = parse_time(&rec[time_col], &opts.zone)
            .map_err(|e| shared::err(ErrorKind::DataErr, format!("line {line}: {e}")))?;
        table.push_row(t, line);
        for (i, cell) in rec.iter().enumerate() {
            if i != time_col {
                table.set_text(&headers[i], line, cell);
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ReadOptions {
        ReadOptions {
            format: Format::Auto,
            zone: Zone::utc(),
            start_ms: None,
        }
    }

    #[test]
    fn samples_and_ticks_with_unknown_fields() {
        let text = r#"{"type":"sample","t":"2026-01-05T00:00:00Z","tps":10.5,"cpu_pct":3,"note":"x"}
{"type":"tick","time":"2026-01-05T00:00:10Z","tps":20,"committed":200,"latency":{"p50":1}}
{"type":"summary","success":true}
"#;
        let t = read_jsonl(text, &opts(), Anchor::Required).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.ticks, 1);
        assert_eq!(t.skipped, 1);
        assert_eq!(t.columns["tps"], vec![10.5, 20.0]);
        assert!(t.columns["cpu_pct"][1].is_nan());
        assert!(t.columns["committed"][0].is_nan());
        // A text field is remembered, and only matters if it is the metric.
        assert!(t.bad.contains_key("note"));
        assert_eq!(t.pick_metric(None).unwrap(), "tps");
        let e = t.pick_metric(Some("note")).unwrap_err();
        assert!(format!("{e:#}").contains("line 1: note is 'x', not a number"));
    }

    #[test]
    fn elapsed_ticks_need_an_anchor() {
        let text = "{\"type\":\"tick\",\"t\":1.0,\"tps\":5}\n";
        let e = read_jsonl(text, &opts(), Anchor::Required).unwrap_err();
        assert!(format!("{e:#}").contains("--start"), "{e:#}");
        let mut o = opts();
        o.start_ms = Some(1_000_000);
        let t = read_jsonl(text, &o, Anchor::Required).unwrap();
        assert_eq!(t.times, vec![1_001_000]);
        // A header record with started_at anchors them too.
        let text = "{\"type\":\"start\",\"started_at\":\"2026-01-05T00:00:00Z\"}\n{\"type\":\"tick\",\"elapsed_s\":2,\"tps\":5}\n";
        let t = read_jsonl(text, &opts(), Anchor::Required).unwrap();
        assert_eq!(t.times, vec![1_767_571_202_000]);
        // load-gen's own shape: a start record, then ticks with t_ms.
        let text = concat!(
            r#"{"type":"start","run_id":"x","started_at":"2026-11-25T19:27:52.591Z","clients":4}"#,
            "\n",
            r#"{"type":"server","id":1,"t_ms":2220}"#,
            "\n",
            r#"{"type":"tick","t_ms":3013,"interval_ms":1000,"committed":872,"tps":872.0,"latency_p50_ms":null,"host":"10.0.0.2:5432","hosts":{"a":1},"connected":4}"#,
            "\n"
        );
        let t = read_jsonl(text, &opts(), Anchor::Required).unwrap();
        assert_eq!(t.times, vec![1_795_634_872_591 + 3013]);
        assert_eq!(t.columns["tps"], vec![872.0]);
        assert!(!t.columns.contains_key("interval_ms"));
        assert_eq!(t.pick_metric(None).unwrap(), "tps");
    }

    #[test]
    fn csv_columns_and_missing_values() {
        let text = "timestamp,tps,host,cpu_pct\n2026-01-05T00:00:00Z,1,a,\n2026-01-05 00:01:00,NaN,b,5\n1767571320,3,c,N/A\n";
        let t = read_csv(text, &opts()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.times[2] - t.times[1], 60_000);
        assert!(t.columns["tps"][1].is_nan());
        assert_eq!(t.columns["cpu_pct"][1], 5.0);
        assert!(t.bad.contains_key("host"));
        assert_eq!(t.pick_metric(None).unwrap(), "tps");

        let e = read_csv("when,tps\n1,2\n", &opts()).unwrap_err();
        assert!(format!("{e:#}").contains("no time column"));
        let e = read_csv("t,tps\n1,2,3\n", &opts()).unwrap_err();
        assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr);
        let e = read_csv("t,tps\nsoon,2\n", &opts()).unwrap_err();
        assert!(format!("{e:#}").starts_with("line 2: 'soon' is not a time"));
        let t = read_csv("t,tps\n1,abc\n2,3\n", &opts()).unwrap();
        let e = t.pick_metric(None).unwrap_err();
        assert!(format!("{e:#}").contains("line 2: tps is 'abc'"), "{e:#}");
    }

    #[test]
    fn metric_choice_names_what_is_there() {
        let t = read_csv("t,load,other\n1,2,3\n", &opts()).unwrap();
        let e = t.pick_metric(None).unwrap_err();
        assert!(format!("{e:#}").contains("load, other"), "{e:#}");
        assert_eq!(t.pick_metric(Some("LOAD")).unwrap(), "load");
        let e = t.pick_metric(Some("tps")).unwrap_err();
        assert!(format!("{e:#}").contains("no metric 'tps'"));
    }
}
