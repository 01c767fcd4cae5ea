//! The fixture itself: clusters start, replicate, stop, promote, and never outlive their test.

use std::time::{Duration, Instant};

use testkit::{Cluster, StopMode};

#[test]
fn write_on_primary_read_on_standby() {
    let primary = Cluster::builder().name("primary").start();
    let standby = primary.standby();
    assert!(standby.in_recovery());
    assert!(!primary.in_recovery());
    assert_ne!(primary.port(), standby.port());

    let db = primary.create_db();
    primary.psql(
        db.name(),
        "CREATE TABLE t(id int primary key, v text); INSERT INTO t SELECT g, 'v'||g FROM generate_series(1,1000) g",
    );
    primary.wait_replayed(&standby, Duration::from_secs(30));
    assert_eq!(
        standby.psql(db.name(), "SELECT count(*), max(v) FROM t"),
        "1000|v999"
    );

    // The standby is read-only, through the same client API the tools use.
    let mut c = standby.connect(db.name());
    let err = c
        .batch_execute("INSERT INTO t VALUES (0, 'x')")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );
}

#[test]
fn two_independent_hosts_on_different_loopback_addresses() {
    let a = Cluster::builder().name("a").host("127.0.0.1").start();
    let b = Cluster::builder().name("b").host("127.0.0.2").start();
    a.psql("postgres", "CREATE TABLE only_on_a(x int)");
    assert_eq!(
        b.psql(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname = 'only_on_a'"
        ),
        "0"
    );
    assert_eq!(b.host(), "127.0.0.2");
    assert_eq!(b.psql("postgres", "SELECT inet_server_addr()"), "127.0.0.2");
}

#[test]
fn settings_stop_start_and_promote() {
    let mut primary = Cluster::builder()
        .name("p")
        .setting("max_connections", "42")
        .start();
    assert_eq!(primary.psql("postgres", "SHOW max_connections"), "42");
    let standby = primary.standby();
    primary.stop(StopMode::Fast);
    assert!(!primary.is_running());
    standby.promote();
    assert!(!standby.in_recovery());
    standby.psql("postgres", "CREATE TABLE after_promote(x int)");
    primary.start_again();
    assert!(primary.is_running());
    assert_eq!(primary.psql("postgres", "SELECT 1"), "1");
}

#[test]
fn dropping_a_cluster_stops_the_server_and_removes_its_directory() {
    let c = Cluster::start();
    let pid = c.postmaster_pid().expect("running");
    let dir = c.dir().to_path_buf();
    drop(c);
    assert!(!testkit::pid_alive(pid));
    assert!(!dir.exists());
}

/// Not a test of its own: run by `watchdog_cleans_up_after_a_killed_test_process` and
/// `fixture_works_as_a_normal_user` in a child process.
#[test]
#[ignore = "helper, run in a child process by other tests"]
fn helper_start_cluster_and_wait() {
    let c = Cluster::start();
    c.psql("postgres", "CREATE TABLE x(i int)");
    println!(
        "READY {} {}",
        c.postmaster_pid().unwrap(),
        c.dir().display()
    );
    if std::env::var_os("TESTKIT_HELPER_HANG").is_some() {
        std::thread::sleep(Duration::from_secs(120));
    }
}

fn helper_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "fixture::helper_start_cluster_and_wait",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

fn ready_line(stdout: &str) -> Option<(i32, std::path::PathBuf)> {
    // libtest prints the test's output after "test NAME ... " on the same line.
    let (_, rest) = stdout.split_once("READY ")?;
    let mut parts = rest.split_whitespace();
    Some((parts.next()?.parse().ok()?, parts.next()?.into()))
}

#[test]
fn watchdog_cleans_up_after_a_killed_test_process() {
    use std::io::{BufRead, BufReader};
    let mut child = helper_command()
        .env("TESTKIT_HELPER_HANG", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let (pid, dir) = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("helper exited without READY: {text}");
        }
        text.push_str(&line);
        if let Some(r) = ready_line(&text) {
            break r;
        }
    };
    assert!(testkit::pid_alive(pid));
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while (testkit::pid_alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !testkit::pid_alive(pid),
        "postmaster {pid} outlived its test process"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn fixture_works_as_a_normal_user() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        // Every other test already runs as a normal user.
        let c = Cluster::start();
        assert_eq!(c.psql("postgres", "SELECT current_user"), "postgres");
        return;
    }
    // As root, run the helper as the unprivileged `postgres` user: the fixture must then
    // start the server as itself, without switching users.
    let (uid, gid) = testkit::run_as().unwrap();
    let exe = std::env::current_exe().unwrap();
    let readable = std::process::Command::new("test")
        .arg("-r")
        .arg(&exe)
        .uid(uid)
        .gid(gid)
        .status()
        .is_ok_and(|s| s.success());
    if !readable {
        testkit::skip!(
            "{} is not readable by the postgres user; cannot run the fixture unprivileged here",
            exe.display()
        );
    }
    let out = helper_command()
        .uid(uid)
        .gid(gid)
        .env("HOME", "/tmp")
        .current_dir("/tmp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && ready_line(&stdout).is_some(),
        "helper as postgres failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
