//! `wal-ship init --archive DEST`: make DEST a wal-ship archive, once, before the first push.
//!
//! An archive is a directory with a marker file (`wal-ship.json`). `push` stores only into a
//! directory that has it: a share that is not mounted leaves an empty directory behind, and
//! segments pushed there would be acknowledged to PostgreSQL, which then recycles its own
//! copies, and hidden from every restore once the share is mounted again (pgBackRest's
//! `stanza-create` is there for the same reason). `init` creates the directory if needed and
//! the marker if missing; on an archive that has one it changes nothing.

use serde::Serialize;
use shared::Status;

use crate::archive::Archive;
use crate::SshArgs;

/// `wal-ship init`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The archive: a directory, file:///dir, or ssh://[user@]host[:port]/dir.
    #[arg(long, value_name = "DEST")]
    archive: String,
    #[command(flatten)]
    ssh: SshArgs,
    /// No records on stdout.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Serialize)]
struct Initialized {
    archive: String,
    created: bool,
}

impl shared::Record for Initialized {
    const TYPE: &'static str = "archive";
}

pub(crate) fn run(a: Args) -> anyhow::Result<Status> {
    let mut out = crate::output(a.quiet);
    let archive = Archive::open(&a.archive, a.ssh.options()?)?;
    let created = archive.init()?;
    out.emit(&Initialized {
        archive: archive.describe(),
        created,
    })?;
    out.finish(&serde_json::json!({ "archive": archive.describe(), "created": created }))
}
