//! The images directory: its layout, the manifest criu-wrap leaves in it, sizes and checksums.
//!
//! Layout of `--images DIR` after a pre-copy dump (P.Haul's, flattened):
//!
//! ```text
//! DIR/pre-1/          first pre-dump round: all memory    (pre-dump.log, stats-dump, pages-*.img)
//! DIR/pre-2/          pages dirtied since pre-1           (parent -> ../pre-1)
//! DIR/                the final dump: pages dirtied since the last round, and everything else
//!                     (parent -> pre-2, dump.log, stats-dump, criu-wrap.json)
//! ```
//!
//! `criu restore -D DIR` follows the `parent` links, so the directory moves as a whole (the
//! links are relative). `criu-wrap.json` records how the dump was taken, so that `restore`
//! repeats the flags CRIU needs on both sides (`--tcp-established`, `--shell-job`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::{ErrorKind, ResultExt};

/// The manifest's file name inside the images directory.
pub const MANIFEST: &str = "criu-wrap.json";

/// What `criu-wrap dump` records about a dump, for `restore` and for people.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Version of this file's format.
    pub format_version: u32,
    /// The dumped process (root of the tree).
    pub pid: u32,
    /// `pre_copy` or `stop_and_copy`.
    pub mode: String,
    /// Pre-dump round directories, oldest first (relative to the images directory).
    pub rounds: Vec<String>,
    /// Dumped with `--tcp-established`.
    pub tcp_established: bool,
    /// Dumped with `--shell-job`.
    pub shell_job: bool,
    /// `--criu-opt` values given to the dump (not repeated on restore: say them again).
    #[serde(default)]
    pub criu_opts: Vec<String>,
    /// The CRIU version that wrote the images.
    #[serde(default)]
    pub criu_version: Option<String>,
    /// The host that wrote them.
    #[serde(default)]
    pub hostname: Option<String>,
}

impl Manifest {
    /// Read `DIR/criu-wrap.json`; `Ok(None)` when there is none (images made by CRIU alone).
    pub fn read(dir: &Path) -> anyhow::Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_kind_context(ErrorKind::DataErr, || {
                    format!("{} is not a criu-wrap manifest", path.display())
                })
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write `DIR/criu-wrap.json`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).context("serialising the manifest")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// Make `dir` (and parents) and insist it is empty: mixing a new dump with an old one's
/// `pages-*.img` would restore garbage.
pub fn prepare_empty_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating images directory {}", dir.display()))?;
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading images directory {}", dir.display()))?;
    if entries.next().is_some() {
        return Err(shared::err(
            ErrorKind::Usage,
            format!(
                "images directory {} is not empty: remove it or pick a new one (a dump never reuses old images)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Regular files under `dir`, relative to it, sorted; symlinks (CRIU's `parent` links) are
/// not followed. With `top_only`, subdirectories are skipped.
pub fn files(dir: &Path, top_only: bool) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(root: &Path, rel: &Path, top_only: bool, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let here = root.join(rel);
        for e in std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
            let e = e.with_context(|| format!("reading {}", here.display()))?;
            let ty = e
                .file_type()
                .with_context(|| format!("inspecting {}", e.path().display()))?;
            let r = rel.join(e.file_name());
            if ty.is_file() {
                out.push(r);
            } else if ty.is_dir() && !top_only {
                walk(root, &r, top_only, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, Path::new(""), top_only, &mut out)?;
    out.sort();
    Ok(out)
}

/// Total size of the regular files under `dir` (recursively), in bytes.
pub fn size(dir: &Path) -> u64 {
    files(dir, false)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Bytes of memory pages in `dir` (top level only): the `pages-*.img` files. The fallback for
/// `pages_written` when CRIU left no `stats-dump`.
pub fn page_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("pages-") && n.ends_with(".img")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// SHA-256 of one file, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 of each of `files` (relative to `dir`).
pub fn sha256_files(dir: &Path, files: &[PathBuf]) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    files
        .iter()
        .map(|f| Ok((f.clone(), sha256_file(&dir.join(f))?)))
        .collect()
}

/// Parse `sha256sum` output ("HASH  PATH" per line; a leading `./` is dropped).
pub fn parse_sha256sum(out: &str) -> BTreeMap<PathBuf, String> {
    out.lines()
        .filter_map(|l| {
            let (hash, path) = l.split_once("  ").or_else(|| l.split_once(" *"))?;
            let path = path.strip_prefix("./").unwrap_or(path);
            Some((PathBuf::from(path), hash.trim().to_lowercase()))
        })
        .collect()
}

/// The files whose sums differ between the two sides (or are missing on the second).
pub fn mismatches(
    local: &BTreeMap<PathBuf, String>,
    remote: &BTreeMap<PathBuf, String>,
) -> Vec<PathBuf> {
    local
        .iter()
        .filter(|(f, h)| remote.get(*f) != Some(*h))
        .map(|(f, _)| f.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sum_output_round_trips() {
        let out = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  ./pre-1/pages-1.img\n\
                   01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b  dump.log\n";
        let m = parse_sha256sum(out);
        assert_eq!(m.len(), 2);
        assert!(m[Path::new("pre-1/pages-1.img")].starts_with("e3b0c442"));
        let mut local = m.clone();
        assert!(mismatches(&local, &m).is_empty());
        local.insert("core-1.img".into(), "00".into());
        local.insert("dump.log".into(), "ff".into());
        assert_eq!(
            mismatches(&local, &m),
            [PathBuf::from("core-1.img"), PathBuf::from("dump.log")]
        );
    }

    #[test]
    fn files_sizes_and_sums() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("pre-1")).unwrap();
        std::fs::write(d.path().join("pre-1/pages-1.img"), vec![1u8; 8192]).unwrap();
        std::fs::write(d.path().join("pages-1.img"), vec![2u8; 4096]).unwrap();
        std::fs::write(d.path().join("core-1.img"), b"").unwrap();
        std::os::unix::fs::symlink("pre-1", d.path().join("parent")).unwrap();
        assert_eq!(
            files(d.path(), false).unwrap(),
            [
                PathBuf::from("core-1.img"),
                PathBuf::from("pages-1.img"),
                PathBuf::from("pre-1/pages-1.img")
            ]
        );
        assert_eq!(files(d.path(), true).unwrap().len(), 2);
        assert_eq!(size(d.path()), 8192 + 4096);
        assert_eq!(page_bytes(d.path()), 4096);
        let sums = sha256_files(d.path(), &[PathBuf::from("core-1.img")]).unwrap();
        assert_eq!(
            sums[Path::new("core-1.img")],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn images_dir_must_be_empty() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        prepare_empty_dir(&dir).unwrap();
        prepare_empty_dir(&dir).unwrap();
        std::fs::write(dir.join("pages-1.img"), b"x").unwrap();
        let e = prepare_empty_dir(&dir).unwrap_err();
        assert_eq!(shared::exit::classify(&e), ErrorKind::Usage);
        assert!(format!("{e:#}").contains("not empty"));
    }

    #[test]
    fn manifest_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(d.path()).unwrap(), None);
        let m = Manifest {
            format_version: 1,
            pid: 42,
            mode: "pre_copy".into(),
            rounds: vec!["pre-1".into()],
            tcp_established: true,
            ..Manifest::default()
        };
        m.write(d.path()).unwrap();
        assert_eq!(Manifest::read(d.path()).unwrap(), Some(m));
        std::fs::write(d.path().join(MANIFEST), b"{").unwrap();
        let e = Manifest::read(d.path()).unwrap_err();
        assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr);
    }
}
