//! rowcount-diff for a person (`--text`, the default on a terminal): one aligned line per
//! table, and the closing line.

use serde_json::{Map, Value};
use shared::human;

/// The text of one record (see [`shared::human::Render`]).
pub fn render(kind: &str, r: &Map<String, Value>) -> Option<String> {
    match kind {
        "table" => Some(table(r)),
        // The two hosts: where the counts came from.
        "host" => Some(format!(
            "{:<6} {}  ({})",
            str_of(r, "side"),
            str_of(r, "dsn"),
            str_of(r, "lsn")
        )),
        _ => None,
    }
}

fn str_of<'a>(r: &'a Map<String, Value>, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

fn count(r: &Map<String, Value>, k: &str) -> String {
    r.get(k)
        .and_then(Value::as_i64)
        .map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// `DIFFERS  public.orders   20000  19998  -2` with the reason for a column or presence
/// difference.
fn table(r: &Map<String, Value>) -> String {
    let equal = r.get("equal").and_then(Value::as_bool).unwrap_or(false);
    let name = format!("{}.{}", str_of(r, "schema"), str_of(r, "name"));
    let (src, tgt) = (count(r, "source_rows"), count(r, "target_rows"));
    let mut why = Vec::new();
    if let Some(side) = r.get("missing_on").and_then(Value::as_str) {
        why.push(format!("missing on {side}"));
    }
    if let (Some(a), Some(b)) = (
        r.get("source_rows").and_then(Value::as_i64),
        r.get("target_rows").and_then(Value::as_i64),
    ) {
        if a != b {
            why.push(format!("{:+} rows on target", b - a));
        }
    }
    for (k, side) in [
        ("columns_only_on_source", "source"),
        ("columns_only_on_target", "target"),
    ] {
        if let Some(cols) = r.get(k).and_then(Value::as_array) {
            let cols: Vec<&str> = cols.iter().filter_map(Value::as_str).collect();
            why.push(format!("columns only on {side}: {}", cols.join(", ")));
        }
    }
    if let Some(diffs) = r.get("column_type_diffs").and_then(Value::as_array) {
        for d in diffs {
            why.push(format!(
                "{}: {} vs {}",
                str_of(d.as_object().unwrap_or(&Map::new()), "column"),
                d["source"].as_str().unwrap_or("?"),
                d["target"].as_str().unwrap_or("?")
            ));
        }
    }
    if r.get("exact") == Some(&Value::Bool(false)) {
        why.push("estimated".into());
    }
    format!(
        "{:<7}  {name:<40} {src:>12} {tgt:>12}  {}",
        if equal { "equal" } else { "DIFFERS" },
        why.join("; ")
    )
    .trim_end()
    .to_owned()
}

/// `5 of 8 tables differ` / `all 8 tables have the same row counts`.
pub fn closing(s: &Map<String, Value>) -> Option<String> {
    let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    let code = n("exit_code");
    let mut line = if code > 1 {
        format!("failed (exit {code})")
    } else if n("different") == 0 {
        format!(
            "row counts equal in {}",
            human::plural(n("tables"), "table")
        )
    } else {
        format!(
            "{} of {} differ",
            n("different"),
            human::plural(n("tables"), "table")
        )
    };
    if n("errors") > 0 {
        line.push_str(&format!(", {}", human::plural(n("errors"), "error")));
    }
    Some(line + &human::elapsed(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_differing_table_says_why() {
        let r = json!({"schema":"public","name":"events","equal":false,"source_rows":10,"target_rows":8,
            "exact":true,"missing_on":null,"columns_equal":false,"columns_only_on_target":["src"]});
        let line = table(r.as_object().unwrap());
        assert!(line.starts_with("DIFFERS  public.events"), "{line}");
        assert!(
            line.contains("10            8  -2 rows on target; columns only on target: src"),
            "{line}"
        );
    }

    #[test]
    fn closing_counts_the_tables() {
        let s = json!({"exit_code":1,"tables":8,"different":5,"errors":0,"elapsed_ms":842});
        assert_eq!(
            closing(s.as_object().unwrap()).unwrap(),
            "5 of 8 tables differ, in 842 ms"
        );
        let s = json!({"exit_code":0,"tables":1,"different":0,"errors":0});
        assert_eq!(
            closing(s.as_object().unwrap()).unwrap(),
            "row counts equal in 1 table"
        );
    }
}
