//! The pair of servers a step works on: both sides, the databases moved, the names of the
//! replication objects, the output stream and the journal.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};
use shared::journal::Journal;
use shared::Output;

use crate::catalog::{self, Names};
use crate::side::{Side, Which};

/// Options every step takes.
#[derive(clap::Args, Debug, Clone)]
pub struct PairArgs {
    /// The source: a superuser's conninfo or URL (or a role with REPLICATION that owns the
    /// tables, on a managed service).
    #[arg(long, value_name = "DSN")]
    pub source: String,
    /// The target: a superuser's conninfo or URL.
    #[arg(long, value_name = "DSN")]
    pub target: String,
    /// The databases to move (comma-separated) [default: every database of the source that
    /// accepts connections].
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub databases: Vec<String>,
    /// Leave tables out of the move: NAME or SCHEMA.NAME, globs allowed (repeatable). Their
    /// schema is copied, their rows are not: verify with the same exclusions.
    #[arg(long, value_name = "PATTERN")]
    pub exclude_table: Vec<String>,
    /// The journal [default: logical-<ids>.jsonl under $PGSHIFT_STATE_DIR, or
    /// ~/.local/state/pgshift].
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

/// One database of the move.
#[derive(Debug, Clone)]
pub struct Db {
    /// Its name (the same on both sides).
    pub name: String,
    /// Its oid on the source (names the slot).
    pub source_oid: u32,
    /// The forward replication objects.
    pub names: Names,
}

/// A `server` record: what each side is.
#[derive(Debug, Serialize)]
struct ServerRecord<'a> {
    side: Which,
    dsn: String,
    server_version: &'a str,
    server_version_num: i32,
    system_identifier: &'a str,
    user: &'a str,
    superuser: bool,
}

impl shared::Record for ServerRecord<'_> {
    const TYPE: &'static str = "server";
}

/// Both sides and what a step needs of them.
pub struct Pair {
    /// Where the data is now.
    pub source: Side,
    /// Where it goes.
    pub target: Side,
    /// The databases moved.
    pub dbs: Vec<Db>,
    /// Tables left out (`--exclude-table`).
    pub exclude: Vec<String>,
    /// The forward pair's id (names its objects).
    pub id: String,
    /// The reverse pair's id (the way back's objects).
    pub reverse_id: String,
    /// The records.
    pub out: Output,
    /// The journal (for steps that change something).
    pub journal: Option<Journal>,
    /// The journal's records, for steps that only look (they take no lock).
    read_only: Vec<Value>,
}

impl Pair {
    /// Parse, connect, list the databases, and (for a step that changes something) open and
    /// lock the journal.
    pub fn open(args: &PairArgs, with_journal: bool) -> anyhow::Result<Pair> {
        let src_info = Side::parse(Which::Source, &args.source)?;
        let tgt_info = Side::parse(Which::Target, &args.target)?;
        let mut out = Output::stdout();
        let (source, target) = std::thread::scope(|s| {
            let a = s.spawn(|| Side::open(Which::Source, src_info));
            let b = s.spawn(|| Side::open(Which::Target, tgt_info));
            (
                a.join().expect("connecting thread"),
                b.join().expect("connecting thread"),
            )
        });
        let (mut source, mut target) = (source?, target?);
        for side in [&source, &target] {
            out.emit(&ServerRecord {
                side: side.which,
                dsn: side.info.describe(),
                server_version: &side.version,
                server_version_num: side.version_num,
                system_identifier: &side.system_identifier,
                user: &side.user,
                superuser: side.superuser,
            })?;
        }
        let names = if args.databases.is_empty() {
            source.databases()?
        } else {
            args.databases.clone()
        };
        // Two clusters copied from one (a restored backup, a test's template) share their
        // system identifier: then the addresses tell them apart.
        if source.system_identifier == target.system_identifier {
            for side in [&mut source, &mut target] {
                let host = side.info.get("host").unwrap_or("").to_owned();
                let port = side.info.get("port").unwrap_or("5432").to_owned();
                side.system_identifier = format!("{}@{host}:{port}", side.system_identifier);
            }
        }
        let id = catalog::pair_id(&source.system_identifier, &target.system_identifier);
        let reverse_id = catalog::pair_id(&target.system_identifier, &source.system_identifier);
        let mut dbs = Vec::new();
        for name in names {
            let oid: Option<u32> = source
                .control()
                .query_opt(
                    "SELECT oid FROM pg_database WHERE datname = $1 AND datallowconn",
                    &[&name],
                )?
                .map(|r| r.get(0));
            let Some(oid) = oid else {
                return Err(shared::err(shared::ErrorKind::DataErr, format!(
                    "--databases: {name} is not a database of the source that accepts connections; check the name (psql -l)"
                )));
            };
            dbs.push(Db {
                names: catalog::names(&id, oid),
                name,
                source_oid: oid,
            });
        }
        let path = args.journal.clone().unwrap_or_else(|| {
            let (a, b) = (&source.system_identifier, &target.system_identifier);
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            crate::state_dir().join(format!("logical-{lo}-{hi}.jsonl"))
        });
        // A step that only looks reads the journal without taking its lock.
        let (journal, read_only) = if with_journal {
            (
                Some(Journal::open(&path, crate::LOCK_WAIT, "pg-logical")?),
                Vec::new(),
            )
        } else if path.exists() {
            (None, shared::journal::read(&path)?)
        } else {
            (None, Vec::new())
        };
        Ok(Pair {
            source,
            target,
            dbs,
            exclude: args.exclude_table.clone(),
            id,
            reverse_id,
            out,
            journal,
            read_only,
        })
    }

    /// Append a journal record (`logical` event, `step` and `fields`), on disk before this
    /// returns.
    pub fn note(&mut self, step: &str, fields: Value) -> anyhow::Result<()> {
        let Some(j) = self.journal.as_mut() else {
            return Ok(());
        };
        let mut rec = serde_json::Map::new();
        rec.insert("step".into(), step.into());
        rec.insert(
            "source".into(),
            self.source.system_identifier.clone().into(),
        );
        rec.insert(
            "target".into(),
            self.target.system_identifier.clone().into(),
        );
        if let Value::Object(m) = fields {
            rec.extend(m);
        }
        j.append("logical", Value::Object(rec))
            .context("writing the journal")
    }

    /// The schema fingerprint setup recorded for database `db` in this run (see
    /// [`crate::catalog::schema_lines`]).
    pub fn recorded_fingerprint(&self, db: &str) -> Option<String> {
        self.since_last_end()
            .iter()
            .rev()
            .find(|r| r["step"] == "schema_fingerprint" && r["database"] == serde_json::json!(db))
            .and_then(|r| r["fingerprint"].as_str().map(str::to_owned))
    }

    /// The journal's `logical` records of this direction's run under way, oldest first: since
    /// the last run that ended (`finished`, `aborted`, or a move the other way that opened).
    pub fn since_last_end(&self) -> Vec<Value> {
        let records = match &self.journal {
            Some(j) => j.records(),
            None => &self.read_only[..],
        };
        let mine: Vec<&Value> = records
            .iter()
            .filter(|r| r["by"] == "pg-logical" && r["event"] == "logical")
            .collect();
        let (src, tgt) = (
            json!(self.source.system_identifier),
            json!(self.target.system_identifier),
        );
        // A run ends with finish (the pair's end), its own abort, or a move the other way
        // that opened (there and back, then there again: a new run).
        let start = mine
            .iter()
            .rposition(|r| {
                let mine = r["source"] == src && r["target"] == tgt;
                let other = r["source"] == tgt && r["target"] == src;
                r["step"] == "finished"
                    || (r["step"] == "aborted" && mine)
                    || (r["step"] == "opened" && other)
            })
            .map_or(0, |i| i + 1);
        mine[start..]
            .iter()
            .filter(|r| r["source"] == src && r["target"] == tgt)
            .map(|r| (*r).clone())
            .collect()
    }

    /// The reverse objects of database `db`: named from the target's oid of it.
    pub fn reverse_names(&mut self, db: &str) -> anyhow::Result<Names> {
        let oid: u32 = self
            .target
            .control()
            .query_one("SELECT oid FROM pg_database WHERE datname = $1", &[&db])
            .with_context(|| format!("database {db} on the target"))?
            .get(0);
        Ok(catalog::names(&self.reverse_id, oid))
    }

    /// The names of the databases, for messages.
    pub fn db_names(&self) -> Vec<String> {
        self.dbs.iter().map(|d| d.name.clone()).collect()
    }
}
