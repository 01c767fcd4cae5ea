//! Time: the zone the load pattern lives in, parsing timestamps, and the local calendar.
//!
//! Load follows the wall clock of the people and jobs behind it: the nightly batch runs at
//! 02:00 local time in winter and in summer. So every model works on *local* calendar
//! positions (day of week, minute of day) computed with the time zone's real offset at each
//! instant (jiff), never on UTC arithmetic; a DST switch then moves the pattern with the
//! clock. The grid itself stays in absolute time (so the hour that does not exist in spring
//! is simply absent and the repeated autumn hour appears twice).

use anyhow::Context;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use shared::ErrorKind;

/// Seconds in a day and in a week.
pub const DAY: i64 = 86_400;
/// Seconds in a week.
pub const WEEK: i64 = 7 * DAY;

/// A time zone and the name to print for it.
#[derive(Clone, Debug)]
pub struct Zone {
    /// The zone.
    pub tz: TimeZone,
    /// IANA name (`Europe/Berlin`), or `UTC`, or a fixed offset.
    pub name: String,
}

impl Zone {
    /// The zone named on the command line, else the system zone (`TZ`, `/etc/localtime`),
    /// else UTC.
    pub fn resolve(name: Option<&str>) -> anyhow::Result<Zone> {
        match name {
            Some(n) => {
                let tz = TimeZone::get(n).map_err(|e| {
                    shared::err(
                        ErrorKind::Usage,
                        format!(
                            "unknown time zone '{n}' ({e}); use an IANA name such as \
                             Europe/Berlin, America/New_York or UTC"
                        ),
                    )
                })?;
                Ok(Zone {
                    name: tz.iana_name().unwrap_or(n).to_owned(),
                    tz,
                })
            }
            None => {
                let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
                let name = tz.iana_name().unwrap_or("UTC").to_owned();
                Ok(Zone { tz, name })
            }
        }
    }

    /// UTC.
    pub fn utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// The offset from UTC in seconds at an instant (epoch seconds).
    pub fn offset_at(&self, secs: i64) -> i64 {
        match Timestamp::from_second(secs) {
            Ok(ts) => i64::from(self.tz.to_offset(ts).seconds()),
            Err(_) => 0,
        }
    }

    /// `2026-03-29T04:00:00+02:00` for an instant (epoch seconds).
    pub fn local_string(&self, secs: i64) -> String {
        match Timestamp::from_second(secs) {
            Ok(ts) => ts
                .to_zoned(self.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            Err(_) => secs.to_string(),
        }
    }

    /// The local weekday name (`Sun`) at an instant.
    pub fn weekday(&self, secs: i64) -> String {
        match Timestamp::from_second(secs) {
            Ok(ts) => ts.to_zoned(self.tz.clone()).strftime("%a").to_string(),
            Err(_) => String::new(),
        }
    }
}

/// RFC 3339 UTC (`2026-01-05T03:00:00Z`) for epoch seconds.
pub fn utc_string(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// RFC 3339 UTC with milliseconds (`2026-11-25T18:51:36.123Z`) for epoch milliseconds.
pub fn utc_string_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Parse a point in time as found in metric exports: RFC 3339 with an offset or `Z`
/// (`2026-01-05T10:00:00Z`), a civil date-time read in `zone` (`2026-01-05 10:00:00`), or a
/// Unix epoch number (seconds; milliseconds when it is too large to be seconds). Returns
/// epoch milliseconds.
pub fn parse_time(s: &str, zone: &Zone) -> Result<i64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty time".into());
    }
    if let Ok(n) = s.parse::<f64>() {
        return epoch_number(n);
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    match s.parse::<jiff::civil::DateTime>() {
        Ok(dt) => dt
            .to_zoned(zone.tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| format!("'{s}' is not a time in {}: {e}", zone.name)),
        Err(_) => Err(format!(
            "'{s}' is not a time (write RFC 3339 like 2026-01-05T10:00:00Z, a local \
             2026-01-05 10:00:00, or Unix epoch seconds)"
        )),
    }
}

/// Epoch seconds (or milliseconds, if beyond year 5138 as seconds) to epoch milliseconds.
pub fn epoch_number(n: f64) -> Result<i64, String> {
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{n} is not a Unix time"));
    }
    let ms = if n > 1e11 { n } else { n * 1000.0 };
    if ms > 253_402_300_799_000.0 {
        return Err(format!("{n} is too far in the future to be a Unix time"));
    }
    Ok(ms.round() as i64)
}

/// Parse a `--from`/`--start` argument: `now` or any form [`parse_time`] accepts.
pub fn parse_instant_arg(s: &str, zone: &Zone) -> anyhow::Result<i64> {
    if s.trim().eq_ignore_ascii_case("now") {
        return Ok(Timestamp::now().as_millisecond());
    }
    parse_time(s, zone)
        .map_err(|e| shared::err(ErrorKind::Usage, e))
        .context("reading a time argument")
}

/// The local calendar position of one grid point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cal {
    /// Local day of week, 0 = Monday.
    pub dow: u8,
    /// Local minute of the day, 0..1440.
    pub minute: u16,
}

impl Cal {
    /// Local minute of the week, 0..10080 (Monday 00:00 is 0).
    pub fn minute_of_week(self) -> u32 {
        u32::from(self.dow) * 1440 + u32::from(self.minute)
    }
}

/// The local calendar of a regular grid: `t0 + i * step` for `i` in `0..len`.
#[derive(Clone, Debug)]
pub struct Calendar {
    /// Epoch seconds of grid point 0.
    pub t0: i64,
    /// Grid step in seconds (a whole number of minutes).
    pub step: i64,
    /// Local position of each grid point.
    pub cal: Vec<Cal>,
    /// Number of slots in a week at this step.
    pub week_slots: usize,
    /// Number of slots in a day at this step.
    pub day_slots: usize,
    /// For each slot of the week, the grid points in it, in order (for "same time last
    /// week" in local time).
    by_week_slot: Vec<Vec<u32>>,
    /// Slot of the week and of the day of each grid point (precomputed: every model asks).
    slots: Vec<(u16, u16)>,
}

impl Calendar {
    /// The calendar of `len` grid points starting at `t0` (epoch seconds) in `zone`.
    pub fn new(zone: &Zone, t0: i64, step: i64, len: usize) -> Calendar {
        let step_min = (step / 60).max(1) as u32;
        let week_slots = (10_080u32.div_ceil(step_min)) as usize;
        let day_slots = (1_440u32.div_ceil(step_min)) as usize;
        let mut cal = Vec::with_capacity(len);
        // Offsets change rarely: look one up only when the cached one may be stale, i.e.
        // keep it for the stretch the zone says it is valid (checked once an hour).
        let mut cached: Option<(i64, i64)> = None; // (valid until, offset)
        for i in 0..len {
            let t = t0 + i as i64 * step;
            let off = match cached {
                Some((until, off)) if t < until => off,
                _ => {
                    let off = zone.offset_at(t);
                    cached = Some((t - t.rem_euclid(3600) + 3600, off));
                    off
                }
            };
            let local = t + off;
            let days = local.div_euclid(DAY);
            // 1970-01-01 was a Thursday: Monday-zero weekday 3.
            let dow = (days + 3).rem_euclid(7) as u8;
            let minute = (local.rem_euclid(DAY) / 60) as u16;
            cal.push(Cal { dow, minute });
        }
        let slots: Vec<(u16, u16)> = cal
            .iter()
            .map(|c| {
                (
                    (c.minute_of_week() / step_min) as u16,
                    (u32::from(c.minute) / step_min) as u16,
                )
            })
            .collect();
        let mut by_week_slot = vec![Vec::new(); week_slots];
        for (i, s) in slots.iter().enumerate() {
            by_week_slot[usize::from(s.0)].push(i as u32);
        }
        Calendar {
            t0,
            step,
            cal,
            week_slots,
            day_slots,
            by_week_slot,
            slots,
        }
    }

    /// Number of grid points.
    pub fn len(&self) -> usize {
        self.cal.len()
    }

    /// True when the calendar has no points.
    pub fn is_empty(&self) -> bool {
        self.cal.is_empty()
    }

    /// Epoch seconds of grid point `i`.
    pub fn time(&self, i: usize) -> i64 {
        self.t0 + i as i64 * self.step
    }

    /// Grid points per day.
    pub fn steps_per_day(&self) -> usize {
        (DAY / self.step).max(1) as usize
    }

    /// The slot of the week (local) of grid point `i`.
    #[inline]
    pub fn week_slot(&self, i: usize) -> usize {
        usize::from(self.slots[i].0)
    }

    /// The slot of the day (local) of grid point `i`.
    #[inline]
    pub fn day_slot(&self, i: usize) -> usize {
        usize::from(self.slots[i].1)
    }

    /// The local hour of the week (0..168) of grid point `i`.
    pub fn hour_of_week(&self, i: usize) -> usize {
        (self.cal[i].minute_of_week() / 60) as usize
    }

    /// The grid points before `before` in the same local slot of the week as `i`, latest
    /// first.
    pub fn same_slot_before(&self, i: usize, before: usize) -> impl Iterator<Item = usize> + '_ {
        let list = &self.by_week_slot[self.week_slot(i)];
        let end = list.partition_point(|&j| (j as usize) < before);
        list[..end].iter().rev().map(|&j| j as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> Zone {
        Zone::resolve(Some("Europe/Berlin")).unwrap()
    }

    #[test]
    fn parses_the_usual_time_forms() {
        let z = berlin();
        let utc = Zone::utc();
        assert_eq!(
            parse_time("2026-01-05T10:00:00Z", &z).unwrap(),
            1_767_607_200_000
        );
        // A civil time is read in the zone: 11:00 in Berlin in January is 10:00 UTC.
        assert_eq!(
            parse_time("2026-01-05 11:00:00", &z).unwrap(),
            1_767_607_200_000
        );
        assert_eq!(
            parse_time("2026-01-05T10:00:00", &utc).unwrap(),
            1_767_607_200_000
        );
        assert_eq!(parse_time("1767607200", &z).unwrap(), 1_767_607_200_000);
        assert_eq!(parse_time("1767607200000", &z).unwrap(), 1_767_607_200_000);
        assert_eq!(parse_time("1767607200.5", &z).unwrap(), 1_767_607_200_500);
        assert!(parse_time("yesterday", &z)
            .unwrap_err()
            .contains("not a time"));
        assert!(parse_time("-5", &z).is_err());
        assert!(parse_time("", &z).is_err());
        assert_eq!(utc_string_ms(1_767_607_200_500), "2026-01-05T10:00:00.500Z");
        assert_eq!(utc_string_ms(1_767_607_200_000), "2026-01-05T10:00:00.000Z");
        assert_eq!(utc_string(1_767_607_200), "2026-01-05T10:00:00Z");
    }

    #[test]
    fn unknown_zone_is_a_usage_error() {
        let e = Zone::resolve(Some("Mars/Olympus")).unwrap_err();
        assert_eq!(shared::exit::classify(&e), ErrorKind::Usage);
        assert!(format!("{e:#}").contains("Mars/Olympus"));
    }

    #[test]
    fn local_calendar_follows_dst() {
        // Europe/Berlin springs forward on 2026-03-29 at 02:00 local (01:00 UTC).
        let z = berlin();
        let t0 = parse_time("2026-03-28T00:00:00Z", &z).unwrap() / 1000;
        let c = Calendar::new(&z, t0, 3600, 48);
        // Saturday 00:00 UTC = 01:00 CET.
        assert_eq!(c.cal[0], Cal { dow: 5, minute: 60 });
        // Sunday 00:00 UTC = 01:00 CET; 01:00 UTC = 03:00 CEST (02:00 local does not exist).
        assert_eq!(c.cal[24], Cal { dow: 6, minute: 60 });
        assert_eq!(
            c.cal[25],
            Cal {
                dow: 6,
                minute: 180
            }
        );
        // Sunday 02:00 UTC is 04:00 local.
        assert_eq!(c.cal[26].minute, 240);
        // Same local time one week apart is 167 hours apart across the switch.
        let t1 = parse_time("2026-03-22T03:00:00Z", &z).unwrap() / 1000; // Sun 04:00 CET
        let c = Calendar::new(&z, t1, 3600, 200);
        let after = 167; // Sun 2026-03-29 02:00 UTC = 04:00 CEST
        assert_eq!(c.cal[after], c.cal[0]);
        assert_eq!(c.same_slot_before(after, after).next(), Some(0));
        assert_eq!(z.local_string(c.time(after)), "2026-03-29T04:00:00+02:00");
    }

    #[test]
    fn slots_of_the_week_and_day() {
        let z = Zone::utc();
        // Monday 2026-01-05 00:00 UTC.
        let t0 = parse_time("2026-01-05T00:00:00Z", &z).unwrap() / 1000;
        let c = Calendar::new(&z, t0, 300, 2 * 2016);
        assert_eq!(c.week_slots, 2016);
        assert_eq!(c.day_slots, 288);
        assert_eq!(c.week_slot(0), 0);
        assert_eq!(c.week_slot(2016 + 7), 7);
        assert_eq!(c.day_slot(288 + 12), 12);
        assert_eq!(c.hour_of_week(288 + 12), 25);
        assert_eq!(c.cal[288 * 6].dow, 6);
        let before: Vec<usize> = c.same_slot_before(2016 + 7, 4032).collect();
        assert_eq!(before, vec![2016 + 7, 7]);
    }
}
