//! Load across a switchover: a primary, a streaming standby, `stop -m fast`, promote.

use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::{Cluster, StopMode};

use crate::common::{init, num, run, Background};

fn two_host_dsn(first: &Cluster, second: &Cluster, db: &str) -> String {
    format!(
        "host={},{} port={},{} user=postgres dbname={db} sslmode=disable target_session_attrs=read-write",
        first.host(),
        second.host(),
        first.port(),
        second.port()
    )
}

fn host(c: &Cluster) -> String {
    format!("{}:{}", c.host(), c.port())
}

#[test]
fn load_survives_a_switchover_to_a_promoted_standby() {
    let mut a = Cluster::builder().name("a").start();
    let db = a.create_db();
    init(&a.dsn(db.name()), 1);
    let b = a.standby();
    let dsn = two_host_dsn(&a, &b, db.name());
    let log = a.dir().join("acked.jsonl");
    let log_s = log.to_str().unwrap();
    let mut lg = Background::start(
        a.dir(),
        &[
            "--dsn", &dsn, "-c", "4", "--tick", "250ms", "--log", log_s, "--verify",
        ],
    );
    let (ha, hb) = (host(&a), host(&b));
    lg.wait_for(Duration::from_secs(20), "commits on the primary", |r| {
        r["type"] == "tick" && r["host"] == ha.as_str()
    });
    lg.wait_for(Duration::from_secs(20), "every client connected", |r| {
        r["type"] == "tick" && r["connected"] == 4
    });

    // The switchover, as a script does it.
    a.psql("postgres", "CHECKPOINT");
    a.stop(StopMode::Fast);
    b.promote();
    lg.wait_for(
        Duration::from_secs(30),
        "commits on the promoted standby",
        |r| r["type"] == "tick" && r["host"] == hb.as_str(),
    );
    let r = lg.signal_and_wait(Signal::SIGINT, Duration::from_secs(15));
    r.expect(0);

    let s = r.summary();
    assert_eq!(s["stopped_by"], "SIGINT");
    assert_eq!(num(s, "lost"), 0, "{s}");
    assert_eq!(num(s, "split_brain"), 0, "{s}");
    assert_eq!(s["verified_on"], hb.as_str());
    assert!(
        num(&s["hosts"], &ha) > 0 && num(&s["hosts"], &hb) > 0,
        "{s}"
    );
    // The write gap spans the switchover; it is reported, and it cannot exceed the run.
    let gap = num(s, "max_write_gap_ms");
    assert!(gap > 0 && gap <= num(s, "duration_ms"), "{s}");
    assert!(num(s, "unavailable_ms") <= num(s, "duration_ms"), "{s}");
    assert!(num(s, "reconnects") >= 4, "{s}");
    let timelines: Vec<u64> = s["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| num(v, "timeline"))
        .collect();
    assert_eq!(timelines, [1, 2], "{s}");
    for client in 1..=4u64 {
        assert!(
            r.of("disconnect")
                .iter()
                .any(|d| num(d, "client") == client),
            "client {client} never lost its session: {r:#?}"
        );
    }

    // The log says the same on the final primary.
    let v = run(&["verify", "--dsn", &dsn, "--log", log_s]);
    v.expect(0);
    assert_eq!(num(v.summary(), "lost"), 0);
    assert_eq!(num(v.summary(), "acked"), num(s, "acked"));
}

#[test]
fn an_old_primary_that_keeps_writing_after_a_promotion_is_split_brain() {
    let a = Cluster::builder().name("a").start();
    let db = a.create_db();
    init(&a.dsn(db.name()), 1);
    let b = a.standby();
    // The standby first: sessions land on the old primary until the standby is promoted.
    let dsn = two_host_dsn(&b, &a, db.name());
    let log = a.dir().join("acked.jsonl");
    let log_s = log.to_str().unwrap();
    let mut lg = Background::start(
        a.dir(),
        &[
            "--dsn", &dsn, "-c", "2", "-w", "probe", "--tick", "200ms", "--log", log_s,
        ],
    );
    let (ha, hb) = (host(&a), host(&b));
    lg.wait_for(Duration::from_secs(20), "commits on the primary", |r| {
        r["type"] == "tick" && r["host"] == ha.as_str()
    });

    // Promote the standby without stopping the old primary, and push one client over.
    b.promote();
    a.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'pgshift-load-gen' ORDER BY pid LIMIT 1",
    );
    lg.wait_for(
        Duration::from_secs(20),
        "both primaries acknowledging",
        |r| {
            r["type"] == "tick"
                && r["hosts"][ha.as_str()].as_u64().unwrap_or(0) > 0
                && r["hosts"][hb.as_str()].as_u64().unwrap_or(0) > 0
        },
    );
    let r = lg.signal_and_wait(Signal::SIGTERM, Duration::from_secs(15));
    r.expect(1);
    let s = r.summary();
    assert_eq!(s["stopped_by"], "SIGTERM");
    assert!(num(s, "split_brain") > 0, "{s}");
    let sb = r.of("split_brain");
    assert_eq!(sb.len(), 1, "one record per pair of servers: {r:#?}");
    assert_eq!(sb[0]["host"], ha.as_str());
    assert_eq!(sb[0]["superseded_by_host"], hb.as_str());

    // On the new primary, the old one's later writes are missing and are split brain.
    let v = run(&["verify", "--dsn", &b.dsn(db.name()), "--log", log_s]);
    v.expect(1);
    let vs = v.summary();
    assert!(num(vs, "lost") > 0, "{vs}");
    assert!(num(vs, "split_brain") > 0, "{vs}");
    assert!(v.of("split_brain").iter().all(|r| r["host"] == ha.as_str()));
}
