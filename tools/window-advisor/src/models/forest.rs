//! A random forest (smartcore) on calendar, profile and lag features.
//!
//! The forest learns the load at a future grid point from what is known at the origin:
//! local time of day and day of week, the profile's forecast for that slot and its two
//! parts (weekday effect and recent level), the value at the same local time last week and
//! on the last day, and how far ahead the point is. It is trained the way it is used:
//! pseudo-origins at daily steps before the fit origin, each with targets in the horizon
//! after it (and before the fit origin), so the features of a training row are exactly what
//! would have been known then ("direct" multi-horizon training, no leakage).
//!
//! Training is kept small enough for the 2-second budget of `recommend` on 8 weeks of
//! minute data: at most 2000 sampled rows from 21 pseudo-origins, 20 trees of depth 8. A
//! walk-forward backtest refits the forest only when its training data is a week old (the
//! features, which carry the recent data, are always computed at the actual origin).

use rand::{Rng, SeedableRng};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::{Data, Plan, Strategy};
use crate::time::{DAY, WEEK};

type Rf = RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;

const FEATURES: usize = 8;
const MAX_ROWS: usize = 2000;
const MAX_PSEUDO_ORIGINS: usize = 21;

/// The forest strategy.
pub struct Forest {
    seed: u64,
    fitted: Option<(usize, Rf)>,
}

impl Forest {
    /// A forest seeded with `seed`.
    pub fn new(seed: u64) -> Forest {
        Forest { seed, fitted: None }
    }
}

/// What is known at an origin that the features need beyond the profile.
struct Known {
    /// Latest value before the origin per slot of the day (within the last two days).
    last_day: Vec<f64>,
}

impl Known {
    fn at(data: &Data, origin: usize) -> Known {
        let hist = data.hist(origin);
        let ds = data.cal.day_slots;
        let mut last_day = vec![f64::NAN; ds];
        let from = origin.saturating_sub(2 * (DAY / data.cal.step) as usize);
        for (i, &v) in hist.iter().enumerate().skip(from) {
            if v.is_finite() {
                last_day[data.cal.day_slot(i)] = v;
            }
        }
        Known { last_day }
    }
}

/// The features of grid point `i` as seen from `origin`.
fn features(data: &Data, origin: usize, known: &Known, i: usize, out: &mut Vec<f64>) {
    let fit = data.profile(origin);
    let c = data.cal.cal[i];
    let (ws, ds) = (data.cal.week_slot(i), data.cal.day_slot(i));
    let profile = fit.level[ds] + fit.effect[ws];
    let hist = data.hist(origin);
    let last_week = data
        .cal
        .same_slot_before(i, origin)
        .take(2)
        .map(|j| hist[j])
        .find(|v| v.is_finite())
        .unwrap_or(profile);
    let last_day = known.last_day[ds];
    out.extend_from_slice(&[
        f64::from(c.minute) / 60.0,
        f64::from(c.dow),
        profile,
        fit.effect[ws],
        fit.level[ds],
        last_week,
        if last_day.is_finite() {
            last_day
        } else {
            profile
        },
        (i - origin) as f64 * data.cal.step as f64 / DAY as f64,
    ]);
}

impl Forest {
    /// Train at `origin` for horizons of `horizon` points; `None` when there is too little
    /// history for a meaningful training set.
    fn train(&self, data: &Data, origin: usize, horizon: usize) -> Option<Rf> {
        let hist = data.hist(origin);
        let first = hist.iter().position(|v| v.is_finite())?;
        let per_day = (DAY / data.cal.step) as usize;
        // Pseudo-origins need two days of history behind them and targets after them.
        let earliest = first + 2 * per_day;
        let origins: Vec<usize> = (1..=MAX_PSEUDO_ORIGINS)
            .map(|k| origin.checked_sub(k * per_day))
            .take_while(|o| o.is_some_and(|o| o >= earliest))
            .flatten()
            .collect();
        if origins.len() < 3 {
            return None;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ origin as u64);
        let per_origin = MAX_ROWS / origins.len();
        let mut x = Vec::with_capacity(MAX_ROWS * FEATURES);
        let mut y = Vec::with_capacity(MAX_ROWS);
        for &o in &origins {
            let end = (o + horizon).min(origin);
            let span = end - o;
            let stride = span.div_ceil(per_origin).max(1);
            let known = Known::at(data, o);
            let mut i = o + rng.gen_range(0..stride);
            while i < end {
                if hist[i].is_finite() {
                    features(data, o, &known, i, &mut x);
                    y.push(hist[i]);
                }
                i += stride;
            }
        }
        if y.len() < 50 {
            return None;
        }
        let rows = y.len();
        let x = DenseMatrix::new(rows, FEATURES, x, false).ok()?;
        let params = RandomForestRegressorParameters::default()
            .with_n_trees(20)
            .with_max_depth(8)
            .with_min_samples_leaf(5)
            .with_min_samples_split(10)
            .with_m(3)
            .with_seed(self.seed);
        Rf::fit(&x, &y, params).ok()
    }
}

impl Strategy for Forest {
    fn name(&self) -> &'static str {
        "forest"
    }

    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, window: usize) -> Plan {
        let refit_steps = (WEEK / data.cal.step) as usize;
        let stale = match &self.fitted {
            Some((at, _)) => origin < *at || origin - *at >= refit_steps,
            None => true,
        };
        if stale {
            self.fitted = self.train(data, origin, horizon).map(|rf| (origin, rf));
        }
        let Some((_, rf)) = &self.fitted else {
            // Too little history to train on: the profile stands in.
            return super::profile::Profile.plan(data, origin, horizon, window);
        };
        let known = Known::at(data, origin);
        let mut x = Vec::with_capacity(horizon * FEATURES);
        for i in origin..origin + horizon {
            features(data, origin, &known, i, &mut x);
        }
        let pred = DenseMatrix::new(horizon, FEATURES, x, false)
            .ok()
            .and_then(|m| rf.predict(&m).ok());
        match pred {
            Some(p) => Plan::Forecast(p),
            None => super::profile::Profile.plan(data, origin, horizon, window),
        }
    }
}
