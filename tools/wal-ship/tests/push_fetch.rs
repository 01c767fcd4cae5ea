//! push and fetch on a local archive: storing, duplicates, conflicts, bad input, corruption,
//! the exit codes PostgreSQL sees, encryption and prefetch.

use std::fs;

use crate::util::*;

#[test]
fn push_stores_atomically_and_fetch_restores_the_same_bytes() {
    let d = scratch();
    let (wal, arch) = (d.path().join("wal"), d.path().join("archive"));
    fs::create_dir_all(&wal).unwrap();
    testkit::new_wal_archive(&arch);
    let name = seg_name(1, 3);
    let src = segment(&wal, &name, 1);
    let out = expect(
        0,
        &[
            "push",
            src.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    let seg = &out.of("segment")[0];
    assert_eq!(seg["name"], name.as_str());
    assert_eq!(seg["action"], "stored");
    assert_eq!(seg["kind"], "segment");
    assert_eq!(seg["compression"], "zstd:3");
    assert_eq!(seg["bytes"], SEG);
    assert!(
        seg["stored_bytes"].as_u64().unwrap() < u64::from(SEG) / 4,
        "{seg}"
    );
    assert_eq!(seg["sha256"].as_str().unwrap().len(), 64);
    let sum = out.summary();
    assert_eq!(
        (sum["stored"].as_u64(), sum["exit_code"].as_u64()),
        (Some(1), Some(0))
    );
    // Nothing but the marker and the object: no temp file left behind.
    assert_eq!(
        tree(&arch),
        vec![
            format!("00000001{}/{name}.ws", &name[8..16]),
            "wal-ship.json".to_owned()
        ]
    );
    // The header line says what the object is.
    let stored = fs::read(object_path(&arch, &name)).unwrap();
    let first =
        String::from_utf8_lossy(&stored[..stored.iter().position(|&b| b == b'\n').unwrap()])
            .into_owned();
    let h: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(h["name"], name.as_str());
    assert_eq!(h["seg_size"], SEG);

    let dest = d.path().join("RECOVERYXLOG");
    let out = expect(
        0,
        &[
            "fetch",
            &name,
            dest.to_str().unwrap(),
            "--from",
            arch.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
    let f = &out.of("segment")[0];
    assert_eq!(
        (f["action"].as_str(), f["source"].as_str()),
        (Some("fetched"), Some("archive"))
    );
    // The temp file beside %p is gone.
    assert!(!d.path().join(".RECOVERYXLOG.wal-ship.tmp").exists());
}

#[test]
fn every_compression_round_trips_and_a_re_push_with_another_is_a_duplicate() {
    let d = scratch();
    let arch = d.path().join("a");
    testkit::new_wal_archive(&arch);
    for (i, c) in ["none", "lz4", "zstd:1", "zstd:19"].iter().enumerate() {
        let name = seg_name(1, 10 + i as u64);
        let src = segment(d.path(), &name, i as u8);
        let out = expect(
            0,
            &[
                "push",
                src.to_str().unwrap(),
                "--to",
                arch.to_str().unwrap(),
                "--compress",
                c,
            ],
        );
        assert_eq!(out.of("segment")[0]["compression"], *c);
        // Same bytes, another compression: recognised from the header alone.
        let again = if *c == "lz4" { "zstd" } else { "lz4" };
        let out = expect(
            0,
            &[
                "push",
                src.to_str().unwrap(),
                "--to",
                arch.to_str().unwrap(),
                "--compress",
                again,
            ],
        );
        assert_eq!(out.of("segment")[0]["action"], "duplicate");
        assert_eq!(out.summary()["duplicates"], 1);
        let dest = d.path().join(format!("restored-{i}"));
        expect(
            0,
            &[
                "fetch",
                &name,
                dest.to_str().unwrap(),
                "--from",
                arch.to_str().unwrap(),
            ],
        );
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap(), "{c}");
    }
    let out = expect(2, &["push", "x", "--to", "y", "--compress", "gzip"]);
    assert!(out.stderr.contains("use none, zstd"), "{}", out.stderr);
}

#[test]
fn a_different_file_under_an_archived_name_is_refused_and_the_archive_kept() {
    let d = scratch();
    let (a, b, arch) = (
        d.path().join("a"),
        d.path().join("b"),
        d.path().join("archive"),
    );
    for p in [&a, &b] {
        fs::create_dir(p).unwrap();
    }
    testkit::new_wal_archive(&arch);
    let name = seg_name(1, 5);
    let first = segment(&a, &name, 1);
    let second = segment(&b, &name, 2);
    expect(
        0,
        &[
            "push",
            first.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    let before = fs::read(object_path(&arch, &name)).unwrap();
    let out = expect(
        65,
        &[
            "push",
            second.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    let err = &out.stderr;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already holds a different"), "{err}");
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(fs::read(object_path(&arch, &name)).unwrap(), before);
    let e = &out.of("error")[0];
    assert_eq!(
        (e["kind"].as_str(), e["exit_code"].as_u64()),
        (Some("data_err"), Some(65))
    );
    assert_eq!(out.summary()["failed"], 1);
    // The first file is still a duplicate, and the archive still restores it.
    expect(
        0,
        &[
            "push",
            first.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    let dest = d.path().join("x");
    expect(
        0,
        &[
            "fetch",
            &name,
            dest.to_str().unwrap(),
            "--from",
            arch.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read(dest).unwrap(), fs::read(first).unwrap());
}

#[test]
fn bad_input_is_refused_with_a_retryable_code_and_nothing_stored() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let push = |path: &std::path::Path| run(&["push", path.to_str().unwrap(), "--to", a]);

    // Not a WAL file name.
    let p = d.path().join("pg_wal_backup.tar");
    fs::write(&p, b"x").unwrap();
    let out = push(&p);
    check(65, &out, &"bad name");
    assert!(
        out.stderr.contains("is not a WAL file name"),
        "{}",
        out.stderr
    );

    // Truncated (a half-copied file).
    let name = seg_name(1, 7);
    let full = fs::read(segment(d.path(), &name, 3)).unwrap();
    fs::write(d.path().join(&name), &full[..full.len() / 3]).unwrap();
    let out = push(&d.path().join(&name));
    check(65, &out, &"truncated");
    assert!(
        out.stderr.contains("truncated or half-copied"),
        "{}",
        out.stderr
    );

    // The wrong segment under this name (its page header says another position).
    let other = seg_name(1, 8);
    let bytes = fs::read(segment(d.path(), &other, 3)).unwrap();
    fs::write(d.path().join(&name), bytes).unwrap();
    let out = push(&d.path().join(&name));
    check(65, &out, &"wrong segment");
    assert!(
        out.stderr.contains("the file is not this segment"),
        "{}",
        out.stderr
    );

    // Zeros (a preallocated, never written file).
    fs::write(d.path().join(&name), vec![0u8; SEG as usize]).unwrap();
    check(65, &push(&d.path().join(&name)), &"zeros");

    // Missing source.
    let out = push(&d.path().join(seg_name(1, 99)));
    check(74, &out, &"missing file");
    assert!(out.stderr.contains("No such file"), "{}", out.stderr);

    // Archive directory missing (e.g. not mounted): retryable, and nothing created.
    let gone = d.path().join("not-mounted");
    let good = segment(d.path(), &seg_name(1, 9), 1);
    let out = run(&[
        "push",
        good.to_str().unwrap(),
        "--to",
        gone.to_str().unwrap(),
    ]);
    check(69, &out, &"no archive dir");
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert!(!gone.exists());

    // Only the marker: nothing half-written anywhere.
    assert!(
        tree(&arch).iter().all(|f| f == "wal-ship.json"),
        "{:?}",
        tree(&arch)
    );
    // Every failure code is one PostgreSQL retries (1..=125).
}

#[test]
fn history_backup_and_partial_files_round_trip() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let hist = d.path().join("00000002.history");
    fs::write(&hist, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let backup = d.path().join(format!("{}.00000028.backup", seg_name(1, 2)));
    fs::write(
        &backup,
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
    )
    .unwrap();
    let partial_name = format!("{}.partial", seg_name(1, 3));
    let seg = segment(d.path(), &seg_name(1, 3), 9);
    let partial = d.path().join(&partial_name);
    fs::rename(&seg, &partial).unwrap();
    let out = expect(
        0,
        &[
            "push",
            hist.to_str().unwrap(),
            backup.to_str().unwrap(),
            partial.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    let kinds: Vec<String> = out
        .of("segment")
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["history", "backup", "partial"]);
    assert!(arch.join("history/00000002.history.ws").exists());
    for p in [&hist, &backup, &partial] {
        let n = p.file_name().unwrap().to_str().unwrap();
        let dest = d.path().join("restored");
        expect(
            0,
            &[
                "fetch",
                n,
                dest.to_str().unwrap(),
                "--from",
                arch.to_str().unwrap(),
            ],
        );
        assert_eq!(fs::read(&dest).unwrap(), fs::read(p).unwrap(), "{n}");
    }
    // The segment itself, asked for by name: not in the archive (only its .partial is),
    // unless --or-partial; once the whole segment is archived, that one is taken.
    let a = arch.to_str().unwrap();
    let dest = d.path().join("restored");
    let dest = dest.to_str().unwrap();
    expect(1, &["fetch", &seg_name(1, 3), dest, "--from", a]);
    let out = expect(
        0,
        &["fetch", &seg_name(1, 3), dest, "--from", a, "--or-partial"],
    );
    assert_eq!(out.one("segment")["source"], "partial");
    assert_eq!(fs::read(dest).unwrap(), fs::read(&partial).unwrap());
    fs::create_dir(d.path().join("w")).unwrap();
    let whole = segment(&d.path().join("w"), &seg_name(1, 3), 10);
    expect(0, &["push", whole.to_str().unwrap(), "--to", a]);
    let out = expect(
        0,
        &["fetch", &seg_name(1, 3), dest, "--from", a, "--or-partial"],
    );
    assert_eq!(out.one("segment")["source"], "archive");
    assert_eq!(fs::read(dest).unwrap(), fs::read(&whole).unwrap());
    // A history file for a timeline that does not exist yet: the quiet "not found".
    let out = expect(
        1,
        &[
            "fetch",
            "00000003.history",
            "x",
            "--from",
            arch.to_str().unwrap(),
        ],
    );
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        out.stderr
    );
}

#[test]
fn fetch_exit_codes_tell_missing_from_corrupt_from_unreachable() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let name = seg_name(1, 4);
    let src = segment(d.path(), &name, 4);
    expect(0, &["push", src.to_str().unwrap(), "--to", a]);
    let datadir = d.path().join("data");
    fs::create_dir(&datadir).unwrap();
    let fetch = |name: &str, extra: &[&str]| {
        finished(
            wal_ship()
                .current_dir(&datadir)
                .args(["fetch", name, "pg_wal_RECOVERYXLOG", "--from", a])
                .args(extra)
                .output()
                .unwrap(),
        )
    };

    // Missing: exit 1, nothing on stderr or stdout (PostgreSQL asks for these all the time).
    let out = fetch(&seg_name(1, 5), &[]);
    check(1, &out, &"missing");
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        out.stderr
    );

    // Corrupt: exit 126 and a loud one-line error, nothing written at %p.
    flip_bit(&object_path(&arch, &name));
    let out = fetch(&name, &[]);
    check(126, &out, &"corrupt");
    let err = &out.stderr;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is corrupt"), "{err}");
    assert!(!datadir.join("pg_wal_RECOVERYXLOG").exists());
    // Even in standby mode: replaying a corrupt segment is never right.
    fs::write(datadir.join("standby.signal"), "").unwrap();
    check(126, &fetch(&name, &[]), &"corrupt in standby mode");
    fs::remove_file(datadir.join("standby.signal")).unwrap();

    // Archive unreachable (an unmounted share leaves an empty directory: no marker).
    let empty = d.path().join("empty-mountpoint");
    fs::create_dir(&empty).unwrap();
    for target in [empty.to_str().unwrap(), "/nonexistent/wal-ship-archive"] {
        let out = finished(
            wal_ship()
                .current_dir(&datadir)
                .args(["fetch", &name, "p", "--from", target])
                .output()
                .unwrap(),
        );
        // Archive recovery (no standby.signal): stop rather than end recovery early.
        check(126, &out, &target);
        assert!(
            out.stderr
                .contains("stops recovery instead of ending it early"),
            "{}",
            out.stderr
        );
        // Standby mode: the ordinary code; PostgreSQL retries.
        fs::write(datadir.join("standby.signal"), "").unwrap();
        let out = finished(
            wal_ship()
                .current_dir(&datadir)
                .args(["fetch", &name, "p", "--from", target])
                .output()
                .unwrap(),
        );
        check(69, &out, &target);
        fs::remove_file(datadir.join("standby.signal")).unwrap();
        // The explicit flag wins over the guess.
        let out = finished(
            wal_ship()
                .current_dir(&datadir)
                .args(["fetch", &name, "p", "--from", target, "--on-error", "retry"])
                .output()
                .unwrap(),
        );
        check(69, &out, &target);
    }
    // A mistyped restore_command: outside standby mode, stop; in standby mode, a usage error.
    let typo = |d: &std::path::Path| {
        finished(
            wal_ship()
                .current_dir(d)
                .args(["fetch", &name, "p", "--form", a])
                .output()
                .unwrap(),
        )
    };
    let out = typo(&datadir);
    check(126, &out, &"typo");
    assert!(out.stderr.contains("--form"), "{}", out.stderr);
    assert!(out.stderr.contains("fix restore_command"), "{}", out.stderr);
    fs::write(datadir.join("standby.signal"), "").unwrap();
    check(2, &typo(&datadir), &"typo, standby");
    fs::remove_file(datadir.join("standby.signal")).unwrap();
    check(
        0,
        &Run::text(
            "wal-ship fetch --help",
            wal_ship()
                .current_dir(&datadir)
                .args(["fetch", "--help"])
                .output()
                .unwrap(),
        ),
        &"help",
    );
    // Not a WAL name: outside standby mode that must not read as "end of archive" either.
    check(126, &fetch("RECOVERYHISTORY", &[]), &"bad name");
    check(
        65,
        &fetch("RECOVERYHISTORY", &["--on-error", "retry"]),
        &"bad name, retry",
    );
}

#[test]
fn encryption_at_rest_round_trips_and_needs_the_key() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let key = d.path().join("key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    let other = d.path().join("other");
    fs::write(&other, [7u8; 32]).unwrap();
    let hist = d.path().join("00000002.history");
    let text = "1\t0/700000\tsecret reason text\n";
    fs::write(&hist, text).unwrap();
    let name = seg_name(1, 6);
    let seg = segment(d.path(), &name, 6);
    let out = expect(
        0,
        &[
            "push",
            hist.to_str().unwrap(),
            seg.to_str().unwrap(),
            "--to",
            a,
            "--encrypt-key-file",
            key.to_str().unwrap(),
        ],
    );
    for r in out.of("segment") {
        assert_eq!(r["encrypted"], true);
        assert!(r.get("sha256").is_none(), "{r}");
    }
    // The key never shows up, and neither does the plaintext.
    let all = out.stdout.clone() + &out.stderr;
    assert!(!all.contains(&"5a".repeat(32)));
    let stored = fs::read(arch.join("history/00000002.history.ws")).unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("secret reason"));

    let dest = d.path().join("out");
    expect(
        0,
        &[
            "fetch",
            "00000002.history",
            dest.to_str().unwrap(),
            "--from",
            a,
            "--encrypt-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read_to_string(&dest).unwrap(), text);
    expect(
        0,
        &[
            "fetch",
            &name,
            dest.to_str().unwrap(),
            "--from",
            a,
            "--encrypt-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&seg).unwrap());
    // No key, or the wrong key: restoring cannot go on.
    let out = expect(126, &["fetch", &name, "x", "--from", a]);
    assert!(
        out.stderr.contains("no --encrypt-key-file"),
        "{}",
        out.stderr
    );
    let out = expect(
        126,
        &[
            "fetch",
            &name,
            "x",
            "--from",
            a,
            "--encrypt-key-file",
            other.to_str().unwrap(),
        ],
    );
    assert!(
        out.stderr.contains("not with the given key"),
        "{}",
        out.stderr
    );
    // A duplicate push is recognised with the key, and without encryption too (decoded).
    let out = expect(
        0,
        &[
            "push",
            seg.to_str().unwrap(),
            "--to",
            a,
            "--encrypt-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(out.of("segment")[0]["action"], "duplicate");
    // Unencrypted push of the same bytes: the archive's copy cannot be compared without the key.
    let out = expect(65, &["push", seg.to_str().unwrap(), "--to", a]);
    assert!(
        out.stderr
            .contains("cannot tell whether it is the same file"),
        "{}",
        out.stderr
    );
    // verify: without the key only the headers can be read; with it, everything, and a
    // flipped bit in sealed bytes is found.
    let out = expect(0, &["verify", "--archive", a]);
    assert_eq!(out.summary()["unverified"], 2);
    assert!(out.stderr.contains("were not checked"), "{}", out.stderr);
    let k = key.to_str().unwrap();
    let out = expect(0, &["verify", "--archive", a, "--encrypt-key-file", k]);
    assert_eq!(
        (
            out.summary()["checked"].as_u64(),
            out.summary()["unverified"].as_u64()
        ),
        (Some(2), Some(0))
    );
    let obj = object_path(&arch, &name);
    let good = fs::read(&obj).unwrap();
    flip_bit(&obj);
    let out = expect(1, &["verify", "--archive", a, "--encrypt-key-file", k]);
    assert!(out.of("problem")[0]["message"]
        .as_str()
        .unwrap()
        .contains("decryption failed"));
    fs::write(&obj, good).unwrap();
    // A key file that is not a key.
    fs::write(&other, "hunter2").unwrap();
    let out = expect(
        65,
        &[
            "push",
            seg.to_str().unwrap(),
            "--to",
            a,
            "--encrypt-key-file",
            other.to_str().unwrap(),
        ],
    );
    assert!(!out.stderr.contains("hunter2"));
}

#[test]
fn prefetch_spools_the_next_segments_and_serves_them_locally() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let names: Vec<String> = (1..=6).map(|i| seg_name(1, 0xFE + i)).collect();
    let files: Vec<String> = names
        .iter()
        .map(|n| segment(d.path(), n, 1).to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["push", "--to", a, "--quiet"];
    args.extend(files.iter().map(String::as_str));
    let out = expect(0, &args);
    assert!(out.stdout.is_empty(), "--quiet");
    let spool = d.path().join("spool");
    let sp = spool.to_str().unwrap();
    let dest = d.path().join("p");
    let p = dest.to_str().unwrap();

    let out = expect(
        0,
        &[
            "fetch",
            &names[0],
            p,
            "--from",
            a,
            "--prefetch",
            "3",
            "--spool",
            sp,
        ],
    );
    let r = &out.of("segment")[0];
    assert_eq!(
        (r["source"].as_str(), r["prefetched"].as_u64()),
        (Some("archive"), Some(3))
    );
    // Crossing a log id boundary (…FF → next log id) is handled.
    let mut spooled = tree(&spool);
    spooled.sort();
    assert_eq!(
        spooled,
        names[1..4]
            .iter()
            .map(|n| format!("{n}.ws"))
            .collect::<Vec<_>>()
    );

    // The next one comes from the spool, even with the archive gone.
    let moved = d.path().join("archive-away");
    fs::rename(&arch, &moved).unwrap();
    let out = expect(
        0,
        &[
            "fetch",
            &names[1],
            p,
            "--from",
            a,
            "--prefetch",
            "3",
            "--spool",
            sp,
        ],
    );
    assert_eq!(out.of("segment")[0]["source"], "spool");
    assert!(
        out.stderr.contains("prefetching after"),
        "archive gone: a warning, not a failure"
    );
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&files[1]).unwrap());
    fs::rename(&moved, &arch).unwrap();

    // A damaged spool copy is dropped and fetched again from the archive.
    flip_bit(&spool.join(format!("{}.ws", names[2])));
    let out = expect(
        0,
        &[
            "fetch",
            &names[2],
            p,
            "--from",
            a,
            "--prefetch",
            "3",
            "--spool",
            sp,
        ],
    );
    assert_eq!(out.of("segment")[0]["source"], "archive");
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&files[2]).unwrap());
    // Passed segments are forgotten; the archive ends at names[5].
    let spooled = tree(&spool);
    assert_eq!(
        spooled,
        names[3..6]
            .iter()
            .map(|n| format!("{n}.ws"))
            .collect::<Vec<_>>()
    );

    // Recovery ends (a recovery target, a promotion): PostgreSQL asks for the next
    // timeline's history file, which is not there; what is still spooled would never be
    // asked for, and goes.
    let out = run(&[
        "fetch",
        "00000002.history",
        p,
        "--from",
        a,
        "--prefetch",
        "3",
        "--spool",
        sp,
    ]);
    check(1, &out, &"no history file");
    assert!(tree(&spool).is_empty(), "{:?}", tree(&spool));

    // --prefetch outside a data directory needs a spool; as a restore_command
    // misconfiguration it stops recovery rather than end it.
    let out = finished(
        wal_ship()
            .current_dir(d.path())
            .args(["fetch", &names[0], "p", "--from", a, "--prefetch", "2"])
            .output()
            .unwrap(),
    );
    check(126, &out, &"no spool");
    assert!(
        out.stderr.contains("--prefetch needs --spool"),
        "{}",
        out.stderr
    );
}

#[test]
fn concurrent_pushes_of_one_name_store_exactly_one_file() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    // Six different files under one name, pushed at once (two clusters sharing an archive).
    let name = seg_name(1, 0x20);
    let sources: Vec<std::path::PathBuf> = (0..6)
        .map(|i| {
            let dir = d.path().join(format!("src{i}"));
            fs::create_dir(&dir).unwrap();
            segment(&dir, &name, 10 + i)
        })
        .collect();
    let spawn = |src: &std::path::Path| {
        std::process::Command::new(bin())
            .args(["push", src.to_str().unwrap(), "--to", a])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = sources.iter().map(|s| spawn(s)).collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| finished(c.wait_with_output().unwrap()))
        .collect();
    let winners: Vec<usize> = (0..6)
        .filter(|i| outs[*i].status.code() == Some(0))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        outs.iter().map(|o| o.status.code()).collect::<Vec<_>>()
    );
    for (i, o) in outs.iter().enumerate() {
        if i != winners[0] {
            check(65, o, &"a loser");
        }
    }
    let dest = d.path().join("restored");
    expect(0, &["fetch", &name, dest.to_str().unwrap(), "--from", a]);
    assert!(
        fs::read(&dest).unwrap() == fs::read(&sources[winners[0]]).unwrap(),
        "the winner's bytes"
    );

    // Six copies of the same file at once: all succeed, exactly one stores.
    let name = seg_name(1, 0x21);
    let src = segment(d.path(), &name, 1);
    let children: Vec<_> = (0..6).map(|_| spawn(&src)).collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| finished(c.wait_with_output().unwrap()))
        .collect();
    let mut stored = 0;
    for o in &outs {
        check(0, o, &"same content");
        stored += o
            .of("segment")
            .iter()
            .filter(|r| r["action"] == "stored")
            .count();
    }
    assert_eq!(stored, 1);
    assert!(
        tree(&arch).iter().all(|f| !f.ends_with(".tmp")),
        "{:?}",
        tree(&arch)
    );
}

#[test]
fn a_truncated_archived_copy_is_never_taken_for_a_duplicate() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let name = seg_name(1, 0x30);
    let src = segment(d.path(), &name, 3);
    expect(
        0,
        &[
            "push",
            src.to_str().unwrap(),
            "--to",
            a,
            "--compress",
            "none",
        ],
    );
    // Something (a copy tool, a file system without ordering) left the object half-written:
    // its header still says the right checksum.
    let obj = object_path(&arch, &name);
    let full = fs::read(&obj).unwrap();
    fs::write(&obj, &full[..full.len() / 2]).unwrap();
    let out = expect(65, &["push", src.to_str().unwrap(), "--to", a]);
    assert!(out.stderr.contains("truncated"), "{}", out.stderr);
    assert_eq!(
        fs::read(&obj).unwrap().len(),
        full.len() / 2,
        "never overwritten"
    );
    let out = expect(126, &["fetch", &name, "x", "--from", a]);
    assert!(
        out.stderr.contains("truncated or damaged"),
        "{}",
        out.stderr
    );
    let out = expect(1, &["verify", "--archive", a]);
    assert_eq!(out.of("problem")[0]["problem"], "corrupt");
}

#[test]
fn push_refuses_a_directory_that_init_did_not_make_an_archive() {
    // An empty directory is what a share that is not mounted leaves: segments pushed there
    // would be acknowledged, then hidden once it is mounted. Refused (69: PostgreSQL keeps
    // the WAL and retries), naming the fix; nothing is written.
    let d = scratch();
    let arch = d.path().join("mnt");
    fs::create_dir(&arch).unwrap();
    let a = arch.to_str().unwrap();
    let src = segment(d.path(), &seg_name(1, 1), 1);
    let out = expect(69, &["push", src.to_str().unwrap(), "--to", a]);
    assert!(
        out.stderr.contains("not a wal-ship archive")
            && out.stderr.contains(&format!("wal-ship init --archive {a}")),
        "{}",
        out.stderr
    );
    assert!(tree(&arch).is_empty(), "{:?}", tree(&arch));
    // init makes it one (and the directory, if missing); again, it changes nothing.
    let out = expect(0, &["init", "--archive", a]);
    assert_eq!(out.one("archive")["created"], true);
    let out = expect(0, &["init", "--archive", a]);
    assert_eq!(out.one("archive")["created"], false);
    expect(0, &["push", src.to_str().unwrap(), "--to", a]);
    let fresh = d.path().join("new/archive");
    expect(0, &["init", "--archive", fresh.to_str().unwrap()]);
    assert_eq!(tree(&fresh), ["wal-ship.json"]);
}

#[test]
fn as_partial_stores_a_segment_under_its_partial_name() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let seg = segment(d.path(), &seg_name(1, 7), 7);
    let out = expect(
        0,
        &["push", seg.to_str().unwrap(), "--to", a, "--as-partial"],
    );
    let rec = out.one("segment");
    assert_eq!(rec["name"], format!("{}.partial", seg_name(1, 7)));
    assert_eq!(rec["kind"], "partial");
    // Under its own name the segment is still free (the whole one comes there later).
    expect(0, &["push", seg.to_str().unwrap(), "--to", a]);
    // Only segments.
    let hist = d.path().join("00000002.history");
    fs::write(&hist, "1\t0/3000000\tno recovery target specified\n").unwrap();
    expect(
        2,
        &["push", hist.to_str().unwrap(), "--to", a, "--as-partial"],
    );
}

/// A segment of another database system (a second cluster pushing to the same archive) is
/// refused in the data directory restore_command runs in, with 126 in archive recovery and
/// in standby mode alike: PostgreSQL would take it for the end of the archive and end
/// recovery early on a new timeline. The system of the data directory is the first field of
/// global/pg_control; the same system is restored, and so is anything outside a data
/// directory (nothing to compare with).
#[test]
fn fetch_refuses_a_segment_of_another_database_system() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let name = seg_name(1, 4);
    let src = segment(d.path(), &name, 4);
    expect(0, &["push", src.to_str().unwrap(), "--to", a]);
    let datadir = d.path().join("data");
    fs::create_dir_all(datadir.join("global")).unwrap();
    let fetch = |dir: &std::path::Path| {
        finished(
            wal_ship()
                .current_dir(dir)
                .args(["fetch", &name, "RECOVERYXLOG", "--from", a])
                .output()
                .unwrap(),
        )
    };
    let control = |sysid: u64| {
        let mut b = sysid.to_le_bytes().to_vec();
        b.resize(8192, 0);
        fs::write(datadir.join("global/pg_control"), b).unwrap();
    };
    control(7_301_000_000_000_000_002);
    for standby in [false, true] {
        if standby {
            fs::write(datadir.join("standby.signal"), "").unwrap();
        }
        let out = fetch(&datadir);
        check(126, &out, &"another system");
        assert!(
            out.stderr.contains("another cluster archives there too"),
            "{}",
            out.stderr
        );
        assert!(!datadir.join("RECOVERYXLOG").exists());
    }
    // The system the segment is from (util's synthetic segments): restored.
    control(7_301_000_000_000_000_001);
    check(0, &fetch(&datadir), &"same system");
    assert!(datadir.join("RECOVERYXLOG").exists());
    // Outside a data directory: nothing to compare with.
    check(0, &fetch(d.path()), &"no data directory");
}
