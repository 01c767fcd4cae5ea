//! `scripts/lib.sh`, the bash twin of the fixture, driven as a user's script would.

use std::process::Command;

use pgshift_tests::workspace_root;

/// Run a bash snippet with lib.sh sourced (no `set -e`): its output, whatever its exit.
fn bash_output(snippet: &str) -> std::process::Output {
    let root = workspace_root();
    Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}/scripts/lib.sh'; {snippet}", root.display()))
        .output()
        .expect("run bash")
}

/// Run a bash snippet with lib.sh sourced and `set -euo pipefail`; return stdout.
fn bash(snippet: &str) -> String {
    let root = workspace_root();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "set -euo pipefail; . '{}/scripts/lib.sh'; {snippet}",
            root.display()
        ))
        .current_dir(&root);
    testkit::hermetic(&mut cmd);
    let out = cmd.output().expect("run bash");
    assert!(
        out.status.success(),
        "bash snippet failed ({}):\n{snippet}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one quoting helper of the scripts agrees with the tools': a value with quotes,
/// backslashes, spaces and `$` comes back whole from a conninfo string (the tools' libpq-style
/// parser) and is written into postgresql.conf as the tools write it.
#[test]
fn quoting_helpers_match_the_tools() {
    let values = [
        "plain",
        "it's a \\ pass",
        "/var/lib/pg data/x",
        "$HOME `id` \"q\"",
        "''\\'",
        "wal archive 100%",
        "",
    ];
    let dir = tempfile_dir();
    for v in values {
        let word = shared::host::sh_quote(v);
        let conninfo = bash(&format!("pgs_conninfo_quote {word}"));
        let parsed =
            shared::pg::ConnInfo::parse_with_env(&format!("host=h password={conninfo}"), |_| None)
                .unwrap();
        assert_eq!(parsed.get("password"), Some(v), "conninfo {conninfo}");
        let conf = bash(&format!("pgs_conf_quote {word}"));
        assert_eq!(
            conf,
            shared::host::conf_quote(v),
            "postgresql.conf value of {v:?}"
        );
        // A word of archive_command or restore_command: PostgreSQL turns %% into % and
        // hands the command to /bin/sh, which must see the value as one whole word.
        let cmd_word = bash(&format!("pgs_wal_cmd_word {word}")).replace("%%", "%");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {cmd_word}"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            v,
            "archive_command word {cmd_word}"
        );
        // The passfile line, read back the way libpq reads a passfile (user and password).
        if !v.is_empty() {
            let file = dir.join("pgpass");
            std::fs::write(&file, bash(&format!("pgs_pgpass_line {word}: {word}"))).unwrap();
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let user = format!("{v}:");
            let got = shared::pg::pgpass::lookup(&file, "h", 5432, "db", &user);
            assert_eq!(got.as_deref(), Some(v), "pgpass line for {v:?}");
        }
    }
}

/// pgs_cluster_info tells the layouts apart: a data directory with its configuration inside
/// is `plain` (or `rhel` with PGDG's /usr/pgsql-V binaries), its port read from its
/// configuration; a cluster name that pg_lsclusters does not list is refused (65), naming the
/// clusters there are. (Packaged clusters are covered end to end in layouts.rs.)
#[test]
fn cluster_info_tells_the_layouts_apart() {
    let dir = tempfile_dir().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(dir.join("postgresql.conf"), "port = 6543\n#port = 1\n").unwrap();
    let info = |bin: &str| {
        bash(&format!(
            "declare -A i; PG_BIN={bin} pgs_cluster_info local {} i; for k in layout version port pgdata conf_dir hba_file unit running aux; do printf '%s=%s\\n' $k \"${{i[$k]}}\"; done",
            shared::host::sh_quote(dir.to_str().unwrap())
        ))
    };
    let plain = info("/usr/lib/postgresql/15/bin");
    let d = dir.display();
    let parent = dir.parent().unwrap().display();
    assert_eq!(
        plain,
        format!(
            "layout=plain\nversion=15\nport=6543\npgdata={d}\nconf_dir={d}\nhba_file={d}/pg_hba.conf\nunit=\nrunning=no\naux={parent}/pgshift-data\n"
        )
    );
    let rhel = info("/usr/pgsql-15/bin");
    assert!(rhel.starts_with("layout=rhel\n"), "{rhel}");
    assert!(rhel.contains("\nunit=postgresql-15\n"), "{rhel}");

    let root = workspace_root();
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!(
        ". '{}/scripts/lib.sh'; declare -A i; pgs_cluster_info local 15/pgshift-no-such-cluster i",
        root.display()
    ));
    testkit::hermetic(&mut cmd);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("no cluster 15/pgshift-no-such-cluster")
            && err.contains("pg_lsclusters lists"),
        "{err}"
    );
}

#[test]
fn clusters_and_a_standby_from_bash() {
    let base = tempfile_dir();
    let out = bash(&format!(
        r#"
        base={base}
        trap 'pgs_cluster_destroy $base/b; pgs_cluster_destroy $base/a; rm -rf $base' EXIT
        pgs_cluster_create $base/a "$(pgs_free_port)" 127.0.0.1 max_connections=33
        pgs_cluster_start $base/a
        pgs_psql "$(pgs_dsn $base/a)" "CREATE TABLE t AS SELECT generate_series(1,10) AS i"
        pgs_standby_create $base/a $base/b "$(pgs_free_port 127.0.0.2)" 127.0.0.2
        pgs_cluster_start $base/b
        lsn=$(pgs_psql "$(pgs_dsn $base/a)" "SELECT pg_current_wal_lsn()")
        until [ "$(pgs_psql "$(pgs_dsn $base/b)" "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ]; do sleep 0.05; done
        echo "sum=$(pgs_psql "$(pgs_dsn $base/b)" "SELECT sum(i) FROM t")"
        echo "recovery=$(pgs_psql "$(pgs_dsn $base/b)" "SELECT pg_is_in_recovery()")"
        echo "max_connections=$(pgs_psql "$(pgs_dsn $base/a)" "SHOW max_connections")"
        pgs_cluster_stop $base/a fast
        echo "stopped=$([ -f $base/a/data/postmaster.pid ] && echo no || echo yes)"
        "#,
        base = base.display()
    ));
    assert!(out.contains("sum=55"), "{out}");
    assert!(out.contains("recovery=t"), "{out}");
    assert!(out.contains("max_connections=33"), "{out}");
    assert!(out.contains("stopped=yes"), "{out}");
    assert!(!base.exists(), "{} left behind", base.display());
}

#[test]
fn json_lines_from_bash_are_valid_and_typed() {
    let out = bash(
        r#"pgs_json phase name='switch "over"' note=$'two\nlines\tand\\slash' err=$'\e[31mred\x01 \u00e9' ms:=170 ok:=true"#,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(out.starts_with(r#"{"type":"phase","#), "{out}");
    assert_eq!(v["name"], r#"switch "over""#);
    assert_eq!(v["note"], "two\nlines\tand\\slash");
    // Other control characters (a coloured error from a command) are escaped too.
    assert_eq!(v["err"], "\u{1b}[31mred\u{1} \u{e9}");
    assert_eq!(v["ms"], 170);
    assert_eq!(v["ok"], true);
}

/// Under a locale that writes 1,5 (de_DE), lib.sh's clock and the numbers the scripts pass
/// to awk and printf keep a decimal point; the user's language stays for the rest. (bash's
/// EPOCHREALTIME follows LC_NUMERIC: pgs_now_ms returned "1796651600,626", and the first
/// arithmetic on it ended the run.)
#[test]
fn numbers_keep_a_decimal_point_under_a_german_locale() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("localedef")
        .args(["-i", "de_DE", "-f", "UTF-8"])
        .arg(dir.path().join("de_DE.UTF-8"))
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        testkit::skip!(
            "cannot make the de_DE locale (localedef, Debian's locales package): {made:?}"
        );
    }
    let root = workspace_root();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; printf '%s ' \"$EPOCHREALTIME\"; . '{}/scripts/lib.sh'; \
             printf '%s %s %s' \"$(pgs_now_ms)\" \"$(awk 'BEGIN {{ printf \"%.2f\", 3 / 2 }}')\" \"$LC_MESSAGES\"",
            root.display()
        ))
        .env("LOCPATH", dir.path())
        .env("LC_ALL", "de_DE.UTF-8")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<&str> = text.split(' ').collect();
    assert!(f[0].contains(','), "the locale is in effect: {text}");
    assert!(
        f[1].chars().all(|c| c.is_ascii_digit()) && f[1].len() == 13,
        "{text}"
    );
    assert_eq!(f[2], "1.50", "{text}");
    assert_eq!(f[3], "de_DE.UTF-8", "the user's language stays: {text}");
}

#[test]
fn exit_codes_match_the_shared_table() {
    let out = bash(
        "echo $EX_OK $EX_DIFF $EX_USAGE $EX_DATAERR $EX_UNAVAILABLE $EX_SOFTWARE $EX_IOERR $EX_TEMPFAIL $EX_FATAL",
    );
    assert_eq!(out.trim(), "0 1 2 65 69 70 74 75 126");
}

/// lib.sh's ssh calls follow the tools' policy (shared::host), against a real sshd: the
/// user's options split with shell quoting, host keys checked even where the user's ssh
/// config turns checking off (the policy comes first, and ssh takes the first value), and
/// options that turn host key checking or BatchMode off refused before ssh runs.
#[test]
fn ssh_calls_follow_the_tools_policy() {
    let sshd = match testkit::Sshd::start(&["postgres"]) {
        Ok(s) => s,
        Err(why) => testkit::skip!("cannot start an sshd for the test: {why}"),
    };
    let spec = format!("ssh://postgres@127.0.0.1:{}", sshd.port());
    let key = sshd.client_key().display().to_string();
    let known = format!("UserKnownHostsFile={}", sshd.known_hosts().display());
    let run = |opts: &str, cmd: &str| {
        let root = workspace_root();
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(format!(
                ". '{}/scripts/lib.sh'; pgs_on '{spec}' {cmd}",
                root.display()
            ))
            .env("PGS_SSH_OPTS", opts);
        testkit::hermetic(&mut c);
        c.output().unwrap()
    };
    // Works, and the words of the command arrive as given.
    let o = run(
        &format!("-F /dev/null -i '{key}' -o '{known}'"),
        "printf '%s|' 'a b' \"c'd\"",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "a b|c'd|");
    // A config that turns checking off, and an empty known_hosts: refused by ssh itself.
    let dir = tempfile_dir();
    let cfg = dir.join("ssh_config");
    std::fs::write(
        &cfg,
        "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n",
    )
    .unwrap();
    let o = run(&format!("-F '{}' -i '{key}'", cfg.display()), "true");
    assert!(!o.status.success(), "an unknown host key was accepted");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("verification failed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Options that turn the policy off are refused (exit 2) and ssh never runs.
    for bad in [
        "-o StrictHostKeyChecking=no",
        "-oBatchMode=no",
        "-o 'StrictHostKeyChecking off'",
    ] {
        let o = run(
            &format!("{bad} -F /dev/null -i '{key}' -o '{known}'"),
            "echo ran",
        );
        assert_eq!(o.status.code(), Some(2), "{bad}");
        // Nothing on stdout but the refusal's records (pgs_die on a pipe).
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.lines().any(|l| l == "ran"), "ssh ran with {bad}");
        let last = testkit::json_lines(&out).pop().expect("a summary");
        assert_eq!(
            (&last["type"], &last["exit_code"]),
            (&"summary".into(), &2.into()),
            "{bad}"
        );
    }
    let o = run(
        &format!("-o StrictHostKeyChecking=accept-new -F /dev/null -i '{key}' -o '{known}'"),
        "echo ran",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");
}

#[test]
fn missing_command_fails_with_unavailable() {
    let status = bash_output("pgs_require_cmd no-such-command-xyz");
    assert_eq!(status.status.code(), Some(69));
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(err.contains("'no-such-command-xyz' not found"), "{err}");
}

#[test]
fn scripts_are_shellcheck_clean() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        testkit::skip!("shellcheck is not installed (make setup installs it)");
    }
    let root = workspace_root();
    let mut scripts: Vec<_> = std::fs::read_dir(root.join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.extend(
        std::fs::read_dir(root.join("bench"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sh")),
    );
    scripts.push(root.join(".ci/run"));
    // Two shellchecks at once, the largest scripts dealt out in turn (one alone took 95 s of
    // a loaded run, most of it migrate.sh), and the remote scripts: pg-switch's run under the
    // host's POSIX sh.
    scripts.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map_or(0, |m| m.len())));
    let half = |k: usize| -> Vec<_> { scripts.iter().skip(k).step_by(2).collect() };
    let remote: Vec<_> = std::fs::read_dir(root.join("tools/pg-switch/src/remote"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!remote.is_empty());
    let scripts_dir = root.join("scripts");
    let spawn = |opts: &[&str], files: &[&std::path::PathBuf]| {
        Command::new("shellcheck")
            .current_dir(&root)
            .args(opts)
            .args(files)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let bash = ["-x", "-P", scripts_dir.to_str().unwrap()];
    let children = [
        ("bash", spawn(&bash, &half(0))),
        ("bash", spawn(&bash, &half(1))),
        (
            "sh",
            spawn(&["-s", "sh"], &remote.iter().collect::<Vec<_>>()),
        ),
    ];
    for (shell, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "shellcheck ({shell}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A fresh directory for bash-made clusters (removed by the scripts themselves).
fn tempfile_dir() -> std::path::PathBuf {
    let base = testkit::base_dir();
    let dir = base.join(format!("bash-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// migrate.sh refuses, before touching anything, what it cannot do safely: a password in the
/// source's conninfo (it would be in process arguments), a --compress it does not know, a
/// --converge-window that is not a number. Exit 2, the message naming the fix.
#[test]
fn migrate_refuses_bad_options_before_touching_anything() {
    let root = workspace_root();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--source",
                "host=db.example password=hunter2",
                "--target-addr",
                "x",
            ],
            "passfile",
        ),
        (
            &["--source", "postgresql://u:hunter2@db.example/app"],
            "passfile",
        ),
        (&["--compress", "gzip"], "--compress takes auto, none, zstd"),
        (
            &["--compress", "zstd:99"],
            "--compress takes auto, none, zstd",
        ),
        (
            &["--converge-window", "soon"],
            "--converge-window takes a whole number",
        ),
        (&["--egress-price", "cheap"], "--egress-price takes a price"),
    ];
    for (args, want) in cases {
        let mut cmd = Command::new(root.join("scripts/migrate.sh"));
        cmd.args(*args);
        testkit::hermetic(&mut cmd);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("hunter2"),
            "the password is echoed back: {err}"
        );
    }
}

/// hosts-local.sh removes only what it made: `destroy` of a directory `create` did not make is
/// refused (65) and the directory is left whole; `create` into a non-empty directory is
/// refused (2) before anything is written (a failed create removes its DIR). `--help` is 0.
#[test]
fn hosts_local_removes_only_what_it_created() {
    let root = workspace_root();
    let dir = tempfile_dir();
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(root.join("scripts/hosts-local.sh"));
        cmd.args(args);
        testkit::hermetic(&mut cmd);
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let d = dir.display().to_string();
    let (code, err) = run(&["destroy", &d]);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("not made by hosts-local.sh"), "{err}");
    let (code, err) = run(&["create", &d]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    let (code, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scripts take postgresql:// URLs wherever they take a conninfo: lib.sh's conversion to
/// the keyword form means what the tools' parser (libpq's rules) makes of the URL itself.
#[test]
fn urls_become_the_conninfo_the_tools_read() {
    let urls = [
        "postgresql://postgres@10.0.0.1:5433/app?sslmode=verify-full&application_name=my%20app",
        "postgres://[::1]:6432/pgbouncer",
        "postgresql://u@h/db?passfile=/var/lib/post%20gres/.pgpass",
        "postgresql:///app?host=/var/run/postgresql&port=5434",
        "postgresql://it%27s@db.example",
    ];
    for url in urls {
        let word = shared::host::sh_quote(url);
        let kw = bash(&format!("pgs_url_conninfo {word}"));
        let from_kw = shared::pg::ConnInfo::parse_with_env(&kw, |_| None).unwrap();
        let from_url = shared::pg::ConnInfo::parse_with_env(url, |_| None).unwrap();
        for key in [
            "host",
            "port",
            "user",
            "dbname",
            "sslmode",
            "application_name",
            "passfile",
        ] {
            assert_eq!(
                from_kw.get(key),
                from_url.get(key),
                "{key} of {url} -> {kw}"
            );
        }
    }
    // A host list names no one server.
    let out = bash_output("pgs_url_conninfo postgresql://a,b/db");
    assert_eq!(out.status.code(), Some(2));
}
