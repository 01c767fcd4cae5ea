//! The first page header of a WAL segment, and the checks a segment must pass before it is
//! archived or restored.
//!
//! Every segment starts with an `XLogLongPageHeaderData` (`access/xlog_internal.h`):
//!
//! ```text
//! offset  0  u16  xlp_magic        (0xD110 for PostgreSQL 15; changes with each major version)
//! offset  2  u16  xlp_info         (XLP_LONG_HEADER = 0x0002 on the first page)
//! offset  4  u32  xlp_tli
//! offset  8  u64  xlp_pageaddr     (LSN of the page: segno * segment size)
//! offset 16  u32  xlp_rem_len
//! offset 24  u64  xlp_sysid        (the cluster's system identifier)
//! offset 32  u32  xlp_seg_size
//! offset 36  u32  xlp_xlog_blcksz
//! ```
//!
//! in the server's byte order (little-endian on every platform we run on). The segment size
//! comes from here, so `wal-ship` needs no `--wal-segsize` flag, and `xlp_pageaddr` proves the
//! bytes belong under the file's name: a renamed or recycled file is caught before it poisons
//! the archive.

use shared::ErrorKind;

use crate::name::{Kind, WalName};

/// The size of the long page header.
pub const LONG_HEADER_LEN: usize = 40;
const XLP_LONG_HEADER: u16 = 0x0002;

/// What the first page header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    /// Version-specific magic number.
    pub magic: u16,
    /// Timeline of the first page.
    pub tli: u32,
    /// LSN of the first page.
    pub pageaddr: u64,
    /// The cluster's system identifier.
    pub system_id: u64,
    /// Segment size in bytes.
    pub seg_size: u32,
    /// WAL block size.
    pub block_size: u32,
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn data_err(msg: String) -> anyhow::Error {
    shared::err(ErrorKind::DataErr, msg)
}

/// Read the long header at the start of `bytes`, checking that it is one.
pub fn long_header(name: &str, bytes: &[u8]) -> anyhow::Result<LongHeader> {
    if bytes.len() < LONG_HEADER_LEN {
        return Err(data_err(format!(
            "{name} is {} bytes, too short to be a WAL segment (truncated?)",
            bytes.len()
        )));
    }
    let info = u16le(bytes, 2);
    if info & XLP_LONG_HEADER == 0 {
        return Err(data_err(format!(
            "{name} does not start with a WAL long page header (xlp_info {info:#06x}): not a WAL \
             segment, or overwritten"
        )));
    }
    let h = LongHeader {
        magic: u16le(bytes, 0),
        tli: u32le(bytes, 4),
        pageaddr: u64le(bytes, 8),
        system_id: u64le(bytes, 24),
        seg_size: u32le(bytes, 32),
        block_size: u32le(bytes, 36),
    };
    let valid_seg = h.seg_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&h.seg_size);
    let valid_block = h.block_size.is_power_of_two() && (1 << 10..=1 << 16).contains(&h.block_size);
    if !valid_seg || !valid_block {
        return Err(data_err(format!(
            "{name}'s page header says segment size {} and block size {}: not a WAL segment \
             (PostgreSQL uses powers of two, 1 MiB to 1 GiB and 1 to 64 KiB)",
            h.seg_size, h.block_size
        )));
    }
    Ok(h)
}

/// The LSN of `pos` in PostgreSQL's `X/X` notation.
pub fn lsn(pos: u64) -> String {
    format!("{:X}/{:X}", pos >> 32, pos & 0xFFFF_FFFF)
}

/// Check that `bytes` is a complete segment that belongs under `name` (a segment or a
/// `.partial`), and return its header. Other kinds pass unchecked (`None`).
pub fn check(name: &WalName, bytes: &[u8]) -> anyhow::Result<Option<LongHeader>> {
    if !name.kind.is_segment_data() {
        if name.kind == Kind::History && std::str::from_utf8(bytes).is_err() {
            return Err(data_err(format!(
                "{name} is not text: a timeline history file holds lines of \
                 'timeline<TAB>LSN<TAB>reason'"
            )));
        }
        return Ok(None);
    }
    check_segment(name, bytes, bytes.len() as u64).map(Some)
}

/// [`check`] for a segment of `len` bytes of which only the start, `head` (at least the
/// page header), is at hand.
pub fn check_segment(name: &WalName, head: &[u8], len: u64) -> anyhow::Result<LongHeader> {
    let h = long_header(name.as_str(), &head[..head.len().min(len as usize)])?;
    if len != u64::from(h.seg_size) {
        return Err(data_err(format!(
            "{name} is {len} bytes but its header says segments are {} bytes: a truncated or \
             half-copied file (PostgreSQL only archives complete segments)",
            h.seg_size
        )));
    }
    if u64::from(name.seg) >= crate::name::segments_per_log_id(h.seg_size) {
        return Err(data_err(format!(
            "{name} names segment {:#X} of its log id, but with {} MiB segments a log id has \
             only {} segments",
            name.seg,
            h.seg_size >> 20,
            crate::name::segments_per_log_id(h.seg_size)
        )));
    }
    let expected = name.segno(h.seg_size) * u64::from(h.seg_size);
    if h.pageaddr != expected {
        return Err(data_err(format!(
            "{name} holds WAL from {} but its name says {}: the file is not this segment \
             (renamed or recycled?)",
            lsn(h.pageaddr),
            lsn(expected)
        )));
    }
    Ok(h)
}

/// A synthetic segment for tests and benchmarks: a valid long page header, then `fill`.
pub fn synthetic(name: &WalName, seg_size: u32, system_id: u64, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; seg_size as usize];
    b[..LONG_HEADER_LEN].fill(0);
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&(XLP_LONG_HEADER | 0x0004).to_le_bytes());
    b[4..8].copy_from_slice(&name.tli.to_le_bytes());
    let addr = name.segno(seg_size) * u64::from(seg_size);
    b[8..16].copy_from_slice(&addr.to_le_bytes());
    b[24..32].copy_from_slice(&system_id.to_le_bytes());
    b[32..36].copy_from_slice(&seg_size.to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1 << 20;

    #[test]
    fn a_good_segment_passes_and_reports_its_header() {
        let n = WalName::parse("000000010000000200000003").unwrap();
        let seg = synthetic(&n, MIB, 42, 7);
        let h = check(&n, &seg).unwrap().unwrap();
        assert_eq!(h.seg_size, MIB);
        assert_eq!(h.system_id, 42);
        assert_eq!(h.pageaddr, (2 * 4096 + 3) * u64::from(MIB));
    }

    #[test]
    fn truncated_wrong_size_and_wrong_name_are_data_errors() {
        let n = WalName::parse("000000010000000000000003").unwrap();
        let seg = synthetic(&n, MIB, 1, 0);
        let msg = |r: anyhow::Result<Option<LongHeader>>| {
            let e = r.unwrap_err();
            assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr);
            format!("{e:#}")
        };
        assert!(msg(check(&n, &seg[..10])).contains("too short"));
        assert!(msg(check(&n, &seg[..MIB as usize / 2])).contains("truncated or half-copied"));
        let other = WalName::parse("000000010000000000000004").unwrap();
        assert!(msg(check(&other, &seg)).contains("holds WAL from 0/300000"));
        assert!(msg(check(&n, &vec![0u8; MIB as usize])).contains("long page header"));
        let mut odd = seg.clone();
        odd[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert!(msg(check(&n, &odd)).contains("not a WAL segment"));
        let beyond = WalName::parse("000000010000000000001000").unwrap();
        let seg = synthetic(&beyond, MIB, 1, 0);
        assert!(msg(check(&beyond, &seg)).contains("only 4096 segments"));
    }

    #[test]
    fn history_and_backup_files_are_not_segments() {
        let h = WalName::parse("00000002.history").unwrap();
        assert_eq!(
            check(&h, b"1\t0/3000000\tno recovery target specified\n").unwrap(),
            None
        );
        assert!(check(&h, &[0xff, 0xfe]).is_err());
        let b = WalName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(check(&b, b"START WAL LOCATION: 0/2000028\n").unwrap(), None);
    }
}
