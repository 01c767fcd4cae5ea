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

#[test]
fn exclusive_vm_real_criu() {
    if !on_path("qemu-system-x86_64") {
        testkit::skip!(
            "qemu-system-x86_64 is not installed, so real CRIU is not tested (make setup, or apt-get install qemu-system-x86 busybox-static criu cpio kmod)"
        );
    }
    // The test workload is an example of this crate: build it (quick when up to date).
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
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let workload = profile_dir.join("examples/criu-workload");
    let bin = assert_cmd::cargo::cargo_bin!("criu-wrap");

    let out = Command::new("bash")
        .arg(repo_root().join("scripts/criu-vm.sh"))
        .args(["--mode", "test", "--timeout", "270"])
        .env("CRIU_WRAP_BIN", bin)
        .env("CRIU_WORKLOAD_BIN", &workload)
        .output()
        .expect("running scripts/criu-vm.sh");
    let console = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(69) {
        testkit::skip!("the CRIU VM cannot be built here: {}", err.trim());
    }
    let results: Vec<(&str, &str, &str)> = console
        .lines()
        .filter_map(|l| {
            let rest = l.trim_end_matches('\r').strip_prefix("CW RESULT ")?;
            let mut w = rest.splitn(3, ' ');
            Some((w.next()?, w.next()?, w.next().unwrap_or("")))
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
    let failed: Vec<_> = results.iter().filter(|(_, v, _)| *v != "ok").collect();
    let missing: Vec<_> = CHECKS
        .iter()
        .filter(|c| !results.iter().any(|(n, _, _)| n == *c))
        .collect();
    assert!(
        failed.is_empty() && missing.is_empty(),
        "real CRIU checks failed: {failed:?}, missing: {missing:?}\n--- console (criu-wrap output) ---\n{}",
        console
            .lines()
            .filter(|l| l.starts_with("CW "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
