//! Parsing of libpq connection strings: `key=value` conninfo and `postgresql://` URLs.
//!
//! tokio-postgres parses both forms too, but it rejects the libpq keywords it does not act on
//! (`sslrootcert`, `passfile`, `sslmode=verify-full`, ...) and knows nothing of the `PG*`
//! environment or `~/.pgpass`, which every DBA expects a Postgres tool to honour. So the
//! strings are parsed here into plain libpq keywords, and [`super::ConnInfo`] decides what to
//! hand to tokio-postgres and what to act on itself.
//!
//! Syntax as in the libpq docs (§34.1.1): conninfo values may be single-quoted with `\'` and
//! `\\` escapes; URLs are `postgresql://[user[:password]@][host][:port][,...][/dbname]
//! [?param=value&...]` with percent-encoding everywhere and `[v6addr]` hosts.

use std::collections::BTreeMap;

use crate::exit::ErrorKind;

/// Keywords libpq knows; anything else is a usage error naming the keyword.
pub const KNOWN_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Keywords libpq knows that pgshift does not act on, or acts on only for some values: a
/// usage error naming the keyword, because silently ignoring one (libpq would verify a CRL,
/// check the server's peer user, ...) connects where libpq would refuse. `None`: refused
/// whatever the value; `Some(values)`: accepted only with one of these values (what pgshift
/// does anyway).
const LIMITED: &[(&str, Option<&[&str]>, &str)] = &[
    ("sslcrl", None, "certificate revocation lists are not checked by pgshift"),
    ("sslcrldir", None, "certificate revocation lists are not checked by pgshift"),
    ("requirepeer", None, "the server's peer user is not checked by pgshift"),
    ("sslpassword", None, "encrypted client keys are not supported by pgshift: give an unencrypted sslkey (mode 0600)"),
    ("krbsrvname", None, "GSSAPI/Kerberos authentication is not supported by pgshift"),
    ("gsslib", None, "GSSAPI/Kerberos authentication is not supported by pgshift"),
    ("gssdelegation", Some(&["0"]), "GSSAPI/Kerberos authentication is not supported by pgshift"),
    ("gssencmode", Some(&["disable", "prefer", "allow"]), "GSSAPI encryption is not supported by pgshift"),
    ("replication", None, "pgshift opens replication connections itself"),
    ("client_encoding", Some(&["UTF8", "utf8", "UTF-8", "utf-8", "auto"]), "pgshift's connections always use UTF8"),
    ("sslcompression", Some(&["0"]), "TLS compression is obsolete and never used"),
    ("sslnegotiation", Some(&["postgres"]), "only the standard SSLRequest negotiation is supported"),
    ("sslcertmode", Some(&["allow", "disable"]), "sslcertmode=require is not supported by pgshift"),
    ("load_balance_hosts", Some(&["disable"]), "hosts are tried in the order given"),
];

/// Refuse a keyword pgshift would silently ignore (see [`LIMITED`]).
pub fn check_supported(map: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for (key, values, why) in LIMITED {
        let Some(v) = map.get(*key) else { continue };
        let ok = values.is_some_and(|vs| vs.contains(&v.as_str()));
        if !ok {
            return Err(usage(match values {
                None => format!("connection option \"{key}\" is not supported ({why}); remove it from the connection string"),
                Some(vs) => format!(
                    "connection option {key}={v} is not supported ({why}); use {} or leave it out",
                    vs.iter().map(|x| format!("{key}={x}")).collect::<Vec<_>>().join(" or ")
                ),
            }));
        }
    }
    Ok(())
}

/// Read service `name` from a `pg_service.conf`-format text: its `key=value` lines, or
/// `None` if the file has no such section. Keywords must be libpq's; `service` itself may not
/// appear (libpq refuses nesting too).
pub fn parse_service(
    text: &str,
    file: &str,
    name: &str,
) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let mut found: Option<BTreeMap<String, String>> = None;
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let Some(section) = section.strip_suffix(']') else {
                return Err(usage(format!(
                    "{file}:{}: syntax error in service file (a section is [name])",
                    i + 1
                )));
            };
            if found.is_some() {
                break;
            }
            in_section = section.trim() == name;
            if in_section {
                found = Some(BTreeMap::new());
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(usage(format!(
                "{file}:{}: syntax error in service file (expected key=value)",
                i + 1
            )));
        };
        let k = k.trim();
        if k == "service" {
            return Err(usage(format!(
                "{file}:{}: nested service specifications are not supported",
                i + 1
            )));
        }
        if !KNOWN_KEYWORDS.contains(&k) {
            return Err(usage(format!(
                "{file}:{}: invalid connection option \"{k}\" in service \"{name}\"",
                i + 1
            )));
        }
        if let Some(m) = found.as_mut() {
            m.entry(k.to_owned()).or_insert_with(|| v.trim().to_owned());
        }
    }
    Ok(found)
}

fn usage(msg: String) -> anyhow::Error {
    crate::err(ErrorKind::Usage, msg)
}

/// Parse a conninfo string or URL into libpq keywords. Host and port lists stay
/// comma-separated, as libpq has them.
pub fn parse(dsn: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let trimmed = dsn.trim();
    let map = if let Some(rest) = trimmed
        .strip_prefix("postgresql://")
        .or_else(|| trimmed.strip_prefix("postgres://"))
    {
        parse_url(rest)?
    } else {
        parse_keyword_value(trimmed)?
    };
    for key in map.keys() {
        if !KNOWN_KEYWORDS.contains(&key.as_str()) {
            return Err(usage(format!(
                "invalid connection option \"{key}\" (see the libpq keywords, e.g. host, port, dbname, user, sslmode)"
            )));
        }
    }
    Ok(map)
}

fn parse_keyword_value(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(usage(format!(
                "missing \"=\" after \"{key}\" in connection info string (write key=value pairs, or a postgresql:// URL)"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(n) => value.push(n),
                        None => break,
                    },
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(usage(
                    "unterminated quoted string in connection info string".to_owned(),
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        map.insert(key, value);
    }
    Ok(map)
}

fn percent_decode(s: &str, what: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| usage(format!("invalid percent-encoding in the URL's {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| usage(format!("the URL's {what} is not UTF-8")))
}

fn parse_url(rest: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                map.insert("user".into(), percent_decode(user, "user name")?);
            }
            if let Some(p) = password {
                map.insert("password".into(), percent_decode(p, "password")?);
            }
            hosts
        }
        None => authority,
    };
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for part in hostlist.split(',') {
            let (host, port) = if let Some(v6) = part.strip_prefix('[') {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| usage("unterminated [IPv6] host in URL".to_owned()))?;
                let port = match after.strip_prefix(':') {
                    Some(p) => p,
                    None if after.is_empty() => "",
                    None => return Err(usage(format!("unexpected \"{after}\" after [{addr}]"))),
                };
                (addr.to_owned(), port)
            } else {
                match part.rsplit_once(':') {
                    Some((h, p)) => (percent_decode(h, "host")?, p),
                    None => (percent_decode(part, "host")?, ""),
                }
            };
            if !port.is_empty() && port.parse::<u16>().is_err() {
                return Err(usage(format!(
                    "invalid port \"{port}\" in URL (expected a number 1-65535)"
                )));
            }
            hosts.push(host);
            ports.push(port.to_owned());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            map.insert("host".into(), hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            map.insert("port".into(), ports.join(","));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        map.insert("dbname".into(), percent_decode(db, "database name")?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                usage(format!(
                    "URL parameter \"{pair}\" has no \"=\" (write ?key=value&key2=value2)"
                ))
            })?;
            let k = percent_decode(k, "parameters")?;
            // libpq accepts ssl=true as an alias of sslmode=require.
            if k == "ssl" && v == "true" {
                map.insert("sslmode".into(), "require".into());
                continue;
            }
            map.insert(k, percent_decode(v, "parameters")?);
        }
    }
    Ok(map)
}

/// Quote a value for a conninfo string (`'...'` with `\'` and `\\` where needed).
pub fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '\'' && c != '\\')
    {
        return value.to_owned();
    }
    let mut s = String::with_capacity(value.len() + 2);
    s.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keyword_value_with_quotes_and_escapes() {
        let m =
            parse(r"host=db1,db2 port = 5432,5433 dbname='my db' password='it\'s \\ ok' user=u\ v")
                .unwrap();
        assert_eq!(
            m,
            kv(&[
                ("host", "db1,db2"),
                ("port", "5432,5433"),
                ("dbname", "my db"),
                ("password", r"it's \ ok"),
                ("user", "u v"),
            ])
        );
        assert_eq!(parse("dbname=''").unwrap(), kv(&[("dbname", "")]));
        assert_eq!(parse("").unwrap(), kv(&[]));
    }

    #[test]
    fn urls_with_multi_host_ipv6_encoding_and_params() {
        let m = parse("postgresql://al%40ice:p%3Ass@h1:5432,[::1]:5433,h3/app%20db?sslmode=verify-full&target_session_attrs=read-write&ssl=true")
            .unwrap();
        assert_eq!(
            m,
            kv(&[
                ("user", "al@ice"),
                ("password", "p:ss"),
                ("host", "h1,::1,h3"),
                ("port", "5432,5433,"),
                ("dbname", "app db"),
                ("sslmode", "require"),
                ("target_session_attrs", "read-write"),
            ])
        );
        assert_eq!(
            parse("postgres://%2Fvar%2Frun%2Fpostgresql/db").unwrap(),
            kv(&[("host", "/var/run/postgresql"), ("dbname", "db")])
        );
        assert_eq!(parse("postgresql://").unwrap(), kv(&[]));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse("host=a bogus=1").unwrap_err();
        assert!(format!("{e:#}").contains("\"bogus\""), "{e:#}");
        assert_eq!(crate::exit::classify(&e), ErrorKind::Usage);
        assert!(format!("{:#}", parse("host").unwrap_err()).contains("missing \"=\""));
        assert!(format!("{:#}", parse("password='abc").unwrap_err()).contains("unterminated"));
        assert!(
            format!("{:#}", parse("postgresql://h:99999/db").unwrap_err()).contains("invalid port")
        );
        assert!(
            format!("{:#}", parse("postgresql://h/db?sslmode").unwrap_err())
                .contains("has no \"=\"")
        );
    }

    #[test]
    fn quote_round_trips() {
        for v in ["plain", "", "with space", r"it's", r"back\slash"] {
            let m = parse(&format!("password={}", quote(v))).unwrap();
            assert_eq!(m["password"], v);
        }
    }
}
