//! CRIU's own timings and page counts: the `stats-dump` and `stats-restore` images.
//!
//! After each (pre-)dump CRIU writes `stats-dump` into the images directory: a service image
//! (magic `0x55105940`, then `0x57093306`), then one length-prefixed protobuf `StatsEntry`
//! (`images/stats.proto`). P.Haul decides its pre-copy rounds from `pages_written`, and the
//! frozen time of a dump is `frozen_time`. Decoding the few varint fields needed here is
//! simpler than depending on a protobuf crate; when the file is missing (an older CRIU, a
//! fake one), callers fall back to the size of the `pages-*.img` files.

use std::path::Path;

/// `IMG_SERVICE_MAGIC` (criu/include/magic.h).
const SERVICE_MAGIC: u32 = 0x5510_5940;
/// `STATS_MAGIC`.
const STATS_MAGIC: u32 = 0x5709_3306;

/// The dump half of `StatsEntry` (times in microseconds).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DumpStats {
    /// Time to freeze the tree.
    pub freezing_time_us: u64,
    /// Time the tree was frozen (the process's downtime in a dump that leaves it running or
    /// kills it at the end).
    pub frozen_time_us: u64,
    /// Time to collect memory.
    pub memdump_time_us: u64,
    /// Time to write memory.
    pub memwrite_time_us: u64,
    /// Pages looked at.
    pub pages_scanned: u64,
    /// Pages not written because the parent round holds them unchanged.
    pub pages_skipped_parent: u64,
    /// Pages written by this round.
    pub pages_written: u64,
    /// Shared-memory pages written by this round (PostgreSQL's shared_buffers live there).
    pub shpages_written: u64,
}

/// The restore half of `StatsEntry`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreStats {
    /// Time to fork the tree.
    pub forking_time_us: u64,
    /// Time the whole restore took.
    pub restore_time_us: u64,
    /// Pages restored.
    pub pages_restored: u64,
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The varint fields of one message: (field number, value); other wire types are skipped.
fn fields(b: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        match key & 7 {
            0 => out.push((key >> 3, varint(b, &mut at)?)),
            1 => at += 8,
            2 => {
                let len = usize::try_from(varint(b, &mut at)?).ok()?;
                out.push((key >> 3, at as u64));
                at = at.checked_add(len)?;
                if at > b.len() {
                    return None;
                }
            }
            5 => at += 4,
            _ => return None,
        }
    }
    Some(out)
}

/// The sub-message `field` (length-delimited) of the `StatsEntry` in a stats image.
fn entry_field(image: &[u8], field: u64) -> Option<&[u8]> {
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(image.get(i..i + 4)?.try_into().ok()?))
    };
    if u32_at(0)? != SERVICE_MAGIC || u32_at(4)? != STATS_MAGIC {
        return None;
    }
    let len = u32_at(8)? as usize;
    let entry = image.get(12..12 + len)?;
    let mut at = 0;
    while at < entry.len() {
        let key = varint(entry, &mut at)?;
        match key & 7 {
            0 => {
                varint(entry, &mut at)?;
            }
            2 => {
                let l = usize::try_from(varint(entry, &mut at)?).ok()?;
                let body = entry.get(at..at + l)?;
                if key >> 3 == field {
                    return Some(body);
                }
                at += l;
            }
            1 => at += 8,
            5 => at += 4,
            _ => return None,
        }
    }
    None
}

/// Decode a `stats-dump` image.
pub fn parse_dump(image: &[u8]) -> Option<DumpStats> {
    let body = entry_field(image, 1)?;
    let mut s = DumpStats::default();
    for (f, v) in fields(body)? {
        match f {
            1 => s.freezing_time_us = v,
            2 => s.frozen_time_us = v,
            3 => s.memdump_time_us = v,
            4 => s.memwrite_time_us = v,
            5 => s.pages_scanned = v,
            6 => s.pages_skipped_parent = v,
            7 => s.pages_written = v,
            14 => s.shpages_written = v,
            _ => {}
        }
    }
    Some(s)
}

/// Decode a `stats-restore` image.
pub fn parse_restore(image: &[u8]) -> Option<RestoreStats> {
    let body = entry_field(image, 2)?;
    let mut s = RestoreStats::default();
    for (f, v) in fields(body)? {
        match f {
            3 => s.forking_time_us = v,
            4 => s.restore_time_us = v,
            5 => s.pages_restored = v,
            _ => {}
        }
    }
    Some(s)
}

/// `DIR/stats-dump`, if present and readable.
pub fn read_dump(dir: &Path) -> Option<DumpStats> {
    parse_dump(&std::fs::read(dir.join("stats-dump")).ok()?)
}

/// `DIR/stats-restore`, if present and readable.
pub fn read_restore(dir: &Path) -> Option<RestoreStats> {
    parse_restore(&std::fs::read(dir.join("stats-restore")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `stats-dump` from CRIU 3.17.1 (first pre-dump round of a shell loop).
    const PRE_DUMP: [u8; 48] = [
        0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x24, 0x00, 0x00, 0x00, 0x0a, 0x22, 0x08,
        0xe1, 0x3a, 0x10, 0xcf, 0xc5, 0x03, 0x18, 0xab, 0x2f, 0x20, 0xaa, 0x25, 0x28, 0xea, 0x08,
        0x30, 0x00, 0x38, 0x22, 0x40, 0x00, 0x48, 0x00, 0x50, 0x02, 0x58, 0x06, 0x60, 0x00, 0x68,
        0x00, 0x70, 0x00,
    ];

    /// A real `stats-restore` from the same CRIU.
    const RESTORE: [u8; 27] = [
        0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x0f, 0x00, 0x00, 0x00, 0x12, 0x0d, 0x08,
        0x09, 0x10, 0x02, 0x18, 0x8c, 0x10, 0x20, 0xd3, 0x97, 0x04, 0x28, 0x1f,
    ];

    #[test]
    fn real_dump_stats() {
        let s = parse_dump(&PRE_DUMP).unwrap();
        assert_eq!(s.freezing_time_us, 7521); // varint e1 3a
        assert_eq!(s.frozen_time_us, 58063); // varint cf c5 03
        assert_eq!(s.pages_scanned, 1130);
        assert_eq!(s.pages_skipped_parent, 0);
        assert_eq!(s.pages_written, 34);
    }

    #[test]
    fn real_restore_stats() {
        let s = parse_restore(&RESTORE).unwrap();
        assert_eq!(s.forking_time_us, 2060);
        assert_eq!(s.restore_time_us, 68563);
        assert_eq!(s.pages_restored, 31);
        assert!(
            parse_dump(&RESTORE).is_none(),
            "no dump half in a restore image"
        );
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert!(parse_dump(&[]).is_none());
        assert!(parse_dump(&PRE_DUMP[..20]).is_none());
        let mut bad = PRE_DUMP;
        bad[0] = 0;
        assert!(parse_dump(&bad).is_none());
        let mut long = PRE_DUMP;
        long[8] = 0xff; // length beyond the file
        assert!(parse_dump(&long).is_none());
    }
}
