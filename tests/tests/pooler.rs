//! Clients with one address: a real PgBouncer (Debian's) in front of the source, in
//! transaction pooling, made by `hosts-local.sh --pooler`. migrate.sh PAUSEs it before the
//! source stops, points its entry at the target once promoted, RELOADs and RESUMEs: load-gen's
//! clients, all through the pooler, see no error in either direction and lose nothing. A
//! failure after the PAUSE (before the promotion) leaves the pooler resumed on the source; a
//! run killed while the pooler is paused leaves it paused, and the same command again resumes
//! it on the primary. Preflight refuses what cannot be switched without errors, naming the
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

/// What answers through the pooler within `secs`: `Some("f|PORT")` (writable, its port), or
/// None when nothing answers in time (the pooler is paused, or down).
fn through_pooler(hosts: &Hosts, secs: u32) -> Option<String> {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(testkit::pg_bin().join("psql"))
        .args(["-XAtq", "-d", &hosts.pooler_dsn(), "-c"])
        .arg("SELECT pg_is_in_recovery(), current_setting('port')")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
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
    // The entry was rewritten once, during the switch; the settling after it found it done.
    assert_eq!(steps(&fwd, "point")[0]["entries"], 1);
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
    let msg = summary(&recs)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
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
    let msg = summary(&recs)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
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
    for _ in 0..3 {
        let (code, recs, err) = hosts.migrate(&[]);
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
}
