//! `shared::pg::tables` and `shared::pg::snapshot` against real servers: the catalog listing
//! with filters and domains, and one exported snapshot shared by worker sessions on a primary
//! and on a hot standby.

use std::time::Duration;

use shared::pg::snapshot::{self, ReadPool};
use shared::pg::tables::{list_tables, TableFilter};
use shared::pg::ConnInfo;
use testkit::Cluster;

fn info(dsn: &str) -> ConnInfo {
    ConnInfo::parse_with_env(dsn, |_| None).unwrap()
}

#[test]
fn list_tables_applies_filters_and_resolves_domains() {
    let c = Cluster::start();
    let db = c.create_db();
    c.psql(
        db.name(),
        "CREATE SCHEMA app; CREATE DOMAIN d1 AS varchar(10); CREATE DOMAIN d2 AS d1;
         CREATE TABLE public.t1 (id int PRIMARY KEY, v d2 NOT NULL, gone int);
         ALTER TABLE public.t1 DROP COLUMN gone;
         CREATE TABLE public.audit_log (x int);
         CREATE TABLE app.t1 (id bigint);
         CREATE TABLE public.parted (k int) PARTITION BY RANGE (k);
         CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (10);
         CREATE VIEW public.v AS SELECT 1;",
    );
    let mut client = info(&c.dsn(db.name())).connect().unwrap();
    let names = |f: &TableFilter, client: &mut postgres::Client| -> Vec<String> {
        list_tables(client, f)
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    };
    assert_eq!(
        names(&TableFilter::default(), &mut client),
        ["app.t1", "public.audit_log", "public.parted_1", "public.t1"]
    );
    let f = TableFilter {
        excludes: vec!["*_log".into(), "app.*".into()],
        ..Default::default()
    };
    assert_eq!(names(&f, &mut client), ["public.parted_1", "public.t1"]);
    let f = TableFilter {
        schemas: vec!["app".into()],
        ..Default::default()
    };
    assert_eq!(names(&f, &mut client), ["app.t1"]);

    let f = TableFilter {
        tables: vec!["public.t1".into()],
        ..Default::default()
    };
    let t = &list_tables(&mut client, &f).unwrap()[0];
    let cols: Vec<(&str, &str, &str, bool, bool)> = t
        .columns
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.type_name.as_str(),
                c.base_type_name.as_str(),
                c.collatable,
                c.not_null,
            )
        })
        .collect();
    assert_eq!(
        cols,
        [
            ("id", "integer", "integer", false, true),
            ("v", "d2", "character varying", true, true)
        ]
    );
}

#[test]
fn workers_share_the_leaders_snapshot_on_primary_and_standby() {
    let primary = Cluster::builder().name("primary").start();
    primary.psql(
        "postgres",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)",
    );
    let standby = primary.standby();
    primary.wait_replayed(&standby, Duration::from_secs(30));

    for (cluster, in_recovery) in [(&primary, false), (&standby, true)] {
        let ci = info(&cluster.dsn("postgres"));
        let (mut leader, ep) = ci.connect_endpoint().unwrap();
        let snap = snapshot::export(&mut leader).unwrap();
        assert_eq!(snap.in_recovery, in_recovery);
        assert!(snap.lsn.contains('/'), "{snap:?}");

        // Commit more rows after the snapshot: the workers must not see them.
        primary.psql("postgres", "INSERT INTO t SELECT generate_series(11, 15)");
        primary.wait_replayed(&standby, Duration::from_secs(30));

        let pool = ReadPool::open(&ci, &ep, &snap.id, 2, "SET application_name = 'w'").unwrap();
        assert_eq!(pool.size(), 2);
        // A failing job does not poison its session (savepoint), and later jobs still see the
        // snapshot.
        let bad = pool.submit(|c| Ok(c.query_one("SELECT 1/0", &[])?.get::<_, i32>(0)));
        assert!(bad.wait().is_err());
        let counts: Vec<i64> = (0..4)
            .map(|_| pool.submit(|c| Ok(c.query_one("SELECT count(*) FROM t", &[])?.get(0))))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|p| p.wait().unwrap())
            .collect();
        assert!(counts.iter().all(|n| *n == 10), "{counts:?}");
        drop(pool);
        leader.batch_execute("COMMIT").unwrap();
        primary.psql("postgres", "DELETE FROM t WHERE id > 10");
        primary.wait_replayed(&standby, Duration::from_secs(30));
    }
}
