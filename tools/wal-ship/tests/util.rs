//! Helpers: run wal-ship, make WAL files, read records back.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
pub use testkit::Run;
use wal_ship::name::WalName;

/// 1 MiB: the smallest segment size PostgreSQL allows, to keep tests quick.
pub const SEG: u32 = 1 << 20;

/// The wal-ship binary.
pub fn bin() -> &'static Path {
    assert_cmd::cargo::cargo_bin!("wal-ship")
}

/// A hermetic `wal-ship` command (no `PG*` variables, none of wal-ship's own either, no
/// `PGS_SSH_OPTS`).
pub fn wal_ship() -> Command {
    let mut c = testkit::tool(bin());
    c.env_remove("WAL_SHIP_KEY_FILE")
        .env_remove("WAL_SHIP_SSH_CONFIG")
        .env_remove("PGS_SSH_OPTS");
    Command::from_std(c)
}

/// Read a finished wal-ship process back (its stdout must be JSON lines).
pub fn finished(out: Output) -> Run {
    Run::new("wal-ship", out)
}

/// Run and return the output, whatever the exit code.
pub fn run(args: &[&str]) -> Run {
    let out = wal_ship().args(args).output().expect("run wal-ship");
    Run::new(format!("wal-ship {}", args.join(" ")), out)
}

/// Run, expect `code`, and return the output; panics with everything on a mismatch.
pub fn expect(code: i32, args: &[&str]) -> Run {
    let out = run(args);
    check(code, &out, &args);
    out
}

/// Panic with `what` and the whole run unless it exited with `code`.
pub fn check(code: i32, out: &Run, what: &dyn std::fmt::Debug) {
    assert_eq!(out.code, code, "wal-ship {what:?}\n{}", out.dump());
}

/// Write a synthetic segment `name` (1 MiB, valid page header) into `dir`; `fill` varies the
/// content. Returns its path.
pub fn segment(dir: &Path, name: &str, fill: u8) -> PathBuf {
    segment_sized(dir, name, fill, SEG)
}

pub fn segment_sized(dir: &Path, name: &str, fill: u8, size: u32) -> PathBuf {
    let n = WalName::parse(name).unwrap();
    let mut bytes = wal_ship::segment::synthetic(&n, size, 7_301_000_000_000_000_001, fill);
    // Something less regular than one byte repeated, still compressible.
    for (i, b) in bytes.iter_mut().enumerate().skip(64).step_by(97) {
        *b = (i % 251) as u8 ^ fill;
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The segment name at position `segno` on timeline `tli` (1 MiB segments).
pub fn seg_name(tli: u32, segno: u64) -> String {
    WalName::segment(tli, segno, SEG).to_string()
}

/// Where an object lives in a local archive.
pub fn object_path(archive: &Path, name: &str) -> PathBuf {
    let n = WalName::parse(name).unwrap();
    archive.join(wal_ship::archive::rel_path(&n))
}

/// A scratch directory that the postgres user can use too (tests run as root).
pub fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("wal-ship-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Make `path` (and its contents) owned by the server's user (when running as root).
pub fn chown_postgres(path: &Path) {
    if let Some((uid, gid)) = testkit::run_as() {
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Files under `dir`, recursively, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Flip one bit in the middle of a file.
pub fn flip_bit(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let at = b.len() / 2 + 3;
    b[at] ^= 0x04;
    std::fs::write(path, b).unwrap();
}
