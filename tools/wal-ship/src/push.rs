//! `wal-ship push FILE... --to DEST`: the `archive_command`.
//!
//! Each file is checked (a WAL file name; for segments a complete segment whose page header
//! matches its name), compressed and hashed in parallel, and stored atomically. When the name
//! is already taken the existing object's header decides: the same checksum is a duplicate
//! (exit 0: PostgreSQL re-sends a file after a crash between storing and acknowledging), a
//! different one is refused (exit 65) and the archived copy is left alone.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use shared::{ErrorKind, Status};

use crate::archive::{Archive, Put};
use crate::name::WalName;
use crate::object::{self, Compression, EncodeOptions, SecretKey};
use crate::{segment, KeyArgs, SshArgs};

/// `wal-ship push`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// WAL files to archive (%p in archive_command).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    to: String,
    /// Compression: zstd (level 3), zstd:LEVEL (1-22), lz4 or none.
    #[arg(long, value_name = "METHOD", default_value = "zstd", value_parser = Compression::parse)]
    compress: Compression,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    ssh: SshArgs,
    /// Store each segment FILE as FILE.partial, as PostgreSQL names the last segment of a
    /// timeline (pg-switch ships a stopped primary's last segment so: if the primary serves
    /// on, it archives the whole segment under its own name later).
    #[arg(long)]
    as_partial: bool,
    /// No records on stdout (for archive_command: stdout goes to the server log); errors
    /// still go to stderr.
    #[arg(short, long)]
    quiet: bool,
}

/// The `segment` record of a push (also written by `sweep`).
#[derive(Debug, Clone, Serialize)]
pub struct Shipped {
    /// WAL file name.
    pub name: String,
    /// `segment`, `partial`, `backup` or `history`.
    pub kind: &'static str,
    /// `stored`, or `duplicate` (the archive already held the same bytes).
    pub action: &'static str,
    /// Size of the WAL file.
    pub bytes: u64,
    /// Size of the stored object (for a duplicate: of what this push would have stored).
    pub stored_bytes: u64,
    /// `zstd:3`, `lz4` or `none`.
    pub compression: String,
    /// Whether the object is encrypted.
    pub encrypted: bool,
    /// SHA-256 of the WAL file (omitted when encrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The archive.
    pub archive: String,
    /// Time taken.
    pub elapsed_ms: u64,
}

impl shared::Record for Shipped {
    const TYPE: &'static str = "segment";
}

/// Counts for the summary.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Files attempted.
    pub files: u64,
    /// Newly stored.
    pub stored: u64,
    /// Already in the archive with the same content.
    pub duplicates: u64,
    /// Failed.
    pub failed: u64,
    /// Bytes of WAL handled (stored or duplicate).
    pub bytes: u64,
    /// Bytes written to the archive.
    pub stored_bytes: u64,
}

impl Totals {
    /// Count one success.
    pub fn add(&mut self, s: &Shipped) {
        self.files += 1;
        self.bytes += s.bytes;
        if s.action == "stored" {
            self.stored += 1;
            self.stored_bytes += s.stored_bytes;
        } else {
            self.duplicates += 1;
        }
    }

    /// Count one failure.
    pub fn fail(&mut self) {
        self.files += 1;
        self.failed += 1;
    }
}

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let mut out = crate::output(a.quiet);
    let archive = Archive::open(&a.to, a.ssh.options()?)?;
    let key = a.key.load()?;
    let opts = EncodeOptions {
        compression: a.compress,
        key: key.as_ref(),
    };
    let mut totals = Totals::default();
    for f in &a.files {
        match push_file_as(&archive, f, a.as_partial, &opts) {
            Ok(rec) => {
                totals.add(&rec);
                out.emit(&rec)?;
            }
            Err(e) => {
                totals.fail();
                out.error(&e, json!({"file": f.display().to_string()}))?;
            }
        }
    }
    out.finish(&totals)
}

/// Archive one file.
pub fn push_file(
    archive: &Archive,
    path: &Path,
    opts: &EncodeOptions<'_>,
) -> anyhow::Result<Shipped> {
    push_file_as(archive, path, false, opts)
}

/// Archive one file, a segment as NAME.partial if `as_partial`.
fn push_file_as(
    archive: &Archive,
    path: &Path,
    as_partial: bool,
    opts: &EncodeOptions<'_>,
) -> anyhow::Result<Shipped> {
    let started = Instant::now();
    let file_name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        shared::err(
            ErrorKind::DataErr,
            format!("{} does not end in a WAL file name", path.display()),
        )
    })?;
    let mut name = WalName::parse(file_name)?;
    if as_partial {
        if name.kind != crate::name::Kind::Segment {
            return Err(shared::err(
                ErrorKind::Usage,
                format!("--as-partial takes WAL segments, not {name}"),
            ));
        }
        name = WalName::parse(&format!("{name}.partial"))?;
    }
    let result = (|| -> anyhow::Result<Shipped> {
        let enc = encode(&name, path, opts)?;
        let action = match archive.put(&name, &enc.parts())? {
            Put::Stored => "stored",
            Put::Exists { prefix, size } => {
                same_as_archived(archive, &name, &enc, path, &prefix, size, opts.key)?;
                "duplicate"
            }
        };
        Ok(Shipped {
            name: name.to_string(),
            kind: name.kind.as_str(),
            action,
            bytes: enc.header.size,
            stored_bytes: enc.len() as u64,
            compression: opts.compression.describe(),
            encrypted: opts.key.is_some(),
            sha256: enc.header.sha256.clone(),
            archive: archive.describe(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    })();
    result.with_context(|| format!("archiving {name}"))
}

/// Check and encode the file at `path`. Segments are streamed (see
/// [`object::encode_stream`]) after their page header and size are checked; other files are
/// small and read whole.
fn encode(
    name: &WalName,
    path: &Path,
    opts: &EncodeOptions<'_>,
) -> anyhow::Result<object::Encoded> {
    let reading = || format!("reading {}", path.display());
    if !name.kind.is_segment_data() {
        let data = std::fs::read(path).with_context(reading)?;
        segment::check(name, &data)?;
        return object::encode(name.as_str(), &data, None, opts);
    }
    let mut file = std::fs::File::open(path).with_context(reading)?;
    let len = file.metadata().with_context(reading)?.len();
    let mut head = Vec::with_capacity(segment::LONG_HEADER_LEN);
    (&mut file)
        .take(segment::LONG_HEADER_LEN as u64)
        .read_to_end(&mut head)
        .with_context(reading)?;
    let seg = segment::check_segment(name, &head, len)?;
    file.seek(SeekFrom::Start(0)).with_context(reading)?;
    object::encode_stream(name.as_str(), file, len, Some(&seg), opts).with_context(reading)
}

/// `Ok` when the archived object holds the same bytes as the file at `path`; a classified
/// error naming the conflict otherwise.
fn same_as_archived(
    archive: &Archive,
    name: &WalName,
    enc: &object::Encoded,
    path: &Path,
    prefix: &[u8],
    size: u64,
    key: Option<&SecretKey>,
) -> anyhow::Result<()> {
    let place = archive.describe();
    let damaged = |why: String| {
        shared::err(
            ErrorKind::DataErr,
            format!(
                "{place} already holds {name}, but that copy is unreadable ({why}); wal-ship \
                 never overwrites: check it with 'wal-ship verify', move it aside, and the next \
                 retry stores this copy"
            ),
        )
    };
    let (existing, at) = object::parse_header(prefix).map_err(|c| damaged(c.to_string()))?;
    if let Some(payload) = existing.payload_size {
        if at as u64 + payload != size {
            return Err(damaged(format!(
                "it is {size} bytes, its header says {}: truncated",
                at as u64 + payload
            )));
        }
    }
    let same = match existing.same_content(&enc.header) {
        Some(same) => same,
        None => {
            // One side is encrypted (or with another key): compare the decoded bytes.
            let bytes = archive.get(name)?.ok_or_else(|| {
                shared::err(
                    ErrorKind::Retry,
                    format!("{name} disappeared from {place} while being compared"),
                )
            })?;
            match object::decode(name.as_str(), &bytes, key) {
                Ok((_, old)) => {
                    let data = std::fs::read(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    object::checksum(&old, None) == object::checksum(&data, None)
                }
                Err(e @ (object::Corrupt::NeedKey(_) | object::Corrupt::WrongKey { .. })) => {
                    return Err(shared::err(
                        ErrorKind::DataErr,
                        format!(
                            "{place} already holds {name}, and {e}, so wal-ship cannot tell \
                             whether it is the same file; refusing to overwrite it (push with \
                             the archive's key)"
                        ),
                    ))
                }
                Err(e) => return Err(damaged(e.to_string())),
            }
        }
    };
    if same {
        return Ok(());
    }
    let short = |s: Option<&str>| s.map(|s| s[..s.len().min(12)].to_owned());
    let detail = match (
        short(existing.sha256.as_deref()),
        short(enc.header.sha256.as_deref()),
    ) {
        (Some(a), Some(b)) => format!("archived sha256 {a}…, this file {b}…"),
        _ => "the checksums differ".to_owned(),
    };
    let systems = match (&existing.system_id, &enc.header.system_id) {
        (Some(a), Some(b)) if a != b => {
            format!("; it comes from database system {a}, this file from {b}: two clusters share this archive")
        }
        _ => String::new(),
    };
    Err(shared::err(
        ErrorKind::DataErr,
        format!(
            "{place} already holds a different {name} (archived {}; {detail}{systems}): \
             refusing to overwrite it. Find out which copy is right (another cluster archiving \
             here? a second promotion?) before moving the archived one aside",
            existing.pushed_at
        ),
    ))
}
