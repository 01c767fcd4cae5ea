//! scripts/ship-cron.sh: WAL shipping from cron (wal-ship sweep + clean) against a real
//! cluster whose archiver leaves the shipping to cron.

use std::os::unix::process::CommandExt;
use std::process::Command;

use pgshift_tests::workspace_root;
use serde_json::Value;
use testkit::Cluster;

fn ship_cron(args: &[&str]) -> (i32, Vec<Value>, String) {
    let bin = testkit::tool_bin("wal-ship");
    let mut cmd = Command::new(workspace_root().join("scripts/ship-cron.sh"));
    cmd.args(args).env("PGSHIFT_BIN", bin.parent().unwrap());
    testkit::hermetic(&mut cmd);
    let out = cmd.output().unwrap();
    let recs = testkit::json_lines(&String::from_utf8_lossy(&out.stdout));
    (
        out.status.code().unwrap_or(-1),
        recs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The installed line of the crontab `file` run as cron runs it: its command field (a bare %
/// would end it, \% is a %), by /bin/sh with HOME `home`; the tick must end with its usage
/// error (2). Returns the line.
fn run_as_cron(file: &std::path::Path, home: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let entry = text
        .lines()
        .find(|l| l.contains("pgshift ship-cron"))
        .unwrap()
        .to_owned();
    let field = entry.splitn(6, ' ').nth(5).unwrap();
    let field = field.strip_suffix("# pgshift ship-cron").unwrap();
    assert!(
        !field.replace("\\%", "").contains('%'),
        "a bare % in the crontab line: {entry}"
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(field.replace("\\%", "%"))
        .env("HOME", home)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2), "the tick's usage error: {entry}");
    entry
}

fn of_type<'a>(recs: &'a [Value], t: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == t).collect()
}

fn ready_files(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(c.data_dir().join("pg_wal/archive_status"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ready"))
        .collect();
    v.sort();
    v
}

/// A cluster that marks finished segments .ready but leaves shipping to cron.
fn cluster_for_cron() -> Cluster {
    let c = Cluster::builder()
        .setting("archive_mode", "on")
        .setting("archive_command", "''")
        .start();
    c.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g; SELECT pg_switch_wal();",
    );
    c.psql(
        "postgres",
        "INSERT INTO t SELECT 1; SELECT pg_switch_wal();",
    );
    c.psql(
        "postgres",
        "INSERT INTO t SELECT 2; SELECT pg_switch_wal();",
    );
    c
}

#[test]
fn run_ships_ready_segments_once_and_cleans() {
    let c = cluster_for_cron();
    let ready = ready_files(&c);
    assert!(ready.len() >= 3, "expected .ready files, got {ready:?}");
    let archive = c.dir().join("archive");
    testkit::new_wal_archive(&archive);
    let pg_wal = c.data_dir().join("pg_wal");
    // One cron tick: `run --from pg_wal --to the archive`, then `extra`.
    let tick = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--from",
            pg_wal.to_str().unwrap(),
            "--to",
            archive.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ship_cron(&args)
    };
    let (code, recs, err) = tick(&[]);
    assert_eq!(code, 0, "{err}");
    let shipped: Vec<&str> = of_type(&recs, "segment")
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for r in &ready {
        assert!(
            shipped.contains(&r.trim_end_matches(".ready")),
            "{r} not shipped: {shipped:?}"
        );
    }
    assert!(
        ready_files(&c).is_empty(),
        "shipped files must be marked .done"
    );
    assert_eq!(recs.last().unwrap()["type"], "summary");

    // The next tick has nothing to do.
    let (code, recs, _) = tick(&[]);
    assert_eq!(code, 0);
    assert!(of_type(&recs, "segment").is_empty(), "{recs:?}");

    // The archive verifies, and retention keeps from the given segment on.
    let verify = Command::new(testkit::tool_bin("wal-ship"))
        .args(["verify", "--archive", archive.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let keep = shipped.iter().max().unwrap().to_string();
    let (code, recs, err) = tick(&["--keep-from", &keep]);
    assert_eq!(code, 0, "{err}");
    let removed: Vec<&str> = of_type(&recs, "removed")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(!removed.is_empty(), "{recs:?}");
    assert!(
        removed.iter().all(|n| *n < keep.as_str()),
        "{removed:?} vs {keep}"
    );
    assert_eq!(recs.last().unwrap()["cleaned"], true);

    // Retention by base backups: a backup taken now leaves its history file in pg_wal, the
    // next tick ships it, and --keep-backups 1 keeps from where that backup starts.
    c.psql(
        "postgres",
        "INSERT INTO t SELECT 3; SELECT pg_switch_wal();",
    );
    let backup = c.base_backup("ship-cron-backup", &["-X", "stream"]);
    let label = std::fs::read_to_string(backup.data_dir().join("backup_label")).unwrap();
    let start = label.split("(file ").nth(1).unwrap()[..24].to_owned();
    drop(backup);
    let (code, recs, err) = tick(&["--keep-backups", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        of_type(&recs, "segment").iter().any(|r| r["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{start}."))),
        "the backup history file is shipped: {recs:?}"
    );
    let removed: Vec<&str> = of_type(&recs, "removed")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(removed.contains(&keep.as_str()), "{removed:?} vs {start}");
    assert!(
        removed.iter().all(|n| *n < start.as_str()),
        "{removed:?} vs {start}"
    );
    let summary = recs.last().unwrap();
    assert_eq!(
        (&summary["keep_backups"], &summary["cleaned"]),
        (&serde_json::json!(1), &serde_json::json!(true)),
        "{summary}"
    );
}

#[test]
fn a_tick_that_finds_the_lock_taken_ships_nothing() {
    let c = cluster_for_cron();
    let pg_wal = c.data_dir().join("pg_wal");
    let lock = pg_wal.join(".ship-cron.lock");
    // Hold the lock from another process, as a slow earlier run would.
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let archive = c.dir().join("archive");
    testkit::new_wal_archive(&archive);
    let (code, recs, err) = ship_cron(&[
        "run",
        "--from",
        pg_wal.to_str().unwrap(),
        "--to",
        archive.to_str().unwrap(),
    ]);
    // flock's child (sleep) holds the lock too: end the whole group.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(holder.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = holder.wait();
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("another ship-cron run holds"), "{err}");
    assert!(of_type(&recs, "segment").is_empty());
    assert!(!ready_files(&c).is_empty(), "nothing may be marked done");
}

#[test]
fn install_is_idempotent_and_uninstall_keeps_other_lines() {
    let dir = std::env::temp_dir().join(format!("pgshift-cron-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("crontab");
    std::fs::write(
        &file,
        "MAILTO=dba@example.com\n0 3 * * * /usr/local/bin/backup\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let install = [
        "install",
        "--schedule",
        "* * * * *",
        "--file",
        f,
        "--",
        "--from",
        "/var/lib/postgresql/15/main/pg_wal",
        "--to",
        "ssh://backup@archive/wal",
    ];
    // A crontab file that cannot be written: an I/O error in one line, and a summary.
    let mut unwritable = install.to_vec();
    let nowhere = dir.join("no such dir/crontab");
    unwritable[4] = nowhere.to_str().unwrap();
    let (code, recs, err) = ship_cron(&unwritable);
    assert_eq!(code, 74, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot write"), "{err}");
    assert_eq!(recs.last().unwrap()["type"], "summary", "{recs:?}");

    let (code, recs, err) = ship_cron(&install);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs[0]["changed"], true);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("MAILTO=dba@example.com"));
    assert!(text.contains("0 3 * * * /usr/local/bin/backup"));
    let line = text
        .lines()
        .find(|l| l.contains("pgshift ship-cron"))
        .unwrap();
    assert!(line.starts_with("* * * * * "), "{line}");
    assert!(
        line.contains(
            " run --from /var/lib/postgresql/15/main/pg_wal --to ssh://backup@archive/wal"
        ),
        "{line}"
    );

    // The line as cron runs it: the command field up to the tag, a bare % would end it (the
    // rest goes to stdin), \% is a %; then /bin/sh, with HOME the user's home. A tick whose
    // --from has a % in its name runs whole, and its output lands in HOME, not in /tmp.
    let awkward = dir.join("wal 100%");
    let (code, recs, err) = ship_cron(&[
        "install",
        "--schedule",
        "*/5 * * * *",
        "--file",
        f,
        "--",
        "--from",
        awkward.to_str().unwrap(),
        "--to",
        "/nowhere",
    ]);
    assert_eq!(
        (code, &recs[0]["changed"]),
        (0, &Value::Bool(true)),
        "{err}"
    );
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let entry = run_as_cron(&file, &home);
    let log = std::fs::read_to_string(home.join("pgshift-ship-cron.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("--from {} is not a directory", awkward.display())),
        "the tick's message, with its --from whole, in HOME's log: {log:?}\n{entry}"
    );
    // --log names the file instead, itself with a space and a % in its path.
    let logs = dir.join("logs 50%");
    std::fs::create_dir_all(&logs).unwrap();
    let named = logs.join("ship.log");
    let (code, _, err) = ship_cron(&[
        "install",
        "--schedule",
        "*/5 * * * *",
        "--file",
        f,
        "--log",
        named.to_str().unwrap(),
        "--",
        "--from",
        awkward.to_str().unwrap(),
        "--to",
        "/nowhere",
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(home.join("pgshift-ship-cron.log")).unwrap();
    let entry = run_as_cron(&file, &home);
    let log = std::fs::read_to_string(&named).unwrap_or_default();
    assert!(
        log.contains("is not a directory"),
        "the tick's message in --log's file: {log:?}\n{entry}"
    );
    assert!(
        !home.join("pgshift-ship-cron.log").exists(),
        "nothing in HOME with --log"
    );
    ship_cron(&install);
    let text = std::fs::read_to_string(&file).unwrap();

    let (_, recs, _) = ship_cron(&install);
    assert_eq!(
        recs[0]["changed"], false,
        "a second install changes nothing"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    let (code, recs, _) = ship_cron(&["uninstall", "--file", f]);
    assert_eq!(code, 0);
    assert_eq!(recs[0]["changed"], true);
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(!after.contains("pgshift ship-cron"));
    assert!(after.contains("0 3 * * * /usr/local/bin/backup"));
    let _ = std::fs::remove_dir_all(&dir);
}
