//! A live hot standby: read at its replay LSN, compared equal under concurrent writes with
//! `--wait-replay --recheck`; a real divergence stays `persistent`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::Cluster;

use crate::common::{two, Tables};

#[test]
fn live_standby_under_concurrent_writes_compares_equal_with_wait_replay() {
    let p = Cluster::builder().name("primary").start();
    let db = p.create_db();
    p.psql(
        db.name(),
        "CREATE TABLE acct (id int PRIMARY KEY, bal int, note text);
         INSERT INTO acct SELECT g, 0, 'n' || g FROM generate_series(1, 20000) g;
         CREATE TABLE log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now());
         CREATE TABLE hist (n int, at timestamptz DEFAULT now());
         INSERT INTO hist (n) SELECT generate_series(1, 100);",
    );
    let sb = p.standby();
    p.wait_replayed(&sb, Duration::from_secs(30));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut c = p.connect(db.name());
        std::thread::spawn(move || {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                let id = (i * 7919) % 20000 + 1;
                let r = c.batch_execute(&format!(
                    "BEGIN; UPDATE acct SET bal = bal + 1 WHERE id = {id}; INSERT INTO log DEFAULT VALUES;
                     INSERT INTO hist (n) VALUES ({i}); UPDATE hist SET at = now() WHERE n = {};
                     COMMIT",
                    i % 100 + 1
                ));
                if r.is_err() {
                    return i;
                }
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (src, tgt) = (p.dsn(db.name()), sb.dsn(db.name()));
    let args = [
        "--wait-replay",
        "--recheck",
        "5",
        "--chunk-rows",
        "4000",
        "--leaf-rows",
        "200",
    ];
    let r = two(&src, &tgt, &args);
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(
        writes > 10,
        "the writer did not run ({writes} transactions)"
    );
    assert_eq!(r.code, 0, "{}", r.dump());
    let hosts = r.of("host");
    assert_eq!(hosts[1]["in_recovery"], true);
    assert_eq!(hosts[0]["system_identifier"], hosts[1]["system_identifier"]);
    // Whatever differed in the first pass was explained by replay, or transient.
    for d in r.of("row_diff") {
        assert!(
            d["explained_by"] == "replay" || d["recheck"] == "transient",
            "{d}"
        );
    }
    for t in r.of("table") {
        assert_eq!(t["equal"], true, "{t}");
    }
    // A table without a key is identified by ctid on a physical standby, so it is drilled down
    // and rechecked like the others instead of being hashed whole.
    let hist = r.table("hist");
    assert_eq!(hist["key"], serde_json::json!(["ctid"]), "{hist}");
    assert!(hist["note"].as_str().unwrap().contains("ctid"));
    assert!(!r.stderr.contains("hist: no primary key"), "{}", r.stderr);
    assert_eq!(r.summary()["different"], 0);
}

#[test]
fn wait_replay_needs_a_standby_and_recheck_keeps_real_differences() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    let setup = "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
                 CREATE TABLE nokey (v int); INSERT INTO nokey VALUES (1);";
    s.psql(ds.name(), setup);
    t.psql(dt.name(), setup);
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &["--wait-replay", "--timeout", "2s"],
    );
    assert_eq!(r.code, 2, "{}", r.dump());
    let e = &r.of("error")[0];
    assert_eq!(e["host"], "target");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("drop --wait-replay"),
        "{e}"
    );

    t.psql(
        dt.name(),
        "UPDATE t SET v = 0 WHERE id = 9; UPDATE nokey SET v = 2",
    );
    let r = two(&s.dsn(ds.name()), &t.dsn(dt.name()), &["--recheck", "2"]);
    assert_eq!(r.code, 1, "{}", r.dump());
    let d = &r.of("row_diff")[0];
    assert_eq!(d["recheck"], "persistent");
    assert_eq!(d["kind"], "changed");
    assert_eq!(r.table("t")["recheck"], "persistent");
    assert_eq!(r.table("nokey")["recheck"], "persistent");
    assert_eq!(r.table("nokey")["equal"], false);
}
