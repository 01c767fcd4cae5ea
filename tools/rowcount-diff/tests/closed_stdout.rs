//! A reader that goes away (`rowcount-diff ... | head -1`) changes nothing but the output: the
//! exit code is still the real answer (1: the databases differ), not 0.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use assert_cmd::cargo::cargo_bin;

/// Two databases that differ in one table, with enough tables that the records overflow a
/// pipe's buffer (64 KiB): the tool must write into a closed pipe.
fn differing_dbs() -> (testkit::TestDb, testkit::TestDb) {
    let c = testkit::shared_cluster();
    let (a, b) = (c.create_db(), c.create_db());
    // Long names: CSV rows are short.
    let many = "DO $$ BEGIN FOR i IN 1..1000 LOOP \
                EXECUTE format('CREATE TABLE %I (id int)', rpad('t' || i, 60, '_')); \
                END LOOP; END $$;";
    c.psql(a.name(), many);
    c.psql(b.name(), many);
    c.psql(a.name(), "CREATE TABLE zz_only_here (id int)");
    (a, b)
}

/// Run, read the first line, close stdout; the exit code.
fn exit_code_after_head_1(extra: &[&str]) -> i32 {
    let c = testkit::shared_cluster();
    let (a, b) = differing_dbs();
    let mut child = testkit::tool(cargo_bin!("rowcount-diff"))
        .args(["--source", &c.dsn(a.name()), "--target", &c.dsn(b.name())])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rowcount-diff");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "no first line");
    // The reader is dropped here: stdout is closed.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("error"), "{stderr}");
    out.status.code().unwrap_or(-1)
}

#[test]
fn differences_exit_1_when_the_reader_goes_away() {
    assert_eq!(exit_code_after_head_1(&[]), 1);
}

#[test]
fn differences_exit_1_when_the_csv_reader_goes_away() {
    assert_eq!(exit_code_after_head_1(&["--format", "csv"]), 1);
}
