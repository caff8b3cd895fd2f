//! When a flow fires: a cron expression read in an IANA time zone.
//!
//! Cron expressions take seconds first (`0 0 5-17 * * Mon-Fri`); a classic
//! five-field expression is accepted and fires at second 0. Times are
//! computed in the flow's zone, so "05:00 Pacific" stays 05:00 across
//! daylight-saving changes; the `cron` crate does the calendar arithmetic.
//!
//! Weekday numbers differ between traditions: classic (Unix) cron counts
//! 0–7 with 0 and 7 for Sunday and 1 for Monday; Quartz and the `cron`
//! crate count 1–7 with 1 for Sunday. A five-field expression is classic
//! cron, so its weekday numbers are read that way (`0 5 * * 1-5` is Monday
//! to Friday) and handed to the crate as names. A six- or seven-field
//! expression could be either, so numbers there are refused with a hint to
//! write names (`Mon-Fri`), which mean the same everywhere. Weeks run
//! Sunday to Saturday in both, so a range that wraps (`Fri-Mon`, `5-1`) is
//! refused with the two ranges it may have meant (`Fri-Sat,Sun-Mon`).

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
        let fields: Vec<&str> = cron_text.split_whitespace().collect();
        let normalised = match fields.len() {
            5 => {
                let mut fields = fields.clone();
                check_named_ranges(fields[4])?;
                let weekdays = classic_weekdays(fields[4])?;
                fields[4] = &weekdays;
                format!("0 {}", fields.join(" "))
            }
            6 | 7 => {
                if has_numbered_weekday(fields[5]) {
                    return Err(ScheduleError::NumberedWeekday(fields[5].to_string()));
                }
                check_named_ranges(fields[5])?;
                cron_text.to_string()
            }
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
            let reason = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(&text)
                .trim();
            ScheduleError::Cron(match reason {
                // No reason, only the caret under where parsing stopped.
                "^" => stopped_at(&text),
                _ => out_of_range(reason).unwrap_or_else(|| reason.to_string()),
            })
        })?;
        let timezone = zone(timezone)?;
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

/// The schedule's time zone: an IANA name, or UTC when none is given.
pub fn zone(name: Option<&str>) -> Result<Tz, ScheduleError> {
    match name {
        Some(name) => Tz::from_str(name).map_err(|_| ScheduleError::Timezone(name.to_string())),
        None => Ok(Tz::UTC),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the cron expression does not parse: {0}")]
    Cron(String),
    #[error(
        "day-of-week `{0}` uses numbers, which mean different days in a six- or seven-field cron expression (Quartz counts 1 as Sunday, classic cron as Monday)"
    )]
    NumberedWeekday(String),
    #[error("`{0}` is not an IANA time zone")]
    Timezone(String),
}

/// The cron crate's "Hours must be less than 23. ('24' specified.)" (it
/// means at most 23) as "hour 24 is out of range: use 0-23".
fn out_of_range(reason: &str) -> Option<String> {
    const UNITS: &[(&str, &str, &str)] = &[
        ("Seconds", "second", "0-59"),
        ("Minutes", "minute", "0-59"),
        ("Hours", "hour", "0-23"),
        ("Days of Month", "day of month", "1-31"),
        ("Months", "month", "1-12 or names such as Jan"),
        ("Years", "year", "1970-2100"),
    ];
    let (unit, rest) = reason.split_once(" must be ")?;
    let (_, value) = rest.split_once("('")?;
    let (value, _) = value.split_once('\'')?;
    let (_, name, range) = UNITS.iter().find(|(crate_name, ..)| *crate_name == unit)?;
    Some(format!("{name} {value} is out of range: use {range}"))
}

/// For the cron crate's error that is only the expression and a caret:
/// the part of the expression from the caret on.
fn stopped_at(text: &str) -> String {
    let mut lines = text.lines();
    let (Some(expression), Some(caret)) = (lines.next(), lines.next()) else {
        return "it is not a valid cron expression".to_string();
    };
    let from = caret.find('^').unwrap_or(0);
    match expression
        .get(from..)
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(rest) => format!("it is not valid from `{rest}` on"),
        None => "it is not a valid cron expression".to_string(),
    }
}

/// Day names in classic cron's order: index 0 (and 7) is Sunday.
const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// A classic day-of-week value: a number 0–7 (0 and 7 are Sunday) or a
/// name (`Mon`, `monday`), as a number 0–6.
fn classic_day(text: &str) -> Result<usize, ScheduleError> {
    if let Ok(n) = text.parse::<usize>() {
        return match n {
            0..=6 => Ok(n),
            7 => Ok(0),
            _ => Err(ScheduleError::Cron(format!(
                "day of week {n} is out of range: use 0-7 (0 and 7 are Sunday) or names such as Mon-Fri"
            ))),
        };
    }
    const FULL: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let lower = text.to_ascii_lowercase();
    FULL.iter()
        .position(|full| lower.len() >= 3 && full.starts_with(lower.as_str()))
        .ok_or_else(|| ScheduleError::Cron(format!("`{text}` is not a day of the week")))
}

/// One item of a day-of-week list: `*`, `?`, a day, or a range of days,
/// each optionally with `/step`.
struct WeekdayItem<'a> {
    base: &'a str,
    step: Option<&'a str>,
}

fn weekday_items(field: &str) -> impl Iterator<Item = WeekdayItem<'_>> {
    field.split(',').map(|item| match item.split_once('/') {
        Some((base, step)) => WeekdayItem {
            base,
            step: Some(step),
        },
        None => WeekdayItem {
            base: item,
            step: None,
        },
    })
}

/// Whether a day-of-week field names a day by number (a step such as the
/// `2` of `*/2` counts days, not a day, and is the same in every tradition).
fn has_numbered_weekday(field: &str) -> bool {
    weekday_items(field).any(|item| {
        item.base
            .split('-')
            .any(|day| day.chars().next().is_some_and(|c| c.is_ascii_digit()))
    })
}

/// Refuses a range of day names that wraps past Saturday (`Fri-Mon`),
/// which the `cron` crate only calls an "invalid named range", with the
/// words [`classic_weekdays`] has for a numbered one (`5-1`; `5-7` is
/// Friday to Sunday there, so numbers are left to it).
fn check_named_ranges(field: &str) -> Result<(), ScheduleError> {
    for item in weekday_items(field) {
        let Some((a, b)) = item.base.split_once('-') else {
            continue;
        };
        if has_numbered_weekday(item.base) {
            continue;
        }
        if let (Ok(from), Ok(to)) = (classic_day(a), classic_day(b))
            && from > to
        {
            return Err(runs_backwards(&item));
        }
    }
    Ok(())
}

/// A day-of-week range that runs backwards (`Fri-Mon`, `5-1`): weeks run
/// Sunday to Saturday, so it is refused with the two ranges it may have
/// meant, written the way the user wrote the days.
fn runs_backwards(item: &WeekdayItem<'_>) -> ScheduleError {
    let said = match item.step {
        Some(step) => format!("{}/{step}", item.base),
        None => item.base.to_string(),
    };
    let mut message =
        format!("day-of-week range `{said}` runs backwards (weeks run Sunday to Saturday)");
    if let (Some((a, b)), None) = (item.base.split_once('-'), item.step) {
        let (saturday, sunday) = (
            if has_numbered_weekday(a) { "6" } else { "Sat" },
            if has_numbered_weekday(b) { "0" } else { "Sun" },
        );
        // A range that starts on Saturday or ends on Sunday is that one day.
        let is = |day: &str, n: usize| classic_day(day).ok() == Some(n);
        let to_saturday = if is(a, 6) {
            a.to_string()
        } else {
            format!("{a}-{saturday}")
        };
        let from_sunday = if is(b, 0) {
            b.to_string()
        } else {
            format!("{sunday}-{b}")
        };
        message.push_str(&format!(": write `{to_saturday},{from_sunday}`"));
    }
    ScheduleError::Cron(message)
}

/// A five-field (classic) day-of-week field in the `cron` crate's terms:
/// unchanged when it has no day numbers, otherwise the days it means as a
/// list of names.
fn classic_weekdays(field: &str) -> Result<String, ScheduleError> {
    if !has_numbered_weekday(field) {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for item in weekday_items(field) {
        let step = match item.step {
            None => 1,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ScheduleError::Cron(format!(
                        "`/{s}` in day-of-week is not a positive step"
                    )));
                }
            },
        };
        // Positions 0–7 as classic cron numbers them; 7 folds onto Sunday.
        let (from, to) = match item.base {
            "*" | "?" => (0, 6),
            base => match base.split_once('-') {
                Some((a, b)) => {
                    let to = match b.parse::<usize>() {
                        Ok(7) => 7,
                        _ => classic_day(b)?,
                    };
                    (classic_day(a)?, to)
                }
                None if item.step.is_some() => (classic_day(base)?, 7),
                None => {
                    let day = classic_day(base)?;
                    (day, day)
                }
            },
        };
        if from > to {
            return Err(runs_backwards(&item));
        }
        for day in (from..=to).step_by(step) {
            days[day % 7] = true;
        }
    }
    Ok(DAY_NAMES
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).single().unwrap()
    }

    #[test]
    fn a_value_out_of_range_names_the_field_and_its_range() {
        for (cron, said) in [
            ("60 0 * * * *", "second 60 is out of range: use 0-59"),
            ("0 0 24 * * *", "hour 24 is out of range: use 0-23"),
            ("0 0 0 0 * *", "day of month 0 is out of range: use 1-31"),
            ("0 0 0 * 13 *", "month 13 is out of range: use 1-12"),
            ("0 0 0 1 1 * 2200", "it is not valid from `2200` on"),
        ] {
            let error = Schedule::parse(cron, None).unwrap_err().to_string();
            assert!(error.contains(said), "{cron}: {error}");
        }
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

    /// The weekdays (0 = Sunday) on which `cron` fires in the week from
    /// Sunday 2026-11-29, at 05:00 UTC.
    fn fires_on(cron: &str) -> Vec<u32> {
        use chrono::Datelike;
        let s = Schedule::parse(cron, None).unwrap();
        let mut at = utc(2026, 11, 28, 23, 0);
        let mut days = Vec::new();
        while let Some(next) = s.next_after(at) {
            if next >= utc(2026, 12, 6, 0, 0) {
                break;
            }
            assert_eq!(next.format("%H:%M").to_string(), "05:00", "{cron}");
            days.push(next.weekday().num_days_from_sunday());
            at = next;
        }
        days
    }

    #[test]
    fn five_field_weekday_numbers_are_classic_cron() {
        assert_eq!(fires_on("0 5 * * 1-5"), [1, 2, 3, 4, 5], "Monday to Friday");
        assert_eq!(fires_on("0 5 * * 0"), [0], "0 is Sunday");
        assert_eq!(fires_on("0 5 * * 7"), [0], "7 is Sunday too");
        assert_eq!(fires_on("0 5 * * 6"), [6]);
        assert_eq!(fires_on("0 5 * * 5-7"), [0, 5, 6]);
        assert_eq!(fires_on("0 5 * * 1,3,5"), [1, 3, 5]);
        assert_eq!(fires_on("0 5 * * */2"), [0, 2, 4, 6]);
        assert_eq!(fires_on("0 5 * * 1-5/2"), [1, 3, 5]);
        assert_eq!(fires_on("0 5 * * Mon-Fri"), [1, 2, 3, 4, 5]);
        assert_eq!(fires_on("0 5 * * mon,5"), [1, 5]);
        assert_eq!(fires_on("0 5 * * *"), [0, 1, 2, 3, 4, 5, 6]);
        for bad in ["0 5 * * 8", "0 5 * * 5-2", "0 5 * * 1/0", "0 5 * * Funday"] {
            assert!(
                matches!(Schedule::parse(bad, None), Err(ScheduleError::Cron(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn six_field_weekdays_must_be_names() {
        assert_eq!(fires_on("0 0 5 * * Mon-Fri"), [1, 2, 3, 4, 5]);
        assert_eq!(fires_on("0 0 5 ? * Sun"), [0]);
        assert_eq!(fires_on("0 0 5 * * */2"), [0, 2, 4, 6]);
        assert_eq!(fires_on("0 0 5 * * Mon-Fri 2026"), [1, 2, 3, 4, 5]);
        for ambiguous in [
            "0 0 5 * * 1-5",
            "0 0 5 * * 2",
            "0 0 5 * * Mon,3",
            "0 0 5 * * 1-5 2026",
        ] {
            let e = Schedule::parse(ambiguous, None).unwrap_err();
            assert!(
                matches!(e, ScheduleError::NumberedWeekday(_)),
                "{ambiguous}: {e}"
            );
        }
    }

    #[test]
    fn a_range_past_saturday_says_how_to_write_it() {
        for (cron, said) in [
            (
                "0 0 5 * * Fri-Mon",
                "range `Fri-Mon` runs backwards (weeks run Sunday to Saturday): write `Fri-Sat,Sun-Mon`",
            ),
            (
                "0 0 5 * * Mon,Sat-Tue",
                "range `Sat-Tue` runs backwards (weeks run Sunday to Saturday): write `Sat,Sun-Tue`",
            ),
            ("0 0 5 * * friday-sunday 2027", "write `friday-Sat,sunday`"),
            ("0 5 * * Fri-Mon", "write `Fri-Sat,Sun-Mon`"),
            (
                "0 5 * * 5-1",
                "range `5-1` runs backwards (weeks run Sunday to Saturday): write `5-6,0-1`",
            ),
            ("0 5 * * 6-0", "write `6,0`"),
            ("0 5 * * Fri-1", "write `Fri-Sat,0-1`"),
        ] {
            let error = Schedule::parse(cron, None).unwrap_err().to_string();
            assert!(error.contains(said), "{cron}: {error}");
        }
        // With a step the two ranges would step differently: only the
        // problem is said.
        let error = Schedule::parse("0 5 * * 5-1/2", None)
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("range `5-1/2` runs backwards (weeks run Sunday to Saturday)"),
            "{error}"
        );
        // What the advice says fires on the days meant.
        assert_eq!(fires_on("0 0 5 * * Fri-Sat,Sun-Mon"), [0, 1, 5, 6]);
        assert_eq!(fires_on("0 5 * * 5-6,0-1"), [0, 1, 5, 6]);
        assert_eq!(
            fires_on("0 5 * * 5-7"),
            [0, 5, 6],
            "7 ends a range on Sunday"
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
