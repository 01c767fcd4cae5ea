//! `collect`: live samples from a fixture cluster under load, and conversion of load-gen
//! ticks and CSV.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::Cluster;

use crate::util::{epoch, run, run_stdin, scratch};

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Inserts in a tight loop (one transaction each) while `on` is set.
fn writer(
    c: &Cluster,
    db: &str,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let mut client = c.connect(db);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS wa_load (id bigserial PRIMARY KEY, pad text)")
        .unwrap();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if on.load(Ordering::Relaxed) {
                client
                    .execute("INSERT INTO wa_load (pad) VALUES (repeat('x', 200))", &[])
                    .unwrap();
                n += 1;
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        n
    })
}

#[test]
fn collect_against_a_cluster_under_load_shows_tps_rising() {
    let c = Cluster::start();
    let db = c.create_db();
    let on = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(&c, db.name(), on.clone(), stop.clone());

    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("window-advisor"));
    testkit::hermetic(&mut cmd);
    let mut child = cmd
        .args([
            "collect",
            "--dsn",
            &c.dsn(db.name()),
            "--interval",
            "1s",
            "--count",
            "8",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut samples: Vec<Value> = Vec::new();
    let mut all: Vec<Value> = Vec::new();
    let started = Instant::now();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        all.push(v.clone());
        if v["type"] == "sample" {
            samples.push(v);
            // Two idle samples, then load for four, then idle again.
            match samples.len() {
                2 => on.store(true, Ordering::Relaxed),
                6 => on.store(false, Ordering::Relaxed),
                _ => {}
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "collect hangs");
    }
    let status = child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let inserted = load.join().unwrap();
    let dump = all
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(status.success(), "{dump}");
    assert_eq!(samples.len(), 8, "{dump}");
    assert_eq!(all.last().unwrap()["type"], "summary");
    assert_eq!(all.last().unwrap()["samples"], 8);
    assert!(inserted > 50, "the writer only managed {inserted} inserts");

    let tps: Vec<f64> = samples.iter().map(|s| num(s, "tps")).collect();
    let idle = tps[0].max(tps[1]);
    // Samples 3..6 cover the load (stats reach pg_stat_database within a second or so).
    let loaded = tps[2..7].iter().copied().fold(0.0, f64::max);
    assert!(
        loaded > 5.0 * idle + 20.0,
        "tps should rise under load: {tps:?}\n{dump}"
    );
    let wal = samples[2..7]
        .iter()
        .map(|s| num(s, "wal_bytes_per_s"))
        .fold(0.0, f64::max);
    assert!(wal > 10_000.0, "{dump}");
    for s in &samples {
        assert!(num(s, "connections") >= 1.0, "{s}");
        assert!(num(s, "db_size_bytes") > 1e6, "{s}");
        let cpu = num(s, "cpu_pct");
        assert!((0.0..=100.0).contains(&cpu), "{s}");
        assert!(num(s, "mem_pct") > 0.0, "{s}");
        assert!(num(s, "interval_s") > 0.5, "{s}");
        assert!(s["t"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn collect_from_an_unreachable_server_is_unavailable() {
    let r = run(&[
        "collect",
        "--dsn",
        "host=127.0.0.1 port=1 user=nobody dbname=x connect_timeout=2",
        "--count",
        "1",
    ]);
    r.expect(69);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.dump());
    assert!(r.stderr.contains("127.0.0.1"), "{}", r.dump());
}

#[test]
fn collect_needs_a_source() {
    let r = run(&["collect"]);
    r.expect(2);
    assert!(
        r.stderr.contains("--dsn") && r.stderr.contains("--input"),
        "{}",
        r.dump()
    );
}

#[test]
fn load_gen_ticks_become_samples() {
    let ticks = concat!(
        r#"{"type":"start","run_id":"r","started_at":"2026-11-25T19:27:52.591Z","clients":4}"#,
        "\n",
        r#"{"type":"tick","t_ms":1000,"interval_ms":1000,"committed":800,"tps":800.0,"latency_p50_ms":1.5,"host":"h","hosts":{"h":800},"connected":4}"#,
        "\n",
        r#"{"type":"tick","t_ms":2000,"interval_ms":1000,"committed":900,"tps":900.0,"latency_p50_ms":null,"connected":4}"#,
        "\n",
        r#"{"type":"summary","tool":"load-gen","success":true}"#,
        "\n"
    );
    let r = run_stdin(&["collect", "--input", "-"], ticks);
    r.expect(0);
    let s = r.of("sample");
    assert_eq!(s.len(), 2, "{}", r.dump());
    assert_eq!(s[0]["t"], "2026-11-25T19:27:53.591Z");
    assert_eq!(s[1]["tps"], 900.0);
    assert_eq!(s[0]["latency_p50_ms"], 1.5);
    assert!(s[1].get("latency_p50_ms").is_none());
    assert_eq!(r.one("summary")["ticks"], 2);

    // Ticks with elapsed time only, from a file: --start anchors them.
    let dir = scratch();
    let f = dir.path().join("ticks.jsonl");
    std::fs::write(&f, "{\"type\":\"tick\",\"t\":1.5,\"tps\":10}\n").unwrap();
    let r = run(&["collect", "--input", f.to_str().unwrap()]);
    r.expect(65);
    assert!(r.stderr.contains("--start"), "{}", r.dump());
    let r = run(&[
        "collect",
        "--input",
        f.to_str().unwrap(),
        "--start",
        "2026-01-05T00:00:00Z",
    ]);
    r.expect(0);
    assert_eq!(r.one("sample")["t"], "2026-01-05T00:00:01.500Z");

    // Piped live, they are anchored at their arrival.
    let before = jiff::Timestamp::now().as_second();
    let r = run_stdin(
        &["collect", "--input", "-"],
        "{\"type\":\"tick\",\"t\":0,\"tps\":10}\n",
    );
    r.expect(0);
    let t = epoch(r.one("sample")["t"].as_str().unwrap());
    assert!((t - before).abs() < 30, "{}", r.dump());
}

#[test]
fn csv_is_converted_and_bad_cells_reported() {
    let csv = "timestamp,tps,cpu_pct,host\n2026-01-05 10:00:00,12.5,40,db1\n2026-01-05 10:00:10,oops,41,db1\n";
    let r = run_stdin(
        &[
            "collect",
            "--input",
            "-",
            "--format",
            "csv",
            "--tz",
            "Europe/Berlin",
        ],
        csv,
    );
    r.expect(65);
    let s = r.of("sample");
    assert_eq!(s.len(), 2, "{}", r.dump());
    // Local Berlin time in January is UTC+1.
    assert_eq!(s[0]["t"], "2026-01-05T09:00:00.000Z");
    assert_eq!(s[0]["tps"], 12.5);
    assert!(s[1].get("tps").is_none());
    assert_eq!(s[1]["cpu_pct"], 41.0);
    let e = r.one("error");
    assert_eq!(e["field"], "tps");
    assert!(r.stderr.contains("line 3: tps is 'oops'"), "{}", r.dump());
}

/// With the real load-gen (when the workspace is built), its ticks piped into `collect`.
#[test]
fn real_load_gen_ticks_pipe_into_collect() {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("load-gen"))
        .unwrap();
    if !bin.exists() {
        testkit::skip!(
            "load-gen is not built ({}); `cargo build --workspace` builds it",
            bin.display()
        );
    }
    let c = Cluster::start();
    let db = c.create_db();
    let dsn = c.dsn(db.name());
    let mut init = Command::new(&bin);
    testkit::hermetic(&mut init);
    let out = init.args(["--dsn", &dsn, "--init"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lg = Command::new(&bin);
    testkit::hermetic(&mut lg);
    let out = lg
        .args(["--dsn", &dsn, "-c", "2", "-T", "3s", "--json-only"])
        .output()
        .unwrap();
    let ticks = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = run_stdin(&["collect", "--input", "-"], ticks);
    r.expect(0);
    let s = r.of("sample");
    assert!(s.len() >= 2, "{}", r.dump());
    assert!(
        s.iter().any(|x| x["tps"].as_f64().unwrap_or(0.0) > 0.0),
        "{}",
        r.dump()
    );
}
