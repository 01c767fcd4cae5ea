//! The hour-of-week profile: what the load usually is at this local time of the week.
//!
//! The profile is split in two parts that change at different speeds:
//!
//! - the **weekday effect** `E(slot of week)`: how much busier or quieter this slot is than
//!   the same time of day on the other days of *its own week*. Measuring it within each week
//!   makes it immune to anything that moves all days alike (growth, a new nightly job); it
//!   is the recency-weighted median over weeks (half-life two weeks), so a holiday or a burst
//!   in one week does not move it. It is taken per hour of the week, interpolated between
//!   the hours' centres (weekday effects are smooth, and the quiet hours are where precision
//!   matters), except where the ±7.5-minute effect differs from that by more than three
//!   standard errors: a weekly job keeps its edges;
//! - the **level** `L(time of day)`: the load at this time of day with the weekday effect
//!   taken out. Two weighted medians are kept, a long one (half-life two weeks) and a short
//!   one (half-life two days); the level is the long one, moved towards the short one by as
//!   much as they differ beyond two standard errors. Noise leaves the stable long level
//!   alone, while a regime shift is followed within about two days (once the new days
//!   outweigh the old in the short median); one odd day (a burst, a holiday) stays below half
//!   the short median's weight and does not move it.
//!
//! The forecast is `L(time of day) + E(slot of week)`, in local time (DST-correct: a job at
//! 02:00 local stays at 02:00 local). Slots are one grid step wide, pooled with their
//! neighbours within ±7.5 minutes. With less than a week of history there is no weekday
//! effect and the profile is the time-of-day level alone. The 80% range comes from the
//! weighted 10th and 90th percentiles of the residuals at that time of day.

use super::{Data, Plan, Strategy};
use crate::time::{Calendar, DAY, WEEK};

/// Weeks of history a fit looks at (the latest).
pub const MEMORY_WEEKS: usize = 12;

/// Profile settings.
#[derive(Clone, Copy, Debug)]
pub struct ProfileParams {
    /// Half-life of the weekday effect's weights, seconds.
    pub effect_half_life_s: f64,
    /// Half-life of the level's weights, seconds.
    pub level_half_life_s: f64,
}

impl Default for ProfileParams {
    fn default() -> Self {
        ProfileParams {
            effect_half_life_s: 2.0 * WEEK as f64,
            level_half_life_s: 2.0 * DAY as f64,
        }
    }
}

/// A profile fitted on the history before some origin.
#[derive(Clone, Debug)]
pub struct ProfileFit {
    /// Weekday effect per slot of the week (0 without a week of history).
    pub effect: Vec<f64>,
    /// Level per slot of the day (weekday effect removed).
    pub level: Vec<f64>,
    /// 10th percentile of residuals per slot of the day.
    pub lo: Vec<f64>,
    /// 90th percentile of residuals per slot of the day.
    pub hi: Vec<f64>,
    /// True when there was at least a week of history (the weekly pattern is known).
    pub weekly: bool,
}

/// A bin of weighted values.
type Bin = Vec<(f64, f64)>;

/// Weighted quantiles `qs` of a bin (sorted in place); `NaN` when empty.
fn weighted_quantiles<const N: usize>(bin: &mut Bin, qs: [f64; N]) -> [f64; N] {
    let mut out = [f64::NAN; N];
    if bin.is_empty() {
        return out;
    }
    bin.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let total: f64 = bin.iter().map(|b| b.1).sum();
    for (k, q) in qs.iter().enumerate() {
        let target = q * total;
        let mut acc = 0.0;
        for &(v, w) in bin.iter() {
            acc += w;
            if acc >= target {
                out[k] = v;
                break;
            }
        }
        if out[k].is_nan() {
            out[k] = bin[bin.len() - 1].0;
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// The effective number of values of a weighted bin: (Σw)² / Σw².
fn neff(bin: &Bin) -> f64 {
    let (sw, sw2) = bin
        .iter()
        .fold((0.0, 0.0), |(a, q), (_, w)| (a + w, q + w * w));
    if sw2 > 0.0 {
        sw * sw / sw2
    } else {
        0.0
    }
}

/// `base` moved towards `target` by as much as they differ beyond `threshold` (soft
/// thresholding): noise leaves `base` alone, a real difference is followed.
fn soft_towards(base: f64, target: f64, threshold: f64) -> f64 {
    let diff = target - base;
    base + diff.signum() * (diff.abs() - threshold).max(0.0)
}

/// Push `(v, w)` into the bins around `slot` (±`band`, wrapping).
fn push_pooled(bins: &mut [Bin], slot: usize, band: isize, v: f64, w: f64) {
    let n = bins.len() as isize;
    for off in -band..=band {
        bins[(slot as isize + off).rem_euclid(n) as usize].push((v, w));
    }
}

impl ProfileFit {
    /// Fit on `hist` (the values before the origin `hist.len()`).
    pub fn fit(hist: &[f64], cal: &Calendar, params: &ProfileParams) -> ProfileFit {
        let n = hist.len();
        let (ws, ds) = (cal.week_slots, cal.day_slots);
        let step = cal.step;
        let band = (450 / step) as isize;
        let per_day = (DAY / step).max(1) as usize;
        let per_week = 7 * per_day;
        // Only the last MEMORY_WEEKS count: older points weigh under 2% (two-week half-lives),
        // and leaving them out keeps a fit on a year of 5-minute data to a few milliseconds,
        // which a backtest at hundreds of origins needs.
        let per_step_weeks = (WEEK / step).max(1) as usize;
        let from = n.saturating_sub(MEMORY_WEEKS * per_step_weeks);
        let first = hist
            .iter()
            .skip(from)
            .position(|v| v.is_finite())
            .map(|p| p + from);
        let last = hist.iter().rposition(|v| v.is_finite());
        let weekly = match (first, last) {
            (Some(a), Some(b)) => (b - a) as i64 * step >= WEEK - step,
            _ => false,
        };
        // Recency weights by age, for both half-lives, computed once.
        let weights = |half_life: f64| -> Vec<f64> {
            let r = (-std::f64::consts::LN_2 * step as f64 / half_life).exp();
            let mut w = vec![0.0; n];
            let mut x = 1.0;
            for wi in w.iter_mut().rev() {
                *wi = x;
                x *= r;
            }
            w
        };
        let w_effect = weights(params.effect_half_life_s);
        let w_level = weights(params.level_half_life_s);

        // Week blocks ending at the origin, and each block's median per time of day.
        let mut blocks: Vec<(usize, Vec<f64>)> = Vec::new(); // (start, median per day slot)
        if weekly {
            let first = first.unwrap_or(0);
            let mut end = n;
            let mut day_bins: Vec<Vec<f64>> = vec![Vec::new(); ds];
            let need = ((2 * band + 1) * 4) as usize;
            while end >= per_week && end - per_week + per_day / 2 >= first {
                let start = end - per_week;
                for b in day_bins.iter_mut() {
                    b.clear();
                }
                for (i, &v) in hist.iter().enumerate().take(end).skip(start) {
                    if v.is_finite() {
                        let d = cal.day_slot(i) as isize;
                        for off in -band..=band {
                            day_bins[(d + off).rem_euclid(ds as isize) as usize].push(v);
                        }
                    }
                }
                let med: Vec<f64> = day_bins
                    .iter_mut()
                    .map(|b| if b.len() >= need { median(b) } else { f64::NAN })
                    .collect();
                blocks.push((start, med));
                end = start;
            }
        }

        // Weekday effect: deviation from the own week's median at that time of day, at two
        // resolutions. The coarse one (hour-of-week medians, interpolated between the hours'
        // centres) is steady; the fine one (±7.5 minutes) is kept where it differs from the
        // coarse one by more than three standard errors, which a weekly job (a Sunday 02:00
        // backup) does every week and noise does not.
        let mut effect = vec![0.0; ws];
        if !blocks.is_empty() {
            let mut fine: Vec<Bin> = vec![Vec::new(); ws];
            let mut hourly: Vec<Bin> = vec![Vec::new(); 168];
            for (start, med) in &blocks {
                for i in *start..*start + per_week {
                    let m = med[cal.day_slot(i)];
                    if hist[i].is_finite() && m.is_finite() {
                        let (e, w) = (hist[i] - m, w_effect[i]);
                        push_pooled(&mut fine, cal.week_slot(i), band, e, w);
                        hourly[cal.hour_of_week(i).min(167)].push((e, w));
                    }
                }
            }
            let hour_med: Vec<f64> = hourly
                .iter_mut()
                .map(|b| weighted_quantiles(b, [0.5])[0])
                .collect();
            let step_min = (step / 60).max(1) as f64;
            for (slot, f) in fine.iter_mut().enumerate() {
                // Interpolate between the centres of the two nearest hours of the week.
                let pos = ((slot as f64 + 0.5) * step_min / 60.0 - 0.5).rem_euclid(168.0);
                let (h0, frac) = (pos.floor() as usize % 168, pos.fract());
                let (a, b) = (hour_med[h0], hour_med[(h0 + 1) % 168]);
                let c50 = match (a.is_finite(), b.is_finite()) {
                    (true, true) => a * (1.0 - frac) + b * frac,
                    (true, false) => a,
                    (false, true) => b,
                    (false, false) => f64::NAN,
                };
                let [f25, f50, f75] = weighted_quantiles(f, [0.25, 0.5, 0.75]);
                effect[slot] = match (c50.is_finite(), f50.is_finite()) {
                    (true, true) => {
                        let sigma = (f75 - f25).max(0.0) / 1.349;
                        let se = 1.25 * sigma / neff(f).max(1.0).sqrt();
                        soft_towards(c50, f50, 3.0 * se)
                    }
                    (true, false) => c50,
                    (false, true) => f50,
                    (false, false) => 0.0,
                };
            }
        }

        // Level per time of day, weekday effect removed: a long memory (the effect's
        // half-life) and a short one (the level's), each with its effective sample size.
        let mut long_bins: Vec<Bin> = vec![Vec::new(); ds];
        let mut short_bins: Vec<Bin> = vec![Vec::new(); ds];
        let mut all: Vec<f64> = Vec::with_capacity(n);
        for (i, &v) in hist.iter().enumerate().skip(from) {
            if v.is_finite() {
                let r = v - effect[cal.week_slot(i)];
                let d = cal.day_slot(i);
                push_pooled(&mut long_bins, d, band, r, w_effect[i]);
                push_pooled(&mut short_bins, d, band, r, w_level[i]);
                all.push(r);
            }
        }
        let overall = median(&mut all);
        let overall = if overall.is_finite() { overall } else { 0.0 };
        let median_neff = |bins: &mut Vec<Bin>| -> Vec<(f64, f64)> {
            bins.iter_mut()
                .map(|b| {
                    let [m] = weighted_quantiles(b, [0.5]);
                    (if m.is_finite() { m } else { overall }, neff(b))
                })
                .collect()
        };
        let long = median_neff(&mut long_bins);
        let short = median_neff(&mut short_bins);

        // Spread: residuals around each week's own level plus the weekday effect (or around
        // the long level without a week of history).
        let mut bins: Vec<Bin> = vec![Vec::new(); ds];
        if blocks.is_empty() {
            for (i, &v) in hist.iter().enumerate().skip(from) {
                if v.is_finite() {
                    let w = w_effect[i];
                    let d = cal.day_slot(i);
                    push_pooled(&mut bins, d, band, v - long[d].0, w);
                }
            }
        } else {
            for (start, med) in &blocks {
                for i in *start..*start + per_week {
                    let m = med[cal.day_slot(i)];
                    if hist[i].is_finite() && m.is_finite() {
                        let w = w_effect[i];
                        let r = hist[i] - m - effect[cal.week_slot(i)];
                        push_pooled(&mut bins, cal.day_slot(i), band, r, w);
                    }
                }
            }
        }
        let mut lo = vec![0.0; ds];
        let mut hi = vec![0.0; ds];
        let mut sigma = vec![0.0; ds];
        for (d, bin) in bins.iter_mut().enumerate() {
            let [a, q1, q3, b] = weighted_quantiles(bin, [0.1, 0.25, 0.75, 0.9]);
            lo[d] = if a.is_finite() { a.min(0.0) } else { 0.0 };
            hi[d] = if b.is_finite() { b.max(0.0) } else { 0.0 };
            // From the interquartile range, which a shift in a minority of the days (the
            // very thing the level must follow) does not inflate.
            sigma[d] = if q3 > q1 { (q3 - q1) / 1.349 } else { 0.0 };
        }

        // The level: the long memory, moved towards the short one by as much as their
        // difference exceeds two standard errors (soft thresholding). Noise leaves the
        // stable long level alone; a shift of the whole day is followed within days.
        let level: Vec<f64> = (0..ds)
            .map(|d| {
                let ((l, nl), (s, ns)) = (long[d], short[d]);
                if nl <= 0.0 || ns <= 0.0 {
                    return if ns > 0.0 { s } else { l };
                }
                // A median's standard error is 1.25 sigma / sqrt(n).
                let se = 1.25 * sigma[d] * (1.0 / nl + 1.0 / ns).sqrt();
                soft_towards(l, s, 2.0 * se)
            })
            .collect();
        ProfileFit {
            effect,
            level,
            lo,
            hi,
            weekly,
        }
    }

    /// The forecast for grid point `i`.
    pub fn predict(&self, cal: &Calendar, i: usize) -> f64 {
        self.level[cal.day_slot(i)] + self.effect[cal.week_slot(i)]
    }

    /// The 10th..90th percentile offsets around the forecast at grid point `i`.
    pub fn spread(&self, cal: &Calendar, i: usize) -> (f64, f64) {
        let d = cal.day_slot(i);
        (self.lo[d], self.hi[d])
    }
}

/// The profile as a strategy.
pub struct Profile;

impl Strategy for Profile {
    fn name(&self) -> &'static str {
        "profile"
    }

    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, _window: usize) -> Plan {
        let fit = data.profile(origin);
        Plan::Forecast(
            (origin..origin + horizon)
                .map(|i| fit.predict(data.cal, i))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Zone;

    #[test]
    fn weighted_quantiles_pick_by_weight() {
        let mut b = vec![(1.0, 1.0), (10.0, 5.0), (3.0, 1.0)];
        assert_eq!(
            weighted_quantiles(&mut b, [0.1, 0.5, 0.9]),
            [1.0, 10.0, 10.0]
        );
        assert!(weighted_quantiles(&mut Vec::new(), [0.5])[0].is_nan());
    }

    #[test]
    fn weekly_profile_ignores_a_burst_and_follows_a_shift() {
        let z = Zone::utc();
        // 3 weeks of hourly data, Monday 00:00 UTC start: load = hour of day, Sundays half.
        let load = |i: usize| {
            let h = (i % 24) as f64;
            if (i / 24) % 7 == 6 {
                h / 2.0
            } else {
                h
            }
        };
        let cal = Calendar::new(&z, 1_767_571_200, 3600, 24 * 28);
        let mut hist: Vec<f64> = (0..24 * 21).map(load).collect();
        hist[24 * 14 + 3] = 1000.0; // a burst
        let fit = ProfileFit::fit(&hist, &cal, &ProfileParams::default());
        assert!(fit.weekly);
        for i in [24 * 21 + 3, 24 * 21 + 5, 24 * 27 + 5, 24 * 27 + 20] {
            assert!((fit.predict(&cal, i) - load(i)).abs() < 1e-9, "{i}");
        }
        // A nightly job since 3 days (Friday on): +100 at 02:00 and 03:00, Sunday included.
        for d in 18..21 {
            hist[24 * d + 2] += 100.0;
            hist[24 * d + 3] += 100.0;
        }
        let fit = ProfileFit::fit(&hist, &cal, &ProfileParams::default());
        // Next Monday and next Sunday both expect the job (shrunk a little towards the
        // long-run level, by two standard errors), the hours around it are unchanged.
        for i in [24 * 21 + 2, 24 * 27 + 3] {
            let p = fit.predict(&cal, i);
            assert!(p > 60.0 && p <= load(i) + 100.0, "{i}: {p}");
        }
        assert!((fit.predict(&cal, 24 * 27 + 5) - 2.5).abs() < 1e-9);
        assert!((fit.predict(&cal, 24 * 22 + 12) - 12.0).abs() < 1e-9);
    }

    #[test]
    fn short_history_falls_back_to_time_of_day() {
        let z = Zone::utc();
        let cal = Calendar::new(&z, 1_767_571_200, 3600, 24 * 9);
        let hist: Vec<f64> = (0..24 * 2).map(|i| (i % 24) as f64).collect();
        let fit = ProfileFit::fit(&hist, &cal, &ProfileParams::default());
        assert!(!fit.weekly);
        // Saturday 04:00 was never seen: the time-of-day median stands in.
        assert_eq!(fit.predict(&cal, 24 * 5 + 4), 4.0);
    }
}
