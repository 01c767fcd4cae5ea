//! Walk-forward backtest: how much worse than the best window was each strategy's choice?
//!
//! At each origin (every `every` grid points, once `min_train` of history lies behind it,
//! and while a whole horizon of actual data lies after it) every strategy plans the horizon
//! from the history before the origin only, and its first window is compared with what
//! happened:
//!
//! - **regret** = actual mean load of the chosen window − actual mean load of the quietest
//!   window in the horizon (0 is perfect; in the metric's unit);
//! - **hit** = the chosen window is among the quietest 5% of the horizon's windows.
//!
//! Windows with less than half of their points observed are not candidates for "the best",
//! and an origin whose chosen window was not observed is skipped for that strategy.
//!
//! `auto` is evaluated honestly, nested: at each origin it follows the candidate model with
//! the lowest p90 regret over the origins whose horizon had already ended.

use serde::Serialize;

use crate::models::{ranked_starts, Data, Kind, ModelName};
use crate::series::{quantile, quantile_sorted, round3};

/// Backtest settings, in grid points.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Window length.
    pub window: usize,
    /// Horizon length.
    pub horizon: usize,
    /// Distance between origins.
    pub every: usize,
    /// History required before the first origin.
    pub min_train: usize,
    /// Seed for the random baseline and the forest.
    pub seed: u64,
}

/// One strategy at one origin.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Grid index of the origin.
    pub origin: usize,
    /// Grid index of the chosen window's start.
    pub chosen: usize,
    /// Grid index of the best window's start.
    pub best: usize,
    /// Actual mean load of the chosen window.
    pub chosen_load: f64,
    /// Actual mean load of the best window.
    pub best_load: f64,
    /// `chosen_load - best_load`.
    pub regret: f64,
    /// Chosen window among the quietest 5%.
    pub hit: bool,
}

/// One strategy over all origins.
#[derive(Clone, Debug)]
pub struct Track {
    /// Strategy name.
    pub name: &'static str,
    /// Model or baseline.
    pub kind: Kind,
    /// Per origin (`None` where the chosen window was not observed).
    pub outcomes: Vec<Option<Outcome>>,
}

/// The `evaluation` record: one strategy's scores.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Strategy name (`auto` for the nested selection).
    pub model: String,
    /// `model` or `baseline`.
    pub kind: Kind,
    /// Origins scored.
    pub origins: usize,
    /// Mean regret.
    pub mean_regret: f64,
    /// Median regret.
    pub median_regret: f64,
    /// 90th percentile of regret.
    pub p90_regret: f64,
    /// Share of origins where the chosen window was among the quietest 5%.
    pub hit_rate: f64,
    /// Rank by p90 regret, then mean regret (1 = best).
    pub rank: usize,
}

impl shared::Record for Evaluation {
    const TYPE: &'static str = "evaluation";
}

/// The origins a backtest over `len` points of data uses.
pub fn origins(len: usize, cfg: &Config) -> Vec<usize> {
    if cfg.every == 0 || len < cfg.min_train + cfg.horizon {
        return Vec::new();
    }
    (cfg.min_train..=len - cfg.horizon)
        .step_by(cfg.every)
        .collect()
}

/// Actual window means over `values`: `None` where under half the points were observed.
struct Actual {
    sum: Vec<f64>,
    cnt: Vec<u32>,
}

impl Actual {
    fn new(values: &[f64]) -> Actual {
        let mut sum = Vec::with_capacity(values.len() + 1);
        let mut cnt = Vec::with_capacity(values.len() + 1);
        sum.push(0.0);
        cnt.push(0);
        for v in values {
            let f = v.is_finite();
            sum.push(sum.last().unwrap() + if f { *v } else { 0.0 });
            cnt.push(cnt.last().unwrap() + u32::from(f));
        }
        Actual { sum, cnt }
    }

    fn mean(&self, start: usize, w: usize) -> Option<f64> {
        let c = self.cnt[start + w] - self.cnt[start];
        (c as usize * 2 >= w && c > 0)
            .then(|| (self.sum[start + w] - self.sum[start]) / f64::from(c))
    }
}

/// Run the backtest of `names` over the whole series in `data` (`values` are the actuals).
pub fn run(values: &[f64], data: &Data, names: &[ModelName], cfg: &Config) -> Vec<Track> {
    let actual = Actual::new(values);
    let origins = origins(values.len(), cfg);
    let mut strategies: Vec<_> = names
        .iter()
        .map(|n| (n.kind(), n.build(cfg.seed)))
        .collect();
    let mut tracks: Vec<Track> = strategies
        .iter()
        .map(|(k, s)| Track {
            name: s.name(),
            kind: *k,
            outcomes: Vec::with_capacity(origins.len()),
        })
        .collect();
    for &o in &origins {
        // The truth for this horizon.
        let candidates: Vec<(usize, f64)> = (o..=o + cfg.horizon - cfg.window)
            .filter_map(|s| actual.mean(s, cfg.window).map(|m| (s, m)))
            .collect();
        let Some(&(best, best_load)) = candidates.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
            for t in &mut tracks {
                t.outcomes.push(None);
            }
            continue;
        };
        let mut sorted: Vec<f64> = candidates.iter().map(|c| c.1).collect();
        sorted.sort_by(f64::total_cmp);
        let hit_limit = quantile_sorted(&sorted, 0.05);
        for ((_, s), track) in strategies.iter_mut().zip(&mut tracks) {
            let plan = s.plan(data, o, cfg.horizon, cfg.window);
            let outcome = ranked_starts(&plan, cfg.window)
                .first()
                .map(|&off| o + off)
                .and_then(|chosen| {
                    actual.mean(chosen, cfg.window).map(|load| Outcome {
                        origin: o,
                        chosen,
                        best,
                        chosen_load: load,
                        best_load,
                        regret: (load - best_load).max(0.0),
                        hit: load <= hit_limit,
                    })
                });
            track.outcomes.push(outcome);
        }
    }
    tracks
}

/// The nested `auto` track: at each origin, the candidate with the lowest p90 regret over
/// the origins whose horizon ended before it (the first candidate until three have).
pub fn auto_track(tracks: &[Track], candidates: &[&str], cfg: &Config) -> Track {
    let cands: Vec<&Track> = candidates
        .iter()
        .filter_map(|c| tracks.iter().find(|t| t.name == *c))
        .collect();
    let n = cands.first().map_or(0, |t| t.outcomes.len());
    let mut outcomes = Vec::with_capacity(n);
    for k in 0..n {
        let origin_k = cands
            .iter()
            .find_map(|t| t.outcomes[k].as_ref().map(|o| o.origin));
        let pick = origin_k
            .and_then(|ok| {
                let scored: Vec<(usize, Score)> = cands
                    .iter()
                    .enumerate()
                    .map(|(ci, t)| {
                        let done: Vec<&Outcome> = t.outcomes[..k]
                            .iter()
                            .flatten()
                            .filter(|o| o.origin + cfg.horizon <= ok)
                            .collect();
                        (ci, Score::of(&done))
                    })
                    .collect();
                if scored.iter().all(|(_, s)| s.n >= 3) {
                    scored
                        .into_iter()
                        .min_by(|a, b| a.1.cmp_key().total_cmp_tuple(&b.1.cmp_key()))
                        .map(|(ci, _)| ci)
                } else {
                    None
                }
            })
            .unwrap_or(0);
        outcomes.push(cands.get(pick).and_then(|t| t.outcomes[k].clone()));
    }
    Track {
        name: "auto",
        kind: Kind::Model,
        outcomes,
    }
}

/// Regret statistics of a set of outcomes.
#[derive(Clone, Copy, Debug)]
pub struct Score {
    /// Outcomes.
    pub n: usize,
    /// Mean regret.
    pub mean: f64,
    /// Median regret.
    pub median: f64,
    /// p90 regret.
    pub p90: f64,
    /// Hit rate.
    pub hit_rate: f64,
}

trait TupleCmp {
    fn total_cmp_tuple(&self, other: &Self) -> std::cmp::Ordering;
}

impl TupleCmp for (f64, f64) {
    fn total_cmp_tuple(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.total_cmp(&other.1))
    }
}

impl Score {
    /// Score outcomes.
    pub fn of(outcomes: &[&Outcome]) -> Score {
        let regrets: Vec<f64> = outcomes.iter().map(|o| o.regret).collect();
        let n = regrets.len();
        if n == 0 {
            return Score {
                n,
                mean: f64::NAN,
                median: f64::NAN,
                p90: f64::NAN,
                hit_rate: f64::NAN,
            };
        }
        Score {
            n,
            mean: regrets.iter().sum::<f64>() / n as f64,
            median: quantile(&regrets, 0.5),
            p90: quantile(&regrets, 0.9),
            hit_rate: outcomes.iter().filter(|o| o.hit).count() as f64 / n as f64,
        }
    }

    /// Sort key: p90, then mean (NaN last).
    fn cmp_key(&self) -> (f64, f64) {
        let f = |x: f64| if x.is_finite() { x } else { f64::INFINITY };
        (f(self.p90), f(self.mean))
    }
}

impl Track {
    /// The score over all origins.
    pub fn score(&self) -> Score {
        let all: Vec<&Outcome> = self.outcomes.iter().flatten().collect();
        Score::of(&all)
    }
}

/// `evaluation` records for tracks, ranked by p90 regret then mean regret.
pub fn evaluations(tracks: &[Track]) -> Vec<Evaluation> {
    let mut scored: Vec<(usize, Score)> = tracks.iter().map(|t| t.score()).enumerate().collect();
    scored.sort_by(|a, b| a.1.cmp_key().total_cmp_tuple(&b.1.cmp_key()));
    let mut out: Vec<Evaluation> = scored
        .iter()
        .enumerate()
        .map(|(rank, (i, s))| Evaluation {
            model: tracks[*i].name.to_owned(),
            kind: tracks[*i].kind,
            origins: s.n,
            mean_regret: round3(s.mean),
            median_regret: round3(s.median),
            p90_regret: round3(s.p90),
            hit_rate: round3(s.hit_rate),
            rank: rank + 1,
        })
        .collect();
    // Strategies without a single scored origin have no rank to speak of.
    for e in &mut out {
        if e.origins == 0 {
            e.rank = 0;
        }
    }
    out
}

/// The best of `names` by p90 regret then mean regret (the first on ties).
pub fn best_of<'a>(tracks: &'a [Track], names: &[&str]) -> Option<(&'a Track, Score)> {
    tracks
        .iter()
        .filter(|t| names.contains(&t.name))
        .map(|t| (t, t.score()))
        .filter(|(_, s)| s.n > 0)
        .min_by(|a, b| a.1.cmp_key().total_cmp_tuple(&b.1.cmp_key()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ProfileParams;
    use crate::time::{Calendar, Zone};

    #[test]
    fn regret_is_zero_for_a_perfectly_regular_week() {
        let z = Zone::utc();
        // Three weeks of hourly data, quietest at 04:00 every day, Sunday quieter still.
        let n = 24 * 21;
        let cal = Calendar::new(&z, 1_767_571_200, 3600, n);
        let values: Vec<f64> = (0..n)
            .map(|i| {
                let h = (i % 24) as f64;
                let sunday = (i / 24) % 7 == 6;
                (10.0 + (h - 4.0).abs()) * if sunday { 0.5 } else { 1.0 }
            })
            .collect();
        let data = Data::new(&values, &cal, ProfileParams::default());
        let cfg = Config {
            window: 2,
            horizon: 48,
            every: 24,
            min_train: 24 * 7,
            seed: 1,
        };
        let tracks = run(
            &values,
            &data,
            &[ModelName::Profile, ModelName::LastWeek, ModelName::Random],
            &cfg,
        );
        let ev = evaluations(&tracks);
        let profile = ev.iter().find(|e| e.model == "profile").unwrap();
        assert_eq!(profile.origins, origins(n, &cfg).len());
        assert_eq!(profile.p90_regret, 0.0);
        assert_eq!(profile.hit_rate, 1.0);
        let random = ev.iter().find(|e| e.model == "random").unwrap();
        assert!(random.mean_regret > 1.0);
        assert!(profile.rank < random.rank);
        let auto = auto_track(&tracks, &["profile", "last-week"], &cfg);
        assert_eq!(auto.score().p90, 0.0);
    }
}
