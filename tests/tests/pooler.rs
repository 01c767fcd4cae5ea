//! Clients with one address: a real PgBouncer (Debian's) in front of the source, in
//! transaction pooling, made by `hosts-local.sh --pooler`. migrate.sh PAUSEs it before the
//! source stops, points its entry at the target once promoted, RELOADs and RESUMEs: load-gen's
//! clients, all through the pooler, see no error in either direction and lose nothing. A
//! failure after the PAUSE (before the promotion) leaves the pooler resumed on the source; a
//! run killed while the pooler is paused leaves it paused, and the same command again, or
//! `--abort`, resumes it on the primary, also when the next run rolls the switchover back. Preflight refuses what cannot be switched without errors, naming the
//! setting: session pooling, a long server_login_retry.

use std::path::PathBuf;
use std::process::Command;

use crate::hosts::*;
use serde_json::Value;

fn pooler_ini(hosts: &Hosts) -> PathBuf {
    hosts.dir.join("pooler/pgbouncer.ini")
}

/// Run a command on the pooler's admin console.
fn admin(hosts: &Hosts, sql: &str) {
    psql(&hosts.env["POOLER_DSN"], sql).unwrap_or_else(|| panic!("pooler console: {sql}"));
}

/// Edit the pooler's ini (as a person would) and RELOAD.
fn edit_ini(hosts: &Hosts, from: &str, to: &str) {
    let ini = std::fs::read_to_string(pooler_ini(hosts)).unwrap();
    assert!(ini.contains(from), "{from} in {ini}");
    std::fs::write(pooler_ini(hosts), ini.replacen(from, to, 1)).unwrap();
    admin(hosts, "RELOAD");
}

fn steps<'a>(recs: &'a [Value], step: &str) -> Vec<&'a Value> {
    of_type(recs, "pooler_step")
        .into_iter()
        .filter(|r| r["step"] == step)
        .collect()
}

/// load-gen's clients saw no error of any kind.
fn assert_no_client_error(recs: &[Value]) {
    let s = summary(recs);
    assert_eq!(s["errors_total"], 0, "clients saw errors: {s}");
}

#[test]
fn exclusive_behind_a_pooler_clients_see_no_error_both_ways() {
    let hosts = Hosts::create(&["--pooler"]);
    let port_a = hosts.source("port");
    let port_b = hosts.env["TARGET_PORT"].clone();
    let load = Load::start_with(&hosts, &hosts.pooler_dsn(), &["--protocol", "extended"]);

    let (code, fwd, err) = hosts.migrate(&[]);
    assert_eq!(code, 0, "forward: {}\n{err}", summary(&fwd));
    let check = of_type(&fwd, "pooler");
    assert_eq!(check.len(), 1, "preflight looked at the pooler: {fwd:?}");
    assert_eq!(
        check[0]["entries"],
        serde_json::json!(["app"]),
        "{}",
        check[0]
    );
    for step in ["pause", "point", "resume", "probe"] {
        let s = steps(&fwd, step);
        assert!(
            !s.is_empty() && s.iter().all(|r| r["ok"] == true),
            "{step}: {s:?}"
        );
    }
    // The entry was staged before the switch and swapped in during it (no full rewrite
    // inside the pause); the settling after it found it done.
    assert_eq!(steps(&fwd, "stage")[0]["entries"], 1, "{fwd:?}");
    let points = steps(&fwd, "point");
    assert_eq!(points[0]["staged"], true, "{points:?}");
    assert_eq!(points[1]["entries"], 0, "{points:?}");
    assert_eq!(through_pooler(&hosts, 5), Some(format!("f|{port_b}")));
    let ini = std::fs::read_to_string(pooler_ini(&hosts)).unwrap();
    assert!(ini.contains(&format!("port={port_b}")), "{ini}");
    assert!(
        pooler_ini(&hosts)
            .with_extension("ini.pgshift-prev")
            .exists(),
        "the old configuration is kept"
    );

    let (code, back, err) = hosts.migrate(&["--reverse", "--databases", "app"]);
    assert_eq!(code, 0, "reverse: {}\n{err}", summary(&back));
    assert_eq!(through_pooler(&hosts, 5), Some(format!("f|{port_a}")));

    let recs = load.stop_and_verify();
    assert_no_client_error(&recs);
}

#[test]
fn exclusive_pooler_resumed_after_a_failure_and_after_a_kill_while_paused() {
    let hosts = Hosts::create(&["--pooler"]);
    let port_a = hosts.source("port");
    let port_b = hosts.env["TARGET_PORT"].clone();

    // Refused in preflight, naming the setting and the fix; nothing changed.
    edit_ini(&hosts, "dbname=app", "dbname=app pool_mode=session");
    let (code, recs, _) = hosts.migrate(&[]);
    let msg = summary_message(&recs);
    assert_eq!(code, 65, "{msg}");
    assert!(
        msg.contains("session pooling") && msg.contains("pool_mode=transaction"),
        "{msg}"
    );
    edit_ini(&hosts, " pool_mode=session", "");
    edit_ini(
        &hosts,
        "server_login_retry = 0.1",
        "server_login_retry = 15",
    );
    let (code, recs, _) = hosts.migrate(&[]);
    let msg = summary_message(&recs);
    assert_eq!(code, 65, "{msg}");
    assert!(msg.contains("server_login_retry"), "{msg}");
    edit_ini(
        &hosts,
        "server_login_retry = 15",
        "server_login_retry = 0.1",
    );
    assert!(!hosts.running('B'), "preflight changed nothing");

    let load = Load::start_with(&hosts, &hosts.pooler_dsn(), &["--protocol", "extended"]);
    // A failure after the PAUSE, before the promotion: rolled back, the pooler resumed on A.
    let (code, recs, err) = hosts.migrate(&["--hook", "before_promote=exit 1"]);
    assert_eq!(code, 75, "rolled back: {}\n{err}", summary(&recs));
    assert!(
        steps(&recs, "pause").iter().any(|r| r["ok"] == true),
        "it paused: {recs:?}"
    );
    assert_eq!(through_pooler(&hosts, 5), Some(format!("f|{port_a}")));

    // Killed (the whole process group: the control host dying) right after the PAUSE.
    let (code, _, err) = hosts.migrate_raw(&["--hook", "before_stop=kill -KILL 0"], &[]);
    assert_eq!(code, -1, "killed\n{err}");
    assert_eq!(through_pooler(&hosts, 2), None, "the pooler stays paused");
    // The same command again, until it converges: the pooler ends resumed on the primary.
    let mut done = false;
    for run in 0..3 {
        let (code, recs, err) = hosts.migrate(&[]);
        if run == 0 {
            // The first run rolls the dead run's switchover back and resumes the pooler on
            // A at once: the clients wait for neither its preflight nor its catch-up, only
            // for its own switchover's pause.
            let at = |step: &str| {
                recs.iter()
                    .position(|r| r["type"] == "pooler_step" && r["step"] == step)
            };
            assert!(
                at("resume").is_some() && (code != 0 || at("resume") < at("pause")),
                "resumed before anything else: {recs:?}\n{err}"
            );
        }
        if code == 0 {
            done = true;
            break;
        }
        assert_eq!(code, 75, "{}\n{err}", summary(&recs));
        assert_eq!(through_pooler(&hosts, 5), Some(format!("f|{port_a}")));
    }
    assert!(done, "the migration went through");
    assert_eq!(through_pooler(&hosts, 5), Some(format!("f|{port_b}")));
    let recs = load.stop_and_verify();
    assert_no_client_error(&recs);

    // Back from B to A, killed while the pooler is paused, then --abort: the clients are
    // served by the source (B) again. Killed before B stops: A, a standby since the rejoin
    // and not a copy this run made, stays. Killed after: pg-switch starts B again.
    for (point, under_way) in [("before_stop", "before_switch"), ("after_stop", "switch")] {
        let hook = format!("{point}=kill -KILL 0");
        let (code, _, err) = hosts.migrate_raw(&["--reverse", "--hook", &hook], &[]);
        assert_eq!(code, -1, "killed at {point}\n{err}");
        assert_eq!(through_pooler(&hosts, 1), None, "paused at {point}");
        let (code, recs, err) = hosts.migrate(&["--reverse", "--abort"]);
        assert_eq!(code, 0, "abort after {point}: {}\n{err}", summary(&recs));
        assert_eq!(of_type(&recs, "resume")[0]["from"], under_way, "{recs:?}");
        assert_eq!(
            through_pooler(&hosts, 5),
            Some(format!("f|{port_b}")),
            "abort after a kill at {point}: {recs:?}"
        );
        assert_eq!(hosts.in_recovery('A'), Some(true), "A is kept as a standby");
    }

    // Killed after B stopped, and B started again by its service manager while no run was
    // there: fenced, it comes up as a standby. The next run rolls the switchover back (B
    // the primary again), resumes the pooler on B at once, and switches to A.
    let (code, _, err) =
        hosts.migrate_raw(&["--reverse", "--hook", "after_stop=kill -KILL 0"], &[]);
    assert_eq!(code, -1, "killed\n{err}");
    let mut start_b = testkit::pg_command("pg_ctl", &hosts.dir);
    start_b
        .arg("-D")
        .arg(hosts.pgdata('B'))
        .arg("-l")
        .arg(hosts.pgdata('B').with_file_name("restarted.log"))
        .args(["-w", "start"]);
    testkit::run_ok(&mut start_b);
    assert_eq!(hosts.in_recovery('B'), Some(true), "fenced: B is a standby");
    let (code, recs, err) = hosts.migrate(&["--reverse"]);
    assert_eq!(code, 0, "{}\n{err}", summary(&recs));
    assert!(
        of_type(&recs, "phase")
            .iter()
            .any(|p| p["name"] == "switchover" && p["outcome"] == "rolled_back"),
        "the interrupted switchover was rolled back: {recs:?}"
    );
    let at = |step: &str| {
        recs.iter()
            .position(|r| r["type"] == "pooler_step" && r["step"] == step)
    };
    assert!(
        at("resume").is_some() && at("resume") < at("pause"),
        "resumed on B before this run's own pause: {recs:?}"
    );
    assert_eq!(through_pooler(&hosts, 5), Some(format!("f|{port_a}")));

    // Staged, then the file edited by a person before the swap: the swap sees it changed and
    // rewrites the file as it is now (the edit kept), nothing stale left behind.
    let b = format!("{}:{port_b}", hosts.env["TARGET_ADDR"]);
    let a = format!("{}:{port_a}", hosts.source("host"));
    let pooler_sh = |cmd: &str, extra: &[&str]| {
        let mut c = Command::new(script("pooler.sh"));
        c.args([
            cmd,
            "--from",
            &a,
            "--to",
            &b,
            "--pooler",
            &hosts.env["POOLER_DSN"],
        ])
        .args(extra);
        testkit::hermetic(&mut c);
        let out = c.output().unwrap();
        (
            out.status.code(),
            testkit::json_lines(&String::from_utf8_lossy(&out.stdout)),
        )
    };
    let (code, recs) = pooler_sh("stage", &[]);
    assert_eq!(code, Some(0), "{recs:?}");
    edit_ini(&hosts, "max_client_conn = 1000", "max_client_conn = 999");
    let ini_path = pooler_ini(&hosts).display().to_string();
    let (code, recs) = pooler_sh("swap", &["--conffile", &ini_path]);
    assert_eq!(code, Some(0), "{recs:?}");
    let point = steps(&recs, "point");
    assert_eq!(point.len(), 1, "{recs:?}");
    assert!(
        point[0]["staged"].is_null() && point[0]["entries"] == 1,
        "the full point: {recs:?}"
    );
    let ini = std::fs::read_to_string(pooler_ini(&hosts)).unwrap();
    assert!(
        ini.contains("max_client_conn = 999") && ini.contains(&format!("port={port_b}")),
        "{ini}"
    );
    let left: Vec<_> = std::fs::read_dir(hosts.dir.join("pooler"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| {
            n.contains("pgshift-next") || n.contains("pgshift-base") || n.contains("pgshift-staged")
        })
        .collect();
    assert!(left.is_empty(), "stale staged files: {left:?}");
}

/// Run setup-host.sh --role pooler; its exit code, records and stderr.
fn setup_pooler(args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut cmd = Command::new(script("setup-host.sh"));
    cmd.args(["--role", "pooler"]).args(args);
    testkit::hermetic(&mut cmd);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        testkit::json_lines(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A PgBouncer started by a test, stopped at the end whatever happens.
struct Bouncer(PathBuf);
impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// psql through the pooler over TCP as `user` with `password`: its answer or its error.
fn login(
    port: &str,
    ca: &std::path::Path,
    user: &str,
    password: &str,
    sslmode: &str,
) -> Result<String, String> {
    let out = Command::new(testkit::pg_bin().join("psql"))
        .args(["-XAtqw", "-d"])
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=app user={user} sslmode={sslmode} sslrootcert={} connect_timeout=5",
            ca.display()
        ))
        .args(["-c", "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
        .env("PGPASSWORD", password)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `setup-host.sh --role pooler` in front of a real source with TLS: the application's roles
/// log in through it with their own SCRAM password (the pooler stores only the verifier and
/// passes the client's proof on, over verified TLS to the server); a wrong password, a role
/// with no password, a client without TLS and an md5 role are refused; a second run changes
/// nothing; a filter that matches nothing, an unreachable source and a password in the
/// conninfo are refused with their exit codes.
#[test]
fn setup_host_pooler_role_fronts_the_source_with_scram_and_tls() {
    if Command::new("pgbouncer").arg("--version").output().is_err() {
        testkit::skip!("pgbouncer is not installed (scripts/setup-machine.sh installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ca_dir = dir.path().join("ca");
    let certs = testkit::TlsCerts::generate(&ca_dir, &["127.0.0.1"]).expect("openssl");
    let secret = format!("it's a \\ pass {}", nanos());
    let src = testkit::Cluster::builder()
        .setting("ssl", "on")
        .setting(
            "ssl_cert_file",
            &format!("'{}'", certs.server_cert.display()),
        )
        .setting("ssl_key_file", &format!("'{}'", certs.server_key.display()))
        .hba("hostssl all appuser 127.0.0.1/32 scram-sha-256")
        .hba("host all appuser 127.0.0.1/32 reject")
        .start();
    src.psql("postgres", "CREATE DATABASE app");
    let mut c = src.connect("postgres");
    c.batch_execute(&format!(
        "CREATE ROLE appuser LOGIN PASSWORD '{}'; SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'x'",
        secret.replace('\'', "''")
    ))
    .unwrap();
    let source = src.dsn("postgres");
    let conf = dir.path().join("pgb");
    let conf_s = conf.display().to_string();
    let ca_s = ca_dir.display().to_string();
    let port = testkit::free_port("127.0.0.1").to_string();
    let _bouncer = Bouncer(conf.clone());
    let base = [
        "--source",
        &source,
        "--listen",
        "127.0.0.1",
        "--port",
        &port,
        "--conf-dir",
        &conf_s,
        "--tls-ca",
        &ca_s,
    ];

    // Refused before anything is written.
    let (code, _, err) = setup_pooler(&[&base[..], &["--databases", "app,nosuch"]].concat());
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("'nosuch'") && err.contains("--databases"),
        "{err}"
    );
    let (code, _, err) = setup_pooler(&[&base[..], &["--users", "nobody"]].concat());
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("nobody"), "{err}");
    let dead = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        testkit::free_port("127.0.0.1")
    );
    let (code, _, err) = setup_pooler(&["--source", &dead, "--conf-dir", &conf_s]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("cannot connect to the source"), "{err}");
    let (code, _, err) = setup_pooler(&["--source", &format!("{source} password=x")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("passfile"), "{err}");
    assert!(!conf.join("pgbouncer.ini").exists(), "nothing written");

    let (code, recs, err) = setup_pooler(&[&base[..], &["--databases", "app"]].concat());
    assert_eq!(code, 0, "{err}\n{recs:?}");
    let s = summary(&recs);
    assert_eq!(s["entries"], serde_json::json!(["app"]), "{s}");
    assert_eq!(s["tls"], "verify-full", "{s}");
    let roles: Vec<_> = of_type(&recs, "role");
    let role = |n: &str| {
        roles
            .iter()
            .find(|r| r["name"] == n)
            .copied()
            .unwrap_or(&Value::Null)
    };
    assert_eq!(role("appuser")["password"], "scram_verifier", "{roles:?}");
    assert_eq!(role("md5user")["action"], "skipped", "{roles:?}");
    let reach = of_type(&recs, "check")
        .into_iter()
        .find(|r| r["name"] == "reaches_source")
        .cloned();
    assert_eq!(
        reach.as_ref().map(|r| r["ok"].clone()),
        Some(Value::Bool(true)),
        "{recs:?}"
    );
    // The auth_file holds verifiers only, readable by postgres alone.
    let userlist = std::fs::read_to_string(conf.join("userlist.txt")).unwrap();
    assert!(
        userlist.contains("\"appuser\" \"SCRAM-SHA-256$"),
        "{userlist}"
    );
    assert!(
        !userlist.contains("pass") && !userlist.contains("md5user"),
        "{userlist}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(conf.join("userlist.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "userlist.txt mode {mode:o}");

    // The application's role, its own password, TLS verified on both legs.
    let ca = ca_dir.join("ca.crt");
    assert_eq!(
        login(&port, &ca, "appuser", &secret, "verify-full"),
        Ok("appuser|t".into())
    );
    let refused = [
        login(&port, &ca, "appuser", "wrong", "verify-full"),
        login(&port, &ca, "appuser", &secret, "disable"),
        login(&port, &ca, "postgres", "anything", "verify-full"),
        login(&port, &ca, "md5user", "x", "verify-full"),
    ];
    for (i, r) in refused.iter().enumerate() {
        assert!(r.is_err(), "login {i} was let in: {r:?}");
    }

    // Again: nothing changes, nothing restarts.
    let (code, recs, err) = setup_pooler(&[&base[..], &["--databases", "app"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&recs)["changed"], 0, "{recs:?}");
    assert!(of_type(&recs, "action").is_empty(), "{recs:?}");
    assert_eq!(
        login(&port, &ca, "appuser", &secret, "verify-full"),
        Ok("appuser|t".into())
    );
}
