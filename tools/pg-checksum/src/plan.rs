//! What to read for each table: the hashed columns, the key to chunk by, and why a table is
//! hashed whole or cannot be chunked.
//!
//! The key is the primary key, else the replica identity index, else the narrowest unique
//! index on NOT NULL columns (no expressions, no predicate): any of them identifies a row. Key
//! columns must have a type whose order is the same on every host and whose text form reads
//! back to the same value ([`order_class`]); boundary literals are cast to the column's base
//! type by its catalog name (`pg_catalog.bpchar`, never `character`, which is `character(1)`
//! in a cast). Text-like key columns are compared in the key index's own order when both hosts
//! order that collation alike (same provider, locale and library version: the index serves the
//! range scans of drill-down), else `COLLATE "C"` (byte order, the same everywhere). A table
//! without such a key is hashed whole (and says so); a key of another type is an error that
//! names `--whole-table` as the fix, since silently hashing whole would hide that drill-down
//! is impossible.

use std::collections::HashMap;

use anyhow::Context;
use shared::pg::tables::{column_diff, ColumnInfo, TableInfo, TableName, TypeDiff};
use shared::ErrorKind;

use crate::sql::{KeyCol, Shape};

/// A table's row identifier, as found in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableKey {
    /// Key columns in index order.
    pub columns: Vec<String>,
    /// `primary key`, `replica identity index` or `unique index`, with the index name.
    pub what: String,
    /// The index's collation of each key column (0 for a type without one).
    pub collations: Vec<u32>,
}

const KEYS_SQL: &str = "\
SELECT i.indrelid::int8, i.indisprimary, i.indisreplident, ci.relname::text,
       ARRAY(SELECT a.attname::text
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              ORDER BY k.ord),
       (SELECT bool_and(a.attnotnull)
          FROM unnest(i.indkey::int2[]) AS k(attnum)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
       ARRAY(SELECT c::int8 FROM unnest(i.indcollation::oid[]) WITH ORDINALITY AS u(c, ord) ORDER BY u.ord)
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
 WHERE i.indrelid = ANY($1::text::oid[]) AND i.indisunique AND i.indisvalid
   AND i.indpred IS NULL AND i.indexprs IS NULL";

/// The best key of each table (by OID), for the tables that have one.
pub fn find_keys(
    client: &mut postgres::Client,
    tables: &[TableInfo],
) -> anyhow::Result<HashMap<u32, TableKey>> {
    if tables.is_empty() {
        return Ok(HashMap::new());
    }
    let oids: Vec<String> = tables.iter().map(|t| t.oid.to_string()).collect();
    let rows = client
        .query(KEYS_SQL, &[&format!("{{{}}}", oids.join(","))])
        .context("reading primary keys and unique indexes")?;
    // (rank, width, index name) decides: primary key, replica identity, then narrowest.
    let mut best: HashMap<u32, ((u8, usize, String), TableKey)> = HashMap::new();
    for r in rows {
        let oid = r.get::<_, i64>(0) as u32;
        let (primary, replident): (bool, bool) = (r.get(1), r.get(2));
        let index: String = r.get(3);
        let columns: Vec<String> = r.get(4);
        let not_null: Option<bool> = r.get(5);
        let collations: Vec<i64> = r.get(6);
        if !primary && not_null != Some(true) {
            continue;
        }
        let (rank, what) = if primary {
            (0, "primary key")
        } else if replident {
            (1, "replica identity index")
        } else {
            (2, "unique index")
        };
        let order = (rank, columns.len(), index.clone());
        let key = TableKey {
            columns,
            what: format!("{what} {index}"),
            collations: collations.into_iter().map(|c| c as u32).collect(),
        };
        match best.get(&oid) {
            Some((o, _)) if *o <= order => {}
            _ => {
                best.insert(oid, (order, key));
            }
        }
    }
    Ok(best.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

/// Types whose order and text form are the same on every host, grouped so that e.g. an
/// `integer` key on one host and a `bigint` key on the other still chunk alike. `None`: not
/// usable as a chunk key. An enum orders by its labels' sort order, so its class lists them:
/// two hosts whose labels differ (or were added in another order) do not chunk alike.
pub fn order_class(c: &ColumnInfo) -> Option<String> {
    if let Some(labels) = &c.enum_labels {
        return Some(format!("enum ({})", labels.join(", ")));
    }
    if c.base_typname == "citext" {
        return Some("citext".into());
    }
    Some(
        match c.base_type {
            20 | 21 | 23 => "integer",
            25 | 1043 | 19 => "text",
            1042 => "character",
            1700 => "numeric",
            26 => "oid",
            16 => "boolean",
            17 => "bytea",
            18 => "\"char\"",
            2950 => "uuid",
            1082 => "date",
            1083 => "time",
            1114 => "timestamp",
            1184 => "timestamptz",
            869 => "inet",
            650 => "cidr",
            829 => "macaddr",
            774 => "macaddr8",
            _ => return None,
        }
        .into(),
    )
}

/// How one table is read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The table.
    pub name: TableName,
    /// Columns, key and table as the SQL builder wants them.
    pub shape: Shape,
    /// Which index the key comes from (for messages).
    pub key_from: Option<String>,
    /// Columns only the source (or only the target) has; only the common ones are hashed.
    pub only_on_source: Vec<String>,
    /// See `only_on_source`.
    pub only_on_target: Vec<String>,
    /// Common columns whose type differs (`format_type`): their values may print alike
    /// (`42` as int and as text) but the tables are not the same.
    pub type_diffs: Vec<TypeDiff>,
    /// Size in blocks on the source (or the only host) and on the target.
    pub blocks: [i64; 2],
    /// Why the table is hashed whole, if it is.
    pub note: Option<String>,
    /// How text-like key columns are ordered: `index (provider:locale:version)` when both
    /// hosts order the key index's collation alike, `bytes (COLLATE "C")` otherwise; `None`
    /// without a text-like key column.
    pub key_order: Option<String>,
}

impl Plan {
    /// Key column names (empty for a whole-table hash).
    pub fn key_names(&self) -> Vec<String> {
        self.shape.key.iter().map(|k| k.name.clone()).collect()
    }
}

/// Plan a table present on both hosts: common columns in name order, the source's key (else
/// the target's). With `physical` (the target is a physical standby of the source), a table
/// without a key is identified by `ctid`: replay reproduces the primary's pages exactly, so the
/// same row version sits at the same `ctid` on both, and rows can still be drilled down to and
/// rechecked.
pub fn plan_two(
    name: &TableName,
    s: &TableInfo,
    t: &TableInfo,
    keys: [Option<&TableKey>; 2],
    orders: [&Orders; 2],
    whole: bool,
    physical: bool,
) -> anyhow::Result<Plan> {
    let tcols: HashMap<&str, &ColumnInfo> =
        t.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let scols: HashMap<&str, &ColumnInfo> =
        s.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut columns: Vec<String> = s
        .columns
        .iter()
        .filter(|c| tcols.contains_key(c.name.as_str()))
        .map(|c| c.name.clone())
        .collect();
    columns.sort();
    let (only_on_source, only_on_target, type_diffs) = column_diff(s, t);
    let usable = |k: &&TableKey| {
        k.columns
            .iter()
            .all(|c| scols.contains_key(c.as_str()) && tcols.contains_key(c.as_str()))
    };
    let key_side = usize::from(keys[0].filter(usable).is_none());
    let key = keys[0].filter(usable).or(keys[1].filter(usable));
    if key.is_none() && physical && !whole {
        return Ok(Plan {
            name: name.clone(),
            shape: Shape {
                table: name.sql(),
                columns,
                key: vec![KeyCol {
                    name: "ctid".into(),
                    cast: "tid".into(),
                    collate: false,
                }],
            },
            key_from: Some("ctid".into()),
            only_on_source,
            only_on_target,
            type_diffs,
            blocks: [s.blocks, t.blocks],
            note: Some("no primary key or unique index on NOT NULL columns: rows are identified by their physical location (ctid), which a physical standby shares with its primary".into()),
            key_order: None,
        });
    }
    let (key, key_from, note, key_order) = choose_key(name, key, whole, |c, index_collation| {
        let (a, b) = (scols[c], tcols[c]);
        let (ca, cb) = (order_class(a), order_class(b));
        if ca.is_some() && ca != cb {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "cannot chunk {name}: key column \"{c}\" is {} on the source but {} on the target, which order differently; compare it as one whole-table hash with --whole-table {name}, or leave it out with --exclude {name}",
                    a.type_name, b.type_name
                ),
            ));
        }
        // The key index's order serves when it is the column's own collation on the host the
        // key comes from and both hosts order that collation the same way.
        let own = [a, b][key_side].collation;
        let (oa, ob) = (orders[0].get(&a.collation), orders[1].get(&b.collation));
        let order = match (oa, ob) {
            (Some(x), Some(y)) if index_collation == own && x == y && x != "unknown" => {
                Some(x.clone())
            }
            _ => None,
        };
        Ok((a, order))
    })?;
    // Integer key columns of different widths on the two hosts (int on one, bigint on the
    // other): bounds and keys travel as literals cast to one type, which must hold the
    // other host's values too (3000000000 is no integer).
    let mut key = key;
    for k in &mut key {
        let (a, b) = (scols[k.name.as_str()], tcols[k.name.as_str()]);
        if a.base_type != b.base_type && [a, b].iter().all(|c| matches!(c.base_type, 20 | 21 | 23))
        {
            k.cast = "pg_catalog.int8".into();
        }
    }
    Ok(Plan {
        name: name.clone(),
        shape: Shape {
            table: name.sql(),
            columns,
            key,
        },
        key_from,
        only_on_source,
        only_on_target,
        type_diffs,
        blocks: [s.blocks, t.blocks],
        note,
        key_order,
    })
}

/// Plan a table on one host (one-host mode): all its columns in name order, its own key.
pub fn plan_one(
    name: &TableName,
    t: &TableInfo,
    key: Option<&TableKey>,
    whole: bool,
) -> anyhow::Result<Plan> {
    let cols: HashMap<&str, &ColumnInfo> = t.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut columns: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
    columns.sort();
    // One host's chunk records are compared with another's later, so chunk bounds must not
    // depend on this host's collation: byte order.
    let (key, key_from, note, key_order) =
        choose_key(name, key, whole, |c, _| Ok((cols[c], None)))?;
    Ok(Plan {
        name: name.clone(),
        shape: Shape {
            table: name.sql(),
            columns,
            key,
        },
        key_from,
        only_on_source: Vec::new(),
        only_on_target: Vec::new(),
        type_diffs: Vec::new(),
        blocks: [t.blocks, 0],
        note,
        key_order,
    })
}

/// How each collation (by OID) orders text on one host: [`shared::pg::tables::collation_orders`].
pub type Orders = HashMap<u32, String>;

type Chosen = (Vec<KeyCol>, Option<String>, Option<String>, Option<String>);

/// The key columns to chunk by. `column(name, index collation)` gives the column and, for a
/// text-like one, the collation order both hosts share (if they do) to compare it in.
fn choose_key<'a>(
    name: &TableName,
    key: Option<&TableKey>,
    whole: bool,
    column: impl Fn(&str, u32) -> anyhow::Result<(&'a ColumnInfo, Option<String>)>,
) -> anyhow::Result<Chosen> {
    if whole {
        return Ok((
            Vec::new(),
            None,
            Some(
                "hashed whole as asked (--whole-table): no chunks, no row-level drill-down".into(),
            ),
            None,
        ));
    }
    let Some(key) = key else {
        return Ok((
            Vec::new(),
            None,
            Some("no primary key or unique index on NOT NULL columns: hashed whole, without row-level drill-down (add a primary key to get row diffs)".into()),
            None,
        ));
    };
    let mut cols = Vec::new();
    let mut orders: Vec<Option<String>> = Vec::new();
    for (i, c) in key.columns.iter().enumerate() {
        let (info, order) = column(c, key.collations.get(i).copied().unwrap_or(0))?;
        if order_class(info).is_none() {
            return Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "cannot chunk {name}: its {} column \"{c}\" has type {}, whose order is not portable between hosts (supported: integers, numeric, text types incl. citext and domains over them, enums, uuid, date/time, bytea, boolean, inet, macaddr); compare it as one whole-table hash with --whole-table {name}, or leave it out with --exclude {name}",
                    key.what, info.type_name
                ),
            ));
        }
        if info.collatable {
            orders.push(order);
        }
        cols.push(KeyCol {
            name: c.clone(),
            cast: info.base_type_sql.clone(),
            collate: info.collatable,
        });
    }
    // Every text-like column in the index's order, or all of them in byte order.
    let index_order = !orders.is_empty() && orders.iter().all(Option::is_some);
    for k in &mut cols {
        k.collate &= !index_order;
    }
    let key_order = if orders.is_empty() {
        None
    } else if index_order {
        let mut o: Vec<String> = orders.into_iter().flatten().collect();
        o.dedup();
        Some(format!("index ({})", o.join(", ")))
    } else {
        Some("bytes (COLLATE \"C\")".into())
    };
    Ok((cols, Some(key.what.clone()), None, key_order))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, oid: u32, coll: bool) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_name: ty.into(),
            base_type: oid,
            base_type_name: ty.into(),
            base_type_sql: format!("pg_catalog.{ty}"),
            base_typname: ty.into(),
            enum_labels: None,
            collatable: coll,
            collation: if coll { 100 } else { 0 },
            not_null: true,
        }
    }

    fn none() -> Orders {
        Orders::new()
    }

    fn table(cols: Vec<ColumnInfo>) -> TableInfo {
        TableInfo {
            name: TableName::new("public", "t"),
            oid: 1,
            reltuples: 0.0,
            blocks: 3,
            live_tuples: 0,
            unlogged: false,
            columns: cols,
        }
    }

    fn key(cols: &[&str]) -> TableKey {
        TableKey {
            columns: cols.iter().map(|s| s.to_string()).collect(),
            what: "primary key t_pkey".into(),
            collations: cols.iter().map(|_| 0).collect(),
        }
    }

    #[test]
    fn common_columns_in_name_order_and_the_key() {
        let s = table(vec![
            col("z", "text", 25, true),
            col("id", "integer", 23, false),
            col("gone", "integer", 23, false),
        ]);
        let t = table(vec![
            col("id", "bigint", 20, false),
            col("z", "text", 25, true),
            col("new", "integer", 23, false),
        ]);
        let k = key(&["id"]);
        let p = plan_two(
            &s.name,
            &s,
            &t,
            [Some(&k), None],
            [&none(), &none()],
            false,
            false,
        )
        .unwrap();
        assert_eq!(p.shape.columns, ["id", "z"]);
        assert_eq!(p.only_on_source, ["gone"]);
        assert_eq!(p.only_on_target, ["new"]);
        assert_eq!(p.key_names(), ["id"]);
        // integer here, bigint there: ranged as bigint, which holds both.
        assert_eq!(p.shape.key[0].cast, "pg_catalog.int8");
        assert_eq!(p.type_diffs.len(), 1);
        assert!(p.note.is_none());
    }

    #[test]
    fn whole_table_when_asked_or_without_key() {
        let s = table(vec![col("id", "integer", 23, false)]);
        let p = plan_two(
            &s.name,
            &s,
            &s,
            [None, None],
            [&none(), &none()],
            false,
            false,
        )
        .unwrap();
        assert!(p.shape.key.is_empty());
        let p = plan_two(
            &s.name,
            &s,
            &s,
            [None, None],
            [&none(), &none()],
            false,
            true,
        )
        .unwrap();
        assert_eq!(p.key_names(), ["ctid"]);
        let p = plan_two(
            &s.name,
            &s,
            &s,
            [None, None],
            [&none(), &none()],
            true,
            true,
        )
        .unwrap();
        assert!(p.shape.key.is_empty());
        let p = plan_two(
            &s.name,
            &s,
            &s,
            [None, None],
            [&none(), &none()],
            false,
            false,
        )
        .unwrap();
        assert!(p.note.unwrap().contains("no primary key"));
        let k = key(&["id"]);
        let p = plan_one(&s.name, &s, Some(&k), true).unwrap();
        assert!(p.shape.key.is_empty());
        assert!(p.note.unwrap().contains("--whole-table"));
    }

    #[test]
    fn unsupported_or_mismatched_key_types_are_errors_naming_the_fix() {
        let s = table(vec![col("k", "mood", 99999, false)]);
        let e = plan_one(&s.name, &s, Some(&key(&["k"])), false).unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("type mood") && m.contains("--whole-table public.t"),
            "{m}"
        );
        assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr);

        let s = table(vec![col("k", "integer", 23, false)]);
        let t = table(vec![col("k", "text", 25, true)]);
        let e = plan_two(
            &s.name,
            &s,
            &t,
            [Some(&key(&["k"])), None],
            [&none(), &none()],
            false,
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("order differently"));
    }

    #[test]
    fn casts_keep_the_whole_value_and_enums_must_share_labels() {
        let mut c = col("k", "character(5)", 1042, true);
        c.base_type_sql = "pg_catalog.bpchar".into();
        let s = table(vec![c]);
        let p = plan_one(&s.name, &s, Some(&key(&["k"])), false).unwrap();
        assert_eq!(p.shape.key[0].cast, "pg_catalog.bpchar");
        assert!(p.shape.key[0].collate, "one-host mode is always byte order");

        let mood = |labels: &[&str]| {
            let mut c = col("k", "mood", 99999, false);
            c.base_type_sql = "public.mood".into();
            c.enum_labels = Some(labels.iter().map(|l| l.to_string()).collect());
            table(vec![c])
        };
        let (s, t) = (mood(&["sad", "ok"]), mood(&["sad", "ok"]));
        let k = key(&["k"]);
        let p = plan_two(
            &s.name,
            &s,
            &t,
            [Some(&k), None],
            [&none(), &none()],
            false,
            false,
        )
        .unwrap();
        assert_eq!(p.shape.key[0].cast, "public.mood");
        let t = mood(&["ok", "sad"]);
        let e = plan_two(
            &s.name,
            &s,
            &t,
            [Some(&k), None],
            [&none(), &none()],
            false,
            false,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("order differently"), "{e:#}");
    }

    #[test]
    fn text_keys_use_the_index_order_only_when_both_hosts_share_it() {
        let s = table(vec![
            col("k", "text", 25, true),
            col("n", "integer", 23, false),
        ]);
        let mut k = key(&["k", "n"]);
        k.collations = vec![100, 0];
        let icu = |v: &str| Orders::from([(100, format!("i:und:{v}"))]);
        let (a, b) = (icu("153.120"), icu("153.120"));
        let p = plan_two(&s.name, &s, &s, [Some(&k), None], [&a, &b], false, false).unwrap();
        assert!(!p.shape.key[0].collate && !p.shape.key[1].collate);
        assert_eq!(p.key_order.as_deref(), Some("index (i:und:153.120)"));
        for other in [
            icu("154.1"),
            Orders::from([(100, "unknown".to_string())]),
            none(),
        ] {
            let p = plan_two(
                &s.name,
                &s,
                &s,
                [Some(&k), None],
                [&a, &other],
                false,
                false,
            )
            .unwrap();
            assert!(p.shape.key[0].collate && !p.shape.key[1].collate);
            assert_eq!(p.key_order.as_deref(), Some("bytes (COLLATE \"C\")"));
        }
        let unknown = Orders::from([(100, "unknown".to_string())]);
        let p = plan_two(
            &s.name,
            &s,
            &s,
            [Some(&k), None],
            [&unknown, &unknown],
            false,
            false,
        )
        .unwrap();
        assert!(p.shape.key[0].collate);
        // An index built under another collation than the column's does not serve.
        k.collations = vec![950, 0];
        let p = plan_two(&s.name, &s, &s, [Some(&k), None], [&a, &b], false, false).unwrap();
        assert!(p.shape.key[0].collate);
    }
}
