//! Test helpers: the fake CRIU, a process to dump, and decoding the JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Output, Stdio};
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;
pub use testkit::Run;

/// criu-wrap as a process, without PG* variables, a CRIU or ssh options from the environment.
pub fn cmd() -> Command {
    let mut c = testkit::tool(cargo_bin!("criu-wrap"));
    c.env_remove("CRIU")
        .env_remove("PGS_SSH_OPTS")
        .env_remove("CRIU_WRAP_RSYNC");
    let mut c = Command::from_std(c);
    c.timeout(Duration::from_secs(120));
    c
}

/// The path of the criu-wrap binary.
pub fn bin() -> PathBuf {
    cargo_bin!("criu-wrap").to_path_buf()
}

/// A fake CRIU in its own directory, configured by `fake-criu.env` there.
pub struct Fake {
    pub dir: tempfile::TempDir,
    pub criu: PathBuf,
    pub log: PathBuf,
}

impl Fake {
    /// A fake with these settings (see tests/fake-criu).
    pub fn new(settings: &[(&str, &str)]) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let criu = dir.path().join("criu");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-criu"),
            &criu,
        )
        .unwrap();
        let log = dir.path().join("calls.log");
        let f = Fake { dir, criu, log };
        f.configure(settings);
        f
    }

    /// Replace the settings.
    pub fn configure(&self, settings: &[(&str, &str)]) {
        let mut text = format!("LOG={}\n", shell(&self.log.display().to_string()));
        for (k, v) in settings {
            text.push_str(&format!("{k}={}\n", shell(v)));
        }
        std::fs::write(self.dir.path().join("fake-criu.env"), text).unwrap();
    }

    /// Every invocation so far, one line of arguments each.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The invocations for one action (`pre-dump`, `dump`, `restore`...).
    pub fn calls_of(&self, action: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with(&format!("{action} ")))
            .collect()
    }

    /// Processes the fake restored: (images dir, pid).
    pub fn restored(&self) -> Vec<(String, u32)> {
        self.calls()
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("restored ")?;
                let (pid, dir) = rest.split_once(' ')?;
                Some((dir.to_owned(), pid.parse().ok()?))
            })
            .collect()
    }

    /// A criu-wrap command that uses this fake.
    pub fn cmd(&self) -> Command {
        let mut c = cmd();
        c.arg("--criu").arg(&self.criu);
        c
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        for (_, pid) in self.restored() {
            let _ = StdCommand::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn shell(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A process to dump: `sleep`, killed and reaped on drop.
pub struct Victim(pub Child);

impl Victim {
    pub fn start() -> Victim {
        Victim(
            StdCommand::new("sleep")
                .arg("300")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The state letter in /proc (None: gone; `Z`: killed, not yet reaped).
    pub fn state(&self) -> Option<char> {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        s[s.rfind(')')? + 1..].trim_start().chars().next()
    }

    /// Running (not stopped, not dead).
    pub fn running(&self) -> bool {
        matches!(self.state(), Some('R' | 'S' | 'D'))
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// True while `pid` runs (exists, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s[s.rfind(')').unwrap() + 1..].trim_start().chars().next(),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// Read a finished criu-wrap process back (its stdout must be JSON lines).
pub fn finished(out: Output) -> Run {
    Run::new("criu-wrap", out)
}

/// Run with the exit code checked and the stream ending in a summary that carries it;
/// panics with everything on a mismatch.
pub fn run(c: &mut Command, code: i32) -> Run {
    let out = finished(c.output().unwrap());
    out.expect(code);
    assert_eq!(out.summary()["exit_code"], code, "{}", out.dump());
    out
}
