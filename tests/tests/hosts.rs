//! The e2e fixture for the main job: two local hosts made by scripts/hosts-local.sh, migrate.sh
//! run against them, and load-gen in the background whose acknowledged writes are verified at
//! the end (no write lost, no split brain).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgshift_tests::workspace_root;
use serde_json::Value;
use testkit::json_lines;

/// Where the debug builds of the tools are (migrate.sh --bin).
pub fn bin_dir() -> PathBuf {
    testkit::tool_bin("load-gen")
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

pub fn script(name: &str) -> PathBuf {
    workspace_root().join("scripts").join(name)
}

pub fn of_type<'a>(recs: &'a [Value], t: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == t).collect()
}

/// Two local hosts from hosts-local.sh, destroyed on drop.
pub struct Hosts {
    pub dir: PathBuf,
    pub env: std::collections::HashMap<String, String>,
}

impl Hosts {
    pub fn create(extra: &[&str]) -> Hosts {
        let base = testkit::base_dir();
        let dir = base.join(format!("mig-{}-{}", std::process::id(), nanos()));
        let mut cmd = Command::new(script("hosts-local.sh"));
        cmd.arg("create")
            .arg(&dir)
            .args(["--scale", "1", "--pgbench-scale", "1", "--bin"])
            .arg(bin_dir())
            .args(extra);
        testkit::hermetic(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "hosts-local.sh create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.join("hosts.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        Hosts { dir, env }
    }

    pub fn env_file(&self) -> PathBuf {
        self.dir.join("hosts.env")
    }

    /// A keyword of the source's conninfo (host, port).
    pub fn source(&self, key: &str) -> String {
        self.env["SOURCE_DSN"]
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_owned()
    }

    /// DSN of host A (the first source) or B.
    pub fn dsn(&self, which: char) -> String {
        match which {
            'A' => format!(
                "host={} port={} user=postgres dbname=app sslmode=disable",
                self.source("host"),
                self.source("port")
            ),
            _ => format!(
                "host={} port={} user=postgres dbname=app sslmode=disable",
                self.env["TARGET_ADDR"], self.env["TARGET_PORT"]
            ),
        }
    }

    /// Both hosts, following the primary (what the application would use).
    pub fn both(&self) -> String {
        format!(
            "host={},{} port={},{} user=postgres dbname=app sslmode=disable target_session_attrs=read-write",
            self.source("host"),
            self.env["TARGET_ADDR"],
            self.source("port"),
            self.env["TARGET_PORT"]
        )
    }

    /// Both hosts as the application's role of `hosts-local.sh --logical` (a fence stops its
    /// logins on one side, so it writes wherever the move lets it).
    pub fn both_as_app(&self) -> String {
        self.both().replace("user=postgres", "user=app")
    }

    /// The application's one address: the PgBouncer of `hosts-local.sh --pooler`.
    pub fn pooler_dsn(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=app sslmode=disable",
            self.env["POOLER_ADDR"], self.env["POOLER_PORT"]
        )
    }

    pub fn pgdata(&self, which: char) -> PathBuf {
        PathBuf::from(if which == 'A' {
            &self.env["SOURCE_PGDATA"]
        } else {
            &self.env["TARGET_PGDATA"]
        })
    }

    /// `SELECT pg_is_in_recovery()` on one host; None if it does not answer.
    pub fn in_recovery(&self, which: char) -> Option<bool> {
        psql(&self.dsn(which), "SELECT pg_is_in_recovery()").map(|s| s == "t")
    }

    pub fn migrate(&self, args: &[&str]) -> (i32, Vec<Value>, String) {
        self.migrate_env(args, &[])
    }

    pub fn migrate_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, Vec<Value>, String) {
        let (code, stdout, stderr) = self.migrate_raw(args, env);
        (code, json_lines(&stdout), stderr)
    }

    /// The migrate.sh command line for these hosts (script, --hosts-env, --bin, ARGS), without
    /// --yes: what a person types at a terminal.
    pub fn migrate_argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            script("migrate.sh").display().to_string(),
            "--hosts-env".into(),
            self.env_file().display().to_string(),
            "--bin".into(),
            bin_dir().display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    /// The state directory (journal) of this test's migrate.sh runs: PGSHIFT_STATE_DIR.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// migrate.sh --yes (no terminal here to answer its question) in its own process group (a
    /// hook may signal the whole group: `kill 0`), with its journal under this test's
    /// directory. Returns the exit code (-1 when a signal ended it), stdout and stderr.
    pub fn migrate_raw(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        use std::os::unix::process::CommandExt;
        let argv = self.migrate_argv(&[&["--yes"], args].concat());
        let mut cmd = Command::new(&argv[0]);
        cmd.envs(env.iter().copied())
            .env("PGSHIFT_STATE_DIR", self.state_dir());
        cmd.args(&argv[1..]).process_group(0);
        testkit::hermetic(&mut cmd);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), stdout, stderr)
    }

    /// How many of A and B answer as primaries.
    pub fn primaries(&self) -> usize {
        ['A', 'B']
            .iter()
            .filter(|w| self.in_recovery(**w) == Some(false))
            .count()
    }

    /// A's or B's postmaster runs.
    pub fn running(&self, which: char) -> bool {
        std::fs::read_to_string(self.pgdata(which).join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .is_some_and(testkit::pid_alive)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if std::env::var_os("PGSHIFT_KEEP_CLUSTERS").is_some() {
            eprintln!("keeping the hosts in {}", self.dir.display());
            return;
        }
        let _ = Command::new(script("hosts-local.sh"))
            .arg("destroy")
            .arg(&self.dir)
            .output();
    }
}

/// A shell command line that runs `cmd` as the postgres user when this is root (pg_ctl
/// refuses to run as root), as it is otherwise: for hooks that stop or start a server.
pub fn as_postgres(cmd: &str) -> String {
    format!("if [ \"$(id -u)\" = 0 ]; then runuser -u postgres -- {cmd}; else {cmd}; fi")
}

pub fn psql(dsn: &str, sql: &str) -> Option<String> {
    let out = Command::new(testkit::pg_bin().join("psql"))
        .args(["-XAtq", "-d", dsn, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// load-gen running in the background against both hosts.
pub struct Load {
    child: Child,
    log: PathBuf,
    /// Where `load-gen verify` looks (the hosts themselves, following the primary).
    dsn: String,
    /// Copies load-gen's stdout to a file so it never blocks on a full pipe.
    drain: Option<std::thread::JoinHandle<PathBuf>>,
}

impl Load {
    pub fn start(hosts: &Hosts) -> Load {
        Load::start_with(hosts, &hosts.both(), &[])
    }

    /// load-gen against `dsn` (e.g. a pooler's), with extra arguments.
    pub fn start_with(hosts: &Hosts, dsn: &str, extra: &[&str]) -> Load {
        Load::start_verifying(hosts, dsn, &hosts.both(), extra)
    }

    /// [`Load::start_with`], verified at the end against `verify_dsn` (the final primary,
    /// where "the read-write host" does not name it: both sides of a logical move are).
    pub fn start_verifying(hosts: &Hosts, dsn: &str, verify_dsn: &str, extra: &[&str]) -> Load {
        let log = hosts.dir.join(format!("acked-{}.jsonl", nanos()));
        let mut cmd = Command::new(testkit::tool_bin("load-gen"));
        cmd.args([
            "--dsn",
            dsn,
            "-c",
            "4",
            "-w",
            "mixed",
            "--json-only",
            "--log",
        ])
        .arg(&log)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        testkit::hermetic(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        // Wait for a tick with commits: the load is running.
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "load-gen exited before its first tick: {seen}"
            );
            seen.push_str(&line);
            if line.contains(r#""type":"tick""#) && !line.contains(r#""committed":0,"#) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no commits from load-gen: {seen}"
            );
        }
        let path = hosts.dir.join(format!("load-{}.jsonl", nanos()));
        let mut file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut file, seen.as_bytes()).unwrap();
        let drain = std::thread::spawn(move || {
            let _ = std::io::copy(&mut reader, &mut file);
            path
        });
        Load {
            child,
            log,
            dsn: verify_dsn.to_owned(),
            drain: Some(drain),
        }
    }

    /// SIGINT, then the run's records (summary last).
    pub fn stop(&mut self) -> Vec<Value> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        let path = self.drain.take().expect("stopped once").join().unwrap();
        let recs = json_lines(&std::fs::read_to_string(path).unwrap());
        let summary = summary(&recs);
        assert!(
            status.code() == Some(0) || status.code() == Some(1),
            "load-gen failed: {status} {summary}"
        );
        recs
    }

    /// Stop, then `load-gen verify` against the final primary: no acknowledged write may be
    /// lost, none may be split brain. Returns the run's records.
    pub fn stop_and_verify(mut self) -> Vec<Value> {
        let recs = self.stop();
        let mut cmd = Command::new(testkit::tool_bin("load-gen"));
        cmd.args(["verify", "--dsn", &self.dsn, "--log"])
            .arg(&self.log);
        testkit::hermetic(&mut cmd);
        let out = cmd.output().unwrap();
        let verified = json_lines(&String::from_utf8_lossy(&out.stdout));
        let s = summary(&verified);
        assert!(
            s["acked"].as_u64().unwrap() > 0,
            "no acknowledged writes: the load did not run"
        );
        assert_eq!(s["lost"], 0, "acknowledged writes lost: {s}");
        assert_eq!(s["split_brain"], 0, "split brain: {s}");
        assert_eq!(out.status.code(), Some(0), "{s}");
        recs
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `before_base_copy` hook that runs `action` (a shell command; `$PGSHIFT_MIGRATE_PID` is
/// the run's) once `dir` holds 6 MB: the copy is then well under way (30 s at most).
pub fn once_copied_6mb(dir: &std::path::Path, action: &str) -> String {
    format!(
        "before_base_copy=(for i in $(seq 300); do [ \"$(du -sm {} 2>/dev/null | cut -f1)\" -ge 6 ] 2>/dev/null && break; sleep 0.1; done; {action}) >/dev/null 2>&1 &",
        dir.display()
    )
}

/// A `before_base_copy` hook that runs `action` once a resumed copy's pipeline runs
/// (`pgdata-sync apply`; 30 s at most).
pub fn once_resuming(action: &str) -> String {
    format!(
        "before_base_copy=(for i in $(seq 600); do pgrep -f 'pgdata-sync apply' >/dev/null && break; sleep 0.05; done; {action}) >/dev/null 2>&1 &"
    )
}

pub fn summary(recs: &[Value]) -> &Value {
    let s = recs.last().expect("records");
    assert_eq!(
        s["type"], "summary",
        "last record must be the summary: {recs:?}"
    );
    s
}

/// The summary's `message` (empty when it has none).
pub fn summary_message(recs: &[Value]) -> String {
    summary(recs)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The switchover phase record, and a check of its proofs.
pub fn switchover(recs: &[Value]) -> &Value {
    let proofs: Vec<&str> = of_type(recs, "proof")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in [
        "source_clean_shutdown",
        "target_replayed_final_checkpoint",
        "target_writable",
        "old_source_fenced",
    ] {
        assert!(proofs.contains(&want), "missing proof {want}: {proofs:?}");
    }
    let clean = of_type(recs, "proof")
        .into_iter()
        .find(|p| p["name"] == "source_clean_shutdown")
        .unwrap();
    assert_eq!(clean["cluster_state"], "shut down");
    of_type(recs, "phase")
        .into_iter()
        .find(|p| p["name"] == "switchover")
        .expect("switchover phase")
}

/// The clients' longest write gap must overlap the switchover, and cannot be shorter than the
/// time during which no server accepted writes at all (source down, target not yet promoted):
/// the report and load-gen must tell the same story.
pub fn assert_gap_matches(load: &[Value], sw: &Value) {
    let start = load.iter().find(|r| r["type"] == "start").expect("start");
    let s = summary(load);
    let started = chrono_ms(start["started_at"].as_str().unwrap());
    let gap = s["max_write_gap_ms"].as_i64().unwrap();
    let gap_from = started + s["max_write_gap_from_ms"].as_i64().unwrap();
    let gap_to = gap_from + gap;
    let (stop_at, stopped_at, writable_at) = (
        sw["stop_at_ms"].as_i64().unwrap(),
        sw["stopped_at_ms"].as_i64().unwrap(),
        sw["writable_at_ms"].as_i64().unwrap(),
    );
    // 20 ms for the two processes' clock reads; one machine, one clock.
    assert!(
        gap_from <= writable_at + 20 && gap_to + 20 >= stop_at,
        "longest client gap [{gap_from}, {gap_to}] does not overlap the switchover [{stop_at}, {writable_at}]"
    );
    assert!(
        gap + 20 >= writable_at - stopped_at,
        "clients saw a {gap} ms gap, shorter than the {} ms without any primary",
        writable_at - stopped_at
    );
}

/// RFC 3339 UTC (`2026-11-25T19:27:52.591Z`) to epoch milliseconds, via `date`.
pub fn chrono_ms(ts: &str) -> i64 {
    let out = Command::new("date")
        .args(["-d", ts, "+%s%3N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// What answers through the pooler within `secs`: `Some("f|PORT")` (writable, its port), or
/// None when nothing answers in time (the pooler is paused, or down).
pub fn through_pooler(hosts: &Hosts, secs: u32) -> Option<String> {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(testkit::pg_bin().join("psql"))
        .args(["-XAtq", "-d", &hosts.pooler_dsn(), "-c"])
        .arg("SELECT pg_is_in_recovery(), current_setting('port')")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
