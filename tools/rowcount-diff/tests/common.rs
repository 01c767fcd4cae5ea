//! Running `rowcount-diff` and reading its JSON lines back ([`testkit::Run`]), plus the
//! lookup of one table's record.

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;
use serde_json::Value;
use testkit::Run;

/// rowcount-diff's lookup: the `table` record of one table.
pub trait Tables {
    /// The `table` record for `schema.name`.
    fn table(&self, schema: &str, name: &str) -> &Value;
}

impl Tables for Run {
    fn table(&self, schema: &str, name: &str) -> &Value {
        self.records
            .iter()
            .find(|r| r["type"] == "table" && r["schema"] == schema && r["name"] == name)
            .unwrap_or_else(|| panic!("no table record for {schema}.{name}:\n{}", self.dump()))
    }
}

/// Run with these arguments (hermetic: no `PG*` variables); panics with the whole output if a
/// line is not JSON. With `csv` among the arguments stdout is kept as text, unparsed.
pub fn run(args: &[&str]) -> Run {
    let out = Command::from_std(testkit::tool(cargo_bin!("rowcount-diff")))
        .args(args)
        .output()
        .expect("run rowcount-diff");
    let what = format!("rowcount-diff {}", args.join(" "));
    if args.contains(&"csv") {
        Run::text(what, out)
    } else {
        Run::new(what, out)
    }
}
