//! Differences between a primary and its live physical standby, proven to come from replay
//! (`explained_by: replay`), and the guards: a diverged standby, unrelated clusters and a
//! standby of a forked sibling are never explained.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Cluster, StopMode};

use crate::common::{two, Run, Tables};

/// A background pgbench, stopped when dropped (also when an assertion fails first).
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pgbench(dsn: &str, args: &[&str]) -> Command {
    let mut c = Command::new(testkit::pg_bin().join("pgbench"));
    testkit::hermetic(&mut c);
    c.args(args).arg(dsn);
    c
}

/// `pgbench -i -s 1` (branches, tellers, accounts, history).
fn pgbench_init(dsn: &str) {
    let out = pgbench(dsn, &["-i", "-s", "1", "-q"]).output().unwrap();
    assert!(out.status.success(), "pgbench -i: {out:?}");
}

/// pgbench with these arguments in the background, for at most two minutes.
fn start_load(dsn: &str, args: &[&str]) -> Load {
    let mut all = vec!["-n", "-T", "120"];
    all.extend_from_slice(args);
    let child = pgbench(dsn, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgbench");
    Load(child)
}

/// Wait until `sql` (a count) reaches `n`, so that the load is known to be running.
fn wait_count(p: &Cluster, db: &str, sql: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c: i64 = p.psql(db, sql).parse().unwrap();
        if c >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the load did not run: {sql} = {c}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Checks that hold for every run against a live standby that ended equal.
fn assert_explained_run(r: &Run) {
    assert_eq!(r.code, 0, "{}", r.dump());
    let s = r.summary();
    assert_eq!(s["different"], 0, "{}", r.dump());
    let hosts = r.of("host");
    let xids = hosts[0]["xid_snapshot"]
        .as_str()
        .expect("source xid_snapshot");
    assert_eq!(xids.split(':').count(), 3, "{xids}");
    assert!(hosts[1]["wait_lsn"].is_string(), "{}", hosts[1]);
    for t in r.of("table") {
        assert_eq!(t["equal"], true, "{t}");
    }
}

#[test]
fn hot_rows_of_a_live_standby_are_explained_by_replay() {
    let p = Cluster::builder().name("primary").start();
    let db = p.create_db();
    let dsn = p.dsn(db.name());
    pgbench_init(&dsn);
    let sb = p.standby();
    p.wait_replayed(&sb, Duration::from_secs(60));
    let tgt = sb.dsn(db.name());

    // TPC-B: every transaction updates one of the single branch row and ten teller rows.
    let load = start_load(&dsn, &["-c", "4"]);
    wait_count(&p, db.name(), "SELECT count(*) FROM pgbench_history", 50);
    let (mut hot, mut explained) = (0, 0);
    for _ in 0..4 {
        // No --recheck: the proof alone must make the verdict.
        let r = two(&dsn, &tgt, &["--wait-replay"]);
        assert_explained_run(&r);
        let s = r.summary();
        assert_eq!(s["row_diffs"], s["explained_row_diffs"], "{}", r.dump());
        assert_eq!(s["transient_row_diffs"], 0);
        assert_eq!(s["different_chunks"], s["explained_chunks"], "{}", r.dump());
        for d in r.of("row_diff") {
            assert_eq!(d["explained_by"], "replay", "{d}");
            assert!(
                d["xid"].as_str().unwrap().parse::<u64>().unwrap() > 2,
                "{d}"
            );
            assert!(d.get("recheck").is_none(), "{d}");
        }
        for c in r.of("chunk") {
            assert_eq!(c["explained"], true, "{c}");
        }
        for t in ["pgbench_branches", "pgbench_tellers"] {
            let t = r.table(t);
            assert_eq!(
                t["row_diffs"],
                t.get("explained_row_diffs").cloned().unwrap_or(0.into())
            );
            hot += count(&t["row_diffs"]);
        }
        explained += count(&s["explained_row_diffs"]);
    }
    drop(load);
    assert!(
        hot > 0 && explained > 0,
        "no hot row changed between the snapshots in 4 runs (hot {hot}, explained {explained})"
    );

    // Once the load has stopped, the standby is simply equal (and the wait ends even if the
    // primary's last records are never flushed by a commit).
    let r = two(&dsn, &tgt, &["--wait-replay", "--timeout", "60s"]);
    assert_explained_run(&r);
    assert_eq!(r.summary()["row_diffs"], 0, "{}", r.dump());
}

const MIXED: &str = "\
\\set p random(1, 20)
\\set n random(1, 200)
BEGIN;
UPDATE par SET v = v + 1 WHERE id = :p;
INSERT INTO kid (pid, v) VALUES (:p, 1);
UPDATE nokey SET b = b + 1 WHERE a = :n;
DELETE FROM gone WHERE id = (SELECT min(id) FROM gone);
INSERT INTO gone (v) VALUES (0);
COMMIT;
";

/// Row locks: FOR SHARE on the hot parent rows plus foreign-key checks (multixacts), and
/// FOR UPDATE on the newest `gone` row (a lock-only xmax).
const LOCKS: &str = "\
\\set p random(1, 20)
BEGIN;
SELECT v FROM par WHERE id = :p FOR SHARE;
INSERT INTO kid (pid, v) VALUES (:p, 2);
SELECT v FROM gone WHERE id = (SELECT max(id) FROM gone) FOR UPDATE;
COMMIT;
";

#[test]
fn deletes_locks_and_keyless_tables_under_load_end_explained_or_transient() {
    let p = Cluster::builder().name("primary").start();
    let db = p.create_db();
    let dsn = p.dsn(db.name());
    p.psql(
        db.name(),
        "CREATE TABLE par (id int PRIMARY KEY, v int);
         INSERT INTO par SELECT g, 0 FROM generate_series(1, 20) g;
         CREATE TABLE kid (id serial PRIMARY KEY, pid int REFERENCES par, v int);
         CREATE TABLE nokey (a int, b int);
         INSERT INTO nokey SELECT g, 0 FROM generate_series(1, 200) g;
         CREATE TABLE gone (id serial PRIMARY KEY, v int);
         INSERT INTO gone (v) SELECT 0 FROM generate_series(1, 3000);",
    );
    let sb = p.standby();
    p.wait_replayed(&sb, Duration::from_secs(60));
    let tgt = sb.dsn(db.name());
    let dir = p.dir().join("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let (mixed, locks) = (dir.join("mixed.sql"), dir.join("locks.sql"));
    std::fs::write(&mixed, MIXED).unwrap();
    std::fs::write(&locks, LOCKS).unwrap();
    let f = |p: &Path| p.to_str().unwrap().to_owned();
    let load = start_load(&dsn, &["-c", "4", "-f", &f(&mixed), "-f", &f(&locks)]);
    wait_count(&p, db.name(), "SELECT count(*) FROM kid", 50);
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = two(&dsn, &tgt, &["--wait-replay", "--recheck", "3"]);
        assert_explained_run(&r);
        for d in r.of("row_diff") {
            if d["explained_by"] == "replay" {
                kinds.insert(format!("{}:{}", d["name"], d["kind"]));
            } else {
                // A delete that committed just before the standby's snapshot cannot be proven
                // (its deleter may still have been running there); it is gone on both sides
                // when read again.
                assert_eq!(d["recheck"], "transient", "{d}");
            }
        }
        assert_eq!(r.table("nokey")["key"], serde_json::json!(["ctid"]));
    }
    drop(load);
    for k in ["\"par\":\"changed\"", "\"kid\":\"extra_on_target\""] {
        assert!(kinds.contains(k), "{k} never explained: {kinds:?}");
    }
}

/// Write `bytes` over the first occurrence of `find` in a file; returns its offset.
fn patch(path: &Path, find: &[u8], with: impl FnOnce(&mut [u8], usize)) -> usize {
    let mut data = std::fs::read(path).unwrap();
    let at = data
        .windows(find.len())
        .position(|w| w == find)
        .unwrap_or_else(|| {
            panic!(
                "{:?} not in {}",
                String::from_utf8_lossy(find),
                path.display()
            )
        });
    with(&mut data, at);
    std::fs::write(path, data).unwrap();
    at
}

#[test]
fn a_diverged_standby_is_not_explained_by_replay() {
    let p = Cluster::builder().name("primary").start();
    let db = p.create_db();
    let dsn = p.dsn(db.name());
    p.psql(
        db.name(),
        "CREATE TABLE canary (id int PRIMARY KEY, note text);
         INSERT INTO canary VALUES (1, 'canary-changed-0001'), (2, 'canary-missing-0002');
         INSERT INTO canary SELECT g, 'filler-' || g FROM generate_series(3, 100) g;
         CREATE TABLE hot (id int PRIMARY KEY, n int);
         INSERT INTO hot SELECT g, 0 FROM generate_series(1, 5) g;
         CHECKPOINT;",
    );
    let file = p.psql(db.name(), "SELECT pg_relation_filepath('canary')");
    let mut sb = p.standby();
    p.wait_replayed(&sb, Duration::from_secs(60));
    // Corrupt the standby's copy of canary (its page is on disk after a clean stop, and no
    // later WAL touches it): row 1 gets another note; row 2's header says its inserting
    // transaction aborted (HEAP_XMIN_INVALID), so the standby no longer sees it.
    sb.stop(StopMode::Fast);
    let path = sb.data_dir().join(&file);
    patch(&path, b"canary-changed-0001", |d, at| d[at] = b'C');
    patch(&path, b"canary-missing-0002", |d, at| {
        // Header (24 bytes), id int4, then the note with a 1-byte varlena header.
        let h = at - 29;
        assert_eq!(i32::from_le_bytes(d[h + 24..h + 28].try_into().unwrap()), 2);
        let mut mask = u16::from_le_bytes([d[h + 20], d[h + 21]]);
        mask = (mask | 0x0200) & !0x0100;
        d[h + 20..h + 22].copy_from_slice(&mask.to_le_bytes());
    });
    sb.start_again();
    let tgt = sb.dsn(db.name());

    // Hot rows keep changing meanwhile, so the runs also hold differences replay explains.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut c = p.connect(db.name());
        std::thread::spawn(move || {
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) && i < 500_000 {
                if c.batch_execute(&format!(
                    "UPDATE hot SET n = n + 1 WHERE id = {}",
                    i % 5 + 1
                ))
                .is_err()
                {
                    break;
                }
                i += 1;
            }
            i
        })
    };
    wait_count(&p, db.name(), "SELECT sum(n) FROM hot", 20);
    let runs = [
        two(&dsn, &tgt, &["--wait-replay"]),
        two(&dsn, &tgt, &["--wait-replay", "--recheck", "2"]),
    ];
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 20);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.code, 1, "{}", r.dump());
        assert_eq!(
            r.row_diffs("canary", "id"),
            [
                ("1".to_owned(), "changed".to_owned()),
                ("2".to_owned(), "missing_on_target".to_owned())
            ],
            "{}",
            r.dump()
        );
        for d in r.of_table("row_diff", "canary") {
            assert!(d.get("explained_by").is_none(), "{d}");
            if i == 1 {
                assert_eq!(d["recheck"], "persistent", "{d}");
            }
        }
        let c = r.table("canary");
        assert_eq!(c["equal"], false, "{c}");
        assert!(c.get("explained_row_diffs").is_none(), "{c}");
        for ch in r.of_table("chunk", "canary") {
            assert!(ch.get("explained").is_none(), "{ch}");
        }
        assert_eq!(r.table("hot")["equal"], true, "{}", r.dump());
        assert_eq!(r.summary()["different"], 1);
    }
}

#[test]
fn unrelated_clusters_are_never_explained() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    let setup = "CREATE TABLE t (id int PRIMARY KEY, v int);
                 INSERT INTO t SELECT g, g FROM generate_series(1, 100) g;
                 CREATE TABLE nokey (v int); INSERT INTO nokey VALUES (1);";
    s.psql(ds.name(), setup);
    t.psql(dt.name(), setup);
    // The target's xids run far ahead of the source's, so its new row versions look like
    // "after the source's snapshot" to anyone comparing xids across clusters.
    t.psql(
        dt.name(),
        "DO $$ BEGIN FOR i IN 1..500 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$",
    );
    t.psql(
        dt.name(),
        "UPDATE t SET v = 0 WHERE id = 9; INSERT INTO t VALUES (1000, 0); UPDATE nokey SET v = 2;
         DELETE FROM t WHERE id = 7",
    );
    let r = two(&s.dsn(ds.name()), &t.dsn(dt.name()), &["--recheck", "1"]);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(
        r.row_diffs("t", "id"),
        [
            ("1000".to_owned(), "extra_on_target".to_owned()),
            ("7".to_owned(), "missing_on_target".to_owned()),
            ("9".to_owned(), "changed".to_owned())
        ]
    );
    for d in r.of("row_diff") {
        assert!(d.get("explained_by").is_none(), "{d}");
        assert_eq!(d["recheck"], "persistent", "{d}");
    }
    assert_eq!(r.summary()["explained_row_diffs"], 0);
    assert!(r.of("host")[0].get("xid_snapshot").is_none());
}

#[test]
fn a_standby_of_a_forked_sibling_is_not_explained() {
    // P with two standbys; A is promoted (timeline 2) while B keeps following P: same system
    // identifier, B in recovery, but B replays P's history, not A's.
    let p = Cluster::builder().name("p").start();
    let db = p.create_db();
    p.psql(
        db.name(),
        "CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g;",
    );
    let a = p.standby_builder().name("a").start_standby_of(&p);
    let b = p.standby_builder().name("b").start_standby_of(&p);
    p.wait_replayed(&a, Duration::from_secs(60));
    a.promote();
    // P's new row versions: xids above anything A's snapshot sees.
    p.psql(
        db.name(),
        "DO $$ BEGIN FOR i IN 1..50 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$",
    );
    p.psql(
        db.name(),
        "UPDATE t SET v = 1 WHERE id <= 3; INSERT INTO t VALUES (500, 1);
         SELECT pg_switch_wal(); CREATE TABLE pad (x int); SELECT pg_switch_wal();",
    );
    p.wait_replayed(&b, Duration::from_secs(60));
    let r = two(
        &a.dsn(db.name()),
        &b.dsn(db.name()),
        &["--wait-replay", "--timeout", "30s", "--table", "t"],
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    assert!(r.stderr.contains("timeline"), "{}", r.dump());
    assert_eq!(r.row_diffs("t", "id").len(), 4, "{}", r.dump());
    for d in r.of("row_diff") {
        assert!(d.get("explained_by").is_none(), "{d}");
    }
    assert_eq!(r.table("t")["equal"], false);
}

#[test]
fn truncated_drill_down_is_never_proven_equal() {
    let p = Cluster::builder().name("primary").start();
    let db = p.create_db();
    let dsn = p.dsn(db.name());
    p.psql(
        db.name(),
        "CREATE TABLE ev (id bigserial PRIMARY KEY, v int)",
    );
    let sb = p.standby();
    p.wait_replayed(&sb, Duration::from_secs(60));
    let tgt = sb.dsn(db.name());
    // Ten rows per transaction: a transaction between the snapshots makes ten differences.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut c = p.connect(db.name());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                if c.batch_execute("INSERT INTO ev (v) SELECT g FROM generate_series(1, 10) g")
                    .is_err()
                {
                    break;
                }
                i += 1;
            }
        })
    };
    wait_count(&p, db.name(), "SELECT count(*) FROM ev", 100);
    let mut truncated = 0;
    for _ in 0..6 {
        let r = two(&dsn, &tgt, &["--wait-replay", "--max-row-diffs", "3"]);
        let t = r.table("ev");
        if t["truncated"] == true {
            truncated += 1;
            // Three explained rows found, the rest unresolved: not equal.
            assert_eq!(r.code, 1, "{}", r.dump());
            assert_eq!(t["equal"], false, "{t}");
            assert!(r.stderr.contains("cannot be proven equal"), "{}", r.stderr);
            assert!(count(&t["row_diffs"]) <= 3, "{t}");
        } else {
            assert_eq!(r.code, 0, "{}", r.dump());
        }
        if truncated >= 2 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(truncated > 0, "no run found more than 3 differences");
}
