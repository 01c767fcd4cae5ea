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
//! `auto` is evaluated honestly, nested: at each origin it applies its rule ([`choose`]) to
//! the candidates' scores over the origins whose horizon had already ended, and to the
//! [`Guard`]'s verdict on each candidate's window at this origin (which uses only the data
//! before it, like every strategy).

use serde::Serialize;

use crate::models::{ranked_starts, Data, Guard, Kind, ModelName};
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
    /// Per origin: whether the [`Guard`] admitted the chosen window (true without a choice).
    pub admitted: Vec<bool>,
    /// Per origin, for `auto`: the candidate it followed (empty for the others).
    pub followed: Vec<Option<&'static str>>,
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
            admitted: Vec::with_capacity(origins.len()),
            followed: Vec::new(),
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
                t.admitted.push(true);
            }
            continue;
        };
        let guard = Guard::new(data, o, cfg.horizon, cfg.window);
        let mut sorted: Vec<f64> = candidates.iter().map(|c| c.1).collect();
        sorted.sort_by(f64::total_cmp);
        let hit_limit = quantile_sorted(&sorted, 0.05);
        for ((_, s), track) in strategies.iter_mut().zip(&mut tracks) {
            let plan = s.plan(data, o, cfg.horizon, cfg.window);
            let first = ranked_starts(&plan, cfg.window).first().copied();
            track
                .admitted
                .push(first.is_none_or(|off| guard.admits(off, cfg.window)));
            let outcome = first.map(|off| o + off).and_then(|chosen| {
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

/// Finished origins each candidate needs before `auto` compares them; until then it
/// follows the first candidate the guard admits.
pub const WARM_UP: usize = 3;

/// How much lower (relative) a candidate's p90 regret must be than a simpler candidate's
/// before `auto` prefers it.
pub const MARGIN: f64 = 0.1;

/// Why `auto` chose a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Fewer than [`WARM_UP`] finished origins to compare: the simplest admitted candidate.
    WarmUp,
    /// The lowest p90 regret (then mean regret) of the admitted candidates.
    Lowest,
    /// Simpler than the one with the lowest p90 regret, and within [`MARGIN`] of it.
    Simpler,
    /// Too little history to backtest (`recommend`): the profile.
    ShortHistory,
}

/// What [`choose`] decided.
#[derive(Clone, Debug)]
pub struct Pick {
    /// The chosen candidate.
    pub index: usize,
    /// Why.
    pub reason: Reason,
    /// The admitted candidate with the lowest p90 regret (`None` in the warm-up).
    pub lowest: Option<usize>,
    /// Candidates the guard refused.
    pub refused: Vec<usize>,
}

/// `auto`'s rule. `scores` are the candidates' backtest scores, simplest candidate first;
/// `admitted` whether the [`Guard`] admits each one's window now. Among the admitted ones
/// (all, if the guard admits none), the simplest whose p90 regret is within [`MARGIN`] of
/// the lowest; the simplest admitted one while any has fewer than [`WARM_UP`] origins scored.
pub fn choose(scores: &[Score], admitted: &[bool]) -> Option<Pick> {
    let refused: Vec<usize> = (0..scores.len())
        .filter(|&i| !admitted.get(i).copied().unwrap_or(true))
        .collect();
    let mut eligible: Vec<usize> = (0..scores.len()).filter(|i| !refused.contains(i)).collect();
    if eligible.is_empty() {
        eligible = (0..scores.len()).collect();
    }
    let &first = eligible.first()?;
    if eligible.iter().any(|&i| scores[i].n < WARM_UP) {
        return Some(Pick {
            index: first,
            reason: Reason::WarmUp,
            lowest: None,
            refused,
        });
    }
    let lowest = *eligible
        .iter()
        .min_by(|&&a, &&b| scores[a].cmp_key().total_cmp_tuple(&scores[b].cmp_key()))?;
    let bar = scores[lowest].cmp_key().0 * (1.0 + MARGIN);
    let index = eligible
        .iter()
        .copied()
        .find(|&i| i == lowest || scores[i].cmp_key().0 <= bar)
        .unwrap_or(lowest);
    Some(Pick {
        index,
        reason: if index == lowest {
            Reason::Lowest
        } else {
            Reason::Simpler
        },
        lowest: Some(lowest),
        refused,
    })
}

/// The nested `auto` track: at each origin, [`choose`] with the candidates' scores over the
/// origins whose horizon ended before it and the guard's verdict at this origin.
pub fn auto_track(tracks: &[Track], candidates: &[&str], cfg: &Config) -> Track {
    let cands: Vec<&Track> = candidates
        .iter()
        .filter_map(|c| tracks.iter().find(|t| t.name == *c))
        .collect();
    let n = cands.first().map_or(0, |t| t.outcomes.len());
    let mut outcomes = Vec::with_capacity(n);
    let mut followed = Vec::with_capacity(n);
    let mut admitted = Vec::with_capacity(n);
    for k in 0..n {
        let origin_k = cands
            .iter()
            .find_map(|t| t.outcomes[k].as_ref().map(|o| o.origin));
        let pick = origin_k.and_then(|ok| {
            let scores: Vec<Score> = cands
                .iter()
                .map(|t| {
                    let done: Vec<&Outcome> = t.outcomes[..k]
                        .iter()
                        .flatten()
                        .filter(|o| o.origin + cfg.horizon <= ok)
                        .collect();
                    Score::of(&done)
                })
                .collect();
            let adm: Vec<bool> = cands.iter().map(|t| t.admitted[k]).collect();
            choose(&scores, &adm)
        });
        let t = pick.map_or(cands.first().copied(), |p| cands.get(p.index).copied());
        outcomes.push(t.and_then(|t| t.outcomes[k].clone()));
        followed.push(t.map(|t| t.name));
        admitted.push(t.is_none_or(|t| t.admitted[k]));
    }
    Track {
        name: "auto",
        kind: Kind::Model,
        outcomes,
        admitted,
        followed,
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
    pub fn cmp_key(&self) -> (f64, f64) {
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
        assert_eq!(auto.followed.len(), auto.outcomes.len());
        assert!(tracks.iter().all(|t| t.admitted.len() == t.outcomes.len()));
        // The profile's own windows always pass its guard.
        let profile = tracks.iter().find(|t| t.name == "profile").unwrap();
        assert!(profile.admitted.iter().all(|a| *a));
    }

    fn score(n: usize, p90: f64, mean: f64) -> Score {
        Score {
            n,
            mean,
            median: mean,
            p90,
            hit_rate: 1.0,
        }
    }

    #[test]
    fn choose_prefers_the_simpler_within_the_margin_and_skips_refused_ones() {
        let both = [true, true];
        // Too few origins scored: the simplest.
        let p = choose(&[score(2, 9.0, 9.0), score(5, 1.0, 1.0)], &both).unwrap();
        assert_eq!((p.index, p.reason, p.lowest), (0, Reason::WarmUp, None));
        // Within the margin of the lowest: the simpler.
        let p = choose(&[score(5, 1.05, 1.0), score(5, 1.0, 0.5)], &both).unwrap();
        assert_eq!((p.index, p.reason, p.lowest), (0, Reason::Simpler, Some(1)));
        // Beyond it: the lowest.
        let p = choose(&[score(5, 1.2, 1.0), score(5, 1.0, 0.5)], &both).unwrap();
        assert_eq!((p.index, p.reason), (1, Reason::Lowest));
        // Equal p90: the lower mean is the lowest, the simpler is still preferred.
        let p = choose(&[score(5, 1.0, 1.0), score(5, 1.0, 0.5)], &both).unwrap();
        assert_eq!((p.index, p.reason, p.lowest), (0, Reason::Simpler, Some(1)));
        // A refused candidate is skipped, however good its backtest.
        let p = choose(&[score(5, 1.0, 1.0), score(5, 5.0, 0.5)], &[false, true]).unwrap();
        assert_eq!((p.index, p.refused), (1, vec![0]));
        let p = choose(
            &[score(0, f64::NAN, f64::NAN), score(1, 1.0, 1.0)],
            &[false, true],
        );
        assert_eq!(p.map(|p| (p.index, p.reason)), Some((1, Reason::WarmUp)));
        // All refused: the guard cannot help, the backtest decides.
        let p = choose(&[score(5, 1.0, 1.0), score(5, 5.0, 0.5)], &[false, false]).unwrap();
        assert_eq!(p.index, 0);
        // Unscored candidates rank last.
        let p = choose(&[score(5, f64::NAN, f64::NAN), score(5, 3.0, 3.0)], &both).unwrap();
        assert_eq!(p.index, 1);
        assert!(choose(&[], &[]).is_none());
    }
}
