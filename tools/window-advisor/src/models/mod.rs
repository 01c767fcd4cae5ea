//! Models and baselines: each turns the history before an origin into a ranked list of
//! windows in the horizon after it.
//!
//! Most strategies forecast the load of every grid point in the horizon and let
//! [`rank_windows`] average the forecast over each candidate window; two baselines ("always
//! 03:00", random) choose windows directly. Every strategy sees only
//! [`Data::hist`]`(origin)`, the values before the origin, so a walk-forward backtest cannot
//! peek at the future by construction. Everything is deterministic: randomness comes from
//! the `--seed`.

pub mod baselines;
pub mod forest;
#[cfg(feature = "mstl")]
pub mod mstl;
pub mod profile;
pub mod week_slot;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;

use crate::time::Calendar;
pub use profile::{ProfileFit, ProfileParams};

/// Whether a strategy is a model under test or a baseline to beat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A learned model.
    Model,
    /// A baseline.
    Baseline,
}

/// The names accepted by `--model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelName {
    /// The slot-of-week mean (`week-slot`), unless the backtest on this history shows
    /// another candidate (03:00, last week, the profile) choosing significantly quieter
    /// windows, week after week.
    Auto,
    /// The mean of each slot of the week: the grid step from 30 minutes up, the hour on finer
    /// grids (the hour-of-week mean on an hourly grid), each weekday pulled toward the seven
    /// days' mean at that time of day as far as their differences are noise; ties go to the
    /// time of day quiet on every day.
    WeekSlot,
    /// Robust hour-of-week profile (recency-weighted medians, local time): a weekday effect
    /// plus a fast time-of-day level.
    Profile,
    /// Random forest on calendar, profile and lag features.
    Forest,
    /// MSTL decomposition (daily + weekly) with a naive trend (feature `mstl`).
    #[cfg(feature = "mstl")]
    Mstl,
    /// Baseline: the same local time one week earlier.
    LastWeek,
    /// Baseline: the mean of each local hour of the week.
    HourOfWeek,
    /// Baseline: always the next 03:00 local.
    #[value(name = "at-0300")]
    At0300,
    /// Baseline: a random window (seeded).
    Random,
}

/// The candidates of `--model auto`, the default first: every deterministic strategy that
/// earned its place on the real traces of bench/data (bench/window-advisor.sh).
///
/// - `week-slot`, the default: the hour-of-week mean, at half-hour resolution on
///   half-hourly data, with weekdays that differ by noise only pulled together. On hourly
///   data the plain mean was hard to beat for any simpler rule or model on the real traces;
///   the pull takes 4 % to 43 % off auto's regret on flights, bike rentals and police stops;
///   on half-hourly data the half hour is better (taylor-2000, vic-elec-2014).
/// - `at-0300`: on some real loads (flights) the best rule of all.
/// - `last-week`: on a short history whose level moves (taylor-2000) the best baseline.
/// - `profile`: on electricity demand (taylor-2000 at 2 h, vic-elec-2014 at 2 h and 4 h)
///   better than every baseline.
///
/// Not the forest: on none of the real traces was it better than the best simple rule, so it
/// could only cost `auto` when its backtest was lucky (`--model forest` still runs it). Not
/// the hour-of-week mean: `week-slot` is it with the pull, and as a candidate beside it, it
/// only cost (bikeshare-dc-2011 at 4 h).
/// Not `random`, a seeded coin.
pub fn candidate_models() -> Vec<ModelName> {
    vec![
        ModelName::WeekSlot,
        ModelName::At0300,
        ModelName::LastWeek,
        ModelName::Profile,
        #[cfg(feature = "mstl")]
        ModelName::Mstl,
    ]
}

/// The baselines, as the issue names them.
pub fn baselines() -> Vec<ModelName> {
    vec![
        ModelName::LastWeek,
        ModelName::HourOfWeek,
        ModelName::At0300,
        ModelName::Random,
    ]
}

impl ModelName {
    /// The name in records.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::Auto => "auto",
            ModelName::WeekSlot => "week-slot",
            ModelName::Profile => "profile",
            ModelName::Forest => "forest",
            #[cfg(feature = "mstl")]
            ModelName::Mstl => "mstl",
            ModelName::LastWeek => "last-week",
            ModelName::HourOfWeek => "hour-of-week",
            ModelName::At0300 => "at-0300",
            ModelName::Random => "random",
        }
    }

    /// Model or baseline.
    pub fn kind(self) -> Kind {
        match self {
            ModelName::LastWeek | ModelName::HourOfWeek | ModelName::At0300 | ModelName::Random => {
                Kind::Baseline
            }
            _ => Kind::Model,
        }
    }

    /// A fresh strategy of this name (`auto` is resolved by the caller).
    pub fn build(self, seed: u64) -> Box<dyn Strategy> {
        match self {
            ModelName::Auto | ModelName::Profile => Box::new(profile::Profile),
            ModelName::WeekSlot => Box::new(week_slot::WeekSlot),
            ModelName::Forest => Box::new(forest::Forest::new(seed)),
            #[cfg(feature = "mstl")]
            ModelName::Mstl => Box::new(mstl::Mstl),
            ModelName::LastWeek => Box::new(baselines::LastWeek),
            ModelName::HourOfWeek => Box::new(baselines::HourOfWeek),
            ModelName::At0300 => Box::new(baselines::At0300),
            ModelName::Random => Box::new(baselines::RandomWindow { seed }),
        }
    }
}

/// The series and its calendar, with a cache of profile fits by origin (the profile is
/// needed by several strategies at the same origins).
pub struct Data<'a> {
    values: &'a [f64],
    /// The local calendar, covering the series and the horizon after it.
    pub cal: &'a Calendar,
    /// Profile settings.
    pub params: ProfileParams,
    cache: RefCell<HashMap<usize, Rc<ProfileFit>>>,
}

impl<'a> Data<'a> {
    /// Wrap a series (`values`) and a calendar at least as long.
    pub fn new(values: &'a [f64], cal: &'a Calendar, params: ProfileParams) -> Data<'a> {
        assert!(
            cal.len() >= values.len(),
            "calendar shorter than the series"
        );
        Data {
            values,
            cal,
            params,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// All the values (for another [`Data`] on the same series).
    pub fn values(&self) -> &'a [f64] {
        self.values
    }

    /// The values before `origin`: all a strategy may look at.
    pub fn hist(&self, origin: usize) -> &'a [f64] {
        &self.values[..origin.min(self.values.len())]
    }

    /// The profile fitted on the values before `origin` (cached).
    pub fn profile(&self, origin: usize) -> Rc<ProfileFit> {
        if let Some(p) = self.cache.borrow().get(&origin) {
            return Rc::clone(p);
        }
        let fit = Rc::new(ProfileFit::fit(self.hist(origin), self.cal, &self.params));
        let mut cache = self.cache.borrow_mut();
        if cache.len() > 512 {
            cache.clear();
        }
        cache.insert(origin, Rc::clone(&fit));
        fit
    }
}

/// What a strategy decides at one origin.
pub enum Plan {
    /// A forecast of each grid point in the horizon (`NaN` where it has none).
    Forecast(Vec<f64>),
    /// Window starts (offsets from the origin), best first.
    Starts(Vec<usize>),
}

/// A model or baseline.
pub trait Strategy {
    /// Its name in records.
    fn name(&self) -> &'static str;
    /// Plan the horizon `origin..origin+horizon` for windows of `window` grid points, using
    /// only `data.hist(origin)`.
    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, window: usize) -> Plan;
}

/// Mean of each window of `w` points in `pred` (NaN replaced by the mean of the rest), as
/// `(offset, mean)` sorted from the quietest; ties keep the earliest.
///
/// The order also weighs the margins: windows are ranked by the average of their own mean
/// and the mean over the window plus half a window on each side. A window in the middle of
/// a quiet period beats one on its edge, which is what a DBA wants (an overrun still lands
/// in quiet time), and it makes the choice less sensitive to noise in a flat valley.
pub fn rank_windows(pred: &[f64], w: usize) -> Vec<(usize, f64)> {
    if w == 0 || pred.len() < w {
        return Vec::new();
    }
    let finite: Vec<f64> = pred.iter().copied().filter(|v| v.is_finite()).collect();
    let fill = if finite.is_empty() {
        0.0
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    };
    let mut prefix = Vec::with_capacity(pred.len() + 1);
    prefix.push(0.0f64);
    let mut acc = 0.0;
    for v in pred {
        acc += if v.is_finite() { *v } else { fill };
        prefix.push(acc);
    }
    let n = pred.len();
    let margin = w / 2;
    let mean = |a: usize, b: usize| (prefix[b] - prefix[a]) / (b - a) as f64;
    let mut out: Vec<(usize, f64, f64)> = (0..=n - w)
        .map(|s| {
            let m = mean(s, s + w);
            let ext = mean(s.saturating_sub(margin), (s + w + margin).min(n));
            (s, m, 0.5 * m + 0.5 * ext)
        })
        .collect();
    out.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    out.into_iter().map(|(s, m, _)| (s, m)).collect()
}

/// The first `k` starts of a ranked list that do not overlap each other.
pub fn non_overlapping(ranked: impl IntoIterator<Item = usize>, w: usize, k: usize) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::new();
    for s in ranked {
        if chosen.len() >= k {
            break;
        }
        if chosen.iter().all(|&c| s + w <= c || c + w <= s) {
            chosen.push(s);
        }
    }
    chosen
}

/// The ranked window starts of a plan.
pub fn ranked_starts(plan: &Plan, w: usize) -> Vec<usize> {
    match plan {
        Plan::Forecast(pred) => rank_windows(pred, w).into_iter().map(|r| r.0).collect(),
        Plan::Starts(s) => s.clone(),
    }
}

/// A check of a candidate's window against the profile's forecast, reported per origin in
/// `evaluate --detail` (`admitted`). Until issue 17 `--model auto` skipped a candidate the
/// check refused; on the real traces of bench/data that cost more than it saved (auto
/// followed the hour-of-week mean's window less often and lost to it on most traces, where
/// without the check it matches it), so auto no longer uses it. What it says: the profile,
/// which follows a change of level within about two days, must not forecast that window
/// busier than the high end of the 80% range of its own best window.
///
/// The backtest learns that a strategy went wrong only once the horizons it planned have
/// ended: a week after a new nightly job appears, the hour-of-week mean still looks as good
/// as ever while it keeps choosing the nights the job now fills. The profile's forecast
/// already shows the job. A window it cannot tell from its own best passes (so a candidate
/// that is slightly better than the profile in the backtest is still followed); a window it
/// sees clearly busier does not.
#[derive(Clone, Debug)]
pub struct Guard {
    prefix: Vec<f64>,
    counts: Vec<u32>,
    /// Forecast mean load of the profile's best window.
    pub best: f64,
    /// The highest forecast mean load a window may have to pass: `best` plus the 90th
    /// percentile offset of the profile's residuals over that window.
    pub limit: f64,
}

impl Guard {
    /// The profile's view of the horizon `origin..origin+horizon` for windows of `w` points.
    pub fn new(data: &Data, origin: usize, horizon: usize, w: usize) -> Guard {
        let fit = data.profile(origin);
        let pred: Vec<f64> = (origin..origin + horizon)
            .map(|i| fit.predict(data.cal, i))
            .collect();
        let mut prefix = Vec::with_capacity(pred.len() + 1);
        let mut counts = Vec::with_capacity(pred.len() + 1);
        prefix.push(0.0);
        counts.push(0);
        let (mut acc, mut n) = (0.0, 0u32);
        for v in &pred {
            if v.is_finite() {
                acc += v;
                n += 1;
            }
            prefix.push(acc);
            counts.push(n);
        }
        let mut guard = Guard {
            prefix,
            counts,
            best: f64::NAN,
            limit: f64::NAN,
        };
        if let Some(&(s, _)) = rank_windows(&pred, w).first() {
            let hi = (s..s + w)
                .map(|j| fit.spread(data.cal, origin + j).1)
                .filter(|v| v.is_finite())
                .map(|v| v.max(0.0))
                .sum::<f64>()
                / w as f64;
            guard.best = guard.forecast(s, w);
            guard.limit = guard.best + hi;
        }
        guard
    }

    /// The profile's forecast mean load of the window at offset `s` (NaN: no forecast).
    pub fn forecast(&self, s: usize, w: usize) -> f64 {
        let e = (s + w).min(self.counts.len() - 1);
        let s = s.min(e);
        let n = self.counts[e] - self.counts[s];
        if n == 0 {
            return f64::NAN;
        }
        (self.prefix[e] - self.prefix[s]) / f64::from(n)
    }

    /// Whether the window at offset `s` passes (also when the profile has no forecast).
    pub fn admits(&self, s: usize, w: usize) -> bool {
        let f = self.forecast(s, w);
        f.is_nan() || self.limit.is_nan() || f <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_ranked_by_mean_and_kept_apart() {
        let pred = [5.0, 1.0, 1.0, 5.0, 0.0, 0.5, 9.0, f64::NAN];
        let r = rank_windows(&pred, 2);
        assert_eq!(r[0], (4, 0.25));
        assert_eq!(r[1].0, 1);
        let starts: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(non_overlapping(starts, 2, 3), vec![4, 1, 6]);
        assert!(rank_windows(&pred, 9).is_empty());
    }

    #[test]
    fn the_guard_admits_windows_the_profile_cannot_tell_from_its_best() {
        use crate::time::{Calendar, Zone};
        // Three weeks of 5-minute data, quiet from 03:00 to 05:00 every day (load 10 ± 1),
        // busy (100 ± 1) otherwise; then a day ahead.
        let per_day = 288;
        let n = 21 * per_day;
        let cal = Calendar::new(&Zone::utc(), 1_767_571_200, 300, n + per_day);
        let values: Vec<f64> = (0..n)
            .map(|i| {
                let slot = i % per_day;
                let wobble = if i % 2 == 0 { 1.0 } else { -1.0 };
                if (36..60).contains(&slot) {
                    10.0 + wobble
                } else {
                    100.0 + wobble
                }
            })
            .collect();
        let data = Data::new(&values, &cal, ProfileParams::default());
        let g = Guard::new(&data, n, per_day, 6);
        assert!((g.best - 10.0).abs() < 1.5, "{g:?}");
        assert!(g.limit >= g.best && g.limit < 15.0, "{g:?}");
        // 03:30 and 04:00 pass, noon does not.
        assert!(g.admits(42, 6) && g.admits(48, 6));
        assert!(!g.admits(144, 6));
        assert!(g.forecast(144, 6) > 90.0);
    }
}
