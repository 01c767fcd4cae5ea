//! What a cluster's own host says of it: `pg_controldata` and the signal files, parsed from the
//! output of the remote scripts (`remote/status.sh`, `remote/stop.sh`).
//!
//! `pg_controldata` is the one witness that survives everything: it answers when the server
//! is down, crashed or unreachable over the network, and its "Database cluster state" says
//! whether the cluster last ran as a primary ("in production", "shut down") or as a standby
//! ("in archive recovery", "shut down in recovery"). A promoted standby writes "in production"
//! into its control file when recovery ends, so a running target whose control file says so
//! has been promoted, whatever its network says.

use std::fmt;

use serde::Serialize;
use tokio_postgres::types::PgLsn;

/// `Database cluster state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// "shut down": a primary stopped cleanly (smart or fast).
    ShutDown,
    /// "shut down in recovery": a standby stopped cleanly.
    ShutDownInRecovery,
    /// "in production": a primary running, or one that crashed.
    InProduction,
    /// "in archive recovery": a standby running, or one that crashed.
    InArchiveRecovery,
    /// Anything else ("starting up", "shutting down", "in crash recovery", ...): a moment of
    /// transition.
    Other(String),
}

impl ClusterState {
    fn parse(s: &str) -> ClusterState {
        match s {
            "shut down" => ClusterState::ShutDown,
            "shut down in recovery" => ClusterState::ShutDownInRecovery,
            "in production" => ClusterState::InProduction,
            "in archive recovery" => ClusterState::InArchiveRecovery,
            other => ClusterState::Other(other.to_owned()),
        }
    }

    /// The cluster last ran as a primary.
    pub fn was_primary(&self) -> bool {
        matches!(self, ClusterState::ShutDown | ClusterState::InProduction)
    }

    /// The cluster last ran as a standby.
    pub fn was_standby(&self) -> bool {
        matches!(
            self,
            ClusterState::ShutDownInRecovery | ClusterState::InArchiveRecovery
        )
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterState::ShutDown => "shut down",
            ClusterState::ShutDownInRecovery => "shut down in recovery",
            ClusterState::InProduction => "in production",
            ClusterState::InArchiveRecovery => "in archive recovery",
            ClusterState::Other(s) => s,
        })
    }
}

/// The fields of `pg_controldata` a switchover needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Database cluster state.
    pub state: ClusterState,
    /// Database system identifier.
    pub system_identifier: String,
    /// Latest checkpoint location.
    pub checkpoint_lsn: PgLsn,
    /// Latest checkpoint's TimeLineID.
    pub checkpoint_timeline: u32,
    /// Bytes per WAL segment.
    pub segment_size: u64,
}

impl Control {
    /// Parse `pg_controldata` output (C locale labels, which PostgreSQL prints whatever the
    /// server's lc_messages, since pg_controldata is run with the host's default locale: the
    /// remote scripts run it under LC_ALL=C).
    pub fn parse(text: &str) -> Result<Control, String> {
        let field = |label: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(label))
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
                .ok_or_else(|| format!("pg_controldata printed no '{label}'"))
        };
        let lsn = field("Latest checkpoint location")?;
        let tli = field("Latest checkpoint's TimeLineID")?;
        let seg = field("Bytes per WAL segment")?;
        Ok(Control {
            state: ClusterState::parse(field("Database cluster state")?),
            system_identifier: field("Database system identifier")?.to_owned(),
            checkpoint_lsn: lsn.parse().map_err(|_| {
                format!("pg_controldata's checkpoint location '{lsn}' is not an LSN")
            })?,
            checkpoint_timeline: tli
                .parse()
                .map_err(|_| format!("pg_controldata's timeline '{tli}' is not a number"))?,
            segment_size: seg
                .parse()
                .map_err(|_| format!("pg_controldata's segment size '{seg}' is not a number"))?,
        })
    }

    /// The name of the WAL segment that holds the latest checkpoint record.
    pub fn checkpoint_segment(&self) -> String {
        let lsn = u64::from(self.checkpoint_lsn);
        let segno = lsn / self.segment_size.max(1);
        let per_id = 0x1_0000_0000 / self.segment_size.max(1);
        format!(
            "{:08X}{:08X}{:08X}",
            self.checkpoint_timeline,
            segno / per_id,
            segno % per_id
        )
    }
}

/// Whether a postmaster runs, by its pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Running {
    /// The pid file names a live process.
    Yes,
    /// No pid file.
    No,
    /// A pid file whose process is gone (a crash, or `kill -9`).
    Stale,
}

/// What `remote/status.sh` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSeen {
    /// The postmaster.
    pub running: Running,
    /// `standby.signal` is there (the cluster starts as a standby).
    pub standby_signal: bool,
    /// A `promote` signal file is there (a promotion was asked for and not yet taken).
    pub promote_signal: bool,
    /// The control file.
    pub control: Control,
}

impl HostSeen {
    /// Parse the status script's output.
    pub fn parse(text: &str) -> Result<HostSeen, String> {
        let (head, control) = text
            .split_once("---\n")
            .ok_or_else(|| format!("unexpected status output: {}", one_line(text)))?;
        let value = |key: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("status output has no {key}: {}", one_line(head)))
        };
        Ok(HostSeen {
            running: match value("running")? {
                "yes" => Running::Yes,
                "stale" => Running::Stale,
                _ => Running::No,
            },
            standby_signal: value("standby_signal")? == "yes",
            promote_signal: value("promote_signal")? == "yes",
            control: Control::parse(control)?,
        })
    }

    /// The postmaster runs.
    pub fn is_running(&self) -> bool {
        self.running == Running::Yes
    }
}

/// Text on one line, for messages.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROLDATA: &str = "pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7441130658574291245
Database cluster state:               shut down
pg_control last modified:             Wed 02 Dec 2026 08:00:00 AM UTC
Latest checkpoint location:           0/3000028
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's REDO WAL file:    000000010000000000000003
Latest checkpoint's TimeLineID:       1
Bytes per WAL segment:                16777216
";

    #[test]
    fn parses_pg_controldata() {
        let c = Control::parse(CONTROLDATA).unwrap();
        assert_eq!(c.state, ClusterState::ShutDown);
        assert_eq!(c.system_identifier, "7441130658574291245");
        assert_eq!(c.checkpoint_lsn, "0/3000028".parse::<PgLsn>().unwrap());
        assert_eq!(c.checkpoint_timeline, 1);
        assert_eq!(c.checkpoint_segment(), "000000010000000000000003");
        let recovering = CONTROLDATA.replace("shut down", "shut down in recovery");
        let c = Control::parse(&recovering).unwrap();
        assert!(c.state.was_standby() && !c.state.was_primary());
        assert!(Control::parse("garbage").is_err());
    }

    #[test]
    fn segment_names_cross_the_4gb_boundary() {
        let mut c = Control::parse(CONTROLDATA).unwrap();
        c.checkpoint_lsn = "1/FF000028".parse().unwrap();
        c.checkpoint_timeline = 0x1A;
        assert_eq!(c.checkpoint_segment(), "0000001A00000001000000FF");
    }

    #[test]
    fn parses_the_status_script() {
        let text =
            format!("running=stale\nstandby_signal=yes\npromote_signal=no\n---\n{CONTROLDATA}");
        let s = HostSeen::parse(&text).unwrap();
        assert_eq!(s.running, Running::Stale);
        assert!(s.standby_signal && !s.promote_signal && !s.is_running());
        assert!(HostSeen::parse("running=yes\n").is_err());
    }
}
