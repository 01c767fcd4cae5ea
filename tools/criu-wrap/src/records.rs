//! The JSON-lines records criu-wrap writes (documented in `shared/PROTOCOL.md`, `### criu-wrap`).

use serde::{Deserialize, Serialize};
use shared::Record;

/// `feature`: one CRIU/kernel capability, as `criu check` sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Feature {
    /// CRIU's name for it (`mem_dirty_track`, `uffd-noncoop`...), or `basic` / `tcp_repair` /
    /// `network_lock_iptables`.
    pub name: String,
    /// `null` when it could not be checked (the basic check failed).
    pub supported: Option<bool>,
    /// What needs it: `dump_restore`, `pre_copy`, `lazy_pages`, `tcp_established`.
    pub needed_for: String,
    /// What CRIU said (first relevant line).
    pub detail: Option<String>,
}
impl Record for Feature {
    const TYPE: &'static str = "feature";
}

/// `verdict`: which migration modes this host supports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// CRIU can dump and restore here at all.
    pub usable: bool,
    /// `criu --version`.
    pub criu_version: Option<String>,
    /// `uname -r`.
    pub kernel: Option<String>,
    /// Supported modes: `stop_and_copy`, `pre_copy` (iterative, needs dirty tracking),
    /// `lazy_pages` (post-copy with userfaultfd; criu-wrap itself does not drive it).
    pub modes: Vec<String>,
    /// `--tcp-established` can work (TCP repair plus a way to lock the network).
    pub tcp_established: bool,
    /// The network lock criu-wrap would use: `iptables`, `nftables` or null.
    pub network_lock: Option<String>,
    /// When not usable: the diagnosis tag, problem and fix.
    pub cause: Option<String>,
    /// See `cause`.
    pub problem: Option<String>,
    /// See `cause`.
    pub fix: Option<String>,
}
impl Record for Verdict {
    const TYPE: &'static str = "verdict";
}

/// `round`: one pre-dump round, or the final dump.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Round {
    /// 1-based; the final dump is the last round.
    pub round: u32,
    /// `pre_dump` or `dump`.
    pub kind: String,
    /// The round's images directory.
    pub images: String,
    /// Pages written by this round (CRIU's `pages_written`).
    pub pages: u64,
    /// `pages * 4096`.
    pub bytes: u64,
    /// Pages CRIU looked at (from its stats; null without them).
    pub pages_scanned: Option<u64>,
    /// Shared-memory pages written (CRIU's `shpages_written`; not in `pages`; null without
    /// stats).
    pub shmem_pages: Option<u64>,
    /// Size of the files this round wrote.
    pub image_bytes: u64,
    /// Wall time of the CRIU run.
    pub ms: u64,
    /// Time the process was frozen during this round (CRIU's `frozen_time`).
    pub frozen_ms: Option<u64>,
    /// For pre-dump rounds: `continue` or `stop` (then the final dump follows).
    pub next: Option<String>,
    /// Why the loop stopped (`64 pages or fewer`, `grew by 25% (more than 10%)`, `8 rounds`...).
    pub reason: Option<String>,
}
impl Record for Round {
    const TYPE: &'static str = "round";
}

/// `dump`: the checkpoint as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dump {
    /// The dumped process (root of the tree).
    pub pid: u32,
    /// The images directory (restore with `criu-wrap restore --images` it).
    pub images: String,
    /// `pre_copy` or `stop_and_copy`.
    pub mode: String,
    /// Rounds, the final dump included.
    pub rounds: u32,
    /// Pages written over all rounds.
    pub pages: u64,
    /// Pages written by the final dump (copied while the process was frozen).
    pub final_pages: u64,
    /// Size of the whole images directory.
    pub image_bytes: u64,
    /// How long the process was frozen by the final dump (CRIU's stats; null without them).
    pub frozen_ms: Option<u64>,
    /// Wall time of the final dump.
    pub dump_ms: u64,
    /// Wall time of everything.
    pub total_ms: u64,
    /// `killed` (CRIU's default after a dump) or `running` (`--leave-running`).
    pub process: String,
    /// Dumped with `--tcp-established`.
    pub tcp_established: bool,
}
impl Record for Dump {
    const TYPE: &'static str = "dump";
}

/// `restore`: a process tree restored from images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Restore {
    /// PID of the restored root process (the original PID).
    pub pid: u32,
    /// The images directory.
    pub images: String,
    /// Wall time of the restore.
    pub ms: u64,
    /// CRIU's own restore time (stats), if it wrote them.
    pub restore_ms: Option<u64>,
    /// Restored with `--detach` (criu-wrap returned at once).
    pub detached: bool,
    /// In `migrate`: `target`, or `source` when the process was restored back where it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
}
impl Record for Restore {
    const TYPE: &'static str = "restore";
}

/// `exit`: the restored process ended (restore without `--detach`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exit {
    /// The restored root process.
    pub pid: u32,
    /// CRIU's exit code (the restored process's, as CRIU passes it on), or null.
    pub code: Option<i32>,
    /// The signal that ended CRIU, if any.
    pub signal: Option<i32>,
}
impl Record for Exit {
    const TYPE: &'static str = "exit";
}

/// `transfer`: images copied to the target and verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transfer {
    /// `pre-1`, `pre-2`... (while the process runs) or `final` (while it is frozen).
    pub part: String,
    /// Files copied.
    pub files: u64,
    /// Their size.
    pub bytes: u64,
    /// Wall time of copy plus verification.
    pub ms: u64,
    /// SHA-256 of every file matched on both sides.
    pub verified: bool,
}
impl Record for Transfer {
    const TYPE: &'static str = "transfer";
}

/// `resumed`: after a failure, what became of the source process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resumed {
    /// The process that runs now (the original PID: CRIU restores it under the same one).
    pub pid: u32,
    /// `running` (CRIU thawed it, or it never stopped), `sigcont` (criu-wrap continued
    /// stopped tasks), `restored` (it had been killed by the dump and was restored from the
    /// local images), `not_running` (it is gone: see the error).
    pub how: String,
    /// The process runs.
    pub alive: bool,
    /// Tasks that got SIGCONT.
    #[serde(default)]
    pub continued: Vec<u32>,
}
impl Record for Resumed {
    const TYPE: &'static str = "resumed";
}

/// `migrate`: the outcome of a migration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Migrate {
    /// The process.
    pub pid: u32,
    /// The destination as given.
    pub to: String,
    /// `migrated` (runs on the target only) or `resumed_on_source` (runs on the source only).
    pub outcome: String,
    /// `pre_copy` or `stop_and_copy`.
    pub mode: String,
    /// Rounds, the final dump included.
    pub rounds: u32,
    /// Bytes copied to the target.
    pub bytes_transferred: u64,
    /// From the start of the final dump until the process ran again (on the target, or back
    /// on the source).
    pub downtime_ms: u64,
    /// CRIU's frozen time of the final dump.
    pub frozen_ms: Option<u64>,
    /// Wall time of everything.
    pub total_ms: u64,
}
impl Record for Migrate {
    const TYPE: &'static str = "migrate";
}

/// `hook`: the `--after-dump` command ran (and succeeded: a failure is an `error`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hook {
    /// The command.
    pub command: String,
    /// Its wall time (part of the downtime).
    pub ms: u64,
    /// Its exit code.
    pub exit_code: i32,
}
impl Record for Hook {
    const TYPE: &'static str = "hook";
}
