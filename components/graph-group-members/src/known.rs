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
    fn user(&self) -> User {
        fn text(t: &Option<Option<String>>) -> Option<&str> {
            t.as_ref().and_then(Option::as_deref)
        }
        User::new(
            [
                text(&self.display_name),
                text(&self.given_name),
                text(&self.surname),
                text(&self.mail),
                text(&self.user_principal_name),
            ],
            self.account_enabled.flatten(),
        )
    }
}

/// How many of [`FIELDS`] are texts (all but `accountEnabled`).
const TEXTS: usize = 5;

/// A user's [`FIELDS`], kept in the state as an array in that order. The
/// texts share one allocation: the step holds one of these per member (a
/// million at the largest tenants), and five strings each cost several
/// times their text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    /// The texts back to back.
    text: Box<str>,
    /// Where each text ends in `text`.
    ends: [u32; TEXTS],
    /// Bit `i`: text `i` is null.
    nulls: u8,
    pub account_enabled: Option<bool>,
}

impl User {
    /// `texts` in [`FIELDS`]' order (display name, given name, surname,
    /// mail, user principal name).
    pub fn new(texts: [Option<&str>; TEXTS], account_enabled: Option<bool>) -> User {
        let mut text = String::with_capacity(texts.iter().flatten().map(|t| t.len()).sum());
        let mut ends = [0; TEXTS];
        let mut nulls = 0;
        for (i, t) in texts.iter().enumerate() {
            match t {
                Some(t) => text.push_str(t),
                None => nulls |= 1 << i,
            }
            // A member's texts are far below 4 GiB (wasm32 holds less).
            ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        User {
            text: text.into_boxed_str(),
            ends,
            nulls,
            account_enabled,
        }
    }

    fn text(&self, i: usize) -> Option<&str> {
        if self.nulls & (1 << i) != 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize)
    }

    /// The texts, in [`FIELDS`]' order.
    pub fn texts(&self) -> [Option<&str>; TEXTS] {
        std::array::from_fn(|i| self.text(i))
    }

    pub fn display_name(&self) -> Option<&str> {
        self.text(0)
    }

    pub fn given_name(&self) -> Option<&str> {
        self.text(1)
    }

    pub fn surname(&self) -> Option<&str> {
        self.text(2)
    }

    pub fn mail(&self) -> Option<&str> {
        self.text(3)
    }

    pub fn user_principal_name(&self) -> Option<&str> {
        self.text(4)
    }
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
        let text = |v: &Value| v.as_str().map(str::to_string);
        let texts = [
            text(&display_name),
            text(&given_name),
            text(&surname),
            text(&mail),
            text(&user_principal_name),
        ];
        Ok(User::new(
            std::array::from_fn(|i| texts[i].as_deref()),
            enabled.as_bool(),
        ))
    }
}

/// The tracked groups an object is a direct member of, as positions in the
/// sorted group ids: a bit each for the first 64 (a set costs an allocation
/// per member), a set (empty, so unallocated, for most) for the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Groups {
    low: u64,
    more: BTreeSet<u16>,
}

impl Groups {
    pub fn insert(&mut self, g: u16) {
        match g {
            0..64 => self.low |= 1 << g,
            _ => {
                self.more.insert(g);
            }
        }
    }

    pub fn remove(&mut self, g: u16) {
        match g {
            0..64 => self.low &= !(1 << g),
            _ => {
                self.more.remove(&g);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.more.is_empty()
    }

    /// Adds every position of `other`.
    pub fn extend(&mut self, other: &Groups) {
        self.low |= other.low;
        self.more.extend(&other.more);
    }

    /// The positions, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..64u16)
            .filter(|g| self.low & (1 << g) != 0)
            .chain(self.more.iter().copied())
    }
}

impl FromIterator<u16> for Groups {
    fn from_iter<I: IntoIterator<Item = u16>>(items: I) -> Groups {
        let mut groups = Groups::default();
        items.into_iter().for_each(|g| groups.insert(g));
        groups
    }
}

impl Serialize for Groups {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Groups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Groups, D::Error> {
        Ok(Vec::<u16>::deserialize(d)?.into_iter().collect())
    }
}

/// One member object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its `@odata.type` when it is not a user.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Box<str>>,
    /// The tracked groups it is a direct member of (positions in the
    /// sorted group ids the state was written for).
    #[serde(rename = "g")]
    pub groups: Groups,
    /// A user's properties.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

impl Entry {
    /// An object as a members list (or a user look-up) gives it.
    pub fn of(member: &Member) -> Entry {
        match member.kind() {
            Some(USER) | None => Entry {
                kind: None,
                groups: Groups::default(),
                user: Some(member.user()),
            },
            Some(other) => Entry::other(other),
        }
    }

    /// An object that is not a user (a device, a group…).
    pub fn other(kind: &str) -> Entry {
        Entry {
            kind: Some(kind.into()),
            groups: Groups::default(),
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
        let was = user.texts();
        let changes = [
            &change.display_name,
            &change.given_name,
            &change.surname,
            &change.mail,
            &change.user_principal_name,
        ];
        let texts: [Option<&str>; TEXTS] = std::array::from_fn(|i| match changes[i] {
            Some(now) => now.as_deref(),
            None => was[i],
        });
        let enabled = match change.account_enabled {
            Some(enabled) => enabled,
            None => user.account_enabled,
        };
        *user = User::new(texts, enabled);
    }
}

/// Every member object, by id.
pub type Known = BTreeMap<Box<str>, Entry>;

/// The people in `known`, which it consumes; `names[i]` is the display
/// name of tracked group `i`.
pub fn people(known: Known, names: &[String]) -> People {
    let mut people = People::new(names.to_vec());
    for (id, entry) in known {
        people.add(id, entry);
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

/// One chunk's objects, in id order: written as the map the state keeps.
struct Part<'a>(Vec<(&'a str, &'a Entry)>);

impl Serialize for Part<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().copied())
    }
}

/// Hands `each` the text of chunk `n` of `known` split into `chunks`
/// parts, for each `n` that `wanted`, one at a time (a million members
/// are never all held as text at once); false, and no more chunks, when
/// one is too large for a value.
fn serialise(
    known: &Known,
    chunks: u32,
    wanted: impl Fn(u32) -> bool,
    mut each: impl FnMut(u32, &str) -> Result<(), StepError>,
) -> Result<bool, StepError> {
    let mut parts: Vec<Part<'_>> = (0..chunks).map(|_| Part(Vec::new())).collect();
    for (id, entry) in known {
        let n = chunk_of(id, chunks);
        if wanted(n) {
            parts[n as usize].0.push((id, entry));
        }
    }
    let mut text = Vec::new();
    for (n, part) in (0..chunks).zip(&parts) {
        if !wanted(n) {
            continue;
        }
        text.clear();
        serde_json::to_writer(&mut text, part).map_err(|e| {
            StepError::internal(format!("the members could not be serialised: {e}"))
        })?;
        if text.len() > MAX_CHUNK_BYTES {
            return Ok(false);
        }
        let text = std::str::from_utf8(&text)
            .map_err(|e| StepError::internal(format!("a chunk is not UTF-8: {e}")))?;
        each(n, text)?;
    }
    Ok(true)
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
    let write = |n: u32, text: &str| state::set_json(&format!("{CHUNK_PREFIX}{n}"), text);
    let mut fits = serialise(
        known,
        chunks,
        |n| dirty.as_ref().is_none_or(|d| d.contains(&n)),
        write,
    )?;
    // A chunk too large: twice as many, every one written anew (what was
    // written already is overwritten, as the count kept says).
    while !fits {
        chunks *= 2;
        fits = serialise(known, chunks, |_| true, write)?;
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
        let mut e = Entry::of(&m);
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
        assert_eq!(user.surname(), Some("S"));
        assert_eq!(user.mail(), Some("A@x.com"), "unchanged fields stay");
        e.merge(&member(json!({"id": "u1", "mail": null})));
        assert_eq!(e.user.as_ref().unwrap().mail(), None, "null clears");
        let device = Entry::of(&member(
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
    fn groups_past_64_and_packed_texts_keep_their_shape() {
        let mut g = Groups::default();
        for p in [70, 3, 63, 64, 0, 3] {
            g.insert(p);
        }
        assert_eq!(g.iter().collect::<Vec<_>>(), [0, 3, 63, 64, 70]);
        assert_eq!(serde_json::to_string(&g).unwrap(), "[0,3,63,64,70]");
        g.remove(70);
        g.remove(64);
        assert!(g.more.is_empty());
        let mut back: Groups = serde_json::from_str("[100,5]").unwrap();
        back.extend(&g);
        assert_eq!(back.iter().collect::<Vec<_>>(), [0, 3, 5, 63, 100]);
        back.iter().for_each(|p| g.remove(p));
        assert!(g.is_empty());
        let texts = [Some(""), None, Some("Ng"), Some("a@x"), None];
        let u = User::new(texts, Some(true));
        assert_eq!(u.texts(), texts, "empty and null told apart");
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"["",null,"Ng","a@x",null,true]"#
        );
    }

    #[test]
    fn a_kept_entry_reads_back_leniently() {
        let e: Entry =
            serde_json::from_value(json!({"g": [1, 2], "p": ["A", 5, null, "a@x", null, "yes"]}))
                .unwrap();
        let user = e.user.unwrap();
        assert_eq!(user.display_name(), Some("A"));
        assert_eq!((user.given_name(), user.account_enabled), (None, None));
        assert_eq!(e.groups.iter().collect::<Vec<_>>(), [1, 2]);
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
            let mut e = Entry::of(&m);
            e.groups.insert(0);
            known.insert(format!("{i:08x}-0000-4000-8000-000000000000").into(), e);
        }
        let collect = |chunks: u32, wanted: &dyn Fn(u32) -> bool| {
            let mut texts = Vec::new();
            let fits = serialise(&known, chunks, wanted, |n, t| {
                texts.push((n, t.to_string()));
                Ok(())
            })
            .unwrap();
            fits.then_some(texts)
        };
        let texts = collect(10, &|_| true).expect("500 people of long names fit in a value");
        assert_eq!(chunk_of("abc", 10), chunk_of("abc", 10));
        let back: usize = texts
            .iter()
            .map(|(_, t)| serde_json::from_str::<Known>(t).unwrap().len())
            .sum();
        assert_eq!(back, known.len());
        let part: Known = serde_json::from_str(&texts[3].1).unwrap();
        let same: BTreeMap<&str, &Entry> = known
            .iter()
            .filter(|(id, _)| chunk_of(id, 10) == 3)
            .map(|(id, e)| (&**id, e))
            .collect();
        assert_eq!(
            texts[3].1,
            serde_json::to_string(&same).unwrap(),
            "a map by id"
        );
        assert_eq!(part.len(), same.len());
        let some = collect(10, &|n| n == 3).unwrap();
        assert_eq!(some.len(), 1, "only the chunks asked for");
        assert!(collect(1, &|_| true).is_none(), "too large");
    }
}
