//! The fixture: two clusters ready for logical replication, a schema that exercises what a
//! logical move must carry (identity and serial keys, a free-standing sequence, a generated
//! column, a partitioned table, an enum, non-ASCII text keys, a table without a primary key),
//! an application role, and a writer that keeps writing as that role wherever it may log in.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{tool, Cluster, Run};

/// A server ready to publish and to subscribe.
pub fn logical_cluster(name: &str, host: &str, bin: Option<&Path>) -> Cluster {
    let mut b = Cluster::builder()
        .name(name)
        .host(host)
        .setting("wal_level", "logical")
        .setting("max_replication_slots", "20")
        .setting("max_wal_senders", "20")
        .setting("max_logical_replication_workers", "8")
        .setting("max_worker_processes", "16")
        // Table-copy workers start sooner (the default waits up to 5 s between launches).
        .setting("wal_retrieve_retry_interval", "'200ms'");
    if let Some(bin) = bin {
        b = b.bin(bin);
    }
    b.start()
}

/// The schema and rows of database `app` on the source, owned by the role `app`.
pub const SEED: &str = "
CREATE TYPE mood AS ENUM ('calm', 'busy', 'frantic');
CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL,
                    total int GENERATED ALWAYS AS (qty * 2) STORED, mood mood);
INSERT INTO items (name, qty, mood)
  SELECT 'item ' || g, g, (ARRAY['calm', 'busy', 'frantic']::mood[])[1 + g % 3]
  FROM generate_series(1, 20000) g;
CREATE TABLE cities (name text PRIMARY KEY, pop int);
INSERT INTO cities VALUES ('Zürich', 1), ('Łódź', 2), ('東京', 3), ('São Paulo', 4), ('🦀', 5);
CREATE TABLE events (id int GENERATED ALWAYS AS IDENTITY, region text NOT NULL, at date NOT NULL,
                     PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
INSERT INTO events (region, at) SELECT CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END,
  date '2026-01-01' + g FROM generate_series(1, 500) g;
CREATE TABLE audit (at timestamptz NOT NULL DEFAULT now(), what text);
INSERT INTO audit (what) SELECT 'boot ' || g FROM generate_series(1, 100) g;
CREATE SEQUENCE tickets START 1000;
SELECT nextval('tickets') FROM generate_series(1, 7);
-- Set back: its next value is 500 (is_called false; pg_sequences shows no last_value).
CREATE SEQUENCE counters;
SELECT setval('counters', 500, false);
";

/// Two clusters (the target of PostgreSQL `target_bin`'s major, or the same), the role `app`
/// and database `app` seeded on the source.
pub struct Pair {
    pub source: Cluster,
    pub target: Cluster,
    pub dir: tempfile::TempDir,
}

impl Pair {
    pub fn new(target_bin: Option<&Path>) -> Pair {
        let (source, target) = std::thread::scope(|s| {
            let a = s.spawn(|| logical_cluster("source", "127.0.0.1", None));
            let b = s.spawn(|| logical_cluster("target", "127.0.0.2", target_bin));
            (a.join().unwrap(), b.join().unwrap())
        });
        source.psql("postgres", "CREATE ROLE app LOGIN");
        source.psql("postgres", "CREATE DATABASE app OWNER app");
        let mut c =
            postgres::Client::connect(&format!("{} user=app", source.dsn("app")), postgres::NoTls)
                .unwrap();
        c.batch_execute(SEED).unwrap();
        Pair {
            source,
            target,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("journal.jsonl")
    }

    /// `pg-logical STEP --source ... --target ... --databases app --journal ... ARGS`.
    pub fn step(&self, step: &str, args: &[&str]) -> Run {
        self.step_env(step, args, &[])
    }

    pub fn step_env(&self, step: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(step, args);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run pg-logical");
        Run::new(format!("pg-logical {step} {args:?}"), out)
    }

    pub fn command(&self, step: &str, args: &[&str]) -> std::process::Command {
        self.command_in("postgres", step, args)
    }

    /// [`Pair::step`] with DSNs that name database `db` (as an application's DSN does).
    pub fn step_in(&self, db: &str, step: &str, args: &[&str]) -> Run {
        let out = self
            .command_in(db, step, args)
            .output()
            .expect("run pg-logical");
        Run::new(format!("pg-logical {step} {args:?} (DSNs in {db})"), out)
    }

    /// [`Pair::command`] with DSNs that name database `db`.
    pub fn command_in(&self, db: &str, step: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = tool(testkit::tool_bin("pg-logical"));
        cmd.arg(step)
            .args(["--source", &self.source.dsn(db)])
            .args(["--target", &self.target.dsn(db)])
            .args(["--databases", "app", "--journal"])
            .arg(self.journal())
            .args(args);
        cmd
    }

    /// The same pair the other way.
    pub fn reversed_step(&self, step: &str, args: &[&str]) -> Run {
        let mut cmd = tool(testkit::tool_bin("pg-logical"));
        cmd.arg(step)
            .args(["--source", &self.target.dsn("postgres")])
            .args(["--target", &self.source.dsn("postgres")])
            .args(["--databases", "app", "--journal"])
            .arg(self.journal())
            .args(args);
        Run::new(
            format!("pg-logical {step} (reversed) {args:?}"),
            cmd.output().unwrap(),
        )
    }

    /// Whether the role `app` may log in to `c` (what a fence takes away).
    pub fn app_logs_in(c: &Cluster) -> bool {
        postgres::Client::connect(&format!("{} user=app", c.dsn("app")), postgres::NoTls).is_ok()
    }

    /// Sides that take the application's writes now: never more than one.
    pub fn open_sides(&self) -> usize {
        usize::from(Self::app_logs_in(&self.source)) + usize::from(Self::app_logs_in(&self.target))
    }

    /// The state `pg-logical status` reads from the servers.
    pub fn state(&self) -> String {
        let r = self.step("status", &[]);
        r.summary()["state"].as_str().unwrap_or("?").to_owned()
    }
}

/// Names of the proofs a run emitted, in order.
pub fn proofs(r: &Run) -> Vec<String> {
    r.of("proof")
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// pg-checksum of database app on both sides (pgshift's own schema aside): its exit code.
pub fn checksum(a: &Cluster, b: &Cluster) -> (i32, Value) {
    let out = tool(testkit::tool_bin("pg-checksum"))
        .args(["--source", &a.dsn("app"), "--target", &b.dsn("app")])
        .args(["--exclude", "pgshift.*", "--json"])
        .output()
        .unwrap();
    let r = Run::new("pg-checksum", out);
    (r.code, r.summary().clone())
}

/// A client that writes as the role `app` to whichever side lets it log in, one row per
/// transaction, and remembers each row whose COMMIT was acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(a: &Cluster, b: &Cluster) -> Writer {
        let dsns = [
            format!("{} user=app connect_timeout=2", a.dsn("app")),
            format!("{} user=app connect_timeout=2", b.dsn("app")),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, k) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut n: i64 = 0;
            let mut client: Option<postgres::Client> = None;
            while !s.load(Ordering::SeqCst) {
                if client.is_none() {
                    client = dsns
                        .iter()
                        .find_map(|d| postgres::Client::connect(d, postgres::NoTls).ok());
                    if client.is_none() {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
                n += 1;
                let c = client.as_mut().unwrap();
                match c.query_one(
                    "INSERT INTO items (name, qty) VALUES ('writer', $1) RETURNING id",
                    &[&(n as i32)],
                ) {
                    Ok(row) => k.lock().unwrap().push(row.get(0)),
                    Err(_) => client = None,
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    /// How many writes were acknowledged so far.
    pub fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Wait until `more` further writes were acknowledged (bounded).
    pub fn wait_for_more(&self, more: usize) {
        let start = self.count();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < start + more {
            assert!(Instant::now() < deadline, "the writer made no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop; every acknowledged row must be on `primary`.
    pub fn stop_and_check(mut self, primary: &Cluster) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let mut c = primary.connect("app");
        let present: i64 = c
            .query_one("SELECT count(*) FROM items WHERE id = ANY($1)", &[&acked])
            .unwrap()
            .get(0);
        assert_eq!(
            present as usize,
            acked.len(),
            "acknowledged writes missing on the final primary"
        );
        acked.len()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
