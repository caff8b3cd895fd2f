//! A state value as the host holds it: compact JSON text, checked once.
//!
//! A component's `state.set` hands over text. It is checked to be one JSON
//! document exactly as parsing it into a `serde_json::Value` would check it
//! (escapes and surrogates, number ranges, nesting depth, nothing after
//! it), but without building the tree; the whitespace between tokens is
//! dropped, and the text is kept as it is otherwise. A first run of the
//! license sync sets a key per person of the tenant (73,927 at 100k), so
//! each value used to be parsed into a tree and written out again.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{MAX_VALUE_BYTES, Refused};

/// A JSON document as compact text, checked to parse and to fit
/// [`MAX_VALUE_BYTES`]: how the host holds a value between a component's
/// `set` and the store (a parsed value takes several times the memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json(Box<str>);

impl Json {
    /// `value` as compact text.
    pub fn of(value: &Value) -> Json {
        Json(value.to_string().into_boxed_str())
    }

    /// A value as a store hands it back: one JSON document (the store
    /// checks what it reads), kept as it is.
    pub fn stored(text: String) -> Json {
        Json(text.into_boxed_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document, parsed (it was checked to parse).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    pub fn into_string(self) -> String {
        self.0.into_string()
    }
}

/// Checks a value the component sent against the contract's limits, and
/// keeps it as compact text.
pub fn parse_value(text: &str) -> Result<Json, Refused> {
    if text.len() > MAX_VALUE_BYTES {
        return Err(Refused::LargeValue(text.len()));
    }
    check(text).map_err(|e| Refused::NotJson(e.to_string()))?;
    Ok(Json(compact(text).into_boxed_str()))
}

/// Whether `text` is one JSON document as parsing it into a `Value` reads
/// it (escapes and surrogates, number ranges, nesting depth), without
/// building the tree.
pub fn check(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<Checked>(text).map(|_| ())
}

/// `text`, a JSON document, without the whitespace between its tokens.
/// Only ASCII whitespace outside strings is dropped, so what is left is
/// the same document, and UTF-8.
fn compact(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            continue;
        }
        out.push(b);
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

/// A JSON document read as far as a `Value` reads it, and dropped: each
/// string is decoded (an invalid escape or a lone surrogate is refused),
/// each number parsed (one out of range is refused), nesting counted.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_checked_as_a_parsed_value_is_and_kept_compact() {
        let cases = [
            (
                r#"{"procore_id": 123456, "origin": "adopted", "status": "active"}"#,
                r#"{"procore_id":123456,"origin":"adopted","status":"active"}"#,
            ),
            (
                "[1, -2.5e3, 1E2, -0, 18446744073709551615, -9223372036854775808]",
                "[1,-2.5e3,1E2,-0,18446744073709551615,-9223372036854775808]",
            ),
            (
                " \"Zoë \\\"Z\\\" \\u00e9\\ud83d\\ude00 \\/ \\n\" ",
                "\"Zoë \\\"Z\\\" \\u00e9\\ud83d\\ude00 \\/ \\n\"",
            ),
            (
                "{\n  \"a b\": [ true,false , null ],\t\"c\" : { } }\r\n",
                r#"{"a b":[true,false,null],"c":{}}"#,
            ),
            (r#"{"a":1,"a":2}"#, r#"{"a":1,"a":2}"#),
            ("null", "null"),
        ];
        for (text, compact) in cases {
            let kept = parse_value(text).unwrap();
            assert_eq!(kept.as_str(), compact);
            let parsed: Value = serde_json::from_str(text).unwrap();
            assert_eq!(kept.value(), parsed, "the same document: {text}");
        }
    }

    #[test]
    fn what_a_parsed_value_refuses_is_refused() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            "",
            "{",
            "{} {}",
            "[1,]",
            "{\"a\" 1}",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"tab\there\"",
            "1e400",
            "-1e400",
            "NaN",
            "'single'",
            deep.as_str(),
        ];
        for text in cases {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
            assert!(
                matches!(parse_value(text), Err(Refused::NotJson(_))),
                "{text} should be refused"
            );
        }
        let large = format!("\"{}\"", "x".repeat(MAX_VALUE_BYTES));
        assert_eq!(
            parse_value(&large),
            Err(Refused::LargeValue(MAX_VALUE_BYTES + 2))
        );
    }
}
