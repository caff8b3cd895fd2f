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

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use sluice_guest::{StepError, state};

use crate::id::Id;
use crate::member::Member;
use crate::people::People;
use crate::user::{TEXTS, User};

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

/// The tracked groups an object is a direct member of, as positions in the
/// sorted group ids: a bit each for the first 32 (a set costs an allocation
/// per member), a set (absent, so unallocated, for most) for the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Groups {
    low: u32,
    /// Boxed: one word in every member's entry instead of a set's three.
    #[allow(clippy::box_collection)]
    more: Option<Box<BTreeSet<u16>>>,
}

/// Positions below this are bits of `low`.
const LOW: u16 = u32::BITS as u16;

impl Groups {
    pub fn insert(&mut self, g: u16) {
        if g < LOW {
            self.low |= 1 << g;
        } else {
            self.more.get_or_insert_default().insert(g);
        }
    }

    pub fn remove(&mut self, g: u16) {
        if g < LOW {
            self.low &= !(1 << g);
        } else if let Some(more) = &mut self.more {
            more.remove(&g);
            if more.is_empty() {
                self.more = None;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.more.is_none()
    }

    /// Adds every position of `other`.
    pub fn extend(&mut self, other: &Groups) {
        self.low |= other.low;
        if let Some(theirs) = &other.more {
            self.more.get_or_insert_default().extend(theirs.iter());
        }
    }

    /// The positions, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..LOW)
            .filter(|g| self.low & (1 << g) != 0)
            .chain(self.more.iter().flat_map(|more| more.iter().copied()))
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
    pub fn of(member: &Member<'_>) -> Entry {
        match member.kind() {
            Some(USER) | None => Entry {
                kind: None,
                groups: Groups::default(),
                user: Some(member.user()),
            },
            Some(other) => Entry::other(other),
        }
    }

    /// A user whose properties are not known yet (a joiner not looked up).
    pub fn unknown_user() -> Entry {
        Entry {
            kind: None,
            groups: Groups::default(),
            user: None,
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
    pub fn merge(&mut self, change: &Member<'_>) {
        if self.kind.is_some() {
            return;
        }
        let user = self.user.get_or_insert_default();
        let was = user.texts();
        let changes = change.texts();
        let texts: [Option<&str>; TEXTS] = std::array::from_fn(|i| changes[i].unwrap_or(was[i]));
        let enabled = change.account_enabled().unwrap_or(user.account_enabled());
        *user = User::new(texts, enabled);
    }
}

/// Every member object, by id.
pub type Known = BTreeMap<Id, Entry>;

/// The objects of a full read, as the groups listed them (an object in
/// several groups once per group): each id once, with the entry of its
/// first listing and the groups of all of them.
///
/// Sorted, merged and then built in one go: inserting a million ids one by
/// one in Graph's (random) order cost a third of a full read's CPU, each
/// insert a walk down a tree too large for the cache.
pub fn from_listings(mut listed: Vec<(Id, Entry)>) -> Known {
    // Stable: an id's first listing stays first, and is the one kept.
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    listed.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1.groups.extend(&later.1.groups);
        }
        same
    });
    listed.into_iter().collect()
}

/// The people in `known`, which it consumes; `names[i]` is the display
/// name of tracked group `i`.
pub fn people(known: Known, names: &[String]) -> People {
    let mut people = People::with_capacity(names.to_vec(), known.len());
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
struct Part<'a>(Vec<(&'a Id, &'a Entry)>);

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
        let n = id.with_text(|id| chunk_of(id, chunks));
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

/// Hands `each` every object of the `chunks` chunks kept, a chunk at a
/// time (a full read holds the members it read; a second million would not
/// fit beside them); false when one is missing or not this shape.
pub fn each_kept(chunks: u32, mut each: impl FnMut(Id, Entry)) -> Result<bool, StepError> {
    for n in 0..chunks {
        let key = format!("{CHUNK_PREFIX}{n}");
        match state::get::<Known>(&key) {
            Ok(Some(part)) => part.into_iter().for_each(|(id, entry)| each(id, entry)),
            Ok(None) => return Ok(false),
            Err(e) if e.code == "state-shape" => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
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

    /// An object listed by several groups is kept once, with every group
    /// and the properties of its first listing, as inserting each listing
    /// in turn would keep it.
    #[test]
    fn listings_merge_into_one_entry_per_object() {
        let user = |name: &str, g: u16| {
            let mut e = Entry::of(
                &Member::owned(serde_json::json!({
                    "id": "x", "displayName": name
                }))
                .unwrap(),
            );
            e.groups.insert(g);
            e
        };
        let a = "0a0a0a0a-0000-4000-8000-000000000000";
        let b = "0b0b0b0b-0000-4000-8000-000000000000";
        let listed = vec![
            (Id::new(b), user("B first", 3)),
            (Id::new(a), user("A", 0)),
            (Id::new(b), user("B again", 40)),
            (Id::new("not-a-guid"), user("T", 1)),
            (Id::new(b), user("B third", 3)),
        ];
        let mut by_insert = Known::new();
        for (id, entry) in listed.clone() {
            by_insert
                .entry(id)
                .and_modify(|kept: &mut Entry| kept.groups.extend(&entry.groups))
                .or_insert(entry);
        }
        let known = from_listings(listed);
        assert_eq!(known, by_insert);
        assert_eq!(known.len(), 3);
        let b = &known[&Id::new(b)];
        assert_eq!(b.groups.iter().collect::<Vec<_>>(), [3, 40]);
        assert_eq!(
            b.user.as_ref().and_then(User::display_name),
            Some("B first")
        );
    }
    use serde_json::{Value, json};

    fn member(value: Value) -> Member<'static> {
        Member::owned(value).unwrap()
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
        assert_eq!(user.account_enabled(), Some(false));
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
        assert!(removed.removed.is_gone() && !member(json!({"id": "u3"})).removed.is_gone());
    }

    #[test]
    fn groups_past_32_keep_their_shape() {
        let mut g = Groups::default();
        for p in [70, 3, 31, 32, 0, 3] {
            g.insert(p);
        }
        assert_eq!(g.iter().collect::<Vec<_>>(), [0, 3, 31, 32, 70]);
        assert_eq!(serde_json::to_string(&g).unwrap(), "[0,3,31,32,70]");
        g.remove(70);
        g.remove(32);
        assert!(g.more.is_none(), "no set kept for nothing");
        let mut back: Groups = serde_json::from_str("[100,5]").unwrap();
        back.extend(&g);
        assert_eq!(back.iter().collect::<Vec<_>>(), [0, 3, 5, 31, 100]);
        back.iter().for_each(|p| g.remove(p));
        assert!(g.is_empty());
        assert_eq!(g, Groups::default());
    }

    #[test]
    fn a_kept_entry_reads_back_leniently() {
        let e: Entry =
            serde_json::from_value(json!({"g": [1, 2], "p": ["A", 5, null, "a@x", null, "yes"]}))
                .unwrap();
        let user = e.user.unwrap();
        assert_eq!(user.display_name(), Some("A"));
        assert_eq!((user.given_name(), user.account_enabled()), (None, None));
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
            known.insert(Id::new(&format!("{i:08x}-0000-4000-8000-000000000000")), e);
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
        let same: BTreeMap<String, &Entry> = known
            .iter()
            .map(|(id, e)| (id.to_string(), e))
            .filter(|(id, _)| chunk_of(id, 10) == 3)
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
