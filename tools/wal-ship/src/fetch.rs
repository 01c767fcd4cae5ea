//! `wal-ship fetch NAME PATH --from DEST`: the `restore_command`.
//!
//! Exit codes, as PostgreSQL reads them:
//!
//! | outcome | exit | PostgreSQL |
//! |---|---|---|
//! | restored | 0 | replays it |
//! | not in the archive | 1, quietly | end of the archive: tries streaming, or ends recovery |
//! | corrupt object (checksum, decompression, decryption, wrong segment) | 126, loudly | FATAL: recovery stops |
//! | archive unreachable, I/O error, bad name; **standby mode** | 69, 74, 65 | retries after `wal_retrieve_retry_interval` |
//! | the same; **archive recovery** (`recovery.signal` only) | 126 | FATAL: recovery stops |
//!
//! Why the last two rows differ: in standby mode PostgreSQL retries any ordinary failure
//! forever, which is the right answer to a network blip; in archive (point-in-time) recovery
//! an ordinary failure means "no more WAL": recovery would end at that point and the server
//! would open on a new timeline, silently short of data. `--on-error stop|retry` overrides
//! the guess, which looks for `standby.signal` in the working directory (PostgreSQL runs
//! `restore_command` in the data directory).
//!
//! `--prefetch N` fetches the next N segments along with the one asked for (one round trip
//! over ssh) into a spool directory; the next calls find them there. Spooled objects stay in
//! the stored form and are verified when used, like objects read from the archive.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use shared::{ErrorKind, Status};

use crate::archive::Archive;
use crate::name::{Kind, WalName};
use crate::object::{self, SecretKey, SUFFIX};
use crate::{segment, KeyArgs, SshArgs};

/// What to do with failures other than "not in the archive" and corruption.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// `retry` when standby.signal is in the working directory (standby mode), else `stop`.
    Auto,
    /// Exit 126: PostgreSQL stops recovery.
    Stop,
    /// Exit with the ordinary code (69, 74, ...): PostgreSQL retries in standby mode, but
    /// ends archive recovery.
    Retry,
}

/// `wal-ship fetch`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The WAL file name to restore (%f in restore_command).
    #[arg(value_name = "NAME")]
    name: String,
    /// Where to write it (%p), relative to the working directory.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    from: String,
    /// Also fetch the next N segments into the spool directory, so that the next calls are
    /// served locally (one round trip over ssh for all of them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    prefetch: u32,
    /// The spool directory for --prefetch (default: pg_wal/.wal-ship-prefetch when run in a
    /// data directory, as restore_command is).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Failures other than "not in the archive" and corruption: `stop` exits 126 (PostgreSQL
    /// stops recovery), `retry` exits with the ordinary code (a standby retries), `auto` is
    /// `retry` when standby.signal is in the working directory, else `stop`.
    #[arg(long, value_enum, value_name = "WHAT", default_value = "auto")]
    on_error: OnError,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    ssh: SshArgs,
    /// When the segment NAME is not in the archive, restore NAME.partial if it is: the last
    /// segment of a primary stopped for a switchover, which pg-switch ships under that name
    /// (the full segment comes under NAME if the primary serves on instead, and is then
    /// preferred). For a standby fed by the archive through a switchover, not for
    /// point-in-time recovery.
    #[arg(long)]
    or_partial: bool,
    /// No record on stdout (for restore_command: stdout goes to the server log).
    #[arg(short, long)]
    quiet: bool,
}

/// The `segment` record of a fetch.
#[derive(Debug, Serialize)]
struct Fetched {
    name: String,
    kind: &'static str,
    action: &'static str,
    bytes: u64,
    stored_bytes: u64,
    source: &'static str,
    archive: String,
    path: String,
    prefetched: usize,
    elapsed_ms: u64,
}

impl shared::Record for Fetched {
    const TYPE: &'static str = "segment";
}

/// Standby mode: PostgreSQL runs restore_command in the data directory, where
/// `standby.signal` says the server is a standby (which retries failures forever).
pub(crate) fn standby_mode() -> bool {
    Path::new("standby.signal").exists()
}

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let retry = match a.on_error {
        OnError::Stop => false,
        OnError::Retry => true,
        OnError::Auto => standby_mode(),
    };
    fetch(&a).map_err(|e| {
        let kind = shared::exit::classify(&e);
        if matches!(kind, ErrorKind::NotFound | ErrorKind::Fatal) || retry {
            e
        } else {
            e.context(shared::Error::new(
                ErrorKind::Fatal,
                format!(
                    "cannot restore {}; exiting 126 so that PostgreSQL stops recovery instead of \
                     ending it early (not in standby mode: no standby.signal here; see \
                     --on-error)",
                    a.name
                ),
            ))
        }
    })
}

fn corrupt(name: &WalName, place: &str, why: impl std::fmt::Display) -> anyhow::Error {
    shared::err(
        ErrorKind::Fatal,
        format!(
            "{name} in {place} is corrupt or unreadable: {why}; exiting 126 so that PostgreSQL \
             stops recovery instead of taking it for the end of the archive: restore that \
             object from another copy ('wal-ship verify' lists every damaged one)"
        ),
    )
}

fn fetch(a: &Args) -> anyhow::Result<Status> {
    let started = Instant::now();
    let mut out = crate::output(a.quiet);
    let name = WalName::parse(&a.name)?;
    let archive = Archive::open(&a.from, a.ssh.options()?)?;
    let key = a.key.load()?;
    let spool = spool_dir(a)?;
    let place = archive.describe();

    let mut source = "archive";
    let mut found = None;
    if let Some(dir) = &spool {
        if let Ok(bytes) = fs::read(dir.join(format!("{name}{SUFFIX}"))) {
            match decode(&name, &bytes, key.as_ref()) {
                Ok(d) => {
                    found = Some((bytes.len(), d));
                    source = "spool";
                }
                Err(e) => {
                    shared::warn!(
                        "the prefetched copy of {name} in {} is unusable ({e:#}); fetching it \
                         again",
                        dir.display()
                    );
                    let _ = fs::remove_file(dir.join(format!("{name}{SUFFIX}")));
                }
            }
        }
    }
    let (stored_bytes, (header, data)) = match found {
        Some(f) => f,
        None => {
            let missing = || shared::err(ErrorKind::NotFound, format!("{name} is not in {place}"));
            let (got, bytes) = match archive.get(&name)? {
                Some(b) => (name.clone(), b),
                None if a.or_partial && name.kind == Kind::Segment => {
                    let partial = WalName::parse(&format!("{name}.partial"))?;
                    let b = archive.get(&partial)?.ok_or_else(missing)?;
                    source = "partial";
                    (partial, b)
                }
                None => {
                    if let (Kind::History, Some(dir)) = (name.kind, &spool) {
                        clear_spool(dir);
                    }
                    return Err(missing());
                }
            };
            let d = decode(&got, &bytes, key.as_ref()).map_err(|e| corrupt(&got, &place, e))?;
            (bytes.len(), d)
        }
    };
    same_system(&name, &place, &data)?;
    write_file(&a.path, &data)?;

    let mut prefetched = 0;
    if let Some(dir) = &spool {
        let _ = fs::remove_file(dir.join(format!("{name}{SUFFIX}")));
        if let (Kind::Segment, Some(seg_size)) = (name.kind, header.seg_size) {
            if a.prefetch > 0 {
                match prefetch(&archive, dir, &name, seg_size, a.prefetch) {
                    Ok(n) => prefetched = n,
                    Err(e) => shared::warn!("prefetching after {name} failed: {e:#}"),
                }
            }
        }
    }
    out.emit(&Fetched {
        name: name.to_string(),
        kind: name.kind.as_str(),
        action: "fetched",
        bytes: data.len() as u64,
        stored_bytes: stored_bytes as u64,
        source,
        archive: place,
        path: a.path.display().to_string(),
        prefetched,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })?;
    out.finish(&serde_json::json!({"fetched": 1, "bytes": data.len()}))
}

/// The system identifier of the data directory fetch runs in (PostgreSQL runs
/// restore_command there): the first field of `global/pg_control`, little-endian as the WAL's
/// own. None elsewhere (a fetch by hand), or if it cannot be read.
fn data_dir_system_id() -> Option<u64> {
    let mut b = [0u8; 8];
    let mut f = fs::File::open("global/pg_control").ok()?;
    std::io::Read::read_exact(&mut f, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// A segment of another database system is refused (126): PostgreSQL would log "WAL file is
/// from different database system", take it for the end of the archive and end recovery
/// early on a new timeline. Two clusters pushing to one archive make this happen.
fn same_system(name: &WalName, place: &str, data: &[u8]) -> anyhow::Result<()> {
    if !name.kind.is_segment_data() {
        return Ok(());
    }
    let (Some(ours), Ok(h)) = (
        data_dir_system_id(),
        segment::long_header(name.as_str(), data),
    ) else {
        return Ok(());
    };
    if h.system_id == ours {
        return Ok(());
    }
    Err(shared::err(
        ErrorKind::Fatal,
        format!(
            "{name} in {place} is WAL of database system {}, but this data directory is \
             system {ours}: another cluster archives there too; exiting 126 so that \
             PostgreSQL stops recovery instead of ending it early (give each cluster its own \
             archive; 'wal-ship verify' reports mixed_systems)",
            h.system_id
        ),
    ))
}

/// Decode and re-check an object: the checksum, and for segments the page header against
/// the name.
fn decode(
    name: &WalName,
    bytes: &[u8],
    key: Option<&SecretKey>,
) -> anyhow::Result<(object::Header, Vec<u8>)> {
    let (header, data) = object::decode(name.as_str(), bytes, key)?;
    segment::check(name, &data)?;
    Ok((header, data))
}

fn spool_dir(a: &Args) -> anyhow::Result<Option<PathBuf>> {
    let dir = match (&a.spool, a.prefetch) {
        (Some(d), _) => d.clone(),
        (None, 0) => return Ok(None),
        (None, _) if Path::new("PG_VERSION").exists() => PathBuf::from("pg_wal/.wal-ship-prefetch"),
        (None, _) => {
            return Err(shared::err(
                ErrorKind::Usage,
                "--prefetch needs --spool DIR when not run in a data directory",
            ))
        }
    };
    fs::create_dir_all(&dir)
        .with_context(|| format!("creating the spool directory {}", dir.display()))?;
    Ok(Some(dir))
}

/// Write `data` to `path` through a temp file beside it, so that PostgreSQL never sees a
/// partial file. Not fsynced: PostgreSQL replays it at once and fetches it again after a
/// crash.
fn write_file(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let file = path.file_name().ok_or_else(|| {
        shared::err(
            ErrorKind::Usage,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let tmp = path.with_file_name(format!(".{}.wal-ship.tmp", file.to_string_lossy()));
    let res = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| fs::rename(&tmp, path));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing {}", path.display()))
}

/// Make sure the spool holds the `n` segments after `name` that the archive has; return how
/// many were fetched now.
/// Recovery is ending: PostgreSQL asks for the history file of the next timeline, which is
/// not there, to choose a new timeline id (at the end of archive recovery, at a recovery
/// target, at promotion); a standby also asks when the archive has run out, with nothing
/// prefetched left unused then (prefetch stops at the first segment missing). What is still
/// spooled will not be asked for: up to --prefetch segments that would stay in pg_wal for
/// good (found by an audit).
fn clear_spool(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn prefetch(
    archive: &Archive,
    dir: &Path,
    name: &WalName,
    seg_size: u32,
    n: u32,
) -> anyhow::Result<usize> {
    let current = name.segno(seg_size);
    // Forget what replay has passed (any timeline), and temp files of killed runs.
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let stale = match file.strip_suffix(SUFFIX).and_then(WalName::try_parse) {
            Some(n) => n.segno(seg_size) <= current,
            None => file.ends_with(".tmp"),
        };
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
    let mut wanted = Vec::new();
    let mut next = name.clone();
    for _ in 0..n {
        next = next.next_segment(seg_size);
        if !dir.join(format!("{next}{SUFFIX}")).exists() {
            wanted.push(next.clone());
        }
    }
    if wanted.is_empty() {
        return Ok(0);
    }
    let got = archive.get_many(&wanted)?;
    let mut count = 0;
    for (n, bytes) in wanted.iter().zip(got) {
        // The archive is filled in order: the first missing one ends the run.
        let Some(bytes) = bytes else { break };
        let dest = dir.join(format!("{n}{SUFFIX}"));
        let tmp = dir.join(format!("{n}{SUFFIX}.tmp"));
        fs::write(&tmp, &bytes)
            .and_then(|()| fs::rename(&tmp, &dest))
            .with_context(|| format!("writing {}", dest.display()))?;
        count += 1;
    }
    Ok(count)
}
