//! Back to the source: only once the target is confirmed not promoted (a standby nobody
//! asked to promote, or stopped on its own host with a control file that says so), remove
//! the source's fence and start it.

use std::time::Duration;

use serde_json::json;

use crate::plan::{Role, Sql};
use crate::run::{Outcome, Run};
use crate::side::script;

impl Run {
    pub(crate) async fn rollback_because(&mut self, why: String) -> anyhow::Result<Outcome> {
        shared::msg::error_line(&format!("{why}; rolling back to the source"));
        self.say("error", json!({"kind": "switch_failed", "message": why}));
        self.rollback().await
    }

    /// Make the source the primary again. First make sure the target is not and cannot
    /// become one: a target that nobody asked to promote and that runs as a standby is left
    /// running; otherwise it is stopped on its own host and its control file read.
    pub(crate) async fn rollback(&mut self) -> anyhow::Result<Outcome> {
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

    pub(crate) async fn rollback_source(
        &mut self,
        restart_target: bool,
    ) -> anyhow::Result<Outcome> {
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
        let serving = src.sql_state(Duration::from_secs(5)).await == Sql::Primary;
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
