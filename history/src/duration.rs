//! Ages for `sluice runs prune --older-than`: a number and a unit, such as
//! `30d`, `12h`, `90m`, `45s` or `2w`, or several run together (`1d12h`).
//! Anything else that `humantime` reads (`2days 4hours`) works too.

use std::time::Duration;

/// A text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration; write a number and a unit, like 30d, 12h, 90m or 45s")]
pub struct DurationError(pub String);

/// Parses `30d`, `12h`, `90m`, `45s`, `2w`, `1d12h`, or what `humantime` reads.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let fail = || DurationError(text.to_string());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(fail());
    }
    match short_form(trimmed) {
        Some(d) => Ok(d),
        None => humantime::parse_duration(trimmed).map_err(|_| fail()),
    }
}

/// `<digits><unit>` repeated; `None` when the text is not of that form.
fn short_form(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let seconds_per = match &rest[digits..digits + unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(seconds_per)?)?;
        rest = &rest[digits + unit_len..];
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_forms() {
        let h = 3600;
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 24 * h);
        assert_eq!(parse_duration("12h").unwrap().as_secs(), 12 * h);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 90 * 60);
        assert_eq!(parse_duration(" 45s ").unwrap().as_secs(), 45);
        assert_eq!(parse_duration("2w").unwrap().as_secs(), 14 * 24 * h);
        assert_eq!(parse_duration("1d12h").unwrap().as_secs(), 36 * h);
        assert_eq!(parse_duration("2days 4hours").unwrap().as_secs(), 52 * h);
    }

    #[test]
    fn refuses_nonsense_with_an_example() {
        for bad in ["", "d", "30", "30x", "-1d", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains("like 30d"), "{bad}: {e}");
        }
    }
}
