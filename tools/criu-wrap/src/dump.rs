//! `criu-wrap dump`: iterative pre-copy (P.Haul's loop) or a single stop-and-copy dump.
//!
//! Pre-copy moves most of the memory while the process keeps running: each `criu pre-dump`
//! round writes the pages dirtied since the previous one (the kernel's soft-dirty bits,
//! `--track-mem`), and the final `criu dump` freezes the process and writes only what changed
//! since the last round, so the frozen time shrinks to the last delta. The rounds stop by
//! P.Haul's rule ([`decide`]): when a round wrote 64 pages or fewer, when it wrote more than
//! 10 % more than the round before (the process dirties memory faster than it is copied, so
//! more rounds would not help), or after 8 rounds. Without dirty tracking, `auto` falls back
//! to one stop-and-copy dump.
//!
//! The same engine ([`take`]) serves `migrate`, which copies each round to the target while
//! the process still runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use shared::{ErrorKind, Output, Status};

use crate::check::{self, WorkDir};
use crate::criu::{self, Criu, DumpFlags, NetworkLock};
use crate::diagnose::{self, Action};
use crate::images::{self, Manifest};
use crate::records::{self, Round};
use crate::{ms, procs, stats, CriuFailed};

/// Page size CRIU counts in.
pub const PAGE: u64 = 4096;
/// P.Haul: stop pre-copy once a round writes this many pages or fewer.
pub const MIN_PAGES: u64 = 64;
/// P.Haul: stop when a round wrote more than this fraction more than the previous one.
pub const MAX_GROWTH: f64 = 0.10;
/// P.Haul: at most this many pre-dump rounds.
pub const MAX_ROUNDS: u32 = 8;

/// `--pre-dump auto|N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreDump {
    /// Pre-copy by P.Haul's rule when the kernel tracks dirty memory, else a single dump.
    Auto,
    /// Exactly this many pre-dump rounds (0: a single stop-and-copy dump).
    Rounds(u32),
}

fn parse_pre_dump(s: &str) -> Result<PreDump, String> {
    match s {
        "auto" => Ok(PreDump::Auto),
        "off" | "none" => Ok(PreDump::Rounds(0)),
        n => match n.parse::<u32>() {
            Ok(n) if n <= 100 => Ok(PreDump::Rounds(n)),
            _ => Err(format!(
                "'{s}' is not auto or a number of rounds (0 to 100; 0 means a single dump)"
            )),
        },
    }
}

/// Options shared by `dump` and `migrate`.
#[derive(clap::Args, Debug, Clone)]
pub struct DumpOpts {
    /// Checkpoint established TCP connections too (TCP repair; the restore gets it too).
    #[arg(long)]
    pub tcp_established: bool,
    /// The process belongs to a terminal session it does not lead (a job started from a
    /// shell).
    #[arg(long)]
    pub shell_job: bool,
    /// Pre-copy rounds: `auto` (P.Haul's rule when the kernel tracks dirty memory, else a
    /// single dump) or a number (0: a single stop-and-copy dump).
    #[arg(long, value_name = "auto|N", default_value = "auto", value_parser = parse_pre_dump)]
    pub pre_dump: PreDump,
    /// How CRIU blocks the packets of dumped TCP connections: `auto` uses nftables when
    /// iptables-restore is missing.
    #[arg(long, value_enum, default_value_t = NetworkLock::Auto, value_name = "METHOD")]
    pub network_lock: NetworkLock,
    /// An extra CRIU option, passed through (repeatable), e.g. --criu-opt=--ext-unix-sk.
    #[arg(long = "criu-opt", value_name = "OPT", allow_hyphen_values = true)]
    pub criu_opts: Vec<String>,
}

/// `criu-wrap dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// The process to checkpoint (with all its descendants).
    #[arg(long)]
    pub pid: u32,
    /// Where to write the images (created; must be empty).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Keep the process running after the dump (CRIU's default is to kill it, so that it
    /// runs in one place only).
    #[arg(long)]
    pub leave_running: bool,
    #[command(flatten)]
    pub opts: DumpOpts,
}

/// What the pre-dump loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Another pre-dump round.
    Continue,
    /// The final dump, for this reason.
    Stop(String),
}

/// P.Haul's rule (or a fixed count), given the pages written by each round so far.
pub fn decide(pages: &[u64], pre: PreDump) -> Decision {
    let n = pages.len() as u32;
    let Some(&last) = pages.last() else {
        return Decision::Continue;
    };
    match pre {
        PreDump::Rounds(want) if n >= want => Decision::Stop(format!("{want} rounds as asked")),
        PreDump::Rounds(_) => Decision::Continue,
        PreDump::Auto => {
            if last <= MIN_PAGES {
                return Decision::Stop(format!("{last} pages (at most {MIN_PAGES})"));
            }
            if n >= MAX_ROUNDS {
                return Decision::Stop(format!("{MAX_ROUNDS} rounds (the most)"));
            }
            if n >= 2 {
                let prev = pages[pages.len() - 2];
                if prev > 0 && (last as f64 - prev as f64) / prev as f64 > MAX_GROWTH {
                    let pct = (last as f64 - prev as f64) * 100.0 / prev as f64;
                    return Decision::Stop(format!(
                        "grew by {pct:.0}% (more than {:.0}%): memory is dirtied faster than it is copied",
                        MAX_GROWTH * 100.0
                    ));
                }
            }
            Decision::Continue
        }
    }
}

/// A dump, planned: what will be run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The root process.
    pub pid: u32,
    /// The images directory (empty).
    pub dir: PathBuf,
    /// Flags for every round.
    pub flags: DumpFlags,
    /// `None`: one stop-and-copy dump; `Some`: pre-copy rounds.
    pub pre_copy: Option<PreDump>,
    /// `--leave-running` on the final dump.
    pub leave_running: bool,
    /// `criu --version`, asked before anything freezes (it goes into the manifest).
    pub criu_version: Option<String>,
}

/// Resolve the options against this host: the network lock, and whether to pre-copy.
pub fn plan(
    criu: &Criu,
    pid: u32,
    dir: &Path,
    opts: &DumpOpts,
    leave_running: bool,
) -> anyhow::Result<Plan> {
    if !procs::alive(pid) {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!("no running process with PID {pid} (check with ps -p {pid})"),
        ));
    }
    let network_lock = match opts.network_lock {
        NetworkLock::Iptables => Some("iptables"),
        NetworkLock::Nftables => Some("nftables"),
        // CRIU's default method needs iptables-restore; without it, nftables works through
        // the library CRIU links (seen in the VM: "Iptables configuration failed").
        NetworkLock::Auto if opts.tcp_established && check::which("iptables-restore").is_none() => {
            Some("nftables")
        }
        NetworkLock::Auto => None,
    };
    let pre_copy = match opts.pre_dump {
        PreDump::Rounds(0) => None,
        want => {
            let wd = WorkDir::new("feature")?;
            let (dirty, detail) = check::feature(criu, "mem_dirty_track", &wd.0)?;
            match (dirty, want) {
                (true, _) => Some(want),
                (false, PreDump::Auto) => {
                    shared::note!(
                        "the kernel does not track dirty memory ({}): one stop-and-copy dump",
                        detail.unwrap_or_else(|| "criu check --feature mem_dirty_track failed".into())
                    );
                    None
                }
                (false, PreDump::Rounds(n)) => {
                    return Err(shared::err(
                        ErrorKind::Unavailable,
                        format!(
                            "--pre-dump {n} needs memory dirty tracking, which this kernel lacks ({}): use --pre-dump 0 for a single dump",
                            detail.unwrap_or_else(|| "criu check --feature mem_dirty_track failed".into())
                        ),
                    ))
                }
            }
        }
    };
    Ok(Plan {
        pid,
        dir: dir.to_owned(),
        flags: DumpFlags {
            tcp_established: opts.tcp_established,
            shell_job: opts.shell_job,
            network_lock,
            extra: opts.criu_opts.clone(),
        },
        pre_copy,
        leave_running,
        criu_version: criu.version()?,
    })
}

/// What [`take`] produced.
#[derive(Debug, Clone)]
pub struct Taken {
    /// Every round, the final dump last.
    pub rounds: Vec<Round>,
    /// `pre_copy` or `stop_and_copy`.
    pub mode: &'static str,
    /// When the final dump started (the process froze shortly after).
    pub final_started: Instant,
    /// CRIU's frozen time of the final dump.
    pub frozen_ms: Option<u64>,
    /// Wall time of the final dump.
    pub dump_ms: u64,
}

fn us_to_ms(us: u64) -> u64 {
    (us + 500) / 1000
}

/// Run CRIU for one round and measure it; a failure is diagnosed from `log`.
fn criu_round(
    criu: &Criu,
    args: &[std::ffi::OsString],
    dir: &Path,
    log: &str,
    what: String,
) -> anyhow::Result<(crate::criu::Run, Option<stats::DumpStats>)> {
    let run = criu.run(args)?;
    let log_path = dir.join(log);
    if !run.ok() {
        let d = diagnose::diagnose(
            Action::Dump,
            &check::all_output(&run, &log_path),
            procs::is_root(),
        );
        return Err(CriuFailed::error(
            what,
            d,
            Some(log_path).filter(|p| p.exists()),
        ));
    }
    Ok((run, stats::read_dump(dir)))
}

fn round_record(
    round: u32,
    kind: &str,
    dir: &Path,
    run: &crate::criu::Run,
    st: Option<&stats::DumpStats>,
) -> Round {
    let pages = st.map_or_else(|| images::page_bytes(dir) / PAGE, |s| s.pages_written);
    let image_bytes = images::files(dir, true)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Round {
        round,
        kind: kind.into(),
        images: dir.display().to_string(),
        pages,
        bytes: pages * PAGE,
        pages_scanned: st.map(|s| s.pages_scanned),
        shmem_pages: st.map(|s| s.shpages_written),
        image_bytes,
        ms: ms(run.elapsed),
        frozen_ms: st.map(|s| us_to_ms(s.frozen_time_us)),
        next: None,
        reason: None,
    }
}

/// Take the dump: pre-dump rounds (each reported, then handed to `on_round`, e.g. to copy it
/// to the target), then the final dump (reported too, not handed over).
pub fn take(
    criu: &Criu,
    plan: &Plan,
    out: &mut Output,
    on_round: &mut dyn FnMut(&mut Output, &Round, &str) -> anyhow::Result<()>,
) -> anyhow::Result<Taken> {
    let mut rounds: Vec<Round> = Vec::new();
    let mut prev: Option<String> = None;
    if let Some(pre) = plan.pre_copy {
        let mut pages: Vec<u64> = Vec::new();
        loop {
            let k = rounds.len() as u32 + 1;
            let name = format!("pre-{k}");
            let dir = plan.dir.join(&name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let parent = prev.as_ref().map(|p| format!("../{p}"));
            let args = criu::pre_dump_args(plan.pid, &dir, parent.as_deref(), &plan.flags);
            let (run, st) = criu_round(
                criu,
                &args,
                &dir,
                criu::PRE_DUMP_LOG,
                format!("criu pre-dump (round {k}) failed"),
            )?;
            let mut r = round_record(k, "pre_dump", &dir, &run, st.as_ref());
            pages.push(r.pages);
            let decision = decide(&pages, pre);
            match &decision {
                Decision::Continue => r.next = Some("continue".into()),
                Decision::Stop(why) => {
                    r.next = Some("stop".into());
                    r.reason = Some(why.clone());
                }
            }
            out.emit(&r)?;
            on_round(out, &r, &name)?;
            rounds.push(r);
            prev = Some(name);
            if decision != Decision::Continue {
                break;
            }
        }
    }
    let k = rounds.len() as u32 + 1;
    let args = criu::dump_args(
        plan.pid,
        &plan.dir,
        prev.as_deref(),
        plan.leave_running,
        &plan.flags,
    );
    let final_started = Instant::now();
    let (run, st) = criu_round(
        criu,
        &args,
        &plan.dir,
        criu::DUMP_LOG,
        "criu dump failed".into(),
    )?;
    let r = round_record(k, "dump", &plan.dir, &run, st.as_ref());
    out.emit(&r)?;
    let frozen_ms = r.frozen_ms;
    rounds.push(r);
    Ok(Taken {
        rounds,
        mode: if plan.pre_copy.is_some() {
            "pre_copy"
        } else {
            "stop_and_copy"
        },
        final_started,
        frozen_ms,
        dump_ms: ms(run.elapsed),
    })
}

/// Write the manifest for a finished dump (a failure only warns: the images are complete
/// without it, `restore` then needs the flags again).
pub fn write_manifest(plan: &Plan, taken: &Taken) {
    let m = Manifest {
        format_version: 1,
        pid: plan.pid,
        mode: taken.mode.into(),
        rounds: taken
            .rounds
            .iter()
            .filter(|r| r.kind == "pre_dump")
            .map(|r| format!("pre-{}", r.round))
            .collect(),
        tcp_established: plan.flags.tcp_established,
        shell_job: plan.flags.shell_job,
        criu_opts: plan.flags.extra.clone(),
        criu_version: plan.criu_version.clone(),
        hostname: procs::hostname(),
    };
    if let Err(e) = m.write(&plan.dir) {
        shared::warn!("{e:#} (the images are complete; restore them with the dump's flags)");
    }
}

/// After a failure: make sure the source tree runs, and say how.
pub fn resumed_record(pid: u32) -> records::Resumed {
    let r = procs::resume_tree(pid);
    let how = if !r.continued.is_empty() {
        "sigcont"
    } else if r.alive {
        "running"
    } else {
        "not_running"
    };
    records::Resumed {
        pid,
        how: how.into(),
        alive: r.alive,
        continued: r.continued,
    }
}

/// `criu-wrap dump`.
pub fn run(criu: &Criu, a: &DumpArgs, mut out: Output) -> anyhow::Result<Status> {
    let started = Instant::now();
    let mut touched = false;
    let result = (|| -> anyhow::Result<records::Dump> {
        let plan = plan(criu, a.pid, &a.images, &a.opts, a.leave_running)?;
        images::prepare_empty_dir(&a.images)?;
        touched = true;
        let taken = take(criu, &plan, &mut out, &mut |_, _, _| Ok(()))?;
        write_manifest(&plan, &taken);
        let process = if a.leave_running {
            "running"
        } else {
            if !procs::wait_gone(a.pid, std::time::Duration::from_secs(5)) {
                shared::warn!(
                    "process {} still runs after the dump; CRIU normally kills it (kill it before restoring elsewhere)",
                    a.pid
                );
            }
            "killed"
        };
        let last = taken.rounds.last().expect("the final dump is a round");
        Ok(records::Dump {
            pid: a.pid,
            images: a.images.display().to_string(),
            mode: taken.mode.into(),
            rounds: taken.rounds.len() as u32,
            pages: taken.rounds.iter().map(|r| r.pages).sum(),
            final_pages: last.pages,
            image_bytes: images::size(&a.images),
            frozen_ms: taken.frozen_ms,
            dump_ms: taken.dump_ms,
            total_ms: ms(started.elapsed()),
            process: process.into(),
            tcp_established: a.opts.tcp_established,
        })
    })();
    match result {
        Ok(d) => {
            out.emit(&d)?;
            out.finish(&serde_json::json!({
                "pid": d.pid, "mode": d.mode, "rounds": d.rounds, "pages": d.pages,
                "image_bytes": d.image_bytes, "frozen_ms": d.frozen_ms,
            }))
        }
        Err(e) => {
            if touched {
                let r = resumed_record(a.pid);
                if !r.alive {
                    shared::warn!("process {} is not running after the failed dump", a.pid);
                }
                out.emit(&r)?;
            }
            crate::report(&mut out, &e)?;
            out.finish(&serde_json::json!({ "pid": a.pid }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phaul_rule_stops_on_small_delta() {
        assert_eq!(decide(&[65536], PreDump::Auto), Decision::Continue);
        assert_eq!(decide(&[65536, 300], PreDump::Auto), Decision::Continue);
        assert!(
            matches!(decide(&[65536, 300, 64], PreDump::Auto), Decision::Stop(r) if r.contains("64 pages"))
        );
        assert!(matches!(decide(&[10], PreDump::Auto), Decision::Stop(_)));
    }

    #[test]
    fn phaul_rule_stops_when_the_delta_grows_more_than_ten_percent() {
        assert_eq!(decide(&[1000, 500, 550], PreDump::Auto), Decision::Continue); // +10 %: not more
        match decide(&[1000, 500, 551], PreDump::Auto) {
            Decision::Stop(r) => assert!(r.contains("grew by 10%"), "{r}"),
            d => panic!("{d:?}"),
        }
        assert!(
            matches!(decide(&[1000, 500, 600], PreDump::Auto), Decision::Stop(r) if r.contains("20%"))
        );
    }

    #[test]
    fn phaul_rule_stops_after_eight_rounds() {
        let pages: Vec<u64> = (0..7).map(|i| 10_000 - i * 100).collect();
        assert_eq!(decide(&pages, PreDump::Auto), Decision::Continue);
        let pages: Vec<u64> = (0..8).map(|i| 10_000 - i * 100).collect();
        assert!(
            matches!(decide(&pages, PreDump::Auto), Decision::Stop(r) if r.contains("8 rounds"))
        );
    }

    #[test]
    fn fixed_rounds_ignore_the_rule() {
        assert_eq!(decide(&[10], PreDump::Rounds(3)), Decision::Continue);
        assert_eq!(decide(&[10, 5000], PreDump::Rounds(3)), Decision::Continue);
        assert!(matches!(
            decide(&[10, 5000, 1], PreDump::Rounds(3)),
            Decision::Stop(_)
        ));
    }

    #[test]
    fn pre_dump_values() {
        assert_eq!(parse_pre_dump("auto"), Ok(PreDump::Auto));
        assert_eq!(parse_pre_dump("0"), Ok(PreDump::Rounds(0)));
        assert_eq!(parse_pre_dump("off"), Ok(PreDump::Rounds(0)));
        assert_eq!(parse_pre_dump("3"), Ok(PreDump::Rounds(3)));
        assert!(parse_pre_dump("-1").is_err());
        assert!(parse_pre_dump("many").is_err());
    }
}
