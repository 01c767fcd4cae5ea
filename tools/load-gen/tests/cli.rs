//! The command line contract every tool shares: `--help`/`--version` succeed, a bad flag is a
//! one-line usage error with exit 2.

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;

fn cmd() -> Command {
    Command::from_std(testkit::tool(cargo_bin!("load-gen")))
}

#[test]
fn help_exits_0_and_shows_usage() {
    let out = cmd().arg("--help").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Usage: load-gen"), "{text}");
}

#[test]
fn version_exits_0() {
    let out = cmd().arg("--version").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("load-gen "), "{text}");
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
    assert!(err.starts_with("load-gen: "), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(err.contains("--help"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Account ids are int: at scale 21475 the highest (100000 × scale) passed 2^31 and the draw
/// overflowed. The largest scale is refused before anything connects.
#[test]
fn a_scale_past_int_account_ids_is_a_usage_error() {
    let out = cmd()
        .args(["--init", "--scale", "21475", "--dsn", "host=/nonexistent"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("21475") && err.contains("20000"), "{err}");
    cmd().args(["--scale", "20000", "--help"]).assert().code(0);
}
