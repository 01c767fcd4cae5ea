//! A journal: an append-only JSON-lines file, each record on stable storage before the action
//! it announces, locked while one run acts.
//!
//! `migrate.sh` and the tools it calls for the steps that must survive an interruption
//! (pg-switch for the physical switchover, pg-logical for the logical mode) write to the same
//! file, so that after any interruption (kill -9, a reboot of the control host, ssh dropping)
//! the next run knows what was under way. A record is written with one `write(2)` on an
//! `O_APPEND` descriptor and then `fsync`ed; the directory is fsynced when the file is created.
//! While a tool runs it holds an exclusive lock on the file (`flock`), so two runs never act at
//! once: a second run (someone re-running the command while an orphaned first run still
//! finishes) waits for it.
//!
//! Records are `{"type":"journal","seq":N,"at":"…","by":"TOOL","pid":P,"event":"…",…}`; each
//! tool's events and their fields are in shared/PROTOCOL.md. A torn last line (a crash in the
//! middle of a write) is ended and ignored when reading.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value};

use crate::{ErrorKind, ResultExt};

/// An open, locked journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    seq: u64,
    records: Vec<Value>,
    by: &'static str,
}

impl Journal {
    /// Open (creating it and its directory if needed) and lock the journal, waiting up to
    /// `wait` for another run to let go of it. `by` names the writer in every record.
    pub fn open(path: &Path, wait: Duration, by: &'static str) -> anyhow::Result<Journal> {
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
                        return Err(crate::err(
                            ErrorKind::Retry,
                            format!(
                                "another {by} still holds the journal {} after {} s: let it \
                                 finish, then run again",
                                path.display(),
                                wait.as_secs()
                            ),
                        ));
                    }
                    if !announced {
                        crate::msg::error_line(&format!(
                            "waiting for another {by} that holds {}",
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
            by,
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record read at opening and appended since, oldest first.
    pub fn records(&self) -> &[Value] {
        &self.records
    }

    /// Append one record of `event` (`fields`, a JSON object, after the common fields) and
    /// wait until it is on stable storage.
    pub fn append(&mut self, event: &str, fields: Value) -> anyhow::Result<()> {
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
        rec.insert("by".into(), self.by.into());
        rec.insert("pid".into(), std::process::id().into());
        rec.insert("event".into(), event.into());
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
}

/// Every record of a journal file; a torn last line is skipped.
pub fn read(path: &Path) -> anyhow::Result<Vec<Value>> {
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

    #[test]
    fn records_are_appended_numbered_and_read_back_past_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/j.jsonl");
        {
            let mut j = Journal::open(&path, Duration::from_secs(1), "t").unwrap();
            j.append("step", serde_json::json!({"step": "one"}))
                .unwrap();
            j.append("step", serde_json::json!({"step": "two"}))
                .unwrap();
        }
        // A crash in the middle of a write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"type\":\"jour")
            .unwrap();
        let mut j = Journal::open(&path, Duration::from_secs(1), "t").unwrap();
        assert_eq!(j.records().len(), 2);
        j.append("step", serde_json::json!({"step": "three"}))
            .unwrap();
        let all = read(&path).unwrap();
        let steps: Vec<_> = all.iter().map(|r| r["step"].as_str().unwrap()).collect();
        assert_eq!(steps, ["one", "two", "three"]);
        assert_eq!(all[2]["seq"], 3);
        assert_eq!(all[2]["by"], "t");
        assert_eq!(all[2]["event"], "step");
    }

    #[test]
    fn a_second_writer_waits_and_then_gives_up_with_retry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let held = Journal::open(&path, Duration::from_secs(1), "t").unwrap();
        let e = Journal::open(&path, Duration::from_millis(100), "t").unwrap_err();
        assert_eq!(crate::exit::classify(&e), ErrorKind::Retry, "{e:#}");
        // Once the first lets go, the next one gets it at once.
        drop(held);
        Journal::open(&path, Duration::ZERO, "t").unwrap();
    }
}
