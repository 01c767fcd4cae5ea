//! One side of the move: a server reached through a control DSN, its facts, and pgshift's
//! own sessions on it (one per database, kept open for the run, so that the fence can tell
//! them from clients).

use std::collections::BTreeMap;

use anyhow::Context;
use postgres::Client;
use shared::pg::ConnInfo;

pub use shared::Which;

/// A server and pgshift's sessions on it.
pub struct Side {
    /// Which side it is.
    pub which: Which,
    /// The control DSN, completed (environment, defaults).
    pub info: ConnInfo,
    /// `server_version_num`.
    pub version_num: i32,
    /// `server_version`.
    pub version: String,
    /// The cluster's system identifier (names the replication objects of a pair); with the
    /// address added when both sides share one (see `Pair::open`).
    pub system_identifier: String,
    /// The role pgshift logs in as.
    pub user: String,
    /// Whether that role is a superuser.
    pub superuser: bool,
    sessions: BTreeMap<String, Client>,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Side({}, {})", self.which.as_str(), self.info.describe())
    }
}

/// A control connection gives up after 5 s unless the DSN says otherwise
/// ([`ConnInfo::with_control_timeout`]), and says it is pgshift's logical mode.
fn control_conninfo(c: ConnInfo) -> ConnInfo {
    let mut c = c.with_control_timeout(5);
    if c.get("application_name").is_none() {
        c.set("application_name", "pgshift-logical");
    }
    c
}

impl Side {
    /// Parse `dsn` (a usage error if it is malformed) without connecting.
    pub fn parse(which: Which, dsn: &str) -> anyhow::Result<ConnInfo> {
        ConnInfo::parse(dsn)
            .map(control_conninfo)
            .with_context(|| format!("--{}", which.as_str()))
    }

    /// Connect to the control database of `info` and read the server's facts.
    pub fn open(which: Which, info: ConnInfo) -> anyhow::Result<Side> {
        let connect = |info: &ConnInfo| {
            info.connect().with_context(|| {
                format!("connecting to the {} ({})", which.as_str(), info.describe())
            })
        };
        // The target's database may not exist yet (setup creates it): its control session is
        // then in the maintenance database.
        let (info, mut c) = match connect(&info) {
            Ok(c) => (info, c),
            Err(e)
                if which == Which::Target
                    && info.dbname() != "postgres"
                    && format!("{e:#}").contains("does not exist") =>
            {
                let info = info.with_dbname("postgres");
                let c = connect(&info)?;
                (info, c)
            }
            Err(e) => return Err(e),
        };
        let row = c
            .query_one(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version'),
                        (SELECT system_identifier::text FROM pg_control_system()),
                        current_user::text, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                &[],
            )
            .with_context(|| format!("reading the {}'s version", which.as_str()))?;
        let mut sessions = BTreeMap::new();
        let dbname = info.dbname().to_owned();
        let side = Side {
            which,
            version_num: row.get(0),
            version: row.get(1),
            system_identifier: row.get(2),
            user: row.get(3),
            superuser: row.get(4),
            info,
            sessions: BTreeMap::new(),
        };
        sessions.insert(dbname, c);
        Ok(Side { sessions, ..side })
    }

    /// The major version (15, 16, ...).
    pub fn major(&self) -> i32 {
        self.version_num / 10000
    }

    /// `source 127.0.0.1:5432` for messages.
    pub fn name(&self) -> String {
        let host = self.info.get("host").unwrap_or("?");
        let port = self.info.get("port").unwrap_or("5432");
        format!("{} {host}:{port}", self.which.as_str())
    }

    /// The DSN for database `db`.
    pub fn dsn(&self, db: &str) -> ConnInfo {
        self.info.with_dbname(db)
    }

    /// pgshift's session in database `db` (opened once, then kept).
    pub fn db(&mut self, db: &str) -> anyhow::Result<&mut Client> {
        if !self.sessions.contains_key(db) {
            let c = self
                .dsn(db)
                .connect()
                .with_context(|| format!("connecting to database {db} on the {}", self.name()))?;
            self.sessions.insert(db.to_owned(), c);
        }
        Ok(self.sessions.get_mut(db).expect("just inserted"))
    }

    /// The control session (the DSN's own database).
    pub fn control(&mut self) -> &mut Client {
        let db = self.info.dbname().to_owned();
        self.sessions.get_mut(&db).expect("opened with the side")
    }

    /// The backend pids of pgshift's sessions on this server (the fence spares them).
    pub fn own_pids(&mut self) -> anyhow::Result<Vec<i32>> {
        let mut pids = Vec::new();
        for c in self.sessions.values_mut() {
            pids.push(c.query_one("SELECT pg_backend_pid()", &[])?.get(0));
        }
        Ok(pids)
    }

    /// Open every session again (after the server restarted, say): the control session now,
    /// the others when next used.
    pub fn reconnect(&mut self) -> anyhow::Result<()> {
        let c = self
            .info
            .connect()
            .with_context(|| format!("connecting to the {} again", self.name()))?;
        self.sessions.clear();
        self.sessions.insert(self.info.dbname().to_owned(), c);
        Ok(())
    }

    /// Close pgshift's session in `db`, before the database is dropped. When it is the
    /// control session (the DSN names `db`, as an application's DSN does), the control moves
    /// to the maintenance database `postgres` first: PostgreSQL refuses to drop the database
    /// a session is in, and `WITH (FORCE)` would end the control session with it.
    pub fn forget(&mut self, db: &str) -> anyhow::Result<()> {
        if db == self.info.dbname() && db != "postgres" {
            let info = self.info.with_dbname("postgres");
            let c = info.connect().with_context(|| {
                format!(
                    "connecting to the {}'s database postgres",
                    self.which.as_str()
                )
            })?;
            self.info = info;
            self.sessions.insert("postgres".to_owned(), c);
        }
        if db != self.info.dbname() {
            self.sessions.remove(db);
        }
        Ok(())
    }

    /// A setting's value.
    pub fn setting(&mut self, name: &str) -> anyhow::Result<Option<String>> {
        let row = self
            .control()
            .query_one("SELECT current_setting($1, true)", &[&name])?;
        Ok(row.get(0))
    }

    /// Databases of this server that accept connections (templates aside), by name.
    pub fn databases(&mut self) -> anyhow::Result<Vec<String>> {
        let rows = self.control().query(
            "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
