//! One-host mode and `compare`, `--from-stdin` (the rowcount-diff pipeline), `--whole-table`.

use testkit::Cluster;

use crate::common::{run, run_with, two, Tables};

const SETUP: &str = "CREATE TABLE t (id int PRIMARY KEY, v text);
    INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5000) g;
    CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u SELECT generate_series(1, 10);
    CREATE TABLE nokey (x int); INSERT INTO nokey VALUES (1), (2);";

#[test]
fn one_host_outputs_compare_whole_tables_and_chunks_with_chunks_from() {
    let a = Cluster::builder().name("a").start();
    let b = Cluster::builder().name("b").host("127.0.0.2").start();
    let (da, db) = (a.create_db(), b.create_db());
    a.psql(da.name(), SETUP);
    b.psql(db.name(), SETUP);
    let dir = tempfile::tempdir().unwrap();
    let (fa, fb) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let (fa_s, fb_s) = (fa.to_str().unwrap(), fb.to_str().unwrap());

    let ra = run(&["--dsn", &a.dsn(da.name()), "--chunk-rows", "1000"]);
    assert_eq!(ra.code, 0, "{}", ra.dump());
    assert_eq!(ra.of("host").len(), 1);
    assert!(ra.of("host")[0].get("side").is_none());
    let t = ra.table("t");
    assert_eq!(t["rows"], 5000);
    assert_eq!(t["columns"], serde_json::json!(["id", "v"]));
    assert!(t["lsn"].as_str().unwrap().contains('/'));
    let chunks = ra.of_table("chunk", "t");
    assert_eq!(chunks.len() as u64, t["chunks"].as_u64().unwrap());
    assert!(chunks.len() >= 3);
    assert_eq!(chunks[0]["lower"], serde_json::Value::Null);
    assert_eq!(chunks[0]["lsn"], t["lsn"]);
    assert_eq!(chunks.last().unwrap()["upper"], serde_json::Value::Null);
    std::fs::write(&fa, &ra.stdout).unwrap();

    // Same data: equal, even with boundaries sampled independently.
    let rb = run(&["--dsn", &b.dsn(db.name()), "--chunk-rows", "1000"]);
    std::fs::write(&fb, &rb.stdout).unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 0, "{}", c.dump());
    assert_eq!(c.of("table").len(), 3);
    assert!(c
        .of("table")
        .iter()
        .all(|t| t["equal"] == true && t["equal_because"] == "hashes"));

    // A difference: found per table; per chunk only with the same boundaries.
    b.psql(db.name(), "UPDATE t SET v = 'x' WHERE id = 4321");
    let rb = run(&["--dsn", &b.dsn(db.name()), "--chunk-rows", "700"]);
    std::fs::write(&fb, &rb.stdout).unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 1, "{}", c.dump());
    assert_eq!(c.table("t")["equal"], false);
    assert!(
        c.table("t")["note"]
            .as_str()
            .unwrap()
            .contains("--chunks-from"),
        "{}",
        c.stdout
    );
    assert_eq!(c.table("u")["equal"], true);

    let rb = run(&["--dsn", &b.dsn(db.name()), "--chunks-from", fa_s]);
    assert_eq!(rb.code, 0, "{}", rb.dump());
    std::fs::write(&fb, &rb.stdout).unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 1, "{}", c.dump());
    let diff = c.of_table("chunk", "t");
    assert_eq!(diff.len(), 1, "{}", c.stdout);
    let lo: i64 = diff[0]["lower"]["id"]["text"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let hi: i64 = diff[0]["upper"]["id"]["text"]
        .as_str()
        .map_or(i64::MAX, |s| s.parse().unwrap());
    assert!(lo <= 4321 && 4321 < hi, "{}", c.stdout);
    assert_eq!(c.table("t")["different_chunks"], 1);

    // A table in one file only.
    b.psql(db.name(), "DROP TABLE u");
    let rb = run(&["--dsn", &b.dsn(db.name())]);
    std::fs::write(&fb, &rb.stdout).unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 1, "{}", c.dump());
    let e = c.of("error");
    assert_eq!(e[0]["kind"], "not_found");
    assert_eq!(e[0]["name"], "u");

    // What the runs did not checksum never reads as equal. A table each run failed on (a
    // float key cannot be chunked): its error is passed on, exit 65, no verdict for it.
    let float = "CREATE TABLE f (id float8 PRIMARY KEY, v text); INSERT INTO f VALUES (0.5, 'x')";
    a.psql(da.name(), float);
    b.psql(db.name(), float);
    b.psql(db.name(), "UPDATE f SET v = 'y'; CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u SELECT generate_series(1, 10)");
    let ra = run(&["--dsn", &a.dsn(da.name())]);
    let rb = run(&["--dsn", &b.dsn(db.name())]);
    assert_eq!((ra.code, rb.code), (65, 65), "{}", rb.dump());
    std::fs::write(&fa, &ra.stdout).unwrap();
    std::fs::write(&fb, &rb.stdout).unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 65, "{}", c.dump());
    let e = c.of("error");
    assert_eq!(e.len(), 2, "one per file: {}", c.dump());
    assert!(e
        .iter()
        .all(|e| e["name"] == "f" && e["message"].as_str().unwrap().contains("records an error")));
    assert!(c.of("table").iter().all(|t| t["name"] != "f"));
    assert_eq!(c.table("t")["equal"], false);
    // A run cut short (no summary): an error, though every table in it is equal.
    let rb = run(&["--dsn", &a.dsn(da.name()), "--exclude", "f"]);
    let cut: String = rb
        .stdout
        .lines()
        .filter(|l| !l.contains("\"summary\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&fb, cut).unwrap();
    let ra = run(&["--dsn", &a.dsn(da.name()), "--exclude", "f"]);
    std::fs::write(&fa, &ra.stdout).unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 65, "{}", c.dump());
    assert!(c.one("error")["message"]
        .as_str()
        .unwrap()
        .contains("ends without a summary"));
    assert!(c.of("table").iter().all(|t| t["equal"] == true));
    // Two runs killed before their first table: nothing to compare.
    let host_only: String = ra
        .stdout
        .lines()
        .take(1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&fa, &host_only).unwrap();
    std::fs::write(&fb, &host_only).unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 65, "{}", c.dump());
    assert!(c.stderr.contains("nothing to compare"), "{}", c.stderr);

    // Not a pg-checksum file.
    std::fs::write(&fb, "{\"type\":\"summary\"}\n").unwrap();
    let c = run(&["compare", fa_s, fb_s]);
    assert_eq!(c.code, 65, "{}", c.dump());
    assert!(c.stderr.contains("no host record"), "{}", c.stderr);
}

#[test]
fn from_stdin_takes_rowcount_diffs_table_records() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    s.psql(ds.name(), SETUP);
    t.psql(dt.name(), SETUP);
    t.psql(
        dt.name(),
        "DELETE FROM t WHERE id = 10; DELETE FROM u WHERE id = 3",
    );
    // What `rowcount-diff | jq -c 'select(.type=="table" and .equal==false)'` passes on,
    // with other records and unknown fields mixed in.
    let stdin = r#"{"type":"host","side":"source","lsn":"0/1"}
{"type":"table","schema":"public","name":"t","equal":false,"source_rows":5000,"target_rows":4999,"exact":true,"source_lsn":"0/1","target_lsn":"0/2","missing_on":null,"columns_equal":true}
{"type":"table","schema":"public","name":"gone","equal":false,"missing_on":"source"}
{"type":"summary","tool":"rowcount-diff"}
"#;
    let args = [
        "--from-stdin",
        "--source",
        &s.dsn(ds.name()),
        "--target",
        &t.dsn(dt.name()),
    ];
    let r = run_with(&args, stdin);
    // "gone" exists on neither host: a data error (65), not a difference.
    assert_eq!(r.code, 65, "{}", r.dump());
    let tables: Vec<&str> = r
        .of("table")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["t"], "u differs too but was not asked for");
    assert_eq!(
        r.row_diffs("t", "id"),
        [("10".into(), "missing_on_target".into())]
    );
    let e = r.of("error");
    assert_eq!(e.len(), 1, "{}", r.stdout);
    assert_eq!(e[0]["name"], "gone");
    assert_eq!(e[0]["kind"], "data_err");
    assert!(e[0]["message"]
        .as_str()
        .unwrap()
        .contains("exists on neither host"));

    // Nothing on stdin (rowcount-diff found no difference): nothing to do, exit 0.
    let r = run_with(&args, "");
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.summary()["tables"], 0);
    assert_eq!(r.one("note")["code"], "no_input_tables", "said, not silent");

    // pg-checksum's own unequal table records feed a re-check (the README pipeline).
    let first = two(&s.dsn(ds.name()), &t.dsn(dt.name()), &[]);
    let unequal: String = first
        .of("table")
        .iter()
        .filter(|t| t["equal"] == false)
        .map(|t| format!("{t}\n"))
        .collect();
    assert_eq!(unequal.lines().count(), 2, "{}", first.dump());
    let again = run_with(&args, &unequal);
    assert_eq!(again.code, 1, "{}", again.dump());
    let mut names: Vec<&str> = again
        .of("table")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["t", "u"]);

    // A line that is not JSON is an error record; the good lines still count.
    let r = run_with(
        &args,
        "not json\n{\"type\":\"table\",\"schema\":\"public\",\"name\":\"u\"}\n",
    );
    assert_eq!(r.code, 65, "{}", r.dump());
    assert_eq!(
        r.row_diffs("u", "id"),
        [("3".into(), "missing_on_target".into())]
    );
}

#[test]
fn whole_table_hashes_without_a_key() {
    let s = Cluster::start();
    let t = Cluster::start();
    let (ds, dt) = (s.create_db(), t.create_db());
    s.psql(ds.name(), SETUP);
    t.psql(dt.name(), SETUP);
    t.psql(dt.name(), "UPDATE t SET v = 'x' WHERE id = 1");
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &["--whole-table", "public.t", "--table", "t"],
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    let tt = r.table("t");
    assert_eq!(tt["chunked"], false);
    assert_eq!(tt["key"], serde_json::Value::Null);
    assert!(tt["note"].as_str().unwrap().contains("--whole-table"));
    assert!(r.of("row_diff").is_empty());
    assert!(
        !r.stderr.contains("warning"),
        "asked for, so no warning: {}",
        r.stderr
    );
}

/// The README's pipeline with the real rowcount-diff (built by `make test`, which builds the
/// workspace; skipped when only this package was built).
#[test]
fn readme_pipeline_with_rowcount_diff() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("rowcount-diff");
    if !bin.exists() {
        testkit::skip!("rowcount-diff is not built (cargo build --workspace builds it)");
    }
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    s.psql(ds.name(), SETUP);
    t.psql(dt.name(), SETUP);
    t.psql(dt.name(), "DELETE FROM t WHERE id = 10");
    let (src, tgt) = (s.dsn(ds.name()), t.dsn(dt.name()));
    let mut rc = std::process::Command::new(&bin);
    testkit::hermetic(&mut rc);
    let counts = rc
        .args(["--source", &src, "--target", &tgt])
        .output()
        .unwrap();
    assert_eq!(counts.status.code(), Some(1));
    // jq -c 'select(.type == "table" and .equal == false)'
    let unequal: String = String::from_utf8(counts.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["type"] == "table" && v["equal"] == false
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(unequal.lines().count(), 1, "{unequal}");
    let r = run_with(
        &["--from-stdin", "--source", &src, "--target", &tgt],
        &unequal,
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(r.of("table").len(), 1);
    assert_eq!(
        r.row_diffs("t", "id"),
        [("10".into(), "missing_on_target".into())]
    );
}
