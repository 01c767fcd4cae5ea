//! The tables load-gen makes in the database under test (issue 16, item 5): it says so when
//! it creates one (stderr and a `note` record `created_table`), `--cleanup` drops the probe
//! table a run made (after `--verify`), `load-gen cleanup` drops them later, and a run
//! refused before any load leaves none behind.

use serde_json::Value;
use testkit::Cluster;

use crate::common::{init, num, run};

fn exists(c: &Cluster, db: &str, table: &str) -> bool {
    c.psql(db, &format!("SELECT to_regclass('{table}') IS NOT NULL"))
        .trim()
        == "t"
}

fn notes<'a>(recs: &'a [Value], code: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["type"] == "note" && r["code"] == code)
        .collect()
}

#[test]
fn a_run_says_it_made_the_probe_table_and_cleanup_drops_it() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    let probe = [
        "--dsn", &dsn, "-w", "probe", "-c", "1", "-T", "1s", "--tick", "200ms",
    ];

    // The first run makes the table, says so before it starts, and drops it after --verify.
    let r = run(&[&probe[..], &["--verify", "--cleanup", "--json-only"]].concat());
    r.expect(0);
    let made = notes(&r.records, "created_table");
    assert_eq!(made.len(), 1, "{r:#?}");
    assert_eq!(made[0]["table"], "load_gen_probe");
    assert_eq!(made[0]["database"], db.name());
    let first_start = r.records.iter().position(|x| x["type"] == "start").unwrap();
    let first_note = r.records.iter().position(|x| x["type"] == "note").unwrap();
    assert!(first_note < first_start, "{r:#?}");
    assert!(
        r.stderr.contains(&format!(
            "load-gen: created table load_gen_probe in database {}; drop it with --cleanup",
            db.name()
        )),
        "{}",
        r.stderr
    );
    let s = r.summary();
    assert!(num(s, "committed") > 0, "{s}");
    assert_eq!(
        num(s, "present"),
        num(s, "committed"),
        "verified before the drop: {s}"
    );
    assert_eq!(
        s["dropped_tables"],
        serde_json::json!(["load_gen_probe"]),
        "{s}"
    );
    assert_eq!(notes(&r.records, "dropped_table").len(), 1, "{r:#?}");
    assert!(!exists(&c, db.name(), "load_gen_probe"));

    // Without --cleanup the table stays (and the run said it made it).
    let r = run(&[&probe[..], &["--json-only"]].concat());
    r.expect(0);
    assert_eq!(notes(&r.records, "created_table").len(), 1, "{r:#?}");
    assert!(exists(&c, db.name(), "load_gen_probe"));

    // A run that finds it says nothing about it, and --cleanup keeps what it did not make.
    let r = run(&[&probe[..], &["--verify", "--cleanup", "--json-only"]].concat());
    r.expect(0);
    assert!(notes(&r.records, "created_table").is_empty(), "{r:#?}");
    assert_eq!(r.summary()["dropped_tables"], serde_json::json!([]));
    assert!(
        r.stderr.contains("kept table load_gen_probe"),
        "{}",
        r.stderr
    );
    assert!(exists(&c, db.name(), "load_gen_probe"));

    // `load-gen cleanup` drops it; a second one finds nothing to drop.
    let r = run(&["cleanup", "--dsn", &dsn]);
    r.expect(0);
    assert_eq!(
        r.summary()["dropped"],
        serde_json::json!(["load_gen_probe"])
    );
    assert_eq!(notes(&r.records, "dropped_table").len(), 1, "{r:#?}");
    assert!(!exists(&c, db.name(), "load_gen_probe"));
    let r = run(&["cleanup", "--dsn", &dsn]);
    r.expect(0);
    assert_eq!(r.summary()["dropped"], serde_json::json!([]));
}

#[test]
fn a_run_refused_before_any_load_leaves_no_table() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    // mixed needs the pgbench tables: refused, and the probe table was not made first.
    let r = run(&["--dsn", &dsn, "-w", "mixed", "-T", "1s", "--json-only"]);
    r.expect(65);
    assert!(!exists(&c, db.name(), "load_gen_probe"), "{}", r.stderr);
    // An ack log that cannot be written: refused after the table was made, which goes again.
    let bad_log = c.dir().join("no-such-dir").join("acked.jsonl");
    let r = run(&[
        "--dsn",
        &dsn,
        "-w",
        "probe",
        "-T",
        "1s",
        "--json-only",
        "--log",
        bad_log.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(!exists(&c, db.name(), "load_gen_probe"), "{r:#?}");
    // --cleanup would drop the rows a later `load-gen verify --log` needs.
    let log = c.dir().join("acked.jsonl");
    let r = run(&[
        "--dsn",
        &dsn,
        "-w",
        "probe",
        "--cleanup",
        "--log",
        log.to_str().unwrap(),
    ]);
    r.expect(2);
    assert!(r.stderr.contains("--cleanup"), "{}", r.stderr);
}

#[test]
fn init_says_what_it_made_and_cleanup_pgbench_drops_it() {
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    let r = run(&["--dsn", &dsn, "--init", "--scale", "1"]);
    r.expect(0);
    let mut made: Vec<&str> = notes(&r.records, "created_table")
        .iter()
        .map(|n| n["table"].as_str().unwrap())
        .collect();
    made.sort();
    let all = [
        "load_gen_probe",
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_history",
        "pgbench_tellers",
    ];
    assert_eq!(made, all, "{r:#?}");
    assert!(
        r.stderr.contains("load-gen cleanup --pgbench"),
        "{}",
        r.stderr
    );
    // Without --pgbench only the probe table goes.
    init(&dsn, 1);
    let r = run(&["cleanup", "--dsn", &dsn]);
    r.expect(0);
    assert!(exists(&c, db.name(), "pgbench_accounts"));
    let r = run(&["cleanup", "--dsn", &dsn, "--pgbench"]);
    r.expect(0);
    assert_eq!(
        r.summary()["dropped"].as_array().unwrap().len(),
        4,
        "{r:#?}"
    );
    for t in all {
        assert!(!exists(&c, db.name(), t), "{t}");
    }
}

/// The probe rows are the evidence: `--verify --cleanup` keeps the table when the verify
/// step finds acknowledged writes lost (here deleted behind the run's back), and says why,
/// so that `load-gen verify --log` can look again; before, the table was dropped whatever
/// the verdict. A standby is refused as the server to verify on: it may lag behind the
/// primary or hold writes the primary lost (a paused standby said 0 lost while the primary
/// had lost some).
#[test]
fn the_evidence_stays_and_is_checked_on_the_primary() {
    use std::time::Duration;

    use crate::common::Background;

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
            "--verify",
            "--cleanup",
        ],
    );
    lg.wait_for(Duration::from_secs(20), "a tick with commits", |r| {
        r["type"] == "tick" && r["committed"].as_u64().unwrap_or(0) > 2
    });
    c.psql(db.name(), "DELETE FROM load_gen_probe WHERE seq < 3");
    let r = lg.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(20));
    r.expect(1);
    assert!(num(r.summary(), "lost") > 0, "{}", r.dump());
    let kept = notes(&r.records, "kept_table");
    assert_eq!(kept.len(), 1, "{}", r.dump());
    assert!(
        kept[0]["message"]
            .as_str()
            .unwrap()
            .contains("acknowledged writes are lost"),
        "{}",
        kept[0]
    );
    assert!(exists(&c, db.name(), "load_gen_probe"));

    // Checked again later, on the primary: the same loss. On a standby: refused.
    let r = run(&["verify", "--dsn", &dsn, "--log", log.to_str().unwrap()]);
    r.expect(1);
    let standby = c.standby();
    c.wait_replayed(&standby, Duration::from_secs(30));
    let r = run(&[
        "verify",
        "--dsn",
        &standby.dsn(db.name()),
        "--log",
        log.to_str().unwrap(),
    ]);
    r.expect(69);
    assert!(
        r.stderr.contains("is a standby") && r.stderr.contains("target_session_attrs=read-write"),
        "{}",
        r.stderr
    );
    assert_eq!(r.summary()["success"], false);
}
