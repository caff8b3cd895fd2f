//! What the step knows of the license groups' members between runs: each
//! member object (by id) with the tracked groups it is in, and a user's
//! properties. A full read builds it; a delta round changes it; the output
//! is always computed from it, so a full and an incremental read of the
//! same directory give the same people by construction.
//!
//! Kept in the flow's state as a few chunked values (`members-delta/chunk/N`,
//! an object's chunk chosen by a hash of its id, each value well under the
//! store's 256 KiB), not one key per member: a 100k-member tenant is a few
//! hundred keys, and an incremental run rewrites only the chunks it changed.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_guest::{StepError, state};

use crate::people::People;

/// The user properties kept, in this order; with `id`, what is asked of Graph.
pub const FIELDS: [&str; 6] = [
    "displayName",
    "givenName",
    "surname",
    "mail",
    "userPrincipalName",
    "accountEnabled",
];
pub const USER: &str = "#microsoft.graph.user";

const CHUNK_PREFIX: &str = "members-delta/chunk/";
/// Objects per chunk to start with; a chunk over [`MAX_CHUNK_BYTES`] (long
/// names) doubles the number of chunks.
const PER_CHUNK: usize = 500;
const MAX_CHUNK_BYTES: usize = 200 * 1024;

/// A member object as a members page, a users look-up or a users delta
/// entry gives it, read straight from the page (never as a JSON tree). A
/// property is `None` when absent and `Some(None)` when null (or not of
/// its type): a users delta entry carries only what changed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Member {
    #[serde(rename = "@odata.type", default, deserialize_with = "text")]
    pub kind: Option<Option<String>>,
    #[serde(default, deserialize_with = "text")]
    pub id: Option<Option<String>>,
    /// A users delta entry for a deleted user.
    #[serde(rename = "@removed", default, deserialize_with = "present")]
    pub removed: bool,
    #[serde(rename = "displayName", default, deserialize_with = "text")]
    display_name: Option<Option<String>>,
    #[serde(rename = "givenName", default, deserialize_with = "text")]
    given_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "text")]
    surname: Option<Option<String>>,
    #[serde(default, deserialize_with = "text")]
    mail: Option<Option<String>>,
    #[serde(rename = "userPrincipalName", default, deserialize_with = "text")]
    user_principal_name: Option<Option<String>>,
    #[serde(rename = "accountEnabled", default, deserialize_with = "flag")]
    account_enabled: Option<Option<bool>>,
}

/// A present property: its text, or `None` for null or another type.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    }))
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Ok(Some(Value::deserialize(d)?.as_bool()))
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d)?;
    Ok(true)
}

impl Member {
    /// One object of a JSON list (a delta round's items are read as JSON).
    pub fn of(value: &Value) -> Option<Member> {
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

    /// Whether it carries every one of [`FIELDS`].
    pub fn is_complete(&self) -> bool {
        self.display_name.is_some()
            && self.given_name.is_some()
            && self.surname.is_some()
            && self.mail.is_some()
            && self.user_principal_name.is_some()
            && self.account_enabled.is_some()
    }

    /// Its properties; an absent one is null.
    fn user(self) -> User {
        User {
            display_name: self.display_name.flatten(),
            given_name: self.given_name.flatten(),
            surname: self.surname.flatten(),
            mail: self.mail.flatten(),
            user_principal_name: self.user_principal_name.flatten(),
            account_enabled: self.account_enabled.flatten(),
        }
    }
}

/// A user's [`FIELDS`]; kept in the state as an array in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub user_principal_name: Option<String>,
    pub account_enabled: Option<bool>,
}

impl Serialize for User {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            &self.display_name,
            &self.given_name,
            &self.surname,
            &self.mail,
            &self.user_principal_name,
            &self.account_enabled,
        )
            .serialize(s)
    }
}

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
        let text = |v: Value| match v {
            Value::String(s) => Some(s),
            _ => None,
        };
        Ok(User {
            display_name: text(display_name),
            given_name: text(given_name),
            surname: text(surname),
            mail: text(mail),
            user_principal_name: text(user_principal_name),
            account_enabled: enabled.as_bool(),
        })
    }
}

/// One member object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its `@odata.type` when it is not a user.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The tracked groups it is a direct member of (positions in the
    /// sorted group ids the state was written for).
    #[serde(rename = "g")]
    pub groups: BTreeSet<u16>,
    /// A user's properties.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

impl Entry {
    /// An object as a members list (or a user look-up) gives it.
    pub fn of(member: Member) -> Entry {
        match member.kind() {
            Some(USER) | None => Entry {
                kind: None,
                groups: BTreeSet::new(),
                user: Some(member.user()),
            },
            Some(other) => Entry::other(other),
        }
    }

    /// An object that is not a user (a device, a group…).
    pub fn other(kind: &str) -> Entry {
        Entry {
            kind: Some(kind.to_string()),
            groups: BTreeSet::new(),
            user: None,
        }
    }

    /// Takes the properties a users delta entry has (Graph sends at least
    /// the changed ones).
    pub fn merge(&mut self, change: &Member) {
        if self.kind.is_some() {
            return;
        }
        let user = self.user.get_or_insert_default();
        let set = |slot: &mut Option<String>, v: &Option<Option<String>>| {
            if let Some(v) = v {
                slot.clone_from(v);
            }
        };
        set(&mut user.display_name, &change.display_name);
        set(&mut user.given_name, &change.given_name);
        set(&mut user.surname, &change.surname);
        set(&mut user.mail, &change.mail);
        set(&mut user.user_principal_name, &change.user_principal_name);
        if let Some(enabled) = change.account_enabled {
            user.account_enabled = enabled;
        }
    }
}

/// Every member object, by id.
pub type Known = BTreeMap<String, Entry>;

/// The people in `known`, which it consumes; `names[i]` is the display
/// name of tracked group `i`.
pub fn people(known: Known, names: &[String]) -> People<'_> {
    let mut people = People::default();
    for (id, entry) in known {
        let groups: Vec<&str> = entry
            .groups
            .iter()
            .filter_map(|&g| names.get(usize::from(g)).map(String::as_str))
            .collect();
        people.add(id, entry, groups);
    }
    people
}

/// FNV-1a: a stable hash, so an object stays in its chunk from run to run.
fn chunk_of(id: &str, chunks: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(chunks.max(1))) as u32
}

/// The serialised chunk `n` of `known` split into `chunks` parts, for
/// each `n` that `wanted`; `None` when one is too large for a value.
fn serialise(
    known: &Known,
    chunks: u32,
    wanted: impl Fn(u32) -> bool,
) -> Result<Option<Vec<(u32, String)>>, StepError> {
    let mut parts: Vec<BTreeMap<&str, &Entry>> = vec![BTreeMap::new(); chunks as usize];
    for (id, entry) in known {
        let n = chunk_of(id, chunks);
        if wanted(n) {
            parts[n as usize].insert(id, entry);
        }
    }
    let mut texts = Vec::new();
    for (n, part) in (0..chunks).zip(&parts) {
        if !wanted(n) {
            continue;
        }
        let text = serde_json::to_string(part).map_err(|e| {
            StepError::internal(format!("the members could not be serialised: {e}"))
        })?;
        if text.len() > MAX_CHUNK_BYTES {
            return Ok(None);
        }
        texts.push((n, text));
    }
    Ok(Some(texts))
}

/// Reads the `chunks` chunks; `None` when one is missing or not this shape
/// (then the caller reads fully).
pub fn load(chunks: u32) -> Result<Option<Known>, StepError> {
    let mut known = Known::new();
    for n in 0..chunks {
        let key = format!("{CHUNK_PREFIX}{n}");
        let part = match state::get::<Known>(&key) {
            Ok(Some(part)) => part,
            Ok(None) => return Ok(None),
            Err(e) if e.code == "state-shape" => return Ok(None),
            Err(e) => return Err(e),
        };
        known.extend(part);
    }
    Ok(Some(known))
}

/// Writes `known`: every chunk, or (`changed`, with the same number of
/// chunks as before) only the chunks of the objects that changed; each
/// chunk is serialised once. Deletes chunks past the new count. Returns
/// the number of chunks.
pub fn save(
    known: &Known,
    before: u32,
    changed: Option<&BTreeSet<String>>,
) -> Result<u32, StepError> {
    let mut chunks = if changed.is_some() {
        before.max(1)
    } else {
        known.len().div_ceil(PER_CHUNK).max(1) as u32
    };
    let dirty: Option<BTreeSet<u32>> =
        changed.map(|ids| ids.iter().map(|id| chunk_of(id, chunks)).collect());
    let mut texts = serialise(known, chunks, |n| {
        dirty.as_ref().is_none_or(|d| d.contains(&n))
    })?;
    // A chunk too large: twice as many, every one written anew.
    while texts.is_none() {
        chunks *= 2;
        texts = serialise(known, chunks, |_| true)?;
    }
    for (n, text) in texts.into_iter().flatten() {
        state::set_json(&format!("{CHUNK_PREFIX}{n}"), &text)?;
    }
    for n in chunks..before {
        state::delete(&format!("{CHUNK_PREFIX}{n}"))?;
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(value: Value) -> Member {
        Member::of(&value).unwrap()
    }

    #[test]
    fn an_entry_keeps_a_users_fields_and_merges_a_change() {
        let m = member(json!({"@odata.type": USER, "id": "u1", "mail": "A@x.com",
            "userPrincipalName": "a@x", "accountEnabled": true, "displayName": "A"}));
        assert_eq!(m.id(), Some("u1"));
        assert!(!m.is_complete(), "givenName and surname are absent");
        let mut e = Entry::of(m);
        e.groups.insert(0);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"g": [0], "p": ["A", null, null, "A@x.com", "a@x", true]}),
            "kept as the earlier releases kept it"
        );
        e.merge(&member(
            json!({"id": "u1", "accountEnabled": false, "surname": "S"}),
        ));
        let user = e.user.as_ref().unwrap();
        assert_eq!(user.account_enabled, Some(false));
        assert_eq!(user.surname.as_deref(), Some("S"));
        assert_eq!(
            user.mail.as_deref(),
            Some("A@x.com"),
            "unchanged fields stay"
        );
        e.merge(&member(json!({"id": "u1", "mail": null})));
        assert_eq!(e.user.as_ref().unwrap().mail, None, "null clears");
        let device = Entry::of(member(
            json!({"@odata.type": "#microsoft.graph.device", "id": "d", "displayName": "D"}),
        ));
        assert_eq!(device.kind.as_deref(), Some("#microsoft.graph.device"));
        assert_eq!(
            serde_json::to_value(&device).unwrap(),
            json!({"t": "#microsoft.graph.device", "g": []})
        );
        let removed = member(json!({"id": "u2", "@removed": {"reason": "changed"}}));
        assert!(removed.removed && !member(json!({"id": "u3"})).removed);
    }

    #[test]
    fn a_kept_entry_reads_back_leniently() {
        let e: Entry =
            serde_json::from_value(json!({"g": [1, 2], "p": ["A", 5, null, "a@x", null, "yes"]}))
                .unwrap();
        let user = e.user.unwrap();
        assert_eq!(user.display_name.as_deref(), Some("A"));
        assert_eq!((user.given_name, user.account_enabled), (None, None));
        assert_eq!(e.groups, BTreeSet::from([1, 2]));
    }

    #[test]
    fn chunks_are_stable_and_bounded() {
        let mut known = Known::new();
        for i in 0..5000 {
            let m = member(
                json!({"@odata.type": USER, "mail": format!("person{i}@contoso.com"),
                "userPrincipalName": format!("person{i}@contoso.onmicrosoft.com"),
                "displayName": "Zoë Müller-Lüdenscheidt", "givenName": "Zoë",
                "surname": "Müller-Lüdenscheidt", "accountEnabled": true}),
            );
            let mut e = Entry::of(m);
            e.groups.insert(0);
            known.insert(format!("{i:08x}-0000-4000-8000-000000000000"), e);
        }
        let texts = serialise(&known, 10, |_| true).unwrap();
        let texts = texts.expect("500 people of long names fit in a value");
        assert_eq!(chunk_of("abc", 10), chunk_of("abc", 10));
        let back: usize = texts
            .iter()
            .map(|(_, t)| serde_json::from_str::<Known>(t).unwrap().len())
            .sum();
        assert_eq!(back, known.len());
        let some = serialise(&known, 10, |n| n == 3).unwrap().unwrap();
        assert_eq!(some.len(), 1, "only the chunks asked for");
        assert!(
            serialise(&known, 1, |_| true).unwrap().is_none(),
            "too large"
        );
    }
}
