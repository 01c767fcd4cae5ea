//! The page in headless Chromium: it loads, its charts are laid out at their size, the
//! screenshot is a real picture, and every value it shows equals the JSON's.
//!
//! Made from demo.sh's combined report (two migrations, the first with its load-gen ticks)
//! and window-advisor's forecast. The same check on a fresh real run is
//! tests/tests/report.rs.

use serde_json::Value;
use testkit::browser::{data_fields, png_size, Browser};

use crate::common::{data, demo_report, pg_report, records, write_records};

/// The JSON a `data-field` selector names, in the section of migration `label` (None: the
/// advice section).
fn record<'a>(
    demo: &'a [Value],
    load: &'a Value,
    advice: &'a [Value],
    label: Option<&str>,
    selector: &str,
) -> &'a Value {
    let (kind, which) = selector.split_once('.').unwrap_or((selector, ""));
    let mine = |t: &str| -> Vec<&'a Value> {
        demo.iter()
            .filter(|r| r["type"] == t && r["migration"].as_str() == label)
            .collect()
    };
    match (label, kind) {
        (Some(_), "summary") => mine("summary")[0],
        (Some(_), "phase") => mine("phase")
            .into_iter()
            .find(|p| p["name"] == which)
            .unwrap(),
        (Some(_), "proof") => mine("proof")[which.parse::<usize>().unwrap()],
        // --load (given for the first migration only) wins over demo.sh's `load` record.
        (Some("A-to-B"), "load") => load,
        (Some(_), "load") => mine("load")[0],
        (Some(_), "verified") => mine("load_verified")[0],
        (None, "history") => advice.iter().find(|r| r["type"] == "history").unwrap(),
        (None, "window") => advice
            .iter()
            .filter(|r| r["type"] == "window")
            .nth(which.parse().unwrap())
            .unwrap(),
        other => panic!("unexpected selector {other:?}"),
    }
}

#[test]
fn the_page_loads_in_chromium_with_its_charts_and_the_json_numbers() {
    let Some(browser) = Browser::find() else {
        testkit::skip!("no chromium on the PATH (make setup installs it)");
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_report();
    let demo_file = dir.path().join("report.jsonl");
    write_records(&demo_file, &demo);
    let page = dir.path().join("report.html");
    let r = pg_report(&[
        "html".as_ref(),
        "--migrate".as_ref(),
        &demo_file,
        "--load".as_ref(),
        &data("load.jsonl"),
        "--advice".as_ref(),
        &data("advice.jsonl"),
        "--title".as_ref(),
        "demo <report>".as_ref(),
        "-o".as_ref(),
        &page,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.records[0]["charts"], 3);

    let shown = browser.render(&page, dir.path(), (1280, 2000));
    assert!(
        shown.dom.contains("<title>demo &lt;report&gt;</title>"),
        "not loaded"
    );
    // Three charts, each laid out at the size plotters drew it (the window is wider).
    let charts: Vec<&str> = shown.svgs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(charts, ["timeline", "timeline", "week"]);
    let (width, height) = pg_report::chart::SIZE;
    for (chart, w, h) in &shown.svgs {
        // Plus the 1-pixel border of the page's CSS on each side.
        assert_eq!(
            (*w, *h),
            (f64::from(width) + 2.0, f64::from(height) + 2.0),
            "{chart}"
        );
    }

    let png = dir.path().join("report.png");
    browser.screenshot(&page, &png, dir.path(), (1280, 2000));
    let shot = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&shot), Some((1280, 2000)));
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><title>blank</title>").unwrap();
    let blank_png = dir.path().join("blank.png");
    browser.screenshot(&blank, &blank_png, dir.path(), (1280, 2000));
    let blank_len = std::fs::read(&blank_png).unwrap().len();
    assert!(
        shot.len() > 3 * blank_len,
        "{} vs blank {blank_len}",
        shot.len()
    );
    if let Some(keep) = std::env::var_os("PGSHIFT_REPORT_KEEP") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&page, std::path::Path::new(&keep).join("fixtures.html")).unwrap();
        std::fs::copy(&png, std::path::Path::new(&keep).join("fixtures.png")).unwrap();
    }

    // Every data-field, section by section, equals its JSON.
    let load = records(&data("load.jsonl")).pop().unwrap();
    let advice = records(&data("advice.jsonl"));
    let mut seen = Vec::new();
    for section in shown.dom.split("<section").skip(1) {
        let label = section
            .split_once("data-migration=\"")
            .map(|(_, rest)| rest.split('"').next().unwrap());
        for (field, text) in data_fields(section) {
            let (selector, ptr) = field.split_once(':').unwrap();
            let v = record(&demo, &load, &advice, label, selector)
                .pointer(ptr)
                .unwrap_or_else(|| panic!("{field}: not in the JSON"));
            let want = match v {
                Value::String(s) => s.clone(),
                Value::Null => "n/a".into(),
                other => other.to_string(),
            };
            assert_eq!(text, want, "{label:?} {field}");
            seen.push(format!("{}|{field}", label.unwrap_or("advice")));
        }
    }
    for want in [
        "A-to-B|summary:/downtime_ms",
        "A-to-B|summary:/verdict",
        "A-to-B|summary:/bytes/wire_total",
        "A-to-B|load:/max_write_gap_ms",
        "A-to-B|verified:/lost",
        "B-to-A|verified:/lost",
        "B-to-A|load:/errors_by_kind/connect",
        "B-to-A|phase.verify:/databases/0/verdict",
        "advice|window.0:/start_local",
        "advice|window.2:/predicted_load",
        "advice|history:/samples",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not on the page");
    }
}
