//! `criu-wrap migrate`: move a running process tree to another host.
//!
//! 1. Preflight, before anything freezes: the process exists, the target directory is empty
//!    and the target runs criu-wrap, rsync and sha256sum.
//! 2. Pre-copy rounds (when the kernel tracks dirty memory): each round is copied to the
//!    target and verified while the process keeps running.
//! 3. The final dump freezes the process, writes the last delta, and kills it (CRIU's
//!    default: from here it runs nowhere until a restore).
//! 4. The final files are copied and verified (SHA-256 of every file, both sides), and
//!    `criu-wrap restore --detach` runs on the target.
//!
//! The invariant is "never both running, never neither": a failure before step 3 leaves the
//! process running where it was (criu-wrap checks, and continues stopped tasks); a failure
//! after it restores the process on the source from the same images, which are complete and
//! consistent (CRIU restores the network lock it took, too). When the target's answer is lost
//! (ssh dropped during the restore) criu-wrap asks the target what happened before doing
//! anything; if it still cannot tell, it restores nothing and stops with exit 126, naming
//! what to check, rather than risk two copies.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shared::host::{sh_quote, SshOptions};
use shared::{ErrorKind, Output, Status};

use crate::criu::Criu;
use crate::diagnose::Diagnosis;
use crate::dump::{self, DumpOpts};
use crate::records::{self, Restore, Transfer};
use crate::restore;
use crate::transport::{Dest, Transport};
use crate::{images, ms, procs, CriuFailed};

/// `criu-wrap migrate`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The process to move (with all its descendants).
    #[arg(long)]
    pub pid: u32,
    /// Where to: ssh://[user@]host[:port]/dir, or file:///dir / a path on this host.
    #[arg(long, value_name = "DEST", value_parser = Dest::parse)]
    pub to: Dest,
    /// Local images directory (default: a new one under $TMPDIR, removed afterwards unless
    /// the outcome is undecided).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    #[command(flatten)]
    pub opts: DumpOpts,
    /// An ssh option for an ssh:// target, KEY=VALUE (repeatable), e.g. IdentityFile=FILE or
    /// UserKnownHostsFile=FILE. More come from PGS_SSH_OPTS (ssh words, shell-quoted), after
    /// these. BatchMode=yes is always on; host key checking cannot be turned off.
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// The rsync executable.
    #[arg(
        long,
        env = "CRIU_WRAP_RSYNC",
        default_value = "rsync",
        value_name = "PATH"
    )]
    pub rsync: String,
    /// criu-wrap on the target (default: `criu-wrap` on its PATH; this binary for a local
    /// destination).
    #[arg(long, value_name = "PATH")]
    pub remote_criu_wrap: Option<String>,
    /// CRIU on the target (default: the target's own choice; this --criu for a local one).
    #[arg(long, value_name = "PATH")]
    pub remote_criu: Option<String>,
    /// A shell command run after the final dump, while the process is frozen and before it
    /// is restored on the target: the place to copy files it has open (a data directory)
    /// so that both sides hold the same. It sees CRIU_WRAP_PID, CRIU_WRAP_IMAGES,
    /// CRIU_WRAP_TO (the target directory) and CRIU_WRAP_HOST (the ssh host, empty for a
    /// local target); its output goes to stderr. If it fails, the process is restored here.
    #[arg(long, value_name = "CMD")]
    pub after_dump: Option<String>,
}

/// What the target said to `restore`.
enum Target {
    /// It runs there.
    Restored(Restore),
    /// It does not run there (CRIU failed and cleaned up, or the restore never started).
    Failed(anyhow::Error),
    /// We cannot tell.
    Unknown(String),
}

/// What [`probe`] found on the target after a lost answer.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    Running(u32),
    NotRunning(String),
    Unknown(String),
}

fn remote_failure(
    rec: Option<&serde_json::Value>,
    code: Option<i32>,
    stderr: &str,
) -> anyhow::Error {
    let kind = match code {
        Some(65) => ErrorKind::DataErr,
        Some(74) => ErrorKind::Io,
        Some(75) => ErrorKind::Retry,
        Some(2) => ErrorKind::Usage,
        _ => ErrorKind::Unavailable,
    };
    let message = rec
        .and_then(|r| r.get("message"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("exit {code:?}: {}", stderr.trim()));
    let what = "restore on the target failed";
    match rec.and_then(|r| r.get("cause")).and_then(|c| c.as_str()) {
        Some(cause) => {
            let get = |k: &str| {
                rec.and_then(|r| r.get(k))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let log = rec
                .and_then(|r| r.get("log"))
                .and_then(|l| l.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            CriuFailed::error(
                what,
                Diagnosis {
                    cause: crate::diagnose::tag(cause),
                    problem: get("problem"),
                    fix: get("fix"),
                    kind,
                    log,
                },
                rec.and_then(|r| r.get("log_file"))
                    .and_then(|v| v.as_str())
                    .map(PathBuf::from),
            )
        }
        None => shared::err(kind, format!("{what}: {message}")),
    }
}

fn restore_on_target(t: &Transport, argv: &[String]) -> anyhow::Result<Target> {
    let r = t.run(argv)?;
    let mut restored = None;
    let mut error = None;
    let mut summary = false;
    for rec in shared::jsonl::records(r.stdout.as_bytes()).flatten() {
        match rec.kind.as_str() {
            "restore" => restored = rec.parse::<Restore>().ok(),
            "error" => error = Some(rec.value),
            "summary" => summary = true,
            _ => {}
        }
    }
    Ok(match (restored, summary) {
        (Some(mut rest), true) if r.code == Some(0) => {
            rest.side = Some("target".into());
            Target::Restored(rest)
        }
        // criu-wrap ran to its end and said no: CRIU killed whatever it had started.
        (_, true) => Target::Failed(remote_failure(error.as_ref(), r.code, &r.stderr)),
        // ssh never connected (its own words): nothing ran there.
        _ if t.unreachable(&r) && r.stdout.is_empty() && never_connected(&r.stderr) => {
            Target::Failed(shared::err(
                ErrorKind::Unavailable,
                format!(
                    "restore on the target failed: ssh could not connect: {}",
                    r.stderr.trim()
                ),
            ))
        }
        _ => Target::Unknown(format!(
            "the target's criu-wrap ended without a summary (exit {:?}): {}",
            r.code,
            r.stderr.trim()
        )),
    })
}

/// ssh's messages for a connection that never got as far as running a command.
fn never_connected(stderr: &str) -> bool {
    [
        "Connection refused",
        "Could not resolve hostname",
        "No route to host",
        "Network is unreachable",
        "Connection timed out",
        "Permission denied (",
        "Host key verification failed",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

/// Ask the target whether the restore happened, from its restore log and pidfile.
fn probe(t: &Transport, dir: &str) -> Probe {
    let script = format!(
        "cd {d} 2>/dev/null || {{ echo absent; exit 0; }}; \
         if grep -q 'Restore finished successfully' restore.log 2>/dev/null; then \
           p=$(cat {pf} 2>/dev/null); if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then echo \"running $p\"; else echo \"exited $p\"; fi; \
         elif grep -q 'Restoring FAILED' restore.log 2>/dev/null; then echo failed; \
         elif [ -e restore.log ]; then echo busy; else echo absent; fi",
        d = sh_quote(dir),
        pf = restore::PIDFILE
    );
    let mut last = String::new();
    for attempt in 0..6 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let r = match t.run(&["sh".into(), "-c".into(), script.clone()]) {
            Ok(r) => r,
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        };
        let said = r.stdout.trim().to_owned();
        match said.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["running", pid] => {
                if let Ok(p) = pid.parse() {
                    return Probe::Running(p);
                }
            }
            // It was restored and has ended since: it ran there, so it must not run here.
            ["exited", ..] => return Probe::Running(0),
            ["failed"] => {
                return Probe::NotRunning("CRIU on the target logged Restoring FAILED".into())
            }
            ["absent"] => {
                return Probe::NotRunning("the restore never started on the target".into())
            }
            _ => {}
        }
        last = if said.is_empty() {
            r.stderr.trim().to_owned()
        } else {
            said
        };
    }
    Probe::Unknown(last)
}

/// `criu-wrap migrate`.
pub fn run(criu: &Criu, a: &MigrateArgs, mut out: Output) -> anyhow::Result<Status> {
    let started = Instant::now();
    // SIGTERM, SIGINT, SIGHUP: before the final dump the run stops at its next step, the
    // process running where it was; after it the move is finished first (the restore, on
    // the target or here), since until then the process runs nowhere.
    let interrupt = shared::signals::Interrupt::watch()?;
    let stopped = |stage: &str| match interrupt.name() {
        Some(by) => Err(shared::err(
            ErrorKind::Retry,
            format!("interrupted by {by} {stage}: the process runs where it was; run it again"),
        )),
        None => Ok(()),
    };
    let ssh = SshOptions::from_options("--ssh-option", &a.ssh_options)
        .and_then(|flags| Ok(flags.then(SshOptions::from_env()?)));
    let local = matches!(a.to, Dest::Local(_));
    let remote_wrap = match (&a.remote_criu_wrap, local) {
        (Some(w), _) => w.clone(),
        (None, true) => std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "criu-wrap".into()),
        (None, false) => "criu-wrap".into(),
    };
    let remote_criu = match (&a.remote_criu, local) {
        (Some(c), _) => Some(c.clone()),
        (None, true) => Some(criu.path.display().to_string()),
        (None, false) => None,
    };
    let defaulted = a.images.is_none();
    let staging = a.images.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        std::env::temp_dir().join(format!("criu-wrap-migrate-{}-{secs}", a.pid))
    });

    // Where a failure leaves the process.
    #[derive(PartialEq)]
    enum Phase {
        Preflight,
        Dumping,
        Dumped,
    }
    let mut phase = Phase::Preflight;
    let mut bytes = 0u64;
    let mut taken: Option<dump::Taken> = None;
    let mut plan: Option<dump::Plan> = None;

    let result = (|| -> anyhow::Result<Restore> {
        // A refused ssh option is a usage error, reported before anything is frozen.
        let transport = Transport::new(a.to.clone(), ssh?, a.rsync.clone());
        if let Dest::Local(d) = &a.to {
            if std::path::absolute(d).ok() == std::path::absolute(&staging).ok() {
                return Err(shared::err(
                    ErrorKind::Usage,
                    "--to and --images name the same directory: the target needs its own",
                ));
            }
        }
        let p = dump::plan(criu, a.pid, &staging, &a.opts, false)?;
        plan = Some(p.clone());
        transport.preflight(&remote_wrap)?;
        images::prepare_empty_dir(&staging)?;
        stopped("before anything was frozen")?;
        phase = Phase::Dumping;
        let t = dump::take(criu, &p, &mut out, &mut |out, _round, part| {
            stopped("during the pre-copy")?;
            let t0 = Instant::now();
            let (files, b) = transport.copy_verified(&p.dir, part)?;
            bytes += b;
            out.emit(&Transfer {
                part: part.into(),
                files,
                bytes: b,
                ms: ms(t0.elapsed()),
                verified: true,
            })
        })?;
        phase = Phase::Dumped;
        taken = Some(t.clone());
        dump::write_manifest(&p, &t);
        if !procs::wait_gone(a.pid, Duration::from_secs(5)) {
            return Err(shared::err(
                ErrorKind::Internal,
                format!(
                    "process {} still runs after criu dump, which should have killed it",
                    a.pid
                ),
            ));
        }
        if let Some(hook) = &a.after_dump {
            out.emit(&run_hook(hook, a.pid, &staging, &a.to)?)?;
        }
        let t0 = Instant::now();
        let (files, b) = transport.copy_verified(&p.dir, "")?;
        bytes += b;
        out.emit(&Transfer {
            part: "final".into(),
            files,
            bytes: b,
            ms: ms(t0.elapsed()),
            verified: true,
        })?;
        let mut argv = vec![remote_wrap.clone()];
        if let Some(c) = &remote_criu {
            argv.extend(["--criu".into(), c.clone()]);
        }
        argv.extend([
            "restore".into(),
            "--images".into(),
            a.to.dir(),
            "--detach".into(),
        ]);
        match restore_on_target(&transport, &argv)? {
            Target::Restored(r) => Ok(r),
            Target::Failed(e) => Err(e),
            Target::Unknown(why) => match probe(&transport, &a.to.dir()) {
                Probe::Running(pid) => {
                    shared::warn!("lost the target's answer ({why}), but it runs the process (PID {pid})");
                    Ok(Restore {
                        pid: if pid == 0 { a.pid } else { pid },
                        images: a.to.dir(),
                        ms: 0,
                        restore_ms: None,
                        detached: true,
                        side: Some("target".into()),
                    })
                }
                Probe::NotRunning(how) => Err(shared::err(
                    ErrorKind::Unavailable,
                    format!("restore on the target failed: {why}; {how}"),
                )),
                Probe::Unknown(how) => Err(shared::err(
                    ErrorKind::Fatal,
                    format!(
                        "cannot tell whether the process runs on the target ({why}; asking again: {how}): NOT restoring it here, to never run two copies. Check the target ({}/restore.log); only if it does not run there, restore here with: criu-wrap restore --images {} --detach",
                        a.to.dir(),
                        staging.display()
                    ),
                )),
            },
        }
    })();

    let downtime =
        |t: &Option<dump::Taken>| t.as_ref().map_or(0, |t| ms(t.final_started.elapsed()));
    let mode = plan.as_ref().map_or("stop_and_copy", |p| {
        if p.pre_copy.is_some() {
            "pre_copy"
        } else {
            "stop_and_copy"
        }
    });
    let rounds = taken.as_ref().map_or(0, |t| t.rounds.len() as u32);
    let record = |outcome: &str, downtime_ms: u64, taken: &Option<dump::Taken>| records::Migrate {
        pid: a.pid,
        to: a.to.describe(),
        outcome: outcome.into(),
        mode: mode.into(),
        rounds,
        bytes_transferred: bytes,
        downtime_ms,
        frozen_ms: taken.as_ref().and_then(|t| t.frozen_ms),
        total_ms: ms(started.elapsed()),
    };

    match result {
        Ok(r) => {
            let downtime_ms = downtime(&taken);
            let pid = r.pid;
            out.emit(&r)?;
            out.emit(&record("migrated", downtime_ms, &taken))?;
            if defaulted {
                let _ = std::fs::remove_dir_all(&staging);
            }
            out.finish(&with_stop(
                serde_json::json!({
                    "pid": pid, "outcome": "migrated", "downtime_ms": downtime_ms, "bytes_transferred": bytes,
                }),
                &interrupt,
                true,
            ))
        }
        Err(e) if phase != Phase::Dumped || shared::exit::classify(&e) == ErrorKind::Fatal => {
            // Never frozen for good (or we must not touch it): make sure it runs where it is.
            if phase == Phase::Dumping {
                let r = dump::resumed_record(a.pid);
                out.emit(&r)?;
            }
            crate::report(&mut out, &e)?;
            let outcome = if shared::exit::classify(&e) == ErrorKind::Fatal {
                "unknown"
            } else {
                "not_migrated"
            };
            out.emit(&record(outcome, 0, &taken))?;
            // Our own staging directory holds the process's memory: gone once it is of no use
            // (an undecided outcome keeps it, the error names it).
            if defaulted && outcome == "not_migrated" {
                let _ = std::fs::remove_dir_all(&staging);
            }
            out.finish(&with_stop(
                serde_json::json!({ "pid": a.pid, "outcome": outcome }),
                &interrupt,
                false,
            ))
        }
        Err(e) => {
            // The dump killed the process: bring it back here from the same images.
            let Some(p) = plan.as_ref() else {
                unreachable!("phase Dumped comes after the plan")
            };
            let back = restore::flags(
                &staging,
                p.flags.tcp_established,
                p.flags.shell_job,
                &p.flags.extra,
            )
            .and_then(|f| restore::restore_detached(criu, &staging, &f));
            match back {
                Ok(mut r) => {
                    r.side = Some("source".into());
                    let downtime_ms = downtime(&taken);
                    let pid = r.pid;
                    out.emit(&r)?;
                    out.emit(&records::Resumed {
                        pid,
                        how: "restored".into(),
                        alive: procs::alive(pid),
                        continued: Vec::new(),
                    })?;
                    crate::report(&mut out, &e)?;
                    out.emit(&record("resumed_on_source", downtime_ms, &taken))?;
                    if defaulted {
                        let _ = std::fs::remove_dir_all(&staging);
                    }
                    out.finish(&with_stop(
                        serde_json::json!({ "pid": pid, "outcome": "resumed_on_source" }),
                        &interrupt,
                        true,
                    ))
                }
                Err(back_err) => {
                    crate::report(&mut out, &e)?;
                    let fatal = shared::err(
                        ErrorKind::Fatal,
                        format!(
                            "the process runs nowhere: the target did not take it and restoring it here failed too ({back_err:#}); the images are in {}",
                            staging.display()
                        ),
                    );
                    out.emit(&records::Resumed {
                        pid: a.pid,
                        how: "not_running".into(),
                        alive: false,
                        continued: Vec::new(),
                    })?;
                    crate::report(&mut out, &fatal)?;
                    out.emit(&record("not_running", 0, &taken))?;
                    out.finish(&with_stop(
                        serde_json::json!({ "pid": a.pid, "outcome": "not_running" }),
                        &interrupt,
                        false,
                    ))
                }
            }
        }
    }
}

/// The summary's fields, with `stopped_by` when a signal came. `finished`: the process was
/// restored after the final dump (on the target or here), so a signal was only noted until
/// then, which stderr says too.
fn with_stop(
    mut v: serde_json::Value,
    interrupt: &shared::signals::Interrupt,
    finished: bool,
) -> serde_json::Value {
    if let (Some(by), serde_json::Value::Object(m)) = (interrupt.name(), &mut v) {
        if finished {
            shared::msg::error_line(&format!(
                "got {by} while the process was frozen: the move was finished first"
            ));
        }
        m.insert("stopped_by".into(), by.into());
    }
    v
}

/// Run the `--after-dump` command; a non-zero exit is an error (the caller resumes).
fn run_hook(
    hook: &str,
    pid: u32,
    staging: &std::path::Path,
    to: &Dest,
) -> anyhow::Result<records::Hook> {
    use shared::ResultExt;
    let t0 = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(hook)
        .env("CRIU_WRAP_PID", pid.to_string())
        .env("CRIU_WRAP_IMAGES", staging)
        .env("CRIU_WRAP_TO", to.dir())
        .env("CRIU_WRAP_HOST", to.login())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .kind_context(ErrorKind::Io, "cannot run the --after-dump command with sh")?;
    if !status.success() {
        return Err(shared::err(
            ErrorKind::Unavailable,
            format!("the --after-dump command failed ({status}): {hook}"),
        ));
    }
    Ok(records::Hook {
        command: hook.to_owned(),
        ms: ms(t0.elapsed()),
        exit_code: 0,
    })
}
