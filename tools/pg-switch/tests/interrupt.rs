//! pg-switch interrupted at every step — SIGKILL (nothing runs after it: the control host
//! died) and SIGTERM (it stops at the next safe point) — then the same command again. Every
//! time: never two primaries, a stopped old primary is always fenced, and the re-run ends
//! with the target as the only primary and every write there.

use crate::common::*;

/// The steps, with the fault injection that makes the during_* ones last long enough for the
/// signal to land inside them.
const POINTS: &[(&str, &str, &str)] = &[
    ("before_stop", "", ""),
    ("during_stop", "PGSHIFT_TEST_STOP_DELAY_MS", "1500"),
    ("after_stop", "", ""),
    ("before_promote", "", ""),
    ("during_promote", "PGSHIFT_TEST_PROMOTE_DELAY_MS", "1500"),
    ("after_promote", "", ""),
];

/// What a SIGTERM at each point must end in (outcome, exit code).
fn after_term(point: &str) -> (&'static str, i32) {
    match point {
        "before_stop" => ("refused", 75),
        "during_stop" | "after_stop" | "before_promote" => ("rolled_back", 1),
        _ => ("promoted", 0),
    }
}

#[test]
fn interrupted_at_every_step_a_rerun_converges() {
    let mut pair = Pair::new();
    let mut writes = 0;
    for sig in ["KILL", "TERM"] {
        for &(point, var, ms) in POINTS {
            pair.write_and_sync();
            writes += 1;
            let a_is_primary = in_recovery(&pair.a) == Some(false);
            let (from, to) = if a_is_primary {
                (&pair.a, &pair.b)
            } else {
                (&pair.b, &pair.a)
            };
            // $PPID of the hook's shell is pg-switch. During hooks run beside their step: they
            // wait a little so the signal lands inside it.
            let pause = if point.starts_with("during") {
                "sleep 0.5; "
            } else {
                ""
            };
            let hook = format!("{point}={pause}kill -{sig} $PPID; sleep 0.3");
            let env: Vec<(&str, &str)> = if var.is_empty() {
                vec![]
            } else {
                vec![(var, ms)]
            };
            let what = format!("SIG{sig} at {point}");
            let r = pair.switch(from, to, &["--hook", &hook], &env);
            if sig == "TERM" {
                let (outcome, code) = after_term(point);
                assert_eq!(r.code, code, "{what}\n{}", r.dump());
                assert_eq!(r.summary()["outcome"], outcome, "{what}");
                assert_eq!(r.summary()["stopped_by"], "SIGTERM", "{what}");
            } else {
                assert_eq!(r.code, -1, "{what}: killed\n{}", r.dump());
            }
            assert!(pair.primaries() <= 1, "{what}: two primaries");
            if !running(from) {
                assert!(
                    from.data_dir().join("standby.signal").exists(),
                    "{what}: the stopped old primary is not fenced"
                );
            }

            let again = pair.switch(from, to, &[], &[]);
            assert_eq!(
                again.code,
                0,
                "{what}, then again:\n{}\nfirst run:\n{}",
                again.dump(),
                r.dump()
            );
            assert_eq!(
                in_recovery(to),
                Some(false),
                "{what}: the target is the primary"
            );
            assert!(
                fenced_towards(from, to),
                "{what}: the old primary is fenced"
            );
            assert_eq!(pair.primaries(), 1, "{what}");
            assert_eq!(
                to.psql("postgres", "SELECT count(*) FROM acked"),
                writes.to_string(),
                "{what}: a write is missing on the new primary"
            );
            if a_is_primary {
                Pair::restart_as_standby(&mut pair.a, &pair.b);
            } else {
                Pair::restart_as_standby(&mut pair.b, &pair.a);
            }
        }
    }
}
