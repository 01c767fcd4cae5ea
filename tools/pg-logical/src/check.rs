//! Preflight: what logical replication can carry from this source to this target, what it
//! cannot (refused, with the objects and the fix named), and what it carries differently.
//! Nothing is changed; `setup` runs the same checks first and stops on a refusal.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;
use shared::{ErrorKind, Status};

use crate::catalog;
use crate::pair::{Pair, PairArgs};

/// Options of `check` (and of `setup`, which checks first).
#[derive(clap::Args, Debug, Clone)]
pub struct Fixes {
    /// Tables without a primary key that UPDATE or DELETE: set REPLICA IDENTITY FULL on the
    /// source (setup does it; changes are then matched on whole rows). NAME or SCHEMA.NAME,
    /// globs allowed (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub replica_identity_full: Vec<String>,
    /// Where pg_dump, pg_dumpall and psql are (a version >= the source's)
    #[arg(
        long,
        value_name = "DIR",
        env = "PG_BIN",
        default_value = "/usr/lib/postgresql/15/bin"
    )]
    pub pg_bin: PathBuf,
    /// Tables copied at once (sessions on each side, all in the slot's snapshot)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub copy_jobs: u32,
}

/// Arguments of `check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    #[command(flatten)]
    pub fixes: Fixes,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The move cannot go ahead until it is fixed.
    Refuse,
    /// It can, and someone should know.
    Warn,
    /// How something is carried.
    Info,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked (`wal_level`, `replica_identity`, ...).
    pub name: &'static str,
    /// Whether it passes (a refusal does not).
    pub ok: bool,
    /// How much it matters.
    pub severity: Severity,
    /// The database, for per-database checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The objects concerned (tables, extensions, roles).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// What was found.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl shared::Record for Finding {
    const TYPE: &'static str = "check";
}

impl Finding {
    fn new(name: &'static str, severity: Severity, message: String) -> Finding {
        Finding {
            name,
            ok: severity != Severity::Refuse,
            severity,
            database: None,
            objects: Vec::new(),
            message,
            fix: None,
        }
    }
    fn db(mut self, db: &str) -> Finding {
        self.database = Some(db.to_owned());
        self
    }
    fn objects(mut self, o: Vec<String>) -> Finding {
        self.objects = o;
        self
    }
    fn fix(mut self, f: impl Into<String>) -> Finding {
        self.fix = Some(f.into());
        self
    }
    fn refuse(name: &'static str, message: String) -> Finding {
        Finding::new(name, Severity::Refuse, message)
    }
    fn warn(name: &'static str, message: String) -> Finding {
        Finding::new(name, Severity::Warn, message)
    }
    fn info(name: &'static str, message: String) -> Finding {
        Finding::new(name, Severity::Info, message)
    }
}

/// `a, b, c` (the first 10, then `and N more`).
pub fn list(items: &[String]) -> String {
    if items.len() <= 10 {
        items.join(", ")
    } else {
        format!("{}, and {} more", items[..10].join(", "), items.len() - 10)
    }
}

/// Whether the target already subscribes to this source in database `db` (a run under way,
/// or the way back made by `open`): then the schema is there and nothing is copied again.
pub fn subscribed(p: &mut Pair, db: &str, subscription: &str) -> anyhow::Result<bool> {
    let exists = p.target.db(db).ok().map(|c| {
        c.query_opt(
            "SELECT 1 FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&subscription],
        )
    });
    Ok(matches!(exists, Some(Ok(Some(_)))))
}

/// Refuse a database the target does not subscribe to (`wait` and `fence` need a run that
/// setup started).
pub fn require_subscribed(p: &mut Pair, d: &crate::pair::Db) -> anyhow::Result<()> {
    if subscribed(p, &d.name, &d.names.subscription)? {
        return Ok(());
    }
    Err(shared::err(
        ErrorKind::DataErr,
        format!(
            "the target does not subscribe to database {} of this source: run setup first",
            d.name
        ),
    ))
}

/// The major version of `pg_dump` in `dir`.
/// The enabled subscriptions of `c`'s database (on the source): an apply worker is no client
/// session and logs in as no fenced role, so it writes after the fence (found by an audit:
/// 121 rows committed after fence and open never reached the target).
pub fn source_subscriptions(c: &mut postgres::Client) -> anyhow::Result<Vec<String>> {
    Ok(c.query(
        "SELECT subname::text FROM pg_subscription WHERE subenabled \
             AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY 1",
        &[],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

pub fn pg_dump_major(dir: &std::path::Path) -> Option<i32> {
    let out = std::process::Command::new(dir.join("pg_dump"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let v = text.split_whitespace().nth(2)?;
    v.split('.').next()?.parse().ok()
}

/// Every finding for the pair. `replicating[i]`: database i is already subscribed.
pub fn evaluate(p: &mut Pair, fixes: &Fixes) -> anyhow::Result<(Vec<Finding>, Vec<bool>)> {
    let mut f = Vec::new();
    let mut replicating = Vec::new();
    for d in p.dbs.clone() {
        replicating.push(subscribed(p, &d.name, &d.names.subscription)?);
    }
    let fresh = replicating.iter().any(|r| !r);
    // The source must decode its WAL.
    let wal_level = p.source.setting("wal_level")?.unwrap_or_default();
    if wal_level == "logical" {
        f.push(Finding::info(
            "wal_level",
            "the source has wal_level = logical".into(),
        ));
    } else {
        let fix = if p.source.setting("rds.logical_replication")?.is_some() {
            "set rds.logical_replication = 1 in the source's parameter group and reboot it"
        } else if p.source.setting("cloudsql.logical_decoding")?.is_some() {
            "set the flag cloudsql.logical_decoding = on on the source instance (it restarts)"
        } else if p.source.setting("azure.extensions")?.is_some() {
            "set the server parameter wal_level = logical on the source and restart it"
        } else {
            "ALTER SYSTEM SET wal_level = logical on the source, then restart it"
        };
        f.push(
            Finding::refuse(
                "wal_level",
                format!(
                    "the source has wal_level = {wal_level}: logical replication needs logical"
                ),
            )
            .fix(fix),
        );
    }
    // Roles: the source's must replicate, the target's must subscribe.
    let (src_repl, src_user) = {
        let r = p.source.control().query_one(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )?;
        (r.get::<_, bool>(0), p.source.user.clone())
    };
    if !src_repl {
        f.push(
            Finding::refuse(
                "replication_role",
                format!("the source's role {src_user} has no REPLICATION attribute"),
            )
            .fix(format!("ALTER ROLE {src_user} WITH REPLICATION on the source (on RDS: GRANT rds_replication TO {src_user})")),
        );
    }
    let can_subscribe = p.target.superuser
        || (p.target.major() >= 16
            && p.target
                .control()
                .query_one(
                    "SELECT pg_has_role(current_user, 'pg_create_subscription', 'MEMBER')",
                    &[],
                )?
                .get::<_, bool>(0));
    if !can_subscribe {
        f.push(
            Finding::refuse(
                "subscription_role",
                format!(
                    "the target's role {} cannot create subscriptions (superuser needed before PostgreSQL 16)",
                    p.target.user
                ),
            )
            .fix("connect to the target as a superuser, or on 16 and later GRANT pg_create_subscription (and CREATE on the databases) to the role"),
        );
    }
    // Versions and the schema copy, for databases not yet subscribed.
    if fresh {
        if p.target.major() < p.source.major() {
            f.push(
                Finding::refuse(
                    "versions",
                    format!(
                        "the target runs PostgreSQL {} and the source {}: the schema of a newer major does not restore on an older one",
                        p.target.version, p.source.version
                    ),
                )
                .fix("move to a target of the same or a newer major version"),
            );
        } else {
            f.push(Finding::info(
                "versions",
                format!("{} to {}", p.source.version, p.target.version),
            ));
        }
        match pg_dump_major(&fixes.pg_bin) {
            Some(v) if v >= p.source.major() => {}
            found => f.push(
                Finding::refuse(
                    "pg_dump",
                    match found {
                        Some(v) => format!(
                            "pg_dump in {} is version {v}, older than the source ({})",
                            fixes.pg_bin.display(),
                            p.source.major()
                        ),
                        None => format!("no pg_dump in {}", fixes.pg_bin.display()),
                    },
                )
                .fix(format!(
                    "give --pg-bin DIR with PostgreSQL {} or later client tools (apt install postgresql-client-{})",
                    p.source.major(),
                    p.source.major()
                )),
            ),
        }
    }
    // Room for the slots, walsenders and workers.
    let n = p.dbs.len() as i64;
    let jobs = i64::from(fixes.copy_jobs);
    let row = p.source.control().query_one(
        "SELECT (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::bigint,
                (current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication))::bigint,
                current_setting('max_slot_wal_keep_size')",
        &[],
    )?;
    let (free_slots, free_senders, keep): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    let pending = replicating.iter().filter(|r| !**r).count() as i64;
    if free_slots < pending + 1 || free_senders < pending + 1 {
        f.push(
            Finding::refuse(
                "slots",
                format!(
                    "the source has {free_slots} free replication slots and {free_senders} free walsenders; the move needs {} of each (one per database, and one per table copied at once)",
                    pending + jobs.min(2)
                ),
            )
            .fix("raise max_replication_slots and max_wal_senders on the source (a restart), or move fewer databases at once (--databases)"),
        );
    }
    if keep == "-1" {
        f.push(
            Finding::warn(
                "slot_wal_limit",
                "max_slot_wal_keep_size is unlimited on the source: a slot left behind (a move abandoned by kill -9, say) keeps WAL until the disk is full".into(),
            )
            .fix("ALTER SYSTEM SET max_slot_wal_keep_size = '<a size the disk holds>'; SELECT pg_reload_conf()"),
        );
    } else {
        f.push(Finding::info(
            "slot_wal_limit",
            format!("max_slot_wal_keep_size = {keep} on the source: a slot that falls further behind is invalidated, and the move stops with that reason"),
        ));
    }
    let workers: i64 = p
        .target
        .control()
        .query_one(
            "SELECT current_setting('max_logical_replication_workers')::int",
            &[],
        )?
        .get::<_, i32>(0)
        .into();
    if workers < n + 1 {
        f.push(
            Finding::refuse(
                "workers",
                format!("the target's max_logical_replication_workers is {workers}; the move needs at least {} (one per database, and one to copy)", n + 1),
            )
            .fix("raise max_logical_replication_workers (and max_worker_processes) on the target and restart it"),
        );
    }
    // pgshift's own role: the fence ends its other sessions but cannot stop them logging in.
    let own_sessions: i64 = p
        .source
        .control()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
                AND usename = current_user AND pid <> pg_backend_pid()
                AND coalesce(application_name, '') NOT LIKE 'pgshift%'",
            &[],
        )?
        .get(0);
    if own_sessions > 0 {
        f.push(
            Finding::warn(
                "own_role_sessions",
                format!(
                    "{own_sessions} client session(s) use {src_user}, the role pgshift logs in as: the fence ends them, but cannot keep them from logging in again"
                ),
            )
            .fix("give pgshift a role of its own (a superuser, or one with REPLICATION that owns the tables), so that the fence can stop every client's"),
        );
    }
    let mut names = Vec::new();
    for (i, d) in p.dbs.clone().iter().enumerate() {
        names.extend(per_database(p, &d.name, fixes, replicating[i], &mut f)?);
    }
    // A pattern that matches nothing is a typo, never "nothing to leave out".
    let patterns = p.exclude.iter().map(|x| ("--exclude-table", x)).chain(
        fixes
            .replica_identity_full
            .iter()
            .map(|x| ("--replica-identity-full", x)),
    );
    for (option, pattern) in patterns {
        if !names
            .iter()
            .any(|n| catalog::matches_any(n, std::slice::from_ref(pattern)))
        {
            f.push(
                Finding::refuse(
                    "pattern",
                    format!("{option} '{pattern}' matches no table in the databases moved"),
                )
                .fix("check the spelling: NAME or SCHEMA.NAME, globs * and ? allowed"),
            );
        }
    }
    Ok((f, replicating))
}

/// The findings of database `db`; returns its tables' names.
fn per_database(
    p: &mut Pair,
    db: &str,
    fixes: &Fixes,
    replicating: bool,
    f: &mut Vec<Finding>,
) -> anyhow::Result<Vec<shared::pg::tables::TableName>> {
    let exclude = p.exclude.clone();
    let c = p.source.db(db)?;
    let all = catalog::tables(c)?;
    let names = all.iter().map(|t| t.name.clone()).collect();
    let moved: Vec<&catalog::Table> = all
        .iter()
        .filter(|t| !t.extension && !catalog::excluded(t, &exclude))
        .collect();
    // UPDATE and DELETE of a published table without a replica identity fail on the source.
    let (covered, missing): (Vec<&&catalog::Table>, Vec<&&catalog::Table>) = moved
        .iter()
        .filter(|t| !t.identity && t.persistence == "p")
        .partition(|t| catalog::matches_any(&t.name, &fixes.replica_identity_full));
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|t| t.display()).collect();
        f.push(
            Finding::refuse(
                "replica_identity",
                format!(
                    "{} table(s) have no primary key or replica identity: once published, every UPDATE and DELETE on them would fail on the source: {}",
                    names.len(),
                    list(&names)
                ),
            )
            .db(db)
            .fix(format!(
                "add a primary key; or --replica-identity-full {} (REPLICA IDENTITY FULL on the source: changes matched on whole rows, slower to apply); or --exclude-table to leave them out",
                names[0]
            ))
            .objects(names),
        );
    }
    if !covered.is_empty() {
        let names: Vec<String> = covered.iter().map(|t| t.display()).collect();
        f.push(
            Finding::info(
                "replica_identity",
                format!(
                    "setup sets REPLICA IDENTITY FULL on the source for {}",
                    list(&names)
                ),
            )
            .db(db)
            .objects(names),
        );
    }
    let unlogged: Vec<String> = moved
        .iter()
        .filter(|t| t.persistence == "u")
        .map(|t| t.display())
        .collect();
    if !unlogged.is_empty() {
        f.push(
            Finding::refuse(
                "unlogged",
                format!("unlogged tables are not replicated: {}", list(&unlogged)),
            )
            .db(db)
            .fix("ALTER TABLE ... SET LOGGED on the source, or --exclude-table them (their rows stay behind)")
            .objects(unlogged),
        );
    }
    let los: i64 = c
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])?
        .get(0);
    if los > 0 {
        f.push(
            Finding::refuse(
                "large_objects",
                format!("{los} large object(s): logical replication does not carry them"),
            )
            .db(db)
            .fix(
                "move them into bytea columns, or use the physical mode (migrate.sh --mode stream)",
            ),
        );
    }
    let subs = source_subscriptions(c)?;
    if !subs.is_empty() {
        f.push(
            Finding::refuse(
                "source_subscriptions",
                format!(
                    "{} enabled subscription(s) in the database on the source write into it \
                     through their apply workers, which the fence does not stop: {}",
                    subs.len(),
                    list(&subs)
                ),
            )
            .db(db)
            .fix(format!(
                "ALTER SUBSCRIPTION {} DISABLE on the source before the move (create it on the \
                 target once the move is done), or leave the database out",
                subs[0]
            ))
            .objects(subs),
        );
    }
    let partitioned: Vec<String> = moved
        .iter()
        .filter(|t| t.kind == "p")
        .map(|t| t.display())
        .collect();
    if !partitioned.is_empty() {
        f.push(
            Finding::info(
                "partitions",
                format!("partitioned tables are published through their roots (publish_via_partition_root): {}", list(&partitioned)),
            )
            .db(db)
            .objects(partitioned),
        );
    }
    let generated: Vec<String> = moved
        .iter()
        .filter(|t| t.generated)
        .map(|t| t.display())
        .collect();
    if !generated.is_empty() {
        f.push(
            Finding::info(
                "generated_columns",
                format!(
                    "generated columns are computed again on the target, not copied: {}",
                    list(&generated)
                ),
            )
            .db(db)
            .objects(generated),
        );
    }
    let seqs = catalog::sequences(c)?;
    let free: Vec<String> = seqs
        .iter()
        .filter(|s| !s.owned)
        .map(|s| s.name.clone())
        .collect();
    f.push(
        Finding::info(
            "sequences",
            format!(
                "{} sequence(s), copied exactly at the fence (replication does not carry them){}",
                seqs.len(),
                if free.is_empty() {
                    String::new()
                } else {
                    format!("; {} not owned by a column, copied too", free.len())
                }
            ),
        )
        .db(db)
        .objects(free),
    );
    let other: Vec<(String, String)> = c
        .query(
            &format!(
                "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('m', 'f') AND {}
                  ORDER BY 1",
                catalog::SKIP_SCHEMAS
            ),
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let matviews: Vec<String> = other
        .iter()
        .filter(|o| o.1 == "m")
        .map(|o| o.0.clone())
        .collect();
    if !matviews.is_empty() {
        f.push(
            Finding::warn(
                "materialized_views",
                format!(
                    "materialized views are created on the target without their rows: {}",
                    list(&matviews)
                ),
            )
            .db(db)
            .fix("REFRESH MATERIALIZED VIEW on the target after the move")
            .objects(matviews),
        );
    }
    let foreign: Vec<String> = other
        .iter()
        .filter(|o| o.1 == "f")
        .map(|o| o.0.clone())
        .collect();
    if !foreign.is_empty() {
        f.push(
            Finding::warn(
                "foreign_tables",
                format!(
                    "foreign tables are created on the target, pointing where they point now: {}",
                    list(&foreign)
                ),
            )
            .db(db)
            .objects(foreign),
        );
    }
    let published = catalog::published(&all, &exclude);
    if published.is_empty() {
        f.push(Finding::info("no_tables", "no table to copy: the schema only".into()).db(db));
    }
    if replicating {
        f.push(
            Finding::info(
                "subscribed",
                "the target already subscribes to this database: nothing is copied again".into(),
            )
            .db(db),
        );
        return Ok(names);
    }
    // Extensions the target must have.
    let exts: Vec<String> = c
        .query(
            "SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !exts.is_empty() {
        let available: Vec<String> = p
            .target
            .control()
            .query("SELECT name::text FROM pg_available_extensions", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lacking: Vec<String> = exts
            .into_iter()
            .filter(|e| !available.contains(e))
            .collect();
        if !lacking.is_empty() {
            f.push(
                Finding::refuse(
                    "extensions",
                    format!("the target lacks extension(s) the source uses: {}", list(&lacking)),
                )
                .db(db)
                .fix(format!(
                    "install them on the target (apt install postgresql-{}-<extension>), or ask the provider to allow them",
                    p.target.major()
                ))
                .objects(lacking),
            );
        }
    }
    // The target's database: missing (setup creates it) or without tables of its own.
    let restored_before = p
        .since_last_end()
        .iter()
        .any(|r| r["step"] == "schema" && r["database"] == json!(db));
    if let Ok(tc) = p.target.db(db) {
        let n: i64 = tc
            .query_one(
                &format!(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.relkind IN ('r', 'p') AND {}",
                    catalog::SKIP_SCHEMAS
                ),
                &[],
            )?
            .get(0);
        if n > 0 && !restored_before {
            f.push(
                Finding::refuse(
                    "target_database",
                    format!("the target's database {db} already has {n} table(s): the move copies the schema into an empty database"),
                )
                .db(db)
                .fix(format!("DROP DATABASE {db} on the target (or give another target)")),
            );
        }
    }
    Ok(names)
}

/// `check`: the findings, then the summary; exit 65 when something is refused.
pub fn run(mut p: Pair, args: &CheckArgs) -> anyhow::Result<Status> {
    let (findings, _) = evaluate(&mut p, &args.fixes)?;
    report(&mut p, &findings, true)?;
    refusal(&findings)?;
    let summary = json!({
        "databases": p.db_names(),
        "refused": 0,
        "warnings": findings.iter().filter(|f| f.severity == Severity::Warn).count(),
    });
    p.out.finish(&summary)
}

/// `Err` (exit 65) naming the refusals and the first one's fix, if any finding refuses.
pub fn refusal(findings: &[Finding]) -> anyhow::Result<()> {
    let refused: Vec<&Finding> = findings.iter().filter(|f| !f.ok).collect();
    let Some(first) = refused.first() else {
        return Ok(());
    };
    let names: Vec<&str> = refused.iter().map(|f| f.name).collect();
    Err(shared::err(
        ErrorKind::DataErr,
        format!(
            "preflight refused ({}): {}{}",
            names.join(", "),
            first.message,
            first
                .fix
                .as_ref()
                .map(|x| format!("; fix: {x}"))
                .unwrap_or_default()
        ),
    ))
}

/// Emit the findings, and each refusal (and with `warnings`, each warning) as a line on
/// stderr.
pub fn report(p: &mut Pair, findings: &[Finding], warnings: bool) -> anyhow::Result<()> {
    for f in findings {
        p.out.emit(f)?;
        if f.severity == Severity::Refuse || (warnings && f.severity == Severity::Warn) {
            shared::msg::error_line(&format!(
                "{}{}: {}{}",
                if f.ok { "warning: " } else { "refused: " },
                f.database
                    .as_deref()
                    .map(|d| format!("{d}: "))
                    .unwrap_or_default()
                    + f.name,
                f.message,
                f.fix
                    .as_ref()
                    .map(|x| format!(" (fix: {x})"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}
