//! Where a migration goes, and how images get there: rsync (over ssh for a remote host),
//! every copied file's SHA-256 compared on both sides, and commands run on the target.
//!
//! Destinations: `ssh://[user@]host[:port]/dir` (another host), `file:///dir` or a plain path
//! (this host: a second directory, which is how the tests and the VM drive a whole migration
//! without a second machine). The target needs rsync, sha256sum (coreutils), CRIU and
//! criu-wrap.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::Context;
use shared::{ErrorKind, ResultExt};

use crate::images;

/// A parsed `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A directory on this host.
    Local(PathBuf),
    /// A directory on another host, reached with ssh.
    Ssh {
        /// `[user@]host` as ssh takes it.
        host: String,
        /// The ssh port, when not the default.
        port: Option<u16>,
        /// The directory there (absolute).
        dir: String,
    },
}

impl Dest {
    /// Parse `ssh://[user@]host[:port]/dir`, `file:///dir` or a path.
    pub fn parse(s: &str) -> Result<Dest, String> {
        if let Some(rest) = s.strip_prefix("ssh://") {
            let (authority, path) = rest.split_once('/').ok_or_else(|| {
                format!("'{s}' has no directory: write ssh://[user@]host[:port]/dir")
            })?;
            if path.is_empty() {
                return Err(format!(
                    "'{s}' has no directory: write ssh://[user@]host[:port]/dir"
                ));
            }
            let port_of = |p: &str| {
                p.parse::<u16>()
                    .map_err(|_| format!("'{p}' in '{s}' is not a port number"))
            };
            let (host, port) = if let Some((user, v6)) = authority
                .split_once("@[")
                .map(|(u, r)| (format!("{u}@"), r))
                .or_else(|| authority.strip_prefix('[').map(|r| (String::new(), r)))
            {
                // [v6]:port, possibly with user@ in front.
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("'{s}': unclosed [ in the host"))?;
                let port = match after.strip_prefix(':') {
                    Some(p) => Some(port_of(p)?),
                    None => None,
                };
                (format!("{user}{h}"), port)
            } else {
                match authority.rsplit_once(':') {
                    Some((h, p)) => (h.to_owned(), Some(port_of(p)?)),
                    None => (authority.to_owned(), None),
                }
            };
            if host.is_empty() || host.starts_with('@') || host.ends_with('@') {
                return Err(format!(
                    "'{s}' has no host: write ssh://[user@]host[:port]/dir"
                ));
            }
            return Ok(Dest::Ssh {
                host,
                port,
                dir: format!("/{path}"),
            });
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "'{s}': a file:// destination needs an absolute path (file:///dir)"
                ));
            }
            return Ok(Dest::Local(PathBuf::from(path)));
        }
        if s.contains("://") {
            return Err(format!(
                "'{s}': use ssh://[user@]host[:port]/dir, file:///dir or a path"
            ));
        }
        if s.is_empty() {
            return Err("the destination is empty".into());
        }
        Ok(Dest::Local(PathBuf::from(s)))
    }

    /// The images directory on the target, as the target's commands see it.
    pub fn dir(&self) -> String {
        match self {
            Dest::Local(p) => p.display().to_string(),
            Dest::Ssh { dir, .. } => dir.clone(),
        }
    }
}

/// Quote one word for a POSIX shell (the remote side of ssh).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How to reach the target.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The destination.
    pub dest: Dest,
    /// The ssh command, split into words (`ssh -o BatchMode=yes` by default).
    pub ssh: Vec<String>,
    /// The rsync executable.
    pub rsync: String,
}

/// A command run on the target and what it said.
#[derive(Debug)]
pub struct RemoteRun {
    /// Exit code; None when killed by a signal.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Transport {
    fn ssh_base(&self, port: Option<u16>) -> Vec<String> {
        let mut v = self.ssh.clone();
        if let Some(p) = port {
            v.extend(["-p".into(), p.to_string()]);
        }
        v
    }

    /// A command that runs `argv` on the target (directly for a local destination).
    pub fn command(&self, argv: &[String]) -> Command {
        match &self.dest {
            Dest::Local(_) => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            Dest::Ssh { host, port, .. } => {
                let base = self.ssh_base(*port);
                let mut c = Command::new(&base[0]);
                c.args(&base[1..]).arg(host).arg("--");
                c.arg(
                    argv.iter()
                        .map(|a| shell_quote(a))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                c
            }
        }
    }

    /// Run `argv` on the target; only failing to start the local side is an error.
    pub fn run(&self, argv: &[String]) -> anyhow::Result<RemoteRun> {
        let mut c = self.command(argv);
        let out: Output =
            c.stdin(Stdio::null())
                .output()
                .with_kind_context(ErrorKind::Unavailable, || {
                    format!(
                        "cannot run '{}' (is it installed?)",
                        c.get_program().to_string_lossy()
                    )
                })?;
        Ok(RemoteRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// The ssh exit code for "could not connect" (the remote command's own codes are others).
    pub fn unreachable(&self, r: &RemoteRun) -> bool {
        matches!(self.dest, Dest::Ssh { .. }) && r.code == Some(255)
    }

    /// Before anything is frozen: the target directory exists and is empty, and the target
    /// runs `criu_wrap`.
    pub fn preflight(&self, criu_wrap: &str) -> anyhow::Result<()> {
        match &self.dest {
            Dest::Local(dir) => images::prepare_empty_dir(dir),
            Dest::Ssh { host, dir, .. } => {
                let script = format!(
                    "mkdir -p {d} && [ -z \"$(ls -A {d})\" ] || {{ echo 'criu-wrap: target directory {d} is not empty' >&2; exit 3; }}; command -v sha256sum rsync >/dev/null || {{ echo 'criu-wrap: sha256sum or rsync missing on the target' >&2; exit 4; }}; {w} --version",
                    d = shell_quote(dir),
                    w = shell_quote(criu_wrap)
                );
                let r = self.run(&["sh".into(), "-c".into(), script])?;
                if self.unreachable(&r) {
                    return Err(shared::err(
                        ErrorKind::Unavailable,
                        format!(
                            "cannot reach {host} with ssh: {} (check ssh access, keys and --ssh)",
                            r.stderr.trim()
                        ),
                    ));
                }
                match r.code {
                    Some(0) => Ok(()),
                    Some(3) => Err(shared::err(
                        ErrorKind::Usage,
                        format!("target directory {host}:{dir} is not empty: remove it or pick a new one"),
                    )),
                    _ => Err(shared::err(
                        ErrorKind::Unavailable,
                        format!(
                            "the target {host} cannot take a migration: {} (it needs rsync, sha256sum, criu and criu-wrap; --remote-criu-wrap names the latter)",
                            r.stderr.trim()
                        ),
                    )),
                }
            }
        }
    }

    /// Copy `src/part` to the target's `part` (`""`: the top level, without `pre-*`
    /// subdirectories and logs), then compare the SHA-256 of every copied file on both
    /// sides. Returns (files, bytes).
    pub fn copy_verified(&self, src: &Path, part: &str) -> anyhow::Result<(u64, u64)> {
        let top = part.is_empty();
        let from = if top { src.to_owned() } else { src.join(part) };
        let files: Vec<PathBuf> = images::files(&from, top)?
            .into_iter()
            .filter(|f| !(top && f.extension().is_some_and(|e| e == "log")))
            .collect();
        let bytes = files
            .iter()
            .filter_map(|f| std::fs::metadata(from.join(f)).ok())
            .map(|m| m.len())
            .sum();
        let target = if top {
            self.dest.dir()
        } else {
            format!("{}/{part}", self.dest.dir())
        };
        let mut args: Vec<OsString> = vec!["-a".into()];
        if top {
            // The pre-dump rounds went while the process ran; only the final dump's files
            // are left, and its log (megabytes at -v4) is not worth the downtime.
            args.extend(["--exclude=/pre-*".into(), "--exclude=*.log".into()]);
        }
        let mut from_arg = from.clone().into_os_string();
        from_arg.push("/");
        args.push(from_arg);
        match &self.dest {
            Dest::Local(_) => args.push(format!("{target}/").into()),
            Dest::Ssh { host, port, .. } => {
                args.push("-e".into());
                args.push(self.ssh_base(*port).join(" ").into());
                args.push(format!("{host}:{target}/").into());
            }
        }
        let out = Command::new(&self.rsync)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .with_kind_context(ErrorKind::Unavailable, || {
                format!(
                    "cannot run '{}' (install rsync, or pass --rsync)",
                    self.rsync
                )
            })?;
        if !out.status.success() {
            let kind = if matches!(self.dest, Dest::Ssh { .. }) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Io
            };
            return Err(shared::err(
                kind,
                format!(
                    "rsync to {target} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        let local = images::sha256_files(&from, &files)?;
        let remote = self.sums(&target, &files)?;
        let bad = images::mismatches(&local, &remote);
        if !bad.is_empty() {
            let list: Vec<String> = bad
                .iter()
                .take(5)
                .map(|p| p.display().to_string())
                .collect();
            return Err(shared::err(
                ErrorKind::Retry,
                format!(
                    "checksum mismatch after copying to {target}: {} of {} files differ ({}); the copy is corrupt (disk or network), retry the migration",
                    bad.len(),
                    files.len(),
                    list.join(", ")
                ),
            ));
        }
        Ok((files.len() as u64, bytes))
    }

    /// SHA-256 of `files` under `dir` on the target.
    fn sums(&self, dir: &str, files: &[PathBuf]) -> anyhow::Result<BTreeMap<PathBuf, String>> {
        if files.is_empty() {
            return Ok(BTreeMap::new());
        }
        match &self.dest {
            Dest::Local(_) => {
                // Hash what is there; a missing file is a mismatch, not an error.
                Ok(files
                    .iter()
                    .filter_map(|f| {
                        images::sha256_file(&Path::new(dir).join(f))
                            .ok()
                            .map(|h| (f.clone(), h))
                    })
                    .collect())
            }
            Dest::Ssh { host, .. } => {
                let mut argv: Vec<String> = vec![
                    "sh".into(),
                    "-c".into(),
                    "cd \"$1\" && shift && sha256sum -- \"$@\"".into(),
                    "sh".into(),
                    dir.into(),
                ];
                argv.extend(files.iter().map(|f| f.display().to_string()));
                let r = self
                    .run(&argv)
                    .context("hashing the copied images on the target")?;
                if self.unreachable(&r) {
                    return Err(shared::err(
                        ErrorKind::Unavailable,
                        format!(
                            "lost ssh to {host} while verifying the copy: {}",
                            r.stderr.trim()
                        ),
                    ));
                }
                Ok(images::parse_sha256sum(&r.stdout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            Dest::parse("ssh://db2/var/lib/criu/app"),
            Ok(Dest::Ssh {
                host: "db2".into(),
                port: None,
                dir: "/var/lib/criu/app".into()
            })
        );
        assert_eq!(
            Dest::parse("ssh://root@10.0.0.2:2222/img"),
            Ok(Dest::Ssh {
                host: "root@10.0.0.2".into(),
                port: Some(2222),
                dir: "/img".into()
            })
        );
        assert_eq!(
            Dest::parse("file:///tmp/x"),
            Ok(Dest::Local("/tmp/x".into()))
        );
        assert_eq!(Dest::parse("/tmp/x"), Ok(Dest::Local("/tmp/x".into())));
        assert!(Dest::parse("ssh://host")
            .unwrap_err()
            .contains("no directory"));
        assert!(Dest::parse("ssh://host:x/d").unwrap_err().contains("port"));
        assert!(Dest::parse("ssh:///d").unwrap_err().contains("no host"));
        assert!(Dest::parse("http://h/d").is_err());
        assert_eq!(
            Dest::parse("ssh://u@[::1]:22/d"),
            Ok(Dest::Ssh {
                host: "u@::1".into(),
                port: Some(22),
                dir: "/d".into()
            })
        );
        assert!(Dest::parse("file://rel").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/var/lib/img-1"), "/var/lib/img-1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn ssh_commands_quote_the_remote_words() {
        let t = Transport {
            dest: Dest::parse("ssh://u@h:2200/d d").unwrap(),
            ssh: vec!["ssh".into(), "-o".into(), "BatchMode=yes".into()],
            rsync: "rsync".into(),
        };
        let c = t.command(&[
            "criu-wrap".into(),
            "restore".into(),
            "--images".into(),
            "/d d".into(),
        ]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "ssh");
        assert_eq!(
            args,
            [
                "-o",
                "BatchMode=yes",
                "-p",
                "2200",
                "u@h",
                "--",
                "criu-wrap restore --images '/d d'"
            ]
        );
    }

    #[test]
    fn local_copy_is_verified() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("pre-1")).unwrap();
        std::fs::write(src.join("pre-1/pages-1.img"), vec![7u8; 8192]).unwrap();
        std::fs::write(src.join("core-1.img"), b"core").unwrap();
        std::fs::write(src.join("dump.log"), b"log").unwrap();
        let dst = d.path().join("dst");
        let t = Transport {
            dest: Dest::Local(dst.clone()),
            ssh: vec!["ssh".into()],
            rsync: "rsync".into(),
        };
        t.preflight("unused").unwrap();
        assert_eq!(t.copy_verified(&src, "pre-1").unwrap(), (1, 8192));
        assert_eq!(t.copy_verified(&src, "").unwrap(), (1, 4));
        assert!(dst.join("pre-1/pages-1.img").is_file());
        assert!(dst.join("core-1.img").is_file());
        assert!(!dst.join("dump.log").exists(), "logs stay on the source");
    }
}
