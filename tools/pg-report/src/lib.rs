//! `pg-report`: one self-contained HTML page from the JSON lines of a migration and its load.
//!
//! `pg-report html --migrate FILE [--load FILE] [--advice FILE] -o OUT.html` reads migrate.sh's
//! report (or demo.sh's combined one, whose records carry a `migration` tag), load-gen's run
//! output (ticks included) and window-advisor's recommendation, and writes a page that needs no
//! network and no JavaScript: a timeline of TPS and latency per migration with the phases
//! shaded and the switchover marked, what the clients saw, the proofs, the verdict per
//! database, the bytes moved, and the forecast week with the recommended windows.
//!
//! The pieces: [`input`] reads and checks the records, [`chart`] draws the SVG charts with
//! plotters, [`html`] lays out the page (and is where escaping happens). On stdout go a
//! `report` record and the `summary` (shared/PROTOCOL.md).

pub mod chart;
pub mod html;
pub mod input;

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use shared::{err, ErrorKind, Output, Status};

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "pg-report",
    version,
    about = "One self-contained HTML page (inline SVG charts, no JavaScript) from the JSON lines of a migration and its load.",
    after_help = "Example:\n  pg-report html --migrate migrate.jsonl --load load.jsonl -o report.html\n  \
        pg-report html --migrate /tmp/pgshift-demo/report.jsonl \\\n    \
        --load /tmp/pgshift-demo/load-A-to-B.jsonl --load /tmp/pgshift-demo/load-B-to-A.jsonl -o report.html\n  \
        window-advisor recommend --history h.jsonl --forecast > advice.jsonl && pg-report html --advice advice.jsonl -o week.html"
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write the HTML page.
    Html(HtmlArgs),
}

/// `pg-report html`.
#[derive(Args, Debug)]
pub struct HtmlArgs {
    /// migrate.sh's report (`--report FILE` or its stdout), or demo.sh's report.jsonl holding
    /// several migrations; repeat for more.
    #[arg(long, value_name = "FILE")]
    pub migrate: Vec<PathBuf>,
    /// load-gen's output of the run under a migration (with its ticks); the first --load goes
    /// with the first migration, the second with the second, and so on.
    #[arg(long, value_name = "FILE")]
    pub load: Vec<PathBuf>,
    /// window-advisor's `recommend --forecast` output: the forecast week and its windows.
    #[arg(long, value_name = "FILE")]
    pub advice: Option<PathBuf>,
    /// The page's title.
    #[arg(long, default_value = "pgshift migration report")]
    pub title: String,
    /// Where to write the page.
    #[arg(long, short = 'o', value_name = "OUT.html")]
    pub output: PathBuf,
}

/// Parse `args` and run.
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    shared::human::register(text, |s| {
        Some(format!(
            "wrote {}",
            s.get("path").and_then(|p| p.as_str()).unwrap_or("?")
        ))
    });
    match cli.command {
        Command::Html(a) => html_cmd(&a),
    }
}

fn html_cmd(a: &HtmlArgs) -> anyhow::Result<Status> {
    if a.migrate.is_empty() && a.advice.is_none() {
        return Err(err(
            ErrorKind::Usage,
            "nothing to report: give --migrate FILE (migrate.sh's report) or --advice FILE (window-advisor's)",
        ));
    }
    let mut migrations = Vec::new();
    for f in &a.migrate {
        migrations.extend(input::migrations(f)?);
    }
    if a.load.len() > migrations.len() {
        return Err(err(
            ErrorKind::Usage,
            format!(
                "{} --load files for {} migration(s): each --load goes with one migration, in order",
                a.load.len(),
                migrations.len()
            ),
        ));
    }
    let loads = a
        .load
        .iter()
        .map(|f| input::load_run(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (m, l) in migrations.iter().zip(&loads) {
        warn_if_apart(m, l);
    }
    let advice = a.advice.as_deref().map(input::advice).transpose()?;

    let page = html::Page {
        title: &a.title,
        migrations: migrations
            .iter()
            .enumerate()
            .map(|(i, m)| (m, loads.get(i)))
            .collect(),
        advice: advice.as_ref(),
    };
    let (text, charts) = html::render(&page)?;
    std::fs::write(&a.output, &text)
        .with_context(|| format!("cannot write {}", a.output.display()))?;

    let path = a.output.display().to_string();
    let labels: Vec<&str> = migrations.iter().map(|m| m.label.as_str()).collect();
    let mut out = Output::stdout();
    out.emit_as(
        "report",
        &json!({"path": path, "bytes": text.len(), "charts": charts, "migrations": labels}),
    )?;
    out.finish(&json!({"path": path, "migrations": labels.len(), "charts": charts, "advice": advice.is_some()}))
}

/// For a person: where the page is.
fn text(kind: &str, r: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    (kind == "report").then(|| {
        format!(
            "{} ({}, {} charts)",
            r["path"].as_str().unwrap_or("?"),
            shared::human::bytes(r["bytes"].as_f64().unwrap_or(0.0)),
            r["charts"]
        )
    })
}

/// A load run that does not overlap its migration in time was probably paired wrongly.
fn warn_if_apart(m: &input::Migration, l: &input::LoadRun) {
    let times: Vec<i64> = m
        .phases
        .iter()
        .flat_map(|p| [p["started_at_ms"].as_i64(), p["ended_at_ms"].as_i64()])
        .flatten()
        .collect();
    let (Some(&from), Some(&to)) = (times.iter().min(), times.iter().max()) else {
        return;
    };
    let load_end = l.started_at_ms + l.ticks.last().and_then(|t| t["t_ms"].as_i64()).unwrap_or(0);
    if load_end < from || l.started_at_ms > to {
        shared::warn!(
            "{} ran at another time than migration {} ({}): is --load in the order of the migrations?",
            l.file,
            m.label,
            m.file
        );
    }
}
