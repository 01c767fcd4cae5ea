//! Where a migration goes, and how images get there: rsync (over ssh for a remote host),
//! every copied file's SHA-256 compared on both sides, and commands run on the target.
//!
//! Destinations: `ssh://[user@]host[:port]/dir` (another host), `file:///dir` or a plain path
//! (this host: a second directory, which is how the tests and the VM drive a whole migration
//! without a second machine). The target needs rsync, sha256sum (coreutils), CRIU and
//! criu-wrap.
//!
//! ssh follows pgshift's one policy ([`shared::host`]): the commands on the target are
//! [`Host::login_command`]s, and rsync gets the same ssh command line ([`Host::ssh_argv`])
//! through `-e`, so both see `BatchMode=yes`, checked host keys, the timeouts and the user's
//! options (`--ssh-option`, then `PGS_SSH_OPTS`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::Context;
use shared::host::{sh_quote, Host, Spec, SshOptions};
use shared::{ErrorKind, ResultExt};

use crate::images;

/// A parsed `--to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A directory on this host.
    Local(PathBuf),
    /// A directory on another host, reached with ssh.
    Ssh {
        /// The host (a [`Spec::Ssh`]).
        host: Spec,
        /// The directory there (absolute).
        dir: String,
    },
}

impl Dest {
    /// Parse `ssh://[user@]host[:port]/dir`, `file:///dir` or a path.
    pub fn parse(s: &str) -> Result<Dest, String> {
        if let Some(rest) = s.strip_prefix("ssh://") {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(format!(
                    "'{s}' has no directory: write ssh://[user@]host[:port]/dir"
                ));
            }
            let host = Spec::parse_authority(authority)
                .map_err(|why| format!("'{s}' {why}: write ssh://[user@]host[:port]/dir"))?;
            return Ok(Dest::Ssh {
                host,
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

    /// `[user@]host` as ssh takes it; empty for this host.
    pub fn login(&self) -> String {
        match self {
            Dest::Ssh {
                host: Spec::Ssh { user, host, .. },
                ..
            } => match user {
                Some(u) => format!("{u}@{host}"),
                None => host.clone(),
            },
            _ => String::new(),
        }
    }

    /// The destination as the user wrote it (normalised), for records.
    pub fn describe(&self) -> String {
        match self {
            Dest::Local(p) => p.display().to_string(),
            Dest::Ssh { host, dir } => format!("{host}{dir}"),
        }
    }

    /// rsync's `[user@]host:dir` (`[v6addr]` in brackets) for `dir` on this destination.
    fn rsync_target(&self, dir: &str) -> String {
        match self {
            Dest::Ssh {
                host: Spec::Ssh { user, host, .. },
                ..
            } => {
                let user = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                if host.contains(':') {
                    format!("{user}[{host}]:{dir}")
                } else {
                    format!("{user}{host}:{dir}")
                }
            }
            _ => dir.to_owned(),
        }
    }
}

/// The ssh command line as one string for `rsync -e`, which splits it on spaces itself and
/// keeps what is in single or double quotes together (a doubled quote inside is one quote;
/// backslashes are not special).
fn rsync_shell(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty() && !w.contains([' ', '\'', '"']) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How to reach the target.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The destination.
    pub dest: Dest,
    /// Where its commands run (this host for a local destination).
    host: Host,
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
    /// A transport to `dest`, with these ssh options for an ssh:// one.
    pub fn new(dest: Dest, ssh: SshOptions, rsync: String) -> Transport {
        let spec = match &dest {
            Dest::Local(_) => Spec::Local,
            Dest::Ssh { host, .. } => host.clone(),
        };
        Transport {
            dest,
            host: Host::new(spec, ssh),
            rsync,
        }
    }

    /// A command that runs `argv` on the target (directly for a local destination).
    pub fn command(&self, argv: &[String]) -> Command {
        self.host.login_command(argv)
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
            Dest::Ssh { dir, .. } => {
                let host = self.dest.login();
                let script = format!(
                    "mkdir -p {d} && [ -z \"$(ls -A {d})\" ] || {{ echo 'criu-wrap: target directory {d} is not empty' >&2; exit 3; }}; command -v sha256sum rsync >/dev/null || {{ echo 'criu-wrap: sha256sum or rsync missing on the target' >&2; exit 4; }}; {w} --version",
                    d = sh_quote(dir),
                    w = sh_quote(criu_wrap)
                );
                let r = self.run(&["sh".into(), "-c".into(), script])?;
                if self.unreachable(&r) {
                    return Err(shared::err(
                        ErrorKind::Unavailable,
                        format!(
                            "cannot reach {host} with ssh: {} (check ssh access, keys, --ssh-option and PGS_SSH_OPTS)",
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
        if let Some(ssh) = self.host.ssh_argv() {
            args.push("-e".into());
            args.push(rsync_shell(&ssh).into());
        }
        args.push(self.dest.rsync_target(&format!("{target}/")).into());
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
            Dest::Ssh { .. } => {
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
                            "lost ssh to {} while verifying the copy: {}",
                            self.dest.login(),
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

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>) -> Spec {
        Spec::Ssh {
            user: user.map(str::to_owned),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn destinations() {
        assert_eq!(
            Dest::parse("ssh://db2/var/lib/criu/app"),
            Ok(Dest::Ssh {
                host: ssh(None, "db2", None),
                dir: "/var/lib/criu/app".into()
            })
        );
        let d = Dest::parse("ssh://root@10.0.0.2:2222/img").unwrap();
        assert_eq!(
            d,
            Dest::Ssh {
                host: ssh(Some("root"), "10.0.0.2", Some(2222)),
                dir: "/img".into()
            }
        );
        assert_eq!(d.login(), "root@10.0.0.2");
        assert_eq!(d.describe(), "ssh://root@10.0.0.2:2222/img");
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
        assert!(Dest::parse("ssh://-oProxyCommand=x/d").is_err());
        assert!(Dest::parse("ssh://::1/d").unwrap_err().contains("brackets"));
        assert!(Dest::parse("http://h/d").is_err());
        let d = Dest::parse("ssh://u@[::1]:22/d").unwrap();
        assert_eq!(
            d,
            Dest::Ssh {
                host: ssh(Some("u"), "::1", Some(22)),
                dir: "/d".into()
            }
        );
        assert_eq!(d.login(), "u@::1");
        assert_eq!(d.describe(), "ssh://u@[::1]:22/d");
        assert_eq!(d.rsync_target("/d/"), "u@[::1]:/d/");
        assert!(Dest::parse("file://rel").is_err());
    }

    #[test]
    fn rsync_gets_the_policys_ssh_command_line_quoted_for_its_own_splitting() {
        let t = Transport::new(
            Dest::parse("ssh://u@h:2200/d d").unwrap(),
            SshOptions::from_options("--ssh-option", &["IdentityFile=/k e'y"]).unwrap(),
            "rsync".into(),
        );
        let e = rsync_shell(&t.host.ssh_argv().unwrap());
        assert!(
            e.starts_with(
                "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o 'IdentityFile=/k e''y' "
            ),
            "{e}"
        );
        assert!(e.ends_with(" -o ServerAliveCountMax=3 -p 2200"), "{e}");
        assert_eq!(rsync_shell(&["".into(), "a\"b".into()]), r#"'' 'a"b'"#);
        assert_eq!(t.dest.rsync_target("/d d/"), "u@h:/d d/");
    }

    #[test]
    fn ssh_commands_follow_the_policy_and_quote_the_remote_words() {
        let t = Transport::new(
            Dest::parse("ssh://u@h:2200/d d").unwrap(),
            SshOptions::default(),
            "rsync".into(),
        );
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
            args[..4],
            ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        );
        assert!(args.contains(&"ConnectTimeout=5".to_owned()));
        assert_eq!(
            args[args.len() - 5..],
            [
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
        let t = Transport::new(
            Dest::Local(dst.clone()),
            SshOptions::default(),
            "rsync".into(),
        );
        t.preflight("unused").unwrap();
        assert_eq!(t.copy_verified(&src, "pre-1").unwrap(), (1, 8192));
        assert_eq!(t.copy_verified(&src, "").unwrap(), (1, 4));
        assert!(dst.join("pre-1/pages-1.img").is_file());
        assert!(dst.join("core-1.img").is_file());
        assert!(!dst.join("dump.log").exists(), "logs stay on the source");
    }
}
