//! `week-slot`, the default of `--model auto`: the mean of each slot of the week.
//!
//! The slot is the grid's step when that is 30 minutes or more, and the hour on finer grids.
//! On an hourly grid this is the hour-of-week mean. On a half-hourly grid a quiet stretch
//! from 02:30 to 06:30 is seen as such rather than rounded to whole hours: the hour-of-week
//! mean chose a window an hour off on taylor-2000 (4 h) at 4.6 times the regret, and
//! half-hour slots do better on vic-elec-2014 too. On a 5-minute grid a half-hour slot
//! averages 6 samples a week where the hour averages 12: on the synthetic suite that cost
//! 7% at p90 and on bank-calls-2003 it gained nothing, so finer grids keep the hour. A slot
//! without data takes its hour of the week's mean, then the mean of all data, as the
//! hour-of-week mean does.
//!
//! One more thing, a tie-breaker: 0.1% of each forecast is the mean of the same slot of the
//! *day* over all days. Where the slots of the week cannot tell windows apart (nights
//! without a departure, rounded counts), the time of day that is quiet on every day wins,
//! instead of whichever weekday happened to be lowest so far. On nyc-departures-2013 (1 h)
//! this halves the regret of the plain mean; elsewhere it changes regret by under 1%
//! (bench/window-advisor.sh).

use super::{Data, Plan, Strategy};

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
        Plan::Forecast(
            (origin..origin + horizon)
                .map(|i| {
                    let slot = mean(week[slot(i)])
                        .or_else(|| mean(hour[cal.hour_of_week(i)]))
                        .unwrap_or(overall);
                    let of_day = mean(day[cal.day_slot(i)]).unwrap_or(overall);
                    (1.0 - TIE_BREAK) * slot + TIE_BREAK * of_day
                })
                .collect(),
        )
    }
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
}
