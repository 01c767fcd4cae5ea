//! The switchover, both ways, and what a re-run and `--abort` do once it is done.

use crate::common::*;

#[test]
fn switch_promotes_fences_and_a_rerun_changes_nothing() {
    let mut pair = Pair::new();
    pair.write_and_sync();
    let r = pair.switch(&pair.a, &pair.b, &[], &[]);
    r.expect(0);
    let s = r.summary();
    assert_eq!(s["outcome"], "promoted", "{}", r.dump());
    assert_eq!(s["primary"], "target");
    assert_eq!(s["new_timeline"], 2);
    assert!(s["downtime_ms"].as_u64().is_some(), "{s}");
    for p in [
        "target_streams_from_source",
        "source_clean_shutdown",
        "target_replayed_final_checkpoint",
        "target_writable",
    ] {
        assert_eq!(proof(&r, p)["ok"], true, "{p}: {}", r.dump());
    }
    assert_eq!(in_recovery(&pair.b), Some(false));
    assert!(!running(&pair.a), "the old primary must be stopped");
    assert!(
        fenced_towards(&pair.a, &pair.b),
        "the old primary must be fenced"
    );
    let steps = journal_steps(&pair.journal());
    let at = |s: &str| {
        steps
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s}: {steps:?}"))
    };
    assert!(
        at("stopping") < at("stopped")
            && at("stopped") < at("promoting")
            && at("promoting") < at("promoted")
    );

    // The same command again: nothing to do, and it says so.
    let again = pair.switch(&pair.a, &pair.b, &[], &[]);
    again.expect(0);
    assert_eq!(
        again.summary()["outcome"],
        "already_promoted",
        "{}",
        again.dump()
    );
    assert_eq!(pair.primaries(), 1);
    // Too late to abort: the target may have taken writes.
    let abort = pair.switch(&pair.a, &pair.b, &["--abort"], &[]);
    abort.expect(1);
    assert_eq!(abort.summary()["outcome"], "cannot_abort");
    assert_eq!(in_recovery(&pair.b), Some(false));

    // Whoever starts the old primary gets a standby of the new one.
    Pair::restart_as_standby(&mut pair.a, &pair.b);
    assert_eq!(in_recovery(&pair.a), Some(true));
    pair.write_and_sync();

    // And back.
    let back = pair.switch(&pair.b, &pair.a, &[], &[]);
    back.expect(0);
    assert_eq!(back.summary()["new_timeline"], 3, "{}", back.dump());
    assert_eq!(in_recovery(&pair.a), Some(false));
    assert!(fenced_towards(&pair.b, &pair.a));
    assert_eq!(
        pair.a.psql("postgres", "SELECT count(*) FROM acked"),
        "2",
        "every write made before a switch is on the new primary"
    );
}

#[test]
fn abort_with_nothing_under_way_changes_nothing_and_refusals_leave_the_source_serving() {
    let pair = Pair::new();
    let r = pair.switch(&pair.a, &pair.b, &["--abort"], &[]);
    r.expect(0);
    assert_eq!(r.summary()["outcome"], "nothing_to_do");
    // A target that cannot be seen (no server on its port, no data directory on its host) is
    // refused before anything changes.
    let closed = testkit::free_port("127.0.0.1");
    let mut cmd = testkit::tool(env!("CARGO_BIN_EXE_pg-switch"));
    let fence = pair.journal().with_extension("fence");
    std::fs::write(&fence, "host=127.0.0.1 port=1 user=postgres").unwrap();
    cmd.arg("--source")
        .arg(pair.a.dsn("postgres"))
        .arg("--source-pgdata")
        .arg(pair.a.data_dir())
        .arg("--target")
        .arg(format!("host=127.0.0.1 port={closed} user=postgres"))
        .args([
            "--target-pgdata",
            "/nonexistent/data",
            "--fence-conninfo-file",
        ])
        .arg(&fence)
        .arg("--journal")
        .arg(pair.journal())
        .arg("--pg-bin")
        .arg(testkit::pg_bin());
    let wrong = testkit::Run::new("pg-switch to nowhere", cmd.output().unwrap());
    wrong.expect(69);
    assert_eq!(wrong.summary()["outcome"], "refused");
    assert_eq!(in_recovery(&pair.a), Some(false));
    assert_eq!(in_recovery(&pair.b), Some(true));
    assert!(!pair.a.data_dir().join("standby.signal").exists());
    // Bad usage: one line, exit 2.
    let bad = pair.switch(&pair.a, &pair.b, &["--hook", "nosuch=true"], &[]);
    bad.expect(2);
    assert!(
        bad.stderr.contains("unknown hook 'nosuch'"),
        "{}",
        bad.stderr
    );
}

#[test]
fn the_promotion_guard_lowers_the_retry_interval_for_the_switch_only() {
    // PostgreSQL's default: a standby that lost its primary waits 5 s before it retries its
    // WAL source, and a promotion landing then can wait with it (seen with PostgreSQL 15).
    let pair = Pair::new();
    pair.b.psql(
        "postgres",
        "ALTER SYSTEM SET wal_retrieve_retry_interval = '5s'",
    );
    pair.b.reload();
    let r = pair.switch(&pair.a, &pair.b, &[], &[]);
    r.expect(0);
    let guard = r
        .of("step")
        .into_iter()
        .find(|s| s["name"] == "promotion_guard")
        .unwrap_or_else(|| panic!("no promotion_guard step\n{}", r.dump()))
        .clone();
    assert_eq!(guard["wal_retrieve_retry_interval"], "50ms", "{guard}");
    assert_eq!(guard["resignal_every_ms"], 250);
    assert!(r.summary()["promote_signals"].as_u64().unwrap() >= 1);
    // Only for the switch: the new primary's configuration no longer carries it.
    let auto = std::fs::read_to_string(pair.b.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("wal_retrieve_retry_interval"), "{auto}");
}

#[test]
fn ssh_to_the_source_killed_mid_stop_the_idempotent_call_is_made_again() {
    let sshd = match testkit::Sshd::start(&["postgres"]) {
        Ok(s) => s,
        Err(why) => testkit::skip!("cannot start an sshd for the test: {why}"),
    };
    let pair = Pair::new();
    let spec = format!("ssh://postgres@127.0.0.1:{}", sshd.port());
    let opts = sshd.ssh_options().join(" ");
    // The stop call sleeps 1.5 s after signalling the postmaster; half a second in, its ssh
    // client and the remote shell are killed.
    let hook = "during_stop=sleep 0.5; pkill -KILL -f 'pgshift-sto[p] '";
    let r = pair.switch(
        &pair.a,
        &pair.b,
        &["--source-host", &spec, "--hook", hook],
        &[
            ("PGS_SSH_OPTS", opts.as_str()),
            ("PGSHIFT_TEST_STOP_DELAY_MS", "1500"),
        ],
    );
    r.expect(0);
    assert!(r.stderr.contains("calling again"), "{}", r.dump());
    assert_eq!(proof(&r, "source_clean_shutdown")["ok"], true);
    assert_eq!(in_recovery(&pair.b), Some(false));
    assert!(fenced_towards(&pair.a, &pair.b));
    assert!(
        sshd.log()
            .matches("Accepted publickey for postgres")
            .count()
            >= 2,
        "{}",
        sshd.log()
    );
}
