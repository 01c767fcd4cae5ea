//! Setup: roles, databases and schema on the target, the target fenced, then a publication
//! per database on the source and a subscription on the target (the initial copy starts);
//! and the two ways to end a pair: `abort` (before the cutover) and `finish` (after it).
//!
//! Each step is journaled before it acts and checks what is already there, so a setup cut
//! short (kill -9 in the middle of the schema, say) runs again to the same end: the schema is
//! restored in one transaction, a database this pair created is the pair's to drop.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use postgres::Client;
use serde_json::json;
use shared::pg::tables::{quote_ident, quote_literal};
use shared::pg::ConnInfo;
use shared::{ErrorKind, Status};

use crate::catalog;
use crate::check::{self, Fixes};
use crate::fence;
use crate::pair::{Pair, PairArgs};
use crate::side::Side;

/// Arguments of `setup`.
#[derive(clap::Args, Debug, Clone)]
pub struct SetupArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    #[command(flatten)]
    pub fixes: Fixes,
    /// How the target's server reaches the source [default: --source with each database's
    /// name, and the password this host would use]. Stored in the subscription (readable by
    /// superusers only).
    #[arg(long, value_name = "CONNINFO")]
    pub source_from_target: Option<String>,
}

/// Arguments of `abort`.
#[derive(clap::Args, Debug, Clone)]
pub struct AbortArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// Also drop the target's databases this pair created (and let the target's roles log in
    /// again; with the copy kept they stay NOLOGIN: a stale copy must not take writes).
    #[arg(long)]
    pub drop_databases: bool,
}

/// Arguments of `finish`.
#[derive(clap::Args, Debug, Clone)]
pub struct FinishArgs {
    #[command(flatten)]
    pub pair: PairArgs,
}

/// Statements of this session are not logged (a subscription's conninfo may hold a
/// password). Needs a superuser; without one the server's settings stand.
pub fn quiet_session(c: &mut Client) {
    for s in [
        "SET log_statement = 'none'",
        "SET log_min_duration_statement = -1",
    ] {
        let _ = c.batch_execute(s);
    }
}

/// The conninfo a server uses to reach `base`'s server, database `db`: the password this host
/// would use included (the other server has no password file of ours).
pub fn conninfo_for_server(base: &ConnInfo, db: &str, pair: &str) -> String {
    let mut c = base.with_dbname(db);
    if c.get("password").is_none() {
        if let Some(pw) = base.with_dbname(db).password() {
            c.set("password", pw);
        }
    }
    c.set("application_name", format!("pgshift_{pair}"));
    c.to_conninfo()
}

/// A client program (pg_dump, psql, pg_dumpall) for `side`'s database `db`: see [`program`].
fn client(pg_bin: &Path, program: &str, side: &Side, db: &str) -> (Command, String) {
    self::program(pg_bin, program, &side.dsn(db))
}

/// The client program `name` of `pg_bin` for `info`, and the conninfo to give it: without the
/// password (that goes in the environment, never in the arguments) and untouched by the
/// caller's PG* variables.
pub(crate) fn program(pg_bin: &Path, name: &str, info: &ConnInfo) -> (Command, String) {
    let mut cmd = Command::new(pg_bin.join(name));
    for var in shared::pg::env_var_names() {
        cmd.env_remove(var);
    }
    if let Some(pw) = info.password() {
        cmd.env("PGPASSWORD", pw);
    }
    (cmd, info.describe())
}

/// The first line of a client's stderr that says ERROR (else the last line).
fn first_error(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains("ERROR") || l.contains("FATAL"))
        .or_else(|| stderr.lines().last())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The role name in `CREATE ROLE x;` / `ALTER ROLE x ...` (quoted or not).
fn role_of(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE ROLE ")
        .or_else(|| line.strip_prefix("ALTER ROLE "))?;
    if let Some(q) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = q.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        Some(rest.split([' ', ';']).next()?.to_owned())
    }
}

/// Copy the roles the target lacks (`pg_dumpall --roles-only`, with their password verifiers
/// when the source lets us read them). Roles the target has are left as they are.
fn copy_roles(p: &mut Pair, fixes: &Fixes) -> anyhow::Result<()> {
    let existing: Vec<String> = p
        .target
        .control()
        .query("SELECT rolname::text FROM pg_roles", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let passwords = p.source.superuser;
    let db = p.source.info.dbname().to_owned();
    let (mut dump, conninfo) = client(&fixes.pg_bin, "pg_dumpall", &p.source, &db);
    dump.args(["--roles-only", "--dbname", &conninfo]);
    if !passwords {
        dump.arg("--no-role-passwords");
    }
    let out = dump
        .stdin(Stdio::null())
        .output()
        .context("running pg_dumpall")?;
    if !out.status.success() {
        return Err(shared::err(
            ErrorKind::Unavailable,
            format!(
                "pg_dumpall --roles-only on the source failed: {}",
                first_error(&String::from_utf8_lossy(&out.stderr))
            ),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut created = Vec::new();
    let mut script = String::new();
    for line in text.lines() {
        if line.contains("pgshift.fenced") {
            continue;
        }
        match role_of(line) {
            Some(r) if existing.contains(&r) => continue,
            Some(r) if line.starts_with("CREATE ROLE ") => created.push(r),
            _ => {}
        }
        script.push_str(line);
        script.push('\n');
    }
    let (mut psql, conninfo) = client(&fixes.pg_bin, "psql", &p.target, p.target.info.dbname());
    let mut child = psql
        .args(["-X", "-q", "-d", &conninfo])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running psql")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(script.as_bytes())
            .context("writing to psql")?;
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .ok();
    child.wait().context("waiting for psql")?;
    let failed: Vec<String> = err
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    p.out.emit_as(
        "step",
        &json!({"name": "roles", "created": created, "passwords": passwords,
                "kept": existing.len(), "errors": failed}),
    )?;
    if !passwords {
        p.out.note(
            "roles_without_passwords",
            "the source's role cannot read password verifiers (not a superuser): roles were created on the target without passwords; set them before the cutover",
        )?;
    }
    for e in failed {
        shared::warn!("copying roles: {e}");
    }
    Ok(())
}

/// Create database `db` on the target like the source's (encoding, locale, owner).
fn create_database(p: &mut Pair, db: &str) -> anyhow::Result<()> {
    let icu = if p.source.major() >= 17 {
        "CASE WHEN datlocprovider = 'i' THEN datlocale END"
    } else if p.source.major() >= 15 {
        "CASE WHEN datlocprovider = 'i' THEN daticulocale END"
    } else {
        "NULL::text"
    };
    let row = p.source.control().query_one(
        &format!(
            "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text,
                    pg_get_userbyid(datdba)::text, {icu}::text
               FROM pg_database WHERE datname = $1"
        ),
        &[&db],
    )?;
    let (enc, collate, ctype, owner, icu): (String, String, String, String, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let mut sql = format!(
        "CREATE DATABASE {} WITH TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {} OWNER {}",
        quote_ident(db),
        quote_literal(&enc),
        quote_literal(&collate),
        quote_literal(&ctype),
        quote_ident(&owner)
    );
    if let Some(icu) = icu {
        sql.push_str(&format!(
            " LOCALE_PROVIDER icu ICU_LOCALE {}",
            quote_literal(&icu)
        ));
    }
    p.note("database_created", json!({"database": db}))?;
    p.target
        .control()
        .batch_execute(&sql)
        .with_context(|| format!("creating database {db} on the target"))?;
    p.out.emit_as(
        "step",
        &json!({"name": "database", "database": db, "created": true}),
    )?;
    Ok(())
}

/// The schema of `db` dumped once per setup (`pg_dump -Fc --schema-only`), restored in two
/// sections: pre-data before the copy (tables, types, sequences, functions), post-data after
/// it (indexes, constraints, triggers: built once over the copied rows, and no foreign key
/// checked row by row while tables fill in any order).
struct SchemaDump {
    file: tempfile::NamedTempFile,
}

impl SchemaDump {
    fn take(p: &Pair, fixes: &Fixes, db: &str) -> anyhow::Result<SchemaDump> {
        let file = tempfile::NamedTempFile::new().context("a file for the schema dump")?;
        let (mut dump, src) = client(&fixes.pg_bin, "pg_dump", &p.source, db);
        let out = dump
            .args([
                "--schema-only",
                "--format=custom",
                "--no-publications",
                "--no-subscriptions",
                "--exclude-schema=pgshift",
                "--file",
            ])
            .arg(file.path())
            .args(["--dbname", &src])
            .stdin(Stdio::null())
            .output()
            .context("running pg_dump")?;
        if !out.status.success() {
            return Err(shared::err(
                ErrorKind::Unavailable,
                format!(
                    "pg_dump --schema-only of {db} failed: {}",
                    first_error(&String::from_utf8_lossy(&out.stderr))
                ),
            ));
        }
        Ok(SchemaDump { file })
    }

    /// Restore one section into the target's `db`, in one transaction (all of it or none).
    fn restore(&self, p: &Pair, fixes: &Fixes, db: &str, section: &str) -> anyhow::Result<()> {
        let (mut restore, tgt) = client(&fixes.pg_bin, "pg_restore", &p.target, db);
        let out = restore
            .args([
                "--section",
                section,
                "--single-transaction",
                "--exit-on-error",
            ])
            .args(["--dbname", &tgt])
            .arg(self.file.path())
            .stdin(Stdio::null())
            .output()
            .context("running pg_restore")?;
        if !out.status.success() {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "restoring the schema ({section}) of {db} on the target failed (nothing of it was kept): {}",
                    first_error(&String::from_utf8_lossy(&out.stderr))
                ),
            ));
        }
        Ok(())
    }
}

const SENTINEL_DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgshift;
    CREATE TABLE IF NOT EXISTS pgshift.sentinel (id bigint PRIMARY KEY, run text NOT NULL,
                                                 at timestamptz NOT NULL DEFAULT now());
    COMMENT ON SCHEMA pgshift IS 'pgshift''s sentinel for the logical cutover: pg-logical finish drops it'";

/// `setup`.
pub fn run(mut p: Pair, args: &SetupArgs) -> anyhow::Result<Status> {
    let (findings, replicating) = check::evaluate(&mut p, &args.fixes)?;
    // The warnings were `check`'s to say; the records carry them again.
    check::report(&mut p, &findings, false)?;
    check::refusal(&findings)?;
    p.note("setup", json!({"databases": p.db_names()}))?;
    let fresh = replicating.iter().any(|r| !r);
    if fresh {
        copy_roles(&mut p, &args.fixes)?;
    }
    // The target takes no writes until the cutover opens it.
    let spare = vec![p.target.user.clone()];
    let (roles, left, _) =
        fence::fence_roles(p.target.control(), &spare, &format!("{}-setup", p.id))?;
    p.out.emit_as(
        "fence",
        &json!({"side": "target", "roles": roles, "not_fenced": left, "spared": spare}),
    )?;
    if !left.is_empty() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "the target's roles {} cannot be made NOLOGIN by {}: the target could take writes before the cutover; connect as a role that can (a superuser)",
                check::list(&left),
                p.target.user
            ),
        ));
    }
    let mut bytes_total = 0i64;
    let mut tables_total = 0usize;
    for (i, d) in p.dbs.clone().iter().enumerate() {
        let db = &d.name;
        let prior = p.since_last_end();
        let done = |step: &str| {
            prior
                .iter()
                .any(|r| r["step"] == step && r["database"] == json!(db))
        };
        let all = catalog::tables(p.source.db(db)?)?;
        let published: Vec<catalog::Table> = catalog::published(&all, &p.exclude)
            .into_iter()
            .cloned()
            .collect();
        tables_total += published.len();
        bytes_total += published.iter().map(|t| t.bytes).sum::<i64>();
        if replicating[i] {
            // Already subscribed (a run under way, or the way back of an earlier move): the
            // fingerprint is taken once, so that DDL from now on is seen.
            if !done("schema_fingerprint") {
                let lines = catalog::schema_lines(p.source.db(db)?, false)?;
                p.note(
                    "schema_fingerprint",
                    json!({"database": db, "fingerprint": catalog::fingerprint(&lines)}),
                )?;
            }
            continue;
        }
        let exists = p
            .target
            .control()
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])?
            .is_some();
        if !exists {
            create_database(&mut p, db)?;
        }
        let dump = SchemaDump::take(&p, &args.fixes, db)?;
        if !done("schema_restored") {
            p.note("schema", json!({"database": db}))?;
            dump.restore(&p, &args.fixes, db, "pre-data")?;
            p.note("schema_restored", json!({"database": db}))?;
            p.out.emit_as(
                "step",
                &json!({"name": "schema", "database": db, "section": "pre-data"}),
            )?;
        }
        for side in [&mut p.source, &mut p.target] {
            side.db(db)?.batch_execute(SENTINEL_DDL).with_context(|| {
                format!("creating pgshift.sentinel in {db} on the {}", side.name())
            })?;
        }
        // On both sides: the way back publishes these tables from the target.
        for t in all.iter().filter(|t| {
            !t.identity
                && t.persistence == "p"
                && catalog::matches_any(&t.name, &args.fixes.replica_identity_full)
        }) {
            for side in [&mut p.source, &mut p.target] {
                side.db(db)?
                    .batch_execute(&format!("ALTER TABLE {} REPLICA IDENTITY FULL", t.sql()))?;
            }
            p.out.emit_as(
                "step",
                &json!({"name": "replica_identity_full", "database": db, "table": t.display()}),
            )?;
        }
        // The schema fingerprint the fence compares with: after setup's own changes, and
        // kept once the database is subscribed (so DDL from then on is seen).
        let lines = catalog::schema_lines(p.source.db(db)?, false)?;
        p.note(
            "schema_fingerprint",
            json!({"database": db, "fingerprint": catalog::fingerprint(&lines)}),
        )?;
        // The publication first: the slot decodes with the catalog as of each change.
        let mut list: Vec<String> = published.iter().map(|t| t.sql()).collect();
        list.push("pgshift.sentinel".into());
        let pubname = quote_ident(&d.names.publication);
        let sc = p.source.db(db)?;
        let exists = sc
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&d.names.publication],
            )?
            .is_some();
        sc.batch_execute(&if exists {
            format!("ALTER PUBLICATION {pubname} SET TABLE {}", list.join(", "))
        } else {
            format!(
                "CREATE PUBLICATION {pubname} FOR TABLE {} WITH (publish_via_partition_root = true)",
                list.join(", ")
            )
        })
        .with_context(|| format!("creating the publication of {db} on the source"))?;
        // The copy, from the slot's own snapshot. A copy cut short is started again: its rows
        // go (TRUNCATE on the target, still without a constraint) and so does its slot.
        let slot_there = p
            .source
            .control()
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&d.names.slot],
            )?
            .is_some();
        if !(done("copied") && slot_there) {
            fence::drop_slot(p.source.control(), &d.names.slot)?;
            if !published.is_empty() {
                let names: Vec<String> = published.iter().map(|t| t.sql()).collect();
                p.target
                    .db(db)?
                    .batch_execute(&format!("TRUNCATE {}", names.join(", ")))
                    .with_context(|| format!("emptying the target's tables of {db}"))?;
            }
            p.note("copying", json!({"database": db, "slot": d.names.slot}))?;
            let slot = crate::copy::SlotSnapshot::create(
                &args.fixes.pg_bin,
                &p.source.dsn(db),
                &d.names.slot,
            )?;
            let t0 = std::time::Instant::now();
            let copied = crate::copy::tables(
                &p.source.dsn(db),
                &p.target.dsn(db),
                &slot.snapshot,
                &published,
                args.fixes.copy_jobs as usize,
                db,
                &mut p.out,
                std::time::Duration::from_secs(5),
            )?;
            let consistent_point = slot.consistent_point.clone();
            drop(slot);
            p.note(
                "copied",
                json!({"database": db, "bytes": copied, "consistent_point": consistent_point}),
            )?;
            p.out.emit_as(
                "step",
                &json!({"name": "copy", "database": db, "tables": published.len(),
                        "bytes": copied, "ms": t0.elapsed().as_millis() as u64,
                        "consistent_point": consistent_point, "jobs": args.fixes.copy_jobs}),
            )?;
        }
        if !done("post_data_restored") {
            let t0 = std::time::Instant::now();
            dump.restore(&p, &args.fixes, db, "post-data")?;
            p.note("post_data_restored", json!({"database": db}))?;
            p.out.emit_as(
                "step",
                &json!({"name": "schema", "database": db, "section": "post-data",
                        "ms": t0.elapsed().as_millis() as u64}),
            )?;
        }
        let base = match &args.source_from_target {
            Some(s) => ConnInfo::parse(s).context("--source-from-target")?,
            None => p.source.info.clone(),
        };
        let conninfo = conninfo_for_server(&base, db, &p.id);
        p.note("subscribing", json!({"database": db, "slot": d.names.slot}))?;
        let streaming = if p.target.major() >= 14 {
            ", streaming = on"
        } else {
            ""
        };
        let tc = p.target.db(db)?;
        quiet_session(tc);
        // On the slot the copy came from: every change after its snapshot, nothing copied again.
        tc.batch_execute(&format!(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {pubname} WITH (slot_name = {}, copy_data = false, create_slot = false{streaming})",
            quote_ident(&d.names.subscription),
            quote_literal(&conninfo),
            quote_literal(&d.names.slot)
        ))
        .map_err(anyhow::Error::from)
        .with_context(|| format!("subscribing the target's database {db} to the source"))?;
        p.note("subscribed", json!({"database": db, "slot": d.names.slot}))?;
        p.out.emit_as(
            "step",
            &json!({"name": "subscription", "database": db, "publication": d.names.publication,
                    "subscription": d.names.subscription, "slot": d.names.slot,
                    "tables": published.len()}),
        )?;
    }
    p.note("setup_done", json!({}))?;
    let databases = p.db_names();
    let state = if fresh { "copying" } else { "replicating" };
    p.out.finish(&json!({"state": state, "databases": databases,
                         "tables": tables_total, "bytes_total": bytes_total}))
}

/// Remove the forward subscription of database `d` (its slot on the source too) and the
/// source's publication.
fn drop_forward(p: &mut Pair, d: &crate::pair::Db) -> anyhow::Result<()> {
    if let Ok(tc) = p.target.db(&d.name) {
        catalog::drop_subscription(tc, &d.names.subscription)?;
    }
    fence::drop_slot(p.source.control(), &d.names.slot)?;
    p.source.db(&d.name)?.batch_execute(&format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote_ident(&d.names.publication)
    ))?;
    Ok(())
}

/// `abort`: before the cutover, remove what this direction's setup made; the source serves.
pub fn abort(mut p: Pair, args: &AbortArgs) -> anyhow::Result<Status> {
    let since = p.since_last_end();
    let opened = since
        .iter()
        .any(|r| r["step"] == "opened" || r["step"] == "opening");
    if opened {
        return Err(shared::err(
            ErrorKind::DataErr,
            "the cutover opened the target (journal): nothing to abort; move back with --reverse, or drop the way back with finish",
        ));
    }
    p.note("aborting", json!({}))?;
    let lifted = fence::unfence_roles(p.source.control(), Some(&p.id))?;
    // Only what this run's setup made goes: a subscription that was there before it is the
    // way back of the move the other way (the old source following the new primary), and
    // stays.
    let mut kept = Vec::new();
    for d in p.dbs.clone() {
        let made = since
            .iter()
            .any(|r| r["step"] == "subscribing" && r["database"] == json!(d.name));
        if !made && check::subscribed(&mut p, &d.name, &d.names.subscription)? {
            kept.push(d.name.clone());
            continue;
        }
        drop_forward(&mut p, &d)?;
        p.source
            .db(&d.name)?
            .batch_execute("DROP SCHEMA IF EXISTS pgshift CASCADE")?;
    }
    if !kept.is_empty() {
        p.out.note(
            "way_back_kept",
            &format!(
                "the subscription of {} was not made by this run (it is the way back of the move the other way): kept; finish drops it",
                check::list(&kept)
            ),
        )?;
    }
    let mut dropped = Vec::new();
    if args.drop_databases {
        for r in &since {
            if r["step"] == "database_created" {
                if let Some(db) = r["database"].as_str() {
                    p.target.forget(db)?;
                    p.target.control().batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(db)
                    ))?;
                    dropped.push(db.to_owned());
                }
            }
        }
    }
    // The target's roles as they were before setup fenced them (not an earlier direction's),
    // once the copy is gone; a copy that stays is stale and must not take writes.
    let target_lifted = if args.drop_databases {
        fence::unfence_roles(p.target.control(), Some(&p.id))?
    } else {
        let kept = catalog::fenced_roles(p.target.control(), Some(&p.id))?;
        if !kept.is_empty() {
            p.out.note(
                "target_stays_fenced",
                &format!(
                    "the target keeps the copy, so its roles stay NOLOGIN ({}): abort --drop-databases removes the copy and lets them log in",
                    check::list(&kept)
                ),
            )?;
        }
        Vec::new()
    };
    p.note("aborted", json!({"databases_dropped": dropped}))?;
    p.out.finish(&json!({"state": "aborted", "source_roles_unfenced": lifted.len(),
                         "target_roles_unfenced": target_lifted.len(), "databases_dropped": dropped}))
}

/// `finish`: after a move, drop the way back (the old source's subscription, the new
/// primary's slot and publication) and pgshift's sentinel schema on both sides. The old
/// source keeps its roles fenced: it is not to take writes again.
pub fn finish(mut p: Pair, _args: &FinishArgs) -> anyhow::Result<Status> {
    let since = p.since_last_end();
    let opened = since.iter().any(|r| r["step"] == "opened");
    let target_open = !catalog::fence_marked(p.target.control())?;
    if !opened && !target_open {
        return Err(shared::err(
            ErrorKind::DataErr,
            "the target was not opened: there is no way back to drop (before the cutover, use abort)",
        ));
    }
    for d in p.dbs.clone() {
        let rev = p.reverse_names(&d.name)?;
        let sc = p.source.db(&d.name)?;
        catalog::drop_subscription(sc, &rev.subscription)?;
        let tc = p.target.db(&d.name)?;
        fence::drop_slot(tc, &rev.slot)?;
        tc.batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&rev.publication)
        ))?;
        for side in [&mut p.source, &mut p.target] {
            side.db(&d.name)?
                .batch_execute("DROP SCHEMA IF EXISTS pgshift CASCADE")?;
        }
    }
    p.note("finished", json!({}))?;
    p.out
        .finish(&json!({"state": "finished", "old_source_fenced": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_read_from_pg_dumpall_lines() {
        assert_eq!(role_of("CREATE ROLE app;").as_deref(), Some("app"));
        assert_eq!(
            role_of("ALTER ROLE app WITH NOSUPERUSER LOGIN;").as_deref(),
            Some("app")
        );
        assert_eq!(
            role_of("CREATE ROLE \"we\"\"ird name\";").as_deref(),
            Some("we\"ird name")
        );
        assert_eq!(role_of("GRANT a TO b;"), None);
    }
}
