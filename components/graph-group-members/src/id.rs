//! A member object's id. Graph's object ids are GUIDs written in lower-case
//! hex (`8-4-4-4-12`): such an id is kept as its 16 bytes, in place, rather
//! than as 36 characters on the heap (a million members hold a million of
//! them). Any other id is kept as it is. Ids order as their texts do, so
//! the members are folded into people in the same order either way.

use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The length of a GUID's text.
const GUID_TEXT: usize = 36;
/// Where a GUID's text has its dashes.
const DASHES: [usize; 4] = [8, 13, 18, 23];

/// A member object's id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A lower-case GUID, as its 32 hex digits read as four big-endian
    /// numbers (so they compare as the text does, without a byte loop).
    Guid([u32; 4]),
    /// Any other id (never a lower-case GUID: each id has one form).
    Text(Box<str>),
}

impl Id {
    pub fn new(text: &str) -> Id {
        match parse_guid(text) {
            Some(digits) => Id::Guid(digits),
            None => Id::Text(text.into()),
        }
    }

    /// Calls `f` with the id's text.
    pub fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Id::Guid(digits) => {
                let mut buffer = [0u8; GUID_TEXT];
                f(write_guid(digits, &mut buffer))
            }
            Id::Text(text) => f(text),
        }
    }
}

impl From<&str> for Id {
    fn from(text: &str) -> Id {
        Id::new(text)
    }
}

fn parse_guid(text: &str) -> Option<[u32; 4]> {
    let text = text.as_bytes();
    if text.len() != GUID_TEXT || DASHES.iter().any(|&i| text[i] != b'-') {
        return None;
    }
    let mut digits = [0u32; 4];
    let hex = text.iter().enumerate().filter(|(i, _)| !DASHES.contains(i));
    for (n, (_, &c)) in hex.enumerate() {
        let value = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        digits[n / 8] = digits[n / 8] << 4 | u32::from(value);
    }
    Some(digits)
}

fn write_guid<'b>(digits: &[u32; 4], buffer: &'b mut [u8; GUID_TEXT]) -> &'b str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    for (n, slot) in buffer.iter_mut().enumerate() {
        if DASHES.contains(&n) {
            *slot = b'-';
            continue;
        }
        let nibble = digits[at / 8] >> (28 - 4 * (at % 8)) & 0xf;
        *slot = HEX[nibble as usize];
        at += 1;
    }
    // Only ASCII digits, letters and dashes were written.
    std::str::from_utf8(buffer).unwrap_or_default()
}

impl Ord for Id {
    fn cmp(&self, other: &Id) -> Ordering {
        match (self, other) {
            // Lower-case hex digits order as their values do.
            (Id::Guid(a), Id::Guid(b)) => a.cmp(b),
            (Id::Text(a), Id::Text(b)) => a.cmp(b),
            _ => self.with_text(|a| other.with_text(|b| a.cmp(b))),
        }
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Id) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|t| write!(f, "{t:?}"))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|t| f.write_str(t))
    }
}

/// Written as its text.
impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_text(|t| s.serialize_str(t))
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object id")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Id, E> {
                Ok(Id::new(text))
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_case_guid_is_kept_in_place_and_anything_else_as_it_is() {
        let guid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        let id = Id::new(guid);
        assert!(matches!(id, Id::Guid(_)));
        assert_eq!(id.to_string(), guid);
        for other in [
            "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4",
            "0a1b2c3d04e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4g",
            "u1",
            "",
        ] {
            let id = Id::new(other);
            assert!(matches!(id, Id::Text(_)), "{other}");
            assert_eq!(id.to_string(), other);
        }
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{guid}\""));
        let back: Id = serde_json::from_str(&format!("\"{guid}\"")).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn ids_order_as_their_texts_do() {
        let mut texts = vec![
            "ffffffff-0000-4000-8000-000000000000",
            "00000000-0000-4000-8000-00000000000a",
            "00000000-0000-4000-8000-000000000009",
            "0000000a-0000-4000-8000-000000000000",
            "00000000-0000-4000-8000-000000000000",
            "00000000-0000-4000-8000",
            "0000000z",
            "g",
            "A",
            "1",
        ];
        let mut ids: Vec<Id> = texts.iter().map(|t| Id::new(t)).collect();
        texts.sort();
        ids.sort();
        let sorted: Vec<String> = ids.iter().map(Id::to_string).collect();
        assert_eq!(sorted, texts);
    }
}
