//! The ssh transport: the system `ssh` client runs small POSIX `sh` scripts on the archive
//! host, so that host needs nothing but `sh` and coreutils (no wal-ship, no agent).
//!
//! - `BatchMode=yes` always (a password prompt would hang the archiver), host key checking
//!   stays on (`StrictHostKeyChecking=yes` unless `--ssh-option StrictHostKeyChecking=accept-new`;
//!   `no` is refused), `ConnectTimeout=10` and keep-alives so a dead network fails instead of
//!   hanging. Options the user gives come first, so they win over these defaults (ssh keeps the
//!   first value it sees), except `BatchMode`, which comes before them.
//! - One ssh connection per operation: a push uploads, fsyncs, links without clobbering and
//!   fsyncs the directory in one round trip. Use `ControlMaster`/`ControlPersist` through
//!   `--ssh-option` to reuse connections.
//! - ssh exits 255 for its own failures (cannot connect, authentication, host key): that is
//!   "the archive is unreachable". The scripts exit 3 when the archive directory is missing,
//!   4 for an I/O error on the archive host, 5 for a cut-short upload, 44 for "no such object".

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use shared::ErrorKind;

/// Exit status of the scripts: the archive directory (or its marker) is missing.
pub const EXIT_NO_ARCHIVE: i32 = 3;
/// Exit status of the scripts: I/O error on the archive host.
pub const EXIT_IO: i32 = 4;
/// Exit status of the scripts: the upload arrived incomplete.
pub const EXIT_SHORT: i32 = 5;
/// Exit status of the scripts: no such object.
pub const EXIT_MISSING: i32 = 44;

/// How to run `ssh`: extra `-o` options and a config file.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// `-o KEY=VALUE` options, in order.
    pub options: Vec<String>,
    /// `-F FILE`.
    pub config: Option<PathBuf>,
}

impl SshOptions {
    /// Check the options: `KEY=VALUE` form, and nothing that turns off the safety defaults.
    pub fn validate(&self) -> anyhow::Result<()> {
        for o in &self.options {
            let Some((k, v)) = o.split_once('=').or_else(|| o.split_once(' ')) else {
                return Err(shared::err(
                    ErrorKind::Usage,
                    format!("--ssh-option '{o}' is not KEY=VALUE (e.g. IdentityFile=/path/key)"),
                ));
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            if k == "stricthostkeychecking" && (v == "no" || v == "off") {
                return Err(shared::err(
                    ErrorKind::Usage,
                    "wal-ship keeps ssh host key checking on: add the archive host's key to a \
                     known_hosts file (ssh-keyscan, after checking the fingerprint) and pass \
                     --ssh-option UserKnownHostsFile=FILE, or use StrictHostKeyChecking=accept-new",
                ));
            }
            if k == "batchmode" && v != "yes" {
                return Err(shared::err(
                    ErrorKind::Usage,
                    "wal-ship always runs ssh with BatchMode=yes (a password prompt would hang \
                     PostgreSQL's archiver): use a key (--ssh-option IdentityFile=FILE)",
                ));
            }
        }
        Ok(())
    }
}

/// An ssh archive location: `ssh://[user@]host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDest {
    /// Login user, if given.
    pub user: Option<String>,
    /// Host name or address.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// Directory on the host: absolute, or relative to the login directory (`/~/dir`).
    pub path: String,
}

impl SshDest {
    /// Parse the part after `ssh://`.
    pub fn parse(rest: &str) -> anyhow::Result<SshDest> {
        let usage = |why: &str| {
            shared::err(
                ErrorKind::Usage,
                format!(
                    "'ssh://{rest}' is not an archive URL ({why}): write \
                     ssh://[user@]host[:port]/absolute/path or ssh://host/~/relative/path"
                ),
            )
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| usage("no path"))?;
        let path = match path.strip_prefix("~/") {
            Some(rel) => rel.trim_end_matches('/').to_owned(),
            None => format!("/{}", path.trim_end_matches('/')),
        };
        if path.is_empty() || path == "/" {
            return Err(usage("no directory after the host"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, hp)) if !u.is_empty() => (Some(u.to_owned()), hp),
            Some(_) => return Err(usage("empty user name")),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| usage("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(usage("no host"));
        }
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| usage("bad port")))
            .transpose()?;
        Ok(SshDest {
            user,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The URL again.
    pub fn describe(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let path = if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/~/{}", self.path)
        };
        format!("ssh://{user}{host}{port}{path}")
    }
}

/// Quote for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The result of one remote script.
#[derive(Debug)]
pub struct Remote {
    /// Exit status (`None`: killed by a signal).
    pub code: Option<i32>,
    /// What it wrote on stdout.
    pub stdout: Vec<u8>,
    /// What it (or ssh) wrote on stderr.
    pub stderr: String,
}

impl Remote {
    /// The last line of stderr, for messages.
    pub fn reason(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message")
            .trim()
            .to_owned()
    }
}

/// Run `script` (POSIX sh, with `$1`.. = `args`) on the host, feeding it `stdin` (parts
/// written one after the other).
pub fn run(
    dest: &SshDest,
    opts: &SshOptions,
    script: &str,
    args: &[&str],
    stdin: &[&[u8]],
) -> anyhow::Result<Remote> {
    let mut cmd = Command::new("ssh");
    cmd.args(["-o", "BatchMode=yes"]);
    if let Some(cfg) = &opts.config {
        cmd.arg("-F").arg(cfg);
    }
    for o in &opts.options {
        cmd.arg("-o").arg(o);
    }
    for o in [
        "StrictHostKeyChecking=yes",
        "ConnectTimeout=10",
        "ServerAliveInterval=10",
        "ServerAliveCountMax=3",
        "LogLevel=ERROR",
    ] {
        cmd.args(["-o", o]);
    }
    if let Some(p) = dest.port {
        cmd.arg("-p").arg(p.to_string());
    }
    if let Some(u) = &dest.user {
        cmd.arg("-l").arg(u);
    }
    // The remote side joins its arguments with spaces and hands them to the login shell, so
    // build one command line with every piece quoted.
    let mut remote = format!("exec sh -c {} wal-ship", sh_quote(script));
    for a in args {
        remote.push(' ');
        remote.push_str(&sh_quote(a));
    }
    cmd.arg("--").arg(&dest.host).arg(remote);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot run ssh for {} (is openssh-client installed?)",
            dest.describe()
        )
    })?;
    let mut input = child.stdin.take().expect("piped stdin");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let (stdout, stderr) = std::thread::scope(|s| {
        // The remote side may stop reading early (e.g. "already archived"): a broken pipe
        // here is expected, and its exit status tells what happened.
        s.spawn(move || {
            let _ = stdin.iter().try_for_each(|p| input.write_all(p));
        });
        let e = s.spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let mut buf = Vec::new();
        let r = out.read_to_end(&mut buf);
        (r.map(|_| buf), e.join().expect("stderr reader"))
    });
    let status = child.wait().context("waiting for ssh")?;
    let stdout = stdout.context("reading from ssh")?;
    let remote = Remote {
        code: status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    if remote.code == Some(255) || remote.code.is_none() {
        let reason = remote.reason();
        let hint = if reason.contains("Host key verification failed") {
            ": the archive host's key is not in known_hosts (add it with ssh-keyscan after \
             checking its fingerprint, or pass --ssh-option UserKnownHostsFile=FILE)"
        } else if reason.contains("Permission denied") {
            ": the user running wal-ship (for archive_command: the PostgreSQL server's user) \
             needs a key authorized on the archive host (--ssh-option IdentityFile=FILE)"
        } else {
            ""
        };
        return Err(shared::err(
            ErrorKind::Unavailable,
            format!(
                "cannot reach the archive {}: {reason}{hint}",
                dest.describe()
            ),
        ));
    }
    Ok(remote)
}

/// Upload an object: `$1` archive dir, `$2` subdir, `$3` object file name, `$4` size,
/// `$5` marker contents. Prints `stored`, or `exists SIZE` and the existing object's first
/// 4 KiB.
pub const PUT: &str = r#"umask 027
root=$1 dir=$2 obj=$3 size=$4
cd "$root" 2>/dev/null || { echo "archive directory $root does not exist on $(hostname)" >&2; exit 3; }
if [ ! -e wal-ship.json ]; then
  m=".wal-ship.json.$$.tmp"
  { printf '%s\n' "$5" > "$m" && sync "$m"; } || { rm -f "$m"; exit 4; }
  ln "$m" wal-ship.json 2>/dev/null; rm -f "$m"; sync . || exit 4
fi
if [ ! -d "$dir" ]; then mkdir -p "$dir" && sync . || exit 4; fi
if [ -e "$dir/$obj" ]; then sync "$dir/$obj" "$dir" || exit 4; echo "exists $(wc -c < "$dir/$obj")"; exec head -c 4096 "$dir/$obj"; fi
tmp="$dir/.$obj.$$.tmp"
cat > "$tmp" || { rm -f "$tmp"; exit 4; }
got=$(wc -c < "$tmp")
if [ "$got" -ne "$size" ]; then rm -f "$tmp"; echo "upload cut short: $got of $size bytes arrived" >&2; exit 5; fi
sync "$tmp" || { rm -f "$tmp"; exit 4; }
if ln "$tmp" "$dir/$obj" 2>/dev/null; then rm -f "$tmp"; sync "$dir" || exit 4; echo stored; exit 0; fi
rm -f "$tmp"
if [ -e "$dir/$obj" ]; then sync "$dir/$obj" "$dir" || exit 4; echo "exists $(wc -c < "$dir/$obj")"; exec head -c 4096 "$dir/$obj"; fi
echo "cannot link $tmp to $dir/$obj" >&2; exit 4
"#;

/// Read objects: `$1` archive dir; stdin: relative paths, one a line. For each, in order:
/// `+ SIZE\n` and the bytes, or `-\n` when it does not exist.
pub const GET_MANY: &str = r#"cd "$1" 2>/dev/null && [ -e wal-ship.json ] || { echo "no wal-ship archive at $1 on $(hostname) (wal-ship.json missing: not mounted, wrong path, or nothing pushed yet)" >&2; exit 3; }
while IFS= read -r f; do
  if [ -f "$f" ]; then
    s=$(wc -c < "$f") || exit 4
    printf '+ %s\n' "$s"
    head -c "$s" -- "$f" || exit 4
  else
    printf -- '-\n'
  fi
done
"#;

/// List the archive: `$1` archive dir. Prints `SIZE MTIME PATH` lines.
pub const LIST: &str = r#"cd "$1" 2>/dev/null && [ -e wal-ship.json ] || { echo "no wal-ship archive at $1 on $(hostname) (wal-ship.json missing: not mounted, wrong path, or nothing pushed yet)" >&2; exit 3; }
find . -mindepth 2 -maxdepth 2 -type f -printf '%s %T@ %P\n' || exit 4
"#;

/// Remove objects: `$1` archive dir; stdin: relative paths.
pub const REMOVE: &str = r#"cd "$1" 2>/dev/null && [ -e wal-ship.json ] || { echo "no wal-ship archive at $1 on $(hostname)" >&2; exit 3; }
while IFS= read -r f; do rm -f -- "$f" || exit 4; done
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ssh_urls() {
        let d = SshDest::parse("postgres@db2:2222/srv/wal/").unwrap();
        assert_eq!(d.user.as_deref(), Some("postgres"));
        assert_eq!((d.host.as_str(), d.port), ("db2", Some(2222)));
        assert_eq!(d.path, "/srv/wal");
        assert_eq!(d.describe(), "ssh://postgres@db2:2222/srv/wal");
        let d = SshDest::parse("[::1]:22/~/wal").unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.path.as_str()),
            ("::1", Some(22), "wal")
        );
        assert_eq!(d.describe(), "ssh://[::1]:22/~/wal");
        for bad in ["host", "host/", "host:x/a", "@host/a", "-oProxyCommand=x/a"] {
            let e = SshDest::parse(bad).unwrap_err();
            assert_eq!(shared::exit::classify(&e), ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn safety_options_cannot_be_turned_off() {
        let o = |v: &str| SshOptions {
            options: vec![v.to_owned()],
            config: None,
        };
        assert!(o("StrictHostKeyChecking=no").validate().is_err());
        assert!(o("BatchMode=no").validate().is_err());
        assert!(o("justaword").validate().is_err());
        assert!(o("StrictHostKeyChecking=accept-new").validate().is_ok());
        assert!(o("IdentityFile=/k").validate().is_ok());
    }
}
