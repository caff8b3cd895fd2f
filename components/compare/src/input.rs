//! The license holders and Procore users of the step's input, read in
//! place: their text is borrowed from the input wherever JSON has no
//! escape in it. At 100k members the owned forms ([`Person`],
//! `ProcoreUser`) are about a million allocations and 70 MB, which in
//! the guest cost more time than the match; only the people the output
//! carries whole (missing, inactive in Procore) become owned.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use sluice_guest_services::procore::Id;
use sluice_guest_services::sync::{MatchedBy, Person};

/// A JSON string of the input: borrowed unless it had to be unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a str>);

        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text.to_string())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }

        deserializer.deserialize_str(TextVisitor(PhantomData))
    }
}

/// The text, owned.
pub fn owned(text: &Option<Text<'_>>) -> Option<String> {
    text.as_deref().map(str::to_string)
}

/// A [`Person`] (a license holder), borrowed from the input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonRef<'a> {
    #[serde(borrow)]
    pub key: Text<'a>,
    #[serde(default, borrow)]
    pub id: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub mail: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub user_principal_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub display_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub given_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub surname: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub groups: Vec<Text<'a>>,
}

impl<'a> PersonRef<'a> {
    /// `person`, borrowed.
    pub fn of(person: &'a Person) -> PersonRef<'a> {
        let text = |t: &'a Option<String>| t.as_deref().map(|t| Text(Cow::Borrowed(t)));
        PersonRef {
            key: Text(Cow::Borrowed(&person.key)),
            id: text(&person.id),
            mail: text(&person.mail),
            user_principal_name: text(&person.user_principal_name),
            display_name: text(&person.display_name),
            given_name: text(&person.given_name),
            surname: text(&person.surname),
            groups: person
                .groups
                .iter()
                .map(|g| Text(Cow::Borrowed(g)))
                .collect(),
        }
    }

    /// The person as the output carries them.
    pub fn to_person(&self) -> Person {
        Person {
            key: self.key.to_string(),
            id: owned(&self.id),
            mail: owned(&self.mail),
            user_principal_name: owned(&self.user_principal_name),
            display_name: owned(&self.display_name),
            given_name: owned(&self.given_name),
            surname: owned(&self.surname),
            groups: self.groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// [`Person::name`].
    pub fn name(&self) -> &str {
        self.display_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&self.key)
    }

    /// [`Person::matched_by`].
    pub fn matched_by(&self) -> MatchedBy {
        MatchedBy::of(&self.key, self.mail.as_deref())
    }

    /// The first license group, by name.
    pub fn license_group(&self) -> Option<String> {
        self.groups.first().map(|g| g.to_string())
    }
}

/// A Procore user (`sync::ProcoreUser`), borrowed from the input.
#[derive(Debug, Deserialize)]
pub struct UserRef<'a> {
    pub id: Id,
    #[serde(default, borrow)]
    pub login: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub email_address: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub first_name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub last_name: Option<Text<'a>>,
    #[serde(default = "active")]
    pub is_active: bool,
    #[serde(default, borrow)]
    pub created_at: Option<Text<'a>>,
}

fn active() -> bool {
    true
}

impl UserRef<'_> {
    /// The login, owned.
    pub fn login(&self) -> Option<String> {
        owned(&self.login)
    }

    /// The email address, owned.
    pub fn email_address(&self) -> Option<String> {
        owned(&self.email_address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest_services::sync::ProcoreUser;

    #[test]
    fn reads_what_the_owned_types_read_and_borrows_plain_text() {
        let people = r#"[
            {"key": "a@x.com", "id": "e1", "mail": "A@x.com", "userPrincipalName": "a@x.onmicrosoft.com",
             "displayName": "Ann \"Nan\" O\u2019Neil", "givenName": null, "groups": ["License – E3", "G\\2"]},
            {"key": "b@x.com", "other": 5}
        ]"#;
        let borrowed: Vec<PersonRef> = serde_json::from_str(people).unwrap();
        let expected: Vec<Person> = serde_json::from_str(people).unwrap();
        let converted: Vec<Person> = borrowed.iter().map(PersonRef::to_person).collect();
        assert_eq!(converted, expected);
        assert!(matches!(borrowed[0].key.0, Cow::Borrowed(_)));
        assert!(matches!(
            borrowed[0].display_name.as_ref().map(|t| &t.0),
            Some(Cow::Owned(_))
        ));
        assert_eq!(borrowed[0].matched_by(), expected[0].matched_by());
        assert_eq!(borrowed[1].matched_by(), expected[1].matched_by());

        let users = r#"[
            {"id": 7, "login": "A@x.com", "email_address": "a@x.com", "first_name": "A\tB", "is_active": false, "vendor": {}},
            {"id": "8"}
        ]"#;
        let borrowed: Vec<UserRef> = serde_json::from_str(users).unwrap();
        let expected: Vec<ProcoreUser> = serde_json::from_str(users).unwrap();
        for (b, o) in borrowed.iter().zip(&expected) {
            assert_eq!(
                (
                    b.login(),
                    b.email_address(),
                    owned(&b.first_name),
                    b.is_active
                ),
                (
                    o.login.clone(),
                    o.email_address.clone(),
                    o.first_name.clone(),
                    o.is_active
                )
            );
            assert_eq!(b.id, o.id);
        }
    }

    #[test]
    fn a_wrong_type_is_refused_as_the_owned_types_refuse_it() {
        let text = r#"[{"key": 5}]"#;
        let borrowed = serde_json::from_str::<Vec<PersonRef>>(text).unwrap_err();
        let owned = serde_json::from_str::<Vec<Person>>(text).unwrap_err();
        assert_eq!(borrowed.to_string(), owned.to_string());
    }
}
