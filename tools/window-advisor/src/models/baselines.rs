//! The baselines a model has to beat: what a DBA would do without one.
//!
//! - `last-week`: the load at the same local time one week earlier (DST-correct: the same
//!   wall-clock slot, not 168 hours back).
//! - `hour-of-week`: the plain mean of each local hour of the week over the whole history.
//! - `at-0300`: always the next 03:00 local, the classic maintenance slot.
//! - `random`: a window anywhere in the horizon (seeded, so runs are repeatable).

use rand::{Rng, SeedableRng};

use super::{Data, Plan, Strategy};

/// The same local time one week earlier.
pub struct LastWeek;

impl Strategy for LastWeek {
    fn name(&self) -> &'static str {
        "last-week"
    }

    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, _window: usize) -> Plan {
        let hist = data.hist(origin);
        Plan::Forecast(
            (origin..origin + horizon)
                .map(|i| {
                    data.cal
                        .same_slot_before(i, origin)
                        .take(3)
                        .map(|j| hist[j])
                        .find(|v| v.is_finite())
                        .unwrap_or(f64::NAN)
                })
                .collect(),
        )
    }
}

/// The mean of each local hour of the week.
pub struct HourOfWeek;

impl Strategy for HourOfWeek {
    fn name(&self) -> &'static str {
        "hour-of-week"
    }

    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, _window: usize) -> Plan {
        let hist = data.hist(origin);
        let mut sum = [0.0f64; 168];
        let mut cnt = [0u32; 168];
        for (i, v) in hist.iter().enumerate() {
            if v.is_finite() {
                let h = data.cal.hour_of_week(i);
                sum[h] += v;
                cnt[h] += 1;
            }
        }
        let total: f64 = sum.iter().sum();
        let n: u32 = cnt.iter().sum();
        let overall = if n > 0 { total / f64::from(n) } else { 0.0 };
        Plan::Forecast(
            (origin..origin + horizon)
                .map(|i| {
                    let h = data.cal.hour_of_week(i);
                    if cnt[h] > 0 {
                        sum[h] / f64::from(cnt[h])
                    } else {
                        overall
                    }
                })
                .collect(),
        )
    }
}

/// Always 03:00 local: the next one first, then the following days.
pub struct At0300;

impl Strategy for At0300 {
    fn name(&self) -> &'static str {
        "at-0300"
    }

    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, window: usize) -> Plan {
        let step_min = (data.cal.step / 60).max(1) as u16;
        let last = (origin + horizon).saturating_sub(window);
        let mut starts: Vec<usize> = (origin..=last)
            .filter(|&i| {
                let m = data.cal.cal[i].minute;
                (180..180 + step_min).contains(&m)
            })
            .map(|i| i - origin)
            .collect();
        if starts.is_empty() {
            // A horizon without a 03:00 in it: the window starting closest to 03:00.
            let dist = |i: usize| {
                let m = i32::from(data.cal.cal[i].minute);
                let d = (m - 180).rem_euclid(1440);
                d.min(1440 - d)
            };
            if let Some(best) = (origin..=last).min_by_key(|&i| (dist(i), i)) {
                starts.push(best - origin);
            }
        }
        Plan::Starts(starts)
    }
}

/// A random window (seeded per origin, so that the order of evaluation does not matter).
pub struct RandomWindow {
    /// The run's `--seed`.
    pub seed: u64,
}

impl Strategy for RandomWindow {
    fn name(&self) -> &'static str {
        "random"
    }

    fn plan(&mut self, _data: &Data, origin: usize, horizon: usize, window: usize) -> Plan {
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.seed ^ (origin as u64).wrapping_mul(0x9E37_79B9),
        );
        let n = (horizon + 1).saturating_sub(window).max(1);
        Plan::Starts((0..16).map(|_| rng.gen_range(0..n)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ranked_starts, ProfileParams};
    use crate::time::{Calendar, Zone};

    #[test]
    fn baselines_plan_what_they_say() {
        let z = Zone::utc();
        // Two weeks of hourly data from Monday 00:00 UTC plus a week of horizon.
        let cal = Calendar::new(&z, 1_767_571_200, 3600, 24 * 21);
        let mut values: Vec<f64> = (0..24 * 14).map(|i| 10.0 + (i % 24) as f64).collect();
        values[24 * 7 + 5] = 0.0; // last Monday 05:00 was empty,
        values[5] = 30.0; // the one before busy: the hour-of-week mean is 15
        let data = Data::new(&values, &cal, ProfileParams::default());
        let origin = 24 * 14;
        let lw = ranked_starts(&LastWeek.plan(&data, origin, 24, 1), 1);
        assert_eq!(lw[0], 5);
        let how = ranked_starts(&HourOfWeek.plan(&data, origin, 24, 1), 1);
        assert_eq!(how[0], 0);
        let at3 = ranked_starts(&At0300.plan(&data, origin + 5, 48, 1), 1);
        assert_eq!(at3, vec![22, 46]);
        let r1 = ranked_starts(&RandomWindow { seed: 1 }.plan(&data, origin, 24, 2), 2);
        let r2 = ranked_starts(&RandomWindow { seed: 1 }.plan(&data, origin, 24, 2), 2);
        assert_eq!(r1, r2);
        assert!(r1.iter().all(|&s| s <= 22));
    }
}
