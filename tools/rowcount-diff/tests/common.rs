//! Running `rowcount-diff` and reading its JSON lines back.

use assert_cmd::Command;
use serde_json::Value;

/// The tool, hermetic (no `PG*` variables from the caller).
pub fn cmd() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin!("rowcount-diff"));
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

    /// The `table` record for `schema.name`.
    pub fn table(&self, schema: &str, name: &str) -> &Value {
        self.records
            .iter()
            .find(|r| r["type"] == "table" && r["schema"] == schema && r["name"] == name)
            .unwrap_or_else(|| panic!("no table record for {schema}.{name}:\n{}", self.stdout))
    }

    pub fn summary(&self) -> &Value {
        let last = self.records.last().expect("no records");
        assert_eq!(last["type"], "summary", "{}", self.stdout);
        last
    }
}

/// Run with these arguments; panics with the whole output if a line is not JSON.
pub fn run(args: &[&str]) -> Run {
    let out = cmd().args(args).output().expect("run rowcount-diff");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let records = if args.contains(&"csv") {
        Vec::new()
    } else {
        stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nstderr: {stderr}"))
            })
            .collect()
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        records,
        stdout,
        stderr,
    }
}
