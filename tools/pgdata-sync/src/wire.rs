//! The stream from `send` to `apply`: a magic line, then frames, zstd-compressed as a whole.
//!
//! A frame is a tag byte and its fields (integers big-endian, strings and bytes with a `u32`
//! length). The stream is complete only with its `End` frame: `apply` reports a stream that
//! stops before it as cut short, whatever it has written.

use std::io::{self, Read, Write};

use shared::ErrorKind;

/// The first bytes of a stream (and its version).
pub const MAGIC: &[u8; 8] = b"PGDSYNC1";

/// The largest string or block a frame may carry (a sanity bound against a garbled stream).
const MAX_LEN: u32 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Make this directory (and its parents) with this mode.
    Dir { path: String, mode: u32 },
    /// The blocks that follow, up to `FileEnd`, belong to this file (made if missing).
    File { path: String, mode: u32 },
    /// Write `data` at `offset` of the current file.
    Block { offset: u64, data: Vec<u8> },
    /// The current file is complete at `size` bytes (longer is cut, then it is synced).
    FileEnd { size: u64 },
    /// Remove this file or directory (it is not on the source).
    Remove { path: String },
    /// How far the sender is (JSON: bytes_done, bytes_total, ...), now and then.
    Progress { stats: String },
    /// The end: the sender's counts, as a JSON object.
    End { stats: String },
}

fn put_str(w: &mut impl Write, s: &[u8]) -> io::Result<()> {
    w.write_all(&(s.len() as u32).to_be_bytes())?;
    w.write_all(s)
}

/// Write one frame.
pub fn write(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    match frame {
        Frame::Dir { path, mode } => {
            w.write_all(b"D")?;
            put_str(w, path.as_bytes())?;
            w.write_all(&mode.to_be_bytes())
        }
        Frame::File { path, mode } => {
            w.write_all(b"F")?;
            put_str(w, path.as_bytes())?;
            w.write_all(&mode.to_be_bytes())
        }
        Frame::Block { offset, data } => {
            w.write_all(b"B")?;
            w.write_all(&offset.to_be_bytes())?;
            put_str(w, data)
        }
        Frame::FileEnd { size } => {
            w.write_all(b"Z")?;
            w.write_all(&size.to_be_bytes())
        }
        Frame::Remove { path } => {
            w.write_all(b"R")?;
            put_str(w, path.as_bytes())
        }
        Frame::Progress { stats } => {
            w.write_all(b"P")?;
            put_str(w, stats.as_bytes())
        }
        Frame::End { stats } => {
            w.write_all(b"E")?;
            put_str(w, stats.as_bytes())
        }
    }
}

fn garbled(what: &str) -> anyhow::Error {
    shared::err(
        ErrorKind::DataErr,
        format!("the stream is garbled ({what}): it is not pgdata-sync send's output"),
    )
}

fn get_u32(r: &mut impl Read) -> anyhow::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn get_u64(r: &mut impl Read) -> anyhow::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn get_bytes(r: &mut impl Read) -> anyhow::Result<Vec<u8>> {
    let n = get_u32(r)?;
    if n > MAX_LEN {
        return Err(garbled("a length over 16 MiB"));
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_str(r: &mut impl Read) -> anyhow::Result<String> {
    String::from_utf8(get_bytes(r)?).map_err(|_| garbled("a name that is not UTF-8"))
}

/// Write the start of a stream: the magic bytes and the token of the sums it answers.
pub fn write_header(w: &mut impl Write, token: &str) -> io::Result<()> {
    w.write_all(MAGIC)?;
    put_str(w, token.as_bytes())
}

/// Read the start of a stream; returns the token of the sums it answers.
pub fn read_header(r: &mut impl Read) -> anyhow::Result<String> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(|_| cut_short())?;
    if &b != MAGIC {
        return Err(garbled("no PGDSYNC1 header"));
    }
    get_str(r).map_err(|_| cut_short())
}

/// The error for a stream that stops before its end.
pub fn cut_short() -> anyhow::Error {
    shared::err(
        ErrorKind::DataErr,
        "the stream stopped before its end (the sender failed: see its message); the copy is \
         partial: run the same command again",
    )
}

/// Read one frame; a stream that stops anywhere is [`cut_short`].
pub fn read(r: &mut impl Read) -> anyhow::Result<Frame> {
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag).map_err(|_| cut_short())?;
    let frame = (|| -> anyhow::Result<Frame> {
        Ok(match tag[0] {
            b'D' => Frame::Dir {
                path: get_str(r)?,
                mode: get_u32(r)?,
            },
            b'F' => Frame::File {
                path: get_str(r)?,
                mode: get_u32(r)?,
            },
            b'B' => Frame::Block {
                offset: get_u64(r)?,
                data: get_bytes(r)?,
            },
            b'Z' => Frame::FileEnd { size: get_u64(r)? },
            b'R' => Frame::Remove { path: get_str(r)? },
            b'P' => Frame::Progress { stats: get_str(r)? },
            b'E' => Frame::End { stats: get_str(r)? },
            other => return Err(garbled(&format!("an unknown frame {other:#04x}"))),
        })
    })();
    frame.map_err(|e| {
        if e.downcast_ref::<io::Error>().is_some() {
            cut_short()
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_cut_stream_says_so() {
        let frames = vec![
            Frame::Dir {
                path: "base/5".into(),
                mode: 0o700,
            },
            Frame::File {
                path: "base/5/1".into(),
                mode: 0o600,
            },
            Frame::Block {
                offset: 131072,
                data: vec![7; 100],
            },
            Frame::FileEnd { size: 131172 },
            Frame::Remove {
                path: "base/5/2".into(),
            },
            Frame::Progress {
                stats: r#"{"bytes_done":1}"#.into(),
            },
            Frame::End { stats: "{}".into() },
        ];
        let mut buf = Vec::new();
        for f in &frames {
            write(&mut buf, f).unwrap();
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(&read(&mut r).unwrap(), f);
        }
        // Cut anywhere inside: an error, never a frame made up.
        for cut in [1, 5, 20, buf.len() - 1] {
            let mut r = &buf[..cut];
            let mut n = 0;
            let err = loop {
                match read(&mut r) {
                    Ok(_) => n += 1,
                    Err(e) => break e,
                }
            };
            assert!(n < frames.len());
            assert!(
                format!("{err:#}").contains("stopped before its end"),
                "{err:#}"
            );
            assert_eq!(shared::exit::classify(&err), ErrorKind::DataErr);
        }
        let err = read(&mut &b"Qxxxx"[..]).unwrap_err();
        assert!(format!("{err:#}").contains("garbled"), "{err:#}");
    }
}
