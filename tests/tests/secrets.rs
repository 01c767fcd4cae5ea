//! Secrets stay out of sight: setup-host.sh on a host reached through a network namespace (its
//! script re-invoked there through stdin), with a password holding `'`, a space and `\`, under
//! strace: no process on either side gets the password in its arguments, and the server,
//! logging every statement, does not log it. The role then logs in with exactly that password.

use std::process::Command;

use crate::hosts::*;

#[test]
fn exclusive_setup_host_puts_the_password_in_no_argv_and_no_server_log() {
    if Command::new("strace").arg("-V").output().is_err() {
        testkit::skip!("strace is not installed (scripts/setup-machine.sh installs it)");
    }
    let hosts = Hosts::create(&["--netns"]);
    let a = hosts.dsn('A');
    psql(&a, "ALTER SYSTEM SET log_statement = 'all'").unwrap();
    psql(&a, "SELECT pg_reload_conf()").unwrap();
    let secret = format!("it's a \\ pass {}", nanos());
    let pw = hosts.dir.join("new.pw");
    std::fs::write(&pw, &secret).unwrap();
    let trace = hosts.dir.join("trace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=execve", "-s", "100000", "-o"])
        .arg(&trace)
        .arg(script("setup-host.sh"))
        .args(["--role", "source", "--pgdata", &hosts.env["SOURCE_PGDATA"]])
        .args([
            "--host",
            &hosts.env["SOURCE_SPEC"],
            "--listen",
            &hosts.source("host"),
            "--bin",
        ])
        .arg(bin_dir())
        .arg("--repl-password-file")
        .arg(&pw);
    testkit::hermetic(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "setup-host failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let traced = std::fs::read_to_string(&trace).unwrap();
    assert!(
        traced.matches("execve(").count() > 20,
        "the trace saw the run: {traced}"
    );
    assert!(traced.contains("psql"), "psql ran under the trace");
    // strace prints arguments C-escaped: look for the plain word and its escaped form.
    let escaped = secret.replace('\\', "\\\\");
    let marker = secret.rsplit(' ').next().unwrap();
    for line in traced.lines() {
        assert!(
            !line.contains(&escaped) && !line.contains(marker),
            "the password is in an argv: {line}"
        );
    }
    // The server logged the session's other statements but not the password.
    psql(&a, "SELECT 'pgshift log marker'").unwrap();
    let log = std::fs::read_to_string(hosts.dir.join("a/server.log")).unwrap();
    assert!(
        log.contains("pgshift log marker"),
        "log_statement = all is on"
    );
    assert!(!log.contains(marker), "the password is in the server log");
    // And the role takes exactly that password, over TLS verified against the hosts' CA;
    // its pg_hba entries are hostssl only.
    let login = |sslmode: &str, password: &str| {
        let mut cmd = Command::new(testkit::pg_bin().join("psql"));
        cmd.args(["-XAtq", "-c", "SELECT current_user", "-d"])
            .arg(format!(
                "host={} port={} user=pgshift_repl dbname=postgres {sslmode}",
                hosts.source("host"),
                hosts.source("port")
            ));
        testkit::hermetic(&mut cmd);
        cmd.env("PGPASSWORD", password).output().unwrap()
    };
    let verified = format!("sslmode=verify-full sslrootcert={}", hosts.env["TLS_CA"]);
    let ok = login(&verified, &secret);
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "pgshift_repl",
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = login(&verified, "wrong");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"),
        "a wrong password is refused: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // Its pg_hba entries are hostssl only (the lab's trust lines for the control machine
    // are the lab's, not the role's).
    let kinds = psql(
        &a,
        "SELECT string_agg(DISTINCT type, ',') FROM pg_hba_file_rules WHERE 'pgshift_repl' = ANY(user_name)",
    )
    .unwrap();
    assert_eq!(kinds.trim(), "hostssl", "the role's pg_hba entries");
}
