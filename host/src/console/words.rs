//! A flow's schedule in words ("At 05:00, on Monday, Tuesday, Wednesday,
//! Thursday, and Friday, in UTC") and its next firing in its own zone.
//!
//! The `croner` crate writes the words. It is told to read the expression
//! as Sluice does: a day must match both the day-of-month and the
//! day-of-week field, a five-field expression counts weekdays as classic
//! cron, and six or seven fields begin with seconds (Sluice allows only
//! weekday names there, which read the same in every tradition). An
//! expression it cannot describe is shown as written.

use chrono::{DateTime, Timelike, Utc};
use croner::parser::{CronParser, Seconds, Year};

use crate::flow::schedule::Schedule;

/// The schedule in words, with its time zone.
pub fn describe(schedule: &Schedule) -> String {
    let fields = schedule.cron.split_whitespace().count();
    let parser = CronParser::builder()
        .seconds(if fields >= 6 {
            Seconds::Required
        } else {
            Seconds::Disallowed
        })
        .year(if fields == 7 {
            Year::Required
        } else {
            Year::Disallowed
        })
        .dom_and_dow(true)
        .build();
    let words = parser
        .parse(&schedule.cron)
        .map(|c| c.describe())
        .unwrap_or_else(|_| format!("cron `{}`", schedule.cron));
    format!(
        "{}, in {}",
        words.trim_end_matches('.'),
        schedule.timezone.name()
    )
}

/// The next firing after `now`, in the schedule's zone: to the minute,
/// or to the second for a schedule that fires within a minute.
pub fn next_firing(schedule: &Schedule, now: DateTime<Utc>) -> String {
    schedule.next_after(now).map_or("never".to_string(), |t| {
        // One firing on the minute of a schedule that fires every 30 s
        // reads with its seconds too, as the others do.
        let within_a_minute = t.second() != 0
            || schedule
                .next_after(t)
                .is_some_and(|after| after - t < chrono::TimeDelta::minutes(1));
        let format = if !within_a_minute {
            "%a %Y-%m-%d %H:%M %Z"
        } else {
            "%a %Y-%m-%d %H:%M:%S %Z"
        };
        t.with_timezone(&schedule.timezone)
            .format(format)
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn words(cron: &str, tz: Option<&str>) -> String {
        describe(&Schedule::parse(cron, tz).unwrap())
    }

    #[test]
    fn schedules_read_as_words_in_their_zone() {
        assert_eq!(
            words("0 0 5-17 * * Mon-Fri", Some("America/Los_Angeles")),
            "At minute 0, of hour 5-17, on Monday, Tuesday, Wednesday, Thursday, and Friday, in America/Los_Angeles"
        );
        assert_eq!(
            words("0 5 * * 1-5", None),
            "At 05:00, on Monday, Tuesday, Wednesday, Thursday, and Friday, in UTC"
        );
        assert_eq!(words("*/15 * * * *", None), "At every 15 minutes, in UTC");
    }

    #[test]
    fn the_next_firing_is_shown_in_the_flows_zone() {
        let s = Schedule::parse("0 0 5 * * *", Some("America/Los_Angeles")).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        assert_eq!(next_firing(&s, now), "Mon 2026-06-01 05:00 PDT");
    }

    /// The Flows page showed a schedule firing every 20 s to the minute.
    #[test]
    fn a_schedule_firing_within_a_minute_shows_its_seconds() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 5).unwrap();
        let every_20s = Schedule::parse("*/20 * * * * *", None).unwrap();
        assert_eq!(next_firing(&every_20s, now), "Mon 2026-06-01 00:00:20 UTC");
        // Its firing on the minute too.
        let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 45).unwrap();
        assert_eq!(next_firing(&every_20s, at), "Mon 2026-06-01 00:01:00 UTC");
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        assert_eq!(next_firing(&every_minute, now), "Mon 2026-06-01 00:01 UTC");
    }
}
