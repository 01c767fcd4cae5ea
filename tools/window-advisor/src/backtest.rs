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
//! the candidates' regrets at the origins whose horizon had already ended ([`finished`]). The [`Guard`]'s
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
    /// Grid points in a week (how `auto` groups origins).
    pub week: usize,
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
    run_at(values, data, names, cfg, &origins(values.len(), cfg))
}

/// [`run`] split over the machine's CPUs (up to 4), a contiguous share of the origins each,
/// with the same result. Only for strategies whose plan at an origin does not depend on the
/// origins planned before it (not the forest, which reuses its fit).
pub fn run_parallel(values: &[f64], data: &Data, names: &[ModelName], cfg: &Config) -> Vec<Track> {
    let all = origins(values.len(), cfg);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    if threads == 1 || all.len() < 2 * threads {
        return run_at(values, data, names, cfg, &all);
    }
    let (series, cal, params) = (data.values(), data.cal, data.params);
    let parts: Vec<Vec<Track>> = std::thread::scope(|scope| {
        let handles: Vec<_> = all
            .chunks(all.len().div_ceil(threads))
            .map(|chunk| {
                scope.spawn(move || {
                    let data = Data::new(series, cal, params);
                    run_at(values, &data, names, cfg, chunk)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a backtest thread panicked"))
            .collect()
    });
    let mut parts = parts.into_iter();
    let mut tracks = parts.next().unwrap_or_default();
    for part in parts {
        for (t, p) in tracks.iter_mut().zip(part) {
            t.outcomes.extend(p.outcomes);
            t.admitted.extend(p.admitted);
        }
    }
    tracks
}

/// [`run`] at the given origins only.
fn run_at(
    values: &[f64],
    data: &Data,
    names: &[ModelName],
    cfg: &Config,
    origins: &[usize],
) -> Vec<Track> {
    let actual = Actual::new(values);
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
    for &o in origins {
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

/// Finished origins a candidate needs before `auto` compares it with the default origin by
/// origin.
pub const WARM_UP_ORIGINS: usize = 14;

/// Finished weeks of origins a candidate needs before `auto` compares it with the default
/// week by week.
pub const WARM_UP_WEEKS: usize = 3;

/// The latest finished weeks of origins `auto` compares week by week: what suits the load
/// now.
pub const AUTO_WEEKS: usize = 8;

/// The latest finished weeks of origins `auto` compares origin by origin: the long run, but
/// not older than half a year, which also keeps `recommend --model auto` on a year of
/// 5-minute data under two seconds. (On the real traces of bench/data 24 weeks or more gave
/// the same verdicts as the whole year; 20 lost two trace-windows more.)
pub const LONG_WEEKS: usize = 26;

/// The origins `recommend --model auto` backtests (the last this many): enough for
/// [`LONG_WEEKS`] whole weeks.
pub fn auto_origins(cfg: &Config) -> usize {
    ((LONG_WEEKS + 1) * cfg.week).div_ceil(cfg.every.max(1))
}

/// How many standard errors lower a candidate's paired regret must be than the default's
/// before `auto` follows it: a paired t statistic below −`Z`.
pub const Z: f64 = 3.0;

/// Why `auto` chose a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Too few finished origins to compare ([`WARM_UP_ORIGINS`], [`WARM_UP_WEEKS`]): the
    /// default (`week-slot`).
    WarmUp,
    /// No candidate's regret was significantly lower than the default's: the default.
    Default,
    /// Significantly lower regret than the default's, paired (t < −[`Z`]).
    Better,
    /// Too little history to backtest (`recommend`): the profile.
    ShortHistory,
}

/// Over what a paired comparison ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The finished origins of the last [`LONG_WEEKS`] weeks, one regret each.
    Origins,
    /// The last [`AUTO_WEEKS`] finished weeks, one mean regret each.
    Weeks,
}

/// What [`choose`] decided.
#[derive(Clone, Debug)]
pub struct Pick {
    /// The chosen candidate.
    pub index: usize,
    /// Why.
    pub reason: Reason,
    /// The paired t statistic of the chosen candidate's regret against the default's
    /// (`None` for the default itself), and what it was computed over.
    pub t: Option<(f64, Basis)>,
    /// Finished origins compared.
    pub origins: usize,
    /// Finished weeks compared.
    pub weeks: usize,
}

/// The paired t statistic of `a − b` over the entries where both have a value, and the
/// number of such entries. A constant difference has t = ±∞ (or 0 when it is 0).
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

/// The regrets `auto` compares, candidate 0 being the default (`None` where a candidate
/// chose no observed window).
#[derive(Clone, Debug, Default)]
pub struct Finished {
    /// `origins[c][k]`: candidate `c`'s regret at finished origin `k`, those of the last
    /// [`LONG_WEEKS`] weeks.
    pub origins: Vec<Vec<Option<f64>>>,
    /// `weeks[c][k]`: its mean regret over the finished origins of week `k`, the last
    /// [`AUTO_WEEKS`] weeks.
    pub weeks: Vec<Vec<Option<f64>>>,
}

/// `auto`'s rule. The default (`week-slot`) is followed unless another candidate's regret
/// was lower at the same origins by more than [`Z`] standard errors of the paired
/// difference, by either of two counts:
///
/// - **origin by origin over the last [`LONG_WEEKS`] weeks** (at least
///   [`WARM_UP_ORIGINS`]): the long run. The origins of one week plan mostly the same days and often choose the very same
///   window, so they are not independent and the t statistic overstates; over a long
///   history a candidate that is merely lucky rarely passes, and early on, when a change of
///   load shows in every origin, this is the count that moves first.
/// - **week by week over the last [`AUTO_WEEKS`] weeks** (at least [`WARM_UP_WEEKS`]): one
///   mean regret per week, independent enough for the t statistic to mean what it says, and
///   recent: what suits the load now.
///
/// Pairing takes out what the origins share (an odd week is odd for every strategy). Among
/// the candidates that pass, the lowest mean regret. With the weekly count alone, auto lost
/// to the best baseline on one more synthetic kind (bursts); with the count over origins
/// alone, on one more real trace-window (bench/window-advisor.sh).
pub fn choose(f: &Finished) -> Option<Pick> {
    let def = f.origins.first()?;
    let def_weeks = f.weeks.first()?;
    let origins = def.iter().flatten().count();
    let weeks = def_weeks.iter().flatten().count();
    let mean = |r: &Vec<Option<f64>>| {
        let v: Vec<f64> = r.iter().flatten().copied().collect();
        if v.is_empty() {
            f64::INFINITY
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut better: Vec<(f64, (f64, Basis), usize)> = Vec::new();
    let mut warm = false;
    for (i, (r, w)) in f.origins.iter().zip(&f.weeks).enumerate().skip(1) {
        let (to, no) = paired_t(r, def);
        let (tw, nw) = paired_t(w, def_weeks);
        warm |= no < WARM_UP_ORIGINS && nw < WARM_UP_WEEKS;
        let passed = if nw >= WARM_UP_WEEKS && tw < -Z {
            Some((tw, Basis::Weeks))
        } else if no >= WARM_UP_ORIGINS && to < -Z {
            Some((to, Basis::Origins))
        } else {
            None
        };
        if let Some(t) = passed {
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
            weeks,
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
        weeks,
    })
}

/// The regrets `auto` compares ([`Finished`]): of `tracks`' origins `0..k`, those whose
/// horizon ended by `until` (a grid index); weeks are origin / `week`.
pub fn finished(
    tracks: &[&Track],
    k: usize,
    until: usize,
    horizon: usize,
    week: usize,
) -> Finished {
    // The origin of slot j is the same for every track; find it in any.
    let done: Vec<(usize, usize)> = (0..k)
        .filter_map(|j| {
            let o = tracks
                .iter()
                .find_map(|t| t.outcomes[j].as_ref().map(|o| o.origin))?;
            (o + horizon <= until).then_some((j, o / week.max(1)))
        })
        .collect();
    let mut ids: Vec<usize> = done.iter().map(|d| d.1).collect();
    ids.dedup();
    let keep = &ids[ids.len().saturating_sub(AUTO_WEEKS)..];
    let long = ids[ids.len().saturating_sub(LONG_WEEKS)..].first().copied();
    let regret = |t: &Track, j: usize| t.outcomes[j].as_ref().map(|o| o.regret);
    Finished {
        origins: tracks
            .iter()
            .map(|t| {
                done.iter()
                    .filter(|d| long.is_some_and(|l| d.1 >= l))
                    .map(|d| regret(t, d.0))
                    .collect()
            })
            .collect(),
        weeks: tracks
            .iter()
            .map(|t| {
                keep.iter()
                    .map(|&w| {
                        let r: Vec<f64> = done
                            .iter()
                            .filter(|d| d.1 == w)
                            .filter_map(|d| regret(t, d.0))
                            .collect();
                        (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
                    })
                    .collect()
            })
            .collect(),
    }
}

/// The nested `auto` track over `tracks` (the strategies at the `origins` of `cfg`): at each
/// origin, [`choose`] with the candidates' regrets in `learn` (the same candidates
/// backtested at origins of their own, at most a day apart, as `recommend` would) whose
/// horizon ended before it. `learn` may be `tracks` itself.
pub fn auto_track(
    tracks: &[Track],
    learn: &[Track],
    origins: &[usize],
    candidates: &[&str],
    cfg: &Config,
) -> Track {
    let find = |ts: &'_ [Track]| -> Vec<usize> {
        candidates
            .iter()
            .filter_map(|c| ts.iter().position(|t| t.name == *c))
            .collect()
    };
    let (cands, known) = (find(tracks), find(learn));
    let known: Vec<&Track> = known.iter().map(|&i| &learn[i]).collect();
    let seen = known.first().map_or(0, |t| t.outcomes.len());
    let mut outcomes = Vec::with_capacity(origins.len());
    let mut followed = Vec::with_capacity(origins.len());
    let mut admitted = Vec::with_capacity(if cfg.guard { origins.len() } else { 0 });
    for (k, &o) in origins.iter().enumerate() {
        let pick = choose(&finished(&known, seen, o, cfg.horizon, cfg.week));
        let t = cands.get(pick.map_or(0, |p| p.index)).map(|&i| &tracks[i]);
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
            week: 24 * 7,
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
        let auto = auto_track(
            &tracks,
            &tracks,
            &origins(n, &cfg),
            &["profile", "last-week"],
            &cfg,
        );
        assert_eq!(auto.score().p90, 0.0);
        assert_eq!(auto.followed.len(), auto.outcomes.len());
        assert!(tracks.iter().all(|t| t.admitted.len() == t.outcomes.len()));
        // The profile's own windows always pass its guard.
        let profile = tracks.iter().find(|t| t.name == "profile").unwrap();
        assert!(profile.admitted.iter().all(|a| *a));
    }

    #[test]
    fn a_parallel_backtest_gives_the_same_tracks() {
        let z = Zone::utc();
        let n = 24 * 42;
        let cal = Calendar::new(&z, 1_767_571_200, 3600, n);
        let values: Vec<f64> = (0..n)
            .map(|i| 10.0 + ((i * 7919) % 13) as f64 + (i % 24) as f64)
            .collect();
        let data = Data::new(&values, &cal, ProfileParams::default());
        let cfg = Config {
            window: 2,
            horizon: 48,
            every: 12,
            min_train: 24 * 7,
            week: 24 * 7,
            seed: 1,
            last: None,
            guard: false,
        };
        let names = crate::models::candidate_models();
        let key = |ts: &[Track]| {
            ts.iter()
                .map(|t| {
                    let o = t
                        .outcomes
                        .iter()
                        .map(|o| o.as_ref().map(|o| (o.origin, o.chosen)));
                    format!("{} {:?}", t.name, o.collect::<Vec<_>>())
                })
                .collect::<Vec<_>>()
        };
        let serial = run(&values, &data, &names, &cfg);
        let parallel = run_parallel(&values, &data, &names, &cfg);
        assert_eq!(serial[0].outcomes.len(), origins(n, &cfg).len());
        assert_eq!(key(&serial), key(&parallel));
    }

    #[test]
    fn choose_follows_the_default_unless_another_is_clearly_better() {
        let both = |origins: Vec<Vec<Option<f64>>>, weeks: Vec<Vec<Option<f64>>>| Finished {
            origins,
            weeks,
        };
        // Candidate 1 is lower by 1 at every origin, give or take 0.1: significant over
        // the origins, with no weeks to speak of.
        let def: Vec<Option<f64>> = (0..20).map(|i| Some(5.0 + (i % 3) as f64)).collect();
        let better: Vec<Option<f64>> = def
            .iter()
            .enumerate()
            .map(|(i, r)| r.map(|r| r - 1.0 + if i % 2 == 0 { 0.1 } else { -0.1 }))
            .collect();
        let none = vec![Vec::new(), Vec::new()];
        let p = choose(&both(vec![def.clone(), better.clone()], none.clone())).unwrap();
        assert_eq!((p.index, p.reason), (1, Reason::Better));
        let (t, basis) = p.t.unwrap();
        assert!(t < -Z && basis == Basis::Origins);
        // The same over weeks alone (three of them are enough).
        let w = WARM_UP_WEEKS;
        let p = choose(&both(
            vec![def[..2].to_vec(), better[..2].to_vec()],
            vec![def[..w].to_vec(), better[..w].to_vec()],
        ))
        .unwrap();
        assert_eq!(
            (p.index, p.reason, p.t.unwrap().1),
            (1, Reason::Better, Basis::Weeks)
        );
        assert_eq!((p.origins, p.weeks), (2, w));
        // Too few of either: the default, while warming up.
        let p = choose(&both(
            vec![
                def[..WARM_UP_ORIGINS - 1].to_vec(),
                better[..WARM_UP_ORIGINS - 1].to_vec(),
            ],
            vec![def[..w - 1].to_vec(), better[..w - 1].to_vec()],
        ))
        .unwrap();
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
        let p = choose(&both(
            vec![def.clone(), noisy.clone()],
            vec![def.clone(), noisy],
        ))
        .unwrap();
        assert_eq!((p.index, p.reason, p.t), (0, Reason::Default, None));
        // Origins where a candidate has no regret are left out of the pairs.
        let mut gappy = better.clone();
        gappy[3] = None;
        assert_eq!(paired_t(&gappy, &def).1, 19);
        assert!(choose(&Finished::default()).is_none());
    }

    #[test]
    fn finished_origins_are_grouped_into_weeks_and_only_ended_horizons_count() {
        // Origins every day from day 7 of an hourly grid, horizon 7 days; regret = the
        // origin's day number for one track, 0 for the other.
        let day = 24;
        let mk = |f: fn(usize) -> f64, name: &'static str| Track {
            name,
            kind: Kind::Model,
            outcomes: (7..90)
                .map(|d| {
                    Some(Outcome {
                        origin: d * day,
                        chosen: d * day,
                        best: d * day,
                        chosen_load: 0.0,
                        best_load: 0.0,
                        regret: f(d),
                        hit: true,
                    })
                })
                .collect(),
            admitted: Vec::new(),
            followed: Vec::new(),
        };
        let a = mk(|d| d as f64, "a");
        let b = mk(|_| 0.0, "b");
        // At day 80, origins up to day 73 have ended: days 7..=73, 67 of them, in weeks 1
        // (days 7-13) to 10 (days 70-73 so far).
        let f = finished(&[&a, &b], a.outcomes.len(), 80 * day, 7 * day, 7 * day);
        assert_eq!(f.origins[0].len(), 67);
        assert_eq!(f.origins[0].last(), Some(&Some(73.0)));
        // The last 8 weeks: 3 (days 21-27) to 10.
        assert_eq!(f.weeks[0].len(), AUTO_WEEKS);
        assert_eq!(f.weeks[0][0], Some(24.0));
        assert_eq!(f.weeks[0].last(), Some(&Some(71.5)));
        assert_eq!(f.weeks[1], vec![Some(0.0); AUTO_WEEKS]);
        // The origin-by-origin count keeps the last LONG_WEEKS weeks only.
        let long = finished(&[&a, &b], a.outcomes.len(), 96 * day, 7 * day, day);
        assert_eq!(long.origins[0].len(), LONG_WEEKS);
    }
}
