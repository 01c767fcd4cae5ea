//! Looking at and nudging processes through `/proc` and signals.
//!
//! CRIU freezes a whole tree (the process and its descendants). When a dump fails CRIU thaws
//! the tree itself, but a CRIU that crashed or was killed can leave tasks stopped; so after
//! any failure criu-wrap looks at every task of the tree and continues the stopped ones
//! ([`resume_tree`]), then reports what it found.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

/// The state letter of a process (`R`, `S`, `T` stopped, `t` traced, `Z` zombie...), or None
/// when there is no such process.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S PPID ...": comm may hold spaces and parentheses, so cut at the last ')'.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// True when `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// `pid` and all its descendants (a snapshot).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            if let Some(pp) = ppid(p) {
                children.entry(pp).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// What [`resume_tree`] found and did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Resumed {
    /// The root process runs (exists, not a zombie, not stopped).
    pub alive: bool,
    /// Tasks of the tree that were stopped and got SIGCONT.
    pub continued: Vec<u32>,
    /// Tasks still in a ptrace stop (a tracer holds them; they run again when it exits).
    pub traced: Vec<u32>,
}

/// Continue every stopped task of the tree rooted at `pid`. A stop still being delivered
/// (SIGSTOP is asynchronous) is caught by looking three times, 50 ms apart.
pub fn resume_tree(pid: u32) -> Resumed {
    let mut continued: Vec<u32> = Vec::new();
    let mut traced = Vec::new();
    for pass in 0..3 {
        if pass > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        traced.clear();
        for p in tree(pid) {
            match state(p) {
                Some('T')
                    if kill(Pid::from_raw(p as i32), Signal::SIGCONT).is_ok()
                        && !continued.contains(&p) =>
                {
                    continued.push(p);
                }
                Some('t') => traced.push(p),
                _ => {}
            }
        }
    }
    // SIGCONT takes effect at once, but /proc may lag a moment behind it.
    let deadline = Instant::now() + Duration::from_millis(500);
    while state(pid) == Some('T') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Resumed {
        alive: alive(pid) && state(pid) != Some('T'),
        continued,
        traced,
    }
}

/// Wait until `pid` is gone (or a zombie), up to `timeout`; true if it went.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The host's name (for manifests and records).
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
}

/// True when running as root (CRIU needs it, or CAP_CHECKPOINT_RESTORE with --unprivileged).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn stopped_children_are_continued() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(alive(pid));
        assert!(tree(std::process::id()).contains(&pid));
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while state(pid) != Some('T') && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(state(pid), Some('T'));
        let r = resume_tree(pid);
        assert_eq!(r.continued, [pid]);
        assert!(r.alive, "{r:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(pid));
        assert!(wait_gone(pid, Duration::from_millis(10)));
    }
}
