//! Maintenance windows for the `periodic` reboot strategy: weekly windows in
//! local time of a time zone, e.g. `Mon,Thu 22:30 for 90m`.
//!
//! A window opens at the given wall-clock time on each listed day, in the
//! configured time zone, and stays open for the given *elapsed* time. So
//! across a DST change a 22:30 window still opens at 22:30 local time (its
//! UTC time moves by an hour), and lasts 90 real minutes. A start time that
//! does not exist on a day (the hour skipped when clocks go forward) opens
//! the window at the same offset after the gap (02:30 becomes 03:30); a
//! start time that happens twice (clocks go back) opens it at the first
//! occurrence. Windows may run past midnight into the next day.

use std::time::Duration;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// One weekly window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    hour: i8,
    minute: i8,
    length: Duration,
}

/// Longest window: a week (longer ones would overlap themselves).
const MAX_LENGTH: Duration = Duration::from_secs(7 * 24 * 3600);

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl std::str::FromStr for Window {
    type Err = String;

    /// `DAYS HH:MM for LENGTH`: days as `Mon,Thu` (or `Mon-Fri`), a 24-hour
    /// time, a length such as `90m` or `2h`.
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "maintenance window {s:?}: expected \"DAYS HH:MM for LENGTH\", e.g. \
                 \"Mon,Thu 22:30 for 90m\" or \"Sat-Sun 03:00 for 2h\""
            )
        };
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [days, time, "for", length] = parts[..] else {
            return Err(usage());
        };
        let day = |name: &str| {
            DAYS.iter()
                .position(|d| d.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("{}: {name:?} is not a day (Mon … Sun)", usage()))
        };
        let mut set = [false; 7];
        for item in days.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut i = a;
                    loop {
                        set[i] = true;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => set[day(item)?] = true,
            }
        }
        let (h, m) = time.split_once(':').ok_or_else(usage)?;
        let (hour, minute) = match (h.parse::<i8>(), m.parse::<i8>()) {
            (Ok(h), Ok(m)) if (0..24).contains(&h) && (0..60).contains(&m) => (h, m),
            _ => {
                return Err(format!(
                    "{}: {time:?} is not a time from 00:00 to 23:59",
                    usage()
                ));
            }
        };
        let length = humantime::parse_duration(length)
            .map_err(|e| format!("{}: length {length:?}: {e}", usage()))?;
        if length.is_zero() || length > MAX_LENGTH {
            return Err(format!(
                "{}: the length must be more than 0 and at most 7 days",
                usage()
            ));
        }
        Ok(Window {
            days: set,
            hour,
            minute,
            length,
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days: Vec<&str> = (0..7).filter(|i| self.days[*i]).map(|i| DAYS[i]).collect();
        write!(
            f,
            "{} {:02}:{:02} for {}",
            days.join(","),
            self.hour,
            self.minute,
            humantime::format_duration(self.length)
        )
    }
}

/// Weekly windows in one time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub tz: TimeZone,
    pub windows: Vec<Window>,
}

fn weekday_index(w: Weekday) -> usize {
    w.to_monday_zero_offset() as usize
}

impl Schedule {
    /// Every window occurrence (start, end) whose start lies within eight
    /// days before or after `around`, sorted by start.
    fn occurrences(&self, around: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today: Date = around.to_zoned(self.tz.clone()).date();
        let mut out = Vec::new();
        for offset in -8i64..=8 {
            let Ok(date) = today.checked_add(offset.days()) else {
                continue;
            };
            for w in &self.windows {
                if !w.days[weekday_index(date.weekday())] {
                    continue;
                }
                // `to_zoned` resolves gaps forward and folds to the earlier time.
                let Ok(start) = date.at(w.hour, w.minute, 0, 0).to_zoned(self.tz.clone()) else {
                    continue;
                };
                let start = start.timestamp();
                let Ok(length) = SignedDuration::try_from(w.length) else {
                    continue;
                };
                let end = start.checked_add(length).unwrap_or(Timestamp::MAX);
                out.push((start, end));
            }
        }
        out.sort();
        out
    }

    /// The window open at `now`, as (start, end).
    pub fn open_at(&self, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
        self.occurrences(now)
            .into_iter()
            .find(|(s, e)| *s <= now && now < *e)
    }

    /// When the next window opens after `now` (`now` itself if one is open).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        if self.open_at(now).is_some() {
            return Some(now);
        }
        self.occurrences(now)
            .into_iter()
            .map(|(s, _)| s)
            .find(|s| *s > now)
    }
}

/// The time zone a configuration names: `UTC`, an IANA name from the
/// system's database (`Europe/Berlin`), `localtime` (the system's), or a
/// POSIX TZ string (`CET-1CEST,M3.5.0,M10.5.0/3`, no database needed).
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    match name {
        "UTC" | "Etc/UTC" => return Ok(TimeZone::UTC),
        "localtime" => return Ok(TimeZone::system()),
        _ => {}
    }
    let named = TimeZone::get(name);
    if let Ok(tz) = named {
        return Ok(tz);
    }
    if name.bytes().any(|b| b.is_ascii_digit())
        && let Ok(tz) = TimeZone::posix(name)
    {
        return Ok(tz);
    }
    Err(format!(
        "time zone {name:?} is neither in this system's time zone database \
         (/usr/share/zoneinfo) nor a POSIX TZ string; use UTC, an installed IANA name, or a \
         POSIX TZ string such as \"CET-1CEST,M3.5.0,M10.5.0/3\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central European time, without a time zone database.
    const CET: &str = "CET-1CEST,M3.5.0,M10.5.0/3";

    fn schedule(windows: &[&str]) -> Schedule {
        Schedule {
            tz: time_zone(CET).unwrap(),
            windows: windows.iter().map(|w| w.parse().unwrap()).collect(),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_windows() {
        let w: Window = "Mon,Thu 22:30 for 90m".parse().unwrap();
        assert_eq!(w.to_string(), "Mon,Thu 22:30 for 1h 30m");
        let w: Window = "fri-mon 03:00 for 2h".parse().unwrap();
        assert_eq!(w.to_string(), "Mon,Fri,Sat,Sun 03:00 for 2h");
        for bad in [
            "Mon 22:30",
            "Mon 24:00 for 1h",
            "Monday 22:30 for 1h",
            "Mon 22:30 for 0s",
            "Mon 22:30 for 8days",
            "Mon 22:30 for soon",
        ] {
            let err = bad.parse::<Window>().unwrap_err();
            assert!(err.contains("maintenance window"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_window_in_winter_time() {
        let s = schedule(&["Mon,Thu 22:30 for 90m"]);
        // Monday 2025-01-06 22:30 CET is 21:30 UTC.
        assert_eq!(s.open_at(t("2025-01-06T21:29:59Z")), None);
        assert_eq!(
            s.open_at(t("2025-01-06T21:30:00Z")),
            Some((t("2025-01-06T21:30:00Z"), t("2025-01-06T23:00:00Z")))
        );
        assert_eq!(s.open_at(t("2025-01-06T23:00:00Z")), None);
        // From Tuesday, the next window is Thursday's.
        assert_eq!(
            s.next_open(t("2025-01-07T12:00:00Z")),
            Some(t("2025-01-09T21:30:00Z"))
        );
        assert_eq!(
            s.next_open(t("2025-01-06T22:00:00Z")),
            Some(t("2025-01-06T22:00:00Z"))
        );
    }

    #[test]
    fn a_window_across_midnight() {
        // Sunday 23:00 for 2 h: open until Monday 01:00 local.
        let s = schedule(&["Sun 23:00 for 2h"]);
        let open = Some((t("2025-01-05T22:00:00Z"), t("2025-01-06T00:00:00Z")));
        assert_eq!(s.open_at(t("2025-01-05T23:30:00Z")), open); // Mon 00:30 local
        assert_eq!(s.open_at(t("2025-01-05T22:00:00Z")), open);
        assert_eq!(s.open_at(t("2025-01-06T00:00:00Z")), None); // Mon 01:00 local
        // Monday itself is not a window day.
        assert_eq!(s.open_at(t("2025-01-06T22:30:00Z")), None);
    }

    #[test]
    fn windows_keep_local_time_across_dst_changes() {
        let s = schedule(&["Sat 22:30 for 90m"]);
        // The Saturday before clocks go forward (2025-03-30): CET, UTC+1.
        assert_eq!(
            s.next_open(t("2025-03-29T12:00:00Z")),
            Some(t("2025-03-29T21:30:00Z"))
        );
        // The Saturday after: CEST, UTC+2, so an hour earlier in UTC.
        assert_eq!(
            s.next_open(t("2025-04-05T12:00:00Z")),
            Some(t("2025-04-05T20:30:00Z"))
        );
        // And back in October (clocks go back 2025-10-26).
        assert_eq!(
            s.next_open(t("2025-10-25T12:00:00Z")),
            Some(t("2025-10-25T20:30:00Z"))
        );
        assert_eq!(
            s.next_open(t("2025-11-01T12:00:00Z")),
            Some(t("2025-11-01T21:30:00Z"))
        );
    }

    #[test]
    fn windows_on_the_days_of_the_change() {
        // 02:30 does not exist on 2025-03-30: the window opens at 03:30 CEST
        // (01:30 UTC) and lasts its full 60 minutes.
        let s = schedule(&["Sun 02:30 for 60m"]);
        assert_eq!(
            s.open_at(t("2025-03-30T01:45:00Z")),
            Some((t("2025-03-30T01:30:00Z"), t("2025-03-30T02:30:00Z")))
        );
        assert_eq!(s.open_at(t("2025-03-30T01:15:00Z")), None);
        // 02:30 happens twice on 2025-10-26: the first (CEST, 00:30 UTC).
        assert_eq!(
            s.open_at(t("2025-10-26T00:45:00Z")),
            Some((t("2025-10-26T00:30:00Z"), t("2025-10-26T01:30:00Z")))
        );
        // A window across midnight on the night clocks go forward lasts its
        // elapsed length: Sat 23:00 CET + 4 h = Sun 04:00 CEST.
        let s = schedule(&["Sat 23:00 for 4h"]);
        assert_eq!(
            s.open_at(t("2025-03-30T01:59:00Z")),
            Some((t("2025-03-29T22:00:00Z"), t("2025-03-30T02:00:00Z")))
        );
    }

    #[test]
    fn time_zone_names() {
        assert!(time_zone("UTC").is_ok());
        assert!(time_zone(CET).is_ok());
        let err = time_zone("Mars/Olympus").unwrap_err();
        assert!(err.contains("POSIX TZ string"), "{err}");
    }
}
