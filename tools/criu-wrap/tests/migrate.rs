//! `criu-wrap migrate` against the fake CRIU: to a directory on this host, and over ssh to
//! an sshd on a loopback port. The invariant under test: after a migration the process runs
//! in exactly one place, whatever failed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use crate::common::*;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn migrate_cmd(fake: &Fake, victim: &Victim, to: &str) -> assert_cmd::Command {
    let mut c = fake.cmd();
    c.args(["migrate", "--pid", &victim.pid().to_string(), "--to", to])
        .env("TMPDIR", fake.dir.path());
    c
}

#[test]
fn migrate_to_a_directory() {
    let fake = Fake::new(&[("PAGES", "400 90 70 40"), ("FINAL_PAGES", "9")]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    let staging = fake.dir.path().join("staging");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .arg("--images")
            .arg(&staging),
        0,
    );
    // Rounds 1..4 went while the process ran, each copied and verified; then the final part.
    let parts: Vec<&str> = out
        .of("transfer")
        .iter()
        .map(|t| t["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["pre-1", "pre-2", "pre-3", "pre-4", "final"]);
    assert!(out.of("transfer").iter().all(|t| t["verified"] == true));
    assert!(out.of("transfer")[0]["bytes"].as_u64().unwrap() >= 400 * 4096);
    for k in 1..=4 {
        assert!(target.join(format!("pre-{k}/pages-1.img")).is_file());
    }
    assert!(target.join("criu-wrap.json").is_file());
    assert!(
        !target.join("dump.log").exists(),
        "the final dump's log stays on the source"
    );
    // The restore ran on the target's directory, once; the source is dead.
    let restored = fake.restored();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].0, target.display().to_string());
    assert!(alive(restored[0].1));
    assert!(!victim.running());
    let r = out.one("restore");
    assert_eq!(r["side"], "target");
    assert_eq!(r["pid"], restored[0].1);
    let m = out.one("migrate");
    assert_eq!(m["outcome"], "migrated");
    assert_eq!(m["mode"], "pre_copy");
    assert_eq!(m["rounds"], 5);
    assert!(m["bytes_transferred"].as_u64().unwrap() >= (400 + 90 + 70 + 40 + 9) * 4096);
    // --images given: kept.
    assert!(staging.join("pre-1").is_dir());
}

#[test]
fn after_dump_runs_while_frozen_and_its_failure_resumes() {
    let fake = Fake::new(&[("PAGES", "30")]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    let marker = fake.dir.path().join("hook.txt");
    // The hook sees the process gone (frozen and dumped) and nothing restored yet.
    let hook = format!(
        "echo \"$CRIU_WRAP_PID $CRIU_WRAP_TO $(grep -c '^restore ' {log}) $(awk '{{print $3}}' /proc/$CRIU_WRAP_PID/stat 2>/dev/null || echo gone)\" > {m}; echo to-stderr",
        log = fake.log.display(),
        m = marker.display()
    );
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .arg("--after-dump")
            .arg(&hook),
        0,
    );
    assert_eq!(out.one("hook")["exit_code"], 0);
    let seen = std::fs::read_to_string(&marker).unwrap();
    // The victim is our child: killed by the dump, it is a zombie until we reap it.
    let state = seen.split_whitespace().last().unwrap();
    assert!(
        seen.starts_with(&format!("{} {} 0 ", victim.pid(), target.display()))
            && (state == "Z" || state == "gone"),
        "the hook runs after the dump (process gone) and before any restore: {seen}"
    );
    assert!(
        out.stderr.contains("to-stderr"),
        "hook output goes to stderr"
    );
    assert_eq!(out.one("migrate")["outcome"], "migrated");

    // A failing hook: restored on the source, never on the target.
    let fake = Fake::new(&[("PAGES", "30")]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap()).args(["--after-dump", "exit 3"]),
        69,
    );
    assert!(out.one("error")["message"]
        .as_str()
        .unwrap()
        .contains("--after-dump command failed"));
    assert_eq!(out.one("migrate")["outcome"], "resumed_on_source");
    let restored = fake.restored();
    assert_eq!(restored.len(), 1);
    assert!(!restored[0].0.contains("target"));
}

#[test]
fn a_signal_while_frozen_finishes_the_move_and_one_before_leaves_it_running() {
    // SIGTERM after the final dump (sent by the --after-dump command, criu-wrap's child): the
    // process runs nowhere until a restore, so the move is finished first.
    let fake = Fake::new(&[("PAGES", "30")]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .args(["--after-dump", "kill -TERM $PPID; sleep 0.2"]),
        0,
    );
    assert_eq!(out.one("migrate")["outcome"], "migrated", "{}", out.dump());
    assert_eq!(out.summary()["stopped_by"], "SIGTERM", "{}", out.dump());
    assert!(out.stderr.contains("finished first"), "{}", out.stderr);
    let restored = fake.restored();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].0, target.display().to_string());
    assert!(alive(restored[0].1));

    // SIGTERM during the pre-copy (sent by rsync's wrapper as the first round is copied):
    // stopped before the final dump, the process running where it was.
    let fake = Fake::new(&[("PAGES", "400 90 70 40")]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    let rsync = script(
        fake.dir.path(),
        "rsync",
        "kill -TERM $PPID; exec rsync \"$@\"",
    );
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap()).env("CRIU_WRAP_RSYNC", &rsync),
        75,
    );
    assert_eq!(
        out.one("migrate")["outcome"],
        "not_migrated",
        "{}",
        out.dump()
    );
    assert_eq!(out.summary()["stopped_by"], "SIGTERM", "{}", out.dump());
    assert!(fake.restored().is_empty(), "nothing restored anywhere");
    assert!(victim.running(), "the process runs where it was");
}

#[test]
fn target_restore_failure_resumes_on_the_source() {
    let fake = Fake::new(&[
        ("FAIL", "restore:target"),
        (
            "FAIL_LOG",
            "(00.031732) Error (criu/cr-restore.c:1469): Can't fork for 4242: File exists\n(00.032527) Error (criu/cr-restore.c:2537): Restoring FAILED.",
        ),
    ]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    let staging = fake.dir.path().join("staging");
    let out = run(
        migrate_cmd(&fake, &victim, &format!("file://{}", target.display()))
            .arg("--images")
            .arg(&staging),
        75,
    );
    let e = out.one("error");
    assert_eq!(
        e["cause"], "pid_in_use",
        "the target's diagnosis is passed on: {e}"
    );
    // Restored from the same images on the source, once; nothing runs on the target.
    let restored = fake.restored();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].0, staging.display().to_string());
    assert!(alive(restored[0].1));
    let back = out.one("resumed");
    assert_eq!(back["how"], "restored");
    assert_eq!(back["alive"], true);
    assert_eq!(out.one("restore")["side"], "source");
    assert_eq!(out.one("migrate")["outcome"], "resumed_on_source");
    let restores = fake.calls_of("restore");
    assert_eq!(restores.len(), 2, "target, then source: {restores:?}");
    assert!(restores[0].contains(&target.display().to_string()));
}

#[test]
fn checksum_mismatch_of_the_final_part_resumes_on_the_source() {
    let fake = Fake::new(&[("PAGES", "300 40")]);
    let victim = Victim::start();
    // An rsync that copies, then corrupts one image of the final part at the destination.
    let rsync = script(
        fake.dir.path(),
        "rsync",
        r#"rsync "$@" || exit $?
src=${*: -2:1}; dst=${*: -1}
[[ $src == */pre-*/ ]] && exit 0
f=$(find "$dst" -maxdepth 1 -name 'core-*.img' -type f | head -1)
printf X >> "$f""#,
    );
    let target = fake.dir.path().join("target");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .arg("--rsync")
            .arg(&rsync),
        75,
    );
    let e = out.one("error");
    assert!(
        e["message"].as_str().unwrap().contains("checksum mismatch"),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("core-"), "{e}");
    // Never restored on the target; restored here instead.
    let restored = fake.restored();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert!(!restored[0].0.contains("target"));
    assert!(alive(restored[0].1));
    assert_eq!(out.one("migrate")["outcome"], "resumed_on_source");
    let left: Vec<_> = std::fs::read_dir(fake.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("criu-wrap-migrate-")
        })
        .collect();
    assert!(
        left.is_empty(),
        "the default staging directory is removed: {left:?}"
    );
    // The pre-copy parts did verify.
    let t = out.of("transfer");
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|t| t["verified"] == true));
}

#[test]
fn checksum_mismatch_while_running_leaves_it_running() {
    let fake = Fake::new(&[]);
    let victim = Victim::start();
    let rsync = script(
        fake.dir.path(),
        "rsync",
        r#"rsync "$@" || exit $?
f=$(find "${*: -1}" -maxdepth 1 -name '*.img' -type f | head -1)
printf X >> "$f""#,
    );
    let target = fake.dir.path().join("target");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .arg("--rsync")
            .arg(&rsync),
        75,
    );
    assert_eq!(out.one("resumed")["how"], "running");
    assert_eq!(out.one("migrate")["outcome"], "not_migrated");
    assert!(
        fake.calls_of("dump").is_empty(),
        "no final dump after a bad copy"
    );
    assert!(fake.restored().is_empty());
    assert!(victim.running());
}

#[test]
fn failed_final_dump_leaves_it_running() {
    let fake = Fake::new(&[("FAIL", "dump"), ("FAIL_STOP", "1")]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    let out = run(
        &mut migrate_cmd(&fake, &victim, target.to_str().unwrap()),
        69,
    );
    assert_eq!(out.one("resumed")["how"], "sigcont");
    assert_eq!(out.one("migrate")["outcome"], "not_migrated");
    assert!(fake.restored().is_empty());
    assert!(victim.running(), "state {:?}", victim.state());
}

#[test]
fn lost_answer_but_running_on_the_target_is_not_restored_twice() {
    let fake = Fake::new(&[("PAGES", "30")]);
    let victim = Victim::start();
    // The target restores, then the connection "drops": no output, exit 255.
    let wrap = script(
        fake.dir.path(),
        "lost-after",
        &format!("{} \"$@\" >/dev/null 2>&1; exit 255", bin().display()),
    );
    let target = fake.dir.path().join("target");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .arg("--remote-criu-wrap")
            .arg(&wrap),
        0,
    );
    assert_eq!(out.one("migrate")["outcome"], "migrated");
    let restored = fake.restored();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].0, target.display().to_string());
    assert_eq!(out.one("restore")["pid"], restored[0].1);
    assert!(
        out.stderr.contains("lost the target's answer"),
        "{}",
        out.stderr
    );
}

#[test]
fn lost_answer_before_the_restore_started_resumes_on_the_source() {
    let fake = Fake::new(&[("PAGES", "30")]);
    let victim = Victim::start();
    let wrap = script(fake.dir.path(), "lost-before", "exit 255");
    let target = fake.dir.path().join("target");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .arg("--remote-criu-wrap")
            .arg(&wrap),
        69,
    );
    assert_eq!(out.one("migrate")["outcome"], "resumed_on_source");
    let restored = fake.restored();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert!(!restored[0].0.contains("target"));
}

#[test]
fn undecidable_target_state_stops_without_restoring() {
    let fake = Fake::new(&[("PAGES", "30")]);
    let victim = Victim::start();
    // A restore that started (its log exists) and never says how it ended.
    let wrap = script(
        fake.dir.path(),
        "lost-busy",
        r#"while (($#)); do [[ $1 == --images ]] && d=$2; shift; done
echo '(00.001) Restoring...' > "$d/restore.log"; exit 255"#,
    );
    let target = fake.dir.path().join("target");
    let staging = fake.dir.path().join("staging");
    let out = run(
        migrate_cmd(&fake, &victim, target.to_str().unwrap())
            .arg("--images")
            .arg(&staging)
            .arg("--remote-criu-wrap")
            .arg(&wrap),
        126,
    );
    assert_eq!(out.one("migrate")["outcome"], "unknown");
    assert!(fake.restored().is_empty(), "nothing restored anywhere");
    let err = out.stderr;
    assert!(err.contains("NOT restoring it here"), "{err}");
    assert!(
        err.contains(&format!("criu-wrap restore --images {}", staging.display())),
        "{err}"
    );
}

#[test]
fn refuses_a_non_empty_target_before_freezing() {
    let fake = Fake::new(&[]);
    let victim = Victim::start();
    let target = fake.dir.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("old"), b"x").unwrap();
    let out = run(
        &mut migrate_cmd(&fake, &victim, target.to_str().unwrap()),
        2,
    );
    assert!(out.stderr.contains("not empty"));
    assert!(fake.calls_of("pre-dump").is_empty() && fake.calls_of("dump").is_empty());
    assert!(victim.running());
}

/// `migrate_cmd` reaching `sshd` with its key and known_hosts (host key checking on): the
/// config file and key through PGS_SSH_OPTS, known_hosts through --ssh-option, as a user
/// may mix them.
fn over_ssh(sshd: &testkit::Sshd, fake: &Fake, victim: &Victim, to: &str) -> assert_cmd::Command {
    let mut c = migrate_cmd(fake, victim, to);
    c.env(
        "PGS_SSH_OPTS",
        format!("-F /dev/null -i '{}'", sshd.client_key().display()),
    )
    .arg("--ssh-option")
    .arg(format!(
        "UserKnownHostsFile={}",
        sshd.known_hosts().display()
    ));
    c
}

#[test]
fn ssh_options_that_turn_the_policy_off_are_refused_before_freezing() {
    let fake = Fake::new(&[]);
    for (flag, env, named) in [
        (Some("StrictHostKeyChecking=no"), "", "--ssh-option"),
        (None, "-i /k -o 'BatchMode no'", "PGS_SSH_OPTS"),
        (Some("IdentityFile"), "", "not KEY=VALUE"),
    ] {
        let victim = Victim::start();
        let mut c = migrate_cmd(&fake, &victim, "ssh://nobody@127.0.0.1:1/tmp/x");
        c.env("PGS_SSH_OPTS", env);
        if let Some(f) = flag {
            c.arg("--ssh-option").arg(f);
        }
        let out = run(&mut c, 2);
        assert!(out.stderr.contains(named), "{}", out.stderr);
        assert_eq!(out.one("migrate")["outcome"], "not_migrated");
        assert!(fake.calls_of("pre-dump").is_empty() && fake.calls_of("dump").is_empty());
        assert!(victim.running());
    }
}

#[test]
fn exclusive_migrate_over_ssh() {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let sshd = match testkit::Sshd::start(&[&user]) {
        Ok(s) => s,
        Err(why) => testkit::skip!("cannot start an sshd for the test: {why}"),
    };
    // Can we log in at all (some sandboxes forbid it)?
    let probe = StdCommand::new("ssh")
        .args(sshd.ssh_options())
        .args(["-o", "BatchMode=yes", "-p", &sshd.port().to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .arg("true")
        .output()
        .unwrap();
    if !probe.status.success() {
        testkit::skip!(
            "ssh to the test sshd fails here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    }
    let fake = Fake::new(&[("PAGES", "300 30")]);
    let victim = Victim::start();
    let target = fake.dir.path().join("remote dir");
    let to = format!("ssh://{user}@127.0.0.1:{}{}", sshd.port(), target.display());
    let out = run(
        over_ssh(&sshd, &fake, &victim, &to)
            .arg("--remote-criu-wrap")
            .arg(bin())
            .arg("--remote-criu")
            .arg(&fake.criu),
        0,
    );
    assert_eq!(out.one("migrate")["outcome"], "migrated");
    let parts: Vec<&str> = out
        .of("transfer")
        .iter()
        .map(|t| t["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["pre-1", "pre-2", "final"]);
    assert!(target.join("pre-1/pages-1.img").is_file());
    let restored = fake.restored();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].0, target.display().to_string());
    assert!(alive(restored[0].1));
    assert!(!victim.running());

    // The same target again: refused before anything freezes.
    let victim = Victim::start();
    let out = run(
        over_ssh(&sshd, &fake, &victim, &to)
            .arg("--remote-criu-wrap")
            .arg(bin())
            .arg("--remote-criu")
            .arg(&fake.criu),
        2,
    );
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    assert!(victim.running());

    // The target goes away after the freeze (sshd killed by the hook, so the final copy
    // cannot connect): the process comes back on the source.
    let fake = Fake::new(&[("PAGES", "30")]);
    let victim = Victim::start();
    let to = format!(
        "ssh://{user}@127.0.0.1:{}{}",
        sshd.port(),
        fake.dir.path().join("gone").display()
    );
    let out = run(
        over_ssh(&sshd, &fake, &victim, &to)
            .arg("--remote-criu-wrap")
            .arg(bin())
            .arg("--remote-criu")
            .arg(&fake.criu)
            // sshd -D writes its PidFile into the fixture's directory.
            .arg("--after-dump")
            .arg(format!(
                "kill $(cat {})",
                sshd.dir().join("sshd.pid").display()
            )),
        69,
    );
    assert!(
        !out.stderr.contains("--after-dump command failed"),
        "the hook killed sshd: {}",
        out.stderr
    );
    assert_eq!(out.one("migrate")["outcome"], "resumed_on_source");
    let restored = fake.restored();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert!(
        !restored[0].0.contains("gone"),
        "restored on the source: {restored:?}"
    );
    assert!(alive(restored[0].1));

    // An unreachable host is Unavailable, and nothing is frozen.
    let victim = Victim::start();
    let out = run(
        &mut over_ssh(
            &sshd,
            &fake,
            &victim,
            &format!("ssh://{user}@127.0.0.1:1/tmp/x"),
        ),
        69,
    );
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    assert!(victim.running());
}
