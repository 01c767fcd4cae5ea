//! Every proof is an assertion: each test here makes one fail and checks that the run stops
//! safely — the source serving again (or never stopped), never two primaries.

use std::time::Duration;

use crate::common::*;
use testkit::Cluster;

fn psql_cmd(c: &Cluster, sql: &str) -> String {
    format!(
        "{} -XAtq -d '{}' -c \"{sql}\"",
        testkit::pg_bin().join("psql").display(),
        c.dsn("postgres")
    )
}

#[test]
fn replay_proof_fails_when_the_target_stops_replaying() {
    let pair = Pair::new();
    // Replay paused (after the checks, right before the stop): the target never gets past the
    // source's final checkpoint.
    let hook = format!(
        "before_stop={}",
        psql_cmd(&pair.b, "SELECT pg_wal_replay_pause()")
    );
    let r = pair.switch(&pair.a, &pair.b, &["--hook", &hook, "--timeout", "3s"], &[]);
    r.expect(1);
    assert_eq!(r.summary()["outcome"], "rolled_back", "{}", r.dump());
    assert_eq!(proof(&r, "target_replayed_final_checkpoint")["ok"], false);
    assert_eq!(in_recovery(&pair.a), Some(false), "the source serves again");
    assert_eq!(
        in_recovery(&pair.b),
        Some(true),
        "the target was never promoted"
    );
    assert!(
        !pair.a.data_dir().join("standby.signal").exists(),
        "the fence is removed"
    );
    // With replay still paused, a new attempt is refused before anything changes.
    let again = pair.switch(&pair.a, &pair.b, &[], &[]);
    again.expect(65);
    assert!(
        again.stderr.contains("replay is paused"),
        "{}",
        again.stderr
    );
    assert_eq!(in_recovery(&pair.a), Some(false));
    pair.b.psql("postgres", "SELECT pg_wal_replay_resume()");
    wait_streaming(&pair.a, &pair.b);
    pair.switch(&pair.a, &pair.b, &[], &[]).expect(0);
}

#[test]
fn clean_shutdown_proof_fails_when_the_source_crashed() {
    let pair = Pair::new();
    let pid = pair.a.postmaster_pid().unwrap();
    let hook = format!("before_stop=kill -9 {pid}; sleep 0.3");
    let r = pair.switch(&pair.a, &pair.b, &["--hook", &hook], &[]);
    r.expect(1);
    let p = proof(&r, "source_clean_shutdown");
    assert_eq!(p["ok"], false, "{}", r.dump());
    assert_eq!(p["cluster_state"], "in production");
    // Crash recovery brought the source back; the target was never promoted.
    assert_eq!(in_recovery(&pair.a), Some(false), "{}", r.dump());
    assert_eq!(in_recovery(&pair.b), Some(true));
}

#[test]
fn timeline_proof_refuses_a_target_that_follows_a_sibling() {
    // a (timeline 1); s1 a standby of a, promoted (timeline 2); t a standby of s1. t has the
    // same system identifier as a and may be far ahead of it, but not with a's writes.
    let a = Cluster::builder().name("a").start();
    let s1 = a.standby();
    let t = s1.standby();
    s1.promote();
    s1.psql(
        "postgres",
        "SELECT pg_switch_wal(); CREATE TABLE x(); SELECT pg_switch_wal()",
    );
    s1.wait_replayed(&t, Duration::from_secs(30));
    let mut pair = Pair::of(a, t);
    let r = pair.switch(&pair.a, &pair.b, &[], &[]);
    r.expect(65);
    let p = proof(&r, "target_streams_from_source");
    assert_eq!(p["ok"], false);
    assert_eq!(p["received_timeline"], 2, "{}", r.dump());
    assert_eq!(in_recovery(&pair.a), Some(false), "nothing changed");
    assert!(!pair.a.data_dir().join("standby.signal").exists());

    // The same target when the source is already stopped (a resumed run): the replay proof
    // catches it after the stop, and the source comes back.
    pair.a.stop(testkit::StopMode::Fast);
    let r = pair.switch(&pair.a, &pair.b, &[], &[]);
    r.expect(1);
    assert_eq!(r.summary()["outcome"], "rolled_back", "{}", r.dump());
    let p = proof(&r, "target_replayed_final_checkpoint");
    assert_eq!(p["ok"], false, "{}", r.dump());
    assert_eq!(in_recovery(&pair.a), Some(false));
    assert_eq!(in_recovery(&pair.b), Some(true));
    drop(s1);
}

#[test]
fn writable_proof_fails_on_a_target_that_refuses_writes() {
    let pair = Pair::new();
    pair.b.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    pair.b.reload();
    let r = pair.switch(&pair.a, &pair.b, &[], &[]);
    r.expect(65);
    assert_eq!(proof(&r, "target_writable")["ok"], false);
    assert_eq!(r.summary()["outcome"], "promoted_unverified");
    // Promoted but read-only: still exactly one primary, and the source fenced.
    assert_eq!(pair.primaries(), 1);
    assert_eq!(in_recovery(&pair.b), Some(false));
    assert!(fenced_towards(&pair.a, &pair.b));
}

#[test]
fn fence_proof_fails_when_the_fence_cannot_be_written_and_the_source_is_never_stopped() {
    let pair = Pair::new();
    // A directory (root's) where the stop call writes the new postgresql.auto.conf.
    let blocker = pair.a.data_dir().join("postgresql.auto.conf.pgshift-fence");
    std::fs::create_dir(&blocker).unwrap();
    let pid = pair.a.postmaster_pid();
    let r = pair.switch(&pair.a, &pair.b, &[], &[]);
    std::fs::remove_dir(&blocker).unwrap();
    r.expect(1);
    assert_eq!(proof(&r, "old_source_fenced")["ok"], false, "{}", r.dump());
    assert_eq!(pair.a.postmaster_pid(), pid, "the source was never stopped");
    assert_eq!(in_recovery(&pair.a), Some(false));
    assert_eq!(in_recovery(&pair.b), Some(true));
    assert!(!pair.a.data_dir().join("standby.signal").exists());
}

#[test]
fn archive_proof_fails_when_the_last_segment_cannot_be_shipped() {
    let pair = Pair::new();
    let wal_ship = testkit::tool_bin("wal-ship");
    let r = pair.switch(
        &pair.a,
        &pair.b,
        &[
            "--archive",
            "/nonexistent/archive",
            "--wal-ship",
            wal_ship.to_str().unwrap(),
        ],
        &[],
    );
    r.expect(1);
    assert_eq!(
        proof(&r, "last_segment_shipped")["ok"],
        false,
        "{}",
        r.dump()
    );
    assert_eq!(in_recovery(&pair.a), Some(false), "the source serves again");
    assert_eq!(in_recovery(&pair.b), Some(true));
}

#[test]
fn history_proof_refuses_a_target_promoted_before_the_source_stopped() {
    // Someone promoted the standby early; the source took more writes after that and was then
    // stopped cleanly. Calling the target "already promoted" would lose those writes.
    let mut pair = Pair::new();
    pair.b.promote();
    pair.a.psql(
        "postgres",
        "INSERT INTO acked DEFAULT VALUES; SELECT pg_switch_wal()",
    );
    pair.a.stop(testkit::StopMode::Fast);
    let r = pair.switch(&pair.a, &pair.b, &[], &[]);
    r.expect(126);
    assert_eq!(r.summary()["outcome"], "unknown", "{}", r.dump());
    let p = proof(&r, "target_history_follows_source");
    assert_eq!(p["ok"], false, "{}", r.dump());
    assert!(
        r.summary()["commands"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "the commands to run are listed"
    );
    // Nothing more was touched: the source is down, with its writes.
    assert!(!running(&pair.a));
}
