//! The journal as pg-switch writes and reads it: a thin wrapper of [`shared::journal`], which
//! does the work (each record appended and `fsync`ed before the action it announces, the lock
//! a second run waits on, reading past a torn last line).
//!
//! `migrate.sh` and pg-switch write to the same file (one per pair of hosts), so that after any
//! interruption the next run knows what was under way: which host was primary, whether the
//! fence was written, the checkpoint the target had to replay, whether a promotion was asked
//! for. pg-switch's records are `{"type":"journal","seq":N,"at":"…","by":"pg-switch",
//! "pid":P,"event":"switch","step":"stopping",…}`; the steps and their fields are in
//! shared/PROTOCOL.md, and [`Journal::facts`] reads back what the switchover under way did.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::plan::Facts;

/// An open, locked journal (the shared one, read the way a switchover needs).
#[derive(Debug)]
pub struct Journal(shared::journal::Journal);

/// Steps that end a switchover: after one of these, nothing is under way.
const CLOSING: &[&str] = &["promoted", "rolled_back", "refused", "nothing_to_do"];

impl Journal {
    /// Open (creating it and its directory if needed) and lock the journal, waiting up to
    /// `wait` for another run to let go of it.
    pub fn open(path: &Path, wait: Duration) -> anyhow::Result<Journal> {
        shared::journal::Journal::open(path, wait, "pg-switch").map(Journal)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Append one `switch` record (`fields` must be a JSON object) and wait until it is on
    /// stable storage.
    pub fn switch_step(&mut self, step: &str, fields: Value) -> anyhow::Result<()> {
        let mut rec = Map::new();
        rec.insert("step".into(), step.into());
        if let Value::Object(extra) = fields {
            rec.extend(extra);
        }
        self.0.append("switch", Value::Object(rec))
    }

    /// What the switchover under way (since the last one that ended) has done so far.
    pub fn facts(&self) -> Facts {
        let mut facts = Facts::default();
        for r in self.switch_records() {
            match r["step"].as_str().unwrap_or("") {
                s if CLOSING.contains(&s) => facts = Facts::default(),
                "promoting" => facts.promotion_requested = true,
                "stopped" => facts.fence_confirmed = true,
                _ => {}
            }
        }
        facts
    }

    /// The last switch record, if any.
    pub fn last_step(&self) -> Option<&str> {
        self.switch_records()
            .last()
            .and_then(|r| r["step"].as_str())
    }

    fn switch_records(&self) -> impl Iterator<Item = &Value> {
        self.0
            .records()
            .iter()
            .filter(|r| r["event"] == "switch" && r["by"] == "pg-switch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::journal::read;
    use std::fs::OpenOptions;
    use std::io::Write;

    #[test]
    fn records_are_numbered_and_facts_reset_when_a_switch_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/j.jsonl");
        {
            let mut j = Journal::open(&path, Duration::ZERO).unwrap();
            assert_eq!(j.facts(), Facts::default());
            j.switch_step("stopping", json!({"primary": "source"}))
                .unwrap();
            j.switch_step("stopped", json!({"checkpoint_lsn": "0/3000028"}))
                .unwrap();
            j.switch_step("promoting", json!({})).unwrap();
            assert_eq!(
                j.facts(),
                Facts {
                    promotion_requested: true,
                    fence_confirmed: true
                }
            );
        }
        // A torn line from a crash, and a migrate.sh record in between.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(
            b"{\"type\":\"journal\",\"by\":\"migrate.sh\",\"event\":\"phase\"}\n{\"type\":\"jou",
        )
        .unwrap();
        drop(f);
        let mut j = Journal::open(&path, Duration::ZERO).unwrap();
        assert_eq!(j.last_step(), Some("promoting"));
        assert!(j.facts().promotion_requested);
        j.switch_step("promoted", json!({})).unwrap();
        assert_eq!(j.facts(), Facts::default());
        let seqs: Vec<u64> = read(&path)
            .unwrap()
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().last().unwrap().contains("\"promoted\""),
            "{text}"
        );
    }
}
