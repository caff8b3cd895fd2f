//! Graph delta, as the members step uses it: group delta
//! (`groups/delta?$filter=id eq '…' or …&$select=displayName,members`) for
//! joins and leaves, users delta (`users/delta?$select=…`) for accounts
//! disabled, changed or deleted while they stay members (group delta does
//! not report those). A full read takes `$deltatoken=latest` links of both
//! before it reads, so every change during the read is in the next round
//! (applying one twice is harmless: a round says how things are now).
//!
//! A round follows `@odata.nextLink` to its `@odata.deltaLink`; a group's
//! `members@delta` can be split across pages, so entries are applied as
//! they come. An entry with `@removed` is taken as "left this group" (Graph
//! does not say whether the member left or was deleted). Anything but a
//! success (410 Gone for an expired token above all) is a [`Refused`]: the
//! caller reads fully instead.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sluice_guest::{Call, StepError};

use crate::GRAPH;
use crate::id::Id;
use crate::known::{Entry, FIELDS, Known, USER};
use crate::member::{self, Member};

/// Graph's delta `$filter` names at most 50 objects.
pub const MAX_FILTERED_GROUPS: usize = 50;
/// Pages one round may take before it is taken as a service fault.
const MAX_PAGES: usize = 100_000;
/// Ids per `users?$filter=id in (…)` look-up.
const LOOKUP_BATCH: usize = 15;

/// Why delta could not be used; the caller reads fully and says so.
#[derive(Debug)]
pub struct Refused(pub String);

/// The two links a later run starts from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Links {
    pub groups: String,
    pub users: String,
}

fn select_users() -> String {
    let mut fields = vec!["id"];
    fields.extend(FIELDS);
    fields.join(",")
}

fn groups_filter(group_ids: &[String]) -> String {
    group_ids
        .iter()
        .map(|id| format!("id eq '{}'", id.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Reads one round from `first`, handing every page's items to `each`;
/// returns the round's deltaLink.
fn round(first: Call, mut each: impl FnMut(Value)) -> Result<String, Refused> {
    let mut call = first;
    for _ in 0..MAX_PAGES {
        let response = call.read().map_err(|e| Refused(e.to_string()))?;
        if response.status == 410 {
            return Err(Refused(format!(
                "Graph answered 410 Gone to {} (the delta token expired)",
                call.url()
            )));
        }
        if !response.is_success() {
            let e = sluice_guest_services::status_error(&call, &response);
            return Err(Refused(e.to_string()));
        }
        let mut page: serde_json::Map<String, Value> =
            response.json().map_err(|e| Refused(e.to_string()))?;
        if let Some(Value::Array(items)) = page.remove("value") {
            items.into_iter().for_each(&mut each);
        } else {
            return Err(Refused(format!("{}: no `value` list", call.url())));
        }
        match (
            page.remove("@odata.nextLink"),
            page.remove("@odata.deltaLink"),
        ) {
            (Some(Value::String(next)), _) => call = Call::get(GRAPH, &next),
            (None, Some(Value::String(link))) => return Ok(link),
            _ => {
                return Err(Refused(format!(
                    "{}: a delta page with neither nextLink nor deltaLink",
                    call.url()
                )));
            }
        }
    }
    Err(Refused(format!("more than {MAX_PAGES} delta pages")))
}

/// Links for changes from now on (`$deltatoken=latest`), taken before a
/// full read.
pub fn latest(group_ids: &[String]) -> Result<Links, Refused> {
    if group_ids.len() > MAX_FILTERED_GROUPS {
        return Err(Refused(format!(
            "{} license groups; Graph's delta filter takes at most {MAX_FILTERED_GROUPS}",
            group_ids.len()
        )));
    }
    let groups = Call::get(GRAPH, "groups/delta")
        .query("$filter", groups_filter(group_ids))
        .query("$select", "displayName,members")
        .query("$deltatoken", "latest");
    let users = Call::get(GRAPH, "users/delta")
        .query("$select", select_users())
        .query("$deltatoken", "latest");
    Ok(Links {
        groups: round(groups, |_| {})?,
        users: round(users, |_| {})?,
    })
}

/// The changes since `links`, read to the end of both rounds.
pub struct Changes {
    /// Per group id, in order: member id, its type, and whether it left.
    pub members: Vec<(String, String, String, bool)>,
    /// Users changed (with the properties Graph sent) or deleted.
    pub users: Vec<Member<'static>>,
    pub links: Links,
}

pub fn read(links: &Links) -> Result<Changes, Refused> {
    let mut members = Vec::new();
    let groups = round(Call::get(GRAPH, &links.groups), |group| {
        let Some(group_id) = group.get("id").and_then(Value::as_str) else {
            return;
        };
        let entries = group.get("members@delta").and_then(Value::as_array);
        for m in entries.into_iter().flatten() {
            let Some(id) = m.get("id").and_then(Value::as_str) else {
                continue;
            };
            let kind = m.get("@odata.type").and_then(Value::as_str).unwrap_or(USER);
            let left = m.get("@removed").is_some();
            members.push((group_id.into(), id.into(), kind.into(), left));
        }
    })?;
    let mut users = Vec::new();
    let users_link = round(Call::get(GRAPH, &links.users), |u| {
        users.extend(Member::owned(u));
    })?;
    Ok(Changes {
        members,
        users,
        links: Links {
            groups,
            users: users_link,
        },
    })
}

/// What applying a round left to do: users who joined and whose
/// properties are not known yet (by id, with the groups they joined).
pub type Pending = BTreeMap<String, BTreeSet<u16>>;

/// Applies `changes` to `known` (`groups`: the tracked group ids, sorted);
/// returns the users still to look up. Every id touched goes in `changed`.
pub fn apply(
    known: &mut Known,
    groups: &[String],
    changes: &Changes,
    changed: &mut BTreeSet<String>,
) -> Pending {
    let mut pending = Pending::new();
    for (group_id, id, kind, left) in &changes.members {
        let Ok(g) = groups.binary_search(group_id) else {
            continue;
        };
        let g = g as u16;
        changed.insert(id.clone());
        let object = Id::new(id);
        if *left {
            if let Some(entry) = known.get_mut(&object) {
                entry.groups.remove(g);
                if entry.groups.is_empty() {
                    known.remove(&object);
                }
            }
            if let Some(joined) = pending.get_mut(id) {
                joined.remove(&g);
            }
        } else if let Some(entry) = known.get_mut(&object) {
            entry.groups.insert(g);
        } else if kind == USER {
            pending.entry(id.clone()).or_default().insert(g);
        } else {
            let mut entry = Entry::other(kind);
            entry.groups.insert(g);
            known.insert(object, entry);
        }
    }
    pending.retain(|_, joined| !joined.is_empty());
    for user in &changes.users {
        let Some(id) = user.id() else {
            continue;
        };
        let object = Id::new(id);
        if user.removed {
            if known.remove(&object).is_some() {
                changed.insert(id.to_string());
            }
            pending.remove(id);
        } else if let Some(entry) = known.get_mut(&object) {
            entry.merge(user);
            changed.insert(id.to_string());
        } else if let Some(joined) = pending.remove(id) {
            if user.is_complete() {
                let mut entry = Entry::of(user);
                entry.groups = joined.into_iter().collect();
                known.insert(object, entry);
            } else {
                pending.insert(id.to_string(), joined);
            }
        }
    }
    pending
}

/// Reads the properties of the users who joined, a few at a time
/// (`users?$filter=id in (…)`); a user Graph no longer has is left out.
pub fn look_up(known: &mut Known, pending: Pending) -> Result<(), StepError> {
    let ids: Vec<&String> = pending.keys().collect();
    for batch in ids.chunks(LOOKUP_BATCH) {
        let list = batch
            .iter()
            .map(|id| format!("'{}'", id.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(",");
        let first = Call::get(GRAPH, "users")
            .query("$filter", format!("id in ({list})"))
            .query("$select", select_users());
        member::each(first, |user| {
            let Some(id) = user.id() else {
                return;
            };
            if let Some(joined) = pending.get(id) {
                let mut entry = Entry::of(&user);
                entry.groups = joined.iter().copied().collect();
                known.insert(Id::new(id), entry);
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(id: &str, enabled: bool) -> Value {
        json!({"@odata.type": USER, "id": id, "mail": format!("{id}@x.com"),
            "userPrincipalName": id, "accountEnabled": enabled, "displayName": id,
            "givenName": null, "surname": null})
    }

    #[test]
    fn a_round_applies_joins_leaves_disables_and_deletions() {
        let groups = vec!["g0".to_string(), "g1".to_string()];
        let mut known = Known::new();
        for id in ["a", "b", "c"] {
            let mut e = Entry::of(&Member::owned(user(id, true)).unwrap());
            e.groups.insert(0);
            known.insert(Id::new(id), e);
        }
        let change = |g: &str, id: &str, kind: &str, left: bool| {
            (g.to_string(), id.to_string(), kind.to_string(), left)
        };
        let changes = Changes {
            members: vec![
                change("g0", "a", USER, true),
                change("g1", "b", USER, false),
                change("g1", "new", USER, false),
                change("g1", "later", USER, false),
                change("g1", "dev", "#microsoft.graph.device", false),
                change("other", "c", USER, true),
            ],
            users: [
                json!({"id": "b", "accountEnabled": false}),
                json!({"id": "c", "@removed": {"reason": "changed"}}),
                user("later", true),
            ]
            .into_iter()
            .filter_map(Member::owned)
            .collect(),
            links: Links {
                groups: String::new(),
                users: String::new(),
            },
        };
        let mut changed = BTreeSet::new();
        let pending = apply(&mut known, &groups, &changes, &mut changed);
        assert!(!known.contains_key(&Id::new("a")), "left its only group");
        let groups_of = |id: &str| known[&Id::new(id)].groups.iter().collect::<Vec<_>>();
        assert_eq!(groups_of("b"), [0, 1]);
        let b = known[&Id::new("b")].user.as_ref().unwrap();
        assert_eq!(b.account_enabled(), Some(false), "disabled");
        assert!(!known.contains_key(&Id::new("c")), "deleted");
        assert_eq!(groups_of("later"), [1], "from users delta");
        assert_eq!(
            known[&Id::new("dev")].kind.as_deref(),
            Some("#microsoft.graph.device")
        );
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["new"]);
        assert!(changed.contains("a") && changed.contains("c") && !changed.contains("x"));
    }
}
