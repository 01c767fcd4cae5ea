//! pgdata-sync end to end on directories shaped like a data directory: the pipeline brings a
//! damaged partial copy to the source's bytes, sends only what differs, never reports a stream
//! cut short as done, and refuses what it must not touch. (With real clusters: the resumed
//! base copy in tests/tests/migrate.rs.)

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use pgdata_sync::tree::BLOCK;
use pgdata_sync::wire::{self, Frame};
use serde_json::Value;

fn bin() -> std::path::PathBuf {
    testkit::tool_bin("pgdata-sync")
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The three steps; returns apply's output, after asserting sums and send succeeded.
fn sync(source: &Path, target: &Path, send_args: &[&str]) -> Output {
    let sums = run(&["sums", path(target)], b"");
    assert_eq!(sums.status.code(), Some(0), "{sums:?}");
    let mut args = vec!["send", path(source)];
    args.extend_from_slice(send_args);
    let stream = run(&args, &sums.stdout);
    assert_eq!(
        stream.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stream.stderr)
    );
    let applied = run(&["apply", path(target)], &stream.stdout);
    if applied.status.success() {
        seal(target);
    }
    applied
}

const LABEL: &[u8] =
    b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n";

/// The last step: the label, then the control file in place.
fn seal(target: &Path) {
    assert!(
        !target.join("global/pg_control").exists(),
        "a control file before the label"
    );
    let out = run(&["seal", path(target)], LABEL);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(fs::read(target.join("backup_label")).unwrap(), LABEL);
}

/// The start of a hand-made stream that answers these sums (their token).
fn stream_for(sums: &Output) -> Vec<u8> {
    let recs = testkit::json_lines(&String::from_utf8_lossy(&sums.stdout));
    let token = recs.last().unwrap()["token"].as_str().unwrap().to_owned();
    let mut stream = Vec::new();
    wire::write_header(&mut stream, &token).unwrap();
    stream
}

fn synced(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let recs = testkit::json_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(recs.last().unwrap()["type"], "summary");
    recs.into_iter()
        .find(|r| r["type"] == "synced")
        .expect("a synced record")
}

fn bytes(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn put(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// A source shaped like a data directory.
fn source(root: &Path) {
    put(root, "PG_VERSION", b"15\n");
    put(root, "global/pg_control", &bytes(1, 8192));
    put(root, "global/1262", &bytes(2, 8192));
    put(root, "base/5/16384", &bytes(3, 3 * BLOCK + 7));
    put(root, "base/5/16385", &bytes(4, BLOCK));
    put(root, "base/5/16386", &bytes(5, BLOCK - 1));
    put(root, "base/5/empty", b"");
    put(root, "base/5/16387", &bytes(6, 2 * BLOCK));
    put(root, "pg_xact/0000", &bytes(7, 8192));
    put(root, "postgresql.auto.conf", b"# source\n");
    // Left out by a base backup.
    put(root, "postmaster.pid", b"4242\n");
    put(root, "pg_wal/000000010000000000000001", &bytes(8, 4096));
    put(root, "pg_replslot/s/state", b"slot");
    put(root, "base/5/t3_99", b"temp relation");
    fs::create_dir_all(root.join("pg_wal/archive_status")).unwrap();
    fs::create_dir_all(root.join("pg_stat_tmp")).unwrap();
    fs::create_dir_all(root.join("pg_tblspc")).unwrap();
    fs::set_permissions(root.join("base/5/16385"), fs::Permissions::from_mode(0o640)).unwrap();
}

/// A partial, stale copy of it: the earlier files, some blocks changed since, the rest missing.
fn partial(src: &Path, root: &Path) {
    put(root, "PG_VERSION", b"15\n");
    put(root, "global/1262", &bytes(2, 8192));
    let mut big = fs::read(src.join("base/5/16384")).unwrap();
    big[BLOCK + 10] ^= 0xff; // one block changed since
    put(root, "base/5/16384", &big);
    put(root, "base/5/16385", &bytes(4, BLOCK + 500)); // longer than the source's now
    put(root, "base/5/16387", &bytes(6, BLOCK)); // cut where the copy stopped
    put(root, "base/5/16399", &bytes(9, 3000)); // dropped on the source since
    put(root, "base/6/16400", b"a whole database dropped since");
    put(root, "pg_xact", b"a file where the source has a directory");
    put(
        root,
        "pg_wal/000000010000000000000001",
        b"the cut copy's WAL",
    );
    fs::create_dir_all(root.join("pg_wal/archive_status")).unwrap();
    put(
        root,
        "pg_wal/archive_status/000000010000000000000001.done",
        b"",
    );
}

/// Every file and directory a copy must hold, with its size and a hash of its bytes.
fn tree(root: &Path) -> Vec<(String, Option<(usize, String)>)> {
    pgdata_sync::tree::walk(root)
        .unwrap()
        .into_iter()
        .map(|e| {
            let data = (!e.dir).then(|| {
                let b = fs::read(root.join(&e.path)).unwrap();
                (b.len(), hex_of(&pgdata_sync::block_hash(&b)))
            });
            (e.path, data)
        })
        .collect()
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_stale_partial_copy_gets_the_sources_bytes_and_only_what_differs_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("src"), dir.path().join("tgt"));
    source(&src);
    partial(&src, &tgt);
    let rec = synced(&sync(&src, &tgt, &[]));
    assert_eq!(tree(&src), tree(&tgt));
    // What the base backup leaves out did not come, and what the cut copy had there went.
    assert!(!tgt.join("postmaster.pid").exists());
    assert!(!tgt.join("pg_replslot/s").exists());
    assert!(!tgt.join("base/5/t3_99").exists());
    assert!(tgt.join("pg_wal/archive_status").is_dir());
    assert_eq!(fs::read_dir(tgt.join("pg_wal")).unwrap().count(), 1);
    assert_eq!(
        fs::read_dir(tgt.join("pg_wal/archive_status"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::metadata(tgt.join("base/5/16385"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    // Reused: the unchanged blocks of 16384 (3 of 4 full ones... 3 + the 7-byte tail, less
    // the changed one), 16385's first block, 16387's first, 1262, PG_VERSION.
    let reused = rec["bytes_reused"].as_u64().unwrap();
    let sent = rec["bytes_sent"].as_u64().unwrap();
    assert_eq!(
        reused,
        (2 * BLOCK + 7) as u64 + BLOCK as u64 + BLOCK as u64 + 8192 + 3
    );
    // Sent: 16384's changed block, 16386, 16387's second block, pg_xact, the conf, pg_control.
    assert_eq!(
        sent,
        (BLOCK + (BLOCK - 1) + BLOCK + 8192 + 9 + 8192) as u64,
        "{rec}"
    );
    assert_eq!(rec["removed"], 3, "{rec}"); // 16399, base/6, the pg_xact file
    assert!(rec["wire_bytes"].as_u64().unwrap() > 0);

    // Again: nothing differs but the control file, sent every time.
    let rec = synced(&sync(&src, &tgt, &[]));
    assert_eq!(rec["bytes_sent"], 8192, "{rec}");
    assert_eq!(rec["removed"], 0, "{rec}");
    assert_eq!(tree(&src), tree(&tgt));
}

#[test]
fn the_control_file_comes_last_and_an_uncompressed_stream_applies_too() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("src"), dir.path().join("tgt"));
    source(&src);
    fs::create_dir_all(&tgt).unwrap();
    let sums = run(&["sums", path(&tgt)], b"");
    let stream = run(&["send", path(&src), "--level", "0"], &sums.stdout);
    assert_eq!(stream.status.code(), Some(0), "{stream:?}");
    let mut r = &stream.stdout[..];
    wire::read_header(&mut r).unwrap();
    let mut files = Vec::new();
    loop {
        match wire::read(&mut r).unwrap() {
            Frame::File { path, .. } => files.push(path),
            Frame::End { .. } => break,
            _ => {}
        }
    }
    assert_eq!(
        files.last().map(String::as_str),
        Some("global/pg_control"),
        "{files:?}"
    );
    synced(&run(&["apply", path(&tgt)], &stream.stdout));
    // Not a cluster until sealed; and not sealed with anything but a backup label.
    assert!(!tgt.join("global/pg_control").exists());
    let out = run(&["seal", path(&tgt)], b"hello");
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a backup label"));
    assert!(!tgt.join("global/pg_control").exists() && !tgt.join("backup_label").exists());
    seal(&tgt);
    assert_eq!(tree(&src), tree(&tgt));
}

#[test]
fn a_stream_cut_short_is_never_done_and_the_next_run_goes_on_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("src"), dir.path().join("tgt"));
    source(&src);
    fs::create_dir_all(&tgt).unwrap();
    let sums = run(&["sums", path(&tgt)], b"");
    let stream = run(&["send", path(&src), "--level", "0"], &sums.stdout);
    for cut in [0, 5, stream.stdout.len() / 2, stream.stdout.len() - 3] {
        let out = run(&["apply", path(&tgt)], &stream.stdout[..cut]);
        assert_eq!(out.status.code(), Some(65), "cut at {cut}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("\"synced\""), "{stdout}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("stopped before its end"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // The control file never arrived: the copy is not mistaken for a whole one.
    assert!(!tgt.join("global/pg_control").exists());
    let rec = synced(&sync(&src, &tgt, &[]));
    assert!(rec["bytes_reused"].as_u64().unwrap() > 0, "{rec}");
    assert_eq!(tree(&src), tree(&tgt));
}

#[test]
fn what_it_must_not_touch_it_refuses_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("src"), dir.path().join("tgt"));
    source(&src);
    fs::create_dir_all(&tgt).unwrap();
    let sums = run(&["sums", path(&tgt)], b"");
    let stream = run(&["send", path(&src)], &sums.stdout).stdout;

    // A server's directory (postmaster.pid): neither summed nor written.
    put(&tgt, "postmaster.pid", b"1\n");
    for out in [
        run(&["sums", path(&tgt)], b""),
        run(&["apply", path(&tgt)], &stream),
    ] {
        assert_eq!(out.status.code(), Some(65), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("stop it first"),
            "{out:?}"
        );
    }
    assert!(!tgt.join("PG_VERSION").exists());
    fs::remove_file(tgt.join("postmaster.pid")).unwrap();

    // A tablespace on the source.
    std::os::unix::fs::symlink(dir.path(), src.join("pg_tblspc/16500")).unwrap();
    let out = run(&["send", path(&src)], &sums.stdout);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "send writes no records into its stream"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tablespace") && err.contains("--fresh-copy"),
        "{err}"
    );
    fs::remove_file(src.join("pg_tblspc/16500")).unwrap();

    // Sums that stop before their summary, or that failed.
    let text = String::from_utf8_lossy(&sums.stdout);
    let cut: String = text
        .lines()
        .filter(|l| !l.contains("\"summary\""))
        .collect();
    let out = run(&["send", path(&src)], cut.as_bytes());
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped before their summary"));
    let failed = br#"{"type":"summary","success":false,"exit_code":74,"message":"disk on fire"}"#;
    let out = run(&["send", path(&src)], failed);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("disk on fire"));

    // Garbage, and a stream that names a path outside the directory: nothing written outside.
    let out = run(&["apply", path(&tgt)], b"not a stream at all");
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let sums = run(&["sums", path(&tgt)], b"");
    let mut evil = stream_for(&sums);
    wire::write(
        &mut evil,
        &Frame::File {
            path: "../escaped".into(),
            mode: 0o600,
        },
    )
    .unwrap();
    wire::write(&mut evil, &Frame::FileEnd { size: 0 }).unwrap();
    let out = run(&["apply", path(&tgt)], &evil);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    assert!(!dir.path().join("escaped").exists());

    // Usage.
    let out = run(&["send", path(&src), "--max-rate", "10"], b"");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("32k to 1024M"),
        "{out:?}"
    );
    let out = run(&["apply", path(&dir.path().join("nope"))], &stream);
    assert_eq!(out.status.code(), Some(65), "{out:?}");
}

/// A run left behind (its control host died and its pipeline ran on) never writes once a
/// newer run has summed the copy: the newer run's comparison stands.
#[test]
fn a_run_left_behind_stops_before_writing_over_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("src"), dir.path().join("tgt"));
    source(&src);
    fs::create_dir_all(&tgt).unwrap();
    let old_sums = run(&["sums", path(&tgt)], b"");
    let old_stream = run(&["send", path(&src)], &old_sums.stdout).stdout;
    let new_sums = run(&["sums", path(&tgt)], b"");
    let new_stream = run(&["send", path(&src)], &new_sums.stdout).stdout;
    let out = run(&["apply", path(&tgt)], &old_stream);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a newer pgdata-sync run owns"));
    assert!(!tgt.join("PG_VERSION").exists(), "the old stream wrote");
    synced(&run(&["apply", path(&tgt)], &new_stream));
    seal(&tgt);
    assert_eq!(tree(&src), tree(&tgt));
    assert!(!tgt.join(pgdata_sync::TOKEN_FILE).exists());
    // Once done, the old stream finds no owner it knows: still nothing written.
    let out = run(&["apply", path(&tgt)], &old_stream);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
}

/// The sender's progress frames come out of apply as `sync_progress` records, before `synced`.
#[test]
fn progress_frames_become_records() {
    let dir = tempfile::tempdir().unwrap();
    let tgt = dir.path().join("tgt");
    fs::create_dir_all(&tgt).unwrap();
    let sums = run(&["sums", path(&tgt)], b"");
    let mut stream = stream_for(&sums);
    let stats = r#"{"bytes_done":5,"bytes_total":10,"bytes_sent":1,"bytes_reused":4}"#;
    wire::write(
        &mut stream,
        &Frame::Progress {
            stats: stats.into(),
        },
    )
    .unwrap();
    wire::write(&mut stream, &Frame::End { stats: "{}".into() }).unwrap();
    let out = run(&["apply", path(&tgt)], &stream);
    let recs = testkit::json_lines(&String::from_utf8_lossy(&out.stdout));
    let kinds: Vec<&str> = recs.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["sync_progress", "synced", "summary"], "{out:?}");
    assert_eq!(recs[0]["bytes_total"], 10);
}

/// With 32k blocks, one changed byte costs 32k (8k by default: a page); the sender takes the
/// block size from the sums. A size that is not a multiple of a page is a usage error.
#[test]
fn the_block_size_is_the_sums_choice() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tgt) = (dir.path().join("src"), dir.path().join("tgt"));
    source(&src);
    fs::create_dir_all(&tgt).unwrap();
    synced(&sync(&src, &tgt, &[]));
    let mut big = fs::read(tgt.join("base/5/16384")).unwrap();
    big[BLOCK + 10] ^= 0xff;
    fs::write(tgt.join("base/5/16384"), &big).unwrap();
    let sums = run(&["sums", path(&tgt), "--block-size", "32k"], b"");
    assert_eq!(sums.status.code(), Some(0), "{sums:?}");
    let stream = run(&["send", path(&src)], &sums.stdout);
    let rec = synced(&run(&["apply", path(&tgt)], &stream.stdout));
    seal(&tgt);
    // The changed 32k block (all of this 3-page file) and the control file; with the default
    // 8k blocks it would have been one page.
    assert_eq!(rec["bytes_sent"], (3 * BLOCK + 7 + 8192) as u64, "{rec}");
    assert_eq!(tree(&src), tree(&tgt));
    for bad in ["4k", "100000", "2M", "x"] {
        let out = run(&["sums", path(&tgt), "--block-size", bad], b"");
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
}
