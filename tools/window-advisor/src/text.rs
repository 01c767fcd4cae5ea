//! window-advisor for a person (`--text`, the default on a terminal): the windows ranked,
//! rates in human units.

use serde_json::{Map, Value};
use shared::human;

/// The text of one record (see [`shared::human::Render`]).
pub fn render(kind: &str, r: &Map<String, Value>) -> Option<String> {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    let v = |k: &str| r.get(k).map_or("-".into(), |x| human::value(k, x));
    match kind {
        "window" => {
            // `2026-01-25T03:10:00+00:00` → `2026-01-25 03:10`.
            let local = |k: &str| s(k).get(..16).unwrap_or("-").replace('T', " ");
            let end = local("end_local");
            let mut text = format!(
                "#{:<2} {} {}–{} {} ({} min)  predicted {} {} ({}–{})  WAL {}  link needed {}",
                v("rank"),
                s("weekday"),
                local("start_local"),
                end.get(11..).unwrap_or("-"),
                s("tz"),
                v("minutes"),
                s("metric"),
                v("predicted_load"),
                v("predicted_low"),
                v("predicted_high"),
                v("wal_bytes_per_s"),
                v("bandwidth_bytes_per_s")
            );
            // The advice in words, and (for the best window) why this model.
            if let Some(a) = r.get("advice").and_then(Value::as_str) {
                text.push_str(&format!("\n    {a}"));
            }
            if r.get("rank").and_then(Value::as_u64) == Some(1) {
                if let Some(m) = r.get("model_reason").and_then(Value::as_str) {
                    text.push_str(&format!("\n    chosen by {}: {m}", s("model")));
                }
            }
            Some(text)
        }
        "history" => Some(format!(
            "history: {} days of {} ({} samples, every {} s), {} gaps, {}% missing",
            v("days"),
            s("metric"),
            v("samples"),
            v("interval_s"),
            v("gaps"),
            v("missing_pct")
        )),
        "resources" => Some(format!(
            "resources: database {}, CPUs needed {} of {}, memory needed {}",
            v("db_size_bytes"),
            v("cpus_needed"),
            v("source_cpus"),
            v("mem_needed_bytes")
        )),
        "choice" => Some(format!(
            "model: {}{}",
            s("model"),
            r.get("why")
                .or_else(|| r.get("reason"))
                .and_then(Value::as_str)
                .map_or(String::new(), |why| format!(" ({why})"))
        )),
        _ => None,
    }
}

/// The closing line: for `evaluate`, auto against each baseline on the origins both were
/// scored on (mean regret, and the weekly paired t where there are 3 weeks); otherwise the
/// generic one.
pub fn closing(summary: &Map<String, Value>) -> Option<String> {
    if summary.get("exit_code").and_then(Value::as_u64) != Some(0) {
        return None;
    }
    let vs = summary.get("auto_vs_baselines")?.as_array()?;
    if vs.is_empty() {
        return None;
    }
    let v = |r: &Value, k: &str| r.get(k).map_or("-".into(), |x| human::value(k, x));
    let each: Vec<String> = vs
        .iter()
        .map(|r| {
            let t = r
                .get("t_weeks")
                .and_then(Value::as_f64)
                .map_or(String::new(), |t| format!(", weekly t {t:+.2}"));
            format!(
                "{} {} vs {} ({} origins{t})",
                v(r, "baseline"),
                v(r, "auto_mean_regret"),
                v(r, "baseline_mean_regret"),
                v(r, "origins")
            )
        })
        .collect();
    let worse: Vec<String> = vs
        .iter()
        .filter(|r| r.get("auto_not_worse") == Some(&Value::Bool(false)))
        .map(|r| v(r, "baseline"))
        .collect();
    let verdict = if worse.is_empty() {
        "auto is not worse than any baseline".to_owned()
    } else {
        format!("auto is above {}", worse.join(", "))
    };
    Some(format!(
        "{verdict}; mean regret, auto vs each baseline on the origins both were scored on: {}{}",
        each.join("; "),
        human::elapsed(summary)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluate_closes_with_auto_against_each_baseline() {
        let s = json!({"exit_code":0,"elapsed_ms":262,"auto_vs_baselines":[
            {"baseline":"last-week","origins":24,"auto_mean_regret":27.75,"baseline_mean_regret":40.1,"auto_not_worse":true,"t_weeks":-1.94,"weeks":11},
            {"baseline":"at-0300","origins":24,"auto_mean_regret":27.75,"baseline_mean_regret":20.5,"auto_not_worse":false,"t_weeks":0.4,"weeks":11},
            {"baseline":"random","origins":2,"auto_mean_regret":27.75,"baseline_mean_regret":900,"auto_not_worse":true,"t_weeks":null,"weeks":1}]});
        assert_eq!(
            closing(s.as_object().unwrap()).unwrap(),
            "auto is above at-0300; mean regret, auto vs each baseline on the origins both \
             were scored on: last-week 27.8 vs 40.1 (24 origins, weekly t -1.94); at-0300 27.8 \
             vs 20.5 (24 origins, weekly t +0.40); random 27.8 vs 900 (2 origins), in 262 ms"
        );
        // recommend's summary, and a failure: the generic line.
        assert_eq!(closing(json!({"exit_code":0}).as_object().unwrap()), None);
        let failed = json!({"exit_code":65,"auto_vs_baselines":[]});
        assert_eq!(closing(failed.as_object().unwrap()), None);
    }

    #[test]
    fn a_window_reads_as_a_time_and_rates() {
        let r = json!({"rank":1,"start_local":"2026-01-25T03:10:00+00:00","end_local":"2026-01-25T03:40:00+00:00",
            "weekday":"Sun","tz":"Etc/UTC","minutes":30,"metric":"tps","predicted_load":11.93,"predicted_low":10.4,
            "predicted_high":13.9,"wal_bytes_per_s":71475.2,"bandwidth_bytes_per_s":33524373.984});
        assert_eq!(
            render("window", r.as_object().unwrap()).unwrap(),
            "#1  Sun 2026-01-25 03:10–03:40 Etc/UTC (30 min)  predicted tps 11.9 (10.4–13.9)  WAL 69.8 KiB/s  link needed 32.0 MiB/s"
        );
        let mut with = r.as_object().unwrap().clone();
        with.insert(
            "advice".into(),
            "expect 11.9 tps; 4% of the busiest hour".into(),
        );
        with.insert("model_reason".into(), "--model profile".into());
        with.insert("model".into(), "profile".into());
        assert_eq!(
            render("window", &with)
                .unwrap()
                .lines()
                .skip(1)
                .collect::<Vec<_>>(),
            [
                "    expect 11.9 tps; 4% of the busiest hour",
                "    chosen by profile: --model profile"
            ]
        );
    }
}
