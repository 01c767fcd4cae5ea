//! load-gen for a person (`--text`, the default on a terminal): a line per tick while it runs
//! and, at the end, a pgbench-style summary.

use serde_json::{Map, Value};
use shared::human::{self, duration_ms};

/// The text of one record (see [`shared::human::Render`]).
pub fn render(kind: &str, r: &Map<String, Value>) -> Option<String> {
    match kind {
        "start" => Some(format!(
            "load-gen: {} workload ({}), {} on {}",
            s(r, "workload"),
            s(r, "protocol"),
            human::plural(u(r, "clients"), "client"),
            s(r, "dsn")
        )),
        "tick" => Some(tick(r)),
        "summary" if r.contains_key("committed") => Some(summary(r)),
        "summary" if r.contains_key("runs") => Some(format!(
            "verified on {}: {} acknowledged, {} present, {} lost, {} unknown ({} committed after all), {} split brain",
            s(r, "verified_on"),
            u(r, "acked"),
            u(r, "present"),
            u(r, "lost"),
            u(r, "unknown"),
            u(r, "unknown_committed"),
            u(r, "split_brain")
        )),
        _ => None,
    }
}

fn s<'a>(r: &'a Map<String, Value>, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("-")
}

fn u(r: &Map<String, Value>, k: &str) -> u64 {
    r.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn ms(r: &Map<String, Value>, k: &str) -> String {
    r.get(k)
        .and_then(Value::as_f64)
        .map_or_else(|| "-".to_owned(), duration_ms)
}

fn errors(r: &Map<String, Value>) -> (u64, String) {
    let by = r.get("errors_by_kind").and_then(Value::as_object);
    let total: u64 = by.map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let parts = by.map_or_else(String::new, |m| {
        m.iter()
            .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    });
    (total, parts)
}

/// `  12.0 s    872 tps  p50 3.5 ms  p99 12.5 ms  errors 3  on 10.0.0.2:5432 (4 connected)`.
fn tick(r: &Map<String, Value>) -> String {
    let t = r.get("t_ms").and_then(Value::as_f64).unwrap_or(0.0) / 1000.0;
    let tps = r.get("tps").and_then(Value::as_f64).unwrap_or(0.0);
    let (errs, _) = errors(r);
    let mut line = format!(
        "{t:>7.1} s {tps:>8.0} tps  p50 {:>8}  p99 {:>8}  errors {errs:<3} on {} ({} connected)",
        ms(r, "latency_p50_ms"),
        ms(r, "latency_p99_ms"),
        s(r, "host"),
        u(r, "connected")
    );
    if u(r, "max_stall_ms") >= 100 {
        line.push_str(&format!("  stall {}", ms(r, "max_stall_ms")));
    }
    line
}

/// The end of a run, as pgbench ends one.
fn summary(r: &Map<String, Value>) -> String {
    let (errs, by) = errors(r);
    let mut lines = vec![
        format!(
            "workload: {} ({}), {}, scale {}",
            s(r, "workload"),
            s(r, "protocol"),
            human::plural(u(r, "clients"), "client"),
            r.get("scale")
                .map_or("-".into(), |v| human::value("scale", v))
        ),
        format!(
            "duration: {}, stopped by {}",
            ms(r, "duration_ms"),
            s(r, "stopped_by")
        ),
        format!(
            "transactions: {} committed ({} tps), {} failed, {} unknown",
            u(r, "committed"),
            r.get("tps").map_or("-".into(), |v| human::value("tps", v)),
            u(r, "failed"),
            u(r, "unknown")
        ),
        format!(
            "latency: average {}, p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            ms(r, "latency_mean_ms"),
            ms(r, "latency_p50_ms"),
            ms(r, "latency_p90_ms"),
            ms(r, "latency_p99_ms"),
            ms(r, "latency_p999_ms"),
            ms(r, "latency_max_ms")
        ),
        format!(
            "longest write gap: {} (from {}), longest stall {}",
            ms(r, "max_write_gap_ms"),
            ms(r, "max_write_gap_from_ms"),
            ms(r, "max_stall_ms")
        ),
        format!(
            "client errors: {errs} ({by}); unavailable {} in {}; {} reconnects",
            ms(r, "unavailable_ms"),
            human::plural(u(r, "outages"), "outage"),
            u(r, "reconnects")
        ),
    ];
    if let Some(hosts) = r.get("hosts").and_then(Value::as_object) {
        let per: Vec<String> = hosts
            .iter()
            .map(|(h, n)| format!("{h} {}", n.as_u64().unwrap_or(0)))
            .collect();
        lines.push(format!("commits per host: {}", per.join(", ")));
    }
    if r.contains_key("lost") {
        lines.push(format!(
            "verified on {}: {} acknowledged, {} present, {} lost",
            s(r, "verified_on"),
            u(r, "acked"),
            u(r, "present"),
            u(r, "lost")
        ));
    }
    if u(r, "split_brain") > 0 {
        lines.push(format!("SPLIT BRAIN: {} commits", u(r, "split_brain")));
    }
    lines.join("\n")
}

/// `3839 committed, 906.7 tps, 0 lost` / the generic outcome.
pub fn closing(r: &Map<String, Value>) -> Option<String> {
    if !r.contains_key("committed") {
        return None;
    }
    let mut line = format!(
        "{} committed, {} tps, longest write gap {}",
        u(r, "committed"),
        r.get("tps").map_or("-".into(), |v| human::value("tps", v)),
        ms(r, "max_write_gap_ms")
    );
    if r.contains_key("lost") {
        line.push_str(&format!(", {} lost", u(r, "lost")));
    }
    let code = u(r, "exit_code");
    if code != 0 {
        line.push_str(&format!(" (exit {code})"));
    }
    Some(line)
}
