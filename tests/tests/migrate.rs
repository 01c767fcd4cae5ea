//! The main job: scripts/migrate.sh between two local hosts made by scripts/hosts-local.sh,
//! under load from load-gen, in both modes and both directions, with failures injected at
//! each phase. The pass mark every time: no acknowledged write lost, no split brain, one
//! primary at the end.
//!
//! These tests drive whole clusters and a loaded switchover, so they are `exclusive_`: they
//! run one at a time (see .config/nextest.toml) and time does not decide any assertion.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::hosts::*;
use serde_json::Value;
use testkit::json_lines;

#[test]
fn exclusive_stream_mode_both_directions_under_load() {
    let hosts = Hosts::create(&[]);
    let load = Load::start(&hosts);

    let (code, fwd, err) =
        hosts.migrate(&["--report", hosts.dir.join("fwd.jsonl").to_str().unwrap()]);
    assert_eq!(
        code,
        0,
        "forward migration failed: {}\n{err}",
        summary(&fwd)
    );
    let s = summary(&fwd);
    assert_eq!(s["verdict"], "equal", "{s}");
    assert!(s["bytes_copied"].as_u64().unwrap() > 0);
    // Every database of the cluster is verified, each with its own verdict.
    let verify = of_type(&fwd, "phase")
        .into_iter()
        .find(|p| p["name"] == "verify")
        .expect("verify phase")
        .clone();
    let dbs: Vec<(&str, &str)> = verify["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["database"].as_str().unwrap(),
                d["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(dbs, [("app", "equal"), ("postgres", "equal")], "{verify}");
    let sw_fwd = switchover(&fwd).clone();
    assert_eq!(hosts.in_recovery('B'), Some(false), "B must be the primary");
    assert_eq!(hosts.in_recovery('A'), Some(true), "A must follow B");
    // The report file holds the same lines as stdout.
    let report = json_lines(&std::fs::read_to_string(hosts.dir.join("fwd.jsonl")).unwrap());
    assert_eq!(report, fwd);

    std::thread::sleep(Duration::from_millis(500));
    let (code, back, err) = hosts.migrate(&["--reverse", "--databases", "app"]);
    assert_eq!(
        code,
        0,
        "reverse migration failed: {}\n{err}",
        summary(&back)
    );
    assert_eq!(summary(&back)["verdict"], "equal");
    let verified = of_type(&back, "phase")
        .into_iter()
        .find(|p| p["name"] == "verify")
        .map(|p| p["databases"].as_array().unwrap().len());
    assert_eq!(verified, Some(1), "--databases narrows the verification");
    assert_eq!(
        summary(&back)["bytes_copied"],
        0,
        "reverse must not copy again"
    );
    let sw_back = switchover(&back).clone();
    assert_eq!(hosts.in_recovery('A'), Some(false));
    assert_eq!(hosts.in_recovery('B'), Some(true));

    let recs = load.stop_and_verify();
    let s = summary(&recs);
    assert_eq!(s["split_brain"], 0);
    // Both switchovers appear as gaps; the longest overlaps one of them.
    let gap_matches = |sw: &Value| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_gap_matches(&recs, sw)
        }))
        .is_ok()
    };
    if !(gap_matches(&sw_fwd) || gap_matches(&sw_back)) {
        // On a busy 2-core machine another stall (a checkpoint, the base copy) can outlast
        // both switchovers. Then each switchover must still be seen by the clients (a client
        // cut off inside its window) and the longest gap must cover its window without any
        // primary (the switchover's own gap, hidden behind it, is no longer).
        let started = chrono_ms(
            recs.iter().find(|r| r["type"] == "start").unwrap()["started_at"]
                .as_str()
                .unwrap(),
        );
        for sw in [&sw_fwd, &sw_back] {
            let (from, to) = (
                sw["stop_at_ms"].as_i64().unwrap() - started - 20,
                sw["writable_at_ms"].as_i64().unwrap() - started + 20,
            );
            let cut = of_type(&recs, "disconnect")
                .iter()
                .any(|d| (from..=to).contains(&d["t_ms"].as_i64().unwrap()));
            assert!(cut, "no client was cut off by the switchover {sw}: {s}");
            let window =
                sw["writable_at_ms"].as_i64().unwrap() - sw["stopped_at_ms"].as_i64().unwrap();
            assert!(
                s["max_write_gap_ms"].as_i64().unwrap() + 20 >= window,
                "load-gen's longest gap {} ms (from {} ms) matches neither switchover and is shorter than {window} ms without a primary: {sw}",
                s["max_write_gap_ms"],
                s["max_write_gap_from_ms"]
            );
        }
    }
}

#[test]
fn exclusive_archive_mode_both_directions_under_load() {
    let hosts = Hosts::create(&["--archive"]);
    let load = Load::start(&hosts);
    // An archive the server may not write. Preflight closes a segment and sees the archiver
    // fail (the base copy would have waited for it for ever, pg_basebackup -X none), before
    // anything is copied.
    let archive = PathBuf::from(&hosts.env["ARCHIVE"]);
    let mode = |m: u32| {
        std::fs::set_permissions(&archive, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    // The archive breaks after preflight (here just before the copy): a compressed copy
    // (-X none) waits at its end for the archive. Three failed attempts end it, with the
    // reason, not a copy waiting for ever; --cleanup removes what it copied.
    let hook = format!("before_base_copy=chmod 000 '{}'", archive.display());
    let (code, recs, err) = hosts.migrate(&["--compress", "zstd", "--cleanup", "--hook", &hook]);
    mode(0o700);
    assert_eq!(
        code,
        69,
        "archive lost in the copy: {}\n{err}",
        summary(&recs)
    );
    assert!(err.contains("while the base copy waited for it"), "{err}");
    assert_eq!(summary(&recs)["failed_phase"], "base_copy");
    assert!(
        !PathBuf::from(&hosts.env["TARGET_PGDATA"]).exists(),
        "--cleanup removed the copy"
    );
    mode(0o000);
    let (code, recs, err) = hosts.migrate(&["--mode", "archive"]);
    mode(0o700);
    assert_eq!(code, 69, "unwritable archive: {}\n{err}", summary(&recs));
    assert!(err.contains("the source cannot archive"), "{err}");
    assert_eq!(summary(&recs)["failed_phase"], "preflight");
    assert_eq!(hosts.in_recovery('B'), None, "nothing copied");
    // Stream mode needs no archive, but a compressed copy waits for it at its end: an
    // explicit --compress is refused before anything is copied, auto copies uncompressed
    // (stopped at before_wait: the standby it leaves is taken over by archive mode below).
    mode(0o000);
    let (code, recs, err) = hosts.migrate(&["--compress", "zstd"]);
    assert_eq!(code, 69, "--compress zstd: {}\n{err}", summary(&recs));
    assert!(err.contains("archive_command is failing"), "{err}");
    assert_eq!(hosts.in_recovery('B'), None, "nothing copied");
    let (code, recs, err) = hosts.migrate(&["--hook", "before_wait=exit 1"]);
    mode(0o700);
    assert_eq!(code, 70, "the hook failed: {}\n{err}", summary(&recs));
    let c = of_type(&recs, "compression");
    assert!(
        c.len() == 1
            && c[0]["method"] == "none"
            && c[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("archive_command is failing")),
        "{c:?}"
    );
    assert_eq!(hosts.in_recovery('B'), Some(true), "a streaming standby");
    // The archive becomes unwritable after the copy: the wait says so after three failed
    // attempts, not at --catchup-timeout (an hour); the standby is kept.
    let hook = format!("before_wait=chmod 000 '{}'", archive.display());
    let (code, recs, err) = hosts.migrate(&["--mode", "archive", "--hook", &hook]);
    mode(0o700);
    assert_eq!(
        code,
        69,
        "archive lost in the wait: {}\n{err}",
        summary(&recs)
    );
    assert!(err.contains("the source cannot archive"), "{err}");
    assert_eq!(summary(&recs)["failed_phase"], "wait");
    assert_eq!(hosts.in_recovery('B'), Some(true), "the standby is kept");
    // A target whose restore_command fails: nothing replayed while the archive holds the
    // segment waited for (here for 5 s). The next run writes restore_command again.
    let hook = format!(
        "before_wait={}/psql -Xq -d '{}' -c \"ALTER SYSTEM SET restore_command = 'exit 3'\" -c 'SELECT pg_reload_conf()'",
        testkit::pg_bin().display(),
        hosts.dsn('B'),
    );
    let (code, recs, err) = hosts.migrate_env(
        &["--mode", "archive", "--hook", &hook],
        &[("PGSHIFT_RESTORE_STALL", "5")],
    );
    assert_eq!(
        code,
        69,
        "failing restore_command: {}\n{err}",
        summary(&recs)
    );
    assert!(err.contains("check restore_command on the target"), "{err}");
    // Rolled back after the last segment was shipped: the source goes on writing that
    // segment and must still be able to archive it whole (an archive never overwrites: a
    // copy of the partial one under its name would stop its archiving for good).
    let (code, recs, err) =
        hosts.migrate(&["--mode", "archive", "--hook", "before_promote=exit 1"]);
    assert_eq!(code, 75, "rolled back: {}\n{err}", summary(&recs));
    let shipped = of_type(&recs, "proof")
        .into_iter()
        .find(|p| p["name"] == "last_segment_shipped" && p["ok"] == true)
        .unwrap_or_else(|| panic!("the last segment was shipped: {recs:?}"))
        .clone();
    let seg = shipped["segment"].as_str().unwrap().to_owned();
    psql(&hosts.dsn('A'), "SELECT pg_switch_wal()").unwrap();
    let archived = format!(
        "SELECT last_archived_wal >= '{seg}' AND last_archived_wal IS NOT NULL FROM pg_stat_archiver"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(&hosts.dsn('A'), &archived).as_deref() != Some("t") {
        assert!(
            Instant::now() < deadline,
            "the source could not archive {seg} after the rollback: {:?}",
            psql(
                &hosts.dsn('A'),
                "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
            )
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, fwd, err) = hosts.migrate(&["--mode", "archive"]);
    assert_eq!(
        code,
        0,
        "archive-mode migration failed: {}\n{err}",
        summary(&fwd)
    );
    let s = summary(&fwd);
    assert_eq!(s["mode"], "archive");
    assert_eq!(s["verdict"], "equal", "{s}");
    switchover(&fwd);
    assert!(
        of_type(&fwd, "proof")
            .iter()
            .any(|p| p["name"] == "last_segment_shipped"),
        "the last segment must be shipped through the archive"
    );
    assert_eq!(hosts.in_recovery('B'), Some(false));

    let report = hosts.dir.join("back.jsonl");
    let (code, back, err) = hosts.migrate(&[
        "--reverse",
        "--mode",
        "archive",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(
        code,
        0,
        "archive-mode reverse failed: {}\n{err}",
        summary(&back)
    );
    assert_eq!(summary(&back)["verdict"], "equal");
    assert_eq!(hosts.in_recovery('A'), Some(false));

    load.stop_and_verify();
}

/// The source crashes in the middle of the base copy: the run fails, the partial copy stays
/// (never mistaken for a cluster: no control file, no standby.signal), the DBA restarts the
/// source, and the same command again resumes the copy with pgdata-sync — reusing what
/// arrived, under load — switches over and verifies equal, with no acknowledged write lost.
#[test]
fn exclusive_source_killed_during_base_copy_then_the_copy_resumes() {
    let hosts = Hosts::create(&[]);
    let load = Load::start(&hosts);
    let pid_file = hosts.pgdata('A').join("postmaster.pid");
    // The copy is throttled so the kill lands in the middle of it: once 6 MB have arrived.
    let hook = once_copied_6mb(
        &hosts.pgdata('B'),
        &format!("kill -9 $(head -n 1 {})", pid_file.display()),
    );
    let (code, recs, err) =
        hosts.migrate(&["--max-rate", "8M", "--compress", "none", "--hook", &hook]);
    assert_ne!(code, 0, "migration must fail when the source dies: {err}");
    let s = summary(&recs);
    assert_eq!(s["failed_phase"], "base_copy", "{s}");
    let b = hosts.pgdata('B');
    assert!(
        b.join("PG_VERSION").exists(),
        "the partial copy stays: {err}"
    );
    assert!(
        !b.join("global/pg_control").exists(),
        "a partial copy with a control file"
    );
    assert!(!b.join("standby.signal").exists());
    assert!(
        err.contains("run the same command again to resume it"),
        "{err}"
    );
    // The DBA restarts the crashed source: it is the only primary, with every acked write.
    // (Its orphaned backends hold the shared memory until they notice the postmaster died.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut cmd = testkit::pg_command("pg_ctl", Path::new("/tmp"));
        cmd.arg("-D")
            .arg(hosts.pgdata('A'))
            .arg("-l")
            .arg(hosts.dir.join("a/server.log"))
            .args(["-w", "start"]);
        if cmd.output().unwrap().status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the source did not restart after the crash"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(hosts.in_recovery('A'), Some(false));
    assert_eq!(hosts.in_recovery('B'), None, "B must not be running");

    // A dry run says what the real one does.
    let (code, recs, err) = hosts.migrate(&["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let plan = recs.iter().find(|r| r["type"] == "plan").expect("a plan");
    assert_eq!(plan["resume_partial_copy"], true, "{plan}");
    assert_eq!(plan["remove_partial_copy"], false, "{plan}");
    let (code, recs, err) = hosts.migrate(&["--dry-run", "--fresh-copy"]);
    assert_eq!(code, 0, "{err}");
    let plan = recs.iter().find(|r| r["type"] == "plan").expect("a plan");
    assert_eq!(plan["resume_partial_copy"], false, "{plan}");
    assert_eq!(plan["remove_partial_copy"], true, "{plan}");
    assert!(
        b.join("PG_VERSION").exists(),
        "a dry run removes nothing: {err}"
    );

    let (code, recs, err) = hosts.migrate(&[]);
    let s = summary(&recs);
    assert_eq!(code, 0, "the resumed run: {s}\n{err}");
    assert_eq!(s["verdict"], "equal", "{s}");
    let r = recs
        .iter()
        .find(|r| r["type"] == "copy_resumed")
        .unwrap_or_else(|| panic!("no copy_resumed record: {err}"));
    eprintln!("{r}");
    let reused = r["bytes_reused"].as_u64().unwrap();
    let total = r["bytes_total"].as_u64().unwrap();
    assert!(reused > 0, "nothing of the partial copy was reused: {r}");
    assert!(reused < total, "{r}");
    assert_eq!(r["bytes_sent"].as_u64().unwrap() + reused, total, "{r}");
    assert!(r["wire_bytes"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(hosts.in_recovery('B'), Some(false), "B is the primary");
    assert_eq!(hosts.in_recovery('A'), Some(true), "A follows it");
    std::thread::sleep(Duration::from_millis(500));
    load.stop_and_verify();
}

/// A partial copy that cannot be resumed (here: no pgdata-sync where --bin points) is removed
/// and made again, with a `note` saying so; the run still ends equal.
#[test]
fn exclusive_a_copy_that_cannot_be_resumed_starts_again() {
    let hosts = Hosts::create(&[]);
    let b = hosts.pgdata('B');
    let term_when_6mb = once_copied_6mb(&b, "kill -TERM $PGSHIFT_MIGRATE_PID");
    let (code, recs, err) = hosts.migrate(&[
        "--max-rate",
        "8M",
        "--compress",
        "none",
        "--hook",
        &term_when_6mb,
    ]);
    assert_eq!(code, 75, "{}\n{err}", summary(&recs));
    assert!(b.join("PG_VERSION").exists(), "{err}");
    // Every tool but pgdata-sync.
    let bins = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(bin_dir()).unwrap().flatten() {
        let name = e.file_name();
        let path = e.path();
        let tool = path.is_file()
            && name != "pgdata-sync"
            && path.extension().is_none()
            && std::fs::metadata(&path).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o111 != 0
            });
        if tool {
            std::os::unix::fs::symlink(&path, bins.path().join(&name)).unwrap();
        }
    }
    std::fs::set_permissions(
        bins.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, recs, err) = hosts.migrate(&["--bin", bins.path().to_str().unwrap()]);
    let s = summary(&recs);
    assert_eq!(code, 0, "{s}\n{err}");
    assert_eq!(s["verdict"], "equal", "{s}");
    assert!(
        recs.iter()
            .any(|r| r["type"] == "note" && r["code"] == "copy_not_resumed"),
        "no copy_not_resumed note: {err}"
    );
    assert!(!recs.iter().any(|r| r["type"] == "copy_resumed"));
    assert!(err.contains("cannot be resumed"), "{err}");
}

#[test]
fn exclusive_target_stopped_before_promote_restarts_the_source_a_read_only_one_stays_primary() {
    let hosts = Hosts::create(&[]);
    let load = Load::start(&hosts);
    // pg_ctl refuses to run as root: the hook runs it as postgres where needed.
    let stop_b = format!(
        "{} -D {} -m immediate -w stop",
        testkit::pg_bin().join("pg_ctl").display(),
        hosts.pgdata('B').display()
    );
    let hook = format!("before_promote={}", as_postgres(&stop_b));
    let (code, recs, err) = hosts.migrate(&["--hook", &hook]);
    assert_ne!(code, 0, "migration must fail when the target dies: {err}");
    let s = summary(&recs);
    assert_eq!(s["failed_phase"], "switchover", "{s}");
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert_eq!(code, 75, "{err}");
    assert_eq!(hosts.in_recovery('A'), Some(false), "A must serve again");
    assert_eq!(
        hosts.in_recovery('B'),
        Some(true),
        "B is confirmed not promoted and runs as a standby again"
    );
    assert!(
        !hosts.pgdata('A').join("standby.signal").exists(),
        "A's fence is removed"
    );
    std::thread::sleep(Duration::from_millis(500));
    load.stop_and_verify();

    // The target promoted but read-only: pg-switch cannot prove it writable and exits 65,
    // as a refusal does. The run must not say nothing changed: B is the primary, A stays
    // stopped and fenced; once B is fixed, the same command rejoins and verifies.
    let read_only = |on: bool| {
        let dsn = format!(
            "{} options='-cdefault_transaction_read_only=off'",
            hosts.dsn('B')
        );
        let set = if on {
            "SET default_transaction_read_only = on"
        } else {
            "RESET default_transaction_read_only"
        };
        psql(&dsn, &format!("ALTER SYSTEM {set}")).expect("ALTER SYSTEM on B");
        psql(&dsn, "SELECT pg_reload_conf()").expect("reload B");
    };
    read_only(true);
    let (code, recs, err) = hosts.migrate(&[]);
    let s = summary(&recs);
    assert_eq!(code, 65, "{s}\n{err}");
    assert_eq!(s["state"], "switched", "{s}");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("promoted but not proven writable"),
        "{s}"
    );
    assert_eq!(hosts.in_recovery('B'), Some(false), "B was promoted");
    assert!(!hosts.running('A'), "A stays stopped");
    assert!(
        hosts.pgdata('A').join("standby.signal").exists(),
        "and fenced"
    );
    // Too late for --abort: it says so (exit 1, its summary), and changes nothing.
    let (code, recs, err) = hosts.migrate(&["--abort"]);
    assert_eq!(code, 1, "{}\n{err}", summary(&recs));
    assert!(summary_message(&recs).contains("cannot abort"), "{err}");
    assert_eq!(hosts.in_recovery('B'), Some(false));
    assert!(!hosts.running('A'));
    read_only(false);
    let (code, recs, err) = hosts.migrate(&[]);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    assert_eq!(summary(&recs)["verdict"], "equal");
    assert_eq!(hosts.in_recovery('A'), Some(true), "A follows B");
}

#[test]
fn exclusive_unreachable_ssh_host_fails_preflight_and_changes_nothing() {
    let hosts = Hosts::create(&[]);
    let closed = testkit::free_port("127.0.0.1");
    let spec = format!("ssh://postgres@127.0.0.1:{closed}");
    let (code, recs, err) = hosts.migrate(&["--target-host", &spec]);
    assert_eq!(code, 69, "{err}");
    let s = summary(&recs);
    assert_eq!(s["failed_phase"], "preflight");
    assert!(err.contains("cannot run commands on host"), "{err}");
    assert_eq!(hosts.in_recovery('A'), Some(false));
    assert_eq!(
        psql(&hosts.dsn('A'), "SELECT count(*) FROM pg_replication_slots").as_deref(),
        Some("0")
    );
    assert!(!hosts.pgdata('A').join("standby.signal").exists());
}

#[test]
fn exclusive_reverse_rewinds_an_old_source_that_forked() {
    let hosts = Hosts::create(&[]);
    let (code, _, err) = hosts.migrate(&["--no-verify"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        hosts.in_recovery('A'),
        Some(true),
        "A follows B after the migration"
    );

    // A DBA promotes the old source by mistake and it takes a write: its history forks off
    // B's. Then it is fenced again (stopped, standby.signal back).
    let pg_ctl = |args: &[&str]| {
        let mut cmd = testkit::pg_command("pg_ctl", Path::new("/tmp"));
        cmd.arg("-D").arg(hosts.pgdata('A')).args(args);
        testkit::run_ok(&mut cmd);
    };
    pg_ctl(&["-w", "promote"]);
    psql(
        &hosts.dsn('A'),
        "CREATE TABLE forked_write(x int); INSERT INTO forked_write VALUES (1)",
    )
    .expect("write on the forked old source");
    pg_ctl(&["-m", "fast", "-w", "stop"]);
    std::fs::write(hosts.pgdata('A').join("standby.signal"), "").unwrap();

    let (code, recs, err) = hosts.migrate(&["--reverse"]);
    assert_eq!(
        code,
        0,
        "reverse migration failed: {}\n{err}",
        summary(&recs)
    );
    let catch_up = of_type(&recs, "phase")
        .into_iter()
        .find(|p| p["name"] == "catch_up")
        .unwrap()
        .clone();
    assert_eq!(
        catch_up["rewound"], true,
        "the forked target must be rewound: {catch_up}"
    );
    assert_eq!(summary(&recs)["verdict"], "equal");
    assert_eq!(hosts.in_recovery('A'), Some(false));
    assert_eq!(hosts.in_recovery('B'), Some(true));
    // The split-brain write is gone: A now holds B's history.
    assert_eq!(
        psql(
            &hosts.dsn('A'),
            "SELECT count(*) FROM pg_class WHERE relname = 'forked_write'"
        )
        .as_deref(),
        Some("0")
    );
}

#[test]
fn exclusive_migrate_over_ssh_both_directions() {
    // Every command on either host goes through ssh as the postgres user, as with two real
    // hosts; only the sshd and the clusters happen to share this machine. The first copy is
    // cut by SIGTERM and resumed over ssh.
    let sshd = match testkit::Sshd::start(&["postgres"]) {
        Ok(s) => s,
        Err(why) => testkit::skip!("cannot start an sshd for the test: {why}"),
    };
    let hosts = Hosts::create(&[]);
    let spec = format!("ssh://postgres@127.0.0.1:{}", sshd.port());
    let opts = sshd.ssh_options().join(" ");
    let env = [("PGS_SSH_OPTS", opts.as_str())];
    let over_ssh = [
        "--source-host",
        spec.as_str(),
        "--target-host",
        spec.as_str(),
    ];

    // A run stopped by SIGTERM in the middle of its copy: ssh does not pass the signal on, so
    // the run itself ends the pg_basebackup it started on the target before it exits.
    let b = hosts.pgdata('B');
    let term_when_6mb = once_copied_6mb(&b, "kill -TERM $PGSHIFT_MIGRATE_PID");
    let mut cut = over_ssh.to_vec();
    cut.extend([
        "--max-rate",
        "8M",
        "--compress",
        "none",
        "--hook",
        &term_when_6mb,
    ]);
    let (code, recs, err) = hosts.migrate_env(&cut, &env);
    assert_eq!(code, 75, "{}\n{err}", summary(&recs));
    let copying = std::process::Command::new("pgrep")
        .args(["-f", &format!("pg_basebackup -D {}", b.display())])
        .output()
        .unwrap();
    assert!(
        !copying.status.success(),
        "the copy still runs on the target after the run ended: {}",
        String::from_utf8_lossy(&copying.stdout)
    );
    assert!(b.join("PG_VERSION").exists(), "{err}");

    // The same command then resumes that copy over ssh.
    let (code, fwd, err) = hosts.migrate_env(&over_ssh, &env);
    assert_eq!(
        code,
        0,
        "migration over ssh failed: {}\n{err}\nsshd: {}",
        summary(&fwd),
        sshd.log()
    );
    assert_eq!(summary(&fwd)["verdict"], "equal");
    let resumed = fwd
        .iter()
        .find(|r| r["type"] == "copy_resumed")
        .unwrap_or_else(|| panic!("the copy was not resumed: {err}"));
    assert!(resumed["bytes_reused"].as_u64().unwrap() > 0, "{resumed}");
    switchover(&fwd);
    assert_eq!(hosts.in_recovery('B'), Some(false));
    assert_eq!(hosts.in_recovery('A'), Some(true));
    // The hosts' commands really went through ssh.
    let logins = sshd
        .log()
        .matches("Accepted publickey for postgres")
        .count();
    assert!(logins >= 10, "only {logins} ssh logins:\n{}", sshd.log());

    let mut back_args = over_ssh.to_vec();
    back_args.push("--reverse");
    let (code, back, err) = hosts.migrate_env(&back_args, &env);
    assert_eq!(
        code,
        0,
        "reverse over ssh failed: {}\n{err}",
        summary(&back)
    );
    assert_eq!(summary(&back)["verdict"], "equal");
    assert_eq!(hosts.in_recovery('A'), Some(false));

    // Without the test's known_hosts, host key checking refuses the host: preflight fails and
    // nothing changes.
    let (code, recs, err) = hosts.migrate_env(
        &over_ssh,
        &[(
            "PGS_SSH_OPTS",
            &format!(
                "-F /dev/null -i {} -o UserKnownHostsFile=/dev/null",
                sshd.client_key().display()
            ),
        )],
    );
    assert_eq!(code, 69, "{err}");
    assert_eq!(summary(&recs)["failed_phase"], "preflight");
    assert_eq!(hosts.in_recovery('A'), Some(false));
}

/// Two hosts in their own network namespaces joined by a bridge, each link limited to
/// 100 Mbit/s by tc tbf: the base copy and the WAL stream cross a (slow) network. `--compress
/// auto` measures the link and the data and compresses the copy (the lab's data compresses
/// well): fewer bytes on the wire than in the data directory, the bytes per phase and their
/// price in the summary, verify equal both ways, nothing lost under load. Then the link to B
/// drops to 2 Mbit/s while the source writes far more WAL than that: the wait says the target
/// cannot catch up (exit 75, the rates in the message) within --converge-window, and the
/// source stays the primary, untouched.
#[test]
fn exclusive_netns_hosts_with_a_bandwidth_limit() {
    let probe = Command::new("ip")
        .args(["netns", "add", "pgshift-probe"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        testkit::skip!("cannot create network namespaces here (needs root and iproute2)");
    }
    let _ = Command::new("ip")
        .args(["netns", "del", "pgshift-probe"])
        .output();

    let hosts = Hosts::create(&["--netns", "--rate", "100mbit"]);
    assert!(
        hosts.env["SOURCE_SPEC"].starts_with("netns://"),
        "{:?}",
        hosts.env
    );
    assert!(
        !hosts.source("host").starts_with("127."),
        "A must live in its namespace"
    );
    let load = Load::start(&hosts);
    let (code, fwd, err) = hosts.migrate(&["--egress-price", "0.09"]);
    assert_eq!(code, 0, "netns migration failed: {}\n{err}", summary(&fwd));
    let s = summary(&fwd);
    assert_eq!(s["verdict"], "equal");
    let chosen = of_type(&fwd, "compression");
    assert_eq!(chosen.len(), 1, "{fwd:?}");
    assert_eq!(
        chosen[0]["method"], "zstd",
        "auto on 100 Mbit/s: {}",
        chosen[0]
    );
    // The shaped link (12.5 MB/s) is seen as slow, far from loopback's hundreds of MB/s.
    // migrate.sh subtracts the source's own time from the transfer's, which a loaded
    // machine makes noisy: 25.3 MB/s once in a full suite.
    assert!(
        chosen[0]["link_bytes_per_s"].as_f64().unwrap() < 60e6,
        "{}",
        chosen[0]
    );
    let b = &s["bytes"];
    let (logical, wire) = (
        b["base_copy"].as_i64().unwrap(),
        b["base_copy_wire"].as_i64().unwrap(),
    );
    assert!(wire > 0 && wire * 2 < logical, "compressed copy: {b}");
    assert!(b["wal_streamed"].as_i64().unwrap() > 0, "{b}");
    assert_eq!(
        b["wire_total"].as_i64().unwrap(),
        wire + b["wal_streamed"].as_i64().unwrap(),
        "{b}"
    );
    assert!(s["egress_estimate"].as_f64().is_some(), "{s}");
    switchover(&fwd);
    let (code, back, err) = hosts.migrate(&["--reverse"]);
    assert_eq!(code, 0, "netns reverse failed: {}\n{err}", summary(&back));
    assert_eq!(hosts.in_recovery('A'), Some(false));

    // A writer far above what 2 Mbit/s carries, started with the throttle once B follows A.
    let link = hosts.env["TARGET_LINK"].clone();
    let writer = format!(
        "{} -XAtq -d '{}' -c 'CREATE TABLE IF NOT EXISTS bulk (id int, t text)' && for i in $(seq 1 40); do {} -XAtq -d '{}' -c 'INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 50000) g'; sleep 0.3; done",
        testkit::pg_bin().join("psql").display(),
        hosts.dsn('A'),
        testkit::pg_bin().join("psql").display(),
        hosts.dsn('A'),
    );
    let mut bulk = std::process::Command::new("bash")
        .args(["-c", &writer])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let throttle = format!("before_wait=tc qdisc replace dev {link} root tbf rate 2mbit burst 32kb latency 400ms; sleep 4");
    let started = std::time::Instant::now();
    let (code, recs, err) = hosts.migrate(&[
        "--no-pooler",
        "--converge-window",
        "10",
        "--hook",
        &throttle,
    ]);
    let waited = started.elapsed();
    let _ = bulk.kill();
    let _ = bulk.wait();
    let restore = Command::new("tc")
        .args([
            "qdisc", "replace", "dev", &link, "root", "tbf", "rate", "100mbit", "burst", "512kb",
            "latency", "100ms",
        ])
        .status()
        .unwrap();
    assert!(restore.success());
    let msg = summary_message(&recs);
    assert_eq!(code, 75, "{msg}\n{err}");
    assert!(
        msg.contains("cannot catch up") && msg.contains("B/s"),
        "{msg}"
    );
    assert!(!of_type(&recs, "lag").is_empty(), "lag records: {recs:?}");
    assert!(waited.as_secs() < 120, "detected in {waited:?}");
    assert!(
        of_type(&recs, "phase")
            .iter()
            .all(|p| p["name"] != "switchover"),
        "{recs:?}"
    );
    assert_eq!(
        hosts.in_recovery('A'),
        Some(false),
        "the source is still the primary"
    );
    assert!(
        psql(&hosts.dsn('A'), "INSERT INTO bulk VALUES (0, 'after')").is_some(),
        "and writable"
    );
    assert_eq!(hosts.in_recovery('B'), Some(true), "B is still its standby");
    load.stop_and_verify();
}

#[test]
fn exclusive_advised_window_too_far_away_leaves_the_source_alone() {
    // Three weeks of history ending now, quietest on Sunday nights: the advised window is
    // hours or days away, longer than --max-wait, so migrate.sh gives up before the switch.
    let hosts = Hosts::create(&[]);
    let history = hosts.dir.join("history.jsonl");
    let start = Command::new("date")
        .args(["-u", "-d", "21 days ago", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    let out = Command::new(testkit::tool_bin("window-advisor"))
        .args(["synth", "--weeks", "3", "--step", "5m", "--start"])
        .arg(String::from_utf8_lossy(&start.stdout).trim())
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&history, &out.stdout).unwrap();

    let (code, recs, err) = hosts.migrate(&[
        "--when",
        "advised",
        "--history",
        history.to_str().unwrap(),
        "--max-wait",
        "5",
    ]);
    let window = of_type(&recs, "window");
    assert_eq!(window.len(), 1, "one advised window: {recs:?}\n{err}");
    let wait_s = window[0]["wait_s"].as_i64().unwrap();
    if wait_s <= 5 {
        // The quiet window happens to be now: then the migration simply goes ahead.
        assert_eq!(code, 0, "{err}");
        return;
    }
    assert_eq!(code, 75, "{err}");
    let s = summary(&recs);
    assert_eq!(s["failed_phase"], "wait", "{s}");
    assert!(err.contains("after --max-wait"), "{err}");
    assert_eq!(
        hosts.in_recovery('A'),
        Some(false),
        "the source keeps serving"
    );
    // The standby and its slot are progress: they stay, and --abort removes them.
    assert_eq!(hosts.in_recovery('B'), Some(true), "the standby is kept");
    assert_eq!(
        psql(&hosts.dsn('A'), "SELECT count(*) FROM pg_replication_slots").as_deref(),
        Some("1"),
        "the base copy's slot is kept"
    );
    let (code, recs, err) = hosts.migrate(&["--abort"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&recs)["aborted"], "copy", "{recs:?}");
    assert!(
        !hosts.pgdata('B').join("PG_VERSION").exists(),
        "--abort removes the copy"
    );
    assert_eq!(
        psql(&hosts.dsn('A'), "SELECT count(*) FROM pg_replication_slots").as_deref(),
        Some("0"),
        "--abort drops the slot"
    );
    assert_eq!(hosts.in_recovery('A'), Some(false));
}

#[test]
fn exclusive_abort_after_the_control_host_died_in_the_copy_stops_the_copy_and_drops_its_slot() {
    // The control host dies during the base copy; its pg_basebackup runs on (a process group
    // of its own), holding the slot. --abort must stop it before removing the copy: a slot
    // still in use is not dropped, and would keep WAL on the source for ever.
    let hosts = Hosts::create(&[]);
    let b = hosts.pgdata('B');
    let kill = once_copied_6mb(&b, "kill -KILL 0");
    let (code, out, err) = hosts.migrate_raw(
        &["--max-rate", "8M", "--compress", "none", "--hook", &kill],
        &[],
    );
    assert_eq!(code, -1, "killed\n{out}\n{err}");
    let (code, recs, err) = hosts.migrate(&["--abort"]);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    assert_eq!(summary(&recs)["aborted"], "copy", "{recs:?}");
    assert_eq!(
        psql(&hosts.dsn('A'), "SELECT count(*) FROM pg_replication_slots").as_deref(),
        Some("0"),
        "the copy's slot is dropped: {err}"
    );
    let running = Command::new("pgrep")
        .args(["-f", &format!("pg_basebackup -D {}", b.display())])
        .status()
        .unwrap();
    assert!(!running.success(), "the copy still runs");
    assert!(!b.join("PG_VERSION").exists(), "the copy is removed");
    assert_eq!(hosts.in_recovery('A'), Some(false));
}

#[test]
fn exclusive_wrong_replication_password_on_reverse_is_refused_in_preflight() {
    let hosts = Hosts::create(&[]);
    let (code, _, err) = hosts.migrate(&["--no-verify"]);
    assert_eq!(code, 0, "{err}");
    let wrong = hosts.dir.join("wrong.pw");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let (code, recs, err) =
        hosts.migrate(&["--reverse", "--repl-password-file", wrong.to_str().unwrap()]);
    assert_eq!(code, 69, "{err}");
    let s = summary(&recs);
    assert_eq!(s["failed_phase"], "preflight", "{s}");
    assert!(err.contains("replication connection"), "{err}");
    // Nothing changed: B still the primary, A still following it.
    assert_eq!(hosts.in_recovery('B'), Some(false));
    assert_eq!(hosts.in_recovery('A'), Some(true));
    assert!(
        !of_type(&recs, "proof")
            .iter()
            .any(|p| p["name"] == "source_clean_shutdown"),
        "no switchover was attempted"
    );
}

#[test]
fn exclusive_a_slot_the_source_invalidated_ends_the_wait_with_the_reason() {
    // While the target is down (a standby kept for a later run, say), the source writes more
    // WAL than its max_slot_wal_keep_size and a checkpoint invalidates the slot: the WAL the
    // target needs is gone. The wait says so at once, not after --catchup-timeout (an hour:
    // with no streaming there was no lag to report, so the convergence check never ran);
    // --abort and a new run then move it.
    let hosts = Hosts::create(&[]);
    let bin = testkit::pg_bin();
    let (a, b) = (hosts.dsn('A'), hosts.pgdata('B'));
    let hook = hosts.dir.join("lose-the-slot.sh");
    std::fs::write(
        &hook,
        format!(
            "set -e
psql() {{ '{psql}' -XAtq -v ON_ERROR_STOP=1 -d '{a}' \"$@\"; }}
psql -c \"ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'\" -c 'ALTER SYSTEM SET wal_keep_size = 0' -c 'SELECT pg_reload_conf()' >/dev/null
runuser -u postgres -- '{pg_ctl}' -D '{b}' -m fast -w stop >/dev/null
psql -c 'CREATE TABLE IF NOT EXISTS pgs_fill (x int)' >/dev/null
for i in 1 2 3 4 5 6 7 8; do psql -c 'INSERT INTO pgs_fill VALUES (1)' -c 'SELECT pg_switch_wal()' >/dev/null; done
psql -c CHECKPOINT >/dev/null
test \"$(psql -c 'SELECT wal_status FROM pg_replication_slots')\" = lost
runuser -u postgres -- '{pg_ctl}' -D '{b}' -l '{b}/../restarted.log' -w start >/dev/null
",
            psql = bin.join("psql").display(),
            pg_ctl = bin.join("pg_ctl").display(),
            b = b.display(),
        ),
    )
    .unwrap();
    let hook = format!("before_wait=bash '{}'", hook.display());
    let (code, recs, err) = hosts.migrate(&["--converge-window", "30", "--hook", &hook]);
    assert_eq!(code, 69, "{}\n{err}", summary(&recs));
    assert_eq!(summary(&recs)["failed_phase"], "wait");
    assert!(err.contains("invalidated the slot"), "{err}");
    assert_eq!(hosts.in_recovery('A'), Some(false), "the source serves");
    // What the message advises.
    let (code, recs, err) = hosts.migrate(&["--abort"]);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    psql(&a, "ALTER SYSTEM RESET max_slot_wal_keep_size").unwrap();
    psql(&a, "SELECT pg_reload_conf()").unwrap();
    let (code, recs, err) = hosts.migrate(&[]);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    assert_eq!(summary(&recs)["verdict"], "equal");
}
