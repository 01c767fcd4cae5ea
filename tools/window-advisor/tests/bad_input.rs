//! Untidy and broken histories: repaired with a warning where a DBA would expect it, refused
//! with one clear line (exit 65) otherwise, never a panic.

use rand::{Rng, SeedableRng};
use window_advisor::synth::TraceKind;

use crate::util::{run, run_stdin, scratch, trace, MONDAY};

/// A CSV history from a trace: `time,tps,cpu_pct` rows.
fn csv_rows(kind: TraceKind, weeks: usize) -> Vec<String> {
    let t = trace(kind, 9, weeks, "UTC", MONDAY);
    t.times
        .iter()
        .zip(&t.tps)
        .map(|(time, tps)| format!("{time},{tps:.2},{:.1}", 5.0 + tps / 10.0))
        .collect()
}

fn csv(rows: &[String]) -> String {
    let mut s = String::from("time,tps,cpu_pct\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

fn recommend_csv(text: String) -> crate::util::Run {
    run_stdin(
        &[
            "recommend",
            "--history",
            "-",
            "--format",
            "csv",
            "--model",
            "profile",
        ],
        text,
    )
}

#[test]
fn unsorted_and_duplicate_rows_are_sorted_and_merged() {
    let mut rows = csv_rows(TraceKind::Seasonal, 2);
    rows.swap(100, 200);
    rows.swap(1000, 1500);
    let dup = rows[300].clone();
    rows.insert(301, dup);
    let r = recommend_csv(csv(&rows));
    r.expect(0);
    let h = r.one("history");
    assert_eq!(h["duplicates"], 1, "{}", r.dump());
    assert!(h["unsorted"].as_u64().unwrap() >= 2, "{}", r.dump());
    assert!(r.stderr.contains("not in time order"), "{}", r.dump());
    assert!(r.stderr.contains("duplicate timestamp"), "{}", r.dump());
    assert_eq!(r.of("window").len(), 3);
}

#[test]
fn gaps_are_reported_and_left_out() {
    let mut rows = csv_rows(TraceKind::Seasonal, 2);
    rows.drain(500..800); // 25 hours missing
    let r = recommend_csv(csv(&rows));
    r.expect(0);
    let h = r.one("history");
    assert_eq!(h["gaps"], 1, "{}", r.dump());
    assert_eq!(h["longest_gap_s"], 301.0 * 300.0, "{}", r.dump());
    assert!(h["missing_pct"].as_f64().unwrap() > 5.0);
    assert!(
        r.stderr.contains("1 gap (the longest 1d 1h)"),
        "{}",
        r.dump()
    );
}

#[test]
fn less_than_a_week_falls_back_to_the_time_of_day_profile() {
    let rows = csv_rows(TraceKind::Seasonal, 1);
    let r = run_stdin(
        &[
            "recommend",
            "--history",
            "-",
            "--format",
            "csv",
            "--model",
            "forest",
        ],
        csv(&rows[..3 * 288]),
    );
    r.expect(0);
    assert!(r.stderr.contains("less than a week"), "{}", r.dump());
    assert!(r.stderr.contains("using the profile"), "{}", r.dump());
    assert_eq!(r.one("summary")["model"], "profile");
    // The night is still the quiet time of day.
    let w = r.of("window")[0];
    let hour: u32 = w["start"].as_str().unwrap()[11..13].parse().unwrap();
    assert!((1..6).contains(&hour), "{}", r.dump());
}

#[test]
fn a_non_numeric_metric_is_one_clear_line() {
    let mut rows = csv_rows(TraceKind::Seasonal, 1);
    let parts: Vec<String> = rows[41].split(',').map(String::from).collect();
    rows[41] = format!("{},lots,{}", parts[0], parts[2]);
    let r = recommend_csv(csv(&rows));
    r.expect(65);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.dump());
    assert!(
        r.stderr.contains("line 43: tps is 'lots', not a number"),
        "{}",
        r.dump()
    );
    // The same cell in a column that is not modelled is harmless.
    let mut rows = csv_rows(TraceKind::Seasonal, 1);
    let parts: Vec<String> = rows[41].split(',').map(String::from).collect();
    rows[41] = format!("{},{},n/a?", parts[0], parts[1]);
    recommend_csv(csv(&rows)).expect(0);
}

#[test]
fn mixed_intervals_are_resampled() {
    // One week of 5-minute samples, then one of 1-minute samples.
    let t = trace(TraceKind::Seasonal, 9, 2, "UTC", MONDAY);
    let mut text = String::from("t,tps\n");
    for (i, (time, tps)) in t.times.iter().zip(&t.tps).enumerate() {
        text.push_str(&format!("{time},{tps}\n"));
        if i >= 2016 {
            for k in 1..5 {
                text.push_str(&format!("{},{tps}\n", time + 60 * k));
            }
        }
    }
    let r = recommend_csv(text);
    r.expect(0);
    assert_eq!(r.one("history")["mixed_intervals"], true, "{}", r.dump());
    assert_eq!(r.one("history")["step_s"], 300);
    assert!(r.stderr.contains("sampling intervals vary"), "{}", r.dump());
}

#[test]
fn empty_and_unusable_histories_are_data_errors() {
    let dir = scratch();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    for (args, stdin, needle) in [
        (vec!["--history", empty.to_str().unwrap()], "", "no samples"),
        (vec!["--history", "-"], "{\"type\":\"summary\"}\n", "no samples"),
        (vec!["--history", "-"], "{not json\n", "line 1: not JSON"),
        (
            vec!["--history", "-", "--format", "csv"],
            "when,tps\n1,2\n",
            "no time column",
        ),
        (
            vec!["--history", "-"],
            "{\"type\":\"sample\",\"t\":\"2026-01-05T00:00:00Z\",\"tps\":1}\n{\"type\":\"sample\",\"t\":\"2026-01-05T00:01:00Z\",\"tps\":1}\n",
            "less than one 30m window",
        ),
        (
            vec!["--history", "-", "--metric", "qps"],
            "{\"type\":\"sample\",\"t\":\"2026-01-05T00:00:00Z\",\"tps\":1}\n",
            "no metric 'qps' (it has: tps)",
        ),
    ] {
        let mut a = vec!["recommend"];
        a.extend(args);
        let r = run_stdin(&a, stdin);
        r.expect(65);
        assert!(r.stderr.contains(needle), "{needle}: {}", r.dump());
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.dump());
    }
    let r = run(&["recommend", "--history", "/nonexistent/h.jsonl"]);
    r.expect(74);
    assert!(r.stderr.contains("/nonexistent/h.jsonl"), "{}", r.dump());
}

#[test]
fn bad_arguments_are_usage_errors() {
    let rows = csv_rows(TraceKind::Seasonal, 1);
    for (extra, needle) in [
        (vec!["--window", "1m"], "shorter than the 5m grid step"),
        (vec!["--horizon", "10m"], "shorter than --window"),
        (vec!["--step", "90s"], "whole minutes"),
        (vec!["--tz", "Mars/Base"], "unknown time zone 'Mars/Base'"),
        (vec!["--target-mem", "lots"], "not a size"),
        (vec!["--top", "0"], "--top"),
    ] {
        let mut a = vec!["recommend", "--history", "-", "--format", "csv"];
        a.extend(extra);
        let r = run_stdin(&a, csv(&rows));
        r.expect(2);
        assert!(r.stderr.contains(needle), "{needle}: {}", r.dump());
    }
}

/// Random garbage of several shapes: the tool answers 0 or 65 with one line, never panics
/// (`util::finished` checks for a panic message).
#[test]
fn garbage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let good: Vec<String> = csv_rows(TraceKind::Seasonal, 1)[..600].to_vec();
    for case in 0..40 {
        let text = match case % 5 {
            // Random bytes (not UTF-8, or control characters).
            0 => {
                let n = rng.gen_range(0..400);
                (0..n).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>()
            }
            // A good CSV with random cells overwritten.
            1 => {
                let mut rows = good.clone();
                for _ in 0..rng.gen_range(1..20) {
                    let i = rng.gen_range(0..rows.len());
                    let junk = [
                        "", "NaN", "-1e309", "x", "1e400", "0x10", "\"", ",,,", "inf",
                    ];
                    rows[i] = format!(
                        "{},{}",
                        rows[i].split(',').next().unwrap(),
                        junk[rng.gen_range(0..junk.len())]
                    );
                }
                csv(&rows).into_bytes()
            }
            // JSON records with random fields and types.
            2 => {
                let mut s = String::new();
                for _ in 0..rng.gen_range(1..200) {
                    let t: i64 = rng.gen_range(-10..2_000_000_000);
                    let v = match rng.gen_range(0..5) {
                        0 => "null".to_owned(),
                        1 => format!("\"{}\"", rng.gen::<u16>()),
                        2 => format!("{}", rng.gen::<f64>() * 1e6),
                        3 => "[1,2]".to_owned(),
                        _ => format!("{}", rng.gen::<i64>()),
                    };
                    let kind = ["sample", "tick", "summary", "x"][rng.gen_range(0..4)];
                    s.push_str(&format!("{{\"type\":\"{kind}\",\"t\":{t},\"tps\":{v}}}\n"));
                }
                s.into_bytes()
            }
            // Truncated JSON lines.
            3 => {
                let line = "{\"type\":\"sample\",\"t\":\"2026-01-05T00:00:00Z\",\"tps\":1}\n";
                let cut = rng.gen_range(0..line.len());
                format!("{line}{}", &line[..cut]).into_bytes()
            }
            // Timestamps all equal, or all over the place.
            _ => {
                let mut rows = String::from("t,tps\n");
                for _ in 0..rng.gen_range(1..3000) {
                    let t = if rng.gen_bool(0.5) {
                        1_767_571_200
                    } else {
                        rng.gen_range(0..4_000_000_000i64)
                    };
                    rows.push_str(&format!("{t},{}\n", rng.gen_range(0.0..100.0)));
                }
                rows.into_bytes()
            }
        };
        for cmd in ["recommend", "evaluate"] {
            let r = run_stdin(&[cmd, "--history", "-", "--horizon", "1d"], text.clone());
            assert!(r.code == 0 || r.code == 65, "case {case}: {}", r.dump());
            if r.code == 65 {
                let errors: Vec<&str> = r
                    .stderr
                    .lines()
                    .filter(|l| !l.contains("warning:"))
                    .collect();
                assert_eq!(errors.len(), 1, "case {case}: {}", r.dump());
            }
        }
    }
}
