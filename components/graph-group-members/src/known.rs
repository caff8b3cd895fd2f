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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
    /// A user's [`FIELDS`], in order (`null` when Graph gave none).
    #[serde(rename = "p", default, skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Value>,
}

impl Entry {
    /// An object as a members list (or a user look-up) gives it.
    pub fn of(member: &Value) -> Entry {
        let kind = member.get("@odata.type").and_then(Value::as_str);
        match kind {
            Some(USER) | None => Entry {
                kind: None,
                groups: BTreeSet::new(),
                props: FIELDS
                    .iter()
                    .map(|f| member.get(*f).cloned().unwrap_or(Value::Null))
                    .collect(),
            },
            Some(other) => Entry {
                kind: Some(other.to_string()),
                groups: BTreeSet::new(),
                props: Vec::new(),
            },
        }
    }

    /// Takes the properties a users delta entry has (Graph sends at least
    /// the changed ones).
    pub fn merge(&mut self, user: &Value) {
        if self.kind.is_some() {
            return;
        }
        self.props.resize(FIELDS.len(), Value::Null);
        for (slot, field) in self.props.iter_mut().zip(FIELDS) {
            if let Some(v) = user.get(field) {
                *slot = v.clone();
            }
        }
    }

    /// The object as a members list shows it, for [`People::add`].
    fn member(&self, id: &str) -> Value {
        let mut m = Map::new();
        let kind = self.kind.as_deref().unwrap_or(USER);
        m.insert("@odata.type".into(), Value::from(kind));
        m.insert("id".into(), Value::from(id));
        for (field, v) in FIELDS.iter().zip(&self.props) {
            m.insert((*field).to_string(), v.clone());
        }
        Value::Object(m)
    }
}

/// Every member object, by id.
pub type Known = BTreeMap<String, Entry>;

/// The people in `known`; `names[i]` is the display name of tracked group `i`.
pub fn people(known: &Known, names: &[String]) -> People {
    let mut people = People::default();
    for (id, entry) in known {
        let member = entry.member(id);
        for &g in &entry.groups {
            if let Some(name) = names.get(usize::from(g)) {
                people.add(name, &member);
            }
        }
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

type Parts<'a> = Vec<BTreeMap<&'a str, &'a Entry>>;

/// `known` split into `chunks` parts, and whether each fits in a value.
fn split(known: &Known, chunks: u32) -> Result<(Parts<'_>, bool), StepError> {
    let mut parts: Parts<'_> = vec![BTreeMap::new(); chunks as usize];
    for (id, entry) in known {
        parts[chunk_of(id, chunks) as usize].insert(id, entry);
    }
    let mut fits = true;
    for part in &parts {
        let bytes = serde_json::to_vec(part).map_err(|e| {
            StepError::internal(format!("the members could not be serialised: {e}"))
        })?;
        fits &= bytes.len() <= MAX_CHUNK_BYTES;
    }
    Ok((parts, fits))
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
/// chunks as before) only the chunks of the objects that changed. Deletes
/// chunks past the new count. Returns the number of chunks.
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
    let (mut parts, mut fits) = split(known, chunks)?;
    let mut changed = changed;
    while !fits {
        chunks *= 2;
        (parts, fits) = split(known, chunks)?;
        changed = None;
    }
    let dirty: Option<BTreeSet<u32>> =
        changed.map(|ids| ids.iter().map(|id| chunk_of(id, chunks)).collect());
    for (n, part) in parts.iter().enumerate() {
        let n = n as u32;
        if dirty.as_ref().is_none_or(|d| d.contains(&n)) {
            state::set(&format!("{CHUNK_PREFIX}{n}"), part)?;
        }
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

    #[test]
    fn an_entry_keeps_a_users_fields_and_merges_a_change() {
        let member = json!({"@odata.type": USER, "id": "u1", "mail": "A@x.com",
            "userPrincipalName": "a@x", "accountEnabled": true, "displayName": "A"});
        let mut e = Entry::of(&member);
        assert_eq!(e.props.len(), FIELDS.len());
        e.merge(&json!({"id": "u1", "accountEnabled": false}));
        let back = e.member("u1");
        assert_eq!(back["accountEnabled"], json!(false));
        assert_eq!(back["mail"], json!("A@x.com"), "unchanged fields stay");
        let device = Entry::of(&json!({"@odata.type": "#microsoft.graph.device", "id": "d"}));
        assert_eq!(device.member("d")["@odata.type"], "#microsoft.graph.device");
        assert!(device.props.is_empty());
    }

    #[test]
    fn chunks_are_stable_and_bounded() {
        let mut known = Known::new();
        for i in 0..5000 {
            let member = json!({"@odata.type": USER, "mail": format!("person{i}@contoso.com"),
                "userPrincipalName": format!("person{i}@contoso.onmicrosoft.com"),
                "displayName": "Zoë Müller-Lüdenscheidt", "givenName": "Zoë",
                "surname": "Müller-Lüdenscheidt", "accountEnabled": true});
            let mut e = Entry::of(&member);
            e.groups.insert(0);
            known.insert(format!("{i:08x}-0000-4000-8000-000000000000"), e);
        }
        let (parts, fits) = split(&known, 10).unwrap();
        assert!(fits, "500 people of long names fit in a value");
        assert_eq!(chunk_of("abc", 10), chunk_of("abc", 10));
        let back: usize = parts.iter().map(BTreeMap::len).sum();
        assert_eq!(back, known.len());
    }
}
