//! `pgdata-sync apply DIR`: on the target. Reads `send`'s stream on stdin and writes it into
//! the copy: every file synced when it is complete, the emptied directories emptied, one
//! `synced` record with the counts once the stream's end has arrived; a stream cut short is an
//! error and leaves the copy partial (the next run goes on from it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use shared::{ErrorKind, ResultExt, Status};

use crate::send::Counts;
use crate::tree::{CONTROL_FILE, CONTROL_PENDING, EMPTIED_DIRS};
use crate::wire::{self, Frame};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The partial copy to bring up to date (no server running in it).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// The one record: what the stream changed, and its size on the wire.
#[derive(Debug, Serialize)]
struct Synced {
    dir: String,
    #[serde(flatten)]
    counts: Counts,
    wire_bytes: u64,
}

impl shared::Record for Synced {
    const TYPE: &'static str = "synced";
}

/// `path` below `root`, if it is a plain relative path (no `..`, not absolute).
fn inside(root: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let rel = Path::new(path);
    if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!("the stream names {path:?}, a path outside the data directory: refused"),
        ));
    }
    Ok(root.join(rel))
}

fn io_err(what: &str, p: &Path) -> impl FnOnce() -> String {
    let s = format!("cannot {what} {}", p.display());
    move || s
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let mut out = shared::Output::stdout();
    let root = args.dir;
    if !root.is_dir() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!("{}: no such directory (make it, mode 700)", root.display()),
        ));
    }
    crate::not_running(&root, "a copy into it")?;
    // The stream as it came over the wire.
    let (counted, wire_bytes) = crate::Counted::new(io::stdin().lock());
    let mut r = BufReader::with_capacity(1 << 20, decoded(counted)?);
    let token = wire::read_header(&mut r)?;
    // Every write happens under the directory's lock while this stream's sums still own the
    // copy (see TOKEN_FILE).
    let turn = || -> anyhow::Result<std::fs::File> {
        let held = crate::lock(&root)?;
        if crate::token_of(&root)? != token {
            return Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "a newer pgdata-sync run owns {} (it summed the copy after this stream's \
                     sums): this run stops, writing nothing more",
                    root.display()
                ),
            ));
        }
        Ok(held)
    };
    let held = turn()?;
    // The control file is what makes a directory look like a cluster: until `seal` has written
    // the backup_label it has none (a stale one goes now; the new one waits under another
    // name).
    let control = root.join(CONTROL_FILE);
    let control_new = root.join(CONTROL_PENDING);
    for p in [&control, &control_new] {
        match fs::remove_file(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_kind_context(ErrorKind::Io, io_err("remove", p))
            }
            _ => {}
        }
    }
    drop(held);
    let mut current: Option<(File, PathBuf, u32)> = None;
    let counts: Counts = loop {
        let frame = wire::read(&mut r)?;
        let _held = turn()?;
        match frame {
            Frame::Dir { path, mode } => {
                let p = inside(&root, &path)?;
                if p.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                    fs::remove_file(&p).with_kind_context(ErrorKind::Io, io_err("remove", &p))?;
                }
                fs::create_dir_all(&p).with_kind_context(ErrorKind::Io, io_err("make", &p))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
                    .with_kind_context(ErrorKind::Io, io_err("set the mode of", &p))?;
            }
            Frame::File { path, mode } => {
                let p = if path == CONTROL_FILE {
                    control_new.clone()
                } else {
                    inside(&root, &path)?
                };
                if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&p)
                        .with_kind_context(ErrorKind::Io, io_err("remove", &p))?;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&p)
                    .with_kind_context(ErrorKind::Io, io_err("open", &p))?;
                current = Some((f, p, mode));
            }
            Frame::Block { offset, data } => {
                let (f, p, _) = current.as_ref().ok_or_else(|| {
                    shared::err(
                        ErrorKind::DataErr,
                        "the stream is garbled (a block outside a file)",
                    )
                })?;
                f.write_all_at(&data, offset)
                    .with_kind_context(ErrorKind::Io, io_err("write", p))?;
            }
            Frame::FileEnd { size } => {
                let (f, p, mode) = current.take().ok_or_else(|| {
                    shared::err(
                        ErrorKind::DataErr,
                        "the stream is garbled (a file's end outside a file)",
                    )
                })?;
                f.set_len(size)
                    .with_kind_context(ErrorKind::Io, io_err("set the size of", &p))?;
                f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                    .with_kind_context(ErrorKind::Io, io_err("set the mode of", &p))?;
                f.sync_all()
                    .with_kind_context(ErrorKind::Io, io_err("sync", &p))?;
            }
            Frame::Remove { path } => {
                let p = inside(&root, &path)?;
                let gone = match p.symlink_metadata() {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                    Ok(_) => fs::remove_file(&p),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                gone.with_kind_context(ErrorKind::Io, io_err("remove", &p))?;
            }
            Frame::Progress { stats } => {
                let v: serde_json::Value = serde_json::from_str(&stats).map_err(|_| {
                    shared::err(
                        ErrorKind::DataErr,
                        "the stream is garbled (a progress frame that is not JSON)",
                    )
                })?;
                out.emit_as("sync_progress", &v)?;
            }
            Frame::End { stats } => {
                break serde_json::from_str(&stats).map_err(|_| {
                    shared::err(
                        ErrorKind::DataErr,
                        "the stream is garbled (its end carries no counts)",
                    )
                })?
            }
        }
    };
    let _held = turn()?;
    if current.is_some() {
        return Err(shared::err(
            ErrorKind::DataErr,
            "the stream is garbled (it ends inside a file)",
        ));
    }
    empty_dirs(&root)?;
    let token_path = root.join(crate::TOKEN_FILE);
    fs::remove_file(&token_path).with_kind_context(ErrorKind::Io, io_err("remove", &token_path))?;
    sync_dirs(&root)?;
    out.emit(&Synced {
        dir: root.display().to_string(),
        counts,
        wire_bytes: wire_bytes.get(),
    })?;
    out.finish(&serde_json::json!({}))
}

/// What a base backup leaves empty is empty: the WAL of the cut copy (it streams again from
/// the slot), stale runtime state. `pg_wal/archive_status` stays, as a directory.
fn empty_dirs(root: &Path) -> anyhow::Result<()> {
    for d in EMPTIED_DIRS {
        let dir = root.join(d);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.with_kind_context(ErrorKind::Io, io_err("read", &dir))?;
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                if *d == "pg_wal" && e.file_name() == "archive_status" {
                    empty(&p)
                } else {
                    fs::remove_dir_all(&p)
                }
            } else {
                fs::remove_file(&p)
            };
            r.with_kind_context(ErrorKind::Io, io_err("remove", &p))?;
        }
    }
    let status = root.join("pg_wal/archive_status");
    fs::create_dir_all(&status).with_kind_context(ErrorKind::Io, io_err("make", &status))?;
    Ok(())
}

fn empty(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// fsync every directory of the copy (new names must survive a crash too).
fn sync_dirs(root: &Path) -> anyhow::Result<()> {
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        if e.file_type().is_dir() {
            File::open(e.path())
                .and_then(|d| d.sync_all())
                .with_kind_context(ErrorKind::Io, io_err("sync", e.path()))?;
        }
    }
    Ok(())
}

/// The stream, zstd-compressed or not (send --level 0), told by its first bytes.
fn decoded(mut r: impl Read + 'static) -> anyhow::Result<Box<dyn Read>> {
    let mut head = vec![0u8; 4];
    let n = crate::read_block(&mut r, &mut head)?;
    head.truncate(n);
    let zstd = head == [0x28, 0xb5, 0x2f, 0xfd];
    let chained = io::Cursor::new(head).chain(r);
    Ok(if zstd {
        Box::new(zstd::Decoder::new(chained)?)
    } else {
        Box::new(chained)
    })
}
