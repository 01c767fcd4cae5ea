//! The command line contract every tool shares: `--help`/`--version` succeed, a bad flag is a
//! one-line usage error with exit 2.

use assert_cmd::cargo::cargo_bin;
use assert_cmd::Command;

fn cmd() -> Command {
    Command::from_std(testkit::tool(cargo_bin!("window-advisor")))
}

#[test]
fn help_exits_0_and_shows_usage() {
    let out = cmd().arg("--help").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Usage: window-advisor"), "{text}");
}

#[test]
fn version_exits_0() {
    let out = cmd().arg("--version").assert().code(0).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("window-advisor "), "{text}");
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
    assert!(err.starts_with("window-advisor: "), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(err.contains("--help"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn synth_writes_a_seeded_trace() {
    let run = |seed: &str| {
        let out = cmd()
            .args([
                "synth",
                "--kind",
                "regime-shift",
                "--weeks",
                "1",
                "--step",
                "1h",
            ])
            .args(["--seed", seed])
            .assert()
            .code(0)
            .get_output()
            .clone();
        String::from_utf8(out.stdout).unwrap()
    };
    let a = run("3");
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines.len(), 7 * 24 + 1, "{a}");
    assert!(lines[0].starts_with(r#"{"type":"sample","t":"2026-01-05T00:00:00Z","tps":"#));
    assert!(
        lines[168].contains(r#""kind":"regime-shift""#),
        "{}",
        lines[168]
    );
    let strip = |s: &str| s.lines().take(168).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&a), strip(&run("3")));
    assert_ne!(strip(&a), strip(&run("4")));
    let out = cmd()
        .args(["synth", "--kind", "nope"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
