//! migrate.sh --mode logical end to end: hosts from `hosts-local.sh --logical` (the target of
//! another major where the test says so: Debian's 15, the npm registry's 16 to 18 fetched by
//! scripts/fetch-pg.sh), load-gen writing as the application's role through both hosts,
//! verified against the final primary: no acknowledged write lost, none split, the data equal
//! at the fence, sequences copied; refusals stop before the cutover with nothing left behind;
//! a crashed subscriber and a restarted publisher are ridden out; the script killed at every
//! step converges when run again, never with two sides open to the application.

use std::path::PathBuf;

use serde_json::Value;

use crate::hosts::*;

/// The fixes hosts-local's dataset needs: two tables without a primary key.
const FIXES: &[&str] = &[
    "--mode",
    "logical",
    "--replica-identity-full",
    "film_poster",
    "--replica-identity-full",
    "pgbench_history",
];

/// Hosts for a logical move to PostgreSQL `major`; `None` (test skipped, or failed under CI)
/// when its binaries are not on this machine.
fn logical_hosts(major: u32) -> Option<Hosts> {
    testkit::pg_major_bin(major)?;
    Some(Hosts::create(&[
        "--logical",
        "--target-version",
        &major.to_string(),
    ]))
}

macro_rules! hosts_or_skip {
    ($major:expr) => {
        match logical_hosts($major) {
            Some(h) => h,
            None => testkit::skip!(
                "PostgreSQL {} server binaries are missing: run scripts/fetch-pg.sh (make setup)",
                $major
            ),
        }
    };
}

/// Whether the application's role may log in to a side.
fn app_logs_in(hosts: &Hosts, which: char) -> bool {
    psql(
        &hosts.dsn(which).replace("user=postgres", "user=app"),
        "SELECT 1",
    )
    .is_some()
}

fn open_sides(hosts: &Hosts) -> usize {
    ['A', 'B']
        .iter()
        .filter(|w| app_logs_in(hosts, **w))
        .count()
}

/// One move under way: the checks every successful run must pass.
fn moved(recs: &[Value], err: &str) -> u64 {
    let s = summary(recs);
    assert_eq!(s["success"], true, "{s}\n{err}");
    assert_eq!(s["verdict"], "equal", "{s}");
    assert!(
        of_type(recs, "proof").iter().all(|p| p["ok"] == true),
        "{recs:?}"
    );
    let seqs = of_type(recs, "proof")
        .into_iter()
        .filter(|p| p["name"] == "sequences")
        .count();
    assert!(seqs >= 1, "sequences copied at the fence: {recs:?}");
    s["downtime_ms"].as_u64().expect("downtime")
}

fn cross_major(major: u32) {
    let hosts = hosts_or_skip!(major);
    let load = load_for_move(&hosts, 'B');
    let (code, recs, err) = hosts.migrate(FIXES);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    moved(&recs, &err);
    let version = psql(&hosts.dsn('B'), "SHOW server_version_num").unwrap();
    assert!(version.starts_with(&major.to_string()), "{version}");
    // The target takes the application's writes, the source no longer.
    assert!(app_logs_in(&hosts, 'B') && !app_logs_in(&hosts, 'A'));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let recs = load.stop_and_verify();
    assert!(summary(&recs)["committed"].as_u64().unwrap() > 0);
}

#[test]
fn logical_15_to_16_under_load() {
    cross_major(16);
}

#[test]
fn logical_15_to_18_under_load() {
    cross_major(18);
}

/// load-gen for one move, verified on its destination. (One run per move: between two
/// unrelated clusters, load-gen tells the newer primary by its first acknowledgement, so a run
/// that goes there and back would count the way back's writes as split brain.)
fn load_for_move(hosts: &Hosts, to: char) -> Load {
    Load::start_verifying(hosts, &hosts.both_as_app(), &hosts.dsn(to), &[])
}

#[test]
fn logical_15_to_17_and_back_under_load() {
    let hosts = hosts_or_skip!(17);
    let load = load_for_move(&hosts, 'B');
    let (code, recs, err) = hosts.migrate(FIXES);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    moved(&recs, &err);
    assert!(
        err.contains("--reverse moves back"),
        "the closing line names the way back: {err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    load.stop_and_verify();
    // Back: nothing is copied again (the old source followed the target all along).
    let load = load_for_move(&hosts, 'A');
    let (code, recs, err) = hosts.migrate(&["--mode", "logical", "--reverse"]);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    moved(&recs, &err);
    assert!(
        of_type(&recs, "step").iter().all(|s| s["name"] != "schema"),
        "no copy on the way back: {recs:?}"
    );
    assert!(app_logs_in(&hosts, 'A') && !app_logs_in(&hosts, 'B'));
    let recs = load.stop_and_verify();
    let s = summary(&recs);
    assert!(s["committed"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn logical_behind_a_pooler_clients_see_no_error() {
    if testkit::pg_major_bin(15).is_none() {
        testkit::skip!("PostgreSQL 15 is missing");
    }
    let hosts = Hosts::create(&["--logical", "--pooler"]);
    // Killed with the source fenced and the pooler paused, then --abort: the source is
    // reopened and its clients go on through the pooler (it stayed paused).
    let mut killed = FIXES.to_vec();
    killed.extend(["--hook", "after_fence=kill -KILL 0"]);
    let (code, _, err) = hosts.migrate_raw(&killed, &[]);
    assert_eq!(code, -1, "killed\n{err}");
    let mut abort = FIXES.to_vec();
    abort.push("--abort");
    let (code, recs, err) = hosts.migrate(&abort);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    assert_eq!(
        through_pooler(&hosts, 5),
        Some(format!("f|{}", hosts.source("port"))),
        "{recs:?}"
    );
    let load = Load::start_verifying(
        &hosts,
        &hosts.pooler_dsn(),
        &hosts.dsn('B'),
        &["--protocol", "extended"],
    );
    // Killed right after its PAUSE, before the fence: the source still takes writes, and its
    // clients wait in the paused pooler. The same command again resumes it before anything
    // else: a query through it answers during that run (at before_catch_up, within 5 s).
    let mut killed = FIXES.to_vec();
    killed.extend(["--hook", "after_pause=kill -KILL 0"]);
    let (code, _, err) = hosts.migrate_raw(&killed, &[]);
    assert_eq!(code, -1, "killed after the PAUSE\n{err}");
    assert_eq!(through_pooler(&hosts, 2), None, "the pooler stays paused");
    let served = format!(
        "before_catch_up=timeout 5 {}/psql -XAtq -d '{}' -c 'SELECT 1'",
        testkit::pg_bin().display(),
        hosts.pooler_dsn()
    );
    let mut again = FIXES.to_vec();
    again.extend(["--hook", &served]);
    let (code, recs, err) = hosts.migrate(&again);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    moved(&recs, &err);
    // The PAUSE before the fence, the entries pointed at the target and resumed after open.
    let steps: Vec<&str> = of_type(&recs, "pooler_step")
        .iter()
        .filter(|s| s["ok"] == true)
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"pause") && steps.contains(&"point"),
        "{steps:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let recs = load.stop_and_verify();
    let s = summary(&recs);
    assert_eq!(s["errors_total"], 0, "clients saw errors: {s}");
    assert!(s["committed"].as_u64().unwrap() > 0, "{s}");
    // And the clients' writes after the move went to the target, through the same address.
    let via = psql(&hosts.pooler_dsn(), "SELECT current_setting('port')").unwrap();
    assert_eq!(
        via, hosts.env["TARGET_PORT"],
        "the pooler serves from the target"
    );
}

/// `hosts-local.sh --netns --logical`: A is prepared by setup-host.sh --logical on a host it
/// reaches through a namespace (the script re-run on the host through stdin, with the options
/// it forwards), and gets the logical mode's settings there too, as B does.
#[test]
fn exclusive_netns_logical_hosts_have_wal_level_logical() {
    let probe_ns = format!("pgshift-probe-{}", std::process::id());
    let probe = std::process::Command::new("ip")
        .args(["netns", "add", &probe_ns])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        testkit::skip!("cannot create network namespaces here (needs root and iproute2)");
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &probe_ns])
        .output();
    let hosts = Hosts::create(&["--netns", "--logical"]);
    assert!(
        hosts.env["SOURCE_SPEC"].starts_with("netns://"),
        "{:?}",
        hosts.env
    );
    for which in ['A', 'B'] {
        // B is empty until a move: no database app there yet.
        let dsn = hosts.dsn(which).replace("dbname=app", "dbname=postgres");
        assert_eq!(
            psql(&dsn, "SHOW wal_level").as_deref(),
            Some("logical"),
            "host {which}'s wal_level"
        );
        assert_eq!(
            psql(&dsn, "SHOW max_replication_slots").as_deref(),
            Some("20"),
            "host {which}'s max_replication_slots"
        );
    }
}

/// Nothing of the move left: no slot or publication on A, no database app on B, A open.
fn nothing_left(hosts: &Hosts) {
    assert_eq!(
        psql(
            &hosts.dsn('A'),
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgshift%')
                  + (SELECT count(*) FROM pg_publication)"
        )
        .as_deref(),
        Some("0"),
        "a slot or a publication was left on the source"
    );
    assert_eq!(
        psql(
            &hosts.dsn('B').replace("dbname=app", "dbname=postgres"),
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        )
        .as_deref(),
        Some("0"),
        "the copy was left on the target"
    );
    assert!(app_logs_in(hosts, 'A'), "the source takes writes");
    assert!(!app_logs_in(hosts, 'B'), "the target does not");
}

#[test]
fn logical_refusals_stop_before_the_cutover_with_nothing_left() {
    let hosts = hosts_or_skip!(15);
    // A table without a key: refused in preflight, named, nothing changed.
    let (code, recs, err) = hosts.migrate(&["--mode", "logical"]);
    assert_eq!(code, 65, "{err}");
    assert_eq!(summary(&recs)["failed_phase"], "preflight");
    assert!(
        err.contains("film_poster") && err.contains("--replica-identity-full"),
        "{err}"
    );
    nothing_left(&hosts);
    // A large object: refused the same way.
    psql(&hosts.dsn('A'), "SELECT lo_from_bytea(0, 'x')").unwrap();
    let (code, _, err) = hosts.migrate(FIXES);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("large_objects"), "{err}");
    psql(
        &hosts.dsn('A'),
        "SELECT lo_unlink(oid) FROM pg_largeobject_metadata",
    )
    .unwrap();
    // DDL during the run: stopped in catch-up, the slot and publication removed, the source
    // never fenced.
    let dsn_a = hosts.dsn('A');
    let hook = format!(
        "before_catch_up={} -XAtq -d '{dsn_a}' -c 'ALTER TABLE film ADD COLUMN remark text'",
        testkit::pg_bin().join("psql").display()
    );
    let (code, recs, err) = hosts.migrate(&[FIXES, &["--hook", &hook]].concat());
    assert_eq!(code, 65, "{err}");
    assert_eq!(summary(&recs)["failed_phase"], "catch_up", "{err}");
    assert!(err.contains("changed on the source"), "{err}");
    assert!(of_type(&recs, "fence")
        .iter()
        .all(|f| f["side"] != "source"));
    nothing_left(&hosts);
}

/// The target's data directory and binaries, for killing and restarting it.
fn target_server(hosts: &Hosts) -> (PathBuf, PathBuf) {
    (hosts.pgdata('B'), PathBuf::from(&hosts.env["TARGET_BIN"]))
}

#[test]
fn logical_subscriber_killed_and_publisher_restarted_under_load() {
    let hosts = hosts_or_skip!(15);
    let load = load_for_move(&hosts, 'B');
    let (b_data, b_bin) = target_server(&hosts);
    let a_data = hosts.pgdata('A');
    let pg = testkit::pg_bin();
    // In catch-up, under load: the subscriber crashes (SIGKILL of its postmaster) and comes
    // back; then the publisher restarts (fast). The move rides both out.
    let hook = format!(
        "before_catch_up=kill -KILL $(head -n 1 {b}/postmaster.pid); for i in $(seq 30); do sleep 1; {start} && break; done; sleep 2; {restart}",
        b = b_data.display(),
        start = as_postgres(&format!(
            "{}/pg_ctl -D {} -l {}/server.log -w start",
            b_bin.display(),
            b_data.display(),
            b_data.parent().unwrap().display()
        )),
        restart = as_postgres(&format!(
            "{}/pg_ctl -D {} -m fast -w restart -l {}/server.log",
            pg.display(),
            a_data.display(),
            a_data.parent().unwrap().display()
        )),
    );
    let (code, recs, err) = hosts.migrate(&[FIXES, &["--hook", &hook]].concat());
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    moved(&recs, &err);
    load.stop_and_verify();
}

/// migrate.sh's hooks, in the order they run.
const POINTS: &[&str] = &[
    "before_setup",
    "before_copy",
    "before_catch_up",
    "before_fence",
    "after_fence",
    "before_open",
    "after_open",
];

#[test]
fn logical_interrupted_at_every_step_converges_under_load() {
    let hosts = hosts_or_skip!(15);
    let mut reverse = false;
    let mut runs = Vec::new();
    for sig in ["KILL", "TERM"] {
        for &point in POINTS {
            // SIGTERM where it is handled differently: before the fence (the run stops and
            // removes what setup made), fenced (the source is reopened), open (nothing to undo).
            if sig == "TERM" && !["before_catch_up", "after_fence", "after_open"].contains(&point) {
                continue;
            }
            let what = format!(
                "SIG{sig} at {point}{}",
                if reverse { " (B to A)" } else { "" }
            );
            let load = load_for_move(&hosts, if reverse { 'A' } else { 'B' });
            let action = match sig {
                "KILL" => "kill -KILL 0".to_owned(),
                _ => "trap '' TERM; kill -TERM 0; sleep 1".to_owned(),
            };
            let hook = format!("{point}={action}");
            let mut args: Vec<&str> = FIXES.to_vec();
            args.extend(["--hook", &hook]);
            if reverse {
                args.push("--reverse");
            }
            let (code, out, err) = hosts.migrate_raw(&args, &[]);
            match sig {
                "KILL" => assert_eq!(code, -1, "{what}: killed\n{err}"),
                _ => {
                    assert!(
                        code == 75 || code == 0,
                        "{what}: interrupted ({code})\n{out}\n{err}"
                    );
                }
            }
            assert!(
                open_sides(&hosts) <= 1,
                "{what}: two sides take the application's writes"
            );
            let mut again: Vec<&str> = FIXES.to_vec();
            if reverse {
                again.push("--reverse");
            }
            let (code, recs, err) = hosts.migrate(&again);
            assert_eq!(
                code,
                0,
                "{what}, then the same command again: {}\n{err}\nfirst run:\n{out}\n{err}",
                summary(&recs)
            );
            assert_eq!(open_sides(&hosts), 1, "{what}");
            let (dst, src) = if reverse { ('A', 'B') } else { ('B', 'A') };
            assert!(
                app_logs_in(&hosts, dst) && !app_logs_in(&hosts, src),
                "{what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
            load.stop_and_verify();
            runs.push(what);
            reverse = !reverse;
        }
    }
    assert_eq!(runs.len(), 10, "{runs:?}");
}
