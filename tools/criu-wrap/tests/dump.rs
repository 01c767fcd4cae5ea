//! `criu-wrap dump` against the fake CRIU: the pre-copy loop, the command lines, failures.

use std::time::Duration;

use crate::common::*;

fn dump_cmd(fake: &Fake, victim: &Victim, images: &std::path::Path) -> assert_cmd::Command {
    let mut c = fake.cmd();
    c.args(["dump", "--pid", &victim.pid().to_string(), "--images"])
        .arg(images);
    c
}

fn pages(out: &Run) -> Vec<u64> {
    out.of("round")
        .iter()
        .map(|r| r["pages"].as_u64().unwrap())
        .collect()
}

#[test]
fn pre_copy_stops_once_a_round_is_small() {
    let fake = Fake::new(&[("PAGES", "5000 1000 600 300 200 60"), ("FINAL_PAGES", "12")]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(&mut dump_cmd(&fake, &victim, &img), 0);
    assert_eq!(pages(&out), [5000, 1000, 600, 300, 200, 60, 12]);
    let rounds = out.of("round");
    assert!(rounds[..5].iter().all(|r| r["next"] == "continue"));
    assert_eq!(rounds[5]["next"], "stop");
    assert!(
        rounds[5]["reason"].as_str().unwrap().contains("60 pages"),
        "{}",
        rounds[5]
    );
    assert_eq!(rounds[6]["kind"], "dump");
    assert_eq!(rounds[0]["bytes"], 5000 * 4096);

    // The command lines: each round points at the previous one, all track memory, all log.
    let pre = fake.calls_of("pre-dump");
    assert_eq!(pre.len(), 6);
    let pid = victim.pid();
    assert_eq!(
        pre[0],
        format!(
            "pre-dump -t {pid} -D {}/pre-1 -o pre-dump.log -v4 --track-mem",
            img.display()
        )
    );
    for (k, call) in pre.iter().enumerate().skip(1) {
        assert!(
            call.contains(&format!("--prev-images-dir ../pre-{k}")),
            "{call}"
        );
        assert!(
            call.contains(&format!("-D {}/pre-{}", img.display(), k + 1)),
            "{call}"
        );
    }
    let dump = fake.calls_of("dump");
    assert_eq!(
        dump,
        [format!(
            "dump -t {pid} -D {} -o dump.log -v4 --track-mem --prev-images-dir pre-6",
            img.display()
        )]
    );

    let d = out.one("dump");
    assert_eq!(d["mode"], "pre_copy");
    assert_eq!(d["rounds"], 7);
    assert_eq!(d["pages"], 5000 + 1000 + 600 + 300 + 200 + 60 + 12);
    assert_eq!(d["final_pages"], 12);
    assert_eq!(d["process"], "killed");
    assert!(!victim.running(), "CRIU's dump kills the process");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("criu-wrap.json")).unwrap()).unwrap();
    assert_eq!(m["mode"], "pre_copy");
    assert_eq!(m["rounds"].as_array().unwrap().len(), 6);
    assert_eq!(m["pid"], pid);
}

#[test]
fn pre_copy_stops_when_the_delta_grows() {
    let fake = Fake::new(&[("PAGES", "5000 1000 1200 100")]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(&mut dump_cmd(&fake, &victim, &img), 0);
    let rounds = out.of("round");
    assert_eq!(rounds.len(), 4, "3 pre-dump rounds and the dump");
    assert!(
        rounds[2]["reason"]
            .as_str()
            .unwrap()
            .contains("grew by 20%"),
        "{}",
        rounds[2]
    );
}

#[test]
fn pre_copy_stops_after_eight_rounds() {
    let fake = Fake::new(&[("PAGES", "9000 8000 7000 6000 5000 4000 3000 2000 1000 500")]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(&mut dump_cmd(&fake, &victim, &img), 0);
    assert_eq!(fake.calls_of("pre-dump").len(), 8);
    assert!(out.of("round")[7]["reason"]
        .as_str()
        .unwrap()
        .contains("8 rounds"));
}

#[test]
fn fixed_rounds_and_single_dump() {
    let fake = Fake::new(&[("PAGES", "9000 10 9000")]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(dump_cmd(&fake, &victim, &img).args(["--pre-dump", "3"]), 0);
    assert_eq!(
        pages(&out).len(),
        4,
        "exactly 3 rounds, whatever their sizes"
    );

    let fake = Fake::new(&[]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(dump_cmd(&fake, &victim, &img).args(["--pre-dump", "0"]), 0);
    assert!(fake.calls_of("pre-dump").is_empty());
    assert!(!fake.calls_of("dump")[0].contains("--track-mem"));
    assert_eq!(out.one("dump")["mode"], "stop_and_copy");
}

#[test]
fn without_dirty_tracking_auto_is_one_dump() {
    let fake = Fake::new(&[("FEATURES", "")]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(&mut dump_cmd(&fake, &victim, &img), 0);
    assert!(fake.calls_of("pre-dump").is_empty());
    let d = fake.calls_of("dump");
    assert_eq!(d.len(), 1);
    assert!(
        !d[0].contains("--track-mem") && !d[0].contains("--prev-images-dir"),
        "{d:?}"
    );
    assert_eq!(out.one("dump")["mode"], "stop_and_copy");
    assert!(
        out.stderr.contains("does not track dirty memory"),
        "{}",
        out.stderr
    );
}

#[test]
fn rounds_asked_for_without_dirty_tracking_fail_before_freezing() {
    let fake = Fake::new(&[("FEATURES", "")]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(dump_cmd(&fake, &victim, &img).args(["--pre-dump", "2"]), 69);
    assert!(out.stderr.contains("--pre-dump 0"), "{}", out.stderr);
    assert!(fake.calls_of("dump").is_empty() && fake.calls_of("pre-dump").is_empty());
    assert!(victim.running());
}

#[test]
fn a_failed_dump_is_diagnosed_and_the_process_continued() {
    let fake = Fake::new(&[
        ("FAIL", "dump"),
        ("FAIL_STOP", "1"),
        (
            "FAIL_LOG",
            "(00.527083) Error (criu/sk-inet.c:189): inet: Connected TCP socket, consider using --tcp-established option.\n(00.534185) Error (criu/cr-dump.c:2053): Dumping FAILED.",
        ),
    ]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(&mut dump_cmd(&fake, &victim, &img), 65);
    let e = out.one("error");
    assert_eq!(e["cause"], "tcp_established_needed");
    assert!(e["fix"].as_str().unwrap().contains("--tcp-established"));
    assert_eq!(e["log"].as_array().unwrap().len(), 2);
    assert_eq!(e["log_file"], img.join("dump.log").display().to_string());
    // The fake left the process stopped, as a crashed CRIU would; criu-wrap continued it.
    let r = out.one("resumed");
    assert_eq!(r["how"], "sigcont");
    assert_eq!(r["alive"], true);
    assert_eq!(r["continued"][0], victim.pid());
    assert!(victim.running(), "state {:?}", victim.state());
    let err = out.stderr;
    assert!(
        err.contains("criu dump failed: the process has established TCP connections"),
        "{err}"
    );
}

#[test]
fn a_failed_pre_dump_round_leaves_the_process_running() {
    let fake = Fake::new(&[
        ("FAIL", "pre-dump:2"),
        (
            "FAIL_LOG",
            "(00.1) Error (criu/sk-unix.c:864): unix: External socket is used. Consider using --ext-unix-sk option.",
        ),
    ]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(&mut dump_cmd(&fake, &victim, &img), 65);
    assert_eq!(out.one("error")["cause"], "external_unix_socket");
    assert_eq!(out.one("resumed")["how"], "running");
    assert!(fake.calls_of("dump").is_empty());
    assert!(victim.running());
}

#[test]
fn leave_running_keeps_the_process() {
    let fake = Fake::new(&[]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    let out = run(dump_cmd(&fake, &victim, &img).arg("--leave-running"), 0);
    assert!(fake.calls_of("dump")[0].contains("--leave-running"));
    assert_eq!(out.one("dump")["process"], "running");
    assert!(victim.running());
}

#[test]
fn tcp_established_locks_with_nftables_without_iptables() {
    let fake = Fake::new(&[]);
    let victim = Victim::start();
    let empty = tempfile::tempdir().unwrap();
    let img = fake.dir.path().join("img");
    run(
        dump_cmd(&fake, &victim, &img)
            .env("PATH", empty.path())
            .args(["--tcp-established", "--pre-dump", "0"]),
        0,
    );
    let d = &fake.calls_of("dump")[0];
    assert!(
        d.contains("--tcp-established --network-lock nftables")
            || (d.contains("--network-lock nftables") && d.contains("--tcp-established")),
        "{d}"
    );

    // With iptables-restore on PATH, CRIU's own default stays.
    let fake = Fake::new(&[]);
    let victim = Victim::start();
    let bin = tempfile::tempdir().unwrap();
    let ipt = bin.path().join("iptables-restore");
    std::fs::write(&ipt, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ipt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let img = fake.dir.path().join("img");
    run(
        dump_cmd(&fake, &victim, &img)
            .env("PATH", bin.path())
            .args(["--tcp-established", "--pre-dump", "0"]),
        0,
    );
    assert!(!fake.calls_of("dump")[0].contains("--network-lock"));
}

#[test]
fn refuses_a_used_images_dir_and_a_missing_process() {
    let fake = Fake::new(&[]);
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::write(img.join("pages-1.img"), b"old").unwrap();
    let out = run(&mut dump_cmd(&fake, &victim, &img), 2);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    assert!(victim.running());

    let mut gone = Victim::start();
    let pid = gone.pid();
    gone.0.kill().unwrap();
    gone.0.wait().unwrap();
    let out = run(
        fake.cmd()
            .args(["dump", "--pid", &pid.to_string(), "--images"])
            .arg(fake.dir.path().join("img2")),
        65,
    );
    assert!(out
        .stderr
        .contains(&format!("no running process with PID {pid}")));
    assert!(fake.calls_of("dump").is_empty());
}

#[test]
fn bad_pre_dump_value_is_a_usage_error() {
    let out = finished(
        cmd()
            .args([
                "dump",
                "--pid",
                "1",
                "--images",
                "/tmp/x",
                "--pre-dump",
                "lots",
            ])
            .timeout(Duration::from_secs(10))
            .output()
            .unwrap(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("not auto or a number"),
        "{}",
        out.stderr
    );
}
