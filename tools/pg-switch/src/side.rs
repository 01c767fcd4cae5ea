//! One side of the switchover: a cluster, reached over SQL from here and on its own host
//! through its host spec, with the remote scripts that act on it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use shared::host::Host;
use shared::pg::ConnInfo;
use shared::{ErrorKind, ResultExt};
use tokio::io::AsyncWriteExt;

use crate::control::{one_line, HostSeen};
use crate::plan::{Sql, View};

/// The remote scripts (POSIX sh, checked by shellcheck in `make lint`).
pub mod script {
    /// Fence, stop, pg_controldata.
    pub const STOP: &str = include_str!("remote/stop.sh");
    /// Running? signal files, pg_controldata.
    pub const STATUS: &str = include_str!("remote/status.sh");
    /// Remove standby.signal and any promote signal.
    pub const UNFENCE: &str = include_str!("remote/unfence.sh");
    /// pg_ctl start unless running.
    pub const START: &str = include_str!("remote/start.sh");
    /// Remove any promote signal, pg_ctl stop -m fast.
    pub const STOP_STANDBY: &str = include_str!("remote/stop-standby.sh");
}

pub use shared::Which;

/// One cluster.
#[derive(Debug, Clone)]
pub struct Side {
    /// Which one.
    pub which: Which,
    /// Control connection (a superuser).
    pub conninfo: ConnInfo,
    /// Where its commands run.
    pub host: Host,
    /// Its data directory on that host.
    pub pgdata: String,
    /// Its server log, for starts (on that host).
    pub log: String,
    /// PostgreSQL's binaries on that host.
    pub pg_bin: String,
}

/// What a remote script did.
#[derive(Debug)]
pub struct ScriptOut {
    /// Exit status (None: killed by a signal or the time limit).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ScriptOut {
    /// Succeeded.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// For messages: the exit status and what it said.
    pub fn describe(&self) -> String {
        let status = match self.code {
            Some(c) => format!("exit {c}"),
            None => "no exit status (killed or timed out)".to_owned(),
        };
        let said = one_line(&format!("{} {}", self.stdout, self.stderr));
        if said.is_empty() {
            status
        } else {
            format!("{status}: {said}")
        }
    }

    /// ssh itself failed (exit 255): the host is not reachable.
    pub fn unreachable(&self) -> bool {
        matches!(self.code, None | Some(255))
    }
}

impl Side {
    /// "source 127.0.0.1:5432" for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.which.as_str(), self.conninfo.describe())
    }

    /// A control connection, within `limit`.
    pub async fn connect(&self, limit: Duration) -> anyhow::Result<tokio_postgres::Client> {
        match tokio::time::timeout(limit, self.conninfo.connect_async()).await {
            Ok(r) => r.with_context(|| format!("connecting to the {}", self.label())),
            Err(_) => Err(shared::err(
                ErrorKind::Unavailable,
                format!(
                    "connecting to the {} did not finish within {} ms",
                    self.label(),
                    limit.as_millis()
                ),
            )),
        }
    }

    /// Over SQL, from here: primary, standby, or why not.
    pub async fn sql_state(&self, limit: Duration) -> Sql {
        let probe = async {
            let c = self.connect(limit).await?;
            let row = c
                .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
                .await?;
            anyhow::Ok(row.get::<_, bool>(0))
        };
        match tokio::time::timeout(limit, probe).await {
            Ok(Ok(false)) => Sql::Primary,
            Ok(Ok(true)) => Sql::Standby,
            Ok(Err(e)) => {
                let transient = shared::exit::find::<tokio_postgres::Error>(&e)
                    .and_then(|pg| pg.code())
                    .is_some_and(|c| *c == tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW);
                if transient {
                    Sql::Transition(format!("{e:#}"))
                } else {
                    Sql::Down(format!("{e:#}"))
                }
            }
            Err(_) => Sql::Down(format!("no answer within {} ms", limit.as_millis())),
        }
    }

    /// On its own host: the status script.
    pub async fn host_status(&self, limit: Duration) -> Result<HostSeen, String> {
        let out = self
            .run(
                script::STATUS,
                "pgshift-status",
                &[&self.pgdata, &self.pg_bin],
                None,
                limit,
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        if !out.ok() {
            return Err(format!(
                "cannot read its state on {} ({})",
                self.host.spec(),
                out.describe()
            ));
        }
        HostSeen::parse(&out.stdout)
    }

    /// Both looks, at the same time.
    pub async fn view(&self, limit: Duration) -> View {
        let (sql, host) = tokio::join!(self.sql_state(limit), self.host_status(limit));
        View { sql, host }
    }

    /// Run a remote script with `args` (and `stdin`) on the host, within `limit`.
    pub async fn run(
        &self,
        script: &str,
        name: &str,
        args: &[&str],
        stdin: Option<&str>,
        limit: Duration,
    ) -> anyhow::Result<ScriptOut> {
        let mut cmd = tokio::process::Command::from(self.host.script(name, script, args));
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().kind_context(
            ErrorKind::Unavailable,
            format!("running {name} on {}", self.host.spec()),
        )?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A host that died may not read it; the exit status tells.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(out) => {
                let out = out.with_context(|| format!("waiting for {name}"))?;
                Ok(ScriptOut {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
            // Dropping the child kills it (kill_on_drop).
            Err(_) => Ok(ScriptOut {
                code: None,
                stdout: String::new(),
                stderr: format!("{name} did not finish within {} ms", limit.as_millis()),
            }),
        }
    }

    /// Start the cluster (its signal files decide its role) and wait for it to accept
    /// connections.
    pub async fn start(&self, limit: Duration) -> anyhow::Result<()> {
        let out = self
            .run(
                script::START,
                "pgshift-start",
                &[&self.pgdata, &self.pg_bin, &self.log],
                None,
                limit + Duration::from_secs(310),
            )
            .await?;
        if !out.ok() {
            return Err(shared::err(
                ErrorKind::Unavailable,
                format!(
                    "starting the {} failed ({}); see its log {}",
                    self.label(),
                    out.describe(),
                    self.log
                ),
            ));
        }
        Ok(())
    }

    /// A JSON summary of a view, for the `observed` record.
    pub fn describe_view(view: &View) -> Value {
        let sql = match &view.sql {
            Sql::Primary => json!("primary"),
            Sql::Standby => json!("standby"),
            Sql::Down(e) => json!({ "error": e }),
            Sql::Transition(e) => json!({ "transition": e }),
        };
        let host = match &view.host {
            Ok(h) => json!({
                "running": h.running,
                "cluster_state": h.control.state.to_string(),
                "checkpoint_lsn": h.control.checkpoint_lsn.to_string(),
                "timeline": h.control.checkpoint_timeline,
                "standby_signal": h.standby_signal,
                "promote_signal": h.promote_signal,
            }),
            Err(e) => json!({ "error": e }),
        };
        json!({ "sql": sql, "host": host })
    }
}
