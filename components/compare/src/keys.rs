//! The keys the match and the lifecycle look things up by, borrowed from
//! the input wherever the text is already in its normal form: at 100k
//! members an owned key per person, address and id is half a million
//! allocations, which in the guest cost more than the match itself. Entra
//! ids ([`EntraKey`]) are kept by their bytes for the same reason.

use std::borrow::Cow;

use sluice_guest_services::procore::Id;
use sluice_identity::Key;

/// The identity key of `text` ([`Key::of`]: trimmed, lower-cased, `None`
/// when empty), borrowed when `text` is already lower-case ASCII.
pub fn normal(text: &str) -> Option<Cow<'_, str>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Some(Cow::Borrowed(trimmed))
    } else {
        Key::of(trimmed).map(|k| Cow::Owned(k.into_string()))
    }
}

/// A Procore id as the lifecycle compares ids: two ids are the same when
/// their texts ([`Id::text`], or empty) are, so `42` and `"42"` are one
/// user. Numbers are kept as numbers, so no id is formatted to compare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKey<'a> {
    /// A number, or text that is exactly a number's digits.
    Number(u64),
    /// Any other text, trimmed (empty for an empty id).
    Text(&'a str),
}

impl<'a> IdKey<'a> {
    /// The key of `id`.
    pub fn of(id: &'a Id) -> Self {
        match id {
            Id::Number(n) => IdKey::Number(*n),
            Id::Text(text) => {
                let text = text.trim();
                let canonical = text.bytes().all(|b| b.is_ascii_digit())
                    && (text.len() == 1 || !text.starts_with('0'));
                match text.parse() {
                    Ok(n) if canonical => IdKey::Number(n),
                    _ => IdKey::Text(text),
                }
            }
        }
    }
}

/// An Entra object id as the lifecycle compares them: a GUID (as Graph
/// gives every id) by its 16 bytes, whatever its case, and without an
/// allocation (a managed record each, some 740,000 at a million members);
/// any other text as itself, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntraKey {
    Guid([u8; 16]),
    Text(Box<str>),
}

impl EntraKey {
    /// The key of `id`; `None` when it is empty.
    pub fn of(id: &str) -> Option<EntraKey> {
        let id = id.trim();
        if id.is_empty() {
            return None;
        }
        Some(guid(id).map_or_else(|| EntraKey::Text(id.into()), EntraKey::Guid))
    }
}

/// The bytes of a GUID written `8-4-4-4-12` in hex digits, read in place
/// (once per license holder and per record: no allocation).
fn guid(text: &str) -> Option<[u8; 16]> {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let text = text.as_bytes();
    if text.len() != 36 || DASHES.iter().any(|&at| text[at] != b'-') {
        return None;
    }
    let mut digits = text
        .iter()
        .enumerate()
        .filter(|(at, _)| !DASHES.contains(at))
        .map(|(_, &b)| char::from(b).to_digit(16));
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        let high = digits.next()??;
        let low = digits.next()??;
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_ids_are_equal_when_they_name_the_same_object() {
        let id = "0f4c2a9e-7b1d-4e53-9a64-2c8f1b3d5e70";
        assert_eq!(
            EntraKey::of(id),
            EntraKey::of(&format!(" {} ", id.to_uppercase()))
        );
        assert!(matches!(EntraKey::of(id), Some(EntraKey::Guid(_))));
        assert_eq!(
            EntraKey::of("01234567-89ab-CDEF-0000-00000000ff10"),
            Some(EntraKey::Guid([
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0, 0, 0, 0, 0, 0, 0xff, 0x10
            ]))
        );
        assert_ne!(
            EntraKey::of(id),
            EntraKey::of("0f4c2a9e-7b1d-4e53-9a64-2c8f1b3d5e71")
        );
        for text in [
            "entra-a@x.com",
            "0f4c2a9e7b1d4e539a642c8f1b3d5e70",
            "0f4c2a9e-7b1d-4e53-9a64-2c8f1b3d5e7g",
            "0f4c2a9e-7b1d-4e53-9a642-c8f1b3d5e70",
            "0f4c2a9e-7b1d-4e53-9a64-2c8f1b3d5e7",
            "0f4c2a9e-7b1d-4e53-9a64-2c8f1b3d5e700",
            "+f4c2a9e-7b1d-4e53-9a64-2c8f1b3d5e70",
            "0f4c2a9e-7b1d-4e53-9a64-2c8f1b3d5é",
            "0f4c2a9e07b1d04e5309a6402c8f1b3d5e70",
        ] {
            assert_eq!(
                EntraKey::of(text),
                Some(EntraKey::Text(text.into())),
                "{text}"
            );
        }
        assert_eq!(EntraKey::of("  "), None);
    }

    #[test]
    fn normal_keys_are_the_identity_rules() {
        for text in [
            "a@x.com",
            " A@X.com ",
            "Zoë@X.com",
            "zoë@x.com",
            "  ",
            "",
            "ÅSA@x.com",
        ] {
            assert_eq!(
                normal(text).map(Cow::into_owned),
                Key::of(text).map(Key::into_string),
                "{text:?}"
            );
        }
        assert!(matches!(normal(" a@x.com"), Some(Cow::Borrowed("a@x.com"))));
    }

    #[test]
    fn ids_are_equal_when_their_texts_are() {
        let ids = [
            Id::Number(42),
            Id::Text("42".into()),
            Id::Text(" 42 ".into()),
            Id::Text("042".into()),
            Id::Text("+42".into()),
            Id::Text("0".into()),
            Id::Number(0),
            Id::Text("".into()),
            Id::Text(" ".into()),
            Id::Text("abc".into()),
            Id::Text("99999999999999999999999".into()),
        ];
        for a in &ids {
            for b in &ids {
                let texts = a.text().unwrap_or_default() == b.text().unwrap_or_default();
                assert_eq!(IdKey::of(a) == IdKey::of(b), texts, "{a:?} {b:?}");
            }
        }
    }
}
