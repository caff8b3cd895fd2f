//! A step's input or output as run events carry it: shared with the run,
//! never copied, and redacted only as it is written out.
//!
//! At 100k members a step's output is a list of a hundred thousand people.
//! An event used to carry a redacted deep copy of it, which the history
//! then copied again only to keep its first 64 KiB. A [`Payload`] holds
//! the run's own value (an `Arc` of the output, or the input's JSON text
//! as the component receives it) with the run's [`Redactor`]:
//! - serialised (`--json`, tests), it writes every string redacted, with
//!   no copy of the tree: the output is the redacted value's JSON, as
//!   before;
//! - for the run history, [`Payload::capped`] writes at most what the
//!   history keeps ([`MAX_JSON_BYTES`]) and only counts the
//!   rest, giving what the store would have made of the whole redacted
//!   value (the value itself, or its truncation marker) as JSON text the
//!   store keeps as it is.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sluice_store::HistoryJson;
use sluice_store::cap::{MAX_JSON_BYTES, PREVIEW_CHARS};

use super::output::StepOutput;
use crate::redact::Redactor;

/// A JSON value of the run, shared, shown redacted.
#[derive(Clone)]
pub struct Payload {
    json: Json,
    redactor: Redactor,
}

#[derive(Clone)]
enum Json {
    /// A parsed value (an item's input held back by an approval gate).
    Tree(Arc<Value>),
    /// JSON text (a step's input, as its component reads it).
    Text(Arc<String>),
    /// A step's (or an item's) output, as the run holds it.
    Output(StepOutput),
}

impl Payload {
    /// A parsed value, redacted by `redactor` when shown.
    pub fn tree(value: Arc<Value>, redactor: &Redactor) -> Self {
        Self {
            json: Json::Tree(value),
            redactor: redactor.clone(),
        }
    }

    /// Valid JSON text, redacted by `redactor` when shown.
    pub fn text(text: Arc<String>, redactor: &Redactor) -> Self {
        Self {
            json: Json::Text(text),
            redactor: redactor.clone(),
        }
    }

    /// A step's output, redacted by `redactor` when shown.
    pub fn output(output: StepOutput, redactor: &Redactor) -> Self {
        Self {
            json: Json::Output(output),
            redactor: redactor.clone(),
        }
    }

    /// The value, redacted: a copy, for a reader that needs a tree (tests,
    /// `--json`; nothing else on a run's path calls this on a large value).
    pub fn redacted(&self) -> Value {
        match &self.json {
            Json::Tree(value) => self.redactor.redact_json(value),
            Json::Text(text) => self.redacted_text(text),
            Json::Output(output) => self.redacted_text(output.text()),
        }
    }

    fn redacted_text(&self, text: &str) -> Value {
        self.redacted_value(text, self.redactor.redact(text))
    }

    /// `redacted` (`text` redacted) as a tree; when redaction left it
    /// unparsable (a secret that is also a JSON token, `true` or `2026`),
    /// `text` redacted value by value, so a reader of `--json` still finds
    /// an object where the component returned one.
    fn redacted_value(&self, text: &str, redacted: String) -> Value {
        if let Ok(value) = serde_json::from_str(&redacted) {
            return value;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => self.redactor.redact_json(&value),
            Err(_) => Value::String(redacted),
        }
    }

    /// The step output before redaction, when this is one: for a reader
    /// that takes only numbers and sizes from it and redacts what it shows.
    pub fn unredacted(&self) -> Option<&StepOutput> {
        match &self.json {
            Json::Output(output) => Some(output),
            Json::Tree(_) | Json::Text(_) => None,
        }
    }

    /// `text` redacted with this payload's redactor.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// What the run history keeps of the redacted value: the value itself
    /// when its JSON text fits in [`MAX_JSON_BYTES`], else the store's
    /// truncation marker (its size and the start of its text). Only what
    /// is kept is held in memory while the rest is counted, and text is
    /// kept as text: the store writes it as it is.
    pub fn capped(&self) -> HistoryJson {
        let mut out = Capped::default();
        match &self.json {
            Json::Tree(value) => {
                let shown = Shown {
                    value,
                    redactor: &self.redactor,
                };
                // Writing to memory fails only on a map key that is not a
                // string, which a `Value` does not have.
                if serde_json::to_writer(&mut out, &shown).is_err() {
                    return HistoryJson::null();
                }
            }
            Json::Text(text) => return self.capped_text(text),
            Json::Output(output) => return self.capped_text(output.text()),
        }
        out.into_json()
    }

    /// [`Self::capped`] of JSON text: scrubbed as it is, or, when that left
    /// it unparsable (a secret that is also a JSON token), redacted value
    /// by value so the history keeps a value, not null.
    fn capped_text(&self, text: &str) -> HistoryJson {
        let mut out = Capped::default();
        let (bytes, _) = self.redactor.scrub(text.as_bytes());
        out.push(&bytes);
        let broken = out.total <= MAX_JSON_BYTES
            && matches!(bytes, Cow::Owned(_))
            && serde_json::from_slice::<serde::de::IgnoredAny>(&out.kept).is_err();
        if broken && let Ok(value) = serde_json::from_str::<Value>(text) {
            return Payload::tree(Arc::new(value), &self.redactor).capped();
        }
        out.into_json()
    }

    /// [`Self::capped`] as a tree, for a record that holds one.
    pub fn capped_value(&self) -> Value {
        self.capped().to_value()
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.json {
            Json::Tree(value) => Shown {
                value,
                redactor: &self.redactor,
            }
            .serialize(serializer),
            // Written in full only by a `--json` run or a test.
            Json::Text(text) => self.serialize_text(text, serializer),
            Json::Output(output) => self.serialize_text(output.text(), serializer),
        }
    }
}

impl Payload {
    /// Writes `text` redacted as it is, without parsing it into a tree: at
    /// 100k members a `--json` run's tree of one output took ten times the
    /// output's size. Each event is one line, so text with a line break
    /// (pretty-printed) goes through a tree, as does text that redaction
    /// left unparsable.
    fn serialize_text<S: Serializer>(&self, text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        let redacted = self.redactor.redact(text);
        if !redacted.contains(['\n', '\r'])
            && let Ok(raw) = serde_json::from_str::<&RawValue>(&redacted)
        {
            return raw.serialize(serializer);
        }
        self.redacted_value(text, redacted).serialize(serializer)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.capped())
    }
}

/// A value serialised with every string (and key) redacted.
struct Shown<'a> {
    value: &'a Value,
    redactor: &'a Redactor,
}

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shown = |value| Shown {
            value,
            redactor: self.redactor,
        };
        match self.value {
            Value::String(s) => serializer.serialize_str(&redacted(self.redactor, s)),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&shown(item))?;
                }
                seq.end()
            }
            Value::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(&*redacted(self.redactor, key), &shown(value))?;
                }
                map.end()
            }
            other => match self.redactor.redact_scalar(other) {
                Some(text) => serializer.serialize_str(&text),
                None => other.serialize(serializer),
            },
        }
    }
}

/// `text` redacted, borrowed when there is nothing to redact.
fn redacted<'a>(redactor: &Redactor, text: &'a str) -> Cow<'a, str> {
    match redactor.scrub(text.as_bytes()) {
        (Cow::Borrowed(_), _) => Cow::Borrowed(text),
        (Cow::Owned(_), _) => Cow::Owned(redactor.redact(text)),
    }
}

/// JSON text as the history keeps it: the first bytes, up to one past the
/// cap, and how many were written in all.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    total: usize,
}

impl Capped {
    fn push(&mut self, bytes: &[u8]) {
        let room = (MAX_JSON_BYTES + 1).saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.total += bytes.len();
    }

    /// The text, or the truncation marker (as `sluice_store::cap::capped`
    /// makes it from the whole text); `null` for a text that is not JSON.
    fn into_json(self) -> HistoryJson {
        if self.total <= MAX_JSON_BYTES {
            return String::from_utf8(self.kept)
                .ok()
                .and_then(HistoryJson::parse)
                .unwrap_or_else(HistoryJson::null);
        }
        let preview: String = String::from_utf8_lossy(&self.kept)
            .chars()
            .take(PREVIEW_CHARS)
            .collect();
        HistoryJson::of(&json!({ "truncated": true, "bytes": self.total, "preview": preview }))
    }
}

impl Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(["s3cret-value".to_string()])
    }

    /// A secret that is also a JSON token (a number, `true`) leaves the
    /// payload a JSON object, shown and kept, with that token redacted.
    #[test]
    fn a_secret_spelled_like_a_json_token_keeps_the_payload_an_object() {
        for secret in ["2026", "true"] {
            let r = Redactor::new([secret.to_string()]);
            let text = format!(r#"{{"action":"echo","flag":{secret},"note":"at {secret}"}}"#);
            let expected = json!({"action": "echo", "flag": "[redacted]", "note": "at [redacted]"});
            let payload = Payload::text(Arc::new(text.clone()), &r);
            assert_eq!(payload.redacted(), expected, "{secret}");
            let written: Value =
                serde_json::from_str(&serde_json::to_string(&payload).unwrap()).unwrap();
            assert_eq!(written, expected, "{secret}");
            assert_eq!(payload.capped().to_value(), expected, "{secret}");
            let output = Payload::output(StepOutput::parse(text).unwrap(), &r);
            assert_eq!(output.capped().to_value(), expected, "{secret}");
        }
    }

    /// Serialised, a payload is the redacted value's JSON, keys included,
    /// whether it holds a tree or text.
    #[test]
    fn a_payload_serialises_as_its_redacted_value() {
        let r = redactor();
        let value = json!({"a": ["x s3cret-value y", 1, null, true], "s3cret-value": {"n": 2.5}});
        let expected = serde_json::to_string(&r.redact_json(&value)).unwrap();
        let tree = Payload::tree(Arc::new(value.clone()), &r);
        assert_eq!(serde_json::to_string(&tree).unwrap(), expected);
        let text = Payload::text(Arc::new(value.to_string()), &r);
        assert_eq!(serde_json::to_string(&text).unwrap(), expected);
        let output = Payload::output(StepOutput::of(&value), &r);
        assert_eq!(serde_json::to_string(&output).unwrap(), expected);
        assert_eq!(tree.redacted(), r.redact_json(&value));
        assert_eq!(output.redacted(), r.redact_json(&value));
        assert!(!expected.contains("s3cret"));
    }

    /// Text is written as it is, inside an event's line; pretty-printed
    /// text still makes one line, and the value is the same either way.
    #[test]
    fn text_is_written_as_it_is_and_always_on_one_line() {
        let r = redactor();
        let value = json!({"b": [1, "s3cret-value"], "a": {"é": "\u{1F600}\\\"q"}});
        let expected = serde_json::to_string(&r.redact_json(&value)).unwrap();
        for text in [
            value.to_string(),
            serde_json::to_string_pretty(&value).unwrap(),
        ] {
            let payload = Payload::text(Arc::new(text), &r);
            let line = serde_json::to_string(&json!({"event": "x"})).unwrap();
            let event = serde_json::to_string(&(line, &payload)).unwrap();
            assert!(!event.contains('\n'), "{event}");
            assert!(!event.contains("s3cret"), "{event}");
            let back: (String, Value) = serde_json::from_str(&event).unwrap();
            assert_eq!(back.1, r.redact_json(&value));
            assert_eq!(serde_json::to_string(&payload).unwrap(), expected);
        }
        // A tree built from it (as tests read events) is the value too.
        let compact = Payload::text(Arc::new(value.to_string()), &r);
        assert_eq!(
            serde_json::to_value(&compact).unwrap(),
            r.redact_json(&value)
        );
    }

    /// What the history keeps is what the store made of the whole
    /// redacted value: itself when small, the same marker when large.
    #[test]
    fn capped_is_what_the_store_keeps_of_the_redacted_value() {
        let r = redactor();
        let small = json!({"k": "s3cret-value", "n": [1, 2]});
        let big = json!({"users": vec!["someone s3cret-value é@example.com"; 10_000]});
        for value in [small, big] {
            let whole = sluice_store::cap::capped(&r.redact_json(&value));
            let tree = Payload::tree(Arc::new(value.clone()), &r);
            assert_eq!(tree.capped().as_str(), whole);
            let text = Payload::text(Arc::new(value.to_string()), &r);
            assert_eq!(text.capped().as_str(), whole);
            let output = Payload::output(StepOutput::of(&value), &r);
            assert_eq!(output.capped().as_str(), whole);
        }
    }
}
