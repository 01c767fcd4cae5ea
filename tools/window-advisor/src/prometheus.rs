//! Prometheus as a history source: the metrics a DBA already keeps, read through the range
//! API (`/api/v1/query_range`), so that a recommendation needs no week of collecting first.
//!
//! Each query of the set (the [`default_queries`] for node_exporter and postgres_exporter, or
//! `--query NAME=PROMQL`) must return one series; its values become the metric `NAME` of the
//! `sample` records, one record per step (the union of the queries' timestamps). Prometheus
//! refuses a range of more than 11,000 points per series, so a long range is read in pages
//! of [`PAGE_POINTS`] steps, aligned to the step so that pages and queries share timestamps.
//!
//! Failures keep the exit-code table: an address that does not answer is 69, a time-out or a
//! server that says "try later" (429, 502-504) is 75, a query Prometheus refuses is 2 when it
//! came from `--query` and 65 otherwise (a server that does not speak the API), an answer
//! that is not the API's JSON is 65.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use shared::ErrorKind;

/// Steps per request: below Prometheus's limit of 11,000 points per series.
pub const PAGE_POINTS: i64 = 10_000;

/// `$rate` in a query is replaced by the range of its `rate()`: the step, at least 5 minutes
/// (so that a minute-scraped counter is averaged over several scrapes).
pub const RATE_PLACEHOLDER: &str = "$rate";

/// One named query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The metric name in the `sample` records (`tps`, `cpu_pct`, ...).
    pub name: String,
    /// PromQL; `$rate` is replaced by the rate range.
    pub promql: String,
    /// Given with `--query` (a refusal is then a usage error).
    pub user: bool,
}

impl Query {
    /// The class of an error in this query: usage when the user wrote it (`--query`), else
    /// data (a server that does not serve what the default set expects).
    fn fault(&self) -> ErrorKind {
        if self.user {
            ErrorKind::Usage
        } else {
            ErrorKind::DataErr
        }
    }
}

/// `metric{fixed..., extra}`: a selector with the user's extra matchers (`--node-match`,
/// `--pg-match`) appended.
fn sel(metric: &str, fixed: &[&str], extra: &str) -> String {
    let mut m: Vec<&str> = fixed.to_vec();
    if !extra.trim().is_empty() {
        m.push(extra.trim());
    }
    format!("{metric}{{{}}}", m.join(","))
}

/// The default query set: node_exporter's CPU, memory and network, postgres_exporter's
/// commits, WAL position, backends and database size. `node` and `pg` are extra label
/// matchers for each exporter's series (e.g. `instance="db1:9100"`), empty for all.
pub fn default_queries(node: &str, pg: &str) -> Vec<Query> {
    let cpu_idle = sel("node_cpu_seconds_total", &[r#"mode=~"idle|iowait""#], node);
    let cpu_all = sel("node_cpu_seconds_total", &[], node);
    let q = [
        // Busy share of all CPUs; iowait counts as idle, as in `collect --dsn`.
        (
            "cpu_pct",
            format!("100 * (1 - sum(rate({cpu_idle}[$rate])) / sum(rate({cpu_all}[$rate])))"),
        ),
        (
            "cpus",
            format!(
                "count(count by (instance, cpu) ({}))",
                sel("node_cpu_seconds_total", &[r#"mode="idle""#], node)
            ),
        ),
        (
            "mem_pct",
            format!(
                "100 * (1 - sum({}) / sum({}))",
                sel("node_memory_MemAvailable_bytes", &[], node),
                sel("node_memory_MemTotal_bytes", &[], node)
            ),
        ),
        (
            "mem_total_bytes",
            format!("sum({})", sel("node_memory_MemTotal_bytes", &[], node)),
        ),
        (
            "net_rx_bytes_per_s",
            format!(
                "sum(rate({}[$rate]))",
                sel(
                    "node_network_receive_bytes_total",
                    &[r#"device!="lo""#],
                    node
                )
            ),
        ),
        (
            "net_tx_bytes_per_s",
            format!(
                "sum(rate({}[$rate]))",
                sel(
                    "node_network_transmit_bytes_total",
                    &[r#"device!="lo""#],
                    node
                )
            ),
        ),
        (
            "tps",
            format!(
                "sum(rate({}[$rate]))",
                sel("pg_stat_database_xact_commit", &[], pg)
            ),
        ),
        // postgres_exporter publishes the WAL position per attached standby
        // (pg_stat_replication); every row carries the same position, hence max.
        (
            "wal_bytes_per_s",
            format!(
                "max(rate({}[$rate]))",
                sel("pg_stat_replication_pg_current_wal_lsn_bytes", &[], pg)
            ),
        ),
        (
            "connections",
            format!("sum({})", sel("pg_stat_database_numbackends", &[], pg)),
        ),
        (
            "db_size_bytes",
            format!("sum({})", sel("pg_database_size_bytes", &[], pg)),
        ),
    ];
    q.into_iter()
        .map(|(name, promql)| Query {
            name: name.to_owned(),
            promql,
            user: false,
        })
        .collect()
}

/// Parse `--query NAME=PROMQL`.
pub fn parse_query(s: &str) -> Result<(String, String), String> {
    let (name, q) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=PROMQL (e.g. tps='sum(rate(x[$rate]))')"))?;
    let name = name.trim();
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(format!(
            "'{name}' is not a metric name (letters, digits and _, e.g. tps or cpu_pct)"
        ));
    }
    if q.trim().is_empty() {
        return Err(format!("--query {name}= has no PromQL"));
    }
    Ok((name.to_owned(), q.trim().to_owned()))
}

/// The query set: the defaults (unless `only`), with `--query` ones replacing a default of
/// the same name or added.
pub fn query_set(node: &str, pg: &str, user: &[(String, String)], only: bool) -> Vec<Query> {
    let mut set = if only {
        Vec::new()
    } else {
        default_queries(node, pg)
    };
    for (name, promql) in user {
        let q = Query {
            name: name.clone(),
            promql: promql.clone(),
            user: true,
        };
        match set.iter_mut().find(|d| d.name == *name) {
            Some(d) => *d = q,
            None => set.push(q),
        }
    }
    set
}

/// The server's base URL from what was given: `http(s)://host:port[/prefix]`,
/// `prometheus://host:port` (plain HTTP), `prometheus+https://...`, or `host:port`.
pub fn base_url(given: &str) -> anyhow::Result<String> {
    let g = given.trim();
    let (scheme, rest) = if let Some(rest) = g.strip_prefix("prometheus+https://") {
        ("https", rest)
    } else if let Some(rest) = g.strip_prefix("prometheus://") {
        ("http", rest)
    } else if let Some(rest) = g.strip_prefix("http://") {
        ("http", rest)
    } else if let Some(rest) = g.strip_prefix("https://") {
        ("https", rest)
    } else if g.contains("://") {
        return Err(shared::err(
            ErrorKind::Usage,
            format!(
                "--prometheus {given}: use http://, https:// or prometheus:// (e.g. \
                 http://localhost:9090)"
            ),
        ));
    } else {
        ("http", g)
    };
    let rest = rest.trim_end_matches('/');
    let url = format!("{scheme}://{rest}");
    if rest.is_empty() || rest.starts_with('/') {
        return Err(shared::err(
            ErrorKind::Usage,
            format!("--prometheus {given}: no host (e.g. http://localhost:9090)"),
        ));
    }
    Ok(url)
}

/// A time range on a step grid, epoch seconds, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First point (a multiple of `step`).
    pub start: i64,
    /// Last point (a multiple of `step`).
    pub end: i64,
    /// Seconds between points.
    pub step: i64,
}

impl Range {
    /// `[since, until]` snapped inwards to multiples of `step`.
    pub fn new(since: i64, until: i64, step: i64) -> Range {
        let start = since.div_euclid(step) * step + if since % step == 0 { 0 } else { step };
        let end = until.div_euclid(step) * step;
        Range { start, end, step }
    }

    /// Points in the range.
    pub fn points(&self) -> i64 {
        if self.end < self.start {
            0
        } else {
            (self.end - self.start) / self.step + 1
        }
    }

    /// The pages: consecutive sub-ranges of at most [`PAGE_POINTS`] points.
    pub fn pages(&self) -> Vec<Range> {
        let mut out = Vec::new();
        let mut s = self.start;
        while s <= self.end {
            let e = (s + (PAGE_POINTS - 1) * self.step).min(self.end);
            out.push(Range {
                start: s,
                end: e,
                step: self.step,
            });
            s = e + self.step;
        }
        out
    }
}

/// A Prometheus server.
pub struct Server {
    base: String,
    agent: ureq::Agent,
}

/// What a fetch found.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Values by time (epoch seconds) and metric name.
    pub rows: BTreeMap<i64, BTreeMap<String, f64>>,
    /// Per query, in query order: its PromQL as sent (`$rate` replaced) and the points it
    /// returned.
    pub sent: Vec<(String, usize)>,
    /// Requests made.
    pub requests: usize,
    /// Warnings Prometheus attached to its answers (deduplicated).
    pub warnings: Vec<String>,
}

impl Server {
    /// A client for the server at `base` (see [`base_url`]) with a time-out per request.
    pub fn new(base: String, timeout: Duration) -> Server {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("window-advisor/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Server { base, agent }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// One `query_range` request of `q` as `promql` (`$rate` replaced): the answer's data and
    /// warnings.
    fn query_range(&self, q: &Query, promql: &str, r: &Range) -> anyhow::Result<(Value, Value)> {
        let url = format!("{}/api/v1/query_range", self.base);
        let resp = self
            .agent
            .get(&url)
            .query_pairs([
                ("query", promql),
                ("start", &r.start.to_string()),
                ("end", &r.end.to_string()),
                ("step", &r.step.to_string()),
            ])
            .call();
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => return Err(transport_error(e, &self.base)),
        };
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(512 << 20)
            .read_to_string()
            .map_err(|e| transport_error(e, &self.base))?;
        let json: Option<Value> = serde_json::from_str(&body).ok();
        let api_error = json.as_ref().and_then(|j| {
            (j["status"] == "error").then(|| {
                format!(
                    "{}: {}",
                    j["errorType"].as_str().unwrap_or("error"),
                    j["error"].as_str().unwrap_or("")
                )
            })
        });
        match (status, json, api_error) {
            (200, Some(j), None) if j["status"] == "success" => {
                let warnings = j.get("warnings").cloned().unwrap_or(Value::Null);
                Ok((j["data"].clone(), warnings))
            }
            (400 | 422, _, Some(e)) => Err(shared::err(
                q.fault(),
                format!(
                    "{}: Prometheus refused the query {} = {promql}: {e}",
                    self.base, q.name
                ),
            )),
            (429 | 502..=504, _, e) => Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "{}: busy or unavailable (HTTP {status}{}); try again later",
                    self.base,
                    e.map(|e| format!(", {e}")).unwrap_or_default()
                ),
            )),
            (404, _, _) => Err(shared::err(
                ErrorKind::Unavailable,
                format!(
                    "{url}: not found (HTTP 404); is {} a Prometheus server (e.g. \
                     http://host:9090)?",
                    self.base
                ),
            )),
            (200..=299, _, _) => Err(shared::err(
                ErrorKind::DataErr,
                format!(
                    "{url}: the answer is not Prometheus's API JSON (starts with '{}')",
                    body.chars().take(60).collect::<String>()
                ),
            )),
            (_, _, e) => Err(shared::err(
                ErrorKind::Unavailable,
                format!(
                    "{url}: HTTP {status}{}",
                    e.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            )),
        }
    }

    /// Read every query over the range, page by page.
    pub fn fetch(&self, queries: &[Query], range: &Range) -> anyhow::Result<Fetched> {
        let rate = format!("{}s", range.step.max(300));
        let mut f = Fetched::default();
        for q in queries {
            let promql = q.promql.replace(RATE_PLACEHOLDER, &rate);
            let mut n = 0usize;
            for page in range.pages() {
                let (data, warnings) = self.query_range(q, &promql, &page)?;
                f.requests += 1;
                if let Some(ws) = warnings.as_array() {
                    for w in ws.iter().filter_map(Value::as_str) {
                        if !f.warnings.iter().any(|x| x == w) {
                            f.warnings.push(w.to_owned());
                        }
                    }
                }
                let result = match (data["resultType"].as_str(), data["result"].as_array()) {
                    (Some("matrix"), Some(r)) => r,
                    _ => {
                        return Err(shared::err(
                            ErrorKind::DataErr,
                            format!(
                                "{}: query {} gave no matrix (resultType {})",
                                self.base, q.name, data["resultType"]
                            ),
                        ))
                    }
                };
                if result.len() > 1 {
                    return Err(shared::err(
                        q.fault(),
                        format!(
                            "query {} returns {} series (e.g. {}); it must return one: \
                             aggregate it (sum(...)) or narrow it with labels",
                            q.name,
                            result.len(),
                            result[0]["metric"]
                        ),
                    ));
                }
                for series in result {
                    for pair in series["values"].as_array().into_iter().flatten() {
                        let t = pair[0].as_f64();
                        let v = pair[1].as_str().and_then(|s| s.parse::<f64>().ok());
                        if let (Some(t), Some(v)) = (t, v) {
                            if v.is_finite() {
                                f.rows
                                    .entry(t.round() as i64)
                                    .or_default()
                                    .insert(q.name.clone(), v);
                                n += 1;
                            }
                        }
                    }
                }
            }
            f.sent.push((promql, n));
        }
        Ok(f)
    }
}

/// A transport failure as an error of the right class.
fn transport_error(e: ureq::Error, base: &str) -> anyhow::Error {
    let (kind, what) = match &e {
        ureq::Error::Timeout(_) => (ErrorKind::Retry, "timed out".to_owned()),
        ureq::Error::BadUri(u) => (ErrorKind::Usage, format!("not a URL ({u})")),
        ureq::Error::HostNotFound => (ErrorKind::Unavailable, "host not found".to_owned()),
        ureq::Error::ConnectionFailed => (ErrorKind::Unavailable, "connection failed".to_owned()),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            (ErrorKind::Retry, format!("timed out ({io})"))
        }
        ureq::Error::Io(io) => (ErrorKind::Unavailable, io.to_string()),
        other => (ErrorKind::Unavailable, other.to_string()),
    };
    shared::err(kind, format!("{base}: {what}"))
}

/// Read the duration or time given to `--since`: a duration back from `until` (`8w`,
/// `90d`), or a time.
pub fn parse_since(s: &str, until: i64, zone: &crate::time::Zone) -> anyhow::Result<i64> {
    if let Ok(d) = shared::cli::parse_duration(s) {
        return Ok(until - d.as_secs() as i64);
    }
    crate::time::parse_instant_arg(s, zone).map(|ms| ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_the_range_below_the_limit() {
        let r = Range::new(1_000_001, 1_000_000 + 25_000 * 300, 300);
        assert_eq!(r.start % 300, 0);
        assert!(r.start >= 1_000_001);
        let pages = r.pages();
        assert_eq!(pages.len(), 3);
        assert_eq!(pages.iter().map(Range::points).sum::<i64>(), r.points());
        assert!(pages.iter().all(|p| p.points() <= PAGE_POINTS));
        for w in pages.windows(2) {
            assert_eq!(w[1].start, w[0].end + 300);
        }
        assert_eq!(pages[2].end, r.end);
        assert!(Range::new(10, 5, 1).pages().is_empty());
    }

    #[test]
    fn queries_and_urls() {
        assert_eq!(
            parse_query("tps=sum(rate(x[$rate]))").unwrap(),
            ("tps".into(), "sum(rate(x[$rate]))".into())
        );
        assert!(parse_query("sum(x)").is_err());
        assert!(parse_query("9x=up").is_err());
        assert!(parse_query("tps=").is_err());
        let set = query_set(
            "",
            r#"instance="db:9187""#,
            &[("tps".into(), "up".into())],
            false,
        );
        let tps = set.iter().find(|q| q.name == "tps").unwrap();
        assert!(tps.user && tps.promql == "up");
        let conns = set.iter().find(|q| q.name == "connections").unwrap();
        assert_eq!(
            conns.promql,
            r#"sum(pg_stat_database_numbackends{instance="db:9187"})"#
        );
        assert_eq!(
            query_set("", "", &[("x".into(), "up".into())], true).len(),
            1
        );
        assert_eq!(base_url("prometheus://h:9090/").unwrap(), "http://h:9090");
        assert_eq!(base_url("h:9090").unwrap(), "http://h:9090");
        assert_eq!(
            base_url("prometheus+https://h/prom").unwrap(),
            "https://h/prom"
        );
        assert!(base_url("ftp://h").is_err());
        assert!(base_url("http://").is_err());
    }
}
