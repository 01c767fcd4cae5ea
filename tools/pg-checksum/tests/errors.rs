//! Bad input: unreachable hosts, a refused password, tables missing on one side, no key, an
//! unsupported key type, an unreadable table; the other tables are still checked and the exit
//! code is the worst outcome.

use testkit::Cluster;

use crate::common::{run, two, Tables};

#[test]
fn unreachable_host_is_an_error_record_and_exit_69() {
    let s = Cluster::start();
    let dead = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        testkit::free_port("127.0.0.1")
    );
    let r = two(&s.dsn("postgres"), &dead, &[]);
    assert_eq!(r.code, 69, "{}", r.dump());
    let e = r.of("error");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["host"], "target");
    let msg = e[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("--target") && msg.contains("Connection refused"),
        "{msg}"
    );
    assert!(
        r.stderr.starts_with("pg-checksum: reading the target"),
        "{}",
        r.stderr
    );

    let r = run(&["--dsn", &dead]);
    assert_eq!(r.code, 69, "{}", r.dump());
}

#[test]
fn wrong_password_is_unavailable_and_names_the_fix() {
    let s = Cluster::builder()
        .hba("host all app 127.0.0.1/32 scram-sha-256")
        .start();
    s.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'right'");
    let bad = format!(
        "host=127.0.0.1 port={} user=app password=wrong dbname=postgres sslmode=disable",
        s.port()
    );
    let r = two(&bad, &s.dsn("postgres"), &[]);
    assert_eq!(r.code, 69, "{}", r.dump());
    let e = r.of("error");
    assert_eq!(e[0]["host"], "source");
    let msg = e[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("password authentication failed") && msg.contains("pgpass"),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "the password leaked: {msg}");
}

#[test]
fn usage_errors() {
    let r = run(&["--source", "host=a"]);
    assert_eq!(r.code, 2, "{}", r.dump());
    let r = run(&[]);
    assert_eq!(r.code, 2, "{}", r.dump());
    assert!(
        r.stderr.contains("--source DSN --target DSN"),
        "{}",
        r.stderr
    );
    let r = run(&["--source", "host=a sslmode=maybe", "--target", "host=b"]);
    assert_eq!(r.code, 2, "{}", r.dump());
    let r = run(&["--dsn", "host=a", "--recheck", "2"]);
    assert_eq!(r.code, 2, "{}", r.dump());
}

#[test]
fn per_table_problems_are_reported_and_the_other_tables_still_checked() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    let setup = "CREATE TABLE ok (id int PRIMARY KEY, v int); INSERT INTO ok SELECT g, g FROM generate_series(1, 100) g;
        CREATE TABLE nokey (v int); INSERT INTO nokey VALUES (1), (2);
        CREATE TABLE floats (m float8 PRIMARY KEY); INSERT INTO floats VALUES (0.1), (2.5);
        CREATE TABLE secret (id int PRIMARY KEY);
        CREATE TABLE tenant (id int PRIMARY KEY, t text);
        INSERT INTO tenant SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 10) g;
        ALTER TABLE tenant ENABLE ROW LEVEL SECURITY; CREATE POLICY only_a ON tenant USING (t = 'a');
        CREATE ROLE reader LOGIN; GRANT SELECT ON ok, nokey, floats, tenant TO reader;";
    s.psql(
        ds.name(),
        &format!("{setup} CREATE TABLE only_src (id int PRIMARY KEY);"),
    );
    t.psql(
        dt.name(),
        &format!("{setup} CREATE TABLE only_tgt (id int PRIMARY KEY);"),
    );
    t.psql(dt.name(), "UPDATE ok SET v = 0 WHERE id = 50");
    // A row the policy hides from the reader differs: hashing what the policy shows would
    // call the table equal.
    t.psql(dt.name(), "UPDATE tenant SET t = 'c' WHERE id = 1");
    let user = |c: &Cluster, db: &str| {
        format!(
            "host={} port={} user=reader dbname={db} sslmode=disable",
            c.host(),
            c.port()
        )
    };
    let r = two(&user(&s, ds.name()), &user(&t, dt.name()), &[]);
    // The worst outcome: data_err (65) from the float key and the unreadable table.
    assert_eq!(r.code, 65, "{}", r.dump());
    assert_eq!(r.row_diffs("ok", "id"), [("50".into(), "changed".into())]);
    assert_eq!(r.table("nokey")["equal"], true);
    assert_eq!(r.table("nokey")["chunked"], false);

    let errors = r.of("error");
    let by_name = |n: &str| {
        errors
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("no error for {n}: {}", r.stdout))
    };
    let e = by_name("only_src");
    assert_eq!(e["kind"], "not_found");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("exists on the source but not on the target"));
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("--exclude public.only_src"));
    assert_eq!(by_name("only_tgt")["kind"], "not_found");
    let e = by_name("floats");
    assert_eq!(e["kind"], "data_err");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("type double precision") && m.contains("--whole-table public.floats"),
        "{m}"
    );
    let e = by_name("secret");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("permission denied") && m.contains("--exclude public.secret"),
        "{m}"
    );
    let e = by_name("tenant");
    let m = e["message"].as_str().unwrap();
    assert!(
        m.contains("row-level security") && m.contains("BYPASSRLS"),
        "{m}"
    );
    assert!(
        r.of("table").iter().all(|t| t["name"] != "tenant"),
        "{}",
        r.stdout
    );
    assert_eq!(errors.len(), 5, "{}", r.stdout);
    // Every problem is on stderr too, one line each.
    assert!(
        r.stderr.contains("public.nokey: no primary key"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .lines()
            .filter(|l| l.starts_with("pg-checksum: "))
            .count()
            >= 5,
        "{}",
        r.stderr
    );
    let sum = r.summary();
    assert_eq!(sum["missing"], 2);
    assert_eq!(sum["errors"], 5);

    // The fix the message names works.
    let r = two(
        &user(&s, ds.name()),
        &user(&t, dt.name()),
        &[
            "--whole-table",
            "floats",
            "--exclude",
            "secret",
            "--exclude",
            "only_*",
            "--exclude",
            "tenant",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(r.table("floats")["equal"], true);

    // A filter that selects nothing is an error naming it, never "equal" over nothing.
    let (src, tgt) = (user(&s, ds.name()), user(&t, dt.name()));
    for (args, names) in [
        (&["--table", "nosuch"][..], "--table 'nosuch'"),
        (&["--table", "ok", "--table", "oops"][..], "--table 'oops'"),
        (&["--schema", "pubic"][..], "--schema 'pubic'"),
        (
            &["--table", "ok", "--exclude", "okk"][..],
            "--exclude 'okk'",
        ),
        (&["--table", "ok", "--exclude", "o*"][..], "leaves no table"),
    ] {
        let r = two(&src, &tgt, args);
        assert_eq!(r.code, 65, "{args:?}: {}", r.dump());
        assert_eq!(r.of("table").len(), 0, "{}", r.dump());
        let e = r.one("error");
        assert!(e["message"].as_str().unwrap().contains(names), "{e}");
        // What --table cannot name, said where a DBA looks for a partitioned parent or a view.
        if args[1] == "nosuch" {
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("through its partitions"),
                "{e}"
            );
        }
        assert_eq!(r.summary()["success"], false);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
}

#[test]
fn a_database_without_tables_says_so_and_a_filter_on_it_fails() {
    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    let r = two(&c.dsn(a.name()), &c.dsn(b.name()), &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.one("note")["code"], "no_tables", "{}", r.dump());
    assert_eq!(r.summary()["tables"], 0);
    assert!(r.stderr.contains("no user tables"), "{}", r.stderr);
    let r = two(&c.dsn(a.name()), &c.dsn(b.name()), &["--table", "t"]);
    assert_eq!(r.code, 65, "{}", r.dump());
    let r = crate::common::run(&["--dsn", &c.dsn(a.name())]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.one("note")["code"], "no_tables", "{}", r.dump());
    let r = crate::common::run(&["--dsn", &c.dsn(a.name()), "--exclude", "x"]);
    assert_eq!(r.code, 65, "{}", r.dump());
}

/// A table reloaded (TRUNCATE, then the same rows) after the snapshot was taken and before it
/// was read: PostgreSQL reads the new file, which the old snapshot sees empty, so the source
/// hashed as empty as the target and the table was "equal" (found by an audit). Now it is an
/// error to run again (75), on one host and on two. Deterministic: a session holds the
/// table's lock, so the run blocks on its first read, after its snapshot; the session then
/// reloads the table and commits.
#[test]
fn a_table_reloaded_after_the_snapshot_is_an_error_not_equal() {
    use std::process::Command;

    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    let make = "CREATE TABLE t (id int PRIMARY KEY, v text)";
    let fill = "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g";
    c.psql(a.name(), &format!("{make}; {fill}"));
    c.psql(b.name(), make);
    let (src, tgt) = (c.dsn(a.name()), c.dsn(b.name()));
    for args in [
        vec!["--source", &src, "--target", &tgt],
        vec!["--dsn", &src],
    ] {
        // The reload commits once the run waits for the lock (it has its snapshot then).
        let r = c.run_behind_lock(
            a.name(),
            "t",
            &format!("TRUNCATE t; {fill}"),
            &format!("pg-checksum {}", args.join(" ")),
            Command::new(assert_cmd::cargo::cargo_bin!("pg-checksum")).args(&args),
        );
        assert_eq!(r.code, 75, "{}", r.dump());
        let e = r.one("error");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("was rewritten on the"),
            "{e}"
        );
        assert!(r.of("table").is_empty(), "{}", r.dump());
    }
    // Read again, it is what it is: 100 rows against none.
    let r = two(&src, &tgt, &[]);
    assert_eq!(r.code, 1, "{}", r.dump());
}
