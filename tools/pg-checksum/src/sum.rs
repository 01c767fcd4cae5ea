//! A chunk's checksum: row count plus two 64-bit hash sums, additive and order-independent.

use shared::ErrorKind;

/// Row count and the two hash lanes of a set of rows (see [`crate::sql`] for the hash).
/// Sums are kept modulo 2^64, so adding two chunk sums gives the sum of their union.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum {
    /// Number of rows.
    pub rows: i64,
    /// Sum of the first row hash, modulo 2^64.
    pub h1: u64,
    /// Sum of the second row hash, modulo 2^64.
    pub h2: u64,
}

impl Sum {
    /// From the hash query's `count`, and its two `numeric` sums as text.
    pub fn from_sql(rows: i64, s1: Option<&str>, s2: Option<&str>) -> anyhow::Result<Sum> {
        Ok(Sum {
            rows,
            h1: wrap(s1)?,
            h2: wrap(s2)?,
        })
    }

    /// One row's contribution.
    pub fn of_row(h1: i64, h2: i64) -> Sum {
        Sum {
            rows: 1,
            h1: h1 as u64,
            h2: h2 as u64,
        }
    }

    /// The 128-bit hash as 32 hex digits (what records carry).
    pub fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.h1, self.h2)
    }

    /// Read back what [`Sum::hex`] wrote.
    pub fn from_hex(rows: i64, hex: &str) -> Option<Sum> {
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        Some(Sum {
            rows,
            h1: u64::from_str_radix(&hex[..16], 16).ok()?,
            h2: u64::from_str_radix(&hex[16..], 16).ok()?,
        })
    }
}

impl std::ops::Add for Sum {
    type Output = Sum;

    /// The sum of the union of both row sets.
    fn add(self, o: Sum) -> Sum {
        Sum {
            rows: self.rows + o.rows,
            h1: self.h1.wrapping_add(o.h1),
            h2: self.h2.wrapping_add(o.h2),
        }
    }
}

/// A `numeric` sum of 64-bit hashes, as text, reduced modulo 2^64. Sums of up to 2^63 rows fit
/// an `i128`; the cast to `u64` is the reduction.
fn wrap(s: Option<&str>) -> anyhow::Result<u64> {
    let Some(s) = s else { return Ok(0) };
    let n: i128 = s.parse().map_err(|_| {
        shared::err(
            ErrorKind::Internal,
            format!("unexpected hash sum from the server: {s:?}"),
        )
    })?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_matches_twos_complement() {
        let s = Sum::from_sql(2, Some("-1"), Some("18446744073709551617")).unwrap();
        assert_eq!((s.h1, s.h2), (u64::MAX, 1));
        // Adding sums equals summing the rows.
        let a = Sum::of_row(i64::MAX, -5);
        let b = Sum::of_row(i64::MAX, 7);
        let total = Sum::from_sql(2, Some(&(i64::MAX as i128 * 2).to_string()), Some("2")).unwrap();
        assert_eq!(a + b, total);
        assert!(Sum::from_sql(1, Some("1.5"), None).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let s = Sum {
            rows: 3,
            h1: 0xdead_beef,
            h2: u64::MAX,
        };
        assert_eq!(s.hex(), "00000000deadbeefffffffffffffffff");
        assert_eq!(Sum::from_hex(3, &s.hex()), Some(s));
        assert_eq!(Sum::from_hex(3, "xyz"), None);
    }
}
