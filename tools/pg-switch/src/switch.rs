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

use std::time::{Duration, Instant};

use serde_json::json;
use shared::ErrorKind;
use tokio_postgres::types::PgLsn;
use tokio_postgres::Client;

use crate::control::{ClusterState, Control};
use crate::run::{epoch_ms, stop, Outcome, Run, Stop};
use crate::side::script;

impl Run {
    pub(crate) async fn switch(&mut self, fresh: bool) -> anyhow::Result<Outcome> {
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
        retry_interval(&tgt, "ALTER SYSTEM RESET wal_retrieve_retry_interval").await;
        Ok(Outcome::Promoted)
    }

    pub(crate) async fn pre_checks(
        &mut self,
        fresh: bool,
        tgt: &Client,
    ) -> Result<PreChecks, Stop> {
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
        retry_interval(tgt, "ALTER SYSTEM SET wal_retrieve_retry_interval = '50ms'").await;
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
    pub(crate) async fn stop_source(&mut self) -> Result<Control, Stop> {
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
                let (head, control) = out.stdout.split_once("---\n").unwrap_or(("", ""));
                // The script prints "fenced" only once standby.signal and the conninfo are
                // on disk.
                let fenced = head.lines().any(|l| l == "fenced");
                self.proof(
                    "old_source_fenced",
                    fenced,
                    json!({"standby_signal": fenced, "stop": head.lines().nth(1)}),
                );
                if !fenced {
                    return Err(stop(
                        ErrorKind::Internal,
                        format!("the stop call did not report the fence: {}", out.describe()),
                    ));
                }
                return Control::parse(control).map_err(|e| {
                    stop(
                        ErrorKind::Internal,
                        format!("stopping the source: {e}: {}", out.describe()),
                    )
                });
            }
            last = out.describe();
            if matches!(out.code, Some(4 | 7)) {
                // The script stops only once the fence is on disk: it was not, so the source
                // was not stopped either.
                self.proof(
                    "old_source_fenced",
                    false,
                    json!({"standby_signal": false, "reason": last}),
                );
                return Err(stop(
                    ErrorKind::Io,
                    format!(
                        "writing the fence on the source failed, so it was not stopped: {last}"
                    ),
                ));
            }
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

    pub(crate) async fn ship_last_segment(&mut self, control: &Control) -> Result<(), Stop> {
        let Some((wal_ship, archive)) = self.opts.archive.clone() else {
            return Ok(());
        };
        // Under NAME.partial, as PostgreSQL names the last segment of a timeline: if the
        // switch is rolled back, the source goes on writing that segment and archives it
        // whole under NAME later, which a copy of this one under NAME would refuse for ever
        // (an archive never overwrites). The target's restore_command takes the partial one
        // (wal-ship fetch --or-partial) while NAME is not there.
        let seg = control.checkpoint_segment();
        let path = format!("{}/pg_wal/{seg}", self.source.pgdata);
        let out = self
            .source
            .run(
                r#"exec "$@""#,
                "pgshift-ship",
                &[
                    &wal_ship,
                    "push",
                    &path,
                    "--as-partial",
                    "--to",
                    &archive,
                    "--quiet",
                ],
                None,
                self.opts.timeout,
            )
            .await
            .map_err(|e| stop(ErrorKind::Io, format!("{e:#}")))?;
        let ok = out.ok();
        self.proof(
            "last_segment_shipped",
            ok,
            json!({"segment": seg, "stored_as": format!("{seg}.partial")}),
        );
        if ok {
            Ok(())
        } else {
            Err(stop(
                ErrorKind::Io,
                format!("shipping the last segment {seg} failed: {}", out.describe()),
            ))
        }
    }

    pub(crate) async fn replay_proof(
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
                          WHERE name ~ '^[0-9A-F]{8}\\.history$'), \
                        current_setting('wal_retrieve_retry_interval')",
                &[],
            ),
        )
        .await;
        let (live, restartpoint, newest_history, retry_interval) = match row {
            Ok(Ok(r)) => (
                r.get::<_, Option<i32>>(0).map(|v| v as u32),
                r.get::<_, Option<i32>>(1).map(|v| v as u32),
                r.get::<_, Option<i32>>(2).map(|v| v as u32),
                r.get::<_, String>(3),
            ),
            _ => return self.replay_failed(x, replayed, "the target does not answer"),
        };
        // The guard against PostgreSQL 15 sitting out a WAL-source retry interval before it
        // acts on a promotion: what the target runs with now (lowered for the switch), and
        // the re-signal period.
        self.step(
            "promotion_guard",
            json!({"wal_retrieve_retry_interval": retry_interval, "resignal_every_ms": RESIGNAL_MS}),
        );
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

    pub(crate) fn replay_failed(
        &mut self,
        x: PgLsn,
        replayed: Option<PgLsn>,
        why: &str,
    ) -> Result<(), Stop> {
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

    pub(crate) async fn promote(&mut self, tgt: &Client) -> Promotion {
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
            if signalled.elapsed() >= Duration::from_millis(RESIGNAL_MS) {
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
    pub(crate) async fn first_write(
        &mut self,
        tgt: &Client,
        after: Option<u32>,
    ) -> Result<u32, Stop> {
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
}

/// Set (or reset) the target's wal_retrieve_retry_interval and reload. ALTER SYSTEM cannot
/// share a query string with anything else (it would run in a transaction block). A failure
/// only weakens the promotion guard: it is reported, and the switch goes on.
async fn retry_interval(tgt: &Client, alter: &str) {
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        tgt.batch_execute(alter).await?;
        tgt.batch_execute("SELECT pg_reload_conf()").await
    })
    .await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => shared::msg::error_line(&format!(
            "warning: {alter} on the target failed: {}",
            shared::pg::one_line(&e)
        )),
        Err(_) => shared::msg::error_line(&format!("warning: {alter} on the target timed out")),
    }
}

/// While the target still is in recovery after pg_promote, ask again this often.
const RESIGNAL_MS: u64 = 250;

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

pub(crate) struct PreChecks {
    target_system_identifier: String,
    received_tli: Option<u32>,
}

pub(crate) enum Promotion {
    Done,
    NotConfirmed(String),
}
