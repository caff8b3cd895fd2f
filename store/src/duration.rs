//! Ages for `sluice runs prune --older-than`: `30d`, `12h`, `90m`, `45s`,
//! `2w`, `1d12h`, `2days 4hours` — whatever `humantime` reads (note that
//! `m` is minutes and `M` months), with an error that shows an example.

use std::time::Duration;

/// A text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration ({why}); write a number and a unit, like 30d, 12h, 90m or 45s")]
pub struct DurationError {
    pub text: String,
    /// What `humantime` found wrong.
    pub why: String,
}

/// Parses a duration such as `30d` or `1d12h`; surrounding blanks are ignored.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|e| DurationError {
        text: text.to_string(),
        why: e.to_string(),
    })
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
