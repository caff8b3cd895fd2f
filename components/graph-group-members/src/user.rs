//! A user's properties as the step holds them: one allocation per user.
//! A million members means a million of these, held all at once, so five
//! strings each (five allocations, each with its own header, and three
//! words beside each) would cost several times their text; and most users'
//! principal name is their mail, so it is kept once.

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many texts a user has: display name, given name, surname, mail,
/// user principal name (the order of `known::FIELDS`).
pub const TEXTS: usize = 5;
const MAIL: usize = 3;
const UPN: usize = 4;

/// Bits 0-4 of the first byte: text `i` is null.
const NULLS: u8 = 0b1_1111;
/// Bit 5 of the first byte: the user principal name is the mail (its text
/// is not stored again).
const UPN_IS_MAIL: u8 = 1 << 5;
/// The second byte is `accountEnabled`: 0 unknown, 1 false, 2 true.
const HEADER: usize = 2;
/// A length byte holds six bits of the length; this bit says more follow.
const MORE: u8 = 1 << 6;

/// A user's texts and `accountEnabled`, packed as text: two flag bytes,
/// each text's length (six bits a byte, so one byte for a text under 64
/// bytes), then the texts back to back. Every header byte is ASCII, so the
/// whole is a `str` whose texts are sliced out without checking them again.
/// Written to the state as an array in `known::FIELDS`' order.
#[derive(Clone, PartialEq)]
pub struct User {
    packed: Box<str>,
}

impl User {
    /// `texts` in display name, given name, surname, mail, user principal
    /// name order.
    pub fn new(texts: [Option<&str>; TEXTS], account_enabled: Option<bool>) -> User {
        let upn_is_mail = texts[UPN].is_some() && texts[UPN] == texts[MAIL];
        let enabled = match account_enabled {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        };
        let mut flags = 0;
        if upn_is_mail {
            flags |= UPN_IS_MAIL;
        }
        let mut stored = [""; TEXTS];
        for (i, text) in texts.iter().enumerate() {
            match text {
                None => flags |= 1 << i,
                Some(_) if i == UPN && upn_is_mail => {}
                Some(text) => stored[i] = text,
            }
        }
        let size = HEADER
            + stored
                .iter()
                .map(|t| length_size(t.len()) + t.len())
                .sum::<usize>();
        let mut packed = String::with_capacity(size);
        packed.push(char::from(flags));
        packed.push(char::from(enabled));
        for text in stored {
            write_length(&mut packed, text.len());
        }
        for text in stored {
            packed.push_str(text);
        }
        User {
            packed: packed.into_boxed_str(),
        }
    }

    fn header(&self, i: usize) -> u8 {
        self.packed.as_bytes().get(i).copied().unwrap_or(0)
    }

    /// The texts, in [`User::new`]'s order.
    pub fn texts(&self) -> [Option<&str>; TEXTS] {
        let flags = if self.packed.is_empty() {
            NULLS
        } else {
            self.header(0)
        };
        let mut at = HEADER;
        let lengths: [usize; TEXTS] =
            std::array::from_fn(|_| read_length(self.packed.as_bytes(), &mut at));
        let mut texts = [None; TEXTS];
        for (i, length) in lengths.into_iter().enumerate() {
            let end = at + length;
            if flags & (1 << i) == 0 {
                texts[i] = self.packed.get(at..end);
            }
            at = end;
        }
        if flags & UPN_IS_MAIL != 0 {
            texts[UPN] = texts[MAIL];
        }
        texts
    }

    pub fn account_enabled(&self) -> Option<bool> {
        match self.header(1) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn display_name(&self) -> Option<&str> {
        self.texts()[0]
    }

    #[cfg(test)]
    pub fn given_name(&self) -> Option<&str> {
        self.texts()[1]
    }

    #[cfg(test)]
    pub fn surname(&self) -> Option<&str> {
        self.texts()[2]
    }

    /// Text `i` alone (the mail is read for every person's key, often
    /// several times: reading the lengths before it is enough).
    fn text(&self, i: usize) -> Option<&str> {
        let flags = self.header(0);
        let i = if i == UPN && flags & UPN_IS_MAIL != 0 {
            MAIL
        } else {
            i
        };
        if self.packed.is_empty() || flags & (1 << i) != 0 {
            return None;
        }
        let bytes = self.packed.as_bytes();
        let mut at = HEADER;
        let mut start = 0;
        for _ in 0..i {
            start += read_length(bytes, &mut at);
        }
        let length = read_length(bytes, &mut at);
        for _ in i + 1..TEXTS {
            read_length(bytes, &mut at);
        }
        self.packed.get(at + start..at + start + length)
    }

    pub fn mail(&self) -> Option<&str> {
        self.text(MAIL)
    }

    pub fn user_principal_name(&self) -> Option<&str> {
        self.text(UPN)
    }
}

/// Every property null.
impl Default for User {
    fn default() -> User {
        User::new([None; TEXTS], None)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("texts", &self.texts())
            .field("account_enabled", &self.account_enabled())
            .finish()
    }
}

/// The bits of a length each byte holds.
const LENGTH_BITS: u32 = 6;

fn length_size(mut n: usize) -> usize {
    let mut size = 1;
    while n >= usize::from(MORE) {
        n >>= LENGTH_BITS;
        size += 1;
    }
    size
}

/// `n`, six bits a byte from the lowest, [`MORE`] on all but the last byte.
fn write_length(out: &mut String, mut n: usize) {
    while n >= usize::from(MORE) {
        out.push(char::from((n as u8 & (MORE - 1)) | MORE));
        n >>= LENGTH_BITS;
    }
    out.push(char::from(n as u8));
}

/// The length at `at` (which it moves past it); 0 past the end.
fn read_length(bytes: &[u8], at: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    while let Some(&b) = bytes.get(*at) {
        *at += 1;
        n |= usize::from(b & (MORE - 1)).checked_shl(shift).unwrap_or(0);
        if b & MORE == 0 {
            break;
        }
        shift += LENGTH_BITS;
    }
    n
}

impl Serialize for User {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let [display_name, given_name, surname, mail, upn] = self.texts();
        (
            display_name,
            given_name,
            surname,
            mail,
            upn,
            self.account_enabled(),
        )
            .serialize(s)
    }
}

/// Read leniently: a property of another type is null.
impl<'de> Deserialize<'de> for User {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<User, D::Error> {
        let (display_name, given_name, surname, mail, user_principal_name, enabled): (
            Value,
            Value,
            Value,
            Value,
            Value,
            Value,
        ) = Deserialize::deserialize(d)?;
        Ok(User::new(
            [
                display_name.as_str(),
                given_name.as_str(),
                surname.as_str(),
                mail.as_str(),
                user_principal_name.as_str(),
            ],
            enabled.as_bool(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_packed_with_empty_and_null_told_apart() {
        let texts = [Some(""), None, Some("Ng"), Some("a@x"), None];
        let u = User::new(texts, Some(true));
        assert_eq!(u.texts(), texts);
        assert_eq!(u.account_enabled(), Some(true));
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"["",null,"Ng","a@x",null,true]"#
        );
        for (i, text) in texts.into_iter().enumerate() {
            assert_eq!(u.text(i), text, "{i}");
        }
        let nothing = User::default();
        assert_eq!(nothing.texts(), [None; TEXTS]);
        assert_eq!(nothing.account_enabled(), None);
        assert_eq!(User::new(texts, Some(false)).account_enabled(), Some(false));
    }

    #[test]
    fn a_principal_name_equal_to_the_mail_is_kept_once() {
        let mail = "zoë.müller-lüdenscheidt@contoso.com";
        let shared = User::new([Some("Zoë"), None, None, Some(mail), Some(mail)], None);
        let apart = User::new([Some("Zoë"), None, None, Some(mail), Some("z@x")], None);
        assert_eq!(shared.user_principal_name(), Some(mail));
        assert_eq!(shared.mail(), Some(mail));
        assert_eq!(apart.user_principal_name(), Some("z@x"));
        assert_eq!(shared.packed.len() + 3, apart.packed.len());
        let no_mail = User::new([None, None, None, None, Some(mail)], None);
        assert_eq!(
            (no_mail.mail(), no_mail.user_principal_name()),
            (None, Some(mail))
        );
    }

    #[test]
    fn long_texts_take_longer_lengths() {
        let long = "x".repeat(70_000);
        let texts = [
            Some(long.as_str()),
            Some("é"),
            None,
            Some(&long[..200]),
            Some(""),
        ];
        let u = User::new(texts, None);
        assert_eq!(u.texts(), texts);
        assert_eq!(u.packed.len(), 2 + 3 + 1 + 1 + 2 + 1 + 70_000 + 2 + 200);
        assert!(u.packed.as_bytes()[..10].is_ascii(), "the header is text");
    }

    #[test]
    fn a_kept_user_reads_back_leniently() {
        let u: User = serde_json::from_str(r#"["A", 5, null, "a@x", "a@x", "yes"]"#).unwrap();
        assert_eq!(u.display_name(), Some("A"));
        assert_eq!((u.given_name(), u.account_enabled()), (None, None));
        assert_eq!(u.user_principal_name(), Some("a@x"));
    }
}
