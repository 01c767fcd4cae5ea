//! `week-slot`, the default of `--model auto`: the mean of each slot of the week, each
//! weekday's pulled toward the seven weekdays' mean at that time of day as far as their
//! differences are noise.
//!
//! The slot is the grid's step when that is 30 minutes or more, and the hour on finer grids.
//! On an hourly grid this is the hour-of-week mean, but for the pull. On a half-hourly grid a
//! quiet stretch from 02:30 to 06:30 is seen as such rather than rounded to whole hours: the
//! hour-of-week mean chose a window an hour off on taylor-2000 (4 h) at 4.6 times the regret,
//! and half-hour slots do better on vic-elec-2014 too. On a 5-minute grid a half-hour slot
//! averages 6 samples a week where the hour averages 12: on the synthetic suite that cost
//! 7% at p90 and on bank-calls-2003 it gained nothing, so finer grids keep the hour. A slot
//! without data takes its hour of the week's mean, then the mean of all data, as the
//! hour-of-week mean does.
//!
//! The pull (empirical Bayes, as James and Stein): at each time of day the seven weekdays'
//! means differ by what truly differs between the days (a weekend) and by noise (one late
//! departure on a Tuesday at 03:00). Their noise is measured on each sample's difference from
//! its own week's mean at that time of day, so that a season moving all days alike is not
//! counted; the spread between days beyond that noise is what is real. Each weekday keeps
//! the share `real / (real + its noise)` of its difference from the seven days' mean. Where
//! the days differ for real (weekday and weekend demand) the share is 1 and nothing changes;
//! where they do not, the time of day decides and the soonest such window is taken, not the
//! weekday that happened to be lowest so far. Measured (bench/window-advisor.sh, mean regret
//! of auto): nyc-departures-2013 0.054 → 0.031 at 1 h and 0.102 → 0.058 at 2 h,
//! mpls-stops-2017 −4 % to −12 %, bikeshare-dc-2011 −7 % and −9 % at 1 h and 2 h; the cost,
//! vic-elec-2014 at 1 h 0.040 → 0.043, nyc-departures-2013 at 4 h 0.764 → 0.783 and
//! bikeshare-dc-2011 at 4 h 3.382 → 3.392, each within the noise of the weekly paired count
//! against the best baseline (t ≤ +1.1). A pull measured on whole windows instead of slots
//! did worse on three traces.
//!
//! One more thing, a tie-breaker: 0.1% of each forecast is the mean of the same slot of the
//! *day* over all days. Where the slots of the week cannot tell windows apart (nights
//! without a departure, rounded counts), the time of day that is quiet on every day wins,
//! instead of whichever weekday happened to be lowest so far. It is still needed with the
//! pull: without it nyc-departures-2013 at 1 h goes from 0.031 back to 0.048.

use super::{Data, Plan, Strategy};
use crate::time::Calendar;

/// The share of the slot-of-the-day mean in each forecast: a tie-breaker, not a blend
/// (1e-4 gives the same choices on the real traces; 1e-2 starts to cost).
pub const TIE_BREAK: f64 = 1e-3;

/// The slot in minutes on a grid of `step_min` minutes: the step from half an hour up, the
/// hour below.
pub fn slot_minutes(step_min: i64) -> i64 {
    if step_min >= 30 {
        step_min
    } else {
        60
    }
}

/// The slot-of-week mean.
pub struct WeekSlot;

impl Strategy for WeekSlot {
    fn name(&self) -> &'static str {
        "week-slot"
    }

    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, _window: usize) -> Plan {
        let hist = data.hist(origin);
        let cal = data.cal;
        let width = slot_minutes(cal.step / 60) as u32;
        let slot = |i: usize| (cal.cal[i].minute_of_week() / width) as usize;
        let mut week = vec![(0.0f64, 0u32); (10_080u32.div_ceil(width)) as usize];
        let mut day = vec![(0.0f64, 0u32); cal.day_slots];
        let mut hour = [(0.0f64, 0u32); 168];
        let mut all = (0.0f64, 0u32);
        for (i, v) in hist.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            for acc in [
                &mut week[slot(i)],
                &mut day[cal.day_slot(i)],
                &mut hour[cal.hour_of_week(i)],
                &mut all,
            ] {
                acc.0 += v;
                acc.1 += 1;
            }
        }
        let mean = |(sum, n): (f64, u32)| (n > 0).then(|| sum / f64::from(n));
        let overall = mean(all).unwrap_or(0.0);
        let mut means: Vec<Option<f64>> = week.iter().map(|&acc| mean(acc)).collect();
        pull_weekdays(hist, cal, width, &mut means);
        Plan::Forecast(
            (origin..origin + horizon)
                .map(|i| {
                    let slot = means[slot(i)]
                        .or_else(|| mean(hour[cal.hour_of_week(i)]))
                        .unwrap_or(overall);
                    let of_day = mean(day[cal.day_slot(i)]).unwrap_or(overall);
                    (1.0 - TIE_BREAK) * slot + TIE_BREAK * of_day
                })
                .collect(),
        )
    }
}

/// Pull each weekday's slot mean in `means` (indexed by slot of the week, `width` minutes)
/// toward the mean of the seven weekdays at that time of day, by the share of its difference
/// that is noise (see the module's doc). A time of day where a weekday has no mean or fewer
/// than two weeks with all seven days is left as it is; so is a slot that does not divide the
/// day.
fn pull_weekdays(hist: &[f64], cal: &Calendar, width: u32, means: &mut [Option<f64>]) {
    if 1440 % width != 0 {
        return;
    }
    let per_day = (1440 / width) as usize;
    let slot = |i: usize| (cal.cal[i].minute_of_week() / width) as usize;
    let week_of = local_weeks(cal, hist.len());
    let weeks = week_of.last().map_or(0, |w| w + 1);
    // Per week and time of day: the sum, the count and the weekdays seen.
    let mut at = vec![(0.0f64, 0u32, 0u8); weeks * per_day];
    let key = |i: usize| week_of[i] * per_day + slot(i) % per_day;
    for (i, v) in hist.iter().enumerate().filter(|(_, v)| v.is_finite()) {
        let e = &mut at[key(i)];
        e.0 += v;
        e.1 += 1;
        e.2 |= 1 << (slot(i) / per_day);
    }
    // Per slot of the week: each sample's difference from its week's mean at that time of
    // day, in weeks where all seven days have one (sum, sum of squares, count).
    let mut res = vec![(0.0f64, 0.0f64, 0u32); means.len()];
    for (i, v) in hist.iter().enumerate().filter(|(_, v)| v.is_finite()) {
        let (sum, n, days) = at[key(i)];
        if days != 0x7f {
            continue;
        }
        let r = v - sum / f64::from(n);
        let e = &mut res[slot(i)];
        e.0 += r;
        e.1 += r * r;
        e.2 += 1;
    }
    for d in 0..per_day {
        let js: [usize; 7] = std::array::from_fn(|k| k * per_day + d);
        if js.iter().any(|&j| res[j].2 < 2 || means[j].is_none()) {
            continue;
        }
        // The variance of each weekday's mean difference (its noise), and that difference.
        let noise = js.map(|j| {
            let (sum, sq, n) = res[j];
            let n = f64::from(n);
            let m = sum / n;
            (sq / n - m * m).max(0.0) / (n - 1.0)
        });
        let diff = js.map(|j| res[j].0 / f64::from(res[j].2));
        let avg = |xs: &[f64; 7]| xs.iter().sum::<f64>() / 7.0;
        let centre = avg(&diff);
        let spread = diff.iter().map(|x| (x - centre).powi(2)).sum::<f64>() / 6.0;
        let real = (spread - avg(&noise)).max(0.0);
        let of_days = js.map(|j| means[j].unwrap_or(0.0));
        let grand = avg(&of_days);
        for (k, &j) in js.iter().enumerate() {
            let keep = if real + noise[k] > 0.0 {
                real / (real + noise[k])
            } else {
                1.0
            };
            means[j] = Some(grand + keep * (of_days[k] - grand));
        }
    }
}

/// The local week (0, 1, …) of each of the first `len` grid points: a new one when the
/// weekday goes back to Monday, not when the minute of the week goes back (a clock set back
/// does that on a Sunday).
fn local_weeks(cal: &Calendar, len: usize) -> Vec<usize> {
    let mut week = 0;
    (0..len)
        .map(|i| {
            if i > 0 && cal.cal[i].dow < cal.cal[i - 1].dow {
                week += 1;
            }
            week
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{baselines::HourOfWeek, ranked_starts, ProfileParams};
    use crate::time::{Calendar, Zone};

    #[test]
    fn a_half_hour_valley_is_seen_where_the_hour_of_week_mean_rounds_it() {
        // Two weeks of 30-minute data: 100 everywhere, 10 from 02:30 to 04:30 each day.
        let per_day = 48;
        let n = 14 * per_day;
        let cal = Calendar::new(&Zone::utc(), 1_767_571_200, 1800, n + per_day);
        let values: Vec<f64> = (0..n)
            .map(|i| {
                if (5..9).contains(&(i % per_day)) {
                    10.0
                } else {
                    100.0
                }
            })
            .collect();
        let data = Data::new(&values, &cal, ProfileParams::default());
        let ws = ranked_starts(&WeekSlot.plan(&data, n, per_day, 4), 4);
        assert_eq!(ws[0], 5, "week-slot: 02:30");
        // The hour-of-week mean sees 55 at 02:00 and 04:00: its best 2 h starts on the hour.
        let how = ranked_starts(&HourOfWeek.plan(&data, n, per_day, 4), 4);
        assert_ne!(how[0], 5);
    }

    #[test]
    fn ties_between_weekdays_go_to_the_time_quiet_on_every_day() {
        // Three weeks of hourly counts: 0 at 03:00 every day; at 01:00 a single event on
        // one Monday only, so each weekday's 01:00 except Monday's is 0 as well.
        let n = 21 * 24;
        let cal = Calendar::new(&Zone::utc(), 1_767_571_200, 3600, n + 48);
        let mut values: Vec<f64> = (0..n)
            .map(|i| {
                if [1, 3].contains(&(i % 24)) {
                    0.0
                } else {
                    50.0
                }
            })
            .collect();
        values[7 * 24 + 1] = 1.0;
        let data = Data::new(&values, &cal, ProfileParams::default());
        // From a Tuesday: the hour-of-week mean takes the first zero, Tuesday 01:00; the
        // tie-breaker prefers 03:00, zero on all days.
        let origin = n + 24; // Tuesday 00:00 of the fourth week
        let ws = ranked_starts(&WeekSlot.plan(&data, origin, 24, 1), 1);
        assert_eq!(ws[0], 3);
        let how = ranked_starts(&HourOfWeek.plan(&data, origin, 24, 1), 1);
        assert_eq!(how[0], 1);
    }

    #[test]
    fn weekdays_that_differ_by_noise_are_pulled_together_and_real_differences_stay() {
        // Eight weeks of hourly data from a Monday: 50 by default; at 03:00 nothing but a
        // handful of single events (Monday 2, Tuesday to Saturday 1 each, Sunday none); at
        // 12:00 100 on weekdays and 10 at the weekend, ±1 from week to week.
        let weeks = 8;
        let n = weeks * 168;
        let cal = Calendar::new(&Zone::utc(), 1_767_571_200, 3600, n + 168);
        let mut values = vec![50.0; n];
        for w in 0..weeks {
            for day in 0..7 {
                let i = w * 168 + day * 24;
                let event = match day {
                    0 => w < 2,
                    6 => false,
                    _ => w == day,
                };
                values[i + 3] = if event { 1.0 } else { 0.0 };
                let wiggle = if w % 2 == 0 { 1.0 } else { -1.0 };
                values[i + 12] = if day < 5 { 100.0 } else { 10.0 } + wiggle;
            }
        }
        let data = Data::new(&values, &cal, ProfileParams::default());
        let Plan::Forecast(f) = WeekSlot.plan(&data, n, 168, 1) else {
            panic!("a forecast")
        };
        // 03:00: the seven nights differ by noise only; the plain mean would take Sunday's.
        let nights: Vec<f64> = (0..7).map(|d| f[d * 24 + 3]).collect();
        assert!(
            nights.iter().all(|x| (x - nights[0]).abs() < 1e-12),
            "{nights:?}"
        );
        let Plan::Forecast(h) = HourOfWeek.plan(&data, n, 168, 1) else {
            panic!("a forecast")
        };
        assert!(
            h[6 * 24 + 3] < h[3],
            "the hour-of-week mean sees Sunday lower"
        );
        // 12:00: weekday and weekend stay apart, barely moved.
        for d in 0..7 {
            let want = if d < 5 { 100.0 } else { 10.0 };
            assert!(
                (f[d * 24 + 12] - want).abs() < 0.5,
                "day {d}: {}",
                f[d * 24 + 12]
            );
        }
    }

    #[test]
    fn a_clock_set_back_does_not_start_a_week() {
        // Two weeks of half hours in New York from Monday 19 October 2026; the clocks go
        // back on Sunday 1 November at 02:00 (01:30 is followed by 01:00 again), so the
        // second week has 338 half hours.
        let zone = crate::time::Zone::resolve(Some("America/New_York")).unwrap();
        let n = 2 * 336 + 2;
        let cal = Calendar::new(&zone, 1_792_382_400, 1800, n);
        let weeks = local_weeks(&cal, n);
        assert_eq!(weeks[..336], [0; 336]);
        assert_eq!(weeks[336..], [1; 338]);
    }
}
