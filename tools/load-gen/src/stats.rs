//! What clients saw: counts, latency histograms, write gaps, outages, servers, split brain.
//!
//! All clients report into one [`Stats`] behind a mutex, held for a few hundred nanoseconds
//! per transaction (a round trip to the server takes a hundred times longer). Taking the
//! timestamp *inside* the lock makes commit times a single ordered sequence, which is what
//! the write-gap and split-brain rules are defined on.
//!
//! Definitions (also in `shared/PROTOCOL.md`):
//! - **write gap**: an interval between two consecutive commit acknowledgements, taken over
//!   all clients. The first gap starts when the first client is connected and ready (not at
//!   process start, so connecting is not counted as downtime), the last one ends when the load
//!   is told to stop (duration elapsed or signal). `max_write_gap_ms` is the longest; if no
//!   client ever committed, it is the whole run.
//! - **unavailable**: a client is unavailable from its first failure (failed or unknown
//!   transaction, lost connection, refused connection attempt) until its next commit;
//!   `unavailable_ms` is the time during which at least one client was unavailable (the union
//!   over clients), and `outages` counts those periods.
//! - **stall**: the time one client waited from sending a request to its answer. A request
//!   is one statement, or one attempt to open a session (connect, identify, prepare); one that
//!   never got an answer (a timeout, a broken connection, the stop) counts until the client
//!   gave up on it, and no wait counts past the stop. `max_stall_ms` is the longest. Unlike a
//!   write gap it is per client: one client stuck behind a lock shows here even while the
//!   others commit. A pooler holding every client (PgBouncer's PAUSE) is a stall and no error.
//! - **client errors** (`errors_by_kind`, `errors_total`): what clients were told, by kind:
//!   `statement` (a transaction failed: a statement got an error, timed out or lost its
//!   connection before COMMIT was sent; the `failed` count), `unknown` (COMMIT was sent and no
//!   answer came: the `unknown` count) and `connect` (an attempt to open a session failed).
//!   Not `errors`: in every summary that is the number of `error` records.
//! - **split brain**: see [`crate::verify::superseded_by`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::acklog::ServerRecord;
use crate::conn::Identity;
use crate::verify::{superseded_by, Seen};

/// Latencies are recorded in microseconds, up to an hour, with 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[derive(Default)]
struct Counts {
    committed: u64,
    failed: u64,
    unknown: u64,
    connect_failed: u64,
    /// The longest wait for an answer that ended in this period (µs).
    max_stall_us: u64,
    hosts: BTreeMap<String, u64>,
}

impl Counts {
    fn errors(&self) -> ClientErrors {
        ClientErrors {
            statement: self.failed,
            unknown: self.unknown,
            connect: self.connect_failed,
        }
    }
}

/// What clients were told, by kind (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ClientErrors {
    /// Failed transactions (rolled back, or never committed): the same count as `failed`.
    pub statement: u64,
    /// Commits whose outcome is unknown: the same count as `unknown`.
    pub unknown: u64,
    /// Failed attempts to open a session.
    pub connect: u64,
}

impl ClientErrors {
    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.statement + self.unknown + self.connect
    }
}

struct ServerState {
    rec: ServerRecord,
    identity: Identity,
    first_ack_us: Option<u64>,
    last_ack_us: Option<u64>,
    commits: u64,
}

struct Inner {
    interval: Counts,
    interval_hist: Histogram<u64>,
    interval_start_us: u64,
    total: Counts,
    hist: Histogram<u64>,
    // Write gaps.
    origin_us: Option<u64>,
    last_commit_us: Option<u64>,
    max_gap_us: u64,
    max_gap_from_us: u64,
    // The longest stall: when its request was sent.
    max_stall_from_us: u64,
    // Outages (union over clients).
    down: u32,
    down_since_us: u64,
    unavailable_us: u64,
    outages: u64,
    // Sessions.
    connected: u32,
    reconnects: u64,
    servers: Vec<ServerState>,
    split_brain: u64,
    split_pairs: BTreeSet<(u32, u32)>,
    stop_us: Option<u64>,
    last_error: Option<String>,
}

/// A split-brain write seen during the run.
#[derive(Debug, Clone, Serialize)]
pub struct SplitBrain {
    /// When it was acknowledged (ms since the run started).
    pub t_ms: u64,
    /// The server (`server.id`) that acknowledged it.
    pub server: u32,
    /// Its host.
    pub host: String,
    /// The newer server that had already acknowledged a write before this one was sent.
    pub superseded_by: u32,
    /// That server's host.
    pub superseded_by_host: String,
}

/// The result of recording a commit.
#[derive(Debug)]
pub struct Commit {
    /// When the acknowledgement was recorded (µs since the run started).
    pub ack_us: u64,
    /// Set when this write is split brain: the newer server's id.
    pub superseded_by: Option<u32>,
    /// Set the first time a given pair of servers is seen in split brain (for one record).
    pub new_split: Option<SplitBrain>,
}

/// One `tick` record: the interval since the previous tick.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// End of the interval (ms since the run started).
    pub t_ms: u64,
    /// Length of the interval.
    pub interval_ms: u64,
    /// Transactions committed in the interval.
    pub committed: u64,
    /// Transactions that failed in the interval.
    pub failed: u64,
    /// Transactions whose commit outcome is unknown.
    pub unknown: u64,
    /// Committed transactions per second over the interval.
    pub tps: f64,
    /// Latency of the interval's committed transactions (null if none).
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile.
    pub latency_p99_ms: Option<f64>,
    /// Maximum.
    pub latency_max_ms: Option<f64>,
    /// The host that committed most of the interval's transactions (null if none).
    pub host: Option<String>,
    /// Commits per host in the interval.
    pub hosts: BTreeMap<String, u64>,
    /// Clients with an open session at the end of the interval.
    pub connected: u32,
    /// Transactions committed since the start.
    pub committed_total: u64,
    /// What clients were told in the interval, by kind.
    pub errors_by_kind: ClientErrors,
    /// The longest wait for an answer that ended in the interval (0 if none ended).
    pub max_stall_ms: u64,
}

/// A server in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    /// As in the `server` record.
    #[serde(flatten)]
    pub rec: ServerRecord,
    /// Commits it acknowledged.
    pub commits: u64,
    /// Its first acknowledgement (ms since the run started).
    pub first_ack_ms: Option<u64>,
    /// Its last one.
    pub last_ack_ms: Option<u64>,
}

/// The load's part of the `summary` record.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// From the start of the load to the stop (duration or signal).
    pub duration_ms: u64,
    /// Committed transactions.
    pub committed: u64,
    /// Failed (rolled back or never committed) transactions.
    pub failed: u64,
    /// Transactions whose commit outcome is unknown.
    pub unknown: u64,
    /// Committed per second over `duration_ms`.
    pub tps: f64,
    /// Latency of committed transactions: mean.
    pub latency_mean_ms: Option<f64>,
    /// Median.
    pub latency_p50_ms: Option<f64>,
    /// 90th percentile.
    pub latency_p90_ms: Option<f64>,
    /// 99th percentile.
    pub latency_p99_ms: Option<f64>,
    /// 99.9th percentile.
    pub latency_p999_ms: Option<f64>,
    /// Maximum.
    pub latency_max_ms: Option<f64>,
    /// The longest time no client committed a write.
    pub max_write_gap_ms: u64,
    /// When that gap began (ms since the run started).
    pub max_write_gap_from_ms: u64,
    /// The longest time one client waited for the answer to one request.
    pub max_stall_ms: u64,
    /// When that request was sent (ms since the run started).
    pub max_stall_from_ms: u64,
    /// What clients were told, by kind.
    pub errors_by_kind: ClientErrors,
    /// The sum of `errors_by_kind`.
    pub errors_total: u64,
    /// Time during which at least one client was failing.
    pub unavailable_ms: u64,
    /// Number of such periods.
    pub outages: u64,
    /// Sessions opened after the first one of each client.
    pub reconnects: u64,
    /// Commits per host.
    pub hosts: BTreeMap<String, u64>,
    /// Every server instance that served a session.
    pub servers: Vec<ServerSummary>,
    /// Committed writes acknowledged by a server after a newer primary had acknowledged one.
    pub split_brain: u64,
    /// The last error a client saw (null if none).
    pub last_error: Option<String>,
}

/// The shared statistics of a run.
pub struct Stats {
    start: Instant,
    inner: Mutex<Inner>,
}

impl Stats {
    /// Start the clock.
    pub fn new() -> Stats {
        Stats {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                interval: Counts::default(),
                interval_hist: histogram(),
                interval_start_us: 0,
                total: Counts::default(),
                hist: histogram(),
                origin_us: None,
                last_commit_us: None,
                max_gap_us: 0,
                max_gap_from_us: 0,
                max_stall_from_us: 0,
                down: 0,
                down_since_us: 0,
                unavailable_us: 0,
                outages: 0,
                connected: 0,
                reconnects: 0,
                servers: Vec::new(),
                split_brain: 0,
                split_pairs: BTreeSet::new(),
                stop_us: None,
                last_error: None,
            }),
        }
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stats lock")
    }

    /// The server instance behind a new session: its id, and its record if it is new.
    pub fn server(&self, host: &str, identity: &Identity) -> (u32, Option<ServerRecord>) {
        let now = self.now_us();
        let mut g = self.lock();
        // A complete identity names the instance whatever host name reached it; otherwise
        // the host name has to tell instances apart too.
        let same = |s: &ServerState| {
            s.identity == *identity && (identity.complete() || s.rec.host == host)
        };
        if let Some(s) = g.servers.iter().find(|s| same(s)) {
            return (s.rec.id, None);
        }
        let rec = ServerRecord {
            id: g.servers.len() as u32,
            host: host.to_owned(),
            system_identifier: identity.system_identifier.clone(),
            timeline: identity.timeline,
            postmaster_start: identity.postmaster_start.clone(),
            t_ms: now / 1000,
        };
        g.servers.push(ServerState {
            rec: rec.clone(),
            identity: identity.clone(),
            first_ack_us: None,
            last_ack_us: None,
            commits: 0,
        });
        (rec.id, Some(rec))
    }

    /// A client opened a session and is ready to run transactions; `again` if it is not the
    /// client's first.
    pub fn connected(&self, again: bool) {
        let now = self.now_us();
        let mut g = self.lock();
        g.origin_us.get_or_insert(now);
        g.connected += 1;
        if again {
            g.reconnects += 1;
        }
    }

    /// A client lost (or dropped) its session.
    pub fn disconnected(&self) {
        let mut g = self.lock();
        g.connected = g.connected.saturating_sub(1);
    }

    /// Record a committed transaction that started at `sent_us` on `server`, via `host`.
    pub fn commit(&self, server: u32, host: &str, sent_us: u64) -> Commit {
        let mut guard = self.lock();
        let g = &mut *guard;
        let ack_us = self.now_us();
        let latency = ack_us.saturating_sub(sent_us).max(1);
        g.interval_hist.saturating_record(latency);
        g.hist.saturating_record(latency);
        g.interval.committed += 1;
        g.total.committed += 1;
        for counts in [&mut g.interval, &mut g.total] {
            match counts.hosts.get_mut(host) {
                Some(n) => *n += 1,
                None => {
                    counts.hosts.insert(host.to_owned(), 1);
                }
            }
        }
        // The write gap that this commit closes (clamped to the stop: commits while draining
        // do not shorten the last gap).
        let t = g.stop_us.map_or(ack_us, |s| ack_us.min(s));
        if let Some(prev) = g.last_commit_us.or(g.origin_us) {
            let gap = t.saturating_sub(prev);
            if gap > g.max_gap_us {
                g.max_gap_us = gap;
                g.max_gap_from_us = prev;
            }
        }
        g.last_commit_us = Some(g.last_commit_us.map_or(t, |p| p.max(t)));

        let s = &mut g.servers[server as usize];
        s.first_ack_us.get_or_insert(ack_us);
        s.last_ack_us = Some(ack_us);
        s.commits += 1;

        // No allocation here: this runs for every commit.
        let x = g.servers[server as usize].seen();
        let by = superseded_by(g.servers.iter().map(ServerState::seen), &x, sent_us);
        let mut new_split = None;
        if let Some(y) = by {
            g.split_brain += 1;
            if g.split_pairs.insert((server, y)) {
                new_split = Some(SplitBrain {
                    t_ms: ack_us / 1000,
                    server,
                    host: g.servers[server as usize].rec.host.clone(),
                    superseded_by: y,
                    superseded_by_host: g.servers[y as usize].rec.host.clone(),
                });
            }
        }
        Commit {
            ack_us,
            superseded_by: by,
            new_split,
        }
    }

    /// Record a failed transaction.
    pub fn failed(&self, error: String) {
        let mut g = self.lock();
        g.interval.failed += 1;
        g.total.failed += 1;
        g.last_error = Some(error);
    }

    /// Record a transaction whose commit outcome is unknown.
    pub fn unknown(&self, error: String) {
        let mut g = self.lock();
        g.interval.unknown += 1;
        g.total.unknown += 1;
        g.last_error = Some(error);
    }

    /// Record a failed attempt to open a session.
    pub fn connect_failed(&self, error: String) {
        let mut g = self.lock();
        g.interval.connect_failed += 1;
        g.total.connect_failed += 1;
        g.last_error = Some(error);
    }

    /// A client sends a request (a statement, or an attempt to open a session): the wait
    /// for its answer is recorded when the returned guard drops, whether the answer came or
    /// the client gave up (the future was dropped on a timeout or at the stop).
    pub fn request(&self) -> Request<'_> {
        Request {
            stats: self,
            sent_us: self.now_us(),
        }
    }

    /// The end of a request's wait (see [`Stats::request`]).
    fn answered(&self, sent_us: u64) {
        let mut g = self.lock();
        let now = self.now_us();
        let end = g.stop_us.map_or(now, |s| now.min(s));
        let wait = end.saturating_sub(sent_us);
        g.interval.max_stall_us = g.interval.max_stall_us.max(wait);
        if wait > g.total.max_stall_us {
            g.total.max_stall_us = wait;
            g.max_stall_from_us = sent_us;
        }
    }

    /// A client became unavailable; true if that started an outage (no client was before).
    pub fn client_down(&self) -> bool {
        let now = self.now_us();
        let mut g = self.lock();
        if g.stop_us.is_some() {
            return false;
        }
        g.down += 1;
        if g.down == 1 {
            g.down_since_us = now;
            g.outages += 1;
            return true;
        }
        false
    }

    /// A client committed again after being unavailable; the outage's length in µs if it
    /// was the last unavailable client.
    pub fn client_up(&self) -> Option<u64> {
        let now = self.now_us();
        let mut g = self.lock();
        if g.down == 0 {
            return None;
        }
        g.down -= 1;
        if g.down > 0 {
            return None;
        }
        let end = g.stop_us.map_or(now, |s| now.min(s));
        let len = end.saturating_sub(g.down_since_us);
        g.unavailable_us += len;
        Some(len)
    }

    /// Close the current interval and describe it.
    pub fn tick(&self) -> Tick {
        let now = self.now_us();
        let mut g = self.lock();
        let interval_us = now.saturating_sub(g.interval_start_us).max(1);
        g.interval_start_us = now;
        let c = std::mem::take(&mut g.interval);
        let (p50, p99, max) = if g.interval_hist.is_empty() {
            (None, None, None)
        } else {
            let h = &g.interval_hist;
            (
                Some(ms(h.value_at_quantile(0.5))),
                Some(ms(h.value_at_quantile(0.99))),
                Some(ms(h.max())),
            )
        };
        g.interval_hist.reset();
        let host = c
            .hosts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(h, _)| h.clone());
        Tick {
            t_ms: now / 1000,
            interval_ms: interval_us / 1000,
            committed: c.committed,
            failed: c.failed,
            unknown: c.unknown,
            tps: round1(c.committed as f64 * 1e6 / interval_us as f64),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            latency_max_ms: max,
            host,
            errors_by_kind: c.errors(),
            max_stall_ms: c.max_stall_us / 1000,
            hosts: c.hosts,
            connected: g.connected,
            committed_total: g.total.committed,
        }
    }

    /// Mark the stop of the load (duration elapsed or signal); returns its time in µs.
    pub fn stop(&self) -> u64 {
        let now = self.now_us();
        let mut g = self.lock();
        *g.stop_us.get_or_insert(now)
    }

    /// The summary's load figures; call after [`Stats::stop`] and after the clients ended.
    pub fn totals(&self) -> Totals {
        let g = self.lock();
        let stop = g.stop_us.unwrap_or_else(|| self.now_us());
        // The trailing gap: from the last commit (or the first connection) to the stop.
        let prev = g.last_commit_us.or(g.origin_us).unwrap_or(0);
        let trailing = stop.saturating_sub(prev);
        let (max_gap, max_gap_from) = if trailing > g.max_gap_us {
            (trailing, prev)
        } else {
            (g.max_gap_us, g.max_gap_from_us)
        };
        let mut unavailable = g.unavailable_us;
        if g.down > 0 {
            unavailable += stop.saturating_sub(g.down_since_us);
        }
        let h = &g.hist;
        let q = |x: f64| (!h.is_empty()).then(|| ms(h.value_at_quantile(x)));
        Totals {
            duration_ms: stop / 1000,
            committed: g.total.committed,
            failed: g.total.failed,
            unknown: g.total.unknown,
            tps: round1(g.total.committed as f64 * 1e6 / stop.max(1) as f64),
            latency_mean_ms: (!h.is_empty()).then(|| h.mean().round() / 1000.0),
            latency_p50_ms: q(0.5),
            latency_p90_ms: q(0.9),
            latency_p99_ms: q(0.99),
            latency_p999_ms: q(0.999),
            latency_max_ms: (!h.is_empty()).then(|| ms(h.max())),
            max_write_gap_ms: max_gap / 1000,
            max_write_gap_from_ms: max_gap_from / 1000,
            max_stall_ms: g.total.max_stall_us / 1000,
            max_stall_from_ms: g.max_stall_from_us / 1000,
            errors_by_kind: g.total.errors(),
            errors_total: g.total.errors().total(),
            unavailable_ms: unavailable / 1000,
            outages: g.outages,
            reconnects: g.reconnects,
            hosts: g.total.hosts.clone(),
            servers: g
                .servers
                .iter()
                .map(|s| ServerSummary {
                    rec: s.rec.clone(),
                    commits: s.commits,
                    first_ack_ms: s.first_ack_us.map(|u| u / 1000),
                    last_ack_ms: s.last_ack_us.map(|u| u / 1000),
                })
                .collect(),
            split_brain: g.split_brain,
            last_error: g.last_error.clone(),
        }
    }

    /// The last error a client saw.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// The server records seen so far (for the in-run verification).
    pub fn server_records(&self) -> Vec<ServerRecord> {
        self.lock().servers.iter().map(|s| s.rec.clone()).collect()
    }
}

/// A request in flight (see [`Stats::request`]).
#[must_use = "the wait is measured until the guard drops"]
pub struct Request<'a> {
    stats: &'a Stats,
    sent_us: u64,
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        self.stats.answered(self.sent_us);
    }
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl ServerState {
    fn seen(&self) -> Seen<'_> {
        Seen {
            id: self.rec.id,
            system_identifier: self.identity.system_identifier.as_deref(),
            timeline: self.identity.timeline,
            first_ack_us: self.first_ack_us,
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(tli: u32, start: &str) -> Identity {
        Identity {
            system_identifier: Some("42".into()),
            timeline: Some(tli),
            postmaster_start: Some(start.into()),
        }
    }

    #[test]
    fn the_same_instance_under_two_host_names_is_one_server() {
        let s = Stats::new();
        let (a, new_a) = s.server("127.0.0.1:5432", &ident(1, "t0"));
        let (b, new_b) = s.server("localhost:5432", &ident(1, "t0"));
        assert_eq!(a, b);
        assert!(new_a.is_some() && new_b.is_none());
        let (c, _) = s.server("127.0.0.1:5433", &ident(2, "t1"));
        assert_ne!(a, c);
    }

    #[test]
    fn gaps_and_outages_are_measured_between_commits() {
        let s = Stats::new();
        let (srv, _) = s.server("h:1", &ident(1, "t0"));
        s.connected(false);
        s.commit(srv, "h:1", s.now_us());
        assert!(s.client_down());
        assert!(!s.client_down());
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(s.client_up(), None);
        let len = s.client_up().expect("last client up ends the outage");
        assert!(len >= 30_000, "{len}");
        s.commit(srv, "h:1", s.now_us());
        s.stop();
        let t = s.totals();
        assert_eq!(t.committed, 2);
        assert!(t.max_write_gap_ms >= 30, "{t:?}");
        assert_eq!(t.outages, 1);
        assert!(t.unavailable_ms >= 30);
        assert_eq!(t.hosts["h:1"], 2);
        assert_eq!(t.split_brain, 0);
    }

    #[test]
    fn a_stall_is_the_wait_of_one_request_and_errors_are_counted_by_kind() {
        let ms = std::time::Duration::from_millis;
        let s = Stats::new();
        s.connected(false);
        let slow = s.request();
        let slow_sent_ms = s.now_us() / 1000;
        // Short requests in between do not shorten the slow one's wait.
        for _ in 0..3 {
            drop(s.request());
        }
        std::thread::sleep(ms(40));
        drop(slow);
        s.failed("ERROR: prepared statement \"s3\" does not exist".into());
        s.unknown("connection closed".into());
        s.connect_failed("Connection refused".into());
        s.connect_failed("Connection refused".into());
        let t = s.tick();
        assert!(t.max_stall_ms >= 40, "{t:?}");
        let kinds = ClientErrors {
            statement: 1,
            unknown: 1,
            connect: 2,
        };
        assert_eq!(t.errors_by_kind, kinds);
        assert_eq!((t.failed, t.unknown), (1, 1));

        // Nothing in the next interval; a request cut off by the stop counts until the stop.
        let t = s.tick();
        assert_eq!((t.max_stall_ms, t.errors_by_kind.total()), (0, 0), "{t:?}");
        let hanging = s.request();
        s.stop();
        std::thread::sleep(ms(300));
        drop(hanging);
        let totals = s.totals();
        assert!(
            (40..300).contains(&totals.max_stall_ms),
            "the slow request, not the one after the stop: {totals:?}"
        );
        assert!(totals.max_stall_from_ms <= slow_sent_ms, "{totals:?}");
        assert_eq!(totals.errors_by_kind, kinds);
        assert_eq!(totals.errors_total, 4);
        assert_eq!((totals.failed, totals.unknown), (1, 1));
        assert_eq!(totals.last_error.as_deref(), Some("Connection refused"));
        assert_eq!(s.tick().max_stall_ms, 0, "{totals:?}");
    }

    #[test]
    fn an_old_primary_acking_after_the_promoted_one_is_split_brain() {
        let s = Stats::new();
        let (old, _) = s.server("a:1", &ident(1, "t0"));
        let (new, _) = s.server("b:1", &ident(2, "t1"));
        s.connected(false);
        let before = s.now_us();
        assert!(s.commit(old, "a:1", before).superseded_by.is_none());
        assert!(s.commit(new, "b:1", s.now_us()).superseded_by.is_none());
        // Sent before the new primary's first ack: not provably split brain.
        assert!(s.commit(old, "a:1", before).superseded_by.is_none());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let c = s.commit(old, "a:1", s.now_us());
        assert_eq!(c.superseded_by, Some(new));
        assert!(c.new_split.is_some());
        let c = s.commit(old, "a:1", s.now_us());
        assert!(c.new_split.is_none(), "one record per pair of servers");
        assert_eq!(s.totals().split_brain, 2);
    }
}
