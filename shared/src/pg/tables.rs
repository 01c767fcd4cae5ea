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
        let hit = |pattern: &str| {
            if pattern.contains('.') {
                glob_match(pattern, &format!("{schema}.{name}"))
            } else {
                glob_match(pattern, name)
            }
        };
        (self.schemas.is_empty() || self.schemas.iter().any(|s| glob_match(s, schema)))
            && (self.tables.is_empty() || self.tables.iter().any(|t| hit(t)))
            && !self.excludes.iter().any(|e| hit(e))
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
    /// The base type's name without typmod (`character varying`), for casts.
    pub base_type_name: String,
    /// True if the base type is collatable (text-like).
    pub collatable: bool,
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
       b.base::int8, pg_catalog.format_type(b.base, NULL), bt.typcollation <> 0, a.attnotnull
  FROM pg_catalog.pg_attribute a
  JOIN base b ON b.oid = a.atttypid
  JOIN pg_catalog.pg_type bt ON bt.oid = b.base
 WHERE a.attrelid = ANY($1::text::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum";

/// The tables `filter` selects, with their columns, read from the catalog of `client`'s
/// database. The catalog is read with a fresh catalog snapshot (as PostgreSQL always does),
/// so call it inside the caller's transaction to list what that transaction will read.
pub fn list_tables(
    client: &mut postgres::Client,
    filter: &TableFilter,
) -> anyhow::Result<Vec<TableInfo>> {
    let mut tables: Vec<TableInfo> = client
        .query(TABLES_SQL, &[])
        .context("listing tables")?
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
        return Ok(tables);
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
            });
    }
    for t in &mut tables {
        t.columns = by_oid.remove(&t.oid).unwrap_or_default();
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

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
