//! Through a transaction pooler: a real PgBouncer in `pool_mode=transaction` with fewer server
//! connections than clients, in front of a real PostgreSQL, as in a PgBouncer switchover
//! (PAUSE, switch, RELOAD, RESUME) where clients know one address only.
//!
//! PgBouncer before 1.21 keeps no track of prepared statements, so a named statement prepared
//! on one server connection is executed on another; `--protocol extended` sends none.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use testkit::Cluster;

use crate::common::{num, run, Background};

/// Where PgBouncer is: `PGBOUNCER_BIN`, else Debian's, else `pgbouncer` on the PATH.
fn pgbouncer_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGBOUNCER_BIN") {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if debian.exists() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("pgbouncer"))
            .find(|p| p.exists())
    })
}

/// A PgBouncer in transaction mode in front of `cluster`, stopped and removed on drop.
struct PgBouncer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl PgBouncer {
    /// Start one with `pool_size` server connections per database and user; `None` if
    /// PgBouncer is not installed.
    fn start(cluster: &Cluster, pool_size: u32) -> Option<PgBouncer> {
        let bin = pgbouncer_bin()?;
        // A directory in the cluster's (removed with it, also by its watchdog if this process
        // dies) that the server's user can read and write: PgBouncer refuses to run as root.
        // It holds the configuration, the log and the pid file.
        let dir = cluster.dir().join("pgbouncer");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let port = testkit::free_port("127.0.0.1");
        let ini = dir.join("pgbouncer.ini");
        fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {dir}/userlist.txt\n\
                 admin_users = postgres\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 200\n\
                 logfile = {dir}/pgbouncer.log\n\
                 pidfile = {dir}/pgbouncer.pid\n",
                host = cluster.host(),
                pg_port = cluster.port(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        for f in ["pgbouncer.ini", "userlist.txt"] {
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        }
        // As the server's user (testkit::pg_command: postgres when we are root). The shell
        // becomes PgBouncer; its stdin is a pipe from this process, and a helper stops
        // PgBouncer when the pipe closes, so that it does not outlive a killed test.
        let mut cmd = testkit::pg_command("/bin/sh", &dir);
        cmd.arg("-c")
            .arg(r#"pid=$$; exec 3<&0; (cat <&3 >/dev/null; kill -TERM "$pid") & exec "$0" "$1" 3<&-"#)
            .arg(&bin)
            .arg(&ini)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let mut b = PgBouncer {
            child: Some(child),
            dir,
            port,
        };
        b.wait_listening(&format!("{cmd:?}"));
        Some(b)
    }

    fn wait_listening(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "{what} did not listen on 127.0.0.1:{} ({}):\n{}",
                    self.port,
                    exited.map_or("still running".to_owned(), |s| s.to_string()),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A DSN for `db` through the pooler.
    fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} sslmode=disable",
            self.port
        )
    }

    /// Run a command on the admin console (`pgbouncer` database, simple query protocol).
    fn admin(&self, sql: &str) {
        let mut cmd = Command::new(testkit::pg_bin().join("psql"));
        testkit::hermetic(&mut cmd);
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-d", "pgbouncer", "-c", sql]);
        testkit::run_ok(&mut cmd);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: PgBouncer closes its connections and exits at once.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A cluster and a PgBouncer with `pool_size` server connections in front of it; `None` (after
/// `skip!`) without PgBouncer.
macro_rules! pooled {
    ($pool_size:expr) => {{
        let c = Cluster::start();
        match PgBouncer::start(&c, $pool_size) {
            Some(b) => (c, b),
            None => {
                testkit::skip!(
                    "pgbouncer is not installed (set PGBOUNCER_BIN, or apt-get install pgbouncer)"
                )
            }
        }
    }};
}

/// The errors of every tick, added up.
fn tick_errors(r: &testkit::Run) -> Value {
    let sum = |kind: &str| -> u64 {
        r.of("tick")
            .iter()
            .map(|t| {
                t["errors_by_kind"][kind]
                    .as_u64()
                    .expect("errors_by_kind in tick")
            })
            .sum()
    };
    json!({"statement": sum("statement"), "unknown": sum("unknown"), "connect": sum("connect")})
}

#[test]
fn through_transaction_pooling_prepared_fails_and_extended_does_not() {
    // Six clients, two server connections: each transaction may run on another one.
    let (c, b) = pooled!(2);
    let db = c.create_db();
    let dsn = b.dsn(db.name());
    crate::common::init(&dsn, 1);
    let load = |protocol: &[&str]| {
        let mut args = vec!["--dsn", &dsn, "-c", "6", "-T", "1s", "--tick", "250ms"];
        args.extend_from_slice(protocol);
        run(&args)
    };

    // The default: named statements, prepared on one server connection and executed on
    // another ("does not exist"), or prepared where a session of an earlier process left the
    // same name ("already exists"). Clients fail and reconnect; what committed still counts
    // (exit 0).
    let r = load(&["--protocol", "prepared"]);
    r.expect(0);
    let s = r.summary();
    assert_eq!(s["protocol"], "prepared", "{s}");
    let e = &s["errors_by_kind"];
    assert!(
        num(s, "errors_total") > 0,
        "no error through the pooler: {s}"
    );
    assert_eq!(num(e, "statement"), num(s, "failed"), "{s}");
    assert_eq!(num(e, "unknown"), num(s, "unknown"), "{s}");
    assert_eq!(
        num(s, "errors_total"),
        num(e, "statement") + num(e, "unknown") + num(e, "connect"),
        "{s}"
    );
    assert!(
        s["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("prepared statement")),
        "{s}"
    );
    assert_eq!(
        tick_errors(&r),
        *e,
        "the ticks add up to the summary: {r:#?}"
    );
    // The closing line for a person.
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("load-gen: ") && last.contains(" client errors (statement "),
        "{}",
        r.stderr
    );

    // Unnamed statements, on the same pooler (whose server connections still hold the
    // prepared run's statements): not one error.
    let r = load(&["-M", "extended", "--verify", "--json-only"]);
    r.expect(0);
    let s = r.summary();
    assert_eq!(s["protocol"], "extended", "{s}");
    assert!(num(s, "committed") >= 20, "{s}");
    assert_eq!(
        s["errors_by_kind"],
        json!({"statement": 0, "unknown": 0, "connect": 0}),
        "{s}\n{}",
        b.log()
    );
    assert_eq!(num(s, "errors_total"), 0, "{s}");
    assert_eq!(num(s, "failed"), 0, "{s}");
    assert_eq!(num(s, "reconnects"), 0, "{s}");
    assert_eq!(num(s, "lost"), 0, "{s}");
    assert_eq!(num(s, "present"), num(s, "committed"), "{s}");
    assert!(r.stderr.is_empty(), "--json-only: {}", r.stderr);
}

#[test]
fn a_paused_pooler_is_a_stall_not_an_error() {
    let (c, b) = pooled!(2);
    let db = c.create_db();
    let mut lg = Background::start(
        b.dir(),
        &[
            "--dsn",
            &b.dsn(db.name()),
            "-M",
            "extended",
            "-w",
            "probe",
            "-c",
            "4",
            "--tick",
            "200ms",
        ],
    );
    lg.wait_for(Duration::from_secs(20), "commits", |r| {
        r["type"] == "tick" && r["committed"].as_u64().unwrap_or(0) > 0
    });
    // What a PgBouncer switchover does first and last: the clients' requests wait, unanswered.
    b.admin("PAUSE");
    std::thread::sleep(Duration::from_millis(700));
    b.admin("RESUME");
    let before = lg
        .records()
        .iter()
        .filter(|r| r["type"] == "tick")
        .map(|r| num(r, "committed_total"))
        .max()
        .unwrap_or(0);
    lg.wait_for(Duration::from_secs(20), "commits after the pause", |r| {
        r["type"] == "tick" && num(r, "committed_total") > before
    });
    let r = lg.signal_and_wait(Signal::SIGINT, Duration::from_secs(15));
    r.expect(0);
    let s = r.summary();
    assert_eq!(num(s, "errors_total"), 0, "{s}");
    assert!(num(s, "max_stall_ms") >= 600, "{s}");
    assert!(num(s, "max_write_gap_ms") >= 600, "{s}");
    assert!(num(s, "max_stall_ms") < num(s, "duration_ms"), "{s}");
    assert!(
        r.of("tick").iter().any(|t| num(t, "max_stall_ms") >= 600),
        "the tick in which the pause ended shows it: {r:#?}"
    );
}
