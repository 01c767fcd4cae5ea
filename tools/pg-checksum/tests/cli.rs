//! The command line contract every tool shares: `--help`/`--version` succeed, a bad flag is a
//! one-line usage error with exit 2.

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;

fn cmd() -> Command {
    Command::from_std(testkit::tool(cargo_bin!("pg-checksum")))
}

#[test]
fn help_exits_0_and_shows_usage() {
    let out = cmd().arg("--help").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Usage: pg-checksum"), "{text}");
}

#[test]
fn version_exits_0() {
    let out = cmd().arg("--version").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("pg-checksum "), "{text}");
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
    assert!(err.starts_with("pg-checksum: "), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(err.contains("--help"), "{err}");
    assert!(out.stdout.is_empty());
}

/// `--chunks-from` is read before any connection: a file that cannot be opened is an I/O
/// error (74) naming it, one that is not pg-checksum output is bad input (65).
#[test]
fn chunks_from_a_missing_file_is_74_and_garbage_is_65() {
    let dir = std::env::temp_dir().join(format!("pgc-chunks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.jsonl");
    let garbage = dir.join("garbage.jsonl");
    std::fs::write(&garbage, "this is not JSON\n").unwrap();
    let dsn = "host=/nonexistent dbname=x";
    for (file, code) in [(&missing, 74), (&garbage, 65)] {
        let out = cmd()
            .args(["--dsn", dsn, "--chunks-from", file.to_str().unwrap()])
            .assert()
            .code(code)
            .get_output()
            .clone();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(file.to_str().unwrap()), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
