//! The built-ins' duration params (`leaver_grace`, `full_sync_every`): their
//! form ([`PATTERN`]), which the input schemas carry so that `sluice
//! validate` refuses `abc` or `-1s` at the flow's line before any run reads
//! a tenant, and [`parse`], which reads every value of that form.
//!
//! The units and their lengths are humantime's (a month is 30.44 days, a
//! year 365.25), as the built-ins read these params before. humantime
//! itself refuses some values of the form (its fractions overflow on
//! `1.333h` and `1.7M`), and a value past chrono's range (`999999999y`)
//! failed the step after both tenants were read; reading them here means
//! the form `validate` checks and what the step accepts are the same.

use std::time::Duration;

/// `0`, or one or more of a number (up to 9 digits, up to 3 after the
/// point) and a unit, such as `0s`, `12h`, `3days` or `1h 30min`.
pub const PATTERN: &str = r"^\s*0\s*$|^\s*(?:[0-9]{1,9}(?:\.[0-9]{1,3})?\s*(?:nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$";

/// [`PATTERN`], or nothing (blank means the param's default).
pub const OR_BLANK_PATTERN: &str = r"^\s*0?\s*$|^\s*(?:[0-9]{1,9}(?:\.[0-9]{1,3})?\s*(?:nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$";

/// The longest duration [`parse`] returns: anything longer (the form allows
/// some thirty quadrillion years) means "never" as well, and this one still
/// fits chrono's range, which the steps compare times in.
pub const LONGEST: Duration = Duration::from_secs(10_000 * YEAR_SECS);

const YEAR_SECS: u64 = 31_557_600;
const MONTH_SECS: u64 = 2_630_016;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Nanoseconds in one of `unit`, for each spelling [`PATTERN`] allows.
fn unit_nanos(unit: &str) -> Option<u128> {
    let secs = |s: u64| u128::from(s) * NANOS_PER_SEC;
    Some(match unit {
        "nanos" | "nsec" | "ns" => 1,
        "usec" | "us" | "µs" => 1_000,
        "millis" | "msec" | "ms" => 1_000_000,
        "seconds" | "second" | "secs" | "sec" | "s" => secs(1),
        "minutes" | "minute" | "mins" | "min" | "m" => secs(60),
        "hours" | "hour" | "hrs" | "hr" | "h" => secs(3_600),
        "days" | "day" | "d" => secs(86_400),
        "weeks" | "week" | "wks" | "wk" | "w" => secs(604_800),
        "months" | "month" | "M" => secs(MONTH_SECS),
        "years" | "year" | "yrs" | "yr" | "y" => secs(YEAR_SECS),
        _ => return None,
    })
}

/// Whitespace as the schema's `\s` reads it.
fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// Reads a value of [`PATTERN`]'s form; longer than [`LONGEST`] reads as
/// [`LONGEST`]. `Err` says what is wrong, for a sentence about the param.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim_matches(is_space);
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if whole_len == 0 {
            return Err(format!("`{rest}` does not start with a number"));
        }
        if whole_len > 9 {
            return Err("a number has more than 9 digits".to_string());
        }
        let whole: u128 = rest[..whole_len].parse().map_err(|_| "not a number")?;
        rest = &rest[whole_len..];
        let (mut fraction, mut scale) = (0u128, 1u128);
        if let Some(after) = rest.strip_prefix('.') {
            let len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            if len == 0 || len > 3 {
                return Err("a number has no digit or more than 3 after its point".to_string());
            }
            fraction = after[..len].parse().map_err(|_| "not a number")?;
            scale = 10u128.pow(len as u32);
            rest = &after[len..];
        }
        rest = rest.trim_start_matches(is_space);
        let unit_len = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let nanos = unit_nanos(unit).ok_or_else(|| {
            if unit.is_empty() {
                "a number has no unit (s, min, h, days, …)".to_string()
            } else {
                format!("`{unit}` is not a unit (s, min, h, days, …)")
            }
        })?;
        total += whole * nanos + fraction * nanos / scale;
        rest = rest[unit_len..].trim_start_matches(is_space);
    }
    let longest = LONGEST.as_nanos();
    let nanos = total.min(longest);
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_the_flows_use() {
        let secs = Duration::from_secs;
        for (text, want) in [
            ("0", Duration::ZERO),
            (" 0 ", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("12h", secs(12 * 3_600)),
            ("3days", secs(3 * 86_400)),
            ("1h 30min", secs(5_400)),
            ("1h30m", secs(5_400)),
            ("24h", secs(86_400)),
            ("2 weeks", secs(14 * 86_400)),
            ("1.5h", secs(5_400)),
            ("250ms", Duration::from_millis(250)),
            ("7µs", Duration::from_micros(7)),
            ("1M", secs(MONTH_SECS)),
            ("1y", secs(YEAR_SECS)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    /// The values humantime refused or chrono could not hold, though
    /// `validate` let them through.
    #[test]
    fn reads_what_humantime_and_chrono_could_not() {
        assert_eq!(parse("1.333h"), Ok(Duration::from_millis(4_798_800)));
        assert_eq!(parse("1.7M"), Ok(Duration::from_millis(4_471_027_200)));
        assert_eq!(parse("0.001ns"), Ok(Duration::ZERO));
        assert_eq!(parse("999999999y"), Ok(LONGEST));
        assert_eq!(parse("999999999y 999999999y 999999999.999y"), Ok(LONGEST));
        let longest = chrono::Duration::from_std(LONGEST);
        assert!(longest.is_ok(), "LONGEST must fit chrono");
    }

    #[test]
    fn refuses_what_the_form_refuses() {
        for text in [
            "",
            " ",
            "abc",
            "-1s",
            "12",
            "12 parsecs",
            "1.s",
            ".5s",
            "1.2345s",
            "1234567890s",
            "1h 30",
            "h",
            "1 h h",
            "0 0",
        ] {
            assert!(parse(text).is_err(), "{text:?} was read");
        }
    }

    /// Every value of the form is read, and nothing else: values built
    /// from the form's own parts, checked against the pattern too.
    #[test]
    fn reads_exactly_the_values_of_the_pattern() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        let units = [
            "nanos", "nsec", "ns", "usec", "us", "µs", "millis", "msec", "ms", "seconds", "second",
            "secs", "sec", "s", "minutes", "minute", "mins", "min", "m", "hours", "hour", "hrs",
            "hr", "h", "days", "day", "d", "weeks", "week", "wks", "wk", "w", "months", "month",
            "M", "years", "year", "yrs", "yr", "y", "", "x", "sx",
        ];
        let numbers = [
            "0",
            "1",
            "007",
            "123456789",
            "1234567890",
            "1.5",
            "1.333",
            "999999999.999",
            "1.2345",
            "1.",
            ".5",
            "",
        ];
        let spaces = ["", " ", "\t"];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut read = 0;
        for _ in 0..20_000 {
            let mut text = spaces[next(spaces.len())].to_string();
            for _ in 0..=next(3) {
                text.push_str(numbers[next(numbers.len())]);
                text.push_str(spaces[next(spaces.len())]);
                text.push_str(units[next(units.len())]);
                text.push_str(spaces[next(spaces.len())]);
            }
            assert_eq!(
                parse(&text).is_ok(),
                pattern.is_match(&text),
                "{text:?}: {:?}",
                parse(&text)
            );
            read += usize::from(parse(&text).is_ok());
        }
        assert!((2_000..18_000).contains(&read), "{read} of 20,000 read");
    }
}
