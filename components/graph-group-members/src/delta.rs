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
//! does not say whether the member left or was deleted). Graph may list a
//! user several times in one round (changed more than once) and replay
//! earlier changes, so a user's last entry in the users round is the one
//! that counts: deleted then restored is there.
//!
//! A link Graph will not take (410 Gone for an expired token above all, or
//! any other refusal) is a [`Refused`]: the caller reads fully instead.
//! Throttling, a server error or no answer at all (after the host's own
//! retries) fails the step instead: a full read would only send many more
//! requests to a Graph that asked for fewer, and the kept links stay for
//! the next run. A joined user the look-up does not find yet (Graph's
//! replication delay) stays pending and is looked up again next run.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sluice_guest::{Call, StepError};
use sluice_guest_services::graph::{Visited, follow, under_current_base};

use crate::GRAPH;
use crate::id::Id;
use crate::known::{Entry, FIELDS, Known, USER};
use crate::member::{self, Member, Removed};
use crate::restorable::{Kept, Restorable};

/// Graph's delta `$filter` names at most 50 objects.
pub const MAX_FILTERED_GROUPS: usize = 50;
/// Pages one round may take before it is taken as a service fault.
const MAX_PAGES: usize = 100_000;
/// Ids per `users?$filter=id in (…)` look-up.
const LOOKUP_BATCH: usize = 15;

/// Why delta could not be used; the caller reads fully and says so.
#[derive(Debug)]
pub struct Refused(pub String);

/// Why a round stopped before its deltaLink.
#[derive(Debug)]
pub enum Stop {
    /// Graph will not take the link: read fully.
    Refused(Refused),
    /// Graph is throttling, failing or unreachable: the step fails and
    /// the kept links stay.
    Failed(StepError),
}

impl From<Refused> for Stop {
    fn from(refused: Refused) -> Stop {
        Stop::Refused(refused)
    }
}

impl Stop {
    /// What a failed request means for the round: one the host's retries
    /// could not get through (throttled, unavailable) fails the step; any
    /// other error refuses delta.
    fn of(e: StepError) -> Stop {
        if e.retryable() {
            Stop::Failed(e)
        } else {
            Stop::Refused(Refused(e.to_string()))
        }
    }
}

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
fn round(first: Call, mut each: impl FnMut(Value)) -> Result<String, Stop> {
    let first_url = first.url().to_string();
    let mut call = first;
    let mut visited = Visited::default();
    for _ in 0..MAX_PAGES {
        let response = call.read().map_err(Stop::of)?;
        if response.status == 410 {
            return Err(Stop::Refused(Refused(format!(
                "Graph answered 410 Gone to {} (the delta token expired)",
                call.url()
            ))));
        }
        if !response.is_success() {
            return Err(Stop::of(sluice_guest_services::status_error(
                &call, &response,
            )));
        }
        let mut page: serde_json::Map<String, Value> =
            response.json().map_err(|e| Refused(e.to_string()))?;
        if let Some(Value::Array(items)) = page.remove("value") {
            items.into_iter().for_each(&mut each);
        } else {
            return Err(Refused(format!("{}: no `value` list", call.url())).into());
        }
        match (
            page.remove("@odata.nextLink"),
            page.remove("@odata.deltaLink"),
        ) {
            (Some(Value::String(next)), _) => {
                // A round that loops is refused, as one that never ends
                // is: a full read goes on without the link.
                call = follow(GRAPH, &first_url, &next);
                visited
                    .enter(call.url())
                    .map_err(|e| Stop::Refused(Refused(e.message)))?;
            }
            (None, Some(Value::String(link))) => return Ok(link),
            _ => {
                return Err(Refused(format!(
                    "{}: a delta page with neither nextLink nor deltaLink",
                    call.url()
                ))
                .into());
            }
        }
    }
    Err(Refused(format!("more than {MAX_PAGES} delta pages")).into())
}

/// Links for changes from now on (`$deltatoken=latest`), taken before a
/// full read.
pub fn latest(group_ids: &[String]) -> Result<Links, Stop> {
    if group_ids.len() > MAX_FILTERED_GROUPS {
        return Err(Refused(format!(
            "{} license groups; Graph's delta filter takes at most {MAX_FILTERED_GROUPS}",
            group_ids.len()
        ))
        .into());
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

pub fn read(links: &Links) -> Result<Changes, Stop> {
    let mut members = Vec::new();
    let groups_link = under_current_base(&links.groups, "groups");
    let groups = round(Call::get(GRAPH, &groups_link), |group| {
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
    let mut users: Vec<Member<'static>> = Vec::new();
    let users_link = under_current_base(&links.users, "users");
    let round_link = users_link.clone();
    let users_link = round(Call::get(GRAPH, &users_link), |u| {
        users.extend(Member::owned(u));
    })?;
    if let Some(user) = users.iter().find(|u| u.lacks_account_state(false)) {
        return Err(Stop::Failed(member::no_account_state(
            &round_link,
            user.id(),
        )));
    }
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

/// A users round's last word on one user.
enum LastWord<'r> {
    /// Deleted, and not restored since: in deleted items, or for good.
    Deleted { for_good: bool },
    /// There: its entries in order (a deletion among them was undone by
    /// what followed it, or is a replay; each entry still says how the
    /// user was changed, and the later ones win).
    Changed(Vec<&'r Member<'static>>),
}

/// Each user's last word in a users round: a `@removed` counts only when
/// nothing follows it, so a user listed twice, restored, or a replayed
/// deletion is never taken for gone while Graph has them.
fn last_words<'r>(users: &'r [Member<'static>]) -> BTreeMap<&'r str, LastWord<'r>> {
    let mut entries: BTreeMap<&str, (Vec<&Member<'static>>, Removed)> = BTreeMap::new();
    for user in users {
        let Some(id) = user.id() else {
            continue;
        };
        let (changes, removed) = entries.entry(id).or_default();
        *removed = user.removed;
        if !user.removed.is_gone() {
            changes.push(user);
        }
    }
    entries
        .into_iter()
        .map(|(id, (changes, removed))| {
            let word = match removed {
                Removed::No => LastWord::Changed(changes),
                Removed::Restorable => LastWord::Deleted { for_good: false },
                Removed::ForGood => LastWord::Deleted { for_good: true },
            };
            (id, word)
        })
        .collect()
}

/// Whether `changes` list again (restore) a deleted member that a full
/// read kept unverified (see [`Kept::unverified`]).
pub fn restores_unverified(changes: &Changes, restorable: &Restorable) -> bool {
    last_words(&changes.users).into_iter().any(|(id, word)| {
        matches!(word, LastWord::Changed(_)) && restorable.get(id).is_some_and(|k| k.unverified)
    })
}

/// Applies `changes` to `known` (`groups`: the tracked group ids, sorted),
/// starting from the users an earlier round left `pending` and the
/// deleted members kept `restorable` (see [`crate::restorable`]; `now`,
/// in Unix seconds, dates a deletion read in this round); returns the
/// users still to look up. Every id touched goes in `changed`.
pub fn apply(
    known: &mut Known,
    groups: &[String],
    changes: &Changes,
    pending: Pending,
    restorable: &mut Restorable,
    now: i64,
    changed: &mut BTreeSet<String>,
) -> Pending {
    let mut pending = pending;
    // Members who left their last group in this round, kept for the round:
    // one who joins again (left and came back, or deleted and restored)
    // keeps what the step knew of them instead of waiting on a look-up.
    let mut left_all: BTreeMap<Id, Entry> = BTreeMap::new();
    for (group_id, id, kind, left) in &changes.members {
        let Ok(g) = groups.binary_search(group_id) else {
            continue;
        };
        let g = g as u16;
        changed.insert(id.clone());
        let object = Id::new(id);
        if *left {
            // A leave the group delta reports after the users delta
            // reported the deletion (a leave just before it, or the
            // deletion made final): not a member when restored either.
            if let Some(kept) = restorable.get_mut(id.as_str()) {
                kept.groups.retain(|kept| kept != group_id);
                if kept.groups.is_empty() {
                    restorable.remove(id.as_str());
                }
            }
            if let Some(entry) = known.get_mut(&object) {
                entry.groups.remove(g);
                if entry.groups.is_empty()
                    && let Some(entry) = known.remove(&object)
                {
                    left_all.insert(object.clone(), entry);
                }
            }
            if let Some(joined) = pending.get_mut(id) {
                joined.remove(&g);
            }
        } else if let Some(entry) = known.get_mut(&object) {
            entry.groups.insert(g);
        } else if let Some(mut entry) = left_all.remove(&object) {
            entry.groups.insert(g);
            known.insert(object, entry);
        } else if kind == USER {
            pending.entry(id.clone()).or_default().insert(g);
        } else {
            let mut entry = Entry::other(kind);
            entry.groups.insert(g);
            known.insert(object, entry);
        }
    }
    pending.retain(|_, joined| !joined.is_empty());
    for (id, word) in last_words(&changes.users) {
        let object = Id::new(id);
        match word {
            LastWord::Deleted { for_good: true } => {
                if known.remove(&object).is_some() {
                    changed.insert(id.to_string());
                }
                restorable.remove(id);
                pending.remove(id);
            }
            // A user in deleted items keeps its groups (see
            // `crate::restorable`): kept for when it comes back, with what
            // was known of it. A join this round's group delta reported
            // waits there too, to be looked up once the user is listed
            // again (the users round may be behind the group round).
            LastWord::Deleted { for_good: false } => {
                if known.get(&object).is_some_and(|e| e.kind.is_some()) {
                    continue;
                }
                let joined = pending.remove(id).unwrap_or_default();
                let ids = |positions: &mut dyn Iterator<Item = u16>| -> Vec<String> {
                    positions
                        .filter_map(|g| groups.get(usize::from(g)).cloned())
                        .collect()
                };
                let kept = match known.remove(&object) {
                    // What is known now replaces anything kept before.
                    Some(mut entry) => {
                        changed.insert(id.to_string());
                        let was_in = std::mem::take(&mut entry.groups);
                        let mut in_groups = was_in.iter().chain(joined);
                        Kept {
                            entry,
                            groups: ids(&mut in_groups),
                            since: now,
                            unverified: false,
                        }
                    }
                    None => {
                        let mut kept = restorable.remove(id).unwrap_or(Kept {
                            entry: Entry::unknown_user(),
                            groups: Vec::new(),
                            since: now,
                            unverified: false,
                        });
                        kept.groups.extend(ids(&mut joined.into_iter()));
                        // Deleted again, or a replay: the 30 days start now.
                        kept.since = now;
                        kept
                    }
                };
                let mut kept = kept;
                kept.groups.sort();
                kept.groups.dedup();
                if kept.groups.is_empty() {
                    restorable.remove(id);
                } else {
                    restorable.insert(id.to_string(), kept);
                }
            }
            LastWord::Changed(entries) => {
                // Listed again: restored, if it was deleted.
                let kept = restorable.remove(id);
                if let Some(entry) = known.get_mut(&object) {
                    entries.iter().for_each(|user| entry.merge(user));
                    changed.insert(id.to_string());
                    continue;
                }
                if kept.is_none() && !pending.contains_key(id) {
                    continue;
                }
                // The groups it joined this round and those it is restored to.
                let mut joined = pending.remove(id).unwrap_or_default();
                let rejoined = kept.iter().flat_map(|k| &k.groups);
                joined.extend(
                    rejoined.filter_map(|g| groups.binary_search(g).ok().map(|g| g as u16)),
                );
                if joined.is_empty() {
                    continue;
                }
                // Known from the round alone when one entry carries every
                // property (the later ones then add to it), else from what
                // was kept of a restored user.
                let whole = entries.iter().rposition(|user| user.is_complete());
                let kept = kept.map(|k| k.entry).filter(|e| e.user.is_some());
                let (mut entry, later) = match (whole, kept) {
                    (Some(whole), _) => (Entry::of(entries[whole]), &entries[whole + 1..]),
                    (None, Some(kept)) => (kept, &entries[..]),
                    // Nothing whole to start from: looked up.
                    (None, None) => {
                        pending.insert(id.to_string(), joined);
                        continue;
                    }
                };
                later.iter().for_each(|user| entry.merge(user));
                entry.groups = joined.into_iter().collect();
                known.insert(object, entry);
                changed.insert(id.to_string());
            }
        }
    }
    pending
}

/// Reads the properties of the users who joined, a few at a time
/// (`users?$filter=id in (…)`); returns those Graph did not list. A user
/// who has just joined may not be there yet (Graph's replication delay):
/// the caller keeps them pending for the next run, so a new hire is
/// never dropped for being early.
pub fn look_up(
    known: &mut Known,
    pending: Pending,
    changed: &mut BTreeSet<String>,
) -> Result<Pending, StepError> {
    let mut unfound = pending;
    let ids: Vec<String> = unfound.keys().cloned().collect();
    each_listed(&ids, |user, id| {
        if let Some(joined) = unfound.remove(id) {
            let mut entry = Entry::of(user);
            entry.groups = joined.into_iter().collect();
            known.insert(Id::new(id), entry);
            changed.insert(id.to_string());
        }
    })?;
    Ok(unfound)
}

/// Hands `each` every user of `ids` that Graph lists now, with its id,
/// asking a few at a time (`users?$filter=id in (…)`).
pub fn each_listed(
    ids: &[String],
    mut each: impl FnMut(&Member<'_>, &str),
) -> Result<(), StepError> {
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
            if let Some(id) = user.id() {
                each(&user, id);
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// [`apply`] with nothing deleted before the round.
    fn apply_alone(
        known: &mut Known,
        groups: &[String],
        changes: &Changes,
        pending: Pending,
        changed: &mut BTreeSet<String>,
    ) -> Pending {
        apply(
            known,
            groups,
            changes,
            pending,
            &mut Restorable::new(),
            0,
            changed,
        )
    }

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
        let pending = apply_alone(&mut known, &groups, &changes, Pending::new(), &mut changed);
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

    fn links() -> Links {
        Links {
            groups: String::new(),
            users: String::new(),
        }
    }

    fn known_in_g0(ids: &[&str]) -> Known {
        let mut known = Known::new();
        for id in ids {
            let mut e = Entry::of(&Member::owned(user(id, true)).unwrap());
            e.groups.insert(0);
            known.insert(Id::new(id), e);
        }
        known
    }

    fn users(entries: Vec<Value>) -> Vec<Member<'static>> {
        entries.into_iter().filter_map(Member::owned).collect()
    }

    #[test]
    fn a_users_last_entry_in_a_round_is_the_one_that_counts() {
        let groups = vec!["g0".to_string()];
        let mut known = known_in_g0(&["restored", "replayed", "rejoined", "gone"]);
        let removed = |id: &str| json!({"id": id, "@removed": {"reason": "changed"}});
        let changes = Changes {
            // Deleted and restored in one window: the group delta gives the
            // net membership (nothing for `restored`) or both halves.
            members: vec![
                ("g0".into(), "rejoined".into(), USER.into(), true),
                ("g0".into(), "rejoined".into(), USER.into(), false),
                ("g0".into(), "joined".into(), USER.into(), false),
            ],
            users: users(vec![
                removed("restored"),
                user("restored", true),
                // A replay of an earlier deletion, then the user as now.
                removed("replayed"),
                json!({"id": "replayed", "displayName": "Now"}),
                removed("rejoined"),
                user("rejoined", true),
                // Joined, then deleted (the group round says joined: a
                // user in deleted items keeps its memberships): waits with
                // the deleted, and is looked up once listed again.
                user("joined", true),
                removed("joined"),
                user("gone", true),
                removed("gone"),
            ]),
            links: links(),
        };
        let mut changed = BTreeSet::new();
        let mut deleted = Restorable::new();
        let pending = apply(
            &mut known,
            &groups,
            &changes,
            Pending::new(),
            &mut deleted,
            9,
            &mut changed,
        );
        for id in ["restored", "replayed", "rejoined"] {
            let entry = known
                .get(&Id::new(id))
                .unwrap_or_else(|| panic!("{id} kept"));
            assert_eq!(entry.groups.iter().collect::<Vec<_>>(), [0], "{id}");
        }
        let replayed = known[&Id::new("replayed")].user.as_ref().unwrap();
        assert_eq!(replayed.texts()[0], Some("Now"), "its later entry merged");
        assert!(!known.contains_key(&Id::new("gone")), "deleted last");
        assert!(!known.contains_key(&Id::new("joined")));
        assert!(pending.is_empty(), "{pending:?}");
        assert_eq!(deleted.keys().collect::<Vec<_>>(), ["gone", "joined"]);
        assert_eq!(deleted["joined"].groups, ["g0"]);
        assert!(deleted["joined"].entry.user.is_none(), "never looked up");

        // Listed again with only a property: looked up, in g0.
        let restored = Changes {
            members: Vec::new(),
            users: users(vec![json!({"id": "joined", "displayName": "J"})]),
            links: links(),
        };
        let pending = apply(
            &mut known,
            &groups,
            &restored,
            Pending::new(),
            &mut deleted,
            10,
            &mut changed,
        );
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["joined"]);
        assert_eq!(pending["joined"], BTreeSet::from([0]));
    }

    #[test]
    fn every_change_of_a_user_counts_and_a_deletion_only_when_last() {
        let groups = vec!["g0".to_string()];
        let mut known = known_in_g0(&["a"]);
        let changes = Changes {
            members: Vec::new(),
            users: users(vec![
                json!({"id": "a", "accountEnabled": false}),
                // A replayed deletion in the middle of the round.
                json!({"id": "a", "@removed": {"reason": "changed"}}),
                json!({"id": "a", "displayName": "New"}),
            ]),
            links: links(),
        };
        let mut changed = BTreeSet::new();
        apply_alone(&mut known, &groups, &changes, Pending::new(), &mut changed);
        let a = known[&Id::new("a")].user.as_ref().unwrap();
        assert_eq!(a.texts()[0], Some("New"));
        assert_eq!(
            a.account_enabled(),
            Some(false),
            "the disable before it holds"
        );
    }

    #[test]
    fn a_member_who_leaves_and_joins_again_in_a_round_keeps_what_was_known() {
        let groups = vec!["g0".to_string(), "g1".to_string()];
        let mut known = known_in_g0(&["a"]);
        let changes = Changes {
            members: vec![
                ("g0".into(), "a".into(), USER.into(), true),
                ("g1".into(), "a".into(), USER.into(), false),
            ],
            users: Vec::new(),
            links: links(),
        };
        let mut changed = BTreeSet::new();
        let pending = apply_alone(&mut known, &groups, &changes, Pending::new(), &mut changed);
        assert!(pending.is_empty(), "no look-up: {pending:?}");
        let a = &known[&Id::new("a")];
        assert_eq!(a.groups.iter().collect::<Vec<_>>(), [1]);
        assert_eq!(a.user.as_ref().unwrap().texts()[0], Some("a"));
        assert!(changed.contains("a"));
    }

    /// Graph: a user in deleted items keeps its group memberships, and
    /// neither the deletion nor the restore is in the group delta; only
    /// the users delta says either.
    #[test]
    fn a_member_deleted_in_one_round_and_restored_in_a_later_one_is_a_member_again() {
        let groups = vec!["g0".to_string(), "g1".to_string()];
        let mut known = known_in_g0(&["ann", "bo", "cy"]);
        known.get_mut(&Id::new("ann")).unwrap().groups.insert(1);
        let mut restorable = Restorable::new();
        let round = |members: Vec<(&str, &str, bool)>, users_delta: Vec<Value>| Changes {
            members: members
                .into_iter()
                .map(|(g, id, left)| (g.to_string(), id.to_string(), USER.to_string(), left))
                .collect(),
            users: users(users_delta),
            links: links(),
        };
        let removed = |id: &str, reason: &str| json!({"id": id, "@removed": {"reason": reason}});

        // Round 1: all three deleted; only the users delta says so.
        let deleted = round(
            Vec::new(),
            vec![
                removed("ann", "changed"),
                removed("bo", "changed"),
                removed("cy", "changed"),
            ],
        );
        let mut changed = BTreeSet::new();
        apply(
            &mut known,
            &groups,
            &deleted,
            Pending::new(),
            &mut restorable,
            100,
            &mut changed,
        );
        assert!(known.is_empty(), "nobody deleted is a member: {known:?}");
        assert_eq!(restorable["ann"].groups, ["g0", "g1"]);
        assert_eq!(restorable["ann"].since, 100);

        // Round 2: the group delta reports that Bo left g0 (just before
        // the deletion); Cy is purged (the group delta reports the leave,
        // the users delta the reason).
        let meanwhile = round(
            vec![("g0", "bo", true), ("g0", "cy", true)],
            vec![removed("cy", "deleted")],
        );
        let pending = apply(
            &mut known,
            &groups,
            &meanwhile,
            Pending::new(),
            &mut restorable,
            200,
            &mut changed,
        );
        assert!(pending.is_empty());
        assert!(!restorable.contains_key("cy"), "purged: nothing to restore");
        assert!(
            !restorable.contains_key("bo"),
            "in no group: nothing to restore"
        );

        // Round 3: Ann and Bo restored, listed again with only a property
        // or two (a users delta entry may carry only what changed).
        let restored = round(
            Vec::new(),
            vec![
                json!({"id": "ann", "displayName": "Ann again"}),
                user("bo", true),
            ],
        );
        let mut changed = BTreeSet::new();
        let pending = apply(
            &mut known,
            &groups,
            &restored,
            Pending::new(),
            &mut restorable,
            300,
            &mut changed,
        );
        assert!(pending.is_empty(), "no look-up needed: {pending:?}");
        let ann = &known[&Id::new("ann")];
        assert_eq!(ann.groups.iter().collect::<Vec<_>>(), [0, 1]);
        let ann = ann.user.as_ref().unwrap();
        assert_eq!(ann.texts()[0], Some("Ann again"));
        assert_eq!(
            ann.mail(),
            Some("ann@x.com"),
            "kept from before the deletion"
        );
        assert!(changed.contains("ann"));
        assert!(!known.contains_key(&Id::new("bo")), "left g0 while deleted");
        assert!(restorable.is_empty(), "both restored: {restorable:?}");

        // An entry kept from before (a look-up that lagged after a full
        // read) gives way to what is known when Ann is deleted again.
        let stale = Kept {
            entry: Entry::unknown_user(),
            groups: vec!["g0".into(), "g1".into()],
            since: 1,
            unverified: false,
        };
        restorable.insert("ann".into(), stale);
        known.get_mut(&Id::new("ann")).unwrap().groups.remove(1);
        let again = round(Vec::new(), vec![removed("ann", "changed")]);
        apply(
            &mut known,
            &groups,
            &again,
            Pending::new(),
            &mut restorable,
            400,
            &mut changed,
        );
        assert_eq!(restorable["ann"].groups, ["g0"]);
        assert_eq!(restorable["ann"].since, 400);
        assert!(restorable["ann"].entry.user.is_some());
    }

    #[test]
    fn a_user_the_look_up_did_not_list_stays_pending_until_found_or_gone() {
        let groups = vec!["g0".to_string(), "g1".to_string()];
        let mut known = known_in_g0(&[]);
        let carried: Pending = [
            ("late".to_string(), BTreeSet::from([0u16, 1])),
            ("left".to_string(), BTreeSet::from([1u16])),
            ("deleted".to_string(), BTreeSet::from([0u16])),
            ("still".to_string(), BTreeSet::from([0u16])),
        ]
        .into();
        let changes = Changes {
            // A deleted user leaves their groups too.
            members: vec![
                ("g1".into(), "left".into(), USER.into(), true),
                ("g0".into(), "deleted".into(), USER.into(), true),
            ],
            users: users(vec![
                user("late", true),
                json!({"id": "deleted", "@removed": {"reason": "deleted"}}),
            ]),
            links: links(),
        };
        let mut changed = BTreeSet::new();
        let pending = apply_alone(&mut known, &groups, &changes, carried, &mut changed);
        let late = &known[&Id::new("late")];
        assert_eq!(late.groups.iter().collect::<Vec<_>>(), [0, 1]);
        assert!(changed.contains("late"), "its chunk is saved");
        assert_eq!(
            pending.keys().collect::<Vec<_>>(),
            ["still"],
            "left its only group, or deleted: not looked up"
        );
    }
}
