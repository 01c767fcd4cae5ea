//! The whole move, step by step, under writes, there and back: every acknowledged write on
//! the final primary, sequences equal, the data equal at each fence, never two sides that take
//! the application's writes.

use crate::pair::*;

#[test]
fn a_move_there_and_back_under_writes_keeps_every_acknowledged_row() {
    let p = Pair::new(None);
    let writer = Writer::start(&p.source, &p.target);
    writer.wait_for_more(20);

    // The table without a key is refused, naming it and the fix; nothing is changed.
    let r = p.step("check", &[]);
    assert_eq!(r.code, 65, "{}", r.dump());
    let refused: Vec<_> = r
        .of("check")
        .into_iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(refused.len(), 1, "{}", r.dump());
    assert_eq!(refused[0]["name"], "replica_identity");
    assert_eq!(refused[0]["objects"][0], "public.audit");
    assert!(r.stderr.contains("--replica-identity-full"), "{}", r.dump());
    let fix = ["--replica-identity-full", "audit"];
    let r = p.step("check", &fix);
    assert_eq!(r.code, 0, "{}", r.dump());

    let r = p.step("setup", &fix);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.summary()["state"], "copying");
    // Until the cutover, the application cannot log in to the target.
    assert!(!Pair::app_logs_in(&p.target), "the target must be fenced");
    let r = p.step("wait", &["--until", "caught-up", "--interval", "1s"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(p.state(), "replicating");

    let before = writer.count();
    let r = p.step("fence", &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(
        proofs(&r),
        [
            "schema_unchanged",
            "source_fenced",
            "fenced_lsn",
            "slot_confirmed",
            "sentinel",
            "no_client_sessions",
            "sequences",
            "schema_unchanged"
        ],
        "{}",
        r.dump()
    );
    assert!(r.of("proof").iter().all(|p| p["ok"] == true));
    assert_eq!(p.open_sides(), 0, "fenced: neither side takes writes");
    assert_eq!(p.state(), "fenced");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let fenced = writer.count();
    assert!(fenced >= before);
    // Both frozen: equal, sequences included.
    let (code, s) = checksum(&p.source, &p.target);
    assert_eq!(code, 0, "{s}");
    for seq in ["tickets", "items_id_seq", "events_id_seq", "counters"] {
        let q = format!("SELECT last_value || ' ' || is_called FROM {seq}");
        assert_eq!(p.source.psql("app", &q), p.target.psql("app", &q), "{seq}");
    }
    assert_eq!(writer.count(), fenced, "no write while fenced");

    let r = p.step("open", &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let open = r.one("open");
    assert!(open["downtime_ms"].as_u64().is_some(), "{open}");
    assert!(Pair::app_logs_in(&p.target) && !Pair::app_logs_in(&p.source));
    assert_eq!(p.state(), "open");
    assert_eq!(p.step("status", &[]).summary()["reverse"], true);
    writer.wait_for_more(50);
    // The old source follows: the writes on the target reach it.
    let r = p.reversed_step("wait", &["--until", "caught-up", "--interval", "1s"]);
    assert_eq!(r.code, 0, "{}", r.dump());

    // And back, the same steps the other way: nothing is copied again.
    let r = p.reversed_step("setup", &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert_eq!(r.summary()["state"], "replicating", "{}", r.dump());
    for step in ["fence", "open"] {
        let r = p.reversed_step(step, &[]);
        assert_eq!(
            r.code,
            0,
            "{step}: {}\njournal:\n{}",
            r.dump(),
            std::fs::read_to_string(p.journal()).unwrap()
        );
    }
    assert!(Pair::app_logs_in(&p.source) && !Pair::app_logs_in(&p.target));
    writer.wait_for_more(20);
    let n = writer.stop_and_check(&p.source);
    assert!(n > 100, "{n} writes");
    // The way back of the move back is the first direction's subscription again: the target
    // follows the source, and has every row.
    let r = p.step("wait", &["--until", "caught-up", "--interval", "1s"]);
    assert_eq!(r.code, 0, "{}", r.dump());
    let r = p.reversed_step("wait", &["--until", "caught-up"]);
    assert_eq!(r.code, 65, "nothing subscribes the other way: {}", r.dump());
    let q = "SELECT count(*), sum(qty) FROM items";
    assert_eq!(p.source.psql("app", q), p.target.psql("app", q));

    // finish: nothing of pgshift's is left but the fence of the old side.
    let r = p.reversed_step("finish", &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
    for c in [&p.source, &p.target] {
        assert_eq!(
            c.psql(
                "app",
                "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_subscription)
                      + (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift')"
            ),
            "0"
        );
    }
}
