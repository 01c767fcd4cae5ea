//! Usage errors that need no server.

use crate::common::run;

#[test]
fn the_tpcb_workload_has_nothing_to_log_or_verify() {
    let r = run(&["--dsn", "host=127.0.0.1", "-w", "tpcb", "--log", "/tmp/x"]);
    r.expect(2);
    assert!(
        r.stderr.contains("--workload mixed or probe"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_numbers_are_usage_errors() {
    for args in [
        &["--clients", "0"][..],
        &["--rate", "0"][..],
        &["--duration", "soon"][..],
        &["--duration", "0s"][..],
        &["--tick", "1ms"][..],
        &["--workload", "oltp"][..],
    ] {
        let r = run(args);
        r.expect(2);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
    }
}

#[test]
fn verify_needs_a_log() {
    run(&["verify", "--dsn", "host=127.0.0.1"]).expect(2);
}
