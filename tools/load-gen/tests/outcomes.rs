//! Unknown outcomes: a commit cut off by --txn-timeout may still commit, and verify says so.

use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::Cluster;

use crate::common::{num, run, Background};

#[test]
fn a_commit_cut_off_by_the_timeout_is_unknown_and_may_have_committed() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    let log = c.dir().join("acked.jsonl");
    let log_s = log.to_str().unwrap();
    let mut lg = Background::start(
        c.dir(),
        &[
            "--dsn",
            &dsn,
            "-w",
            "probe",
            "-c",
            "1",
            "--txn-timeout",
            "300ms",
            "--tick",
            "200ms",
            "--log",
            log_s,
        ],
    );
    lg.wait_for(Duration::from_secs(20), "commits", |r| {
        r["type"] == "tick" && r["committed"].as_u64().unwrap_or(0) > 0
    });
    // Block the probe INSERT longer than --txn-timeout. The abandoned INSERT waits for the
    // lock in its backend and commits when the lock goes, after load-gen stopped listening.
    let mut locker = c.connect(db.name());
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE load_gen_probe IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(1.5); COMMIT",
        )
        .unwrap();
    let before = lg
        .records()
        .iter()
        .filter(|r| r["type"] == "tick")
        .map(|r| num(r, "committed_total"))
        .max()
        .unwrap_or(0);
    lg.wait_for(Duration::from_secs(20), "commits after the lock", |r| {
        r["type"] == "tick" && num(r, "committed_total") > before
    });
    let r = lg.signal_and_wait(Signal::SIGINT, Duration::from_secs(15));
    r.expect(0);
    let s = r.summary();
    assert!(num(s, "unknown") >= 1, "{s}");
    assert!(num(s, "unavailable_ms") > 0, "{s}");

    let v = run(&["verify", "--dsn", &dsn, "--log", log_s]);
    v.expect(0);
    let vs = v.summary();
    assert_eq!(num(vs, "lost"), 0, "{vs}");
    assert_eq!(num(vs, "unknown"), num(s, "unknown"), "{vs}");
    assert!(num(vs, "unknown_committed") >= 1, "{vs}");
    assert_eq!(num(vs, "unexpected"), 0, "{vs}");
}

#[test]
fn a_stop_while_a_commit_hangs_ends_within_the_grace_and_counts_it_unknown() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    let log = c.dir().join("acked.jsonl");
    let mut lg = Background::start(
        c.dir(),
        &[
            "--dsn",
            &dsn,
            "-w",
            "probe",
            "-c",
            "1",
            "--tick",
            "200ms",
            "--log",
            log.to_str().unwrap(),
        ],
    );
    lg.wait_for(Duration::from_secs(20), "commits", |r| {
        r["type"] == "tick" && r["committed"].as_u64().unwrap_or(0) > 0
    });
    // Hold the probe table for longer than the grace, from another thread.
    let mut locker = c.connect(db.name());
    locker
        .batch_execute("BEGIN; LOCK TABLE load_gen_probe IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    // A tick after the lock: one before it can have 0 commits too (a slow first connection).
    let locked_at = lg.records().len();
    lg.wait_for_after(
        locked_at,
        Duration::from_secs(20),
        "the client blocked",
        |r| r["type"] == "tick" && r["committed"] == 0,
    );
    let r = lg.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10));
    locker.batch_execute("COMMIT").unwrap();
    r.expect(0);
    let s = r.summary();
    assert_eq!(num(s, "unknown"), 1, "{s}");
    let v = run(&["verify", "--dsn", &dsn, "--log", log.to_str().unwrap()]);
    v.expect(0);
    assert_eq!(num(v.summary(), "unknown"), 1);
    assert_eq!(num(v.summary(), "lost"), 0);
}
