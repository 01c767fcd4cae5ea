//! Real clusters: wal-ship as archive_command and restore_command, a standby fed only by the
//! archive, promotion (timeline history), status, and sweep of a live pg_wal.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Cluster, StopMode};

use crate::util::*;

/// Poll `f` until it returns true, or panic with `what` and a log.
fn wait_for(what: &str, limit: Duration, log: &dyn Fn() -> String, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Switch to a new segment and wait until the archiver has shipped the one just closed.
fn switch_and_wait_archived(c: &Cluster) -> String {
    let closed = c.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_for(
        &format!("{closed} to be archived by {}", c.name()),
        Duration::from_secs(60),
        &|| c.log_tail(20),
        || {
            let last = c.psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            last.as_str() >= closed.as_str()
        },
    );
    closed
}

/// An archive directory the server (postgres) can write.
fn archive_dir(base: &Path) -> std::path::PathBuf {
    let arch = base.join("archive");
    testkit::new_wal_archive(&arch);
    chown_postgres(&arch);
    arch
}

/// Turn a pg_basebackup -R standby into one that only restores from the archive.
fn archive_only(standby: &mut Cluster) {
    standby.stop(StopMode::Fast);
    let auto = standby.data_dir().join("postgresql.auto.conf");
    let text = fs::read_to_string(&auto).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("primary_conninfo"))
        .collect();
    fs::write(&auto, kept.join("\n") + "\n").unwrap();
}

#[test]
fn a_standby_fed_only_by_the_archive_sees_the_primarys_rows_and_survives_promotion() {
    let d = scratch();
    let arch = archive_dir(d.path());
    let push = format!(
        "'{} push %p --to {} --quiet'",
        bin().display(),
        arch.display()
    );
    let fetch = format!(
        "'{} fetch %f %p --from {} --prefetch 2'",
        bin().display(),
        arch.display()
    );
    let primary = Cluster::builder()
        .name("ws-primary")
        .setting("archive_mode", "on")
        .setting("archive_command", &push)
        .start();
    primary.psql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    switch_and_wait_archived(&primary);

    let mut standby = primary
        .standby_builder()
        .setting("restore_command", &fetch)
        .setting("wal_retrieve_retry_interval", "'200ms'")
        .setting("archive_mode", "on")
        .setting("archive_command", &push)
        .start_standby_of(&primary);
    archive_only(&mut standby);
    // Written while the standby is down: it can only get these from the archive.
    primary.psql(
        "postgres",
        "INSERT INTO t SELECT generate_series(1001, 2000)",
    );
    switch_and_wait_archived(&primary);
    standby.start_again();
    assert_eq!(
        standby.psql("postgres", "SELECT count(*) FROM pg_stat_wal_receiver"),
        "0",
        "no streaming"
    );

    // pg_switch_wal in a loop: every segment travels through the archive.
    let mut expected = 2000;
    for round in 0..6 {
        primary.psql(
            "postgres",
            &format!(
                "INSERT INTO t SELECT generate_series(1, {})",
                100 * (round + 1)
            ),
        );
        expected += 100 * (round + 1);
        switch_and_wait_archived(&primary);
    }
    wait_for(
        "the standby to replay every row",
        Duration::from_secs(90),
        &|| standby.log_tail(30),
        || standby.psql("postgres", "SELECT count(*) FROM t") == expected.to_string(),
    );
    let log = fs::read_to_string(standby.log_path()).unwrap();
    assert!(
        log.contains("restored log file"),
        "{}",
        standby.log_tail(30)
    );
    // "Not in the archive" is quiet: no wal-ship complaints in the standby's log.
    assert!(!log.contains("wal-ship:"), "{}", standby.log_tail(40));

    // The archive is whole, and status agrees with the server.
    let a = arch.to_str().unwrap();
    let out = expect(0, &["verify", "--archive", a]);
    assert_eq!(out.summary()["problems"], 0);
    let out = expect(
        0,
        &["status", "--dsn", &primary.dsn("postgres"), "--archive", a],
    );
    let st = &out.of("status")[0];
    assert_eq!(st["failing"], false);
    assert_eq!(st["in_recovery"], false);
    assert_eq!(st["lag_segments"], 0, "{st}");
    assert_eq!(st["archive_last_segment"], st["last_archived_wal"], "{st}");
    assert!(st["archived_count"].as_i64().unwrap() >= 8, "{st}");
    assert_eq!(st["wal_segment_size"], 16 << 20);

    // Promotion: the standby becomes a primary on timeline 2 and archives its history file.
    drop(primary);
    standby.promote();
    wait_for(
        "00000002.history in the archive",
        Duration::from_secs(60),
        &|| standby.log_tail(20),
        || arch.join("history/00000002.history.ws").exists(),
    );
    standby.psql("postgres", "INSERT INTO t SELECT generate_series(1, 10)");
    let closed = switch_and_wait_archived(&standby);
    assert!(closed.starts_with("00000002"), "{closed}");
    let out = expect(0, &["verify", "--archive", a]);
    let sum = out.summary();
    assert_eq!(sum["timelines"], serde_json::json!([1, 2]), "{sum}");
    assert_eq!(sum["history_files"], 1);
    // The history file restores as PostgreSQL wrote it.
    let dest = d.path().join("h");
    expect(
        0,
        &[
            "fetch",
            "00000002.history",
            dest.to_str().unwrap(),
            "--from",
            a,
        ],
    );
    assert!(fs::read_to_string(dest).unwrap().starts_with("1\t"));
}

#[test]
fn status_reports_failing_archiving_until_it_recovers() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    // A marker, so the archive is one, but not writable by the server.
    let seed = segment(d.path(), &seg_name(9, 1), 1);
    expect(
        0,
        &[
            "push",
            seed.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&arch, fs::Permissions::from_mode(0o755)).unwrap();
    let push = format!(
        "'{} push %p --to {} --quiet'",
        bin().display(),
        arch.display()
    );
    let c = Cluster::builder()
        .name("ws-failing")
        .setting("archive_mode", "on")
        .setting("archive_command", &push)
        .start();
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT 1 AS i; SELECT pg_switch_wal()",
    );
    wait_for(
        "an archiving failure",
        Duration::from_secs(60),
        &|| c.log_tail(10),
        || c.psql("postgres", "SELECT failed_count > 0 FROM pg_stat_archiver") == "t",
    );
    let a = arch.to_str().unwrap();
    let out = expect(1, &["status", "--dsn", &c.dsn("postgres"), "--archive", a]);
    let st = &out.of("status")[0];
    assert_eq!(st["failing"], true);
    assert!(
        st["last_failed_wal"]
            .as_str()
            .unwrap()
            .starts_with("00000001"),
        "{st}"
    );
    assert!(st["ready_files"].as_i64().unwrap() >= 1, "{st}");
    assert!(
        out.stderr.contains("archiving is failing"),
        "{}",
        out.stderr
    );
    // The server log has wal-ship's reason.
    let log = fs::read_to_string(c.log_path()).unwrap();
    assert!(log.contains("Permission denied"), "{}", c.log_tail(20));

    // Fixed: PostgreSQL's retry goes through and status is clean again.
    fs::set_permissions(&arch, fs::Permissions::from_mode(0o777)).unwrap();
    wait_for(
        "archiving to recover",
        Duration::from_secs(90),
        &|| c.log_tail(10),
        || {
            c.psql(
                "postgres",
                "SELECT last_archived_time > last_failed_time FROM pg_stat_archiver",
            ) == "t"
        },
    );
    let out = expect(0, &["status", "--dsn", &c.dsn("postgres"), "--archive", a]);
    assert_eq!(out.of("status")[0]["failing"], false);
    // An unreachable server is a connection error.
    let out = expect(
        69,
        &[
            "status",
            "--dsn",
            "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
            "--archive",
            a,
        ],
    );
    assert_eq!(out.one("error")["kind"], "unavailable");
    assert_eq!(out.summary()["exit_code"], 69);
}

#[test]
fn sweep_ships_the_ready_files_of_a_live_pg_wal() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    // archive_mode on, no archive_command: PostgreSQL keeps .ready files for someone else.
    let c = Cluster::builder()
        .name("ws-sweep")
        .setting("archive_mode", "on")
        .setting("archive_command", "''")
        .start();
    let mut closed = Vec::new();
    for i in 0..3 {
        c.psql(
            "postgres",
            &format!("CREATE TABLE t{i} AS SELECT generate_series(1, 1000) AS i"),
        );
        closed.push(c.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())"));
    }
    let wal = c.data_dir().join("pg_wal");
    wait_for(
        ".ready files",
        Duration::from_secs(30),
        &|| c.log_tail(10),
        || {
            closed.iter().all(|n| {
                wal.join("archive_status")
                    .join(format!("{n}.ready"))
                    .exists()
            })
        },
    );
    let out = expect(
        0,
        &[
            "sweep",
            "--from",
            wal.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
            "--jobs",
            "2",
        ],
    );
    let shipped: Vec<String> = out
        .of("segment")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    for n in &closed {
        assert!(shipped.contains(n), "{n} not in {shipped:?}");
        assert!(wal
            .join("archive_status")
            .join(format!("{n}.done"))
            .exists());
        assert!(!wal
            .join("archive_status")
            .join(format!("{n}.ready"))
            .exists());
    }
    let out = expect(
        0,
        &[
            "sweep",
            "--from",
            wal.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    assert_eq!(out.summary()["files"], 0);
    // Real segments restore byte for byte.
    let n = &closed[1];
    let dest = d.path().join("restored");
    expect(
        0,
        &[
            "fetch",
            n,
            dest.to_str().unwrap(),
            "--from",
            arch.to_str().unwrap(),
        ],
    );
    if let Ok(orig) = fs::read(wal.join(n)) {
        assert!(orig == fs::read(&dest).unwrap(), "restored {n} differs");
    }
    let out = expect(0, &["verify", "--archive", arch.to_str().unwrap()]);
    assert_eq!(out.summary()["problems"], 0);
}

/// `pg_ctl start` without waiting (the server is expected to fail), then wait until the
/// postmaster is gone; returns what it wrote to its log meanwhile.
fn start_expecting_failure(c: &Cluster) -> String {
    let offset = fs::metadata(c.log_path())
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let mut cmd = testkit::pg_command("pg_ctl", c.dir());
    cmd.arg("-D")
        .arg(c.data_dir())
        .arg("-l")
        .arg(c.log_path())
        .args(["-W", "start"]);
    testkit::run_ok(&mut cmd);
    let pidfile = c.data_dir().join("postmaster.pid");
    // pg_ctl returns before the postmaster writes its pid file.
    std::thread::sleep(Duration::from_millis(300));
    wait_for(
        "the server to give up",
        Duration::from_secs(60),
        &|| c.log_tail(20),
        || !pidfile.exists() || c.postmaster_pid().is_some_and(|p| !testkit::pid_alive(p)),
    );
    let log = fs::read(c.log_path()).unwrap();
    String::from_utf8_lossy(&log[offset.min(log.len())..]).into_owned()
}

#[test]
fn archive_recovery_stops_instead_of_ending_early_on_an_unreachable_or_corrupt_archive() {
    let d = scratch();
    let arch = archive_dir(d.path());
    let push = format!(
        "'{} push %p --to {} --quiet'",
        bin().display(),
        arch.display()
    );
    let fetch = format!(
        "'{} fetch %f %p --from {}'",
        bin().display(),
        arch.display()
    );
    let primary = Cluster::builder()
        .name("ws-pitr")
        .setting("archive_mode", "on")
        .setting("archive_command", &push)
        .start();
    primary.psql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    switch_and_wait_archived(&primary);
    // A base backup that will recover from the archive alone (recovery.signal: archive
    // recovery, which ends, promotes and forks a timeline when restore_command says "no more").
    let mut restore = primary
        .standby_builder()
        .name("ws-pitr-restore")
        .setting("restore_command", &fetch)
        .start_standby_of(&primary);
    archive_only(&mut restore);
    fs::remove_file(restore.data_dir().join("standby.signal")).unwrap();
    fs::write(restore.data_dir().join("recovery.signal"), "").unwrap();
    chown_postgres(&restore.data_dir().join("recovery.signal"));
    primary.psql(
        "postgres",
        "INSERT INTO t SELECT generate_series(1001, 2000)",
    );
    let last = switch_and_wait_archived(&primary);
    drop(primary);

    // 1. The archive is not there (unmounted): recovery must stop, not end at the base backup.
    let away = d.path().join("archive-unmounted");
    fs::rename(&arch, &away).unwrap();
    let log = start_expecting_failure(&restore);
    // PostgreSQL reads exit codes above 125 as "command not executable": FATAL.
    assert!(log.contains("FATAL:  could not restore file"), "{log}");
    assert!(
        log.contains("stops recovery instead of ending it early"),
        "{log}"
    );
    assert!(
        !log.contains("selected new timeline ID"),
        "recovery ended early: {log}"
    );
    fs::rename(&away, &arch).unwrap();

    // 2. The last segment is corrupt: recovery stops there, loudly.
    let obj = object_path(&arch, &last);
    let good = fs::read(&obj).unwrap();
    flip_bit(&obj);
    let log = start_expecting_failure(&restore);
    assert!(
        log.contains(&format!("{last} in {} is corrupt", arch.display())),
        "{log}"
    );
    // PostgreSQL reads exit codes above 125 as "command not executable": FATAL.
    assert!(log.contains("FATAL:  could not restore file"), "{log}");
    assert!(
        !log.contains("selected new timeline ID"),
        "recovery ended early: {log}"
    );

    // 3. Repaired: recovery replays everything, then ends and opens on timeline 2.
    fs::write(&obj, good).unwrap();
    restore.start_again();
    wait_for(
        "the end of recovery",
        Duration::from_secs(60),
        &|| restore.log_tail(20),
        || restore.psql("postgres", "SELECT NOT pg_is_in_recovery()") == "t",
    );
    assert_eq!(restore.psql("postgres", "SELECT count(*) FROM t"), "2000");
}

/// `clean --keep-backups 2` on an archive with three base backups taken by `pg_basebackup -X
/// none` (they need the archive for every segment from their start): the oldest backup's
/// WAL goes, and the second newest still restores from what is left, replaying to the last
/// row written after the newest.
#[test]
fn clean_keep_backups_leaves_what_the_second_newest_backup_needs_to_restore() {
    let d = scratch();
    let arch = archive_dir(d.path());
    let a = arch.to_str().unwrap();
    let push = format!("'{} push %p --to {a} --quiet'", bin().display());
    let fetch = format!("'{} fetch %f %p --from {a}'", bin().display());
    let primary = Cluster::builder()
        .name("ws-retain")
        .setting("archive_mode", "on")
        .setting("archive_command", &push)
        .start();
    primary.psql("postgres", "CREATE TABLE t (i int)");
    let mut backups = Vec::new();
    for _ in 0..3 {
        primary.psql("postgres", "INSERT INTO t SELECT generate_series(1, 1000)");
        switch_and_wait_archived(&primary);
        let b = primary.base_backup("ws-retain-backup", &["-X", "none"]);
        // START WAL LOCATION: 0/5000028 (file 000000010000000000000005)
        let label = fs::read_to_string(b.data_dir().join("backup_label")).unwrap();
        let start = label.split("(file ").nth(1).unwrap()[..24].to_owned();
        backups.push((b, start));
    }
    primary.psql("postgres", "INSERT INTO t SELECT generate_series(1, 1000)");
    switch_and_wait_archived(&primary);
    let stored = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(arch.join("0000000100000000"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
            .filter_map(|n| n.strip_suffix(".ws").map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    wait_for(
        "three backup history files in the archive",
        Duration::from_secs(60),
        &|| primary.log_tail(20),
        || stored().iter().filter(|n| n.ends_with(".backup")).count() == 3,
    );
    drop(primary);

    let second = backups[1].1.clone();
    let out = expect(
        0,
        &["clean", "--archive", a, "--keep-backups", "2", "--dry-run"],
    );
    let removed: Vec<String> = out
        .of("removed")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = stored().into_iter().filter(|n| n[..24] < *second).collect();
    assert_eq!(removed, want, "{}", out.dump());
    assert!(
        want.iter()
            .any(|n| n.starts_with(&backups[0].1) && n.ends_with(".backup")),
        "the oldest backup's history file goes: {want:?}"
    );
    let s = out.summary();
    assert_eq!(s["keep_from"], second.as_str());
    assert_eq!(s["backups"], 3);
    expect(0, &["clean", "--archive", a, "--keep-backups", "2"]);
    assert!(stored().iter().all(|n| n[..24] >= *second));
    assert_eq!(
        expect(0, &["verify", "--archive", a]).summary()["problems"],
        0
    );

    // The second newest backup restores from the cleaned archive alone (archive recovery
    // ends when it runs out of WAL, then opens).
    let (b2, _) = backups.remove(1);
    let signal = b2.data_dir().join("recovery.signal");
    fs::write(&signal, "").unwrap();
    chown_postgres(&signal);
    let restore = Cluster::builder()
        .name("ws-retain-restore")
        .setting("restore_command", &fetch)
        .setting("archive_mode", "off")
        .start_from(b2);
    wait_for(
        "the end of recovery",
        Duration::from_secs(60),
        &|| restore.log_tail(20),
        || restore.psql("postgres", "SELECT NOT pg_is_in_recovery()") == "t",
    );
    assert_eq!(restore.psql("postgres", "SELECT count(*) FROM t"), "4000");

    // The first segment the second backup needs, lost: no gap in the archive's sequence (it
    // was the first), but that backup can no longer be restored, and verify says so.
    fs::remove_file(object_path(&arch, &second)).unwrap();
    let out = expect(1, &["verify", "--archive", a]);
    let p = out.one("problem");
    assert_eq!(
        (&p["problem"], &p["segment"]),
        (&json!("backup_wal_missing"), &json!(second)),
        "{}",
        out.dump()
    );
    assert!(p["message"].as_str().unwrap().contains("is missing"), "{p}");
    assert_eq!(out.summary()["backups_restorable"], 1);
}
