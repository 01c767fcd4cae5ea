//! Each promise attacked: what logical replication cannot carry is refused before anything
//! changes; DDL during the run stops it before the fence; a proof that cannot be made reopens
//! the source; `open` never without a fence, `unfence` never after an open; a step killed in
//! its middle leaves at most one side taking writes, and the same step again converges.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::pair::*;

/// Nothing of pgshift's on either side: no slot, subscription, publication, database app on
/// the target.
fn untouched(p: &Pair) {
    assert_eq!(
        p.source.psql(
            "app",
            "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)"
        ),
        "0"
    );
    assert_eq!(
        p.target.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        ),
        "0"
    );
    assert!(Pair::app_logs_in(&p.source));
}

#[test]
fn what_cannot_be_carried_is_refused_with_the_objects_and_the_fix() {
    let p = Pair::new(None);
    p.source.psql(
        "app",
        "SELECT lo_from_bytea(0, 'poster'); CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)",
    );
    // A subscription in the moved database on the source: its apply worker would write after
    // the fence. (Made without a connection, then enabled: its worker only fails to connect.)
    p.source.psql(
        "app",
        "CREATE SUBSCRIPTION feed CONNECTION 'host=127.0.0.1 port=1 dbname=feed' \
         PUBLICATION feed WITH (connect = false); ALTER SUBSCRIPTION feed ENABLE",
    );
    let fix = ["--replica-identity-full", "audit"];
    for step in ["check", "setup"] {
        let r = p.step(step, &fix);
        assert_eq!(r.code, 65, "{step}: {}", r.dump());
        let refused: Vec<&str> = r
            .of("check")
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            refused,
            ["unlogged", "large_objects", "source_subscriptions"],
            "{}",
            r.dump()
        );
        let unlogged = r
            .of("check")
            .into_iter()
            .find(|c| c["name"] == "unlogged")
            .unwrap();
        assert_eq!(unlogged["objects"][0], "public.scratch");
        assert!(unlogged["fix"].as_str().unwrap().contains("SET LOGGED"));
        assert!(r.stderr.contains("large_objects"), "{}", r.dump());
        untouched(&p);
    }
    p.source.psql(
        "app",
        "ALTER SUBSCRIPTION feed DISABLE; ALTER SUBSCRIPTION feed SET (slot_name = NONE); \
         DROP SUBSCRIPTION feed",
    );
    // Leaving the unlogged table out is a fix; the large object stays refused.
    let r = p.step(
        "check",
        &[&fix[..], &["--exclude-table", "scratch"]].concat(),
    );
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(
        r.of("check").iter().all(|c| c["name"] != "unlogged"),
        "{}",
        r.dump()
    );
    // A pattern that matches nothing, a database that is not there: refused, never "nothing
    // to do".
    let r = p.step("check", &["--replica-identity-full", "audti"]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(
        r.stderr.contains("'audti' matches no table"),
        "{}",
        r.dump()
    );
    let r = p.step("check", &["--databases", "nosuch"]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(r.stderr.contains("nosuch"), "{}", r.dump());
    // A source without wal_level = logical, named with the fix.
    let plain = testkit::Cluster::builder().name("plain").start();
    let out = testkit::tool(testkit::tool_bin("pg-logical"))
        .args(["check", "--source", &plain.dsn("postgres")])
        .args([
            "--target",
            &p.target.dsn("postgres"),
            "--databases",
            "postgres",
        ])
        .output()
        .unwrap();
    let r = testkit::Run::new("check (a source with wal_level = replica)", out);
    assert_eq!(r.code, 65, "{}", r.dump());
    let w = r
        .of("check")
        .into_iter()
        .find(|c| c["name"] == "wal_level")
        .unwrap()
        .clone();
    assert_eq!(w["ok"], false, "{w}");
    assert!(
        w["fix"].as_str().unwrap().contains("wal_level = logical"),
        "{w}"
    );
}

#[test]
fn ddl_during_the_run_stops_it_before_anything_is_fenced() {
    let p = Pair::new(None);
    let fix = ["--replica-identity-full", "audit"];
    assert_eq!(p.step("setup", &fix).code, 0);
    assert_eq!(p.step("wait", &["--until", "synced"]).code, 0);
    // DDL on the target only: the source's fingerprint holds, the two sides' tables differ.
    p.target
        .psql("app", "ALTER TABLE items ADD COLUMN extra int");
    let r = p.step("fence", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(
        r.stderr.contains("differ between the sides")
            && r.stderr
                .contains("target only: col public.items.extra integer"),
        "{}",
        r.dump()
    );
    assert!(
        Pair::app_logs_in(&p.source),
        "the source takes writes again"
    );
    p.target.psql("app", "ALTER TABLE items DROP COLUMN extra");
    p.source
        .psql("app", "ALTER TABLE items ADD COLUMN note text");
    let r = p.step("fence", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(r.stderr.contains("changed on the source"), "{}", r.dump());
    assert!(r.of("fence").is_empty(), "nothing was fenced: {}", r.dump());
    assert!(
        Pair::app_logs_in(&p.source),
        "the source still takes writes"
    );
    // The wait says so too, without waiting for the fence.
    let r = p.step("wait", &["--until", "caught-up"]);
    assert_eq!(r.code, 65, "{}", r.dump());
    // abort removes the replication objects; the source was never touched.
    let r = p.step("abort", &["--drop-databases"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    untouched(&p);
}

#[test]
fn abort_drops_the_copy_of_the_database_its_dsn_names() {
    // An application's DSN names its database: on the target, pgshift's control session is
    // in the copy it is to drop (PostgreSQL refuses to drop the database a session is in).
    let p = Pair::new(None);
    let fix = ["--replica-identity-full", "audit"];
    assert_eq!(p.step_in("app", "setup", &fix).code, 0);
    let r = p.step_in("app", "abort", &["--drop-databases"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    untouched(&p);
}

#[test]
fn a_fence_that_cannot_be_proven_reopens_the_source_and_open_never_goes_without_one() {
    let p = Pair::new(None);
    let fix = ["--replica-identity-full", "audit"];
    assert_eq!(p.step("setup", &fix).code, 0);
    assert_eq!(p.step("wait", &["--until", "caught-up"]).code, 0);
    // Another pair's fence on the same source (its target perhaps open): whatever this pair
    // does, its mark stays (a failed fence or unfence lifted every pair's before).
    p.source.psql(
        "postgres",
        "CREATE ROLE other NOLOGIN; ALTER ROLE other SET pgshift.fenced = 'another-pair-1'",
    );
    let other_fenced = || {
        p.source.psql(
            "postgres",
            "SELECT NOT r.rolcanlogin AND EXISTS (SELECT 1 FROM pg_db_role_setting s \
             WHERE s.setrole = r.oid) FROM pg_roles r WHERE r.rolname = 'other'",
        ) == "t"
    };
    // pgshift logging in to the source as a role that cannot fence the application's (no
    // superuser: PostgreSQL 15 lets only a superuser set the mark): refused, the source
    // untouched, never a fence that fences nothing.
    p.source.psql(
        "postgres",
        "CREATE ROLE mover LOGIN CREATEROLE REPLICATION; GRANT pg_monitor, pg_signal_backend, app TO mover",
    );
    let mut cmd = testkit::tool(testkit::tool_bin("pg-logical"));
    cmd.arg("fence")
        .args([
            "--source",
            &format!("{} user=mover", p.source.dsn("postgres")),
        ])
        .args(["--target", &p.target.dsn("postgres")])
        .args(["--databases", "app", "--journal"])
        .arg(p.journal());
    let r = testkit::Run::new("pg-logical fence (as mover)", cmd.output().unwrap());
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(
        r.stderr.contains("cannot fence app") && r.stderr.contains("superuser"),
        "{}",
        r.dump()
    );
    assert!(Pair::app_logs_in(&p.source) && !Pair::app_logs_in(&p.target));
    assert!(other_fenced());
    // A subscription enabled in the moved database after setup: its apply worker would
    // write after the fence, which is refused and lifted.
    p.source.psql(
        "app",
        "CREATE SUBSCRIPTION feed CONNECTION 'host=127.0.0.1 port=1 dbname=feed' \
         PUBLICATION feed WITH (connect = false); ALTER SUBSCRIPTION feed ENABLE",
    );
    let r = p.step("fence", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(
        r.stderr.contains("enabled subscription(s) feed"),
        "{}",
        r.dump()
    );
    assert!(Pair::app_logs_in(&p.source) && !Pair::app_logs_in(&p.target));
    p.source.psql(
        "app",
        "ALTER SUBSCRIPTION feed DISABLE; ALTER SUBSCRIPTION feed SET (slot_name = NONE); \
         DROP SUBSCRIPTION feed",
    );
    // open without a fence: refused, nothing changes.
    let r = p.step("open", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(Pair::app_logs_in(&p.source) && !Pair::app_logs_in(&p.target));
    // The subscriber stops (its apply worker gone): refused before anything is fenced.
    let sub = p.target.psql("app", "SELECT subname FROM pg_subscription");
    p.target
        .psql("app", &format!("ALTER SUBSCRIPTION {sub} DISABLE"));
    // (The worker notices at its next nap, up to a second later.)
    let gone = Instant::now() + Duration::from_secs(10);
    while p.target.psql(
        "app",
        "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL",
    ) != "0"
    {
        assert!(Instant::now() < gone, "the apply worker did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = p.step("fence", &["--timeout", "2s"]);
    assert_eq!(r.code, 75, "{}", r.dump());
    assert!(
        r.stderr.contains("apply worker is not running"),
        "{}",
        r.dump()
    );
    assert!(r.of("fence").is_empty(), "nothing fenced: {}", r.dump());
    assert!(Pair::app_logs_in(&p.source));
    p.target
        .psql("app", &format!("ALTER SUBSCRIPTION {sub} ENABLE"));
    assert_eq!(p.step("wait", &["--until", "caught-up"]).code, 0);
    // The subscriber runs but cannot apply the sentinel (a lock on it that lets reads through):
    // the proofs cannot be made, the source is reopened.
    let mut lock = p.target.connect("app");
    lock.batch_execute("BEGIN; LOCK TABLE pgshift.sentinel IN SHARE MODE")
        .unwrap();
    let started = Instant::now();
    let r = p.step("fence", &["--timeout", "2s"]);
    assert_eq!(r.code, 75, "{}", r.dump());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        r.stderr.contains("did not confirm") || r.stderr.contains("sentinel row"),
        "{}",
        r.dump()
    );
    assert!(r.stderr.contains("takes writes again"), "{}", r.dump());
    assert_eq!(r.of("fence").last().unwrap()["lifted"][0], "app");
    assert!(Pair::app_logs_in(&p.source), "the source is reopened");
    assert!(!Pair::app_logs_in(&p.target));
    lock.batch_execute("ROLLBACK").unwrap();
    let r = p.step("open", &[]);
    assert_eq!(
        r.code,
        65,
        "after a failed fence, open is refused: {}",
        r.dump()
    );
    // Applying again, the same steps go through; then the source cannot be reopened.
    assert_eq!(p.step("fence", &[]).code, 0);
    let r = p.step("unfence", &[]);
    assert_eq!(
        r.code,
        0,
        "before open, unfence reopens the source: {}",
        r.dump()
    );
    assert!(Pair::app_logs_in(&p.source));
    // A fence lifted by hand is no fence: open refuses.
    assert_eq!(p.step("fence", &[]).code, 0);
    p.source.psql(
        "postgres",
        "ALTER ROLE app LOGIN; ALTER ROLE app RESET pgshift.fenced",
    );
    let r = p.step("open", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(
        r.stderr.contains("log in again since the fence"),
        "{}",
        r.dump()
    );
    assert!(!Pair::app_logs_in(&p.target));
    assert_eq!(p.step("fence", &[]).code, 0);
    // LOGIN given back with the mark left in place: no fence either.
    p.source.psql("postgres", "ALTER ROLE app LOGIN");
    let r = p.step("open", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(r.stderr.contains("roles app log in again"), "{}", r.dump());
    assert!(!Pair::app_logs_in(&p.target));
    p.source.psql("postgres", "ALTER ROLE app NOLOGIN");
    assert_eq!(p.step("open", &[]).code, 0);
    let r = p.step("unfence", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    assert!(r.stderr.contains("--reverse"), "{}", r.dump());
    assert_eq!(p.open_sides(), 1);
    assert!(Pair::app_logs_in(&p.target));
    assert!(other_fenced(), "another pair's fence survived every step");
}

/// Run a step with a pause at `point`, kill it (SIGKILL) once the pause began, and check that
/// at most one side takes writes.
fn kill_in(p: &Pair, step: &str, point: &str) {
    let mut cmd = p.command(step, &[]);
    cmd.env("PGSHIFT_TEST_PAUSE", format!("{point}=20000"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while !seen.contains("test pause at") {
            match err.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        seen
    });
    let seen = reader.join().unwrap();
    assert!(
        seen.contains(&format!("test pause at {point}")),
        "{step}: {seen}"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(
        p.open_sides() <= 1,
        "killed in {step} at {point}: two sides take writes"
    );
}

#[test]
fn killed_in_the_middle_of_fence_or_open_the_same_step_again_converges() {
    let p = Pair::new(None);
    let writer = Writer::start(&p.source, &p.target);
    let fix = ["--replica-identity-full", "audit"];
    assert_eq!(p.step("setup", &fix).code, 0);
    assert_eq!(p.step("wait", &["--until", "caught-up"]).code, 0);
    writer.wait_for_more(20);

    // Killed after the roles were fenced, before the proofs: the source stays fenced (no
    // write goes anywhere), and fence again proves it.
    kill_in(&p, "fence", "fence:roles");
    assert_eq!(p.open_sides(), 0);
    let r = p.step("fence", &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(proofs(&r).contains(&"sentinel".to_owned()));

    // Killed in open before the target takes writes, then after: open again finishes.
    kill_in(&p, "open", "open:disabled");
    assert_eq!(p.open_sides(), 0);
    kill_in(&p, "open", "open:unfenced");
    assert!(Pair::app_logs_in(&p.target) && !Pair::app_logs_in(&p.source));
    let r = p.step("open", &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(p.step("status", &[]).summary()["reverse"], true);
    writer.wait_for_more(20);
    writer.stop_and_check(&p.target);
    let (code, s) = checksum(&p.source, &p.target);
    // The old source follows; give it a moment to apply the last writes.
    if code != 0 {
        let r = p.reversed_step("wait", &["--until", "caught-up"]);
        assert_eq!(r.code, 0, "{}", r.dump());
        let (code, s2) = checksum(&p.source, &p.target);
        assert_eq!(code, 0, "{s}\n{s2}");
    }
}
