//! From a CRIU log to a cause and a fix.
//!
//! CRIU explains every failure in its log (`-o LOG -v4`), but in its own terms: "Can't fork
//! for 167: File exists" means the PID the process must get back is taken. This module maps
//! the patterns a DBA meets to one sentence naming the problem, one naming the fix, and the
//! exit class, and picks the log lines worth quoting. The patterns are CRIU 3.17's wording,
//! seen on a real kernel (the VM test, `tests/vm.rs`), and kept loose enough for later
//! versions. Anything unknown still quotes the `Error` lines.

use shared::ErrorKind;

/// What went wrong, in a DBA's terms.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnosis {
    /// A stable tag: `pid_in_use`, `missing_file`, `external_unix_socket`, `sysv_shm_outside_ipc_ns`,
    /// `kernel_too_new`, `kernel_too_old`, `no_permission`, `tcp_established_needed`,
    /// `network_lock`, `session_leader_outside`, `no_such_process`, `unknown`.
    pub cause: &'static str,
    /// The problem, one sentence.
    pub problem: String,
    /// What to do about it, one sentence.
    pub fix: String,
    /// The exit class this failure maps to.
    #[serde(skip)]
    pub kind: ErrorKind,
    /// The log lines that say so (at most [`MAX_QUOTED`]).
    pub log: Vec<String>,
}

/// Every cause tag, for turning a tag read back from JSON into the static one.
pub const TAGS: &[&str] = &[
    "pid_in_use",
    "missing_file",
    "external_unix_socket",
    "sysv_shm_outside_ipc_ns",
    "kernel_too_new",
    "kernel_too_old",
    "no_permission",
    "tcp_established_needed",
    "network_lock",
    "session_leader_outside",
    "no_such_process",
    "proc_of_other_pid_ns",
    "criu_bug",
    "unknown",
];

/// The static tag equal to `s`, or `unknown`.
pub fn tag(s: &str) -> &'static str {
    TAGS.iter().find(|t| **t == s).copied().unwrap_or("unknown")
}

/// How many log lines a diagnosis quotes.
pub const MAX_QUOTED: usize = 8;

/// What the run was doing, for wording and for causes that only one side can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `criu check`.
    Check,
    /// `criu pre-dump` or `criu dump`.
    Dump,
    /// `criu restore`.
    Restore,
}

/// The lines of a log that report errors (CRIU's `Error (file:line):` and `Warn` prefixes),
/// without CRIU's timestamp.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .map(str::trim)
        .filter(|l| l.contains("Error (") || l.starts_with("Error ") || l.contains("Warn  ("))
        .collect()
}

/// Error lines CRIU logs on the way to success (a pre-copy round without a parent image for
/// a process that did not exist then): never the cause, quoted last.
const BENIGN: &[&str] = &["No parent image found, though parent directory is set"];

fn benign(line: &str) -> bool {
    BENIGN.iter().any(|b| line.contains(b))
}

/// A log line without CRIU's "(00.012345)" timestamp and the "pid: " prefix of restore logs.
fn strip(line: &str) -> String {
    let l = line.trim();
    let l = match l.strip_prefix('(') {
        Some(rest) => rest.split_once(')').map_or(l, |(_, r)| r.trim_start()),
        None => l,
    };
    // Restore logs prefix each line with the restoring task's PID: "   301: Error (...)".
    let l = match l.split_once(": ") {
        Some((p, r)) if !p.is_empty() && p.trim().chars().all(|c| c.is_ascii_digit()) => r,
        _ => l,
    };
    l.to_owned()
}

/// The first number after `marker` in `line` (e.g. the PID in "Can't fork for 167:").
fn number_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The text between `start` and `end` in `line`.
fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &line[line.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

struct Found {
    cause: &'static str,
    problem: String,
    fix: String,
    kind: ErrorKind,
    line: Option<String>,
}

/// Diagnose a failed CRIU run from its log (and stdout/stderr, for errors written before the
/// log was open). `root` says whether we ran as root (CRIU needs it, or capabilities).
pub fn diagnose(action: Action, text: &str, root: bool) -> Diagnosis {
    let errors = error_lines(text);
    let found = find_cause(action, &errors, text, root);
    // Quote the line that decided, then the other Error lines (not warnings), in log order.
    let mut log: Vec<String> = Vec::new();
    if let Some(l) = &found.line {
        log.push(strip(l));
    }
    let (plain, late): (Vec<&&str>, Vec<&&str>) = errors
        .iter()
        .filter(|l| l.contains("Error"))
        .partition(|l| !benign(l));
    for l in plain.into_iter().chain(late) {
        let s = strip(l);
        if !log.contains(&s) && log.len() < MAX_QUOTED {
            log.push(s);
        }
    }
    Diagnosis {
        cause: found.cause,
        problem: found.problem,
        fix: found.fix,
        kind: found.kind,
        log,
    }
}

fn find_line<'a>(errors: &[&'a str], pat: impl Fn(&str) -> bool) -> Option<&'a str> {
    errors.iter().copied().find(|l| pat(l))
}

fn find_cause(action: Action, errors: &[&str], text: &str, root: bool) -> Found {
    let found = |cause, problem: String, fix: &str, kind, line: Option<&str>| Found {
        cause,
        problem,
        fix: fix.to_owned(),
        kind,
        line: line.map(str::to_owned),
    };

    // The kernel is newer than this CRIU: 6.x kernels split the vvar area, which CRIU before
    // 4.1 rejects while probing its own vDSO, before looking at any process.
    if let Some(l) = find_line(errors, |l| {
        l.contains("Unexpected rt vDSO area bounds")
            || l.contains("Failed to fill self vdso symtable")
            || l.contains("kerndat_vdso_fill_symtable failed")
            || l.contains("Can't find rt vDSO")
    }) {
        return found(
            "kernel_too_new",
            "this kernel is newer than this CRIU understands (its vDSO/vvar layout; CRIU before 4.1 fails on such kernels)".into(),
            "install CRIU 4.1 or newer, or run on a kernel this CRIU supports (e.g. Debian 12's 6.1)",
            ErrorKind::Unavailable,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| {
        (l.contains("Can't fork for") && l.contains("File exists"))
            || l.contains("do not match expected")
            || l.contains("Pids do not match")
    }) {
        let pid = number_after(l, "Can't fork for")
            .or_else(|| number_after(l, "expected"))
            .map_or_else(|| "the process's PID".to_owned(), |p| format!("PID {p}"));
        return found(
            "pid_in_use",
            format!("{pid} is already in use on this host, and CRIU restores a process with its original PID"),
            "stop whatever runs under that PID (is the original still running? then this would be a second copy), or restore on a host where it is free; processes started in their own PID namespace (unshare -pf) never collide",
            ErrorKind::Retry,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| {
        l.contains("Can't open file") && l.contains("No such file or directory")
    }) {
        let path = between(l, "Can't open file ", " on restore")
            .or_else(|| between(l, "Can't open file ", ":"))
            .map(|p| {
                if p.starts_with('/') {
                    p.to_owned()
                } else {
                    format!("/{p}")
                }
            });
        let problem = match &path {
            Some(p) => format!("a file the process had open is missing here: {p}"),
            None => "a file the process had open is missing here".to_owned(),
        };
        return found(
            "missing_file",
            problem,
            "put the same file at the same path before restoring (copy data directories and logs with rsync after the dump, while the process is frozen); CRIU also checks its size",
            ErrorKind::DataErr,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| {
        l.contains("External socket is used")
            || l.contains("Can't dump half of stream unix connection")
    }) {
        return found(
            "external_unix_socket",
            "the process is connected to a unix socket whose other end belongs to a process outside the dumped tree (a local daemon, syslog, another server)".into(),
            "close that connection before dumping, or dump the peer too (dump a common parent); for datagram sockets pass --criu-opt=--ext-unix-sk",
            ErrorKind::DataErr,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| {
        l.contains("SysVIPC shmem") && l.contains("doesn't live in IPC ns")
    }) {
        return found(
            "sysv_shm_outside_ipc_ns",
            "the process uses System V shared memory but shares the host's IPC namespace, which CRIU cannot dump".into(),
            "start the process in its own IPC namespace (unshare -i; for PostgreSQL see scripts/criu-postgres.sh)",
            ErrorKind::DataErr,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| {
        l.contains("Connected TCP socket") && l.contains("--tcp-established")
    }) {
        return found(
            "tcp_established_needed",
            "the process has established TCP connections".into(),
            "pass --tcp-established (criu-wrap then restores with it too), or close the connections first",
            ErrorKind::DataErr,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| {
        l.contains("A session leader of") && l.contains("is outside")
    }) {
        return found(
            "session_leader_outside",
            "the process does not lead its own session, and its session leader (a shell or init) is not part of the dump".into(),
            "start the process with setsid, or dump its session leader; if it runs in a terminal, pass --shell-job",
            ErrorKind::DataErr,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| {
        l.contains("can't dump unprivileged task whose /proc doesn't belong to it")
    }) {
        return found(
            "proc_of_other_pid_ns",
            "the process runs as an ordinary user in its own PID namespace but sees the host's /proc, which CRIU's parasite cannot use".into(),
            "give it a /proc of its namespace (unshare -ipfm --mount-proc) or use an IPC namespace only (unshare -i); see scripts/criu-postgres.sh",
            ErrorKind::DataErr,
            Some(l),
        );
    }

    if let Some(l) = find_line(errors, |l| l.contains("BUG at ")) {
        return found(
            "criu_bug",
            "CRIU hit an internal bug (an assertion failed)".into(),
            "try a newer CRIU, or avoid the feature in the quoted line (seen with mount namespaces in CRIU 3.17); report it with the log",
            ErrorKind::Unavailable,
            Some(l),
        );
    }

    if action == Action::Dump {
        if let Some(l) = find_line(errors, |l| {
            l.contains("No such process")
                && (l.contains("seize") || l.contains("detach") || l.contains("interrupt"))
        }) {
            return found(
                "no_such_process",
                "the process exited before or while it was being dumped".into(),
                "check the PID (ps -p PID); a process that exits by itself cannot be dumped",
                ErrorKind::DataErr,
                Some(l),
            );
        }
    }

    let denied = find_line(errors, |l| {
        l.contains("Error")
            && (l.contains("Operation not permitted") || l.contains("Permission denied"))
    });
    if !root || denied.is_some() {
        return found(
            "no_permission",
            if root {
                "CRIU was refused an operation it needs (ptrace, namespaces or /proc access)".into()
            } else {
                "CRIU needs root (or CAP_CHECKPOINT_RESTORE with --unprivileged) and runs as an ordinary user here".into()
            },
            "run criu-wrap as root (sudo), and check that no LSM (AppArmor, SELinux, yama ptrace_scope=3) forbids ptrace",
            ErrorKind::Io,
            denied,
        );
    }

    if let Some(l) = find_line(errors, |l| {
        l.contains("Iptables configuration failed")
            || l.contains("iptables-restore")
            || (l.contains("nftables") && (l.contains("fail") || l.contains("Can't")))
            || l.contains("Failed to lock TCP connection")
    }) {
        return found(
            "network_lock",
            "CRIU could not lock the network of the TCP connections (it blocks their packets while they are dumped)".into(),
            "install iptables, or pass --network-lock nftables (needs the nf_tables module; 'criu-wrap check' shows whether it works)",
            ErrorKind::Unavailable,
            Some(l),
        );
    }

    // Missing kernel features: CRIU says so in various words.
    if let Some(l) = find_line(errors, |l| {
        l.contains("Kernel doesn't support")
            || l.contains("kernel lacks")
            || l.contains("lacks the support")
            || l.contains("Dirty tracking is OFF")
            || l.contains("not supported by kernel")
            || l.contains("kernel don't")
            || l.contains("is not supported") && l.to_lowercase().contains("kernel")
            || l.contains("Could not initialize kernel features detection")
    }) {
        return found(
            "kernel_too_old",
            "the kernel lacks a feature this CRIU needs (or that was asked for)".into(),
            "run 'criu-wrap check' to see which; use a kernel built with CONFIG_CHECKPOINT_RESTORE (and CONFIG_MEM_SOFT_DIRTY for pre-copy), or skip the feature (--pre-dump 0 without dirty tracking)",
            ErrorKind::Unavailable,
            Some(l),
        );
    }

    let first = find_line(errors, |l| l.contains("Error"))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()));
    let what = match action {
        Action::Check => "criu check",
        Action::Dump => "criu dump",
        Action::Restore => "criu restore",
    };
    found(
        "unknown",
        format!("{what} failed for a reason criu-wrap does not recognise"),
        "read the quoted log lines and the whole log named in this message",
        ErrorKind::Unavailable,
        first,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real log excerpts: CRIU 3.17.1 on Debian's 6.1 kernel (the VM) and on this host's 6.18.

    const VDSO: &str = "\
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.
";

    const PID_IN_USE: &str = "\
(00.031001) Warn  (criu/cr-restore.c:1200): Set CLONE_PARENT | CLONE_NEWPID but it might cause restore problem
(00.031732) Error (criu/cr-restore.c:1469): Can't fork for 167: File exists
(00.032527) Error (criu/cr-restore.c:2537): Restoring FAILED.
";

    const MISSING_FILE: &str = "\
(00.055883)    301: Error (criu/files-reg.c:2259): Can't open file tmp/w/keep on restore: No such file or directory
(00.055937)    301: Error (criu/files-reg.c:2185): Can't open file tmp/w/keep: No such file or directory
(00.055982)    301: Error (criu/files.c:1213): Unable to open fd=3 id=0x4
(00.056775) Error (criu/cr-restore.c:2537): Restoring FAILED.
";

    const UNIX: &str = "\
(00.082762) Warn  (compel/arch/x86/src/lib/infect.c:352): Will restore 188 with interrupted system call
(00.137271) Error (criu/sk-unix.c:864): unix: External socket is used. Consider using --ext-unix-sk option.
(00.138404) Error (criu/cr-dump.c:2053): Dumping FAILED.
";

    const SHM: &str = "\
(00.243103) Error (criu/cr-dump.c:453): Task 169 with SysVIPC shmem map @7f3cd623c000 doesn't live in IPC ns
(00.243133) Error (criu/cr-dump.c:1705): Dump mappings (pid: 169) failed with -1
(00.252105) Error (criu/cr-dump.c:2053): Dumping FAILED.
";

    const TCP: &str = "\
(00.527083) Error (criu/sk-inet.c:189): inet: Connected TCP socket, consider using --tcp-established option.
(00.527213) Error (criu/cr-dump.c:1635): Dump files (pid: 106) failed with -1
(00.534185) Error (criu/cr-dump.c:2053): Dumping FAILED.
";

    const IPTABLES: &str = "\
(00.148594) Error (criu/util.c:642): exited, status=127
(00.148879) Error (criu/netfilter.c:105): Iptables configuration failed
(00.148951) Error (criu/sk-tcp.c:77): tcp: Failed to lock TCP connection 26ce
(00.156867) Error (criu/cr-dump.c:2053): Dumping FAILED.
";

    const NONROOT: &str = "\
(00.001048) Warn  (criu/kerndat.c:1094): Can't load /run/criu.kdat
(00.010901) Error (criu/util.c:642): exited, status=1
(00.043379) Error (criu/net.c:3711): Unable create a network namespace: Operation not permitted
(00.077279) Error (criu/kerndat.c:1666): kerndat_has_nftables_concat failed when initializing kerndat.
(00.077877) Error (criu/crtools.c:260): Could not initialize kernel features detection.
";

    const SESSION: &str = "\
(00.732424) Error (criu/cr-dump.c:1618): A session leader of 97(97) is outside of its pid namespace
(00.750761) Error (criu/cr-dump.c:2053): Dumping FAILED.
";

    #[test]
    fn vdso_means_kernel_too_new() {
        let d = diagnose(Action::Check, VDSO, true);
        assert_eq!(d.cause, "kernel_too_new");
        assert_eq!(d.kind, ErrorKind::Unavailable);
        assert!(d.fix.contains("CRIU 4.1"), "{}", d.fix);
        assert_eq!(
            d.log[0],
            "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable"
        );
        let d = diagnose(
            Action::Check,
            "Error (criu/vdso.c:250): vdso: Unexpected rt vDSO area bounds\n",
            true,
        );
        assert_eq!(d.cause, "kernel_too_new");
    }

    #[test]
    fn pid_in_use_names_the_pid() {
        let d = diagnose(Action::Restore, PID_IN_USE, true);
        assert_eq!(d.cause, "pid_in_use");
        assert_eq!(d.kind, ErrorKind::Retry);
        assert!(d.problem.contains("PID 167"), "{}", d.problem);
        assert_eq!(
            d.log,
            [
                "Error (criu/cr-restore.c:1469): Can't fork for 167: File exists",
                "Error (criu/cr-restore.c:2537): Restoring FAILED."
            ]
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let d = diagnose(Action::Restore, MISSING_FILE, true);
        assert_eq!(d.cause, "missing_file");
        assert_eq!(d.kind, ErrorKind::DataErr);
        assert!(d.problem.ends_with(": /tmp/w/keep"), "{}", d.problem);
        assert!(
            d.log[0].starts_with("Error (criu/files-reg.c:2259)"),
            "{:?}",
            d.log
        );
        assert_eq!(d.log.len(), 4);
    }

    #[test]
    fn external_unix_socket() {
        let d = diagnose(Action::Dump, UNIX, true);
        assert_eq!(d.cause, "external_unix_socket");
        assert!(d.fix.contains("--ext-unix-sk"));
        // The warning is not quoted; the errors are.
        assert!(d.log.iter().all(|l| l.starts_with("Error")), "{:?}", d.log);
    }

    #[test]
    fn sysv_shm_outside_an_ipc_namespace() {
        let d = diagnose(Action::Dump, SHM, true);
        assert_eq!(d.cause, "sysv_shm_outside_ipc_ns");
        assert!(d.fix.contains("unshare -i"), "{}", d.fix);
    }

    #[test]
    fn tcp_and_network_lock() {
        let d = diagnose(Action::Dump, TCP, true);
        assert_eq!(d.cause, "tcp_established_needed");
        assert!(d.fix.contains("--tcp-established"));
        let d = diagnose(Action::Dump, IPTABLES, true);
        assert_eq!(d.cause, "network_lock");
        assert!(d.fix.contains("--network-lock nftables"));
        assert_eq!(
            d.log[0],
            "Error (criu/netfilter.c:105): Iptables configuration failed"
        );
    }

    #[test]
    fn no_permission_as_a_user_and_as_root() {
        let d = diagnose(Action::Dump, NONROOT, false);
        assert_eq!(d.cause, "no_permission");
        assert_eq!(d.kind, ErrorKind::Io);
        assert!(d.problem.contains("needs root"));
        let d = diagnose(Action::Dump, NONROOT, true);
        assert_eq!(d.cause, "no_permission");
        assert!(d.log[0].contains("Operation not permitted"));
    }

    #[test]
    fn session_leader_outside_the_dump() {
        let d = diagnose(Action::Dump, SESSION, true);
        assert_eq!(d.cause, "session_leader_outside");
        assert!(d.fix.contains("setsid"));
    }

    #[test]
    fn kernel_too_old() {
        let log =
            "Warn  (criu/cr-check.c:1): Dirty tracking is OFF. Memory snapshot will not work.\n";
        let d = diagnose(Action::Check, log, true);
        assert_eq!(d.cause, "kernel_too_old");
        let log =
            "(00.1) Error (criu/cr-check.c:1): Kernel doesn't support PTRACE_O_SUSPEND_SECCOMP\n";
        assert_eq!(diagnose(Action::Dump, log, true).cause, "kernel_too_old");
    }

    #[test]
    fn unprivileged_task_in_a_pid_namespace() {
        let log = "\
(00.1) Error (criu/page-xfer.c:392): page-xfer: No parent image found, though parent directory is set: No such file or directory
(00.2) pie: 1: Error (criu/pie/parasite.c:557): can't dump unprivileged task whose /proc doesn't belong to it
(00.3) Error (criu/cr-dump.c:2053): Dumping FAILED.
";
        let d = diagnose(Action::Dump, log, true);
        assert_eq!(d.cause, "proc_of_other_pid_ns");
        assert!(d.fix.contains("--mount-proc"), "{}", d.fix);
        // The benign line is quoted last, not first.
        assert!(d.log[0].contains("unprivileged task"), "{:?}", d.log);
        assert!(
            d.log.last().unwrap().contains("No parent image"),
            "{:?}",
            d.log
        );
    }

    #[test]
    fn criu_bugs_are_named() {
        let log = "\
(00.058002)      1: Error (criu/mount.c:48): mnt: BUG at criu/mount.c:48
(00.068116) Error (criu/cr-restore.c:1499): 184 killed by signal 11: Segmentation fault
(00.068790) Error (criu/cr-restore.c:2537): Restoring FAILED.
";
        let d = diagnose(Action::Restore, log, true);
        assert_eq!(d.cause, "criu_bug");
        assert_eq!(
            d.log[0],
            "Error (criu/mount.c:48): mnt: BUG at criu/mount.c:48"
        );
    }

    #[test]
    fn unknown_failures_quote_the_first_error() {
        let log = "(00.1) Info something\n(00.2) Error (criu/x.c:1): something odd\n";
        let d = diagnose(Action::Dump, log, true);
        assert_eq!(d.cause, "unknown");
        assert_eq!(d.log, ["Error (criu/x.c:1): something odd"]);
        let d = diagnose(Action::Dump, "", true);
        assert_eq!(d.cause, "unknown");
        assert!(d.log.is_empty());
    }

    #[test]
    fn quotes_are_bounded() {
        let log: String = (0..50)
            .map(|i| format!("(00.{i}) Error (criu/x.c:{i}): e{i}\n"))
            .collect();
        assert_eq!(diagnose(Action::Dump, &log, true).log.len(), MAX_QUOTED);
    }
}
