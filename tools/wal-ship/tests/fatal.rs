//! A fatal error still ends stdout with an `error` record and the `summary`
//! (shared/PROTOCOL.md), with the process's exit code in both.

use crate::util::{expect, scratch};

fn assert_fatal_stream(out: &testkit::Run, code: i32, kind: &str, about: &str) {
    let e = out.one("error");
    assert_eq!(e["kind"], kind, "{}", out.dump());
    assert_eq!(e["exit_code"], code);
    assert_eq!(e["fatal"], true);
    assert!(
        e["message"].as_str().unwrap().contains(about),
        "{}",
        out.dump()
    );
    let s = out.summary();
    assert_eq!(s["tool"], "wal-ship");
    assert_eq!(s["success"], false);
    assert_eq!(s["exit_code"], code);
    assert_eq!(s["errors"], 1);
    assert!(
        s["elapsed_ms"].is_u64() && s["format_version"].is_u64(),
        "{s}"
    );
    assert_eq!(out.records.len(), 2, "{}", out.dump());
    // The message still goes to stderr, once.
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn verify_of_a_missing_archive_ends_with_error_and_summary() {
    let out = expect(69, &["verify", "--archive", "/nonexistent"]);
    assert_fatal_stream(&out, 69, "unavailable", "/nonexistent");
}

#[test]
fn status_of_a_missing_archive_and_server_ends_with_error_and_summary() {
    let out = expect(
        69,
        &[
            "status",
            "--dsn",
            "host=127.0.0.1 port=1 connect_timeout=2",
            "--archive",
            "/nonexistent",
        ],
    );
    assert_fatal_stream(&out, 69, "unavailable", "127.0.0.1:1");
}

#[test]
fn quiet_means_no_records_even_after_a_fatal_error() {
    let d = scratch();
    let out = expect(
        126,
        &[
            "fetch",
            "000000010000000000000001",
            d.path().join("x").to_str().unwrap(),
            "--from",
            "/nonexistent",
            "--quiet",
        ],
    );
    assert!(out.stdout.is_empty(), "{}", out.dump());
    assert!(!out.stderr.is_empty());
}
