//! The journal: an append-only JSON-lines file, each record on stable storage before the
//! action it announces.
//!
//! `migrate.sh` and pg-switch write to the same file (one per pair of hosts), so that after any
//! interruption the next run knows what was under way: which host was primary, whether the
//! fence was written, the checkpoint the target had to replay, whether a promotion was asked
//! for. A record is written with one `write(2)` on an `O_APPEND` descriptor and then
//! `fsync`ed; the directory is fsynced when the file is created. While pg-switch runs it holds
//! an exclusive lock on the file (`flock`), so two runs never act at once: a second run
//! (someone re-running the command while an orphaned first run still finishes) waits for it.
//!
//! Records are `{"type":"journal","seq":N,"at":"…","by":"pg-switch","event":"switch",
//! "step":"stopping",…}`; the steps and their fields are in shared/PROTOCOL.md. A torn last
//! line (a crash in the middle of a write) is ignored when reading.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value};
use shared::{ErrorKind, ResultExt};

use crate::plan::Facts;

/// An open, locked journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    seq: u64,
    records: Vec<Value>,
}

/// Steps that end a switchover: after one of these, nothing is under way.
const CLOSING: &[&str] = &["promoted", "rolled_back", "refused", "nothing_to_do"];

impl Journal {
    /// Open (creating it and its directory if needed) and lock the journal, waiting up to
    /// `wait` for another run to let go of it.
    pub fn open(path: &Path, wait: Duration) -> anyhow::Result<Journal> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the journal's directory {}", dir.display()))?;
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening the journal {}", path.display()))?;
        if created {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
        }
        let deadline = Instant::now() + wait;
        let mut announced = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(shared::err(
                            ErrorKind::Retry,
                            format!(
                                "another pg-switch still holds the journal {} after {} s: let \
                                 it finish, then run again",
                                path.display(),
                                wait.as_secs()
                            ),
                        ));
                    }
                    if !announced {
                        shared::msg::error_line(&format!(
                            "waiting for another pg-switch that holds {}",
                            path.display()
                        ));
                        announced = true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()))
                }
            }
        }
        let records = read(path)?;
        // A crash in the middle of a write leaves a torn last line: end it, so that the next
        // record starts on a line of its own.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8];
            let mut f = &file;
            if f.seek(SeekFrom::Start(len - 1)).is_ok()
                && f.read_exact(&mut last).is_ok()
                && last[0] != b'\n'
            {
                f.write_all(b"\n")
                    .and_then(|()| f.sync_data())
                    .kind_context(ErrorKind::Io, format!("writing {}", path.display()))?;
            }
        }
        let seq = records
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .max()
            .unwrap_or(0);
        Ok(Journal {
            file,
            path: path.to_owned(),
            seq,
            records,
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one `switch` record (`fields` must be a JSON object) and wait until it is on
    /// stable storage.
    pub fn switch_step(&mut self, step: &str, fields: Value) -> anyhow::Result<()> {
        self.seq += 1;
        let mut rec = Map::new();
        rec.insert("type".into(), "journal".into());
        rec.insert("seq".into(), self.seq.into());
        rec.insert(
            "at".into(),
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
                .into(),
        );
        rec.insert("by".into(), "pg-switch".into());
        rec.insert("pid".into(), std::process::id().into());
        rec.insert("event".into(), "switch".into());
        rec.insert("step".into(), step.into());
        if let Value::Object(extra) = fields {
            rec.extend(extra);
        }
        let rec = Value::Object(rec);
        let mut line = serde_json::to_string(&rec)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .kind_context(
                ErrorKind::Io,
                format!("writing the journal {}", self.path.display()),
            )?;
        self.records.push(rec);
        Ok(())
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
        self.records
            .iter()
            .filter(|r| r["event"] == "switch" && r["by"] == "pg-switch")
    }
}

/// Every record of a journal file; a torn last line is skipped.
fn read(path: &Path) -> anyhow::Result<Vec<Value>> {
    let f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&line) {
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn a_second_run_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let held = Journal::open(&path, Duration::ZERO).unwrap();
        let e = Journal::open(&path, Duration::from_millis(50)).unwrap_err();
        assert_eq!(shared::exit::classify(&e), ErrorKind::Retry);
        drop(held);
        Journal::open(&path, Duration::ZERO).unwrap();
    }
}
