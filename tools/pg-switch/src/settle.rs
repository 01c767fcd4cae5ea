//! After a promotion was asked for and not confirmed, and when the target is the primary
//! already: find out from a fresh session and then from the target's own host whether it
//! took, make sure the source is fenced, and prove the target's history left the source's
//! timeline only after the source's final checkpoint.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::ErrorKind;
use tokio_postgres::types::PgLsn;
use tokio_postgres::Client;

use crate::control::{ClusterState, Control};
use crate::plan::{Role, Sql, View};
use crate::run::{stop, Outcome, Run, Stop};
use crate::side::script;

impl Run {
    /// After a promotion was asked for and not confirmed: find out, from a fresh session and
    /// then from the target's own host, whether it took. Promoted: finish. Confirmed not:
    /// roll back. Otherwise: unknown, touch nothing.
    pub(crate) async fn settle_promotion(
        &mut self,
        why: String,
        wait: Duration,
    ) -> anyhow::Result<Outcome> {
        shared::msg::error_line(&format!(
            "the promotion is not confirmed ({why}); finding out"
        ));
        let deadline = Instant::now() + wait;
        loop {
            match self.target.sql_state(Duration::from_secs(2)).await {
                Sql::Primary => {
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

    pub(crate) async fn already_promoted(&mut self, s: &View) -> anyhow::Result<Outcome> {
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

    pub(crate) async fn history_proof(&mut self, tgt: &Client, c: &Control) -> Result<(), Stop> {
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
}
