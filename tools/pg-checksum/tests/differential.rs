//! The differential property test: a seeded generator makes random tables (random column
//! types incl. arrays, jsonb, NULLs and TOASTed values; random key shapes; tables without a
//! key), loads each into both clusters, changes the target at random, and compares
//! pg-checksum's verdicts and row diffs with an oracle computed here from a full dump of both
//! sides (`COPY ... TO STDOUT`, sorted): another encoding of the rows than pg-checksum's.
//!
//! Every seed is reproducible from its number: `PGSHIFT_DIFF_SEEDS=417` (one seed) or
//! `PGSHIFT_DIFF_SEEDS=0..1000` (a range) reruns exactly those tables; a failure names the
//! seed and prints the table's SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testkit::Cluster;

use crate::common::{two, Tables};

/// Seeds checked per database (one pg-checksum run each).
const BATCH: u64 = 100;

/// A column type the generator knows: its SQL type and a random value (an SQL literal).
#[derive(Clone, Copy, Debug)]
enum Ty {
    Int4,
    Int8,
    Text,
    Varchar,
    Numeric,
    Float8,
    Bool,
    Date,
    Timestamptz,
    Jsonb,
    IntArray,
    TextArray,
    Bytea,
    Uuid,
}

const ALL: [Ty; 14] = [
    Ty::Int4,
    Ty::Int8,
    Ty::Text,
    Ty::Varchar,
    Ty::Numeric,
    Ty::Float8,
    Ty::Bool,
    Ty::Date,
    Ty::Timestamptz,
    Ty::Jsonb,
    Ty::IntArray,
    Ty::TextArray,
    Ty::Bytea,
    Ty::Uuid,
];

/// Key column types: their COPY text is their `::text` (no backslash, tab or newline).
const KEY_TYPES: [Ty; 5] = [Ty::Int4, Ty::Int8, Ty::Text, Ty::Uuid, Ty::Date];

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Ty {
    fn sql(self) -> &'static str {
        match self {
            Ty::Int4 => "int4",
            Ty::Int8 => "int8",
            Ty::Text => "text",
            Ty::Varchar => "varchar(20)",
            Ty::Numeric => "numeric",
            Ty::Float8 => "float8",
            Ty::Bool => "bool",
            Ty::Date => "date",
            Ty::Timestamptz => "timestamptz",
            Ty::Jsonb => "jsonb",
            Ty::IntArray => "int4[]",
            Ty::TextArray => "text[]",
            Ty::Bytea => "bytea",
            Ty::Uuid => "uuid",
        }
    }

    /// A random value as an SQL literal; `key` values avoid characters COPY escapes.
    fn value(self, r: &mut StdRng, key: bool) -> String {
        match self {
            Ty::Int4 => match r.gen_range(0..20) {
                0 => i32::MIN.to_string(),
                1 => i32::MAX.to_string(),
                _ => r.gen_range(-5000..5000).to_string(),
            },
            Ty::Int8 => (r.gen::<i64>() >> r.gen_range(0..60)).to_string(),
            Ty::Text | Ty::Varchar => {
                let max = if matches!(self, Ty::Varchar) { 20 } else { 12 };
                if !key && matches!(self, Ty::Text) && r.gen_range(0..15) == 0 {
                    // Big and incompressible: stored out of line (TOAST).
                    let n = r.gen_range(300..700);
                    return format!("(SELECT string_agg(md5(i::text || {}), '') FROM generate_series(1, {n}) i)", r.gen::<u32>());
                }
                let alphabet: &[&str] = if key {
                    &[
                        "a", "B", "z", "0", "é", " ", "-", "'", ",", "(", "\"", "ß", "Z",
                    ]
                } else {
                    &[
                        "a", "B", "0", "é", " ", "\\", "\t", "\n", "'", ",", "(", ")", "\"",
                        "NULL", "{", "}",
                    ]
                };
                let n = r.gen_range(0..max);
                let s: String = (0..n)
                    .map(|_| alphabet[r.gen_range(0..alphabet.len())])
                    .collect();
                let s: String = s.chars().take(max).collect();
                q(&s)
            }
            Ty::Numeric => {
                let scale = r.gen_range(0..6u32);
                let v: i64 = r.gen_range(-1_000_000..1_000_000);
                let (sign, a, p) = (if v < 0 { "-" } else { "" }, v.abs(), 10i64.pow(scale));
                if scale == 0 {
                    v.to_string()
                } else {
                    format!("{sign}{}.{:0>w$}", a / p, a % p, w = scale as usize)
                }
            }
            Ty::Float8 => match r.gen_range(0..12) {
                0 => q("NaN"),
                1 => q("-Infinity"),
                2 => q("-0"),
                _ => format!("{:e}", r.gen::<f64>() * 10f64.powi(r.gen_range(-30..30))),
            },
            Ty::Bool => if r.gen() { "true" } else { "false" }.into(),
            Ty::Date => format!("date '1990-01-01' + {}", r.gen_range(-20000..20000)),
            Ty::Timestamptz => format!(
                "timestamptz '2000-01-01 00:00:00+00' + {} * interval '1 microsecond'",
                r.gen_range(-1_000_000_000_000_000i64..1_000_000_000_000_000)
            ),
            Ty::Jsonb => {
                let n = r.gen_range(0..4);
                let fields: Vec<String> = (0..n)
                    .map(|i| match r.gen_range(0..4) {
                        0 => format!("\"k{i}\": null"),
                        1 => format!("\"k{i}\": {}", r.gen_range(-100..100)),
                        2 => format!("\"k{i}\": [1, \"x,y\", {{\"n\": {}}}]", r.gen_range(0..9)),
                        _ => format!("\"k{i}\": \"s {}\"", r.gen_range(0..9)),
                    })
                    .collect();
                format!("{}::jsonb", q(&format!("{{{}}}", fields.join(", "))))
            }
            Ty::IntArray => {
                let n = r.gen_range(0..4);
                let v: Vec<String> = (0..n)
                    .map(|_| {
                        if r.gen_range(0..4) == 0 {
                            "NULL".into()
                        } else {
                            r.gen_range(-9..9).to_string()
                        }
                    })
                    .collect();
                format!("ARRAY[{}]::int4[]", v.join(", "))
            }
            Ty::TextArray => {
                let n = r.gen_range(0..4);
                let v: Vec<String> = (0..n)
                    .map(|_| match r.gen_range(0..5) {
                        0 => "NULL".into(),
                        1 => q("NULL"),
                        2 => q(""),
                        3 => q("a,b\"c"),
                        _ => q(&format!("t{}", r.gen_range(0..9))),
                    })
                    .collect();
                format!("ARRAY[{}]::text[]", v.join(", "))
            }
            Ty::Bytea => {
                let n = r.gen_range(0..6);
                let hex: String = (0..n).map(|_| format!("{:02x}", r.gen::<u8>())).collect();
                format!("'\\x{hex}'::bytea")
            }
            Ty::Uuid => {
                let b: u128 = r.gen();
                let h = format!("{b:032x}");
                q(&format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ))
            }
        }
    }
}

/// One random table: its SQL on both hosts, then the target's changes.
struct Case {
    seed: u64,
    table: String,
    key: Vec<String>,
    create: String,
    change: String,
}

fn case(seed: u64) -> Case {
    let mut r = StdRng::seed_from_u64(seed);
    let table = format!("s{seed}");
    let nkey = match r.gen_range(0..10) {
        0 | 1 => 0,
        2 => 2,
        _ => 1,
    };
    let mut cols: Vec<(String, Ty)> = (0..nkey)
        .map(|i| (format!("k{i}"), KEY_TYPES[r.gen_range(0..KEY_TYPES.len())]))
        .collect();
    for i in 0..r.gen_range(1..6) {
        cols.push((format!("c{i}"), ALL[r.gen_range(0..ALL.len())]));
    }
    let key: Vec<String> = cols[..nkey].iter().map(|c| c.0.clone()).collect();
    let defs: Vec<String> = cols
        .iter()
        .map(|(n, t)| format!("{n} {}", t.sql()))
        .collect();
    let pk = if key.is_empty() {
        String::new()
    } else {
        format!(", PRIMARY KEY ({})", key.join(", "))
    };
    let mut create = format!("CREATE TABLE {table} ({}{pk});", defs.join(", "));
    let null_pct = r.gen_range(0..40);
    let row = |r: &mut StdRng| -> Vec<String> {
        cols.iter()
            .enumerate()
            .map(|(i, (_, t))| {
                if i >= nkey && r.gen_range(0..100) < null_pct {
                    "NULL".into()
                } else {
                    t.value(r, i < nkey)
                }
            })
            .collect()
    };
    // Keys: distinct by their SQL text, which for the key types is distinct by value except
    // for dates given as offsets (distinct offsets, distinct dates).
    let mut keys: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut rows = Vec::new();
    let n = if r.gen_range(0..8) == 0 {
        0
    } else {
        r.gen_range(1..400)
    };
    for _ in 0..n {
        let v = row(&mut r);
        if nkey > 0 && !keys.insert(v[..nkey].to_vec()) {
            continue;
        }
        rows.push(v);
    }
    let ins = |v: &[String]| format!("INSERT INTO {table} VALUES ({});", v.join(", "));
    for v in &rows {
        create += &ins(v);
    }
    let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
    let mut change = String::new();
    for _ in 0..r.gen_range(0..6) {
        let pick = (!rows.is_empty()).then(|| rows[r.gen_range(0..rows.len())].clone());
        let at = |v: &[String]| {
            if nkey > 0 {
                (0..nkey)
                    .map(|i| format!("{} = {}", names[i], v[i]))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            } else {
                format!(
                    "ctid = (SELECT min(ctid) FROM {table} WHERE ({}) IS NOT DISTINCT FROM ({}))",
                    names.join(", "),
                    v.join(", ")
                )
            }
        };
        match (r.gen_range(0..4), pick) {
            (0, Some(v)) if cols.len() > nkey => {
                let c = r.gen_range(nkey..cols.len());
                let new = if r.gen_range(0..5) == 0 {
                    "NULL".into()
                } else {
                    cols[c].1.value(&mut r, false)
                };
                change += &format!("UPDATE {table} SET {} = {new} WHERE {};", names[c], at(&v));
            }
            (1, Some(v)) => change += &format!("DELETE FROM {table} WHERE {};", at(&v)),
            (2, Some(v)) if nkey == 0 => change += &ins(&v),
            _ => {
                let v = row(&mut r);
                if nkey == 0 || keys.insert(v[..nkey].to_vec()) {
                    change += &ins(&v);
                }
            }
        }
    }
    Case {
        seed,
        table,
        key,
        create,
        change,
    }
}

/// The table dumped with COPY: rows as lines (fields split by tab), sorted.
fn dump(c: &mut postgres::Client, table: &str) -> Vec<Vec<String>> {
    let mut text = String::new();
    c.copy_out(&format!("COPY {table} TO STDOUT"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    rows.sort();
    rows
}

/// What the oracle expects: `(key joined by '|', kind)` of each differing row, or for a
/// table without a key whether the multisets are equal.
fn oracle(key: usize, s: &[Vec<String>], t: &[Vec<String>]) -> (bool, BTreeSet<(String, String)>) {
    if key == 0 {
        return (s == t, BTreeSet::new());
    }
    let by_key = |rows: &[Vec<String>]| -> BTreeMap<String, Vec<String>> {
        rows.iter()
            .map(|r| (r[..key].join("|"), r.clone()))
            .collect()
    };
    let (a, b) = (by_key(s), by_key(t));
    let mut out = BTreeSet::new();
    for (k, v) in &a {
        match b.get(k) {
            None => out.insert((k.clone(), "missing_on_target".to_owned())),
            Some(w) if w != v => out.insert((k.clone(), "changed".to_owned())),
            _ => false,
        };
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.insert((k.clone(), "extra_on_target".to_owned()));
    }
    (out.is_empty(), out)
}

fn seeds() -> Vec<u64> {
    match std::env::var("PGSHIFT_DIFF_SEEDS") {
        Ok(v) => match v.split_once("..") {
            Some((a, b)) => (a.parse().unwrap()..b.parse().unwrap()).collect(),
            None => vec![v.parse().expect("PGSHIFT_DIFF_SEEDS: a seed or START..END")],
        },
        Err(_) => (0..300).collect(),
    }
}

#[test]
fn random_tables_and_changes_agree_with_an_oracle_from_full_dumps() {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").host("127.0.0.2").start();
    let seeds = seeds();
    let session = "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET bytea_output = 'hex';";
    let mut stats = Stats::default();
    for (batch, chunk) in seeds.chunks(BATCH as usize).enumerate() {
        let (ds, dt) = (s.create_db(), t.create_db());
        let (mut cs, mut ct) = (s.connect(ds.name()), t.connect(dt.name()));
        cs.batch_execute(session).unwrap();
        ct.batch_execute(session).unwrap();
        let cases: Vec<Case> = chunk.iter().map(|&seed| case(seed)).collect();
        for c in &cases {
            let what =
                |e: postgres::Error| panic!("seed {}: {e}\n{}\n{}", c.seed, c.create, c.change);
            cs.batch_execute(&c.create).unwrap_or_else(what);
            ct.batch_execute(&c.create).unwrap_or_else(what);
            ct.batch_execute(&c.change).unwrap_or_else(what);
        }
        // Small chunks and leaves, so that bisection and row comparison run on most tables.
        let chunk_rows = ["16", "64", "1000"][batch % 3];
        let r = two(
            &s.dsn(ds.name()),
            &t.dsn(dt.name()),
            &[
                "--chunk-rows",
                chunk_rows,
                "--leaf-rows",
                "4",
                "--recheck",
                "1",
                "-j",
                "2",
            ],
        );
        assert_eq!(r.of("error").len(), 0, "{}", r.dump());
        let mut any_differs = false;
        for c in &cases {
            let (a, b) = (dump(&mut cs, &c.table), dump(&mut ct, &c.table));
            let (equal, want) = oracle(c.key.len(), &a, &b);
            any_differs |= !equal;
            let rec = r.table(&c.table);
            let repro = format!(
                "seed {} (rerun: PGSHIFT_DIFF_SEEDS={} cargo test -p pg-checksum --test main differential)\n{}\n{}\n{rec}",
                c.seed, c.seed, c.create.chars().take(3000).collect::<String>(), c.change
            );
            assert_eq!(rec["equal"], equal, "{repro}");
            let got: BTreeSet<(String, String)> = r
                .of_table("row_diff", &c.table)
                .iter()
                .map(|d| {
                    let k: Vec<&str> = c
                        .key
                        .iter()
                        .map(|k| d["key"][k]["text"].as_str().unwrap())
                        .collect();
                    (k.join("|"), d["kind"].as_str().unwrap().to_owned())
                })
                .collect();
            assert_eq!(got, want, "{repro}");
            match (equal, c.key.is_empty()) {
                (true, _) => stats.equal += 1,
                (false, false) => stats.keyed_differ += 1,
                (false, true) => stats.keyless_differ += 1,
            }
            for (_, kind) in &want {
                let i = ["changed", "missing_on_target", "extra_on_target"]
                    .iter()
                    .position(|k| k == kind)
                    .unwrap();
                stats.kinds[i] += 1;
            }
            if rec["chunks"].as_u64().unwrap_or(0) > 1 {
                stats.chunked += 1;
            }
        }
        assert_eq!(r.code, if any_differs { 1 } else { 0 }, "{}", r.dump());
    }
    eprintln!(
        "differential: {} seeds: {} equal, {} keyed and {} keyless tables differing, {:?} changed/missing/extra rows, {} chunked",
        seeds.len(), stats.equal, stats.keyed_differ, stats.keyless_differ, stats.kinds, stats.chunked
    );
    // The generator must exercise what it claims: differing tables with and without a key,
    // every kind of row difference, bisected tables.
    if seeds.len() >= 300 {
        for (what, n, min) in [
            ("differing tables with a key", stats.keyed_differ, 60),
            ("differing tables without a key", stats.keyless_differ, 10),
            ("equal tables", stats.equal, 30),
            ("changed rows", stats.kinds[0], 40),
            ("missing rows", stats.kinds[1], 40),
            ("extra rows", stats.kinds[2], 40),
            ("tables in several chunks", stats.chunked, 60),
        ] {
            assert!(
                n >= min,
                "only {n} {what} in {} seeds (want {min})",
                seeds.len()
            );
        }
    }
}

#[derive(Default)]
struct Stats {
    keyed_differ: usize,
    keyless_differ: usize,
    equal: usize,
    kinds: [usize; 3],
    chunked: usize,
}
