//! `wal-ship clean --archive DEST --keep-from SEG | --keep-backups N`: retention, and
//! `archive_cleanup_command`.
//!
//! Removes every segment, `.partial` and `.backup` file whose position (log id and segment,
//! whatever the timeline: `pg_archivecleanup`'s rule, so `%r` works) is before `SEG`, and
//! temp files that pushes left behind more than an hour ago. Timeline history files are
//! never removed: they are tiny and recovery needs them to choose a timeline.
//!
//! `--keep-backups N` finds `SEG` from the base backups themselves, as pgBackRest's
//! `repo-retention-full` and WAL-G's `delete retain N` do: PostgreSQL archives a backup
//! history file (`SEG.OFFSET.backup`) when a base backup ends, named after the segment the
//! backup starts in. The N newest (by timeline, then start) each need the WAL from their
//! start on; keeping from the earliest of those starts keeps what each needs to be restored
//! and replayed up to the last archived segment. With fewer than N backups in the archive
//! nothing is removed (a `note` says so): what a base backup the archive does not know needs
//! cannot be told.
//!
//! A `--keep-from` newer than every segment in the archive would empty it; that is refused
//! (exit 65) unless `--force`, since it is far more often a typo than a wish.

use std::time::Duration;

use serde::Serialize;
use shared::{ErrorKind, Status};

use crate::archive::{Archive, Listing};
use crate::name::{Kind, WalName};
use crate::{KeyArgs, SshArgs};

/// `wal-ship clean`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("keep").required(true).multiple(true)))]
pub struct Args {
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    archive: String,
    /// Keep this segment and everything after it (%r in archive_cleanup_command).
    #[arg(long, value_name = "SEG", group = "keep")]
    keep_from: Option<String>,
    /// Keep what the N newest base backups need: everything from the segment the N-th newest
    /// starts in (found by the backup history files, *.backup, that PostgreSQL archives when
    /// a backup ends). Fewer than N backups in the archive: nothing is removed. With
    /// --keep-from too, what either needs is kept (archive_cleanup_command = 'wal-ship clean
    /// --archive DEST --keep-from %r --keep-backups 2' on a standby whose archive also serves
    /// point-in-time recovery).
    #[arg(long, value_name = "N", group = "keep", value_parser = clap::value_parser!(u32).range(1..))]
    keep_backups: Option<u32>,
    /// Only report what would be removed.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Remove even when --keep-from (alone) is newer than every segment in the archive.
    #[arg(long, conflicts_with = "keep_backups")]
    force: bool,
    #[command(flatten)]
    ssh: SshArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// No records on stdout.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Serialize)]
struct Removed {
    name: String,
    kind: &'static str,
    stored_bytes: u64,
    dry_run: bool,
}

impl shared::Record for Removed {
    const TYPE: &'static str = "removed";
}

/// Temp files younger than this may belong to a push still running.
const TEMP_AGE: Duration = Duration::from_secs(3600);

/// The base backups the archive knows of, oldest first: their backup history files
/// (`TTTTTTTTSEG.OFFSET.backup`), ordered by timeline, then where they start. A timeline is
/// made after the one it branches from, so a backup on a later timeline is the newer one,
/// even where it starts before a backup that an old timeline kept writing after the branch
/// (a point-in-time recovery to an earlier point).
fn backups(listing: &Listing) -> Vec<&WalName> {
    let mut found: Vec<&WalName> = listing
        .objects
        .iter()
        .map(|e| &e.name)
        .filter(|n| n.kind == Kind::Backup)
        .collect();
    found.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    found
}

/// The object headers of the backups' start segments (None where the segment is gone).
fn start_headers(
    archive: &Archive,
    known: &[&WalName],
) -> anyhow::Result<Vec<Option<crate::object::Header>>> {
    let starts = known
        .iter()
        .map(|b| WalName::parse(b.segment_name().unwrap_or_default()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(archive
        .get_many(&starts)?
        .into_iter()
        .map(|bytes| {
            bytes
                .as_deref()
                .and_then(|b| crate::object::parse_header(b).ok())
                .map(|(h, _)| h)
        })
        .collect())
}

/// Refuse backups of more than one database system (two clusters pushing to one archive):
/// which are the newest would be a guess, and a wrong one removes every segment of the other
/// cluster (found by an audit: another system's backup, newest by name, took all of this
/// one's). The system of a backup is that of its start segment (its object header), where
/// that segment is still there.
fn one_system(
    archive: &Archive,
    known: &[&WalName],
    headers: &[Option<crate::object::Header>],
) -> anyhow::Result<()> {
    let mut systems: std::collections::BTreeMap<&str, Vec<&WalName>> = Default::default();
    for (b, h) in known.iter().zip(headers) {
        if let Some(s) = h.as_ref().and_then(|h| h.system_id.as_deref()) {
            systems.entry(s).or_default().push(b);
        }
    }
    if systems.len() < 2 {
        return Ok(());
    }
    let list: Vec<String> = systems
        .iter()
        .map(|(s, bs)| {
            format!(
                "system {s}: {} backup(s), the newest {}",
                bs.len(),
                bs.last().map_or("-", |b| b.as_str())
            )
        })
        .collect();
    Err(shared::err(
        ErrorKind::DataErr,
        format!(
            "base backups of {} database systems share {} ({}): --keep-backups cannot tell \
             whose to keep, so nothing is removed; give each cluster its own archive, or use \
             --keep-from",
            systems.len(),
            archive.describe(),
            list.join("; ")
        ),
    ))
}

/// Where each timeline branched off its parent (parent, switch LSN), from the archive's
/// timeline history files. None when one cannot be read (encrypted, no key given).
fn branches(
    archive: &Archive,
    listing: &Listing,
    key: Option<&crate::object::SecretKey>,
) -> anyhow::Result<Option<Vec<(u32, u32, u64)>>> {
    let names: Vec<WalName> = listing
        .objects
        .iter()
        .filter(|e| e.name.kind == Kind::History)
        .map(|e| e.name.clone())
        .collect();
    let mut found = Vec::new();
    for (name, bytes) in names.iter().zip(archive.get_many(&names)?) {
        let Some(bytes) = bytes else { continue };
        let text = match crate::object::decode(name.as_str(), &bytes, key) {
            Ok((_, text)) => text,
            Err(crate::object::Corrupt::NeedKey(_)) => return Ok(None),
            Err(e) => {
                return Err(shared::err(
                    ErrorKind::DataErr,
                    format!(
                        "{name} in {}: {e} ('wal-ship verify' checks every object)",
                        archive.describe()
                    ),
                ))
            }
        };
        let text = String::from_utf8_lossy(&text);
        if let Ok(entries) = crate::verify::parse_history(name.tli, &text) {
            if let Some(&(parent, switch)) = entries.last() {
                found.push((name.tli, parent, switch));
            }
        }
    }
    Ok(Some(found))
}

/// The LSN a backup starts at, from its history file's name (`SEG.OFFSET.backup`).
fn start_lsn(b: &WalName, seg_size: u32) -> u64 {
    let offset = u64::from_str_radix(&b.as_str()[25..33], 16).unwrap_or(0);
    b.segno(seg_size) * u64::from(seg_size) + offset
}

/// The backups to keep for --keep-backups `n`: the `n` newest, and where a timeline went on
/// after another branched from it and was backed up since (a restored copy archiving into
/// the same archive, a failover whose old primary kept running), also the `n` newest of
/// those on each such timeline: ranking by timeline alone would take the later timeline's
/// backups for the newest and remove the live primary's (found by an audit). None with
/// fewer than `n` backups.
fn keep_set<'a>(
    known: &[&'a WalName],
    n: usize,
    divergent: impl Fn(&WalName) -> bool,
) -> Option<Vec<&'a WalName>> {
    let mut keep: Vec<&WalName> = known.get(known.len().checked_sub(n)?..)?.to_vec();
    let mut lines: std::collections::BTreeMap<u32, Vec<&WalName>> = Default::default();
    for b in known.iter().filter(|b| divergent(b)) {
        lines.entry(b.tli).or_default().push(b);
    }
    for bs in lines.values() {
        keep.extend(bs.iter().rev().take(n));
    }
    Some(keep)
}

/// For --keep-backups `n`: the segment to keep from and the backup history file whose start
/// it is, or None (with a `too_few_backups` note) when the archive knows fewer than `n`
/// backups. Refuses backups of two systems ([`one_system`]) and encrypted timeline history
/// without the key; notes backups on a timeline that went on after a branch
/// ([`keep_set`]).
fn backup_floor(
    archive: &Archive,
    listing: &Listing,
    known: &[&WalName],
    n: u32,
    key: &KeyArgs,
    out: &mut shared::Output,
) -> anyhow::Result<Option<(WalName, String)>> {
    let headers = start_headers(archive, known)?;
    one_system(archive, known, &headers)?;
    let seg_size = headers.iter().flatten().find_map(|h| h.seg_size);
    let forks = match (seg_size, known.len() > 1) {
        (Some(_), true) => branches(archive, listing, key.load()?.as_ref())?,
        _ => Some(Vec::new()),
    };
    let Some(forks) = forks else {
        return Err(shared::err(
            ErrorKind::Usage,
            format!(
                "the timeline history files in {} are encrypted: --keep-backups reads \
                 them to tell timelines that went on after a branch; give \
                 --encrypt-key-file",
                archive.describe()
            ),
        ));
    };
    let is_divergent = |b: &WalName| {
        seg_size.is_some_and(|size| {
            forks
                .iter()
                .any(|&(_, parent, switch)| b.tli == parent && start_lsn(b, size) > switch)
        })
    };
    let divergent: Vec<&str> = known
        .iter()
        .filter(|b| is_divergent(b))
        .map(|b| b.as_str())
        .collect();
    if !divergent.is_empty() {
        out.note(
            "divergent_timeline",
            &format!(
                "backups taken on a timeline after another timeline branched from it ({}): \
                 both lines go on in {}, so the newest backups of each are kept (a restored \
                 copy archiving here? give it an archive of its own)",
                divergent.join(", "),
                archive.describe()
            ),
        )?;
    }
    let oldest = keep_set(known, n as usize, is_divergent)
        .and_then(|k| k.into_iter().min_by(|x, y| x.position().cmp(y.position())));
    let Some(b) = oldest else {
        out.note(
            "too_few_backups",
            &format!(
                "{} base backup{} in {} (backup history files, *.backup) for \
                 --keep-backups {n}: nothing removed{}",
                known.len(),
                if known.len() == 1 { "" } else { "s" },
                archive.describe(),
                if known.is_empty() {
                    "; a backup history file is archived when a base backup ends \
                     (pg_basebackup, or pg_backup_stop) while archive_command pushes here"
                } else {
                    ""
                }
            ),
        )?;
        return Ok(None);
    };
    let seg = WalName::parse(b.segment_name().expect("a backup file names its segment"))?;
    Ok(Some((seg, b.as_str().to_owned())))
}

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let mut out = crate::output(a.quiet);
    let given = match &a.keep_from {
        Some(seg) => {
            // restore_command-style paths are fine too: only the name counts.
            let file = std::path::Path::new(seg)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or(seg);
            // A bad flag value is a usage error, whatever is wrong with it; a .partial or
            // .backup name stands for its segment.
            let usage = |why: String| shared::err(ErrorKind::Usage, format!("--keep-from: {why}"));
            let keep = WalName::parse(file).map_err(|e| usage(format!("{e:#}")))?;
            let Some(segment) = keep.segment_name() else {
                return Err(usage(format!("takes a segment name, not {keep}")));
            };
            Some(WalName::parse(segment)?)
        }
        None => None,
    };
    let archive = Archive::open(&a.archive, a.ssh.options()?)?;
    let listing = archive.list()?;
    let known = backups(&listing);
    let floor = match a.keep_backups {
        Some(n) => backup_floor(&archive, &listing, &known, n, &a.key, &mut out)?,
        None => None,
    };
    // With both, what either needs is kept: the older of the two starts.
    let (keep, keep_from_backup) = match floor {
        Some((seg, b))
            if given
                .as_ref()
                .is_none_or(|g| seg.position() <= g.position()) =>
        {
            (Some(seg), Some(b))
        }
        // --keep-backups with too few backups keeps everything, --keep-from or not.
        None if a.keep_backups.is_some() => (None, None),
        _ => (given, None),
    };
    let newest = listing
        .objects
        .iter()
        .filter(|e| e.name.kind == Kind::Segment)
        .map(|e| &e.name)
        .max_by(|x, y| x.position().cmp(y.position()));
    // Alone, a --keep-from past every segment is far more often a typo than a wish; beside
    // --keep-backups the backups decide how far clean goes.
    if let (Some(keep), Some(newest)) = (&keep, newest) {
        if keep.position() > newest.position()
            && !a.force
            && (a.keep_backups.is_none() || keep_from_backup.is_some())
        {
            let what = match &keep_from_backup {
                Some(b) => format!(
                    "the backup {b} starts in {keep}, which is newer than every segment in \
                     {} (the newest is at {newest}): archiving is behind; run again once it \
                     has caught up",
                    archive.describe()
                ),
                None => format!(
                    "--keep-from {keep} is newer than every segment in {} (the newest is at \
                     {newest}): that would remove them all; check the name, or pass --force",
                    archive.describe()
                ),
            };
            let kind = if keep_from_backup.is_some() {
                ErrorKind::Retry
            } else {
                ErrorKind::DataErr
            };
            return Err(shared::err(kind, what));
        }
    }
    let mut rels = Vec::new();
    let mut records = Vec::new();
    let mut freed = 0;
    let before = |n: &WalName| keep.as_ref().is_some_and(|k| n.position() < k.position());
    for e in &listing.objects {
        if e.name.kind != Kind::History && before(&e.name) {
            rels.push(e.rel.clone());
            freed += e.size;
            records.push(Removed {
                name: e.name.to_string(),
                kind: e.name.kind.as_str(),
                stored_bytes: e.size,
                dry_run: a.dry_run,
            });
        }
    }
    let removed = rels.len();
    let mut temps = 0;
    for t in listing.temps.iter().filter(|t| t.age > TEMP_AGE) {
        rels.push(t.rel.clone());
        freed += t.size;
        temps += 1;
        records.push(Removed {
            name: t.rel.clone(),
            kind: "temp",
            stored_bytes: t.size,
            dry_run: a.dry_run,
        });
    }
    // A `removed` record says it is gone: written once the removal succeeded (it stops at
    // the first file it cannot remove; the error names it).
    if !a.dry_run {
        archive.remove(&rels).map_err(|e| {
            e.context(format!(
                "removing {} file(s) older than {} (those listed before it may be gone \
                 already; run clean again once this is fixed)",
                rels.len(),
                keep.as_ref().map_or("-", WalName::as_str)
            ))
        })?;
    }
    for r in &records {
        out.emit(r)?;
    }
    out.finish(&serde_json::json!({
        "keep_from": keep.as_ref().map(WalName::as_str),
        "keep_backups": a.keep_backups,
        "backups": known.len(),
        "keep_from_backup": keep_from_backup,
        "removed": removed,
        "temp_files_removed": temps,
        "freed_bytes": freed,
        "kept": listing.objects.len() - removed,
        "dry_run": a.dry_run,
    }))
}
