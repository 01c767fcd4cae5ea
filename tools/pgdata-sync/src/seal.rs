//! `pgdata-sync seal DIR`: the last step of a resumed copy, once `pg_backup_stop()` has
//! returned the backup label (on stdin). The label is written first, then the control file
//! `apply` left aside goes into place: the copy never looks like a cluster without the label
//! that tells recovery where to begin (without it, PostgreSQL would start from the control
//! file's later checkpoint over blocks copied before it, and not know).

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;
use shared::{ErrorKind, ResultExt, Status};

use crate::tree::{CONTROL_FILE, CONTROL_PENDING};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The copy `apply` brought up to date.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct Sealed {
    dir: String,
    start_wal_location: String,
}

impl shared::Record for Sealed {
    const TYPE: &'static str = "sealed";
}

pub fn run(args: Args) -> anyhow::Result<Status> {
    let mut out = shared::Output::stdout();
    let root = args.dir;
    crate::not_running(&root, "sealing it")?;
    let mut label = String::new();
    std::io::stdin()
        .read_to_string(&mut label)
        .with_kind_context(ErrorKind::DataErr, || {
            "cannot read the backup label on stdin"
        })?;
    let start = label
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("START WAL LOCATION: "))
        .map(|l| l.split(' ').next().unwrap_or("").to_owned())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            shared::err(
                ErrorKind::DataErr,
                "stdin is not a backup label (its first line is not START WAL LOCATION: ...): \
                 give it what pg_backup_stop() returned as labelfile",
            )
        })?;
    let pending = root.join(CONTROL_PENDING);
    if !pending.exists() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "nothing to seal in {}: no {CONTROL_PENDING} (run pgdata-sync apply to the end first)",
                root.display()
            ),
        ));
    }
    let _lock = crate::lock(&root)?;
    let tmp = root.join("backup_label.pgdata-sync");
    let label_path = root.join("backup_label");
    fs::write(&tmp, label.as_bytes())
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, &label_path))
        .and_then(|()| File::open(&root)?.sync_all())
        .with_kind_context(ErrorKind::Io, || {
            format!("cannot write {}", label_path.display())
        })?;
    let control = root.join(CONTROL_FILE);
    fs::rename(&pending, &control)
        .and_then(|()| File::open(root.join("global"))?.sync_all())
        .with_kind_context(ErrorKind::Io, || {
            format!("cannot put {} in place", control.display())
        })?;
    out.emit(&Sealed {
        dir: root.display().to_string(),
        start_wal_location: start,
    })?;
    out.finish(&serde_json::json!({}))
}
