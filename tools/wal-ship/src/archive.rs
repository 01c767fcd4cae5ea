//! The archive: a directory, local or on another host over ssh, and the few operations the
//! commands need (store without clobbering, read, list, remove).
//!
//! Layout (the same on both transports):
//!
//! ```text
//! ARCHIVE/wal-ship.json                          marker, written by the first push
//! ARCHIVE/0000000100000000/000000010000000000000003.ws
//! ARCHIVE/0000000100000000/000000010000000000000003.partial.ws
//! ARCHIVE/0000000100000000/000000010000000000000002.00000028.backup.ws
//! ARCHIVE/history/00000002.history.ws
//! ARCHIVE/0000000100000000/.000000010000000000000004.ws.1234.5678.tmp   (a push in flight)
//! ```
//!
//! The marker is what tells "this object is not in the archive" (PostgreSQL's normal end of
//! the archive) from "the archive is not there" (an unmounted NFS share leaves an empty
//! directory behind): the latter is an error, never a quiet "not found".
//!
//! Storing is the only write, and it is atomic and never overwrites: write a hidden temp file
//! in the target directory, fsync it, `renameat2(RENAME_NOREPLACE)` it into place (or `link()`
//! where the file system lacks that flag), fsync the directory. A crash leaves at most a
//! hidden `.tmp` file, which readers ignore and `clean` removes.

use std::fs;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use shared::host::SshOptions;
use shared::{ErrorKind, ResultExt};

use crate::name::WalName;
use crate::object::{MAX_HEADER, SUFFIX};
use crate::ssh::{self, SshDest};

/// The marker file at the top of every archive.
pub const MARKER: &str = "wal-ship.json";

/// Where the archive lives.
#[derive(Debug, Clone)]
enum Location {
    Local(PathBuf),
    Ssh(SshDest),
}

/// An archive and how to reach it.
#[derive(Debug, Clone)]
pub struct Archive {
    loc: Location,
    ssh: SshOptions,
}

/// The outcome of [`Archive::put`].
#[derive(Debug)]
pub enum Put {
    /// Stored under its name.
    Stored,
    /// The name was taken: the start (at least the header line) of the existing object, and
    /// its size.
    Exists {
        /// Its first 4 KiB.
        prefix: Vec<u8>,
        /// Its size.
        size: u64,
    },
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its WAL file name.
    pub name: WalName,
    /// Its path relative to the archive directory.
    pub rel: String,
    /// Stored size.
    pub size: u64,
}

/// A temp file left by a push that did not finish (or is still running).
#[derive(Debug, Clone)]
pub struct TempEntry {
    /// Path relative to the archive directory.
    pub rel: String,
    /// Size.
    pub size: u64,
    /// Time since it was last written.
    pub age: Duration,
}

/// What [`Archive::list`] finds.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Stored objects, sorted by name (history files first).
    pub objects: Vec<Entry>,
    /// Temp files.
    pub temps: Vec<TempEntry>,
}

/// The path of an object relative to the archive directory.
pub fn rel_path(name: &WalName) -> String {
    format!("{}/{}{SUFFIX}", name.dir(), name)
}

fn marker_contents() -> String {
    serde_json::json!({
        "wal_ship": crate::object::FORMAT,
        "created_at": crate::now_rfc3339(),
        "created_by": concat!("wal-ship ", env!("CARGO_PKG_VERSION")),
    })
    .to_string()
}

fn unavailable(msg: String) -> anyhow::Error {
    shared::err(ErrorKind::Unavailable, msg)
}

impl Archive {
    /// `PATH`, `file:///PATH` or `ssh://[user@]host[:port]/PATH` (reached with the `ssh`
    /// options).
    pub fn open(spec: &str, ssh: SshOptions) -> anyhow::Result<Archive> {
        let loc = if let Some(rest) = spec.strip_prefix("ssh://") {
            Location::Ssh(SshDest::parse(rest)?)
        } else if let Some(rest) = spec.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(shared::err(
                    ErrorKind::Usage,
                    format!("'{spec}' is not a file URL: write file:///absolute/path"),
                ));
            }
            Location::Local(PathBuf::from(rest))
        } else if spec.contains("://") {
            return Err(shared::err(
                ErrorKind::Usage,
                format!("'{spec}': unknown archive URL scheme (use a path, file:// or ssh://)"),
            ));
        } else if spec.is_empty() {
            return Err(shared::err(
                ErrorKind::Usage,
                "the archive location is empty",
            ));
        } else {
            Location::Local(PathBuf::from(spec))
        };
        Ok(Archive { loc, ssh })
    }

    /// The location as the user wrote it (normalised), for records and messages.
    pub fn describe(&self) -> String {
        match &self.loc {
            Location::Local(p) => p.display().to_string(),
            Location::Ssh(d) => d.describe(),
        }
    }

    /// Store the object (given in parts) under `name` unless the name is taken.
    pub fn put(&self, name: &WalName, parts: &[&[u8]]) -> anyhow::Result<Put> {
        match &self.loc {
            Location::Local(root) => local_put(root, name, parts),
            Location::Ssh(d) => {
                let size = parts.iter().map(|p| p.len()).sum::<usize>().to_string();
                let obj = format!("{name}{SUFFIX}");
                let refusal = not_an_archive(&self.describe());
                let args = [d.path.as_str(), name.dir(), &obj, &size, &refusal];
                let r = ssh::run(d, &self.ssh, ssh::PUT, &args, parts)?;
                self.check_remote(&r, "storing", name.as_str())?;
                if let Some(rest) = r.stdout.strip_prefix(b"exists ") {
                    let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                    let size = String::from_utf8_lossy(&rest[..nl])
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    Ok(Put::Exists {
                        prefix: rest.get(nl + 1..).unwrap_or_default().to_vec(),
                        size,
                    })
                } else if r.stdout.starts_with(b"stored\n") {
                    Ok(Put::Stored)
                } else {
                    Err(unavailable(format!(
                        "storing {name} in {}: unexpected answer from the archive host ({})",
                        self.describe(),
                        String::from_utf8_lossy(&r.stdout[..r.stdout.len().min(80)])
                    )))
                }
            }
        }
    }

    /// Make the location an archive (`wal-ship init`): the directory if missing, the marker
    /// if missing. True when the marker was created.
    pub fn init(&self) -> anyhow::Result<bool> {
        match &self.loc {
            Location::Local(root) => {
                fs::create_dir_all(root).with_context(|| {
                    format!("creating the archive directory {}", root.display())
                })?;
                ensure_marker(root)
            }
            Location::Ssh(d) => {
                let marker = marker_contents();
                let r = ssh::run(d, &self.ssh, ssh::INIT, &[d.path.as_str(), &marker], &[])?;
                self.check_remote(&r, "creating", "the archive")?;
                Ok(r.stdout.starts_with(b"created"))
            }
        }
    }

    /// Read one object; `None` when the archive is there but the object is not.
    pub fn get(&self, name: &WalName) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.get_many(std::slice::from_ref(name))?.pop().flatten())
    }

    /// Read several objects (one round trip over ssh).
    pub fn get_many(&self, names: &[WalName]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let rels: Vec<String> = names.iter().map(rel_path).collect();
        self.get_rel(&rels)
    }

    /// Read objects by relative path.
    pub fn get_rel(&self, rels: &[String]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        match &self.loc {
            Location::Local(root) => {
                let mut out = Vec::with_capacity(rels.len());
                let mut checked = false;
                for rel in rels {
                    let path = root.join(rel);
                    match fs::read(&path) {
                        Ok(b) => out.push(Some(b)),
                        Err(e) if e.kind() == IoKind::NotFound => {
                            if !checked {
                                check_local(root)?;
                                checked = true;
                            }
                            out.push(None);
                        }
                        Err(e) => {
                            return Err(e).with_context(|| format!("reading {}", path.display()))
                        }
                    }
                }
                Ok(out)
            }
            Location::Ssh(d) => {
                let mut list = rels.join("\n");
                list.push('\n');
                let r = ssh::run(d, &self.ssh, ssh::GET_MANY, &[&d.path], &[list.as_bytes()])?;
                self.check_remote(&r, "reading", &rels.join(", "))?;
                parse_get_many(&r.stdout, rels.len()).ok_or_else(|| {
                    unavailable(format!(
                        "reading from {}: the answer was cut short (connection lost?)",
                        self.describe()
                    ))
                })
            }
        }
    }

    /// List every object and temp file.
    pub fn list(&self) -> anyhow::Result<Listing> {
        let mut listing = Listing::default();
        let now = SystemTime::now();
        let mut add = |rel: String, size: u64, mtime: SystemTime| {
            let Some((dir, file)) = rel.split_once('/') else {
                return;
            };
            if file.starts_with('.') && file.ends_with(".tmp") {
                listing.temps.push(TempEntry {
                    size,
                    age: now.duration_since(mtime).unwrap_or_default(),
                    rel,
                });
            } else if let Some(n) = file.strip_suffix(SUFFIX).and_then(WalName::try_parse) {
                if n.dir() == dir {
                    listing.objects.push(Entry { name: n, rel, size });
                }
            }
        };
        match &self.loc {
            Location::Local(root) => {
                check_local(root)?;
                let read =
                    |p: &Path| fs::read_dir(p).with_context(|| format!("listing {}", p.display()));
                for d in read(root)? {
                    let d = d.with_context(|| format!("listing {}", root.display()))?;
                    if !d.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    let dname = d.file_name().to_string_lossy().into_owned();
                    for f in read(&d.path())? {
                        let f = f.with_context(|| format!("listing {}", d.path().display()))?;
                        let Ok(m) = f.metadata() else { continue };
                        if !m.is_file() {
                            continue;
                        }
                        let rel = format!("{dname}/{}", f.file_name().to_string_lossy());
                        add(rel, m.len(), m.modified().unwrap_or(now));
                    }
                }
            }
            Location::Ssh(d) => {
                let r = ssh::run(d, &self.ssh, ssh::LIST, &[&d.path], &[])?;
                self.check_remote(&r, "listing", "")?;
                for line in String::from_utf8_lossy(&r.stdout).lines() {
                    let mut parts = line.splitn(3, ' ');
                    let (Some(size), Some(mtime), Some(rel)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let secs: f64 = mtime.parse().unwrap_or(0.0);
                    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0));
                    add(rel.to_owned(), size.parse().unwrap_or(0), mtime);
                }
            }
        }
        listing.objects.sort_by(|a, b| a.name.cmp(&b.name));
        listing.temps.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(listing)
    }

    /// Remove objects or temp files by relative path (missing ones are fine).
    pub fn remove(&self, rels: &[String]) -> anyhow::Result<()> {
        if rels.is_empty() {
            return Ok(());
        }
        match &self.loc {
            Location::Local(root) => {
                check_local(root)?;
                let mut dirs = std::collections::BTreeSet::new();
                for rel in rels {
                    let p = root.join(rel);
                    match fs::remove_file(&p) {
                        Ok(()) => {
                            dirs.insert(p.parent().map(Path::to_path_buf));
                        }
                        Err(e) if e.kind() == IoKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("removing {}", p.display()))
                        }
                    }
                }
                for d in dirs.into_iter().flatten() {
                    fsync_dir(&d)?;
                }
                Ok(())
            }
            Location::Ssh(d) => {
                let mut list = rels.join("\n");
                list.push('\n');
                let r = ssh::run(d, &self.ssh, ssh::REMOVE, &[&d.path], &[list.as_bytes()])?;
                self.check_remote(&r, "removing", "")
            }
        }
    }

    /// Turn a remote script's failure into a classified error.
    fn check_remote(&self, r: &ssh::Remote, doing: &str, what: &str) -> anyhow::Result<()> {
        let what = if what.is_empty() {
            String::new()
        } else {
            format!(" {what}")
        };
        let place = self.describe();
        match r.code {
            Some(0) => Ok(()),
            Some(ssh::EXIT_NO_ARCHIVE) => Err(unavailable(format!(
                "{doing}{what}: the archive {place} is not there: {}",
                r.reason()
            ))),
            Some(ssh::EXIT_IO) => Err(shared::err(
                ErrorKind::Io,
                format!(
                    "{doing}{what} in {place}: I/O error on the archive host: {}",
                    r.reason()
                ),
            )),
            Some(ssh::EXIT_SHORT) => Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "{doing}{what} in {place}: {}; nothing was stored",
                    r.reason()
                ),
            )),
            other => Err(unavailable(format!(
                "{doing}{what} in {place}: the remote command failed (exit {}): {}",
                other.map_or("signal".into(), |c| c.to_string()),
                r.reason()
            ))),
        }
    }
}

/// Parse the `GET_MANY` stream.
fn parse_get_many(mut s: &[u8], n: usize) -> Option<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = s.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&s[..nl]).ok()?;
        s = &s[nl + 1..];
        if line == "-" {
            out.push(None);
        } else {
            let size: usize = line.strip_prefix("+ ")?.trim().parse().ok()?;
            if s.len() < size {
                return None;
            }
            out.push(Some(s[..size].to_vec()));
            s = &s[size..];
        }
    }
    Some(out)
}

/// The archive directory and its marker must exist: otherwise it is not mounted, or the
/// path is wrong, and "not found" would be a lie.
fn check_local(root: &Path) -> anyhow::Result<()> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(unavailable(format!(
                "the archive {} is not a directory",
                root.display()
            )))
        }
        Err(e) => {
            return Err(e).with_kind_context(ErrorKind::Unavailable, || {
                format!(
                    "the archive directory {} is not there (not mounted? wrong path?)",
                    root.display()
                )
            })
        }
    }
    require_marker(root)
}

fn fsync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of directory {}", dir.display()))
}

/// Removes a temp file when dropped, unless disarmed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// The name is taken. A duplicate push acknowledges the archived copy, so make sure it is
/// durable: the push that stored it may have been killed between its rename and its
/// directory fsync.
fn existing(file: &Path, dir: &Path, prefix: Vec<u8>) -> anyhow::Result<Put> {
    let f = fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    f.sync_all()
        .with_context(|| format!("fsync of {}", file.display()))?;
    fsync_dir(dir)?;
    Ok(Put::Exists { prefix, size })
}

fn temp_name(dir: &Path, file: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(".{file}.{}.{nanos}.tmp", std::process::id()))
}

/// Write `parts` to a new temp file in `dir` and fsync it.
fn write_temp(dir: &Path, file: &str, parts: &[&[u8]]) -> anyhow::Result<TempFile> {
    let path = temp_name(dir, file);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let guard = TempFile(Some(path.clone()));
    parts
        .iter()
        .try_for_each(|p| f.write_all(p))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(guard)
}

/// Move `tmp` to `dest` unless `dest` exists. `Ok(false)`: it exists.
fn link_no_clobber(tmp: &Path, dest: &Path) -> anyhow::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, tmp, None, dest, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        // The file system cannot do it (older NFS, some FUSE): link() never clobbers either.
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => match fs::hard_link(tmp, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == IoKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("linking {}", dest.display())),
        },
        Err(e) => {
            Err(std::io::Error::from(e)).with_context(|| format!("renaming to {}", dest.display()))
        }
    }
}

fn read_prefix(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::File::open(path) {
        Ok(f) => {
            let mut buf = Vec::with_capacity(MAX_HEADER);
            f.take(MAX_HEADER as u64)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// An archive is a directory `wal-ship init` marked: a share that is not mounted leaves an
/// empty directory, where a push would be acknowledged and then hidden, and a read would
/// take "not found" for the truth.
fn require_marker(root: &Path) -> anyhow::Result<()> {
    match fs::metadata(root.join(MARKER)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == IoKind::NotFound => {
            Err(unavailable(not_an_archive(&root.display().to_string())))
        }
        Err(e) => Err(e).with_context(|| format!("checking {}", root.join(MARKER).display())),
    }
}

/// Why `place` (no marker) is refused, and the fix.
fn not_an_archive(place: &str) -> String {
    format!(
        "{place} is not a wal-ship archive ({MARKER} is missing): a share that is not mounted, a \
         wrong path, or a new archive; for a new one run 'wal-ship init --archive {place}' once \
         (PostgreSQL keeps the WAL and retries meanwhile)"
    )
}

/// Write the marker unless it is there; true when this call wrote it.
fn ensure_marker(root: &Path) -> anyhow::Result<bool> {
    if root.join(MARKER).exists() {
        return Ok(false);
    }
    let mut text = marker_contents();
    text.push('\n');
    let tmp = write_temp(root, MARKER, &[text.as_bytes()])?;
    let path = tmp.0.as_deref().expect("armed");
    // Someone else may have made it meanwhile: theirs is as good as ours.
    link_no_clobber(path, &root.join(MARKER))?;
    drop(tmp);
    fsync_dir(root)?;
    Ok(true)
}

fn local_put(root: &Path, name: &WalName, parts: &[&[u8]]) -> anyhow::Result<Put> {
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(unavailable(format!(
                "the archive directory {} does not exist: create it (writable by the user \
                 PostgreSQL runs as) or fix --to",
                root.display()
            )))
        }
    }
    require_marker(root)?;
    let dir = root.join(name.dir());
    match fs::create_dir(&dir) {
        Ok(()) => fsync_dir(root)?,
        Err(e) if e.kind() == IoKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let file = format!("{name}{SUFFIX}");
    let dest = dir.join(&file);
    // The common duplicate case (a retry after a crash) costs one small read, no write.
    if let Some(prefix) = read_prefix(&dest)? {
        return existing(&dest, &dir, prefix);
    }
    let tmp = write_temp(&dir, &file, parts)?;
    let stored = link_no_clobber(tmp.0.as_deref().expect("armed"), &dest)?;
    // After a rename the temp name is gone; after the link() fallback, or when the name was
    // taken, it is removed here.
    drop(tmp);
    if !stored {
        let prefix = read_prefix(&dest)?.unwrap_or_default();
        return existing(&dest, &dir, prefix);
    }
    fsync_dir(&dir)?;
    Ok(Put::Stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_many_stream_parses_and_detects_truncation() {
        let s = b"+ 3\nabc-\n+ 0\n";
        assert_eq!(
            parse_get_many(s, 3).unwrap(),
            vec![Some(b"abc".to_vec()), None, Some(vec![])]
        );
        assert!(parse_get_many(b"+ 5\nabc", 1).is_none());
        assert!(parse_get_many(b"-\n", 2).is_none());
    }
}
