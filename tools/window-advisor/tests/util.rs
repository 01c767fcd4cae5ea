//! Helpers shared by the test modules: running the tool, reading its records, writing
//! synthetic histories.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use window_advisor::synth::{self, Spec, Trace, TraceKind};
use window_advisor::time::Zone;

/// The tool, hermetic (no PG* variables, UTC as the system zone).
pub fn cmd() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("window-advisor"));
    for var in testkit::PG_ENV_VARS {
        c.env_remove(var);
    }
    c.env("TZ", "UTC");
    c
}

/// A finished run: exit code, records, stderr.
pub struct Run {
    pub code: i32,
    pub records: Vec<Value>,
    pub stderr: String,
    pub args: String,
}

impl Run {
    /// Records of one type.
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == kind).collect()
    }

    /// The one record of a type.
    pub fn one(&self, kind: &str) -> &Value {
        let v = self.of(kind);
        assert_eq!(v.len(), 1, "{kind} records: {}", self.dump());
        v[0]
    }

    /// Fail unless the exit code is `code`.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "{}", self.dump());
        self
    }

    pub fn dump(&self) -> String {
        let recs: Vec<String> = self.records.iter().map(|r| r.to_string()).collect();
        format!(
            "window-advisor {}\nexit {}\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.code,
            recs.join("\n"),
            self.stderr
        )
    }
}

/// Parse JSON lines, panicking with the text on a bad line.
pub fn parse(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn finished(out: Output, args: &[&str]) -> Run {
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        records: parse(&stdout),
        stderr,
        args: args.join(" "),
    };
    assert!(!run.stderr.contains("panicked"), "{}", run.dump());
    if let Some(last) = run.records.last() {
        assert_eq!(last["type"], "summary", "{}", run.dump());
        assert_eq!(last["exit_code"], run.code, "{}", run.dump());
    }
    run
}

/// Run the tool with arguments.
pub fn run(args: &[&str]) -> Run {
    let out = cmd().args(args).output().expect("run window-advisor");
    finished(out, args)
}

/// Run the tool with arguments and standard input.
pub fn run_stdin(args: &[&str], stdin: impl Into<Vec<u8>>) -> Run {
    let out = cmd()
        .args(args)
        .write_stdin(stdin.into())
        .output()
        .expect("run window-advisor");
    finished(out, args)
}

/// Monday 2026-01-05 00:00 UTC.
pub const MONDAY: i64 = 1_767_571_200;

/// Generate a trace (5-minute samples by default, fast to read).
pub fn trace(kind: TraceKind, seed: u64, weeks: usize, zone: &str, start: i64) -> Trace {
    synth::generate(&Spec {
        kind,
        seed,
        weeks,
        step: 300,
        start,
        zone: Zone::resolve(Some(zone)).unwrap(),
    })
}

/// Write the first `n` samples of a trace as JSON lines.
pub fn write_history(dir: &Path, name: &str, t: &Trace, n: usize) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for rec in t.records(1).take(n) {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), "sample".into());
        m.extend(rec);
        text.push_str(&Value::Object(m).to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A scratch directory removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Epoch seconds of an RFC 3339 string.
pub fn epoch(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .as_second()
}
