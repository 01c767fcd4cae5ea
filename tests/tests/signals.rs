//! SIGINT and SIGTERM in the middle of a tool's run: the stream still ends with an `error`
//! and a `summary` carrying `stopped_by`, every line whole, and the exit code from the table
//! (75: run it again; 0 for a collector, whose ordinary end a signal is).
//!
//! Each tool is caught where a real run waits: pg-checksum and rowcount-diff behind a lock a
//! second session holds, wal-ship verify on an ssh peer that accepts and never speaks,
//! window-advisor recommend on an input that never ends, window-advisor collect between two
//! samples.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Start `tool args` with stdout (and stdin) on pipes.
fn spawn(tool: &str, args: &[&str]) -> Child {
    let mut cmd = Command::new(testkit::tool_bin(tool));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    testkit::hermetic(&mut cmd);
    cmd.spawn().expect("spawn tool")
}

/// Send `sig`, wait (bounded) and return the exit code, the records and stderr.
fn stop(child: Child, sig: Signal) -> (i32, Vec<Value>, String) {
    stop_after(child, sig, "")
}

/// Wait (bounded) until the child catches `sig` (its handler is installed: the signal's bit
/// in /proc's SigCgt), so that the signal tests the handler and not the start-up race.
fn wait_handler(child: &Child, sig: Signal) {
    let path = format!("/proc/{}/status", child.id());
    wait_for("the tool's signal handler", || {
        let status = std::fs::read_to_string(&path).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (sig as i32 - 1)) != 0)
    });
}

/// [`stop`], for a child whose stdout was already read up to `read` (prepended).
fn stop_after(mut child: Child, sig: Signal, read: &str) -> (i32, Vec<Value>, String) {
    wait_handler(&child, sig);
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal the tool");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the tool did not end within 20 s of {sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (read.to_owned(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let records = out
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a whole record ({e}): {l}\n{out}"))
        })
        .collect();
    let code = status.code().unwrap_or_else(|| {
        panic!("killed by the signal instead of ending its run: {status}\nstderr: {err}")
    });
    (code, records, err)
}

/// The stream of a run that `sig` interrupted: error (retry, fatal) then summary, exit 75.
fn assert_interrupted(what: &str, (code, recs, err): (i32, Vec<Value>, String), sig: &str) {
    assert_eq!(code, 75, "{what}: exit code\n{recs:?}\nstderr: {err}");
    let n = recs.len();
    assert!(n >= 2, "{what}: {recs:?}");
    let (error, summary) = (&recs[n - 2], &recs[n - 1]);
    assert_eq!(error["type"], "error", "{what}: {recs:?}");
    assert_eq!(error["kind"], "retry", "{what}: {error}");
    assert_eq!(error["fatal"], true, "{what}: {error}");
    assert_eq!(summary["type"], "summary", "{what}: {recs:?}");
    assert_eq!(summary["stopped_by"], sig, "{what}: {summary}");
    assert_eq!(summary["exit_code"], 75, "{what}: {summary}");
    assert_eq!(summary["success"], false, "{what}: {summary}");
    assert_eq!(
        recs.iter().filter(|r| r["type"] == "summary").count(),
        1,
        "{what}: one summary: {recs:?}"
    );
    assert!(
        err.contains(&format!("interrupted by {sig}")),
        "{what}: stderr: {err}"
    );
}

/// Wait (bounded) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigint_and_sigterm_end_every_tools_stream_with_error_and_summary() {
    let cluster = testkit::shared_cluster();
    let db = cluster.create_db();
    let dsn = cluster.dsn(db.name());
    cluster.psql(
        db.name(),
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;",
    );

    // A second session holds an ACCESS EXCLUSIVE lock: both comparisons wait behind it.
    let mut holder = cluster.connect(db.name());
    holder
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut watcher = cluster.connect(db.name());
    // Wait for a session of `app` stuck behind the lock. A backend waiting for a lock does not
    // notice that its client went away, so after each run its sessions are ended, and gone,
    // before the next tool starts (pg_terminate_backend only signals).
    let waiting = |watcher: &mut postgres::Client, app: &str| {
        wait_for(&format!("a session of {app} waiting for the lock"), || {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                     JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE c.relname = 't' AND NOT l.granted AND a.application_name = $1",
                    &[&app],
                )
                .unwrap();
            row.get::<_, i64>(0) >= 1
        });
    };
    let clear = |watcher: &mut postgres::Client| {
        let others = "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgshift-%' \
                      AND pid <> pg_backend_pid()";
        watcher
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM ({others}) o"
            ))
            .unwrap();
        wait_for("the last run's sessions to end", || {
            let row = watcher
                .query_one(&format!("SELECT count(*) FROM ({others}) o"), &[])
                .unwrap();
            row.get::<_, i64>(0) == 0
        });
    };

    // pg-checksum refuses one database as both sides: the target is a copy elsewhere.
    let copy = cluster.create_db();
    cluster.psql(copy.name(), "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let child = spawn(
        "pg-checksum",
        &["--source", &dsn, "--target", &cluster.dsn(copy.name())],
    );
    waiting(&mut watcher, "pgshift-pg-checksum");
    assert_interrupted("pg-checksum", stop(child, Signal::SIGINT), "SIGINT");
    clear(&mut watcher);

    let child = spawn("rowcount-diff", &["--source", &dsn, "--target", &dsn]);
    waiting(&mut watcher, "pgshift-rowcount-diff");
    assert_interrupted("rowcount-diff", stop(child, Signal::SIGTERM), "SIGTERM");
    holder.batch_execute("ROLLBACK").unwrap();

    // An ssh peer that accepts the connection and never sends its banner.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let archive = format!("ssh://nobody@127.0.0.1:{port}/archive");
    let child = spawn("wal-ship", &["verify", "--archive", &archive]);
    wait_for("wal-ship's ssh to connect", || {
        silent.set_nonblocking(true).unwrap();
        silent.accept().is_ok_and(|(s, _)| {
            std::mem::forget(s); // keep it open and silent
            true
        })
    });
    assert_interrupted("wal-ship verify", stop(child, Signal::SIGINT), "SIGINT");

    // An input that never ends (stdin stays open).
    let child = spawn("window-advisor", &["recommend", "--history", "-"]);
    assert_interrupted(
        "window-advisor recommend",
        stop(child, Signal::SIGTERM),
        "SIGTERM",
    );

    // A live collector: a signal is its ordinary end, after the samples it took.
    let mut child = spawn(
        "window-advisor",
        &["collect", "--dsn", &dsn, "--interval", "1s"],
    );
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .expect("a first sample");
    let (code, recs, err) = stop_after(child, Signal::SIGTERM, "{");
    assert_eq!(first[0], b'{');
    assert!(
        recs.iter().any(|r| r["type"] == "sample"),
        "collect: its sample is kept: {recs:?}"
    );
    assert_eq!(code, 0, "collect: {recs:?}\nstderr: {err}");
    let summary = recs.last().expect("records");
    assert_eq!(summary["type"], "summary", "{recs:?}");
    assert_eq!(summary["stopped_by"], "SIGTERM", "{summary}");
    assert_eq!(summary["success"], true, "{summary}");
    assert!(
        !recs.iter().any(|r| r["type"] == "error"),
        "collect: no error: {recs:?}"
    );
}
