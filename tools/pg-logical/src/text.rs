//! pg-logical's records as a person reads them on a terminal.

use serde_json::{Map, Value};

fn s<'a>(r: &'a Map<String, Value>, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

fn bytes(r: &Map<String, Value>, k: &str) -> String {
    r.get(k)
        .and_then(Value::as_f64)
        .map_or("?".into(), shared::human::bytes)
}

/// One record as text (`None`: the generic rendering).
pub fn render(kind: &str, r: &Map<String, Value>) -> Option<String> {
    match kind {
        "check" => {
            let mark = match s(r, "severity") {
                "refuse" => "refused",
                "warn" => "warning",
                _ => "ok",
            };
            let db = r
                .get("database")
                .and_then(Value::as_str)
                .map(|d| format!("{d}: "))
                .unwrap_or_default();
            Some(format!(
                "{mark:<8} {db}{}: {}",
                s(r, "name"),
                s(r, "message")
            ))
        }
        "proof" => {
            let db = r
                .get("database")
                .and_then(Value::as_str)
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let detail = match s(r, "name") {
                "fenced_lsn" => format!(" at {}", s(r, "lsn")),
                "slot_confirmed" => {
                    format!(" {} >= {}", s(r, "confirmed_flush_lsn"), s(r, "fenced_lsn"))
                }
                _ => String::new(),
            };
            Some(format!("proof    {}{db}{detail}", s(r, "name")))
        }
        "copy_progress" => Some(format!(
            "copy     {} of {} tables, {} of {}, {}/s",
            r.get("tables_ready")
                .map(Value::to_string)
                .unwrap_or_default(),
            r.get("tables_total")
                .map(Value::to_string)
                .unwrap_or_default(),
            bytes(r, "bytes_done"),
            bytes(r, "bytes_total"),
            bytes(r, "bytes_per_s"),
        )),
        "lag" => Some(format!(
            "lag      {} (source writes {}/s, target confirms {}/s)",
            bytes(r, "lag_bytes"),
            bytes(r, "source_wal_bytes_per_s"),
            bytes(r, "apply_bytes_per_s")
        )),
        _ => None,
    }
}

/// The closing line.
pub fn closing(summary: &Map<String, Value>) -> Option<String> {
    if summary.get("exit_code").and_then(Value::as_u64) != Some(0) {
        return None;
    }
    let state = s(summary, "state");
    Some(match state {
        "fenced" => format!(
            "source fenced at {}, every proof held",
            s(summary, "fenced_lsn")
        ),
        "open" => format!(
            "the target takes writes; downtime {}",
            summary
                .get("downtime_ms")
                .and_then(Value::as_f64)
                .map_or("?".into(), shared::human::duration_ms)
        ),
        "" => return None,
        other => format!("state: {other}{}", shared::human::elapsed(summary)),
    })
}
