//! The target's network goes away from the control host during the promotion. Its SQL port
//! is reached through a relay the test cuts (a blackhole: packets vanish, nothing is
//! refused); its own host (local) still answers, so pg-switch can read its control file
//! there. Never two primaries; the re-run after the path comes back converges.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

/// A TCP relay to `port` that stops relaying while `cut_file` exists.
struct Relay {
    port: u16,
    cut_file: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: PathBuf, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16384];
    let mut was_cut = false;
    while !stop.load(Ordering::SeqCst) {
        let is_cut = cut.exists();
        if was_cut && !is_cut {
            // The path is back: connections from before the cut lost bytes; end them.
            break;
        }
        was_cut |= is_cut;
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if !is_cut => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {} // dropped on the floor
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Relay {
    fn start(port: u16, dir: &Path) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            cut_file: dir.join("cut"),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (cut, stop) = (relay.cut_file.clone(), relay.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (cut, stop) = (cut.clone(), stop.clone());
                std::thread::spawn(move || {
                    // While cut, a new connection is accepted and then hears nothing.
                    while cut.exists() && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (cut2, stop2) = (cut.clone(), stop.clone());
                    std::thread::spawn(move || pump(s2, c2, cut2, stop2));
                    pump(client, server, cut, stop);
                });
            }
        });
        relay
    }

    fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
            self.port
        )
    }
}

#[test]
fn cut_after_the_promotion_was_asked_the_target_is_promoted_never_the_source() {
    let pair = Pair::new();
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(pair.b.port(), dir.path());
    let hook = format!("during_promote=touch {}", relay.cut_file.display());
    let r = pair.switch_with(
        &pair.a,
        &relay.dsn(),
        &pair.b,
        &["--hook", &hook, "--timeout", "3s"],
        &[("PGSHIFT_TEST_PROMOTE_DELAY_MS", "500")],
    );
    // Its own host says it was promoted, but no session reaches it from here.
    r.expect(69);
    assert_eq!(
        r.summary()["outcome"],
        "promoted_unverified",
        "{}",
        r.dump()
    );
    assert_eq!(
        in_recovery(&pair.b),
        Some(false),
        "b is the primary (seen directly)"
    );
    assert!(
        !running(&pair.a) && fenced_towards(&pair.a, &pair.b),
        "a stays down and fenced"
    );

    std::fs::remove_file(&relay.cut_file).unwrap();
    let again = pair.switch_with(&pair.a, &relay.dsn(), &pair.b, &[], &[]);
    again.expect(0);
    assert_eq!(
        again.summary()["outcome"],
        "already_promoted",
        "{}",
        again.dump()
    );
    assert_eq!(proof(&again, "target_writable")["ok"], true);
    assert_eq!(pair.primaries(), 1);
}

#[test]
fn cut_before_the_promotion_the_target_is_stopped_and_the_source_serves_again() {
    let pair = Pair::new();
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(pair.b.port(), dir.path());
    let hook = format!("before_promote=touch {}", relay.cut_file.display());
    let r = pair.switch_with(
        &pair.a,
        &relay.dsn(),
        &pair.b,
        &["--hook", &hook, "--timeout", "3s"],
        &[],
    );
    // The replay proof cannot be made through the cut: rolled back before any pg_promote.
    r.expect(1);
    assert_eq!(r.summary()["outcome"], "rolled_back", "{}", r.dump());
    assert_eq!(in_recovery(&pair.a), Some(false), "a serves again");
    assert_eq!(in_recovery(&pair.b), Some(true), "b is a standby");
    assert!(!pair.a.data_dir().join("standby.signal").exists());

    std::fs::remove_file(&relay.cut_file).unwrap();
    wait_streaming(&pair.a, &pair.b);
    pair.switch_with(&pair.a, &relay.dsn(), &pair.b, &[], &[])
        .expect(0);
    assert_eq!(pair.primaries(), 1);
}
