//! MSTL (cargo feature `mstl`): the augurs crates' multiple seasonal-trend decomposition
//! with LOESS, daily and weekly periods, and a naive trend (the last trend value) carried
//! over the horizon.
//!
//! It works on the last four weeks, with gaps filled by the profile's forecast (MSTL needs a
//! complete series). Its periods are fixed numbers of grid steps, i.e. absolute time: unlike
//! the profile it does not follow the clock across a DST switch, which the backtest will
//! show if it matters for a history.

use augurs_core::{Fit, Predict};
use augurs_mstl::MSTLModel;

use super::{Data, Plan, Strategy};

/// The MSTL strategy.
pub struct Mstl;

impl Strategy for Mstl {
    fn name(&self) -> &'static str {
        "mstl"
    }

    fn plan(&mut self, data: &Data, origin: usize, horizon: usize, window: usize) -> Plan {
        let cal = data.cal;
        let hist = data.hist(origin);
        let per_day = cal.steps_per_day();
        let per_week = 7 * per_day;
        let fit = data.profile(origin);
        let from = origin.saturating_sub(4 * per_week);
        let y: Vec<f64> = (from..origin)
            .map(|i| {
                if hist[i].is_finite() {
                    hist[i]
                } else {
                    fit.predict(cal, i)
                }
            })
            .collect();
        if y.len() < 2 * per_day {
            return super::profile::Profile.plan(data, origin, horizon, window);
        }
        let mut periods = vec![per_day];
        if y.len() >= 2 * per_week {
            periods.push(per_week);
        }
        match MSTLModel::naive(periods)
            .fit(&y)
            .and_then(|m| m.predict(horizon, None))
        {
            Ok(f) if f.point.len() == horizon => Plan::Forecast(f.point),
            _ => super::profile::Profile.plan(data, origin, horizon, window),
        }
    }
}
