//! `criu-wrap check`: what CRIU can do on this host, and which migration modes follow.
//!
//! `criu check` is the basic test (it also exercises TCP repair); `criu check --feature X`
//! probes one capability each: `mem_dirty_track` (soft-dirty bits, for iterative pre-copy),
//! `uffd` and `uffd-noncoop` (userfaultfd, for lazy pages / post-copy), `tcp_half_closed`,
//! `network_lock_nftables`. Each becomes a `feature` record; the `verdict` names the modes:
//! `stop_and_copy` (basic check passed), `pre_copy` (plus dirty tracking), `lazy_pages` (plus
//! both userfaultfd features). The exit code is 0 when at least stop-and-copy works, else the
//! diagnosed failure's (69 for a kernel CRIU does not support, 74 without permission).

use std::path::{Path, PathBuf};

use shared::{ErrorKind, Output, Status};

use crate::criu::{self, Criu, Run};
use crate::diagnose::{self, Action};
use crate::records::{Feature, Verdict};
use crate::{procs, CriuFailed};

/// The features probed with `criu check --feature`, and what each is needed for.
pub const FEATURES: &[(&str, &str)] = &[
    ("mem_dirty_track", "pre_copy"),
    ("uffd", "lazy_pages"),
    ("uffd-noncoop", "lazy_pages"),
    ("tcp_half_closed", "tcp_established"),
    ("network_lock_nftables", "tcp_established"),
];

/// A scratch directory for CRIU's check logs, removed on drop unless kept (a failure's log
/// is named in the error, so it must stay).
pub(crate) struct WorkDir(pub PathBuf, bool);

impl WorkDir {
    pub(crate) fn new(what: &str) -> anyhow::Result<WorkDir> {
        use anyhow::Context;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("criu-wrap-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(WorkDir(p, false))
    }

    /// Leave the directory in place.
    pub(crate) fn keep(&mut self) {
        self.1 = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Everything a failed (or successful) CRIU run said: stdout, stderr and its log.
pub(crate) fn all_output(run: &Run, log: &Path) -> String {
    format!("{}\n{}\n{}", run.stdout, run.stderr, criu::read_log(log))
}

/// Probe one feature: `Ok(true)` when CRIU says "NAME is supported".
pub fn feature(criu: &Criu, name: &str, workdir: &Path) -> anyhow::Result<(bool, Option<String>)> {
    let run = criu.run(&criu::feature_args(name, workdir))?;
    let supported = run.ok() && run.stdout.contains("is supported");
    let detail = if supported {
        run.stdout
            .lines()
            .find(|l| l.contains("is supported"))
            .map(str::to_owned)
    } else {
        let text = all_output(&run, &workdir.join(format!("check-{name}.log")));
        diagnose::diagnose(Action::Check, &text, procs::is_root())
            .log
            .into_iter()
            .next()
            .or_else(|| Some(format!("criu exited with {:?}", run.code)))
    };
    Ok((supported, detail))
}

/// Look for a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `criu-wrap check`.
pub fn run(criu: &Criu, mut out: Output) -> anyhow::Result<Status> {
    let mut verdict = Verdict {
        usable: false,
        criu_version: None,
        kernel: kernel_release(),
        modes: Vec::new(),
        tcp_established: false,
        network_lock: None,
        cause: None,
        problem: None,
        fix: None,
    };
    let result = (|| -> anyhow::Result<()> {
        verdict.criu_version = criu.version()?;
        let mut wd = WorkDir::new("check")?;
        let run = criu.run(&criu::check_args(&wd.0))?;
        let basic = run.ok() && run.stdout.contains("Looks good");
        let failure = (!basic).then(|| {
            diagnose::diagnose(
                Action::Check,
                &all_output(&run, &wd.0.join("check.log")),
                procs::is_root(),
            )
        });
        out.emit(&Feature {
            name: "basic".into(),
            supported: Some(basic),
            needed_for: "dump_restore".into(),
            detail: match &failure {
                None => run
                    .stdout
                    .lines()
                    .find(|l| l.contains("Looks good"))
                    .map(str::to_owned),
                Some(d) => d.log.first().cloned(),
            },
        })?;
        out.emit(&Feature {
            name: "tcp_repair".into(),
            supported: basic.then_some(true),
            needed_for: "tcp_established".into(),
            detail: Some("exercised by criu check (TCP_REPAIR)".into()),
        })?;
        let mut supported = |name: &str| -> anyhow::Result<Option<bool>> {
            let needed_for = FEATURES
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, w)| *w);
            let (s, detail) = if basic {
                let (s, d) = feature(criu, name, &wd.0)?;
                (Some(s), d)
            } else {
                (None, Some("not checked: the basic check failed".into()))
            };
            out.emit(&Feature {
                name: name.into(),
                supported: s,
                needed_for: needed_for.into(),
                detail,
            })?;
            Ok(s)
        };
        let dirty = supported("mem_dirty_track")? == Some(true);
        let uffd = supported("uffd")? == Some(true);
        let noncoop = supported("uffd-noncoop")? == Some(true);
        supported("tcp_half_closed")?;
        let nft = supported("network_lock_nftables")? == Some(true);
        let ipt = which("iptables-restore");
        out.emit(&Feature {
            name: "network_lock_iptables".into(),
            supported: Some(ipt.is_some()),
            needed_for: "tcp_established".into(),
            detail: Some(match &ipt {
                Some(p) => format!("{} found", p.display()),
                None => "iptables-restore is not on PATH".into(),
            }),
        })?;

        if let Some(d) = failure {
            verdict.cause = Some(d.cause.into());
            verdict.problem = Some(d.problem.clone());
            verdict.fix = Some(d.fix.clone());
            wd.keep();
            return Err(CriuFailed::error(
                "CRIU cannot checkpoint processes on this host",
                d,
                Some(wd.0.join("check.log")).filter(|p| p.exists()),
            ));
        }
        verdict.usable = true;
        verdict.modes.push("stop_and_copy".into());
        if dirty {
            verdict.modes.push("pre_copy".into());
        }
        if uffd && noncoop {
            verdict.modes.push("lazy_pages".into());
        }
        verdict.network_lock = if ipt.is_some() {
            Some("iptables".into())
        } else if nft {
            Some("nftables".into())
        } else {
            None
        };
        verdict.tcp_established = verdict.network_lock.is_some();
        Ok(())
    })();
    if let Err(e) = &result {
        if verdict.cause.is_none() {
            // CRIU missing or not runnable: say so in the verdict too.
            verdict.cause = Some(
                if shared::exit::classify(e) == ErrorKind::Unavailable {
                    "criu_unavailable"
                } else {
                    "check_failed"
                }
                .into(),
            );
            verdict.problem = Some(format!("{e:#}"));
        }
    }
    out.emit(&verdict)?;
    if let Err(e) = &result {
        crate::report(&mut out, e)?;
    }
    let modes = verdict.modes.join(",");
    out.finish(&serde_json::json!({ "usable": verdict.usable, "modes": modes }))
}
