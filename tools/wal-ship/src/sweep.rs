//! `wal-ship sweep --from DIR --to DEST`: ship every finished WAL file in a directory, from
//! cron.
//!
//! Two kinds of directory:
//! - **pg_wal** (it has `archive_status/`): the files with a `.ready` marker, which PostgreSQL
//!   leaves there when `archive_mode = on` and `archive_command` is empty or failing. After a
//!   file is stored (or found already stored), its marker becomes `.done`, exactly as the
//!   archiver does, and PostgreSQL may recycle it.
//! - **a spool directory** (e.g. `pg_receivewal -D DIR`): every file with a WAL name except
//!   `.partial` ones (pg_receivewal's segment in progress). Progress is kept in
//!   `DIR/.wal-ship-sweep.json` (`shipped_through`: every segment up to that name is in the
//!   archive; history files by name), so a sweep after a crash resumes where the last one
//!   stopped. A file at or below the mark is not looked at again; delete the state file to
//!   re-check everything (pushes are idempotent).
//!
//! Files go out in PostgreSQL's order (history files first, then by name) on `--jobs`
//! threads; records come out in that order too. `DIR/.wal-ship-sweep.lock` (an advisory
//! lock) keeps a second sweep of the same directory from running at the same time: it exits
//! 75 at once.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::SystemTime;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::{ErrorKind, Status};

use crate::archive::Archive;
use crate::name::{Kind, WalName};
use crate::object::{Compression, EncodeOptions};
use crate::push::{push_file, Totals};
use crate::{KeyArgs, SshArgs};

const STATE: &str = ".wal-ship-sweep.json";
const LOCK: &str = ".wal-ship-sweep.lock";

/// `wal-ship sweep`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory to ship from: a data directory's pg_wal, or a spool directory.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    to: String,
    /// Files shipped at the same time.
    #[arg(long, short, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Compression: zstd (level 3), zstd:LEVEL (1-22), lz4 or none.
    #[arg(long, value_name = "METHOD", default_value = "zstd", value_parser = Compression::parse)]
    compress: Compression,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    ssh: SshArgs,
    /// No records on stdout; errors still go to stderr.
    #[arg(short, long)]
    quiet: bool,
}

/// Progress of spool-mode sweeps.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    archive: String,
    shipped_through: Option<String>,
    history: BTreeSet<String>,
    updated_at: String,
}

#[derive(Debug, Clone)]
struct Candidate {
    name: WalName,
    path: PathBuf,
    size: u64,
    mtime: SystemTime,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    mode: &'static str,
    #[serde(flatten)]
    totals: Totals,
    lag_files: u64,
    lag_bytes: u64,
    lag_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_pending: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shipped_through: Option<String>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let mut out = crate::output(a.quiet);
    let archive = Archive::open(&a.to, a.ssh.options()?)?;
    let key = a.key.load()?;
    let meta = fs::metadata(&a.from).with_context(|| format!("sweeping {}", a.from.display()))?;
    if !meta.is_dir() {
        return Err(shared::err(
            ErrorKind::Usage,
            format!("--from {} is not a directory", a.from.display()),
        ));
    }
    let _lock = lock(&a.from)?;
    let pg_wal = a.from.join("archive_status").is_dir();
    let mut state = if pg_wal {
        State::default()
    } else {
        read_state(&a.from, &archive)
    };
    let candidates = if pg_wal {
        ready_files(&a.from)?
    } else {
        spool_files(&a.from, &state)?
    };

    let opts = EncodeOptions {
        compression: a.compress,
        key: key.as_ref(),
    };
    let mut totals = Totals::default();
    let mut pending: Vec<&Candidate> = Vec::new();
    let next = AtomicUsize::new(0);
    // On a terminal: the bytes shipped of the backlog (a long catch-up after an outage).
    let bar = shared::progress::bytes_bar(candidates.iter().map(|c| c.size).sum(), "shipping");
    let jobs = usize::from(a.jobs).min(candidates.len().max(1));
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel();
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, candidates, archive, opts) = (&next, &candidates, &archive, &opts);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = candidates.get(i) else { break };
                if tx.send((i, push_file(archive, &c.path, opts))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        // Emit in order: hold results until every earlier one is in.
        let mut results: Vec<Option<anyhow::Result<crate::push::Shipped>>> =
            candidates.iter().map(|_| None).collect();
        let mut emitted = 0;
        let mut in_order_ok = true;
        for (i, r) in rx {
            results[i] = Some(r);
            while let Some(Some(r)) = results.get_mut(emitted).map(Option::take) {
                let c = &candidates[emitted];
                emitted += 1;
                bar.inc(c.size);
                bar.set_message(format!("{emitted}/{} files", candidates.len()));
                match r {
                    Ok(rec) => {
                        totals.add(&rec);
                        if pg_wal {
                            mark_done(&a.from, &c.name)?;
                        } else if in_order_ok {
                            advance(&mut state, &c.name);
                            write_state(&a.from, &mut state, &archive);
                        } else if c.name.kind == Kind::History {
                            state.history.insert(c.name.to_string());
                        }
                        out.emit(&rec)?;
                    }
                    Err(e) => {
                        totals.fail();
                        if c.name.kind != Kind::History {
                            in_order_ok = false;
                        }
                        pending.push(c);
                        out.error(&e, json!({"file": c.path.display().to_string()}))?;
                    }
                }
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    if !pg_wal {
        write_state(&a.from, &mut state, &archive);
    }
    let now = SystemTime::now();
    let oldest = pending.iter().min_by_key(|c| c.mtime);
    let summary = Summary {
        mode: if pg_wal { "pg_wal" } else { "spool" },
        totals,
        lag_files: pending.len() as u64,
        lag_bytes: pending.iter().map(|c| c.size).sum(),
        lag_seconds: oldest
            .and_then(|c| now.duration_since(c.mtime).ok())
            .map_or(0, |d| d.as_secs()),
        oldest_pending: oldest.map(|c| c.name.to_string()),
        shipped_through: state.shipped_through.clone(),
    };
    out.finish(&summary)
}

/// Take the sweep lock of `dir`, or fail with "retry later".
fn lock(dir: &Path) -> anyhow::Result<fs::File> {
    let path = dir.join(LOCK);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(shared::err(
            ErrorKind::Retry,
            format!(
                "another wal-ship sweep of {} is running (it holds {}); this one did nothing",
                dir.display(),
                path.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

fn candidate(path: PathBuf, name: WalName) -> Option<Candidate> {
    let m = fs::metadata(&path).ok()?;
    m.is_file().then(|| Candidate {
        name,
        size: m.len(),
        mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        path,
    })
}

/// pg_wal: files with a `.ready` marker.
fn ready_files(dir: &Path) -> anyhow::Result<Vec<Candidate>> {
    let status = dir.join("archive_status");
    let mut out = Vec::new();
    for e in fs::read_dir(&status).with_context(|| format!("listing {}", status.display()))? {
        let e = e.with_context(|| format!("listing {}", status.display()))?;
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(n) = file.strip_suffix(".ready").and_then(WalName::try_parse) else {
            continue;
        };
        if let Some(c) = candidate(dir.join(n.as_str()), n) {
            out.push(c);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A spool: WAL files not yet shipped according to the state.
fn spool_files(dir: &Path, state: &State) -> anyhow::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(n) = WalName::try_parse(&file) else {
            continue;
        };
        let done = match n.kind {
            Kind::Partial => true, // pg_receivewal's segment in progress
            Kind::History => state.history.contains(n.as_str()),
            Kind::Segment | Kind::Backup => state
                .shipped_through
                .as_deref()
                .is_some_and(|t| n.as_str() <= t),
        };
        if !done {
            if let Some(c) = candidate(e.path(), n) {
                out.push(c);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn mark_done(dir: &Path, name: &WalName) -> anyhow::Result<()> {
    let status = dir.join("archive_status");
    let ready = status.join(format!("{name}.ready"));
    let done = status.join(format!("{name}.done"));
    fs::rename(&ready, &done).with_context(|| {
        format!(
            "marking {name} archived ({} -> {})",
            ready.display(),
            done.display()
        )
    })
}

fn advance(state: &mut State, name: &WalName) {
    if name.kind == Kind::History {
        state.history.insert(name.to_string());
    } else if state
        .shipped_through
        .as_deref()
        .is_none_or(|t| name.as_str() > t)
    {
        state.shipped_through = Some(name.to_string());
    }
}

fn read_state(dir: &Path, archive: &Archive) -> State {
    let path = dir.join(STATE);
    let Ok(text) = fs::read_to_string(&path) else {
        return State::default();
    };
    match serde_json::from_str::<State>(&text) {
        Ok(s) if s.archive == archive.describe() => s,
        Ok(_) => State::default(), // another archive: start over (pushes are idempotent)
        Err(e) => {
            shared::warn!(
                "ignoring {} ({e}); checking every file again",
                path.display()
            );
            State::default()
        }
    }
}

/// Save progress (best effort: a lost update only means re-checking a few files).
fn write_state(dir: &Path, state: &mut State, archive: &Archive) {
    state.archive = archive.describe();
    state.updated_at = crate::now_rfc3339();
    let path = dir.join(STATE);
    let tmp = dir.join(format!("{STATE}.tmp"));
    let res = serde_json::to_vec(state)
        .map_err(std::io::Error::other)
        .and_then(|b| fs::write(&tmp, b))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = res {
        shared::warn!("cannot save progress in {}: {e}", path.display());
    }
}
