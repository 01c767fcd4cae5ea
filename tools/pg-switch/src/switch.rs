//! Carrying out a [`Plan`]: the switchover itself, its resumption, and the rollback.
//!
//! The switchover, step by step (each journal record is on disk before its step starts):
//!
//! 1. Off the clock: a session on the target (kept for the promotion), the target's replay not
//!    paused and (stream mode) streaming on the source's timeline, the same system identifier
//!    on both, `wal_retrieve_retry_interval` lowered to 50 ms on the target (a promotion that
//!    lands while the standby waits to retry its WAL source is not held up), `CHECKPOINT` on
//!    the source (the shutdown checkpoint then has little to write).
//! 2. `stopping`: one call on the source's host writes the fence (standby.signal and a
//!    primary_conninfo naming the target, fsynced), then stops the postmaster (SIGINT, polled
//!    every 5 ms) and prints pg_controldata. From here clients see errors.
//! 3. `stopped`: proof `source_clean_shutdown` (state "shut down", same system identifier); in
//!    archive mode the segment holding the shutdown checkpoint is shipped.
//! 4. proof `target_replayed_final_checkpoint`: the target replayed past the source's final
//!    checkpoint, on its timeline, and knows no later timeline. Checked before anything else
//!    happens: a failed proof rolls back.
//! 5. `promoting`: `pg_promote(false)`, polled every 5 ms, signalled again every 250 ms while
//!    the target still is in recovery.
//! 6. `promoted`: proof `target_writable` (a transaction id, on a new timeline).
//!
//! A failure or a signal (SIGTERM, SIGINT, SIGHUP) before step 5 rolls back; once the
//! promotion was asked for, the run finds out whether it took (a second session, then the
//! target's own host: stopped, its control file read) and never restarts the source unless
//! the target is confirmed not promoted. What cannot be confirmed is [`Outcome::Unknown`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use shared::{ErrorKind, Output};
use tokio_postgres::types::PgLsn;
use tokio_postgres::Client;

use crate::control::{one_line, ClusterState, Control};
use crate::journal::Journal;
use crate::plan::{decide, Mode, Plan, Role, View};
use crate::side::{script, Side};

/// How a run ended (the summary's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The target is the primary, proven writable; the source is stopped and fenced.
    Promoted,
    /// The target was the primary already (a finished or resumed switchover).
    AlreadyPromoted,
    /// The target's control file says promoted, but it cannot be reached over SQL from here.
    PromotedUnverified,
    /// The source serves again; the target is a standby (or stopped) and not promoted.
    RolledBack,
    /// Nothing was changed: the switch could not start.
    Refused,
    /// `--abort` found the source serving: nothing to undo.
    NothingToDo,
    /// `--abort` refused: the target was promoted.
    CannotAbort,
    /// Neither outcome can be confirmed: nothing more was touched; a person must look.
    Unknown,
}

/// What the caller gives.
#[derive(Debug, Clone)]
pub struct Options {
    /// Limit for each step.
    pub timeout: Duration,
    /// The fence's lines for the source's postgresql.auto.conf.
    pub fence: String,
    /// `NAME -> shell command` (before_stop, during_stop, after_stop, before_promote,
    /// during_promote, after_promote).
    pub hooks: BTreeMap<String, String>,
    /// Archive mode: wal-ship on the source host and the archive it pushes to.
    pub archive: Option<(String, String)>,
    /// Fault injection for tests: the stop script sleeps this long after signalling the
    /// postmaster (PGSHIFT_TEST_STOP_DELAY_MS).
    pub test_stop_delay_ms: u64,
    /// Fault injection for tests: sleep this long after the first pg_promote
    /// (PGSHIFT_TEST_PROMOTE_DELAY_MS).
    pub test_promote_delay_ms: u64,
}

/// The hook names, in the order they run.
pub const HOOKS: &[&str] = &[
    "before_stop",
    "during_stop",
    "after_stop",
    "before_promote",
    "during_promote",
    "after_promote",
];

/// Signals received (0 none, else the signal number), set by the signal task.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicU8>);

impl Interrupt {
    /// Record a signal.
    pub fn set(&self, signo: i32) {
        let _ = self
            .0
            .compare_exchange(0, signo as u8, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The signal's name, if one came.
    pub fn by(&self) -> Option<&'static str> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            1 => Some("SIGHUP"),
            2 => Some("SIGINT"),
            15 => Some("SIGTERM"),
            _ => Some("signal"),
        }
    }
}

/// Why the switch stopped short (the class decides the exit code when nothing was changed).
struct Stop {
    kind: ErrorKind,
    why: String,
}

fn stop(kind: ErrorKind, why: impl Into<String>) -> Stop {
    Stop {
        kind,
        why: why.into(),
    }
}

/// The timings and facts a summary reports.
#[derive(Debug, Default, Serialize)]
struct Facts {
    #[serde(skip_serializing_if = "Option::is_none")]
    downtime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    promote_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writable_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_timeline: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_timeline: Option<u32>,
    promote_signals: u32,
}

/// One run of pg-switch.
pub struct Run {
    source: Side,
    target: Side,
    journal: Journal,
    out: Output,
    opts: Options,
    interrupt: Interrupt,
    facts: Facts,
    /// This run asked for the promotion.
    asked_promotion: bool,
    /// The commands a person should run (for [`Outcome::Unknown`]).
    commands: Vec<String>,
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Run {
    /// A run over two sides, writing records to `out` and steps to `journal`.
    pub fn new(
        source: Side,
        target: Side,
        journal: Journal,
        out: Output,
        opts: Options,
        interrupt: Interrupt,
    ) -> Run {
        Run {
            source,
            target,
            journal,
            out,
            opts,
            interrupt,
            facts: Facts::default(),
            asked_promotion: false,
            commands: Vec::new(),
        }
    }

    /// Records are best effort: the journal, not stdout, is what a later run trusts, and a
    /// closed pipe must never stop a switchover half way.
    fn say(&mut self, kind: &str, body: Value) {
        let _ = self.out.emit_as(kind, &body);
    }

    fn proof(&mut self, name: &str, ok: bool, mut fields: Value) {
        if let Value::Object(m) = &mut fields {
            m.insert("ok".into(), ok.into());
        }
        let mut body = json!({ "name": name });
        if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
            b.extend(f);
        }
        self.say("proof", body);
    }

    fn step(&mut self, name: &str, fields: Value) {
        let mut body = json!({ "name": name });
        if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
            b.extend(f);
        }
        self.say("step", body);
    }

    fn journal(&mut self, step: &str, fields: Value) -> anyhow::Result<()> {
        let mut f = json!({
            "source": self.source.conninfo.describe(),
            "target": self.target.conninfo.describe(),
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut f, fields) {
            a.extend(b);
        }
        self.journal.switch_step(step, f)
    }

    async fn hook(&mut self, name: &str) -> Result<(), Stop> {
        let Some(cmd) = self.opts.hooks.get(name).cloned() else {
            return Ok(());
        };
        shared::msg::error_line(&format!("hook {name}: {cmd}"));
        let status = tokio::process::Command::new("sh")
            .args(["-c", &cmd])
            .env("PGSHIFT_STEP", name)
            .env("PGSHIFT_JOURNAL", self.journal.path())
            .stdout(std::process::Stdio::null())
            .status()
            .await;
        match status {
            Ok(s) if s.success() => Ok(()),
            other => Err(stop(
                ErrorKind::Internal,
                format!("hook {name} failed ({other:?}): {cmd}"),
            )),
        }
    }

    /// A hook that runs beside the step it names, not awaited.
    fn hook_beside(&self, name: &str) {
        if let Some(cmd) = self.opts.hooks.get(name) {
            shared::msg::error_line(&format!("hook {name}: {cmd}"));
            let _ = tokio::process::Command::new("sh")
                .args(["-c", cmd])
                .env("PGSHIFT_STEP", name)
                .env("PGSHIFT_JOURNAL", self.journal.path())
                .stdout(std::process::Stdio::null())
                .spawn();
        }
    }

    /// Look until neither side is in transition (starting up, shutting down: an orphaned
    /// stop of an interrupted run may still be under way), for at most the step timeout.
    async fn look_settled(&mut self) -> (View, View) {
        let limit = self.opts.timeout.min(Duration::from_secs(10));
        let deadline = Instant::now() + self.opts.timeout;
        loop {
            let (s, t) = tokio::join!(self.source.view(limit), self.target.view(limit));
            let moving = |v: &View| matches!(v.role(), Role::Transition(_));
            if !(moving(&s) || moving(&t)) || Instant::now() >= deadline {
                self.report_look(&s, &t);
                return (s, t);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn report_look(&mut self, s: &View, t: &View) {
        let body = json!({
            "source": Side::describe_view(s),
            "target": Side::describe_view(t),
            "source_role": role_name(&s.role()),
            "target_role": role_name(&t.role()),
        });
        self.say("observed", body);
    }

    /// Look at both sides, decide, act; then the summary. Returns the exit status.
    pub async fn run(mut self, mode: Mode) -> anyhow::Result<shared::Status> {
        let outcome = self.drive(mode).await;
        let (outcome, failure) = match outcome {
            Ok(o) => (o, None),
            Err(e) => (Outcome::Unknown, Some(e)),
        };
        let by = self.interrupt.by();
        if let Some(e) = failure {
            let _ = self
                .out
                .error_of_kind(ErrorKind::Fatal, &e, json!({"step": "internal"}));
        }
        let primary = match outcome {
            Outcome::Promoted | Outcome::AlreadyPromoted | Outcome::PromotedUnverified => "target",
            Outcome::RolledBack | Outcome::Refused | Outcome::NothingToDo => "source",
            Outcome::CannotAbort => "target",
            Outcome::Unknown => "unknown",
        };
        if outcome == Outcome::RolledBack && mode == Mode::Switch || outcome == Outcome::CannotAbort
        {
            self.out.mark_differences();
        }
        let facts = std::mem::take(&mut self.facts);
        let commands = std::mem::take(&mut self.commands);
        let journal = self.journal.path().display().to_string();
        let mut extra = serde_json::to_value(&facts)?;
        if let Value::Object(m) = &mut extra {
            m.insert("outcome".into(), serde_json::to_value(outcome)?);
            m.insert("primary".into(), primary.into());
            m.insert("journal".into(), journal.into());
            if let Some(by) = by {
                m.insert("stopped_by".into(), by.into());
            }
            if !commands.is_empty() {
                m.insert("commands".into(), commands.into());
            }
        }
        self.out.finish(&extra)
    }

    /// The decision loop: look, decide, act. Failures the plan foresees are reported as
    /// `error` records here and turned into an outcome; an `Err` is a failure nothing foresaw
    /// (then: unknown, exit 126).
    async fn drive(&mut self, mode: Mode) -> anyhow::Result<Outcome> {
        let mut target_started = false;
        for _ in 0..3 {
            let (s, t) = self.look_settled().await;
            let plan = decide(
                mode,
                &s.role(),
                &t.role(),
                self.journal.facts(),
                target_started,
            );
            self.say("plan", plan_record(&plan));
            return match plan {
                Plan::StartTarget => {
                    self.journal("starting_target", json!({"primary": "none"}))?;
                    if let Err(e) = self.target.start(self.opts.timeout).await {
                        shared::msg::error_line(&format!("{e:#}"));
                    }
                    target_started = true;
                    self.wait_answering(&self.target.clone()).await;
                    continue;
                }
                Plan::Switch => self.switch(true).await,
                Plan::Resume => self.switch(false).await,
                Plan::AlreadyPromoted => self.already_promoted(&s).await,
                Plan::Rollback(why) => {
                    shared::msg::error_line(&format!("rolling back: {why}"));
                    self.rollback().await
                }
                Plan::Refuse(kind, why) => self.refuse(kind, why),
                Plan::Unknown(why) => self.unknown(why),
                Plan::NothingToDo => {
                    self.journal("nothing_to_do", json!({"primary": "source"}))?;
                    Ok(Outcome::NothingToDo)
                }
                Plan::CannotAbort(why) => {
                    shared::msg::error_line(&format!("cannot abort: {why}"));
                    self.say(
                        "error",
                        json!({"kind": "cannot_abort", "exit_code": 1, "message": why}),
                    );
                    Ok(Outcome::CannotAbort)
                }
            };
        }
        let why = "the target was started but its state still cannot be told".to_owned();
        self.unknown(why)
    }

    fn refuse(&mut self, kind: ErrorKind, why: String) -> anyhow::Result<Outcome> {
        self.journal("refused", json!({"primary": "source", "reason": why}))?;
        let _ = self
            .out
            .error_of_kind(kind, &anyhow::anyhow!("{why}"), json!({"step": "refused"}));
        Ok(Outcome::Refused)
    }

    fn unknown(&mut self, why: String) -> anyhow::Result<Outcome> {
        let (s, t) = (&self.source, &self.target);
        let bin = &t.pg_bin;
        self.commands = vec![
            format!(
                "on the target's host ({}): {bin}/pg_controldata {} | grep 'cluster state'   # 'in production' means it was promoted",
                t.host.spec(),
                t.pgdata
            ),
            "if the target was promoted: keep it as the primary; the source stays stopped and fenced; run this command again once both hosts answer".into(),
            format!(
                "if it was not: {bin}/pg_ctl -D {} -m fast stop   (on the target's host), then on the source's host ({}): rm -f {}/standby.signal && {}/pg_ctl -D {} -l {} start",
                t.pgdata,
                s.host.spec(),
                s.pgdata,
                s.pg_bin,
                s.pgdata,
                s.log
            ),
        ];
        self.journal(
            "unknown",
            json!({"primary": "unknown", "reason": why, "commands": self.commands}),
        )?;
        let _ = self.out.error_of_kind(
            ErrorKind::Fatal,
            &anyhow::anyhow!(
                "{why}: nothing more was touched; see the summary's commands, or run again once both hosts answer"
            ),
            json!({"step": "unknown"}),
        );
        Ok(Outcome::Unknown)
    }

    /// Wait (bounded) until a side answers over SQL.
    async fn wait_answering(&self, side: &Side) {
        let deadline = Instant::now() + self.opts.timeout;
        while Instant::now() < deadline {
            if !matches!(
                side.sql_state(Duration::from_secs(2)).await,
                crate::plan::Sql::Down(_)
            ) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // --- the switchover ----------------------------------------------------------------

    async fn switch(&mut self, fresh: bool) -> anyhow::Result<Outcome> {
        let limit = self.opts.timeout;
        // Off the clock: the target's session (kept for the promotion) and the checks.
        let tgt = match self.target.connect(limit).await {
            Ok(c) => c,
            Err(e) if fresh => return self.refuse(shared::exit::classify(&e), format!("{e:#}")),
            Err(e) => return self.unknown(format!("cannot open a session on the target: {e:#}")),
        };
        let pre = match self.pre_checks(fresh, &tgt).await {
            Ok(p) => p,
            Err(Stop { kind, why }) if fresh => return self.refuse(kind, why),
            Err(Stop { why, .. }) => {
                return self
                    .rollback_because(format!("before resuming: {why}"))
                    .await
            }
        };
        if let Err(Stop { kind, why }) = self.hook("before_stop").await {
            return self.refuse(kind, why);
        }
        if let Some(by) = self.interrupt.by() {
            return self.refuse(
                ErrorKind::Retry,
                format!("interrupted by {by} before the switch"),
            );
        }

        // 2. Fence and stop the source, in one call on its host.
        self.journal(
            "stopping",
            json!({"primary": "source", "fence": true, "source_running": fresh}),
        )?;
        let t_stop = Instant::now();
        self.facts.stop_at_ms = Some(epoch_ms());
        self.hook_beside("during_stop");
        let control = match self.stop_source().await {
            Ok(c) => c,
            Err(Stop { why, .. }) => return self.rollback_because(why).await,
        };
        let t_stopped = Instant::now();
        self.facts.stopped_at_ms = Some(epoch_ms());
        self.facts.stop_ms = Some(t_stopped.duration_since(t_stop).as_millis() as u64);

        // 3. Proof: a clean shutdown of the cluster the target replicates.
        let clean = control.state == ClusterState::ShutDown
            && control.system_identifier == pre.target_system_identifier;
        self.proof(
            "source_clean_shutdown",
            clean,
            json!({
                "cluster_state": control.state.to_string(),
                "checkpoint_lsn": control.checkpoint_lsn.to_string(),
                "timeline": control.checkpoint_timeline,
                "system_identifier": control.system_identifier,
                "target_system_identifier": pre.target_system_identifier,
            }),
        );
        if !clean {
            return self
                .rollback_because(format!(
                    "the source did not shut down cleanly (pg_controldata says '{}', system {} vs the target's {})",
                    control.state, control.system_identifier, pre.target_system_identifier
                ))
                .await;
        }
        self.facts.checkpoint_lsn = Some(control.checkpoint_lsn.to_string());
        self.facts.source_timeline = Some(control.checkpoint_timeline);
        self.journal(
            "stopped",
            json!({
                "primary": "none", "fence": true,
                "checkpoint_lsn": control.checkpoint_lsn.to_string(),
                "timeline": control.checkpoint_timeline,
            }),
        )?;
        if let Err(Stop { why, .. }) = self.hook("after_stop").await {
            return self.rollback_because(why).await;
        }
        if let Err(Stop { why, .. }) = self.ship_last_segment(&control).await {
            return self.rollback_because(why).await;
        }
        if let Err(Stop { why, .. }) = self.hook("before_promote").await {
            return self.rollback_because(why).await;
        }
        if let Some(by) = self.interrupt.by() {
            return self
                .rollback_because(format!("interrupted by {by} before the promotion"))
                .await;
        }

        // 4. Proof: the target has every commit.
        if let Err(Stop { why, .. }) = self.replay_proof(&tgt, &control, pre.received_tli).await {
            return self.rollback_because(why).await;
        }
        if let Some(by) = self.interrupt.by() {
            return self
                .rollback_because(format!("interrupted by {by} before the promotion"))
                .await;
        }

        // 5. Promote.
        self.journal("promoting", json!({"primary": "none", "fence": true}))?;
        self.asked_promotion = true;
        let t_promote = Instant::now();
        match self.promote(&tgt).await {
            Promotion::Done => {}
            Promotion::NotConfirmed(why) => {
                drop(tgt); // the promotion session goes before anyone looks
                return self.settle_promotion(why, self.opts.timeout).await;
            }
        }
        // 6. Proof: the target takes a write, on a new timeline.
        let written = self
            .first_write(&tgt, Some(control.checkpoint_timeline))
            .await;
        let t_writable = Instant::now();
        self.facts.writable_at_ms = Some(epoch_ms());
        self.facts.promote_ms = Some(t_writable.duration_since(t_promote).as_millis() as u64);
        self.facts.downtime_ms = Some(t_writable.duration_since(t_stop).as_millis() as u64);
        match written {
            Ok(tli) => {
                self.facts.new_timeline = Some(tli);
                self.journal(
                    "promoted",
                    json!({"primary": "target", "fence": true, "timeline": tli}),
                )?;
            }
            Err(Stop { why, .. }) => {
                drop(tgt);
                return self.settle_promotion(why, self.opts.timeout).await;
            }
        }
        if let Err(Stop { why, .. }) = self.hook("after_promote").await {
            shared::msg::error_line(&format!("warning: {why} (the switchover is done)"));
            self.say("warning", json!({"message": why}));
        }
        // The retry interval was only for the switch.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tgt.batch_execute(
                "ALTER SYSTEM RESET wal_retrieve_retry_interval; SELECT pg_reload_conf()",
            ),
        )
        .await;
        Ok(Outcome::Promoted)
    }

    async fn pre_checks(&mut self, fresh: bool, tgt: &Client) -> Result<PreChecks, Stop> {
        let limit = self.opts.timeout;
        let q = |sql: &'static str| async move {
            match tokio::time::timeout(limit, tgt.query_one(sql, &[])).await {
                Ok(Ok(row)) => Ok(row),
                Ok(Err(e)) => Err(stop(
                    ErrorKind::Unavailable,
                    format!("querying the target: {}", shared::pg::one_line(&e)),
                )),
                Err(_) => Err(stop(ErrorKind::Unavailable, "the target does not answer")),
            }
        };
        const STATE: &str = "SELECT pg_is_in_recovery(), pg_is_wal_replay_paused(), \
             (SELECT system_identifier::text FROM pg_control_system()), \
             (SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming')::int";
        let mut row = q(STATE).await?;
        // A standby that just (re)started, or whose primary just restarted, reconnects within
        // moments: wait for it to stream (stream mode, fresh switch) before judging.
        let deadline = Instant::now() + limit;
        while fresh
            && self.opts.archive.is_none()
            && row.get::<_, Option<i32>>(3).is_none()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            row = q(STATE).await?;
        }
        let (in_recovery, paused): (bool, bool) = (row.get(0), row.get(1));
        let target_system_identifier: String = row.get(2);
        let received_tli: Option<i32> = row.get(3);
        if !in_recovery {
            return Err(stop(ErrorKind::DataErr, "the target is not in recovery"));
        }
        if paused {
            return Err(stop(
                ErrorKind::DataErr,
                "replay is paused on the target (a promotion would end the pause with WAL \
                 unreplayed): run SELECT pg_wal_replay_resume() on it",
            ));
        }
        let _ = tokio::time::timeout(
            limit,
            tgt.batch_execute(
                "ALTER SYSTEM SET wal_retrieve_retry_interval = '50ms'; SELECT pg_reload_conf()",
            ),
        )
        .await;
        if !fresh {
            return Ok(PreChecks {
                target_system_identifier,
                received_tli: None,
            });
        }
        let src = self
            .source
            .connect(limit)
            .await
            .map_err(|e| stop(shared::exit::classify(&e), format!("{e:#}")))?;
        let row = match tokio::time::timeout(limit, async {
            src.batch_execute("CHECKPOINT").await?;
            src.query_one(
                "SELECT (SELECT system_identifier::text FROM pg_control_system()), \
                        (SELECT timeline_id FROM pg_control_checkpoint())::int, pg_is_in_recovery(), \
                        current_setting('synchronous_standby_names')",
                &[],
            )
            .await
        })
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(stop(
                    ErrorKind::Unavailable,
                    format!("checkpoint on the source: {}", shared::pg::one_line(&e)),
                ))
            }
            Err(_) => return Err(stop(ErrorKind::Retry, "CHECKPOINT on the source timed out")),
        };
        let (src_sysid, src_tli, src_recovery, sync_names): (String, i32, bool, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if src_recovery {
            return Err(stop(
                ErrorKind::DataErr,
                "the source is in recovery, not a primary",
            ));
        }
        if src_sysid != target_system_identifier {
            return Err(stop(
                ErrorKind::DataErr,
                format!(
                    "the target holds another cluster (system identifier {target_system_identifier}, the source's {src_sysid})"
                ),
            ));
        }
        if !sync_names.trim().is_empty() {
            shared::msg::error_line(&format!(
                "warning: the source has synchronous_standby_names = '{sync_names}': the new \
                 primary inherits it, and its commits wait until such a standby connects"
            ));
        }
        let streaming = self.opts.archive.is_none();
        if streaming {
            let ok = received_tli == Some(src_tli);
            self.proof(
                "target_streams_from_source",
                ok,
                json!({"source_timeline": src_tli, "received_timeline": received_tli}),
            );
            if !ok {
                return Err(stop(
                    ErrorKind::DataErr,
                    match received_tli {
                        None => "the target is not streaming (pg_stat_wal_receiver shows no streaming walreceiver): wait until it catches up".to_owned(),
                        Some(r) => format!("the target streams timeline {r}, the source is on timeline {src_tli}: it follows another primary"),
                    },
                ));
            }
        }
        Ok(PreChecks {
            target_system_identifier,
            received_tli: received_tli.map(|t| t as u32),
        })
    }

    /// The fence-and-stop call; retried once when the host could not be reached (the call is
    /// idempotent). Returns the source's control file after the stop.
    async fn stop_source(&mut self) -> Result<Control, Stop> {
        let limit_ms = self.opts.timeout.as_millis() as u64;
        let delay = self.opts.test_stop_delay_ms.to_string();
        let limit = limit_ms.to_string();
        let src = self.source.clone();
        let args = [
            src.pgdata.as_str(),
            src.pg_bin.as_str(),
            limit.as_str(),
            delay.as_str(),
        ];
        let call_limit = self.opts.timeout
            + Duration::from_millis(self.opts.test_stop_delay_ms)
            + Duration::from_secs(15);
        let mut last = String::new();
        for attempt in 1..=2 {
            let out = src
                .run(
                    script::STOP,
                    "pgshift-stop",
                    &args,
                    Some(&self.opts.fence),
                    call_limit,
                )
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) => return Err(stop(ErrorKind::Unavailable, format!("{e:#}"))),
            };
            if out.ok() {
                let control = out
                    .stdout
                    .split_once("---\n")
                    .map(|(_, c)| c)
                    .ok_or_else(|| "no control data".to_owned())
                    .and_then(Control::parse);
                return control.map_err(|e| {
                    stop(
                        ErrorKind::Internal,
                        format!("stopping the source: {e}: {}", out.describe()),
                    )
                });
            }
            last = out.describe();
            if !out.unreachable() || attempt == 2 {
                break;
            }
            shared::msg::error_line(&format!(
                "the call that stops the source failed ({last}); calling again"
            ));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(stop(
            ErrorKind::Unavailable,
            format!("stopping the source failed: {last}"),
        ))
    }

    async fn ship_last_segment(&mut self, control: &Control) -> Result<(), Stop> {
        let Some((wal_ship, archive)) = self.opts.archive.clone() else {
            return Ok(());
        };
        let seg = control.checkpoint_segment();
        let path = format!("{}/pg_wal/{seg}", self.source.pgdata);
        let out = self
            .source
            .run(
                r#"exec "$@""#,
                "pgshift-ship",
                &[&wal_ship, "push", &path, "--to", &archive, "--quiet"],
                None,
                self.opts.timeout,
            )
            .await
            .map_err(|e| stop(ErrorKind::Io, format!("{e:#}")))?;
        let ok = out.ok();
        self.proof("last_segment_shipped", ok, json!({"segment": seg}));
        if ok {
            Ok(())
        } else {
            Err(stop(
                ErrorKind::Io,
                format!("shipping the last segment {seg} failed: {}", out.describe()),
            ))
        }
    }

    async fn replay_proof(
        &mut self,
        tgt: &Client,
        control: &Control,
        received_before: Option<u32>,
    ) -> Result<(), Stop> {
        let x = control.checkpoint_lsn;
        let tli = control.checkpoint_timeline;
        let deadline = Instant::now() + self.opts.timeout;
        // Autocommit polls: no snapshot is held between them (replay of a cleanup record
        // must never wait for this session).
        let mut replayed: Option<PgLsn> = None;
        loop {
            let row = tokio::time::timeout(
                Duration::from_secs(2),
                tgt.query_one(
                    "SELECT pg_last_wal_replay_lsn(), pg_is_wal_replay_paused()",
                    &[],
                ),
            )
            .await;
            match row {
                Ok(Ok(row)) => {
                    replayed = row.get(0);
                    let paused: bool = row.get(1);
                    if replayed.is_some_and(|r| r > x) {
                        break;
                    }
                    if paused {
                        return self.replay_failed(x, replayed, "replay is paused on the target");
                    }
                }
                Ok(Err(e)) => {
                    return self.replay_failed(
                        x,
                        replayed,
                        &format!("the target's session failed: {}", shared::pg::one_line(&e)),
                    )
                }
                Err(_) => return self.replay_failed(x, replayed, "the target does not answer"),
            }
            if Instant::now() >= deadline {
                return self.replay_failed(
                    x,
                    replayed,
                    &format!("not replayed within {} ms", self.opts.timeout.as_millis()),
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The timeline: what the walreceiver receives (or received before the stop), else the
        // newest timeline the target knows of; and no timeline later than the source's.
        let row = tokio::time::timeout(
            Duration::from_secs(2),
            tgt.query_one(
                "SELECT (SELECT received_tli FROM pg_stat_wal_receiver)::int, \
                        (SELECT timeline_id FROM pg_control_checkpoint())::int, \
                        (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir() \
                          WHERE name ~ '^[0-9A-F]{8}\\.history$')",
                &[],
            ),
        )
        .await;
        let (live, restartpoint, newest_history) = match row {
            Ok(Ok(r)) => (
                r.get::<_, Option<i32>>(0).map(|v| v as u32),
                r.get::<_, Option<i32>>(1).map(|v| v as u32),
                r.get::<_, Option<i32>>(2).map(|v| v as u32),
            ),
            _ => return self.replay_failed(x, replayed, "the target does not answer"),
        };
        let target_tli = live.or(received_before).or_else(|| {
            // Without a walreceiver (archive mode, a resumed run): the newest timeline whose
            // history the target holds, or the one it restarted on.
            newest_history.max(restartpoint)
        });
        let later = newest_history.filter(|h| *h > tli);
        let ok = target_tli == Some(tli) && later.is_none();
        self.proof(
            "target_replayed_final_checkpoint",
            ok,
            json!({
                "checkpoint_lsn": x.to_string(),
                "replayed_lsn": replayed.map(|r| r.to_string()),
                "source_timeline": tli,
                "target_timeline": target_tli,
                "received_timeline": live.or(received_before),
                "restartpoint_timeline": restartpoint,
                "later_timeline": later,
            }),
        );
        if ok {
            Ok(())
        } else {
            Err(stop(
                ErrorKind::DataErr,
                match later {
                    Some(l) => format!(
                        "the target knows timeline {l}, later than the source's {tli}: it does not follow this source"
                    ),
                    None => format!(
                        "the target replays timeline {}, the source's final checkpoint is on timeline {tli}",
                        target_tli.map_or("unknown".into(), |t| t.to_string())
                    ),
                },
            ))
        }
    }

    fn replay_failed(&mut self, x: PgLsn, replayed: Option<PgLsn>, why: &str) -> Result<(), Stop> {
        self.proof(
            "target_replayed_final_checkpoint",
            false,
            json!({
                "checkpoint_lsn": x.to_string(),
                "replayed_lsn": replayed.map(|r| r.to_string()),
                "reason": why,
            }),
        );
        Err(stop(
            ErrorKind::Retry,
            format!(
                "the target did not replay past the source's final checkpoint {x} (replayed {}): {why}",
                replayed.map_or("nothing".into(), |r| r.to_string())
            ),
        ))
    }

    async fn promote(&mut self, tgt: &Client) -> Promotion {
        self.facts.promote_signals = 1;
        match signal_promote(tgt).await {
            Ok(true) => return Promotion::Done,
            Ok(false) => {}
            Err(e) => return Promotion::NotConfirmed(format!("asking for the promotion: {e}")),
        }
        self.hook_beside("during_promote");
        if self.opts.test_promote_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.opts.test_promote_delay_ms)).await;
        }
        let deadline = Instant::now() + self.opts.timeout;
        let mut signalled = Instant::now();
        loop {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                tgt.query_one("SELECT pg_is_in_recovery()", &[]),
            )
            .await;
            match r {
                Ok(Ok(row)) if !row.get::<_, bool>(0) => return Promotion::Done,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Promotion::NotConfirmed(format!(
                        "the promotion session failed: {}",
                        shared::pg::one_line(&e)
                    ))
                }
                Err(_) => {
                    return Promotion::NotConfirmed("the target stopped answering".to_owned())
                }
            }
            if Instant::now() >= deadline {
                return Promotion::NotConfirmed(format!(
                    "still in recovery {} ms after pg_promote",
                    self.opts.timeout.as_millis()
                ));
            }
            // PostgreSQL 15 can sit out a retry interval when the promotion lands just after
            // the standby lost its primary: ask again.
            if signalled.elapsed() >= Duration::from_millis(250) {
                self.facts.promote_signals += 1;
                signalled = Instant::now();
                match signal_promote(tgt).await {
                    Ok(true) => return Promotion::Done,
                    Ok(false) => {}
                    Err(e) => return Promotion::NotConfirmed(format!("asking again: {e}")),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Proof `target_writable`: a transaction id, and (`after`) a timeline later than the
    /// source's.
    async fn first_write(&mut self, tgt: &Client, after: Option<u32>) -> Result<u32, Stop> {
        // The new primary inherits synchronous_standby_names: this one commit must not wait.
        let write = async {
            tgt.batch_execute("SET synchronous_commit = local").await?;
            tgt.query_one(
                "SELECT txid_current()::text, pg_current_wal_lsn()::text, \
                 ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, \
                 current_setting('transaction_read_only') = 'on'",
                &[],
            )
            .await
        };
        let failed = |this: &mut Self, kind: ErrorKind, why: String| {
            this.proof(
                "target_writable",
                false,
                json!({"source_timeline": after, "reason": why}),
            );
            Err(stop(kind, why))
        };
        match tokio::time::timeout(self.opts.timeout, write).await {
            Ok(Ok(row)) => {
                let (xid, lsn, tli, read_only): (String, String, i32, bool) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let ok = after.is_none_or(|old| tli as u32 > old) && !read_only;
                self.proof(
                    "target_writable",
                    ok,
                    json!({"xid": xid, "lsn": lsn, "timeline": tli, "source_timeline": after, "read_only": read_only}),
                );
                if ok {
                    Ok(tli as u32)
                } else if read_only {
                    Err(stop(
                        ErrorKind::DataErr,
                        "the promoted target's sessions are read-only (default_transaction_read_only \
                         is on there): clients cannot write; turn it off on the target",
                    ))
                } else {
                    Err(stop(
                        ErrorKind::Internal,
                        format!(
                            "the promoted target writes on timeline {tli}, not after the source's {after:?}"
                        ),
                    ))
                }
            }
            Ok(Err(e)) => {
                let kind = shared::pg::classify_pg_error(&e);
                failed(
                    self,
                    kind,
                    format!(
                        "the first write on the target failed: {}",
                        shared::pg::one_line(&e)
                    ),
                )
            }
            Err(_) => failed(
                self,
                ErrorKind::Unavailable,
                "the first write on the target timed out".into(),
            ),
        }
    }

    /// After a promotion was asked for and not confirmed: find out, from a fresh session and
    /// then from the target's own host, whether it took. Promoted: finish. Confirmed not:
    /// roll back. Otherwise: unknown, touch nothing.
    async fn settle_promotion(&mut self, why: String, wait: Duration) -> anyhow::Result<Outcome> {
        shared::msg::error_line(&format!(
            "the promotion is not confirmed ({why}); finding out"
        ));
        let deadline = Instant::now() + wait;
        loop {
            match self.target.sql_state(Duration::from_secs(2)).await {
                crate::plan::Sql::Primary => {
                    let s = self.source.view(Duration::from_secs(5)).await;
                    return self.already_promoted(&s).await;
                }
                _ if Instant::now() >= deadline => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        // Not promoted as far as SQL from here can tell. Its host decides: a control file "in
        // production" is a promotion; otherwise stop it, so that it never will be, and look.
        let t = self.target.clone();
        match t.host_status(Duration::from_secs(10)).await {
            Err(e) => return self.unknown(format!("{why}; and its host: {e}")),
            Ok(seen) if seen.is_running() && seen.control.state == ClusterState::InProduction => {
                let s = self.source.view(Duration::from_secs(5)).await;
                return self.already_promoted(&s).await;
            }
            Ok(_) => {}
        }
        let limit = self.opts.timeout + Duration::from_secs(60);
        let out = t
            .run(
                script::STOP_STANDBY,
                "pgshift-stop-standby",
                &[&t.pgdata, &t.pg_bin],
                None,
                limit,
            )
            .await;
        match out {
            Ok(o) if o.ok() => {}
            Ok(o) => {
                return self.unknown(format!(
                    "{why}; and the target could not be stopped on its host ({})",
                    o.describe()
                ))
            }
            Err(e) => return self.unknown(format!("{why}; and its host: {e:#}")),
        }
        match t.host_status(Duration::from_secs(10)).await {
            Ok(seen) if !seen.is_running() && seen.control.state.was_standby() => {
                self.step(
                    "target_stopped",
                    json!({"cluster_state": seen.control.state.to_string()}),
                );
                self.rollback_source(true).await
            }
            Ok(seen) if seen.control.state.was_primary() => {
                // It promoted after all (while being stopped): it is the primary; start it.
                if let Err(e) = t.start(self.opts.timeout).await {
                    return self.unknown(format!(
                        "the target was promoted but does not start again: {e:#}"
                    ));
                }
                self.wait_answering(&t).await;
                let s = self.source.view(Duration::from_secs(5)).await;
                self.already_promoted(&s).await
            }
            Ok(seen) => self.unknown(format!(
                "{why}; the target's control file says '{}'",
                seen.control.state
            )),
            Err(e) => self.unknown(format!("{why}; and its host: {e}")),
        }
    }

    async fn already_promoted(&mut self, s: &View) -> anyhow::Result<Outcome> {
        // The source must be fenced: when it is down, write the fence again (idempotent).
        let control = match s.role() {
            Role::Down(_) => {
                let src = self.source.clone();
                let out = src
                    .run(
                        script::STOP,
                        "pgshift-stop",
                        &[&src.pgdata, &src.pg_bin, "1000", "0"],
                        Some(&self.opts.fence),
                        Duration::from_secs(30),
                    )
                    .await;
                match out {
                    Ok(o) if o.ok() => o
                        .stdout
                        .split_once("---\n")
                        .and_then(|(_, c)| Control::parse(c).ok()),
                    Ok(o) => {
                        return self.unknown(format!(
                            "the target is the primary but the source could not be fenced ({})",
                            o.describe()
                        ))
                    }
                    Err(e) => {
                        return self.unknown(format!(
                            "the target is the primary but the source could not be fenced: {e:#}"
                        ))
                    }
                }
            }
            Role::Standby => s.host.as_ref().ok().map(|h| h.control.clone()),
            _ => None,
        };
        self.step("source_fenced", json!({"checked": control.is_some()}));
        // Proof: the target's timeline left the source's after the source's last checkpoint
        // (else the target was promoted early, and the source holds writes it lacks).
        let tgt = match self.target.connect(self.opts.timeout).await {
            Ok(c) => c,
            Err(e) => {
                self.journal(
                    "promoted",
                    json!({"primary": "target", "fence": true, "verified": false}),
                )?;
                let _ = self.out.error_of_kind(
                    ErrorKind::Unavailable,
                    &e.context(
                        "the target's control file says promoted, but no session opens from here",
                    ),
                    json!({"step": "already_promoted"}),
                );
                return Ok(Outcome::PromotedUnverified);
            }
        };
        if let Some(c) = &control {
            if let Err(Stop { why, .. }) = self.history_proof(&tgt, c).await {
                return self.unknown(why);
            }
        }
        match self.first_write(&tgt, None).await {
            Ok(tli) => {
                self.facts.new_timeline = Some(tli);
                self.journal(
                    "promoted",
                    json!({"primary": "target", "fence": true, "timeline": tli}),
                )?;
                Ok(if self.asked_promotion {
                    Outcome::Promoted
                } else {
                    Outcome::AlreadyPromoted
                })
            }
            Err(Stop { kind, why }) => {
                self.journal(
                    "promoted",
                    json!({"primary": "target", "fence": true, "verified": false}),
                )?;
                let _ = self.out.error_of_kind(
                    kind,
                    &anyhow::anyhow!("{why}"),
                    json!({"step": "already_promoted"}),
                );
                Ok(Outcome::PromotedUnverified)
            }
        }
    }

    async fn history_proof(&mut self, tgt: &Client, c: &Control) -> Result<(), Stop> {
        let row = tokio::time::timeout(
            Duration::from_secs(5),
            tgt.query_one(
                "SELECT tli::int, coalesce(pg_read_file(format('pg_wal/%s.history', lpad(upper(to_hex(tli)), 8, '0')), 0, 1048576, true), '') \
                 FROM (SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS tli) t",
                &[],
            ),
        )
        .await;
        let (tli, history): (i32, String) = match row {
            Ok(Ok(r)) => (r.get(0), r.get(1)),
            Ok(Err(e)) => return Err(stop(ErrorKind::Unavailable, shared::pg::one_line(&e))),
            Err(_) => return Err(stop(ErrorKind::Unavailable, "the target does not answer")),
        };
        let src_tli = c.checkpoint_timeline;
        // The source follows the target's own timeline already (it rejoined): nothing forked.
        let (ok, switchpoint) = if tli as u32 == src_tli {
            (true, None)
        } else {
            let sp = history.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                let t: u32 = w.next()?.parse().ok()?;
                let lsn: PgLsn = w.next()?.parse().ok()?;
                (t == src_tli).then_some(lsn)
            });
            (sp.is_some_and(|sp| sp > c.checkpoint_lsn), sp)
        };
        self.proof(
            "target_history_follows_source",
            ok,
            json!({
                "source_timeline": src_tli,
                "source_checkpoint_lsn": c.checkpoint_lsn.to_string(),
                "target_timeline": tli,
                "switchpoint": switchpoint.map(|s| s.to_string()),
            }),
        );
        if ok {
            Ok(())
        } else {
            Err(stop(
                ErrorKind::Fatal,
                format!(
                    "the target left the source's timeline {src_tli} at {} — before the source's final checkpoint {}: it was promoted early and the source holds writes it lacks; do not rewind the source",
                    switchpoint.map_or("an unknown point".into(), |s| s.to_string()),
                    c.checkpoint_lsn
                ),
            ))
        }
    }

    // --- the rollback ------------------------------------------------------------------

    async fn rollback_because(&mut self, why: String) -> anyhow::Result<Outcome> {
        shared::msg::error_line(&format!("{why}; rolling back to the source"));
        self.say("error", json!({"kind": "switch_failed", "message": why}));
        self.rollback().await
    }

    /// Make the source the primary again. First make sure the target is not and cannot
    /// become one: a target that nobody asked to promote and that runs as a standby is left
    /// running; otherwise it is stopped on its own host and its control file read.
    async fn rollback(&mut self) -> anyhow::Result<Outcome> {
        self.journal("rolling_back", json!({"primary": "none"}))?;
        let t = self.target.view(Duration::from_secs(5)).await;
        let asked = self.asked_promotion || self.journal.facts().promotion_requested;
        let promote_file = t.host.as_ref().map(|h| h.promote_signal).unwrap_or(false);
        match t.role() {
            Role::Primary => {
                let s = self.source.view(Duration::from_secs(5)).await;
                return self.already_promoted(&s).await;
            }
            Role::Standby if !asked && !promote_file => {
                self.step(
                    "target_not_promoted",
                    json!({"how": "standby, never asked to promote"}),
                );
                self.rollback_source(false).await
            }
            Role::Unknown(why) | Role::Transition(why) => {
                self.unknown(format!("cannot confirm the target is not promoted: {why}"))
            }
            Role::Standby => {
                // A promotion may be on its way: give it a moment, then stop the target and
                // read its control file.
                self.settle_promotion("a promotion was asked for".into(), Duration::from_secs(2))
                    .await
            }
            Role::Down(_) => {
                self.settle_promotion("the target is down".into(), Duration::ZERO)
                    .await
            }
        }
    }

    async fn rollback_source(&mut self, restart_target: bool) -> anyhow::Result<Outcome> {
        let src = self.source.clone();
        let s = src.view(Duration::from_secs(5)).await;
        match s.role() {
            Role::Unknown(why) => {
                return self.unknown(format!(
                    "the target is not promoted, but the source cannot be seen to restart it: {why}"
                ))
            }
            Role::Standby => {
                let out = src
                    .run(
                        script::STOP_STANDBY,
                        "pgshift-stop-standby",
                        &[&src.pgdata, &src.pg_bin],
                        None,
                        Duration::from_secs(90),
                    )
                    .await;
                if !out.as_ref().is_ok_and(|o| o.ok()) {
                    return self.unknown("the source runs as a standby and could not be stopped to restart it as the primary".into());
                }
            }
            _ => {}
        }
        let out = src
            .run(
                script::UNFENCE,
                "pgshift-unfence",
                &[&src.pgdata],
                None,
                Duration::from_secs(30),
            )
            .await;
        match out {
            Ok(o) if o.ok() => self.step("source_unfenced", json!({})),
            Ok(o) => {
                return self.unknown(format!(
                    "removing the source's fence failed ({})",
                    o.describe()
                ))
            }
            Err(e) => return self.unknown(format!("removing the source's fence failed: {e:#}")),
        }
        if s.role() != Role::Primary {
            if let Err(e) = src.start(self.opts.timeout).await {
                self.journal(
                    "unknown",
                    json!({"primary": "none", "reason": format!("{e:#}")}),
                )?;
                return self.unknown(format!("the source does not start again: {e:#}"));
            }
        }
        self.wait_answering(&src).await;
        let serving = src.sql_state(Duration::from_secs(5)).await == crate::plan::Sql::Primary;
        self.step("source_serving", json!({"confirmed": serving}));
        if restart_target {
            let t = self.target.clone();
            if let Err(e) = t.start(self.opts.timeout).await {
                shared::msg::error_line(&format!(
                    "warning: the target did not start again as a standby: {e:#}"
                ));
            }
        }
        if !serving {
            return self.unknown("the source was started but does not answer as a primary".into());
        }
        self.journal("rolled_back", json!({"primary": "source", "fence": false}))?;
        Ok(Outcome::RolledBack)
    }
}

/// `pg_promote(false)`: Ok(true) when the target is promoted already.
async fn signal_promote(tgt: &Client) -> Result<bool, String> {
    match tokio::time::timeout(
        Duration::from_secs(2),
        tgt.simple_query("SELECT pg_promote(false)"),
    )
    .await
    {
        Ok(Ok(_)) => Ok(false),
        // 55000: "recovery is not in progress": it is promoted already.
        Ok(Err(e)) if e.code().is_some_and(|c| c.code() == "55000") => Ok(true),
        Ok(Err(e)) => Err(shared::pg::one_line(&e)),
        Err(_) => Err("pg_promote got no answer".to_owned()),
    }
}

struct PreChecks {
    target_system_identifier: String,
    received_tli: Option<u32>,
}

enum Promotion {
    Done,
    NotConfirmed(String),
}

fn role_name(r: &Role) -> Value {
    match r {
        Role::Primary => json!("primary"),
        Role::Standby => json!("standby"),
        Role::Down(st) => json!(format!("down ({st})")),
        Role::Unknown(why) => json!(format!("unknown: {}", one_line(why))),
        Role::Transition(why) => json!(format!("in transition: {}", one_line(why))),
    }
}

fn plan_record(p: &Plan) -> Value {
    let (name, why) = match p {
        Plan::Switch => ("switch", None),
        Plan::Resume => (
            "resume",
            Some(
                "the source is stopped cleanly and the target is a standby: the switchover goes on",
            ),
        ),
        Plan::AlreadyPromoted => ("already_promoted", None),
        Plan::Rollback(w) => ("rollback", Some(w.as_str())),
        Plan::StartTarget => ("start_target", None),
        Plan::Refuse(_, w) => ("refuse", Some(w.as_str())),
        Plan::Unknown(w) => ("unknown", Some(w.as_str())),
        Plan::NothingToDo => ("nothing_to_do", None),
        Plan::CannotAbort(w) => ("cannot_abort", Some(w.as_str())),
    };
    let mut v = json!({ "plan": name });
    if let (Some(w), Value::Object(m)) = (why, &mut v) {
        m.insert("reason".into(), w.into());
    }
    v
}
