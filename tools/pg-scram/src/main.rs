//! pg-scram: read a password on standard input, print the SCRAM-SHA-256 verifier
//! PostgreSQL stores for it (`SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`, a fresh random
//! salt each run).
//!
//! `ALTER ROLE r PASSWORD 'SCRAM-SHA-256$...'` stores a verifier as it is, so the password
//! itself never reaches the server, its log (`log_statement = 'ddl'`) or
//! `pg_stat_statements`. This is what psql's `\password` does, for scripts: the password
//! comes on stdin (one trailing newline is dropped), never in an argument.
//!
//! Output: `{"type":"verifier","verifier":"SCRAM-SHA-256$..."}` then a `summary`.
//! Exit 65 for an empty password or one that is not UTF-8.

use std::ffi::OsString;
use std::io::Read;

use clap::Parser;
use serde_json::json;
use shared::jsonl::Output;
use shared::{err, ErrorKind, Status};

/// Print the SCRAM-SHA-256 verifier of the password read on standard input.
#[derive(Parser, Debug)]
#[command(name = "pg-scram", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    out: shared::human::OutputArgs,
}

fn main() -> std::process::ExitCode {
    shared::run_main("pg-scram", run)
}

fn run(args: Vec<OsString>) -> anyhow::Result<Status> {
    Cli::try_parse_from(args)?.out.apply();
    // On a terminal the verifier alone, ready to paste.
    shared::human::register(
        |kind, r| (kind == "verifier").then(|| r["verifier"].as_str().unwrap_or("").to_owned()),
        |_| None,
    );
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(|e| err(ErrorKind::Io, format!("reading the password on stdin: {e}")))?;
    let verifier = verifier_of(&raw)?;
    let mut out = Output::stdout();
    out.emit_as("verifier", &json!({ "verifier": verifier }))?;
    out.finish(&json!({}))
}

/// The verifier of `raw` (one trailing `\n` or `\r\n` dropped, as a password file has).
fn verifier_of(raw: &[u8]) -> anyhow::Result<String> {
    let pw = raw
        .strip_suffix(b"\n")
        .map(|p| p.strip_suffix(b"\r").unwrap_or(p))
        .unwrap_or(raw);
    if pw.is_empty() {
        return Err(err(
            ErrorKind::DataErr,
            "empty password on stdin (pipe the password file in: pg-scram < FILE)",
        ));
    }
    // PostgreSQL normalises passwords with SASLprep; the crate does the same.
    std::str::from_utf8(pw).map_err(|_| {
        err(
            ErrorKind::DataErr,
            "the password is not UTF-8 (PostgreSQL's SCRAM needs UTF-8 text)",
        )
    })?;
    Ok(postgres_protocol::password::scram_sha_256(pw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_have_postgresql_s_shape_and_a_fresh_salt() {
        let a = verifier_of(b"it's a \\ pass\n").unwrap();
        let b = verifier_of(b"it's a \\ pass").unwrap();
        for v in [&a, &b] {
            let (head, keys) = v.split_once('$').unwrap().1.split_once('$').unwrap();
            assert!(head.starts_with("4096:"), "{v}");
            assert_eq!(keys.split(':').count(), 2, "{v}");
        }
        assert_ne!(a, b, "a fresh salt each time");
    }

    #[test]
    fn empty_and_non_utf8_passwords_are_refused() {
        for raw in [&b""[..], b"\n", b"\xff\xfe"] {
            let e = verifier_of(raw).unwrap_err();
            assert_eq!(shared::exit::classify(&e), ErrorKind::DataErr, "{e}");
        }
    }
}
