//! PostgreSQL connection options, as a DBA expects them from any libpq program.
//!
//! [`ConnInfo::parse`] takes a conninfo string (`host=a,b port=5432,5433 dbname=app`) or a URL
//! (`postgresql://u@a:5432,b:5433/app?target_session_attrs=read-write`), fills what is missing
//! from the `PG*` environment and libpq's defaults, and finds passwords in `~/.pgpass`.
//! [`ConnInfo::connect`] (sync, rust-postgres) and [`ConnInfo::connect_async`]
//! (tokio-postgres) then try the hosts in order, as libpq does, keeping the first one whose
//! session satisfies `target_session_attrs` (`any`, `read-write`, `read-only`, `primary`,
//! `standby`, `prefer-standby`). TLS follows `sslmode` (`disable` ... `verify-full`) through
//! OpenSSL, with `sslrootcert`, `sslcert` and `sslkey`.
//!
//! The host loop lives here rather than in tokio-postgres because tokio-postgres knows only
//! `any`/`read-write`/`read-only`, and because an error that names every host and why it was
//! refused is what makes a failed switchover debuggable.

mod conninfo;
pub mod pgpass;
pub mod snapshot;
pub mod tables;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};

use crate::exit::ErrorKind;

pub use conninfo::quote;
/// The TLS connector type of [`ConnInfo::tls_connector`] (for callers that keep one).
pub use postgres_openssl::MakeTlsConnector;

/// Environment variables libpq reads, and the keyword each one stands for.
const ENV_VARS: &[(&str, &str)] = &[
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGPASSFILE", "passfile"),
    ("PGOPTIONS", "options"),
    ("PGAPPNAME", "application_name"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLSNI", "sslsni"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
];

/// Every `PG*` variable [`ConnInfo::parse`] reads; tests remove them to be hermetic.
pub fn env_var_names() -> impl Iterator<Item = &'static str> {
    ENV_VARS
        .iter()
        .map(|(v, _)| *v)
        .chain(["PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR"])
}

/// Where libpq's packaged build looks for the system-wide `pg_service.conf` without
/// `PGSYSCONFDIR` (Debian/Ubuntu's postgresql-common; PGDG RPMs use `/etc/sysconfig/pgsql`).
const SYSCONF_DIRS: &[&str] = &["/etc/postgresql-common", "/etc/sysconfig/pgsql"];

/// The settings of service `name`: from `PGSERVICEFILE` (else `~/.pg_service.conf`), else
/// from `pg_service.conf` in `PGSYSCONFDIR` (else the packaged locations). Not found in any
/// is an error, as in libpq.
fn read_service(
    name: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files: Vec<PathBuf> = Vec::new();
    match env("PGSERVICEFILE").filter(|v| !v.is_empty()) {
        Some(f) => files.push(f.into()),
        None => {
            if let Some(home) = env("HOME") {
                files.push(Path::new(&home).join(".pg_service.conf"));
            }
        }
    }
    match env("PGSYSCONFDIR").filter(|v| !v.is_empty()) {
        Some(d) => files.push(Path::new(&d).join("pg_service.conf")),
        None => files.extend(
            SYSCONF_DIRS
                .iter()
                .map(|d| Path::new(d).join("pg_service.conf")),
        ),
    }
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(crate::err(
                    ErrorKind::Usage,
                    format!("cannot read service file \"{}\": {e}", f.display()),
                ))
            }
        };
        if let Some(m) = conninfo::parse_service(&text, &f.display().to_string(), name)? {
            return Ok(m);
        }
    }
    Err(crate::err(
        ErrorKind::Usage,
        format!(
            "definition of service \"{name}\" not found (looked in {}); check the name, or set PGSERVICEFILE",
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    ))
}

/// Seconds to wait for a connection when neither the DSN nor `PGCONNECT_TIMEOUT` says.
/// libpq waits forever; a migration tool should say "unreachable" instead.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;

/// `sslmode`, libpq's six values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Treated like `prefer` (libpq tries plain first; the difference rarely matters).
    Allow,
    /// TLS if the server offers it, without verification (libpq's default).
    Prefer,
    /// TLS required; the certificate is verified only if a root certificate is configured.
    Require,
    /// TLS required, certificate chain verified against `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

/// `target_session_attrs`, libpq's six values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server.
    Any,
    /// A session that accepts writes by default.
    ReadWrite,
    /// A session that is read-only by default.
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery (hot standby).
    Standby,
    /// A standby if any host is one, else any server.
    PreferStandby,
}

/// One host of a (possibly multi-host) connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name, IP address, or Unix-socket directory (starts with `/`).
    pub host: String,
    /// `hostaddr`, if given: the address actually connected to (`host` is then used for TLS).
    pub hostaddr: Option<String>,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// True for a Unix-domain socket directory.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parsed connection options: libpq keywords after the DSN, the environment and defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    params: BTreeMap<String, String>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnInfo({})", self.describe())
    }
}

impl ConnInfo {
    /// Parse a DSN and complete it from the `PG*` environment and libpq's defaults.
    pub fn parse(dsn: &str) -> anyhow::Result<ConnInfo> {
        Self::parse_with_env(dsn, |k| std::env::var(k).ok())
    }

    /// [`ConnInfo::parse`] with an explicit environment (for tests).
    pub fn parse_with_env(
        dsn: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<ConnInfo> {
        let mut params = conninfo::parse(dsn)?;
        // A service's settings come after the DSN's and before the environment's (libpq).
        let service = params
            .get("service")
            .cloned()
            .or_else(|| env("PGSERVICE").filter(|v| !v.is_empty()));
        if let Some(name) = service {
            for (k, v) in read_service(&name, &env)? {
                params.entry(k).or_insert(v);
            }
            params.remove("service");
        }
        for (var, key) in ENV_VARS {
            if !params.contains_key(*key) {
                if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                    params.insert((*key).to_owned(), v);
                }
            }
        }
        if !params.contains_key("host") && !params.contains_key("hostaddr") {
            let socket_dir = "/var/run/postgresql";
            let host = if Path::new(socket_dir).is_dir() {
                socket_dir
            } else {
                "localhost"
            };
            params.insert("host".into(), host.into());
        }
        if !params.contains_key("user") {
            let user = env("USER")
                .or_else(|| env("LOGNAME"))
                .unwrap_or_else(|| "postgres".into());
            params.insert("user".into(), user);
        }
        if !params.contains_key("dbname") {
            params.insert("dbname".into(), params["user"].clone());
        }
        conninfo::check_supported(&params)?;
        let info = ConnInfo { params };
        // Validate the enumerations and host/port lists now, so a bad DSN is a usage error at
        // start-up rather than at the first connection.
        info.sslmode()?;
        info.tls_version("ssl_min_protocol_version")?;
        info.tls_version("ssl_max_protocol_version")?;
        info.target_session_attrs()?;
        info.endpoints()?;
        Ok(info)
    }

    /// A keyword's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Set a keyword (e.g. `dbname` for a per-test database).
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut ConnInfo {
        self.params.insert(key.to_owned(), value.into());
        self
    }

    /// A copy whose `connect_timeout` is `secs` unless the DSN or `PGCONNECT_TIMEOUT` says
    /// otherwise: a control connection to a dead host must give up long before the kernel's
    /// TCP timeout holds a switchover or a cutover.
    pub fn with_control_timeout(&self, secs: u32) -> ConnInfo {
        let mut c = self.clone();
        if c.get("connect_timeout").is_none() && std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            c.set("connect_timeout", secs.to_string());
        }
        c
    }

    /// A copy with another database name.
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        let mut c = self.clone();
        c.set("dbname", dbname);
        c
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        self.get("dbname").unwrap_or_default()
    }

    /// The user name.
    pub fn user(&self) -> &str {
        self.get("user").unwrap_or_default()
    }

    /// `sslmode` (default `prefer`).
    pub fn sslmode(&self) -> anyhow::Result<SslMode> {
        Ok(match self.get("sslmode").unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(crate::err(
                    ErrorKind::Usage,
                    format!("invalid sslmode \"{other}\" (use disable, allow, prefer, require, verify-ca or verify-full)"),
                ))
            }
        })
    }

    /// `target_session_attrs` (default `any`).
    pub fn target_session_attrs(&self) -> anyhow::Result<SessionAttrs> {
        Ok(match self.get("target_session_attrs").unwrap_or("any") {
            "any" => SessionAttrs::Any,
            "read-write" => SessionAttrs::ReadWrite,
            "read-only" => SessionAttrs::ReadOnly,
            "primary" => SessionAttrs::Primary,
            "standby" => SessionAttrs::Standby,
            "prefer-standby" => SessionAttrs::PreferStandby,
            other => return Err(crate::err(
                ErrorKind::Usage,
                format!("invalid target_session_attrs \"{other}\" (use any, read-write, read-only, primary, standby or prefer-standby)"),
            )),
        })
    }

    /// The hosts to try, in order, with their ports (libpq's pairing rules: one port for all
    /// hosts, or one port per host).
    pub fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        let split = |k: &str| -> Vec<String> {
            self.get(k)
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
                .unwrap_or_default()
        };
        let hosts = split("host");
        let addrs = split("hostaddr");
        let ports = split("port");
        let n = hosts.len().max(addrs.len());
        if !addrs.is_empty() && !hosts.is_empty() && addrs.len() != hosts.len() {
            return Err(crate::err(
                ErrorKind::Usage,
                format!("could not match {} host names to {} hostaddr values (give one hostaddr per host)", hosts.len(), addrs.len()),
            ));
        }
        if ports.len() > 1 && ports.len() != n {
            return Err(crate::err(
                ErrorKind::Usage,
                format!(
                    "could not match {} port numbers to {n} hosts (give one port, or one per host)",
                    ports.len()
                ),
            ));
        }
        (0..n)
            .map(|i| {
                let port_s = ports
                    .get(if ports.len() == 1 { 0 } else { i })
                    .map(String::as_str)
                    .filter(|p| !p.is_empty())
                    .unwrap_or("5432");
                let port = port_s
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        crate::err(
                            ErrorKind::Usage,
                            format!("invalid port number \"{port_s}\" (expected 1-65535)"),
                        )
                    })?;
                let hostaddr = addrs.get(i).filter(|a| !a.is_empty()).cloned();
                if let Some(a) = &hostaddr {
                    a.parse::<std::net::IpAddr>().map_err(|_| {
                        crate::err(
                            ErrorKind::Usage,
                            format!("invalid hostaddr \"{a}\" (expected a numeric IP address)"),
                        )
                    })?;
                }
                let host = hosts
                    .get(i)
                    .filter(|h| !h.is_empty())
                    .cloned()
                    .or_else(|| hostaddr.clone())
                    .unwrap_or_else(|| "localhost".into());
                Ok(Endpoint {
                    host,
                    hostaddr,
                    port,
                })
            })
            .collect()
    }

    /// A libpq conninfo string with every keyword, password included: for `psql`,
    /// `pg_basebackup` and `primary_conninfo`. Never log it; log [`ConnInfo::describe`].
    pub fn to_conninfo(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The connection string without secrets, for messages and records.
    pub fn describe(&self) -> String {
        self.params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "password" | "sslpassword"))
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The password for the first host: explicit, else from the password file (for a
    /// conninfo that another server uses, such as a subscription's).
    pub fn password(&self) -> Option<String> {
        let ep = self.endpoints().ok()?.into_iter().next()?;
        self.password_for(&ep)
    }

    /// The password for one endpoint: explicit, else from the password file.
    fn password_for(&self, ep: &Endpoint) -> Option<String> {
        if let Some(p) = self.get("password") {
            return Some(p.to_owned());
        }
        let path = pgpass::default_path(self.get("passfile"))?;
        pgpass::lookup(&path, &ep.host, ep.port, self.dbname(), self.user())
    }

    /// The tokio-postgres configuration for one endpoint (always `target_session_attrs=any`:
    /// the attributes are checked by the host loop here).
    pub fn endpoint_config(&self, ep: &Endpoint) -> anyhow::Result<tokio_postgres::Config> {
        let mut c = tokio_postgres::Config::new();
        c.host(&ep.host)
            .port(ep.port)
            .user(self.user())
            .dbname(self.dbname());
        if let Some(a) = &ep.hostaddr {
            c.hostaddr(a.parse().expect("validated in endpoints()"));
        }
        if let Some(p) = self.password_for(ep) {
            c.password(p);
        }
        if let Some(o) = self.get("options") {
            c.options(o);
        }
        let app = self
            .get("application_name")
            .or(self.get("fallback_application_name"))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("pgshift-{}", crate::msg::tool()));
        c.application_name(&app);
        let secs = |k: &str| -> anyhow::Result<Option<u64>> {
            self.get(k)
                .map(|v| {
                    v.trim().parse::<i64>().map_err(|_| {
                        crate::err(
                            ErrorKind::Usage,
                            format!("invalid {k} \"{v}\" (expected whole seconds)"),
                        )
                    })
                })
                .transpose()
                .map(|o| o.map(|n| n.max(0) as u64))
        };
        let timeout = secs("connect_timeout")?.unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS);
        if timeout > 0 {
            c.connect_timeout(Duration::from_secs(timeout.max(2)));
        }
        if let Some(t) = secs("tcp_user_timeout")?.filter(|t| *t > 0) {
            c.tcp_user_timeout(Duration::from_millis(t));
        }
        if let Some(k) = self.get("keepalives") {
            c.keepalives(k != "0");
        }
        if let Some(t) = secs("keepalives_idle")?.filter(|t| *t > 0) {
            c.keepalives_idle(Duration::from_secs(t));
        }
        if let Some(t) = secs("keepalives_interval")?.filter(|t| *t > 0) {
            c.keepalives_interval(Duration::from_secs(t));
        }
        if let Some(n) = secs("keepalives_count")? {
            c.keepalives_retries(n as u32);
        }
        c.ssl_mode(match self.sslmode()? {
            // libpq ignores sslmode on Unix-domain sockets.
            _ if ep.is_socket() => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if let Some(cb) = self.get("channel_binding") {
            c.channel_binding(match cb {
                "disable" => tokio_postgres::config::ChannelBinding::Disable,
                "prefer" => tokio_postgres::config::ChannelBinding::Prefer,
                "require" => tokio_postgres::config::ChannelBinding::Require,
                other => {
                    return Err(crate::err(
                        ErrorKind::Usage,
                        format!(
                            "invalid channel_binding \"{other}\" (use disable, prefer or require)"
                        ),
                    ))
                }
            });
        }
        Ok(c)
    }

    /// `ssl_min_protocol_version` / `ssl_max_protocol_version` (`TLSv1` ... `TLSv1.3`).
    fn tls_version(&self, key: &str) -> anyhow::Result<Option<openssl::ssl::SslVersion>> {
        use openssl::ssl::SslVersion;
        Ok(match self.get(key) {
            None | Some("") => None,
            Some("TLSv1") => Some(SslVersion::TLS1),
            Some("TLSv1.1") => Some(SslVersion::TLS1_1),
            Some("TLSv1.2") => Some(SslVersion::TLS1_2),
            Some("TLSv1.3") => Some(SslVersion::TLS1_3),
            Some(other) => {
                return Err(crate::err(
                    ErrorKind::Usage,
                    format!("invalid {key} \"{other}\" (use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)"),
                ))
            }
        })
    }

    /// The TLS connector for `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and the TLS
    /// protocol versions.
    pub fn tls_connector(&self) -> anyhow::Result<MakeTlsConnector> {
        let mode = self.sslmode()?;
        let home_file = |name: &str| -> Option<PathBuf> {
            let p = Path::new(&std::env::var_os("HOME")?)
                .join(".postgresql")
                .join(name);
            p.exists().then_some(p)
        };
        let rootcert = self
            .get("sslrootcert")
            .map(PathBuf::from)
            .or_else(|| home_file("root.crt"));
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        // libpq's default minimum is TLS 1.2.
        b.set_min_proto_version(Some(
            self.tls_version("ssl_min_protocol_version")?
                .unwrap_or(openssl::ssl::SslVersion::TLS1_2),
        ))?;
        if let Some(v) = self.tls_version("ssl_max_protocol_version")? {
            b.set_max_proto_version(Some(v))?;
        }
        // libpq: with sslmode=require, a configured root certificate makes it verify-ca.
        let verify = match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => rootcert.is_some(),
            _ => false,
        };
        if verify {
            match &rootcert {
                Some(p) if p.as_os_str() == "system" => b.set_default_verify_paths()?,
                Some(p) => b.set_ca_file(p).map_err(|e| {
                    crate::err(
                        ErrorKind::Usage,
                        format!("cannot read root certificate \"{}\": {e} (check sslrootcert)", p.display()),
                    )
                })?,
                None => {
                    return Err(crate::err(
                        ErrorKind::Usage,
                        "sslmode verify-ca/verify-full needs a root certificate: set sslrootcert=FILE (or sslrootcert=system), or put it in ~/.postgresql/root.crt",
                    ))
                }
            }
            b.set_verify(SslVerifyMode::PEER);
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        let cert = self
            .get("sslcert")
            .map(PathBuf::from)
            .or_else(|| home_file("postgresql.crt"));
        if let Some(cert) = cert.filter(|c| c.exists()) {
            b.set_certificate_chain_file(&cert)?;
            let key = self
                .get("sslkey")
                .map(PathBuf::from)
                .or_else(|| home_file("postgresql.key"))
                .ok_or_else(|| {
                    crate::err(
                        ErrorKind::Usage,
                        format!(
                            "client certificate \"{}\" has no key: set sslkey=FILE",
                            cert.display()
                        ),
                    )
                })?;
            b.set_private_key_file(&key, SslFiletype::PEM)
                .map_err(|e| {
                    crate::err(
                        ErrorKind::Usage,
                        format!(
                            "cannot read client key \"{}\": {e} (check sslkey)",
                            key.display()
                        ),
                    )
                })?;
        }
        let mut connector = MakeTlsConnector::new(b.build());
        let full = mode == SslMode::VerifyFull;
        let sni = self.get("sslsni") != Some("0");
        connector.set_callback(move |cfg, _domain| {
            cfg.set_verify_hostname(full);
            cfg.set_use_server_name_indication(sni);
            Ok(())
        });
        Ok(connector)
    }

    /// Connect (blocking), trying the hosts in order; see the module docs.
    pub fn connect(&self) -> anyhow::Result<postgres::Client> {
        self.connect_endpoint().map(|(c, _)| c)
    }

    /// [`ConnInfo::connect`], also returning which host accepted.
    pub fn connect_endpoint(&self) -> anyhow::Result<(postgres::Client, Endpoint)> {
        let attrs = self.target_session_attrs()?;
        let tls = self.tls_connector()?;
        let mut failures = Vec::new();
        let mut fallback = None;
        for ep in self.endpoints()? {
            let cfg = postgres::Config::from(self.endpoint_config(&ep)?);
            let mut client = match cfg.connect(tls.clone()) {
                Ok(c) => c,
                Err(e) => {
                    failures.push((ep, connect_failure(&e)));
                    continue;
                }
            };
            let state = if attrs == SessionAttrs::Any {
                None
            } else {
                match client.query_typed_one(SESSION_STATE_SQL, &[]) {
                    Ok(row) => Some((row.get::<_, bool>(0), row.get::<_, bool>(1))),
                    Err(e) => {
                        failures.push((ep, connect_failure(&e)));
                        continue;
                    }
                }
            };
            match verdict(attrs, state) {
                Verdict::Accept => return Ok((client, ep)),
                Verdict::Fallback if fallback.is_none() => fallback = Some((client, ep)),
                Verdict::Fallback => {}
                Verdict::Reject(why) => failures.push((ep, (ErrorKind::Unavailable, why))),
            }
        }
        fallback.ok_or_else(|| all_failed(self, attrs, failures))
    }

    /// Connect with tokio-postgres, trying the hosts in order; the connection task is spawned
    /// on the current tokio runtime.
    pub async fn connect_async(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.connect_async_endpoint().await.map(|(c, _)| c)
    }

    /// [`ConnInfo::connect_async`], also returning which host accepted.
    pub async fn connect_async_endpoint(
        &self,
    ) -> anyhow::Result<(tokio_postgres::Client, Endpoint)> {
        let tls = self.tls_connector()?;
        self.connect_async_endpoint_with(&tls).await
    }

    /// [`ConnInfo::connect_async_endpoint`] with a connector from [`ConnInfo::tls_connector`]
    /// built once by the caller. Building one loads OpenSSL's default CA store (tens of
    /// milliseconds of CPU), which a client that reconnects every few milliseconds (load-gen
    /// during a switchover) must not pay on every attempt.
    pub async fn connect_async_endpoint_with(
        &self,
        tls: &MakeTlsConnector,
    ) -> anyhow::Result<(tokio_postgres::Client, Endpoint)> {
        let attrs = self.target_session_attrs()?;
        let mut failures = Vec::new();
        let mut fallback = None;
        for ep in self.endpoints()? {
            let cfg = self.endpoint_config(&ep)?;
            let client = match cfg.connect(tls.clone()).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        // Errors surface on the client as a closed connection.
                        let _ = conn.await;
                    });
                    client
                }
                Err(e) => {
                    failures.push((ep, connect_failure(&e)));
                    continue;
                }
            };
            let state = if attrs == SessionAttrs::Any {
                None
            } else {
                match client.query_typed_one(SESSION_STATE_SQL, &[]).await {
                    Ok(row) => Some((row.get::<_, bool>(0), row.get::<_, bool>(1))),
                    Err(e) => {
                        failures.push((ep, connect_failure(&e)));
                        continue;
                    }
                }
            };
            match verdict(attrs, state) {
                Verdict::Accept => return Ok((client, ep)),
                Verdict::Fallback if fallback.is_none() => fallback = Some((client, ep)),
                Verdict::Fallback => {}
                Verdict::Reject(why) => failures.push((ep, (ErrorKind::Unavailable, why))),
            }
        }
        fallback.ok_or_else(|| all_failed(self, attrs, failures))
    }
}

const SESSION_STATE_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     pg_catalog.current_setting('transaction_read_only') = 'on'";

enum Verdict {
    Accept,
    /// Acceptable only if no host is better (prefer-standby on a primary).
    Fallback,
    Reject(String),
}

/// Does a session with `(in_recovery, read_only)` satisfy `attrs`?
fn verdict(attrs: SessionAttrs, state: Option<(bool, bool)>) -> Verdict {
    let Some((in_recovery, read_only)) = state else {
        return Verdict::Accept;
    };
    let (ok, why) = match attrs {
        SessionAttrs::Any => (true, ""),
        SessionAttrs::ReadWrite => (!read_only, "session is read-only"),
        SessionAttrs::ReadOnly => (read_only, "session is read-write"),
        SessionAttrs::Primary => (!in_recovery, "server is in hot standby mode"),
        SessionAttrs::Standby => (in_recovery, "server is not in hot standby mode"),
        SessionAttrs::PreferStandby => {
            return if in_recovery {
                Verdict::Accept
            } else {
                Verdict::Fallback
            }
        }
    };
    if ok {
        Verdict::Accept
    } else {
        Verdict::Reject(why.to_owned())
    }
}

/// Classify and describe one host's connection failure, on one line.
fn connect_failure(e: &tokio_postgres::Error) -> (ErrorKind, String) {
    let kind = match classify_pg_error(e) {
        // Refused logins and missing databases are not going to fix themselves by retrying.
        k @ (ErrorKind::DataErr | ErrorKind::Retry) => k,
        _ => ErrorKind::Unavailable,
    };
    let mut msg = one_line(e);
    if let Some(db) = e.as_db_error() {
        match db.code().code() {
            "28P01" | "28000" => msg.push_str(
                " (check the user and password: DSN password=, PGPASSWORD or ~/.pgpass, and pg_hba.conf)",
            ),
            "3D000" => msg.push_str(" (check dbname, or create the database)"),
            _ => {}
        }
    }
    (kind, msg)
}

fn all_failed(
    info: &ConnInfo,
    attrs: SessionAttrs,
    failures: Vec<(Endpoint, (ErrorKind, String))>,
) -> anyhow::Error {
    // The mildest failure decides the class: if any host merely said "try later" (starting
    // up, shutting down), the whole attempt is retryable.
    let kind = failures
        .iter()
        .map(|(_, (k, _))| *k)
        .min_by_key(|k| k.severity())
        .unwrap_or(ErrorKind::Unavailable);
    let hosts = failures
        .iter()
        .map(|(ep, (_, m))| format!("{ep}: {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let wanted = if attrs == SessionAttrs::Any {
        String::new()
    } else {
        format!(
            " with target_session_attrs={}",
            info.get("target_session_attrs").unwrap_or("any")
        )
    };
    crate::err(
        kind,
        format!(
            "cannot connect to database \"{}\" as \"{}\"{wanted}: {hosts}",
            info.dbname(),
            info.user()
        ),
    )
}

/// The fix for a read refused because a row-level security policy applies to the role, in a
/// session with `row_security = off`; None for any other error. A tool that reads every row
/// to compare or count them sets that (pg_dump does too): with it on, the default, a role
/// under a policy silently gets fewer rows; off, the read fails.
pub fn row_security_hint(e: &anyhow::Error) -> Option<&'static str> {
    let db = e
        .chain()
        .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .and_then(|e| e.as_db_error())?;
    (db.code().code() == "42501" && db.message().contains("row-level security")).then_some(
        "connect as the table's owner, a superuser or a role with BYPASSRLS: a row-level \
         security policy would hide rows from this role",
    )
}

/// A tokio-postgres error on one line: a server error as `SEVERITY: message (DETAIL: ...)
/// (HINT: ...)`, anything else as its cause chain.
pub fn one_line(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (DETAIL: {d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (HINT: {h})"));
        }
        return s.replace('\n', " ");
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s.replace('\n', " ")
}

/// The exit class of a PostgreSQL error, by SQLSTATE class where the server sent one.
pub fn classify_pg_error(e: &tokio_postgres::Error) -> ErrorKind {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return match code {
            "57P04" => ErrorKind::DataErr, // database dropped
            "53100" => ErrorKind::Retry,   // disk full on the server: may clear
            "25006" => ErrorKind::Retry,   // read-only transaction: switchover in progress
            _ => match &code[..2] {
                "08" | "28" => ErrorKind::Unavailable,
                "40" | "53" | "55" | "57" => ErrorKind::Retry,
                "22" | "23" | "3D" | "3F" | "42" | "0A" | "2B" => ErrorKind::DataErr,
                "58" => ErrorKind::Io,
                _ => ErrorKind::Internal,
            },
        };
    }
    if e.is_closed() {
        return ErrorKind::Retry;
    }
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return crate::exit::classify_io(io);
        }
        src = cause.source();
    }
    let text = e.to_string();
    if text.contains("deserializ") || text.contains("serializ") {
        // Type conversion between Rust and SQL: our bug.
        return ErrorKind::Internal;
    }
    ErrorKind::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_fills_only_what_the_dsn_lacks() {
        let c = ConnInfo::parse_with_env(
            "host=a dbname=app",
            env(&[
                ("PGHOST", "ignored"),
                ("PGPORT", "6000"),
                ("PGUSER", "bob"),
                ("PGSSLMODE", "require"),
                ("PGTARGETSESSIONATTRS", "primary"),
            ]),
        )
        .unwrap();
        assert_eq!(c.get("host"), Some("a"));
        assert_eq!(c.get("port"), Some("6000"));
        assert_eq!(c.user(), "bob");
        assert_eq!(c.dbname(), "app");
        assert_eq!(c.sslmode().unwrap(), SslMode::Require);
        assert_eq!(c.target_session_attrs().unwrap(), SessionAttrs::Primary);
    }

    #[test]
    fn defaults_follow_libpq() {
        let c = ConnInfo::parse_with_env("host=h", env(&[("USER", "carol")])).unwrap();
        assert_eq!(c.user(), "carol");
        assert_eq!(c.dbname(), "carol");
        assert_eq!(
            c.endpoints().unwrap(),
            vec![Endpoint {
                host: "h".into(),
                hostaddr: None,
                port: 5432
            }]
        );
        assert_eq!(c.sslmode().unwrap(), SslMode::Prefer);
    }

    #[test]
    fn multi_host_pairs_ports() {
        let c = ConnInfo::parse_with_env(
            "postgresql://u@a:5432,b:5433/db?target_session_attrs=read-write",
            env(&[]),
        )
        .unwrap();
        let eps: Vec<String> = c
            .endpoints()
            .unwrap()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(eps, ["a:5432", "b:5433"]);

        let one_port = ConnInfo::parse_with_env("host=a,b,c port=7000", env(&[])).unwrap();
        assert!(one_port.endpoints().unwrap().iter().all(|e| e.port == 7000));

        let e = ConnInfo::parse_with_env("host=a,b,c port=1,2", env(&[])).unwrap_err();
        assert!(format!("{e:#}").contains("could not match 2 port numbers to 3 hosts"));
    }

    #[test]
    fn bad_enumerations_are_usage_errors() {
        for dsn in [
            "host=a sslmode=maybe",
            "host=a target_session_attrs=fastest",
            "host=a port=0",
            "host=a hostaddr=not-an-ip",
        ] {
            let e = ConnInfo::parse_with_env(dsn, env(&[])).unwrap_err();
            assert_eq!(crate::exit::classify(&e), ErrorKind::Usage, "{dsn}: {e:#}");
        }
    }

    #[test]
    fn describe_hides_the_password_and_conninfo_round_trips() {
        let c = ConnInfo::parse_with_env("host=a password='s3 cret' user=u dbname=d", env(&[]))
            .unwrap();
        assert!(!c.describe().contains("s3"));
        let again = ConnInfo::parse_with_env(&c.to_conninfo(), env(&[])).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let c = ConnInfo::parse_with_env(
            "host=a sslmode=verify-full sslrootcert=/nonexistent/root.crt",
            env(&[]),
        )
        .unwrap();
        let e = c.tls_connector().err().unwrap();
        assert!(
            format!("{e:#}").contains("cannot read root certificate"),
            "{e:#}"
        );
    }

    #[test]
    fn session_attrs_verdicts() {
        let primary = Some((false, false));
        let standby = Some((true, true));
        assert!(matches!(
            verdict(SessionAttrs::ReadWrite, primary),
            Verdict::Accept
        ));
        assert!(matches!(
            verdict(SessionAttrs::ReadWrite, standby),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            verdict(SessionAttrs::Standby, standby),
            Verdict::Accept
        ));
        assert!(matches!(
            verdict(SessionAttrs::Primary, standby),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            verdict(SessionAttrs::PreferStandby, primary),
            Verdict::Fallback
        ));
        assert!(matches!(verdict(SessionAttrs::Any, None), Verdict::Accept));
    }

    #[test]
    fn services_come_after_the_dsn_and_before_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.conf");
        std::fs::write(
            &file,
            "# a comment\n[other]\nhost=wrong\n\n[app]\nhost = db1\nport=6543\ndbname=appdb\nuser=svcuser\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let pairs = [("PGSERVICEFILE", f), ("PGUSER", "envuser"), ("PGPORT", "1")];
        let c = ConnInfo::parse_with_env("service=app user=me", env(&pairs)).unwrap();
        assert_eq!(c.get("host"), Some("db1"));
        assert_eq!(c.get("port"), Some("6543"), "the service beats PGPORT");
        assert_eq!(c.dbname(), "appdb");
        assert_eq!(c.user(), "me", "the DSN beats the service");
        assert_eq!(c.get("service"), None);
        // PGSERVICE names it too.
        let pairs = [("PGSERVICEFILE", f), ("PGSERVICE", "app")];
        assert_eq!(
            ConnInfo::parse_with_env("", env(&pairs))
                .unwrap()
                .get("host"),
            Some("db1")
        );
        // A service nowhere is an error naming it and where it was looked for, as in libpq.
        let none = dir.path().join("none");
        let pairs = [
            ("PGSERVICEFILE", f),
            ("PGSYSCONFDIR", none.to_str().unwrap()),
        ];
        let e = ConnInfo::parse_with_env("service=nosuch", env(&pairs)).unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("service \"nosuch\" not found") && m.contains("svc.conf"),
            "{m}"
        );
        assert_eq!(crate::exit::classify(&e), ErrorKind::Usage);
        // The system file, when the user's has no such service.
        std::fs::write(dir.path().join("pg_service.conf"), "[sys]\nhost=db2\n").unwrap();
        let pairs = [
            ("PGSERVICEFILE", f),
            ("PGSYSCONFDIR", dir.path().to_str().unwrap()),
        ];
        let c = ConnInfo::parse_with_env("service=sys", env(&pairs)).unwrap();
        assert_eq!(c.get("host"), Some("db2"));
        // Bad keywords inside are refused, with the line.
        std::fs::write(&file, "[app]\nhots=x\n").unwrap();
        let e = ConnInfo::parse_with_env("service=app", env(&[("PGSERVICEFILE", f)])).unwrap_err();
        assert!(
            format!("{e:#}").contains("svc.conf:2: invalid connection option \"hots\""),
            "{e:#}"
        );
    }

    #[test]
    fn keywords_that_would_be_ignored_are_refused_by_name() {
        for (dsn, names) in [
            ("host=a sslcrl=/x.crl", "\"sslcrl\" is not supported"),
            ("host=a requirepeer=postgres", "\"requirepeer\""),
            ("host=a sslpassword=x", "\"sslpassword\""),
            (
                "host=a gssencmode=require",
                "gssencmode=require is not supported",
            ),
            (
                "host=a load_balance_hosts=random",
                "load_balance_hosts=random",
            ),
            ("host=a client_encoding=LATIN1", "client_encoding=LATIN1"),
            ("host=a replication=database", "\"replication\""),
            (
                "host=a ssl_min_protocol_version=TLSv9",
                "invalid ssl_min_protocol_version",
            ),
        ] {
            let e = ConnInfo::parse_with_env(dsn, env(&[])).unwrap_err();
            let m = format!("{e:#}");
            assert!(m.contains(names), "{dsn}: {m}");
            assert_eq!(crate::exit::classify(&e), ErrorKind::Usage, "{dsn}");
        }
        for ok in [
            "host=a gssencmode=disable",
            "host=a gssencmode=prefer client_encoding=UTF8 sslcompression=0",
            "host=a load_balance_hosts=disable ssl_min_protocol_version=TLSv1.3",
        ] {
            ConnInfo::parse_with_env(ok, env(&[])).unwrap();
        }
    }
}
