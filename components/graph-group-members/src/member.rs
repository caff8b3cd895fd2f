//! A member object as Graph lists it: a members page, a users look-up or a
//! users delta entry. Read straight from the page (never as a JSON tree),
//! its texts borrowed from the page's body where they have no escapes: a
//! full read of a million members then copies each member's texts once,
//! into the [`User`] it keeps.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sluice_guest::{Call, StepError};
use sluice_guest_services::graph;

use crate::user::{TEXTS, User};

/// A property as a member gives it: `None` when absent, `Some(None)` when
/// null (or not of its type): a users delta entry carries only what
/// changed.
type Property<T> = Option<Option<T>>;

/// A member object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Member<'a> {
    #[serde(rename = "@odata.type", default, borrow, deserialize_with = "text")]
    pub kind: Property<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    pub id: Property<Cow<'a, str>>,
    /// A users delta entry for a deleted user: how it is gone.
    #[serde(rename = "@removed", default, deserialize_with = "removal")]
    pub removed: Removed,
    #[serde(rename = "displayName", default, borrow, deserialize_with = "text")]
    display_name: Property<Cow<'a, str>>,
    #[serde(rename = "givenName", default, borrow, deserialize_with = "text")]
    given_name: Property<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    surname: Property<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "text")]
    mail: Property<Cow<'a, str>>,
    #[serde(
        rename = "userPrincipalName",
        default,
        borrow,
        deserialize_with = "text"
    )]
    user_principal_name: Property<Cow<'a, str>>,
    #[serde(rename = "accountEnabled", default, deserialize_with = "flag")]
    account_enabled: Property<bool>,
}

impl<'a> Member<'a> {
    /// One object of a JSON list, owning its texts (a delta round's users
    /// are kept until the round ends).
    pub fn owned(value: Value) -> Option<Member<'static>> {
        Member::deserialize(value).ok()
    }

    /// Its id, when it has one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_ref().and_then(Option::as_deref)
    }

    /// Its `@odata.type`, when it has one.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_ref().and_then(Option::as_deref)
    }

    /// Whether it carries every one of `known::FIELDS`.
    pub fn is_complete(&self) -> bool {
        self.texts().iter().all(Option::is_some) && self.account_enabled.is_some()
    }

    /// Its texts as given, in [`User::new`]'s order.
    pub fn texts(&self) -> [Property<&str>; TEXTS] {
        [
            &self.display_name,
            &self.given_name,
            &self.surname,
            &self.mail,
            &self.user_principal_name,
        ]
        .map(|t| t.as_ref().map(Option::as_deref))
    }

    /// `accountEnabled` as given.
    pub fn account_enabled(&self) -> Property<bool> {
        self.account_enabled
    }

    /// Whether it is a user without `accountEnabled` true or false where
    /// it must have one: `listed`, in a listing that selected it (Graph
    /// then returns it), or given as null or another type in a users
    /// delta entry (which carries only what changed). Its account state
    /// is then unknown, and taking it for disabled would make a leaver of
    /// a license holder.
    pub fn lacks_account_state(&self, listed: bool) -> bool {
        let user = matches!(self.kind(), None | Some(crate::known::USER));
        user && match self.account_enabled {
            Some(Some(_)) => false,
            Some(None) => true,
            None => listed,
        }
    }

    /// Its properties; an absent one is null.
    pub fn user(&self) -> User {
        User::new(
            self.texts().map(Option::flatten),
            self.account_enabled.flatten(),
        )
    }
}

/// Every member of a Graph collection (members pages, users look-ups),
/// page after page, each borrowing from its page.
///
/// A user listed without `accountEnabled` fails the read: the listings
/// select it, so its absence is a malformed answer, not a disabled account.
pub fn each(first: Call, mut each: impl FnMut(Member<'_>)) -> Result<(), StepError> {
    graph::pages(crate::GRAPH, first, |call, response| {
        let (members, next) = response
            .json::<graph::Page<Member<'_>>>()?
            .into_parts(call)?;
        if let Some(member) = members.iter().find(|m| m.lacks_account_state(true)) {
            return Err(no_account_state(call.url(), member.id()));
        }
        members.into_iter().for_each(&mut each);
        Ok(next)
    })
}

/// The error of a read that lists user `id` without its account state.
pub fn no_account_state(url: &str, id: Option<&str>) -> StepError {
    StepError::internal(format!(
        "{url}: user {} is listed without `accountEnabled` true or false, which the request asks for; the read stops rather than take them for disabled (and a leaver)",
        id.unwrap_or("without an id")
    ))
    .with_code("bad-response")
}

/// The rest of a lenient visitor: numbers, null, lists and objects read as
/// `None` (and are skipped over, not built).
macro_rules! other_types {
    () => {
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    };
}

/// A present property: its text, or `None` for null or another type.
fn text<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Property<Cow<'a, str>>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        other_types!();
    }
    Ok(Some(d.deserialize_any(Text)?))
}

/// A present property: its boolean, or `None` for null or another type.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Property<bool>, D::Error> {
    struct Flag;
    impl<'de> Visitor<'de> for Flag {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        other_types!();
    }
    Ok(Some(d.deserialize_any(Flag)?))
}

/// How a users delta entry says its user is gone (its `@removed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Removed {
    /// Not gone: no `@removed`.
    #[default]
    No,
    /// `"reason": "changed"`: in Entra's deleted items, restorable for 30
    /// days, and (Graph's group delta documentation) keeping its group
    /// memberships meanwhile, without a word in the group delta. Also any
    /// reason Graph does not document.
    Restorable,
    /// `"reason": "deleted"`: deleted for good; the group delta reports
    /// it leaving its groups.
    ForGood,
}

impl Removed {
    pub fn is_gone(self) -> bool {
        self != Removed::No
    }
}

fn removal<'de, D: Deserializer<'de>>(d: D) -> Result<Removed, D::Error> {
    #[derive(Deserialize)]
    struct Annotation {
        #[serde(default)]
        reason: Option<Value>,
    }
    // Whatever its shape, `@removed` says the user is gone.
    let annotation = Value::deserialize(d)?;
    let reason = Annotation::deserialize(annotation)
        .ok()
        .and_then(|a| a.reason);
    Ok(match reason.as_ref().and_then(Value::as_str) {
        Some(reason) if reason.trim().eq_ignore_ascii_case("deleted") => Removed::ForGood,
        _ => Removed::Restorable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A security tester's page without `accountEnabled` made 12 license
    /// holders leavers ("account disabled"), deactivated under a threshold.
    #[test]
    fn a_user_without_its_account_state_is_told_apart() {
        let lacks =
            |value: Value, listed: bool| Member::owned(value).unwrap().lacks_account_state(listed);
        let user = "#microsoft.graph.user";
        for enabled in [json!(true), json!(false)] {
            assert!(!lacks(json!({"id": "u", "accountEnabled": enabled}), true));
        }
        for odd in [json!(null), json!("true"), json!(1)] {
            assert!(lacks(json!({"id": "u", "accountEnabled": odd}), true));
            assert!(lacks(json!({"id": "u", "accountEnabled": odd}), false));
        }
        // Absent: malformed in a listing that selected it; in a users
        // delta entry, not changed.
        assert!(lacks(json!({"@odata.type": user, "id": "u"}), true));
        assert!(!lacks(json!({"@odata.type": user, "id": "u"}), false));
        // Only a user has an account to be told of.
        let device = json!({"@odata.type": "#microsoft.graph.device", "id": "d"});
        assert!(!lacks(device, true));
        let error = no_account_state("https://graph/v1.0/groups/g/members", Some("u7"));
        assert_eq!(error.code, "bad-response");
        assert!(
            error
                .message
                .contains("user u7 is listed without `accountEnabled`")
        );
    }

    #[test]
    fn properties_are_absent_null_or_of_their_type() {
        let text = r#"{"id": "u1", "mail": "A@x.com", "displayName": "Zo\u00eb", "givenName": null,
            "surname": 5, "userPrincipalName": {"a": [1]}, "accountEnabled": "yes", "jobTitle": [true]}"#;
        let m: Member<'_> = serde_json::from_str(text).unwrap();
        assert_eq!(
            m.texts(),
            [
                Some(Some("Zoë")),
                Some(None),
                Some(None),
                Some(Some("A@x.com")),
                Some(None)
            ]
        );
        assert_eq!(m.account_enabled(), Some(None));
        assert!(
            matches!(m.mail, Some(Some(Cow::Borrowed(_)))),
            "borrowed from the text"
        );
        assert!(
            matches!(m.display_name, Some(Some(Cow::Owned(_)))),
            "it had an escape"
        );
        let sparse = Member::owned(json!({"id": "u2", "accountEnabled": false})).unwrap();
        assert_eq!(sparse.texts(), [None; TEXTS]);
        assert_eq!(sparse.account_enabled(), Some(Some(false)));
        assert!(!sparse.is_complete() && !sparse.removed.is_gone());
        let owned = Member::owned(json!({"id": "u3", "@removed": {"reason": "deleted"}})).unwrap();
        assert_eq!(owned.removed, Removed::ForGood);
        assert_eq!(owned.id(), Some("u3"));
        let removed = |annotation: Value| {
            Member::owned(json!({"id": "u4", "@removed": annotation}))
                .unwrap()
                .removed
        };
        assert_eq!(removed(json!({"reason": "changed"})), Removed::Restorable);
        assert_eq!(removed(json!({"reason": "Deleted"})), Removed::ForGood);
        // Any other shape still says gone; only "deleted" says for good.
        assert_eq!(removed(json!({})), Removed::Restorable);
        assert_eq!(removed(json!({"reason": 3})), Removed::Restorable);
        assert_eq!(removed(json!(true)), Removed::Restorable);
    }
}
