//! Running work items on a few threads and handling their results on the calling thread:
//! tables `--jobs` at a time in both modes, differing chunks in the engine.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

/// Run `work(i)` for `i` in `0..n` on up to `jobs` threads, and `handle` each result on the
/// calling thread as it arrives (in completion order). If `handle` fails, no new items are
/// started, the running ones finish, and the error is returned.
pub(crate) fn parallel<R: Send>(
    n: usize,
    jobs: usize,
    work: impl Fn(usize) -> R + Sync,
    mut handle: impl FnMut(usize, R) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, R)>();
    thread::scope(|s| {
        let (next, abort, work) = (&next, &abort, &work);
        for _ in 0..jobs.clamp(1, n.max(1)) {
            let tx = tx.clone();
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n || abort.load(Ordering::SeqCst) {
                    return;
                }
                if tx.send((i, work(i))).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for (i, r) in rx.iter() {
            if let Err(e) = handle(i, r) {
                abort.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        Ok(())
    })
}
