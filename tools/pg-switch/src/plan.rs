//! What to do, from what both hosts say: the whole decision of pg-switch, as one pure function.
//!
//! Every run starts by looking at both clusters (SQL first, then the cluster's own host:
//! `pg_controldata` and the signal files, see [`crate::control`]) and classifying each as a
//! [`Role`]. [`decide`] turns the pair, with what the journal remembers, into a [`Plan`]. The
//! same table serves a fresh switchover, a re-run after any interruption, and `--abort`, so an
//! interrupted run converges by running again. Its rules, in the order that matters:
//!
//! - Never two primaries: a source that runs as a primary is only ever stopped, never started,
//!   while the target may be (or become) a primary; a source is started (rollback) only once
//!   the target is confirmed not promoted.
//! - Unknown is not "no": when a host cannot be seen at all, nothing is touched ([`Plan::Unknown`],
//!   exit 126 with the commands to run), unless what can be seen already settles it (the
//!   source still serving and the target unreachable: refuse, nothing changed).
//! - Forward when the proofs allow it: a source already stopped cleanly with a standby target
//!   is a switchover interrupted after its stop, and it is completed ([`Plan::Resume`]), with
//!   the same proofs as a fresh one. Everything else that is not a finished switchover rolls
//!   back to the source.

use shared::ErrorKind;

use crate::control::{ClusterState, HostSeen, Running};

/// What SQL says of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sql {
    /// Connected; `pg_is_in_recovery()` is false.
    Primary,
    /// Connected; in recovery.
    Standby,
    /// Cannot connect or query (the message).
    Down(String),
    /// The server says it is starting up or shutting down (SQLSTATE 57P03).
    Transition(String),
}

/// Everything seen of one cluster.
#[derive(Debug, Clone)]
pub struct View {
    /// Over SQL, from this (the control) host.
    pub sql: Sql,
    /// On its own host, or why that host cannot be reached.
    pub host: Result<HostSeen, String>,
}

/// What a cluster is, for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Runs as a primary (SQL says so, or its host says it runs "in production").
    Primary,
    /// Runs as a standby.
    Standby,
    /// Not running; the control file's state.
    Down(ClusterState),
    /// Cannot be told (the reason).
    Unknown(String),
    /// Starting up or shutting down right now: look again in a moment.
    Transition(String),
}

impl View {
    /// Classify. SQL is believed when it answers; otherwise the host's control file decides.
    pub fn role(&self) -> Role {
        let sql_err = match &self.sql {
            Sql::Primary => return Role::Primary,
            Sql::Standby => return Role::Standby,
            Sql::Down(e) => e,
            Sql::Transition(e) => return Role::Transition(e.clone()),
        };
        match &self.host {
            Err(h) => Role::Unknown(format!("SQL: {sql_err}; its host: {h}")),
            Ok(seen) => match (seen.running, &seen.control.state) {
                (Running::Yes, ClusterState::InProduction) => Role::Primary,
                (Running::Yes, ClusterState::InArchiveRecovery) => Role::Standby,
                (Running::Yes, other) => Role::Transition(format!(
                    "it runs but is in transition ({other}) and SQL fails: {sql_err}"
                )),
                (_, state) => Role::Down(state.clone()),
            },
        }
    }
}

/// What the journal remembers of the switchover in progress (since the last one that ended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// A promotion was asked for (`pg_promote` may have reached the target).
    pub promotion_requested: bool,
    /// The source was seen stopped and fenced.
    pub fence_confirmed: bool,
}

/// Switch, or undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Make the target the primary (or finish doing so).
    Switch,
    /// `--abort`: make the source the primary again, if that is still safe.
    Abort,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Source primary, target standby: the whole switchover.
    Switch,
    /// Source stopped cleanly, target standby: fence (again), prove, promote.
    Resume,
    /// The target is the primary and the source is not: make sure the source is fenced.
    AlreadyPromoted,
    /// Make the source the primary again (why).
    Rollback(String),
    /// The target is stopped and the source does not serve: start the target (it keeps the
    /// role its signal files give it) and look again.
    StartTarget,
    /// Do nothing: the source serves and the switch cannot start (class, why).
    Refuse(ErrorKind, String),
    /// Touch nothing: a human must look (why).
    Unknown(String),
    /// `--abort` with the source serving and the target a standby: nothing to undo.
    NothingToDo,
    /// `--abort` refused: the target was promoted (why).
    CannotAbort(String),
}

/// The decision table (see the module docs). `target_started` is true on the second look,
/// after [`Plan::StartTarget`], so that a target that will not come up is not started again.
pub fn decide(
    mode: Mode,
    source: &Role,
    target: &Role,
    facts: Facts,
    target_started: bool,
) -> Plan {
    use Role::*;
    let target_was_promoted = |t: &Role| matches!(t, Down(st) if st.was_primary());
    match (source, target) {
        // Still in transition when the caller stopped waiting: it cannot be told.
        (Transition(why), _) | (_, Transition(why)) => {
            Plan::Unknown(format!("still in transition: {why}"))
        }
        (Primary, Primary) => Plan::Unknown(
            "both the source and the target run as primaries: decide which one holds the \
             writes to keep before anything else"
                .into(),
        ),
        (Primary, Standby) => match mode {
            Mode::Switch => Plan::Switch,
            Mode::Abort => Plan::NothingToDo,
        },
        (Primary, Unknown(why)) => match mode {
            Mode::Switch => Plan::Refuse(
                ErrorKind::Unavailable,
                format!("cannot see the target ({why}); the source keeps serving, nothing changed"),
            ),
            Mode::Abort => Plan::Unknown(format!(
                "the source serves but the target cannot be seen ({why}): it may have been \
                 promoted"
            )),
        },
        (Primary, t) if target_was_promoted(t) => Plan::Unknown(
            "the source runs as a primary while the target's control file says it was promoted \
             (it is down now): the two histories may have forked"
                .into(),
        ),
        (Primary, Down(_)) => match mode {
            Mode::Switch => Plan::Refuse(
                ErrorKind::Unavailable,
                "the target is not running: start it as a standby of the source first".into(),
            ),
            Mode::Abort => Plan::NothingToDo,
        },
        (_, Primary) => match mode {
            Mode::Abort => Plan::CannotAbort(
                "the target was promoted and may have taken writes since; rolling back would \
                 lose them (to move back, switch over again in the other direction)"
                    .into(),
            ),
            Mode::Switch => match source {
                Unknown(why) if !facts.fence_confirmed => Plan::Unknown(format!(
                    "the target is the primary but the source cannot be seen ({why}) and the \
                     journal never saw it fenced"
                )),
                _ => Plan::AlreadyPromoted,
            },
        },
        (Unknown(why), _) => Plan::Unknown(format!("cannot see the source ({why})")),
        (_, Unknown(why)) => Plan::Unknown(format!(
            "cannot see the target ({why}); the source is not serving, so it may have been \
             promoted: nothing is started"
        )),
        // From here on the source does not serve and the target is a standby or down.
        (_, Down(_)) if !target_started => Plan::StartTarget,
        (_, t) if target_was_promoted(t) => Plan::Unknown(
            "the target was promoted but does not start: start it by hand and run again".into(),
        ),
        (Down(ClusterState::ShutDown), Standby) if mode == Mode::Switch => Plan::Resume,
        (Down(ClusterState::ShutDown), _) => {
            Plan::Rollback("asked to abort, or the target is not running".into())
        }
        (Down(st), _) => Plan::Rollback(format!(
            "the source is down but not cleanly shut down as a primary ({st}): there is no \
             proof of its final checkpoint"
        )),
        (Standby, _) => Plan::Rollback(
            "the fenced source was started as a standby while the target was not promoted".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClusterState::*;
    use Role::*;

    fn d(mode: Mode, s: Role, t: Role) -> Plan {
        decide(mode, &s, &t, Facts::default(), false)
    }

    #[test]
    fn a_fresh_switch_and_its_refusals() {
        assert_eq!(d(Mode::Switch, Primary, Standby), Plan::Switch);
        assert!(matches!(
            d(Mode::Switch, Primary, Unknown("x".into())),
            Plan::Refuse(ErrorKind::Unavailable, _)
        ));
        assert!(matches!(
            d(Mode::Switch, Primary, Down(ShutDownInRecovery)),
            Plan::Refuse(..)
        ));
    }

    #[test]
    fn never_two_primaries() {
        for mode in [Mode::Switch, Mode::Abort] {
            assert!(matches!(d(mode, Primary, Primary), Plan::Unknown(_)));
            assert!(matches!(d(mode, Primary, Down(ShutDown)), Plan::Unknown(_)));
            assert!(matches!(
                d(mode, Primary, Down(InProduction)),
                Plan::Unknown(_)
            ));
        }
        // Whatever the source is, a promoted target is never rolled back.
        for s in [
            Down(ShutDown),
            Down(InProduction),
            Standby,
            Down(ShutDownInRecovery),
        ] {
            assert_eq!(d(Mode::Switch, s.clone(), Primary), Plan::AlreadyPromoted);
            assert!(matches!(d(Mode::Abort, s, Primary), Plan::CannotAbort(_)));
        }
    }

    #[test]
    fn unknown_touches_nothing() {
        let u = || Unknown("no route".into());
        for s in [Down(ShutDown), Standby, Down(InProduction)] {
            for mode in [Mode::Switch, Mode::Abort] {
                assert!(matches!(d(mode, s.clone(), u()), Plan::Unknown(_)), "{s:?}");
            }
        }
        assert!(matches!(d(Mode::Switch, u(), Standby), Plan::Unknown(_)));
        assert!(matches!(d(Mode::Switch, u(), Primary), Plan::Unknown(_)));
        let fenced = Facts {
            fence_confirmed: true,
            ..Facts::default()
        };
        assert_eq!(
            decide(Mode::Switch, &u(), &Primary, fenced, false),
            Plan::AlreadyPromoted
        );
        assert!(matches!(d(Mode::Abort, Primary, u()), Plan::Unknown(_)));
    }

    #[test]
    fn an_interrupted_switch_goes_forward_only_with_a_clean_stop() {
        assert_eq!(d(Mode::Switch, Down(ShutDown), Standby), Plan::Resume);
        for s in [
            Down(InProduction),
            Down(ShutDownInRecovery),
            Down(InArchiveRecovery),
            Standby,
        ] {
            assert!(matches!(d(Mode::Switch, s, Standby), Plan::Rollback(_)));
        }
        assert!(matches!(
            d(Mode::Abort, Down(ShutDown), Standby),
            Plan::Rollback(_)
        ));
        assert_eq!(d(Mode::Abort, Primary, Standby), Plan::NothingToDo);
    }

    #[test]
    fn a_transition_that_does_not_settle_is_unknown() {
        let t = || Transition("shutting down".into());
        assert!(matches!(d(Mode::Switch, t(), Standby), Plan::Unknown(_)));
        assert!(matches!(
            d(Mode::Switch, Down(ShutDown), t()),
            Plan::Unknown(_)
        ));
    }

    #[test]
    fn a_stopped_target_is_started_once_then_judged() {
        assert_eq!(
            d(Mode::Switch, Down(ShutDown), Down(ShutDownInRecovery)),
            Plan::StartTarget
        );
        let second = |s: Role, t: Role| decide(Mode::Switch, &s, &t, Facts::default(), true);
        assert!(matches!(
            second(Down(ShutDown), Down(ShutDownInRecovery)),
            Plan::Rollback(_)
        ));
        assert!(matches!(
            second(Down(ShutDown), Down(ShutDown)),
            Plan::Unknown(_)
        ));
    }
}
