//! The ssh transport against a real sshd on a loopback port ([`testkit::Sshd`], started as
//! root) with a test-owned host key, client key and known_hosts; wal-ship runs as the
//! postgres user, as archive_command does. Named exclusive_ because it creates /run/sshd when
//! missing.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::{Cluster, Sshd};

use crate::util::*;

/// Options that make wal-ship trust this sshd and use the test's key, and nothing from the
/// postgres user's own ~/.ssh.
fn options(sshd: &Sshd) -> Vec<String> {
    vec![
        "--ssh-config".into(),
        "/dev/null".into(),
        "--ssh-option".into(),
        format!("IdentityFile={}", sshd.client_key().display()),
        "--ssh-option".into(),
        format!("UserKnownHostsFile={}", sshd.known_hosts().display()),
    ]
}

fn archive_url(sshd: &Sshd, path: &Path) -> String {
    format!("ssh://postgres@127.0.0.1:{}{}", sshd.port(), path.display())
}

/// wal-ship as the postgres user (as archive_command runs), with the sshd's options.
fn as_postgres(sshd: &Sshd, cwd: &Path, args: &[&str]) -> Run {
    as_postgres_with(cwd, args, &options(sshd), None)
}

/// wal-ship as the postgres user with these flags after `args`, and PGS_SSH_OPTS if given.
fn as_postgres_with(cwd: &Path, args: &[&str], flags: &[String], env: Option<&str>) -> Run {
    let (uid, gid) = testkit::run_as().unwrap();
    let mut c = testkit::tool(bin());
    c.env_remove("WAL_SHIP_SSH_CONFIG")
        .env_remove("PGS_SSH_OPTS");
    if let Some(opts) = env {
        c.env("PGS_SSH_OPTS", opts);
    }
    let out = c
        .uid(uid)
        .gid(gid)
        .env("HOME", cwd)
        .current_dir(cwd)
        .args(args)
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::new(format!("wal-ship {}", args.join(" ")), out)
}

fn expect_pg(code: i32, sshd: &Sshd, cwd: &Path, args: &[&str]) -> Run {
    let out = as_postgres(sshd, cwd, args);
    check(code, &out, &args);
    out
}

#[test]
fn exclusive_ssh_transport_pushes_fetches_verifies_and_cleans() {
    let d = scratch();
    let sshd = match Sshd::start(&["postgres"]) {
        Ok(s) => s,
        Err(why) => testkit::skip!("{why}"),
    };
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    chown_postgres(&arch);
    let url = archive_url(&sshd, &arch);
    let u = url.as_str();
    let work = d.path().join("work");
    fs::create_dir(&work).unwrap();
    chown_postgres(&work);

    // Push three segments and a history file in one call; again: duplicates.
    let files: Vec<String> = (1..=3)
        .map(|i| {
            segment(&work, &seg_name(1, i), i as u8)
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    fs::write(
        work.join("00000002.history"),
        "1\t0/300000\tno recovery target specified\n",
    )
    .unwrap();
    let mut args = vec!["push", "--to", u];
    args.extend(files.iter().map(String::as_str));
    args.push("00000002.history");
    let out = expect_pg(0, &sshd, &work, &args);
    assert_eq!(out.summary()["stored"], 4);
    assert_eq!(out.of("segment")[0]["archive"], u);
    let out = expect_pg(0, &sshd, &work, &args);
    assert_eq!(out.summary()["duplicates"], 4);
    assert!(
        tree(&arch).iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        tree(&arch)
    );

    // A different file under an archived name: refused over ssh too.
    let other = d.path().join("other");
    fs::create_dir(&other).unwrap();
    let conflicting = segment(&other, &seg_name(1, 2), 99);
    let out = expect_pg(
        65,
        &sshd,
        &work,
        &["push", conflicting.to_str().unwrap(), "--to", u],
    );
    assert!(
        out.stderr.contains("already holds a different"),
        "{}",
        out.stderr
    );

    // Fetch: restored, missing (quiet), prefetch in one round trip.
    let out = expect_pg(
        0,
        &sshd,
        &work,
        &[
            "fetch",
            &seg_name(1, 1),
            "p1",
            "--from",
            u,
            "--prefetch",
            "5",
            "--spool",
            "spool",
        ],
    );
    assert_eq!(
        fs::read(work.join("p1")).unwrap(),
        fs::read(&files[0]).unwrap()
    );
    assert_eq!(out.of("segment")[0]["prefetched"], 2);
    let out = expect_pg(
        0,
        &sshd,
        &work,
        &[
            "fetch",
            &seg_name(1, 2),
            "p2",
            "--from",
            u,
            "--prefetch",
            "5",
            "--spool",
            "spool",
        ],
    );
    assert_eq!(out.of("segment")[0]["source"], "spool");
    let out = expect_pg(
        1,
        &sshd,
        &work,
        &["fetch", &seg_name(1, 9), "p9", "--from", u],
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    expect_pg(
        0,
        &sshd,
        &work,
        &["fetch", "00000002.history", "h", "--from", u],
    );
    // A directory of the archive this user may not enter (another user's, umask 027): an
    // error, never "not in the archive", where PostgreSQL would end recovery.
    let sub = object_path(&arch, &seg_name(1, 1))
        .parent()
        .unwrap()
        .to_owned();
    let chown = |owner: &str| {
        let ok = std::process::Command::new("chown")
            .args([owner, sub.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    chown("root:root");
    let out = expect_pg(
        74,
        &sshd,
        &work,
        &[
            "fetch",
            &seg_name(1, 1),
            "p",
            "--from",
            u,
            "--on-error",
            "retry",
        ],
    );
    assert!(out.stderr.contains("permission"), "{}", out.stderr);
    chown_postgres(&sub);

    // verify over ssh finds a flipped bit; clean over ssh removes.
    expect_pg(0, &sshd, &work, &["verify", "--archive", u]);
    flip_bit(&object_path(&arch, &seg_name(1, 3)));
    let out = expect_pg(1, &sshd, &work, &["verify", "--archive", u]);
    assert_eq!(out.of("problem")[0]["name"], seg_name(1, 3).as_str());
    let out = expect_pg(
        126,
        &sshd,
        &work,
        &["fetch", &seg_name(1, 3), "p3", "--from", u],
    );
    assert!(out.stderr.contains("is corrupt"), "{}", out.stderr);
    let out = expect_pg(
        0,
        &sshd,
        &work,
        &["clean", "--archive", u, "--keep-from", &seg_name(1, 2)],
    );
    assert_eq!(out.summary()["removed"], 1);
    assert!(!object_path(&arch, &seg_name(1, 1)).exists());

    // A remote directory that is no archive yet: refused until init (over ssh) makes it one.
    let bare = d.path().join("bare");
    fs::create_dir(&bare).unwrap();
    chown_postgres(&bare);
    let bare_url = archive_url(&sshd, &bare);
    let out = expect_pg(69, &sshd, &work, &["push", &files[0], "--to", &bare_url]);
    assert!(out.stderr.contains("wal-ship init"), "{}", out.stderr);
    let out = expect_pg(0, &sshd, &work, &["init", "--archive", &bare_url]);
    assert_eq!(out.one("archive")["created"], true);
    let out = expect_pg(0, &sshd, &work, &["init", "--archive", &bare_url]);
    assert_eq!(out.one("archive")["created"], false);
    expect_pg(0, &sshd, &work, &["push", &files[0], "--to", &bare_url]);

    // A missing remote directory, a closed port, an unknown host key.
    let nowhere = archive_url(&sshd, &d.path().join("nowhere"));
    let out = expect_pg(69, &sshd, &work, &["push", &files[0], "--to", &nowhere]);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    let closed = format!(
        "ssh://postgres@127.0.0.1:{}{}",
        testkit::free_port("127.0.0.1"),
        arch.display()
    );
    let out = expect_pg(69, &sshd, &work, &["push", &files[0], "--to", &closed]);
    assert!(
        out.stderr.contains("cannot reach the archive"),
        "{}",
        out.stderr
    );
    let out = expect_pg(
        126,
        &sshd,
        &work,
        &["fetch", &seg_name(1, 2), "p", "--from", &closed],
    );
    assert!(
        out.stderr.contains("cannot reach the archive"),
        "{}",
        out.stderr
    );
    fs::write(work.join("standby.signal"), "").unwrap();
    expect_pg(
        69,
        &sshd,
        &work,
        &["fetch", &seg_name(1, 2), "p", "--from", &closed],
    );
    fs::remove_file(work.join("standby.signal")).unwrap();
    let saved = fs::read(sshd.known_hosts()).unwrap();
    fs::write(sshd.known_hosts(), "").unwrap();
    let out = expect_pg(69, &sshd, &work, &["push", &files[0], "--to", u]);
    assert!(out.stderr.contains("known_hosts"), "{}", out.stderr);
    fs::write(sshd.known_hosts(), saved).unwrap();
    let out = expect_pg(
        2,
        &sshd,
        &work,
        &[
            "push",
            &files[0],
            "--to",
            u,
            "--ssh-option",
            "StrictHostKeyChecking=no",
        ],
    );
    assert!(
        out.stderr.contains("host key checking on"),
        "{}",
        out.stderr
    );

    // PGS_SSH_OPTS, as the scripts take it: enough on its own, and checked the same way.
    let env = format!(
        "-F /dev/null -i '{}' -o 'UserKnownHostsFile={}'",
        sshd.client_key().display(),
        sshd.known_hosts().display()
    );
    let seg2 = seg_name(1, 2);
    let out = as_postgres_with(&work, &["fetch", &seg2, "pe", "--from", u], &[], Some(&env));
    assert_eq!(out.code, 0, "fetch with PGS_SSH_OPTS: {}", out.stderr);
    let out = as_postgres_with(
        &work,
        &["push", &files[0], "--to", u],
        &[],
        Some(&format!("{env} -oBatchMode=no")),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("PGS_SSH_OPTS"), "{}", out.stderr);

    // A real primary archiving over ssh.
    let opts = options(&sshd).join(" ");
    let push = format!("'{} push %p --to {u} --quiet {opts}'", bin().display());
    let c = Cluster::builder()
        .name("ws-ssh")
        .setting("archive_mode", "on")
        .setting("archive_command", &push)
        .start();
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT generate_series(1, 10000) AS i",
    );
    let closed = c.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.psql(
        "postgres",
        "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
    ) < closed
    {
        assert!(
            Instant::now() < deadline,
            "not archived over ssh: {}",
            c.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let restored = work.join("restored");
    expect_pg(
        0,
        &sshd,
        &work,
        &["fetch", &closed, restored.to_str().unwrap(), "--from", u],
    );
    assert_eq!(fs::metadata(&restored).unwrap().len(), 16 << 20);
}
