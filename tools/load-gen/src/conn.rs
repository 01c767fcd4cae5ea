//! Connections: reconnect fast to whichever host accepts the session, and say which server
//! (instance, timeline) it is.
//!
//! libpq tries the hosts of a DSN one after the other; when the first host is unreachable
//! (powered off, packets dropped) every reconnect waits out its connect timeout before asking
//! the second. During a switchover that wait *is* client downtime, so [`Target::connect`]
//! asks all hosts at once, each through `shared::pg` (which applies `target_session_attrs`,
//! TLS, `.pgpass`), and still picks the first acceptable host in DSN order, as libpq would.
//!
//! [`identify`] names the server behind a session by its system identifier, WAL timeline and
//! postmaster start time. That identity, not the host name, is what the split-brain check
//! compares (see `verify`): a promoted standby has the old primary's system identifier but a
//! higher timeline.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use shared::pg::{ConnInfo, Endpoint, MakeTlsConnector};
use shared::{ErrorKind, ResultExt};

/// Where clients connect: the parsed DSN, split into one single-host DSN per host.
#[derive(Clone)]
pub struct Target {
    info: ConnInfo,
    hosts: Vec<(Endpoint, ConnInfo)>,
    timeout: Duration,
    /// Built once: building a connector loads OpenSSL's CA store, tens of milliseconds that
    /// would otherwise be added to every reconnection attempt.
    tls: MakeTlsConnector,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.info.describe())
    }
}

impl Target {
    /// Parse `dsn` (conninfo or URL, completed from `PG*` variables); `timeout` bounds each
    /// attempt on each host.
    pub fn parse(dsn: &str, timeout: Duration) -> anyhow::Result<Target> {
        let info = ConnInfo::parse(dsn).kind_context(ErrorKind::Usage, "invalid --dsn")?;
        let hosts = info
            .endpoints()?
            .into_iter()
            .map(|ep| {
                let mut one = info.clone();
                one.set("host", ep.host.clone())
                    .set("port", ep.port.to_string())
                    .set("hostaddr", ep.hostaddr.clone().unwrap_or_default());
                (ep, one)
            })
            .collect();
        let tls = info.tls_connector()?;
        Ok(Target {
            info,
            hosts,
            timeout,
            tls,
        })
    }

    /// The DSN without its password, for records and messages.
    pub fn describe(&self) -> String {
        self.info.describe()
    }

    /// The parsed connection options.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Connect to the first host, in DSN order, that accepts a session with the DSN's
    /// `target_session_attrs`; all hosts are tried at the same time.
    pub async fn connect(&self) -> anyhow::Result<(tokio_postgres::Client, Endpoint)> {
        if self.hosts.len() == 1 {
            let (ep, info) = &self.hosts[0];
            return attempt(ep, info, &self.tls, self.timeout).await;
        }
        let mut pending: FuturesUnordered<_> =
            self.hosts
                .iter()
                .enumerate()
                .map(|(i, (ep, info))| async move {
                    (i, attempt(ep, info, &self.tls, self.timeout).await)
                })
                .collect();
        let mut results: Vec<Option<anyhow::Result<_>>> =
            (0..self.hosts.len()).map(|_| None).collect();
        while let Some((i, res)) = pending.next().await {
            results[i] = Some(res);
            // The first host (in DSN order) that accepted wins once every host before it has
            // answered "no"; hosts after it are dropped, their connections closed.
            for slot in results.iter_mut() {
                match slot {
                    None => break,
                    Some(Ok(_)) => {
                        if let Some(Ok(found)) = slot.take() {
                            return Ok(found);
                        }
                    }
                    Some(Err(_)) => {}
                }
            }
        }
        let errors: Vec<(&Endpoint, anyhow::Error)> = self
            .hosts
            .iter()
            .zip(results)
            .filter_map(|((ep, _), r)| r.and_then(Result::err).map(|e| (ep, e)))
            .collect();
        // A host that said "try later" (starting up, shutting down) makes the whole attempt
        // retryable, as in shared::pg.
        let kind = errors
            .iter()
            .map(|(_, e)| shared::exit::classify(e))
            .min_by_key(|k| k.severity())
            .unwrap_or(ErrorKind::Unavailable);
        Err(shared::err(kind, merge_messages(&errors)))
    }
}

/// One message for all hosts: shared::pg says `cannot connect to database "d" as "u"...:
/// host:port: why` for each; keep the common head once and list every host's reason.
fn merge_messages(errors: &[(&Endpoint, anyhow::Error)]) -> String {
    let mut head = None;
    let mut reasons = Vec::new();
    for (ep, e) in errors {
        let text = format!("{e:#}");
        match text.find(&format!("{ep}: ")) {
            Some(i) => {
                if i > 0 {
                    head.get_or_insert_with(|| text[..i].to_owned());
                }
                reasons.push(text[i..].to_owned());
            }
            None => reasons.push(format!("{ep}: {text}")),
        }
    }
    let head = head.unwrap_or_else(|| "cannot connect: ".to_owned());
    format!("{head}{}", reasons.join("; "))
}

/// One host, bounded by `timeout`.
async fn attempt(
    ep: &Endpoint,
    info: &ConnInfo,
    tls: &MakeTlsConnector,
    timeout: Duration,
) -> anyhow::Result<(tokio_postgres::Client, Endpoint)> {
    match tokio::time::timeout(timeout, info.connect_async_endpoint_with(tls)).await {
        Ok(res) => res,
        Err(_) => Err(shared::err(
            ErrorKind::Unavailable,
            format!(
                "{ep}: no answer within {} ms (--connect-timeout)",
                timeout.as_millis()
            ),
        )),
    }
}

/// Who served a session: the server instance and the timeline it writes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Identity {
    /// `pg_control_system().system_identifier`: the same on a primary and its physical
    /// standbys, different for an unrelated cluster (e.g. a logical-replication target).
    pub system_identifier: Option<String>,
    /// The timeline WAL is written on (null on a standby); promotion increments it.
    pub timeline: Option<u32>,
    /// `pg_postmaster_start_time()` (RFC 3339, UTC): tells two instances apart.
    pub postmaster_start: Option<String>,
}

impl Identity {
    /// True if every field is known (then the identity names one server instance).
    pub fn complete(&self) -> bool {
        self.system_identifier.is_some()
            && self.timeline.is_some()
            && self.postmaster_start.is_some()
    }
}

const IDENTITY_SQL: &str = "SELECT \
    (SELECT system_identifier::text FROM pg_catalog.pg_control_system()), \
    CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL \
         ELSE ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
    to_char(pg_catalog.pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

const START_TIME_SQL: &str = "SELECT to_char(pg_catalog.pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// Ask the server who it is. A server that refuses the control-data functions (a managed
/// service, a fork) gives a partial identity; a broken connection is an error.
///
/// Both queries are unnamed statements sent in one round trip (`query_typed_one`), never
/// named prepared ones: behind a transaction pooler (PgBouncer `pool_mode=transaction`) each
/// round trip may reach another server connection, where a statement prepared on the first
/// does not exist.
pub async fn identify(client: &tokio_postgres::Client) -> Result<Identity, tokio_postgres::Error> {
    match client.query_typed_one(IDENTITY_SQL, &[]).await {
        Ok(row) => Ok(Identity {
            system_identifier: row.get(0),
            timeline: row.get::<_, Option<i32>>(1).map(|t| t as u32),
            postmaster_start: row.get(2),
        }),
        Err(e) if e.as_db_error().is_some() => {
            let start = match client.query_typed_one(START_TIME_SQL, &[]).await {
                Ok(row) => row.get(0),
                Err(e) if e.as_db_error().is_some() => None,
                Err(e) => return Err(e),
            };
            Ok(Identity {
                postmaster_start: start,
                ..Identity::default()
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_names_every_host_once() {
        let a = Endpoint {
            host: "10.0.0.1".into(),
            hostaddr: None,
            port: 5432,
        };
        let b = Endpoint {
            host: "10.0.0.2".into(),
            hostaddr: None,
            port: 5433,
        };
        let errors = vec![
            (
                &a,
                shared::err(
                    ErrorKind::Unavailable,
                    "cannot connect to database \"app\" as \"u\" with target_session_attrs=read-write: 10.0.0.1:5432: Connection refused",
                ),
            ),
            (
                &b,
                shared::err(
                    ErrorKind::Unavailable,
                    "cannot connect to database \"app\" as \"u\" with target_session_attrs=read-write: 10.0.0.2:5433: session is read-only",
                ),
            ),
        ];
        assert_eq!(
            merge_messages(&errors),
            "cannot connect to database \"app\" as \"u\" with target_session_attrs=read-write: 10.0.0.1:5432: Connection refused; 10.0.0.2:5433: session is read-only"
        );
    }
}
