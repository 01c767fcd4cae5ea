//! The one exit-code table of pgshift, and the error classes that map onto it.
//!
//! Scripts branch on these numbers, so they are API (README "Exit codes"):
//!
//! | code | meaning                                                        | [`ErrorKind`] / [`Status`] |
//! |-----:|----------------------------------------------------------------|----------------------------|
//! | 0    | ok; hosts equal; nothing to do                                 | [`Status::Ok`]             |
//! | 1    | ran fine, the answer is "different" / "not there"              | [`Status::Differences`], [`ErrorKind::NotFound`] |
//! | 2    | usage error (bad flag or argument)                             | [`ErrorKind::Usage`]       |
//! | 65   | bad input data (malformed record, bad WAL name, unknown table) | [`ErrorKind::DataErr`]     |
//! | 69   | a host is unavailable (cannot connect, auth refused)           | [`ErrorKind::Unavailable`] |
//! | 70   | internal error: a bug in pgshift                               | [`ErrorKind::Internal`]    |
//! | 74   | local I/O error (disk full, permission denied)                 | [`ErrorKind::Io`]          |
//! | 75   | temporary failure: retrying later may succeed                  | [`ErrorKind::Retry`]       |
//! | 126  | stop the caller: continuing would be unsafe                    | [`ErrorKind::Fatal`]       |
//!
//! Code 126 exists for one caller: PostgreSQL's `restore_command` treats every exit code up to
//! 125 as "file not in the archive" and may then end recovery early and fork a timeline, while
//! an exit code above 125 stops recovery with FATAL. `wal-ship fetch` uses it for a corrupt
//! segment. It is the code a shell gives a command it cannot execute, which is consistent: a
//! restore_command that cannot run must stop recovery too.
//!
//! Tools never call `process::exit`: they return an error (or a [`Status`]) and
//! [`crate::run_main`] maps it here, in exactly one place.

use std::fmt;

/// The class of a failure. Each maps to one exit code; see the module table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Exit 1: the thing asked for does not exist (e.g. a WAL segment not in the archive).
    /// Reported quietly: PostgreSQL asks for such files as a matter of course.
    NotFound,
    /// Exit 2: the command line is wrong.
    Usage,
    /// Exit 65 (EX_DATAERR): input data is malformed or names something that is not there.
    DataErr,
    /// Exit 69 (EX_UNAVAILABLE): a host or service cannot be reached or refused us.
    Unavailable,
    /// Exit 70 (EX_SOFTWARE): an internal error, i.e. a bug.
    Internal,
    /// Exit 74 (EX_IOERR): a local I/O error.
    Io,
    /// Exit 75 (EX_TEMPFAIL): a temporary failure; retrying may succeed.
    Retry,
    /// Exit 126: the caller must stop rather than treat this as an ordinary failure.
    Fatal,
}

impl ErrorKind {
    /// The process exit code for this class.
    pub const fn code(self) -> u8 {
        match self {
            ErrorKind::NotFound => 1,
            ErrorKind::Usage => 2,
            ErrorKind::DataErr => 65,
            ErrorKind::Unavailable => 69,
            ErrorKind::Internal => 70,
            ErrorKind::Io => 74,
            ErrorKind::Retry => 75,
            ErrorKind::Fatal => 126,
        }
    }

    /// The snake_case name used in `error` records.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Usage => "usage",
            ErrorKind::DataErr => "data_err",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::Io => "io",
            ErrorKind::Retry => "retry",
            ErrorKind::Fatal => "fatal",
        }
    }

    /// How bad a failure of this class is, for "exit code reflects the worst outcome".
    /// Higher is worse. A temporary failure is better than a hard one; a bug is worse than
    /// anything the environment did; `Fatal` is worst because the caller must stop.
    pub const fn severity(self) -> u8 {
        match self {
            ErrorKind::NotFound => 0,
            ErrorKind::Retry => 1,
            ErrorKind::DataErr => 2,
            ErrorKind::Usage => 3,
            ErrorKind::Io => 4,
            ErrorKind::Unavailable => 5,
            ErrorKind::Internal => 6,
            ErrorKind::Fatal => 7,
        }
    }

    /// The worse of two classes (see [`ErrorKind::severity`]).
    pub fn worst(self, other: ErrorKind) -> ErrorKind {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified error. Create one where the class is known (`shared::Error::new(
/// ErrorKind::DataErr, "...")`) and let `anyhow` context wrap it on the way up; the class is
/// found again by [`classify`], however deep in the chain it sits.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of class `kind` whose one-line message names the problem and the fix.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Build an `anyhow::Error` of a given class: `return Err(shared::err(ErrorKind::Usage, ..))`.
pub fn err(kind: ErrorKind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Error::new(kind, message))
}

/// Attach an error class to any fallible value, keeping the original error as the source so
/// that `{:#}` still prints the whole chain.
pub trait ResultExt<T> {
    /// Classify the error as `kind`, with `message` as context above the original error.
    fn kind_context<M: Into<String>>(self, kind: ErrorKind, message: M) -> anyhow::Result<T>;
    /// Like [`ResultExt::kind_context`], with the message built lazily.
    fn with_kind_context<M: Into<String>, F: FnOnce() -> M>(
        self,
        kind: ErrorKind,
        f: F,
    ) -> anyhow::Result<T>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn kind_context<M: Into<String>>(self, kind: ErrorKind, message: M) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(Error::new(kind, message)))
    }

    fn with_kind_context<M: Into<String>, F: FnOnce() -> M>(
        self,
        kind: ErrorKind,
        f: F,
    ) -> anyhow::Result<T> {
        self.map_err(|e| e.into().context(Error::new(kind, f())))
    }
}

/// What a tool's `run` returns when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exit 0.
    Ok,
    /// Exit 1: the run completed and found differences (like `diff`, `grep`).
    Differences,
    /// The run kept going past per-item failures, which it already reported; exit with the
    /// worst one's code.
    Failed(ErrorKind),
}

impl Status {
    /// The process exit code for this status.
    pub const fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Differences => 1,
            Status::Failed(kind) => kind.code(),
        }
    }
}

/// Find the class of an error by walking its chain: the outermost [`Error`] wins; otherwise
/// known error types are classified (I/O, PostgreSQL, clap); otherwise it is a bug.
pub fn classify(err: &anyhow::Error) -> ErrorKind {
    if let Some(e) = find::<Error>(err) {
        return e.kind();
    }
    if let Some(e) = find::<clap::Error>(err) {
        return match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                ErrorKind::NotFound // unreachable in practice: run_main handles these first
            }
            _ => ErrorKind::Usage,
        };
    }
    for cause in err.chain() {
        #[cfg(feature = "pg")]
        if let Some(e) = cause.downcast_ref::<tokio_postgres::Error>() {
            return crate::pg::classify_pg_error(e);
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return classify_io(e);
        }
        if cause.is::<serde_json::Error>() {
            return ErrorKind::DataErr;
        }
    }
    ErrorKind::Internal
}

/// The class of a local I/O error: network-ish kinds mean a host is unavailable, timeouts and
/// interruptions are retryable, everything else is local I/O.
pub fn classify_io(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => ErrorKind::Unavailable,
        K::TimedOut | K::WouldBlock | K::Interrupted => ErrorKind::Retry,
        K::InvalidData | K::UnexpectedEof => ErrorKind::DataErr,
        _ => ErrorKind::Io,
    }
}

/// The outermost `T` in an error: anyhow's context layers first (outermost first), then the
/// sources of the root error.
pub fn find<T: std::error::Error + Send + Sync + 'static>(err: &anyhow::Error) -> Option<&T> {
    err.downcast_ref::<T>()
        .or_else(|| err.chain().find_map(|c| c.downcast_ref::<T>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_the_documented_one() {
        let table: Vec<(ErrorKind, u8)> = [
            ErrorKind::NotFound,
            ErrorKind::Usage,
            ErrorKind::DataErr,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
            ErrorKind::Io,
            ErrorKind::Retry,
            ErrorKind::Fatal,
        ]
        .into_iter()
        .map(|k| (k, k.code()))
        .collect();
        assert_eq!(
            table,
            vec![
                (ErrorKind::NotFound, 1),
                (ErrorKind::Usage, 2),
                (ErrorKind::DataErr, 65),
                (ErrorKind::Unavailable, 69),
                (ErrorKind::Internal, 70),
                (ErrorKind::Io, 74),
                (ErrorKind::Retry, 75),
                (ErrorKind::Fatal, 126),
            ]
        );
        assert_eq!(Status::Ok.code(), 0);
        assert_eq!(Status::Differences.code(), 1);
        assert_eq!(Status::Failed(ErrorKind::Retry).code(), 75);
    }

    #[test]
    fn outermost_classified_error_wins_through_context() {
        let e = err(ErrorKind::DataErr, "bad WAL name 'x'")
            .context("pushing x")
            .context(Error::new(ErrorKind::Retry, "archive busy"));
        assert_eq!(classify(&e), ErrorKind::Retry);
        let e = err(ErrorKind::DataErr, "bad WAL name 'x'").context("pushing x");
        assert_eq!(classify(&e), ErrorKind::DataErr);
        assert_eq!(format!("{e:#}"), "pushing x: bad WAL name 'x'");
    }

    #[test]
    fn io_errors_are_classified_by_kind() {
        let io = |k| anyhow::Error::new(std::io::Error::from(k)).context("writing");
        assert_eq!(
            classify(&io(std::io::ErrorKind::ConnectionRefused)),
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify(&io(std::io::ErrorKind::PermissionDenied)),
            ErrorKind::Io
        );
        assert_eq!(
            classify(&io(std::io::ErrorKind::TimedOut)),
            ErrorKind::Retry
        );
        assert_eq!(
            classify(&io(std::io::ErrorKind::StorageFull)),
            ErrorKind::Io
        );
    }

    #[test]
    fn unknown_errors_are_bugs() {
        assert_eq!(classify(&anyhow::anyhow!("what?")), ErrorKind::Internal);
    }

    #[test]
    fn kind_context_keeps_the_source() {
        let r: Result<(), std::io::Error> = Err(std::io::ErrorKind::NotFound.into());
        let e = r
            .kind_context(ErrorKind::DataErr, "reading a.jsonl")
            .unwrap_err();
        assert_eq!(classify(&e), ErrorKind::DataErr);
        assert!(format!("{e:#}").starts_with("reading a.jsonl: "));
    }

    #[test]
    fn worst_prefers_the_more_severe() {
        assert_eq!(
            ErrorKind::Retry.worst(ErrorKind::Unavailable),
            ErrorKind::Unavailable
        );
        assert_eq!(ErrorKind::Io.worst(ErrorKind::DataErr), ErrorKind::Io);
    }
}
