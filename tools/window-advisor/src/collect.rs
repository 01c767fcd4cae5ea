//! `collect`: sample the host and the server, or convert an export, into `sample` records.
//!
//! Live sampling reads counters twice and divides the difference by the elapsed time (a
//! monotonic clock, so that a wall-clock step does not produce a spike): CPU and memory from
//! `/proc/stat` and `/proc/meminfo`, disk bytes from `/proc/diskstats` (whole disks only, so
//! that partitions and device-mapper volumes are not counted twice), network bytes from
//! `/proc/net/dev` (without `lo`), and from PostgreSQL the committed plus rolled-back
//! transactions of `pg_stat_database` (tps), the WAL position (WAL bytes/s; the replay
//! position on a standby), the backends and the cluster's size (what a base copy moves).
//!
//! A server that goes away during a long collection is reported (an `error` record) and
//! reconnected at the next sample; host metrics keep coming meanwhile.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Map, Value};
use shared::{ErrorKind, Output, Status};

use crate::input::{self, Anchor, Cell, Format, JsonlDecoder, ReadOptions};
use crate::time::utc_string_ms;

/// Metric names `collect` writes (documented in PROTOCOL.md); a non-numeric value for one of
/// these in an input is an error, other fields are passed through when numeric.
pub const KNOWN_METRICS: &[&str] = &[
    "cpu_pct",
    "cpus",
    "mem_pct",
    "mem_total_bytes",
    "disk_read_bytes_per_s",
    "disk_write_bytes_per_s",
    "net_rx_bytes_per_s",
    "net_tx_bytes_per_s",
    "tps",
    "wal_bytes_per_s",
    "connections",
    "db_size_bytes",
];

/// Host counters at one instant; each part is optional (a container may hide some).
#[derive(Clone, Debug, Default)]
pub struct HostCounters {
    cpu: Option<(u64, u64)>, // (total, idle) jiffies
    cpus: Option<u32>,
    mem: Option<(u64, u64)>, // (total, available) bytes
    disk: Option<(u64, u64)>,
    net: Option<(u64, u64)>,
}

fn read_proc(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `(total, idle)` jiffies and the CPU count from `/proc/stat`.
pub fn parse_stat(text: &str) -> (Option<(u64, u64)>, Option<u32>) {
    let mut cpu = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() >= 4 {
                // user nice system idle iowait irq softirq steal (guest is inside user).
                let total: u64 = f.iter().take(8).sum();
                let idle = f[3] + f.get(4).copied().unwrap_or(0);
                cpu = Some((total, idle));
            }
        } else if line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
        {
            cpus += 1;
        }
    }
    (cpu, (cpus > 0).then_some(cpus))
}

/// `(total, available)` bytes from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Bytes read and written by whole disks, from `/proc/diskstats`; `is_disk` decides which
/// device names count.
pub fn parse_diskstats(text: &str, is_disk: impl Fn(&str) -> bool) -> Option<(u64, u64)> {
    let mut read = 0u64;
    let mut written = 0u64;
    let mut any = false;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || !is_disk(f[2]) {
            continue;
        }
        // Sectors are 512 bytes in /proc/diskstats whatever the device's sector size.
        let (Ok(r), Ok(w)) = (f[5].parse::<u64>(), f[9].parse::<u64>()) else {
            continue;
        };
        read += r * 512;
        written += w * 512;
        any = true;
    }
    any.then_some((read, written))
}

/// A whole physical disk: listed in /sys/block, and not a loop, RAM, optical or stacked
/// (device-mapper, md) device whose I/O is already counted on the disks below it.
fn is_whole_disk(name: &str) -> bool {
    const SKIP: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];
    !SKIP.iter().any(|p| name.starts_with(p)) && Path::new("/sys/block").join(name).exists()
}

/// Received and sent bytes of all interfaces but `lo`, from `/proc/net/dev`.
pub fn parse_net_dev(text: &str) -> Option<(u64, u64)> {
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut any = false;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
            any = true;
        }
    }
    any.then_some((rx, tx))
}

fn read_host() -> HostCounters {
    let (cpu, cpus) = read_proc("/proc/stat")
        .map(|t| parse_stat(&t))
        .unwrap_or_default();
    HostCounters {
        cpu,
        cpus,
        mem: read_proc("/proc/meminfo").and_then(|t| parse_meminfo(&t)),
        disk: read_proc("/proc/diskstats").and_then(|t| parse_diskstats(&t, is_whole_disk)),
        net: read_proc("/proc/net/dev").and_then(|t| parse_net_dev(&t)),
    }
}

/// Server counters at one instant.
#[derive(Clone, Copy, Debug)]
struct PgCounters {
    xacts: f64,
    backends: f64,
    lsn: Option<f64>,
    size: Option<f64>,
}

const PG_QUERY: &str = "SELECT \
    (SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database)::float8, \
    (SELECT sum(numbackends) FROM pg_stat_database)::float8, \
    ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END) \
      - '0/0'::pg_lsn)::float8, \
    (SELECT sum(pg_database_size(oid)) FROM pg_database \
      WHERE datallowconn AND has_database_privilege(oid, 'CONNECT'))::float8";

fn read_pg(client: &mut postgres::Client) -> anyhow::Result<PgCounters> {
    let row = client
        .query_one(PG_QUERY, &[])
        .context("reading pg_stat_database and the WAL position")?;
    Ok(PgCounters {
        xacts: row.get::<_, Option<f64>>(0).unwrap_or(0.0),
        backends: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
        lsn: row.get(2),
        size: row.get(3),
    })
}

/// The rate of a counter, or `None` if it went backwards (reset, failover).
fn rate(prev: u64, cur: u64, dt: f64) -> Option<f64> {
    (cur >= prev && dt > 0.0).then(|| (cur - prev) as f64 / dt)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The sample between two readings.
fn host_fields(prev: &HostCounters, cur: &HostCounters, dt: f64, m: &mut Map<String, Value>) {
    if let (Some((t0, i0)), Some((t1, i1))) = (prev.cpu, cur.cpu) {
        if t1 > t0 && i1 >= i0 {
            let busy = 1.0 - (i1 - i0) as f64 / (t1 - t0) as f64;
            m.insert(
                "cpu_pct".into(),
                round3((busy * 100.0).clamp(0.0, 100.0)).into(),
            );
        }
    }
    if let Some(n) = cur.cpus {
        m.insert("cpus".into(), n.into());
    }
    if let Some((total, avail)) = cur.mem {
        if total > 0 {
            let used = 1.0 - avail as f64 / total as f64;
            m.insert("mem_pct".into(), round3(used * 100.0).into());
            m.insert("mem_total_bytes".into(), total.into());
        }
    }
    if let (Some((r0, w0)), Some((r1, w1))) = (prev.disk, cur.disk) {
        if let Some(r) = rate(r0, r1, dt) {
            m.insert("disk_read_bytes_per_s".into(), round3(r).into());
        }
        if let Some(w) = rate(w0, w1, dt) {
            m.insert("disk_write_bytes_per_s".into(), round3(w).into());
        }
    }
    if let (Some((r0, t0)), Some((r1, t1))) = (prev.net, cur.net) {
        if let Some(r) = rate(r0, r1, dt) {
            m.insert("net_rx_bytes_per_s".into(), round3(r).into());
        }
        if let Some(t) = rate(t0, t1, dt) {
            m.insert("net_tx_bytes_per_s".into(), round3(t).into());
        }
    }
}

fn pg_fields(prev: &PgCounters, cur: &PgCounters, dt: f64, m: &mut Map<String, Value>) {
    if cur.xacts >= prev.xacts && dt > 0.0 {
        m.insert("tps".into(), round3((cur.xacts - prev.xacts) / dt).into());
    }
    if let (Some(a), Some(b)) = (prev.lsn, cur.lsn) {
        if b >= a && dt > 0.0 {
            m.insert("wal_bytes_per_s".into(), round3((b - a) / dt).into());
        }
    }
    m.insert("connections".into(), (cur.backends as u64).into());
    if let Some(s) = cur.size {
        m.insert("db_size_bytes".into(), (s as u64).into());
    }
}

/// Live sampling options.
pub struct Live<'a> {
    /// The server's connection string.
    pub dsn: &'a str,
    /// Time between samples.
    pub interval: Duration,
    /// Stop after this many samples (`None`: until killed).
    pub count: Option<u64>,
}

/// Sample the host and the server.
pub fn live(opts: &Live) -> anyhow::Result<Status> {
    if opts.interval < Duration::from_millis(100) {
        return Err(shared::err(
            ErrorKind::Usage,
            "--interval must be at least 100ms (counters need time to move)",
        ));
    }
    let conn = shared::pg::ConnInfo::parse(opts.dsn)?;
    let server = conn.describe();
    let mut client = Some(conn.connect()?);
    let mut out = Output::stdout();
    let mut prev_pg = match client.as_mut().map(read_pg) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return Err(e.context(format!("sampling {server}"))),
        None => None,
    };
    let mut prev_host = read_host();
    if prev_host.cpu.is_none() && prev_host.mem.is_none() {
        shared::warn!("/proc is not readable here: host metrics are left out");
    }
    let mut prev_at = Instant::now();
    let start = prev_at;
    let mut samples = 0u64;
    let mut pg_failures = 0u64;
    loop {
        if opts.count.is_some_and(|c| samples >= c) {
            break;
        }
        // Sleep to the next multiple of the interval, so that samples do not drift.
        let next = start + opts.interval * (samples as u32 + 1);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let at = Instant::now();
        let wall = jiff::Timestamp::now();
        let host = read_host();
        let pg = match client.as_mut() {
            Some(c) => read_pg(c),
            None => conn
                .connect()
                .and_then(|mut c| {
                    let r = read_pg(&mut c);
                    client = Some(c);
                    r
                })
                .context("reconnecting"),
        };
        let dt = at.duration_since(prev_at).as_secs_f64();
        let mut m = Map::new();
        m.insert("t".into(), utc_string_ms(wall.as_millisecond()).into());
        m.insert("interval_s".into(), round3(dt).into());
        host_fields(&prev_host, &host, dt, &mut m);
        match pg {
            Ok(cur) => {
                if let Some(p) = &prev_pg {
                    pg_fields(p, &cur, dt, &mut m);
                }
                prev_pg = Some(cur);
            }
            Err(e) => {
                pg_failures += 1;
                client = None;
                prev_pg = None;
                out.error(
                    &e.context(format!("sampling {server}")),
                    json!({"t": utc_string_ms(wall.as_millisecond())}),
                )?;
            }
        }
        out.emit_as("sample", &m)?;
        samples += 1;
        prev_host = host;
        prev_at = at;
    }
    out.finish(&json!({"samples": samples, "server": server, "pg_failures": pg_failures}))
}

/// Convert `tick`/`sample` records or CSV from `path` (`-`: stdin, streamed) into `sample`
/// records.
pub fn convert(path: &Path, opts: &ReadOptions) -> anyhow::Result<Status> {
    let mut out = Output::stdout();
    let name = path.display().to_string();
    let mut samples = 0u64;
    let mut ticks = 0u64;
    let stdin = name == "-";
    let csv = match opts.format {
        Format::Csv => true,
        Format::Jsonl => false,
        Format::Auto => name.to_ascii_lowercase().ends_with(".csv"),
    };
    if csv {
        let text = if stdin {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading CSV from standard input")?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?
        };
        let table = input::read_csv(&text, opts).with_context(|| format!("reading {name}"))?;
        for i in 0..table.len() {
            let cells: Vec<(String, Cell)> = table
                .columns
                .iter()
                .map(|(k, col)| {
                    let c = if col[i].is_finite() {
                        Cell::Num(col[i])
                    } else {
                        Cell::Missing
                    };
                    (k.clone(), c)
                })
                .collect();
            emit_row(&mut out, table.times[i], table.lines[i], &cells)?;
            samples += 1;
        }
        for (k, b) in &table.bad {
            if KNOWN_METRICS.contains(&k.as_str()) {
                let e = shared::err(
                    ErrorKind::DataErr,
                    format!(
                        "line {}: {k} is '{}', not a number ({} such value{}); left out",
                        b.line,
                        b.text,
                        b.count,
                        if b.count == 1 { "" } else { "s" }
                    ),
                );
                out.error(&e, json!({"line": b.line, "field": k}))?;
            }
        }
    } else {
        // JSON lines are streamed: `load-gen ... | window-advisor collect --input -` shows
        // samples as ticks arrive, and elapsed-only ticks are anchored at their arrival.
        let reader: Box<dyn BufRead> = if stdin {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path).with_context(|| format!("reading {name}"))?,
            ))
        };
        let anchor = if stdin {
            Anchor::ArrivalIfMissing
        } else {
            Anchor::Required
        };
        let mut dec = JsonlDecoder::new(opts, anchor);
        for rec in shared::jsonl::records(reader) {
            let row = match rec.and_then(|r| dec.decode(&r)) {
                Ok(Some(row)) => row,
                Ok(None) => continue,
                Err(e) => {
                    // A malformed line is reported and skipped; the stream goes on.
                    out.error(&e.context(format!("reading {name}")), Value::Null)?;
                    continue;
                }
            };
            ticks += u64::from(row.tick);
            for (k, c) in &row.cells {
                if let Cell::Bad(text) = c {
                    if KNOWN_METRICS.contains(&k.as_str()) {
                        let e = shared::err(
                            ErrorKind::DataErr,
                            format!("line {}: {k} is '{text}', not a number; left out", row.line),
                        );
                        out.error(&e, json!({"line": row.line, "field": k}))?;
                    }
                }
            }
            emit_row(&mut out, row.t, row.line, &row.cells)?;
            samples += 1;
        }
    }
    if samples == 0 && out.error_count() == 0 {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "{name}: no samples (expected load-gen `tick` or `sample` records, or CSV rows)"
            ),
        ));
    }
    out.finish(&json!({"samples": samples, "ticks": ticks}))
}

fn emit_row(
    out: &mut Output,
    t: i64,
    _line: usize,
    cells: &[(String, Cell)],
) -> anyhow::Result<()> {
    let mut m = Map::new();
    m.insert("t".into(), utc_string_ms(t).into());
    // Known metrics first, in their documented order, then the rest by name.
    let mut rest: BTreeMap<&str, f64> = BTreeMap::new();
    for (k, c) in cells {
        if let Cell::Num(v) = c {
            rest.insert(k.as_str(), *v);
        }
    }
    for k in KNOWN_METRICS {
        if let Some(v) = rest.remove(k) {
            m.insert((*k).into(), v.into());
        }
    }
    for (k, v) in rest {
        m.insert(k.into(), v.into());
    }
    out.emit_as("sample", &m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_stat(stat), (Some((1000, 850)), Some(2)));
        let mem = "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo(mem), Some((1_024_000, 256_000)));
        let disk = "   8       0 sda 10 0 100 0 20 0 200 0 0 0 0\n   8       1 sda1 10 0 100 0 20 0 200 0 0 0 0\n   7       0 loop0 1 0 9 0 1 0 9 0 0 0 0\n";
        assert_eq!(
            parse_diskstats(disk, |n| n == "sda"),
            Some((100 * 512, 200 * 512))
        );
        let net = "Inter-|   Receive\n face |bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 100 1 0 0 0 0 0 0 40 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(net), Some((100, 40)));
    }

    #[test]
    fn rates_between_readings() {
        let a = HostCounters {
            cpu: Some((1000, 800)),
            cpus: Some(2),
            mem: Some((100, 25)),
            disk: Some((0, 0)),
            net: Some((10, 10)),
        };
        let b = HostCounters {
            cpu: Some((1100, 850)),
            disk: Some((1000, 500)),
            net: Some((5, 30)),
            ..a.clone()
        };
        let mut m = Map::new();
        host_fields(&a, &b, 2.0, &mut m);
        assert_eq!(m["cpu_pct"], json!(50.0));
        assert_eq!(m["mem_pct"], json!(75.0));
        assert_eq!(m["disk_read_bytes_per_s"], json!(500.0));
        // A counter that went backwards (interface reset) gives no rate.
        assert!(!m.contains_key("net_rx_bytes_per_s"));
        assert_eq!(m["net_tx_bytes_per_s"], json!(10.0));
    }
}

/// The `query` record: one query of the set and what it gave.
#[derive(Debug, serde::Serialize)]
pub struct QueryRecord {
    /// The metric name in the samples.
    pub name: String,
    /// The PromQL as sent (`$rate` replaced).
    pub promql: String,
    /// From `--query` (else the default set).
    pub user: bool,
    /// Points it returned over the range.
    pub points: usize,
}

impl shared::Record for QueryRecord {
    const TYPE: &'static str = "query";
}

/// Read a range of history from the Prometheus server at `url` into `sample` records (`zone`
/// for local times in `--since`/`--until`).
pub fn from_prometheus(
    url: &str,
    p: &crate::PrometheusArgs,
    zone: &crate::time::Zone,
) -> anyhow::Result<Status> {
    use crate::prometheus::{self, Range, Server};
    let step = crate::whole_seconds(p.step)?;
    let base = prometheus::base_url(url)?;
    let until = match &p.until {
        Some(u) => crate::time::parse_instant_arg(u, zone)?.div_euclid(1000),
        None => jiff::Timestamp::now().as_second(),
    };
    let since = prometheus::parse_since(&p.since, until, zone)?;
    let range = Range::new(since, until, step);
    if range.points() < 2 {
        return Err(shared::err(
            ErrorKind::Usage,
            format!(
                "--since {} to --until {} holds fewer than two {}s steps",
                p.since,
                crate::time::utc_string(until),
                step
            ),
        ));
    }
    let queries = prometheus::query_set(&p.node_match, &p.pg_match, &p.queries, p.only_queries);
    if queries.is_empty() {
        return Err(shared::err(
            ErrorKind::Usage,
            "--only-queries without any --query NAME=PROMQL",
        ));
    }
    let server = Server::new(base, p.timeout);
    let fetched = server.fetch(&queries, &range)?;
    for w in &fetched.warnings {
        shared::warn!("Prometheus: {w}");
    }
    let mut out = Output::stdout();
    for (q, (promql, n)) in queries.iter().zip(&fetched.sent) {
        if *n == 0 {
            shared::warn!(
                "{}: no data for {} over the range ({}); left out",
                server.url(),
                q.name,
                promql
            );
        }
        out.emit(&QueryRecord {
            name: q.name.clone(),
            promql: promql.clone(),
            user: q.user,
            points: *n,
        })?;
    }
    if fetched.rows.is_empty() {
        return Err(shared::err(
            ErrorKind::DataErr,
            format!(
                "{}: none of the {} queries has data between {} and {} (are node_exporter and \
                 postgres_exporter scraped? see --query)",
                server.url(),
                queries.len(),
                crate::time::utc_string(range.start),
                crate::time::utc_string(range.end)
            ),
        ));
    }
    let mut samples = 0u64;
    for (t, values) in &fetched.rows {
        let cells: Vec<(String, Cell)> = values
            .iter()
            .map(|(k, v)| (k.clone(), Cell::Num(*v)))
            .collect();
        emit_row(&mut out, t * 1000, 0, &cells)?;
        samples += 1;
    }
    out.finish(&json!({
        "samples": samples,
        "source": server.url(),
        "first": crate::time::utc_string(range.start),
        "last": crate::time::utc_string(range.end),
        "step_s": step,
        "queries": queries.len(),
        "queries_with_data": fetched.sent.iter().filter(|(_, n)| *n > 0).count(),
        "requests": fetched.requests,
    }))
}
