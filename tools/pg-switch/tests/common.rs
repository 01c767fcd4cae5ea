//! The fixture: two clusters, one a streaming standby of the other, and pg-switch between
//! them in either direction.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Cluster, Run};

/// A primary and its standby; `a` starts as the primary. Which one is the primary changes as
/// tests switch back and forth: [`Pair::primary`] and [`Pair::standby`] look.
pub struct Pair {
    pub a: Cluster,
    pub b: Cluster,
    dir: tempfile::TempDir,
}

/// `pg_is_in_recovery()`, or None when the cluster does not answer.
pub fn in_recovery(c: &Cluster) -> Option<bool> {
    let mut cmd = testkit::pg_command("psql", c.dir());
    cmd.args([
        "-XAtq",
        "-d",
        &c.dsn("postgres"),
        "-c",
        "SELECT pg_is_in_recovery()",
    ])
    .env("PGCONNECT_TIMEOUT", "3");
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim() == "t")
}

/// The cluster's postmaster runs.
pub fn running(c: &Cluster) -> bool {
    c.postmaster_pid().is_some_and(testkit::pid_alive)
}

/// The fence pg-switch writes: standby.signal, and a primary_conninfo naming `to`.
pub fn fenced_towards(c: &Cluster, to: &Cluster) -> bool {
    let auto =
        std::fs::read_to_string(c.data_dir().join("postgresql.auto.conf")).unwrap_or_default();
    c.data_dir().join("standby.signal").exists()
        && auto.lines().any(|l| {
            l.starts_with("primary_conninfo") && l.contains(&format!("port={}", to.port()))
        })
}

impl Pair {
    pub fn new() -> Pair {
        let a = Cluster::builder().name("a").start();
        let b = a.standby();
        a.psql(
            "postgres",
            "CREATE TABLE acked(id serial PRIMARY KEY, at timestamptz DEFAULT now())",
        );
        a.wait_replayed(&b, Duration::from_secs(30));
        let dir = tempfile::tempdir().unwrap();
        Pair { a, b, dir }
    }

    /// Two clusters the test made itself.
    pub fn of(a: Cluster, b: Cluster) -> Pair {
        Pair {
            a,
            b,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("journal.jsonl")
    }

    /// The primary and the other one, by asking them; panics unless exactly one is primary.
    pub fn primary(&self) -> (&Cluster, &Cluster) {
        match (in_recovery(&self.a), in_recovery(&self.b)) {
            (Some(false), Some(false)) => panic!("two primaries"),
            (Some(false), _) => (&self.a, &self.b),
            (_, Some(false)) => (&self.b, &self.a),
            other => panic!("no primary: {other:?}"),
        }
    }

    /// How many of the two answer as primaries.
    pub fn primaries(&self) -> usize {
        [&self.a, &self.b]
            .iter()
            .filter(|c| in_recovery(c) == Some(false))
            .count()
    }

    fn fence_file(&self, to: &Cluster) -> PathBuf {
        let f = self.dir.path().join(format!("fence-{}", to.port()));
        std::fs::write(
            &f,
            format!(
                "host={} port={} user=postgres application_name=pgshift_rejoin",
                to.host(),
                to.port()
            ),
        )
        .unwrap();
        f
    }

    /// pg-switch from `from` to `to`, with extra arguments and environment.
    pub fn switch(
        &self,
        from: &Cluster,
        to: &Cluster,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        self.switch_with(from, &to.dsn("postgres"), to, extra, env)
    }

    /// The same, reaching the target over SQL through `target_dsn`.
    pub fn switch_with(
        &self,
        from: &Cluster,
        target_dsn: &str,
        to: &Cluster,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Run {
        let mut cmd = testkit::tool(env!("CARGO_BIN_EXE_pg-switch"));
        cmd.arg("--source")
            .arg(from.dsn("postgres"))
            .arg("--source-pgdata")
            .arg(from.data_dir())
            .arg("--target")
            .arg(target_dsn)
            .arg("--target-pgdata")
            .arg(to.data_dir())
            .arg("--fence-conninfo-file")
            .arg(self.fence_file(to))
            .arg("--journal")
            .arg(self.journal())
            .arg("--pg-bin")
            .arg(testkit::pg_bin())
            .args(extra)
            .envs(env.iter().copied());
        let what = format!("pg-switch {} -> {} {extra:?}", from.name(), to.name());
        let run = Run::new(what, cmd.output().unwrap());
        assert_documented(&run);
        run
    }

    /// Make the fenced old primary `c` run again: it comes up as a standby of the other.
    pub fn restart_as_standby(c: &mut Cluster, of: &Cluster) {
        assert!(
            c.data_dir().join("standby.signal").exists(),
            "{} is not fenced",
            c.name()
        );
        if !running(c) {
            c.start_again();
        }
        wait_streaming(of, c);
    }

    /// Write a row on the primary and wait until the standby replayed it.
    pub fn write_and_sync(&self) {
        let (p, s) = self.primary();
        p.psql("postgres", "INSERT INTO acked DEFAULT VALUES");
        p.wait_replayed(s, Duration::from_secs(30));
    }
}

/// Wait until `standby` streams from `primary`.
pub fn wait_streaming(primary: &Cluster, standby: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut cmd = testkit::pg_command("psql", primary.dir());
        cmd.args([
            "-XAtq",
            "-d",
            &primary.dsn("postgres"),
            "-c",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        ]);
        if cmd
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not stream from {}; its log:\n{}",
            standby.name(),
            primary.name(),
            standby.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `proof` record named `name`.
pub fn proof<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.of("proof")
        .into_iter()
        .rfind(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no proof {name}\n{}", run.dump()))
}

/// The `step` records of the journal, in order.
pub fn journal_steps(path: &Path) -> Vec<String> {
    testkit::json_lines(&std::fs::read_to_string(path).unwrap())
        .iter()
        .filter(|r| r["by"] == "pg-switch")
        .map(|r| r["step"].as_str().unwrap().to_owned())
        .collect()
}

/// Every record a run wrote is documented in shared/PROTOCOL.md: its type under the
/// pg-switch section, and each proof and step by name.
pub fn assert_documented(run: &Run) {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/PROTOCOL.md");
        let all = std::fs::read_to_string(path).unwrap();
        let start = all.find("### pg-switch").expect("a pg-switch section");
        let end = all[start..]
            .find("\n### scripts")
            .map_or(all.len(), |e| start + e);
        all[start..end].to_owned()
    });
    for r in &run.records {
        let t = r["type"].as_str().unwrap_or_default();
        if t == "error" {
            continue; // a common record, documented at the top
        }
        assert!(
            doc.contains(&format!("#### `{t}`")),
            "record type {t} is not in PROTOCOL.md: {r}"
        );
        if t == "proof" || t == "step" {
            let name = r["name"].as_str().unwrap();
            assert!(
                doc.contains(&format!("`{name}`")),
                "{t} {name} is not in PROTOCOL.md: {r}"
            );
        }
    }
}
