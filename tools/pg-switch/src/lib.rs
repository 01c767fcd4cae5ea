//! `pg-switch`: switch one PostgreSQL primary to its streaming standby, with proofs, a journal,
//! and a rollback that never leaves two primaries — or finish, or undo, a switchover that was
//! interrupted.
//!
//! One job, the part of a migration that must never be wrong: fence and stop the source,
//! prove it shut down cleanly, prove the target replayed its final checkpoint on its
//! timeline, promote, prove the target takes a write. `scripts/migrate.sh` calls it for its
//! switchover phase; a DBA can call it by hand for a planned switchover between a primary
//! and its standby.
//!
//! Every run starts by looking at both hosts and deciding ([`plan`]); so running the same
//! command again after any interruption (kill -9, a reboot of the control host, ssh dropping)
//! completes the switchover when the proofs allow it, or rolls back to the source. `--abort`
//! rolls back when that is still safe and says so when it is not.
//!
//! Exit codes: 0 the target is the primary (promoted now, or already); 1 not promoted: the
//! source serves (rolled back, or `--abort` refused because the target was promoted); 126 it
//! cannot be told, nothing more was touched (the summary lists the commands to run); any
//! other code of the table: refused before anything changed (69 a host unreachable, 65 a
//! target that does not follow the source, 2 usage, 75 interrupted or the journal locked).

pub mod control;
pub mod journal;
pub mod plan;
pub mod rollback;
pub mod run;
pub mod settle;
pub mod side;
pub mod switch;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shared::host::{conf_quote, Host};
use shared::pg::ConnInfo;
use shared::{ErrorKind, Output, ResultExt, Status};

use crate::journal::Journal;
use crate::plan::Mode;
use crate::run::{Interrupt, Options, Run, HOOKS};
use crate::side::{Side, Which};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "pg-switch",
    version,
    about = "Switch a PostgreSQL primary to its streaming standby: fence, stop, prove, promote; \
             resumable, never two primaries.",
    long_about = "Switch a PostgreSQL primary (--source) to its streaming standby (--target).\n\n\
        Fences the source (standby.signal and a primary_conninfo naming the target) in the same \
        call on its host that stops it, proves from pg_controldata that it shut down cleanly, \
        proves the target replayed past its final checkpoint on its timeline, promotes, and \
        proves the target takes a write. Each step is journaled (fsynced) before it starts. Run \
        the same command again after any interruption: it looks at both hosts and finishes the \
        switchover or rolls back. JSON lines on stdout (observed, plan, proof, step, summary; \
        see shared/PROTOCOL.md).\n\n\
        Exit 0: the target is the primary. 1: not promoted, the source serves. 126: the state \
        cannot be told; nothing more was touched (the summary lists the commands). Others: \
        refused before anything changed.",
    after_help = "Example:\n  pg-switch --source 'host=old user=postgres' --source-pgdata /var/lib/postgresql/15/main \\\n    --source-host ssh://postgres@old --target 'host=new user=postgres' \\\n    --target-pgdata /var/lib/postgresql/15/main --target-host ssh://postgres@new \\\n    --fence-conninfo-file fence.conninfo --journal /var/lib/pgshift/old-new.jsonl"
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    /// The primary (a superuser's conninfo or URL).
    #[arg(long, value_name = "DSN")]
    pub source: String,
    /// Where the source's commands run: local, ssh://[user@]host[:port], netns://NAME.
    #[arg(long, value_name = "SPEC", default_value = "local")]
    pub source_host: String,
    /// The source's data directory (on its host).
    #[arg(long, value_name = "DIR")]
    pub source_pgdata: String,
    /// The source's server log, for a restart on rollback [default: next to its data dir].
    #[arg(long, value_name = "FILE")]
    pub source_log: Option<String>,
    /// The standby to promote (a superuser's conninfo or URL).
    #[arg(long, value_name = "DSN")]
    pub target: String,
    /// Where the target's commands run.
    #[arg(long, value_name = "SPEC", default_value = "local")]
    pub target_host: String,
    /// The target's data directory (on its host).
    #[arg(long, value_name = "DIR")]
    pub target_pgdata: String,
    /// The target's server log [default: next to its data dir].
    #[arg(long, value_name = "FILE")]
    pub target_log: Option<String>,
    /// A file holding the primary_conninfo the fenced source gets (naming the target, as the
    /// replication role); read here and sent to the source's host on stdin.
    #[arg(long, value_name = "FILE")]
    pub fence_conninfo_file: PathBuf,
    /// The journal (JSON lines, created if missing, locked while this runs).
    #[arg(long, value_name = "FILE")]
    pub journal: PathBuf,
    /// Limit for each step (stop, replay, promotion).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = shared::cli::parse_duration)]
    pub timeout: Duration,
    /// How long to wait for another run that holds the journal.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = shared::cli::parse_duration)]
    pub lock_wait: Duration,
    /// Run CMD (sh -c) at a step: before_stop, during_stop, after_stop, before_promote,
    /// during_promote, after_promote. A failing before/after hook stops the switch (before the
    /// promotion: rolled back); during_* hooks run beside their step.
    #[arg(long, value_name = "NAME=CMD")]
    pub hook: Vec<String>,
    /// Roll back instead: make the source the primary again, if the target was not promoted.
    #[arg(long)]
    pub abort: bool,
    /// Archive mode: the target restores from this wal-ship archive; the segment holding the
    /// source's shutdown checkpoint is pushed there before the promotion.
    #[arg(long, value_name = "DEST", requires = "wal_ship")]
    pub archive: Option<String>,
    /// wal-ship on the source's host (with --archive).
    #[arg(long, value_name = "PATH", requires = "archive")]
    pub wal_ship: Option<String>,
    /// PostgreSQL's binaries on both hosts.
    #[arg(
        long,
        value_name = "DIR",
        env = "PG_BIN",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pub pg_bin: String,
}

fn usage(msg: String) -> anyhow::Error {
    shared::err(ErrorKind::Usage, msg)
}

fn log_beside(pgdata: &str) -> String {
    let parent = std::path::Path::new(pgdata)
        .parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".into());
    format!("{parent}/server.log")
}

fn env_ms(name: &str) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| usage(format!("{name}='{v}' is not a number of milliseconds"))),
        Err(_) => Ok(0),
    }
}

/// Run pg-switch with `args` (argv[0] first).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    let mut hooks = BTreeMap::new();
    for h in &cli.hook {
        let (name, cmd) = h
            .split_once('=')
            .ok_or_else(|| usage(format!("--hook '{h}' is not NAME=CMD")))?;
        if !HOOKS.contains(&name) {
            return Err(usage(format!(
                "unknown hook '{name}' (one of {})",
                HOOKS.join(", ")
            )));
        }
        hooks.insert(name.to_owned(), cmd.to_owned());
    }
    let fence_conninfo = std::fs::read_to_string(&cli.fence_conninfo_file)
        .kind_context(
            ErrorKind::Usage,
            format!(
                "cannot read --fence-conninfo-file {}",
                cli.fence_conninfo_file.display()
            ),
        )?
        .trim_end_matches('\n')
        .to_owned();
    if fence_conninfo.is_empty() || fence_conninfo.contains('\n') {
        return Err(usage(format!(
            "--fence-conninfo-file {} must hold one line: the primary_conninfo naming the target",
            cli.fence_conninfo_file.display()
        )));
    }
    let side = |which: Which, dsn: &str, spec: &str, pgdata: &str, log: &Option<String>| {
        let conninfo = ConnInfo::parse(dsn).with_context(|| format!("--{}", which.as_str()))?;
        anyhow::Ok(Side {
            which,
            conninfo: conninfo.with_control_timeout(5),
            host: Host::parse(spec)?,
            pgdata: pgdata.trim_end_matches('/').to_owned(),
            log: log.clone().unwrap_or_else(|| log_beside(pgdata)),
            pg_bin: cli.pg_bin.clone(),
        })
    };
    let source = side(
        Which::Source,
        &cli.source,
        &cli.source_host,
        &cli.source_pgdata,
        &cli.source_log,
    )?;
    let target = side(
        Which::Target,
        &cli.target,
        &cli.target_host,
        &cli.target_pgdata,
        &cli.target_log,
    )?;
    let opts = Options {
        timeout: cli.timeout,
        fence: format!("primary_conninfo = {}\n", conf_quote(&fence_conninfo)),
        hooks,
        archive: cli.wal_ship.clone().zip(cli.archive.clone()),
        test_stop_delay_ms: env_ms("PGSHIFT_TEST_STOP_DELAY_MS")?,
        test_promote_delay_ms: env_ms("PGSHIFT_TEST_PROMOTE_DELAY_MS")?,
    };
    let journal = Journal::open(&cli.journal, cli.lock_wait)?;
    let mode = if cli.abort { Mode::Abort } else { Mode::Switch };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let interrupt = Interrupt::default();
        watch_signals(interrupt.clone())?;
        Run::new(source, target, journal, Output::stdout(), opts, interrupt)
            .run(mode)
            .await
    })
}

/// SIGTERM, SIGINT and SIGHUP do not kill pg-switch: they are noted, and the run stops at
/// the next point where stopping is safe (see [`switch`]).
fn watch_signals(interrupt: Interrupt) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, no) in [
        (SignalKind::terminate(), 15),
        (SignalKind::interrupt(), 2),
        (SignalKind::hangup(), 1),
    ] {
        let mut s = signal(kind).context("installing a signal handler")?;
        let i = interrupt.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                shared::msg::error_line(&format!(
                    "got signal {no}: stopping at the next safe point (a switch under way is finished or rolled back)"
                ));
                i.set(no);
            }
        });
    }
    Ok(())
}
