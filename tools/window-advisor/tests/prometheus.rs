//! `collect --prometheus` against a real Prometheus server (Debian's `prometheus`, installed
//! by `make setup`): three weeks of node_exporter- and postgres_exporter-named series with a
//! known pattern are backfilled with `promtool tsdb create-blocks-from openmetrics`, the
//! server is started on a free loopback port, read through the range API in pages, and
//! stopped when the test ends. Without the binaries the test skips (fails under `CI=true`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{epoch, run, scratch};

/// Where a Prometheus binary is: on the PATH or in /usr/bin.
fn find(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A Prometheus server on loopback, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on loopback `port`: the status code, if the server answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Backfill `openmetrics` into a fresh TSDB under `dir` and start Prometheus on it.
fn launch(prometheus: &Path, promtool: &Path, dir: &Path, openmetrics: &str) -> Server {
    let om = dir.join("data.om");
    std::fs::write(&om, openmetrics).unwrap();
    let tsdb = dir.join("tsdb");
    let out = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        // Week-long blocks instead of 2-hour ones: 4 blocks to write and load, not 250.
        .arg("--max-block-duration=168h")
        .arg(&om)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let port = testkit::free_port("127.0.0.1");
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        // The backfilled weeks must not be deleted as too old.
        .arg("--storage.tsdb.retention.time=10y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(port, "/-/ready") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "prometheus did not become ready: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

/// Commits per second at `t` (epoch seconds, UTC): 10 from 02:00 to 04:00, 200 from 09:00
/// to 17:00, 80 otherwise; 40% less at the weekend.
fn commit_rate(t: i64) -> f64 {
    let hour = t.rem_euclid(86_400) / 3600;
    let dow = (t.div_euclid(86_400) + 3).rem_euclid(7); // 0 = Monday
    let base = match hour {
        2 | 3 => 10.0,
        9..=16 => 200.0,
        _ => 80.0,
    };
    if dow >= 5 {
        base * 0.6
    } else {
        base
    }
}

/// Three weeks of one-minute samples ending at `end`, in OpenMetrics text.
fn openmetrics(start: i64, end: i64) -> String {
    let mut s = String::new();
    let series: &[(&str, &str)] = &[
        ("pg_stat_database_xact_commit", r#"{datname="app"}"#),
        ("node_cpu_seconds_total", r#"{cpu="0",mode="idle"}"#),
        ("node_cpu_seconds_total", r#"{cpu="0",mode="user"}"#),
        ("node_cpu_seconds_total", r#"{cpu="1",mode="idle"}"#),
        ("node_cpu_seconds_total", r#"{cpu="1",mode="user"}"#),
        ("node_memory_MemTotal_bytes", ""),
        ("node_memory_MemAvailable_bytes", ""),
        ("node_network_receive_bytes_total", r#"{device="eth0"}"#),
        ("node_network_receive_bytes_total", r#"{device="lo"}"#),
        ("pg_database_size_bytes", r#"{datname="app"}"#),
    ];
    let mut last = "";
    for (name, labels) in series {
        if *name != last {
            // Typed as gauges: OpenMetrics would want counters named *_total, and
            // postgres_exporter's are not; rate() does not care.
            s.push_str(&format!("# TYPE {name} gauge\n"));
            last = name;
        }
        let mut commits = 0.0;
        let mut t = start;
        while t <= end {
            let v = match (*name, *labels) {
                ("pg_stat_database_xact_commit", _) => commits,
                (_, l) if l.contains("idle") => 0.75 * (t - start) as f64,
                (_, l) if l.contains("user") => 0.25 * (t - start) as f64,
                ("node_memory_MemTotal_bytes", _) => 1000.0,
                ("node_memory_MemAvailable_bytes", _) => 400.0,
                (_, l) if l.contains("eth0") => 1000.0 * (t - start) as f64,
                (_, l) if l.contains("\"lo\"") => 5000.0 * (t - start) as f64,
                _ => 5e9,
            };
            s.push_str(&format!("{name}{labels} {v} {t}\n"));
            commits += 60.0 * commit_rate(t);
            t += 60;
        }
    }
    s.push_str("# EOF\n");
    s
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn prometheus_history_round_trip_pages_and_errors() {
    let (Some(prometheus), Some(promtool)) = (find("prometheus"), find("promtool")) else {
        testkit::skip!("prometheus and promtool are not installed (make setup installs them)");
    };
    let dir = scratch();
    // Three weeks ending an hour ago, on whole minutes.
    let now = jiff::Timestamp::now().as_second();
    let end = (now - 3600) / 3600 * 3600;
    let start = end - 21 * 86_400;
    let server = start_server(&prometheus, &promtool, dir.path(), start, end);
    let since = window_advisor::time::utc_string(start + 600);
    let until = window_advisor::time::utc_string(end);
    let url = server.url.clone();
    // `collect --prometheus URL --since S --until U`, then `more`.
    let collect = |url: &str, more: &[&str]| {
        let base = [
            "collect",
            "--prometheus",
            url,
            "--since",
            &since,
            "--until",
            &until,
        ];
        run(&[&base[..], more].concat())
    };

    // 1. Five-minute steps: the default query set; data for what was backfilled.
    let r = collect(&url, &["--json"]);
    r.expect(0);
    let queries = r.of("query");
    let points =
        |n: &str| num(&queries.iter().find(|q| q["name"] == n).unwrap()["points"]) as usize;
    assert_eq!(queries.len(), 10, "{}", r.dump());
    for q in [
        "tps",
        "cpu_pct",
        "cpus",
        "mem_pct",
        "mem_total_bytes",
        "net_rx_bytes_per_s",
        "db_size_bytes",
    ] {
        assert!(points(q) > 5000, "{q}: {}", r.dump());
    }
    // Not backfilled: no data, a warning, and the samples simply lack them.
    for q in ["wal_bytes_per_s", "net_tx_bytes_per_s", "connections"] {
        assert_eq!(points(q), 0, "{q}");
        assert!(
            r.stderr.contains(&format!("no data for {q}")),
            "{}",
            r.dump()
        );
    }
    let samples = r.of("sample");
    let expected = ((end - start - 600) / 300 + 1) as usize;
    assert_eq!(samples.len(), expected, "{}", r.dump());
    let s = r.one("summary");
    assert_eq!(s["samples"], expected);
    assert_eq!(s["requests"], 10, "one page per query: {}", r.dump());
    let mut exact = 0;
    for smp in &samples {
        let t = epoch(smp["t"].as_str().unwrap());
        assert_eq!(t % 300, 0);
        assert!((num(&smp["cpu_pct"]) - 25.0).abs() < 1e-6, "{smp}");
        assert_eq!(num(&smp["cpus"]), 2.0);
        assert!((num(&smp["mem_pct"]) - 60.0).abs() < 1e-6);
        assert!(
            (num(&smp["net_rx_bytes_per_s"]) - 1000.0).abs() < 1e-6,
            "lo is left out"
        );
        // Away from an hour's edge the 5-minute rate is the commit rate of that hour.
        if t % 3600 >= 600 {
            let want = commit_rate(t - 1);
            assert!(
                (num(&smp["tps"]) - want).abs() < 1e-6 * want,
                "{smp} vs {want}"
            );
            exact += 1;
        }
        assert!(smp.get("wal_bytes_per_s").is_none());
    }
    assert!(exact > expected / 2);

    // 2. One-minute steps: 30,000 points per series, over Prometheus's 11,000: read in pages.
    let r1 = collect(
        &url,
        &[
            "--json",
            "--step",
            "1m",
            "--only-queries",
            "--query",
            "tps=sum(rate(pg_stat_database_xact_commit[$rate]))",
        ],
    );
    r1.expect(0);
    let n = r1.of("sample").len();
    assert_eq!(n, ((end - start - 600) / 60 + 1) as usize);
    assert_eq!(
        r1.one("summary")["requests"],
        n.div_ceil(10_000),
        "{}",
        r1.dump()
    );
    assert_eq!(
        r1.of("query")[0]["promql"],
        "sum(rate(pg_stat_database_xact_commit[300s]))"
    );
    let times: Vec<i64> = r1
        .of("sample")
        .iter()
        .map(|s| epoch(s["t"].as_str().unwrap()))
        .collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 60),
        "no gap or repeat at the pages' edges"
    );

    // 3. The history recommends: the quiet hours are 02:00-04:00 UTC.
    let h = dir.path().join("h.jsonl");
    std::fs::write(&h, &r.stdout).unwrap();
    let rec = run(&[
        "recommend",
        "--history",
        h.to_str().unwrap(),
        "--window",
        "1h",
        "--top",
        "1",
        "--tz",
        "UTC",
        "--json",
    ]);
    rec.expect(0);
    let w = rec.one("window");
    let hour = epoch(w["start"].as_str().unwrap()).rem_euclid(86_400) / 3600;
    assert!((2..4).contains(&hour), "{}", rec.dump());
    assert_eq!(rec.one("history")["metric"], "tps");

    // 4. Errors, each one line with its exit code.
    let one_line = |r: &crate::util::Run, code: i32, has: &str| {
        r.expect(code);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.dump());
        assert!(r.stderr.contains(has), "{has}: {}", r.dump());
    };
    let bad = collect(&url, &["--query", "tps=sum(rate(x[5m]"]);
    one_line(&bad, 2, "refused the query tps");
    let many = collect(
        &url,
        &["--only-queries", "--query", "cpu=node_cpu_seconds_total"],
    );
    one_line(&many, 2, "returns 4 series");
    let nf = collect(&format!("{url}/no/such/prefix"), &[]);
    one_line(&nf, 69, "not found (HTTP 404)");
    let closed = format!("http://127.0.0.1:{}", testkit::free_port("127.0.0.1"));
    let refused = run(&["collect", "--prometheus", &closed, "--since", "1d"]);
    one_line(&refused, 69, &closed);
    // A server that accepts and never answers: a time-out, worth retrying.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let conn = silent.accept();
        std::thread::sleep(Duration::from_secs(4));
        drop(conn);
    });
    let slow = run(&[
        "collect",
        "--prometheus",
        &format!("127.0.0.1:{port}"),
        "--since",
        "1d",
        "--timeout",
        "1s",
    ]);
    one_line(&slow, 75, "timed out");
    hold.join().unwrap();
    let scheme = run(&["collect", "--prometheus", "ftp://x", "--since", "1d"]);
    one_line(&scheme, 2, "http://");
    drop(server);
}

fn start_server(prometheus: &Path, promtool: &Path, dir: &Path, start: i64, end: i64) -> Server {
    launch(prometheus, promtool, dir, &openmetrics(start, end))
}
