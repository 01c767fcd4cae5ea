//! `shared::pg::ConnInfo` against real servers: multi-host with `target_session_attrs`,
//! passwords and `~/.pgpass`, TLS from `require` to `verify-full`, and one-line errors with
//! the right exit class.

use std::os::unix::fs::PermissionsExt;

use shared::exit::classify;
use shared::pg::ConnInfo;
use shared::ErrorKind;
use testkit::{Cluster, TlsCerts};

/// Parse without the caller's `PG*` environment.
fn info(dsn: &str) -> ConnInfo {
    ConnInfo::parse_with_env(dsn, |_| None).unwrap()
}

fn closed_port() -> u16 {
    testkit::free_port("127.0.0.1")
}

#[test]
fn conninfo_and_url_reach_the_same_server() {
    let c = Cluster::start();
    for dsn in [c.dsn("postgres"), c.url("postgres")] {
        let mut client = info(&dsn).connect().unwrap();
        let row = client
            .query_one(
                "SELECT current_user, current_setting('application_name')",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "postgres");
        assert_eq!(row.get::<_, String>(1), "pgshift-pgshift");
    }
}

#[test]
fn multi_host_skips_dead_hosts_and_honours_target_session_attrs() {
    let primary = Cluster::builder().name("primary").start();
    let standby = primary.standby();
    let dead = closed_port();
    let hosts = |order: &[u16], attrs: &str| {
        let ports: Vec<String> = order.iter().map(|p| p.to_string()).collect();
        let h: Vec<&str> = order.iter().map(|_| "127.0.0.1").collect();
        info(&format!(
            "host={} port={} user=postgres dbname=postgres sslmode=disable target_session_attrs={attrs}",
            h.join(","),
            ports.join(",")
        ))
    };
    let (p, s) = (primary.port(), standby.port());

    let (_, ep) = hosts(&[dead, s, p], "read-write")
        .connect_endpoint()
        .unwrap();
    assert_eq!(ep.port, p);
    let (_, ep) = hosts(&[dead, p, s], "standby").connect_endpoint().unwrap();
    assert_eq!(ep.port, s);
    let (_, ep) = hosts(&[p, s], "prefer-standby").connect_endpoint().unwrap();
    assert_eq!(ep.port, s);
    let (_, ep) = hosts(&[p], "prefer-standby").connect_endpoint().unwrap();
    assert_eq!(ep.port, p);
    let (_, ep) = hosts(&[s, p], "any").connect_endpoint().unwrap();
    assert_eq!(ep.port, s);
    let (_, ep) = hosts(&[s, p], "read-only").connect_endpoint().unwrap();
    assert_eq!(ep.port, s);

    // No acceptable host: one line naming every host and why.
    let err = hosts(&[dead, s], "primary").connect().err().unwrap();
    let msg = format!("{err:#}");
    assert_eq!(classify(&err), ErrorKind::Unavailable);
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{dead}")), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{s}: server is in hot standby mode")),
        "{msg}"
    );
    assert!(msg.contains("target_session_attrs=primary"), "{msg}");
}

#[test]
fn async_client_follows_the_same_rules() {
    let primary = Cluster::start();
    let standby = primary.standby();
    let dsn = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?sslmode=disable&target_session_attrs=read-write",
        standby.port(),
        primary.port()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (port, in_recovery) = rt.block_on(async {
        let (client, ep) = info(&dsn).connect_async_endpoint().await.unwrap();
        let row = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap();
        (ep.port, row.get::<_, bool>(0))
    });
    assert_eq!(port, primary.port());
    assert!(!in_recovery);

    // The same with a TLS connector built once and reused.
    let conn = info(&dsn);
    let tls = conn.tls_connector().unwrap();
    for _ in 0..2 {
        let (_, ep) = rt.block_on(conn.connect_async_endpoint_with(&tls)).unwrap();
        assert_eq!(ep.port, primary.port());
    }
}

#[test]
fn passwords_from_dsn_and_pgpass_and_a_clear_error_when_wrong() {
    let c = Cluster::builder()
        .hba("host all bob 127.0.0.1/32 scram-sha-256")
        .start();
    c.psql("postgres", "CREATE ROLE bob LOGIN PASSWORD 'right pw'");
    let base = format!(
        "host=127.0.0.1 port={} user=bob dbname=postgres sslmode=disable",
        c.port()
    );

    info(&format!("{base} password='right pw'"))
        .connect()
        .unwrap();

    let err = info(&format!("{base} password=wrong"))
        .connect()
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert_eq!(classify(&err), ErrorKind::Unavailable);
    assert!(
        msg.contains("password authentication failed for user \"bob\""),
        "{msg}"
    );
    assert!(msg.contains("PGPASSWORD or ~/.pgpass"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:{}:*:bob:right pw\n", c.port())).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    info(&format!("{base} passfile={}", pgpass.display()))
        .connect()
        .unwrap();
}

#[test]
fn missing_database_is_bad_input_not_an_outage() {
    let c = Cluster::start();
    let err = info(&c.dsn("no_such_db")).connect().err().unwrap();
    assert_eq!(classify(&err), ErrorKind::DataErr, "{err:#}");
    assert!(format!("{err:#}").contains("database \"no_such_db\" does not exist"));
}

#[test]
fn tls_modes_from_require_to_verify_full() {
    let dir = tempfile::tempdir().unwrap();
    let Some(certs) = TlsCerts::generate(dir.path(), &["localhost", "127.0.0.1"]) else {
        testkit::skip!("openssl is not installed; cannot make test certificates");
    };
    let q = |p: &std::path::Path| format!("'{}'", p.display());
    let c = Cluster::builder()
        .setting("listen_addresses", "'127.0.0.1,127.0.0.2'")
        .setting("ssl", "on")
        .setting("ssl_cert_file", &q(&certs.server_cert))
        .setting("ssl_key_file", &q(&certs.server_key))
        .start();
    let ssl_used = |dsn: &str| -> anyhow::Result<bool> {
        let mut client = info(dsn).connect()?;
        Ok(client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?
            .get(0))
    };
    let base = |host: &str| {
        format!(
            "host={host} port={} user=postgres dbname=postgres",
            c.port()
        )
    };
    let ca = certs.ca_cert.display();

    assert!(ssl_used(&format!("{} sslmode=require", base("127.0.0.1"))).unwrap());
    assert!(ssl_used(&format!("{} sslmode=prefer", base("127.0.0.1"))).unwrap());
    assert!(!ssl_used(&format!("{} sslmode=disable", base("127.0.0.1"))).unwrap());
    assert!(ssl_used(&format!(
        "{} sslmode=verify-full sslrootcert={ca}",
        base("localhost")
    ))
    .unwrap());
    assert!(ssl_used(&format!(
        "{} sslmode=verify-full sslrootcert={ca}",
        base("127.0.0.1")
    ))
    .unwrap());
    assert!(ssl_used(&format!(
        "{} sslmode=verify-ca sslrootcert={ca}",
        base("127.0.0.2")
    ))
    .unwrap());

    // hostaddr connects, host names the server for verification (libpq's split).
    assert!(ssl_used(&format!(
        "{} hostaddr=127.0.0.2 sslmode=verify-full sslrootcert={ca}",
        base("localhost")
    ))
    .unwrap());

    // The certificate does not name 127.0.0.2: verify-full must refuse it.
    let err = ssl_used(&format!(
        "{} sslmode=verify-full sslrootcert={ca}",
        base("127.0.0.2")
    ))
    .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(classify(&err), ErrorKind::Unavailable);
    assert!(
        msg.contains("127.0.0.2") && msg.contains("certificate"),
        "{msg}"
    );

    // A CA that did not sign the server's certificate.
    let other = tempfile::tempdir().unwrap();
    let other_certs = TlsCerts::generate(other.path(), &["localhost"]).unwrap();
    let err = ssl_used(&format!(
        "{} sslmode=verify-ca sslrootcert={}",
        base("localhost"),
        other_certs.ca_cert.display()
    ))
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("certificate verify failed"),
        "{err:#}"
    );
}

#[test]
fn require_against_a_server_without_tls_fails() {
    let c = Cluster::start();
    let err = info(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
        c.port()
    ))
    .connect()
    .err()
    .unwrap();
    assert_eq!(classify(&err), ErrorKind::Unavailable, "{err:#}");
}
