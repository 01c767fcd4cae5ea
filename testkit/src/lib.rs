//! Throwaway PostgreSQL clusters for pgshift's tests: "two hosts" are two clusters on
//! loopback ports.
//!
//! What `pg_tmp`/pgtemp do, shaped for a 2-core CI box:
//! - `initdb` runs once per machine and option set into a cached template; each cluster is a
//!   copy of it (`cp -a`, ~50 ms instead of ~1 s).
//! - The server runs as the `postgres` user when the tests run as root (initdb and postgres
//!   refuse root), and as the current user otherwise.
//! - Each cluster gets a free loopback port, its own socket directory, extra settings per
//!   test, and is waited for with `pg_isready`.
//! - Dropping a [`Cluster`] stops it (`-m immediate`) and removes its directory. A watchdog
//!   process does the same if the test process dies first (panic=abort, SIGKILL, a static
//!   that is never dropped), so no server outlives its test.
//! - [`Cluster::standby`] makes a streaming standby with `pg_basebackup -R`.
//!
//! Binaries come from `PG_BIN` (default `/usr/lib/postgresql/15/bin`). Every helper that runs
//! a command panics with the command, its exit status, stdout, stderr and the server log.
//!
//! [`run`] is the other half of a tool test: the tool's hermetic command ([`tool`]) and its
//! finished run read back ([`Run`]: exit code, stdout, stderr, JSON records). [`browser`] runs
//! headless Chromium for tests of HTML pages.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod browser;
pub mod run;
pub mod sshd;
pub use run::{json_lines, tool, Run};
pub use sshd::Sshd;

/// True if process `pid` exists and is not a zombie. (Reparented servers can stay zombies
/// for a long time where PID 1 does not reap, as in some containers.)
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Where the PostgreSQL binaries are: `PG_BIN`, else Debian's postgresql-15.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Where the server binaries of PostgreSQL `major` are: Debian's package
/// (`/usr/lib/postgresql/MAJOR/bin`), else what `scripts/fetch-pg.sh` put under
/// `$PGSHIFT_PG_DIR` (default `/usr/local/lib/pgshift/pg` for root, `~/.cache/pgshift/pg`
/// otherwise). `None` if neither has a `postgres` that runs.
pub fn pg_major_bin(major: u32) -> Option<PathBuf> {
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    let fetched = std::env::var_os("PGSHIFT_PG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if nix::unistd::geteuid().is_root() {
                PathBuf::from("/usr/local/lib/pgshift/pg")
            } else {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/pgshift/pg")
            }
        })
        .join(major.to_string())
        .join("bin");
    [debian, fetched].into_iter().find(|b| {
        Command::new(b.join("postgres"))
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {major}.")))
    })
}

/// The uid/gid to run the server as: `postgres` when we are root, else ourselves (`None`).
pub fn run_as() -> Option<(u32, u32)> {
    static RUN_AS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("running as root, but there is no 'postgres' user to run the server as (run `make setup`)");
        let ids = (user.uid.as_raw(), user.gid.as_raw());
        warn_if_binaries_unreachable(ids);
        Some(ids)
    })
}

/// Servers run as `postgres` execute pgshift's binaries (archive_command, restore_command),
/// so they must reach the build directory; say so once, loudly, when they cannot (a checkout
/// in a private 0700 directory). `make test` grants it (scripts/grant-test-access.sh).
fn warn_if_binaries_unreachable((uid, gid): (u32, u32)) {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    else {
        return;
    };
    let reachable = Command::new("test")
        .arg("-x")
        .arg(&dir)
        .uid(uid)
        .gid(gid)
        .status()
        .is_ok_and(|s| s.success());
    if !reachable {
        eprintln!(
            "testkit: warning: the postgres user cannot reach {}: servers started by the tests \
             cannot run pgshift's binaries from there; run `make test` (it grants access with \
             scripts/grant-test-access.sh) or clone into a directory others can traverse",
            dir.display()
        );
    }
}

/// A command that runs as the server's user (see [`run_as`]), in `cwd`.
pub fn pg_command(program: impl AsRef<Path>, cwd: &Path) -> Command {
    let program = program.as_ref();
    let program = if program.is_absolute() {
        program.to_path_buf()
    } else {
        pg_bin().join(program)
    };
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd);
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid).env("HOME", cwd);
    }
    hermetic(&mut cmd);
    cmd
}

/// The `PG*` variables libpq reads; removed from every command so tests are hermetic.
pub const PG_ENV_VARS: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLROOTCERT",
    "PGSSLSNI",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGCHANNELBINDING",
    "PGLOADBALANCEHOSTS",
    "PGDATA",
    "PGSERVICE",
    "PGSERVICEFILE",
];

/// Remove the `PG*` variables from a command (for running pgshift tools in tests).
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    for var in PG_ENV_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Run a command to completion; panic with everything a reader needs if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{}", describe_failure(cmd, &out, None));
    }
    out
}

fn describe_failure(cmd: &Command, out: &Output, log: Option<&Path>) -> String {
    let mut s = format!(
        "command failed: {cmd:?}\n  cwd: {:?}\n  status: {}\n  stdout: {}\n  stderr: {}",
        cmd.get_current_dir(),
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    if let Some(log) = log {
        let _ = write!(s, "\n  server log {}:\n{}", log.display(), tail(log, 40));
    }
    s
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The directory all clusters live under (world-writable with the sticky bit, like /tmp, so
/// root and non-root runs can share it: each makes its own initdb template and lock there).
/// Tests that put their own directories there make it through this, never by hand.
pub fn base_dir() -> PathBuf {
    let base = std::env::var_os("PGSHIFT_TESTKIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("pgshift-testkit"));
    if !base.is_dir() {
        let _ = fs::create_dir_all(&base);
        let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o1777));
    }
    base
}

fn chown_to_server_user(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
    }
}

/// A free TCP port on `host` (the kernel's choice; the server binds it moments later, and
/// [`ClusterBuilder::start`] retries with another port if someone else was quicker).
pub fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {host}: {e}"))
}

/// The cached `initdb` output for these arguments, made once per machine (under a file lock,
/// so parallel test processes wait for one `initdb` instead of running ten).
fn template(bin: &Path, initdb_args: &[String]) -> PathBuf {
    let mut key = format!("{}|{:?}|{:?}", bin.display(), initdb_args, run_as());
    key = format!("{:016x}", fnv1a(key.as_bytes()));
    let base = base_dir();
    let dir = base.join(format!("template-{key}"));
    if dir.join("PG_VERSION").exists() {
        return dir;
    }
    let lock_path = base.join(format!("template-{key}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
    let _ = fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o666));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
    if !dir.join("PG_VERSION").exists() {
        let tmp = base.join(format!("template-{key}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).unwrap_or_else(|e| panic!("mkdir {}: {e}", tmp.display()));
        chown_to_server_user(&tmp);
        let mut cmd = pg_command(bin.join("initdb"), &base);
        cmd.arg("-D").arg(&tmp).args(initdb_args);
        run_ok(&mut cmd);
        fs::rename(&tmp, &dir).unwrap_or_else(|e| panic!("rename template: {e}"));
    }
    drop(lock);
    dir
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Default `initdb` arguments: trust auth for the fixture, UTF-8, a collation-neutral locale,
/// no fsync of the template.
pub const DEFAULT_INITDB_ARGS: &[&str] = &[
    "--username=postgres",
    "--auth=trust",
    "--encoding=UTF8",
    "--locale=C.UTF-8",
    "--no-sync",
];

/// Settings for a cluster: what a test may change before [`ClusterBuilder::start`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    name: String,
    host: String,
    bin: PathBuf,
    settings: Vec<(String, String)>,
    hba: Vec<String>,
    initdb_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            name: "pg".into(),
            host: "127.0.0.1".into(),
            bin: pg_bin(),
            settings: Vec::new(),
            hba: Vec::new(),
            initdb_args: DEFAULT_INITDB_ARGS.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        }
    }
}

impl ClusterBuilder {
    /// A name for messages and the directory prefix (e.g. `source`, `target`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Listen on this loopback address (e.g. `127.0.0.2` for a "second host").
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_owned();
        self
    }

    /// A `postgresql.conf` setting; the value is written as given (quote strings yourself:
    /// `.setting("archive_command", "'wal-ship push %p --to /a'")`).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The server's binaries (initdb, pg_ctl, postgres) from `dir` instead of `PG_BIN`: another
    /// major version (see [`pg_major_bin`]). Client tools (psql, pg_isready) stay `PG_BIN`'s.
    pub fn bin(mut self, dir: &Path) -> Self {
        self.bin = dir.to_owned();
        self
    }

    /// A `pg_hba.conf` line placed before the fixture's trust lines (first match wins).
    pub fn hba(mut self, line: &str) -> Self {
        self.hba.push(line.to_owned());
        self
    }

    /// An environment variable for the server (set on `pg_ctl start`, at every start): e.g.
    /// `LOCPATH` for a locale generated by the test.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// An extra `initdb` argument (e.g. `--data-checksums`); makes its own template.
    pub fn initdb_arg(mut self, arg: &str) -> Self {
        self.initdb_args.push(arg.to_owned());
        self
    }

    /// Create the cluster from the template and start it.
    pub fn start(self) -> Cluster {
        let template = template(&self.bin, &self.initdb_args);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", self.name))
            .tempdir_in(base_dir())
            .expect("create cluster dir")
            .keep();
        chown_to_server_user(&dir);
        let data = dir.join("data");
        run_ok(Command::new("cp").arg("-a").arg(&template).arg(&data));
        let mut hba = self.hba.join("\n");
        hba.push('\n');
        hba.push_str(&fs::read_to_string(data.join("pg_hba.conf")).expect("read pg_hba.conf"));
        // Other loopback addresses are "other hosts": let them in like 127.0.0.1.
        hba.push_str("host all all 127.0.0.0/8 trust\nhost replication all 127.0.0.0/8 trust\n");
        fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        Cluster::launch(self, dir, data)
    }
}

/// How to stop a server (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Disconnect clients, checkpoint, shut down cleanly.
    Fast,
    /// Quit without a checkpoint (crash recovery at the next start).
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A running (or stopped) throwaway cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    host: String,
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    running: bool,
    watchdog: Option<std::process::Child>,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// A cluster with default settings.
    pub fn start() -> Cluster {
        Cluster::builder().start()
    }

    /// Start building one.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    fn launch(b: ClusterBuilder, dir: PathBuf, data: PathBuf) -> Cluster {
        let mut conf = String::from("\n# testkit\n");
        for (k, v) in [
            ("listen_addresses", format!("'{}'", b.host)),
            ("unix_socket_directories", format!("'{}'", dir.display())),
            ("fsync", "off".to_owned()),
            ("wal_keep_size", "'128MB'".to_owned()),
            ("max_wal_senders", "10".to_owned()),
            ("max_replication_slots", "10".to_owned()),
            ("hot_standby", "on".to_owned()),
            ("log_line_prefix", "'%m [%p] '".to_owned()),
        ] {
            let _ = writeln!(conf, "{k} = {v}");
        }
        for (k, v) in &b.settings {
            let _ = writeln!(conf, "{k} = {v}");
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        f.write_all(conf.as_bytes()).expect("write postgresql.conf");
        let mut cluster = Cluster {
            name: b.name,
            host: b.host,
            bin: b.bin,
            port: 0,
            log: dir.join("server.log"),
            dir,
            data,
            running: false,
            watchdog: None,
            env: b.env,
        };
        cluster.spawn_watchdog();
        cluster.start_on_free_port();
        cluster
    }

    /// Bind a fresh port and start; another process may take the port between our check and
    /// the server's bind, so try a few.
    fn start_on_free_port(&mut self) {
        for attempt in 0..5 {
            self.port = free_port(&self.host);
            self.append_conf(&format!("port = {}", self.port));
            match self.try_start() {
                Ok(()) => return,
                Err(msg) if attempt < 4 && msg.contains("could not bind") => continue,
                Err(msg) => panic!("{msg}"),
            }
        }
    }

    fn append_conf(&self, line: &str) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(f, "{line}").expect("write postgresql.conf");
    }

    /// A watchdog that stops the server and removes the directory once this process is gone.
    /// It sits in its own process group so a runner that kills the test's group spares it.
    fn spawn_watchdog(&mut self) {
        let script = r#"
            owner=$1; data=$2; dir=$3
            # alive PID: exists and is not a zombie (PID 1 may not reap reparented servers)
            alive() { s=$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2); [ -n "$s" ] && [ "$s" != Z ]; }
            while alive "$owner"; do sleep 0.5; done
            if [ -f "$data/postmaster.pid" ]; then
                pid=$(head -n 1 "$data/postmaster.pid")
                kill -QUIT "$pid" 2>/dev/null
                for _ in 1 2 3 4 5 6 7 8 9 10; do alive "$pid" || break; sleep 0.2; done
                kill -KILL "$pid" 2>/dev/null
            fi
            rm -rf "$dir"
        "#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("testkit-watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.data)
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn the cluster watchdog");
        self.watchdog = Some(child);
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = pg_command(self.bin.join("pg_ctl"), &self.dir);
        cmd.arg("-D").arg(&self.data);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn try_start(&mut self) -> Result<(), String> {
        // The log is appended to across restarts: look only at what this start writes.
        let log_offset = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.pg_ctl();
        cmd.arg("-l").arg(&self.log).arg("-W").arg("start");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(describe_failure(&cmd, &out, Some(&self.log)));
        }
        self.running = true;
        self.wait_ready(log_offset, Duration::from_secs(60))
    }

    /// Poll `pg_isready` until the server accepts connections (a standby does once it is
    /// consistent), or fail with the log if the postmaster died.
    fn wait_ready(&mut self, log_offset: u64, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let mut cmd = pg_command("pg_isready", &self.dir);
            cmd.args([
                "-q",
                "-t",
                "1",
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
            ]);
            if cmd.stdin(Stdio::null()).status().is_ok_and(|s| s.success()) {
                return Ok(());
            }
            let new_log = fs::read(&self.log)
                .map(|b| {
                    String::from_utf8_lossy(&b[(log_offset as usize).min(b.len())..]).into_owned()
                })
                .unwrap_or_default();
            let bind_failed = new_log.contains("could not bind")
                || new_log.contains("could not create any TCP/IP sockets");
            // pg_ctl -W returns before the postmaster writes its pid file; give it a moment.
            let alive = match self.postmaster_pid() {
                Some(pid) => pid_alive(pid),
                None => started.elapsed() < Duration::from_secs(5),
            };
            if bind_failed || !alive || started.elapsed() > limit {
                self.running = alive && !bind_failed;
                return Err(format!(
                    "cluster {} on {}:{} did not become ready{}; server log {}:\n{}",
                    self.name,
                    self.host,
                    self.port,
                    if bind_failed {
                        " (could not bind its port)"
                    } else if alive {
                        " in time"
                    } else {
                        " (postmaster exited)"
                    },
                    self.log.display(),
                    tail(&self.log, 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The name given at build time.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The loopback address it listens on.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    /// The cluster's own directory (data dir, socket, log); scratch files may go here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The server log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    /// A libpq conninfo string for database `db` (TCP, user `postgres`).
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db} sslmode=disable",
            self.host, self.port
        )
    }

    /// The same as a URL.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@{}:{}/{db}?sslmode=disable",
            self.host, self.port
        )
    }

    /// A blocking client on database `db`.
    pub fn connect(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.dsn(db), postgres::NoTls).unwrap_or_else(|e| {
            panic!(
                "connect to {} ({}): {e}\nserver log:\n{}",
                self.name,
                self.dsn(db),
                self.log_tail(20)
            )
        })
    }

    /// Run SQL with `psql -XAtq -v ON_ERROR_STOP=1` and return its stdout, trimmed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut cmd = pg_command("psql", &self.dir);
        cmd.args([
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &self.dsn(db),
            "-c",
            sql,
        ]);
        let out = cmd.stdin(Stdio::null()).output().expect("run psql");
        if !out.status.success() {
            panic!("{}", describe_failure(&cmd, &out, Some(&self.log)));
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Create a database with a unique name, dropped when the guard drops.
    pub fn create_db(&self) -> TestDb {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        TestDb {
            name,
            admin_dsn: self.dsn("postgres"),
        }
    }

    /// Start the server again after [`Cluster::stop`].
    pub fn start_again(&mut self) {
        if let Err(msg) = self.try_start() {
            panic!("{msg}");
        }
    }

    /// `pg_ctl stop -m MODE`.
    pub fn stop(&mut self, mode: StopMode) {
        let mut cmd = self.pg_ctl();
        cmd.args(["-m", mode.as_str(), "-w", "-t", "60", "stop"]);
        run_ok(&mut cmd);
        self.running = false;
    }

    /// Stop (fast) and start.
    pub fn restart(&mut self) {
        self.stop(StopMode::Fast);
        self.start_again();
    }

    /// SIGKILL the postmaster (a crash); its children exit on their own.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.running = false;
    }

    /// The postmaster's pid, if it is running.
    pub fn postmaster_pid(&self) -> Option<i32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// True between a successful start and a stop.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// `pg_ctl promote -w` (for a standby).
    pub fn promote(&self) {
        let mut cmd = self.pg_ctl();
        cmd.args(["-w", "-t", "60", "promote"]);
        run_ok(&mut cmd);
    }

    /// Append settings to `postgresql.conf` (takes effect at the next start or reload).
    pub fn set(&self, name: &str, value: &str) {
        self.append_conf(&format!("{name} = {value}"));
    }

    /// `SELECT pg_reload_conf()`.
    pub fn reload(&self) {
        self.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// True if the server is in recovery (a standby).
    pub fn in_recovery(&self) -> bool {
        self.psql("postgres", "SELECT pg_is_in_recovery()") == "t"
    }

    /// The current WAL position: insert LSN on a primary, replay LSN on a standby.
    pub fn lsn(&self) -> String {
        self.psql(
            "postgres",
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END",
        )
    }

    /// A streaming standby of this cluster (`pg_basebackup -R -X stream`), started.
    pub fn standby(&self) -> Cluster {
        self.standby_builder().start_standby_of(self)
    }

    /// A builder for a standby, to add settings first; finish with
    /// [`ClusterBuilder::start_standby_of`].
    pub fn standby_builder(&self) -> ClusterBuilder {
        ClusterBuilder::default().name(&format!("{}-standby", self.name))
    }

    /// Wait until `standby` has replayed everything this primary has written so far.
    pub fn wait_replayed(&self, standby: &Cluster, limit: Duration) {
        let target = self.psql("postgres", "SELECT pg_current_wal_lsn()");
        let deadline = Instant::now() + limit;
        loop {
            let done = standby.psql(
                "postgres",
                &format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"),
            );
            if done == "t" {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "standby {} did not replay {target} within {limit:?}; its log:\n{}",
                    standby.name,
                    standby.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl ClusterBuilder {
    /// Create a standby of `primary` with `pg_basebackup -R` and start it.
    pub fn start_standby_of(self, primary: &Cluster) -> Cluster {
        let backup = primary.base_backup(&self.name, &["-R", "-X", "stream"]);
        self.start_from(backup)
    }

    /// Start a server on a base backup's data directory (add `recovery.signal` or
    /// `standby.signal` to it first, or let [`Cluster::base_backup`]'s `-R` do that).
    pub fn start_from(self, mut backup: BaseBackup) -> Cluster {
        let dir = std::mem::take(&mut backup.dir);
        let data = dir.join("data");
        Cluster::launch(self, dir, data)
    }
}

/// A base backup of a running cluster, in a directory of its own: removed when dropped,
/// unless a server was started on it ([`ClusterBuilder::start_from`]).
#[derive(Debug)]
pub struct BaseBackup {
    dir: PathBuf,
}

impl BaseBackup {
    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for BaseBackup {
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    /// `pg_basebackup` of this cluster into a new directory (`-c fast --no-sync`, as the
    /// superuser, and `args`: e.g. `-R -X stream` for a standby, `-X none` for a backup that
    /// needs the WAL archive). `name` prefixes the directory.
    pub fn base_backup(&self, name: &str, args: &[&str]) -> BaseBackup {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(base_dir())
            .expect("create cluster dir")
            .keep();
        chown_to_server_user(&dir);
        let backup = BaseBackup { dir };
        let mut cmd = pg_command("pg_basebackup", &backup.dir);
        cmd.arg("-D")
            .arg(backup.data_dir())
            .args(args)
            .args(["-c", "fast", "--no-sync", "-U", "postgres"])
            .args(["-h", &self.host, "-p", &self.port.to_string()]);
        run_ok(&mut cmd);
        backup
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running || self.data.join("postmaster.pid").exists() {
            let mut cmd = self.pg_ctl();
            cmd.args(["-m", "immediate", "-w", "-t", "30", "stop"]);
            let _ = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if std::env::var_os("PGSHIFT_KEEP_CLUSTERS").is_some() {
            eprintln!("testkit: keeping {} at {}", self.name, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Wait (at most 30 s) until some session waits for a lock on `table` (a name `regclass`
/// reads), as `client` sees it: the session holding the lock, typically, so that a test
/// knows the process under test is blocked where it wants it. `what` names that process in
/// the panic.
pub fn wait_for_lock_waiter(client: &mut postgres::Client, table: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::text::regclass",
                &[&table],
            )
            .expect("read pg_locks")
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never waited for the lock on {table}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// Run `cmd` (stdout and stderr captured) while a session holds an ACCESS EXCLUSIVE lock
    /// on `table` in database `db`; once `cmd` waits for that lock (past its start, e.g. its
    /// snapshot), the session runs `then` and commits. For what a tool does when a table
    /// changes under it at a chosen point. `what` names the run.
    pub fn run_behind_lock(
        &self,
        db: &str,
        table: &str,
        then: &str,
        what: &str,
        cmd: &mut Command,
    ) -> Run {
        let mut holder = self.connect(db);
        holder
            .batch_execute(&format!("BEGIN; LOCK {table} IN ACCESS EXCLUSIVE MODE"))
            .expect("lock the table");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        wait_for_lock_waiter(&mut holder, table, what);
        holder
            .batch_execute(&format!("{then}; COMMIT"))
            .expect("run the change and commit");
        Run::new(what, child.wait_with_output().expect("wait for the run"))
    }
}

/// A uniquely named database, dropped (backends terminated first) when the guard drops.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    admin_dsn: String,
}

impl TestDb {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let res = postgres::Client::connect(&self.admin_dsn, postgres::NoTls).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = res {
            // The cluster may already be stopped by the test; that is fine.
            eprintln!(
                "testkit: warning: could not drop database {}: {e}",
                self.name
            );
        }
    }
}

/// One cluster shared by all tests of a test binary (under `cargo test` they run as threads
/// of one process; under nextest each process gets its own). Never dropped: the watchdog
/// removes it when the process exits.
pub fn shared_cluster() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| Cluster::builder().name("shared").start())
}

/// The path of a workspace binary (e.g. `wal-ship`) next to the running test's `deps/` dir.
/// Tests in a tool's own package use `assert_cmd::cargo::cargo_bin!` instead.
pub fn tool_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("test binary directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built; run `cargo build --workspace` (make test does)",
        bin.display()
    );
    bin
}

/// A new wal-ship archive at `path` (created if missing), made by `wal-ship init`: push
/// refuses a directory without its marker.
pub fn new_wal_archive(path: &Path) {
    let out = tool(tool_bin("wal-ship"))
        .args(["init", "--quiet", "--archive"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run wal-ship init: {e}"));
    assert!(
        out.status.success(),
        "wal-ship init --archive {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Skip the calling test with a printed reason (for what the machine may lack); under
/// `CI=true` it fails instead, so that a CI run never passes a test that did not run.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        // In CI (.ci/run sets CI=true) every test must run: a missing part is a failure of the
        // machine's setup (make setup), not a pass.
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("cannot run under CI=true: {}", format_args!($($arg)*));
        }
        eprintln!("SKIPPED: {}", format_args!($($arg)*));
        return;
    }};
}

/// TLS material for a test server: a CA and a server certificate it signed.
#[derive(Debug)]
pub struct TlsCerts {
    /// The CA certificate (for `sslrootcert`).
    pub ca_cert: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server key (mode 0600, owned by the server's user).
    pub server_key: PathBuf,
}

impl TlsCerts {
    /// Make a CA and a server certificate for `names` (DNS names or IP addresses) in `dir`,
    /// with the `openssl` command. `None` if `openssl` is not installed.
    pub fn generate(dir: &Path, names: &[&str]) -> Option<TlsCerts> {
        Command::new("openssl").arg("version").output().ok()?;
        fs::create_dir_all(dir).expect("cert dir");
        let p = |f: &str| dir.join(f);
        let san = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        run_ok(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=pgshift test CA",
                ])
                .arg("-keyout")
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.crt")),
        );
        run_ok(
            Command::new("openssl")
                .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"])
                .arg(format!("/CN={}", names[0]))
                .arg("-keyout")
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
        );
        fs::write(p("ext.cnf"), format!("subjectAltName={san}\n")).expect("ext.cnf");
        run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.crt"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p("ext.cnf"))
                .arg("-out")
                .arg(p("server.crt")),
        );
        let key = p("server.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
        chown_to_server_user(&key);
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        Some(TlsCerts {
            ca_cert: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: key,
        })
    }
}
