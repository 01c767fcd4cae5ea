//! Bad input: an unreachable host, a refused password, a bad DSN, an unreadable table.

use testkit::Cluster;

use crate::common::{run, Tables};

#[test]
fn unreachable_target_is_an_error_record_and_exit_69() {
    let s = Cluster::start();
    let dead = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        testkit::free_port("127.0.0.1")
    );
    let r = run(&["--source", &s.dsn("postgres"), "--target", &dead]);
    assert_eq!(r.code, 69, "{}\n{}", r.stdout, r.stderr);
    let e = r.of("error");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["host"], "target");
    assert_eq!(e[0]["kind"], "unavailable");
    let msg = e[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("--target") && msg.contains("Connection refused"),
        "{msg}"
    );
    assert!(
        r.stderr.starts_with("rowcount-diff: reading the target"),
        "{}",
        r.stderr
    );
    assert_eq!(r.summary()["exit_code"], 69);
}

#[test]
fn wrong_password_names_the_fix() {
    let s = Cluster::builder()
        .hba("host all app 127.0.0.1/32 scram-sha-256")
        .start();
    s.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'right'");
    let bad = format!(
        "host=127.0.0.1 port={} user=app password=wrong dbname=postgres sslmode=disable",
        s.port()
    );
    let r = run(&["--source", &bad, "--target", &s.dsn("postgres")]);
    assert_eq!(r.code, 69, "{}\n{}", r.stdout, r.stderr);
    let e = r.of("error");
    assert_eq!(e[0]["host"], "source");
    let msg = e[0]["message"].as_str().unwrap();
    assert!(msg.contains("password"), "{msg}");
    assert!(!msg.contains("wrong"), "the password leaked: {msg}");
}

#[test]
fn bad_dsn_is_a_usage_error() {
    let r = run(&["--source", "host=a sslmode=maybe", "--target", "host=b"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("sslmode"), "{}", r.stderr);
}

#[test]
fn unreadable_table_is_reported_and_the_others_still_counted() {
    let s = Cluster::start();
    let db = s.create_db();
    s.psql(
        db.name(),
        "CREATE ROLE reader LOGIN; CREATE TABLE ok (x int); CREATE TABLE secret (x int);
         INSERT INTO ok VALUES (1); GRANT SELECT ON ok TO reader;
         CREATE TABLE tenant (x int, t text); INSERT INTO tenant VALUES (1, 'a'), (2, 'b');
         ALTER TABLE tenant ENABLE ROW LEVEL SECURITY;
         CREATE POLICY only_a ON tenant USING (t = 'a'); GRANT SELECT ON tenant TO reader;",
    );
    let dsn = format!(
        "host=127.0.0.1 port={} user=reader dbname={} sslmode=disable",
        s.port(),
        db.name()
    );
    let r = run(&["--source", &dsn, "--target", &dsn]);
    assert_eq!(r.code, 65, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.table("public", "ok")["equal"], true);
    let e = r.of("error");
    assert_eq!(
        e.len(),
        4,
        "two tables, one error per host each: {}",
        r.stdout
    );
    assert_eq!(e[0]["name"], "secret");
    let msg = e[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("permission denied") && msg.contains("--exclude public.secret"),
        "{msg}"
    );
    // A table under a row-level security policy that applies to the role: its count would
    // be of the rows the policy shows (1 of 2), so it is an error naming the fix.
    let e = e.iter().find(|e| e["name"] == "tenant").unwrap();
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("row-level security") && msg.contains("BYPASSRLS"),
        "{msg}"
    );
}

/// A table reloaded (TRUNCATE, then the same rows) after the snapshot and before it was
/// counted: the old snapshot sees the new file empty, and 0 = 0 was "equal". Now it is an
/// error to run again (75). A session holds the table's lock so that the count blocks after
/// the snapshot; it then reloads the table and commits.
#[test]
fn a_table_reloaded_after_the_snapshot_is_an_error_not_equal() {
    use std::process::Command;

    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    let fill = "INSERT INTO t SELECT generate_series(1, 100)";
    c.psql(a.name(), &format!("CREATE TABLE t (id int); {fill}"));
    c.psql(b.name(), "CREATE TABLE t (id int)");
    let r = c.run_behind_lock(
        a.name(),
        "t",
        &format!("TRUNCATE t; {fill}"),
        "rowcount-diff",
        Command::new(assert_cmd::cargo::cargo_bin!("rowcount-diff")).args([
            "--source",
            &c.dsn(a.name()),
            "--target",
            &c.dsn(b.name()),
        ]),
    );
    assert_eq!(r.code, 75, "{}", r.dump());
    let e = r.one("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("was rewritten on the source"),
        "{e}"
    );
    assert!(r.of("table").is_empty(), "{}", r.dump());
}
