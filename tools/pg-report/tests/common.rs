//! Helpers: the fixtures, a run of pg-report, demo.sh's combined report made from them.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use testkit::json_lines;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn records(path: &Path) -> Vec<Value> {
    json_lines(&std::fs::read_to_string(path).unwrap())
}

pub fn write_records(path: &Path, recs: &[Value]) {
    let lines: Vec<String> = recs.iter().map(Value::to_string).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A finished run of pg-report.
pub struct Ran {
    pub code: i32,
    pub records: Vec<Value>,
    pub stderr: String,
}

pub fn pg_report(args: &[&Path]) -> Ran {
    let mut cmd = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("pg-report"));
    cmd.args(args);
    let out = cmd.output().unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        records: json_lines(&String::from_utf8_lossy(&out.stdout)),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What demo.sh writes to report.jsonl for two migrations, made the way demo.sh makes it
/// (its jq lines) from the captured run: the hosts, then per migration its records tagged
/// with `migration`, a `load` record (load-gen's summary fields) and a `load_verified`
/// record, and the demo's own summary. The second migration is the same run again under
/// another label, with its verification changed so that the two sections differ.
pub fn demo_report() -> Vec<Value> {
    let migrate = records(&data("migrate.jsonl"));
    let load = records(&data("load.jsonl"));
    let ls = load.last().unwrap();
    let mut out = vec![json!({"type": "host", "name": "A", "role": "source"})];
    for (label, lost) in [("A-to-B", 0), ("B-to-A", 2)] {
        for r in &migrate {
            let mut r = r.clone();
            r["migration"] = json!(label);
            out.push(r);
        }
        let mut l = json!({"type": "load", "migration": label});
        for k in [
            "committed",
            "tps",
            "max_write_gap_ms",
            "max_stall_ms",
            "errors_total",
            "errors_by_kind",
            "unavailable_ms",
            "split_brain",
            "latency_p99_ms",
        ] {
            l[k] = ls[k].clone();
        }
        out.push(l);
        out.push(json!({"type": "load_verified", "migration": label, "acked": ls["acked"], "present": ls["acked"].as_i64().unwrap() - lost, "lost": lost, "split_brain": 0, "unknown": 1}));
    }
    out.push(json!({"type": "summary", "success": true, "mode": "stream", "lost": 2, "verdicts": "equal"}));
    out
}
