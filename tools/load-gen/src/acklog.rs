//! The acknowledgement log: which writes the database acknowledged, for `load-gen verify`.
//!
//! JSON lines like stdout (`shared::jsonl`), in this order: one `run` header, then `server`
//! records (each server instance the first time a client reaches it), `ack` records (written
//! only after COMMIT returned) and `unknown` records (COMMIT in flight when the connection
//! died), and an `end` record when the run finished cleanly. A log without `end` is the log
//! of a killed run: still sound (it never lists a write that was not acknowledged), just
//! possibly missing the last acknowledgements. Failed transactions are not listed: their
//! seqs are the ones that appear in neither `ack` nor `unknown`. Times are microseconds since
//! the run started (`*_us`), on load-gen's own clock.
//!
//! The writer is buffered and flushed at every tick and at the end (then fsync'd): the log
//! is streamable (`tail -f`) and cheap enough to keep at thousands of acks per second.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shared::jsonl::{to_line, Record};
use shared::ErrorKind;

/// `run`: the header of a run's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// The run's id; the probe rows carry it.
    pub run_id: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// The DSN, without password.
    pub dsn: String,
    /// `tpcb`, `probe` or `mixed`.
    pub workload: String,
    /// Number of clients.
    pub clients: u32,
}
impl Record for RunRecord {
    const TYPE: &'static str = "run";
}

/// `server`: a server instance that served at least one session (stdout and log).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerRecord {
    /// Number of this server within the run (referred to by `ack.server`).
    pub id: u32,
    /// The DSN host (`host:port`) through which it was first reached.
    pub host: String,
    /// `pg_control_system().system_identifier` (a string: it does not fit a double).
    pub system_identifier: Option<String>,
    /// The timeline it writes on (null if unknown).
    pub timeline: Option<u32>,
    /// `pg_postmaster_start_time()`, RFC 3339 UTC.
    pub postmaster_start: Option<String>,
    /// When load-gen first connected to it (ms since the run started).
    pub t_ms: u64,
}
impl Record for ServerRecord {
    const TYPE: &'static str = "server";
}

/// `ack`: a write the server acknowledged (its COMMIT returned).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AckRecord {
    /// Client number (the probe row's `client_id`).
    pub client: u32,
    /// Transaction number within the client (the probe row's `seq`).
    pub seq: u64,
    /// The `server.id` that acknowledged it.
    pub server: u32,
    /// When the transaction's first statement was sent (µs since the run started).
    pub sent_us: u64,
    /// When the acknowledgement arrived (µs since the run started).
    pub ack_us: u64,
}
impl Record for AckRecord {
    const TYPE: &'static str = "ack";
}

/// `unknown`: COMMIT was sent, and the connection died (or timed out) before an answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnknownRecord {
    /// Client number.
    pub client: u32,
    /// Transaction number within the client.
    pub seq: u64,
    /// The `server.id` the commit was sent to.
    pub server: Option<u32>,
    /// When the transaction's first statement was sent (µs since the run started).
    pub sent_us: u64,
    /// What happened instead of an answer.
    pub error: String,
}
impl Record for UnknownRecord {
    const TYPE: &'static str = "unknown";
}

/// `end`: the run finished and the log is complete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndRecord {
    /// Number of `ack` records.
    pub acked: u64,
    /// Number of `unknown` records.
    pub unknown: u64,
    /// Transactions that failed (not listed).
    pub failed: u64,
    /// When the load stopped (RFC 3339, UTC).
    pub stopped_at: String,
}
impl Record for EndRecord {
    const TYPE: &'static str = "end";
}

/// The log writer, shared by the client tasks.
pub struct AckLog {
    path: PathBuf,
    w: Mutex<Writer>,
}

struct Writer {
    file: Option<BufWriter<File>>,
    error: Option<std::io::Error>,
}

impl AckLog {
    /// Create (or truncate) the log at `path`.
    pub fn create(path: &Path) -> anyhow::Result<AckLog> {
        let file = File::create(path)
            .with_context(|| format!("creating the ack log {}", path.display()))?;
        Ok(AckLog {
            path: path.to_owned(),
            w: Mutex::new(Writer {
                file: Some(BufWriter::with_capacity(64 * 1024, file)),
                error: None,
            }),
        })
    }

    /// Append one record. A write error is remembered (and reported by [`AckLog::finish`]);
    /// the load goes on, the log stops.
    pub fn write<R: Record>(&self, rec: &R) {
        let line = match to_line(R::TYPE, rec) {
            Ok(l) => l,
            Err(_) => return,
        };
        let mut w = self.w.lock().expect("ack log lock");
        if let Some(f) = w.file.as_mut() {
            if let Err(e) = f
                .write_all(line.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
            {
                w.error = Some(e);
                w.file = None;
            }
        }
    }

    /// Push buffered records to the file (readers see them).
    pub fn flush(&self) {
        let mut w = self.w.lock().expect("ack log lock");
        if let Some(f) = w.file.as_mut() {
            if let Err(e) = f.flush() {
                w.error = Some(e);
                w.file = None;
            }
        }
    }

    /// Flush and fsync; the first write error, if any.
    pub fn finish(&self) -> anyhow::Result<()> {
        let mut w = self.w.lock().expect("ack log lock");
        if let Some(f) = w.file.take() {
            let res = f
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|file| file.sync_all());
            if let Err(e) = res {
                w.error = Some(e);
            }
        }
        match w.error.take() {
            None => Ok(()),
            Some(e) => Err(anyhow::Error::new(e).context(format!(
                "writing the ack log {} (it is incomplete; verify would under-count acknowledged writes)",
                self.path.display()
            ))),
        }
    }
}

/// Everything a log says about one run.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// The run's id.
    pub run_id: String,
    /// Server instances by `id`.
    pub servers: BTreeMap<u32, ServerRecord>,
    /// Acknowledged writes.
    pub acks: Vec<AckRecord>,
    /// Writes whose commit outcome is unknown.
    pub unknowns: Vec<UnknownRecord>,
    /// True if the log has the run's `end` record.
    pub complete: bool,
}

/// The records of a log, in order. A last line that does not end with a newline and does not
/// parse is a write cut short (the disk filled up, the host crashed): it is left out with a
/// warning, and `torn` is set, rather than making the whole log unreadable.
fn log_records<'a>(
    mut reader: impl BufRead + 'a,
    torn: &'a mut bool,
) -> impl Iterator<Item = anyhow::Result<shared::jsonl::RawRecord>> + 'a {
    let mut line_no = 0;
    std::iter::from_fn(move || loop {
        let mut buf = String::new();
        match reader.read_line(&mut buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => {
                return Some(Err(anyhow::Error::new(e)
                    .context(format!("reading the ack log (line {})", line_no + 1))))
            }
        }
        line_no += 1;
        let terminated = buf.ends_with('\n');
        let line = buf.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        return match shared::jsonl::parse_line(line, line_no) {
            Err(_) if !terminated => {
                shared::warn!(
                    "line {line_no}, the last, ends inside a record (its write was cut short: \
                     disk full, a crash): left out, so what it held is not counted"
                );
                *torn = true;
                None
            }
            r => Some(r),
        };
    })
}

/// Read a log (several runs may follow each other); unknown record types are skipped. A run
/// whose log was cut inside a record is not `complete`.
pub fn read(reader: impl BufRead) -> anyhow::Result<Vec<RunData>> {
    let mut runs: Vec<RunData> = Vec::new();
    let mut torn = false;
    for rec in log_records(reader, &mut torn) {
        let rec = rec?;
        let need_run = |runs: &mut Vec<RunData>| -> anyhow::Result<()> {
            if runs.is_empty() {
                return Err(shared::err(
                    ErrorKind::DataErr,
                    format!(
                        "line {}: {} record before any run record: not an ack log written by load-gen --log",
                        rec.line, rec.kind
                    ),
                ));
            }
            Ok(())
        };
        match rec.kind.as_str() {
            "run" => {
                let r: RunRecord = rec.parse()?;
                runs.push(RunData {
                    run_id: r.run_id,
                    ..RunData::default()
                });
            }
            "server" => {
                need_run(&mut runs)?;
                let s: ServerRecord = rec.parse()?;
                runs.last_mut().expect("checked").servers.insert(s.id, s);
            }
            "ack" => {
                need_run(&mut runs)?;
                runs.last_mut().expect("checked").acks.push(rec.parse()?);
            }
            "unknown" => {
                need_run(&mut runs)?;
                runs.last_mut()
                    .expect("checked")
                    .unknowns
                    .push(rec.parse()?);
            }
            "end" => {
                need_run(&mut runs)?;
                runs.last_mut().expect("checked").complete = true;
            }
            _ => {}
        }
    }
    if runs.is_empty() {
        return Err(shared::err(
            ErrorKind::DataErr,
            "the ack log has no run record: pass the file written by load-gen --log",
        ));
    }
    if torn {
        if let Some(last) = runs.last_mut() {
            last.complete = false;
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_records_read_back() {
        let dir = std::env::temp_dir().join(format!("load-gen-acklog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acked.jsonl");
        let log = AckLog::create(&path).unwrap();
        log.write(&RunRecord {
            run_id: "r1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            dsn: "host=a".into(),
            workload: "probe".into(),
            clients: 1,
        });
        log.write(&ServerRecord {
            id: 0,
            host: "a:5432".into(),
            system_identifier: Some("7".into()),
            timeline: Some(1),
            postmaster_start: None,
            t_ms: 3,
        });
        let ack = AckRecord {
            client: 1,
            seq: 1,
            server: 0,
            sent_us: 10,
            ack_us: 20,
        };
        log.write(&ack);
        log.finish().unwrap();
        let runs = read(std::io::BufReader::new(File::open(&path).unwrap())).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].run_id, "r1");
        assert_eq!(runs[0].acks, vec![ack]);
        assert_eq!(runs[0].servers[&0].timeline, Some(1));
        assert!(!runs[0].complete);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn acks_before_a_run_header_are_a_data_error() {
        let e = read(
            r#"{"type":"ack","client":1,"seq":1,"server":0,"sent_us":1,"ack_us":2}"#.as_bytes(),
        )
        .unwrap_err();
        assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr);
        assert!(format!("{e:#}").contains("before any run record"));
    }

    /// A log cut inside its last record (disk full, a crash) is read up to it, the run
    /// marked incomplete; the same damage in the middle of a log is an error.
    #[test]
    fn a_last_line_cut_short_is_left_out_and_a_broken_middle_line_is_an_error() {
        let whole = concat!(
            r#"{"type":"run","run_id":"r1","started_at":"2026-12-07T00:00:00Z","dsn":"","workload":"probe","clients":1}"#,
            "\n",
            r#"{"type":"ack","client":1,"seq":1,"server":0,"sent_us":1,"ack_us":2}"#,
            "\n",
            r#"{"type":"ack","client":1,"seq":2,"server":0,"sent_us":3,"ack_us":4}"#,
            "\n",
        );
        let torn = format!("{whole}{{\"type\":\"ack\",\"client\":1,\"se");
        let runs = read(torn.as_bytes()).unwrap();
        assert_eq!(runs[0].acks.len(), 2);
        assert!(!runs[0].complete);
        let ended = format!("{whole}{{\"type\":\"end\"}}\n");
        assert!(read(ended.as_bytes()).unwrap()[0].complete);
        let broken = format!("{whole}{{\"type\":\"ack\",\"client\":1,\"se\n{{\"type\":\"end\"}}\n");
        let e = read(broken.as_bytes()).unwrap_err();
        assert!(format!("{e:#}").contains("line 4: not JSON"), "{e:#}");
    }
}
