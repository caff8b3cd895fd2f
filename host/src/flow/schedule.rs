//! When a flow fires: a cron expression read in an IANA time zone.
//!
//! Cron expressions take seconds first (`0 0 5-17 * * Mon-Fri`); a classic
//! five-field expression is accepted and fires at second 0. Times are
//! computed in the flow's zone, so "05:00 Pacific" stays 05:00 across
//! daylight-saving changes; the `cron` crate does the calendar arithmetic.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: String,
    pub timezone: Tz,
    parsed: cron::Schedule,
}

impl Schedule {
    /// Parses `cron` (5, 6 or 7 fields) and an IANA zone name such as
    /// `America/Los_Angeles`; `None` means UTC.
    pub fn parse(cron_text: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let fields = cron_text.split_whitespace().count();
        let normalised = match fields {
            5 => format!("0 {cron_text}"),
            6 | 7 => cron_text.to_string(),
            n => {
                return Err(ScheduleError::Cron(format!(
                    "it has {n} fields; expected 5, 6 (seconds first) or 7 (with years)"
                )));
            }
        };
        // The cron crate's message repeats the expression with a caret; its last
        // line is the reason.
        let parsed = cron::Schedule::from_str(&normalised).map_err(|e| {
            let text = e.to_string();
            ScheduleError::Cron(
                text.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or(&text)
                    .trim()
                    .to_string(),
            )
        })?;
        let timezone = match timezone {
            Some(name) => {
                Tz::from_str(name).map_err(|_| ScheduleError::Timezone(name.to_string()))?
            }
            None => Tz::UTC,
        };
        Ok(Schedule {
            cron: cron_text.to_string(),
            timezone,
            parsed,
        })
    }

    /// The first firing strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.parsed
            .after(&local)
            .next()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the cron expression does not parse: {0}")]
    Cron(String),
    #[error("`{0}` is not an IANA time zone")]
    Timezone(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).single().unwrap()
    }

    #[test]
    fn business_hours_in_los_angeles() {
        let s = Schedule::parse("0 0 5-17 * * Mon-Fri", Some("America/Los_Angeles")).unwrap();
        // Friday 2026-11-27 17:30 PST = Saturday 01:30 UTC; next is Monday 05:00 PST = 13:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 11, 28, 1, 30)),
            Some(utc(2026, 11, 30, 13, 0))
        );
        // Tuesday 2026-11-24 08:10 PST → 09:00 PST = 17:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 11, 24, 16, 10)),
            Some(utc(2026, 11, 24, 17, 0))
        );
    }

    #[test]
    fn local_time_is_kept_across_daylight_saving() {
        let s = Schedule::parse("0 0 5 * * *", Some("America/Los_Angeles")).unwrap();
        // Before the change (PDT, UTC-7) 05:00 is 12:00 UTC; after it (PST, UTC-8) 13:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 10, 31, 13, 0)),
            Some(utc(2026, 11, 1, 13, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 10, 30, 13, 0)),
            Some(utc(2026, 10, 31, 12, 0))
        );
    }

    #[test]
    fn a_time_that_does_not_exist_or_happens_twice_fires_once() {
        let s = Schedule::parse("0 30 2 * * *", Some("America/Los_Angeles")).unwrap();
        // 2026-03-08: clocks jump from 02:00 to 03:00 PST→PDT; 02:30 does not exist that day.
        let next = s.next_after(utc(2026, 3, 8, 9, 0)).unwrap();
        assert_eq!(
            next,
            utc(2026, 3, 9, 9, 30),
            "skipped on the day it does not exist, 02:30 PDT the next day"
        );
        // 2026-11-01: 01:30 happens twice (PDT, then PST); it fires once.
        let s = Schedule::parse("0 30 1 * * *", Some("America/Los_Angeles")).unwrap();
        let first = s.next_after(utc(2026, 11, 1, 7, 0)).unwrap();
        assert_eq!(first, utc(2026, 11, 1, 8, 30), "01:30 PDT");
        let second = s.next_after(first).unwrap();
        assert_eq!(
            second,
            utc(2026, 11, 2, 9, 30),
            "not again an hour later: next day 01:30 PST"
        );
    }

    #[test]
    fn five_fields_fire_at_second_zero() {
        let s = Schedule::parse("30 6 * * *", None).unwrap();
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 0, 0)),
            Some(utc(2026, 1, 1, 6, 30))
        );
    }

    #[test]
    fn bad_input_is_explained() {
        assert!(matches!(
            Schedule::parse("0 0 25 * * *", None),
            Err(ScheduleError::Cron(_))
        ));
        assert!(
            matches!(Schedule::parse("* *", None), Err(ScheduleError::Cron(m)) if m.contains("2 fields"))
        );
        assert_eq!(
            Schedule::parse("0 0 5 * * *", Some("Mars/Olympus")).unwrap_err(),
            ScheduleError::Timezone("Mars/Olympus".into())
        );
    }
}
