//! The command line contract every tool shares: `--help`/`--version` succeed, a bad flag is a
//! one-line usage error with exit 2.

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;

fn cmd() -> Command {
    Command::from_std(testkit::tool(cargo_bin!("criu-wrap")))
}

#[test]
fn help_exits_0_and_shows_usage() {
    let out = cmd().arg("--help").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Usage: criu-wrap"), "{text}");
}

#[test]
fn version_exits_0() {
    let out = cmd().arg("--version").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("criu-wrap "), "{text}");
}

#[test]
fn unknown_flag_is_a_one_line_usage_error() {
    let out = cmd()
        .arg("--no-such-flag")
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("criu-wrap: "), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(err.contains("--help"), "{err}");
    assert!(out.stdout.is_empty());
}
