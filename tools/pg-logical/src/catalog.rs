//! What the catalogs say about a database: the tables to publish and why some cannot be,
//! sequences, the schema's fingerprint, login roles.
//!
//! Every query here works on PostgreSQL 13 and later (publisher and subscriber), so a move
//! from an older major to a newer one uses the same SQL on both sides.

use postgres::{Client, GenericClient};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::pg::tables::{pattern_matches, quote_ident, TableName};

/// Schemas that are never migrated as data: the system's, and pgshift's own (the sentinel).
pub const SKIP_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// A table (or partitioned table) as the publication sees it.
#[derive(Debug, Clone)]
pub struct Table {
    /// Schema and name.
    pub name: TableName,
    /// `r` (table), `p` (partitioned table).
    pub kind: String,
    /// A partition of another table (published through its root).
    pub partition: bool,
    /// `p` permanent, `u` unlogged.
    pub persistence: String,
    /// Whether UPDATE and DELETE can be replicated (a primary key, a replica identity index,
    /// or REPLICA IDENTITY FULL).
    pub identity: bool,
    /// The replica identity: `default`, `full`, `index`, `nothing`.
    pub replica_identity: String,
    /// Size on disk (bytes), for progress.
    pub bytes: i64,
    /// Belongs to an extension (created by CREATE EXTENSION on the target, not published).
    pub extension: bool,
    /// Has stored generated columns (the target computes its own).
    pub generated: bool,
}

impl Table {
    /// `"schema"."name"`.
    pub fn sql(&self) -> String {
        self.name.sql()
    }

    /// `schema.name`.
    pub fn display(&self) -> String {
        format!("{}.{}", self.name.schema, self.name.name)
    }
}

/// Every user table of the database (partitions too), in name order.
pub fn tables(c: &mut Client) -> anyhow::Result<Vec<Table>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relispartition,
                c.relpersistence::text, c.relreplident::text,
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),
                coalesce(pg_table_size(c.oid), 0)::bigint,
                EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                        AND d.objid = c.oid AND d.deptype = 'e'),
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                        AND NOT a.attisdropped AND a.attgenerated <> '')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p') AND {SKIP_SCHEMAS}
          ORDER BY 1, 2"
    );
    let rows = c.query(&sql, &[])?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind: String = r.get(2);
            let ident: String = r.get(5);
            let (pk, ri_index): (bool, bool) = (r.get(6), r.get(7));
            let identity = match ident.as_str() {
                "f" => true,
                "i" => ri_index,
                "d" => pk,
                _ => false,
            };
            Table {
                name: TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                // A partitioned table holds no rows: its partitions' identities count.
                identity: identity || kind == "p",
                kind,
                partition: r.get(3),
                persistence: r.get(4),
                replica_identity: match ident.as_str() {
                    "f" => "full",
                    "i" => "index",
                    "n" => "nothing",
                    _ => "default",
                }
                .to_owned(),
                bytes: r.get(8),
                extension: r.get(9),
                generated: r.get(10),
            }
        })
        .collect())
}

/// The tables a publication lists: roots only (partitions publish through them), no
/// extension's tables, none excluded by `--exclude-table`.
pub fn published<'a>(all: &'a [Table], exclude: &[String]) -> Vec<&'a Table> {
    all.iter()
        .filter(|t| !t.partition && !t.extension && !excluded(t, exclude))
        .collect()
}

/// Whether `--exclude-table` patterns (NAME or SCHEMA.NAME, globs) leave `t` out.
pub fn excluded(t: &Table, patterns: &[String]) -> bool {
    matches_any(&t.name, patterns)
}

/// Whether any pattern (NAME or SCHEMA.NAME, globs) matches `name`.
pub fn matches_any(name: &TableName, patterns: &[String]) -> bool {
    patterns
        .iter()
        .any(|p| pattern_matches(p, &name.schema, &name.name))
}

/// A sequence and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sequence {
    /// `"schema"."name"`.
    pub name: String,
    /// Its `last_value`, as the sequence relation holds it.
    pub last_value: i64,
    /// Whether `last_value` was handed out: false for one never used, and after
    /// `setval(s, v, false)` or `ALTER SEQUENCE ... RESTART` (the next `nextval` gives
    /// `last_value` itself).
    pub is_called: bool,
    /// Owned by a table column (serial, identity): false for a free-standing one.
    pub owned: bool,
}

/// Every sequence of the database (user schemas), with its state read from the sequence
/// itself. `pg_sequences.last_value` is NULL whenever `is_called` is false, not only before
/// the first `nextval`, and for a role without privilege on it: taken for "never used", a
/// sequence set back to 500 was reset to its start on the target, and NULL compared equal to
/// NULL (found by an audit).
pub fn sequences(c: &mut Client) -> anyhow::Result<Vec<Sequence>> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname),
                EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                        AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                        AND d.deptype IN ('a', 'i'))
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'S' AND {SKIP_SCHEMAS}
          ORDER BY 1"
    );
    let listed: Vec<(String, bool)> = c
        .query(&sql, &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    listed
        .into_iter()
        .map(|(name, owned)| {
            let row = c
                .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
                .map_err(|e| anyhow::Error::new(e).context(format!("reading sequence {name}")))?;
            Ok(Sequence {
                name,
                last_value: row.get(0),
                is_called: row.get(1),
                owned,
            })
        })
        .collect()
}

/// The SQL that makes a target sequence equal to `s`.
pub fn setval_sql(s: &Sequence) -> String {
    format!(
        "SELECT setval('{}', {}, {})",
        s.name.replace('\'', "''"),
        s.last_value,
        s.is_called
    )
}

/// The schema's fingerprint: relations, columns (type, nullability, default, generation),
/// constraints, indexes and enum labels of the user schemas, hashed. Any DDL changes it;
/// taken at the start and again at the fence, so a change during the run stops the cutover.
/// `shape_only` keeps relations and column names and types: what two servers of different
/// majors agree on for the same schema (their texts of defaults and indexes may differ).
pub fn schema_lines(c: &mut Client, shape_only: bool) -> anyhow::Result<Vec<String>> {
    let mut parts = vec![
        format!(
            "SELECT format('rel %s.%s %s %s', n.nspname, c.relname, c.relkind, c.relpersistence)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {SKIP_SCHEMAS}"
        ),
        format!(
            "SELECT format('col %s.%s.%s %s', n.nspname, c.relname, a.attname,
                           format_type(a.atttypid, a.atttypmod))
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND {SKIP_SCHEMAS}"
        ),
    ];
    if !shape_only {
        parts.extend([
            format!(
                "SELECT format('att %s.%s.%s %s %s %s', n.nspname, c.relname, a.attname, a.attnotnull,
                               a.attgenerated, coalesce(pg_get_expr(d.adbin, d.adrelid), ''))
                   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND {SKIP_SCHEMAS}"
            ),
            format!(
                "SELECT format('con %s.%s %s %s', n.nspname, c.relname, o.conname, pg_get_constraintdef(o.oid))
                   FROM pg_constraint o JOIN pg_class c ON c.oid = o.conrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SKIP_SCHEMAS}"
            ),
            format!(
                "SELECT format('idx %s', pg_get_indexdef(i.indexrelid))
                   FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SKIP_SCHEMAS}"
            ),
            "SELECT format('enum %s %s', e.enumtypid::regtype, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder))
               FROM pg_enum e GROUP BY e.enumtypid"
                .to_owned(),
            format!(
                "SELECT format('ri %s.%s %s', n.nspname, c.relname, c.relreplident)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND {SKIP_SCHEMAS}"
            ),
        ]);
    }
    let sql = format!(
        "SELECT x FROM ({}) s(x) ORDER BY x COLLATE \"C\"",
        parts.join(" UNION ALL ")
    );
    Ok(c.query(&sql, &[])?.iter().map(|r| r.get(0)).collect())
}

/// Whether the subscription `name` exists (pg_subscription is shared by the databases; the
/// names pgshift gives carry the database's oid).
pub fn subscription_exists(c: &mut Client, name: &str) -> anyhow::Result<bool> {
    Ok(
        c.query_opt("SELECT 1 FROM pg_subscription WHERE subname = $1", &[&name])?
            .is_some(),
    )
}

/// Drop the subscription `name`, when there, from a session in its database, leaving its slot
/// on the publisher (dropped on its own side: the publisher may be the one being left).
pub fn drop_subscription(c: &mut Client, name: &str) -> anyhow::Result<()> {
    if subscription_exists(c, name)? {
        let sub = quote_ident(name);
        c.batch_execute(&format!("ALTER SUBSCRIPTION {sub} DISABLE"))?;
        c.batch_execute(&format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"))?;
        c.batch_execute(&format!("DROP SUBSCRIPTION {sub}"))?;
    }
    Ok(())
}

/// The `shape_only` lines of a whole [`schema_lines`] list (its relations and columns, in the
/// same order), without asking the server again.
pub fn shape_of(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("rel ") || l.starts_with("col "))
        .cloned()
        .collect()
}

/// The refusal when the source's schema fingerprint is no longer the one setup recorded.
pub fn schema_changed(db: &str, recorded: &str, now: &str) -> anyhow::Error {
    shared::err(
        shared::ErrorKind::DataErr,
        format!(
            "the schema of database {db} changed on the source during the run (fingerprint {recorded} at setup, {now} now): DDL is not replicated; apply it on the target too, then run setup again (pg-logical abort, then setup), or move in a quiet window"
        ),
    )
}

/// A short hash of [`schema_lines`].
pub fn fingerprint(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..8])
}

/// What differs between two sets of schema lines: (only in `a`, only in `b`), at most
/// `limit` of each.
pub fn schema_diff(a: &[String], b: &[String], limit: usize) -> (Vec<String>, Vec<String>) {
    let sa: std::collections::BTreeSet<&String> = a.iter().collect();
    let sb: std::collections::BTreeSet<&String> = b.iter().collect();
    (
        sa.difference(&sb)
            .take(limit)
            .map(|s| (*s).clone())
            .collect(),
        sb.difference(&sa)
            .take(limit)
            .map(|s| (*s).clone())
            .collect(),
    )
}

/// Login roles other than `spare` (and the predefined `pg_*` roles), by name.
pub fn login_roles(c: &mut impl GenericClient, spare: &[String]) -> anyhow::Result<Vec<String>> {
    let rows = c.query(
        "SELECT rolname::text FROM pg_roles WHERE rolcanlogin AND NOT (rolname = ANY($1))
            AND rolname NOT LIKE 'pg\\_%' ORDER BY 1",
        &[&spare],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Of `roles`, those that are no superuser (in name order): the roles a fence must hold, as
/// a superuser (a managed service's own) cannot be fenced by a role that is none.
pub fn non_superusers(c: &mut impl GenericClient, roles: &[String]) -> anyhow::Result<Vec<String>> {
    if roles.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c.query(
        "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1) AND NOT rolsuper ORDER BY 1",
        &[&roles],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether pgshift's mark says the fence is on (some role carries it) on `c`'s server.
pub fn fence_marked(c: &mut Client) -> anyhow::Result<bool> {
    Ok(!fenced_roles(c, None)?.is_empty())
}

/// Roles pgshift fenced on this server (they carry the `pgshift.fenced` setting), by name;
/// with `run_prefix`, only those whose mark starts with it (a pair's id: fenced by that
/// direction's steps).
pub fn fenced_roles(
    c: &mut impl GenericClient,
    run_prefix: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let pattern = format!(
        "pgshift.fenced={}%",
        run_prefix
            .unwrap_or("")
            .replace('%', "")
            .replace('_', "\\_")
    );
    let rows = c.query(
        "SELECT r.rolname::text FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
          WHERE s.setdatabase = 0 AND EXISTS (SELECT 1 FROM unnest(s.setconfig) v WHERE v LIKE $1)
          ORDER BY 1",
        &[&pattern],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `ALTER ROLE "r" ...`.
pub fn alter_role(role: &str, what: &str) -> String {
    format!("ALTER ROLE {} {what}", quote_ident(role))
}

/// The replication objects of one database of a pair, named from both servers' system
/// identifiers (so the reverse direction has its own, and a second run finds the first's).
#[derive(Debug, Clone, Serialize)]
pub struct Names {
    /// The publication on the source and the subscription on the target.
    pub publication: String,
    /// The subscription on the target (named like the slot).
    pub subscription: String,
    /// The slot on the source (one per database: slot names are per cluster).
    pub slot: String,
}

/// The pair's id: 10 hex digits of a hash of the two system identifiers, in direction order.
pub fn pair_id(from_sysid: &str, to_sysid: &str) -> String {
    let mut h = Sha256::new();
    h.update(from_sysid.as_bytes());
    h.update(b">");
    h.update(to_sysid.as_bytes());
    hex::encode(h.finalize())[..10].to_owned()
}

/// The names for database `db_oid` (its oid on the publishing side) of pair `pair`. The
/// subscription is named like its slot: subscriptions live in a shared catalog, and the
/// statistics views list every database's, so one name per database keeps them apart.
pub fn names(pair: &str, db_oid: u32) -> Names {
    let base = format!("pgshift_{pair}");
    let per_db = format!("{base}_{db_oid}");
    Names {
        publication: base,
        subscription: per_db.clone(),
        slot: per_db,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_ids_differ_by_direction_and_names_fit_a_slot() {
        let a = pair_id("7312345678901234567", "7398765432109876543");
        let b = pair_id("7398765432109876543", "7312345678901234567");
        assert_ne!(a, b);
        let n = names(&a, 4294967295);
        assert!(n.slot.len() <= 63, "{}", n.slot);
        assert!(n
            .slot
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }

    #[test]
    fn setval_carries_the_value_and_whether_it_was_handed_out() {
        let used = Sequence {
            name: "\"s\".\"it's\"".into(),
            last_value: 42,
            is_called: true,
            owned: false,
        };
        assert_eq!(
            setval_sql(&used),
            "SELECT setval('\"s\".\"it''s\"', 42, true)"
        );
        let set_back = Sequence {
            last_value: 500,
            is_called: false,
            ..used
        };
        assert_eq!(
            setval_sql(&set_back),
            "SELECT setval('\"s\".\"it''s\"', 500, false)"
        );
    }

    #[test]
    fn exclusion_patterns_take_a_name_or_a_schema_and_name() {
        let t = TableName::new("sales", "orders_2024");
        assert!(matches_any(&t, &["orders_*".into()]));
        assert!(matches_any(&t, &["sales.*".into()]));
        assert!(!matches_any(&t, &["public.*".into()]));
        assert!(!matches_any(&t, &[]));
    }
}
