//! One run of pg-switch: look at both sides, decide ([`crate::plan`]), act, report.
//!
//! [`Run`] holds what every step needs (both sides, the journal, the record writer, the
//! options, the signal flag) and the small helpers they share: records are best effort (the
//! journal, not stdout, is what a later run trusts), journal steps are on disk before their
//! action, hooks run at step boundaries. The steps themselves are in [`crate::switch`] (going
//! forward), [`crate::settle`] (finding out whether a promotion took) and
//! [`crate::rollback`] (back to the source).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use shared::{ErrorKind, Output};

use crate::control::one_line;
use crate::journal::Journal;
use crate::plan::{decide, Mode, Plan, Role, View};
use crate::side::Side;

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
pub(crate) struct Stop {
    pub(crate) kind: ErrorKind,
    pub(crate) why: String,
}

pub(crate) fn stop(kind: ErrorKind, why: impl Into<String>) -> Stop {
    Stop {
        kind,
        why: why.into(),
    }
}

/// The timings and facts a summary reports.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Facts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) downtime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) promote_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stopped_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) writable_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) checkpoint_lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source_timeline: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) new_timeline: Option<u32>,
    pub(crate) promote_signals: u32,
}

/// One run of pg-switch.
pub struct Run {
    pub(crate) source: Side,
    pub(crate) target: Side,
    pub(crate) journal: Journal,
    pub(crate) out: Output,
    pub(crate) opts: Options,
    pub(crate) interrupt: Interrupt,
    pub(crate) facts: Facts,
    /// This run asked for the promotion.
    pub(crate) asked_promotion: bool,
    /// The commands a person should run (for [`Outcome::Unknown`]).
    pub(crate) commands: Vec<String>,
}

pub(crate) fn epoch_ms() -> u64 {
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
    pub(crate) fn say(&mut self, kind: &str, body: Value) {
        let _ = self.out.emit_as(kind, &body);
    }

    pub(crate) fn proof(&mut self, name: &str, ok: bool, mut fields: Value) {
        if let Value::Object(m) = &mut fields {
            m.insert("ok".into(), ok.into());
        }
        let mut body = json!({ "name": name });
        if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
            b.extend(f);
        }
        self.say("proof", body);
    }

    pub(crate) fn step(&mut self, name: &str, fields: Value) {
        let mut body = json!({ "name": name });
        if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
            b.extend(f);
        }
        self.say("step", body);
    }

    pub(crate) fn journal(&mut self, step: &str, fields: Value) -> anyhow::Result<()> {
        let mut f = json!({
            "source": self.source.conninfo.describe(),
            "target": self.target.conninfo.describe(),
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut f, fields) {
            a.extend(b);
        }
        self.journal.switch_step(step, f)
    }

    pub(crate) async fn hook(&mut self, name: &str) -> Result<(), Stop> {
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
    pub(crate) fn hook_beside(&self, name: &str) {
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
    pub(crate) async fn look_settled(&mut self) -> (View, View) {
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

    pub(crate) fn report_look(&mut self, s: &View, t: &View) {
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
    pub(crate) async fn drive(&mut self, mode: Mode) -> anyhow::Result<Outcome> {
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

    pub(crate) fn refuse(&mut self, kind: ErrorKind, why: String) -> anyhow::Result<Outcome> {
        self.journal("refused", json!({"primary": "source", "reason": why}))?;
        let _ = self
            .out
            .error_of_kind(kind, &anyhow::anyhow!("{why}"), json!({"step": "refused"}));
        Ok(Outcome::Refused)
    }

    pub(crate) fn unknown(&mut self, why: String) -> anyhow::Result<Outcome> {
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
    pub(crate) async fn wait_answering(&self, side: &Side) {
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
