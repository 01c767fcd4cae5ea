//! `wal-ship clean --archive DEST --keep-from SEG`: retention, and `archive_cleanup_command`.
//!
//! Removes every segment, `.partial` and `.backup` file whose position (log id and segment,
//! whatever the timeline: `pg_archivecleanup`'s rule, so `%r` works) is before `SEG`, and
//! temp files that pushes left behind more than an hour ago. Timeline history files are
//! never removed: they are tiny and recovery needs them to choose a timeline.
//!
//! A `--keep-from` newer than every segment in the archive would empty it; that is refused
//! (exit 65) unless `--force`, since it is far more often a typo than a wish.

use std::time::Duration;

use serde::Serialize;
use shared::{ErrorKind, Status};

use crate::archive::Archive;
use crate::name::{Kind, WalName};
use crate::SshArgs;

/// `wal-ship clean`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    archive: String,
    /// Keep this segment and everything after it (%r in archive_cleanup_command).
    #[arg(long, value_name = "SEG")]
    keep_from: String,
    /// Only report what would be removed.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Remove even when --keep-from is newer than every segment in the archive.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    ssh: SshArgs,
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

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let mut out = crate::output(a.quiet);
    let archive = Archive::open(&a.archive, a.ssh.options()?)?;
    let keep = WalName::parse(
        // restore_command-style paths are fine too: only the name counts.
        std::path::Path::new(&a.keep_from)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or(&a.keep_from),
    )?;
    if keep.kind == Kind::History {
        return Err(shared::err(
            ErrorKind::Usage,
            format!("--keep-from takes a segment name, not {keep}"),
        ));
    }
    let listing = archive.list()?;
    let newest = listing
        .objects
        .iter()
        .filter(|e| e.name.kind == Kind::Segment)
        .map(|e| e.name.position())
        .max();
    if let Some(newest) = newest {
        if keep.position() > newest && !a.force {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "--keep-from {keep} is newer than every segment in {} (the newest is at \
                     {newest}): that would remove them all; check the name, or pass --force",
                    archive.describe()
                ),
            ));
        }
    }
    let mut rels = Vec::new();
    let mut freed = 0;
    for e in &listing.objects {
        if e.name.kind != Kind::History && e.name.position() < keep.position() {
            rels.push(e.rel.clone());
            freed += e.size;
            out.emit(&Removed {
                name: e.name.to_string(),
                kind: e.name.kind.as_str(),
                stored_bytes: e.size,
                dry_run: a.dry_run,
            })?;
        }
    }
    let removed = rels.len();
    let mut temps = 0;
    for t in listing.temps.iter().filter(|t| t.age > TEMP_AGE) {
        rels.push(t.rel.clone());
        freed += t.size;
        temps += 1;
        out.emit(&Removed {
            name: t.rel.clone(),
            kind: "temp",
            stored_bytes: t.size,
            dry_run: a.dry_run,
        })?;
    }
    if !a.dry_run {
        archive.remove(&rels)?;
    }
    out.finish(&serde_json::json!({
        "keep_from": keep.as_str(),
        "removed": removed,
        "temp_files_removed": temps,
        "freed_bytes": freed,
        "kept": listing.objects.len() - removed,
        "dry_run": a.dry_run,
    }))
}
