//! migrate.sh interrupted at every step of the switchover and after it — SIGKILL of its whole
//! process group (the control host dying: nothing of ours runs on) and SIGTERM of it (every
//! process stops at its next safe point) — then the same command again, under load, in both
//! directions. Every time: never two primaries, a stopped old source is always fenced, the
//! re-run exits 0 with the data verified equal, and at the end no acknowledged write is lost
//! and none went to the old primary after the switch.

use crate::hosts::*;

/// Each step with the fault injection that makes it last long enough for the signal to land
/// inside it (the during_* hooks run beside their step).
const POINTS: &[(&str, &str)] = &[
    ("before_switchover", ""),
    ("during_stop", "PGSHIFT_TEST_STOP_DELAY_MS"),
    ("after_stop", ""),
    ("before_promote", ""),
    ("during_promote", "PGSHIFT_TEST_PROMOTE_DELAY_MS"),
    ("after_promote", ""),
    ("before_rejoin", ""),
    ("before_verify", ""),
];

/// Where SIGTERM goes: before pg-switch runs, inside it before and after the promotion was
/// asked for, and after it.
const TERM_POINTS: &[&str] = &[
    "before_switchover",
    "after_stop",
    "during_promote",
    "before_rejoin",
];

#[test]
fn exclusive_migrate_interrupted_at_every_step_converges_under_load() {
    let hosts = Hosts::create(&[]);
    let load = Load::start(&hosts);
    // The first run copies A to B; then every migration goes back the other way.
    let mut reverse = false;
    for sig in ["KILL", "TERM"] {
        for &(point, delay) in POINTS {
            // SIGTERM inside pg-switch's steps is covered step by step by pg-switch's own
            // tests; here it is sent where migrate.sh's handling differs.
            if sig == "TERM" && !TERM_POINTS.contains(&point) {
                continue;
            }
            let what = format!(
                "SIG{sig} at {point}{}",
                if reverse { " (B to A)" } else { "" }
            );
            let pause = if point.starts_with("during") {
                "sleep 0.5; "
            } else {
                ""
            };
            // The hook's shell ignores SIGTERM itself so that it can send it to everyone.
            let action = match sig {
                "KILL" => "kill -KILL 0".to_owned(),
                _ => "trap '' TERM; kill -TERM 0; sleep 1".to_owned(),
            };
            let hook = format!("{point}={pause}{action}");
            let mut args = vec!["--hook", hook.as_str()];
            if reverse {
                args.push("--reverse");
            }
            let env: Vec<(&str, &str)> = if delay.is_empty() {
                vec![]
            } else {
                vec![(delay, "1500")]
            };
            let (code, out, err) = hosts.migrate_raw(&args, &env);
            match sig {
                "KILL" => assert_eq!(code, -1, "{what}: killed\n{err}"),
                _ => {
                    assert_eq!(code, 75, "{what}: interrupted\n{out}\n{err}");
                    let last = out.lines().last().unwrap_or("");
                    assert!(last.contains(r#""stopped_by":"SIGTERM""#), "{what}: {last}");
                }
            }
            let (src, dst) = if reverse { ('B', 'A') } else { ('A', 'B') };
            assert!(hosts.primaries() <= 1, "{what}: two primaries");
            if !hosts.running(src) {
                assert!(
                    hosts.pgdata(src).join("standby.signal").exists(),
                    "{what}: the stopped old source is not fenced"
                );
            }

            let mut again = vec![];
            if reverse {
                again.push("--reverse");
            }
            let (code, recs, err) = hosts.migrate(&again);
            let s = summary(&recs);
            assert_eq!(
                code, 0,
                "{what}, then the same command again: {s}\n{err}\nfirst run:\n{out}"
            );
            assert_eq!(s["verdict"], "equal", "{what}: {s}");
            assert_eq!(
                hosts.in_recovery(dst),
                Some(false),
                "{what}: the target is the primary"
            );
            assert_eq!(
                hosts.in_recovery(src),
                Some(true),
                "{what}: the old source follows it"
            );
            reverse = !reverse;
        }
    }
    let recs = load.stop_and_verify();
    assert_eq!(summary(&recs)["split_brain"], 0);
}

/// The target's host becomes unreachable from the control host during the promotion: its
/// SQL port and its sshd sit in a network namespace whose egress is then throttled to
/// nothing (a `tc tbf` too small for any packet: everything it sends is dropped). pg-switch
/// can neither confirm the promotion nor rule it out, so it touches nothing: the source
/// stays stopped and fenced (never a second primary), exit 126 with the commands, the
/// journal says why. Once the path is back, the same command converges.
#[test]
fn exclusive_target_unreachable_during_the_promotion_never_two_primaries() {
    let probe = std::process::Command::new("ip")
        .args(["netns", "add", "pgshift-probe2"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        testkit::skip!("cannot create network namespaces here (needs root and iproute2)");
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", "pgshift-probe2"])
        .output();
    let hosts = Hosts::create(&["--netns", "--rate", "1gbit"]);
    let ns_b = hosts.env["TARGET_SPEC"]
        .strip_prefix("netns://")
        .expect("B lives in a namespace")
        .to_owned();
    let addr_b = hosts.env["TARGET_ADDR"].clone();
    let sshd = match testkit::Sshd::start_at(&addr_b, Some(&ns_b), &["postgres"]) {
        Ok(s) => s,
        Err(why) => testkit::skip!("cannot start an sshd in B's namespace: {why}"),
    };
    let spec = format!("ssh://postgres@{addr_b}:{}", sshd.port());
    let opts = sshd.ssh_options().join(" ");
    let tc = |rate: &str| {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &ns_b, "tc", "qdisc", "change", "dev", "eth0", "root", "tbf",
            ])
            .args(rate.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let load = Load::start(&hosts);
    let cut = format!(
        "during_promote=sleep 0.3; ip netns exec {ns_b} tc qdisc change dev eth0 root tbf rate 8bit burst 64 latency 1ms"
    );
    let args = ["--target-host", spec.as_str(), "--switch-timeout", "4"];
    let mut first = args.to_vec();
    first.extend(["--hook", cut.as_str()]);
    let (code, recs, err) = hosts.migrate_env(
        &first,
        &[
            ("PGS_SSH_OPTS", opts.as_str()),
            ("PGSHIFT_TEST_PROMOTE_DELAY_MS", "1000"),
        ],
    );
    tc("rate 1gbit burst 512kb latency 100ms");
    assert_eq!(code, 126, "{err}\n{}", sshd.log());
    let s = summary(&recs);
    assert_eq!(s["failed_phase"], "switchover", "{s}");
    assert_eq!(s["state"], "unknown", "{s}");
    assert!(
        err.contains("pg_controldata"),
        "the commands to run are printed: {err}"
    );
    assert!(!hosts.running('A'), "the source stays down");
    assert!(
        hosts.pgdata('A').join("standby.signal").exists(),
        "and fenced"
    );
    let journal = std::fs::read_to_string(
        std::fs::read_dir(hosts.dir.join("state"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .expect("the journal"),
    )
    .unwrap();
    let last_switch = journal
        .lines()
        .rfind(|l| l.contains(r#""by":"pg-switch""#))
        .unwrap();
    assert!(last_switch.contains(r#""step":"unknown""#), "{last_switch}");
    assert!(last_switch.contains("reason"), "{last_switch}");

    // The path is back: the same command finds the target promoted and finishes the job.
    let (code, recs, err) = hosts.migrate_env(&args, &[("PGS_SSH_OPTS", opts.as_str())]);
    assert_eq!(code, 0, "{err}\n{}", summary(&recs));
    assert_eq!(summary(&recs)["verdict"], "equal");
    assert_eq!(hosts.in_recovery('B'), Some(false));
    assert_eq!(hosts.in_recovery('A'), Some(true));
    load.stop_and_verify();
}

/// The control host dies (SIGKILL of migrate.sh's whole process group) in the middle of the
/// base copy; a run with --fresh-copy is stopped by SIGTERM in the middle of its new copy; the
/// control host dies again in the middle of the resumption, and a SIGTERM stops the next: what it started runs on (the
/// pg_basebackup, then the pgdata-sync pipeline, each in a process group of its own). The
/// next run stops the first (its connections to the source end) and outruns the second (its
/// sums take the copy over: the old apply stops before its next write); then the copy
/// resumes, the switch happens and the data is verified equal, with no acknowledged write
/// lost under load.
#[test]
fn exclusive_control_host_dies_during_the_copy_and_during_its_resumption() {
    let hosts = Hosts::create(&[]);
    let load = Load::start(&hosts);
    let b = hosts.pgdata('B');
    let kill_when_6mb = once_copied_6mb(&b, "kill -KILL 0");
    let (code, out, err) = hosts.migrate_raw(
        &[
            "--max-rate",
            "8M",
            "--compress",
            "none",
            "--hook",
            &kill_when_6mb,
        ],
        &[],
    );
    assert_eq!(code, -1, "killed\n{out}\n{err}");
    assert!(b.join("PG_VERSION").exists(), "{err}");
    assert_eq!(hosts.primaries(), 1);

    // --fresh-copy while that copy's pg_basebackup still runs: it is stopped, the partial copy
    // removed, a new one begun; SIGTERM inside it stops the run (exit 75, the stream ended)
    // and keeps what it copied.
    let term_when_6mb = once_copied_6mb(&b, "kill -TERM $PGSHIFT_MIGRATE_PID");
    let fresh = [
        "--fresh-copy",
        "--max-rate",
        "8M",
        "--compress",
        "none",
        "--hook",
        &term_when_6mb,
    ];
    let (code, out, err) = hosts.migrate_raw(&fresh, &[]);
    assert_eq!(code, 75, "stopped by SIGTERM\n{out}\n{err}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.contains(r#""stopped_by":"SIGTERM""#), "{last}");
    assert!(last.contains(r#""failed_phase":"base_copy""#), "{last}");
    assert!(
        err.contains("removing the target's data directory"),
        "{err}"
    );
    assert!(b.join("PG_VERSION").exists(), "{err}");
    assert_eq!(hosts.primaries(), 1);

    // The resumption is killed as soon as its pipeline runs.
    let kill_in_pipeline = &once_resuming("kill -KILL 0");
    let (code, out, err) = hosts.migrate_raw(
        &[
            "--max-rate",
            "8M",
            "--compress",
            "none",
            "--hook",
            kill_in_pipeline,
        ],
        &[],
    );
    assert_eq!(code, -1, "killed\n{out}\n{err}");
    // Killed inside the resumption (its pipeline may have run on to its end): the copy is
    // never a cluster without its backup label.
    assert!(err.contains("phase base_copy"), "{err}");
    assert!(
        !b.join("global/pg_control").exists() || b.join("backup_label").exists(),
        "a control file without the backup label"
    );
    assert_eq!(hosts.primaries(), 1);
    assert_eq!(hosts.in_recovery('B'), None, "B must not be running");

    // SIGTERM inside the resumption: it stops at once (exit 75, the stream ended), the copy
    // stays partial and unsealed.
    let term_in_pipeline = &once_resuming("kill -TERM $PGSHIFT_MIGRATE_PID");
    let (code, out, err) = hosts.migrate_raw(
        &[
            "--max-rate",
            "8M",
            "--compress",
            "none",
            "--hook",
            term_in_pipeline,
        ],
        &[],
    );
    assert_eq!(code, 75, "stopped by SIGTERM\n{out}\n{err}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.contains(r#""stopped_by":"SIGTERM""#), "{last}");
    assert!(last.contains(r#""failed_phase":"base_copy""#), "{last}");
    assert!(b.join("PG_VERSION").exists(), "{err}");
    assert!(
        !b.join("global/pg_control").exists() || b.join("backup_label").exists(),
        "a control file without the backup label"
    );
    assert_eq!(hosts.primaries(), 1);

    let (code, recs, err) = hosts.migrate(&[]);
    let s = summary(&recs);
    assert_eq!(code, 0, "the third run: {s}\n{err}");
    assert_eq!(s["verdict"], "equal", "{s}");
    assert!(
        recs.iter().any(|r| r["type"] == "copy_resumed"),
        "the third run resumed the copy: {err}"
    );
    assert_eq!(hosts.in_recovery('B'), Some(false));
    assert_eq!(hosts.in_recovery('A'), Some(true));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let recs = load.stop_and_verify();
    assert_eq!(summary(&recs)["split_brain"], 0);
}
