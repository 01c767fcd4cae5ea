//! WAL file names as PostgreSQL writes them, and the order the archive keeps them in.
//!
//! PostgreSQL archives four kinds of file (see `xlog_internal.h`: `IsXLogFileName`,
//! `IsPartialXLogFileName`, `IsBackupHistoryFileName`, `IsTLHistoryFileName`):
//!
//! | kind | example |
//! |---|---|
//! | segment | `000000010000000000000003` (timeline, log id, segment: 8 upper-case hex digits each) |
//! | partial segment | `000000010000000000000003.partial` (last segment of a timeline at promotion) |
//! | backup history | `000000010000000000000003.00000028.backup` (written by `pg_backup_stop`) |
//! | timeline history | `00000002.history` |
//!
//! Anything else is refused before it reaches the archive: a name is the only key the archive
//! has, so a file under a wrong name would be restored in the wrong place.

use std::cmp::Ordering;
use std::fmt;

use shared::ErrorKind;

/// What kind of WAL file a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A complete segment.
    Segment,
    /// `NAME.partial`: the last, incomplete segment of a timeline (after a promotion).
    Partial,
    /// `NAME.XXXXXXXX.backup`: a backup history file.
    Backup,
    /// `TTTTTTTT.history`: a timeline history file.
    History,
}

impl Kind {
    /// The lower-case name used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Segment => "segment",
            Kind::Partial => "partial",
            Kind::Backup => "backup",
            Kind::History => "history",
        }
    }

    /// True for the kinds whose bytes are a (possibly partial) WAL segment.
    pub fn is_segment_data(self) -> bool {
        matches!(self, Kind::Segment | Kind::Partial)
    }
}

/// A parsed WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalName {
    /// Timeline id.
    pub tli: u32,
    /// Log id (the high 32 bits of the segment's start LSN). 0 for history files.
    pub log: u32,
    /// Segment within the log id. 0 for history files.
    pub seg: u32,
    /// What kind of file.
    pub kind: Kind,
    name: String,
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn hex32(s: &str) -> u32 {
    u32::from_str_radix(s, 16).expect("checked to be 8 hex digits")
}

/// Bytes per log id: the high 32 bits of an LSN count these.
pub const LOG_ID_BYTES: u64 = 0x1_0000_0000;

impl WalName {
    /// Parse a file name (not a path). The error says what a WAL file name looks like.
    pub fn parse(name: &str) -> anyhow::Result<WalName> {
        WalName::try_parse(name).ok_or_else(|| {
            shared::err(
                ErrorKind::DataErr,
                format!(
                    "'{name}' is not a WAL file name: expected 24 upper-case hex digits \
                     (000000010000000000000001), optionally followed by .partial or \
                     .XXXXXXXX.backup, or a timeline history file XXXXXXXX.history"
                ),
            )
        })
    }

    /// Parse, or `None` when `name` is not a WAL file name.
    pub fn try_parse(name: &str) -> Option<WalName> {
        let bytes = name.as_bytes();
        if bytes.len() == 16 && name.ends_with(".history") && is_upper_hex(&name[..8]) {
            return Some(WalName {
                tli: hex32(&name[..8]),
                log: 0,
                seg: 0,
                kind: Kind::History,
                name: name.to_owned(),
            });
        }
        if bytes.len() < 24 || !name.is_char_boundary(24) || !is_upper_hex(&name[..24]) {
            return None;
        }
        let kind = match &name[24..] {
            "" => Kind::Segment,
            ".partial" => Kind::Partial,
            rest if rest.len() == 16
                && rest.starts_with('.')
                && rest.ends_with(".backup")
                && is_upper_hex(&rest[1..9]) =>
            {
                Kind::Backup
            }
            _ => return None,
        };
        Some(WalName {
            tli: hex32(&name[..8]),
            log: hex32(&name[8..16]),
            seg: hex32(&name[16..24]),
            kind,
            name: name.to_owned(),
        })
    }

    /// The segment file name for a timeline and segment number.
    pub fn segment(tli: u32, segno: u64, seg_size: u32) -> WalName {
        let per_id = segments_per_log_id(seg_size);
        let log = (segno / per_id) as u32;
        let seg = (segno % per_id) as u32;
        WalName {
            tli,
            log,
            seg,
            kind: Kind::Segment,
            name: format!("{tli:08X}{log:08X}{seg:08X}"),
        }
    }

    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The segment number (position in the WAL stream, timeline aside) for a segment size.
    pub fn segno(&self, seg_size: u32) -> u64 {
        u64::from(self.log) * segments_per_log_id(seg_size) + u64::from(self.seg)
    }

    /// The 16 hex digits of log id and segment: the position that `archive_cleanup_command`
    /// compares (`pg_archivecleanup` ignores the timeline too). Empty for history files.
    pub fn position(&self) -> &str {
        if self.kind == Kind::History {
            ""
        } else {
            &self.name[8..24]
        }
    }

    /// The segment this file belongs to (`NAME` of `NAME.partial`, `NAME.X.backup`).
    pub fn segment_name(&self) -> Option<&str> {
        (self.kind != Kind::History).then(|| &self.name[..24])
    }

    /// The archive subdirectory: the first 16 hex digits (timeline and log id), like
    /// pgBackRest, so no directory grows beyond a few hundred files; `history` for timeline
    /// history files.
    pub fn dir(&self) -> &str {
        if self.kind == Kind::History {
            "history"
        } else {
            &self.name[..16]
        }
    }

    /// The next segment on the same timeline.
    pub fn next_segment(&self, seg_size: u32) -> WalName {
        WalName::segment(self.tli, self.segno(seg_size) + 1, seg_size)
    }
}

/// How many segments one log id holds.
pub fn segments_per_log_id(seg_size: u32) -> u64 {
    LOG_ID_BYTES / u64::from(seg_size.max(1))
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The order PostgreSQL's archiver ships files in: timeline history files first (a new
/// timeline's history must be archived before its segments), then by name.
impl Ord for WalName {
    fn cmp(&self, other: &Self) -> Ordering {
        let rank = |n: &WalName| u8::from(n.kind != Kind::History);
        rank(self)
            .cmp(&rank(other))
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for WalName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let s = WalName::parse("0000000200000001000000FE").unwrap();
        assert_eq!((s.tli, s.log, s.seg, s.kind), (2, 1, 0xFE, Kind::Segment));
        assert_eq!(s.dir(), "0000000200000001");
        assert_eq!(s.position(), "00000001000000FE");
        let p = WalName::parse("000000010000000000000003.partial").unwrap();
        assert_eq!(p.kind, Kind::Partial);
        assert_eq!(p.segment_name(), Some("000000010000000000000003"));
        let b = WalName::parse("000000010000000000000003.00000028.backup").unwrap();
        assert_eq!(b.kind, Kind::Backup);
        let h = WalName::parse("0000000A.history").unwrap();
        assert_eq!((h.tli, h.kind, h.dir()), (10, Kind::History, "history"));
    }

    #[test]
    fn refuses_what_postgres_would_not_write() {
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "000000010000000000000001.gz",
            "000000010000000000000001.partial.x",
            "00000001000000000000000a",
            "000000010000000000000001.0000002g.backup",
            "0000001.history",
            "RECOVERYXLOG",
            "archive_status",
            "ééééééééééééééééééééééééé",
        ] {
            let e = WalName::parse(bad).unwrap_err();
            assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr, "{bad}");
            assert!(format!("{e:#}").contains("is not a WAL file name"), "{bad}");
        }
    }

    #[test]
    fn segment_numbers_wrap_log_ids_by_segment_size() {
        let mib16 = 16 * 1024 * 1024;
        let n = WalName::parse("0000000100000000000000FF").unwrap();
        assert_eq!(n.segno(mib16), 255);
        assert_eq!(n.next_segment(mib16).as_str(), "000000010000000100000000");
        let one_gib = 1024 * 1024 * 1024;
        let n = WalName::parse("000000030000000500000003").unwrap();
        assert_eq!(n.segno(one_gib), 5 * 4 + 3);
        assert_eq!(n.next_segment(one_gib).as_str(), "000000030000000600000000");
        assert_eq!(WalName::segment(3, 23, one_gib), n);
        assert_eq!(WalName::segment(3, 24, one_gib), n.next_segment(one_gib));
    }

    #[test]
    fn history_files_sort_first() {
        let mut v: Vec<WalName> = [
            "000000020000000000000001",
            "00000002.history",
            "000000010000000000000002.partial",
            "000000010000000000000002",
        ]
        .iter()
        .map(|s| WalName::parse(s).unwrap())
        .collect();
        v.sort();
        let names: Vec<&str> = v.iter().map(WalName::as_str).collect();
        assert_eq!(
            names,
            [
                "00000002.history",
                "000000010000000000000002",
                "000000010000000000000002.partial",
                "000000020000000000000001"
            ]
        );
    }
}
