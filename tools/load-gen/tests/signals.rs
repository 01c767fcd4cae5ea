//! Stopping early: SIGTERM and SIGINT end the run with a summary and a complete log, also
//! when bash started load-gen in the background (where SIGINT is inherited as ignored).

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::Cluster;

use crate::common::{log_records, num, Background};

#[test]
fn sigterm_ends_an_unbounded_run_with_a_summary() {
    let c = Cluster::start();
    let db = c.create_db();
    let log = c.dir().join("acked.jsonl");
    let mut lg = Background::start(
        c.dir(),
        &[
            "--dsn",
            &c.dsn(db.name()),
            "-w",
            "probe",
            "-c",
            "2",
            "--tick",
            "200ms",
            "--log",
            log.to_str().unwrap(),
        ],
    );
    lg.wait_for(Duration::from_secs(20), "a tick with commits", |r| {
        r["type"] == "tick" && r["committed"].as_u64().unwrap_or(0) > 0
    });
    let r = lg.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10));
    r.expect(0);
    let s = r.summary();
    assert_eq!(s["stopped_by"], "SIGTERM");
    assert!(s["duration_ms"].is_u64());
    let recs = log_records(&log);
    assert_eq!(recs.last().unwrap()["type"], "end");
    let acks = recs.iter().filter(|r| r["type"] == "ack").count() as u64;
    assert_eq!(acks, num(s, "acked"));
}

#[test]
fn sigint_reaches_load_gen_started_in_the_background_by_bash() {
    let c = Cluster::start();
    let db = c.create_db();
    let bin = assert_cmd::cargo::cargo_bin!("load-gen");
    // A non-interactive bash starts background jobs with SIGINT ignored; load-gen must
    // still stop on `kill -INT`.
    let script = r#"
        "$1" --dsn "$2" -w probe -c 1 --tick 200ms > "$3" &
        pid=$!
        for _ in $(seq 1 100); do grep -q '"committed":[1-9]' "$3" 2>/dev/null && break; sleep 0.1; done
        kill -INT "$pid"
        wait "$pid"
    "#;
    let out_path = c.dir().join("bg.out");
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "bash", "-c", script, "bash"])
        .arg(bin)
        .arg(c.dsn(db.name()))
        .arg(&out_path)
        .stdin(Stdio::null());
    testkit::hermetic(&mut cmd);
    let out = cmd.output().expect("run bash");
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = testkit::json_lines(&stdout);
    let s = recs.last().unwrap();
    assert_eq!(s["type"], "summary");
    assert_eq!(s["stopped_by"], "SIGINT");
    assert!(num(s, "committed") > 0);
}

/// `load-gen verify` stopped by SIGTERM while it waits (here for a lock on the probe table)
/// ends with an error of kind retry and a summary, as every tool does; before, it died with
/// no summary (exit 143).
#[test]
fn sigterm_ends_verify_with_a_summary() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    let log = c.dir().join("acked.jsonl");
    crate::common::run(&[
        "--dsn",
        &dsn,
        "-w",
        "probe",
        "-c",
        "1",
        "-T",
        "1s",
        "--log",
        log.to_str().unwrap(),
    ])
    .expect(0);
    let mut holder = c.connect(db.name());
    holder
        .batch_execute("BEGIN; LOCK load_gen_probe IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let lg = Background::start(
        c.dir(),
        &["verify", "--dsn", &dsn, "--log", log.to_str().unwrap()],
    );
    testkit::wait_for_lock_waiter(&mut holder, "load_gen_probe", "load-gen verify");
    let r = lg.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10));
    r.expect(75);
    let s = r.summary();
    assert_eq!(s["stopped_by"], "SIGTERM", "{}", r.dump());
    holder.batch_execute("ROLLBACK").unwrap();
}
