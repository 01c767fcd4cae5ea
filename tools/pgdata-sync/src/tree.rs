//! What a copy of a data directory holds: the same rules as a base backup (PostgreSQL's
//! `basebackup.c`), applied alike on both sides so that their lists compare.
//!
//! Left out: the contents of the directories the server empties or refills at start (and
//! `pg_wal`, whose WAL streams from the slot), the files of one running server
//! (`postmaster.pid`, `backup_label`, ...), temporary files and relations. Tablespaces (links
//! in `pg_tblspc`) and any other symbolic link are refused: a resumed copy does not handle them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use shared::{ErrorKind, ResultExt};

/// The unit of comparison by default (a PostgreSQL page): a block that differs is sent whole.
pub const BLOCK: usize = 8 * 1024;

/// Directories kept, their contents not (basebackup.c's excludeDirContents, and pg_wal).
pub const EMPTIED_DIRS: &[&str] = &[
    "pg_wal",
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files of one running server or one backup (basebackup.c's excludeFiles).
const SKIPPED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
    crate::TOKEN_FILE,
];

/// The control file: sent last, once everything else is in place (as pg_basebackup does).
pub const CONTROL_FILE: &str = "global/pg_control";

/// Where `apply` leaves the control file until `seal` puts it in place.
pub const CONTROL_PENDING: &str = "global/pg_control.pgdata-sync";

/// One directory or regular file, its path relative to the data directory with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub dir: bool,
    pub mode: u32,
    pub size: u64,
}

/// Whether a base backup leaves `path` (relative, `/`-separated) out.
pub fn skipped(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let in_emptied = path
        .split_once('/')
        .is_some_and(|(top, _)| EMPTIED_DIRS.contains(&top));
    in_emptied
        || SKIPPED_FILES.contains(&path)
        || name.starts_with("pg_internal.init")
        || name.starts_with("pgsql_tmp")
        || (path.starts_with("base/") && temp_relation(name))
}

/// A temporary relation's file: `t<backend>_<relfilenode>[_fork][.segment]`.
fn temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, node)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && node.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// Every entry of the data directory `root` that a copy holds, sorted by path. Entries that
/// vanish while it looks (a table dropped meanwhile) are left out, as a base backup does.
pub fn walk(root: &Path) -> anyhow::Result<Vec<Entry>> {
    let meta = fs::metadata(root).with_kind_context(ErrorKind::DataErr, || {
        format!("{}: no such data directory", root.display())
    })?;
    if !meta.is_dir() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut out = Vec::new();
    let mut it = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(next) = it.next() {
        let entry = match next {
            Ok(e) => e,
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue
            }
            Err(e) => {
                return Err(e).with_kind_context(ErrorKind::Io, || {
                    format!("cannot read the directory tree of {}", root.display())
                })
            }
        };
        let rel = entry
            .path()
            .strip_prefix(root)
            .context("a path outside the data directory")?;
        let path = rel
            .to_str()
            .ok_or_else(|| {
                shared::err(
                    ErrorKind::DataErr,
                    format!("{}: a file name that is not UTF-8", rel.display()),
                )
            })?
            .to_owned();
        if skipped(&path) {
            if entry.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let ft = entry.file_type();
        if ft.is_symlink() && path != "pg_wal" {
            let what = if path.starts_with("pg_tblspc/") {
                "a tablespace"
            } else {
                "a symbolic link"
            };
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "{path} in {} is {what}, which a resumed copy does not handle: start the \
                     copy again from nothing (migrate.sh --fresh-copy)",
                    root.display()
                ),
            ));
        }
        let meta = match fs::metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_kind_context(ErrorKind::Io, || {
                    format!("cannot read {}", entry.path().display())
                })
            }
        };
        let dir = meta.is_dir();
        if !dir && !meta.is_file() {
            // Sockets, pipes: nothing a copy holds.
            continue;
        }
        out.push(Entry {
            path,
            dir,
            mode: meta.permissions().mode() & 0o7777,
            size: if dir { 0 } else { meta.len() },
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_backup_leaves_these_out() {
        for p in [
            "postmaster.pid",
            "backup_label",
            "pg_wal/000000010000000000000001",
            "pg_replslot/s/state",
            "global/pg_internal.init",
            "base/5/pgsql_tmp",
            "base/pgsql_tmp/pgsql_tmp1.0",
            "base/5/t3_16384",
            "base/5/t12_16384_fsm",
        ] {
            assert!(skipped(p), "{p}");
        }
        for p in [
            "pg_wal",
            "base/5/16384",
            "base/5/16384_fsm",
            "global/pg_control",
            "postgresql.auto.conf",
            "base/5/t_x",
            "pg_xact/0000",
        ] {
            assert!(!skipped(p), "{p}");
        }
    }
}
