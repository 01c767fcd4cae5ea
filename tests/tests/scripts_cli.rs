//! The scripts behave like commands (issue 16, item 5): `--help` and `-h` print the usage on
//! stdout and exit 0, for every script a user runs and in every subcommand form; a usage error
//! is one line on stderr that names the option as the user typed it, with "(try --help)", and
//! exit 2; and a script that fails still ends stdout (when it is not a terminal) with an
//! `error` record and one `summary` (shared/PROTOCOL.md, "scripts").

use std::path::PathBuf;
use std::process::{Command, Output};

use pgshift_tests::workspace_root;
use serde_json::Value;

fn script(name: &str) -> PathBuf {
    workspace_root().join("scripts").join(name)
}

/// Run scripts/NAME ARGS with stdin from /dev/null and stdout a pipe (no terminal).
fn run(name: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script(name))
        .args(args)
        .stdin(std::process::Stdio::null());
    testkit::hermetic(&mut cmd);
    cmd.output().expect("run script")
}

/// The scripts a user runs (every scripts/*.sh but the library and the VM's /init), each with
/// the forms of --help it takes.
const HELP: &[(&str, &[&[&str]])] = &[
    (
        "migrate.sh",
        &[
            &["--help"],
            &["-h"],
            &["--hosts-env", "x", "--help"],
            &["--mode", "logical", "--help"],
        ],
    ),
    (
        "migrate-logical.sh",
        &[&["--help"], &["--source", "x", "-h"]],
    ),
    ("fetch-pg.sh", &[&["--help"], &["17", "-h"]]),
    (
        "hosts-local.sh",
        &[
            &["--help"],
            &["create", "--help"],
            &["destroy", "-h"],
            &["create", "/nonexistent/x", "--help"],
        ],
    ),
    ("demo.sh", &[&["--help"], &["-h"]]),
    (
        "pooler.sh",
        &[&["--help"], &["check", "--help"], &["point", "-h"]],
    ),
    (
        "setup-host.sh",
        &[&["--help"], &["--role", "pooler", "--help"]],
    ),
    ("setup-pooler.sh", &[&["--help"]]),
    (
        "ship-cron.sh",
        &[
            &["--help"],
            &["run", "--help"],
            &["install", "-h"],
            &["uninstall", "--help"],
        ],
    ),
    ("setup-machine.sh", &[&["--help"], &["--bench", "-h"]]),
    ("grant-test-access.sh", &[&["--help"]]),
    (
        "criu-postgres.sh",
        &[&["--help"], &["start", "--help"], &["migrate", "-h"]],
    ),
    ("criu-vm.sh", &[&["--help"]]),
];

#[test]
fn every_script_prints_its_usage_for_help() {
    // A script added to scripts/ must be added here.
    let mut on_disk: Vec<String> = std::fs::read_dir(workspace_root().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh") && n != "lib.sh" && n != "criu-vm-guest.sh")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = HELP.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "scripts/*.sh and this test's list differ");

    for (name, forms) in HELP {
        for args in *forms {
            let out = run(name, args);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{name} {args:?}: {stderr}");
            // The usage: the synopsis, an indented line that starts with the script's name.
            assert!(
                stdout.lines().any(|l| {
                    let l = l.trim_start();
                    l.starts_with(&format!("{name} ")) || l.starts_with(&format!("scripts/{name}"))
                }) && stdout.lines().count() > 2,
                "{name} {args:?}: no usage on stdout:\n{stdout}"
            );
            assert!(!stdout.contains("\"type\""), "{name} {args:?}: {stdout}");
            assert!(stderr.is_empty(), "{name} {args:?}: stderr: {stderr}");
        }
    }
}

/// The benchmarks too: --help prints what one measures and how to run it, and runs nothing
/// (several used to start their benchmark, minutes long, or refuse the option).
#[test]
fn every_benchmark_prints_its_usage_for_help() {
    let dir = workspace_root().join("bench");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh"))
        .collect();
    names.sort();
    assert!(names.len() >= 9, "{names:?}");
    for name in names {
        let mut cmd = Command::new("bash");
        cmd.arg(dir.join(&name))
            .arg("--help")
            .stdin(std::process::Stdio::null());
        testkit::hermetic(&mut cmd);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(
            stdout.lines().count() > 5 && stderr.is_empty(),
            "{name}: no usage on stdout:\n{stdout}\nstderr: {stderr}"
        );
    }
}

/// The end of a failed script's stdout: an `error` record, then the one `summary`, last.
fn assert_ends_failed(what: &str, stdout: &str, code: i32) {
    let recs = testkit::json_lines(stdout);
    let summaries: Vec<&Value> = recs.iter().filter(|r| r["type"] == "summary").collect();
    assert_eq!(summaries.len(), 1, "{what}: one summary: {stdout}");
    let last = recs.last().unwrap();
    assert_eq!(last["type"], "summary", "{what}: {stdout}");
    assert_eq!(last["success"], false, "{what}: {stdout}");
    assert_eq!(last["exit_code"], code, "{what}: {stdout}");
    assert!(
        recs.iter()
            .any(|r| r["type"] == "error" && r["exit_code"] == code),
        "{what}: no error record: {stdout}"
    );
}

#[test]
fn usage_errors_name_the_option_typed() {
    let dir = tempfile::tempdir().unwrap();
    let new_dir = dir.path().join("hosts").display().to_string();
    let cases: &[(&str, &[&str], &str)] = &[
        ("migrate.sh", &[], "missing --source"),
        ("migrate.sh", &["--source"], "--source needs a value"),
        (
            "migrate.sh",
            &["--source", "--mode", "stream"],
            "--source needs a value",
        ),
        (
            "migrate.sh",
            &[
                "--source",
                "host=x",
                "--source-pgdata",
                "/x",
                "--target-pgdata",
                "/y",
                "--target-port",
                "1",
            ],
            "missing --target-addr",
        ),
        ("migrate.sh", &["--nope"], "unknown option '--nope'"),
        (
            "migrate.sh",
            &["--mode", "fast"],
            "--mode must be stream, archive or logical",
        ),
        (
            "migrate.sh",
            &["--mode", "logical", "--yes"],
            "missing --source DSN",
        ),
        (
            "migrate.sh",
            &[
                "--mode", "logical", "--source", "host=a", "--target", "host=b", "--abort",
                "--finish",
            ],
            "give one of --abort, --finish and --dry-run",
        ),
        (
            "migrate.sh",
            &[
                "--mode",
                "logical",
                "--source",
                "host=a password=x",
                "--target",
                "host=b",
            ],
            "holds a password",
        ),
        (
            "migrate.sh",
            &[
                "--mode",
                "logical",
                "--source",
                "host=a",
                "--target",
                "host=b password = x",
            ],
            "holds a password",
        ),
        (
            "migrate.sh",
            &["--source", "host=a password =x dbname=app"],
            "holds a password",
        ),
        (
            "migrate.sh",
            &["--mode", "logical", "--hook", "before_promote=true"],
            "unknown hook 'before_promote'",
        ),
        ("fetch-pg.sh", &["twelve"], "unknown argument 'twelve'"),
        (
            "hosts-local.sh",
            &["create", &new_dir, "--target-version", "17"],
            "--target-version needs --logical",
        ),
        ("hosts-local.sh", &[], "create or destroy"),
        ("hosts-local.sh", &["create"], "create needs DIR"),
        (
            "hosts-local.sh",
            &["create", &new_dir, "--scale"],
            "--scale needs a value",
        ),
        (
            "hosts-local.sh",
            &["create", &new_dir, "--layout"],
            "--layout needs a value",
        ),
        ("demo.sh", &["--bogus"], "unknown option '--bogus'"),
        ("pooler.sh", &["check"], "no --pooler given"),
        (
            "pooler.sh",
            &["check", "--pooler"],
            "--pooler needs a value",
        ),
        ("setup-host.sh", &[], "--role"),
        (
            "setup-host.sh",
            &["--role", "source", "--pgdata"],
            "--pgdata needs a value",
        ),
        ("setup-pooler.sh", &[], "--source"),
        ("ship-cron.sh", &[], "run, install or uninstall"),
        ("ship-cron.sh", &["run"], "--from DIR and --to DEST"),
        (
            "ship-cron.sh",
            &["run", "--from", "/tmp", "--to"],
            "--to needs a value",
        ),
        (
            "ship-cron.sh",
            &[
                "run",
                "--from",
                "/tmp",
                "--to",
                "/tmp/a",
                "--keep-backups",
                "0",
            ],
            "a number of backups from 1, not '0'",
        ),
        (
            "ship-cron.sh",
            &[
                "run",
                "--from",
                "/tmp",
                "--to",
                "/tmp/a",
                "--keep-from",
                "000000010000000000000001",
                "--keep-for-dsn",
                "host=x",
            ],
            "give --keep-from or --keep-for-dsn, not both",
        ),
        // Four fields: cron would read the command's first word as the weekday.
        (
            "ship-cron.sh",
            &[
                "install",
                "--schedule",
                "* * * *",
                "--file",
                "/nonexistent/crontab",
                "--",
                "--from",
                "/tmp",
                "--to",
                "/tmp/archive",
            ],
            "five cron fields",
        ),
        (
            "ship-cron.sh",
            &[
                "install",
                "--schedule",
                "@often",
                "--file",
                "/nonexistent/crontab",
                "--",
                "--from",
                "/tmp",
                "--to",
                "/tmp/archive",
            ],
            "not a cron keyword",
        ),
        ("setup-machine.sh", &["--nope"], "unknown option '--nope'"),
        (
            "grant-test-access.sh",
            &["--nope"],
            "unknown option '--nope'",
        ),
        ("criu-postgres.sh", &[], "start, pid, stop or migrate"),
        ("criu-postgres.sh", &["start"], "start needs DATA and PORT"),
        ("criu-vm.sh", &["--nope"], "'--nope'"),
    ];
    for (name, args, want) in cases {
        let out = run(name, args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("{name} {args:?}");
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(stderr.contains(want), "{what}: wanted {want:?}: {stderr}");
        assert!(stderr.contains("(try --help)"), "{what}: {stderr}");
        assert!(
            !stderr.contains("source_host_addr") && !stderr.contains("parameter null"),
            "{what}: an internal name: {stderr}"
        );
        assert_ends_failed(&what, &stdout, 2);
    }
    assert!(
        !dir.path().join("hosts").exists(),
        "a refused create made its DIR"
    );
}

/// Run scripts/NAME ARGS with stdout and stderr on a pseudo-terminal (util-linux `script`):
/// what a person sees, carriage returns dropped.
fn on_a_terminal(name: &str, args: &[&str]) -> (i32, String) {
    let cmd = std::iter::once(script(name).display().to_string())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .map(|a| shared::host::sh_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let (code, raw) = crate::human::on_a_terminal_raw(&cmd);
    (code, raw.replace('\r', ""))
}

#[test]
fn a_script_says_how_it_ended_in_one_closing_line() {
    let gone = testkit::base_dir().join(format!("not-there-{}", std::process::id()));
    let (code, text) = on_a_terminal("hosts-local.sh", &["destroy", gone.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let closing: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("hosts-local: ok"))
        .collect();
    assert_eq!(closing.len(), 1, "one closing line: {text}");
    assert!(closing[0].contains("nothing to remove"), "{text}");
    // On a pipe with stderr a file, the stream is the record's alone.
    let out = run("hosts-local.sh", &["destroy", gone.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{out:?}");
}

/// Any fatal path, not only usage: pgs_die ends the stream once (here hosts-local.sh refusing
/// to destroy a directory it did not make: 65, and migrate --mode logical with a journal it
/// cannot make, after its traps are set: 74).
#[test]
fn a_fatal_error_ends_stdout_with_error_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
    let out = run(
        "hosts-local.sh",
        &["destroy", &dir.path().display().to_string()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stdout}\n{stderr}");
    assert_ends_failed("hosts-local.sh destroy", &stdout, 65);
    assert!(dir.path().join("precious.txt").exists());

    let journal = dir.path().join("precious.txt/j.jsonl");
    // The debug builds: a release build need not exist when the suite runs.
    let bins = crate::hosts::bin_dir();
    let out = run(
        "migrate.sh",
        &[
            "--mode",
            "logical",
            "--source",
            "host=127.0.0.1 port=1 dbname=x",
            "--target",
            "host=127.0.0.1 port=2 dbname=x",
            "--journal",
            journal.to_str().unwrap(),
            "--bin",
            bins.to_str().unwrap(),
            "--yes",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{stdout}\n{stderr}");
    assert_ends_failed("migrate.sh --mode logical --journal", &stdout, 74);

    // migrate.sh's own failure (fail, after its preflight began): a source that does not answer.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    let pgdata = dir.path().join("nope").display().to_string();
    let out = run(
        "migrate.sh",
        &[
            "--source",
            "host=127.0.0.1 port=1 dbname=x",
            "--source-pgdata",
            &pgdata,
            "--target-addr",
            "127.0.0.2",
            "--target-port",
            "2",
            "--target-pgdata",
            &pgdata,
            "--repl-user",
            "r",
            "--repl-password-file",
            pw.to_str().unwrap(),
            "--tls",
            "off",
            "--journal",
            dir.path().join("j.jsonl").to_str().unwrap(),
            "--bin",
            bins.to_str().unwrap(),
            "--yes",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stdout}\n{stderr}");
    assert!(!stderr.contains("is missing"), "{stderr}");
    assert_ends_failed("migrate.sh, a source that does not answer", &stdout, 69);
}

/// lib.sh's pgs_die writes the records only where they belong: not into a command
/// substitution (the caller's variable), not on a terminal (a person reads it), and once.
#[test]
fn pgs_die_ends_the_stream_only_on_a_pipe_and_once() {
    let lib = workspace_root().join("scripts/lib.sh");
    let bash = |snippet: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(". '{}'; {snippet}", lib.display()))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // In a command substitution: only the message (stderr) and the exit code.
    let (code, stdout) = bash("x=$(pgs_die 69 boom); echo \"rc=$? x=[$x]\"");
    assert_eq!(code, Some(0));
    assert_eq!(stdout.trim(), "rc=69 x=[]");
    // A script that ended its own stream (PGS_ENDED) gets nothing more.
    let (code, stdout) = bash("PGS_ENDED=1; pgs_die 75 later");
    assert_eq!((code, stdout.as_str()), (Some(75), ""));
    // A message with quotes and a newline stays valid JSON.
    let (code, stdout) = bash("pgs_die 65 'bad \"input\"\nhere'");
    assert_eq!(code, Some(65));
    assert_ends_failed("quotes", &stdout, 65);
    assert_eq!(
        testkit::json_lines(&stdout)[1]["message"],
        "bad \"input\"\nhere"
    );
    // On a terminal (script(1) gives it one): the message, no records.
    let out = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "bash -c \". '{}'; pgs_die 69 on-a-tty\"",
            lib.display()
        ))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("on-a-tty"), "{tty}");
    assert!(!tty.contains("\"type\""), "records on a terminal: {tty}");
}
