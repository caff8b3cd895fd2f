//! Graph delta for users (`GET /v1.0/users/delta`), as Graph documents it:
//! a first round lists every user, page after page through
//! `@odata.nextLink`, and ends with an `@odata.deltaLink`; following that
//! link later lists only the users changed since (with their selected
//! properties; Graph promises at least the changed ones), a deleted user
//! as `{"id", "@removed": {"reason": "changed"}}` (deleted users stay
//! restorable for 30 days, which Graph reports as `changed`); a restored
//! or new user is listed like a changed one. A property never set (`null`
//! in the emulator's data) is left out of an entry ("if the property has
//! never been set before it will not be included in the response at
//! all"); one set and cleared since is `null`. `$deltatoken=latest` gives a
//! deltaLink for now without reading. Tokens expire as the groups' do (see
//! [`super::delta`]): 410 Gone with `syncStateNotFound`.
//!
//! By default each changed user is listed once, as it is now. With the
//! `delta_repeats` fault a round lists every change it sees, in order, each
//! as that change left the user (a user deleted and restored: `@removed`,
//! then the object); with `delta_replays` a round that follows a deltaLink
//! starts with a page holding the previous round's last page again.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::delta::{DeltaTokens, TOKEN_LIFETIME_SECS, filtered_ids, gone, now};
use super::query::Listing;
use super::schema;
use crate::api::{encode_query, get, query_pairs};
use crate::scenario::GraphUser;
use crate::state::{Data, Shared, UserChange};

/// At most this many users on one page.
const PAGE_USERS: usize = 200;
const PATH: &str = "users/delta";
const CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#users";

/// Where a users round stands.
#[derive(Debug, Clone)]
pub struct UserCursor {
    /// The first request's options (for a 410's `Location`).
    pairs: Arc<Vec<(String, String)>>,
    select: Option<Arc<Vec<&'static str>>>,
    /// The users the round is limited to (`$filter=id eq '…' or …`).
    ids: Option<Arc<HashSet<String>>>,
    /// Changes after this sequence number; `None` lists every user.
    since: Option<usize>,
    upto: usize,
    /// Position of the next page's first user (or changed id).
    next: usize,
    issued: u64,
    epoch: u64,
    /// On a deltaLink: the last page of the round it ends, for
    /// `delta_replays`; on a round's first page: the page to replay first.
    replay: Option<Arc<Vec<Value>>>,
}

/// The users delta tokens issued.
pub type UserDeltaTokens = DeltaTokens<UserCursor>;

fn link(s: &Shared, name: &str, token: &str) -> String {
    format!(
        "{}/v1.0/{PATH}?{}",
        s.base_url,
        encode_query(&[(name.to_string(), token.to_string())])
    )
}

/// `GET /v1.0/users/delta` (also `/users/microsoft.graph.delta()`).
pub async fn users_delta(State(s): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let skip = get(&pairs, "$skiptoken").map(str::to_string);
    let delta = get(&pairs, "$deltatoken").map(str::to_string);
    let mut d = s.lock();
    let upto = d.user_changes.len();
    let cursor = match (skip, delta) {
        (Some(token), _) => resume(&s, &d, &token),
        (None, Some(token)) if token == "latest" => {
            let options: Vec<_> = pairs
                .into_iter()
                .filter(|(k, _)| k != "$deltatoken")
                .collect();
            return match first_cursor(&d, options) {
                Ok(c) => {
                    let token = d.user_deltas.issue(UserCursor { since: None, ..c });
                    Json(json!({
                        "@odata.context": CONTEXT,
                        "@odata.deltaLink": link(&s, "$deltatoken", &token),
                        "value": [],
                    }))
                    .into_response()
                }
                Err(r) => r,
            };
        }
        (None, Some(token)) => resume(&s, &d, &token).map(|c| UserCursor {
            since: Some(c.upto),
            upto,
            next: 0,
            replay: c.replay.filter(|_| d.faults.delta_replays),
            ..c
        }),
        (None, None) => first_cursor(&d, pairs).map(|c| UserCursor { since: None, ..c }),
    };
    match cursor {
        Ok(c) => page(&s, &mut d, c),
        Err(r) => r,
    }
}

/// The cursor of a round's first request (`since` set by the caller).
fn first_cursor(d: &Data, pairs: Vec<(String, String)>) -> Result<UserCursor, Response> {
    let select = match get(&pairs, "$select") {
        None => None,
        Some(list) => {
            let mut names = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                names.push(Listing::Users.property(name)?);
            }
            Some(Arc::new(names))
        }
    };
    let ids = match get(&pairs, "$filter") {
        None => None,
        Some(text) => Some(Arc::new(filtered_ids(text)?.into_iter().collect())),
    };
    Ok(UserCursor {
        pairs: Arc::new(pairs),
        select,
        ids,
        since: None,
        upto: d.user_changes.len(),
        next: 0,
        issued: now(),
        epoch: d.delta_epoch,
        replay: None,
    })
}

fn resume(s: &Shared, d: &Data, token: &str) -> Result<UserCursor, Response> {
    let Some(found) = d.user_deltas.0.get(token) else {
        return Err(gone(s, PATH, &[]));
    };
    if found.epoch != d.delta_epoch || now().saturating_sub(found.issued) > TOKEN_LIFETIME_SECS {
        return Err(gone(s, PATH, &found.pairs));
    }
    Ok(found.clone())
}

/// Whether a round sees a change: a deletion, restore or creation always,
/// a change of a property only when the round selected it (or selected
/// nothing) and filtered on nothing or on this user.
fn sees(cursor: &UserCursor, change: &UserChange) -> bool {
    let selected = match (change.property, &cursor.select) {
        (None, _) | (_, None) => true,
        (Some(property), Some(select)) => select.contains(&property),
    };
    selected && wanted(cursor, &change.user_id)
}

/// The ids of the users changed in `changes` that the round sees, each
/// once, in the order they first changed.
fn changed_ids<'c>(changes: &'c [UserChange], cursor: &UserCursor) -> Vec<&'c str> {
    let mut seen = HashSet::new();
    changes
        .iter()
        .filter(|c| sees(cursor, c))
        .map(|c| c.user_id.as_str())
        .filter(|id| seen.insert(*id))
        .collect()
}

/// One entry of a later round: a user as shown, or a deletion.
enum Entry<'a> {
    User(&'a GraphUser),
    Removed(&'a str),
}

/// What a later round over `changes` lists: each changed user once, as
/// it is now; or, with `repeats`, each change seen, as it left the user.
fn entries<'a>(
    d: &'a Data,
    changes: &'a [UserChange],
    cursor: &UserCursor,
    repeats: bool,
) -> Vec<Entry<'a>> {
    if repeats {
        return changes
            .iter()
            .filter(|c| sees(cursor, c))
            .map(|c| match &c.after {
                Some(u) => Entry::User(u),
                None => Entry::Removed(&c.user_id),
            })
            .collect();
    }
    changed_ids(changes, cursor)
        .into_iter()
        .map(|id| match d.scenario.user(id) {
            Some(u) => Entry::User(u),
            None => Entry::Removed(id),
        })
        .collect()
}

/// Whether the round's filter (if any) names the user `id`.
fn wanted(cursor: &UserCursor, id: &str) -> bool {
    cursor.ids.as_ref().is_none_or(|ids| ids.contains(id))
}

/// A user as a delta entry shows it: the selected (or default) properties
/// less those never set, and `id` ("the id property is always returned").
fn render(d: &Data, u: &GraphUser, select: Option<&[&'static str]>) -> Value {
    let mut object = schema::user(u).render(select, false);
    if let Value::Object(m) = &mut object {
        let cleared = d.cleared.get(&u.id);
        m.retain(|k, v| !v.is_null() || cleared.is_some_and(|c| c.contains(&k.as_str())));
        m.insert("id".into(), json!(u.id));
    }
    object
}

fn page(s: &Shared, d: &mut Data, cursor: UserCursor) -> Response {
    if let Some(replayed) = cursor.replay.clone().filter(|r| !r.is_empty()) {
        let token = d.user_deltas.issue(UserCursor {
            replay: None,
            ..cursor
        });
        return Json(json!({
            "@odata.context": CONTEXT,
            "@odata.nextLink": link(s, "$skiptoken", &token),
            "value": *replayed,
        }))
        .into_response();
    }
    let select = cursor.select.as_deref().map(Vec::as_slice);
    let (value, total): (Vec<Value>, usize) = match cursor.since {
        None => {
            let users: Vec<_> = d
                .scenario
                .graph_users
                .iter()
                .filter(|u| wanted(&cursor, &u.id))
                .collect();
            let shown = users.iter().skip(cursor.next).take(PAGE_USERS);
            (shown.map(|u| render(d, u, select)).collect(), users.len())
        }
        Some(since) => {
            let changes = &d.user_changes[since.min(cursor.upto)..cursor.upto];
            let listed = entries(d, changes, &cursor, d.faults.delta_repeats);
            let shown = listed
                .iter()
                .skip(cursor.next)
                .take(PAGE_USERS)
                .map(|e| match e {
                    Entry::User(u) => render(d, u, select),
                    Entry::Removed(id) => json!({ "id": id, "@removed": { "reason": "changed" } }),
                });
            (shown.collect(), listed.len())
        }
    };
    let end = cursor.next + value.len();
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(CONTEXT));
    if end < total {
        let token = d.user_deltas.issue(UserCursor {
            next: end,
            ..cursor
        });
        body.insert(
            "@odata.nextLink".into(),
            json!(link(s, "$skiptoken", &token)),
        );
    } else {
        let token = d.user_deltas.issue(UserCursor {
            next: 0,
            issued: now(),
            replay: Some(Arc::new(value.clone())),
            ..cursor
        });
        body.insert(
            "@odata.deltaLink".into(),
            json!(link(s, "$deltatoken", &token)),
        );
    }
    body.insert("value".into(), Value::Array(value));
    Json(Value::Object(body)).into_response()
}
