//! `~/.pgpass` lookup, as libpq does it (§34.16): `hostname:port:database:username:password`,
//! `*` matches anything, `\` escapes `:` and `\`, `localhost` also matches Unix-socket
//! connections, and a file readable by group or others is ignored with a warning.

use std::path::{Path, PathBuf};

/// The password file to use: `passfile`, else `$PGPASSFILE`, else `~/.pgpass`.
pub fn default_path(passfile: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = passfile {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("PGPASSFILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass"))
}

/// Look up the password for one host; `None` if the file is absent, unsafe or has no match.
pub fn lookup(path: &Path, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        crate::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less; ignoring it",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let host = if host.starts_with('/') || host.is_empty() {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let want = [host, port.as_str(), dbname, user];
            let ok = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            ok.then(|| fields[4].clone())
        })
}

/// Split one line on unescaped `:`; the password field keeps any further colons.
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn matches_like_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(
            &path,
            "# comment\nother:5432:*:*:nope\nlocalhost:5433:app:al\\:ice:s3cr:et\n*:*:*:bob:bobpw\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            lookup(&path, "/var/run/postgresql", 5433, "app", "al:ice").as_deref(),
            Some("s3cr:et")
        );
        assert_eq!(
            lookup(&path, "db9", 1, "x", "bob").as_deref(),
            Some("bobpw")
        );
        assert_eq!(lookup(&path, "db9", 1, "x", "carol"), None);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&path, "db9", 1, "x", "bob"), None);
    }
}
