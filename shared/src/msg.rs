//! Human-readable lines on stderr, prefixed with the tool's name (`wal-ship: ...`).
//!
//! Stdout belongs to JSON lines; everything a person reads goes here. Each message is written
//! with one locked `write` so that lines from worker threads do not interleave.

use std::io::Write;
use std::sync::OnceLock;

static TOOL: OnceLock<&'static str> = OnceLock::new();

/// Set the tool name used as the message prefix (done once by [`crate::run_main`]).
pub fn set_tool(name: &'static str) {
    let _ = TOOL.set(name);
}

/// The tool name, or `pgshift` before [`set_tool`] ran (unit tests).
pub fn tool() -> &'static str {
    TOOL.get().copied().unwrap_or("pgshift")
}

/// Write `tool: message` to stderr. Errors writing to stderr are ignored: there is nowhere
/// left to report them.
pub fn error_line(message: &str) {
    // One line, always: server errors carry DETAIL/HINT on their own lines.
    let message = message.replace('\n', " ");
    crate::jsonl::terminal_write(|| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}: {message}", tool());
    });
}

/// `tool: warning: ...` on stderr.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::msg::error_line(&format!("warning: {}", format_args!($($arg)*)))
    };
}

/// `tool: ...` on stderr, for progress notes a person may want to see.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::msg::error_line(&format!($($arg)*))
    };
}
