//! Faults: permission denied, a full disk, and a push killed half way. Each must fail with
//! a code PostgreSQL retries, leave nothing half-written in view, and let the next try work.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn permission_denied_is_an_io_error_that_a_retry_can_fix() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let name = seg_name(1, 2);
    let src = segment(d.path(), &name, 2);
    // Root ignores permissions: run as the server's user, as archive_command does.
    let as_server = |args: &[&str]| {
        let mut c = testkit::tool(bin());
        if let Some((uid, gid)) = testkit::run_as() {
            c.uid(uid).gid(gid);
        }
        finished(c.current_dir(d.path()).args(args).output().unwrap())
    };
    fs::set_permissions(&arch, fs::Permissions::from_mode(0o555)).unwrap();
    let out = as_server(&[
        "push",
        src.to_str().unwrap(),
        "--to",
        arch.to_str().unwrap(),
    ]);
    check(74, &out, &"read-only archive");
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    assert_eq!(tree(&arch), ["wal-ship.json"], "nothing but the marker");

    // Fixed: the retry stores it.
    fs::set_permissions(&arch, fs::Permissions::from_mode(0o777)).unwrap();
    check(
        0,
        &as_server(&[
            "push",
            src.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ]),
        &"fixed",
    );

    // An unreadable object on fetch: outside standby mode, stop; in standby mode, retry.
    let obj = object_path(&arch, &name);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o000)).unwrap();
    let out = as_server(&["fetch", &name, "x", "--from", arch.to_str().unwrap()]);
    check(126, &out, &"unreadable object");
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    let out = as_server(&[
        "fetch",
        &name,
        "x",
        "--from",
        arch.to_str().unwrap(),
        "--on-error",
        "retry",
    ]);
    check(74, &out, &"unreadable object, retry");
    // An unreadable source file.
    fs::set_permissions(&src, fs::Permissions::from_mode(0o000)).unwrap();
    let out = as_server(&[
        "push",
        src.to_str().unwrap(),
        "--to",
        arch.to_str().unwrap(),
    ]);
    check(74, &out, &"unreadable source");
}

#[test]
fn a_full_disk_fails_with_74_and_leaves_no_temp_file() {
    let d = scratch();
    let arch = d.path().join("small");
    testkit::new_wal_archive(&arch);
    let name = seg_name(1, 3);
    let src = segment(d.path(), &name, 3);
    // A 512 KiB tmpfs in a private mount namespace: gone when the shell exits, so the check
    // of what is left happens inside it.
    let script = r#"
        mount -t tmpfs -o size=512k tmpfs "$1" 2>/dev/null || { echo "MOUNT FAILED" >&2; exit 99; }
        "$2" init --quiet --archive "$1" || exit 98
        "$2" push "$3" --to "$1" --compress none
        rc=$?
        echo "LEFT:"; find "$1" -type f | sort
        exit $rc
    "#;
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", script, "sh"])
        .arg(&arch)
        .arg(bin())
        .arg(&src)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o)
            if o.status.code() != Some(99)
                && !String::from_utf8_lossy(&o.stderr).contains("unshare:") =>
        {
            // stdout is the shell's listing as well as wal-ship's records: text only.
            Run::text("wal-ship push into a 512 KiB tmpfs", o)
        }
        Ok(o) => testkit::skip!(
            "cannot mount a small tmpfs in a private mount namespace (needs CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => testkit::skip!("unshare is not available: {e}"),
    };
    check(74, &out, &"disk full");
    let err = &out.stderr;
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let text = &out.stdout;
    let left: Vec<&str> = text.lines().skip_while(|l| *l != "LEFT:").skip(1).collect();
    assert_eq!(left.len(), 1, "only the marker may remain: {left:?}");
    assert!(left[0].ends_with("/wal-ship.json"), "{left:?}");
}

#[test]
fn a_push_killed_while_writing_leaves_nothing_visible_and_the_rerun_succeeds() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    // Big and uncompressed, so the write takes long enough to catch it in the act.
    let mut caught = None;
    for (attempt, mib) in [64u32, 128, 256].into_iter().enumerate() {
        let size = mib << 20;
        let name = wal_ship::name::WalName::segment(1, 5 + attempt as u64, size).to_string();
        let src = segment_sized(d.path(), &name, 5, size);
        let sub = object_path(&arch, &name).parent().unwrap().to_path_buf();
        let mut child = Command::new(bin())
            .args([
                "push",
                src.to_str().unwrap(),
                "--to",
                a,
                "--compress",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = false;
        while Instant::now() < deadline {
            let temp = fs::read_dir(&sub).ok().is_some_and(|rd| {
                rd.flatten().any(|e| {
                    let f = e.file_name().to_string_lossy().into_owned();
                    f.starts_with('.') && f.ends_with(".tmp")
                })
            });
            if temp {
                // Freeze it mid-write and look around before the kill.
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
                seen = !object_path(&arch, &name).exists();
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if seen {
            // While the push is frozen mid-write: the object is not there for a reader.
            let out = run(&[
                "fetch",
                &name,
                d.path().join("x").to_str().unwrap(),
                "--from",
                a,
            ]);
            check(1, &out, &"fetch during the push");
            let out = expect(0, &["verify", "--archive", a]);
            assert_eq!(out.summary()["problems"], 0);
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let status = child.wait().unwrap();
        if seen {
            assert!(status.code().is_none(), "killed by a signal");
            caught = Some((name, src));
            break;
        }
        let _ = fs::remove_file(&src);
    }
    let Some((name, src)) = caught else {
        panic!("never caught a push mid-write (the machine writes 256 MiB faster than we poll?)");
    };
    // After the kill: a hidden temp file at most, never the object.
    assert!(!object_path(&arch, &name).exists());
    let temps: Vec<String> = tree(&arch)
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    assert_eq!(temps.len(), 1, "{:?}", tree(&arch));
    let dest = d.path().join("restored");
    check(
        1,
        &run(&["fetch", &name, dest.to_str().unwrap(), "--from", a]),
        &"after kill",
    );
    let out = expect(0, &["verify", "--archive", a]);
    assert_eq!(out.summary()["temp_files"], 1);

    // PostgreSQL retries: this time it completes.
    let out = expect(
        0,
        &[
            "push",
            src.to_str().unwrap(),
            "--to",
            a,
            "--compress",
            "none",
        ],
    );
    assert_eq!(out.of("segment")[0]["action"], "stored");
    expect(0, &["fetch", &name, dest.to_str().unwrap(), "--from", a]);
    assert!(
        fs::read(&dest).unwrap() == fs::read(&src).unwrap(),
        "restored bytes differ"
    );
}
