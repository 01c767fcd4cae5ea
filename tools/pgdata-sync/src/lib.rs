//! `pgdata-sync`: bring a partial copy of a PostgreSQL data directory up to date from the
//! running source, sending only the blocks that differ: what a base copy cut short at 80 %
//! needs instead of starting again from zero (PostgreSQL 15 has no incremental backup).
//!
//! Three commands, one pipeline, run by `migrate.sh` between `pg_backup_start()` and
//! `pg_backup_stop()` on the source (the caller's job, as with rsync):
//!
//! ```text
//! pgdata-sync sums DIR      (on the target: a hash of every 8 KiB page, JSON lines)
//!   | pgdata-sync send DIR  (on the source: the blocks whose hash differs, removals, zstd)
//!   | pgdata-sync apply DIR (on the target: written, fsynced; a `synced` record)
//! pgdata-sync seal DIR < label   (after pg_backup_stop(): backup_label, then pg_control)
//! ```
//!
//! The rules of what a copy holds are a base backup's ([`tree`]); the control file goes last.
//! `apply` refuses a directory a server runs in, and a stream cut short fails (exit 65) with
//! the directory left partial: running the pipeline again goes on from there.

use std::ffi::OsString;

use clap::Parser;
use shared::Status;

mod apply;
mod seal;
mod send;
mod sums;
pub mod tree;
pub mod wire;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "pgdata-sync",
    version,
    about = "Bring a partial copy of a PostgreSQL data directory up to date from the source, \
             sending only the blocks that differ: pgdata-sync sums DIR | pgdata-sync send DIR | \
             pgdata-sync apply DIR; then pgdata-sync seal DIR < backup_label.",
    after_help = "Run sums | send | apply between pg_backup_start() and pg_backup_stop() on \
                  the source; then give seal the labelfile pg_backup_stop() returned.\n\
                  Exit codes: 0 ok; 2 usage; 65 bad input (a garbled or cut stream, a \
                  tablespace, a running server in the directory); 74 I/O error.\n\
                  sums and apply write JSON lines; send writes the binary stream \
                  (shared/PROTOCOL.md)."
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// On the target: the size and block hashes of every file of the partial copy.
    Sums(sums::Args),
    /// On the source: read the target's sums on stdin, write what differs on stdout.
    Send(send::Args),
    /// On the target: read send's stream on stdin and bring the copy up to date.
    Apply(apply::Args),
    /// On the target: write the backup label (stdin, from pg_backup_stop()) and put the
    /// control file in place.
    Seal(seal::Args),
}

/// Run `pgdata-sync` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let cli = Cli::try_parse_from(args)?;
    cli.out.apply();
    shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
    match cli.command {
        Command::Sums(a) => sums::run(a),
        Command::Send(a) => send::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Seal(a) => seal::run(a),
    }
}

/// The first 16 bytes of a block's SHA-256: the comparison is against blocks of the same
/// file at the same offset, so 128 bits leave no room for an accidental match.
pub fn block_hash(data: &[u8]) -> [u8; 16] {
    use sha2::Digest;
    let full = sha2::Sha256::digest(data);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// A reader that counts the bytes it passes on, in a counter its owner keeps (the reader may
/// be buried in a decoder).
pub struct Counted<R> {
    inner: R,
    n: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R> Counted<R> {
    /// `inner`, counted; the counter to read the total from.
    pub fn new(inner: R) -> (Self, std::rc::Rc<std::cell::Cell<u64>>) {
        let n = std::rc::Rc::new(std::cell::Cell::new(0));
        (
            Counted {
                inner,
                n: n.clone(),
            },
            n,
        )
    }
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.set(self.n.get() + k as u64);
        Ok(k)
    }
}

/// Read up to `buf.len()` bytes: fewer only at the end of the file.
pub fn read_block(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The file that says which run owns the copy: `sums` writes a new token into it, `send`
/// passes it on in the stream, and `apply` writes only while it still holds its token. A run
/// left behind (its control host died, the pipeline ran on) stops at its next write once a
/// newer run has summed the copy: it never writes over what the newer run compared.
pub const TOKEN_FILE: &str = "pgdata-sync.token";

/// The directory's lock (flock on the directory itself): `sums` holds it while it reads the
/// copy, `apply` for each write.
pub fn lock(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use shared::ResultExt;
    let f = std::fs::File::open(dir).with_kind_context(shared::ErrorKind::Io, || {
        format!("cannot open {}", dir.display())
    })?;
    f.lock().with_kind_context(shared::ErrorKind::Io, || {
        format!("cannot lock {}", dir.display())
    })?;
    Ok(f)
}

/// The token of the run that owns `dir` ("" when none).
pub fn token_of(dir: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(dir.join(TOKEN_FILE)) {
        Ok(t) => Ok(t.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(anyhow::Error::new(e).context(shared::exit::Error::new(
            shared::ErrorKind::Io,
            format!("cannot read {}", dir.join(TOKEN_FILE).display()),
        ))),
    }
}

/// Refuse a data directory a server may be running in.
pub fn not_running(dir: &std::path::Path, doing: &str) -> anyhow::Result<()> {
    let pid = dir.join("postmaster.pid");
    if pid.exists() {
        return Err(shared::err(
            shared::ErrorKind::DataErr,
            format!(
                "{} has a postmaster.pid: a server may be running there, and {doing} would \
                 change its files under it; stop it first (pg_ctl stop -D {})",
                dir.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}
