//! The stored form of one WAL file: a JSON header line, then the payload.
//!
//! ```text
//! {"wal_ship":1,"name":"000000010000000000000003","size":16777216,"sha256":"9f2c…","compression":"zstd","level":3,"seg_size":16777216,"system_id":"7301…","pushed_at":"…"}\n
//! <payload: the original bytes, compressed, then encrypted when a key is given>
//! ```
//!
//! Why this shape:
//! - The checksum of the *original* bytes sits in the header, so a second push of the same
//!   file is recognised by reading one line (locally or with `head` over ssh), without
//!   decompressing, whatever compression either push used.
//! - One file per WAL file, under a name that does not depend on the compression, so the
//!   archive's no-clobber rename is the single arbiter of "this name is taken".
//! - The header is text: `head -1` tells a DBA what a file is.
//!
//! With `--encrypt-key-file` the payload is sealed with XChaCha20-Poly1305 (random 192-bit
//! nonce, the header line as associated data so it cannot be altered unnoticed), and the
//! header carries `keyed_sha256` (SHA-256 over a key-derived prefix and the original bytes)
//! instead of `sha256`, so the archive does not let anyone confirm a guess of the contents.
//! The key itself is never written anywhere; only an 8-byte key id derived from it.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{mpsc, Arc};

use anyhow::Context;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::ErrorKind;

/// The version of the stored format, the `wal_ship` field of every header.
pub const FORMAT: u32 = 1;
/// Headers are never longer than this; readers read this much to find the header line.
pub const MAX_HEADER: usize = 4096;
/// No WAL file is larger than this (the largest segment size).
pub const MAX_SIZE: u64 = 1 << 30;
/// The suffix of stored objects.
pub const SUFFIX: &str = ".ws";

/// Compression of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// zstd at a level (1..=22); 3 is zstd's and pgBackRest's default.
    Zstd(i32),
    /// lz4 block format with the size prepended (`lz4_flex`): fastest, compresses least.
    Lz4,
}

impl Compression {
    /// Parse `none`, `zstd`, `zstd:LEVEL` or `lz4` (a clap value parser).
    pub fn parse(s: &str) -> Result<Compression, String> {
        let bad =
            || format!("'{s}' is not a compression: use none, zstd, zstd:LEVEL (1 to 22) or lz4");
        match s.split_once(':') {
            None => match s {
                "none" => Ok(Compression::None),
                "zstd" | "zst" => Ok(Compression::Zstd(3)),
                "lz4" => Ok(Compression::Lz4),
                _ => Err(bad()),
            },
            Some(("zstd" | "zst", level)) => match level.parse::<i32>() {
                Ok(l) if (1..=22).contains(&l) => Ok(Compression::Zstd(l)),
                _ => Err(bad()),
            },
            Some(_) => Err(bad()),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd(_) => "zstd",
            Compression::Lz4 => "lz4",
        }
    }

    fn level(self) -> Option<i32> {
        match self {
            Compression::Zstd(l) => Some(l),
            _ => None,
        }
    }

    /// `zstd:3`, `lz4`, `none`: how records show it.
    pub fn describe(self) -> String {
        match self {
            Compression::Zstd(l) => format!("zstd:{l}"),
            other => other.kind().to_owned(),
        }
    }

    fn compress(self, data: &[u8]) -> anyhow::Result<std::borrow::Cow<'_, [u8]>> {
        Ok(match self {
            Compression::None => std::borrow::Cow::Borrowed(data),
            Compression::Zstd(level) => zstd::bulk::compress(data, level)
                .context("zstd compression failed (out of memory?)")?
                .into(),
            Compression::Lz4 => lz4_flex::compress_prepend_size(data).into(),
        })
    }
}

/// An encryption key read from `--encrypt-key-file`.
#[derive(Clone)]
pub struct SecretKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(id {})", self.id())
    }
}

impl SecretKey {
    /// Read a key file: 32 raw bytes, or 64 hex digits (a trailing newline is fine). Make one
    /// with `head -c 32 /dev/urandom > key` or `openssl rand -hex 32 > key`.
    pub fn from_file(path: &Path) -> anyhow::Result<SecretKey> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the encryption key file {}", path.display()))?;
        let key = match bytes.len() {
            32 => bytes.clone(),
            64..=66 => {
                let text = std::str::from_utf8(&bytes).unwrap_or("").trim_end();
                hex::decode(text).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let key: [u8; 32] = key.try_into().map_err(|_| {
            shared::err(
                ErrorKind::DataErr,
                format!(
                    "{} is not an encryption key: it must hold 32 random bytes or 64 hex digits \
                     (make one with: openssl rand -hex 32 > {0})",
                    path.display()
                ),
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.mode() & 0o077 != 0 {
                    shared::warn!(
                        "the encryption key file {} is readable by group or others (mode {:o}); \
                         chmod 600 it",
                        path.display(),
                        m.mode() & 0o777
                    );
                }
            }
        }
        Ok(SecretKey { key })
    }

    /// A key from bytes (tests).
    pub fn from_bytes(key: [u8; 32]) -> SecretKey {
        SecretKey { key }
    }

    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"wal-ship ");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(self.key);
        h.finalize().into()
    }

    /// The public id of the key: 8 bytes of a hash, enough to say "wrong key".
    pub fn id(&self) -> String {
        hex::encode(&self.derive("key id")[..8])
    }
}

/// The encryption part of a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The AEAD: `xchacha20poly1305`.
    pub alg: String,
    /// Which key (see [`SecretKey::id`]).
    pub key_id: String,
    /// The 24-byte nonce, hex.
    pub nonce: String,
}

/// The header line of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version ([`FORMAT`]).
    pub wal_ship: u32,
    /// The WAL file name.
    pub name: String,
    /// Size of the original bytes.
    pub size: u64,
    /// SHA-256 of the original bytes, hex (unencrypted objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Keyed SHA-256 of the original bytes, hex (encrypted objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyed_sha256: Option<String>,
    /// `none`, `zstd` or `lz4`.
    pub compression: String,
    /// The zstd level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    /// Segment size from the page header (segments and partial segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seg_size: Option<u32>,
    /// System identifier from the page header, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// Present when the payload is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Size of the stored payload (after the header line): a truncated object is caught
    /// from its size alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// When it was pushed (RFC 3339, UTC).
    pub pushed_at: String,
}

/// The checksum recorded for `data`: plain, or keyed when a key is given.
pub fn checksum(data: &[u8], key: Option<&SecretKey>) -> String {
    let mut h = Sha256::new();
    if let Some(k) = key {
        h.update(k.derive("checksum"));
    }
    h.update(data);
    hex::encode(h.finalize())
}

/// What [`encode`] needs besides the bytes.
#[derive(Debug, Clone)]
pub struct EncodeOptions<'a> {
    /// Payload compression.
    pub compression: Compression,
    /// Encrypt with this key.
    pub key: Option<&'a SecretKey>,
}

/// An encoded object: the header, and what goes into the archive in two parts (the header
/// line and the payload), written one after the other so that a 16 MiB payload is not copied
/// once more just to put a line in front of it.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The header.
    pub header: Header,
    /// The header line, newline included.
    pub line: Vec<u8>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Encoded {
    /// The stored object in parts, in order.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.line, &self.payload]
    }

    /// Its size.
    pub fn len(&self) -> usize {
        self.line.len() + self.payload.len()
    }

    /// Never empty (the header line is there); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The stored object in one buffer (tests, small objects).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.parts().concat()
    }

    /// The checksum field that identifies the content.
    pub fn checksum(&self) -> &str {
        self.header.checksum().unwrap_or_default()
    }
}

impl Header {
    /// The checksum, whichever kind.
    pub fn checksum(&self) -> Option<&str> {
        self.sha256.as_deref().or(self.keyed_sha256.as_deref())
    }

    /// Do two headers prove the same content? `None` when they cannot tell (one encrypted,
    /// the other not, or different keys): the caller must then decode and compare.
    pub fn same_content(&self, other: &Header) -> Option<bool> {
        if self.size != other.size {
            return Some(false);
        }
        match (&self.sha256, &other.sha256) {
            (Some(a), Some(b)) => return Some(a == b),
            (None, None) => {}
            _ => return None,
        }
        let key = |h: &Header| h.encryption.as_ref().map(|e| e.key_id.clone());
        if key(self) == key(other) {
            Some(self.keyed_sha256 == other.keyed_sha256)
        } else {
            None
        }
    }
}

/// Compress (and encrypt), hashing on a second thread meanwhile.
pub fn encode(
    name: &str,
    data: &[u8],
    seg: Option<&crate::segment::LongHeader>,
    opts: &EncodeOptions<'_>,
) -> anyhow::Result<Encoded> {
    let (sum, payload) = std::thread::scope(|s| {
        let hasher = s.spawn(|| checksum(data, opts.key));
        let payload = opts.compression.compress(data);
        (hasher.join().expect("hash thread"), payload)
    });
    let payload = payload?;
    seal(
        name,
        data.len() as u64,
        sum,
        payload.into_owned(),
        seg,
        opts,
    )
}

/// Like [`encode`], reading `size` bytes from `reader` in 1 MiB chunks: one thread reads, one
/// hashes, one compresses, so the three overlap and no buffer holds the whole file. This is
/// the push path for segments (16 MiB and up).
pub fn encode_stream<R: Read>(
    name: &str,
    mut reader: R,
    size: u64,
    seg: Option<&crate::segment::LongHeader>,
    opts: &EncodeOptions<'_>,
) -> anyhow::Result<Encoded> {
    const CHUNK: u64 = 1 << 20;
    let (key, compression) = (opts.key, opts.compression);
    let (to_hasher, for_hasher) = mpsc::sync_channel::<Arc<Chunk>>(4);
    let (to_compressor, for_compressor) = mpsc::sync_channel::<Arc<Chunk>>(4);
    // Buffers come back when both consumers are done with them: fresh memory costs a page
    // fault per 4 KiB, a fifth of the CPU time of a push.
    let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
    let (read, sum, payload) = std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            if let Some(k) = key {
                h.update(k.derive("checksum"));
            }
            for chunk in for_hasher {
                h.update(&chunk.buf);
            }
            hex::encode(h.finalize())
        });
        let compressor = s.spawn(move || compress_chunks(compression, size, for_compressor));
        let mut total = 0u64;
        let read = loop {
            let mut buf = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK as usize));
            buf.clear();
            match (&mut reader).take(CHUNK).read_to_end(&mut buf) {
                Ok(0) => break Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => break Err(e),
            }
            let chunk = Arc::new(Chunk {
                buf,
                recycle: recycle.clone(),
            });
            // A closed channel means the compressor failed: its error is reported below.
            if to_hasher.send(Arc::clone(&chunk)).is_err() || to_compressor.send(chunk).is_err() {
                break Ok(total);
            }
        };
        drop((to_hasher, to_compressor));
        let sum = hasher.join().expect("hash thread");
        (read, sum, compressor.join().expect("compression thread"))
    });
    let read = read?;
    let payload = payload?;
    anyhow::ensure!(
        read == size,
        "the file changed size while being read ({size} bytes, then {read})"
    );
    seal(name, size, sum, payload, seg, opts)
}

/// A buffer of [`encode_stream`] that goes back to the reader when dropped.
struct Chunk {
    buf: Vec<u8>,
    recycle: mpsc::Sender<Vec<u8>>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let _ = self.recycle.send(std::mem::take(&mut self.buf));
    }
}

/// The compression thread of [`encode_stream`].
fn compress_chunks(
    compression: Compression,
    size: u64,
    chunks: mpsc::Receiver<Arc<Chunk>>,
) -> anyhow::Result<Vec<u8>> {
    match compression {
        Compression::Zstd(level) => {
            let mut enc =
                zstd::stream::write::Encoder::new(Vec::with_capacity(size as usize / 4), level)
                    .context("starting zstd")?;
            enc.set_pledged_src_size(Some(size))
                .context("starting zstd")?;
            for chunk in chunks {
                enc.write_all(&chunk.buf)
                    .context("zstd compression failed")?;
            }
            enc.finish().context("zstd compression failed")
        }
        Compression::None | Compression::Lz4 => {
            let mut all = Vec::with_capacity(size as usize);
            for chunk in chunks {
                all.extend_from_slice(&chunk.buf);
            }
            Ok(match compression {
                Compression::Lz4 => lz4_flex::compress_prepend_size(&all),
                _ => all,
            })
        }
    }
}

/// Build the header (checksum `sum` of `size` original bytes) and the stored bytes.
fn seal(
    name: &str,
    size: u64,
    sum: String,
    payload: Vec<u8>,
    seg: Option<&crate::segment::LongHeader>,
    opts: &EncodeOptions<'_>,
) -> anyhow::Result<Encoded> {
    let mut header = Header {
        wal_ship: FORMAT,
        name: name.to_owned(),
        size,
        sha256: None,
        keyed_sha256: None,
        compression: opts.compression.kind().to_owned(),
        level: opts.compression.level(),
        seg_size: seg.map(|h| h.seg_size),
        system_id: seg.map(|h| h.system_id.to_string()),
        encryption: None,
        // Poly1305 adds a 16-byte tag.
        payload_size: Some(payload.len() as u64 + if opts.key.is_some() { 16 } else { 0 }),
        pushed_at: crate::now_rfc3339(),
    };
    let Some(key) = opts.key else {
        header.sha256 = Some(sum);
        let line = header_line(&header)?;
        return Ok(Encoded {
            header,
            line,
            payload,
        });
    };
    header.keyed_sha256 = Some(sum);
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    header.encryption = Some(Encryption {
        alg: "xchacha20poly1305".into(),
        key_id: key.id(),
        nonce: hex::encode(nonce),
    });
    let line = header_line(&header)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.key));
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &payload,
                aad: &line,
            },
        )
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    Ok(Encoded {
        header,
        line,
        payload: sealed,
    })
}

fn header_line(h: &Header) -> anyhow::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(h).context("serialising an object header")?;
    line.push(b'\n');
    anyhow::ensure!(line.len() <= MAX_HEADER, "object header too long");
    Ok(line)
}

/// Why an object could not be decoded. Every variant means the archive copy is unusable.
#[derive(Debug, thiserror::Error)]
pub enum Corrupt {
    /// No parsable header line.
    #[error("no valid wal-ship header ({0})")]
    Header(String),
    /// Header for a different file.
    #[error("the object holds {found}, not {expected}")]
    WrongName {
        /// The name asked for.
        expected: String,
        /// The name in the header.
        found: String,
    },
    /// The stored payload is not as long as the header says.
    #[error(
        "the stored payload is {actual} bytes, its header says {expected}: truncated or damaged"
    )]
    Truncated {
        /// From the header.
        expected: u64,
        /// Found.
        actual: u64,
    },
    /// The object is encrypted and no key was given.
    #[error("it is encrypted (key id {0}) and no --encrypt-key-file was given")]
    NeedKey(String),
    /// A different key.
    #[error("it is encrypted with key id {found}, not with the given key (id {given})")]
    WrongKey {
        /// The object's key id.
        found: String,
        /// The given key's id.
        given: String,
    },
    /// AEAD authentication failed.
    #[error("decryption failed: the encrypted bytes or the header were altered")]
    Tampered,
    /// Decompression failed.
    #[error("{0} decompression failed ({1})")]
    Decompress(String, String),
    /// Checksum mismatch.
    #[error("checksum mismatch: the header says {expected}, the bytes hash to {actual}")]
    Checksum {
        /// From the header.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// Size mismatch.
    #[error("size mismatch: the header says {expected} bytes, the payload holds {actual}")]
    Size {
        /// From the header.
        expected: u64,
        /// Found.
        actual: u64,
    },
}

/// Split off and parse the header line.
pub fn parse_header(bytes: &[u8]) -> Result<(Header, usize), Corrupt> {
    let window = &bytes[..bytes.len().min(MAX_HEADER)];
    let end = window
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| Corrupt::Header("no header line in the first 4 KiB".into()))?;
    let header: Header = serde_json::from_slice(&window[..end])
        .map_err(|e| Corrupt::Header(format!("unreadable header line: {e}")))?;
    if header.wal_ship != FORMAT {
        return Err(Corrupt::Header(format!(
            "format version {} (this wal-ship reads {FORMAT}; upgrade wal-ship)",
            header.wal_ship
        )));
    }
    if header.checksum().is_none() {
        return Err(Corrupt::Header("no checksum in the header".into()));
    }
    Ok((header, end + 1))
}

/// Check, decrypt, decompress and verify an object. `expected` is the name it must hold.
pub fn decode(
    expected: &str,
    bytes: &[u8],
    key: Option<&SecretKey>,
) -> Result<(Header, Vec<u8>), Corrupt> {
    let (header, at) = parse_header(bytes)?;
    if header.name != expected {
        return Err(Corrupt::WrongName {
            expected: expected.to_owned(),
            found: header.name,
        });
    }
    let sealed = &bytes[at..];
    if let Some(expected) = header.payload_size {
        if sealed.len() as u64 != expected {
            return Err(Corrupt::Truncated {
                expected,
                actual: sealed.len() as u64,
            });
        }
    }
    let opened;
    let payload: &[u8] = match (&header.encryption, key) {
        (None, _) => sealed,
        (Some(e), None) => return Err(Corrupt::NeedKey(e.key_id.clone())),
        (Some(e), Some(k)) => {
            if e.key_id != k.id() {
                return Err(Corrupt::WrongKey {
                    found: e.key_id.clone(),
                    given: k.id(),
                });
            }
            let nonce = hex::decode(&e.nonce)
                .ok()
                .filter(|n| n.len() == 24)
                .ok_or_else(|| Corrupt::Header("bad nonce".into()))?;
            let cipher = XChaCha20Poly1305::new(Key::from_slice(&k.key));
            opened = cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: sealed,
                        aad: &bytes[..at],
                    },
                )
                .map_err(|_| Corrupt::Tampered)?;
            &opened
        }
    };
    // A damaged size must not make us allocate gigabytes: no WAL file exceeds 1 GiB.
    if header.size > MAX_SIZE {
        return Err(Corrupt::Header(format!(
            "size {} is impossible",
            header.size
        )));
    }
    let size = header.size as usize;
    let data = match header.compression.as_str() {
        "none" => payload.to_vec(),
        "zstd" => zstd::bulk::decompress(payload, size)
            .map_err(|e| Corrupt::Decompress("zstd".into(), e.to_string()))?,
        "lz4" => {
            let lz4_err = |m: String| Corrupt::Decompress("lz4".into(), m);
            let prefix = payload
                .get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
            if prefix.map(u64::from) != Some(header.size) {
                return Err(lz4_err("size prefix does not match the header".into()));
            }
            let mut out = vec![0u8; size];
            let n = lz4_flex::block::decompress_into(&payload[4..], &mut out)
                .map_err(|e| lz4_err(e.to_string()))?;
            out.truncate(n);
            out
        }
        other => {
            return Err(Corrupt::Header(format!(
                "unknown compression '{other}' (upgrade wal-ship)"
            )))
        }
    };
    if data.len() as u64 != header.size {
        return Err(Corrupt::Size {
            expected: header.size,
            actual: data.len() as u64,
        });
    }
    let sum = checksum(&data, key.filter(|_| header.encryption.is_some()));
    let want = header.checksum().unwrap_or_default();
    if sum != want {
        return Err(Corrupt::Checksum {
            expected: want.to_owned(),
            actual: sum,
        });
    }
    Ok((header, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(c: Compression, key: Option<&SecretKey>) -> EncodeOptions<'_> {
        EncodeOptions {
            compression: c,
            key,
        }
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn round_trips_every_compression() {
        let data = sample();
        for c in [Compression::None, Compression::Zstd(3), Compression::Lz4] {
            let enc = encode("00000001.history", &data, None, &opts(c, None)).unwrap();
            if c != Compression::None {
                assert!(enc.len() < data.len() / 2, "{c:?} did not compress");
            }
            let (h, back) = decode("00000001.history", &enc.to_bytes(), None).unwrap();
            assert_eq!(back, data);
            assert_eq!(h.sha256.as_deref(), Some(checksum(&data, None).as_str()));
        }
    }

    #[test]
    fn streaming_encodes_what_bulk_encodes() {
        // Several chunks, the last one short.
        let data: Vec<u8> = (0..3_700_000u32).map(|i| (i / 7 % 251) as u8).collect();
        let key = SecretKey::from_bytes([3; 32]);
        for key in [None, Some(&key)] {
            for c in [Compression::None, Compression::Zstd(3), Compression::Lz4] {
                let o = opts(c, key);
                let streamed = encode_stream("x", &data[..], data.len() as u64, None, &o).unwrap();
                let bulk = encode("x", &data, None, &o).unwrap();
                assert_eq!(
                    streamed.header.same_content(&bulk.header),
                    Some(true),
                    "{c:?}"
                );
                assert_eq!(
                    decode("x", &streamed.to_bytes(), key).unwrap().1,
                    data,
                    "{c:?}"
                );
            }
        }
        let short = encode_stream("x", &data[..10], 11, None, &opts(Compression::Lz4, None));
        assert!(format!("{:#}", short.unwrap_err()).contains("changed size"));
    }

    #[test]
    fn same_content_is_recognised_across_compressions() {
        let data = sample();
        let a = encode("x", &data, None, &opts(Compression::Zstd(1), None)).unwrap();
        let b = encode("x", &data, None, &opts(Compression::Lz4, None)).unwrap();
        assert_eq!(a.header.same_content(&b.header), Some(true));
        let mut other = data.clone();
        other[5] ^= 1;
        let c = encode("x", &other, None, &opts(Compression::Lz4, None)).unwrap();
        assert_eq!(a.header.same_content(&c.header), Some(false));
        let key = SecretKey::from_bytes([9; 32]);
        let d = encode("x", &data, None, &opts(Compression::Lz4, Some(&key))).unwrap();
        assert_eq!(a.header.same_content(&d.header), None);
        let e = encode("x", &data, None, &opts(Compression::None, Some(&key))).unwrap();
        assert_eq!(d.header.same_content(&e.header), Some(true));
    }

    #[test]
    fn every_flipped_bit_in_the_payload_is_caught() {
        let data = sample();
        for c in [Compression::None, Compression::Zstd(3), Compression::Lz4] {
            let enc = encode("x", &data, None, &opts(c, None)).unwrap();
            let (_, at) = parse_header(&enc.to_bytes()).unwrap();
            for pos in [at, at + 1, (at + enc.len()) / 2, enc.len() - 1] {
                let mut bad = enc.to_bytes();
                bad[pos] ^= 0x10;
                assert!(decode("x", &bad, None).is_err(), "{c:?} flip at {pos}");
            }
            assert!(decode("x", &enc.to_bytes()[..enc.len() - 1], None).is_err());
            assert!(matches!(
                decode("y", &enc.to_bytes(), None),
                Err(Corrupt::WrongName { .. })
            ));
        }
    }

    #[test]
    fn encryption_hides_the_content_and_needs_the_right_key() {
        let data = b"1\t0/3000000\tno recovery target specified\n".repeat(100);
        let key = SecretKey::from_bytes([1; 32]);
        let enc = encode("x", &data, None, &opts(Compression::None, Some(&key))).unwrap();
        let all = enc.to_bytes();
        let text = String::from_utf8_lossy(&all);
        assert!(!text.contains("recovery target"));
        assert!(enc.header.sha256.is_none());
        assert_ne!(enc.checksum(), checksum(&data, None));
        assert_eq!(decode("x", &enc.to_bytes(), Some(&key)).unwrap().1, data);
        assert!(matches!(
            decode("x", &enc.to_bytes(), None),
            Err(Corrupt::NeedKey(_))
        ));
        let other = SecretKey::from_bytes([2; 32]);
        assert!(matches!(
            decode("x", &enc.to_bytes(), Some(&other)),
            Err(Corrupt::WrongKey { .. })
        ));
        // Tampering with the header (authenticated as associated data) is caught.
        let tampered = String::from_utf8_lossy(&enc.to_bytes())
            .replacen("\"pushed_at\":\"2", "\"pushed_at\":\"1", 1)
            .into_bytes();
        let mut bytes = enc.to_bytes();
        let (_, at) = parse_header(&bytes).unwrap();
        bytes[..at].copy_from_slice(&tampered[..at]);
        assert!(matches!(
            decode("x", &bytes, Some(&key)),
            Err(Corrupt::Tampered)
        ));
    }

    #[test]
    fn compression_flag_values() {
        assert_eq!(Compression::parse("zstd"), Ok(Compression::Zstd(3)));
        assert_eq!(Compression::parse("zstd:19"), Ok(Compression::Zstd(19)));
        assert_eq!(Compression::parse("lz4"), Ok(Compression::Lz4));
        assert_eq!(Compression::parse("none"), Ok(Compression::None));
        assert!(Compression::parse("zstd:0").is_err());
        assert!(Compression::parse("gzip").unwrap_err().contains("use none"));
    }

    #[test]
    fn key_files_hex_or_raw() {
        let dir = tempfile::tempdir().unwrap();
        let hexfile = dir.path().join("k.hex");
        std::fs::write(&hexfile, format!("{}\n", "ab".repeat(32))).unwrap();
        let raw = dir.path().join("k.raw");
        std::fs::write(&raw, [0xab; 32]).unwrap();
        assert_eq!(
            SecretKey::from_file(&hexfile).unwrap().id(),
            SecretKey::from_file(&raw).unwrap().id()
        );
        let bad = dir.path().join("k.bad");
        std::fs::write(&bad, "secret").unwrap();
        let e = SecretKey::from_file(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("openssl rand -hex 32"));
        assert!(!format!("{e:#}").contains("secret\""));
    }
}
