//! Which tables a tool looks at, and what the catalog says about them.
//!
//! `rowcount-diff` and `pg-checksum` take the same table filters (`--schema`, `--table`,
//! `--exclude`) and must select exactly the same tables from the same database, or the
//! pipeline `rowcount-diff | pg-checksum --from-stdin` would compare different sets. So the
//! filter ([`TableFilter`], a clap `Args` group both tools flatten into their command line)
//! and the catalog query ([`list_tables`]) live here, once.
//!
//! Patterns are shell globs (`*`, `?`), like `pg_dump -t`: a pattern with a dot matches
//! `schema.name`, one without matches the table name in any schema. Names are compared as
//! stored in the catalog (case-sensitive, unquoted).
//!
//! Tables are ordinary tables and partitions (`relkind` `r`): partitioned parents hold no rows
//! of their own, so their partitions are listed instead, each read with `FROM ONLY`. System
//! schemas (`pg_catalog`, `information_schema`, `pg_toast`, temporary schemas) are never listed.

use std::fmt;

use anyhow::Context;

/// The table selection options shared by every tool that reads tables.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFilter {
    /// Only tables in this schema (a glob; repeatable). Default: every non-system schema.
    #[arg(long = "schema", value_name = "SCHEMA")]
    pub schemas: Vec<String>,
    /// Only these tables: NAME or SCHEMA.NAME, globs allowed (repeatable).
    #[arg(long = "table", value_name = "PATTERN")]
    pub tables: Vec<String>,
    /// Leave out tables matching NAME or SCHEMA.NAME, globs allowed (repeatable).
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
}

impl TableFilter {
    /// True if the table `schema.name` is selected.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        let hit = |pattern: &str| pattern_matches(pattern, schema, name);
        (self.schemas.is_empty() || self.schemas.iter().any(|s| glob_match(s, schema)))
            && (self.tables.is_empty() || self.tables.iter().any(|t| hit(t)))
            && !self.excludes.iter().any(|e| hit(e))
    }
}

impl TableFilter {
    /// True if no `--schema`, `--table` or `--exclude` was given.
    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty() && self.tables.is_empty() && self.excludes.is_empty()
    }

    /// "Nothing compared" must never read as "equal": an error (exit 65) naming the first
    /// pattern that selects nothing among `all` (the user tables of every host compared,
    /// unfiltered), or saying that the filter as a whole leaves no table. `Ok` without a
    /// filter, even with no tables at all (callers report an empty database as such).
    pub fn check_selects(&self, all: &[TableName]) -> anyhow::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let hit = |pattern: &str, t: &TableName| pattern_matches(pattern, &t.schema, &t.name);
        let fail = |m: String| Err(crate::err(crate::ErrorKind::DataErr, m));
        for s in &self.schemas {
            if !all.iter().any(|t| glob_match(s, &t.schema)) {
                let mut schemas: Vec<&str> = all.iter().map(|t| t.schema.as_str()).collect();
                schemas.sort_unstable();
                schemas.dedup();
                return fail(format!(
                    "--schema '{s}' matches no schema with tables on either host (schemas with tables: {}); check the spelling",
                    if schemas.is_empty() { "none".to_owned() } else { schemas.join(", ") }
                ));
            }
        }
        let in_schema: Vec<&TableName> = all
            .iter()
            .filter(|t| {
                self.schemas.is_empty() || self.schemas.iter().any(|s| glob_match(s, &t.schema))
            })
            .collect();
        for p in &self.tables {
            if !in_schema.iter().any(|t| hit(p, t)) {
                return fail(format!(
                    "--table '{p}' matches no table on either host{}; name a table as NAME or SCHEMA.NAME (globs * and ? allowed) and check the spelling (a partitioned table is compared through its partitions, which are tables of their own; views, materialized views and foreign tables are not compared)",
                    if self.schemas.is_empty() { String::new() } else { format!(" in --schema {}", self.schemas.join(", ")) }
                ));
            }
        }
        let chosen: Vec<&TableName> = in_schema
            .into_iter()
            .filter(|t| self.tables.is_empty() || self.tables.iter().any(|p| hit(p, t)))
            .collect();
        for e in &self.excludes {
            if !chosen.iter().any(|t| hit(e, t)) {
                return fail(format!(
                    "--exclude '{e}' matches none of the tables selected; check the spelling, or drop it"
                ));
            }
        }
        if !all.iter().any(|t| self.matches(&t.schema, &t.name)) {
            return fail(format!(
                "the filter ({}) leaves no table to compare on either host",
                self.describe()
            ));
        }
        Ok(())
    }

    /// The filter as command-line options, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.schemas.iter().map(|s| format!("--schema {s}")));
        parts.extend(self.tables.iter().map(|s| format!("--table {s}")));
        parts.extend(self.excludes.iter().map(|s| format!("--exclude {s}")));
        parts.join(" ")
    }
}

/// Whether a table pattern matches `schema.name`: with a dot it is a glob over
/// `schema.name`, without one over the name in any schema (like `pg_dump -t`).
pub fn pattern_matches(pattern: &str, schema: &str, name: &str) -> bool {
    if pattern.contains('.') {
        glob_match(pattern, &format!("{schema}.{name}"))
    } else {
        glob_match(pattern, name)
    }
}

/// Shell-style glob: `*` matches any run of characters, `?` one character, the rest literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `*` (linear in practice).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Quote an SQL identifier the way `quote_ident` would, always (safe for any name).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (with `standard_conforming_strings = on`, the default since 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// The schema (namespace).
    pub schema: String,
    /// The table name.
    pub name: String,
}

impl TableName {
    /// A name from its two parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> TableName {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The quoted SQL form, `"schema"."name"`.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    /// `schema.name`, for messages and records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One column, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Its type as `format_type` writes it, typmod included (`character varying(20)`).
    pub type_name: String,
    /// The OID of its base type (domains resolved to the type they are built on).
    pub base_type: u32,
    /// The base type's name without typmod (`character varying`), for messages.
    pub base_type_name: String,
    /// The base type as a cast target that keeps every value: its schema-qualified catalog
    /// name, no typmod (`pg_catalog.bpchar`, not `character`, which means `character(1)` in a
    /// cast and cuts `'abc'` to `'a'`; `public.mood` for an enum).
    pub base_type_sql: String,
    /// The base type's `typname` (`int4`, `citext`, an enum's name).
    pub base_typname: String,
    /// An enum's labels in their sort order (`None` for other types).
    pub enum_labels: Option<Vec<String>>,
    /// True if the base type is collatable (text-like).
    pub collatable: bool,
    /// The column's collation (`pg_attribute.attcollation`; 0 if none).
    pub collation: u32,
    /// `NOT NULL`.
    pub not_null: bool,
}

/// One table, as the catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// Its name.
    pub name: TableName,
    /// `pg_class.oid`.
    pub oid: u32,
    /// The planner's row estimate (`pg_class.reltuples`; -1 if never vacuumed or analyzed).
    pub reltuples: f64,
    /// Its size in blocks (`pg_relation_size / block_size`, at the time of the query).
    pub blocks: i64,
    /// `pg_stat_user_tables.n_live_tup` (0 where statistics are not kept, e.g. a standby).
    pub live_tuples: i64,
    /// True for an unlogged table (not replicated; unreadable on a standby).
    pub unlogged: bool,
    /// Columns in `attnum` order, dropped columns left out.
    pub columns: Vec<ColumnInfo>,
}

const TABLES_SQL: &str = "\
SELECT n.nspname::text, c.relname::text, c.oid::int8, c.reltuples::float8,
       (pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int8)::int8,
       coalesce(s.n_live_tup, 0)::int8, c.relpersistence = 'u'
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.relkind = 'r'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
 ORDER BY 1, 2";

// Domains are resolved to their base type through any depth of domain-over-domain.
const COLUMNS_SQL: &str = "\
WITH RECURSIVE base(oid, base) AS (
    SELECT t.oid, t.oid FROM pg_catalog.pg_type t WHERE t.typtype <> 'd'
  UNION ALL
    SELECT d.oid, b.base FROM pg_catalog.pg_type d JOIN base b ON d.typbasetype = b.oid
     WHERE d.typtype = 'd'
)
SELECT a.attrelid::int8, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
       b.base::int8, pg_catalog.format_type(b.base, NULL), bt.typcollation <> 0, a.attnotnull,
       pg_catalog.quote_ident(bn.nspname) || '.' || pg_catalog.quote_ident(bt.typname),
       bt.typname::text,
       CASE WHEN bt.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
                                               WHERE e.enumtypid = bt.oid ORDER BY e.enumsortorder) END,
       a.attcollation::int8
  FROM pg_catalog.pg_attribute a
  JOIN base b ON b.oid = a.atttypid
  JOIN pg_catalog.pg_type bt ON bt.oid = b.base
  JOIN pg_catalog.pg_namespace bn ON bn.oid = bt.typnamespace
 WHERE a.attrelid = ANY($1::text::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum";

/// The tables `filter` selects, with their columns, read from the catalog of `client`'s
/// database. The catalog is read with a fresh catalog snapshot (as PostgreSQL always does),
/// so call it inside the caller's transaction to list what that transaction will read.
pub fn list_tables(
    client: &mut postgres::Client,
    filter: &TableFilter,
) -> anyhow::Result<Vec<TableInfo>> {
    list_tables_and_names(client, filter).map(|(t, _)| t)
}

/// [`list_tables`], and the names of every user table before filtering (for
/// [`TableFilter::check_selects`]).
pub fn list_tables_and_names(
    client: &mut postgres::Client,
    filter: &TableFilter,
) -> anyhow::Result<(Vec<TableInfo>, Vec<TableName>)> {
    let rows = client.query(TABLES_SQL, &[]).context("listing tables")?;
    let names: Vec<TableName> = rows
        .iter()
        .map(|r| TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let mut tables: Vec<TableInfo> = rows
        .into_iter()
        .filter(|r| filter.matches(r.get(0), r.get(1)))
        .map(|r| TableInfo {
            name: TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            oid: r.get::<_, i64>(2) as u32,
            reltuples: r.get(3),
            blocks: r.get(4),
            live_tuples: r.get(5),
            unlogged: r.get(6),
            columns: Vec::new(),
        })
        .collect();
    if tables.is_empty() {
        return Ok((tables, names));
    }
    let oids: Vec<String> = tables.iter().map(|t| t.oid.to_string()).collect();
    let oid_list = format!("{{{}}}", oids.join(","));
    let rows = client
        .query(COLUMNS_SQL, &[&oid_list])
        .context("listing columns")?;
    let mut by_oid: std::collections::HashMap<u32, Vec<ColumnInfo>> =
        std::collections::HashMap::new();
    for r in rows {
        by_oid
            .entry(r.get::<_, i64>(0) as u32)
            .or_default()
            .push(ColumnInfo {
                name: r.get(1),
                type_name: r.get(2),
                base_type: r.get::<_, i64>(3) as u32,
                base_type_name: r.get(4),
                collatable: r.get(5),
                not_null: r.get(6),
                base_type_sql: r.get(7),
                base_typname: r.get(8),
                enum_labels: r.get(9),
                collation: r.get::<_, i64>(10) as u32,
            });
    }
    for t in &mut tables {
        t.columns = by_oid.remove(&t.oid).unwrap_or_default();
    }
    Ok((tables, names))
}

/// How each of `collations` (OIDs from [`ColumnInfo::collation`]) orders text on this host,
/// as a string that is equal on two hosts exactly when they order text alike: `C` for the
/// byte-order collations (`C`, `POSIX`, and libc's `C.*`, code point order, which for UTF-8
/// is byte order; PostgreSQL keeps no version for them either), else `provider:locale:version` (the version the library in use
/// reports, `pg_collation_actual_version`), and `unknown` where that cannot be told (a
/// nondeterministic collation, a server before PostgreSQL 15, a library that reports no
/// version). `unknown` is never equal to anything: callers fall back to byte order.
pub fn collation_orders(
    client: &mut postgres::Client,
    collations: &[u32],
) -> std::collections::HashMap<u32, String> {
    // The locale columns moved between majors (daticulocale, then datlocale): read them
    // through to_jsonb so the query parses on every version it may meet.
    const SQL: &str = "\
SELECT c.oid::int8,
       CASE WHEN c.oid = 100 THEN
              (SELECT CASE WHEN coalesce(to_jsonb(d)->>'datlocprovider', 'c') = 'c'
                                AND (d.datcollate IN ('C', 'POSIX') OR d.datcollate LIKE 'C.%') THEN 'C'
                           ELSE coalesce(to_jsonb(d)->>'datlocprovider', 'c') || ':'
                                || coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale', d.datcollate)
                                || ':' || coalesce(pg_catalog.pg_database_collation_actual_version(d.oid), 'unknown') END
                 FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
            WHEN c.collname IN ('C', 'POSIX') OR c.collprovider = 'c'
                 AND (coalesce(to_jsonb(c)->>'collcollate', '') IN ('C', 'POSIX') OR to_jsonb(c)->>'collcollate' LIKE 'C.%') THEN 'C'
            WHEN NOT c.collisdeterministic THEN 'unknown'
            ELSE c.collprovider::text || ':' || coalesce(to_jsonb(c)->>'colllocale', to_jsonb(c)->>'colliculocale', to_jsonb(c)->>'collcollate', c.collname::text)
                 || ':' || coalesce(pg_catalog.pg_collation_actual_version(c.oid), 'unknown') END
  FROM pg_catalog.pg_collation c
 WHERE c.oid = ANY($1::text::oid[])";
    let mut out: std::collections::HashMap<u32, String> = collations
        .iter()
        .map(|c| (*c, "unknown".to_owned()))
        .collect();
    if collations.is_empty() {
        return out;
    }
    let list = format!(
        "{{{}}}",
        collations
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // A savepoint when in a transaction (callers read inside their snapshot's), which a
    // failed query (an old server without pg_database_collation_actual_version) must not
    // abort; outside one, SAVEPOINT fails and the query runs on its own.
    let saved = client.batch_execute("SAVEPOINT pgshift_collation").is_ok();
    match client.query(SQL, &[&list]) {
        Ok(rows) => {
            if saved {
                let _ = client.batch_execute("RELEASE SAVEPOINT pgshift_collation");
            }
            for r in rows {
                let v: Option<String> = r.get(1);
                let v = v.unwrap_or_else(|| "unknown".into());
                // A version the library does not report cannot be compared.
                let v = if v.ends_with(":unknown") {
                    "unknown".into()
                } else {
                    v
                };
                out.insert(r.get::<_, i64>(0) as u32, v);
            }
        }
        Err(_) if saved => {
            let _ = client.batch_execute("ROLLBACK TO SAVEPOINT pgshift_collation");
        }
        Err(_) => {}
    }
    out
}

/// A column whose type differs between the hosts.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TypeDiff {
    /// Column name.
    pub column: String,
    /// Its type on the source.
    pub source: String,
    /// Its type on the target.
    pub target: String,
}

/// Columns only on the source, only on the target, and with different types.
pub fn column_diff(s: &TableInfo, t: &TableInfo) -> (Vec<String>, Vec<String>, Vec<TypeDiff>) {
    let tmap: std::collections::BTreeMap<&str, &str> = t
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str()))
        .collect();
    let smap: std::collections::BTreeMap<&str, &str> = s
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str()))
        .collect();
    let only_s = s
        .columns
        .iter()
        .filter(|c| !tmap.contains_key(c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    let only_t = t
        .columns
        .iter()
        .filter(|c| !smap.contains_key(c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    let types = s
        .columns
        .iter()
        .filter_map(|c| {
            let other = tmap.get(c.name.as_str())?;
            (*other != c.type_name).then(|| TypeDiff {
                column: c.name.clone(),
                source: c.type_name.clone(),
                target: (*other).to_owned(),
            })
        })
        .collect();
    (only_s, only_t, types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_selects_nothing_is_an_error_naming_it() {
        let all = [
            TableName::new("public", "orders"),
            TableName::new("app", "users"),
        ];
        let f = |s: &[&str], t: &[&str], e: &[&str]| TableFilter {
            schemas: s.iter().map(|x| x.to_string()).collect(),
            tables: t.iter().map(|x| x.to_string()).collect(),
            excludes: e.iter().map(|x| x.to_string()).collect(),
        };
        let msg = |f: TableFilter| {
            let e = f.check_selects(&all).unwrap_err();
            assert_eq!(crate::exit::classify(&e), crate::ErrorKind::DataErr);
            format!("{e:#}")
        };
        assert!(f(&[], &[], &[]).check_selects(&all).is_ok());
        assert!(f(&[], &[], &[]).check_selects(&[]).is_ok());
        assert!(f(&["app"], &["us*"], &[]).check_selects(&all).is_ok());
        assert!(f(&[], &["orders", "nosuch"], &[])
            .check_selects(&all)
            .is_err());
        assert!(msg(f(&[], &["nosuch"], &[])).contains("--table 'nosuch' matches no table"));
        assert!(msg(f(&["ap"], &[], &[])).contains("--schema 'ap' matches no schema"));
        assert!(msg(f(&["app"], &["orders"], &[])).contains("in --schema app"));
        assert!(msg(f(&[], &[], &["ordrs"])).contains("--exclude 'ordrs' matches none"));
        let m = msg(f(&[], &[], &["*"]));
        assert!(
            m.contains("leaves no table") && m.contains("--exclude *"),
            "{m}"
        );
        assert!(msg(f(&[], &["x"], &[])).contains("x"));
        let e = f(&[], &["orders"], &[]).check_selects(&[]).unwrap_err();
        assert!(format!("{e:#}").contains("matches no table"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "abc"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*_log", "audit_log"));
        assert!(!glob_match("*_log", "audit_logs"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("pübl*", "pübli"));
    }

    fn filter(schemas: &[&str], tables: &[&str], excludes: &[&str]) -> TableFilter {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        TableFilter {
            schemas: v(schemas),
            tables: v(tables),
            excludes: v(excludes),
        }
    }

    #[test]
    fn filters_combine_schema_table_and_exclude() {
        let all = filter(&[], &[], &[]);
        assert!(all.matches("public", "t"));

        let f = filter(&["app"], &[], &[]);
        assert!(f.matches("app", "t"));
        assert!(!f.matches("public", "t"));

        // A dotted pattern is schema-qualified, a bare one matches the name in any schema.
        let f = filter(&[], &["public.t*"], &[]);
        assert!(f.matches("public", "t1"));
        assert!(!f.matches("app", "t1"));
        let f = filter(&[], &["t1"], &[]);
        assert!(f.matches("public", "t1") && f.matches("app", "t1"));

        let f = filter(&[], &[], &["*_log", "app.*"]);
        assert!(f.matches("public", "t"));
        assert!(!f.matches("public", "audit_log"));
        assert!(!f.matches("app", "t"));

        // Exclude wins over include.
        let f = filter(&[], &["t*"], &["t2"]);
        assert!(f.matches("public", "t1") && !f.matches("public", "t2"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(TableName::new("Sch", "t.x").sql(), "\"Sch\".\"t.x\"");
        assert_eq!(TableName::new("s", "t").to_string(), "s.t");
    }
}
