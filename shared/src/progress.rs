//! Progress bars on stderr, shown only when stderr is a terminal (never in pipelines, cron or
//! CI logs).

use std::io::IsTerminal;

use std::sync::Mutex;

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle, WeakProgressBar};

/// The bar on screen, if any: lines written to the terminal while it is drawn go through
/// [`suspend`], so that they end up above it instead of inside it.
static ACTIVE: Mutex<Option<WeakProgressBar>> = Mutex::new(None);

/// Run `f` (a write to the terminal) with the active bar, if any, cleared and drawn again
/// after it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE
        .lock()
        .ok()
        .and_then(|a| a.as_ref().and_then(WeakProgressBar::upgrade));
    match bar {
        Some(b) if !b.is_hidden() => b.suspend(f),
        _ => f(),
    }
}

fn activate(pb: &ProgressBar) {
    if let Ok(mut a) = ACTIVE.lock() {
        *a = Some(pb.downgrade());
    }
}

/// A bar of `len` drawn with `template` (`=> ` for the bar); hidden unless stderr is a
/// terminal. The callers label it: `bar` in its message, `bytes_bar` in its prefix.
fn styled(len: u64, template: &str) -> ProgressBar {
    ProgressBar::with_draw_target(Some(len), draw_target()).with_style(
        ProgressStyle::with_template(template)
            .expect("static template")
            .progress_chars("=> "),
    )
}

/// A bar of `len` steps labelled `what`; hidden unless stderr is a terminal.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = styled(len, "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}");
    pb.set_message(what.to_owned());
    activate(&pb);
    pb
}

/// A bar over `total` bytes labelled `what` (sizes and rate in binary units, the message after
/// it: e.g. the rows done); hidden unless stderr is a terminal.
pub fn bytes_bar(total: u64, what: &str) -> ProgressBar {
    let pb = styled(
        total,
        "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    );
    pb.set_prefix(what.to_owned());
    activate(&pb);
    pb
}

/// A spinner with a message; hidden unless stderr is a terminal.
pub fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, draw_target());
    pb.set_message(what.to_owned());
    activate(&pb);
    pb
}

fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
