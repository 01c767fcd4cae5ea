//! `wal-ship status --dsn DSN --archive DEST`: how far behind is archiving, and is it failing?
//!
//! The server's view (`pg_stat_archiver`, the current WAL file, `.ready` files) next to the
//! archive's (its newest segment). Lag is measured against the archive, not against what the
//! server believes it archived: the archive is what a restore will have. Exit 1 when
//! archiving is failing (the last failure is newer than the last success), so that
//! `wal-ship status ... || alert` works from cron.

use serde::Serialize;
use shared::{ErrorKind, ResultExt, Status};

use crate::archive::Archive;
use crate::name::{Kind, WalName};
use crate::segment::lsn;
use crate::SshArgs;

/// `wal-ship status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server: a libpq conninfo string or URL (PG* variables and ~/.pgpass apply).
    #[arg(long, value_name = "DSN")]
    dsn: String,
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    archive: String,
    #[command(flatten)]
    ssh: SshArgs,
}

#[derive(Debug, Serialize)]
struct StatusRecord {
    dsn: String,
    archive: String,
    in_recovery: bool,
    archive_mode: String,
    wal_segment_size: u32,
    current_wal: String,
    current_lsn: String,
    archived_count: i64,
    last_archived_wal: Option<String>,
    last_archived_time: Option<String>,
    failed_count: i64,
    last_failed_wal: Option<String>,
    last_failed_time: Option<String>,
    failing: bool,
    ready_files: Option<i64>,
    archive_last_segment: Option<String>,
    archive_objects: Option<usize>,
    archive_stored_bytes: Option<u64>,
    lag_segments: Option<u64>,
    lag_bytes: Option<u64>,
    lag_seconds: Option<u64>,
}

impl shared::Record for StatusRecord {
    const TYPE: &'static str = "status";
}

const SQL: &str = r#"
SELECT a.archived_count, a.last_archived_wal,
       to_char(a.last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       a.failed_count, a.last_failed_wal,
       to_char(a.last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       coalesce(a.last_failed_time > a.last_archived_time,
                a.last_failed_time IS NOT NULL),
       greatest(extract(epoch FROM now() - a.last_archived_time), 0)::float8,
       pg_is_in_recovery(),
       current_setting('archive_mode'),
       (SELECT setting::int FROM pg_settings WHERE name = 'wal_segment_size'),
       (SELECT timeline_id FROM pg_control_checkpoint()),
       CASE WHEN pg_is_in_recovery()
            THEN coalesce(pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(), '0/0')
            ELSE pg_current_wal_lsn() END::text
FROM pg_stat_archiver a"#;

fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let archive = Archive::open(&a.archive, a.ssh.options()?)?;
    let info = shared::pg::ConnInfo::parse(&a.dsn)?;
    let mut client = info.connect()?;
    let row = client.query_one(SQL, &[]).kind_context(
        ErrorKind::Unavailable,
        format!("querying {}", info.describe()),
    )?;
    let seg_size = row.get::<_, i32>(10) as u32;
    let in_recovery: bool = row.get(8);
    let mut tli = row.get::<_, i32>(11) as u32;
    let current_lsn: String = row.get(12);
    if !in_recovery {
        // The checkpoint's timeline lags behind right after a promotion; the WAL file name
        // does not.
        if let Ok(r) = client.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[]) {
            if let Some(n) = WalName::try_parse(&r.get::<_, String>(0)) {
                tli = n.tli;
            }
        }
    }
    let ready_files = client
        .query_one(
            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
            &[],
        )
        .ok()
        .map(|r| r.get::<_, i64>(0));
    let pos = parse_lsn(&current_lsn).unwrap_or(0);
    let current = WalName::segment(tli, pos / u64::from(seg_size), seg_size);

    // The server's side is still worth reporting when the archive cannot be listed.
    let mut out = shared::Output::stdout();
    let listing = match archive.list() {
        Ok(l) => Some(l),
        Err(e) => {
            out.error(&e, serde_json::json!({"archive": archive.describe()}))?;
            None
        }
    };
    let objects = listing.as_ref().map_or(&[][..], |l| &l.objects[..]);
    let last = objects
        .iter()
        .filter(|e| e.name.kind == Kind::Segment && e.name.tli <= tli)
        .max_by_key(|e| (e.name.segno(seg_size), e.name.tli))
        .map(|e| e.name.clone());
    let end_of_last = last
        .as_ref()
        .map(|n| (n.segno(seg_size) + 1) * u64::from(seg_size));
    let lag_segments = last.as_ref().map(|n| {
        current
            .segno(seg_size)
            .saturating_sub(n.segno(seg_size) + 1)
    });
    let since_archived = row.get::<_, Option<f64>>(7).map(|s| s as u64);
    let failing: bool = row.get(6);
    let rec = StatusRecord {
        dsn: info.describe(),
        archive: archive.describe(),
        in_recovery,
        archive_mode: row.get(9),
        wal_segment_size: seg_size,
        current_wal: current.to_string(),
        current_lsn: lsn(pos),
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_time: row.get(2),
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        last_failed_time: row.get(5),
        failing,
        ready_files,
        archive_last_segment: last.as_ref().map(ToString::to_string),
        archive_objects: listing.as_ref().map(|_| objects.len()),
        archive_stored_bytes: listing
            .as_ref()
            .map(|_| objects.iter().map(|e| e.size).sum()),
        lag_segments,
        lag_bytes: end_of_last.map(|e| pos.saturating_sub(e)),
        lag_seconds: match lag_segments {
            Some(0) => Some(0),
            _ => since_archived,
        },
    };
    if failing {
        shared::warn!(
            "archiving is failing: {} failures, the last one for {} at {}",
            rec.failed_count,
            rec.last_failed_wal.as_deref().unwrap_or("?"),
            rec.last_failed_time.as_deref().unwrap_or("?")
        );
        out.mark_differences();
    }
    out.emit(&rec)?;
    out.finish(&serde_json::json!({"failing": failing, "lag_segments": lag_segments}))
}
