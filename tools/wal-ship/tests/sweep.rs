//! sweep of a spool directory: order, parallelism, resuming, per-file failures, the lock,
//! and a pg_wal directory's .ready files.

use std::fs;

use crate::util::*;

fn names_of(out: &Run) -> Vec<String> {
    out.of("segment")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sweep_ships_a_spool_in_order_in_parallel_and_resumes() {
    let d = scratch();
    let (spool, arch) = (d.path().join("spool"), d.path().join("archive"));
    fs::create_dir(&spool).unwrap();
    testkit::new_wal_archive(&arch);
    let (s, a) = (spool.to_str().unwrap(), arch.to_str().unwrap());
    let segs: Vec<String> = (1..=6).map(|i| seg_name(2, i)).collect();
    for (i, n) in segs.iter().enumerate() {
        segment(&spool, n, i as u8);
    }
    fs::write(
        spool.join("00000002.history"),
        "1\t0/1000000\tno recovery target specified\n",
    )
    .unwrap();
    // pg_receivewal's segment in progress, and a stray file: both left alone.
    fs::rename(
        segment(&spool, &seg_name(2, 7), 7),
        spool.join(format!("{}.partial", seg_name(2, 7))),
    )
    .unwrap();
    fs::write(spool.join("notes.txt"), "x").unwrap();

    let out = expect(0, &["sweep", "--from", s, "--to", a, "--jobs", "3"]);
    let mut want = vec!["00000002.history".to_owned()];
    want.extend(segs.iter().cloned());
    assert_eq!(names_of(&out), want, "history first, then by name");
    let sum = out.summary();
    assert_eq!(sum["mode"], "spool");
    assert_eq!(
        (sum["stored"].as_u64(), sum["failed"].as_u64()),
        (Some(7), Some(0))
    );
    assert_eq!(
        (sum["lag_files"].as_u64(), sum["lag_seconds"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(sum["shipped_through"], segs[5].as_str());

    // Nothing new: nothing done.
    let out = expect(0, &["sweep", "--from", s, "--to", a]);
    assert_eq!(out.summary()["files"], 0);

    // New files: only they are shipped.
    segment(&spool, &seg_name(2, 8), 8);
    let out = expect(0, &["sweep", "--from", s, "--to", a]);
    assert_eq!(names_of(&out), vec![seg_name(2, 8)]);

    // A crash that lost the progress file: everything is checked again, and found there.
    fs::remove_file(spool.join(".wal-ship-sweep.json")).unwrap();
    let out = expect(0, &["sweep", "--from", s, "--to", a, "--jobs", "2"]);
    let sum = out.summary();
    assert_eq!(
        (sum["duplicates"].as_u64(), sum["stored"].as_u64()),
        (Some(8), Some(0))
    );
    // The archive got no temp files or strays.
    assert!(
        tree(&arch)
            .iter()
            .all(|f| f.ends_with(".ws") || f == "wal-ship.json"),
        "{:?}",
        tree(&arch)
    );
    // Segment 7 never left the spool (still .partial there): verify sees that hole.
    let out = expect(1, &["verify", "--archive", a]);
    assert_eq!(out.summary()["segments"], 7);
    let problems = out.of("problem");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["problem"], "gap");
    assert_eq!(problems[0]["from"], seg_name(2, 7).as_str());
}

#[test]
fn a_bad_file_fails_alone_and_holds_the_mark_until_fixed() {
    let d = scratch();
    let (spool, arch) = (d.path().join("spool"), d.path().join("archive"));
    fs::create_dir(&spool).unwrap();
    testkit::new_wal_archive(&arch);
    let (s, a) = (spool.to_str().unwrap(), arch.to_str().unwrap());
    for i in 1..=5 {
        segment(&spool, &seg_name(1, i), i as u8);
    }
    // Segment 3 is half-written (e.g. copied in by a script that crashed).
    let bad = spool.join(seg_name(1, 3));
    let full = fs::read(&bad).unwrap();
    fs::write(&bad, &full[..1000]).unwrap();
    let out = expect(65, &["sweep", "--from", s, "--to", a, "--jobs", "2"]);
    assert_eq!(
        names_of(&out),
        vec![
            seg_name(1, 1),
            seg_name(1, 2),
            seg_name(1, 4),
            seg_name(1, 5)
        ]
    );
    let errs = out.of("error");
    assert_eq!(errs.len(), 1);
    assert!(errs[0]["file"].as_str().unwrap().ends_with(&seg_name(1, 3)));
    let sum = out.summary();
    assert_eq!(sum["failed"], 1);
    assert_eq!(sum["lag_files"], 1);
    assert_eq!(sum["oldest_pending"], seg_name(1, 3).as_str());
    assert_eq!(sum["shipped_through"], seg_name(1, 2).as_str());
    assert!(!object_path(&arch, &seg_name(1, 3)).exists());

    fs::write(&bad, full).unwrap();
    let out = expect(0, &["sweep", "--from", s, "--to", a]);
    let sum = out.summary();
    assert_eq!(
        (sum["stored"].as_u64(), sum["duplicates"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(sum["shipped_through"], seg_name(1, 5).as_str());
}

#[test]
fn a_second_sweep_of_the_same_directory_waits_its_turn() {
    let d = scratch();
    let (spool, arch) = (d.path().join("spool"), d.path().join("archive"));
    fs::create_dir(&spool).unwrap();
    testkit::new_wal_archive(&arch);
    segment(&spool, &seg_name(1, 1), 1);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(spool.join(".wal-ship-sweep.lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = expect(
        75,
        &[
            "sweep",
            "--from",
            spool.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    assert!(
        out.stderr.contains("another wal-ship sweep"),
        "{}",
        out.stderr
    );
    assert!(!object_path(&arch, &seg_name(1, 1)).exists());
    drop(lock);
    expect(
        0,
        &[
            "sweep",
            "--from",
            spool.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    assert!(object_path(&arch, &seg_name(1, 1)).exists());
}

#[test]
fn sweep_of_a_pg_wal_layout_marks_ready_files_done() {
    let d = scratch();
    let (wal, arch) = (d.path().join("pg_wal"), d.path().join("archive"));
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    testkit::new_wal_archive(&arch);
    for i in 1..=4 {
        segment(&wal, &seg_name(1, i), i as u8);
    }
    // 1 was archived already, 2 and 3 are ready, 4 is still being written (no marker).
    fs::write(
        wal.join("archive_status")
            .join(format!("{}.done", seg_name(1, 1))),
        "",
    )
    .unwrap();
    for i in 2..=3 {
        fs::write(
            wal.join("archive_status")
                .join(format!("{}.ready", seg_name(1, i))),
            "",
        )
        .unwrap();
    }
    let out = expect(
        0,
        &[
            "sweep",
            "--from",
            wal.to_str().unwrap(),
            "--to",
            arch.to_str().unwrap(),
        ],
    );
    assert_eq!(names_of(&out), vec![seg_name(1, 2), seg_name(1, 3)]);
    assert_eq!(out.summary()["mode"], "pg_wal");
    let mut status = tree(&wal.join("archive_status"));
    status.sort();
    assert_eq!(
        status,
        vec![
            format!("{}.done", seg_name(1, 1)),
            format!("{}.done", seg_name(1, 2)),
            format!("{}.done", seg_name(1, 3))
        ]
    );
    assert!(!object_path(&arch, &seg_name(1, 4)).exists());
    assert!(
        !wal.join(".wal-ship-sweep.json").exists(),
        "pg_wal mode keeps its state in archive_status"
    );
}
