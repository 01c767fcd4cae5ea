//! Synthetic load traces with a known answer, for tests and benchmarks
//! (`window-advisor synth`).
//!
//! The load is a business day in local time (a morning and an afternoon peak, an evening
//! shoulder, a quiet night with its minimum around 03:30), scaled per weekday (Saturday 55%,
//! Sunday 40%), times log-normal noise. The kinds add one difficulty each:
//!
//! | kind | what is added |
//! |---|---|
//! | `seasonal` | nothing: daily + weekly seasonality and noise |
//! | `holiday` | the Wednesday of week `weeks-2` is as quiet as a Sunday |
//! | `regime-shift` | from week `weeks-3` on, a nightly batch job (00:30-05:30, +250) and 15% more daytime load |
//! | `bursts` | about 1.5 random bursts a day (10-60 min, +150..600), at any hour |
//! | `mixed` | all of the above |
//! | `dip` | flat load (300) with a sharp one-hour dip at 04:00 local: a DST test |
//!
//! Every trace is a pure function of (kind, seed, weeks, step, start, zone). [`Trace`] also
//! carries the noise- and burst-free load, so tests can compute the true quiet windows.

use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use crate::time::{utc_string, Calendar, Zone, DAY};

/// The kinds of trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceKind {
    /// Daily and weekly seasonality with noise.
    Seasonal,
    /// A weekday holiday.
    Holiday,
    /// A nightly batch job appears three weeks before the end.
    RegimeShift,
    /// Random bursts.
    Bursts,
    /// Holiday, regime shift and bursts together.
    Mixed,
    /// A sharp one-hour dip at 04:00 local (for DST tests).
    Dip,
}

impl TraceKind {
    /// All kinds of the benchmark suite.
    pub fn suite() -> [TraceKind; 5] {
        [
            TraceKind::Seasonal,
            TraceKind::Holiday,
            TraceKind::RegimeShift,
            TraceKind::Bursts,
            TraceKind::Mixed,
        ]
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The kind.
    pub kind: TraceKind,
    /// RNG seed.
    pub seed: u64,
    /// Length in weeks.
    pub weeks: usize,
    /// Sample interval in seconds.
    pub step: i64,
    /// First sample, epoch seconds.
    pub start: i64,
    /// The zone whose wall clock the load follows.
    pub zone: Zone,
}

/// A generated trace.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Sample times, epoch seconds.
    pub times: Vec<i64>,
    /// Transactions per second as "measured" (noise and bursts included).
    pub tps: Vec<f64>,
    /// The load without noise and bursts (the predictable part).
    pub expected: Vec<f64>,
}

fn bump(h: f64, center: f64, width: f64) -> f64 {
    let mut d = (h - center).abs();
    d = d.min(24.0 - d);
    (-0.5 * (d / width).powi(2)).exp()
}

/// The business-day shape at local hour `h` (minimum about 30 at 03:30).
fn day_shape(h: f64) -> f64 {
    30.0 + 420.0 * bump(h, 10.5, 1.8)
        + 380.0 * bump(h, 15.0, 2.2)
        + 160.0 * bump(h, 20.5, 1.5)
        + 15.0 * (1.0 - (std::f64::consts::TAU * (h - 4.0) / 24.0).cos())
}

/// The nightly batch job of the regime shift: +250 from 00:30 to 05:30, 15-minute ramps.
fn batch(h: f64) -> f64 {
    let ramp = 0.25;
    let up = ((h - 0.5) / ramp).clamp(0.0, 1.0);
    let down = ((5.5 - h) / ramp).clamp(0.0, 1.0);
    250.0 * up.min(down)
}

const WEEKDAY: [f64; 7] = [1.0, 1.02, 1.0, 0.98, 0.92, 0.55, 0.4];

fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Generate a trace.
pub fn generate(spec: &Spec) -> Trace {
    let n = (spec.weeks as i64 * 7 * DAY / spec.step) as usize;
    let cal = Calendar::new(&spec.zone, spec.start, spec.step, n);
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let k = spec.kind;
    let weeks = spec.weeks as i64;
    let holiday_day = (weeks - 2).max(1) * 7 + 2;
    let shift_day = (weeks - 3).max(1) * 7;
    let has = |want: TraceKind| k == want || k == TraceKind::Mixed;

    // Bursts: about 1.5 a day, at uniformly random instants.
    let mut burst = vec![0.0f64; n];
    if has(TraceKind::Bursts) {
        let days = weeks * 7;
        for _ in 0..(days as f64 * 1.5).round() as usize {
            let at = rng.gen_range(0..n);
            let len = (rng.gen_range(600..3600) / spec.step).max(1) as usize;
            let amp = rng.gen_range(150.0..600.0);
            for b in burst.iter_mut().skip(at).take(len) {
                *b += amp;
            }
        }
    }

    let mut times = Vec::with_capacity(n);
    let mut tps = Vec::with_capacity(n);
    let mut expected = Vec::with_capacity(n);
    for (i, b) in burst.iter().enumerate() {
        let t = spec.start + i as i64 * spec.step;
        let c = cal.cal[i];
        let h = f64::from(c.minute) / 60.0;
        // Days since the start, by local date (the weekday count is what matters).
        let day = (t - spec.start + spec.zone.offset_at(t) - spec.zone.offset_at(spec.start))
            .div_euclid(DAY);
        let mut factor = WEEKDAY[usize::from(c.dow)];
        if has(TraceKind::Holiday) && day == holiday_day {
            factor = WEEKDAY[6];
        }
        let mut load = if k == TraceKind::Dip {
            if (4.0..5.0).contains(&h) {
                20.0
            } else {
                300.0
            }
        } else {
            day_shape(h)
        } * factor;
        if has(TraceKind::RegimeShift) && day >= shift_day {
            load = load * 1.15 + batch(h);
        }
        let noisy = load * (0.08 * normal(&mut rng)).exp() + 2.0 * normal(&mut rng) + b;
        times.push(t);
        tps.push(noisy.max(0.0));
        expected.push(load);
    }
    Trace {
        times,
        tps,
        expected,
    }
}

impl Trace {
    /// The `sample` records of the trace: tps plus derived WAL, CPU, memory, connections and
    /// a growing database size, like `collect` writes them.
    pub fn records(&self, seed: u64) -> impl Iterator<Item = Map<String, Value>> + '_ {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        let t0 = self.times.first().copied().unwrap_or(0);
        self.times.iter().zip(&self.tps).map(move |(&t, &tps)| {
            let jitter = 1.0 + 0.05 * normal(&mut rng);
            let weeks = (t - t0) as f64 / (7 * DAY) as f64;
            let mut m = Map::new();
            m.insert("t".into(), utc_string(t).into());
            m.insert("tps".into(), round2(tps).into());
            m.insert(
                "wal_bytes_per_s".into(),
                ((tps * 6000.0 * jitter).max(0.0).round() as u64).into(),
            );
            m.insert(
                "cpu_pct".into(),
                round2((3.0 + tps * 0.12 * jitter).clamp(0.0, 100.0)).into(),
            );
            m.insert("cpus".into(), 8.into());
            m.insert(
                "mem_pct".into(),
                round2((55.0 + tps / 40.0).clamp(0.0, 100.0)).into(),
            );
            m.insert("mem_total_bytes".into(), ((32.0 * GIB) as u64).into());
            m.insert(
                "connections".into(),
                ((10.0 + tps / 10.0).round() as u64).into(),
            );
            m.insert(
                "db_size_bytes".into(),
                (((50.0 + weeks) * GIB) as u64).into(),
            );
            m
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: TraceKind) -> Spec {
        Spec {
            kind,
            seed: 7,
            weeks: 4,
            step: 300,
            start: 1_767_571_200, // Monday 2026-01-05 00:00 UTC
            zone: Zone::utc(),
        }
    }

    #[test]
    fn deterministic_and_quiet_on_sunday_night() {
        let a = generate(&spec(TraceKind::Seasonal));
        let b = generate(&spec(TraceKind::Seasonal));
        assert_eq!(a.tps, b.tps);
        assert_eq!(a.tps.len(), 4 * 2016);
        let min = a
            .expected
            .iter()
            .enumerate()
            .min_by(|x, y| x.1.total_cmp(y.1))
            .unwrap()
            .0;
        // Sunday (day 6 mod 7) around 04:00.
        let t = a.times[min] - a.times[0];
        assert_eq!((t / DAY) % 7, 6);
        let h = (t % DAY) / 3600;
        assert!((3..=4).contains(&h), "{h}");
    }

    #[test]
    fn kinds_differ_where_they_should() {
        let s = generate(&spec(TraceKind::Seasonal));
        let r = generate(&spec(TraceKind::RegimeShift));
        // Before the shift (week 0 of 4) identical expectations; after it nights are busy.
        assert_eq!(s.expected[12 * 3], r.expected[12 * 3]);
        let night = 3 * 2016 + 12 * 3; // week 3 Monday 03:00
        assert!(r.expected[night] > s.expected[night] + 200.0);
        let h = generate(&spec(TraceKind::Holiday));
        let wed_noon = 2 * 2016 + 2 * 288 + 144;
        assert!(h.expected[wed_noon] < 0.5 * s.expected[wed_noon]);
        let b = generate(&spec(TraceKind::Bursts));
        assert_eq!(b.expected, s.expected);
        let spikes = |t: &Trace| {
            t.tps
                .iter()
                .zip(&t.expected)
                .filter(|(x, e)| **x > **e + 200.0)
                .count()
        };
        assert_eq!(spikes(&s), 0);
        assert!(spikes(&b) > 50, "{}", spikes(&b));
    }
}
