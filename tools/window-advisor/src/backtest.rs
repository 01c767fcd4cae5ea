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
//! the candidates' regrets at the origins whose horizon had already ended. The [`Guard`]'s
//! verdict on each strategy's window is recorded (`admitted`, when [`Config::guard`] asks for
//! it: `evaluate --detail` prints it) but no longer used by `auto`.

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
    /// Only the last this many origins (`recommend --model auto`; `None`: all).
    pub last: Option<usize>,
    /// Record the [`Guard`]'s verdict on each choice ([`Track::admitted`]; only
    /// `evaluate --detail` prints it).
    pub guard: bool,
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
    /// Per origin: whether the [`Guard`] admitted the chosen window (true without a choice);
    /// empty unless [`Config::guard`].
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
    let all: Vec<usize> = (cfg.min_train..=len - cfg.horizon)
        .step_by(cfg.every)
        .collect();
    let skip = cfg.last.map_or(0, |k| all.len().saturating_sub(k));
    all[skip..].to_vec()
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
            admitted: Vec::with_capacity(if cfg.guard { origins.len() } else { 0 }),
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
                if cfg.guard {
                    t.admitted.push(true);
                }
            }
            continue;
        };
        let guard = cfg
            .guard
            .then(|| Guard::new(data, o, cfg.horizon, cfg.window));
        let mut sorted: Vec<f64> = candidates.iter().map(|c| c.1).collect();
        sorted.sort_by(f64::total_cmp);
        let hit_limit = quantile_sorted(&sorted, 0.05);
        for ((_, s), track) in strategies.iter_mut().zip(&mut tracks) {
            let plan = s.plan(data, o, cfg.horizon, cfg.window);
            let first = ranked_starts(&plan, cfg.window).first().copied();
            if let Some(guard) = &guard {
                track
                    .admitted
                    .push(first.is_none_or(|off| guard.admits(off, cfg.window)));
            }
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

/// Finished origins a candidate needs before `auto` compares it with the default; until then
/// it follows the default.
pub const WARM_UP: usize = 14;

/// The latest finished origins `auto` compares the candidates on: eight weeks of daily
/// origins. Old enough history says little about which rule suits the load now, and it
/// keeps `recommend --model auto` on a year of 5-minute data under two seconds.
pub const AUTO_ORIGINS: usize = 56;

/// How many standard errors lower a candidate's paired regret must be than the default's
/// before `auto` follows it: a paired t statistic below −`Z`.
pub const Z: f64 = 3.0;

/// Why `auto` chose a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Fewer than [`WARM_UP`] finished origins to compare: the default (the hour-of-week
    /// mean).
    WarmUp,
    /// No candidate's regret was significantly lower than the default's: the default.
    Default,
    /// Significantly lower regret than the default's, paired origin by origin (t < −[`Z`]).
    Better,
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
    /// The paired t statistic of the chosen candidate's regret against the default's
    /// (`None` for the default itself).
    pub t: Option<f64>,
    /// Finished origins compared.
    pub origins: usize,
}

/// The paired t statistic of `a − b` over the origins where both have a regret, and the
/// number of such origins. A constant difference has t = ±∞ (or 0 when it is 0).
pub fn paired_t(a: &[Option<f64>], b: &[Option<f64>]) -> (f64, usize) {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| Some((*x)? - (*y)?))
        .collect();
    let n = d.len();
    if n == 0 {
        return (0.0, 0);
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    let se = (var / n as f64).sqrt();
    let t = if se > 1e-12 {
        mean / se
    } else if mean.abs() > 1e-12 {
        mean.signum() * f64::INFINITY
    } else {
        0.0
    };
    (t, n)
}

/// `auto`'s rule. `regrets[c][k]` is candidate `c`'s regret at finished origin `k` (`None`
/// where it chose an unobserved window), candidate 0 being the default.
///
/// The default (the hour-of-week mean, which no simple rule beat on the real traces) is
/// followed unless another candidate's regret was lower at the same origins by more than
/// [`Z`] standard errors of the paired difference, over at least [`WARM_UP`] of them. Pairing
/// takes out what the origins share (an odd week is odd for every strategy), so a real
/// difference shows long before two separate means would; the high bar keeps `auto` from
/// chasing a candidate that was merely lucky, which on real load costs more than it gains
/// (bench/window-advisor.sh). Among those that pass, the lowest mean regret.
pub fn choose(regrets: &[Vec<Option<f64>>]) -> Option<Pick> {
    let def = regrets.first()?;
    let origins = def.iter().flatten().count();
    let mean = |r: &Vec<Option<f64>>| {
        let v: Vec<f64> = r.iter().flatten().copied().collect();
        if v.is_empty() {
            f64::INFINITY
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut better: Vec<(f64, f64, usize)> = Vec::new();
    let mut warm = false;
    for (i, r) in regrets.iter().enumerate().skip(1) {
        let (t, n) = paired_t(r, def);
        if n < WARM_UP {
            warm = true;
            continue;
        }
        if t < -Z {
            better.push((mean(r), t, i));
        }
    }
    better.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(&(_, t, index)) = better.first() {
        return Some(Pick {
            index,
            reason: Reason::Better,
            t: Some(t),
            origins,
        });
    }
    Some(Pick {
        index: 0,
        reason: if warm {
            Reason::WarmUp
        } else {
            Reason::Default
        },
        t: None,
        origins,
    })
}

/// The regrets of `tracks` at the last [`AUTO_ORIGINS`] of the origins `0..k` whose horizon
/// ended by `until` (a grid index), aligned by origin.
pub fn finished_regrets(
    tracks: &[&Track],
    k: usize,
    until: usize,
    horizon: usize,
) -> Vec<Vec<Option<f64>>> {
    // The origin of slot j is the same for every track; find it in any.
    let done: Vec<usize> = (0..k)
        .filter(|&j| {
            tracks
                .iter()
                .find_map(|t| t.outcomes[j].as_ref().map(|o| o.origin))
                .is_some_and(|o| o + horizon <= until)
        })
        .collect();
    let done = &done[done.len().saturating_sub(AUTO_ORIGINS)..];
    tracks
        .iter()
        .map(|t| {
            done.iter()
                .map(|&j| t.outcomes[j].as_ref().map(|o| o.regret))
                .collect()
        })
        .collect()
}

/// The nested `auto` track: at each origin, [`choose`] with the candidates' regrets at the
/// origins whose horizon ended before it.
pub fn auto_track(tracks: &[Track], candidates: &[&str], cfg: &Config) -> Track {
    let cands: Vec<&Track> = candidates
        .iter()
        .filter_map(|c| tracks.iter().find(|t| t.name == *c))
        .collect();
    let n = cands.first().map_or(0, |t| t.outcomes.len());
    let mut outcomes = Vec::with_capacity(n);
    let mut followed = Vec::with_capacity(n);
    let mut admitted = Vec::with_capacity(if cfg.guard { n } else { 0 });
    for k in 0..n {
        let origin_k = cands
            .iter()
            .find_map(|t| t.outcomes[k].as_ref().map(|o| o.origin));
        let pick = origin_k.and_then(|ok| choose(&finished_regrets(&cands, k, ok, cfg.horizon)));
        let t = pick.map_or(cands.first().copied(), |p| cands.get(p.index).copied());
        outcomes.push(t.and_then(|t| t.outcomes[k].clone()));
        followed.push(t.map(|t| t.name));
        if cfg.guard {
            admitted.push(t.is_none_or(|t| t.admitted[k]));
        }
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
            last: None,
            guard: true,
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

    #[test]
    fn choose_follows_the_default_unless_another_is_clearly_better() {
        // Candidate 1 is lower by 1 at every origin, give or take 0.1: significant.
        let def: Vec<Option<f64>> = (0..20).map(|i| Some(5.0 + (i % 3) as f64)).collect();
        let better: Vec<Option<f64>> = def
            .iter()
            .enumerate()
            .map(|(i, r)| r.map(|r| r - 1.0 + if i % 2 == 0 { 0.1 } else { -0.1 }))
            .collect();
        let p = choose(&[def.clone(), better.clone()]).unwrap();
        assert_eq!((p.index, p.reason), (1, Reason::Better));
        assert!(p.t.unwrap() < -Z);
        // Too few origins: the default, while warming up.
        let p = choose(&[def[..10].to_vec(), better[..10].to_vec()]).unwrap();
        assert_eq!((p.index, p.reason), (0, Reason::WarmUp));
        // Lower on average but noisy (lucky twice): not significant, the default.
        let noisy: Vec<Option<f64>> = def
            .iter()
            .enumerate()
            .map(|(i, r)| r.map(|r| if i % 10 == 0 { r - 30.0 } else { r + 1.0 }))
            .collect();
        let (t, n) = paired_t(&noisy, &def);
        assert_eq!(n, 20);
        assert!(t < 0.0 && t > -Z, "{t}");
        let p = choose(&[def.clone(), noisy]).unwrap();
        assert_eq!((p.index, p.reason, p.t), (0, Reason::Default, None));
        // Origins where a candidate has no regret are left out of the pairs.
        let mut gappy = better.clone();
        gappy[3] = None;
        assert_eq!(paired_t(&gappy, &def).1, 19);
        assert!(choose(&[]).is_none());
    }
}
