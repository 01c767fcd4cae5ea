//! What a person reads: records as text on a terminal, JSON lines on a pipe (ripgrep and
//! cargo do the same), and one closing line on stderr.
//!
//! The mode is chosen once per process: `--json` or `--text` (see [`OutputArgs`]), else text
//! exactly when stdout is a terminal. In text mode [`crate::Output`] renders each record
//! with the tool's [`Render`] (registered with [`register`]), falling back to [`generic`]:
//! sizes, rates and durations in human units. The `summary` becomes the closing line on
//! stderr ([`Closing`]); `error` and `note` records are already there as messages. The JSON
//! records themselves never change: a pipe gets them whole.

use std::io::IsTerminal;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// How stdout is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// JSON lines (the default on a pipe).
    Json,
    /// Text for a person (the default on a terminal).
    Text,
}

static MODE: OnceLock<Mode> = OnceLock::new();
static TOOL_TEXT: OnceLock<(Render, Closing)> = OnceLock::new();

/// A tool's text for one record (`kind`, its fields without `type`): `Some(text)` (empty:
/// nothing is written), or `None` for the generic rendering.
pub type Render = fn(kind: &str, rec: &Map<String, Value>) -> Option<String>;

/// A tool's closing line from its summary (without the `tool: ` prefix), or `None` for the
/// generic one.
pub type Closing = fn(summary: &Map<String, Value>) -> Option<String>;

/// The output options every tool has: flatten into the tool's clap struct, then call
/// [`OutputArgs::apply`] once.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Write JSON lines on stdout even on a terminal (the default on a pipe)
    #[arg(long, global = true, conflicts_with = "text")]
    pub json: bool,
    /// Write text for a person on stdout even on a pipe (the default on a terminal)
    #[arg(long, global = true)]
    pub text: bool,
}

impl OutputArgs {
    /// Fix this process's mode (the first call wins).
    pub fn apply(&self) {
        let mode = if self.json {
            Mode::Json
        } else if self.text || std::io::stdout().is_terminal() {
            Mode::Text
        } else {
            Mode::Json
        };
        let _ = MODE.set(mode);
    }
}

/// The mode of this process (JSON unless [`OutputArgs::apply`] chose text).
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Json)
}

/// Register the tool's renderings (once, before records are written).
pub fn register(render: Render, closing: Closing) {
    let _ = TOOL_TEXT.set((render, closing));
}

/// The text of one record, or `None` when nothing is to be written for it.
pub fn render_record(kind: &str, rec: &Map<String, Value>) -> Option<String> {
    if let Some((render, _)) = TOOL_TEXT.get() {
        if let Some(text) = render(kind, rec) {
            return (!text.is_empty()).then_some(text);
        }
    }
    match kind {
        // Already on stderr as messages; the summary is the closing line.
        "error" | "note" | "summary" => None,
        _ => Some(generic(kind, rec)),
    }
}

/// The closing line for a summary (without the tool prefix).
pub fn closing_line(summary: &Map<String, Value>) -> String {
    if let Some(line) = TOOL_TEXT.get().and_then(|(_, closing)| closing(summary)) {
        return line;
    }
    let code = summary
        .get("exit_code")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let verdict = match code {
        0 => "ok".to_owned(),
        1 => "differences found".to_owned(),
        n => format!("failed (exit {n})"),
    };
    let mut line = verdict;
    if let Some(by) = summary.get("stopped_by").and_then(Value::as_str) {
        line.push_str(&format!(", stopped by {by}"));
    }
    let errors = summary.get("errors").and_then(Value::as_u64).unwrap_or(0);
    if errors > 0 {
        line.push_str(&format!(", {}", plural(errors, "error")));
    }
    line + &elapsed(summary)
}

/// `, in 1.2 s` from a summary's `elapsed_ms` (empty without one).
pub fn elapsed(summary: &Map<String, Value>) -> String {
    match summary.get("elapsed_ms").and_then(Value::as_u64) {
        Some(ms) => format!(", in {}", duration_ms(ms as f64)),
        None => String::new(),
    }
}

/// `1 table`, `3 tables`.
pub fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The generic text of a record: `kind  key value, ...`, values in human units.
pub fn generic(kind: &str, rec: &Map<String, Value>) -> String {
    let fields: Vec<String> = rec
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| format!("{} {}", k.replace('_', " "), value(k, v)))
        .collect();
    format!("{kind:<10} {}", fields.join(", "))
}

/// One value as a person reads it, by its field name: `*bytes` as sizes, `*_bytes_per_s` as
/// rates, `*_ms` as durations, `{"text": ..}` as its text, numbers without needless digits.
pub fn value(key: &str, v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if key.ends_with("bytes_per_s") {
                format!("{}/s", bytes(x))
            } else if key.ends_with("bytes") || key == "bytes_copied" {
                bytes(x)
            } else if key.ends_with("_ms") && !key.ends_with("at_ms") {
                duration_ms(x)
            } else {
                number(n)
            }
        }
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        Value::Null => "-".to_owned(),
        Value::Array(a) => a
            .iter()
            .map(|x| value(key, x))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(m) => {
            if let Some(Value::String(t)) = m.get("text") {
                return t.clone();
            }
            let parts: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k}={}", value(k, x)))
                .collect();
            parts.join(" ")
        }
    }
}

/// A number: integers as they are, other numbers with three significant digits at most
/// (`33524373.984` → `33524374`, `0.04581` → `0.0458`).
pub fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    let x = n.as_f64().unwrap_or(0.0);
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else if x == 0.0 {
        "0".to_owned()
    } else {
        format!("{x:.3}")
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `12.3 MiB`, `4.0 GiB`.
pub fn bytes(x: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = x;
    let mut u = 0;
    while v.abs() >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{x:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration given in milliseconds: `87 ms`, `1.24 s`, `3m 05s`, `2h 10m`.
pub fn duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        if ms.fract() == 0.0 || ms >= 100.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{ms:.1} ms")
        }
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms < 3_600_000.0 {
        let s = (ms / 1000.0).round() as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        let m = (ms / 60_000.0).round() as u64;
        format!("{}h {:02}m", m / 60, m % 60)
    }
}

/// Cut `s` to at most `max` characters, with `…` when cut (0: no limit).
pub fn truncate(s: &str, max: usize) -> String {
    if max == 0 || s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(33524373.984), "32.0 MiB");
        assert_eq!(bytes(4.0 * 1024.0 * 1024.0 * 1024.0), "4.0 GiB");
        assert_eq!(duration_ms(87.0), "87 ms");
        assert_eq!(duration_ms(3.511), "3.5 ms");
        assert_eq!(duration_ms(1240.0), "1.24 s");
        assert_eq!(duration_ms(185_000.0), "3m 05s");
        assert_eq!(duration_ms(7_800_000.0), "2h 10m");
        assert_eq!(
            number(&serde_json::Number::from_f64(33524373.984).unwrap()),
            "33524374"
        );
        assert_eq!(
            number(&serde_json::Number::from_f64(0.04581).unwrap()),
            "0.046"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("abcdef", 0), "abcdef");
    }

    #[test]
    fn generic_records_read_in_human_units() {
        let rec = map(
            json!({"bandwidth_bytes_per_s": 33524373.984, "wait_ms": 1500,
            "bytes": 2048, "key": {"id": {"text": "7"}}, "started_at_ms": 1795634961751_u64,
            "gone": null, "ok": true}),
        );
        assert_eq!(
            generic("window", &rec),
            "window     bandwidth bytes per s 32.0 MiB/s, wait ms 1.50 s, bytes 2.0 KiB, key id=7, started at ms 1795634961751, ok yes"
        );
    }

    #[test]
    fn closing_lines_say_the_outcome() {
        let s = map(
            json!({"tool": "x", "success": false, "exit_code": 1, "errors": 0, "elapsed_ms": 842}),
        );
        assert_eq!(closing_line(&s), "differences found, in 842 ms");
        let s =
            map(json!({"exit_code": 75, "stopped_by": "SIGINT", "errors": 1, "elapsed_ms": 5012}));
        assert_eq!(
            closing_line(&s),
            "failed (exit 75), stopped by SIGINT, 1 error, in 5.01 s"
        );
    }
}
