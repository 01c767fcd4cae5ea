//! `criu-workload`: processes with state, for checkpoint/restore tests and the benchmark.
//!
//! Not part of the tool: the VM test (`tests/vm.rs`, `scripts/criu-vm-guest.sh`) and
//! `bench/criu-wrap.sh` put it into the guest next to `criu-wrap`. Each mode is a process whose
//! state CRIU must carry over, or one that CRIU is known to refuse (to see its real messages):
//!
//! - `mem --mib N --dirty-mib-per-sec R --status FILE`: owns N MiB; every page holds its index
//!   and a generation number, and R MiB/s of pages get a new generation (dirtied). Every second
//!   it checks every page against the generations it remembers and writes
//!   `tick=T dirtied=D checked=C errors=E` to FILE (replaced atomically, no open descriptor).
//!   A restore that lost or mixed up pages shows as `errors>0`; a restore that restarted the
//!   process shows as `tick` going back.
//! - `shm`: attaches a SysV shared memory segment and sleeps (CRIU can dump that only when the
//!   process lives in its own IPC namespace).
//! - `unix-listen PATH` / `unix-connect PATH`: a stream unix socket server and a client that
//!   stays connected to it (dumping the client alone leaves CRIU an external socket).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("mem") => mem(&args[1..]),
        Some("shm") => shm(),
        Some("unix-listen") => unix_listen(args.get(1).map(PathBuf::from)),
        Some("unix-connect") => unix_connect(args.get(1).map(PathBuf::from)),
        _ => Err("usage: criu-workload mem --mib N --dirty-mib-per-sec R --status FILE | shm | unix-listen PATH | unix-connect PATH".into()),
    };
    if let Err(e) = result {
        eprintln!("criu-workload: {e}");
        std::process::exit(2);
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The byte a page of this index and generation is filled with.
fn pattern(idx: usize, generation: u32) -> u8 {
    (idx as u32 ^ generation.wrapping_mul(0x9e37_79b9)).to_le_bytes()[0] | 1
}

fn write_page(page: &mut [u8], idx: usize, generation: u32) {
    page.fill(pattern(idx, generation));
    page[..8].copy_from_slice(&(idx as u64).to_le_bytes());
    page[8..12].copy_from_slice(&generation.to_le_bytes());
}

fn header_ok(page: &[u8], idx: usize, generation: u32) -> bool {
    page[..8] == (idx as u64).to_le_bytes() && page[8..12] == generation.to_le_bytes()
}

fn page_ok(page: &[u8], idx: usize, generation: u32) -> bool {
    let p = pattern(idx, generation);
    header_ok(page, idx, generation) && page[12..].iter().all(|&b| b == p)
}

fn mem(args: &[String]) -> Result<(), String> {
    let mib: usize = flag(args, "--mib")
        .unwrap_or_else(|| "64".into())
        .parse()
        .map_err(|e| format!("--mib: {e}"))?;
    let rate: f64 = flag(args, "--dirty-mib-per-sec")
        .unwrap_or_else(|| "1".into())
        .parse()
        .map_err(|e| format!("--dirty-mib-per-sec: {e}"))?;
    let status = PathBuf::from(flag(args, "--status").ok_or("--status FILE is required")?);
    let pages = mib * 1024 * 1024 / PAGE;
    let mut buf = vec![0u8; pages * PAGE];
    let mut gens = vec![0u32; pages];
    for (i, page) in buf.chunks_exact_mut(PAGE).enumerate() {
        write_page(page, i, 0);
    }
    let tick = Duration::from_millis(100);
    let per_tick = rate * 1024.0 * 1024.0 / PAGE as f64 / 10.0;
    let (mut owed, mut cursor, mut dirtied, mut ticks) = (0.0f64, 0usize, 0u64, 0u64);
    let mut next_check = Instant::now();
    loop {
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            gens[cursor] = gens[cursor].wrapping_add(1);
            write_page(
                &mut buf[cursor * PAGE..(cursor + 1) * PAGE],
                cursor,
                gens[cursor],
            );
            cursor = (cursor + 1) % pages;
            dirtied += 1;
        }
        if Instant::now() >= next_check {
            // Every page's header, and the whole body of a rotating sixteenth, each second:
            // cheap enough under an emulated CPU, and every byte is looked at within 16 s.
            let slice = ticks as usize % 16;
            let errors = buf
                .chunks_exact(PAGE)
                .enumerate()
                .filter(|(i, page)| {
                    if i % 16 == slice {
                        !page_ok(page, *i, gens[*i])
                    } else {
                        !header_ok(page, *i, gens[*i])
                    }
                })
                .count();
            ticks += 1;
            write_status(
                &status,
                &format!("tick={ticks} dirtied={dirtied} checked={pages} errors={errors}\n"),
            )?;
            next_check += Duration::from_secs(1);
        }
        std::thread::sleep(tick);
    }
}

fn write_status(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))
}

#[allow(unsafe_code)] // SysV shared memory has no safe wrapper; this is a test workload.
fn shm() -> Result<(), String> {
    // SAFETY: plain libc calls; the segment is private, 1 MiB, and only written through the
    // pointer shmat returned.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, 1 << 20, libc::IPC_CREAT | 0o600);
        if id < 0 {
            return Err(format!("shmget: {}", std::io::Error::last_os_error()));
        }
        let p = libc::shmat(id, std::ptr::null(), 0);
        if p as isize == -1 {
            return Err(format!("shmat: {}", std::io::Error::last_os_error()));
        }
        // Removed once detached, so a killed test leaves nothing behind.
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        *(p as *mut u8) = 42;
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn unix_listen(path: Option<PathBuf>) -> Result<(), String> {
    let path = path.ok_or("unix-listen PATH")?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("bind: {e}"))?;
    for conn in listener.incoming() {
        let mut conn = conn.map_err(|e| format!("accept: {e}"))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn unix_connect(path: Option<PathBuf>) -> Result<(), String> {
    let path = path.ok_or("unix-connect PATH")?;
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("connect: {e}"))?;
    let mut buf = [0u8; 1];
    loop {
        conn.write_all(b"x").map_err(|e| format!("write: {e}"))?;
        conn.read_exact(&mut buf)
            .map_err(|e| format!("read: {e}"))?;
        std::thread::sleep(Duration::from_millis(200));
    }
}
