//! scripts/criu-postgres.sh on this host (the CRIU part runs in the VM: tests/vm.rs): it
//! starts PostgreSQL in an IPC namespace of its own with the settings CRIU needs, finds the
//! postmaster's PID for criu-wrap, and stops it.

use std::process::Command;

use testkit::StopMode;

fn script(args: &[&str]) -> std::process::Output {
    let mut c = Command::new("bash");
    c.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/criu-postgres.sh"))
        .args(args);
    testkit::hermetic(&mut c);
    c.output().unwrap()
}

fn ns(pid: &str, which: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{which}")).unwrap()
}

#[test]
fn recipe_starts_postgres_in_its_own_ipc_namespace() {
    if !nix::unistd::geteuid().is_root() {
        testkit::skip!("the recipe creates namespaces, which needs root");
    }
    let mut c = testkit::Cluster::start();
    c.stop(StopMode::Fast);
    let data = c.data_dir().to_str().unwrap().to_owned();
    let port = c.port().to_string();
    let out = script(&["start", &data, &port]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(rec["type"], "postgres");
    assert_eq!(rec["namespaces"], "ipc");
    let pid = rec["pid"].to_string();

    // Its own IPC namespace, the host's PID namespace; the settings CRIU needs.
    assert_ne!(ns(&pid, "ipc"), ns("self", "ipc"));
    assert_eq!(ns(&pid, "pid"), ns("self", "pid"));
    assert_eq!(
        c.psql("postgres", "show dynamic_shared_memory_type").trim(),
        "mmap"
    );
    assert_eq!(c.psql("postgres", "show huge_pages").trim(), "off");
    // It leads its own session (CRIU dumps a session leader with its tree).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let sid = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(3)
        .unwrap();
    assert_eq!(sid, pid);

    let found = script(&["pid", &data]);
    assert_eq!(String::from_utf8_lossy(&found.stdout).trim(), pid);
    // A second start on the same data directory is refused.
    assert_eq!(script(&["start", &data, &port]).status.code(), Some(2));

    let stop = script(&["stop", &data]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!testkit::pid_alive(pid.parse().unwrap()));
    assert_eq!(script(&["pid", &data]).status.code(), Some(1));
}
