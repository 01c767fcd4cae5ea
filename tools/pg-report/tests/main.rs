//! pg-report's tests, as processes (one binary; one module per concern). The inputs in
//! `tests/data/` were captured from a real run: `migrate.jsonl` and `load.jsonl` from
//! tests/tests/report.rs (a migration A→B under load-gen `--verify`), `advice.jsonl` from
//! `window-advisor synth --kind seasonal --seed 3 --weeks 3 --step 30m` and
//! `window-advisor recommend --window 1h --tz Etc/UTC --forecast`.

mod browser;
mod cli;
mod common;
