//! The hosts people have: packaged (postgresql-common) clusters made with pg_createcluster,
//! each host a network namespace with its own sshd, migrated over ssh with verify-full TLS
//! under load, both ways; the same with a plain pg_ctl cluster on one side; a host that
//! presents a certificate from another CA is refused, naming it. The replication password
//! hosts-local makes holds `'`, a space, `\` and `:`: no process argument, server log or
//! file outside the 0600 passfiles ever holds it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::hosts::*;
use serde_json::Value;

/// An sshd in each host's namespace, and what migrate.sh needs to go through them.
struct Ssh {
    _a: testkit::Sshd,
    _b: testkit::Sshd,
    /// --source-host and --target-host.
    args: Vec<String>,
    /// PGS_SSH_OPTS: both client keys, both known_hosts files, host keys checked.
    opts: String,
}

fn ssh_to_both(hosts: &Hosts) -> Result<Ssh, String> {
    let ns = |key: &str| {
        hosts.env[key]
            .strip_prefix("netns://")
            .expect("the hosts live in namespaces")
            .to_owned()
    };
    let (addr_a, addr_b) = (hosts.source("host"), hosts.env["TARGET_ADDR"].clone());
    let start = |addr: &str, ns: &str| {
        testkit::Sshd::start_at(addr, Some(ns), &["postgres"])
            .map_err(|why| format!("cannot start an sshd in namespace {ns}: {why}"))
    };
    let a = start(&addr_a, &ns("SOURCE_SPEC"))?;
    let b = start(&addr_b, &ns("TARGET_SPEC"))?;
    let opts = format!(
        "-i {} -i {} -o 'UserKnownHostsFile={} {}' -o StrictHostKeyChecking=yes",
        a.client_key().display(),
        b.client_key().display(),
        a.known_hosts().display(),
        b.known_hosts().display()
    );
    let args = vec![
        "--source-host".into(),
        format!("ssh://postgres@{addr_a}:{}", a.port()),
        "--target-host".into(),
        format!("ssh://postgres@{addr_b}:{}", b.port()),
    ];
    Ok(Ssh {
        _a: a,
        _b: b,
        args,
        opts,
    })
}

/// Every process's arguments, sampled every 20 ms until stopped: the lines that hold `needle`.
struct PsWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl PsWatch {
    fn start(needle: String) -> PsWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut samples, mut seen) = (0, Vec::new());
            // Bounded: a migration here takes well under ten minutes.
            for _ in 0..30_000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(out) = Command::new("ps").args(["-eww", "-o", "args="]).output() {
                    samples += 1;
                    let text = String::from_utf8_lossy(&out.stdout);
                    seen.extend(
                        text.lines()
                            .filter(|l| l.contains(&needle))
                            .map(String::from),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, seen)
        });
        PsWatch { stop, handle }
    }

    /// How many samples were taken, and the lines that held the needle.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// The part of the lab's password that no escaping changes (after `pass:`).
fn password_marker(hosts: &Hosts) -> String {
    let pw = std::fs::read_to_string(&hosts.env["REPL_PASSWORD_FILE"]).unwrap();
    assert!(
        pw.contains('\'') && pw.contains(' ') && pw.contains('\\'),
        "the lab's password holds a quote, a space and a backslash: {pw:?}"
    );
    pw.rsplit(':').next().unwrap().to_owned()
}

/// `pg_lsclusters` status of a cluster (`online`, `online,recovery`, `down`).
fn lsclusters_status(cluster: &str) -> String {
    let out = Command::new("pg_lsclusters")
        .args(["--no-header"])
        .output()
        .unwrap();
    let (ver, name) = cluster.split_once('/').unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == ver && f[1] == name)
        .map(|f| f[3].to_owned())
        .unwrap_or_else(|| format!("no cluster {cluster} in pg_lsclusters"))
}

/// Files under `dir` (recursively) whose text holds `needle`, leaving out `skip`.
fn files_holding(dir: &Path, needle: &str, skip: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if skip(&p) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && meta.len() < 64 << 20
                && std::fs::read(&p)
                    .map(|b| String::from_utf8_lossy(&b).contains(needle))
                    .unwrap_or(false)
            {
                found.push(p);
            }
        }
    }
    found
}

fn migrate_over_ssh(hosts: &Hosts, ssh: &Ssh, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let mut args: Vec<&str> = ssh.args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    hosts.migrate_env(&args, &[("PGS_SSH_OPTS", ssh.opts.as_str())])
}

/// The last lines of each server log a failed run names ("see /var/log/postgresql/….log"):
/// the test's clean-up removes them, so a failure must carry them.
fn logs_named_in(err: &str) -> String {
    let mut out = String::new();
    for word in err.split_whitespace() {
        let path = word.trim_end_matches([';', ',', ')', '.']);
        if path.starts_with('/') && path.ends_with(".log") {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("\n--- {path} (last 30 lines) ---\n{tail}"));
        }
    }
    out
}

/// Forward and back under load; returns stdout and stderr of both runs for the secret check.
fn both_ways(hosts: &Hosts, ssh: &Ssh) -> String {
    let load = Load::start(hosts);
    let (code, fwd, err_fwd) = migrate_over_ssh(hosts, ssh, &[]);
    assert_eq!(
        code,
        0,
        "forward: {}\n{err_fwd}{}",
        summary(&fwd),
        logs_named_in(&err_fwd)
    );
    assert_eq!(summary(&fwd)["verdict"], "equal", "{}", summary(&fwd));
    assert_eq!(hosts.in_recovery('B'), Some(false), "B is the primary");
    assert_eq!(hosts.in_recovery('A'), Some(true), "A follows B");
    let (code, back, err_back) = migrate_over_ssh(hosts, ssh, &["--reverse", "--databases", "app"]);
    assert_eq!(
        code,
        0,
        "reverse: {}\n{err_back}{}",
        summary(&back),
        logs_named_in(&err_back)
    );
    assert_eq!(summary(&back)["verdict"], "equal", "{}", summary(&back));
    assert_eq!(summary(&back)["bytes_copied"], 0, "reverse copies nothing");
    assert_eq!(
        hosts.in_recovery('A'),
        Some(false),
        "A is the primary again"
    );
    assert_eq!(hosts.in_recovery('B'), Some(true), "B follows A");
    load.stop_and_verify();
    // Both runs went through ssh and spoke verify-full to both hosts.
    for recs in [&fwd, &back] {
        let pre = of_type(recs, "phase")
            .into_iter()
            .find(|p| p["name"] == "preflight")
            .cloned()
            .expect("preflight phase");
        assert_eq!(pre["tls"], "verify-full", "{pre}");
    }
    let text = |recs: &[Value]| {
        recs.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!("{}\n{err_fwd}\n{}\n{err_back}", text(&fwd), text(&back))
}

#[test]
fn exclusive_packaged_clusters_over_ssh_both_ways_under_load_no_secret_in_sight() {
    let hosts = Hosts::create(&["--netns", "--layout", "debian"]);
    let (ca, cb) = (
        hosts.env["SOURCE_CLUSTER"].clone(),
        hosts.env["TARGET_CLUSTER"].clone(),
    );
    assert!(!ca.is_empty() && !cb.is_empty() && ca != cb, "{ca} {cb}");
    assert_eq!(lsclusters_status(&ca), "online");
    assert_eq!(
        lsclusters_status(&cb),
        "down",
        "B is configured, not running"
    );
    let conf_b = PathBuf::from("/etc/postgresql").join(&cb);
    let port_b_conf = std::fs::read_to_string(conf_b.join("postgresql.conf")).unwrap();
    let ssh = match ssh_to_both(&hosts) {
        Ok(s) => s,
        Err(why) => testkit::skip!("{why}"),
    };
    let marker = password_marker(&hosts);
    let ps = PsWatch::start(marker.clone());

    let output = both_ways(&hosts, &ssh);

    let (samples, in_ps) = ps.finish();
    assert!(samples > 50, "ps was sampled through the runs ({samples})");
    assert!(
        in_ps.is_empty(),
        "the password is in a process's arguments: {in_ps:?}"
    );
    assert!(
        !output.contains(&marker),
        "the password is in migrate's output"
    );
    // Each host's pg_lsclusters tells the truth: A is the primary again, B its standby; B kept
    // its own configuration file (the port in it is its own), and logs where Debian logs.
    assert_eq!(lsclusters_status(&ca), "online");
    assert_eq!(lsclusters_status(&cb), "online,recovery");
    assert_eq!(
        std::fs::read_to_string(conf_b.join("postgresql.conf")).unwrap(),
        port_b_conf,
        "B's postgresql.conf is its own, untouched"
    );
    let log_b = format!(
        "/var/log/postgresql/postgresql-{}.log",
        cb.replace('/', "-")
    );
    let log_text = std::fs::read_to_string(&log_b).unwrap_or_default();
    assert!(
        log_text.contains("entering standby mode") || log_text.contains("started streaming"),
        "B's server log is in {log_b}"
    );
    // B's standby connection carries no password, only its passfile, and verifies A.
    let auto = std::fs::read_to_string(hosts.pgdata('B').join("postgresql.auto.conf")).unwrap();
    let conninfo = auto
        .lines()
        .rfind(|l| l.starts_with("primary_conninfo"))
        .expect("B follows A")
        .to_owned();
    assert!(
        conninfo.contains("passfile=") && conninfo.contains("sslmode=verify-full"),
        "{conninfo}"
    );
    // No file of either host or of the lab holds the password, but the 0600 passfiles and the
    // lab's own password file.
    let skip = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name == "repl.pw" || name == "pgpass" || name == "pg_wal" || name == "base"
    };
    let mut holding = Vec::new();
    for dir in [
        hosts.dir.clone(),
        PathBuf::from("/etc/postgresql").join(&ca),
        conf_b.clone(),
        hosts.pgdata('A'),
        hosts.pgdata('B'),
    ] {
        holding.extend(files_holding(&dir, &marker, &skip));
    }
    for log in [&ca, &cb] {
        let path = format!(
            "/var/log/postgresql/postgresql-{}.log",
            log.replace('/', "-")
        );
        if std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(&marker)
        {
            holding.push(path.into());
        }
    }
    assert!(holding.is_empty(), "the password is in {holding:?}");
    for pgdata in [hosts.pgdata('A'), hosts.pgdata('B')] {
        let aux = pgdata.with_file_name(format!(
            "pgshift-{}",
            pgdata.file_name().unwrap().to_str().unwrap()
        ));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(aux.join("pgpass")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{} is private", aux.display());
    }
}

/// Another CA, and a certificate it signed for `addr`, in `dir`.
fn foreign_certificate(dir: &Path, addr: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=other CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={addr}"),
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName=IP:{addr}\n")).unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    (dir.join("server.crt"), dir.join("server.key"))
}

#[test]
fn exclusive_packaged_source_plain_target_and_a_foreign_certificate_refused() {
    let hosts = Hosts::create(&["--netns", "--layout", "debian,plain"]);
    let ca = hosts.env["SOURCE_CLUSTER"].clone();
    assert!(!ca.is_empty());
    assert!(
        hosts.env["TARGET_CLUSTER"].is_empty(),
        "B is a plain cluster"
    );
    let ssh = match ssh_to_both(&hosts) {
        Ok(s) => s,
        Err(why) => testkit::skip!("{why}"),
    };
    let addr_a = hosts.source("host");

    // A presents a certificate another CA signed (for the right address): refused, naming A.
    let pgdata_a = hosts.pgdata('A');
    let aux_a = pgdata_a.with_file_name(format!(
        "pgshift-{}",
        pgdata_a.file_name().unwrap().to_str().unwrap()
    ));
    let (crt, key) = foreign_certificate(&hosts.dir.join("other-ca"), &addr_a);
    for (from, to) in [(&crt, "server.crt"), (&key, "server.key")] {
        // Over the files there: they stay the postgres user's.
        std::fs::copy(from, aux_a.join(to)).unwrap();
    }
    std::fs::set_permissions(
        aux_a.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    psql(&hosts.dsn('A'), "SELECT pg_reload_conf()").unwrap();
    let (code, recs, err) = migrate_over_ssh(&hosts, &ssh, &[]);
    assert_eq!(code, 69, "{err}");
    let s = summary(&recs);
    assert_eq!(s["success"], false, "{s}");
    let msg = s["error"].as_str().unwrap_or_default().to_owned() + &err;
    assert!(
        msg.contains(&addr_a) && msg.contains("certificate"),
        "the refusal names the host and its certificate: {msg}"
    );
    assert!(!hosts.running('B'), "nothing was started on B");
    assert!(
        std::fs::read_dir(hosts.pgdata('B'))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "nothing was copied to B"
    );

    // setup-host with the lab's CA puts a certificate it signed back (the foreign one is not
    // "unchanged"), and the migration goes through, both ways, under load.
    let ca_dir = Path::new(&hosts.env["TLS_CA"]).parent().unwrap().to_owned();
    let mut setup = Command::new(script("setup-host.sh"));
    setup
        .args([
            "--role",
            "source",
            "--cluster",
            &ca,
            "--host",
            &hosts.env["SOURCE_SPEC"],
        ])
        .args(["--listen", &addr_a, "--tls-name", &addr_a, "--bin"])
        .arg(bin_dir())
        .arg("--tls-ca")
        .arg(&ca_dir)
        .arg("--repl-password-file")
        .arg(&hosts.env["REPL_PASSWORD_FILE"]);
    testkit::hermetic(&mut setup);
    let out = setup.output().unwrap();
    let recs = testkit::json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "setup-host: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        of_type(&recs, "file")
            .iter()
            .any(|f| f["action"] == "issued" && f["path"].as_str().unwrap().ends_with("server.crt")),
        "a new certificate was issued: {recs:?}"
    );
    both_ways(&hosts, &ssh);
    assert_eq!(lsclusters_status(&ca), "online", "A is the primary again");
}
