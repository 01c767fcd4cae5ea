//! pg-report on a real run: one migration A→B under load-gen (with `--verify`), its report
//! rendered to HTML, and the page loaded in headless Chromium: it must load, show its charts
//! at their size, and print exactly the numbers of the JSON it was made from.
//!
//! `exclusive_` because it drives two hosts through a switchover (see migrate.rs). Set
//! `PGSHIFT_REPORT_KEEP=DIR` to keep the inputs, the page and the screenshot in DIR.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::hosts::*;
use serde_json::Value;
use testkit::browser::{data_fields, png_size, Browser};
use testkit::json_lines;

#[test]
fn exclusive_report_of_a_migration_under_load_renders_in_chromium() {
    let Some(browser) = Browser::find() else {
        testkit::skip!("no chromium on the PATH (make setup installs it)");
    };
    let hosts = Hosts::create(&[]);
    let mut load = Load::start_with(&hosts, &hosts.both(), &["--verify"]);
    let migrate_file = hosts.dir.join("migrate.jsonl");
    let (code, recs, err) = hosts.migrate(&["--report", migrate_file.to_str().unwrap()]);
    assert_eq!(code, 0, "migration failed: {}\n{err}", summary(&recs));
    // A few ticks on the new primary, so the chart shows the load coming back.
    std::thread::sleep(Duration::from_secs(2));
    let load_recs = load.stop();
    let load_file = hosts.dir.join("load.jsonl");
    let lines: Vec<String> = load_recs.iter().map(Value::to_string).collect();
    std::fs::write(&load_file, lines.join("\n") + "\n").unwrap();

    let work = tempfile::tempdir().unwrap();
    let page = work.path().join("report.html");
    let mut cmd = Command::new(testkit::tool_bin("pg-report"));
    cmd.arg("html")
        .arg("--migrate")
        .arg(&migrate_file)
        .arg("--load")
        .arg(&load_file)
        .arg("-o")
        .arg(&page);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "pg-report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = json_lines(&String::from_utf8_lossy(&out.stdout));
    let report = of_type(&stdout, "report")[0];
    assert_eq!(report["path"], page.to_str().unwrap());
    assert_eq!(report["charts"], 1);
    assert_eq!(
        report["bytes"].as_u64().unwrap(),
        std::fs::metadata(&page).unwrap().len()
    );

    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "the page must need no script");
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "the page must load nothing"
    );

    let r = browser.render(&page, work.path(), (1280, 2000));
    let png = work.path().join("report.png");
    browser.screenshot(&page, &png, work.path(), (1280, 2000));
    if let Some(keep) = std::env::var_os("PGSHIFT_REPORT_KEEP") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap();
        for f in [&migrate_file, &load_file, &page, &png] {
            std::fs::copy(f, keep.join(f.file_name().unwrap())).unwrap();
        }
    }

    // The page loaded.
    assert!(
        r.dom.contains("<title>pgshift migration report</title>"),
        "{}",
        &r.dom[..r.dom.len().min(300)]
    );
    assert!(r.dom.contains("</section>"), "the page is incomplete");
    // One timeline, laid out at its size (the window is wider than the chart).
    assert_eq!(r.svgs.len(), 1, "{:?}", r.svgs);
    let (chart, w, h) = &r.svgs[0];
    assert_eq!(chart, "timeline");
    assert!(*w >= 1000.0 && *h >= 400.0, "the chart is {w}x{h}");
    // The screenshot: a PNG of the window, with far more in it than a blank page.
    let shot = std::fs::read(&png).unwrap();
    assert_eq!(png_size(&shot), Some((1280, 2000)));
    let blank = work.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><title>blank</title>").unwrap();
    let blank_png = work.path().join("blank.png");
    browser.screenshot(&blank, &blank_png, work.path(), (1280, 2000));
    let blank_len = std::fs::metadata(&blank_png).unwrap().len() as usize;
    assert!(
        shot.len() > 3 * blank_len,
        "the screenshot ({} bytes) is hardly more than a blank page ({blank_len} bytes)",
        shot.len()
    );

    // Every number and word the page took from the JSON equals the JSON's.
    let migrate = json_lines(&std::fs::read_to_string(&migrate_file).unwrap());
    let load_summary = summary(&load_recs);
    let record = |selector: &str| -> &Value {
        let (kind, which) = selector.split_once('.').unwrap_or((selector, ""));
        match kind {
            "summary" => summary(&migrate),
            "phase" => of_type(&migrate, "phase")
                .into_iter()
                .find(|p| p["name"] == which)
                .unwrap_or_else(|| panic!("no phase {which}")),
            "proof" => of_type(&migrate, "proof")[which.parse::<usize>().unwrap()],
            // Without demo.sh's records, both come from load-gen's (--verify) summary.
            "load" | "verified" => load_summary,
            other => panic!("unexpected selector {other}"),
        }
    };
    let fields = data_fields(&r.dom);
    for (field, text) in &fields {
        let (selector, ptr) = field.split_once(':').unwrap();
        let v = record(selector)
            .pointer(ptr)
            .unwrap_or_else(|| panic!("{field}: not in the JSON"));
        let want = match v {
            Value::String(s) => s.clone(),
            Value::Null => "n/a".into(),
            other => other.to_string(),
        };
        assert_eq!(text, &want, "{field}");
    }
    // And the ones the page is for are there.
    let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
    for want in [
        "summary:/downtime_ms",
        "summary:/verdict",
        "summary:/bytes/wire_total",
        "summary:/bytes/base_copy",
        "phase.switchover:/downtime_ms",
        "phase.verify:/databases/0/verdict",
        "phase.verify:/databases/1/database",
        "proof.0:/name",
        "load:/max_write_gap_ms",
        "load:/errors_by_kind/statement",
        "load:/unavailable_ms",
        "verified:/lost",
        "verified:/acked",
    ] {
        assert!(
            names.contains(&want),
            "{want} is not on the page: {names:?}"
        );
    }
    assert_eq!(load_summary["lost"], 0, "{load_summary}");

    // The chart marks what it should: each phase by name, the switchover with its downtime,
    // the longest write gap.
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    let sw = of_type(&migrate, "phase")
        .into_iter()
        .find(|p| p["name"] == "switchover")
        .unwrap();
    assert!(
        svg.contains(&format!("switchover: {} ms down", sw["downtime_ms"])),
        "the switchover is not marked"
    );
    assert!(svg.contains(&format!(
        "longest write gap {} ms",
        load_summary["max_write_gap_ms"]
    )));
    for p in of_type(&migrate, "phase") {
        let name = p["name"].as_str().unwrap();
        assert!(
            svg.contains(&format!(">{name}<")) || svg.contains(&format!(">\n{name}\n<")),
            "phase {name} is not named in the chart"
        );
    }
}
