//! The ssh transport: the system `ssh` client runs small POSIX `sh` scripts on the archive
//! host, so that host needs nothing but `sh` and coreutils (no wal-ship, no agent).
//!
//! - The ssh policy is pgshift's one ([`shared::host`], the same as the scripts'):
//!   `BatchMode=yes` (a password prompt would hang the archiver), host key checking on
//!   (`StrictHostKeyChecking=yes`, or `accept-new` when asked; `no` is refused),
//!   `ConnectTimeout=5` and keep-alives so a dead network fails in seconds instead of hanging.
//!   The user's options are `--ssh-option KEY=VALUE`, `--ssh-config FILE` and `PGS_SSH_OPTS`,
//!   in that order (ssh keeps the first value it sees, so the command line wins), then
//!   wal-ship's `LogLevel=ERROR`: archive_command's stderr lands in the server log on every
//!   call, and ssh's notices have no place there.
//! - The scripts run as the login user, from the login directory (`/~/dir` archives are
//!   relative to it), as [`Host::login_command`] does.
//! - One ssh connection per operation: a push uploads, fsyncs, links without clobbering and
//!   fsyncs the directory in one round trip. Use `ControlMaster`/`ControlPersist` through
//!   `--ssh-option` to reuse connections.
//! - ssh exits 255 for its own failures (cannot connect, authentication, host key): that is
//!   "the archive is unreachable". The scripts exit 3 when the archive directory is missing,
//!   4 for an I/O error on the archive host, 5 for a cut-short upload, 44 for "no such object".

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use anyhow::Context;
use shared::host::{Host, Spec, SshOptions};
use shared::ErrorKind;

/// Exit status of the scripts: the archive directory (or its marker) is missing.
pub const EXIT_NO_ARCHIVE: i32 = 3;
/// Exit status of the scripts: I/O error on the archive host.
pub const EXIT_IO: i32 = 4;
/// Exit status of the scripts: the upload arrived incomplete.
pub const EXIT_SHORT: i32 = 5;
/// Exit status of the scripts: no such object.
pub const EXIT_MISSING: i32 = 44;

/// The ssh options of a wal-ship run: `--ssh-option`s, then `--ssh-config`, then
/// `PGS_SSH_OPTS` (the text of that variable, empty when unset), then wal-ship's own
/// `LogLevel=ERROR`; each checked against the policy.
pub fn options(
    flags: &[String],
    config: Option<&str>,
    pgs_ssh_opts: &str,
) -> anyhow::Result<SshOptions> {
    let config = config.map_or(vec![], |c| vec!["-F".to_owned(), c.to_owned()]);
    Ok(SshOptions::from_options("--ssh-option", flags)?
        .then(SshOptions::from_args("--ssh-config", config)?)
        .then(SshOptions::parse(pgs_ssh_opts)?)
        .then(SshOptions::from_options("wal-ship", &["LogLevel=ERROR"])?))
}

/// An ssh archive location: `ssh://[user@]host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDest {
    /// The host (a [`Spec::Ssh`]).
    pub host: Spec,
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
                    "'ssh://{rest}' is not an archive URL (it {why}): write \
                     ssh://[user@]host[:port]/absolute/path or ssh://host/~/relative/path"
                ),
            )
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| usage("has no path"))?;
        let path = match path.strip_prefix("~/") {
            Some(rel) => rel.trim_end_matches('/').to_owned(),
            None => format!("/{}", path.trim_end_matches('/')),
        };
        if path.is_empty() || path == "/" {
            return Err(usage("has no directory after the host"));
        }
        let host = Spec::parse_authority(authority).map_err(usage)?;
        Ok(SshDest { host, path })
    }

    /// The URL again.
    pub fn describe(&self) -> String {
        if self.path.starts_with('/') {
            format!("{}{}", self.host, self.path)
        } else {
            format!("{}/~/{}", self.host, self.path)
        }
    }
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

/// The ssh command that runs `script` (POSIX sh, `$0` = `wal-ship`, `$1`.. = `args`) on the
/// host as the login user.
pub fn command(dest: &SshDest, opts: &SshOptions, script: &str, args: &[&str]) -> Command {
    let mut argv = vec!["sh", "-c", script, "wal-ship"];
    argv.extend(args);
    Host::new(dest.host.clone(), opts.clone()).login_command(&argv)
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
    let mut cmd = command(dest, opts, script, args);
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

/// Upload an object: `$1` archive dir, `$2` subdir, `$3` object file name, `$4` size, `$5`
/// what to say when the directory has no marker (`wal-ship init` makes one). Prints
/// `stored`, or `exists SIZE` and the existing object's first 4 KiB.
pub const PUT: &str = r#"umask 027
root=$1 dir=$2 obj=$3 size=$4
cd "$root" 2>/dev/null || { echo "archive directory $root does not exist on $(hostname)" >&2; exit 3; }
[ -e wal-ship.json ] || { printf '%s\n' "$5" >&2; exit 3; }
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

/// Make an archive (`wal-ship init`): `$1` archive dir, `$2` marker contents. Prints
/// `created`, or `exists` when the marker was there.
pub const INIT: &str = r#"umask 027
mkdir -p "$1" 2>/dev/null && cd "$1" || { echo "cannot create the archive directory $1 on $(hostname)" >&2; exit 4; }
[ ! -e wal-ship.json ] || { echo exists; exit 0; }
m=".wal-ship.json.$$.tmp"
{ printf '%s\n' "$2" > "$m" && sync "$m"; } || { rm -f "$m"; exit 4; }
ln "$m" wal-ship.json 2>/dev/null; rm -f "$m"; sync . || exit 4
echo created
"#;

/// Read objects: `$1` archive dir; stdin: relative paths, one a line. For each, in order:
/// `+ SIZE\n` and the bytes, or `-\n` when it does not exist. A directory this user may
/// not enter (another user's, made with umask 027) is an error (exit 4), not "does not
/// exist": PostgreSQL ends recovery at the first file that is not in the archive.
pub const GET_MANY: &str = r#"cd "$1" 2>/dev/null && [ -e wal-ship.json ] || { echo "no wal-ship archive at $1 on $(hostname) (wal-ship.json missing: not mounted, wrong path, or not made with wal-ship init)" >&2; exit 3; }
while IFS= read -r f; do
  if [ -f "$f" ]; then
    s=$(wc -c < "$f") || exit 4
    printf '+ %s\n' "$s"
    head -c "$s" -- "$f" || exit 4
  else
    d=${f%/*}
    if [ "$d" != "$f" ] && [ -d "$d" ] && { [ ! -x "$d" ] || [ ! -r "$d" ]; }; then
      echo "cannot read $1/$d on $(hostname) as $(id -un): permission denied (the archive's directories must be readable by every user that restores from it)" >&2
      exit 4
    fi
    printf -- '-\n'
  fi
done
"#;

/// List the archive: `$1` archive dir. Prints `SIZE MTIME PATH` lines.
pub const LIST: &str = r#"cd "$1" 2>/dev/null && [ -e wal-ship.json ] || { echo "no wal-ship archive at $1 on $(hostname) (wal-ship.json missing: not mounted, wrong path, or not made with wal-ship init)" >&2; exit 3; }
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
        assert_eq!(
            d.host,
            Spec::Ssh {
                user: Some("postgres".into()),
                host: "db2".into(),
                port: Some(2222)
            }
        );
        assert_eq!(d.path, "/srv/wal");
        assert_eq!(d.describe(), "ssh://postgres@db2:2222/srv/wal");
        let d = SshDest::parse("[::1]:22/~/wal").unwrap();
        assert_eq!(d.path, "wal");
        assert_eq!(d.describe(), "ssh://[::1]:22/~/wal");
        for bad in [
            "host",
            "host/",
            "host:x/a",
            "@host/a",
            "-oProxyCommand=x/a",
            "::1/a",
        ] {
            let e = SshDest::parse(bad).unwrap_err();
            assert_eq!(shared::exit::classify(&e), ErrorKind::Usage, "{bad}");
            assert!(e.to_string().contains("not an archive URL"), "{e}");
        }
    }

    #[test]
    fn options_come_from_the_flags_the_config_and_pgs_ssh_opts_in_that_order() {
        let flags = vec!["IdentityFile=/k".to_owned()];
        let o = options(&flags, Some("/etc/wal ssh"), "-o 'UserKnownHostsFile=/k h'").unwrap();
        let dest = SshDest::parse("backup@vault/srv/wal").unwrap();
        let c = command(&dest, &o, PUT, &["/srv/wal", "it's"]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |w: &str| args.iter().position(|a| a == w).unwrap_or(usize::MAX);
        assert_eq!(
            &args[..4],
            ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        );
        assert!(at("IdentityFile=/k") < at("/etc/wal ssh"));
        assert!(at("/etc/wal ssh") < at("UserKnownHostsFile=/k h"));
        assert!(at("UserKnownHostsFile=/k h") < at("LogLevel=ERROR"));
        assert!(at("LogLevel=ERROR") < at("ConnectTimeout=5"));
        assert_eq!(args[at("backup@vault") + 1], "--");
        // The remote login shell gets back exactly the script and its arguments.
        let line = args.last().unwrap();
        let mut sh = std::process::Command::new("sh");
        sh.arg("-c")
            .arg(format!("set -- {line}; printf '%s|' \"$@\""));
        let out = sh.output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("sh|-c|{PUT}|wal-ship|/srv/wal|it's|")
        );
    }

    #[test]
    fn refused_options_name_where_they_came_from() {
        let refused = |flags: &[&str], env: &str| {
            let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            let e = options(&flags, None, env).unwrap_err();
            assert_eq!(shared::exit::classify(&e), ErrorKind::Usage);
            e.to_string()
        };
        let e = refused(&["StrictHostKeyChecking=no"], "");
        assert!(e.contains("--ssh-option 'StrictHostKeyChecking=no'"), "{e}");
        assert!(e.contains("host key checking on"), "{e}");
        let e = refused(&[], "-oBatchMode=no");
        assert!(e.contains("PGS_SSH_OPTS 'BatchMode=no'"), "{e}");
        let e = refused(&["justaword"], "");
        assert!(e.contains("not KEY=VALUE"), "{e}");
        assert!(options(&["StrictHostKeyChecking=accept-new".into()], None, "").is_ok());
    }
}
