//! Real CRIU on a real kernel: `scripts/criu-vm.sh` boots Debian's 6.1 kernel under qemu
//! (software emulation) with an initramfs holding busybox, Debian's CRIU, and this criu-wrap;
//! the guest (`scripts/criu-vm-guest.sh`) checkpoints and restores real processes and prints
//! one `CW RESULT name ok|fail detail` line per check on the serial console.
//!
//! What it proves on the real thing: `check` sees pre-copy support; a counting process is
//! dumped with pre-copy, stops, and after `restore` continues exactly where it stopped; a
//! process dirtying 64 MiB comes back with every page right; an established TCP connection
//! survives (`--tcp-established`); `migrate` moves a process to another directory, and a
//! corrupted copy makes it come back on the source; and CRIU's own error logs for TCP without
//! the flag, a PID in use, SysV shm outside an IPC namespace (and the dump inside one), an
//! external unix socket, a missing file, a non-root user and a foreign session leader map to
//! the right causes.
//!
//! Runs when qemu-system-x86_64 is installed (make setup installs it), else says SKIPPED.
//! About two minutes; the kernel package is downloaded once into target/criu-vm.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHECKS: &[&str] = &[
    "check",
    "dump",
    "restore",
    "memory",
    "tcp",
    "diag_tcp",
    "migrate",
    "migrate_resume",
    "diag_pid_in_use",
    "diag_shm",
    "shm_in_ipc_ns",
    "diag_unix",
    "diag_missing_file",
    "diag_no_permission",
    "diag_session",
];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Boot the VM in `mode` and return its `CW RESULT` lines as (name, verdict, detail); None
/// when the VM cannot be built here (the reason is printed as SKIPPED).
fn run_vm(mode: &str) -> Option<Vec<(String, String, String)>> {
    if !on_path("qemu-system-x86_64") {
        eprintln!(
            "SKIPPED: qemu-system-x86_64 is not installed, so real CRIU is not tested (make setup, or apt-get install qemu-system-x86 busybox-static criu cpio kmod)"
        );
        return None;
    }
    // The test workload is an example of this crate. `make test` builds it (--all-targets);
    // a lone `cargo nextest run -p criu-wrap` does not, so build it when missing or stale
    // (not always: a build with other features would rebuild the crate for nothing).
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let workload = profile_dir.join("examples/criu-workload");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/criu-workload.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&workload) < modified(&source) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(&cargo)
            .current_dir(repo_root())
            .args([
                "build",
                "-q",
                "-p",
                "criu-wrap",
                "--example",
                "criu-workload",
            ])
            .status()
            .expect("running cargo");
        assert!(st.success(), "building the criu-workload example failed");
    }
    let bin = assert_cmd::cargo::cargo_bin!("criu-wrap");

    let out = Command::new("bash")
        .arg(repo_root().join("scripts/criu-vm.sh"))
        // qemu emulates the CPU: alone ~90 s; beside the suite's heaviest tests 185 s (before
        // SHA-256 was optimised in the debug build: 266-365 s, once more than 400 s).
        .args(["--mode", mode, "--timeout", "600"])
        .env("CRIU_WRAP_BIN", bin)
        .env("CRIU_WORKLOAD_BIN", &workload)
        .output()
        .expect("running scripts/criu-vm.sh");
    let console = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(69) {
        eprintln!("SKIPPED: the CRIU VM cannot be built here: {}", err.trim());
        return None;
    }
    let results: Vec<(String, String, String)> = console
        .lines()
        .filter_map(|l| {
            let rest = l.trim_end_matches('\r').strip_prefix("CW RESULT ")?;
            let mut w = rest.splitn(3, ' ');
            Some((
                w.next()?.to_owned(),
                w.next()?.to_owned(),
                w.next().unwrap_or("").to_owned(),
            ))
        })
        .collect();
    for (name, verdict, detail) in &results {
        eprintln!("vm: {name}: {verdict} {detail}");
    }
    let tail: Vec<&str> = console.lines().rev().take(80).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert!(
        out.status.success() && console.contains("CW DONE"),
        "the VM did not run to its end ({}):\n{err}\n--- console tail ---\n{}",
        out.status,
        tail.join("\n")
    );
    let cw_lines: Vec<&str> = console.lines().filter(|l| l.starts_with("CW ")).collect();
    // Keep the criu-wrap output around for a failing assertion's message.
    *LAST_CONSOLE.lock().unwrap() = cw_lines.join("\n");
    Some(results)
}

static LAST_CONSOLE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn assert_all_ok(results: &[(String, String, String)], checks: &[&str]) {
    let failed: Vec<_> = results
        .iter()
        .filter(|(n, v, _)| checks.contains(&n.as_str()) && v != "ok")
        .collect();
    let missing: Vec<_> = checks
        .iter()
        .filter(|c| !results.iter().any(|(n, _, _)| n == *c))
        .collect();
    assert!(
        failed.is_empty() && missing.is_empty(),
        "real CRIU checks failed: {failed:?}, missing: {missing:?}\n--- console (criu-wrap output) ---\n{}",
        LAST_CONSOLE.lock().unwrap()
    );
}

/// Real CRIU: every check of `CHECKS`, then PostgreSQL 15 under real CRIU
/// (`scripts/criu-postgres.sh` is the recipe): in an IPC namespace it is dumped with pre-copy,
/// restored with its data and shared memory intact (the same sum, then writes), migrated to
/// another directory, and shut down cleanly. In its own PID namespace (which needs a mount
/// namespace with its own /proc for a non-root postmaster) the dump works but CRIU 3.17's
/// restore hits an internal bug (mnt: BUG at criu/mount.c:48); that outcome is printed, not
/// failed, and the test notices if a newer CRIU fixes it. One test, one boot: a VM per test
/// cost the suite a minute and a half.
#[test]
fn exclusive_vm_real_criu_and_postgres() {
    let pg = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    if !Path::new(&pg).join("postgres").exists() {
        testkit::skip!("PostgreSQL is not installed at {pg} (PG_BIN)");
    }
    let Some(results) = run_vm("all") else {
        return;
    };
    assert_all_ok(&results, CHECKS);
    assert_all_ok(
        &results,
        &[
            "pg_ipcns_start",
            "pg_ipcns_dump",
            "pg_ipcns_restore",
            "pg_ipcns_migrate",
            "pg_ipcns_shutdown",
            "pg_pidns_start",
            "pg_pidns_dump",
        ],
    );
    match results.iter().find(|(n, _, _)| n == "pg_pidns_restore") {
        Some((_, v, _)) if v == "ok" => {
            eprintln!("NOTE: PostgreSQL in its own PID namespace restored too (a CRIU newer than 3.17?)")
        }
        other => eprintln!(
            "NOTE: PostgreSQL in its own PID + mount namespace does not restore with this CRIU: {:?} (known: CRIU 3.17 'mnt: BUG at criu/mount.c:48'); the IPC-namespace recipe works",
            other.map(|(_, v, d)| format!("{v} {d}"))
        ),
    }
}
