//! `pg-logical`: move PostgreSQL databases from one cluster to another with native logical
//! replication — across major versions, to and from managed services — with a fenced,
//! proven cutover and a way back.
//!
//! One job, in steps a script chains (`scripts/migrate.sh --mode logical` does) or a DBA runs
//! by hand, each safe to run again after any interruption:
//!
//! - [`check`]: preflight. Nothing is changed. Refuses, naming the objects and the fix, what
//!   logical replication cannot carry (tables without a replica identity, large objects,
//!   unlogged tables, extensions the target lacks) and says what it carries differently
//!   (sequences, generated columns, partitions).
//! - [`setup`]: roles (`pg_dumpall --roles-only`), databases, schema (`pg_dump
//!   --schema-only`), then one publication per database on the source and one subscription
//!   on the target: the initial copy starts. The target's login roles are fenced (NOLOGIN)
//!   until the cutover opens it: never two sides taking writes.
//! - [`watch`] (`wait`): the copy's progress, then the lag from the publisher's slots, until
//!   the target is synced or caught up; says early when it cannot catch up.
//! - [`fence`]: stop writes on the source (NOLOGIN on every login role but pgshift's, in one
//!   transaction, then every client session ended), read `X = pg_current_wal_insert_lsn()`,
//!   wait until every slot's `confirmed_flush_lsn >= X`, write a sentinel row and wait for it
//!   on the target, copy every sequence exactly, and check the schema did not change. Each a
//!   `proof`; one that fails reopens the source.
//! - [`open`]: the target takes writes: the forward subscription stops, a slot on the target
//!   keeps every change from this point for the way back, the target's roles log in again;
//!   then the old source subscribes to it (`copy_data = false`), so `--reverse` is the same
//!   move the other way.
//! - `unfence` (roll back before `open`), `abort` (remove what a run made before the
//!   cutover), `finish` (drop the way back), `status`.
//!
//! Which side takes writes is the state of the roles on the servers themselves: a role pgshift
//! fenced carries the setting `pgshift.fenced` (set in the same transaction as NOLOGIN), so a
//! run that finds a journal gone still knows. `open` refuses unless the source is fenced;
//! `unfence` refuses once the target is open.
//!
//! Exit codes: 0 done; 1 `status` found the pair in no known state; 2 usage; 65 refused
//! (preflight, DDL during the run, a proof that failed: the source serves again); 69 a server
//! unreachable; 75 try again (the target did not catch up in time: the source serves again;
//! interrupted); 126 the source is fenced and could not be reopened (the summary says how).

pub mod catalog;
pub mod check;
pub mod copy;
pub mod fence;
pub mod pair;
pub mod setup;
pub mod side;
pub mod status;
pub mod text;
pub mod watch;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shared::Status;

use crate::pair::Pair;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "pg-logical",
    version,
    about = "Move PostgreSQL databases between clusters with logical replication: preflight, \
             schema, copy, catch-up, a fenced cutover with proofs, and a way back.",
    long_about = "Move PostgreSQL databases between clusters with native logical replication: \
        across major versions (the target's major >= the source's), to and from managed \
        services, with no filesystem or ssh access to either server.\n\n\
        Steps, each safe to run again after an interruption: check (nothing changed), setup \
        (roles, databases, schema, publication and subscription: the copy starts), wait \
        (copy progress, then the lag from the publisher's slots), fence (writes stopped on \
        the source; the target proven to hold every change: slot confirmed past the fenced \
        LSN, a sentinel row, sequences copied, schema unchanged), open (the target takes \
        writes; the old source follows it for the way back), unfence (roll back before \
        open), abort, finish, status. JSON lines on stdout (see shared/PROTOCOL.md); text on \
        a terminal.\n\n\
        Exit 0: done. 65: refused (the reason and the fix named). 69: a server unreachable. \
        75: try again (the source serves). 126: the source is fenced and could not be \
        reopened.",
    after_help = "Example (what migrate.sh --mode logical runs):\n  \
        pg-logical check --source 'host=old user=postgres' --target 'host=new user=postgres'\n  \
        pg-logical setup --source ... --target ...\n  \
        pg-logical wait --until caught-up --source ... --target ...\n  \
        pg-logical fence --source ... --target ...\n  \
        pg-checksum --source ... --target ... --exclude 'pgshift.*'\n  \
        pg-logical open --source ... --target ...      (or unfence, if they differ)"
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The steps.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Preflight: what can be moved, what cannot and how to fix it; nothing is changed.
    Check(check::CheckArgs),
    /// Roles, databases and schema on the target; publication and subscription: the copy starts.
    Setup(setup::SetupArgs),
    /// Wait until the target is synced (every table copied) or caught up (lag under a limit).
    Wait(watch::WaitArgs),
    /// Stop writes on the source and prove the target holds every change.
    Fence(fence::FenceArgs),
    /// Open the target for writes (after fence); the old source follows it for the way back.
    Open(fence::OpenArgs),
    /// Roll back a fence: the source takes writes again (refused once the target is open).
    Unfence(fence::UnfenceArgs),
    /// Remove what setup made (subscription, publication, slot); the source serves.
    Abort(setup::AbortArgs),
    /// After a move: drop the way back (the old source's subscription, the new primary's
    /// publication and slot, pgshift's sentinel schema).
    Finish(setup::FinishArgs),
    /// Where the pair stands: replicating, fenced, open, and the way back.
    Status(status::StatusArgs),
}

pub use shared::signals::Interrupt;

/// For the tests that interrupt a step in its middle: `PGSHIFT_TEST_PAUSE=POINT=MS` sleeps MS
/// milliseconds at POINT (`fence:roles`, after the source's roles are fenced; `open:disabled`,
/// after the forward subscription stopped; `open:unfenced`, after the target's roles log in
/// again). Nothing happens without the variable.
pub fn test_pause(point: &str) {
    let Ok(v) = std::env::var("PGSHIFT_TEST_PAUSE") else {
        return;
    };
    if let Some(ms) = v
        .split_once('=')
        .filter(|(p, _)| *p == point)
        .and_then(|(_, ms)| ms.parse::<u64>().ok())
    {
        shared::msg::error_line(&format!("test pause at {point}: {ms} ms"));
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Where journals live by default: `$PGSHIFT_STATE_DIR`, else `~/.local/state/pgshift`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGSHIFT_STATE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/state/pgshift")
}

/// How long a step waits for another run that holds the journal.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Run pg-logical with `args` (argv[0] first).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    shared::human::register(text::render, text::closing);
    match cli.command {
        Command::Check(a) => {
            shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
            let p = Pair::open(&a.pair, false)?;
            check::run(p, &a)
        }
        Command::Setup(a) => {
            shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
            let p = Pair::open(&a.pair, true)?;
            setup::run(p, &a)
        }
        Command::Wait(a) => {
            shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
            // A server restarting when the wait begins is waited for, as during it.
            let started = std::time::Instant::now();
            let p = loop {
                match Pair::open(&a.pair, false) {
                    Ok(p) => break p,
                    Err(e)
                        if started.elapsed() < a.reconnect_for
                            && shared::exit::classify(&e) == shared::ErrorKind::Unavailable =>
                    {
                        shared::warn!("{e:#}; trying again");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                    Err(e) => return Err(e),
                }
            };
            watch::run(p, &a)
        }
        Command::Fence(a) => {
            let interrupt = Interrupt::watch()?;
            let p = Pair::open(&a.pair, true)?;
            fence::fence(p, &a, &interrupt)
        }
        Command::Open(a) => {
            let interrupt = Interrupt::watch()?;
            let p = Pair::open(&a.pair, true)?;
            fence::open(p, &a, &interrupt)
        }
        Command::Unfence(a) => {
            let _ = Interrupt::watch()?;
            let p = Pair::open(&a.pair, true)?;
            fence::unfence(p, &a)
        }
        Command::Abort(a) => {
            let _ = Interrupt::watch()?;
            let p = Pair::open(&a.pair, true)?;
            setup::abort(p, &a)
        }
        Command::Finish(a) => {
            let _ = Interrupt::watch()?;
            let p = Pair::open(&a.pair, true)?;
            setup::finish(p, &a)
        }
        Command::Status(a) => {
            shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
            let p = Pair::open(&a.pair, false)?;
            status::run(p, &a)
        }
    }
}
