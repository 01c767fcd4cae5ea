//! `evaluate`: walk-forward backtest scores.

use serde_json::Value;
use window_advisor::synth::TraceKind;

use crate::util::{run, scratch, trace, write_history, MONDAY};

fn eval_of<'a>(recs: &[&'a Value], model: &str) -> &'a Value {
    recs.iter()
        .find(|e| e["model"] == model)
        .unwrap_or_else(|| panic!("no evaluation of {model}"))
}

#[test]
fn a_real_model_ranks_above_random_and_the_baselines_are_all_there() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 4, 3, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 3 * 2016);
    let r = run(&[
        "evaluate",
        "--history",
        h.to_str().unwrap(),
        "--horizon",
        "1d",
        "--every",
        "12h",
    ]);
    r.expect(0);
    let evals = r.of("evaluation");
    let names: Vec<&str> = evals.iter().map(|e| e["model"].as_str().unwrap()).collect();
    for want in [
        "profile",
        "forest",
        "auto",
        "week-slot",
        "last-week",
        "hour-of-week",
        "at-0300",
        "random",
    ] {
        assert!(names.contains(&want), "{want} missing: {}", r.dump());
    }
    // Ranked by p90 regret, 1 first.
    let ranks: Vec<u64> = evals.iter().map(|e| e["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, (1..=evals.len() as u64).collect::<Vec<_>>());
    let profile = eval_of(&evals, "profile");
    let random = eval_of(&evals, "random");
    assert!(
        profile["rank"].as_u64() < random["rank"].as_u64(),
        "{}",
        r.dump()
    );
    assert!(
        profile["p90_regret"].as_f64().unwrap() * 5.0 < random["p90_regret"].as_f64().unwrap(),
        "{}",
        r.dump()
    );
    assert!(profile["hit_rate"].as_f64().unwrap() > random["hit_rate"].as_f64().unwrap());
    assert_eq!(profile["kind"], "model");
    assert_eq!(random["kind"], "baseline");
    // 2 weeks after the first week of training, every 12 hours: 27 origins.
    assert_eq!(profile["origins"], 27, "{}", r.dump());
    let s = r.one("summary");
    assert_eq!(s["origins"], 27);
    assert!(s["best_baseline"].is_string());
    assert!(s["auto_p90_regret"].is_number());
}

#[test]
fn detail_writes_one_backtest_record_per_model_and_origin() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 4, 2, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 2 * 2016);
    let r = run(&[
        "evaluate",
        "--history",
        h.to_str().unwrap(),
        "--horizon",
        "1d",
        "--detail",
    ]);
    r.expect(0);
    let origins = r.one("summary")["origins"].as_u64().unwrap() as usize;
    assert_eq!(origins, 7);
    let bt = r.of("backtest");
    // Six strategies plus auto (seven; eight with the `mstl` feature).
    let strategies = r.of("evaluation").len();
    assert!(strategies >= 7, "{}", r.dump());
    assert_eq!(bt.len(), origins * strategies, "{}", r.dump());
    for b in bt {
        assert!(b["regret"].as_f64().unwrap() >= 0.0);
        assert!(b["chosen_load"].as_f64().unwrap() >= b["best_load"].as_f64().unwrap());
    }
}

#[test]
fn too_short_a_history_for_a_backtest_is_a_data_error() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 4, 1, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 2016);
    let r = run(&["evaluate", "--history", h.to_str().unwrap()]);
    r.expect(65);
    assert!(r.stderr.contains("--min-train"), "{}", r.dump());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.dump());
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn auto_follows_week_slot_unless_another_is_significantly_better() {
    let dir = scratch();
    // A stable weekly pattern: nothing beats week-slot (the slot-of-week mean) by three
    // standard errors, auto follows it and is no worse than the best baseline.
    let t = trace(TraceKind::Seasonal, 6, 5, "UTC", MONDAY);
    let h = write_history(dir.path(), "seasonal.jsonl", &t, 5 * 2016);
    let r = run(&["evaluate", "--history", h.to_str().unwrap()]);
    r.expect(0);
    let s = r.one("summary");
    let evals = r.of("evaluation");
    let mean = |m: &str| num(&eval_of(&evals, m)["mean_regret"]);
    let best_baseline = ["last-week", "hour-of-week", "at-0300", "random"]
        .iter()
        .map(|m| mean(m))
        .fold(f64::INFINITY, f64::min);
    assert!(mean("auto") <= best_baseline, "{}", r.dump());
    let followed = s["auto_followed"].as_object().unwrap();
    assert_eq!(
        followed.keys().collect::<Vec<_>>(),
        ["week-slot"],
        "{}",
        r.dump()
    );

    // A nightly batch job appears three weeks before the end. The models see it (the profile
    // follows the new level within days) but over two weeks of finished origins their
    // advantage is not yet three standard errors: auto still follows the hour-of-week mean
    // and ties it. This is the price of the high bar, which on the real traces of
    // bench/data saves more than it costs (issue 17).
    let t = trace(TraceKind::RegimeShift, 1, 6, "UTC", MONDAY);
    let h = write_history(dir.path(), "shift.jsonl", &t, 6 * 2016);
    let r = run(&["evaluate", "--history", h.to_str().unwrap(), "--detail"]);
    r.expect(0);
    let evals = r.of("evaluation");
    let mean = |m: &str| num(&eval_of(&evals, m)["mean_regret"]);
    assert!(mean("profile") * 2.0 < mean("hour-of-week"), "{}", r.dump());
    assert!(mean("auto") <= mean("hour-of-week"), "{}", r.dump());
    // Every auto backtest record names the candidate it followed, and has its regret.
    let bt = r.of("backtest");
    let autos: Vec<&&Value> = bt.iter().filter(|b| b["model"] == "auto").collect();
    assert!(!autos.is_empty());
    for a in autos {
        let followed = a["followed"].as_str().unwrap();
        let same = bt
            .iter()
            .find(|b| b["model"] == followed && b["origin"] == a["origin"])
            .unwrap();
        assert_eq!(same["regret"], a["regret"], "{}", r.dump());
    }
}
