//! Running CRIU: the command lines (pure functions, unit-tested) and one way to run them.
//!
//! Every invocation writes a log with `-o NAME -v4` into its images (or work) directory, so
//! that a failure can be explained from CRIU's own words ([`crate::diagnose`]). The command
//! lines follow the CRIU CLI as runc, podman and P.Haul use it:
//!
//! - pre-dump round k: `criu pre-dump -t PID -D DIR/pre-k --track-mem [--prev-images-dir ../pre-(k-1)]`
//! - final dump: `criu dump -t PID -D DIR [--track-mem --prev-images-dir pre-N] [--leave-running]`
//! - restore: `criu restore -D DIR --pidfile FILE [-d]`
//!
//! with `--tcp-established`, `--shell-job`, `--network-lock` and any `--criu-opt` added to the
//! dumps and (where CRIU wants them again) the restore.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use shared::ErrorKind;

/// The log file name CRIU writes for each action (inside the images or work directory).
pub const PRE_DUMP_LOG: &str = "pre-dump.log";
/// See [`PRE_DUMP_LOG`].
pub const DUMP_LOG: &str = "dump.log";
/// See [`PRE_DUMP_LOG`].
pub const RESTORE_LOG: &str = "restore.log";

/// How CRIU locks the network of a process with TCP connections while it is dumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkLock {
    /// nftables when `iptables-restore` is missing (CRIU's own default needs it), else CRIU's
    /// default.
    Auto,
    /// CRIU's default: rules added with `iptables-restore`.
    Iptables,
    /// A table `inet CRIU` through libnftables (no external program needed).
    Nftables,
}

/// Options that shape a dump (and, for the flags CRIU needs on both sides, the restore).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpFlags {
    /// `--tcp-established`: checkpoint established TCP connections (TCP repair mode).
    pub tcp_established: bool,
    /// `--shell-job`: the process belongs to a terminal session it does not lead.
    pub shell_job: bool,
    /// `--network-lock METHOD`, when not CRIU's default.
    pub network_lock: Option<&'static str>,
    /// Extra CRIU options passed through verbatim (`--criu-opt`).
    pub extra: Vec<String>,
}

impl DumpFlags {
    fn push_common(&self, args: &mut Vec<OsString>) {
        if self.tcp_established {
            args.push("--tcp-established".into());
        }
        if self.shell_job {
            args.push("--shell-job".into());
        }
        args.extend(self.extra.iter().map(OsString::from));
    }
}

fn logging(args: &mut Vec<OsString>, log: &str) {
    args.extend(["-o".into(), log.into(), "-v4".into()]);
}

/// `criu check` (the basic check: "Looks good."), logging into `workdir`.
pub fn check_args(workdir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["check".into(), "-W".into(), workdir.into()];
    logging(&mut a, "check.log");
    a
}

/// `criu check --feature NAME`, logging into `workdir`.
pub fn feature_args(name: &str, workdir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "check".into(),
        "--feature".into(),
        name.into(),
        "-W".into(),
        workdir.into(),
    ];
    logging(&mut a, &format!("check-{name}.log"));
    a
}

/// One pre-dump round into `dir`; `prev` is the previous round's directory relative to `dir`.
pub fn pre_dump_args(pid: u32, dir: &Path, prev: Option<&str>, f: &DumpFlags) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "pre-dump".into(),
        "-t".into(),
        pid.to_string().into(),
        "-D".into(),
        dir.into(),
    ];
    logging(&mut a, PRE_DUMP_LOG);
    a.push("--track-mem".into());
    if let Some(prev) = prev {
        a.extend(["--prev-images-dir".into(), prev.into()]);
    }
    if let Some(m) = f.network_lock {
        a.extend(["--network-lock".into(), m.into()]);
    }
    f.push_common(&mut a);
    a
}

/// The final dump into `dir`. `prev` (relative to `dir`) is the last pre-dump round, if any;
/// memory tracking is then on, so that only pages dirtied since that round are written.
pub fn dump_args(
    pid: u32,
    dir: &Path,
    prev: Option<&str>,
    leave_running: bool,
    f: &DumpFlags,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "dump".into(),
        "-t".into(),
        pid.to_string().into(),
        "-D".into(),
        dir.into(),
    ];
    logging(&mut a, DUMP_LOG);
    if let Some(prev) = prev {
        a.extend([
            "--track-mem".into(),
            "--prev-images-dir".into(),
            prev.into(),
        ]);
    }
    if leave_running {
        a.push("--leave-running".into());
    }
    if let Some(m) = f.network_lock {
        a.extend(["--network-lock".into(), m.into()]);
    }
    f.push_common(&mut a);
    a
}

/// Restore from `dir`, writing the restored root PID to `pidfile`; `detach` returns once the
/// tree runs (`-d`), else CRIU stays its parent until it exits. The network lock method is
/// not repeated: CRIU reads it from the images.
pub fn restore_args(dir: &Path, pidfile: &Path, detach: bool, f: &DumpFlags) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["restore".into(), "-D".into(), dir.into()];
    logging(&mut a, RESTORE_LOG);
    a.extend(["--pidfile".into(), pidfile.into()]);
    if detach {
        a.push("-d".into());
    }
    f.push_common(&mut a);
    a
}

/// The CRIU executable to run.
#[derive(Debug, Clone)]
pub struct Criu {
    /// As given (`--criu`, `$CRIU`, default `criu` on `PATH`).
    pub path: PathBuf,
}

/// What one CRIU run left behind.
#[derive(Debug)]
pub struct Run {
    /// Exit status: `Some(code)`, or `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output (e.g. "Looks good.").
    pub stdout: String,
    /// Standard error (where CRIU writes errors when no log file is open yet).
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Run {
    /// True when CRIU exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl Criu {
    /// The command for these arguments (not started).
    pub fn command(&self, args: &[OsString]) -> Command {
        let mut c = Command::new(&self.path);
        c.args(args);
        c
    }

    /// Run CRIU to completion, capturing its output. Only failing to start it is an error;
    /// a non-zero exit is the caller's to diagnose.
    pub fn run(&self, args: &[OsString]) -> anyhow::Result<Run> {
        let started = Instant::now();
        let out: Output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        Ok(Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// The error for a CRIU that cannot be started.
    pub fn spawn_error(&self, e: std::io::Error) -> anyhow::Error {
        let p = self.path.display();
        match e.kind() {
            std::io::ErrorKind::NotFound => shared::err(
                ErrorKind::Unavailable,
                format!(
                    "CRIU not found ('{p}'): install it (apt-get install criu) or pass --criu PATH"
                ),
            ),
            std::io::ErrorKind::PermissionDenied => shared::err(
                ErrorKind::Unavailable,
                format!("cannot execute CRIU '{p}': permission denied (check the file's mode, or pass --criu PATH)"),
            ),
            _ => anyhow::Error::new(e).context(format!("starting CRIU '{p}'")),
        }
    }

    /// `criu --version`, e.g. "3.17.1" (None if it does not say).
    pub fn version(&self) -> anyhow::Result<Option<String>> {
        let run = self
            .run(&["--version".into()])
            .context("asking CRIU its version")?;
        Ok(parse_version(&run.stdout))
    }
}

/// The version number in `criu --version` output ("Version: 3.17.1").
pub fn parse_version(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Read a CRIU log, or an empty string if there is none (CRIU failed before opening it).
pub fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(a: &[OsString]) -> Vec<&str> {
        a.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn first_pre_dump_tracks_memory_without_a_parent() {
        let a = pre_dump_args(42, Path::new("/img/pre-1"), None, &DumpFlags::default());
        assert_eq!(
            strs(&a),
            [
                "pre-dump",
                "-t",
                "42",
                "-D",
                "/img/pre-1",
                "-o",
                "pre-dump.log",
                "-v4",
                "--track-mem"
            ]
        );
    }

    #[test]
    fn later_pre_dumps_point_at_the_previous_round() {
        let f = DumpFlags {
            tcp_established: true,
            network_lock: Some("nftables"),
            ..DumpFlags::default()
        };
        let a = pre_dump_args(42, Path::new("/img/pre-2"), Some("../pre-1"), &f);
        let s = strs(&a);
        assert_eq!(&s[..5], ["pre-dump", "-t", "42", "-D", "/img/pre-2"]);
        let at = s.iter().position(|x| *x == "--prev-images-dir").unwrap();
        assert_eq!(s[at + 1], "../pre-1");
        assert!(s.contains(&"--track-mem"));
        assert!(s.contains(&"--tcp-established"));
        let at = s.iter().position(|x| *x == "--network-lock").unwrap();
        assert_eq!(s[at + 1], "nftables");
    }

    #[test]
    fn single_dump_has_no_tracking_and_kills_by_default() {
        let a = dump_args(7, Path::new("/img"), None, false, &DumpFlags::default());
        assert_eq!(
            strs(&a),
            ["dump", "-t", "7", "-D", "/img", "-o", "dump.log", "-v4"]
        );
    }

    #[test]
    fn final_dump_after_pre_copy() {
        let f = DumpFlags {
            shell_job: true,
            extra: vec!["--ext-unix-sk".into()],
            ..DumpFlags::default()
        };
        let a = dump_args(7, Path::new("/img"), Some("pre-3"), true, &f);
        assert_eq!(
            strs(&a),
            [
                "dump",
                "-t",
                "7",
                "-D",
                "/img",
                "-o",
                "dump.log",
                "-v4",
                "--track-mem",
                "--prev-images-dir",
                "pre-3",
                "--leave-running",
                "--shell-job",
                "--ext-unix-sk"
            ]
        );
    }

    #[test]
    fn restore_repeats_the_socket_flags_but_not_the_lock() {
        let f = DumpFlags {
            tcp_established: true,
            network_lock: Some("nftables"),
            ..DumpFlags::default()
        };
        let a = restore_args(Path::new("/img"), Path::new("/img/restore.pid"), true, &f);
        assert_eq!(
            strs(&a),
            [
                "restore",
                "-D",
                "/img",
                "-o",
                "restore.log",
                "-v4",
                "--pidfile",
                "/img/restore.pid",
                "-d",
                "--tcp-established"
            ]
        );
    }

    #[test]
    fn check_commands_log_into_the_work_dir() {
        assert_eq!(
            strs(&check_args(Path::new("/w"))),
            ["check", "-W", "/w", "-o", "check.log", "-v4"]
        );
        assert_eq!(
            strs(&feature_args("mem_dirty_track", Path::new("/w"))),
            [
                "check",
                "--feature",
                "mem_dirty_track",
                "-W",
                "/w",
                "-o",
                "check-mem_dirty_track.log",
                "-v4"
            ]
        );
    }

    #[test]
    fn version_line() {
        assert_eq!(parse_version("Version: 3.17.1\n"), Some("3.17.1".into()));
        assert_eq!(
            parse_version("Version: 4.1\nGitID: v4.1\n"),
            Some("4.1".into())
        );
        assert_eq!(parse_version("what\n"), None);
    }
}
