//! migrate.sh before it changes anything (issue 16, item 5): `--dry-run` runs the preflight
//! and prints the plan, and leaves both hosts and the journal as they were; on a terminal it
//! asks before it stops the source ("no" keeps the target a standby, exit 75), and without a
//! terminal it wants `--yes` before it does anything at all.
//!
//! The terminal is a real pseudo-terminal: script(1) from util-linux runs migrate.sh on one,
//! and the answer is typed once the question shows. These tests drive whole clusters, so they
//! are `exclusive_`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hosts::*;
use serde_json::Value;
use testkit::json_lines;

/// Every path under `dir` with its size and mtime (what a write would change).
fn listing(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        out.push((d.clone(), meta.len(), meta.modified().unwrap()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// The journal files (JSON lines) in the runs' state directory.
fn journals(hosts: &Hosts) -> Vec<PathBuf> {
    std::fs::read_dir(hosts.state_dir())
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default()
}

fn slots(hosts: &Hosts) -> String {
    psql(&hosts.dsn('A'), "SELECT count(*) FROM pg_replication_slots").expect("A answers")
}

/// migrate.sh without --yes, stdin not a terminal (/dev/null).
fn migrate_no_tty(hosts: &Hosts, args: &[&str]) -> (i32, Vec<Value>, String) {
    let argv = hosts.migrate_argv(args);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("PGSHIFT_STATE_DIR", hosts.state_dir())
        .stdin(Stdio::null());
    testkit::hermetic(&mut cmd);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        json_lines(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exclusive_dry_run_changes_nothing_then_a_real_run_goes_ahead() {
    let hosts = Hosts::create(&[]);
    let b_host = hosts.pgdata('B').parent().unwrap().to_path_buf();
    let before = listing(&b_host);

    // No --yes needed: a dry run stops nothing.
    let (code, recs, err) = migrate_no_tty(&hosts, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let plan = of_type(&recs, "plan");
    assert_eq!(plan.len(), 1, "{recs:?}");
    let plan = plan[0];
    assert_eq!(plan["plan"], "migrate", "{plan}");
    assert_eq!(plan["base_copy"], true, "{plan}");
    assert_eq!(plan["confirm"], "ask", "{plan}");
    assert_eq!(plan["switchover"], "pg-switch", "{plan}");
    assert_eq!(plan["resume"], "none", "{plan}");
    let phases: Vec<&str> = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "preflight",
            "base_copy",
            "catch_up",
            "confirm",
            "wait",
            "switchover",
            "rejoin",
            "verify"
        ]
    );
    // The preflight ran (its phase record) and passed; nothing after it did.
    let ran: Vec<&Value> = of_type(&recs, "phase");
    assert_eq!(ran.len(), 1, "{recs:?}");
    assert_eq!(ran[0]["name"], "preflight");
    let s = summary(&recs);
    assert_eq!(
        (&s["success"], &s["dry_run"]),
        (&true.into(), &true.into()),
        "{s}"
    );
    assert!(err.contains("plan (dry run: nothing was changed)"), "{err}");
    assert!(err.contains("base_copy: pg_basebackup with slot"), "{err}");

    // A dry run that cannot go ahead says why with the preflight's code, and changes nothing
    // either.
    let closed = testkit::free_port("127.0.0.1");
    let spec = format!("ssh://postgres@127.0.0.1:{closed}");
    let (code, recs, err) = migrate_no_tty(&hosts, &["--dry-run", "--target-host", &spec]);
    assert_eq!(code, 69, "{err}");
    assert_eq!(summary(&recs)["failed_phase"], "preflight");
    assert!(of_type(&recs, "plan").is_empty());

    // Nothing changed: the target's host directory (data directory, pgshift's files beside
    // it) is as it was, the source has no slot and is a primary, no journal exists.
    assert_eq!(listing(&b_host), before, "the target's host changed");
    assert_eq!(slots(&hosts), "0");
    assert_eq!(hosts.in_recovery('A'), Some(false));
    assert!(!hosts.pgdata('A').join("standby.signal").exists());
    assert!(journals(&hosts).is_empty(), "{:?}", journals(&hosts));

    // And a real run starts from scratch (nothing to resume) and goes through.
    // Throttled so that the copy lasts a few watches of its progress.
    let (code, recs, err) = hosts.migrate(&[
        "--databases",
        "app",
        "--max-rate",
        "8M",
        "--compress",
        "none",
    ]);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    let progress = of_type(&recs, "copy_progress");
    assert!(
        !progress.is_empty(),
        "a copy of 8 s or more reports its progress: {recs:?}"
    );
    let total = summary(&recs)["bytes_copied"].as_u64().unwrap();
    for p in &progress {
        let (sent, of) = (
            p["bytes_done"].as_u64().unwrap(),
            p["bytes_total"].as_u64().unwrap(),
        );
        assert!(sent > 0 && sent <= of, "{p}");
        // The estimate is of the data directory as the copy began (WAL aside), within reason.
        assert!(
            of > total / 2 && of < total * 2,
            "{p} vs bytes_copied {total}"
        );
        let rate = p["bytes_per_s"].as_u64().unwrap();
        assert!(
            rate > 1_000_000 && rate < 9_000_000,
            "throttled to 8 MB/s: {p}"
        );
        assert!(p["eta_s"].is_u64(), "{p}");
    }
    assert!(
        err.lines()
            .any(|l| l.starts_with("migrate: migrated ") && l.contains(" ms, verify: equal")),
        "the closing line: {err}"
    );
    let s = summary(&recs);
    assert_eq!(s["resumed"], "none", "{s}");
    assert_eq!(s["verdict"], "equal", "{s}");
    assert!(s["bytes_copied"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(hosts.in_recovery('B'), Some(false));
    assert_eq!(hosts.in_recovery('A'), Some(true));

    // Once done, a dry run says there is nothing to do.
    let (code, recs, err) = migrate_no_tty(&hosts, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(of_type(&recs, "plan")[0]["already_done"], true, "{recs:?}");
}

/// migrate.sh on a pseudo-terminal (script -qec): the answer is typed when the question
/// shows. Returns the exit code, everything the terminal showed, and whether B was streaming
/// from A while the question waited, and the run's records (from its --report file: on a
/// terminal stdout shows them as text).
fn migrate_on_a_terminal(hosts: &Hosts, answer: &str) -> (i32, String, bool, Vec<Value>) {
    let report = hosts
        .state_dir()
        .with_file_name(format!("report-{}.jsonl", nanos()));
    let argv = hosts.migrate_argv(&["--databases", "app", "--report", report.to_str().unwrap()]);
    let line: Vec<String> = argv.iter().map(|a| shared::host::sh_quote(a)).collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"])
        .env("PGSHIFT_STATE_DIR", hosts.state_dir())
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    testkit::hermetic(&mut cmd);
    let mut child = cmd.spawn().expect("script(1) from util-linux");
    let shown = Arc::new(Mutex::new(String::new()));
    let reader = {
        let shown = shown.clone();
        let mut out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let question = format!(
        "stop {}:{} and switch to {}:{}? [y/N] ",
        hosts.source("host"),
        hosts.source("port"),
        hosts.env["TARGET_ADDR"],
        hosts.env["TARGET_PORT"]
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while !shown.lock().unwrap().contains(&question) {
        if let Some(status) = child.try_wait().unwrap() {
            reader.join().unwrap();
            panic!(
                "migrate.sh ended ({status}) without asking:\n{}",
                shown.lock().unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no question:\n{}",
            shown.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // While it waits: the source serves, the target streams from it.
    std::thread::sleep(Duration::from_millis(500));
    let streaming = psql(&hosts.dsn('B'), "SELECT status FROM pg_stat_wal_receiver").as_deref()
        == Some("streaming")
        && hosts.in_recovery('A') == Some(false);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let text = shown.lock().unwrap().replace('\r', "");
    let recs = json_lines(&std::fs::read_to_string(&report).unwrap_or_default());
    (status.code().unwrap_or(-1), text, streaming, recs)
}

#[test]
fn exclusive_switchover_asks_on_a_terminal_and_wants_yes_without_one() {
    if Command::new("script").arg("--version").output().is_err() {
        testkit::skip!("script(1) is missing (util-linux)");
    }
    let hosts = Hosts::create(&[]);

    // No terminal, no --yes: refused before anything is done.
    let (code, recs, err) = migrate_no_tty(&hosts, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not a terminal: pass --yes to switch over without asking"),
        "{err}"
    );
    assert_eq!(summary(&recs)["exit_code"], 2);
    assert!(journals(&hosts).is_empty(), "{:?}", journals(&hosts));
    assert_eq!(slots(&hosts), "0");
    assert!(std::fs::read_dir(hosts.pgdata('B')).map_or(true, |mut d| d.next().is_none()));

    // "n": the run stops before the switchover; A serves, B stays its standby.
    let (code, shown, streaming, end) = migrate_on_a_terminal(&hosts, "n\n");
    assert!(
        streaming,
        "B did not stream from A while the question waited:\n{shown}"
    );
    assert_eq!(code, 75, "{shown}");
    assert!(
        shown.contains("not switched: answered no; run again to go on"),
        "{shown}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("{\"type\":")),
        "records show as text on a terminal:\n{shown}"
    );
    assert!(
        shown.contains("phase      name preflight, status ok, ms "),
        "{shown}"
    );
    let s = summary(&end);
    assert_eq!(
        (&s["state"], &s["failed_phase"]),
        (&"standby".into(), &"confirm".into()),
        "{s}"
    );
    assert!(of_type(&end, "phase")
        .iter()
        .all(|p| p["name"] != "switchover"));
    assert_eq!(hosts.in_recovery('A'), Some(false), "A must still serve");
    assert_eq!(hosts.in_recovery('B'), Some(true), "B must be a standby");

    // "y": the same command goes on from the standby and switches.
    let (code, shown, streaming, recs) = migrate_on_a_terminal(&hosts, "y\n");
    assert!(streaming, "{shown}");
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("phase      name switchover, status ok"),
        "{shown}"
    );
    assert!(
        of_type(&recs, "phase")
            .iter()
            .any(|p| p["name"] == "switchover"),
        "{recs:?}"
    );
    assert!(
        shown.contains("migrate: migrated "),
        "the closing line: {shown}"
    );
    // One closing line: the tools migrate.sh ran (pg-switch, rowcount-diff, pg-checksum) keep
    // theirs (`NAME: ok, in 12 ms`, shared::human::closing_line) to themselves.
    let tools_closing: Vec<&str> = shown
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| {
            [
                "pg-switch:",
                "rowcount-diff:",
                "pg-checksum:",
                "wal-ship:",
                "load-gen:",
            ]
            .iter()
            .any(|t| l.starts_with(t))
                && !l.contains("warning:")
                && l.contains(", in ")
        })
        .collect();
    assert!(
        tools_closing.is_empty(),
        "a tool's closing line under migrate.sh: {tools_closing:?}\n{shown}"
    );
    assert_eq!(hosts.in_recovery('B'), Some(false), "B is the primary");
    assert_eq!(hosts.in_recovery('A'), Some(true), "A follows B");
}
