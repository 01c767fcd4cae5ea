//! verify finds deleted and damaged segments, broken timelines and strangers; clean removes
//! what is older than a segment and nothing else.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::util::*;

/// An archive with segments `range` on timeline `tli`.
fn fill(arch: &Path, scratch: &Path, tli: u32, range: std::ops::RangeInclusive<u64>) {
    let files: Vec<String> = range
        .map(|i| {
            segment(scratch, &seg_name(tli, i), i as u8)
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut args = vec!["push", "--to", arch.to_str().unwrap(), "--quiet"];
    args.extend(files.iter().map(String::as_str));
    expect(0, &args);
}

fn problems(out: &Run) -> Vec<(String, String)> {
    out.of("problem")
        .iter()
        .map(|p| {
            let what = p["name"]
                .as_str()
                .or(p["from"].as_str())
                .unwrap_or("")
                .to_owned();
            (p["problem"].as_str().unwrap().to_owned(), what)
        })
        .collect()
}

#[test]
fn verify_finds_a_deleted_and_a_flipped_bit_segment() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    fill(&arch, d.path(), 1, 1..=8);
    let out = expect(0, &["verify", "--archive", a]);
    let sum = out.summary();
    assert_eq!(
        (sum["segments"].as_u64(), sum["checked"].as_u64()),
        (Some(8), Some(8))
    );
    assert_eq!(sum["first_segment"], seg_name(1, 1).as_str());
    assert_eq!(sum["last_segment"], seg_name(1, 8).as_str());
    assert_eq!(sum["problems"], 0);

    fs::remove_file(object_path(&arch, &seg_name(1, 4))).unwrap();
    flip_bit(&object_path(&arch, &seg_name(1, 6)));
    let out = expect(1, &["verify", "--archive", a, "--jobs", "3"]);
    assert_eq!(
        problems(&out),
        vec![
            ("corrupt".to_owned(), seg_name(1, 6)),
            ("gap".to_owned(), seg_name(1, 4))
        ]
    );
    let gap = &out.of("problem")[1];
    assert_eq!(
        (gap["timeline"].as_u64(), gap["missing"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(gap["to"], seg_name(1, 4).as_str());
    let sum = out.summary();
    assert_eq!(
        (
            sum["gaps"].as_u64(),
            sum["missing_segments"].as_u64(),
            sum["corrupt"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert!(out.stderr.contains("2 problem(s)"), "{}", out.stderr);

    // A range that leaves the hole out still finds the damage in it.
    let out = expect(1, &["verify", "--archive", a, "--from", &seg_name(1, 5)]);
    assert_eq!(problems(&out), vec![("corrupt".to_owned(), seg_name(1, 6))]);
    // And a range with neither is clean; --from before the first stored segment is a gap.
    expect(
        0,
        &[
            "verify",
            "--archive",
            a,
            "--from",
            &seg_name(1, 7),
            "--to",
            &seg_name(1, 8),
        ],
    );
    let out = expect(
        1,
        &[
            "verify",
            "--archive",
            a,
            "--from",
            &seg_name(1, 0),
            "--to",
            &seg_name(1, 2),
        ],
    );
    assert_eq!(problems(&out), vec![("gap".to_owned(), seg_name(1, 0))]);
    // A directory that is not an archive is an error, not an empty archive.
    let out = expect(69, &["verify", "--archive", d.path().to_str().unwrap()]);
    assert!(
        out.stderr.contains("wal-ship.json is missing"),
        "{}",
        out.stderr
    );
}

#[test]
fn verify_follows_timelines_through_their_history_files() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    // Timeline 1: segments 1..5; promotion in segment 6 (0/680000 with 1 MiB segments).
    fill(&arch, d.path(), 1, 1..=5);
    fill(&arch, d.path(), 2, 6..=8);
    let hist = d.path().join("00000002.history");
    fs::write(&hist, "1\t0/680000\tno recovery target specified\n").unwrap();
    expect(0, &["push", hist.to_str().unwrap(), "--to", a]);
    let out = expect(0, &["verify", "--archive", a]);
    assert_eq!(out.summary()["timelines"], serde_json::json!([1, 2]));

    // The parent timeline must reach the branch point: a missing last segment of timeline 1
    // is found although no later segment of timeline 1 exists.
    fs::remove_file(object_path(&arch, &seg_name(1, 5))).unwrap();
    // And the child must start there.
    fs::remove_file(object_path(&arch, &seg_name(2, 6))).unwrap();
    let out = expect(1, &["verify", "--archive", a]);
    assert_eq!(
        problems(&out),
        vec![
            ("gap".to_owned(), seg_name(1, 5)),
            ("gap".to_owned(), seg_name(2, 6))
        ]
    );

    // Timeline 3 without its history file; a history file that contradicts its parent's.
    fill(&arch, d.path(), 3, 9..=9);
    let bad = d.path().join("00000004.history");
    fs::write(&bad, "1\t0/500000\tx\n3\t0/A00000\ty\n").unwrap();
    expect(0, &["push", bad.to_str().unwrap(), "--to", a]);
    let out = expect(1, &["verify", "--archive", a]);
    let found = problems(&out);
    assert!(
        found.contains(&("missing_history".to_owned(), String::new())),
        "{found:?}"
    );
    // 4's parent (3) has no history file to compare with; its list skips timeline 2 though.
    let three = d.path().join("00000003.history");
    fs::write(
        &three,
        "1\t0/680000\tno recovery target specified\n2\t0/900000\tz\n",
    )
    .unwrap();
    expect(0, &["push", three.to_str().unwrap(), "--to", a]);
    let out = expect(1, &["verify", "--archive", a]);
    let found = problems(&out);
    assert!(
        found.contains(&("history".to_owned(), "00000004.history".to_owned())),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|(p, _)| p == "missing_history"),
        "{found:?}"
    );
}

#[test]
fn verify_notices_two_clusters_sharing_an_archive() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    fill(&arch, d.path(), 1, 1..=2);
    let n = wal_ship::name::WalName::parse(&seg_name(1, 3)).unwrap();
    let stranger = d.path().join(n.as_str());
    fs::write(&stranger, wal_ship::segment::synthetic(&n, SEG, 42, 0)).unwrap();
    expect(
        0,
        &[
            "push",
            stranger.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    let out = expect(1, &["verify", "--archive", arch.to_str().unwrap()]);
    let p = &out.of("problem")[0];
    assert_eq!(p["problem"], "mixed_systems");
    assert!(
        p["message"].as_str().unwrap().contains("42 (1 segments)"),
        "{p}"
    );
}

#[test]
fn clean_removes_older_files_and_keeps_history() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    fill(&arch, d.path(), 1, 1..=6);
    fill(&arch, d.path(), 2, 7..=8);
    let hist = d.path().join("00000002.history");
    fs::write(&hist, "1\t0/700000\tno recovery target specified\n").unwrap();
    let backup = d.path().join(format!("{}.00000028.backup", seg_name(1, 2)));
    fs::write(&backup, "START WAL LOCATION: 0/200028\n").unwrap();
    expect(
        0,
        &[
            "push",
            hist.to_str().unwrap(),
            backup.to_str().unwrap(),
            "--to",
            a,
        ],
    );
    // A temp file from a push killed two hours ago, and one from a push running now.
    let old_tmp = arch.join("0000000100000000/.000000010000000000000009.ws.1.2.tmp");
    fs::write(&old_tmp, b"partial").unwrap();
    fs::File::options()
        .write(true)
        .open(&old_tmp)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let new_tmp = arch.join("0000000100000000/.00000001000000000000000A.ws.3.4.tmp");
    fs::write(&new_tmp, b"partial").unwrap();

    // Dry run: the list, nothing removed. %r-style: timeline of the name does not matter.
    let keep = seg_name(2, 4);
    let out = expect(
        0,
        &["clean", "--archive", a, "--keep-from", &keep, "--dry-run"],
    );
    let removed: Vec<String> = out
        .of("removed")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    let mut want: Vec<String> = (1..=3).map(|i| seg_name(1, i)).collect();
    want.insert(2, backup.file_name().unwrap().to_str().unwrap().to_owned());
    want.push("0000000100000000/.000000010000000000000009.ws.1.2.tmp".to_owned());
    assert_eq!(removed, want);
    assert!(object_path(&arch, &seg_name(1, 1)).exists());
    assert!(old_tmp.exists());

    let out = expect(0, &["clean", "--archive", a, "--keep-from", &keep]);
    let sum = out.summary();
    assert_eq!(
        (sum["removed"].as_u64(), sum["temp_files_removed"].as_u64()),
        (Some(4), Some(1))
    );
    for i in 1..=3 {
        assert!(!object_path(&arch, &seg_name(1, i)).exists());
    }
    assert!(!old_tmp.exists());
    assert!(
        new_tmp.exists(),
        "a recent temp file may belong to a running push"
    );
    assert!(object_path(&arch, &seg_name(1, 4)).exists());
    assert!(arch.join("history/00000002.history.ws").exists());
    let out = expect(0, &["verify", "--archive", a]);
    assert_eq!(out.summary()["first_segment"], seg_name(1, 4).as_str());

    // A --keep-from past every segment would empty the archive: refused unless forced.
    let out = expect(
        65,
        &["clean", "--archive", a, "--keep-from", &seg_name(1, 100)],
    );
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert!(object_path(&arch, &seg_name(1, 4)).exists());
    let out = expect(
        0,
        &[
            "clean",
            "--archive",
            a,
            "--keep-from",
            &seg_name(1, 100),
            "--force",
        ],
    );
    assert_eq!(out.summary()["kept"], 1, "only the history file");
    expect(
        2,
        &["clean", "--archive", a, "--keep-from", "00000002.history"],
    );
    // Any bad value is a usage error (lower-case hex too); a .backup name stands for its
    // segment, in the summary as well.
    let out = expect(
        2,
        &[
            "clean",
            "--archive",
            a,
            "--keep-from",
            "00000001000000000000000a",
        ],
    );
    assert!(out.stderr.contains("--keep-from"), "{}", out.stderr);
    let out = expect(
        0,
        &[
            "clean",
            "--archive",
            a,
            "--keep-from",
            &format!("{}.00000028.backup", seg_name(1, 2)),
            "--dry-run",
        ],
    );
    assert_eq!(out.summary()["keep_from"], seg_name(1, 2).as_str());
}

/// `clean --keep-backups N` keeps from where the N newest base backups start. After a
/// point-in-time recovery to an earlier point, timeline 2 branches at segment 5 while the old
/// timeline 1 went on to segment 9 and was backed up at 7: the backup on timeline 2 is the
/// newest although it starts before that one, and what it needs (timeline 2 from 5) is kept.
#[test]
fn clean_keep_backups_keeps_what_the_newest_backups_need_across_timelines() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    // No backup history file: nothing is removed, and the note says where they come from.
    fill(&arch, d.path(), 1, 1..=9);
    let out = expect(0, &["clean", "--archive", a, "--keep-backups", "1"]);
    let note = out.one("note");
    assert_eq!(note["code"], "too_few_backups", "{}", out.dump());
    assert!(
        note["message"].as_str().unwrap().contains("pg_basebackup"),
        "{note}"
    );
    assert_eq!(out.summary()["removed"], 0);
    assert!(out.stderr.contains("nothing removed"), "{}", out.stderr);

    fill(&arch, d.path(), 2, 5..=8);
    let hist = d.path().join("00000002.history");
    fs::write(&hist, "1\t0/5000000\tbefore 2026-12-01 00:00:00+00\n").unwrap();
    let backup = |tli: u32, seg: u64| {
        let p = d
            .path()
            .join(format!("{}.00000028.backup", seg_name(tli, seg)));
        fs::write(&p, format!("START WAL LOCATION: 0/{seg}000028\n")).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (b1, b2, b3) = (backup(1, 3), backup(1, 7), backup(2, 5));
    expect(
        0,
        &["push", hist.to_str().unwrap(), &b1, &b2, &b3, "--to", a],
    );
    let name = |p: &str| {
        Path::new(p)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let removed = |out: &Run| -> Vec<String> {
        out.of("removed")
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };

    // More backups asked for than there are: nothing removed.
    let out = expect(0, &["clean", "--archive", a, "--keep-backups", "4"]);
    assert_eq!(out.one("note")["code"], "too_few_backups");
    assert!(out.stderr.contains("3 base backups"), "{}", out.stderr);
    assert_eq!(removed(&out), Vec::<String>::new());

    // The three: keep from the first, timeline 1's segment 3.
    let out = expect(
        0,
        &["clean", "--archive", a, "--keep-backups", "3", "--dry-run"],
    );
    assert_eq!(
        removed(&out),
        vec![seg_name(1, 1), seg_name(1, 2)],
        "{}",
        out.dump()
    );
    assert_eq!(out.summary()["keep_from_backup"], name(&b1).as_str());

    // The newest is timeline 2's: it needs timeline 2 from segment 5. Timeline 1's backup
    // at 7 is among the two newest, and it starts later: keep from 5 either way.
    for n in ["1", "2"] {
        let out = expect(
            0,
            &["clean", "--archive", a, "--keep-backups", n, "--dry-run"],
        );
        let s = out.summary();
        assert_eq!(s["keep_from"], seg_name(2, 5).as_str(), "{}", out.dump());
        assert_eq!(s["keep_from_backup"], name(&b3).as_str());
        assert_eq!(s["backups"], 3);
        let mut want: Vec<String> = (1..=4).map(|i| seg_name(1, i)).collect();
        want.insert(3, name(&b1));
        assert_eq!(removed(&out), want, "--keep-backups {n}");
    }
    // Beside --keep-from (a standby's %r), what either needs is kept: the older start. A %r
    // past every archived segment (a streaming standby's restart point) is no typo then.
    for (from, want) in [
        (seg_name(1, 2), seg_name(1, 2)),
        (seg_name(2, 7), seg_name(2, 5)),
        (seg_name(2, 100), seg_name(2, 5)),
    ] {
        let out = expect(
            0,
            &[
                "clean",
                "--archive",
                a,
                "--keep-from",
                &from,
                "--keep-backups",
                "1",
                "--dry-run",
            ],
        );
        assert_eq!(out.summary()["keep_from"], want.as_str(), "{}", out.dump());
    }
    let out = expect(0, &["clean", "--archive", a, "--keep-backups", "1"]);
    assert_eq!(out.summary()["removed"], 5);
    for i in 5..=8 {
        assert!(
            object_path(&arch, &seg_name(2, i)).exists(),
            "timeline 2, {i}"
        );
    }
    assert!(object_path(&arch, &seg_name(1, 9)).exists());
    assert!(!object_path(&arch, &seg_name(1, 4)).exists());
    assert!(object_path(&arch, &name(&b2)).exists());
    assert!(arch.join("history/00000002.history.ws").exists());

    // Usage: a retention, N from 1, --force only with --keep-from alone.
    for args in [
        vec!["clean", "--archive", a],
        vec!["clean", "--archive", a, "--keep-backups", "0"],
        vec!["clean", "--archive", a, "--keep-backups", "1", "--force"],
    ] {
        let out = expect(2, &args);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

/// A removal that fails (here the archive's directory is read-only) exits 74 naming the file
/// and writes no `removed` record for what it did not remove.
#[test]
fn clean_writes_removed_records_only_for_what_it_removed() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    fill(&arch, d.path(), 1, 1..=4);
    chown_postgres(&arch);
    let dir = arch.join("0000000100000000");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "clean",
        "--archive",
        arch.to_str().unwrap(),
        "--keep-from",
        &seg_name(1, 3),
    ]);
    testkit::hermetic(&mut cmd);
    if let Some((uid, gid)) = testkit::run_as() {
        cmd.uid(uid).gid(gid);
    }
    let out = testkit::Run::new("wal-ship clean (read-only)", cmd.output().unwrap());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.code, 74, "{}", out.dump());
    assert!(out.of("removed").is_empty(), "{}", out.dump());
    assert!(out.stderr.contains("run clean again"), "{}", out.stderr);
    assert!(object_path(&arch, &seg_name(1, 1)).exists());
}

/// Two database systems pushing to one archive, each with a base backup: --keep-backups
/// cannot tell whose backups are the newest (the other's, newest by name, would take every
/// segment of this one), so it refuses with both named and removes nothing; --keep-from
/// still works.
#[test]
fn clean_keep_backups_refuses_backups_of_two_database_systems() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    fill(&arch, d.path(), 1, 1..=4);
    // The other system's segments, further on (as a cluster made by pg_resetwal -l would).
    let other = d.path().join("other");
    fs::create_dir(&other).unwrap();
    let mut files = Vec::new();
    for i in 8..=9u64 {
        let n = wal_ship::name::WalName::parse(&seg_name(1, i)).unwrap();
        let bytes = wal_ship::segment::synthetic(&n, 1 << 20, 42, i as u8);
        let p = other.join(n.as_str());
        fs::write(&p, bytes).unwrap();
        files.push(p.to_str().unwrap().to_owned());
    }
    for (seg, dir) in [(2, d.path()), (8, other.as_path())] {
        let p = dir.join(format!("{}.00000028.backup", seg_name(1, seg)));
        fs::write(&p, "START WAL LOCATION: 0/28\n").unwrap();
        files.push(p.to_str().unwrap().to_owned());
    }
    let mut args = vec!["push", "--to", a, "--quiet"];
    args.extend(files.iter().map(String::as_str));
    expect(0, &args);

    let out = expect(65, &["clean", "--archive", a, "--keep-backups", "1"]);
    assert!(
        out.stderr.contains("2 database systems") && out.stderr.contains("system 42"),
        "{}",
        out.stderr
    );
    assert!(out.of("removed").is_empty());
    assert!(object_path(&arch, &seg_name(1, 1)).exists());
    expect(
        0,
        &["clean", "--archive", a, "--keep-from", &seg_name(1, 2)],
    );
    assert!(!object_path(&arch, &seg_name(1, 1)).exists());
}

/// A restored copy archives into the primary's archive on timeline 2, branched at segment
/// 0x0C, while the primary goes on on timeline 1 and is backed up at 0x11; the copy is backed
/// up at 0x14. Ranking by timeline alone, --keep-backups 1 kept the copy's backup and removed
/// the primary's newest backup's WAL (found by an audit). Both lines' newest backups are kept
/// now, with a note. A linear history (timeline 1 backed up only before the branch) is
/// ranked as before.
#[test]
fn clean_keep_backups_keeps_both_lines_of_a_divergent_timeline() {
    let d = scratch();
    let archive = |name: &str, tl1_backups: &[u64], tl1_last: u64| {
        let arch = d.path().join(name);
        testkit::new_wal_archive(&arch);
        let a = arch.to_str().unwrap().to_owned();
        let scratch = d.path().join(format!("{name}-files"));
        fs::create_dir(&scratch).unwrap();
        fill(&arch, &scratch, 1, 1..=tl1_last);
        fill(&arch, &scratch, 2, 0x0C..=0x15);
        // 1 MiB segments: timeline 2 starts in segment 0x0C.
        let hist = scratch.join("00000002.history");
        fs::write(&hist, "1\t0/C00100\tbefore 2026-12-01 00:00:00+00\n").unwrap();
        let mut files = vec![hist.to_str().unwrap().to_owned()];
        for (tli, seg) in tl1_backups.iter().map(|&s| (1, s)).chain([(2, 0x14)]) {
            let p = scratch.join(format!("{}.00000028.backup", seg_name(tli, seg)));
            fs::write(&p, "START WAL LOCATION: 0/28\n").unwrap();
            files.push(p.to_str().unwrap().to_owned());
        }
        let mut args = vec!["push", "--to", a.as_str(), "--quiet"];
        args.extend(files.iter().map(String::as_str));
        expect(0, &args);
        (arch, a)
    };

    let (arch, a) = archive("divergent", &[3, 0x11], 0x12);
    let out = expect(0, &["clean", "--archive", &a, "--keep-backups", "1"]);
    let s = out.summary();
    assert_eq!(s["keep_from"], seg_name(1, 0x11).as_str(), "{}", out.dump());
    let note = out.one("note");
    assert_eq!(note["code"], "divergent_timeline");
    assert!(
        note["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{}.00000028.backup", seg_name(1, 0x11))),
        "{note}"
    );
    for (tli, seg) in [(1, 0x11), (1, 0x12), (2, 0x11), (2, 0x14)] {
        assert!(
            object_path(&arch, &seg_name(tli, seg)).exists(),
            "{tli} {seg}"
        );
    }
    assert!(!object_path(&arch, &seg_name(1, 0x10)).exists());

    // Linear: timeline 1 backed up only before the branch; the promoted line's backup is the
    // newest, and what only the old one needed goes.
    let (arch, a) = archive("linear", &[3], 0x0C);
    let out = expect(0, &["clean", "--archive", &a, "--keep-backups", "1"]);
    assert_eq!(
        out.summary()["keep_from"],
        seg_name(2, 0x14).as_str(),
        "{}",
        out.dump()
    );
    assert!(out.of("note").is_empty(), "{}", out.dump());
    assert!(!object_path(&arch, &seg_name(1, 3)).exists());
}

/// In an encrypted archive with timeline history, --keep-backups needs the key to read where
/// timelines branched: without it, a usage error naming the option and nothing removed.
#[test]
fn clean_keep_backups_reads_encrypted_history_with_the_key_only() {
    let d = scratch();
    let arch = d.path().join("archive");
    testkit::new_wal_archive(&arch);
    let a = arch.to_str().unwrap();
    let key = d.path().join("key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    let k = key.to_str().unwrap();
    let mut files: Vec<String> = (1..=6u64)
        .map(|i| {
            segment(d.path(), &seg_name(1, i), i as u8)
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let hist = d.path().join("00000002.history");
    fs::write(&hist, "1\t0/500100\tno recovery target specified\n").unwrap();
    files.push(hist.to_str().unwrap().to_owned());
    for seg in [2, 4] {
        let p = d
            .path()
            .join(format!("{}.00000028.backup", seg_name(1, seg)));
        fs::write(&p, "START WAL LOCATION: 0/28\n").unwrap();
        files.push(p.to_str().unwrap().to_owned());
    }
    let mut args = vec!["push", "--to", a, "--quiet", "--encrypt-key-file", k];
    args.extend(files.iter().map(String::as_str));
    expect(0, &args);
    let clean = |extra: &[&str]| {
        let mut args = vec!["clean", "--archive", a, "--keep-backups", "1"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = clean(&[]);
    check(2, &out, &"no key");
    assert!(out.stderr.contains("--encrypt-key-file"), "{}", out.stderr);
    assert!(object_path(&arch, &seg_name(1, 1)).exists());
    let out = clean(&["--encrypt-key-file", k]);
    check(0, &out, &"the key");
    assert_eq!(out.summary()["keep_from"], seg_name(1, 4).as_str());
}
