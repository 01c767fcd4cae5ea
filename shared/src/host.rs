//! Where a command runs: this machine, a network namespace on it, or another host over ssh.
//!
//! A host spec is the same string the scripts take (`scripts/lib.sh`, `pgs_on`):
//!
//! | spec                        | runs                                                    |
//! |-----------------------------|---------------------------------------------------------|
//! | `local` (or empty)          | here                                                    |
//! | `netns://NAME`              | here, inside network namespace NAME (`ip netns exec`)   |
//! | `ssh://[user@]host[:port]`  | on `host` through the system `ssh` (`[v6addr]` for IPv6) |
//!
//! One ssh policy, the same as lib.sh's: `BatchMode=yes` (a password prompt would hang a
//! switchover), host keys always checked (`StrictHostKeyChecking=yes`, or `accept-new` when
//! asked for; `no`/`off` are refused), `ConnectTimeout=5` and `ServerAliveInterval=2` with
//! `ServerAliveCountMax=3`, so a dead link fails within seconds instead of hanging. Extra
//! options come from `PGS_SSH_OPTS` (e.g. `-i KEY -o UserKnownHostsFile=FILE`), split like a
//! shell would (quotes respected), never word-split; tools with a repeatable
//! `--ssh-option KEY=VALUE` put those before `PGS_SSH_OPTS`'s (the command line wins), checked
//! the same way. The policy options are given before the user's (ssh keeps the first value it
//! sees), the timeouts after them (so a user can lengthen them).
//!
//! [`Host::command`] runs a program as the PostgreSQL server's user: where the command lands
//! as root it goes through `runuser -u postgres`, otherwise it runs as the login user, from
//! `/tmp` (a directory that user can read). [`Host::login_command`] runs it as the login user,
//! in the login directory (wal-ship's archive scripts, criu-wrap's restore), and
//! [`Host::ssh_argv`] is the ssh part alone, for `rsync -e`. The command line crosses ssh as
//! one string with every word quoted, so paths with spaces or quotes arrive intact.

use std::fmt;
use std::process::Command;

use crate::exit::{err, ErrorKind};

/// A parsed host spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// This machine.
    Local,
    /// A network namespace on this machine.
    Netns(String),
    /// Another host, through ssh.
    Ssh {
        /// Login user, if given.
        user: Option<String>,
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port, if given.
        port: Option<u16>,
    },
}

impl Spec {
    /// Parse `local`, `netns://NAME` or `ssh://[user@]host[:port]`.
    pub fn parse(s: &str) -> anyhow::Result<Spec> {
        let usage = |why: &str| {
            err(
                ErrorKind::Usage,
                format!(
                    "host spec '{s}' {why}: write local, netns://NAME or ssh://[user@]host[:port]"
                ),
            )
        };
        if s.is_empty() || s == "local" {
            return Ok(Spec::Local);
        }
        if let Some(name) = s.strip_prefix("netns://") {
            if name.is_empty() || name.contains('/') {
                return Err(usage("names no namespace"));
            }
            return Ok(Spec::Netns(name.to_owned()));
        }
        let Some(rest) = s.strip_prefix("ssh://") else {
            return Err(usage("is not one"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(usage("has a path"));
        }
        Spec::parse_authority(rest).map_err(usage)
    }

    /// Parse the `[user@]host[:port]` part of an ssh URL (`[v6addr]` for IPv6), for tools
    /// whose URLs go on with a path (`ssh://host/dir`): they split the path off and name the
    /// URL in their own message, which `Err` completes with what is wrong ("has a bad port").
    pub fn parse_authority(authority: &str) -> Result<Spec, &'static str> {
        let (user, hostport) = match authority.rsplit_once('@') {
            Some(("", _)) => return Err("has an empty user"),
            Some((u, hp)) => (Some(u.to_owned()), hp),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed [")?;
            match after {
                "" => (h, None),
                _ => (h, Some(after.strip_prefix(':').ok_or("has text after ]")?)),
            }
        } else if hostport.matches(':').count() > 1 {
            return Err("has an IPv6 address without [brackets]");
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err("names no host");
        }
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| "has a bad port"))
            .transpose()?;
        Ok(Spec::Ssh {
            user,
            host: host.to_owned(),
            port,
        })
    }

    /// True for `local`.
    pub fn is_local(&self) -> bool {
        matches!(self, Spec::Local)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Local => f.write_str("local"),
            Spec::Netns(n) => write!(f, "netns://{n}"),
            Spec::Ssh { user, host, port } => {
                f.write_str("ssh://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    f.write_str(host)?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// The user's extra ssh options, checked against the policy (see the module docs).
///
/// They come from `PGS_SSH_OPTS` ([`SshOptions::from_env`]) and, in tools that have one, a
/// repeatable `--ssh-option KEY=VALUE` flag ([`SshOptions::from_options`]); [`SshOptions::then`]
/// puts one set before the other. Each source is checked as it is read, and a refusal names
/// it, so the user knows which one to fix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshOptions {
    args: Vec<String>,
    accept_new: bool,
}

impl SshOptions {
    /// Parse and check the words of `PGS_SSH_OPTS` (shell-style quoting).
    pub fn parse(text: &str) -> anyhow::Result<SshOptions> {
        let args = shlex::split(text).ok_or_else(|| {
            err(
                ErrorKind::Usage,
                format!("PGS_SSH_OPTS '{text}' has an unclosed quote"),
            )
        })?;
        SshOptions::from_args("PGS_SSH_OPTS", args)
    }

    /// From the environment (`PGS_SSH_OPTS`, empty when unset).
    pub fn from_env() -> anyhow::Result<SshOptions> {
        SshOptions::parse(&std::env::var("PGS_SSH_OPTS").unwrap_or_default())
    }

    /// From ssh options given one by one, as `KEY=VALUE` (or `KEY VALUE`) without the `-o`:
    /// a tool's repeatable `--ssh-option`. `source` names them in errors (`--ssh-option`).
    pub fn from_options<S: AsRef<str>>(source: &str, options: &[S]) -> anyhow::Result<SshOptions> {
        let mut args = Vec::with_capacity(2 * options.len());
        for o in options {
            let o = o.as_ref();
            if !o.contains(['=', ' ']) || o.starts_with(['=', ' ', '-']) {
                return Err(err(
                    ErrorKind::Usage,
                    format!("{source} '{o}' is not KEY=VALUE (e.g. IdentityFile=/path/key)"),
                ));
            }
            args.extend(["-o".to_owned(), o.to_owned()]);
        }
        SshOptions::from_args(source, args)
    }

    /// From words for ssh's command line, already split (`-i FILE -o KEY=VALUE -F FILE`),
    /// checked like `PGS_SSH_OPTS`. `source` names them in errors.
    pub fn from_args(source: &str, args: Vec<String>) -> anyhow::Result<SshOptions> {
        let mut accept_new = false;
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let opt = if a == "-o" {
                it.peek().map(|s| s.as_str())
            } else {
                a.strip_prefix("-o")
            };
            let Some(opt) = opt else { continue };
            let (k, v) = opt
                .split_once('=')
                .or_else(|| opt.split_once(' '))
                .unwrap_or((opt, ""));
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match (k.as_str(), v.as_str()) {
                ("stricthostkeychecking", "no" | "off" | "false") => {
                    return Err(err(
                        ErrorKind::Usage,
                        format!(
                            "pgshift keeps ssh host key checking on, so {source} '{opt}' is \
                             refused: add the host's key to a known_hosts file (ssh-keyscan, \
                             after checking the fingerprint) and give the option \
                             UserKnownHostsFile=FILE, or use StrictHostKeyChecking=accept-new"
                        ),
                    ))
                }
                ("stricthostkeychecking", "accept-new") => accept_new = true,
                ("batchmode", v) if v != "yes" => {
                    return Err(err(
                        ErrorKind::Usage,
                        format!(
                            "pgshift always runs ssh with BatchMode=yes (a password prompt would \
                             hang it), so {source} '{opt}' is refused: log in with a key (the \
                             option IdentityFile=FILE, or -i FILE in PGS_SSH_OPTS)"
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(SshOptions { args, accept_new })
    }

    /// These options, then `later`'s. ssh keeps the first value it sees for an option, so
    /// these win: put the command line's before the environment's.
    pub fn then(mut self, later: SshOptions) -> SshOptions {
        self.args.extend(later.args);
        self.accept_new |= later.accept_new;
        self
    }
}

/// Quote one word for a POSIX shell.
pub fn sh_quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|c| c.into_owned())
        // Only a NUL byte cannot be quoted; no path or argument of ours holds one.
        .unwrap_or_else(|_| format!("'{}'", word.replace('\0', "").replace('\'', r"'\''")))
}

/// Quote a value for postgresql.conf (`name = 'value'`): backslashes and quotes doubled.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The shell wrapper that drops root to the server's user (the same as lib.sh's pgs_on_pg).
const AS_SERVER_USER: &str = r#"cd /tmp && if [ "$(id -u)" = 0 ]; then exec runuser -u postgres -- "$@"; else exec "$@"; fi"#;

/// A host commands run on.
#[derive(Debug, Clone)]
pub struct Host {
    spec: Spec,
    ssh: SshOptions,
}

impl Host {
    /// A host from its spec and the ssh options (used for `ssh://` specs only).
    pub fn new(spec: Spec, ssh: SshOptions) -> Host {
        Host { spec, ssh }
    }

    /// Parse a spec, with the ssh options from the environment.
    pub fn parse(spec: &str) -> anyhow::Result<Host> {
        Ok(Host::new(Spec::parse(spec)?, SshOptions::from_env()?))
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// A command that runs `argv` on the host as the server's user.
    pub fn command<S: AsRef<str>>(&self, argv: &[S]) -> Command {
        let mut words = vec![
            "sh".to_owned(),
            "-c".into(),
            AS_SERVER_USER.into(),
            "pgs-on-pg".into(),
        ];
        words.extend(argv.iter().map(|a| a.as_ref().to_owned()));
        self.login_command(&words)
    }

    /// A command that runs the POSIX sh `script` on the host as the server's user, with `$0`
    /// = `name` (it shows in `ps`) and `$1...` = `args`.
    pub fn script<S: AsRef<str>>(&self, name: &str, script: &str, args: &[S]) -> Command {
        let mut argv = vec!["sh".to_owned(), "-c".into(), script.into(), name.into()];
        argv.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self.command(&argv)
    }

    /// A command that runs `argv` on the host as the login user (root stays root), in the
    /// login directory: for tools that work as whoever they log in as (wal-ship's archive
    /// owner, criu-wrap's root) rather than as the server's user.
    pub fn login_command<S: AsRef<str>>(&self, argv: &[S]) -> Command {
        let argv: Vec<&str> = argv.iter().map(|a| a.as_ref()).collect();
        match &self.spec {
            Spec::Local => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
            Spec::Netns(name) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", name]).args(&argv);
                c
            }
            Spec::Ssh { user, host, .. } => {
                let ssh = self.ssh_argv().expect("an ssh spec");
                let mut c = Command::new(&ssh[0]);
                c.args(&ssh[1..]);
                let dest = match user {
                    Some(u) => format!("{u}@{host}"),
                    None => host.clone(),
                };
                let line = argv
                    .iter()
                    .map(|w| sh_quote(w))
                    .collect::<Vec<_>>()
                    .join(" ");
                c.arg(dest).arg("--").arg(line);
                c
            }
        }
    }

    /// For an `ssh://` host, `ssh` and its options (the policy's, the user's, the port): all
    /// of the command line before the destination, for a program that runs ssh itself
    /// (`rsync -e`). `None` for other specs.
    pub fn ssh_argv(&self) -> Option<Vec<String>> {
        let Spec::Ssh { port, .. } = &self.spec else {
            return None;
        };
        let strict = if self.ssh.accept_new {
            "accept-new"
        } else {
            "yes"
        };
        let mut v: Vec<String> = ["ssh", "-o", "BatchMode=yes", "-o"]
            .map(String::from)
            .into();
        v.push(format!("StrictHostKeyChecking={strict}"));
        v.extend(self.ssh.args.iter().cloned());
        v.extend(
            [
                "-o",
                "ConnectTimeout=5",
                "-o",
                "ServerAliveInterval=2",
                "-o",
                "ServerAliveCountMax=3",
            ]
            .map(String::from),
        );
        if let Some(p) = port {
            v.extend(["-p".to_owned(), p.to_string()]);
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for (s, want) in [
            ("local", Spec::Local),
            ("", Spec::Local),
            ("netns://pgs-a", Spec::Netns("pgs-a".into())),
            (
                "ssh://postgres@db1:2222",
                Spec::Ssh {
                    user: Some("postgres".into()),
                    host: "db1".into(),
                    port: Some(2222),
                },
            ),
            (
                "ssh://[fe80::1]:22",
                Spec::Ssh {
                    user: None,
                    host: "fe80::1".into(),
                    port: Some(22),
                },
            ),
            (
                "ssh://u@[::1]",
                Spec::Ssh {
                    user: Some("u".into()),
                    host: "::1".into(),
                    port: None,
                },
            ),
        ] {
            let got = Spec::parse(s).unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(Spec::parse(&got.to_string()).unwrap(), want);
        }
        for bad in [
            "ssh://",
            "ssh://@h",
            "ssh://h:notaport",
            "ssh://::1",
            "ssh://h/path",
            "ssh://-oProxyCommand=x",
            "netns://",
            "tcp://h",
        ] {
            let e = Spec::parse(bad).unwrap_err();
            assert_eq!(crate::exit::classify(&e), ErrorKind::Usage, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn ssh_policy_refuses_turning_host_keys_or_batch_mode_off() {
        for bad in [
            "-o StrictHostKeyChecking=no",
            "-oStrictHostKeyChecking=off",
            "-o 'StrictHostKeyChecking no'",
            "-o BatchMode=no",
        ] {
            assert!(SshOptions::parse(bad).is_err(), "{bad}");
        }
        let ok = SshOptions::parse("-i '/k e y' -o UserKnownHostsFile=/x -F /dev/null").unwrap();
        assert_eq!(
            ok.args,
            [
                "-i",
                "/k e y",
                "-o",
                "UserKnownHostsFile=/x",
                "-F",
                "/dev/null"
            ]
        );
        assert!(
            SshOptions::parse("-o StrictHostKeyChecking=accept-new")
                .unwrap()
                .accept_new
        );
        assert!(SshOptions::parse("-i 'unclosed").is_err());
    }

    #[test]
    fn ssh_commands_quote_every_word_and_put_the_policy_first() {
        let host = Host::new(
            Spec::parse("ssh://postgres@db:2200").unwrap(),
            SshOptions::parse("-i /key").unwrap(),
        );
        let c = host.command(&["ls", "/dir with space/it's"]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "ssh");
        assert_eq!(
            &args[..4],
            ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        );
        assert_eq!(&args[4..6], ["-i", "/key"]);
        assert!(args.contains(&"ServerAliveInterval=2".to_owned()));
        let line = args.last().unwrap();
        // The remote shell gets back exactly the words given.
        let words = shlex::split(line).unwrap();
        assert_eq!(&words[words.len() - 2..], ["ls", "/dir with space/it's"]);
        assert_eq!(words[0], "sh");
    }

    #[test]
    fn authorities_of_urls_with_a_path() {
        assert_eq!(
            Spec::parse_authority("backup@[::1]:2222"),
            Ok(Spec::Ssh {
                user: Some("backup".into()),
                host: "::1".into(),
                port: Some(2222),
            })
        );
        assert_eq!(Spec::parse_authority("h:x"), Err("has a bad port"));
        assert_eq!(Spec::parse_authority(""), Err("names no host"));
        assert_eq!(Spec::parse_authority("@h"), Err("has an empty user"));
    }

    #[test]
    fn ssh_options_flags_are_checked_like_pgs_ssh_opts_and_named() {
        let e =
            SshOptions::from_options("--ssh-option", &["StrictHostKeyChecking=no"]).unwrap_err();
        assert_eq!(crate::exit::classify(&e), ErrorKind::Usage);
        let msg = e.to_string();
        assert!(
            msg.contains("--ssh-option 'StrictHostKeyChecking=no'"),
            "{msg}"
        );
        assert!(msg.contains("host key checking on"), "{msg}");
        for bad in [
            "BatchMode=no",
            "stricthostkeychecking off",
            "justaword",
            "-i",
        ] {
            let e = SshOptions::from_options("--ssh-option", &[bad]).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = SshOptions::parse("-o BatchMode=no").unwrap_err();
        assert!(e.to_string().contains("PGS_SSH_OPTS 'BatchMode=no'"), "{e}");
        let flags =
            SshOptions::from_options("--ssh-option", &["IdentityFile=/k", "Port 22"]).unwrap();
        assert_eq!(flags.args, ["-o", "IdentityFile=/k", "-o", "Port 22"]);
        assert!(
            SshOptions::from_options("--ssh-option", &["StrictHostKeyChecking=accept-new"])
                .unwrap()
                .accept_new
        );
        // The flags first, so they win over the environment's (ssh keeps the first value).
        let both = flags.then(SshOptions::parse("-o StrictHostKeyChecking=accept-new").unwrap());
        assert_eq!(both.args[..2], ["-o", "IdentityFile=/k"]);
        assert_eq!(both.args[4..], ["-o", "StrictHostKeyChecking=accept-new"]);
        assert!(both.accept_new);
    }

    #[test]
    fn login_commands_skip_the_server_user_wrapper_and_keep_the_policy() {
        let host = Host::new(
            Spec::parse("ssh://backup@[::1]:2200").unwrap(),
            SshOptions::from_options("--ssh-option", &["IdentityFile=/key"]).unwrap(),
        );
        let ssh = host.ssh_argv().unwrap();
        assert_eq!(
            &ssh[..5],
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes"
            ]
        );
        assert_eq!(&ssh[5..7], ["-o", "IdentityFile=/key"]);
        assert!(ssh.contains(&"ConnectTimeout=5".to_owned()));
        assert_eq!(&ssh[ssh.len() - 2..], ["-p", "2200"]);
        let c = host.login_command(&["sh", "-c", "cat > \"$1\"", "x", "/a dir/it's"]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "ssh");
        assert_eq!(args[..ssh.len() - 1], ssh[1..]);
        assert_eq!(args[ssh.len() - 1..ssh.len() + 1], ["backup@::1", "--"]);
        let words = shlex::split(args.last().unwrap()).unwrap();
        assert_eq!(words, ["sh", "-c", "cat > \"$1\"", "x", "/a dir/it's"]);
        assert_eq!(Host::parse("local").unwrap().ssh_argv(), None);
    }

    #[test]
    fn shell_quoting_leaves_plain_words_and_protects_the_rest() {
        assert_eq!(sh_quote("/var/lib/img-1"), "/var/lib/img-1");
        for w in ["", "a b", "it's", "$(rm -rf /)", "a\nb", "\"q\" \\"] {
            let q = sh_quote(w);
            assert_ne!(q, w);
            assert_eq!(shlex::split(&q).unwrap(), [w], "{q}");
        }
    }

    #[test]
    fn local_commands_run_as_given() {
        let out = Host::parse("local")
            .unwrap()
            .script("pgs-test", r#"printf '%s|' "$0" "$@""#, &["a b", "c'd"])
            .output()
            .unwrap();
        assert!(out.status.success());
        // As root the wrapper needs runuser and a postgres user; either way the words arrive.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "pgs-test|a b|c'd|");
    }

    #[test]
    fn conf_values_are_quoted_for_postgresql_conf() {
        assert_eq!(conf_quote(r"pass'w\rd x"), r"'pass''w\\rd x'");
    }
}
