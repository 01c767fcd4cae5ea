//! `pgdata-sync send DIR`: on the source. Reads the target's `file_sums` on stdin, walks the
//! data directory and writes the stream `apply` reads: directories, removals of what the
//! source does not have, the blocks whose hash differs, the control file last, the counts.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::{ErrorKind, ResultExt, Status};

use crate::sums::FileSums;
use crate::tree::{self, BLOCK, CONTROL_FILE};
use crate::wire::{self, Frame};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The source's data directory (its server running, inside pg_backup_start/stop).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// zstd level of the stream (1-19; 0 for none).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=19))]
    level: i32,
    /// At most this rate on the wire, as pg_basebackup --max-rate: kB/s, or with a suffix k
    /// or M (32k to 1024M).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    max_rate: Option<u64>,
}

/// pg_basebackup's --max-rate: a number of kB/s, or with `k` or `M`; 32 kB/s to 1024 MB/s.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let rate = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map_err(|_| format!("{s:?} is out of range: 32k to 1024M"))?
            .saturating_mul(1024)
    } else {
        shared::cli::parse_size(s)
            .map_err(|_| format!("{s:?} is not a rate (e.g. 500k, 50M; a bare number is kB/s)"))?
    };
    if !(32 * 1024..=1024 * 1024 * 1024).contains(&rate) {
        return Err(format!("{s:?} is out of range: 32k to 1024M"));
    }
    Ok(rate)
}

/// How often the stream says how far it is (between files).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What was sent and what the target already had (the `End` frame, then `apply`'s record).
#[derive(Debug, Default, Serialize, serde::Deserialize, Clone, PartialEq)]
#[serde(default)]
pub struct Counts {
    pub files: u64,
    pub files_unchanged: u64,
    pub bytes_total: u64,
    pub bytes_sent: u64,
    pub bytes_reused: u64,
    pub removed: u64,
    pub sums_bytes: u64,
}

/// A writer that keeps to a rate (bytes per second), sleeping when it gets ahead.
struct Paced<W> {
    inner: W,
    rate: Option<u64>,
    started: Instant,
    written: u64,
}

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.written as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A failed write of the stream: apply stopped, most likely.
fn write_err(e: io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(shared::exit::Error::new(
        ErrorKind::Io,
        "cannot write the stream (did apply stop? see its message)",
    ))
}

/// The target's files (size and block hashes) and directories (`None`), by path.
type Target = HashMap<String, Option<(u64, Vec<[u8; 16]>)>>;

/// Read the target's sums; its stream must end with a successful summary.
fn read_target(input: impl io::Read) -> anyhow::Result<(Target, u64, String, usize)> {
    let (counted, sums_bytes) = crate::Counted::new(input);
    let mut target = Target::new();
    let mut ended = None;
    let mut block: Option<u32> = None;
    for rec in shared::jsonl::records(BufReader::new(counted)) {
        let rec = rec?;
        match rec.kind.as_str() {
            "file_sums" => {
                let f: FileSums = rec.parse()?;
                if f.block_size < 8192
                    || !f.block_size.is_multiple_of(8192)
                    || f.block_size > 1 << 20
                {
                    return Err(shared::err(
                        ErrorKind::DataErr,
                        format!("line {}: a block size of {} bytes", rec.line, f.block_size),
                    ));
                }
                if *block.get_or_insert(f.block_size) != f.block_size {
                    return Err(shared::err(
                        ErrorKind::DataErr,
                        format!("line {}: the sums mix block sizes", rec.line),
                    ));
                }
                let raw = hex::decode(&f.sums).map_err(|_| {
                    shared::err(
                        ErrorKind::DataErr,
                        format!("line {}: sums are not hex", rec.line),
                    )
                })?;
                let blocks = raw
                    .chunks_exact(16)
                    .map(|c| c.try_into().expect("16 bytes"))
                    .collect();
                target.insert(f.path, Some((f.size, blocks)));
            }
            "dir_entry" => {
                let d: crate::sums::DirEntry = rec.parse()?;
                target.insert(d.path, None);
            }
            "summary" => {
                if rec.value.get("success") != Some(&serde_json::Value::Bool(true)) {
                    let why = rec
                        .value
                        .get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("see its message");
                    return Err(shared::err(
                        ErrorKind::DataErr,
                        format!("the target's pgdata-sync sums failed: {why}"),
                    ));
                }
                let token = rec
                    .value
                    .get("token")
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                ended = Some(token.to_owned());
            }
            _ => {}
        }
    }
    let Some(token) = ended else {
        return Err(shared::err(
            ErrorKind::DataErr,
            "the target's sums stopped before their summary (pgdata-sync sums failed or was \
             cut off: see its message)",
        ));
    };
    Ok((
        target,
        sums_bytes.get(),
        token,
        block.map_or(BLOCK, |b| b as usize),
    ))
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    // stdout carries the binary stream: no records there, not even after an error.
    shared::Output::discard();
    let source = tree::walk(&args.dir)?;
    let (target, sums_bytes, token, block) = read_target(io::stdin().lock())?;
    let mut counts = Counts {
        sums_bytes,
        ..Counts::default()
    };
    let paced = Paced {
        inner: io::BufWriter::with_capacity(1 << 20, io::stdout().lock()),
        rate: args.max_rate,
        started: Instant::now(),
        written: 0,
    };
    let mut w: Box<dyn Write> = if args.level == 0 {
        Box::new(paced)
    } else {
        Box::new(zstd::Encoder::new(paced, args.level)?.auto_finish())
    };
    wire::write_header(&mut w, &token).map_err(write_err)?;

    // What the source does not have goes first (a file where a directory must come, too);
    // the deepest first.
    let on_source: HashSet<&str> = source.iter().map(|e| e.path.as_str()).collect();
    let mut gone: Vec<&String> = target
        .keys()
        .filter(|p| !on_source.contains(p.as_str()))
        .collect();
    gone.sort_by(|a, b| b.cmp(a));
    for path in gone {
        wire::write(&mut w, &Frame::Remove { path: path.clone() }).map_err(write_err)?;
        counts.removed += 1;
    }
    let mut buf = vec![0u8; block];
    let mut control = None;
    let total: u64 = source.iter().map(|e| e.size).sum();
    let mut said = Instant::now();
    for e in &source {
        if e.dir {
            wire::write(
                &mut w,
                &Frame::Dir {
                    path: e.path.clone(),
                    mode: e.mode,
                },
            )
            .map_err(write_err)?;
        } else if e.path == CONTROL_FILE {
            control = Some(e);
        } else {
            send_file(
                &args.dir,
                e,
                target.get(&e.path).and_then(Option::as_ref),
                &mut w,
                &mut buf,
                &mut counts,
            )?;
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                let stats = serde_json::json!({
                    "bytes_done": counts.bytes_sent + counts.bytes_reused,
                    "bytes_total": total,
                    "bytes_sent": counts.bytes_sent,
                    "bytes_reused": counts.bytes_reused,
                });
                let frame = Frame::Progress {
                    stats: stats.to_string(),
                };
                wire::write(&mut w, &frame).map_err(write_err)?;
            }
        }
    }
    // The control file last, whole (8 kB), whatever the target has.
    if let Some(e) = control {
        send_file(&args.dir, e, None, &mut w, &mut buf, &mut counts)?;
    }
    let stats = serde_json::to_string(&counts)?;
    wire::write(&mut w, &Frame::End { stats }).map_err(write_err)?;
    w.flush().map_err(write_err)?;
    drop(w);
    Ok(Status::Ok)
}

/// Send one file: the blocks whose hash differs from the target's (all of them when the
/// target has none), then its size. A file that vanished meanwhile is removed on the target.
fn send_file(
    root: &Path,
    e: &tree::Entry,
    have: Option<&(u64, Vec<[u8; 16]>)>,
    w: &mut impl Write,
    buf: &mut [u8],
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let p = root.join(&e.path);
    let mut f = match File::open(&p) {
        Ok(f) => f,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            wire::write(
                w,
                &Frame::Remove {
                    path: e.path.clone(),
                },
            )
            .map_err(write_err)?;
            return Ok(());
        }
        Err(err) => {
            return Err(err)
                .with_kind_context(ErrorKind::Io, || format!("cannot open {}", p.display()))
        }
    };
    wire::write(
        w,
        &Frame::File {
            path: e.path.clone(),
            mode: e.mode,
        },
    )
    .map_err(write_err)?;
    let (mut offset, mut sent_here) = (0u64, 0u64);
    loop {
        let n = crate::read_block(&mut f, buf)
            .with_kind_context(ErrorKind::Io, || format!("cannot read {}", p.display()))?;
        if n == 0 {
            break;
        }
        let block = &buf[..n];
        let index = (offset / buf.len() as u64) as usize;
        let same = have
            .and_then(|(_, sums)| sums.get(index))
            .is_some_and(|h| *h == crate::block_hash(block));
        if same {
            counts.bytes_reused += n as u64;
        } else {
            wire::write(
                w,
                &Frame::Block {
                    offset,
                    data: block.to_vec(),
                },
            )
            .map_err(write_err)?;
            counts.bytes_sent += n as u64;
            sent_here += n as u64;
        }
        offset += n as u64;
        if n < buf.len() {
            break;
        }
    }
    wire::write(w, &Frame::FileEnd { size: offset }).map_err(write_err)?;
    counts.files += 1;
    counts.bytes_total += offset;
    if sent_here == 0 && have.is_some_and(|(size, _)| *size == offset) {
        counts.files_unchanged += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_pg_basebackup_reads_them() {
        assert_eq!(parse_rate("500").unwrap(), 500 * 1024);
        assert_eq!(parse_rate("500k").unwrap(), 500 * 1024);
        assert_eq!(parse_rate("50M").unwrap(), 50 << 20);
        for bad in ["", "x", "10", "2000M", "-5M"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
