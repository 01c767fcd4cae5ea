//! Running `pg-checksum` and reading its JSON lines back ([`testkit::Run`]), plus lookups by
//! table name.

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;
use serde_json::Value;
pub use testkit::Run;

/// pg-checksum's records are about tables: lookups by table name (any schema).
pub trait Tables {
    /// Records of one type about table `name`.
    fn of_table(&self, kind: &str, name: &str) -> Vec<&Value>;
    /// The `table` record for `name`.
    fn table(&self, name: &str) -> &Value;
    /// `(key text of the first key column, kind)` of the row diffs of `name`, sorted.
    fn row_diffs(&self, name: &str, col: &str) -> Vec<(String, String)>;
}

impl Tables for Run {
    fn of_table(&self, kind: &str, name: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["type"] == kind && r["name"] == name)
            .collect()
    }

    fn table(&self, name: &str) -> &Value {
        self.of_table("table", name)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no table record for {name}:\n{}", self.dump()))
    }

    fn row_diffs(&self, name: &str, col: &str) -> Vec<(String, String)> {
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
}

/// Run with these arguments and this standard input (hermetic: no `PG*` variables).
pub fn run_with(args: &[&str], stdin: &str) -> Run {
    let out = Command::from_std(testkit::tool(cargo_bin!("pg-checksum")))
        .args(args)
        .write_stdin(stdin.to_owned())
        .output()
        .expect("run pg-checksum");
    Run::new(format!("pg-checksum {}", args.join(" ")), out)
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
