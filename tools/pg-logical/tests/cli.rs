//! The command line: usage errors and unreachable servers, before anything is touched.

use testkit::{tool, Run};

fn run(args: &[&str]) -> Run {
    let out = tool(testkit::tool_bin("pg-logical"))
        .args(args)
        .output()
        .expect("run pg-logical");
    Run::new(format!("pg-logical {args:?}"), out)
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let r = Run::text(
        "pg-logical",
        tool(testkit::tool_bin("pg-logical")).output().unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.dump());
    let r = run(&["fence", "--source", "host=127.0.0.1"]);
    assert_eq!(r.code, 2, "{}", r.dump());
    assert!(
        r.stderr.contains("--target"),
        "names what is missing: {}",
        r.dump()
    );
    let r = run(&["check", "--source", "hots=x", "--target", "host=127.0.0.1"]);
    assert_eq!(r.code, 2, "{}", r.dump());
    assert!(r.stderr.contains("--source"), "{}", r.dump());
    let r = run(&[
        "setup",
        "--source",
        "host=127.0.0.1",
        "--target",
        "host=127.0.0.1",
        "--copy-jobs",
        "0",
    ]);
    assert_eq!(r.code, 2, "{}", r.dump());
}

#[test]
fn an_unreachable_server_is_69_with_its_records() {
    let port = testkit::free_port("127.0.0.1");
    let dsn = format!("host=127.0.0.1 port={port} user=postgres connect_timeout=2");
    let r = run(&["status", "--source", &dsn, "--target", &dsn]);
    assert_eq!(r.code, 69, "{}", r.dump());
    assert_eq!(r.summary()["exit_code"], 69, "{}", r.dump());
    assert!(r.stderr.contains(&port.to_string()), "{}", r.dump());
}
