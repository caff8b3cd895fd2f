//! An error and its causes as one paragraph. anyhow's `{:#}` joins every
//! cause, and libraries often repeat their cause in their own message
//! (rusqlite: "database disk image is malformed: database disk image is
//! malformed: Error code 11: database disk image is malformed"); a cause
//! the paragraph already says is left out.

/// `error` and each cause it does not already say, joined by ": ".
pub fn paragraph(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        let said =
            text.contains(&cause) || last_part(&cause).is_some_and(|tail| text.contains(tail));
        if !said {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// What a "Prefix: detail" message says after its last ": ": a cause
/// whose detail the paragraph says already adds only its prefix ("Error
/// code 11: …").
fn last_part(text: &str) -> Option<&str> {
    text.rsplit_once(": ").map(|(_, tail)| tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Plain(String, #[source] Option<Box<Plain>>);

    fn chain(parts: &[&str]) -> anyhow::Error {
        let mut error: Option<Box<Plain>> = None;
        for part in parts.iter().rev() {
            error = Some(Box::new(Plain((*part).to_string(), error)));
        }
        anyhow::Error::new(*error.unwrap())
    }

    #[test]
    fn a_cause_already_said_is_left_out() {
        let e = chain(&[
            "the SQLite store failed: database disk image is malformed",
            "database disk image is malformed",
            "Error code 11: database disk image is malformed",
        ]);
        assert_eq!(
            paragraph(&e),
            "the SQLite store failed: database disk image is malformed"
        );
    }

    #[test]
    fn a_cause_whose_detail_is_said_before_a_hint_is_left_out() {
        let e = chain(&[
            "the store failed: disk image is malformed (the file is damaged: restore it)",
            "Error code 11: disk image is malformed",
        ]);
        assert_eq!(
            paragraph(&e),
            "the store failed: disk image is malformed (the file is damaged: restore it)"
        );
    }

    #[test]
    fn a_new_cause_is_joined() {
        let e = chain(&["cannot open the store", "permission denied"]);
        assert_eq!(paragraph(&e), "cannot open the store: permission denied");
    }
}
