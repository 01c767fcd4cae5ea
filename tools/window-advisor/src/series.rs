//! From raw rows to a regular series: sort, merge duplicates, find gaps, resample.
//!
//! Real exports are untidy: rows out of order, the same instant twice, a collector that was
//! down for a day, a switch from 10 s to 1 min sampling. Each is repaired the way a DBA would
//! expect and reported (a warning on stderr and a count in the `history` record) rather than
//! refused: rows are sorted, duplicates averaged, and everything is averaged into buckets of
//! one grid step. Gaps stay gaps (`NaN`); no model is trained on invented values.

use serde::Serialize;
use shared::ErrorKind;

use crate::time::{utc_string, DAY};

/// Default grid step: 5 minutes (finer data is averaged into it).
pub const DEFAULT_STEP: i64 = 300;

/// The most grid buckets a history may span (about 9.5 years of 5-minute buckets).
pub const MAX_BUCKETS: usize = 1_000_000;

/// A regular series: `values[i]` is the mean of the samples in `[t0 + i*step, +step)`.
#[derive(Clone, Debug)]
pub struct Series {
    /// Epoch seconds of bucket 0 (a multiple of `step`).
    pub t0: i64,
    /// Bucket width in seconds.
    pub step: i64,
    /// Bucket means; `NaN` where no sample fell.
    pub values: Vec<f64>,
}

impl Series {
    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The bucket containing an instant (epoch seconds), which may be outside the series.
    pub fn index_of(&self, secs: i64) -> i64 {
        (secs - self.t0).div_euclid(self.step)
    }

    /// The last finite value.
    pub fn last_finite(&self) -> Option<f64> {
        self.values.iter().rev().copied().find(|v| v.is_finite())
    }
}

/// What cleaning found; the `history` record.
#[derive(Clone, Debug, Serialize, Default)]
pub struct HistoryInfo {
    /// The metric modelled.
    pub metric: String,
    /// Rows read.
    pub samples: usize,
    /// Rows with a value for the metric.
    pub values: usize,
    /// First and last sample (RFC 3339 UTC).
    pub first: String,
    /// Last sample.
    pub last: String,
    /// Span in days.
    pub days: f64,
    /// Typical interval between samples, seconds (median).
    pub interval_s: f64,
    /// The grid step the models work on, seconds.
    pub step_s: i64,
    /// Rows that were out of time order (the input was sorted).
    pub unsorted: usize,
    /// Rows whose timestamp repeated an earlier one (merged by averaging).
    pub duplicates: usize,
    /// Holes longer than three typical intervals.
    pub gaps: usize,
    /// The longest hole, seconds.
    pub longest_gap_s: f64,
    /// True when sampling intervals vary by more than half (e.g. 10 s then 1 min).
    pub mixed_intervals: bool,
    /// Share of grid buckets without a value, percent.
    pub missing_pct: f64,
    /// Time zone of the calendar.
    pub tz: String,
}

/// Clean and resample one metric column. `step` overrides the grid step (seconds).
/// Warnings go to stderr as they are found.
pub fn build(
    times_ms: &[i64],
    values: &[f64],
    step: Option<i64>,
    metric: &str,
) -> anyhow::Result<(Series, HistoryInfo)> {
    let mut info = HistoryInfo {
        metric: metric.to_owned(),
        samples: times_ms.len(),
        ..Default::default()
    };
    let mut rows: Vec<(i64, f64)> = times_ms.iter().zip(values).map(|(&t, &v)| (t, v)).collect();
    info.unsorted = rows.windows(2).filter(|w| w[1].0 < w[0].0).count();
    if info.unsorted > 0 {
        shared::warn!(
            "the history is not in time order ({} row{} earlier than the row before); sorted it",
            info.unsorted,
            plural(info.unsorted)
        );
        rows.sort_by_key(|r| r.0);
    }
    // Merge rows with the same timestamp: the mean of their values.
    let mut merged: Vec<(i64, f64)> = Vec::with_capacity(rows.len());
    let mut i = 0;
    while i < rows.len() {
        let t = rows[i].0;
        let (mut sum, mut count, mut j) = (0.0, 0u32, i);
        while j < rows.len() && rows[j].0 == t {
            if rows[j].1.is_finite() {
                sum += rows[j].1;
                count += 1;
            }
            j += 1;
        }
        info.duplicates += j - i - 1;
        merged.push((
            t,
            if count > 0 {
                sum / f64::from(count)
            } else {
                f64::NAN
            },
        ));
        i = j;
    }
    if info.duplicates > 0 {
        shared::warn!(
            "{} duplicate timestamp{} in the history; averaged the values of each",
            info.duplicates,
            plural(info.duplicates)
        );
    }
    let rows: Vec<(i64, f64)> = merged.into_iter().filter(|r| r.1.is_finite()).collect();
    info.values = rows.len();
    if rows.len() < 2 {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the history has {} value{} of {metric}; need at least a day of samples \
                 (a week or more to learn the weekly pattern)",
                rows.len(),
                plural(rows.len())
            ),
        ));
    }
    let first = rows[0].0;
    let last = rows[rows.len() - 1].0;
    info.first = utc_string(first.div_euclid(1000));
    info.last = utc_string(last.div_euclid(1000));

    // Intervals: the median is the sampling interval; gaps are holes of over 3 of them.
    let mut diffs: Vec<f64> = rows
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / 1000.0)
        .collect();
    diffs.sort_by(f64::total_cmp);
    let interval = quantile_sorted(&diffs, 0.5).max(0.001);
    info.interval_s = round3(interval);
    // The span the samples cover: a week of 5-minute samples is a week, not a week minus
    // five minutes.
    info.days = ((last - first) as f64 / 1000.0 + interval) / DAY as f64;
    // A gap is a hole of more than three intervals of the local cadence (the shorter of the
    // neighbouring intervals), so that a switch from 1-minute to 5-minute sampling is not
    // taken for thousands of gaps.
    let d: Vec<f64> = rows
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) as f64 / 1000.0)
        .collect();
    let mut regular = Vec::with_capacity(d.len());
    for (k, &dk) in d.iter().enumerate() {
        let prev = if k > 0 { d[k - 1] } else { f64::INFINITY };
        let next = d.get(k + 1).copied().unwrap_or(f64::INFINITY);
        let local = prev.min(next);
        let local = if local.is_finite() { local } else { interval };
        if dk > (3.0 * local).max(60.0) {
            info.gaps += 1;
            info.longest_gap_s = info.longest_gap_s.max(dk);
        } else {
            regular.push(dk);
        }
    }
    regular.sort_by(f64::total_cmp);
    if regular.len() >= 10 {
        let lo = quantile_sorted(&regular, 0.1);
        let hi = quantile_sorted(&regular, 0.9);
        info.mixed_intervals = lo > 0.0 && hi / lo > 1.5;
    }

    let step = match step {
        Some(s) => s,
        // At least 5 minutes, and at least the sampling interval (whole minutes).
        None => DEFAULT_STEP.max(((interval / 60.0).ceil() as i64) * 60),
    };
    info.step_s = step;
    if info.mixed_intervals {
        shared::warn!(
            "sampling intervals vary (from {}s to {}s); averaged everything into {}s buckets",
            round3(quantile_sorted(&regular, 0.1)),
            round3(quantile_sorted(&regular, 0.9)),
            step
        );
    }
    if info.gaps > 0 {
        shared::warn!(
            "the history has {} gap{} (the longest {}); gaps are left out, not filled in",
            info.gaps,
            plural(info.gaps),
            human_duration(info.longest_gap_s)
        );
    }

    let first_s = first.div_euclid(1000);
    let t0 = first_s - first_s.rem_euclid(step);
    let n = ((last.div_euclid(1000) - t0) / step + 1) as usize;
    if n > MAX_BUCKETS {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the history spans {:.0} days ({} to {}), over {} buckets of {}; check the \
                 timestamps (a stray far-off sample?) or pass a coarser --step",
                info.days,
                info.first,
                info.last,
                MAX_BUCKETS,
                human_duration(step as f64)
            ),
        ));
    }
    let mut sum = vec![0.0f64; n];
    let mut cnt = vec![0u32; n];
    for (t, v) in &rows {
        let i = ((t.div_euclid(1000) - t0) / step) as usize;
        sum[i] += v;
        cnt[i] += 1;
    }
    let values: Vec<f64> = sum
        .iter()
        .zip(&cnt)
        .map(|(s, &c)| if c == 0 { f64::NAN } else { s / f64::from(c) })
        .collect();
    let missing = values.iter().filter(|v| v.is_nan()).count();
    info.missing_pct = round3(100.0 * missing as f64 / n as f64);
    Ok((Series { t0, step, values }, info))
}

/// Resample another column onto the same grid as `like` (used for WAL, CPU, memory).
pub fn resample_like(like: &Series, times_ms: &[i64], values: &[f64]) -> Series {
    let n = like.len();
    let mut sum = vec![0.0f64; n];
    let mut cnt = vec![0u32; n];
    for (&t, &v) in times_ms.iter().zip(values) {
        if !v.is_finite() {
            continue;
        }
        let i = like.index_of(t.div_euclid(1000));
        if i >= 0 && (i as usize) < n {
            sum[i as usize] += v;
            cnt[i as usize] += 1;
        }
    }
    Series {
        t0: like.t0,
        step: like.step,
        values: sum
            .iter()
            .zip(&cnt)
            .map(|(s, &c)| if c == 0 { f64::NAN } else { s / f64::from(c) })
            .collect(),
    }
}

/// The `q` quantile (0..=1) of sorted values, linear interpolation; `NaN` if empty.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The `q` quantile of unsorted finite values.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    quantile_sorted(&v, q)
}

/// Round to 3 decimals (for records).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `2d 4h`, `35m`, `12s`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.round() as i64;
    if s >= DAY {
        format!("{}d {}h", s / DAY, (s % DAY) / 3600)
    } else if s >= 3600 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_merges_and_resamples() {
        // 10-minute samples, one pair swapped, one duplicate, one 2-hour gap.
        let mut times: Vec<i64> = (0..30).map(|i| i * 600_000).collect();
        times.extend((0..30).map(|i| 20 * 3_600_000 + i * 600_000));
        let mut values: Vec<f64> = (0..60).map(|i| i as f64).collect();
        times.swap(3, 4);
        values.swap(3, 4);
        times.push(600_000);
        values.push(3.0); // duplicate of t=10min whose value is 1 → mean 2
        let (s, info) = build(&times, &values, None, "tps").unwrap();
        assert_eq!(info.unsorted, 2);
        assert_eq!(info.duplicates, 1);
        assert_eq!(info.gaps, 1);
        assert_eq!(info.step_s, 600);
        assert_eq!(info.interval_s, 600.0);
        assert!(!info.mixed_intervals);
        assert_eq!(s.values[1], 2.0);
        assert_eq!(s.values[3], 3.0);
        assert!(s.values[40].is_nan());
        assert_eq!(s.values[120], 30.0);
        assert!(info.missing_pct > 0.0);
    }

    #[test]
    fn mixed_intervals_are_noticed() {
        let mut times: Vec<i64> = (0..100).map(|i| i * 10_000).collect();
        times.extend((0..100).map(|i| 1_000_000 + i * 60_000));
        let values = vec![1.0; times.len()];
        let (_, info) = build(&times, &values, None, "tps").unwrap();
        assert!(info.mixed_intervals);
        assert_eq!(info.step_s, 300);
    }

    #[test]
    fn too_few_values_is_a_data_error() {
        let e = build(&[0, 1000], &[1.0, f64::NAN], None, "tps").unwrap_err();
        assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr);
        assert!(format!("{e:#}").contains("1 value of tps"), "{e:#}");
    }

    #[test]
    fn quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&v, 0.5), 3.0);
        assert_eq!(quantile_sorted(&v, 0.9), 4.6);
        assert_eq!(quantile(&[5.0, f64::NAN, 1.0], 0.0), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
