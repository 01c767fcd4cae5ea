//! The command line: what it writes on success, and a one-line error with the right exit
//! code for every kind of bad input.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::{data, demo_report, pg_report, records, write_records};

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// The one line on stderr, which must name `what`.
fn assert_one_line(stderr: &str, what: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("pg-report: "), "{stderr}");
    assert!(lines[0].contains(what), "{what} not in: {stderr}");
}

#[test]
fn writes_the_page_and_a_report_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.html");
    let r = pg_report(&[
        p("html"),
        p("--migrate"),
        &data("migrate.jsonl"),
        p("--load"),
        &data("load.jsonl"),
        p("-o"),
        &out,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kinds: Vec<&str> = r
        .records
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["report", "summary"]);
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        r.records[0],
        json!({"type": "report", "path": out.to_str().unwrap(), "bytes": html.len(), "charts": 1, "migrations": ["migrate"]})
    );
    let s = &r.records[1];
    assert_eq!(s["tool"], "pg-report");
    assert_eq!(s["success"], true);
    assert_eq!(s["migrations"], 1);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "nothing loaded"
    );
    assert_eq!(html.matches("<svg").count(), 1);
}

#[test]
fn text_from_the_json_is_escaped_in_the_page_and_in_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let mut recs = records(&data("migrate.jsonl"));
    for r in &mut recs {
        if r["type"] == "summary" {
            r["new_primary"] = json!("<script>alert(1)</script>");
        }
        if r["type"] == "phase" && r["name"] == "wait" {
            r["name"] = json!("wait<b>&\"x\"");
        }
    }
    let f = dir.path().join("m.jsonl");
    write_records(&f, &recs);
    let out = dir.path().join("r.html");
    let r = pg_report(&[p("html"), p("--migrate"), &f, p("-o"), &out]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(!html.contains("<script"), "unescaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("wait<b>"), "unescaped phase name");
    // In the table and in the chart's <text>.
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    assert!(svg.contains("wait&lt;b&gt;&amp;"), "{svg}");
    assert!(html[html.find("</svg>").unwrap()..].contains("wait&lt;b&gt;&amp;&quot;x&quot;"));
}

#[test]
fn demo_report_gives_one_section_per_migration_with_its_load() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("report.jsonl");
    write_records(&f, &demo_report());
    let out = dir.path().join("r.html");
    // The first load run goes with the first migration; the second has only demo.sh's records.
    let r = pg_report(&[
        p("html"),
        p("--migrate"),
        &f,
        p("--load"),
        &data("load.jsonl"),
        p("-o"),
        &out,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.records[0]["migrations"], json!(["A-to-B", "B-to-A"]));
    assert_eq!(r.records[0]["charts"], 2);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(
        html.contains(r#"data-migration="A-to-B""#) && html.contains(r#"data-migration="B-to-A""#)
    );
    // The second section's verification is its own load_verified record.
    let second = &html[html.find(r#"data-migration="B-to-A""#).unwrap()..];
    assert!(second.contains(r#"<span class="v" data-field="verified:/lost">2</span>"#));
}

#[test]
fn advice_alone_draws_the_week() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.html");
    let r = pg_report(&[
        p("html"),
        p("--advice"),
        &data("advice.jsonl"),
        p("-o"),
        &out,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.records[0]["charts"], 1);
    assert_eq!(r.records[1]["advice"], true);
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains(r#"data-chart="week""#));
    // Each window is marked in the chart by its rank.
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    for rank in 1..=3 {
        assert!(
            svg.contains(&format!("#{rank}")),
            "window {rank} not marked"
        );
    }
}

#[test]
fn no_input_is_a_usage_error() {
    let r = pg_report(&[p("html"), p("-o"), p("/dev/null")]);
    assert_eq!(r.code, 2);
    assert_one_line(&r.stderr, "--migrate FILE");
    let r = pg_report(&[p("html"), p("--migrate"), &data("migrate.jsonl")]);
    assert_eq!(r.code, 2, "no -o: {}", r.stderr);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let r = pg_report(&[
        p("html"),
        p("--migrate"),
        p("/nonexistent/m.jsonl"),
        p("-o"),
        p("/dev/null"),
    ]);
    assert_eq!(r.code, 74);
    assert_one_line(&r.stderr, "cannot open /nonexistent/m.jsonl");
}

#[test]
fn an_unwritable_output_is_an_io_error() {
    let r = pg_report(&[
        p("html"),
        p("--migrate"),
        &data("migrate.jsonl"),
        p("-o"),
        p("/nonexistent/r.html"),
    ]);
    assert_eq!(r.code, 74);
    assert_one_line(&r.stderr, "cannot write /nonexistent/r.html");
}

#[test]
fn a_malformed_line_is_a_data_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.jsonl");
    let text = std::fs::read_to_string(data("migrate.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(3, "{\"type\":\"phase\",");
    std::fs::write(&f, lines.join("\n")).unwrap();
    let r = pg_report(&[p("html"), p("--migrate"), &f, p("-o"), p("/dev/null")]);
    assert_eq!(r.code, 65);
    assert_one_line(
        &r.stderr,
        &format!("{}: not JSON lines: line 4: not JSON", f.display()),
    );
}

#[test]
fn a_report_without_its_summary_is_a_data_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.jsonl");
    let recs: Vec<Value> = records(&data("migrate.jsonl"))
        .into_iter()
        .filter(|r| r["type"] != "summary")
        .collect();
    write_records(&f, &recs);
    let r = pg_report(&[p("html"), p("--migrate"), &f, p("-o"), p("/dev/null")]);
    assert_eq!(r.code, 65);
    assert_one_line(
        &r.stderr,
        "no `summary` record for m: the run was cut short",
    );
}

#[test]
fn swapped_files_are_data_errors() {
    // load-gen's output given as the migration.
    let r = pg_report(&[
        p("html"),
        p("--migrate"),
        &data("load.jsonl"),
        p("-o"),
        p("/dev/null"),
    ]);
    assert_eq!(r.code, 65);
    assert_one_line(&r.stderr, "no migrate.sh records");
    // migrate.sh's report given as the load.
    let r = pg_report(&[
        p("html"),
        p("--migrate"),
        &data("migrate.jsonl"),
        p("--load"),
        &data("migrate.jsonl"),
        p("-o"),
        p("/dev/null"),
    ]);
    assert_eq!(r.code, 65);
    assert_one_line(&r.stderr, "no load-gen `start` record");
    // A recommendation without --forecast.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.jsonl");
    let recs: Vec<Value> = records(&data("advice.jsonl"))
        .into_iter()
        .filter(|r| r["type"] != "forecast")
        .collect();
    write_records(&f, &recs);
    let r = pg_report(&[p("html"), p("--advice"), &f, p("-o"), p("/dev/null")]);
    assert_eq!(r.code, 65);
    assert_one_line(&r.stderr, "with `--forecast`");
}

#[test]
fn more_load_runs_than_migrations_is_a_usage_error() {
    let r = pg_report(&[
        p("html"),
        p("--migrate"),
        &data("migrate.jsonl"),
        p("--load"),
        &data("load.jsonl"),
        p("--load"),
        &data("load.jsonl"),
        p("-o"),
        p("/dev/null"),
    ]);
    assert_eq!(r.code, 2);
    assert_one_line(&r.stderr, "2 --load files for 1 migration(s)");
}
