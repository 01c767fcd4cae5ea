//! Finding differences: equal data in a different layout and session environment, changed /
//! deleted / extra rows through bisection, collision attempts, text keys under a non-C
//! collation, composite and uuid keys, empty tables.

use testkit::Cluster;

use crate::common::{two, Tables};

/// Two clusters ("hosts") with a fresh database each: `(source, target, src db, tgt db)`.
fn pair() -> (Cluster, Cluster, testkit::TestDb, testkit::TestDb) {
    let s = Cluster::builder().name("source").start();
    let t = Cluster::builder().name("target").host("127.0.0.2").start();
    let (ds, dt) = (s.create_db(), t.create_db());
    (s, t, ds, dt)
}

const KINDS_ROWS: &str = "SELECT g,
    CASE WHEN g % 7 = 0 THEN NULL WHEN g % 7 = 1 THEN '' ELSE 'text ' || g || ' é,\"()\\ |' END,
    'vc' || g, 'c' || (g % 100), g * 1.125, g / 3.0, (g / 7.0)::real, g % 2 = 0,
    date '2020-01-01' + g, timestamp '2020-01-01 12:00' + g * interval '1 minute',
    timestamptz '2020-06-01 00:00+02' + g * interval '1 hour', g * interval '1 day 3 hours',
    decode(md5(g::text), 'hex'), ('{\"a\": ' || g || '}')::json, ('{\"b\": [' || g || ', null]}')::jsonb,
    ARRAY[g, NULL, g + 1], ARRAY['x,y', NULL, 'NULL', ''], md5(g::text)::uuid,
    (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, ('10.0.' || (g % 256) || '.1')::inet, g::money
    FROM generate_series(1, 3000) g";

#[test]
fn equal_data_in_a_different_layout_and_session_environment_is_equal() {
    let (s, t, ds, dt) = pair();
    let ddl = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');";
    let cols = "id int PRIMARY KEY, t text, vc varchar(20), c char(5), n numeric(12,3), f8 float8,
        f4 real, b bool, d date, ts timestamp, tz timestamptz, iv interval, by bytea, j json,
        jb jsonb, arr int[], tarr text[], u uuid, m mood, ip inet, mo money";
    s.psql(
        ds.name(),
        &format!("{ddl} CREATE TABLE kinds ({cols}); INSERT INTO kinds {KINDS_ROWS};"),
    );
    // The target: columns declared in another order, a dropped column in between, rows
    // inserted backwards then moved around, and every output-changing setting different.
    t.psql(
        dt.name(),
        &format!(
            "{ddl} CREATE TABLE kinds (mo money, gone int, ip inet, m mood, u uuid, tarr text[], arr int[],
               jb jsonb, j json, by bytea, iv interval, tz timestamptz, ts timestamp, d date,
               b bool, f4 real, f8 float8, n numeric(12,3), c char(5), vc varchar(20), t text,
               id int PRIMARY KEY);
             ALTER TABLE kinds DROP COLUMN gone;
             INSERT INTO kinds (id, t, vc, c, n, f8, f4, b, d, ts, tz, iv, by, j, jb, arr, tarr, u, m, ip, mo)
               SELECT * FROM ({KINDS_ROWS}) x ORDER BY 1 DESC;
             UPDATE kinds SET b = b WHERE id % 3 = 0;"
        ),
    );
    t.psql(dt.name(), "VACUUM FULL kinds");
    t.psql(
        dt.name(),
        &format!(
            "ALTER DATABASE {db} SET TimeZone = 'Asia/Tokyo'; ALTER DATABASE {db} SET DateStyle = 'SQL, DMY';
             ALTER DATABASE {db} SET IntervalStyle = 'iso_8601'; ALTER DATABASE {db} SET extra_float_digits = 0;
             ALTER DATABASE {db} SET bytea_output = 'escape'; ALTER DATABASE {db} SET lc_monetary = 'C.UTF-8';",
            db = dt.name()
        ),
    );
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &["--chunk-rows", "500"],
    );
    assert_eq!(r.code, 0, "{}", r.dump());
    let k = r.table("kinds");
    assert_eq!(k["equal"], true);
    assert_eq!(k["source_rows"], 3000);
    assert_eq!(k["source_hash"], k["target_hash"]);
    assert!(k["chunks"].as_u64().unwrap() >= 2, "{k}");
    assert_eq!(k["key"], serde_json::json!(["id"]));

    // And the check can fail: one float digit is enough.
    t.psql(
        dt.name(),
        "UPDATE kinds SET f8 = f8 + 1e-12 WHERE id = 2999",
    );
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &["--chunk-rows", "500"],
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(
        r.row_diffs("kinds", "id"),
        [("2999".into(), "changed".into())]
    );
    assert_eq!(r.of("row_diff")[0]["columns"], serde_json::json!(["f8"]));
}

#[test]
fn changed_deleted_and_extra_rows_are_found_by_bisection() {
    let (s, t, ds, dt) = pair();
    let setup = "CREATE TABLE big (id int PRIMARY KEY, v text, n int);
        INSERT INTO big SELECT g, 'row ' || g, g % 97 FROM generate_series(1, 20000) g;
        CREATE TABLE same (id int PRIMARY KEY); INSERT INTO same SELECT generate_series(1, 100);";
    s.psql(ds.name(), setup);
    t.psql(dt.name(), setup);
    t.psql(
        dt.name(),
        "UPDATE big SET n = n + 1 WHERE id = 777; DELETE FROM big WHERE id = 15000;
         INSERT INTO big VALUES (25000, 'new', 1), (0, 'low', 0);",
    );
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &["--chunk-rows", "2000", "--leaf-rows", "100", "-j", "3"],
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(
        r.row_diffs("big", "id"),
        [
            ("0".into(), "extra_on_target".into()),
            ("15000".into(), "missing_on_target".into()),
            ("25000".into(), "extra_on_target".into()),
            ("777".into(), "changed".into()),
        ]
    );
    let changed = r
        .of_table("row_diff", "big")
        .into_iter()
        .find(|d| d["kind"] == "changed")
        .unwrap();
    assert_eq!(changed["columns"], serde_json::json!(["n"]));
    assert!(changed["source_lsn"].as_str().unwrap().contains('/'));
    let big = r.table("big");
    assert_eq!(big["equal"], false);
    assert_eq!(
        (big["source_rows"].as_i64(), big["target_rows"].as_i64()),
        (Some(20000), Some(20001))
    );
    assert!(big["chunks"].as_u64().unwrap() >= 5, "{big}");
    assert_eq!(big["row_diffs"], 4);
    // The differing chunks are named, the others are not.
    let chunks = r.of_table("chunk", "big");
    assert!(!chunks.is_empty() && chunks.len() <= 4, "{}", r.stdout);
    assert_eq!(chunks[0]["source_lsn"], r.of("host")[0]["lsn"]);
    assert_eq!(r.table("same")["equal"], true);
    let sum = r.summary();
    assert_eq!(
        (sum["equal"].as_u64(), sum["different"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(sum["row_diffs"], 4);

    // --max-row-diffs stops the drill-down and says so.
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &[
            "--chunk-rows",
            "2000",
            "--leaf-rows",
            "100",
            "--max-row-diffs",
            "1",
        ],
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.of_table("row_diff", "big").len(), 1);
    assert_eq!(r.table("big")["truncated"], true);
}

#[test]
fn collision_attempts_are_told_apart() {
    let (s, t, ds, dt) = pair();
    let ddl = "CREATE TABLE pairs (id int PRIMARY KEY, a text, b text);
        CREATE TABLE bag (x int); CREATE TABLE bag2 (x text, y text);";
    s.psql(ds.name(), ddl);
    t.psql(dt.name(), ddl);
    s.psql(
        ds.name(),
        r#"INSERT INTO pairs VALUES
            (1, 'a|b', NULL), (2, NULL, 'x'), (3, 'a,b', 'c'), (4, '<null>', NULL),
            (5, 'NULL', 'x'), (6, 'a', 'b'), (7, '"q"', NULL), (8, 'a\', 'b'), (9, '', NULL),
            (10, 'same', 'same');
           INSERT INTO bag VALUES (1), (1);
           INSERT INTO bag2 VALUES ('a|b', NULL);"#,
    );
    t.psql(
        dt.name(),
        r#"INSERT INTO pairs VALUES
            (1, 'a', '|b'), (2, '', 'x'), (3, 'a', 'b,c'), (4, NULL, NULL),
            (5, NULL, 'x'), (6, 'b', 'a'), (7, 'q', NULL), (8, 'a', '\b'), (9, NULL, ''),
            (10, 'same', 'same');
           INSERT INTO bag VALUES (2), (2);
           INSERT INTO bag2 VALUES ('a', '|b');"#,
    );
    let r = two(&s.dsn(ds.name()), &t.dsn(dt.name()), &[]);
    assert_eq!(r.code, 1, "{}", r.dump());
    let got = r.row_diffs("pairs", "id");
    let want: Vec<(String, String)> = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        .iter()
        .map(|i| (i.to_string(), "changed".to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got, want, "{}", r.stdout);
    // XOR of the row hashes would cancel the duplicates and call these equal; sums do not.
    let bag = r.table("bag");
    assert_eq!(bag["equal"], false, "{bag}");
    assert_eq!(bag["chunked"], false);
    assert!(bag["note"].as_str().unwrap().contains("no primary key"));
    assert!(
        r.stderr.contains("public.bag: no primary key"),
        "{}",
        r.stderr
    );
    assert_eq!(r.table("bag2")["equal"], false);
}

#[test]
fn text_keys_under_a_non_c_collation_chunk_alike_on_both_hosts() {
    let (s, t, ds, dt) = pair();
    if s.psql(
        ds.name(),
        "SELECT count(*) FROM pg_collation WHERE collname = 'de-x-icu'",
    ) != "1"
    {
        testkit::skip!("this PostgreSQL has no ICU collation de-x-icu");
    }
    let rows = "INSERT INTO words SELECT
          (ARRAY['Ä', 'a', 'é', 'E', 'z', 'Z', 'ß', 'ss', 'ø', 'Ö', 'o', '日本'])[g % 12 + 1] || '-' || g, g
        FROM generate_series(1, 3000) g";
    s.psql(
        ds.name(),
        &format!("CREATE TABLE words (w text COLLATE \"de-x-icu\" PRIMARY KEY, v int); {rows}"),
    );
    t.psql(
        dt.name(),
        &format!("CREATE TABLE words (w text COLLATE \"C\" PRIMARY KEY, v int); {rows}"),
    );
    let args = ["--chunk-rows", "300", "--leaf-rows", "20"];
    let r = two(&s.dsn(ds.name()), &t.dsn(dt.name()), &args);
    assert_eq!(r.code, 0, "{}", r.dump());
    assert!(r.table("words")["chunks"].as_u64().unwrap() >= 3);

    t.psql(dt.name(), "UPDATE words SET v = -1 WHERE w = 'Ä-12'; DELETE FROM words WHERE w = 'é-2'; INSERT INTO words VALUES ('Ø', 0)");
    let r = two(&s.dsn(ds.name()), &t.dsn(dt.name()), &args);
    assert_eq!(r.code, 1, "{}", r.dump());
    assert_eq!(
        r.row_diffs("words", "w"),
        [
            ("Ä-12".into(), "changed".into()),
            ("Ø".into(), "extra_on_target".into()),
            ("é-2".into(), "missing_on_target".into()),
        ]
    );
}

#[test]
fn composite_uuid_and_empty_tables() {
    let (s, t, ds, dt) = pair();
    let setup = "CREATE TABLE comp (region text, n int, v text, PRIMARY KEY (region, n));
        INSERT INTO comp SELECT (ARRAY['eu', 'us', 'ap'])[g % 3 + 1], g, 'v' || g FROM generate_series(1, 6000) g;
        CREATE TABLE ids (id uuid PRIMARY KEY, v int);
        INSERT INTO ids SELECT md5(g::text)::uuid, g FROM generate_series(1, 5000) g;
        CREATE TABLE empty_both (id int PRIMARY KEY);
        CREATE TABLE empty_src (id bigint PRIMARY KEY);
        CREATE TABLE by_unique (a int NOT NULL, b int, UNIQUE (a));
        INSERT INTO by_unique SELECT g, g FROM generate_series(1, 50) g;";
    s.psql(ds.name(), setup);
    t.psql(dt.name(), setup);
    t.psql(
        dt.name(),
        "UPDATE comp SET v = 'changed' WHERE region = 'eu' AND n = 42;
         DELETE FROM comp WHERE region = 'ap' AND n = 8;
         UPDATE ids SET v = -v WHERE id = md5('1234')::uuid;
         INSERT INTO empty_src VALUES (1), (2), (3);
         UPDATE by_unique SET b = 0 WHERE a = 5;",
    );
    let r = two(
        &s.dsn(ds.name()),
        &t.dsn(dt.name()),
        &["--chunk-rows", "700", "--leaf-rows", "30"],
    );
    assert_eq!(r.code, 1, "{}", r.dump());
    let comp: Vec<(String, String, String)> = r
        .of_table("row_diff", "comp")
        .iter()
        .map(|d| {
            (
                d["key"]["region"]["text"].as_str().unwrap().to_owned(),
                d["key"]["n"]["text"].as_str().unwrap().to_owned(),
                d["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(comp.len(), 2, "{}", r.stdout);
    assert!(comp.contains(&("eu".into(), "42".into(), "changed".into())));
    assert!(comp.contains(&("ap".into(), "8".into(), "missing_on_target".into())));
    assert_eq!(r.table("comp")["key"], serde_json::json!(["region", "n"]));

    let uuid = md5_uuid("1234");
    assert_eq!(r.row_diffs("ids", "id"), [(uuid, "changed".into())]);
    assert_eq!(r.table("empty_both")["equal"], true);
    assert_eq!(r.table("empty_both")["source_rows"], 0);
    assert_eq!(
        r.row_diffs("empty_src", "id"),
        [
            ("1".into(), "extra_on_target".into()),
            ("2".into(), "extra_on_target".into()),
            ("3".into(), "extra_on_target".into())
        ]
    );
    // A unique index on a NOT NULL column is a key too.
    assert_eq!(r.table("by_unique")["key"], serde_json::json!(["a"]));
    assert_eq!(
        r.row_diffs("by_unique", "a"),
        [("5".into(), "changed".into())]
    );
}

/// `md5(text)::uuid` as PostgreSQL prints it.
fn md5_uuid(s: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{s}' | md5sum"))
        .output()
        .unwrap();
    let h = String::from_utf8(out.stdout).unwrap()[..32].to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
