//! pg-checksum for a person (`--text`, the default on a terminal): one aligned line per
//! table, each differing row with its values side by side, the closing line.

use serde_json::{Map, Value};
use shared::human;

/// The text of one record (see [`shared::human::Render`]).
pub fn render(kind: &str, r: &Map<String, Value>) -> Option<String> {
    match kind {
        "table" if r.contains_key("equal") => Some(table(r)),
        "row_diff" => Some(row_diff(r)),
        // Differing chunks are the path to the rows; the rows are what a person reads.
        "chunk" if r.contains_key("source_hash") => Some(String::new()),
        "host" => Some(format!(
            "{:<6} {}  (PostgreSQL {}, {}{})",
            s(r, "side"),
            s(r, "dsn"),
            s(r, "server_version")
                .split_whitespace()
                .next()
                .unwrap_or(""),
            s(r, "lsn"),
            if r.get("in_recovery") == Some(&Value::Bool(true)) {
                ", standby"
            } else {
                ""
            }
        )),
        _ => None,
    }
}

fn s<'a>(r: &'a Map<String, Value>, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

fn n(r: &Map<String, Value>, k: &str) -> u64 {
    r.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// `equal    public.orders    20000 rows  4 chunks  hashes  311 ms`.
fn table(r: &Map<String, Value>) -> String {
    let equal = r.get("equal").and_then(Value::as_bool).unwrap_or(false);
    let name = format!("{}.{}", s(r, "schema"), s(r, "name"));
    let rows = if n(r, "source_rows") == n(r, "target_rows") {
        format!("{} rows", n(r, "source_rows"))
    } else {
        format!("{} / {} rows", n(r, "source_rows"), n(r, "target_rows"))
    };
    let mut notes = vec![human::plural(n(r, "chunks"), "chunk")];
    if equal {
        if let Some(b) = r.get("equal_because").and_then(Value::as_str) {
            notes.push(format!("by {b}"));
        }
    } else {
        if n(r, "different_chunks") > 0 {
            notes.push(format!("{} differ", n(r, "different_chunks")));
        }
        if n(r, "row_diffs") > 0 {
            notes.push(human::plural(n(r, "row_diffs"), "row diff"));
        }
        if r.get("truncated") == Some(&Value::Bool(true)) {
            notes.push("truncated at --max-row-diffs".into());
        }
        for (k, side) in [
            ("columns_only_on_source", "source"),
            ("columns_only_on_target", "target"),
        ] {
            if let Some(cols) = r.get(k) {
                notes.push(format!("columns only on {side}: {}", human::value(k, cols)));
            }
        }
        for d in r
            .get("column_type_diffs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            notes.push(format!(
                "column {} is {} on the source, {} on the target",
                d["column"].as_str().unwrap_or("?"),
                d["source"].as_str().unwrap_or("?"),
                d["target"].as_str().unwrap_or("?")
            ));
        }
    }
    if let Some(ms) = r.get("elapsed_ms").and_then(Value::as_f64) {
        notes.push(human::duration_ms(ms));
    }
    format!(
        "{:<7}  {name:<40} {rows:>16}  {}",
        if equal { "equal" } else { "DIFFERS" },
        notes.join(", ")
    )
}

/// `  changed  id=4242` and, for each differing column, `balance: 10 | 12` (source | target).
fn row_diff(r: &Map<String, Value>) -> String {
    let key = r
        .get("key")
        .map(|k| human::value("key", k))
        .unwrap_or_default();
    let mut head = format!(
        "  {:<18} {}.{} {key}",
        s(r, "kind"),
        s(r, "schema"),
        s(r, "name")
    );
    if let Some(by) = r.get("explained_by").and_then(Value::as_str) {
        head.push_str(&format!("  (explained by {by}, xid {})", s(r, "xid")));
    } else if let Some(rc) = r.get("recheck").and_then(Value::as_str) {
        head.push_str(&format!("  ({rc})"));
    }
    let mut lines = vec![head];
    match r.get("values").and_then(Value::as_object) {
        Some(values) => {
            let width = values.keys().map(|c| c.chars().count()).max().unwrap_or(0);
            for (col, v) in values {
                let side = |k: &str| match v.get(k) {
                    Some(Value::String(t)) => t.clone(),
                    _ => "NULL".to_owned(),
                };
                lines.push(format!(
                    "      {col:<width$}  source {}  |  target {}",
                    side("source"),
                    side("target")
                ));
            }
        }
        None => {
            if let Some(cols) = r.get("columns") {
                lines.push(format!("      columns: {}", human::value("columns", cols)));
            }
        }
    }
    lines.join("\n")
}

/// `3 of 8 tables differ (12 rows)` / `8 tables equal (20000 rows)`.
pub fn closing(sm: &Map<String, Value>) -> Option<String> {
    if !sm.contains_key("different") {
        // One host: the checksums written.
        return Some(format!(
            "{} checksummed ({} rows){}",
            human::plural(n(sm, "tables"), "table"),
            n(sm, "rows"),
            human::elapsed(sm)
        ));
    }
    let code = n(sm, "exit_code");
    let mut line = if code > 1 {
        format!("failed (exit {code})")
    } else if n(sm, "different") == 0 && n(sm, "missing") == 0 {
        format!(
            "{} equal ({} rows)",
            human::plural(n(sm, "tables"), "table"),
            n(sm, "source_rows")
        )
    } else {
        format!(
            "{} of {} differ ({} on one side only, {})",
            n(sm, "different"),
            human::plural(n(sm, "tables"), "table"),
            n(sm, "missing"),
            human::plural(n(sm, "row_diffs"), "row diff")
        )
    };
    if n(sm, "errors") > 0 {
        line.push_str(&format!(", {}", human::plural(n(sm, "errors"), "error")));
    }
    Some(line + &human::elapsed(sm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_changed_row_shows_both_values() {
        let r = json!({"schema":"public","name":"accounts","key":{"id":{"text":"4242"}},"kind":"changed",
            "columns":["balance","note"],"values":{"balance":{"source":"10","target":"12"},"note":{"source":null,"target":"x…"}}});
        let text = row_diff(r.as_object().unwrap());
        assert_eq!(
            text,
            "  changed            public.accounts id=4242\n      balance  source 10  |  target 12\n      note     source NULL  |  target x…"
        );
    }

    #[test]
    fn closing_counts() {
        let sm = json!({"exit_code":1,"tables":8,"different":3,"missing":0,"row_diffs":12,"errors":0,"elapsed_ms":1500});
        assert_eq!(
            closing(sm.as_object().unwrap()).unwrap(),
            "3 of 8 tables differ (0 on one side only, 12 row diffs), in 1.50 s"
        );
    }
}
