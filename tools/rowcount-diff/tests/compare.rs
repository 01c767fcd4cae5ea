//! Counting: equal hosts, different counts, tables on one side only, column mismatches,
//! estimates, CSV, filters, a standby, and one snapshot shared by all sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use testkit::Cluster;

use crate::common::{run, Tables};

const SCHEMA: &str = "CREATE TABLE a (id int PRIMARY KEY, v text);
    CREATE TABLE b (id int PRIMARY KEY);
    CREATE TABLE empty (id int);
    CREATE SCHEMA other; CREATE TABLE other.c (x int);
    INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 1000) g;
    INSERT INTO b SELECT generate_series(1, 10);
    INSERT INTO other.c VALUES (1);";

#[test]
fn equal_databases_exit_0_with_lsns() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").host("127.0.0.2").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    s.psql(ds.name(), SCHEMA);
    t.psql(dt.name(), SCHEMA);
    let r = run(&[
        "--source",
        &s.dsn(ds.name()),
        "--target",
        &t.dsn(dt.name()),
        "-j",
        "3",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.of("host").len(), 2);
    assert_eq!(r.of("table").len(), 4);
    let a = r.table("public", "a");
    assert_eq!(a["equal"], true);
    assert_eq!(a["source_rows"], 1000);
    assert_eq!(a["target_rows"], 1000);
    assert_eq!(a["exact"], true);
    assert!(a["source_lsn"].as_str().unwrap().contains('/'));
    assert_eq!(a["source_lsn"], r.of("host")[0]["lsn"]);
    assert_eq!(r.table("public", "empty")["source_rows"], 0);
    let sum = r.summary();
    assert_eq!(sum["tables"], 4);
    assert_eq!(sum["equal"], 4);
    assert_eq!(sum["success"], true);
}

#[test]
fn differences_are_found_and_exit_1() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    s.psql(ds.name(), SCHEMA);
    t.psql(dt.name(), SCHEMA);
    s.psql(ds.name(), "CREATE TABLE only_src (x int)");
    t.psql(
        dt.name(),
        "DELETE FROM a WHERE id = 7; CREATE TABLE only_tgt (x int);
         ALTER TABLE b ADD COLUMN extra int; ALTER TABLE other.c ALTER COLUMN x TYPE bigint;",
    );
    let r = run(&["--source", &s.dsn(ds.name()), "--target", &t.dsn(dt.name())]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let a = r.table("public", "a");
    assert_eq!(a["equal"], false);
    assert_eq!(
        (a["source_rows"].as_i64(), a["target_rows"].as_i64()),
        (Some(1000), Some(999))
    );
    assert_eq!(a["columns_equal"], true);

    let only = r.table("public", "only_src");
    assert_eq!(only["missing_on"], "target");
    assert_eq!(only["target_rows"], serde_json::Value::Null);
    assert_eq!(only["equal"], false);
    assert_eq!(r.table("public", "only_tgt")["missing_on"], "source");

    let b = r.table("public", "b");
    assert_eq!(
        b["equal"], false,
        "same count, but a column more on the target"
    );
    assert_eq!(b["columns_equal"], false);
    assert_eq!(b["columns_only_on_target"], serde_json::json!(["extra"]));
    let c = r.table("other", "c");
    assert_eq!(
        c["column_type_diffs"],
        serde_json::json!([{"column": "x", "source": "integer", "target": "bigint"}])
    );
    assert_eq!(r.table("public", "empty")["equal"], true);
    let sum = r.summary();
    assert_eq!(
        (sum["equal"].as_u64(), sum["different"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(sum["missing"], 2);
    assert_eq!(sum["exit_code"], 1);
}

#[test]
fn filters_estimates_and_csv() {
    let s = Cluster::start();
    let ds = s.create_db();
    s.psql(ds.name(), SCHEMA);
    s.psql(ds.name(), "ANALYZE");
    let dsn = s.dsn(ds.name());

    let r = run(&[
        "--source",
        &dsn,
        "--target",
        &dsn,
        "--schema",
        "public",
        "--exclude",
        "empt*",
    ]);
    let names: Vec<&str> = r
        .of("table")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let r = run(&["--source", &dsn, "--target", &dsn, "--table", "other.*"]);
    let names: Vec<&str> = r
        .of("table")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c"]);

    // A filter that selects nothing fails, naming it (never exit 0 with `tables: 0`); in CSV
    // mode too.
    for (args, names) in [
        (&["--table", "nosuch"][..], "--table 'nosuch'"),
        (&["--schema", "nosuch"][..], "--schema 'nosuch'"),
        (&["--exclude", "nosuch"][..], "--exclude 'nosuch'"),
        (
            &["--schema", "other", "--exclude", "c"][..],
            "leaves no table",
        ),
        (
            &["--format", "csv", "--table", "nosuch"][..],
            "--table 'nosuch'",
        ),
    ] {
        let mut a = vec!["--source", &dsn, "--target", &dsn];
        a.extend_from_slice(args);
        let r = run(&a);
        assert_eq!(r.code, 65, "{args:?}: {}", r.dump());
        assert!(r.stderr.contains(names), "{}", r.stderr);
        assert_eq!(r.of("table").len(), 0);
    }
    let empty = s.create_db();
    let e = s.dsn(empty.name());
    let r = run(&["--source", &e, "--target", &e]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.one("note")["code"], "no_tables");

    let r = run(&[
        "--source",
        &dsn,
        "--target",
        &dsn,
        "--estimate",
        "--table",
        "a",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let a = r.table("public", "a");
    assert_eq!(a["exact"], false);
    assert_eq!(a["source_rows"], 1000, "ANALYZE made reltuples exact");

    let r = run(&[
        "--source", &dsn, "--target", &dsn, "--format", "csv", "--table", "public.*",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "schema,name,equal,source_rows,target_rows,exact,missing_on,columns_equal,source_lsn,target_lsn"
    );
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(
        lines[1].starts_with("public,a,true,1000,1000,true,,true,"),
        "{}",
        lines[1]
    );
}

#[test]
fn standby_is_read_at_its_replay_lsn() {
    let p = Cluster::builder().name("primary").start();
    let db = p.create_db();
    p.psql(db.name(), SCHEMA);
    let sb = p.standby();
    p.wait_replayed(&sb, Duration::from_secs(30));
    let r = run(&[
        "--source",
        &p.dsn(db.name()),
        "--target",
        &sb.dsn(db.name()),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let hosts = r.of("host");
    assert_eq!(hosts[1]["in_recovery"], true);
    assert_eq!(hosts[0]["in_recovery"], false);
}

/// Two tables written in the same transactions always hold the same number of rows. Counted in
/// two different sessions of one shared snapshot they must agree, run after run, while the
/// writes go on; separate snapshots per session would see them disagree.
#[test]
fn all_sessions_count_in_one_snapshot() {
    let s = Cluster::start();
    let db = s.create_db();
    s.psql(db.name(), "CREATE TABLE l (x int); CREATE TABLE r (x int);");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut c = s.connect(db.name());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                c.batch_execute("BEGIN; INSERT INTO l VALUES (1); SELECT pg_sleep(0.001); INSERT INTO r VALUES (1); COMMIT")
                    .unwrap();
                i += 1;
            }
        })
    };
    let dsn = s.dsn(db.name());
    for _ in 0..8 {
        let r = run(&["--source", &dsn, "--target", &dsn, "-j", "2"]);
        assert!(r.code == 0 || r.code == 1, "{}\n{}", r.stdout, r.stderr);
        let (l, rr) = (r.table("public", "l"), r.table("public", "r"));
        assert_eq!(l["source_rows"], rr["source_rows"], "{}", r.stdout);
        assert_eq!(l["target_rows"], rr["target_rows"], "{}", r.stdout);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}
