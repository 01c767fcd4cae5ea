//! SIGINT and SIGTERM end a run with its records: an `error` and a `summary` with `stopped_by`
//! on stdout, one line on stderr, and an exit code from the table, instead of a silent 130.
//!
//! A tool that can stop anywhere without harm (a comparison, a status, a listing) calls
//! [`stop_with_summary`] once at its start. Tools that must finish a step first (pg-switch,
//! load-gen) watch signals themselves, and so do `wal-ship push`/`fetch`: PostgreSQL tells a
//! SIGTERM during its shutdown from a failed command by the signal, so those keep the default
//! action.
//!
//! This is the one place besides `run_main` that ends the process: the signal arrives on a
//! thread of its own, while the tool's work may be blocked in a query.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::exit::ErrorKind;
use crate::{jsonl, msg};

/// What a stop by signal means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// The run did not get to its answer: an `error` of kind `retry` and exit 75 ("run it
    /// again").
    Interrupted,
    /// A signal is this run's ordinary end (a collector that runs until stopped): exit 0.
    Ends,
}

/// Watch SIGINT and SIGTERM on a thread of its own; the first one ends the stream and the
/// process (see the module). Fails only if the handler cannot be installed.
pub fn stop_with_summary(on_stop: OnStop) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| anyhow::anyhow!("installing the SIGINT/SIGTERM handler: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                std::process::exit(i32::from(end(name, on_stop)));
            }
        })
        .map_err(|e| anyhow::anyhow!("starting the signal thread: {e}"))?;
    Ok(())
}

/// The end of a run stopped by `signal`: the stderr line, the stream's last records, the exit
/// code. Stdout's lock is held from here to the exit (it is reentrant: this thread's own writes
/// go through), so no record of the tool's comes after the summary or inside it.
fn end(signal: &str, on_stop: OnStop) -> u8 {
    let _held = std::io::stdout().lock();
    let code = match on_stop {
        OnStop::Interrupted => {
            let message = format!("interrupted by {signal} before the end: run it again");
            msg::error_line(&message);
            let error = Some((ErrorKind::Retry, message));
            jsonl::end_after_signal(std::io::stdout(), signal, error, jsonl::started());
            ErrorKind::Retry.code()
        }
        OnStop::Ends => {
            msg::error_line(&format!("stopped by {signal}"));
            jsonl::end_after_signal(std::io::stdout(), signal, None, jsonl::started());
            0
        }
    };
    let _ = std::io::stdout().flush();
    code
}

/// A signal seen by a tool that must finish a step first (pg-logical's fence and open,
/// criu-wrap's migrate once the process is frozen): noted, never fatal (0: none).
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicUsize>);

impl Interrupt {
    /// The signal's name, if one came: `SIGTERM`, `SIGINT`, `SIGHUP`.
    pub fn name(&self) -> Option<&'static str> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            2 => Some("SIGINT"),
            1 => Some("SIGHUP"),
            _ => Some("SIGTERM"),
        }
    }

    /// Watch SIGTERM, SIGINT and SIGHUP: noted, never fatal.
    pub fn watch() -> anyhow::Result<Interrupt> {
        let i = Interrupt::default();
        for sig in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register_usize(sig, i.0.clone(), sig as usize)
                .map_err(|e| anyhow::anyhow!("installing a signal handler: {e}"))?;
        }
        Ok(i)
    }
}
