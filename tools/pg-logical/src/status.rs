//! `status`: where the pair stands, read from the servers (the journal only adds the
//! history): for each database whether the target subscribes and how far the copy is, the
//! lag, whether each side is fenced, and whether the way back exists.
//!
//! The `state` of the summary: `none` (nothing of this direction's), `copying`,
//! `replicating` (synced, the source takes writes), `fenced` (the source fenced, the target
//! not open), `open` (the target takes writes; `reverse` says whether the old source
//! follows it), `unknown` (exit 1: an inconsistent mix, e.g. both sides fenced without a
//! subscription; the records say what is where).

use serde_json::json;
use shared::Status;

use crate::catalog;
use crate::pair::{Pair, PairArgs};

/// Arguments of `status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub pair: PairArgs,
}

/// `status`.
pub fn run(mut p: Pair, _args: &StatusArgs) -> anyhow::Result<Status> {
    let mut subscribed = 0;
    let mut reverse = 0;
    for d in p.dbs.clone() {
        let fwd = crate::check::subscribed(&mut p, &d.name, &d.names.subscription)?;
        // The way back exists once the target has the database (its oid names the objects).
        let back = match p.reverse_names(&d.name) {
            Ok(rev) => catalog::subscription_exists(p.source.db(&d.name)?, &rev.subscription)?,
            Err(_) => false,
        };
        subscribed += usize::from(fwd);
        reverse += usize::from(back);
        p.out.emit_as(
            "database",
            &json!({"database": d.name, "subscribed": fwd, "publication": d.names.publication,
                    "slot": d.names.slot, "way_back": back}),
        )?;
    }
    let look = if subscribed > 0 {
        // No sizes: status reports tables and lag, not the bytes copied.
        Some(crate::watch::look(&mut p, &Default::default())?)
    } else {
        None
    };
    let source_fenced = catalog::fence_marked(p.source.control())?;
    let target_fenced = catalog::fence_marked(p.target.control())?;
    let n = p.dbs.len();
    let state = match (subscribed, source_fenced, target_fenced) {
        (0, false, _) if reverse == 0 => "none",
        (s, false, _) if s == n => match &look {
            Some(l) if l.synced() => "replicating",
            _ => "copying",
        },
        (s, true, true) if s == n => "fenced",
        (0, true, false) => "open",
        _ => "unknown",
    };
    let summary = json!({
        "state": state,
        "databases": p.db_names(),
        "source_fenced": source_fenced,
        "target_fenced": target_fenced,
        "reverse": reverse == n && n > 0,
        "tables": look.as_ref().map(|l| l.tables),
        "tables_ready": look.as_ref().map(|l| l.states.get("r").copied().unwrap_or(0)),
        "lag_bytes": look.as_ref().and_then(|l| l.lag),
    });
    if state == "unknown" {
        p.out.mark_differences();
    }
    p.out.finish(&summary)
}
