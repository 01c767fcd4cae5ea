//! Helpers shared by the test modules: running the tool, reading its records, writing
//! synthetic histories.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;
use serde_json::Value;
pub use testkit::Run;
use window_advisor::synth::{self, Spec, Trace, TraceKind};
use window_advisor::time::Zone;

/// The tool, hermetic (no PG* variables, UTC as the system zone).
fn cmd() -> Command {
    let mut c = testkit::tool(cargo_bin!("window-advisor"));
    c.env("TZ", "UTC");
    Command::from_std(c)
}

/// Read a finished run; fails if the tool panicked or its summary's `exit_code` is not the
/// exit code.
fn finished(out: Output, args: &[&str]) -> Run {
    let run = Run::new(format!("window-advisor {}", args.join(" ")), out);
    assert!(!run.stderr.contains("panicked"), "{}", run.dump());
    if !run.records.is_empty() {
        assert_eq!(run.summary()["exit_code"], run.code, "{}", run.dump());
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
