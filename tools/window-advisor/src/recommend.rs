//! `recommend` and `evaluate`: from a history file to ranked windows or backtest scores.
//!
//! Both load the history the same way ([`load`]): read, pick the metric, clean and resample
//! (warnings for what was repaired), and build the local calendar. `recommend` then resolves
//! `--model auto` with a walk-forward backtest of the candidates (`week-slot`, the profile,
//! the 03:00 and last-week baselines) on this very history, plans the horizon with the
//! winner, and adds the resource advice a migration needs in each window: WAL to ship,
//! bandwidth for base copy plus WAL, wal-ship `--jobs`, and whether the target's CPUs and
//! memory look sufficient for the load it will take over.

use serde::Serialize;
use serde_json::json;
use shared::{ErrorKind, Output, Status};

use crate::backtest::{self, Basis, Config, Evaluation, Reason, Score};
use crate::input::{self, ReadOptions, Table};
use crate::models::{
    self, candidate_models, non_overlapping, ranked_starts, Data, ModelName, Plan, ProfileFit,
    ProfileParams,
};
use crate::series::{self, quantile, round3, HistoryInfo, Series};
use crate::time::{self, utc_string, Calendar, Zone, DAY, WEEK};
use crate::units::human_bytes;
use crate::{EvaluateArgs, HistoryArgs, RecommendArgs};

/// WAL segment size (PostgreSQL's default).
const SEGMENT: f64 = 16.0 * 1024.0 * 1024.0;

/// A loaded, cleaned history.
pub struct Loaded {
    /// The rows as read.
    pub table: Table,
    /// The metric on its grid.
    pub series: Series,
    /// What cleaning found.
    pub info: HistoryInfo,
    /// The calendar's zone.
    pub zone: Zone,
    /// Window, horizon, origin spacing and minimum training, in grid steps.
    pub steps: Steps,
}

/// Lengths in grid steps.
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    /// Window.
    pub window: usize,
    /// Horizon.
    pub horizon: usize,
    /// Backtest origin spacing.
    pub every: usize,
    /// Backtest minimum training.
    pub min_train: usize,
}

fn usage(msg: String) -> anyhow::Error {
    shared::err(ErrorKind::Usage, msg)
}

/// Read, clean and resample the history.
pub fn load(h: &HistoryArgs) -> anyhow::Result<Loaded> {
    let zone = Zone::resolve(h.tz.as_deref())?;
    let start_ms = h
        .start
        .as_deref()
        .map(|s| time::parse_instant_arg(s, &zone))
        .transpose()?;
    let step = match h.step {
        Some(d) => {
            let s = d.as_secs() as i64;
            if s < 60 || s % 60 != 0 || d.subsec_nanos() != 0 || s > 3600 {
                return Err(usage(format!(
                    "--step {} must be whole minutes between 1m and 1h",
                    series::human_duration(d.as_secs_f64())
                )));
            }
            Some(s)
        }
        None => None,
    };
    let table = input::read_path(
        &h.history,
        &ReadOptions {
            format: h.format,
            zone: zone.clone(),
            start_ms,
        },
    )?;
    let metric = table.pick_metric(h.metric.as_deref())?;
    let (series, mut info) = series::build(&table.times, &table.columns[&metric], step, &metric)?;
    info.tz = zone.name.clone();
    let step = series.step as f64;
    let window_s = h.window.as_secs_f64();
    if window_s < step {
        // The flags do not fit each other (or the default grid), or the data is too coarse.
        if h.step.is_some() || series.step <= series::DEFAULT_STEP {
            return Err(usage(format!(
                "--window {} is shorter than the {} grid step; choose a longer --window, or a \
                 finer --step (with data at least that fine)",
                series::human_duration(window_s),
                series::human_duration(step)
            )));
        }
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the history's samples are {} apart (median), too coarse for a {} window; \
                 collect more often or choose a longer --window",
                series::human_duration(info.interval_s),
                series::human_duration(window_s)
            ),
        ));
    }
    let steps = Steps {
        window: (window_s / step).ceil() as usize,
        horizon: (h.horizon.as_secs_f64() / step).floor() as usize,
        every: ((h.every.as_secs_f64() / step).round() as usize).max(1),
        min_train: (h.min_train.as_secs_f64() / step).ceil() as usize,
    };
    if steps.horizon < steps.window {
        return Err(usage(format!(
            "--horizon {} is shorter than --window {}",
            series::human_duration(h.horizon.as_secs_f64()),
            series::human_duration(window_s)
        )));
    }
    if steps.horizon as i64 * series.step > 8 * WEEK {
        return Err(usage(
            "--horizon is longer than 8 weeks; load patterns do not forecast that far".into(),
        ));
    }
    if (info.days * DAY as f64) < window_s {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the history covers only {}, less than one {} window; collect at least a day \
                 (a week or more to learn the weekly pattern)",
                series::human_duration(info.days * DAY as f64),
                series::human_duration(window_s)
            ),
        ));
    }
    if info.days * (DAY as f64) < WEEK as f64 {
        shared::warn!(
            "only {:.1} days of history (less than a week): the weekly pattern cannot be \
             learned; using the time-of-day profile",
            info.days
        );
    }
    Ok(Loaded {
        table,
        series,
        info,
        zone,
        steps,
    })
}

/// The `window` record.
#[derive(Debug, Serialize)]
pub struct Window {
    /// 1 = the quietest.
    pub rank: usize,
    /// Start, RFC 3339 UTC.
    pub start: String,
    /// End, RFC 3339 UTC.
    pub end: String,
    /// Start in the local zone, with its offset.
    pub start_local: String,
    /// End in the local zone.
    pub end_local: String,
    /// Local weekday of the start (`Sun`).
    pub weekday: String,
    /// The zone.
    pub tz: String,
    /// Length in minutes.
    pub minutes: i64,
    /// The load metric.
    pub metric: String,
    /// The model that chose the window.
    pub model: String,
    /// Predicted mean load in the window.
    pub predicted_load: f64,
    /// Low end of the 80% range (10th percentile of past weeks at these times).
    pub predicted_low: f64,
    /// High end of the 80% range (90th percentile).
    pub predicted_high: f64,
    /// Predicted WAL rate in the window (bytes/s), if the history has WAL.
    pub wal_bytes_per_s: Option<f64>,
    /// WAL written during the window, bytes: what must be shipped to the target.
    pub wal_bytes: Option<u64>,
    /// The same in 16 MiB segments.
    pub wal_segments: Option<u64>,
    /// Bandwidth to copy the database and ship the window's WAL within the window, bytes/s.
    pub bandwidth_bytes_per_s: Option<f64>,
    /// Recommended `wal-ship --jobs` to keep up with the window's WAL (90th percentile) twice
    /// over.
    pub wal_ship_jobs: Option<u32>,
    /// Local start of the busiest hour of the horizon by the same forecast.
    pub busiest_hour_start: Option<String>,
    /// Its predicted mean load.
    pub busiest_hour_load: Option<f64>,
    /// `predicted_load / busiest_hour_load`: how quiet the window is (0.1 = a tenth of the
    /// busiest hour).
    pub load_vs_busiest: Option<f64>,
    /// Whether the target looks big enough (`resources`: CPUs and memory), null when unknown.
    pub target_ok: Option<bool>,
    /// Which model chose the window and why (the `choice` record's `why` for auto).
    pub model_reason: String,
    /// The window in a sentence for a person: when, how quiet and how sure, what it means
    /// for the migration.
    pub advice: String,
}

/// What [`advice`] says.
struct Advice<'a> {
    metric: &'a str,
    load: f64,
    low: f64,
    high: f64,
    busiest: Option<(&'a str, f64)>,
    wal_bytes: Option<f64>,
    bandwidth: Option<f64>,
    db_size: Option<u64>,
    target_ok: Option<bool>,
}

fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The window's advice sentence (without the time, which the record and the text line
/// carry).
fn advice(a: &Advice) -> String {
    let mut parts = vec![format!(
        "expect {} {} (80% between {} and {})",
        num(a.load),
        a.metric,
        num(a.low),
        num(a.high)
    )];
    if let Some((when, busy)) = a.busiest {
        if busy > 0.0 {
            parts.push(format!(
                "{:.0}% of the busiest hour ({}, {} {})",
                100.0 * a.load.max(0.0) / busy,
                when.get(..16).unwrap_or(when).replace('T', " "),
                num(busy),
                a.metric
            ));
        }
    }
    match a.wal_bytes {
        Some(b) => parts.push(format!("{} of WAL to ship during it", human_bytes(b))),
        None => parts.push("WAL unknown (no wal_bytes_per_s in the history)".into()),
    }
    match (a.bandwidth, a.db_size) {
        (Some(bw), Some(db)) => parts.push(format!(
            "copying {} and that WAL within it needs {}/s",
            human_bytes(db as f64),
            human_bytes(bw)
        )),
        _ => parts.push("bandwidth unknown (no db_size_bytes; pass --db-size)".into()),
    }
    parts.push(
        match a.target_ok {
            Some(true) => "the target looks big enough",
            Some(false) => "the target looks too small (see resources)",
            None => "target size not judged (pass --target-cpus and --target-mem)",
        }
        .into(),
    );
    parts.join("; ")
}

impl shared::Record for Window {
    const TYPE: &'static str = "window";
}

/// The `resources` record: can the target carry the load?
#[derive(Debug, Serialize)]
pub struct Resources {
    /// Data to copy, bytes (the last `db_size_bytes`, or `--db-size`).
    pub db_size_bytes: Option<u64>,
    /// CPUs of the source host (from the history).
    pub source_cpus: Option<u32>,
    /// 95th percentile of source CPU use, percent.
    pub cpu_pct_p95: Option<f64>,
    /// CPUs the target needs: the source's busy CPUs at p95, plus 30% headroom.
    pub cpus_needed: Option<u32>,
    /// `--target-cpus`.
    pub target_cpus: Option<u32>,
    /// `target_cpus >= cpus_needed`, or null when either is unknown.
    pub target_cpus_ok: Option<bool>,
    /// Memory the target needs: source memory in use at p95, plus 20% headroom.
    pub mem_needed_bytes: Option<u64>,
    /// `--target-mem`.
    pub target_mem_bytes: Option<u64>,
    /// `target_mem_bytes >= mem_needed_bytes`, or null when either is unknown.
    pub target_mem_ok: Option<bool>,
}

impl shared::Record for Resources {
    const TYPE: &'static str = "resources";
}

/// The last value of a column by time (rows may be unsorted).
fn last_by_time(table: &Table, col: &str) -> Option<f64> {
    let c = table.columns.get(col)?;
    table
        .times
        .iter()
        .zip(c)
        .filter(|(_, v)| v.is_finite())
        .max_by_key(|(t, _)| **t)
        .map(|(_, v)| *v)
}

fn resources(l: &Loaded, a: &RecommendArgs) -> Resources {
    let t = &l.table;
    let db_size = a
        .db_size
        .or_else(|| last_by_time(t, "db_size_bytes").map(|v| v as u64));
    let cpus = last_by_time(t, "cpus").map(|v| v as u32);
    let cpu_p95 = t
        .columns
        .get("cpu_pct")
        .map(|c| quantile(c, 0.95))
        .filter(|v| v.is_finite());
    let cpus_needed = match (cpus, cpu_p95) {
        (Some(n), Some(p)) => Some(((f64::from(n) * p / 100.0 * 1.3).ceil() as u32).max(1)),
        _ => None,
    };
    let mem_total = last_by_time(t, "mem_total_bytes");
    let mem_p95 = t
        .columns
        .get("mem_pct")
        .map(|c| quantile(c, 0.95))
        .filter(|v| v.is_finite());
    let mem_needed = match (mem_total, mem_p95) {
        (Some(total), Some(p)) => Some((total * p / 100.0 * 1.2).ceil() as u64),
        _ => None,
    };
    let cpu_ok = cpus_needed.zip(a.target_cpus).map(|(n, t)| t >= n);
    let mem_ok = mem_needed.zip(a.target_mem).map(|(n, t)| t >= n);
    if a.target_cpus.is_some() && cpus_needed.is_none() {
        shared::warn!(
            "the history has no cpus/cpu_pct: cannot judge --target-cpus (collect with \
             `window-advisor collect` on the source host)"
        );
    }
    if a.target_mem.is_some() && mem_needed.is_none() {
        shared::warn!(
            "the history has no mem_total_bytes/mem_pct: cannot judge --target-mem (collect \
             with `window-advisor collect` on the source host)"
        );
    }
    if cpu_ok == Some(false) {
        shared::warn!(
            "the target's {} CPUs look too few: the source keeps {} busy at its 95th percentile \
             ({} with 30% headroom)",
            a.target_cpus.unwrap_or(0),
            round3(f64::from(cpus.unwrap_or(0)) * cpu_p95.unwrap_or(0.0) / 100.0),
            cpus_needed.unwrap_or(0)
        );
    }
    if mem_ok == Some(false) {
        shared::warn!(
            "the target's {} of memory looks too small: the source uses {} at its 95th \
             percentile (plus 20% headroom)",
            human_bytes(a.target_mem.unwrap_or(0) as f64),
            human_bytes(mem_needed.unwrap_or(0) as f64 / 1.2)
        );
    }
    Resources {
        db_size_bytes: db_size,
        source_cpus: cpus,
        cpu_pct_p95: cpu_p95.map(round3),
        cpus_needed,
        target_cpus: a.target_cpus,
        target_cpus_ok: cpu_ok,
        mem_needed_bytes: mem_needed,
        target_mem_bytes: a.target_mem,
        target_mem_ok: mem_ok,
    }
}

fn backtest_config(l: &Loaded, seed: u64, last: Option<usize>, guard: bool) -> Config {
    Config {
        window: l.steps.window,
        horizon: l.steps.horizon,
        every: l.steps.every,
        min_train: l.steps.min_train,
        week: (WEEK / l.series.step).max(1) as usize,
        seed,
        last,
        guard,
    }
}

/// `window-advisor recommend`.
pub fn recommend(a: &RecommendArgs) -> anyhow::Result<Status> {
    if a.top == 0 {
        return Err(usage("--top must be at least 1".into()));
    }
    let l = load(&a.h)?;
    let mut out = Output::stdout();
    out.emit_as("history", &l.info)?;
    let s = &l.series;
    let origin = match &a.from {
        None => s.len(),
        Some(f) => {
            let ms = time::parse_instant_arg(f, &l.zone)?;
            let i = s.index_of(ms.div_euclid(1000));
            if i < 1 {
                return Err(usage(format!(
                    "--from {f} is before the history starts ({})",
                    l.info.first
                )));
            }
            // The first whole grid step at or after --from.
            let exact = s.t0 + i * s.step == ms.div_euclid(1000) && ms % 1000 == 0;
            (i + i64::from(!exact)) as usize
        }
    };
    let (w, h) = (l.steps.window, l.steps.horizon);
    let mut values = s.values.clone();
    values.resize(origin, f64::NAN);
    let cal = Calendar::new(&l.zone, s.t0, s.step, origin + h);
    let data = Data::new(&values, &cal, ProfileParams::default());
    let hist = data.hist(origin);
    let observed = hist.iter().filter(|v| v.is_finite()).count();
    if observed < 2 {
        return Err(shared::err(
            ErrorKind::DataErr,
            "no history before --from; move it later".to_owned(),
        ));
    }
    let now = jiff::Timestamp::now().as_second();
    let gap = now - cal.time(origin);
    if a.from.is_none() && gap > 2 * DAY {
        shared::warn!(
            "the history ends {} ago: these windows are in the past; pass --from now to plan \
             from today",
            series::human_duration(gap as f64)
        );
    }
    // --from long after the last sample: the plan assumes the weekly pattern held since.
    let last = s.t0 + (s.len() as i64 - 1) * s.step;
    let stale = cal.time(origin) - last;
    if a.from.is_some() && stale > 7 * DAY {
        shared::warn!(
            "the history ends {} before --from: these windows assume the load kept the same \
             weekly pattern since; collect recent history (window-advisor collect, or \
             collect --prometheus URL for the metrics a server already keeps)",
            series::human_duration(stale as f64)
        );
    }

    // Which model.
    let fit = data.profile(origin);
    let mut backtested = 0usize;
    let mut model_reason = String::new();
    let model = if !fit.weekly && a.model != ModelName::Profile {
        if a.model != ModelName::Auto {
            shared::warn!(
                "--model {} needs at least a week of history; using the profile",
                a.model.as_str()
            );
        } else {
            out.emit(&Choice::fallback())?;
        }
        ModelName::Profile
    } else if a.model == ModelName::Auto {
        // Every backtest origin's horizon ends before the history does: those of the last
        // LONG_WEEKS weeks are what the rule compares.
        let mut cfg = backtest_config(&l, a.h.seed, None, false);
        cfg.last = Some(backtest::auto_origins(&cfg));
        let n_origins = backtest::origins(origin, &cfg).len();
        if n_origins < 3 {
            shared::note!(
                "{} of history is too short to backtest {}-ahead plans (need --min-train + \
                 --horizon + 2 days); using the profile",
                series::human_duration(l.info.days * DAY as f64),
                series::human_duration(h as f64 * s.step as f64)
            );
            out.emit(&Choice::fallback())?;
            ModelName::Profile
        } else {
            let cands = candidate_models();
            let tracks = backtest::run_parallel(hist, &data, &cands, &cfg);
            backtested = n_origins;
            for e in backtest::evaluations(&tracks) {
                out.emit(&e)?;
            }
            let (choice, model) = choose_auto(&tracks, &cands, origin, &cfg);
            out.emit(&choice)?;
            model_reason = format!("--model auto: {}", choice.why);
            model
        }
    } else {
        a.model
    };

    let plan = model.build(a.h.seed).plan(&data, origin, h, w);
    let profile_pred: Vec<f64> = (origin..origin + h).map(|i| fit.predict(&cal, i)).collect();
    let pred: &[f64] = match &plan {
        Plan::Forecast(p) => p,
        Plan::Starts(_) => &profile_pred,
    };
    let starts = non_overlapping(ranked_starts(&plan, w), w, a.top);

    // WAL: its own profile on the same grid.
    let wal = wal_profile(&l, &values, &cal, origin);
    let res = resources(&l, a);
    if model_reason.is_empty() {
        model_reason = if a.model == model {
            format!("--model {}", model.as_str())
        } else {
            format!(
                "less than a week of history: the {} (the only model that needs no weekly \
                 pattern)",
                model.as_str()
            )
        };
    }
    // The chosen model's forecast where it has one, else the profile's: what the windows'
    // loads, the busiest hour and `--forecast` all read.
    let filled: Vec<f64> = (0..h)
        .map(|j| {
            if pred[j].is_finite() {
                pred[j]
            } else {
                profile_pred[j]
            }
        })
        .collect();
    // The busiest hour of the horizon by the same forecast, to say how quiet a window is.
    let hour = ((3600 / s.step).max(1) as usize).min(h);
    let busiest = (0..=h - hour)
        .map(|j| (j, filled[j..j + hour].iter().sum::<f64>() / hour as f64))
        .filter(|(_, m)| m.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(j, m)| (l.zone.local_string(cal.time(origin + j)), m));
    let target_ok = match (res.target_cpus_ok, res.target_mem_ok) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (None, None) => None,
        _ => Some(true),
    };
    let window_s = w as f64 * s.step as f64;
    let nonneg = hist.iter().all(|v| !v.is_finite() || *v >= 0.0);
    let mut windows = 0;
    for (rank, off) in starts.iter().enumerate() {
        let i = origin + off;
        let mean = |f: &dyn Fn(usize) -> f64| (i..i + w).map(f).sum::<f64>() / w as f64;
        let p = mean(&|j| filled[j - origin]);
        let lo = p + mean(&|j| fit.spread(&cal, j).0);
        let hi = p + mean(&|j| fit.spread(&cal, j).1);
        let low = if nonneg { lo.max(0.0) } else { lo }.min(p);
        let high = hi.max(p);
        let wal_rate = wal.as_ref().map(|f| mean(&|j| f.predict(&cal, j)).max(0.0));
        let wal_high = wal
            .as_ref()
            .map(|f| mean(&|j| f.predict(&cal, j) + f.spread(&cal, j).1).max(0.0));
        let wal_bytes = wal_rate.map(|r| r * window_s);
        let bandwidth = match (res.db_size_bytes, wal_bytes) {
            (Some(db), Some(wb)) => Some((db as f64 + wb) / window_s),
            (Some(db), None) => Some(db as f64 / window_s),
            _ => None,
        };
        let (t0, t1) = (cal.time(i), cal.time(i) + w as i64 * s.step);
        out.emit(&Window {
            rank: rank + 1,
            start: utc_string(t0),
            end: utc_string(t1),
            start_local: l.zone.local_string(t0),
            end_local: l.zone.local_string(t1),
            weekday: l.zone.weekday(t0),
            tz: l.zone.name.clone(),
            minutes: w as i64 * s.step / 60,
            metric: l.info.metric.clone(),
            model: model.as_str().to_owned(),
            predicted_load: round3(p),
            predicted_low: round3(low),
            predicted_high: round3(high),
            wal_bytes_per_s: wal_rate.map(round3),
            wal_bytes: wal_bytes.map(|b| b.round() as u64),
            wal_segments: wal_bytes.map(|b| (b / SEGMENT).ceil() as u64),
            bandwidth_bytes_per_s: bandwidth.map(round3),
            wal_ship_jobs: wal_high
                .map(|r| ((2.0 * r / a.job_rate.max(1) as f64).ceil() as u32).clamp(1, 16)),
            busiest_hour_start: busiest.as_ref().map(|(when, _)| when.clone()),
            busiest_hour_load: busiest.as_ref().map(|(_, m)| round3(*m)),
            load_vs_busiest: busiest
                .as_ref()
                .filter(|(_, m)| *m > 0.0)
                .map(|(_, m)| round3(p.max(0.0) / m)),
            target_ok,
            model_reason: model_reason.clone(),
            advice: advice(&Advice {
                metric: &l.info.metric,
                load: p,
                low,
                high,
                busiest: busiest.as_ref().map(|(when, m)| (when.as_str(), *m)),
                wal_bytes,
                bandwidth,
                db_size: res.db_size_bytes,
                target_ok,
            }),
        })?;
        windows += 1;
    }
    if windows < a.top {
        shared::warn!(
            "only {windows} non-overlapping window{} fit in the horizon",
            if windows == 1 { "" } else { "s" }
        );
    }
    if a.forecast {
        // The same numbers the windows were ranked by: the chosen model's forecast where it
        // has one, else the profile's, with the profile's 80% range.
        for j in origin..origin + h {
            let p = filled[j - origin];
            let (lo, hi) = fit.spread(&cal, j);
            let t = cal.time(j);
            out.emit_as(
                "forecast",
                &json!({
                    "t": utc_string(t),
                    "t_local": l.zone.local_string(t),
                    "predicted": round3(p),
                    "low": round3(if nonneg { (p + lo).max(0.0) } else { p + lo }.min(p)),
                    "high": round3((p + hi).max(p)),
                }),
            )?;
        }
    }
    out.emit(&res)?;
    out.finish(&json!({
        "windows": windows,
        "model": model.as_str(),
        "metric": l.info.metric,
        "backtest_origins": backtested,
    }))
}

/// The `choice` record: which model `--model auto` chose, and why.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// The chosen model.
    pub model: String,
    /// Why: `default` (no candidate chose significantly quieter windows than the default),
    /// `better` (one did), `warm_up` (too few origins to compare: the default),
    /// `short_history` (too little history to backtest: the profile).
    pub reason: Reason,
    /// The same in a sentence, for a person.
    pub why: String,
    /// Backtest origins the chosen model was scored on.
    pub origins: usize,
    /// Finished weeks of origins the weekly count compared (the last eight at most).
    pub weeks: usize,
    /// Its backtested p90 regret.
    pub p90_regret: Option<f64>,
    /// Its backtested mean regret.
    pub mean_regret: Option<f64>,
    /// The default candidate (`week-slot`, the slot-of-week mean).
    pub default: String,
    /// The default's backtested mean regret.
    pub default_mean_regret: Option<f64>,
    /// The paired t statistic of the chosen model's regret against the default's (null for
    /// the default).
    pub t: Option<f64>,
    /// What `t` was computed over: `origins` (those of the last 26 weeks) or `weeks` (the last eight,
    /// a mean regret each); null with `t`.
    pub t_over: Option<Basis>,
    /// The bar: a candidate is followed when its t is below minus this.
    pub z: f64,
    /// The candidate with the lowest mean regret (not necessarily significantly lower).
    pub lowest: Option<String>,
    /// Its mean regret.
    pub lowest_mean_regret: Option<f64>,
}

impl shared::Record for Choice {
    const TYPE: &'static str = "choice";
}

impl Choice {
    fn fallback() -> Choice {
        Choice {
            model: ModelName::Profile.as_str().to_owned(),
            reason: Reason::ShortHistory,
            why: "too little history to compare the models (a backtest needs --min-train + \
                  --horizon + 2 days): the profile, which needs the least"
                .to_owned(),
            origins: 0,
            weeks: 0,
            p90_regret: None,
            mean_regret: None,
            default: candidate_models()[0].as_str().to_owned(),
            default_mean_regret: None,
            t: None,
            t_over: None,
            z: backtest::Z,
            lowest: None,
            lowest_mean_regret: None,
        }
    }
}

fn finite3(x: f64) -> Option<f64> {
    x.is_finite().then(|| round3(x))
}

/// `--model auto`: the backtest over the whole history decides ([`backtest::choose`]); the
/// profile when a candidate was not backtested or there is nothing to choose from.
fn choose_auto(
    tracks: &[backtest::Track],
    cands: &[ModelName],
    origin: usize,
    cfg: &Config,
) -> (Choice, ModelName) {
    let ctracks: Vec<&backtest::Track> = cands
        .iter()
        .filter_map(|c| tracks.iter().find(|t| t.name == c.as_str()))
        .collect();
    let pick = if ctracks.len() == cands.len() {
        let n = ctracks[0].outcomes.len();
        backtest::choose(&backtest::finished(
            &ctracks,
            n,
            origin,
            cfg.horizon,
            cfg.week,
        ))
    } else {
        None
    };
    let Some(pick) = pick else {
        return (Choice::fallback(), ModelName::Profile);
    };
    let scores: Vec<Score> = ctracks.iter().map(|t| t.score()).collect();
    let i = pick.index;
    let model = cands[i];
    let lowest = (0..cands.len())
        .filter(|&j| scores[j].mean.is_finite())
        .min_by(|&x, &y| scores[x].mean.total_cmp(&scores[y].mean));
    let def = cands[0].as_str();
    let span = |basis: Basis| match basis {
        Basis::Origins => format!("over the last {} past origins", pick.origins),
        Basis::Weeks => format!("over the last {} weeks", pick.weeks),
    };
    let why = match (pick.reason, pick.t) {
        (backtest::Reason::Better, Some((t, basis))) => format!(
            "{} {} chose quieter windows than the {def} default, significantly (paired t \
             {t:.1}, bar -{})",
            span(basis),
            model.as_str(),
            backtest::Z
        ),
        (backtest::Reason::WarmUp, _) => format!(
            "only {} past origins in {} week{} to compare (need {}, or {} weeks): the {def} \
             default",
            pick.origins,
            pick.weeks,
            if pick.weeks == 1 { "" } else { "s" },
            backtest::WARM_UP_ORIGINS,
            backtest::WARM_UP_WEEKS
        ),
        _ => format!(
            "no candidate chose significantly quieter windows than the {def} default, over \
             the last {} past origins or the last {} weeks{}",
            pick.origins,
            pick.weeks,
            lowest
                .filter(|&l| l != 0)
                .map(|l| format!(
                    " ({} was lower on average, {} vs {}, but not by 3 standard errors)",
                    cands[l].as_str(),
                    round3(scores[l].mean),
                    round3(scores[0].mean)
                ))
                .unwrap_or_default()
        ),
    };
    let choice = Choice {
        model: model.as_str().to_owned(),
        reason: pick.reason,
        why,
        origins: scores[i].n,
        weeks: pick.weeks,
        p90_regret: finite3(scores[i].p90),
        mean_regret: finite3(scores[i].mean),
        default: def.to_owned(),
        default_mean_regret: finite3(scores[0].mean),
        t: pick.t.and_then(|t| finite3(t.0)),
        t_over: pick.t.map(|t| t.1),
        z: backtest::Z,
        lowest: lowest.map(|l| cands[l].as_str().to_owned()),
        lowest_mean_regret: lowest.and_then(|l| finite3(scores[l].mean)),
    };
    (choice, model)
}

/// The WAL rate's profile on the grid of the load metric, if the history has WAL.
fn wal_profile(l: &Loaded, values: &[f64], cal: &Calendar, origin: usize) -> Option<ProfileFit> {
    let col = l.table.columns.get("wal_bytes_per_s")?;
    let hist: Vec<f64> = if l.info.metric == "wal_bytes_per_s" {
        values[..origin].to_vec()
    } else {
        let mut v = series::resample_like(&l.series, &l.table.times, col).values;
        v.resize(origin, f64::NAN);
        v
    };
    hist.iter()
        .any(|v| v.is_finite())
        .then(|| ProfileFit::fit(&hist, cal, &ProfileParams::default()))
}

/// The `backtest` record (`evaluate --detail`).
#[derive(Debug, Serialize)]
struct BacktestRecord<'a> {
    model: &'a str,
    origin: String,
    chosen_start: String,
    best_start: String,
    chosen_load: f64,
    best_load: f64,
    regret: f64,
    hit: bool,
    admitted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    followed: Option<&'a str>,
}

/// `window-advisor evaluate`.
pub fn evaluate(a: &EvaluateArgs) -> anyhow::Result<Status> {
    let l = load(&a.h)?;
    let s = &l.series;
    // The guard's verdicts are only printed by --detail.
    let cfg = backtest_config(&l, a.h.seed, None, a.detail);
    let origins = backtest::origins(s.len(), &cfg);
    if origins.is_empty() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the history covers {}; a backtest needs --min-train ({}) plus --horizon ({}) \
                 of it; collect longer or shorten them",
                series::human_duration(l.info.days * DAY as f64),
                series::human_duration(cfg.min_train as f64 * s.step as f64),
                series::human_duration(cfg.horizon as f64 * s.step as f64)
            ),
        ));
    }
    let mut out = Output::stdout();
    out.emit_as("history", &l.info)?;
    let cal = Calendar::new(&l.zone, s.t0, s.step, s.len());
    let data = Data::new(&s.values, &cal, ProfileParams::default());
    // Every model and baseline is scored, the candidates of auto among them (the forest is
    // scored but no longer a candidate).
    let cands = candidate_models();
    let mut names = cands.clone();
    names.extend(
        [ModelName::Forest]
            .into_iter()
            .chain(models::baselines())
            .filter(|b| !cands.contains(b)),
    );
    let mut tracks = backtest::run(&s.values, &data, &names, &cfg);
    let cand_names: Vec<&str> = cands.iter().map(|c| c.as_str()).collect();
    // auto learns from origins at most a day apart, as `recommend` does by default, even
    // when the scored origins are sparser (--every 3d): it is scored on what it would have
    // chosen.
    let day = (DAY / s.step).max(1) as usize;
    let learned = (cfg.every > day).then(|| {
        let learn_cfg = Config { every: day, ..cfg };
        backtest::run(&s.values, &data, &cands, &learn_cfg)
    });
    let auto = backtest::auto_track(
        &tracks,
        learned.as_deref().unwrap_or(&tracks),
        &origins,
        &cand_names,
        &cfg,
    );
    tracks.push(auto);
    let evals: Vec<Evaluation> = backtest::evaluations(&tracks);
    for e in &evals {
        out.emit(e)?;
    }
    if a.detail {
        for t in &tracks {
            for (k, o) in t.outcomes.iter().enumerate() {
                let Some(o) = o else { continue };
                out.emit_as(
                    "backtest",
                    &BacktestRecord {
                        model: t.name,
                        origin: utc_string(cal.time(o.origin)),
                        chosen_start: utc_string(cal.time(o.chosen)),
                        best_start: utc_string(cal.time(o.best)),
                        chosen_load: round3(o.chosen_load),
                        best_load: round3(o.best_load),
                        regret: round3(o.regret),
                        hit: o.hit,
                        admitted: t.admitted[k],
                        followed: t.followed.get(k).copied().flatten(),
                    },
                )?;
            }
        }
    }
    let base_names: Vec<&str> = models::baselines().iter().map(|b| b.as_str()).collect();
    let best_baseline = backtest::best_of(&tracks, &base_names);
    let model_names: Vec<&str> = names
        .iter()
        .filter(|n| n.kind() == models::Kind::Model)
        .map(|n| n.as_str())
        .collect();
    let best_model = backtest::best_of(&tracks, &model_names);
    let auto = tracks.last().map(|t| t.score());
    let vs = tracks
        .last()
        .map(|a| paired_with(a, &tracks, cfg.week))
        .unwrap_or_default();
    let mut followed = serde_json::Map::new();
    for name in tracks
        .last()
        .into_iter()
        .flat_map(|t| t.followed.iter().flatten())
    {
        let n = followed.get(*name).and_then(|v| v.as_u64()).unwrap_or(0);
        followed.insert((*name).to_owned(), (n + 1).into());
    }
    out.finish(&json!({
        "origins": origins.len(),
        "metric": l.info.metric,
        "best_model": best_model.map(|(t, _)| t.name),
        "best_baseline": best_baseline.map(|(t, _)| t.name),
        "best_baseline_p90_regret": best_baseline.map(|(_, s)| round3(s.p90)),
        "auto_p90_regret": auto.map(|s| round3(s.p90)),
        "auto_followed": followed,
        "auto_vs_baselines": vs,
        "auto_le_baselines": vs.iter().all(|v| v.auto_not_worse),
    }))
}

/// auto against one baseline on the origins where both were scored (a strategy whose
/// window had no data at an origin is not scored there, so their own means can be over
/// different origins; bikeshare-dc-2011 is missing the hours without a rental, the quietest
/// of all).
#[derive(Debug, Serialize)]
struct Paired {
    baseline: &'static str,
    origins: usize,
    auto_mean_regret: f64,
    baseline_mean_regret: f64,
    /// auto's mean regret ≤ the baseline's (unrounded).
    auto_not_worse: bool,
    /// The paired t statistic of auto's regret minus the baseline's over weekly means (the
    /// origins of one week often choose the same window, so they are not counted as
    /// independent): above 2, auto is worse beyond what luck explains; None with fewer than
    /// 3 weeks.
    t_weeks: Option<f64>,
    /// The weeks in that count.
    weeks: usize,
}

/// [`Paired`] for each baseline with an origin in common with `auto`; weeks are origin /
/// `week` (grid steps).
fn paired_with(auto: &backtest::Track, tracks: &[backtest::Track], week: usize) -> Vec<Paired> {
    tracks
        .iter()
        .filter(|t| t.kind == models::Kind::Baseline)
        .filter_map(|b| {
            let both: Vec<(usize, f64, f64)> = auto
                .outcomes
                .iter()
                .zip(&b.outcomes)
                .filter_map(|(a, b)| {
                    let (a, b) = (a.as_ref()?, b.as_ref()?);
                    Some((a.origin / week.max(1), a.regret, b.regret))
                })
                .collect();
            let n = both.len();
            let a = both.iter().map(|p| p.1).sum::<f64>() / n as f64;
            let b_mean = both.iter().map(|p| p.2).sum::<f64>() / n as f64;
            let mut weekly: Vec<(Option<f64>, Option<f64>)> = Vec::new();
            for chunk in both.chunk_by(|x, y| x.0 == y.0) {
                let k = chunk.len() as f64;
                weekly.push((
                    Some(chunk.iter().map(|p| p.1).sum::<f64>() / k),
                    Some(chunk.iter().map(|p| p.2).sum::<f64>() / k),
                ));
            }
            let (wa, wb): (Vec<_>, Vec<_>) = weekly.into_iter().unzip();
            let (t, weeks) = backtest::paired_t(&wa, &wb);
            (n > 0).then(|| Paired {
                baseline: b.name,
                origins: n,
                auto_mean_regret: round3(a),
                baseline_mean_regret: round3(b_mean),
                auto_not_worse: a <= b_mean + 1e-9,
                t_weeks: (weeks >= 3).then(|| (t.clamp(-1e6, 1e6) * 100.0).round() / 100.0),
                weeks,
            })
        })
        .collect()
}
