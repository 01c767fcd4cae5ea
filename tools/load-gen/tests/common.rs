//! Helpers: run `load-gen` (in the foreground or in the background), decode its records.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use serde_json::Value;
use testkit::{json_lines, Run};

/// The binary under test, without `PG*` variables.
fn load_gen() -> Command {
    testkit::tool(cargo_bin!("load-gen"))
}

/// Run to completion (bounded by `--duration` in the arguments).
pub fn run(args: &[&str]) -> Run {
    let out = load_gen()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run load-gen");
    Run::new(format!("load-gen {}", args.join(" ")), out)
}

/// A `load-gen` running in the background, stdout and stderr going to files; killed on drop.
pub struct Background {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    what: String,
}

impl Background {
    /// Start `load-gen ARGS`, writing into `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Background {
        let stdout = dir.join(format!("load-gen-{}.out", uuid_like()));
        let stderr = stdout.with_extension("err");
        let child = load_gen()
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("start load-gen");
        Background {
            child: Some(child),
            stdout,
            stderr,
            what: format!("load-gen {}", args.join(" ")),
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The records written so far.
    pub fn records(&self) -> Vec<Value> {
        json_lines(&self.complete_stdout())
    }

    /// Standard output so far, complete lines only (the last line may be half-written).
    fn complete_stdout(&self) -> String {
        let mut text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
        text
    }

    /// Wait (at most `limit`) until a record satisfies `pred`; panics with the output if not.
    pub fn wait_for(&mut self, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) {
        self.wait_for_after(0, limit, what, pred)
    }

    /// As `wait_for`, looking only at the records after the first `from` (`records().len()`
    /// taken before the event that the awaited record must follow).
    pub fn wait_for_after(
        &mut self,
        from: usize,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            if self.records().iter().skip(from).any(&pred) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before {what}:\n{}",
                    self.what,
                    self.dump()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not show {what} within {limit:?}:\n{}",
                    self.what,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Send `sig` and wait (at most `limit`) for the exit.
    pub fn signal_and_wait(mut self, sig: nix::sys::signal::Signal, limit: Duration) -> Run {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
        let status = self.wait(limit);
        self.finished(status)
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {limit:?}:\n{}",
                    self.what,
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finished(mut self, status: ExitStatus) -> Run {
        self.child = None;
        let out = Output {
            status,
            stdout: self.complete_stdout().into_bytes(),
            stderr: std::fs::read(&self.stderr).unwrap_or_default(),
        };
        Run::new(self.what.clone(), out)
    }

    fn dump(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A name unique within this test process.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Create the pgbench tables with `load-gen --init`.
pub fn init(dsn: &str, scale: u32) {
    run(&["--dsn", dsn, "--init", "--scale", &scale.to_string()]).expect(0);
}

/// Read an ack log.
pub fn log_records(path: &Path) -> Vec<Value> {
    json_lines(&std::fs::read_to_string(path).expect("read the ack log"))
}

/// A number field, panicking with the record if absent.
pub fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}
