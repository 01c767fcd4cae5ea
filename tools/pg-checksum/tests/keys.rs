//! Every key type a real schema uses, as a primary key and as part of a composite one: a
//! changed, a missing and an extra row must be found as exactly those rows, with and without
//! rechecks (a recheck that looks for a key in the wrong place calls a real difference
//! "transient": the `char(n)` trap). And key literals that cannot find their rows are an
//! internal error, never a verdict.

use std::collections::BTreeSet;

use testkit::Cluster;

use crate::common::{two, Tables};

/// One key type: the column type, the key value of row `g` as SQL over `g`, how many rows
/// the source has (`g` in `1..=n`), and whether row `n + 1` can exist (as the extra row).
struct KeyType {
    name: &'static str,
    ty: &'static str,
    expr: &'static str,
    n: u32,
    extra: bool,
}

const PREP: &str = "CREATE EXTENSION citext;
    DO $$ BEGIN EXECUTE (SELECT 'CREATE TYPE lbl AS ENUM (' || string_agg(quote_literal('l' || i), ', ' ORDER BY i) || ')'
                           FROM generate_series(0, 40) i); END $$;
    CREATE DOMAIN dtext AS text CHECK (VALUE <> '');";

fn types() -> Vec<KeyType> {
    let k = |name, ty, expr| KeyType {
        name,
        ty,
        expr,
        n: 3000,
        extra: true,
    };
    vec![
        // Padded to 8 on output; `character` in a cast would cut every key to 'k'.
        k("char8", "char(8)", "('k' || g)::char(8)"),
        k("varchar10", "varchar(10)", "('v' || g)::varchar(10)"),
        // Mixed case and punctuation: ICU, byte and C.UTF-8 orders all differ.
        k(
            "text_icu",
            "text COLLATE \"und-x-icu\"",
            "(CASE g % 3 WHEN 0 THEN 'A' WHEN 1 THEN 'b' ELSE '_' END) || g",
        ),
        k(
            "citext",
            "citext",
            "(CASE g % 2 WHEN 0 THEN 'Ci' ELSE 'cI' END || g)::citext",
        ),
        k(
            "numeric12_4",
            "numeric(12,4)",
            "(g * 1.0001 - 1500)::numeric(12,4)",
        ),
        k("int2", "int2", "(g - 1500)::int2"),
        k("int8", "int8", "g::int8 * 10000000000 - 15000000000000"),
        k("uuid", "uuid", "md5(g::text)::uuid"),
        k("date", "date", "date '2000-01-01' + g * 3"),
        k(
            "timestamptz",
            "timestamptz",
            "timestamptz '2020-01-01 00:00+05' + g * interval '1 minute 0.25 second'",
        ),
        k("domain_text", "dtext", "('d' || g)::dtext"),
        k(
            "bytea",
            "bytea",
            "decode(lpad(to_hex(g * 37), 6, '0'), 'hex')",
        ),
        KeyType {
            name: "enum",
            ty: "lbl",
            expr: "('l' || g)::lbl",
            n: 39,
            extra: true,
        },
        KeyType {
            name: "bool",
            ty: "bool",
            expr: "g = 2",
            n: 2,
            extra: false,
        },
    ]
}

/// The composite form's key value (`k` is not unique there: `a` makes it so).
fn composite_expr(t: &KeyType) -> &'static str {
    match t.name {
        "enum" => "('l' || (g % 40))::lbl",
        "bool" => "g % 2 = 0",
        _ => t.expr,
    }
}

/// `(key text joined by '|', kind)` of row diffs.
type Diffs = BTreeSet<(String, String)>;

/// The [`Diffs`] of table `name`.
fn diffs(r: &testkit::Run, name: &str, cols: &[&str]) -> Diffs {
    r.of_table("row_diff", name)
        .iter()
        .map(|d| {
            let key: Vec<&str> = cols
                .iter()
                .map(|c| d["key"][*c]["text"].as_str().unwrap_or("?"))
                .collect();
            (key.join("|"), d["kind"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn every_key_type_finds_the_changed_missing_and_extra_row_with_and_without_rechecks() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").host("127.0.0.2").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    let types = types();
    let mut ddl = String::from(PREP);
    for k in &types {
        ddl += &format!(
            "CREATE TABLE pk_{n} (k {ty} PRIMARY KEY, v int);
             INSERT INTO pk_{n} SELECT {e}, g FROM generate_series(1, {cnt}) g;
             CREATE TABLE comp_{n} (a int, k {ty}, v int, PRIMARY KEY (k, a));
             INSERT INTO comp_{n} SELECT g, {ce}, g FROM generate_series(1, 3000) g;",
            n = k.name,
            ty = k.ty,
            e = k.expr,
            cnt = k.n,
            ce = composite_expr(k),
        );
    }
    s.psql(ds.name(), &ddl);
    t.psql(dt.name(), &ddl);
    // An unchanged copy, for the equal case at the end.
    let de = t.create_db();
    t.psql(de.name(), &ddl);

    // On the target: row c changed, row m missing, row n + 1 extra, in both forms. What the
    // diffs must name, as pg-checksum prints keys (its session settings).
    let session = "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; SET extra_float_digits = 1;";
    let mut change = String::new();
    let mut expected: Vec<(String, Vec<&str>, Diffs)> = Vec::new();
    for k in &types {
        let (c, m, x) = if k.n == 2 {
            (1, 2, 3)
        } else {
            (k.n / 3, 2 * k.n / 3, k.n + 1)
        };
        let text = |expr: &str, g: u32| {
            let out = s.psql(
                ds.name(),
                &format!("{session} SELECT ({})::text FROM (SELECT {g} AS g) x", expr),
            );
            out.trim().to_owned()
        };
        let mut want = BTreeSet::from([
            (text(k.expr, c), "changed".to_owned()),
            (text(k.expr, m), "missing_on_target".to_owned()),
        ]);
        change += &format!(
            "UPDATE pk_{n} SET v = -v WHERE k = (SELECT {e} FROM (SELECT {c} AS g) x);
             DELETE FROM pk_{n} WHERE k = (SELECT {e} FROM (SELECT {m} AS g) x);",
            n = k.name,
            e = k.expr,
        );
        if k.extra {
            want.insert((text(k.expr, x), "extra_on_target".to_owned()));
            change += &format!(
                "INSERT INTO pk_{n} SELECT {e}, g FROM (SELECT {x} AS g) x;",
                n = k.name,
                e = k.expr
            );
        }
        expected.push((format!("pk_{}", k.name), vec!["k"], want));
        let ce = composite_expr(k);
        let (c, m, x) = (1000, 2000, 3001);
        change += &format!(
            "UPDATE comp_{n} SET v = -v WHERE a = {c}; DELETE FROM comp_{n} WHERE a = {m};
             INSERT INTO comp_{n} SELECT g, {ce}, g FROM (SELECT {x} AS g) x;",
            n = k.name
        );
        let want = BTreeSet::from([
            (format!("{}|{c}", text(ce, c)), "changed".to_owned()),
            (
                format!("{}|{m}", text(ce, m)),
                "missing_on_target".to_owned(),
            ),
            (format!("{}|{x}", text(ce, x)), "extra_on_target".to_owned()),
        ]);
        expected.push((format!("comp_{}", k.name), vec!["k", "a"], want));
    }
    t.psql(dt.name(), &change);

    for recheck in ["0", "3"] {
        let r = two(
            &s.dsn(ds.name()),
            &t.dsn(dt.name()),
            &[
                "--chunk-rows",
                "500",
                "--leaf-rows",
                "40",
                "--recheck",
                recheck,
            ],
        );
        assert_eq!(r.code, 1, "--recheck {recheck}: {}", r.dump());
        assert_eq!(r.of("error").len(), 0, "{}", r.dump());
        for (table, cols, want) in &expected {
            let got = diffs(&r, table, cols);
            assert_eq!(
                &got,
                want,
                "{table} with --recheck {recheck}:\n{}",
                r.dump()
            );
            let rec = r.table(table);
            assert_eq!(rec["equal"], false, "{rec}");
            assert!(rec.get("equal_because").is_none(), "{rec}");
            if recheck != "0" {
                assert_eq!(rec["recheck"], "persistent", "{rec}");
                for d in r.of_table("row_diff", table) {
                    assert_eq!(d["recheck"], "persistent", "{d}");
                }
            }
            if table.starts_with("comp_") {
                assert!(rec["chunks"].as_u64().unwrap() >= 4, "chunked: {rec}");
            }
        }
        assert_eq!(
            r.summary()["different"].as_u64(),
            Some(expected.len() as u64),
            "{}",
            r.dump()
        );
    }

    // Text keys: the index's order where both hosts order the collation alike (here they
    // are the same build), and the same verdict as byte order gives.
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &[
            "--chunk-rows",
            "500",
            "--table",
            "pk_text_icu",
            "--table",
            "pk_char8",
            "--table",
            "pk_int2",
        ],
    );
    let icu = r.table("pk_text_icu");
    let order = icu["key_order"].as_str().unwrap_or_default();
    assert!(order.starts_with("index (i:und:"), "{icu}");
    assert!(r.table("pk_char8")["key_order"]
        .as_str()
        .unwrap()
        .starts_with("index ("));
    assert!(r.table("pk_int2").get("key_order").is_none());
    // --key-order bytes: byte order whatever the hosts share, the same differences.
    let r2 = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &[
            "--chunk-rows",
            "500",
            "--table",
            "pk_text_icu",
            "--key-order",
            "bytes",
        ],
    );
    assert_eq!(
        r2.table("pk_text_icu")["key_order"],
        "bytes (COLLATE \"C\")"
    );
    assert_eq!(
        diffs(&r2, "pk_text_icu", &["k"]),
        diffs(&r, "pk_text_icu", &["k"])
    );
    assert_eq!(diffs(&r2, "pk_text_icu", &["k"]).len(), 3);

    // Equal data (the source against an unchanged copy) is equal, and says why.
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(de.name()),
        &["--chunk-rows", "500", "--table", "comp_*"],
    );
    assert_eq!(r.code, 0, "{}", r.dump());
    for rec in r.of("table") {
        assert_eq!(rec["equal_because"], "hashes", "{rec}");
    }
}

/// The literal round trip is checked: a key cast that loses part of the value (what
/// `format_type(type, NULL)` gave for `char(n)`: `character`, i.e. `character(1)`) is an
/// internal error naming the table, not a pass.
#[test]
fn key_literals_that_do_not_find_their_rows_are_an_internal_error() {
    use pg_checksum::engine::round_trip;
    use pg_checksum::sql::{KeyCol, Shape};

    let c = testkit::shared_cluster();
    let db = c.create_db();
    c.psql(
        db.name(),
        "CREATE TABLE c (k char(5) PRIMARY KEY, v int);
         INSERT INTO c SELECT 'k' || g, g FROM generate_series(1, 100) g;",
    );
    let mut client = c.connect(db.name());
    let shape = |cast: &str| Shape {
        table: "\"public\".\"c\"".into(),
        columns: vec!["k".into(), "v".into()],
        key: vec![KeyCol {
            name: "k".into(),
            cast: cast.into(),
            collate: true,
        }],
    };
    let bounds: Vec<Vec<String>> = vec![vec!["k10".into()], vec!["k50".into()]];
    round_trip(&mut client, &shape("pg_catalog.bpchar"), &bounds).unwrap();
    let e = round_trip(&mut client, &shape("character"), &bounds).unwrap_err();
    let m = format!("{e:#}");
    assert!(
        m.contains("\"public\".\"c\"") && m.contains("--whole-table"),
        "{m}"
    );
    assert_eq!(shared::exit::classify(&e), shared::ErrorKind::Internal);
}

/// A target whose table lacks the source's primary key can hold a row with a NULL key. No
/// key range selects it (`id >= 901` is not true for NULL), so it is hashed whole, and
/// neither drill-down nor a recheck can call the table equal: before, a recheck of the range
/// it fell in found that range equal and called the table equal (exit 0), and with one chunk
/// reading the rows failed on the NULL (exit 70).
#[test]
fn a_null_key_on_the_target_never_compares_equal() {
    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    let rows = "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g";
    c.psql(
        a.name(),
        &format!("CREATE TABLE t (id int PRIMARY KEY, v text); {rows}"),
    );
    c.psql(
        b.name(),
        &format!("CREATE TABLE t (id int, v text); {rows}; INSERT INTO t VALUES (NULL, 'ghost')"),
    );
    let (src, tgt) = (c.dsn(a.name()), c.dsn(b.name()));
    for extra in [&["--chunk-rows", "100", "--recheck", "1"][..], &[][..]] {
        let r = two(&src, &tgt, extra);
        assert_eq!(r.code, 1, "{extra:?}: {}", r.dump());
        let t = r.table("t");
        assert_eq!(
            (&t["equal"], &t["target_rows"]),
            (&serde_json::json!(false), &serde_json::json!(1001)),
            "{t}"
        );
        assert!(
            t["note"]
                .as_str()
                .unwrap()
                .contains("id holds NULL on the target"),
            "{t}"
        );
        assert!(r.stderr.contains("NULL on the target"), "{}", r.stderr);
    }
    // No NULL there (the column still allows one): chunked and drilled down as before.
    c.psql(b.name(), "UPDATE t SET id = 0 WHERE id IS NULL");
    let r = two(&src, &tgt, &["--chunk-rows", "100"]);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(r.table("t")["chunked"], true);
    assert_eq!(r.of("row_diff").len(), 1, "{}", r.dump());
}

/// Values that print alike in columns of different types (42 as int and as text, the same
/// timestamp as timestamp and as text) hash alike; the table is still not the same, and is
/// not called equal: the differing types are listed, as rowcount-diff lists them.
#[test]
fn columns_of_different_types_are_a_difference_even_when_the_values_print_alike() {
    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    c.psql(
        a.name(),
        "CREATE TABLE t (id int PRIMARY KEY, v int, ts timestamp);
         INSERT INTO t VALUES (1, 42, '2020-01-01')",
    );
    c.psql(
        b.name(),
        "CREATE TABLE t (id int PRIMARY KEY, v text, ts text);
         INSERT INTO t VALUES (1, '42', '2020-01-01 00:00:00')",
    );
    let r = two(&c.dsn(a.name()), &c.dsn(b.name()), &[]);
    assert_eq!(r.code, 1, "{}", r.dump());
    let t = r.table("t");
    assert_eq!(t["equal"], false);
    assert_eq!(t["source_hash"], t["target_hash"], "the values print alike");
    assert_eq!(
        t["column_type_diffs"],
        serde_json::json!([
            {"column": "v", "source": "integer", "target": "text"},
            {"column": "ts", "source": "timestamp without time zone", "target": "text"},
        ]),
        "{t}"
    );
}

/// The same database behind both DSNs (a typo, or two addresses of one server) would be
/// compared with itself and found equal: a usage error instead. Two databases of one server
/// are still compared.
#[test]
fn the_same_database_as_source_and_target_is_a_usage_error() {
    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    c.psql(a.name(), "CREATE TABLE t (id int PRIMARY KEY)");
    c.psql(b.name(), "CREATE TABLE t (id int PRIMARY KEY)");
    let socket = format!(
        "host={} port={} user=postgres dbname={}",
        c.dir().display(),
        c.port(),
        a.name()
    );
    for other in [c.dsn(a.name()), socket] {
        let r = two(&c.dsn(a.name()), &other, &[]);
        assert_eq!(r.code, 2, "{}", r.dump());
        assert!(
            r.one("error")["message"]
                .as_str()
                .unwrap()
                .contains("reach the same database"),
            "{}",
            r.dump()
        );
    }
    let r = two(&c.dsn(a.name()), &c.dsn(b.name()), &[]);
    assert_eq!(r.code, 0, "{}", r.dump());
}

/// An integer key of different widths (int on the source, bigint on the target) holding a
/// value only bigint can: key literals are cast to bigint, so the row is found as extra on
/// the target, chunked and rechecked, instead of an error ("3000000000 is out of range for
/// type integer", exit 65, which also ended every other table's recheck).
#[test]
fn an_integer_key_of_different_widths_is_compared_in_the_wider() {
    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    let rows = "INSERT INTO t SELECT g FROM generate_series(1, 1000) g";
    c.psql(
        a.name(),
        &format!("CREATE TABLE t (id int PRIMARY KEY); {rows}"),
    );
    c.psql(
        b.name(),
        &format!(
            "CREATE TABLE t (id bigint PRIMARY KEY); {rows}; INSERT INTO t VALUES (3000000000)"
        ),
    );
    let r = two(
        &c.dsn(a.name()),
        &c.dsn(b.name()),
        &["--chunk-rows", "100", "--recheck", "1"],
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(
        r.row_diffs("t", "id"),
        [("3000000000".to_owned(), "extra_on_target".to_owned())]
    );
    assert_eq!(r.table("t")["chunked"], true);
}
