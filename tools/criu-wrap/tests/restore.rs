//! `criu-wrap restore` against the fake CRIU.

use std::time::Duration;

use crate::common::*;

/// Dump a fresh process with the fake and return its images directory.
fn dumped(fake: &Fake, extra: &[&str]) -> std::path::PathBuf {
    let victim = Victim::start();
    let img = fake.dir.path().join("img");
    run(
        fake.cmd()
            .args(["dump", "--pid", &victim.pid().to_string(), "--images"])
            .arg(&img)
            .args(extra),
        0,
    );
    img
}

#[test]
fn detached_restore_repeats_the_dump_flags() {
    let fake = Fake::new(&[]);
    let img = dumped(
        &fake,
        &["--tcp-established", "--shell-job", "--pre-dump", "0"],
    );
    let out = run(
        fake.cmd()
            .args(["restore", "--detach", "--images"])
            .arg(&img),
        0,
    );
    let r = out.one("restore");
    let pid = r["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid), "the restored process runs");
    assert_eq!(r["detached"], true);
    assert_eq!(fake.restored(), [(img.display().to_string(), pid)]);
    let call = &fake.calls_of("restore")[0];
    assert_eq!(
        call,
        &format!(
            "restore -D {d} -o restore.log -v4 --pidfile {d}/restore.pid -d --tcp-established --shell-job",
            d = img.display()
        )
    );
}

#[test]
fn attached_restore_reports_the_exit() {
    let fake = Fake::new(&[("RESTORE_SLEEP", "0.3")]);
    let img = dumped(&fake, &["--pre-dump", "0"]);
    let out = run(fake.cmd().args(["restore", "--images"]).arg(&img), 0);
    assert_eq!(out.one("restore")["detached"], false);
    let e = out.one("exit");
    assert_eq!(e["code"], 0);
    assert_eq!(e["pid"], out.one("restore")["pid"]);
    assert!(!fake.calls_of("restore")[0].contains(" -d"));
}

#[test]
fn pid_in_use_is_retryable_with_the_pid_named() {
    let fake = Fake::new(&[]);
    let img = dumped(&fake, &["--pre-dump", "0"]);
    fake.configure(&[
        ("FAIL", "restore:img"),
        (
            "FAIL_LOG",
            "(00.031732) Error (criu/cr-restore.c:1469): Can't fork for 167: File exists\n(00.032527) Error (criu/cr-restore.c:2537): Restoring FAILED.",
        ),
    ]);
    let out = run(
        fake.cmd()
            .args(["restore", "--detach", "--images"])
            .arg(&img),
        75,
    );
    let e = out.one("error");
    assert_eq!(e["cause"], "pid_in_use");
    assert!(e["problem"].as_str().unwrap().contains("PID 167"));
    assert_eq!(e["kind"], "retry");
    assert!(out.of("restore").is_empty());
    let err = out.stderr;
    assert!(
        err.contains("criu restore failed: PID 167 is already in use"),
        "{err}"
    );
    assert!(
        err.contains("  | Error (criu/cr-restore.c:2537): Restoring FAILED."),
        "{err}"
    );
}

#[test]
fn a_directory_without_images_is_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let out = finished(
        cmd()
            .args(["--criu", "/nonexistent", "restore", "--images"])
            .arg(d.path())
            .timeout(Duration::from_secs(10))
            .output()
            .unwrap(),
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(out.stderr.contains("no inventory.img"), "{}", out.stderr);
}

/// A missing images directory is an I/O error (74), the code every tool gives a path that is
/// not there.
#[test]
fn a_missing_images_directory_is_an_io_error() {
    let d = tempfile::tempdir().unwrap();
    let out = finished(
        cmd()
            .args(["--criu", "/nonexistent", "restore", "--images"])
            .arg(d.path().join("gone"))
            .timeout(Duration::from_secs(10))
            .output()
            .unwrap(),
    );
    assert_eq!(out.status.code(), Some(74), "{}", out.stderr);
    assert!(out.stderr.contains("is not there"), "{}", out.stderr);
}
