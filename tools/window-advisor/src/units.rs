//! Byte sizes on the command line: `16GiB`, `16GB` (1024-based, as PostgreSQL reads it),
//! `512MB`, `1.5TB`, or plain bytes.

pub use shared::cli::parse_size;

/// `1.5 GiB`, `512 MiB`, `12 B`: for messages.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("16GB").unwrap(), 16 << 30);
        assert_eq!(parse_size("512 MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("3 furlongs")
            .unwrap_err()
            .contains("unknown unit"));
        assert_eq!(human_bytes(1536.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(human_bytes(12.0), "12 B");
    }
}
