//! Real load (issue 17): walk-forward on the traces of bench/data, `auto` against every
//! simple baseline by mean regret, on the origins both were scored on.
//!
//! Bounded for CI: scored origins every 3 days on the year-long traces (a third of
//! bench/window-advisor.sh's; auto still learns from daily ones, as `recommend` does), every
//! day on the 12-week one. The committed traces are always
//! there; taylor-2000 is converted by `make setup` (bench/data/fetch-traces.py), so a test
//! that lacks it skips, and fails under `CI=true`. Where auto loses, the loss is listed
//! here with the bench's explanation, and asserted: a change in either direction shows.
//! No loss may be beyond luck: auto's weekly paired t against every baseline is ≤ 2.

use std::path::PathBuf;

use crate::util::run;

/// A trace of bench/data/traces, if converted.
pub fn trace_path(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/data/traces")
        .join(format!("{name}.csv"));
    p.exists().then_some(p)
}

/// One walk-forward: for each baseline, (name, origins both were scored on, auto's mean
/// regret, the baseline's mean regret, auto not worse, the weekly paired t), from the
/// summary's `auto_vs_baselines`.
fn walk(
    name: &str,
    metric: &str,
    tz: &str,
    window: &str,
    every: &str,
) -> Vec<(String, u64, f64, f64, bool, f64)> {
    let Some(path) = trace_path(name) else {
        panic!("{name} is not in bench/data/traces");
    };
    let r = run(&[
        "evaluate",
        "--history",
        path.to_str().unwrap(),
        "--metric",
        metric,
        "--tz",
        tz,
        "--window",
        window,
        "--horizon",
        "7d",
        "--every",
        every,
    ]);
    r.expect(0);
    assert!(
        r.of("evaluation")
            .iter()
            .all(|e| e["origins"].as_u64() > Some(10) || e["model"] == "at-0300"),
        "too few origins: {}",
        r.dump()
    );
    let s = r.one("summary");
    let vs: Vec<(String, u64, f64, f64, bool, f64)> = s["auto_vs_baselines"]
        .as_array()
        .unwrap_or_else(|| panic!("no auto_vs_baselines: {}", r.dump()))
        .iter()
        .map(|v| {
            (
                v["baseline"].as_str().unwrap().to_owned(),
                v["origins"].as_u64().unwrap(),
                v["auto_mean_regret"].as_f64().unwrap(),
                v["baseline_mean_regret"].as_f64().unwrap(),
                v["auto_not_worse"].as_bool().unwrap(),
                v["t_weeks"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no t_weeks: {v}")),
            )
        })
        .collect();
    // The four baselines of the issue, each compared on at least ten origins (at-0300 has
    // none on a trace without nights).
    for b in ["last-week", "hour-of-week", "random"] {
        assert!(
            vs.iter().any(|v| v.0 == b && v.1 > 10),
            "{b} not compared: {}",
            r.dump()
        );
    }
    assert_eq!(
        s["auto_le_baselines"].as_bool(),
        Some(vs.iter().all(|v| v.4)),
        "{}",
        r.dump()
    );
    vs
}

/// Every window of a trace: auto ≤ every baseline on the origins both were scored on,
/// except the `losses` listed, and never worse beyond luck (weekly paired t ≤ 2).
fn check(name: &str, metric: &str, tz: &str, every: &str, losses: &[&str]) {
    let mut lost = Vec::new();
    for w in ["1h", "2h", "4h"] {
        let vs = walk(name, metric, tz, w, every);
        for (b, n, auto, base, ok, t) in &vs {
            eprintln!("{name} {w}: auto {auto:.3}, {b} {base:.3} ({n} origins, t {t})");
            if !ok {
                lost.push(format!("{w} {b}"));
            }
            // Where auto is above a baseline, never by more than luck explains: two
            // standard errors of the weekly paired difference.
            assert!(
                *t <= 2.0,
                "{name} {w}: auto worse than {b} beyond luck (t = {t})"
            );
        }
    }
    assert_eq!(
        lost, losses,
        "{name}: windows where auto lost to a baseline"
    );
}

#[test]
fn real_bikeshare_auto_loses_only_the_4h_window_to_the_hour_of_week_mean_within_luck() {
    // 4 h: week-slot pulls each weekday's night toward the seven nights' mean as far as
    // their differences are noise; here a little of a real difference goes with it. Over
    // these origins 4.06 against 4.03 rentals (weekly paired t +0.6); over the daily ones of
    // bench/window-advisor.sh 3.392 against 3.377, while at 1 h and 2 h the same pull takes
    // auto 7 % and 9 % below the mean.
    check(
        "bikeshare-dc-2011",
        "bikers",
        "America/New_York",
        "3d",
        &["4h hour-of-week"],
    );
}

#[test]
fn real_nyc_departures_auto_loses_only_the_1h_window_to_always_0300_within_luck() {
    // 1 h: at 03:00 there is almost never a departure. The plain slot-of-week mean chose
    // 03:00 on one weekday, so that a single late departure there cost the seven origins
    // that chose the same night (0.054 against always-03:00's 0.031 over the daily origins
    // of bench/window-advisor.sh). week-slot now sees that the weekdays' 03:00 differ by
    // noise only and takes the next night: over the daily origins it ties (0.031); over
    // these, a third of them, 0.042 against 0.034 (weekly paired t +0.4).
    check(
        "nyc-departures-2013",
        "departures",
        "America/New_York",
        "3d",
        &["1h at-0300"],
    );
}

#[test]
fn real_taylor_auto_never_loses_to_a_baseline() {
    let Some(_) = trace_path("taylor-2000") else {
        testkit::skip!("bench/data/traces/taylor-2000.csv is missing (make setup converts it)");
    };
    // Twelve weeks of half-hourly demand whose level moves with the summer: week-slot sees
    // the half-hour the quiet stretch starts (the hour-of-week mean is an hour off at 4 h),
    // and at 2 h auto follows the profile once it is better three weeks running.
    check("taylor-2000", "demand_mw", "Europe/London", "1d", &[]);
}
