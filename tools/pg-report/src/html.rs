//! The page: one HTML file with its CSS and SVG charts inline, no script and no external URL,
//! so it opens from a mail attachment or an air-gapped host the same.
//!
//! Every number and word the page takes from the JSON is printed as the JSON has it (numbers
//! as serde_json writes them, `null` as `n/a`), HTML-escaped, in an element whose
//! `data-field="SELECTOR:POINTER"` says where it came from: `SELECTOR` names the record
//! (`summary`, `phase.NAME`, `proof.I`, `load`, `verified`, `history`, `window.I`) and
//! `POINTER` is a JSON pointer into it (`/bytes/wire_total`). Human renderings (MiB, seconds)
//! stand beside them in elements without the attribute, so a test can compare every
//! `data-field` with the JSON mechanically.

use std::fmt::Write as _;

use serde_json::Value;

use crate::chart::{self, Timeline};
use crate::input::{Advice, LoadRun, Migration};

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as the page prints it: a string as it is, `null` as `n/a`, anything else as
/// compact JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        other => other.to_string(),
    }
}

/// The field at `ptr` of `rec` in an element carrying `data-field`; a dash (and no
/// attribute) when the record does not have it.
pub fn field(selector: &str, rec: &Value, ptr: &str) -> String {
    match rec.pointer(ptr) {
        Some(v) => format!(
            r#"<span class="v" data-field="{}">{}</span>"#,
            escape(&format!("{selector}:{ptr}")),
            escape(&plain(v))
        ),
        None => r#"<span class="v missing">–</span>"#.into(),
    }
}

/// Bytes for a person (binary units), or nothing for a non-number.
pub fn human_bytes(v: Option<&Value>) -> String {
    let Some(b) = v.and_then(Value::as_f64) else {
        return String::new();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut x, mut i) = (b, 0);
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!(r#" <span class="human">({b} B)</span>"#)
    } else {
        format!(r#" <span class="human">({x:.1} {})</span>"#, units[i])
    }
}

const CSS: &str = "\
body{font-family:sans-serif;margin:24px auto;max-width:1160px;color:#222;line-height:1.4}\
h1{font-size:26px;margin-bottom:4px}h2{font-size:21px;border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:36px}\
h3{font-size:16px;margin:22px 0 6px}\
table{border-collapse:collapse;margin:4px 0 8px}td,th{border:1px solid #ddd;padding:3px 9px;text-align:left;vertical-align:top}td{white-space:nowrap}td.detail{white-space:normal}\
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.facts th{width:14em}.human{color:#666}.missing{color:#aaa}\
.ok{color:#107010;font-weight:bold}.bad{color:#b00000;font-weight:bold}\
figure{margin:10px 0}figure svg{max-width:100%;height:auto;border:1px solid #e4e4e4}\
figcaption{color:#555;font-size:13px}.meta{color:#666;font-size:13px}.detail{font-size:12px;color:#444}";

/// Everything one page shows.
pub struct Page<'a> {
    /// The `<title>` and `<h1>`.
    pub title: &'a str,
    /// The migrations, each with the load run that ran through it (if given).
    pub migrations: Vec<(&'a Migration, Option<&'a LoadRun>)>,
    /// window-advisor's recommendation.
    pub advice: Option<&'a Advice>,
}

/// The page as HTML, and how many charts it holds.
pub fn render(p: &Page) -> anyhow::Result<(String, usize)> {
    let mut charts = 0;
    let mut h = String::new();
    let t = escape(p.title);
    write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>{CSS}</style></head><body>\n<h1>{t}</h1>\n"
    )?;
    let mut files: Vec<&str> = Vec::new();
    for (m, l) in &p.migrations {
        files.push(&m.file);
        if let Some(l) = l {
            files.push(&l.file);
        }
    }
    if let Some(a) = p.advice {
        files.push(&a.file);
    }
    // Each file once (demo.sh's report holds several migrations), in order.
    let mut once: Vec<&str> = Vec::new();
    for f in files {
        if !once.contains(&f) {
            once.push(f);
        }
    }
    let files: Vec<String> = once.iter().map(|f| escape(f)).collect();
    writeln!(
        h,
        "<p class=\"meta\">Made by pg-report from {}.</p>",
        files.join(", ")
    )?;
    for (i, (m, load)) in p.migrations.iter().enumerate() {
        charts += migration(&mut h, i, m, *load)?;
    }
    if let Some(a) = p.advice {
        charts += advice(&mut h, a)?;
    }
    h.push_str("</body></html>\n");
    Ok((h, charts))
}

/// A table row: a heading and already-rendered cells.
fn row(h: &mut String, head: &str, cells: &[String]) {
    let _ = write!(h, "<tr><th>{}</th>", escape(head));
    for c in cells {
        let _ = write!(h, "<td class=\"n\">{c}</td>");
    }
    h.push_str("</tr>\n");
}

fn verdict_class(v: &Value) -> &'static str {
    match v.as_str() {
        Some("equal") => "ok",
        Some(_) => "bad",
        None => "",
    }
}

/// One migration's section; returns the number of charts in it.
fn migration(
    h: &mut String,
    index: usize,
    m: &Migration,
    load: Option<&LoadRun>,
) -> anyhow::Result<usize> {
    let s = &m.summary;
    let sum = |ptr: &str| field("summary", s, ptr);
    let label = escape(&m.label);
    writeln!(
        h,
        "<section class=\"migration\" id=\"migration-{index}\" data-migration=\"{label}\">"
    )?;
    writeln!(
        h,
        "<h2>{label}: {} → {}</h2>",
        sum("/old_primary"),
        sum("/new_primary")
    )?;
    h.push_str("<table class=\"facts\">\n");
    let ok = s["success"].as_bool() == Some(true);
    row(
        h,
        "success",
        &[format!(
            "<span class=\"{}\">{}</span>",
            if ok { "ok" } else { "bad" },
            sum("/success")
        )],
    );
    if !ok {
        for (head, ptr) in [
            ("failed phase", "/failed_phase"),
            ("hosts left", "/state"),
            ("message", "/message"),
            ("exit code", "/exit_code"),
        ] {
            row(h, head, &[sum(ptr)]);
        }
    }
    row(
        h,
        "verdict",
        &[format!(
            "<span class=\"{}\">{}</span>",
            verdict_class(&s["verdict"]),
            sum("/verdict")
        )],
    );
    row(h, "mode", &[sum("/mode")]);
    row(h, "downtime (ms)", &[sum("/downtime_ms")]);
    row(
        h,
        "elapsed (ms)",
        &[format!(
            "{}{}",
            sum("/elapsed_ms"),
            s["elapsed_ms"].as_f64().map_or(String::new(), |ms| format!(
                " <span class=\"human\">({:.1} s)</span>",
                ms / 1000.0
            ))
        )],
    );
    row(h, "new timeline", &[sum("/new_timeline")]);
    row(h, "final checkpoint", &[sum("/checkpoint_lsn")]);
    row(h, "resumed from", &[sum("/resumed")]);
    h.push_str("</table>\n");

    // The timeline.
    let mut charts = 0;
    match Timeline::new(m, load) {
        Some(tl) => {
            let svg = tl.svg(&format!("{}: load through the migration", m.label))?;
            writeln!(
                h,
                "<figure class=\"chart\" data-chart=\"timeline\">{svg}<figcaption>Transactions \
                 per second (blue, left axis) and p99 latency (red, right axis) per second of \
                 load-gen; the phases shaded and named; the switchover's window without a \
                 writable primary in dark red, its stop as a line; the clients' longest write \
                 gap in orange along the bottom; red dots: seconds in which clients saw \
                 errors.</figcaption></figure>"
            )?;
            charts += 1;
        }
        None => h.push_str(
            "<p class=\"meta\">No timeline: the phases have no times (a report from before \
             migrate.sh wrote started_at_ms) and no load-gen run was given (--load).</p>\n",
        ),
    }

    // Phases.
    h.push_str("<h3>Phases</h3>\n<table><tr><th>phase</th><th>ms</th><th>from (s)</th><th>to (s)</th></tr>\n");
    let t0 = load.map(|l| l.started_at_ms).or_else(|| {
        m.phases
            .iter()
            .filter_map(|p| p["started_at_ms"].as_i64())
            .min()
    });
    for p in &m.phases {
        let name = p["name"].as_str().unwrap_or("?");
        let sel = format!("phase.{name}");
        let at = |k: &str| match (p[k].as_i64(), t0) {
            (Some(ms), Some(t0)) => format!("{:.3}", (ms - t0) as f64 / 1000.0),
            _ => "–".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            field(&sel, p, "/name"),
            field(&sel, p, "/ms"),
            at("started_at_ms"),
            at("ended_at_ms")
        );
    }
    h.push_str("</table>\n");
    if let Some(sw) = m.phase("switchover") {
        let f = |ptr: &str| field("phase.switchover", sw, ptr);
        let _ = writeln!(
            h,
            "<p>Switchover: down {} ms (stop {} ms, promote {} ms), {} promote signal(s), outcome {}.</p>",
            f("/downtime_ms"),
            f("/stop_ms"),
            f("/promote_ms"),
            f("/promote_signals"),
            f("/outcome")
        );
    }

    clients(h, m, load)?;
    proofs(h, m)?;
    databases(h, m)?;

    // Bytes moved.
    h.push_str("<h3>Bytes moved</h3>\n<table>\n");
    for (head, ptr) in [
        ("data directory copied", "/bytes/base_copy"),
        ("base copy over the wire", "/bytes/base_copy_wire"),
        ("WAL streamed", "/bytes/wal_streamed"),
        ("total over the wire", "/bytes/wire_total"),
        ("WAL during the switch", "/wal_bytes_during_switch"),
    ] {
        row(
            h,
            head,
            &[format!("{}{}", sum(ptr), human_bytes(s.pointer(ptr)))],
        );
    }
    row(h, "compression", &[sum("/compression")]);
    row(h, "egress price per GB", &[sum("/egress_price_per_gb")]);
    row(h, "egress estimate", &[sum("/egress_estimate")]);
    h.push_str("</table>\n</section>\n");
    Ok(charts)
}

/// The client side: load-gen's summary (from `--load`, else demo.sh's `load` record) and the
/// check of its acknowledged writes.
fn clients(h: &mut String, m: &Migration, load: Option<&LoadRun>) -> anyhow::Result<()> {
    let summary = load.and_then(|l| l.summary.as_ref()).or(m.load.as_ref());
    h.push_str("<h3>What the clients saw</h3>\n");
    match summary {
        None => h.push_str("<p class=\"meta\">No load-gen run given (--load).</p>\n"),
        Some(ls) => {
            h.push_str("<table>\n");
            let f = |ptr: &str| field("load", ls, ptr);
            for (head, ptr) in [
                ("committed", "/committed"),
                ("tps", "/tps"),
                ("p99 latency (ms)", "/latency_p99_ms"),
                ("errors: statement", "/errors_by_kind/statement"),
                ("errors: unknown outcome", "/errors_by_kind/unknown"),
                ("errors: connect", "/errors_by_kind/connect"),
                ("errors: total", "/errors_total"),
                ("longest write gap (ms)", "/max_write_gap_ms"),
                ("longest stall (ms)", "/max_stall_ms"),
                ("unavailable (ms)", "/unavailable_ms"),
                ("outages", "/outages"),
                ("reconnects", "/reconnects"),
                ("split brain", "/split_brain"),
            ] {
                if ls.pointer(ptr).is_some() {
                    row(h, head, &[f(ptr)]);
                }
            }
            h.push_str("</table>\n");
        }
    }
    // The verification: demo.sh's `load_verified`, else a `load-gen --verify` run's summary.
    let verified = m
        .load_verified
        .as_ref()
        .or(summary.filter(|s| s.get("lost").is_some()));
    if let Some(v) = verified {
        let f = |ptr: &str| field("verified", v, ptr);
        let lost = v["lost"].as_i64();
        let _ = writeln!(
            h,
            "<p>Acknowledged writes: {} acknowledged, {} present, <span class=\"{}\">{} lost</span>, {} split brain, {} of unknown outcome.</p>",
            f("/acked"),
            f("/present"),
            if lost == Some(0) { "ok" } else { "bad" },
            f("/lost"),
            f("/split_brain"),
            f("/unknown")
        );
    }
    Ok(())
}

fn proofs(h: &mut String, m: &Migration) -> anyhow::Result<()> {
    h.push_str("<h3>Proofs</h3>\n");
    if m.proofs.is_empty() {
        h.push_str("<p class=\"meta\">No proof records.</p>\n");
        return Ok(());
    }
    h.push_str("<table><tr><th>proof</th><th>ok</th><th>what it checked</th></tr>\n");
    for (i, p) in m.proofs.iter().enumerate() {
        let sel = format!("proof.{i}");
        // The other fields, compactly: key=value.
        let detail: Vec<String> = p
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "type" | "name" | "ok" | "migration"))
            .map(|(k, v)| format!("{}={}", escape(k), escape(&plain(v))))
            .collect();
        let okc = if p["ok"] == true { "ok" } else { "bad" };
        writeln!(
            h,
            "<tr><td>{}</td><td class=\"{okc}\">{}</td><td class=\"detail\">{}</td></tr>",
            field(&sel, p, "/name"),
            field(&sel, p, "/ok"),
            detail.join(" ")
        )?;
    }
    h.push_str("</table>\n");
    Ok(())
}

fn databases(h: &mut String, m: &Migration) -> anyhow::Result<()> {
    h.push_str("<h3>Verification per database</h3>\n");
    let Some(v) = m.phase("verify") else {
        h.push_str(
            "<p class=\"meta\">No verify phase (--no-verify, or the run ended before it).</p>\n",
        );
        return Ok(());
    };
    let f = |ptr: &str| field("phase.verify", v, ptr);
    writeln!(
        h,
        "<p>Cluster verdict: <span class=\"{}\">{}</span>; {} equal, {} different, {} failed to check.</p>",
        verdict_class(&v["verdict"]),
        f("/verdict"),
        f("/equal_databases"),
        f("/different_databases"),
        f("/error_databases")
    )?;
    h.push_str("<table><tr><th>database</th><th>verdict</th><th>rowcount-diff exit</th><th>pg-checksum exit</th></tr>\n");
    for (i, d) in v["databases"].as_array().into_iter().flatten().enumerate() {
        let p = |k: &str| f(&format!("/databases/{i}/{k}"));
        writeln!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            p("database"),
            verdict_class(&d["verdict"]),
            p("verdict"),
            p("rowcount_exit"),
            p("checksum_exit")
        )?;
    }
    h.push_str("</table>\n");
    Ok(())
}

/// window-advisor's section; returns the number of charts in it.
fn advice(h: &mut String, a: &Advice) -> anyhow::Result<usize> {
    h.push_str("<section class=\"advice\" id=\"advice\">\n<h2>Migration windows</h2>\n");
    if let Some(hist) = &a.history {
        let f = |ptr: &str| field("history", hist, ptr);
        writeln!(
            h,
            "<p>Learned from {} samples of {} from {} to {} ({} days), zone {}.</p>",
            f("/samples"),
            f("/metric"),
            f("/first"),
            f("/last"),
            f("/days"),
            f("/tz")
        )?;
    }
    let svg = chart::week_svg(a)?;
    writeln!(
        h,
        "<figure class=\"chart\" data-chart=\"week\">{svg}<figcaption>The load window-advisor \
         forecasts for the horizon (blue) and the recommended windows (green, numbered by \
         rank); lines at local midnight.</figcaption></figure>"
    )?;
    h.push_str("<table><tr><th>rank</th><th>start (local)</th><th>end (local)</th><th>weekday</th><th>predicted load</th><th>80% range</th><th>model</th><th>wal-ship jobs</th></tr>\n");
    for (i, w) in a.windows.iter().enumerate() {
        let f = |ptr: &str| field(&format!("window.{i}"), w, ptr);
        writeln!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{} – {}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            f("/rank"),
            f("/start_local"),
            f("/end_local"),
            f("/weekday"),
            f("/predicted_load"),
            f("/predicted_low"),
            f("/predicted_high"),
            f("/model"),
            f("/wal_ship_jobs")
        )?;
    }
    h.push_str("</table>\n</section>\n");
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape("plain → text"), "plain → text");
    }

    #[test]
    fn fields_carry_their_source_and_print_json_values() {
        let rec = json!({"bytes": {"wire_total": 67811240, "wal_streamed": null}, "verdict": "<b>equal</b>", "x": 1.5});
        assert_eq!(
            field("summary", &rec, "/bytes/wire_total"),
            r#"<span class="v" data-field="summary:/bytes/wire_total">67811240</span>"#
        );
        assert_eq!(
            field("summary", &rec, "/bytes/wal_streamed"),
            r#"<span class="v" data-field="summary:/bytes/wal_streamed">n/a</span>"#
        );
        assert_eq!(
            field("summary", &rec, "/verdict"),
            r#"<span class="v" data-field="summary:/verdict">&lt;b&gt;equal&lt;/b&gt;</span>"#
        );
        assert_eq!(
            field("summary", &rec, "/x"),
            r#"<span class="v" data-field="summary:/x">1.5</span>"#
        );
        // Absent: a dash, and nothing a test would compare.
        assert!(!field("summary", &rec, "/nope").contains("data-field"));
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(
            human_bytes(Some(&json!(67811240))),
            r#" <span class="human">(64.7 MiB)</span>"#
        );
        assert_eq!(
            human_bytes(Some(&json!(216))),
            r#" <span class="human">(216 B)</span>"#
        );
        assert_eq!(human_bytes(Some(&Value::Null)), "");
    }
}
