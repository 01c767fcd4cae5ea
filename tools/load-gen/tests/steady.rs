//! Steady load against one cluster: the records, the ack log, verify, and failures named.

use testkit::Cluster;

use crate::common::{init, log_records, num, run};

#[test]
fn steady_mixed_load_commits_logs_and_verifies() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    init(&dsn, 1);
    assert_eq!(
        c.psql(db.name(), "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
    let log = c.dir().join("acked.jsonl");
    let log_s = log.to_str().unwrap();
    let r = run(&[
        "--dsn",
        &dsn,
        "-c",
        "2",
        "-T",
        "2s",
        "--tick",
        "500ms",
        "--log",
        log_s,
        "--verify",
        "--json-only",
    ]);
    r.expect(0);
    assert_eq!(r.records[0]["type"], "start", "{r:#?}");
    let s = r.summary();
    assert_eq!(s["stopped_by"], "duration");
    assert_eq!(s["workload"], "mixed");
    let committed = num(s, "committed");
    assert!(committed > 0, "{s}");
    assert_eq!(num(s, "failed"), 0, "{s}");
    assert_eq!(num(s, "unknown"), 0, "{s}");
    assert_eq!(num(s, "acked"), committed);
    assert_eq!(num(s, "present"), committed);
    assert_eq!(num(s, "lost"), 0);
    assert_eq!(num(s, "split_brain"), 0);
    assert!(s["max_write_gap_ms"].is_u64(), "{s}");
    assert!(num(s, "max_write_gap_ms") <= num(s, "duration_ms"), "{s}");
    assert_eq!(num(s, "reconnects"), 0);
    let servers = s["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{s}");
    assert_eq!(servers[0]["timeline"], 1);
    assert!(s["latency_p99_ms"].as_f64().unwrap() >= s["latency_p50_ms"].as_f64().unwrap());

    // Ticks add up to the summary and name the host.
    let ticks = r.of("tick");
    assert!(ticks.len() >= 3, "{r:#?}");
    assert_eq!(
        ticks.iter().map(|t| num(t, "committed")).sum::<u64>(),
        committed
    );
    let host = format!("{}:{}", c.host(), c.port());
    assert!(
        ticks.iter().any(|t| t["host"] == host.as_str()),
        "{ticks:#?}"
    );
    assert_eq!(r.of("connect").len(), 2);
    assert_eq!(r.of("verified").len(), 1);

    // The log: run, server, one ack per commit, end.
    let recs = log_records(&log);
    assert_eq!(recs[0]["type"], "run");
    assert_eq!(recs[0]["run_id"], s["run_id"]);
    assert_eq!(recs.iter().filter(|r| r["type"] == "server").count(), 1);
    let acks = recs.iter().filter(|r| r["type"] == "ack").count() as u64;
    assert_eq!(acks, committed);
    assert_eq!(recs.last().unwrap()["type"], "end");

    // The same verdict from the log, afterwards.
    let v = run(&["verify", "--dsn", &dsn, "--log", log_s]);
    v.expect(0);
    let vs = v.summary();
    assert_eq!(num(vs, "acked"), committed);
    assert_eq!(num(vs, "present"), committed);
    assert_eq!(num(vs, "lost"), 0);
    assert_eq!(vs["complete"], true);
}

#[test]
fn a_deleted_acknowledged_row_is_reported_lost() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    let log = c.dir().join("acked.jsonl");
    let log_s = log.to_str().unwrap();
    run(&[
        "--dsn", &dsn, "-w", "probe", "-c", "2", "-T", "1s", "--log", log_s,
    ])
    .expect(0);

    // Lose one acknowledged write behind load-gen's back.
    let recs = log_records(&log);
    let victim = recs
        .iter()
        .filter(|r| r["type"] == "ack")
        .nth(5)
        .expect("at least 6 acks in a second");
    let (client, seq) = (num(victim, "client"), num(victim, "seq"));
    let deleted = c.psql(
        db.name(),
        &format!("WITH d AS (DELETE FROM load_gen_probe WHERE client_id = {client} AND seq = {seq} RETURNING 1) SELECT count(*) FROM d"),
    );
    assert_eq!(deleted, "1");

    let v = run(&["verify", "--dsn", &dsn, "--log", log_s]);
    v.expect(1);
    let lost = v.of("lost");
    assert_eq!(lost.len(), 1, "{v:#?}");
    assert_eq!((num(lost[0], "client"), num(lost[0], "seq")), (client, seq));
    let s = v.summary();
    assert_eq!(num(s, "lost"), 1);
    assert_eq!(s["success"], false);
    assert_eq!(num(s, "present") + 1, num(s, "acked"));
}

#[test]
fn probe_workload_needs_no_pgbench_tables() {
    let c = Cluster::start();
    let db = c.create_db();
    let r = run(&[
        "--dsn",
        &c.dsn(db.name()),
        "-w",
        "probe",
        "-T",
        "1s",
        "--verify",
    ]);
    r.expect(0);
    assert!(num(r.summary(), "committed") > 0);
    assert_eq!(num(r.summary(), "lost"), 0);
}

#[test]
fn rate_limits_the_throughput() {
    let c = Cluster::start();
    let db = c.create_db();
    let r = run(&[
        "--dsn",
        &c.dsn(db.name()),
        "-w",
        "probe",
        "-c",
        "2",
        "-R",
        "20",
        "-T",
        "1s",
    ]);
    r.expect(0);
    // 20 per second for one second, plus the first one of each client: never hundreds.
    let committed = num(r.summary(), "committed");
    assert!((1..=30).contains(&committed), "{committed}");
}

#[test]
fn tpcb_without_its_tables_names_the_fix() {
    let c = Cluster::start();
    let db = c.create_db();
    let r = run(&["--dsn", &c.dsn(db.name()), "-w", "tpcb", "-T", "1s"]);
    r.expect(65);
    assert!(r.stderr.contains("load-gen --init"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn an_unreachable_server_is_exit_69() {
    let port = testkit::free_port("127.0.0.1");
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable");
    let r = run(&["--dsn", &dsn, "-w", "probe", "-T", "1s"]);
    r.expect(69);
    assert!(r.stderr.contains("Connection refused"), "{}", r.stderr);
    // The fatal error ends stdout too: its record, then the summary.
    assert_eq!(r.one("error")["kind"], "unavailable", "{}", r.dump());
    assert_eq!(r.summary()["exit_code"], 69);
}

#[test]
fn verify_of_a_missing_log_or_table_fails_clearly() {
    let c = Cluster::start();
    let dsn = c.dsn("postgres");
    let missing = c.dir().join("nope.jsonl");
    let r = run(&["verify", "--dsn", &dsn, "--log", missing.to_str().unwrap()]);
    r.expect(74);
    assert!(r.stderr.contains("nope.jsonl"), "{}", r.stderr);

    // A log whose database has no probe table: a data error naming the table.
    let log = c.dir().join("other.jsonl");
    std::fs::write(
        &log,
        "{\"type\":\"run\",\"run_id\":\"00000000-0000-0000-0000-000000000000\",\"started_at\":\"x\",\"dsn\":\"x\",\"workload\":\"probe\",\"clients\":1}\n",
    )
    .unwrap();
    let r = run(&["verify", "--dsn", &dsn, "--log", log.to_str().unwrap()]);
    r.expect(65);
    assert!(r.stderr.contains("load_gen_probe"), "{}", r.stderr);
}
