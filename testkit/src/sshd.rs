//! An sshd on a free loopback port for tests of the ssh transports (wal-ship's archive,
//! criu-wrap's migration, migrate.sh's remote hosts): a generated host key and client key, a
//! known_hosts file naming the host key, and only the given users allowed in. It runs in the
//! foreground (`sshd -D`) as a child of the test and stops on drop.
//!
//! Needs root (sshd must switch users) and `/usr/sbin/sshd`; [`Sshd::start`] says why not
//! otherwise, for the test to skip with that reason.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd; stopped (and its directory removed) on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    addr: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> Result<(), String> {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run ssh-keygen: {e}"))?
        .success();
    ok.then_some(())
        .ok_or_else(|| "ssh-keygen failed".to_owned())
}

impl Sshd {
    /// Start an sshd that lets `users` in with the generated client key, or say why it
    /// cannot run here. The client key is readable by the server's user (see
    /// [`crate::run_as`]) too, so commands run as `postgres` can use it.
    pub fn start(users: &[&str]) -> Result<Sshd, String> {
        Sshd::start_at("127.0.0.1", None, users)
    }

    /// The same, listening on `addr` inside network namespace `netns` (a "host" of
    /// hosts-local.sh --netns), reached from here over the namespaces' bridge.
    pub fn start_at(addr: &str, netns: Option<&str>, users: &[&str]) -> Result<Sshd, String> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            return Err("/usr/sbin/sshd is not installed (apt-get install openssh-server)".into());
        }
        if !nix::unistd::geteuid().is_root() {
            return Err("not running as root: sshd cannot switch to the test's users".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("sshd-")
            .tempdir()
            .map_err(|e| format!("cannot make the sshd directory: {e}"))?;
        let d = dir.path();
        // Others (the postgres user) must reach the client key and known_hosts inside.
        let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o755));
        keygen(&d.join("host_key"))?;
        keygen(&d.join("client_key"))?;
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .map_err(|e| format!("authorized_keys: {e}"))?;
        let _ = fs::set_permissions(d.join("authorized_keys"), fs::Permissions::from_mode(0o644));
        if let Some((uid, gid)) = crate::run_as() {
            let _ = std::os::unix::fs::chown(d.join("client_key"), Some(uid), Some(gid));
        }
        let port = crate::free_port("127.0.0.1");
        let host_pub = fs::read_to_string(d.join("host_key.pub")).map_err(|e| e.to_string())?;
        fs::write(d.join("known_hosts"), format!("[{addr}]:{port} {host_pub}"))
            .map_err(|e| e.to_string())?;
        let root = if users.contains(&"root") {
            "prohibit-password"
        } else {
            "no"
        };
        fs::write(
            d.join("sshd_config"),
            format!(
                "ListenAddress {2}\nHostKey {0}/host_key\nPidFile {0}/sshd.pid\n\
                 AuthorizedKeysFile {0}/authorized_keys\nStrictModes no\nUsePAM yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin {root}\nAllowUsers {1}\n\
                 MaxStartups 50\n",
                d.display(),
                users.join(" "),
                addr
            ),
        )
        .map_err(|e| e.to_string())?;
        // sshd insists on its privilege separation directory (systemd normally makes it).
        if !Path::new("/run/sshd").exists() {
            fs::create_dir_all("/run/sshd").map_err(|e| format!("cannot create /run/sshd: {e}"))?;
            let _ = fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755));
        }
        let log = fs::File::create(d.join("sshd.log")).map_err(|e| e.to_string())?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(sshd);
                c
            }
            None => Command::new(sshd),
        };
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        let mut s = Sshd {
            child,
            addr: addr.to_owned(),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((addr, port)).is_err() {
            if s.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                return Err(format!("sshd did not start: {}", s.log().trim()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(s)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its directory (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private key the allowed users log in with.
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("client_key")
    }

    /// A known_hosts file that names this sshd's host key (host key checking stays on).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir().join("known_hosts")
    }

    /// `ssh` options that use this sshd's key and known_hosts and nothing from the caller's
    /// ~/.ssh: `-F /dev/null -i KEY -o UserKnownHostsFile=FILE -o StrictHostKeyChecking=yes`.
    pub fn ssh_options(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.client_key().display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
        ]
    }

    /// What sshd logged (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }
}
