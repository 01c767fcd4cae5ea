//! `wal-ship`: ship PostgreSQL WAL files into an archive (a local directory or one on another
//! host over ssh) and back: compressed, checksummed, atomic, idempotent.
//!
//! Used three ways: as `archive_command` (`push`), as `restore_command` (`fetch`), and from
//! cron (`sweep`, `verify`, `clean`, `status`). The contract with PostgreSQL shapes every
//! choice here:
//!
//! - `push` exits 0 only once the file is durably stored (temp file, fsync, no-clobber rename,
//!   directory fsync), or when the archive already holds the very same bytes (a retry after a
//!   crash). Every failure exits with a code from 1 to 125, which PostgreSQL retries; a
//!   different file under the same name is refused, never overwritten.
//! - `fetch` exits 1 quietly when the file is not in the archive: PostgreSQL asks for files
//!   that do not exist as a matter of course, and that is how recovery finds the end of the
//!   archive. Anything that is *not* "not in the archive" must not look like it, or recovery
//!   would end early and fork a timeline: a corrupt object exits 126 (PostgreSQL stops
//!   recovery with FATAL); an unreachable archive or a local I/O error exits 126 too, unless
//!   the server is a standby (`standby.signal` in the data directory, which is
//!   `restore_command`'s working directory), where PostgreSQL retries ordinary failures
//!   forever and the ordinary code (69, 74, ...) is the better answer. `--on-error` overrides.
//!
//! Modules: [`name`] (WAL file names), [`segment`] (page header checks), [`object`] (the
//! stored format), [`archive`] and [`ssh`] (the transports), and one module per command.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use shared::Status;

pub mod archive;
mod clean;
mod fetch;
mod init;
pub mod name;
pub mod object;
mod push;
pub mod segment;
pub mod ssh;
mod status;
mod sweep;
mod verify;

pub use fetch::OnError;

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "wal-ship",
    version,
    about = "Ship PostgreSQL WAL files into an archive (local or ssh): compressed, checksummed, \
             atomic, idempotent.",
    after_help = "Exit codes: 0 ok; 1 not in the archive (fetch), problems found (verify) or \
                  archiving failing (status); 2 usage; 65 bad input (not a WAL file, truncated, \
                  a different file already archived under that name); 69 archive unreachable; \
                  74 I/O error (disk full, permission denied); 75 retry later; 126 stop: \
                  corrupt archive object (fetch), or any fetch failure outside standby mode.\n\
                  Records on stdout are JSON lines (shared/PROTOCOL.md)."
)]
pub struct Cli {
    #[command(flatten)]
    pub out: shared::human::OutputArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// ssh options shared by every command that reaches an archive.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SshArgs {
    /// An ssh option for ssh:// archives, KEY=VALUE (repeatable), e.g.
    /// IdentityFile=/var/lib/postgresql/.ssh/archive_key or UserKnownHostsFile=FILE. More
    /// come from PGS_SSH_OPTS (ssh words, shell-quoted), after these. BatchMode=yes is always
    /// on; host key checking cannot be turned off.
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// An ssh config file for ssh:// archives (ssh -F).
    #[arg(long = "ssh-config", value_name = "FILE", env = "WAL_SHIP_SSH_CONFIG")]
    pub config: Option<String>,
}

impl SshArgs {
    /// The options, with PGS_SSH_OPTS, checked against the policy.
    fn options(&self) -> anyhow::Result<shared::host::SshOptions> {
        ssh::options(
            &self.options,
            self.config.as_deref(),
            &std::env::var("PGS_SSH_OPTS").unwrap_or_default(),
        )
    }
}

/// Encryption at rest.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Encrypt (push, sweep) or decrypt (fetch, verify) with the key in FILE: 32 random
    /// bytes or 64 hex digits (`openssl rand -hex 32 > FILE; chmod 600 FILE`).
    /// XChaCha20-Poly1305; the key is never logged.
    #[arg(long, value_name = "FILE", env = "WAL_SHIP_KEY_FILE")]
    pub encrypt_key_file: Option<PathBuf>,
}

impl KeyArgs {
    fn load(&self) -> anyhow::Result<Option<object::SecretKey>> {
        self.encrypt_key_file
            .as_deref()
            .map(object::SecretKey::from_file)
            .transpose()
    }
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Archive WAL files (archive_command = 'wal-ship push %p --to DEST').
    Push(push::Args),
    /// Restore a WAL file (restore_command = 'wal-ship fetch %f %p --from DEST').
    Fetch(fetch::Args),
    /// Ship every finished WAL file in a directory (pg_wal with .ready files, or a
    /// pg_receivewal directory), in order, in parallel, resumably (cron).
    Sweep(sweep::Args),
    /// Archiving lag and failures of a server (pg_stat_archiver) against the archive.
    Status(status::Args),
    /// Check every object's checksum, the segment sequence for gaps, and timeline history.
    Verify(verify::Args),
    /// Remove WAL files older than a segment (archive_cleanup_command = 'wal-ship clean
    /// --archive DEST --keep-from %r'), or than what the N newest base backups need
    /// (--keep-backups N).
    Clean(clean::Args),
    /// Make a directory a wal-ship archive, once, before the first push (push refuses a
    /// directory without the marker: a share that is not mounted looks like an empty one).
    Init(init::Args),
}

/// Run `wal-ship` with these arguments (the first is the program name).
pub fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    let fetching = args.get(1).is_some_and(|a| a == "fetch");
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // A mistyped restore_command must not read as "not in the archive" either: outside
        // standby mode that would end recovery at once (see `fetch`).
        Err(e) if fetching && !fetch::standby_mode() && !is_help(&e) => {
            return Err(shared::err(
                shared::ErrorKind::Fatal,
                format!(
                    "{}; exiting 126 so that PostgreSQL stops recovery instead of ending it \
                     early: fix restore_command (try 'wal-ship fetch --help')",
                    shared::one_line_clap(&e)
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    cli.out.apply();
    // push and fetch keep the default action: PostgreSQL tells its own SIGTERM (a shutdown)
    // from a failure by the signal (see shared::signals).
    if !matches!(cli.command, Command::Push(_) | Command::Fetch(_)) {
        shared::signals::stop_with_summary(shared::signals::OnStop::Interrupted)?;
    }
    match cli.command {
        Command::Push(a) => push::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Status(a) => status::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Clean(a) => clean::run(a),
        Command::Init(a) => init::run(a),
    }
}

fn is_help(e: &clap::Error) -> bool {
    use clap::error::ErrorKind as K;
    matches!(e.kind(), K::DisplayHelp | K::DisplayVersion)
}

/// Now, RFC 3339 in UTC with milliseconds (`2026-11-25T18:51:36.123Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// An stdout writer: JSON lines, or nothing with `--quiet` (not even after a fatal error: make
/// it before anything can fail).
fn output(quiet: bool) -> shared::Output {
    if quiet {
        shared::Output::discard()
    } else {
        shared::Output::stdout()
    }
}
