//! Helpers: run `load-gen` (in the foreground or in the background), decode its records.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test, without `PG*` variables.
pub fn load_gen() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("load-gen"));
    testkit::hermetic(&mut c);
    c
}

/// The output of a finished run.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub records: Vec<Value>,
    pub stderr: String,
    pub what: String,
}

impl Finished {
    /// The last record, which must be the summary.
    pub fn summary(&self) -> &Value {
        let last = self
            .records
            .last()
            .unwrap_or_else(|| panic!("no records: {self:#?}"));
        assert_eq!(last["type"], "summary", "{self:#?}");
        last
    }

    /// Every record of one type.
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == kind).collect()
    }

    /// Panic with everything unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Finished {
        assert_eq!(self.code, code, "{}: {:#?}", self.what, self);
        self
    }
}

/// Decode JSON lines; panics naming the line that is not JSON.
pub fn parse_records(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Run to completion (bounded by `--duration` in the arguments).
pub fn run(args: &[&str]) -> Finished {
    let out = load_gen()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run load-gen");
    Finished {
        code: out.status.code().unwrap_or(-1),
        records: parse_records(&String::from_utf8_lossy(&out.stdout)),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what: format!("load-gen {}", args.join(" ")),
    }
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
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        // The last line may be half-written: keep complete lines only.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        parse_records(complete)
    }

    /// Wait (at most `limit`) until a record satisfies `pred`; panics with the output if not.
    pub fn wait_for(&mut self, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if self.records().iter().any(&pred) {
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
    pub fn signal_and_wait(mut self, sig: nix::sys::signal::Signal, limit: Duration) -> Finished {
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

    fn finished(mut self, status: ExitStatus) -> Finished {
        self.child = None;
        Finished {
            code: status.code().unwrap_or(-1),
            records: self.records(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            what: self.what.clone(),
        }
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
    run(&["--dsn", dsn, "--init", "--scale", &scale.to_string()]).expect_code(0);
}

/// Read an ack log.
pub fn log_records(path: &Path) -> Vec<Value> {
    parse_records(&std::fs::read_to_string(path).expect("read the ack log"))
}

/// A number field, panicking with the record if absent.
pub fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field} in {v}"))
}
