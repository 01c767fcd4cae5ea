//! What a person reads: each tool in a real pseudo-terminal (util-linux `script`) writes text
//! — aligned lines, values side by side, human units, one closing line — and on a pipe the
//! same run writes JSON lines only, complete (`--text` and `--json` turn the default around).

use std::process::Command;

use serde_json::Value;

/// Run `cmd` (a shell command line) with stdin, stdout and stderr on a pseudo-terminal: its
/// exit code and what the screen shows at the end (see [`screen`]).
fn on_a_terminal(cmd: &str) -> (i32, String) {
    let (code, raw) = on_a_terminal_raw(cmd);
    (code, screen(&raw))
}

/// [`on_a_terminal`], with the bytes as written (escapes and carriage returns kept).
pub(crate) fn on_a_terminal_raw(cmd: &str) -> (i32, String) {
    let mut c = Command::new("script");
    c.args(["-qefc", cmd, "/dev/null"])
        .stdin(std::process::Stdio::null());
    testkit::hermetic(&mut c);
    let out = c.output().expect("run script (util-linux)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What a terminal shows of `raw`, as far as progress bars go: a carriage return goes back
/// to the line's start (the text after the last one stays), escape sequences (cursor moves,
/// "clear line") draw nothing, and a line that ends empty is gone.
fn screen(raw: &str) -> String {
    let mut lines = Vec::new();
    for line in raw.split('\n') {
        let mut plain = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // CSI: ESC [ parameters, then one final letter.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            } else {
                plain.push(c);
            }
        }
        let shown = plain.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
        if !shown.is_empty() {
            lines.push(shown.to_owned());
        }
    }
    lines.join("\n")
}

/// Run `tool args` on pipes: exit code, records (every stdout line must be one), stderr.
fn on_a_pipe(tool: &str, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut c = Command::new(testkit::tool_bin(tool));
    c.args(args);
    testkit::hermetic(&mut c);
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let recs = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{tool}: not JSON ({e}): {l}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        recs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn q(s: &str) -> String {
    shared::host::sh_quote(s)
}

#[test]
fn comparisons_read_as_text_on_a_terminal_and_as_json_on_a_pipe() {
    let cluster = testkit::shared_cluster();
    let (a, b) = (cluster.create_db(), cluster.create_db());
    let setup = "CREATE TABLE accounts (id int PRIMARY KEY, balance int, note text);
        INSERT INTO accounts SELECT g, g * 10, repeat('n', 100) FROM generate_series(1, 50) g;
        CREATE TABLE same (id int PRIMARY KEY); INSERT INTO same SELECT generate_series(1, 7);";
    cluster.psql(a.name(), setup);
    cluster.psql(b.name(), setup);
    // On the target: one balance changed, one long note changed, one row gone.
    cluster.psql(
        b.name(),
        "UPDATE accounts SET balance = 999 WHERE id = 1;
         UPDATE accounts SET note = repeat('m', 100) WHERE id = 2;
         DELETE FROM accounts WHERE id = 3;",
    );
    let (src, tgt) = (cluster.dsn(a.name()), cluster.dsn(b.name()));
    let rowcount = testkit::tool_bin("rowcount-diff");
    let checksum = testkit::tool_bin("pg-checksum");

    // rowcount-diff: an aligned line per table, the closing line, no JSON.
    let (code, text) = on_a_terminal(&format!(
        "{} --source {} --target {}",
        q(rowcount.to_str().unwrap()),
        q(&src),
        q(&tgt)
    ));
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("{\""), "no JSON on a terminal: {text}");
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
            .to_owned()
    };
    let accounts = line("DIFFERS  public.accounts");
    assert!(
        accounts.contains("50           49  -1 rows on target"),
        "{accounts}"
    );
    let same = line("equal    public.same");
    // Aligned: the counts end in the same column.
    assert_eq!(
        accounts.find(" 50 ").map(|i| i + 3),
        same.find(" 7 ").map(|i| i + 2),
        "{text}"
    );
    line("rowcount-diff: 1 of 2 tables differ, in ");
    assert!(
        !text.contains("tables ["),
        "the bar is cleared at the end: {text}"
    );

    // pg-checksum: each differing row with its values side by side, cut at --show-values.
    let (code, raw) = on_a_terminal_raw(&format!(
        "{} --source {} --target {} --show-values 12",
        q(checksum.to_str().unwrap()),
        q(&src),
        q(&tgt)
    ));
    // Its progress is the table data hashed (bytes, with the rows), not a count of tables.
    assert!(
        raw.contains("hashing [") && raw.contains(" rows"),
        "a bytes-and-rows bar while it hashes: {raw}"
    );
    let text = screen(&raw);
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("{\""), "no JSON on a terminal: {text}");
    let starts = |p: &str| text.lines().any(|l| l.starts_with(p));
    assert!(starts("DIFFERS  public.accounts"), "{text}");
    assert!(starts("equal    public.same"), "{text}");
    assert!(
        !starts("     hashing ["),
        "the bar is cleared at the end: {text}"
    );
    assert!(text.contains("balance  source 10  |  target 999"), "{text}");
    assert!(
        text.contains("note  source nnnnnnnnnnn…  |  target mmmmmmmmmmm…"),
        "{text}"
    );
    assert!(
        text.contains("missing_on_target  public.accounts id=3"),
        "{text}"
    );
    assert!(
        text.contains("pg-checksum: 1 of 2 tables differ (0 on one side only, 3 row diffs), in "),
        "{text}"
    );

    // The same run on a pipe: JSON only, the values complete in the records.
    let (code, recs, err) = on_a_pipe("pg-checksum", &["--source", &src, "--target", &tgt]);
    assert_eq!(code, 1, "{err}");
    let changed: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "row_diff" && r["kind"] == "changed")
        .collect();
    assert_eq!(changed.len(), 2, "{recs:?}");
    let balance = changed
        .iter()
        .find(|r| r["columns"] == serde_json::json!(["balance"]))
        .unwrap();
    assert_eq!(
        balance["values"]["balance"],
        serde_json::json!({"source": "10", "target": "999"})
    );
    assert_eq!(recs.last().unwrap()["type"], "summary");
    assert!(
        !err.contains("tables differ"),
        "no closing line on a pipe: {err}"
    );
    // --show-values 0: no value leaves the database.
    let (_, recs, _) = on_a_pipe(
        "pg-checksum",
        &["--source", &src, "--target", &tgt, "--show-values", "0"],
    );
    assert!(recs.iter().all(|r| r.get("values").is_none()), "{recs:?}");

    // --text on a pipe, --json on a terminal.
    let mut c = Command::new(&rowcount);
    c.args(["--source", &src, "--target", &tgt, "--text"]);
    testkit::hermetic(&mut c);
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DIFFERS  public.accounts"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 tables differ"));
    let (_, text) = on_a_terminal(&format!(
        "{} --source {} --target {} --json",
        q(rowcount.to_str().unwrap()),
        q(&src),
        q(&tgt)
    ));
    assert!(
        text.lines().any(|l| l.starts_with(r#"{"type":"table""#)),
        "{text}"
    );
}

#[test]
fn load_gen_and_window_advisor_read_as_text_on_a_terminal() {
    let cluster = testkit::shared_cluster();
    let db = cluster.create_db();
    let dsn = cluster.dsn(db.name());
    let load = testkit::tool_bin("load-gen");

    // load-gen: a line per tick, no bar over them, a pgbench-style end.
    let (code, raw) = on_a_terminal_raw(&format!(
        "{} --dsn {} --clients 2 --workload probe --duration 2s",
        q(load.to_str().unwrap()),
        q(&dsn)
    ));
    let text = raw.replace('\r', "");
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("{\""), "no JSON on a terminal: {text}");
    assert!(
        !text.contains('\x1b'),
        "no progress bar over the ticks: {text:?}"
    );
    let ticks = text.lines().filter(|l| l.contains(" tps  p50 ")).count();
    assert!(ticks >= 1, "tick lines: {text}");
    for want in [
        "workload: probe (",
        "transactions: ",
        "latency: average ",
        "longest write gap: ",
        "client errors: 0",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }

    // window-advisor: the windows ranked, rates in human units.
    let wa = testkit::tool_bin("window-advisor");
    let wa = q(wa.to_str().unwrap());
    let (code, text) = on_a_terminal(&format!(
        "{wa} synth --weeks 2 | {wa} recommend --history - --top 2"
    ));
    assert_eq!(code, 0, "{text}");
    assert!(text.lines().any(|l| l.starts_with("#1  ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("#2  ")), "{text}");
    assert!(text.contains(" MiB/s"), "{text}");
    assert!(!text.contains("bandwidth_bytes_per_s"), "{text}");

    // pg-report: where the page went.
    let data = pgshift_tests::workspace_root().join("tools/pg-report/tests/data");
    let page = tempfile::tempdir().unwrap();
    let out = page.path().join("r.html");
    let pr = testkit::tool_bin("pg-report");
    let (code, text) = on_a_terminal(&format!(
        "{} html --migrate {} --load {} -o {}",
        q(pr.to_str().unwrap()),
        q(data.join("migrate.jsonl").to_str().unwrap()),
        q(data.join("load.jsonl").to_str().unwrap()),
        q(out.to_str().unwrap())
    ));
    assert_eq!(code, 0, "{text}");
    let first = text.lines().next().unwrap_or("");
    assert!(first.starts_with(&format!("{} (", out.display())), "{text}");
    assert!(first.contains(" charts)"), "{text}");
    assert!(
        text.contains(&format!("pg-report: wrote {}", out.display())),
        "{text}"
    );

    // wal-ship: a real segment pushed and the archive verified, as text.
    let seg = cluster.psql(db.name(), "SELECT pg_walfile_name(pg_current_wal_lsn())");
    let seg = seg.trim();
    let archive = page.path().join("archive");
    testkit::new_wal_archive(&archive);
    let ws = testkit::tool_bin("wal-ship");
    let ws = q(ws.to_str().unwrap());
    let (code, text) = on_a_terminal(&format!(
        "{ws} push {} --to {} && {ws} verify --archive {}",
        q(cluster
            .data_dir()
            .join("pg_wal")
            .join(seg)
            .to_str()
            .unwrap()),
        q(archive.to_str().unwrap()),
        q(archive.to_str().unwrap())
    ));
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("{\""), "no JSON on a terminal: {text}");
    assert!(text.contains(seg), "{text}");
    assert!(text.contains(" MiB"), "sizes in human units: {text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("wal-ship: ok"))
            .count(),
        2,
        "a closing line each: {text}"
    );

    // wal-ship sweep: the backlog's bytes as it ships them (a bar only while it runs).
    let spool = page.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::copy(cluster.data_dir().join("pg_wal").join(seg), spool.join(seg)).unwrap();
    let archive2 = page.path().join("archive2");
    testkit::new_wal_archive(&archive2);
    let (code, raw) = on_a_terminal_raw(&format!(
        "{ws} sweep --from {} --to {}",
        q(spool.to_str().unwrap()),
        q(archive2.to_str().unwrap())
    ));
    assert_eq!(code, 0, "{raw}");
    assert!(raw.contains("shipping ["), "a bar while it ships: {raw:?}");
    let text = screen(&raw);
    assert!(!text.contains("shipping ["), "cleared at the end: {text}");
    assert!(text.contains(seg), "{text}");

    // pg-scram: the verifier alone, ready to paste.
    let scram = testkit::tool_bin("pg-scram");
    let (code, text) = on_a_terminal(&format!("printf secret | {}", q(scram.to_str().unwrap())));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap_or("")
            .starts_with("SCRAM-SHA-256$4096:"),
        "{text}"
    );
}
