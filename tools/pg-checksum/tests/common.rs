//! Running `pg-checksum` and reading its JSON lines back.

use assert_cmd::Command;
use serde_json::Value;

/// The tool, hermetic (no `PG*` variables from the caller).
pub fn cmd() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("pg-checksum"));
    for var in testkit::PG_ENV_VARS {
        c.env_remove(var);
    }
    c
}

/// What one run printed.
pub struct Run {
    pub code: i32,
    pub records: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Records of one type.
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == kind).collect()
    }

    /// Records of one type about table `name` (any schema).
    pub fn of_table(&self, kind: &str, name: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["type"] == kind && r["name"] == name)
            .collect()
    }

    /// The `table` record for `name` (any schema).
    pub fn table(&self, name: &str) -> &Value {
        self.of_table("table", name)
            .first()
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "no table record for {name}:\n{}\n{}",
                    self.stdout, self.stderr
                )
            })
    }

    /// `(key text of the first key column, kind)` of the row diffs of `name`, sorted.
    pub fn row_diffs(&self, name: &str, col: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .of_table("row_diff", name)
            .iter()
            .map(|d| {
                (
                    d["key"][col]["text"].as_str().unwrap().to_owned(),
                    d["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    }

    pub fn summary(&self) -> &Value {
        let last = self.records.last().expect("no records");
        assert_eq!(last["type"], "summary", "{}", self.stdout);
        last
    }

    /// A one-line description for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run with these arguments and this standard input.
pub fn run_with(args: &[&str], stdin: &str) -> Run {
    let out = cmd()
        .args(args)
        .write_stdin(stdin.to_owned())
        .output()
        .expect("run pg-checksum");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let records = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nstderr: {stderr}"))
        })
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        records,
        stdout,
        stderr,
    }
}

/// Run with these arguments.
pub fn run(args: &[&str]) -> Run {
    run_with(args, "")
}

/// Two-host run: `--source` and `--target` then `extra`.
pub fn two(src: &str, tgt: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--source", src, "--target", tgt];
    args.extend_from_slice(extra);
    run(&args)
}
