//! `wal-ship verify --archive DEST [--from SEG] [--to SEG]`: can this archive be restored?
//!
//! - every object: readable header, decrypts (with the key), decompresses, size and SHA-256 of
//!   the original bytes match, and a segment's page header matches its name;
//! - per timeline, no gaps in the segment sequence; a timeline's history file tells where it
//!   branched off its parent, so the parent's segments must reach that point and the child's
//!   must start there;
//! - history files parse, list their ancestors in order, agree with their parent's history
//!   file, and exist for every timeline above 1 that has segments;
//! - all segments come from one database system;
//! - every base backup the archive knows of (its backup history file, `SEG.OFFSET.backup`,
//!   archived when the backup ended) has the segments from its start to its stop, which a
//!   restore of it replays before it is consistent: a `backup` record each, and a
//!   `backup_wal_missing` problem when one is missing or corrupt.
//!
//! Each finding is a `problem` record; exit 1 when there is any (like `diff`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use shared::{ErrorKind, Status};

use crate::archive::{Archive, Entry};
use crate::name::{Kind, WalName};
use crate::object::{self, Corrupt};
use crate::segment::{self, lsn};
use crate::{KeyArgs, SshArgs};

/// `wal-ship verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    archive: String,
    /// Check only from this segment on (by position: log and segment, any timeline).
    #[arg(long, value_name = "SEG")]
    from: Option<String>,
    /// Check only up to this segment (by position, any timeline).
    #[arg(long, value_name = "SEG")]
    to: Option<String>,
    /// Objects decoded at the same time.
    #[arg(long, short, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    ssh: SshArgs,
}

/// Read this much stored data per round trip.
const BATCH_BYTES: u64 = 256 << 20;

/// What checking one object found.
enum Checked {
    Ok {
        header: object::Header,
        /// History or backup history file text.
        text: Option<String>,
    },
    /// Encrypted and no key: only the header was read.
    Unverified(object::Header),
    Bad(String),
    Vanished,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    objects: usize,
    segments: usize,
    history_files: usize,
    checked: usize,
    unverified: usize,
    corrupt: usize,
    gaps: usize,
    missing_segments: u64,
    problems: usize,
    timelines: Vec<u32>,
    first_segment: Option<String>,
    last_segment: Option<String>,
    bytes: u64,
    stored_bytes: u64,
    temp_files: usize,
    backups: usize,
    backups_restorable: usize,
}

/// A base backup, from its backup history file (what `pg_backup_stop` writes).
#[derive(Debug, Serialize, PartialEq)]
struct Backup {
    /// The backup history file.
    name: String,
    label: Option<String>,
    start_lsn: String,
    stop_lsn: String,
    /// The segments a restore replays before it is consistent: from `start_wal` to `stop_wal`.
    start_wal: String,
    stop_wal: String,
    start_time: Option<String>,
    stop_time: Option<String>,
    /// Every segment from `start_wal` to `stop_wal` is in the archive and checked whole.
    wal_complete: bool,
    /// The first of those that is missing or corrupt.
    first_missing: Option<String>,
}

impl shared::Record for Backup {
    const TYPE: &'static str = "backup";
}

/// A backup history file: its `KEY: VALUE` lines, and where the backup starts and stops
/// (`START/STOP WAL LOCATION: 0/2000028 (file 000000010000000000000002)`: the LSN and its
/// segment).
struct BackupFile<'a> {
    fields: BTreeMap<&'a str, &'a str>,
    start: (String, WalName),
    stop: (String, WalName),
}

fn parse_backup(text: &str) -> Option<BackupFile<'_>> {
    let fields: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let location = |key: &str| -> Option<(String, WalName)> {
        let v = fields.get(key)?;
        let (at, file) = v.split_once(" (file ")?;
        let name = WalName::try_parse(file.strip_suffix(')')?)?;
        (name.kind == Kind::Segment).then(|| (at.to_owned(), name))
    };
    let start = location("START WAL LOCATION")?;
    let stop = location("STOP WAL LOCATION")?;
    Some(BackupFile {
        fields,
        start,
        stop,
    })
}

fn position_of(arg: &Option<String>) -> anyhow::Result<Option<WalName>> {
    arg.as_deref()
        .map(|s| {
            let n = WalName::parse(s)?;
            if n.kind == Kind::History {
                return Err(shared::err(
                    ErrorKind::Usage,
                    format!("--from/--to take a segment name, not {s}"),
                ));
            }
            Ok(n)
        })
        .transpose()
}

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let archive = Archive::open(&a.archive, a.ssh.options()?)?;
    let key = a.key.load()?;
    let from = position_of(&a.from)?;
    let to = position_of(&a.to)?;
    let listing = archive.list()?;
    let in_range = |n: &WalName| {
        n.kind == Kind::History
            || (from.as_ref().is_none_or(|f| n.position() >= f.position())
                && to.as_ref().is_none_or(|t| n.position() <= t.position()))
    };
    let objects: Vec<&Entry> = listing
        .objects
        .iter()
        .filter(|e| in_range(&e.name))
        .collect();

    let mut out = shared::Output::stdout();
    let mut sum = Summary {
        objects: objects.len(),
        temp_files: listing.temps.len(),
        ..Summary::default()
    };
    let mut problems: Vec<Value> = Vec::new();

    // Check every object, a batch at a time (one round trip per batch over ssh).
    let mut results: Vec<(WalName, Checked)> = Vec::with_capacity(objects.len());
    let mut start = 0;
    let bar = shared::progress::bar(objects.len() as u64, "objects");
    while start < objects.len() {
        let mut end = start;
        let mut size = 0;
        while end < objects.len() && (end == start || size + objects[end].size <= BATCH_BYTES) {
            size += objects[end].size;
            end += 1;
        }
        let batch = &objects[start..end];
        let rels: Vec<String> = batch.iter().map(|e| e.rel.clone()).collect();
        let blobs = archive.get_rel(&rels)?;
        sum.stored_bytes += blobs.iter().flatten().map(|b| b.len() as u64).sum::<u64>();
        let checked = check_parallel(batch, blobs, key.as_ref(), usize::from(a.jobs));
        results.extend(batch.iter().map(|e| e.name.clone()).zip(checked));
        bar.inc((end - start) as u64);
        start = end;
    }
    bar.finish_and_clear();

    let mut seg_sizes: BTreeMap<u32, usize> = BTreeMap::new();
    let mut systems: BTreeMap<String, usize> = BTreeMap::new();
    let mut histories: BTreeMap<u32, String> = BTreeMap::new();
    let mut segments: BTreeMap<u32, BTreeSet<WalName>> = BTreeMap::new();
    // Segments checked whole (or encrypted and unread), and backup history files' text.
    let mut sound: BTreeSet<&WalName> = BTreeSet::new();
    let mut backup_texts: Vec<(&WalName, &str)> = Vec::new();
    for (name, checked) in &results {
        let header = match checked {
            Checked::Ok { header, text } => {
                sum.checked += 1;
                match (name.kind, text) {
                    (Kind::History, Some(t)) => {
                        histories.insert(name.tli, t.clone());
                    }
                    (Kind::Backup, Some(t)) => backup_texts.push((name, t)),
                    _ => {}
                }
                sound.insert(name);
                Some(header)
            }
            Checked::Unverified(h) => {
                sum.unverified += 1;
                sound.insert(name);
                Some(h)
            }
            Checked::Bad(why) => {
                sum.corrupt += 1;
                problems.push(json!({"problem": "corrupt", "name": name.as_str(), "message": format!("{name}: {why}")}));
                None
            }
            Checked::Vanished => {
                problems.push(json!({"problem": "vanished", "name": name.as_str(), "message": format!("{name} disappeared while being checked (a concurrent clean?)")}));
                None
            }
        };
        if let Some(h) = header {
            sum.bytes += h.size;
            if let Some(s) = h.seg_size {
                *seg_sizes.entry(s).or_default() += 1;
            }
            if let Some(s) = &h.system_id {
                *systems.entry(s.clone()).or_default() += 1;
            }
        }
        match name.kind {
            Kind::Segment => {
                sum.segments += 1;
                segments.entry(name.tli).or_default().insert(name.clone());
            }
            Kind::History => sum.history_files += 1,
            Kind::Backup => sum.backups += 1,
            Kind::Partial => {}
        }
    }
    if sum.unverified > 0 {
        shared::warn!(
            "{} encrypted objects were not checked: no --encrypt-key-file given (only their \
             headers were read)",
            sum.unverified
        );
    }

    if systems.len() > 1 {
        let list: Vec<String> = systems
            .iter()
            .map(|(s, n)| format!("{s} ({n} segments)"))
            .collect();
        problems.push(json!({"problem": "mixed_systems", "message": format!("segments from {} database systems share this archive: {}", systems.len(), list.join(", "))}));
    }
    if seg_sizes.len() > 1 {
        problems.push(json!({"problem": "mixed_segment_sizes", "message": format!("segments of different sizes: {seg_sizes:?}")}));
    }
    let seg_size = seg_sizes.iter().max_by_key(|(_, n)| **n).map(|(s, _)| *s);

    // History files.
    let mut parsed: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for (tli, text) in &histories {
        match parse_history(*tli, text) {
            Ok(entries) => {
                parsed.insert(*tli, entries);
            }
            Err(why) => problems.push(json!({"problem": "history", "name": format!("{tli:08X}.history"), "message": format!("{tli:08X}.history: {why}")})),
        }
    }
    for (tli, entries) in &parsed {
        if let Some(&(parent, _)) = entries.last() {
            if let Some(pe) = parsed.get(&parent) {
                if entries.len() != pe.len() + 1 || entries[..pe.len()] != pe[..] {
                    problems.push(json!({"problem": "history", "name": format!("{tli:08X}.history"), "message": format!("{tli:08X}.history does not continue its parent's {parent:08X}.history: timelines were mixed up")}));
                }
            }
        }
    }
    for tli in segments.keys() {
        if *tli > 1 && !histories.contains_key(tli) && !parsed.contains_key(tli) {
            let listed = listing
                .objects
                .iter()
                .any(|e| e.name.kind == Kind::History && e.name.tli == *tli);
            if !listed {
                problems.push(json!({"problem": "missing_history", "timeline": tli, "message": format!("timeline {tli} has segments but {tli:08X}.history is not in the archive: recovery cannot follow that timeline")}));
            }
        }
    }

    // Gaps, per timeline; history files stretch the expected ranges to the branch points.
    if let Some(seg_size) = seg_size {
        let mut ranges: BTreeMap<u32, (u64, u64)> = segments
            .iter()
            .filter_map(|(tli, names)| {
                let lo = names.iter().next()?.segno(seg_size);
                let hi = names.iter().next_back()?.segno(seg_size);
                Some((*tli, (lo, hi)))
            })
            .collect();
        for (tli, entries) in &parsed {
            let Some(&(parent, switch)) = entries.last() else {
                continue;
            };
            let at = switch / u64::from(seg_size);
            if let Some(r) = ranges.get_mut(&parent) {
                if at > 0 && r.0 < at {
                    r.1 = r.1.max(at - 1);
                }
            }
            if let Some(r) = ranges.get_mut(tli) {
                r.0 = r.0.min(at);
            }
        }
        for (tli, (mut lo, mut hi)) in ranges {
            // An explicit bound on this timeline is a demand: it must be there.
            if let Some(f) = &from {
                let s = f.segno(seg_size);
                lo = if f.tli == tli { s } else { lo.max(s) };
            }
            if let Some(t) = &to {
                let s = t.segno(seg_size);
                hi = if t.tli == tli { s } else { hi.min(s) };
            }
            let present = segments[&tli]
                .iter()
                .map(|n| n.segno(seg_size))
                .filter(|s| (lo..=hi).contains(s));
            let mut missing: Vec<(u64, u64)> = Vec::new();
            let mut expected = lo;
            for s in present {
                if s > expected {
                    missing.push((expected, s - 1));
                }
                expected = s + 1;
            }
            if expected <= hi {
                missing.push((expected, hi));
            }
            for run in missing {
                let first = WalName::segment(tli, run.0, seg_size);
                let last = WalName::segment(tli, run.1, seg_size);
                let n = run.1 - run.0 + 1;
                sum.gaps += 1;
                sum.missing_segments += n;
                problems.push(json!({
                    "problem": "gap", "timeline": tli, "from": first.as_str(), "to": last.as_str(),
                    "missing": n,
                    "message": format!("timeline {tli}: {n} segment(s) missing, {first} to {last} (WAL {} to {})", lsn(run.0 * u64::from(seg_size)), lsn((run.1 + 1) * u64::from(seg_size))),
                }));
            }
        }
    }

    // Base backups: each needs its segments from start to stop to reach consistency.
    let mut backups: Vec<Backup> = Vec::new();
    for (name, text) in backup_texts {
        let Some(BackupFile {
            fields,
            start: (start_lsn, start),
            stop: (stop_lsn, stop),
        }) = parse_backup(text)
        else {
            problems.push(json!({"problem": "corrupt", "name": name.as_str(), "message": format!("{name}: not a backup history file (no START and STOP WAL LOCATION lines)")}));
            continue;
        };
        let needed: Vec<WalName> = match seg_size {
            Some(seg_size) if start.tli == stop.tli && start.position() <= stop.position() => {
                (start.segno(seg_size)..=stop.segno(seg_size))
                    .map(|n| WalName::segment(start.tli, n, seg_size))
                    .collect()
            }
            // A backup that spans a timeline switch (taken on a standby that was promoted):
            // its first and last segment.
            _ => vec![start.clone(), stop.clone()],
        };
        // With --from/--to, what lies outside was not looked at.
        let first_missing = needed.iter().find(|n| in_range(n) && !sound.contains(n));
        let b = Backup {
            name: name.to_string(),
            label: fields.get("LABEL").map(|s| (*s).to_owned()),
            start_lsn,
            stop_lsn,
            start_wal: start.to_string(),
            stop_wal: stop.to_string(),
            start_time: fields.get("START TIME").map(|s| (*s).to_owned()),
            stop_time: fields.get("STOP TIME").map(|s| (*s).to_owned()),
            wal_complete: first_missing.is_none(),
            first_missing: first_missing.map(ToString::to_string),
        };
        if let Some(m) = first_missing {
            problems.push(json!({
                "problem": "backup_wal_missing", "name": name.as_str(), "segment": m.as_str(),
                "message": format!(
                    "the base backup {}{} cannot be restored from this archive: it needs {start} to {stop} to reach consistency, and {m} is {}",
                    name,
                    b.label.as_deref().map(|l| format!(" (label {l:?}, stopped {})", b.stop_time.as_deref().unwrap_or("?"))).unwrap_or_default(),
                    if results.iter().any(|(n, _)| n == m) { "corrupt" } else { "missing" },
                ),
            }));
        } else {
            sum.backups_restorable += 1;
        }
        backups.push(b);
    }
    for b in &backups {
        out.emit(b)?;
    }

    sum.timelines = segments.keys().copied().collect();
    let all_segments = || segments.values().flatten();
    sum.first_segment = all_segments()
        .min_by_key(|n| n.position().to_owned())
        .map(ToString::to_string);
    sum.last_segment = all_segments()
        .max_by_key(|n| n.position().to_owned())
        .map(ToString::to_string);
    sum.problems = problems.len();
    for p in &problems {
        out.emit_as("problem", p)?;
    }
    if !problems.is_empty() {
        out.mark_differences();
        shared::note!(
            "{} problem(s) in {} (see the problem records)",
            problems.len(),
            archive.describe()
        );
    }
    let stale = listing
        .temps
        .iter()
        .filter(|t| t.age > Duration::from_secs(3600))
        .count();
    if stale > 0 {
        shared::note!("{stale} temp file(s) older than an hour (from killed pushes): 'wal-ship clean' removes them");
    }
    out.finish(&sum)
}

/// Decode a batch on `jobs` threads.
fn check_parallel(
    batch: &[&Entry],
    blobs: Vec<Option<Vec<u8>>>,
    key: Option<&object::SecretKey>,
    jobs: usize,
) -> Vec<Checked> {
    let items: Vec<(&Entry, Option<Vec<u8>>)> = batch.iter().copied().zip(blobs).collect();
    let chunk = items.len().div_ceil(jobs.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|(e, b)| check_one(&e.name, b.as_deref(), key))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verify thread"))
            .collect()
    })
}

fn check_one(name: &WalName, bytes: Option<&[u8]>, key: Option<&object::SecretKey>) -> Checked {
    let Some(bytes) = bytes else {
        return Checked::Vanished;
    };
    match object::decode(name.as_str(), bytes, key) {
        Ok((header, data)) => {
            if let Err(e) = segment::check(name, &data) {
                return Checked::Bad(format!("{e:#}"));
            }
            let text = matches!(name.kind, Kind::History | Kind::Backup)
                .then(|| String::from_utf8_lossy(&data).into_owned());
            Checked::Ok { header, text }
        }
        Err(Corrupt::NeedKey(_)) => match object::parse_header(bytes) {
            Ok((h, _)) => Checked::Unverified(h),
            Err(e) => Checked::Bad(e.to_string()),
        },
        Err(e) => Checked::Bad(e.to_string()),
    }
}

/// Parse a timeline history file: `parentTLI<TAB>switchpoint<TAB>reason` lines.
pub(crate) fn parse_history(tli: u32, text: &str) -> Result<Vec<(u32, u64)>, String> {
    let mut entries: Vec<(u32, u64)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(t), Some(l)) = (f.next(), f.next()) else {
            return Err(format!(
                "line {} is not 'timeline<TAB>LSN<TAB>reason'",
                i + 1
            ));
        };
        let t: u32 = t
            .parse()
            .map_err(|_| format!("line {}: bad timeline '{t}'", i + 1))?;
        let (hi, lo) = l
            .split_once('/')
            .ok_or_else(|| format!("line {}: bad LSN '{l}'", i + 1))?;
        let pos = u64::from_str_radix(hi, 16)
            .ok()
            .zip(u64::from_str_radix(lo, 16).ok())
            .map(|(h, l)| (h << 32) | l)
            .ok_or_else(|| format!("line {}: bad LSN '{l}'", i + 1))?;
        if let Some(&(pt, pl)) = entries.last() {
            if t <= pt || pos < pl {
                return Err(format!(
                    "line {}: timelines or switch points go backwards",
                    i + 1
                ));
            }
        }
        if t >= tli {
            return Err(format!(
                "line {}: lists timeline {t}, not older than {tli}",
                i + 1
            ));
        }
        entries.push((t, pos));
    }
    if entries.is_empty() {
        return Err("no entries".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_files_parse_and_must_go_forward() {
        let ok = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tat restore point\n";
        assert_eq!(
            parse_history(3, ok).unwrap(),
            vec![(1, 0x300_0000), (2, 0x500_0000)]
        );
        assert!(parse_history(2, ok).is_err(), "lists its own timeline");
        assert!(parse_history(3, "2\t0/5000000\tx\n1\t0/3000000\tx\n").is_err());
        assert!(parse_history(3, "one\t0/1\tx\n").is_err());
        assert!(parse_history(3, "").is_err());
    }

    #[test]
    fn backup_history_files_give_their_wal_range() {
        // As PostgreSQL 15's pg_backup_stop writes it.
        let text = "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n\
                    STOP WAL LOCATION: 0/6000100 (file 000000010000000000000006)\n\
                    CHECKPOINT LOCATION: 0/5000060\n\
                    BACKUP METHOD: streamed\n\
                    BACKUP FROM: primary\n\
                    START TIME: 2026-12-07 22:30:01 UTC\n\
                    LABEL: nightly: full\n\
                    START TIMELINE: 1\n\
                    STOP TIME: 2026-12-07 22:30:04 UTC\n\
                    STOP TIMELINE: 1\n";
        let BackupFile {
            fields,
            start: (start_lsn, start),
            stop: (stop_lsn, stop),
        } = parse_backup(text).unwrap();
        assert_eq!(
            (start_lsn.as_str(), start.as_str()),
            ("0/5000028", "000000010000000000000005")
        );
        assert_eq!(
            (stop_lsn.as_str(), stop.as_str()),
            ("0/6000100", "000000010000000000000006")
        );
        assert_eq!(fields["LABEL"], "nightly: full");
        assert_eq!(fields["STOP TIME"], "2026-12-07 22:30:04 UTC");
        assert!(parse_backup("START WAL LOCATION: 0/5000028\n").is_none());
        assert!(parse_backup("garbage").is_none());
    }
}
