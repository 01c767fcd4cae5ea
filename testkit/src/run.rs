//! A finished run of a pgshift tool, read back for assertions.
//!
//! Every tool writes one JSON object per line on stdout and ends the stream with a `summary`
//! record (`shared/PROTOCOL.md`). The integration tests run the tool as a process and assert
//! on those records, its exit code and its stderr:
//! - [`tool`] is the command to run, hermetic (no `PG*` variables from the caller). Tests that
//!   use assert_cmd wrap it: `assert_cmd::Command::from_std(testkit::tool(path))`.
//! - [`Run::new`] reads a finished [`Output`]: the exit code, stdout and stderr as text, and
//!   stdout parsed as JSON lines. A line that is not JSON (a blank line included: the tools
//!   write none) panics with the whole output, so a stray `println!` cannot hide.
//! - [`Run::of`], [`Run::one`], [`Run::summary`], [`Run::expect`] pick records and check the
//!   exit code; [`Run::dump`] is the whole run as text, for assertion messages.
//! - [`json_lines`] parses JSON lines that were not a process's stdout (a log file, say).
//!
//! Tool-specific lookups (a table's record, a segment's) stay in the tool's tests, as free
//! functions or an extension trait over [`Run`].

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Output};

use serde_json::Value;

/// `program` as a command without the `PG*` variables (see [`crate::hermetic`]).
pub fn tool(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    crate::hermetic(&mut cmd);
    cmd
}

/// Parse JSON lines, one value per line; panics naming the line (and showing the whole text)
/// if one is not JSON. A blank line is not JSON.
pub fn json_lines(text: &str) -> Vec<Value> {
    parse_lines(text, |n, line, e| {
        format!("line {n} is not JSON ({e}): {line:?}\nthe whole text:\n{text}")
    })
}

fn parse_lines(
    text: &str,
    explain: impl Fn(usize, &str, serde_json::Error) -> String,
) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}", explain(i + 1, line, e)))
        })
        .collect()
}

/// What one finished run printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command, for messages (e.g. `pg-checksum --source ...`); may be empty.
    pub what: String,
    /// How the process ended.
    pub status: ExitStatus,
    /// The exit code; -1 if a signal ended the process.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error (invalid UTF-8 replaced).
    pub stderr: String,
    /// Standard output parsed as JSON lines (empty for [`Run::text`]).
    pub records: Vec<Value>,
}

impl Run {
    /// Read a finished run whose stdout is JSON lines. Panics with the whole output if stdout
    /// is not UTF-8 or a line is not JSON.
    pub fn new(what: impl Into<String>, out: Output) -> Run {
        let mut run = Run::text(what, out);
        run.records = parse_lines(&run.stdout, |n, line, e| {
            format!(
                "stdout line {n} is not JSON ({e}): {line:?}\n{}",
                run.dump()
            )
        });
        run
    }

    /// Read a finished run whose stdout is not JSON lines (CSV, say): `records` stays empty.
    /// Panics with the whole output if stdout is not UTF-8.
    pub fn text(what: impl Into<String>, out: Output) -> Run {
        let what = what.into();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8(out.stdout).unwrap_or_else(|e| {
            panic!(
                "{what}: stdout is not UTF-8 ({e})\n{}\nstdout:\n{}\nstderr:\n{stderr}",
                out.status,
                String::from_utf8_lossy(e.as_bytes())
            )
        });
        Run {
            what,
            status: out.status,
            code: out.status.code().unwrap_or(-1),
            stdout,
            stderr,
            records: Vec::new(),
        }
    }

    /// The records of one type, in order.
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.records.iter().filter(|r| r["type"] == kind).collect()
    }

    /// The one record of a type; panics with the whole run unless there is exactly one.
    pub fn one(&self, kind: &str) -> &Value {
        let v = self.of(kind);
        assert_eq!(
            v.len(),
            1,
            "expected one {kind} record, found {}\n{}",
            v.len(),
            self.dump()
        );
        v[0]
    }

    /// The last record, which must be the `summary`; panics with the whole run if not.
    pub fn summary(&self) -> &Value {
        let last = self
            .records
            .last()
            .unwrap_or_else(|| panic!("no records, so no summary\n{}", self.dump()));
        assert_eq!(
            last["type"],
            "summary",
            "the last record is not the summary\n{}",
            self.dump()
        );
        last
    }

    /// Panic with the whole run unless the exit code is `code`.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "exit code\n{}", self.dump());
        self
    }

    /// The whole run as text, for assertion messages: the command, how it ended, stdout and
    /// stderr.
    pub fn dump(&self) -> String {
        let what = if self.what.is_empty() {
            String::new()
        } else {
            format!("$ {}\n", self.what)
        };
        format!(
            "{what}{}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn output(code: i32, stdout: &[u8], stderr: &[u8]) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
        }
    }

    const STREAM: &str = concat!(
        r#"{"type":"table","name":"a","equal":true}"#,
        "\n",
        r#"{"type":"error","table":"b"}"#,
        "\n",
        r#"{"type":"table","name":"c","equal":false}"#,
        "\n",
        r#"{"type":"summary","exit_code":1}"#,
        "\n",
    );

    #[test]
    fn json_lines_parses_one_value_per_line() {
        let v = json_lines("{\"a\":1}\n[2]\r\n\"x\"");
        assert_eq!(
            v,
            [
                serde_json::json!({"a": 1}),
                serde_json::json!([2]),
                "x".into()
            ]
        );
        assert!(json_lines("").is_empty());
    }

    #[test]
    #[should_panic(expected = "line 2 is not JSON")]
    fn json_lines_panics_on_a_non_json_line() {
        json_lines("{\"a\":1}\nhello\n");
    }

    #[test]
    #[should_panic(expected = "line 2 is not JSON")]
    fn json_lines_panics_on_a_blank_line() {
        json_lines("{\"a\":1}\n\n{\"a\":2}\n");
    }

    #[test]
    fn run_reads_code_text_and_records() {
        let r = Run::new("tool --flag", output(1, STREAM.as_bytes(), b"tool: oops\n"));
        assert_eq!(r.code, 1);
        assert_eq!(r.what, "tool --flag");
        assert_eq!(r.stdout, STREAM);
        assert_eq!(r.stderr, "tool: oops\n");
        assert_eq!(r.records.len(), 4);
        let tables = r.of("table");
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[1]["name"], "c");
        assert!(r.of("chunk").is_empty());
        assert_eq!(r.one("error")["table"], "b");
        assert_eq!(r.summary()["exit_code"], 1);
        assert_eq!(r.expect(1).code, 1);
    }

    #[test]
    fn a_signal_is_code_minus_one() {
        let out = Output {
            status: ExitStatus::from_raw(9),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let r = Run::new("", out);
        assert_eq!(r.code, -1);
        assert!(r.dump().starts_with("signal: 9"), "{}", r.dump());
    }

    #[test]
    fn dump_shows_command_status_stdout_and_stderr() {
        let r = Run::new("tool --flag", output(1, STREAM.as_bytes(), b"tool: oops\n"));
        let d = r.dump();
        assert!(
            d.starts_with("$ tool --flag\nexit status: 1\nstdout:\n"),
            "{d}"
        );
        assert!(d.contains(r#"{"type":"error","table":"b"}"#), "{d}");
        assert!(d.ends_with("stderr:\ntool: oops\n"), "{d}");
        let anonymous = Run::new("", output(0, b"", b""));
        assert!(
            anonymous.dump().starts_with("exit status: 0\n"),
            "{}",
            anonymous.dump()
        );
    }

    #[test]
    fn stderr_may_be_invalid_utf8() {
        let r = Run::new("", output(0, b"", b"bad \xff byte"));
        assert_eq!(r.stderr, "bad \u{fffd} byte");
    }

    #[test]
    #[should_panic(expected = "stdout line 2 is not JSON")]
    fn a_non_json_stdout_line_panics_with_the_output() {
        Run::new(
            "tool",
            output(0, b"{\"type\":\"summary\"}\nhello\n", b"the stderr"),
        );
    }

    #[test]
    fn the_non_json_panic_shows_stdout_and_stderr() {
        let err = std::panic::catch_unwind(|| {
            Run::new(
                "tool",
                output(0, b"{\"type\":\"x\"}\nhello\n", b"the stderr"),
            )
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("$ tool\n"), "{msg}");
        assert!(msg.contains("stdout:\n{\"type\":\"x\"}\nhello\n"), "{msg}");
        assert!(msg.contains("stderr:\nthe stderr"), "{msg}");
    }

    #[test]
    #[should_panic(expected = "stdout is not UTF-8")]
    fn stdout_must_be_utf8() {
        Run::text("tool", output(0, b"a \xff", b""));
    }

    #[test]
    fn text_keeps_stdout_unparsed() {
        let r = Run::text(
            "tool --format csv",
            output(0, b"schema,name\npublic,t\n", b""),
        );
        assert!(r.records.is_empty());
        assert_eq!(r.stdout, "schema,name\npublic,t\n");
    }

    #[test]
    #[should_panic(expected = "expected one table record, found 2")]
    fn one_panics_on_two() {
        Run::new("", output(1, STREAM.as_bytes(), b"")).one("table");
    }

    #[test]
    #[should_panic(expected = "expected one chunk record, found 0")]
    fn one_panics_on_none() {
        Run::new("", output(1, STREAM.as_bytes(), b"")).one("chunk");
    }

    #[test]
    #[should_panic(expected = "the last record is not the summary")]
    fn summary_must_be_last() {
        let text = format!("{STREAM}{{\"type\":\"table\"}}\n");
        Run::new("", output(1, text.as_bytes(), b"")).summary();
    }

    #[test]
    #[should_panic(expected = "no records, so no summary")]
    fn summary_needs_records() {
        Run::new("", output(0, b"", b"")).summary();
    }

    #[test]
    #[should_panic(expected = "exit code")]
    fn expect_panics_on_another_code() {
        Run::new("", output(1, STREAM.as_bytes(), b"")).expect(0);
    }

    #[test]
    fn tool_removes_the_pg_variables() {
        let cmd = tool("true");
        assert_eq!(cmd.get_program(), "true");
        for var in crate::PG_ENV_VARS {
            assert!(
                cmd.get_envs().any(|(k, v)| k == *var && v.is_none()),
                "{var} is not removed"
            );
        }
    }
}
