//! `recommend` on synthetic traces with known quiet periods.

use serde_json::Value;
use window_advisor::synth::TraceKind;

use crate::util::{epoch, run, scratch, trace, write_history, MONDAY};

/// 5-minute samples per week.
const WEEK: usize = 2016;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn recommended_window_lies_in_the_sunday_night_quiet_period() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 3, 4, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 4 * WEEK);
    let r = run(&[
        "recommend",
        "--history",
        h.to_str().unwrap(),
        "--tz",
        "UTC",
        "--target-cpus",
        "16",
        "--target-mem",
        "64GiB",
    ]);
    r.expect(0);
    let kinds: Vec<&str> = r
        .records
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "history", "{}", r.dump());
    assert_eq!(kinds[kinds.len() - 2], "resources", "{}", r.dump());
    let windows = r.of("window");
    assert_eq!(windows.len(), 3, "{}", r.dump());
    let best = windows[0];
    assert_eq!(best["rank"], 1);
    assert_eq!(best["weekday"], "Sun", "{}", r.dump());
    assert_eq!(best["minutes"], 30);
    // The quiet period of the trace: Sunday 01:00 to 06:00 (minimum around 03:30).
    let start = epoch(best["start"].as_str().unwrap());
    let end = epoch(best["end"].as_str().unwrap());
    let sunday = MONDAY + 4 * 7 * 86_400 + 6 * 86_400;
    assert!(
        start >= sunday + 3600 && end <= sunday + 6 * 3600,
        "{}",
        r.dump()
    );
    // Windows are ranked, do not overlap, and carry a consistent range and advice.
    let mut prev = f64::MIN;
    for w in &windows {
        let (p, lo, hi) = (
            f(&w["predicted_load"]),
            f(&w["predicted_low"]),
            f(&w["predicted_high"]),
        );
        assert!(lo <= p && p <= hi, "{w}");
        assert!(p + 1e-6 >= prev - 5.0, "{w}");
        prev = p;
        assert_eq!(w["model"], r.one("summary")["model"]);
        assert!(w["wal_bytes"].as_u64().unwrap() > 0, "{w}");
        assert!(w["wal_ship_jobs"].as_u64().unwrap() >= 1, "{w}");
        // Base copy (~54 GiB) plus WAL in 30 minutes: some 30 MiB/s.
        let bw = f(&w["bandwidth_bytes_per_s"]);
        assert!(bw > 25e6 && bw < 40e6, "{w}");
    }
    let starts: Vec<i64> = windows
        .iter()
        .map(|w| epoch(w["start"].as_str().unwrap()))
        .collect();
    for (i, a) in starts.iter().enumerate() {
        for b in &starts[i + 1..] {
            assert!((a - b).abs() >= 1800, "overlap: {}", r.dump());
        }
    }
    let res = r.one("resources");
    assert_eq!(res["source_cpus"], 8);
    assert_eq!(res["target_cpus_ok"], true, "{}", r.dump());
    assert_eq!(res["target_mem_ok"], true, "{}", r.dump());
    // The auto model was backtested first.
    assert!(!r.of("evaluation").is_empty(), "{}", r.dump());
    assert!(r.one("summary")["backtest_origins"].as_u64().unwrap() >= 3);
}

#[test]
fn an_undersized_target_is_flagged() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 1, 2, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 2 * WEEK);
    let r = run(&[
        "recommend",
        "--history",
        h.to_str().unwrap(),
        "--model",
        "profile",
        "--target-cpus",
        "2",
        "--target-mem",
        "4GiB",
    ]);
    r.expect(0);
    let res = r.one("resources");
    assert_eq!(res["target_cpus_ok"], false, "{}", r.dump());
    assert_eq!(res["target_mem_ok"], false, "{}", r.dump());
    assert!(res["cpus_needed"].as_u64().unwrap() > 2);
    assert!(r.stderr.contains("CPUs look too few"), "{}", r.dump());
    // Every window says the target is too small, in its record and its advice.
    let windows = r.of("window");
    assert!(!windows.is_empty(), "{}", r.dump());
    for w in windows {
        assert_eq!(w["target_ok"], false);
        assert!(
            w["advice"].as_str().unwrap().contains("too small"),
            "{}",
            r.dump()
        );
        assert_eq!(w["model_reason"], "--model profile");
    }
}

/// The true (noise- and burst-free) mean load of the window starting at `start` (epoch s).
fn expected_window(t: &window_advisor::synth::Trace, start: i64, steps: usize) -> f64 {
    let i = ((start - t.times[0]) / 300) as usize;
    t.expected[i..i + steps].iter().sum::<f64>() / steps as f64
}

#[test]
fn every_kind_of_trace_gets_a_truly_quiet_window() {
    for (kind, seed) in [
        (TraceKind::Holiday, 11),
        (TraceKind::RegimeShift, 12),
        (TraceKind::Bursts, 13),
        (TraceKind::Mixed, 14),
    ] {
        let dir = scratch();
        // Five weeks are generated; the first four are the history, the fifth the truth.
        let t = trace(kind, seed, 5, "UTC", MONDAY);
        let h = write_history(dir.path(), "h.jsonl", &t, 4 * WEEK);
        let r = run(&["recommend", "--history", h.to_str().unwrap(), "--top", "1"]);
        r.expect(0);
        let w = r.one("window");
        let start = epoch(w["start"].as_str().unwrap());
        let got = expected_window(&t, start, 6);
        let week: Vec<f64> = (0..=WEEK - 6)
            .map(|k| expected_window(&t, t.times[4 * WEEK + k], 6))
            .collect();
        let best = week.iter().copied().fold(f64::INFINITY, f64::min);
        let mut sorted = week.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        // Among the quietest 5% of the week's windows (a backtest's `hit`); where nothing
        // changed, close to the very best. After a regime shift auto follows week-slot (the
        // hour-of-week mean at the grid's step) until another candidate is significantly
        // better (issue 17), so there the bar is the hit.
        let q05 = sorted[sorted.len() / 20];
        let shifted = matches!(kind, TraceKind::RegimeShift | TraceKind::Mixed);
        let bar = if shifted {
            q05
        } else {
            best + 0.05 * (median - best)
        };
        assert!(
            got <= bar,
            "{kind:?}: chose a window of true load {got:.1}; best {best:.1}, 5% {q05:.1}, median {median:.1}\n{}",
            r.dump()
        );
        if kind == TraceKind::RegimeShift {
            // The new nightly job (00:30-05:30) is avoided.
            let hour = (start % 86_400) / 3600;
            assert!(!(0..5).contains(&hour), "{}", r.dump());
        }
    }
}

#[test]
fn dst_the_window_follows_local_time_across_the_spring_switch() {
    // A one-hour dip at 04:00 Berlin time every day. Europe/Berlin springs forward on Sunday
    // 2026-03-29 at 02:00: the dip moves from 03:00 UTC to 02:00 UTC.
    let dir = scratch();
    let start = epoch("2026-03-01T23:00:00Z"); // Monday 2026-03-02 00:00 CET
    let t = trace(TraceKind::Dip, 5, 4, "Europe/Berlin", start);
    let h = write_history(dir.path(), "h.jsonl", &t, 3 * WEEK);
    let args = |tz: &'static str| {
        vec![
            "recommend".to_owned(),
            "--history".into(),
            h.to_str().unwrap().into(),
            "--tz".into(),
            tz.into(),
            "--from".into(),
            "2026-03-23T00:00:00+01:00".into(),
            "--top".into(),
            "1".into(),
            "--model".into(),
            "profile".into(),
        ]
    };
    let a = args("Europe/Berlin");
    let r = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.expect(0);
    let w = r.one("window");
    assert_eq!(w["tz"], "Europe/Berlin");
    let local = w["start_local"].as_str().unwrap();
    // Sunday the 29th (the quietest day), inside the dip, after the switch (+02:00).
    assert!(
        local.starts_with("2026-03-29T04:") && local.ends_with("+02:00"),
        "{}",
        r.dump()
    );
    assert!(w["start"].as_str().unwrap().starts_with("2026-03-29T02:"));
    let got = expected_window(&t, epoch(w["start"].as_str().unwrap()), 6);
    assert!(got < 15.0, "{got}: {}", r.dump());

    // Modelled in UTC, the same history puts the dip an hour late after the switch.
    let a = args("UTC");
    let r = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.expect(0);
    let w = r.one("window");
    let got = expected_window(&t, epoch(w["start"].as_str().unwrap()), 6);
    assert!(
        got > 15.0,
        "UTC should miss the dip after DST: {}",
        r.dump()
    );
}

#[test]
fn from_now_plans_ahead_and_models_can_be_forced() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 2, 2, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 2 * WEEK);
    for model in [
        "profile",
        "forest",
        "last-week",
        "hour-of-week",
        "week-slot",
        "at-0300",
        "random",
    ] {
        let r = run(&[
            "recommend",
            "--history",
            h.to_str().unwrap(),
            "--model",
            model,
            "--top",
            "2",
            "--horizon",
            "2d",
        ]);
        r.expect(0);
        assert_eq!(r.of("window").len(), 2, "{}", r.dump());
        assert_eq!(r.one("summary")["model"], model, "{}", r.dump());
        // An old history: the windows would be in the past, and the tool says so.
        assert!(r.stderr.contains("--from now"), "{}", r.dump());
    }
    let r = run(&[
        "recommend",
        "--history",
        h.to_str().unwrap(),
        "--from",
        "now",
    ]);
    r.expect(0);
    let start = epoch(r.of("window")[0]["start"].as_str().unwrap());
    assert!(
        start >= jiff::Timestamp::now().as_second() - 300,
        "{}",
        r.dump()
    );
    // Planned from today on a history that ended long before: said, not silently assumed.
    assert!(
        r.stderr.contains("before --from") && !r.stderr.contains("--from now to plan"),
        "{}",
        r.dump()
    );
}

#[test]
fn a_weekly_job_in_the_quiet_night_is_avoided() {
    let dir = scratch();
    // Where the window goes without a job...
    let plain = trace(TraceKind::Seasonal, 21, 5, "UTC", MONDAY);
    let h = write_history(dir.path(), "plain.jsonl", &plain, 4 * WEEK);
    let r = run(&["recommend", "--history", h.to_str().unwrap(), "--top", "1"]);
    r.expect(0);
    let chosen = epoch(r.one("window")["start"].as_str().unwrap());
    // ... is where a weekly 40-minute job now runs, every Sunday.
    let at = (chosen - MONDAY).rem_euclid(7 * 86_400) - 300;
    let job = |time: i64| (at..at + 2400).contains(&(time - MONDAY).rem_euclid(7 * 86_400));
    let mut t = plain.clone();
    for i in 0..t.times.len() {
        if job(t.times[i]) {
            t.tps[i] += 150.0;
            t.expected[i] += 150.0;
        }
    }
    let h = write_history(dir.path(), "h.jsonl", &t, 4 * WEEK);
    let r = run(&["recommend", "--history", h.to_str().unwrap(), "--top", "1"]);
    r.expect(0);
    let start = epoch(r.one("window")["start"].as_str().unwrap());
    assert!((start..start + 1800).all(|s| !job(s)), "{}", r.dump());
    let got = expected_window(&t, start, 6);
    assert!(
        got < 40.0,
        "chose a window of true load {got:.1}: {}",
        r.dump()
    );
}

#[test]
fn runs_are_deterministic_for_a_seed() {
    let dir = scratch();
    let t = trace(TraceKind::Bursts, 8, 3, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 3 * WEEK);
    let windows = |seed: &str| {
        let r = run(&[
            "recommend",
            "--history",
            h.to_str().unwrap(),
            "--seed",
            seed,
            "--top",
            "5",
        ]);
        r.expect(0);
        r.records
            .iter()
            .filter(|v| v["type"] != "summary")
            .map(Value::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(windows("5"), windows("5"));
}

#[test]
fn auto_follows_another_candidate_only_when_it_is_significantly_better() {
    let args = |name: &str, metric: &str, tz: &str, w: &str| {
        let trace = crate::real::trace_path(name)?;
        Some(
            [
                "recommend",
                "--history",
                trace.to_str().unwrap(),
                "--metric",
                metric,
                "--tz",
                tz,
                "--window",
                w,
                "--top",
                "1",
            ]
            .map(str::to_owned)
            .to_vec(),
        )
    };
    // Flights leaving New York per hour (bench/data), 1-hour windows: always-03:00 had the
    // lower mean regret over the last eight weeks, but from a handful of late departures,
    // not by three standard errors of the weekly differences: the default is kept, and the
    // choice says what it passed over.
    let a = args(
        "nyc-departures-2013",
        "departures",
        "America/New_York",
        "1h",
    )
    .unwrap();
    let r = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.expect(0);
    let c = r.one("choice");
    assert_eq!(
        (c["model"].as_str(), c["reason"].as_str()),
        (Some("week-slot"), Some("default")),
        "{}",
        r.dump()
    );
    assert!(c["t"].is_null());
    assert_eq!(c["weeks"], 8, "{}", r.dump());
    assert_eq!(c["lowest"], "at-0300", "{}", r.dump());
    let why = c["why"].as_str().unwrap();
    assert!(
        why.starts_with("no candidate") && why.contains("at-0300 was lower on average"),
        "{}",
        r.dump()
    );
    assert_eq!(r.one("window")["model"], "week-slot");

    // Electricity demand in England and Wales in the summer of 2000, 2-hour windows: the
    // profile, which follows the level of the last days, chose quieter windows week after
    // week: auto follows it, and says so.
    let Some(a) = args("taylor-2000", "demand_mw", "Europe/London", "2h") else {
        testkit::skip!("bench/data/traces/taylor-2000.csv is missing (make setup converts it)");
    };
    let r = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    r.expect(0);
    let c = r.one("choice");
    assert_eq!(
        (c["model"].as_str(), c["reason"].as_str()),
        (Some("profile"), Some("better")),
        "{}",
        r.dump()
    );
    assert!(f(&c["t"]) < -f(&c["z"]), "{}", r.dump());
    assert!(
        f(&c["mean_regret"]) < f(&c["default_mean_regret"]),
        "{}",
        r.dump()
    );
    assert!(
        c["why"].as_str().unwrap().contains("significantly"),
        "{}",
        r.dump()
    );
    assert_eq!(r.one("summary")["model"], "profile");
    assert_eq!(r.one("window")["model"], "profile");
}

#[test]
fn forecast_covers_the_horizon_and_the_windows_are_its_quietest() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 3, 3, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 3 * WEEK);
    let args = ["recommend", "--history", h.to_str().unwrap(), "--tz", "UTC"];
    let plain = run(&args);
    plain.expect(0);
    assert!(plain.of("forecast").is_empty(), "only with --forecast");
    let r = run(&[&args[..], &["--forecast"]].concat());
    r.expect(0);
    let fc = r.of("forecast");
    // One per 5-minute grid step of the 7-day horizon, from the end of the history.
    assert_eq!(fc.len(), WEEK, "{}", r.dump());
    let history = r.of("history")[0];
    assert_eq!(
        epoch(fc[0]["t"].as_str().unwrap()),
        epoch(history["last"].as_str().unwrap()) + 300
    );
    for pair in fc.windows(2) {
        assert_eq!(
            epoch(pair[1]["t"].as_str().unwrap()) - epoch(pair[0]["t"].as_str().unwrap()),
            300
        );
    }
    for p in &fc {
        assert!(f(&p["low"]) <= f(&p["predicted"]) && f(&p["predicted"]) <= f(&p["high"]));
    }
    // The windows are the same as without --forecast, and the best one's predicted load is
    // the mean of the forecast over it.
    assert_eq!(plain.of("window"), r.of("window"));
    let best = r.of("window")[0];
    let (s, e) = (
        epoch(best["start"].as_str().unwrap()),
        epoch(best["end"].as_str().unwrap()),
    );
    let inside: Vec<f64> = fc
        .iter()
        .filter(|p| (s..e).contains(&epoch(p["t"].as_str().unwrap())))
        .map(|p| f(&p["predicted"]))
        .collect();
    assert_eq!(
        inside.len(),
        6,
        "a 30-minute window holds six 5-minute steps"
    );
    let mean = inside.iter().sum::<f64>() / inside.len() as f64;
    assert!(
        (mean - f(&best["predicted_load"])).abs() < 0.01,
        "{mean} vs {best}"
    );
}

#[test]
fn the_window_says_how_quiet_how_sure_and_what_it_means_for_the_migration() {
    let dir = scratch();
    let t = trace(TraceKind::Seasonal, 3, 3, "UTC", MONDAY);
    let h = write_history(dir.path(), "h.jsonl", &t, 3 * WEEK);
    let h = h.to_str().unwrap();
    let r = run(&[
        "recommend",
        "--history",
        h,
        "--top",
        "1",
        "--target-cpus",
        "16",
        "--target-mem",
        "64GiB",
    ]);
    r.expect(0);
    let w = r.one("window");
    let (load, busy) = (f(&w["predicted_load"]), f(&w["busiest_hour_load"]));
    assert!(busy > 5.0 * load, "{}", r.dump());
    assert!((f(&w["load_vs_busiest"]) - load / busy).abs() < 1e-3);
    assert!(w["busiest_hour_start"].as_str().unwrap().len() >= 16);
    assert_eq!(w["target_ok"], true, "{}", r.dump());
    let advice = w["advice"].as_str().unwrap();
    for want in [
        "80% between",
        "% of the busiest hour",
        "of WAL to ship",
        "needs",
        "big enough",
    ] {
        assert!(advice.contains(want), "{want}: {advice}");
    }
    assert!(
        w["model_reason"]
            .as_str()
            .unwrap()
            .starts_with("--model auto: "),
        "{}",
        r.dump()
    );
}
