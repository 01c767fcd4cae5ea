//! `criu-wrap restore`: bring a dumped process tree back from its images.
//!
//! The flags CRIU wants on both sides (`--tcp-established`, `--shell-job`) come from the
//! dump's manifest, so `restore --images DIR` is enough after `criu-wrap dump`. With
//! `--detach` criu-wrap returns as soon as the tree runs (the `restore` record carries its
//! PID); without it CRIU stays the tree's parent, criu-wrap writes `restore` once the tree
//! runs and `exit` when it ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use shared::{ErrorKind, Output, Status};

use crate::criu::{self, Criu, DumpFlags};
use crate::diagnose::{self, Action};
use crate::images::Manifest;
use crate::records::{self, Restore};
use crate::{ms, procs, stats, CriuFailed};

/// `criu-wrap restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The images directory written by `criu-wrap dump` (or by CRIU).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Return once the process runs, instead of staying its parent until it exits.
    #[arg(long)]
    pub detach: bool,
    /// Restore established TCP connections (implied when the dump's manifest says so).
    #[arg(long)]
    pub tcp_established: bool,
    /// Restore a terminal job (implied when the dump's manifest says so).
    #[arg(long)]
    pub shell_job: bool,
    /// An extra CRIU option, passed through (repeatable).
    #[arg(long = "criu-opt", value_name = "OPT", allow_hyphen_values = true)]
    pub criu_opts: Vec<String>,
}

/// The pidfile CRIU writes into the images directory.
pub const PIDFILE: &str = "restore.pid";

/// Check that `dir` holds CRIU images, and combine the manifest's flags with the command
/// line's.
pub fn flags(
    dir: &Path,
    tcp: bool,
    shell_job: bool,
    extra: &[String],
) -> anyhow::Result<DumpFlags> {
    // A path that is not there is an I/O error (74), as in every tool; a directory without
    // images is bad input (65).
    if !dir.is_dir() {
        return Err(shared::err(
            ErrorKind::Io,
            format!(
                "the images directory {} is not there: give the directory a dump wrote",
                dir.display()
            ),
        ));
    }
    if !dir.join("inventory.img").is_file() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "{} holds no CRIU images (no inventory.img): give the directory a dump wrote",
                dir.display()
            ),
        ));
    }
    let m = Manifest::read(dir)?;
    Ok(DumpFlags {
        tcp_established: tcp || m.as_ref().is_some_and(|m| m.tcp_established),
        shell_job: shell_job || m.as_ref().is_some_and(|m| m.shell_job),
        network_lock: None,
        extra: extra.to_vec(),
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn failure(run_text: String, dir: &Path) -> anyhow::Error {
    let log = dir.join(criu::RESTORE_LOG);
    let d = diagnose::diagnose(
        Action::Restore,
        &format!("{run_text}\n{}", criu::read_log(&log)),
        procs::is_root(),
    );
    CriuFailed::error("criu restore failed", d, Some(log).filter(|p| p.exists()))
}

/// Restore detached: returns the `restore` record (the tree runs on its own).
pub fn restore_detached(criu: &Criu, dir: &Path, f: &DumpFlags) -> anyhow::Result<Restore> {
    let pidfile = absolute(dir)?.join(PIDFILE);
    let _ = std::fs::remove_file(&pidfile);
    let run = criu.run(&criu::restore_args(dir, &pidfile, true, f))?;
    if !run.ok() {
        return Err(failure(format!("{}\n{}", run.stdout, run.stderr), dir));
    }
    let pid = read_pid(&pidfile).ok_or_else(|| {
        shared::err(
            ErrorKind::Internal,
            format!(
                "criu restore succeeded but wrote no PID to {}",
                pidfile.display()
            ),
        )
    })?;
    Ok(Restore {
        pid,
        images: dir.display().to_string(),
        ms: ms(run.elapsed),
        restore_ms: stats::read_restore(dir).map(|s| (s.restore_time_us + 500) / 1000),
        detached: true,
        side: None,
    })
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))
}

/// `criu-wrap restore`.
pub fn run(criu: &Criu, a: &RestoreArgs, mut out: Output) -> anyhow::Result<Status> {
    let result = (|| -> anyhow::Result<Option<u32>> {
        let f = flags(&a.images, a.tcp_established, a.shell_job, &a.criu_opts)?;
        if a.detach {
            let r = restore_detached(criu, &a.images, &f)?;
            let pid = r.pid;
            out.emit(&r)?;
            return Ok(Some(pid));
        }
        // Attached: CRIU stays the parent of the restored tree and exits when it does. Its
        // stdout must not mix with our JSON lines, so it goes to our stderr.
        let pidfile = absolute(&a.images)?.join(PIDFILE);
        let _ = std::fs::remove_file(&pidfile);
        let started = Instant::now();
        let mut child = criu
            .command(&criu::restore_args(&a.images, &pidfile, false, &f))
            .stdout(Stdio::from(std::io::stderr()))
            .spawn()
            .map_err(|e| criu.spawn_error(e))?;
        let pid = loop {
            if let Some(pid) = read_pid(&pidfile) {
                // The pidfile is written right after the fork; wait for CRIU to say it
                // finished, or to fail (it then kills the tree and exits).
                let log = a.images.join(criu::RESTORE_LOG);
                if criu::read_log(&log).contains("Restore finished successfully") {
                    break pid;
                }
            }
            if let Some(status) = child.try_wait().context("waiting for criu restore")? {
                if status.success() {
                    // The tree ran and ended before we looked.
                    if let Some(pid) = read_pid(&pidfile) {
                        break pid;
                    }
                }
                return Err(failure(
                    format!("criu restore exited with {status}"),
                    &a.images,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        out.emit(&Restore {
            pid,
            images: a.images.display().to_string(),
            ms: ms(started.elapsed()),
            restore_ms: stats::read_restore(&a.images).map(|s| (s.restore_time_us + 500) / 1000),
            detached: false,
            side: None,
        })?;
        let status = child.wait().context("waiting for the restored process")?;
        use std::os::unix::process::ExitStatusExt;
        out.emit(&records::Exit {
            pid,
            code: status.code(),
            signal: status.signal(),
        })?;
        Ok(Some(pid))
    })();
    match result {
        Ok(pid) => out.finish(&serde_json::json!({ "pid": pid })),
        Err(e) => {
            crate::report(&mut out, &e)?;
            out.finish(&serde_json::json!({ "pid": null }))
        }
    }
}
