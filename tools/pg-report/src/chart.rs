//! The charts, drawn with plotters' SVG backend into strings that the page inlines.
//!
//! plotters writes text as SVG `<text>` elements (escaped), so no font files are read and the
//! page needs nothing but a browser's default sans-serif font. Each chart is a plain `<svg>`
//! with a fixed width and height and a `viewBox`; the page's CSS lets it shrink to the window.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::input::{Advice, LoadRun, Migration};

/// Width and height of every chart, in CSS pixels.
pub const SIZE: (u32, u32) = (1100, 440);

/// Background tints of the phase bands, in turn.
const PHASE_TINTS: [RGBColor; 4] = [
    RGBColor(221, 234, 247),
    RGBColor(229, 245, 224),
    RGBColor(254, 237, 222),
    RGBColor(239, 237, 245),
];
const TPS_COLOUR: RGBColor = RGBColor(31, 119, 180);
const LATENCY_COLOUR: RGBColor = RGBColor(214, 39, 40);
const SWITCH_COLOUR: RGBColor = RGBColor(148, 0, 0);
const GAP_COLOUR: RGBColor = RGBColor(255, 127, 14);

/// A drawing error is a bug of ours (the inputs were checked before): exit 70.
fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    shared::err(
        shared::ErrorKind::Internal,
        format!("drawing a chart: {e:?}"),
    )
}

/// Seconds between two epoch-millisecond moments.
fn secs(ms: i64, t0: i64) -> f64 {
    (ms - t0) as f64 / 1000.0
}

/// What the timeline of one migration shows, in seconds since `t0_ms`.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Epoch ms of x = 0: load-gen's start, else the first phase's.
    pub t0_ms: i64,
    /// `(name, from_s, to_s)` for each phase with its times.
    pub phases: Vec<(String, f64, f64)>,
    /// `(stop_at_s, writable_at_s, downtime_ms)` of the switchover.
    pub switchover: Option<(f64, f64, i64)>,
    /// `(t_s, tps, latency_p99_ms, client_errors)` per load-gen tick.
    pub ticks: Vec<(f64, f64, Option<f64>, i64)>,
    /// `(from_s, to_s, ms)` of load-gen's longest write gap.
    pub gap: Option<(f64, f64, i64)>,
}

impl Timeline {
    /// Line the migration's epoch-ms phases up with load-gen's ticks (`started_at` + `t_ms`).
    /// None when there is nothing with a time to draw (a report from before phases had
    /// `started_at_ms`, and no load).
    pub fn new(m: &Migration, load: Option<&LoadRun>) -> Option<Timeline> {
        let phase_times: Vec<(String, i64, i64)> = m
            .phases
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_owned(),
                    p["started_at_ms"].as_i64()?,
                    p["ended_at_ms"].as_i64()?,
                ))
            })
            .collect();
        let t0_ms = match load {
            Some(l) => l.started_at_ms,
            None => phase_times.iter().map(|p| p.1).min()?,
        };
        let mut t = Timeline {
            t0_ms,
            phases: phase_times
                .into_iter()
                .map(|(n, a, b)| (n, secs(a, t0_ms), secs(b, t0_ms)))
                .collect(),
            ..Timeline::default()
        };
        if let Some(sw) = m.phase("switchover") {
            if let (Some(a), Some(b)) = (sw["stop_at_ms"].as_i64(), sw["writable_at_ms"].as_i64()) {
                let downtime = sw["downtime_ms"].as_i64().unwrap_or(b - a);
                t.switchover = Some((secs(a, t0_ms), secs(b, t0_ms), downtime));
            }
        }
        if let Some(l) = load {
            t.ticks = l
                .ticks
                .iter()
                .map(|k| {
                    let errors = k["errors_by_kind"]
                        .as_object()
                        .map_or(0, |o| o.values().filter_map(Value::as_i64).sum());
                    (
                        secs(l.started_at_ms + k["t_ms"].as_i64().unwrap_or(0), t0_ms),
                        k["tps"].as_f64().unwrap_or(0.0),
                        k["latency_p99_ms"].as_f64(),
                        errors,
                    )
                })
                .collect();
            if let Some(s) = &l.summary {
                if let (Some(from), Some(ms)) = (
                    s["max_write_gap_from_ms"].as_i64(),
                    s["max_write_gap_ms"].as_i64(),
                ) {
                    let a = secs(l.started_at_ms + from, t0_ms);
                    t.gap = Some((a, a + ms as f64 / 1000.0, ms));
                }
            }
        }
        Some(t)
    }

    /// The x range: everything drawn, from 0.
    fn x_range(&self) -> (f64, f64) {
        let mut hi = 1.0f64;
        let mut lo = 0.0f64;
        for (_, a, b) in &self.phases {
            lo = lo.min(*a);
            hi = hi.max(*b);
        }
        for (t, ..) in &self.ticks {
            hi = hi.max(*t);
        }
        if let Some((a, b, _)) = self.switchover {
            lo = lo.min(a);
            hi = hi.max(b);
        }
        (lo, hi + (hi - lo) * 0.01)
    }

    /// The chart as an `<svg>` element.
    pub fn svg(&self, caption: &str) -> anyhow::Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw(&root, caption).map_err(draw_err)?;
            root.present().map_err(draw_err)?;
        }
        Ok(svg)
    }

    fn draw(
        &self,
        root: &DrawingArea<SVGBackend, Shift>,
        caption: &str,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        root.fill(&WHITE)?;
        let (x0, x1) = self.x_range();
        let tps_max = self
            .ticks
            .iter()
            .map(|t| t.1)
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.25;
        let lat_max = self
            .ticks
            .iter()
            .filter_map(|t| t.2)
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.25;
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .right_y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0.0..tps_max)?
            .set_secondary_coord(x0..x1, 0.0..lat_max);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_desc("seconds since the load started")
            .y_desc("transactions per second")
            .label_style(("sans-serif", 13))
            .draw()?;
        chart
            .configure_secondary_axes()
            .y_desc("p99 latency (ms)")
            .label_style(("sans-serif", 13))
            .draw()?;

        // The phases: tinted bands, then their names at the top, at three heights in turn
        // so that the names of short phases side by side do not overprint each other (and
        // after all bands, so that no band covers a name).
        for (i, (_, a, b)) in self.phases.iter().enumerate() {
            let tint = PHASE_TINTS[i % PHASE_TINTS.len()];
            chart.draw_series(std::iter::once(Rectangle::new(
                [(*a, 0.0), (*b, tps_max)],
                tint.filled(),
            )))?;
        }
        for (i, (name, a, _)) in self.phases.iter().enumerate() {
            let y = tps_max * [0.975, 0.935, 0.895][i % 3];
            chart.draw_series(std::iter::once(Text::new(
                name.clone(),
                (*a + (x1 - x0) / 400.0, y),
                ("sans-serif", 13).into_font().color(&BLACK.mix(0.8)),
            )))?;
        }
        // The longest write gap: an orange bar along the bottom.
        if let Some((a, b, ms)) = self.gap {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b.max(a + (x1 - x0) / 400.0), tps_max * 0.04)],
                GAP_COLOUR.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("longest write gap {ms} ms"),
                (b, tps_max * 0.06),
                ("sans-serif", 13).into_font().color(&GAP_COLOUR),
            )))?;
        }
        // The switchover: its window without a writable primary shaded, a line at the stop.
        if let Some((a, b, downtime)) = self.switchover {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, tps_max)],
                SWITCH_COLOUR.mix(0.25).filled(),
            )))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(a, 0.0), (a, tps_max)],
                SWITCH_COLOUR.stroke_width(2),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("switchover: {downtime} ms down"),
                (b + (x1 - x0) / 200.0, tps_max * 0.84),
                ("sans-serif", 14).into_font().color(&SWITCH_COLOUR),
            )))?;
        }

        if !self.ticks.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    self.ticks.iter().map(|t| (t.0, t.1)),
                    TPS_COLOUR.stroke_width(2),
                ))?
                .label("TPS")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], TPS_COLOUR.stroke_width(2))
                });
            // Latency: a tick without commits has none, which breaks the line.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for t in &self.ticks {
                match t.2 {
                    Some(l) => runs.last_mut().expect("one run").push((t.0, l)),
                    None => runs.push(Vec::new()),
                }
            }
            for (i, run) in runs.into_iter().filter(|r| !r.is_empty()).enumerate() {
                let s = chart.draw_secondary_series(LineSeries::new(run, LATENCY_COLOUR))?;
                if i == 0 {
                    s.label("p99 latency (right axis)").legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], LATENCY_COLOUR)
                    });
                }
            }
            // Ticks in which clients saw errors: red dots on the time axis.
            let errs: Vec<(f64, f64)> = self
                .ticks
                .iter()
                .filter(|t| t.3 > 0)
                .map(|t| (t.0, tps_max * 0.02))
                .collect();
            if !errs.is_empty() {
                chart
                    .draw_series(
                        errs.into_iter()
                            .map(|p| Circle::new(p, 4, LATENCY_COLOUR.filled())),
                    )?
                    .label("client errors in the second")
                    .legend(|(x, y)| Circle::new((x + 9, y), 4, LATENCY_COLOUR.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 13))
                .draw()?;
        }
        Ok(())
    }
}

/// The week window-advisor forecast, with the recommended windows marked.
pub fn week_svg(a: &Advice) -> anyhow::Result<String> {
    let points: Vec<(f64, f64)> = a
        .forecast
        .iter()
        .filter_map(|f| {
            let t = crate::input::epoch_ms(f["t"].as_str()?).ok()?;
            Some((t as f64 / 1000.0, f["predicted"].as_f64()?))
        })
        .collect();
    let windows: Vec<(f64, f64, i64)> = a
        .windows
        .iter()
        .filter_map(|w| {
            let s = crate::input::epoch_ms(w["start"].as_str()?).ok()?;
            let e = crate::input::epoch_ms(w["end"].as_str()?).ok()?;
            Some((s as f64 / 1000.0, e as f64 / 1000.0, w["rank"].as_i64()?))
        })
        .collect();
    let t0 = points.first().map_or(0.0, |p| p.0);
    let t1 = points.last().map_or(1.0, |p| p.0).max(t0 + 1.0);
    let y_max = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0) * 1.15;
    let metric = a
        .history
        .as_ref()
        .and_then(|h| h["metric"].as_str())
        .unwrap_or("load")
        .to_owned();
    let tz = a
        .history
        .as_ref()
        .and_then(|h| h["tz"].as_str())
        .unwrap_or("UTC")
        .to_owned();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        let draw = || -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    format!("forecast {metric} and the recommended windows"),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(70)
                .build_cartesian_2d(t0..t1, 0.0..y_max)?;
            // Days as the x axis: a line and a label at each local midnight (plotters would
            // put its labels at round numbers of seconds, which are no times of day).
            chart
                .configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .disable_x_mesh()
                .x_labels(0)
                .x_desc(format!("days ({tz})"))
                .y_desc(format!("predicted {metric}"))
                .label_style(("sans-serif", 13))
                .draw()?;
            for (m, label) in midnights(t0, t1, &tz) {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(m, 0.0), (m, y_max)],
                    BLACK.mix(0.25),
                )))?;
                chart.draw_series(std::iter::once(Text::new(
                    label,
                    (m + (t1 - t0) / 300.0, y_max * 0.035),
                    ("sans-serif", 13).into_font().color(&BLACK.mix(0.7)),
                )))?;
            }
            // The windows: green bands with their edges, the rank at the top (lower for each
            // rank, since the best windows are often side by side).
            let green = RGBColor(44, 160, 44);
            for (s, e, _) in &windows {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(*s, 0.0), (*e, y_max)],
                    green.mix(0.35).filled(),
                )))?;
                for x in [*s, *e] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, 0.0), (x, y_max)],
                        green.stroke_width(1),
                    )))?;
                }
            }
            for (s, e, rank) in &windows {
                let y = y_max * (0.96 - 0.06 * (*rank - 1).clamp(0, 10) as f64);
                chart.draw_series(std::iter::once(Text::new(
                    format!("#{rank}"),
                    ((*s + *e) / 2.0 + (t1 - t0) / 250.0, y),
                    ("sans-serif", 14).into_font().color(&RGBColor(0, 100, 0)),
                )))?;
            }
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                TPS_COLOUR.stroke_width(2),
            ))?;
            Ok(())
        };
        draw().map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The local midnights in `[t0, t1)` (epoch seconds) and a label for each (`Mon 26 Jan`).
fn midnights(t0: f64, t1: f64, tz: &str) -> Vec<(f64, String)> {
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(start) = jiff::Timestamp::from_second(t0 as i64) else {
        return Vec::new();
    };
    let mut day = start.to_zoned(zone.clone()).date();
    let mut out = Vec::new();
    // At most a few weeks of days; the bound only guards against a nonsensical range.
    for _ in 0..400 {
        let Ok(z) = day.to_zoned(zone.clone()) else {
            break;
        };
        let t = z.timestamp().as_second() as f64;
        if t >= t1 {
            break;
        }
        if t >= t0 {
            out.push((t, z.strftime("%a %d %b").to_string()));
        }
        match day.tomorrow() {
            Ok(d) => day = d,
            Err(_) => break,
        }
    }
    out
}
