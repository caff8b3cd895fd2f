//! Removing secrets from anything a component, a person or a file might see.
//!
//! The flow knows its secrets (client secrets, bearer tokens, header
//! values built from a secret; a header named for a credential must be one,
//! see [`crate::http_rules::names_a_credential`]), the connections add
//! their own credentials and every access token they obtain. One
//! [`Redactor`] knows them all, in every form listed in [`forms`] (plain,
//! percent-, form- and JSON-encoded, base64) and the loose spellings of
//! [`loose_forms`] (another case, a secret cut short or split over two
//! lines), also where HTML numeric entities spell some of its characters,
//! and is used twice:
//! - on every response before a component sees it ([`Redactor::scrub`]), so
//!   a service that echoes a credential cannot hand it to a component;
//! - on every message that leaves the host — progress, logs, errors,
//!   `--json` output, run history, report files ([`Redactor::redact`]).

mod entities;
mod forms;

use std::borrow::Cow;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use aho_corasick::{AhoCorasick, MatchKind, packed};

pub use forms::{Part, forms, loose_forms};

/// Shared, growing list of values that must never be shown.
#[derive(Clone, Default)]
pub struct Redactor {
    known: Arc<RwLock<Known>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.known.read().map(|k| k.secrets.len()).unwrap_or(0);
        write!(f, "Redactor({count} secrets)")
    }
}

#[derive(Default)]
struct Known {
    secrets: Vec<String>,
    /// Every form of every secret; `None` while there are none.
    matcher: Option<Matcher>,
    /// Every loose spelling of every secret, searched apart (so the forms
    /// keep the packed search); `None` while there are none.
    loose: Option<Loose>,
}

impl Known {
    /// Where every form and loose spelling of every secret is in `bytes`.
    fn spans(&self, matcher: &Matcher, bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let spans = matcher.spans(bytes);
        match &self.loose {
            Some(loose) => union(spans, loose.spans(bytes, &self.secrets)),
            None => spans,
        }
    }
}

/// The loose spellings' search, and for each pattern, the secret it
/// belongs to and which part of it it is.
struct Loose {
    matcher: Matcher,
    parts: Vec<(usize, Part)>,
}

impl Loose {
    fn new(secrets: &[String]) -> Option<Loose> {
        let mut patterns = Vec::new();
        let mut parts = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            for (form, part) in loose_forms(secret) {
                patterns.push(form);
                parts.push((index, part));
            }
        }
        let matcher = Matcher::new(&patterns)?;
        Some(Loose { matcher, parts })
    }

    /// Where the loose spellings are found in `bytes`, a head widened over
    /// the rest of its secret that follows it, a tail over what precedes.
    fn spans(&self, bytes: &[u8], secrets: &[String]) -> Vec<std::ops::Range<usize>> {
        let mut spans = Vec::new();
        for (mut span, pattern) in self.matcher.matches(bytes) {
            let (index, part) = self.parts[pattern];
            let secret = secrets[index].as_bytes();
            match part {
                Part::Whole => {}
                Part::Head => {
                    let mut at = span.len();
                    while span.end < bytes.len()
                        && at < secret.len()
                        && bytes[span.end] == secret[at]
                    {
                        span.end += 1;
                        at += 1;
                    }
                    // A character is redacted whole or not at all.
                    while span.end < bytes.len() && is_continuation(bytes[span.end]) {
                        span.end -= 1;
                    }
                }
                Part::Tail => {
                    let mut at = secret.len() - span.len();
                    while span.start > 0 && at > 0 && bytes[span.start - 1] == secret[at - 1] {
                        span.start -= 1;
                        at -= 1;
                    }
                    while span.start < span.end && is_continuation(bytes[span.start]) {
                        span.start += 1;
                    }
                }
            }
            spans.push(span);
        }
        spans
    }
}

/// A UTF-8 byte that continues a character.
fn is_continuation(byte: u8) -> bool {
    byte & 0xC0 == 0x80
}

/// `a` and `b` (each sorted, non-overlapping) as one such list, spans that
/// overlap or touch joined.
fn union(
    a: Vec<std::ops::Range<usize>>,
    b: Vec<std::ops::Range<usize>>,
) -> Vec<std::ops::Range<usize>> {
    let mut all: Vec<std::ops::Range<usize>> = a.into_iter().chain(b).collect();
    all.sort_by_key(|span| (span.start, std::cmp::Reverse(span.end)));
    let mut joined: Vec<std::ops::Range<usize>> = Vec::with_capacity(all.len());
    for span in all {
        match joined.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => joined.push(span),
        }
    }
    joined
}

/// A search for every form of every secret, leftmost-longest (a secret
/// containing another is removed whole).
///
/// Every response and every output is searched whole, tens of megabytes a
/// run at 100k members, so the search's speed is the run's. The automaton's
/// own prefilter picks a few rare bytes of the patterns to skip ahead on;
/// with some tokens (they are random) those bytes are common in JSON and
/// the search fell to a tenth of its speed. The packed (SIMD) searcher
/// keeps its speed whatever the patterns; it takes a limited number of
/// them, so the automaton stays for more.
enum Matcher {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Matcher {
    fn new(patterns: &[String]) -> Option<Matcher> {
        let packed = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostLongest)
            .builder()
            .extend(patterns)
            .build();
        match packed {
            Some(searcher) => Some(Matcher::Packed(searcher)),
            None => Matcher::automaton(patterns),
        }
    }

    fn automaton(patterns: &[String]) -> Option<Matcher> {
        AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .ok()
            .map(Matcher::Automaton)
    }

    /// Where each form is found, left to right, without overlaps.
    fn spans(&self, bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        match self {
            Matcher::Packed(searcher) => searcher.find_iter(bytes).map(|m| m.range()).collect(),
            Matcher::Automaton(automaton) => {
                automaton.find_iter(bytes).map(|m| m.range()).collect()
            }
        }
    }

    /// [`Matcher::spans`], each with the index of the pattern found.
    fn matches(&self, bytes: &[u8]) -> Vec<(std::ops::Range<usize>, usize)> {
        match self {
            Matcher::Packed(searcher) => searcher
                .find_iter(bytes)
                .map(|m| (m.range(), m.pattern().as_usize()))
                .collect(),
            Matcher::Automaton(automaton) => automaton
                .find_iter(bytes)
                .map(|m| (m.range(), m.pattern().as_usize()))
                .collect(),
        }
    }
}

pub const REDACTED: &str = "[redacted]";

/// A flow's own secrets are held to this length when it is bound
/// (`flow::bind`): every one is then long enough that each of its
/// [`forms`] (hex and base64 among them) is searched for without matching
/// ordinary text by chance. No real credential is shorter.
pub const MIN_SECRET_LEN: usize = 8;

/// Shorter values would redact ordinary words: values learned on the way
/// (an access token) are searched for from this length, in the forms that
/// length allows.
const MIN_LEARNED_LEN: usize = 4;

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let r = Self::default();
        for s in secrets {
            r.add(s);
        }
        r
    }

    /// Learns a secret (and its forms). Secrets are few and added rarely
    /// (a flow's at the start, a token an hour), so the matcher is rebuilt
    /// on each.
    pub fn add(&self, secret: String) {
        if secret.len() < MIN_LEARNED_LEN {
            return;
        }
        let Ok(mut known) = self.known.write() else {
            return;
        };
        if known.secrets.contains(&secret) {
            return;
        }
        known.secrets.push(secret);
        let patterns: Vec<String> = known.secrets.iter().flat_map(|s| forms(s)).collect();
        known.matcher = Matcher::new(&patterns);
        known.loose = Loose::new(&known.secrets);
    }

    /// Removes every form of every secret from bytes; returns them and how
    /// many were removed.
    pub fn scrub<'a>(&self, bytes: &'a [u8]) -> (Cow<'a, [u8]>, usize) {
        self.scrubber().scrub(bytes)
    }

    /// The secrets known now, for several scrubs under one lock (a
    /// response's body and each of its headers).
    pub fn scrubber(&self) -> Scrubber<'_> {
        Scrubber {
            known: self.known.read().ok(),
        }
    }

    /// An error's text as it may be shown or kept: redacted, then cut to
    /// the history's size for an error (a component can report a message
    /// of any length; cutting after redacting never leaves half a secret).
    pub fn redact_error(&self, text: &str) -> String {
        sluice_store::cap::capped_error(&self.redact(text))
    }

    pub fn redact(&self, text: &str) -> String {
        match self.scrub(text.as_bytes()) {
            (Cow::Borrowed(_), _) => text.to_string(),
            // Every form is whole UTF-8 and so is the text: a cut never
            // falls inside a character.
            (Cow::Owned(bytes), _) => String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// Redacts every string inside a JSON value.
    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            // A number or a boolean that spells a secret (a numeric PIN,
            // say) becomes the redacted text: the document stays JSON.
            other => match self.redact_scalar(other) {
                Some(text) => Value::String(text),
                None => other.clone(),
            },
        }
    }

    /// A number's or a boolean's text redacted, when redaction changes it.
    pub fn redact_scalar(&self, value: &serde_json::Value) -> Option<String> {
        let text = value.to_string();
        let redacted = self.redact(&text);
        (redacted != text).then_some(redacted)
    }
}

/// A [`Redactor`]'s secrets as they were when it was made; secrets
/// learned meanwhile wait for the next one.
pub struct Scrubber<'r> {
    /// `None`: the lock was poisoned, and nothing is known to be safe.
    known: Option<RwLockReadGuard<'r, Known>>,
}

impl Scrubber<'_> {
    /// [`Redactor::scrub`].
    pub fn scrub<'a>(&self, bytes: &'a [u8]) -> (Cow<'a, [u8]>, usize) {
        let Some(known) = &self.known else {
            return (Cow::Owned(REDACTED.as_bytes().to_vec()), 1);
        };
        let Some(matcher) = &known.matcher else {
            return (Cow::Borrowed(bytes), 0);
        };
        let mut spans = known.spans(matcher, bytes);
        if let Some(decoded) = entities::Decoded::of(bytes) {
            let found = known.spans(matcher, decoded.text());
            spans = union(
                spans,
                found.into_iter().map(|s| decoded.source(s)).collect(),
            );
        }
        if spans.is_empty() {
            return (Cow::Borrowed(bytes), 0);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut kept = 0;
        for span in &spans {
            out.extend_from_slice(&bytes[kept..span.start]);
            out.extend_from_slice(REDACTED.as_bytes());
            kept = span.end;
        }
        out.extend_from_slice(&bytes[kept..]);
        (Cow::Owned(out), spans.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn removes_every_occurrence_longest_first() {
        let r = Redactor::new([
            "s3cret".to_string(),
            "s3cret-extended".to_string(),
            "ab".to_string(),
        ]);
        assert_eq!(
            r.redact("a s3cret-extended and s3cret, ab"),
            "a [redacted] and [redacted], ab"
        );
        r.add("token123".into());
        assert_eq!(
            r.redact_json(&serde_json::json!({"k": ["token123"]})),
            serde_json::json!({"k": ["[redacted]"]})
        );
    }

    #[test]
    fn a_scrubber_removes_what_the_redactor_knew_when_it_was_made() {
        let r = Redactor::new(["tok-123456".to_string()]);
        {
            let scrubber = r.scrubber();
            let (body, found) = scrubber.scrub(b"{\"echo\":\"tok-123456\"}");
            assert_eq!(
                (body.as_ref(), found),
                (&b"{\"echo\":\"[redacted]\"}"[..], 1)
            );
            let (header, found) = scrubber.scrub(b"Bearer tok-123456");
            assert_eq!((header.as_ref(), found), (&b"Bearer [redacted]"[..], 1));
            let (clean, none) = scrubber.scrub(b"text/plain");
            assert!(matches!(clean, Cow::Borrowed(_)) && none == 0);
        }
        r.add("later-secret".into());
        let (clean, found) = r.scrubber().scrub(b"a later-secret");
        assert_eq!((clean.as_ref(), found), (&b"a [redacted]"[..], 1));
    }

    /// The packed search is used while it takes the patterns; both
    /// searches find the same spans, leftmost-longest.
    #[test]
    fn the_packed_search_and_the_automaton_find_the_same() {
        let secrets = [
            "emulated-graph-secret~Q8w.3xZ",
            "procore-d880d5ebebe39c26-2",
            "procore-d880d5ebebe39c26-2-refresh",
        ];
        let patterns: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
        let packed = Matcher::new(&patterns).unwrap();
        assert!(matches!(packed, Matcher::Packed(_)));
        let automaton = Matcher::automaton(&patterns).unwrap();
        assert!(matches!(automaton, Matcher::Automaton(_)));
        let text = format!(
            r#"[{{"id":1,"login":"a-2","echo":"{}","form":"{}","both":"{}{}"}},{{"refresh":"{}","tail":"procore-d880d5ebebe39c26-"}}]"#,
            secrets[0], patterns[1], secrets[1], secrets[0], secrets[2],
        );
        let spans = packed.spans(text.as_bytes());
        assert_eq!(spans, automaton.spans(text.as_bytes()));
        assert_eq!(spans.len(), 5, "{spans:?}");
        let refresh = text.find(secrets[2]).unwrap();
        assert!(
            spans.contains(&(refresh..refresh + secrets[2].len())),
            "longest wins"
        );
    }

    /// The shipped flow's secrets, in all their forms, keep the packed
    /// search: two client secrets of the vendors' shapes and the two
    /// access tokens.
    #[test]
    fn the_shipped_flows_secrets_fit_the_packed_search() {
        let jwt = format!(
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{}.{}",
            "eyJhdWQiOiJodHRwczovL2dyYXBoLm1pY3Jvc29mdC5jb20ifQ".repeat(20),
            "Sig-Nature_x".repeat(30)
        );
        let secrets = [
            "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6vX8zY0".to_string(),
            "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0".to_string(),
            jwt,
            "eyJhbGciOiJFUzUxMiJ9.procore-access-token-0123456789".to_string(),
        ];
        let patterns: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
        let matcher = Matcher::new(&patterns).unwrap();
        assert!(
            matches!(matcher, Matcher::Packed(_)),
            "{} patterns",
            patterns.len()
        );
        // Their loose spellings too, searched apart.
        let loose = Loose::new(&secrets).unwrap();
        assert!(
            matches!(loose.matcher, Matcher::Packed(_)),
            "{} loose spellings",
            loose.parts.len()
        );
    }

    /// More secrets than the packed search takes are searched by the
    /// automaton, every one of them.
    #[test]
    fn many_secrets_are_all_removed() {
        let secrets: Vec<String> = (0..20).map(|i| format!("secret-number-{i:02}-x")).collect();
        let r = Redactor::new(secrets.clone());
        assert!(matches!(
            r.known.read().unwrap().matcher,
            Some(Matcher::Automaton(_))
        ));
        let text = secrets.join(" and ");
        let (clean, found) = r.scrub(text.as_bytes());
        assert_eq!(found, 20);
        assert_eq!(
            String::from_utf8(clean.into_owned()).unwrap(),
            vec![REDACTED; 20].join(" and ")
        );
    }

    #[test]
    fn encoded_forms_are_removed_from_bytes_and_counted() {
        let secret = "Q8~secret/with+symbols=";
        let r = Redactor::new([secret.to_string()]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("id:{secret}"));
        let body = format!(
            r#"{{"echo":"Q8~secret\/with+symbols=","form":"client_secret=Q8%7Esecret%2Fwith%2Bsymbols%3D","basic":"{b64}"}}"#
        );
        let (clean, found) = r.scrub(body.as_bytes());
        let clean = String::from_utf8(clean.into_owned()).unwrap();
        assert_eq!(found, 3, "{clean}");
        assert!(!clean.contains("Q8"), "{clean}");
        assert!(
            clean.contains(r#""form":"client_secret=[redacted]""#),
            "{clean}"
        );
        let (same, none) = r.scrub(b"nothing here");
        assert!(matches!(same, Cow::Borrowed(_)) && none == 0);
    }

    /// What a service does to a value it echoes in its own words: another
    /// case, symbols as HTML entities, the value cut short or wrapped onto
    /// a second line. Each is removed, a cut or wrapped one as far as it
    /// goes.
    #[test]
    fn a_secret_echoed_changed_cut_or_wrapped_is_removed() {
        let secret = "Zq8~Hx-4vN.pL2_rT7wK9mB3Q8w8";
        let r = Redactor::new([secret.to_string()]);
        for (echoed, expected) in [
            (
                "INVALID TOKEN ZQ8~HX-4VN.PL2_RT7WK9MB3Q8W8",
                "INVALID TOKEN [redacted]",
            ),
            ("token zq8~hx-4vn.pl2_rt7wk9mb3q8w8.", "token [redacted]."),
            (
                "<e>Zq8&#126;Hx&#x2D;4vN.pL2_rT7wK9mB3Q8w8</e>",
                "<e>[redacted]</e>",
            ),
            (
                "<e>ZQ8&#126;HX-4VN.PL2&#95;RT7WK9MB3Q8W8</e>",
                "<e>[redacted]</e>",
            ),
            (
                "token Zq8~Hx-4vN.pL2_rT7wK9m... truncated",
                "token [redacted]... truncated",
            ),
            (
                "token Zq8~Hx-4vN.pL2_rT7wK9mB3Q8w\nend",
                "token [redacted]\nend",
            ),
            (
                "wrapped: Zq8~H\nx-4vN.pL2_rT7wK9mB3Q8w8",
                "wrapped: Zq8~H\n[redacted]",
            ),
            // A cut one next to the secret itself: one span.
            (
                "Zq8~Hx-4vN.pL2_rT7wK9mB3Q8w8Zq8~Hx-4vN.pL2_rT7wK9",
                "[redacted]",
            ),
        ] {
            assert_eq!(r.redact(echoed), expected, "{echoed}");
        }
        // Text that shares less than two thirds of it is left alone.
        assert_eq!(
            r.redact("Zq8~Hx-4vN.pL2 and rT7wK9mB3Q8w8"),
            "Zq8~Hx-4vN.pL2 and rT7wK9mB3Q8w8"
        );
        // A multi-byte character is never cut.
        let wide = "Zq8~Hx-4vN.pL2_rT7wK9mB3Q8w8é";
        let r = Redactor::new([wide.to_string()]);
        assert_eq!(r.redact("x Zq8~Hx-4vN.pL2_rT7wK9mB3Q8w8è"), "x [redacted]è");
    }

    /// What an outside test found echoed by a token endpoint and not
    /// removed: an encoding in capitals, every character escaped, and a
    /// secret of the shortest length a flow accepts in hex or inside base64
    /// (at each offset).
    #[test]
    fn a_secret_echoed_encoded_and_changed_or_short_is_removed() {
        let b64 = |text: &str| STANDARD.encode(text);
        let hex = |text: &str| -> String { text.bytes().map(|b| format!("{b:02X}")).collect() };
        for (secret, echoed) in [
            (
                "Abc8Q~xYz.Secret-Entra_LikeValue0123",
                "CLIENT_SECRET=ABC8Q%7EXYZ.SECRET-ENTRA_LIKEVALUE0123&X=1".to_string(),
            ),
            ("a b c d e", "CLIENT_SECRET=A+B+C+D+E&X=1".to_string()),
            (
                "Zq7wK9pL",
                format!("body {}.", hex("client_secret=Zq7wK9pL")),
            ),
            ("Zq7wK9pL", format!("body {}.", b64("secret=Zq7wK9pL&"))),
            ("Zq7wK9pL", format!("body {}.", b64("secret=xZq7wK9pL&"))),
            ("Zq7wK9pL", format!("body {}.", b64("secret=xyZq7wK9pL&"))),
            (
                "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6v",
                format!(
                    "\"{}\"",
                    "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6v"
                        .chars()
                        .map(|c| format!("\\u{:04x}", c as u32))
                        .collect::<String>()
                ),
            ),
            (
                "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6v",
                "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6v"
                    .bytes()
                    .map(|b| format!("%{b:02x}"))
                    .collect(),
            ),
        ] {
            let r = Redactor::new([secret.to_string()]);
            let shown = r.redact(&echoed);
            assert!(shown.contains(REDACTED), "{secret}: {echoed} -> {shown}");
            // What is left does not spell it in the same encoding.
            for form in forms(secret)
                .iter()
                .chain(loose_forms(secret).iter().map(|(f, _)| f))
            {
                assert!(!shown.contains(form.as_str()), "{secret}: {shown}");
            }
        }
    }
}
