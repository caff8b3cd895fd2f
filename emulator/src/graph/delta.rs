//! Graph delta for groups and their members (`GET /v1.0/groups/delta`), as
//! Graph documents it: a first round lists every group (or those named by
//! `$filter=id eq '…' or …`) with its current members in `members@delta`,
//! page after page through `@odata.nextLink`, and ends with an
//! `@odata.deltaLink`; following that link later lists only the groups
//! whose membership changed, each change a `members@delta` entry, a member
//! who left (removed, or deleted) carrying `"@removed": {"reason":
//! "deleted"}`. A large group is split across pages, the same group object
//! coming back with the next part of its `members@delta`, so a client
//! merges per group. `$select` picks the group's properties; `members`
//! among them (or no `$select`, or `$expand=members`) asks for members.
//! `$deltatoken=latest` gives a deltaLink for now without reading.
//!
//! Tokens are opaque and kept here. A token older than seven days (Graph's
//! limit for directory objects), one issued before the tokens were expired
//! by the admin, or one never issued is answered 410 Gone with
//! `syncStateNotFound` and a `Location` to start again with a full read.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::filter::{self, Expr, Literal};
use super::query::Listing;
use super::schema;
use crate::api::{encode_query, error, get, query_pairs};
use crate::state::{Data, MembershipChange, Service, Shared};

/// Graph keeps delta tokens of directory objects for seven days.
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// At most this many `members@delta` entries on one page.
const PAGE_MEMBERS: usize = 1000;
/// At most this many group objects on one page.
const PAGE_GROUPS: usize = 100;

/// What a delta round was asked for, fixed by its first request.
#[derive(Debug)]
pub struct DeltaQuery {
    /// The first request's options, for the `Location` of a 410.
    pairs: Vec<(String, String)>,
    /// Group properties to show; `None` is the default set.
    select: Option<Vec<&'static str>>,
    members: bool,
    /// Only these groups (`$filter=id eq '…' or …`).
    ids: Option<Vec<String>>,
}

/// Where a round stands: which changes it reports and how far it got.
#[derive(Debug, Clone)]
pub struct Cursor {
    query: Arc<DeltaQuery>,
    /// Report changes after this sequence number; `None` for a full read.
    since: Option<usize>,
    /// ... up to this one (the round's end, fixed when it starts).
    upto: usize,
    /// The group (position among all groups) and the entry within it
    /// where the next page starts.
    group: usize,
    entry: usize,
    issued: u64,
    epoch: u64,
    /// Whether the injected empty first page has been served.
    after_empty: bool,
}

/// The delta tokens issued: each skip or delta token names a cursor (a
/// groups round's [`Cursor`], or a users round's).
#[derive(Debug)]
pub struct DeltaTokens<C = Cursor>(pub(super) HashMap<String, C>);

impl<C> Default for DeltaTokens<C> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<C> DeltaTokens<C> {
    /// A new random token naming `cursor`.
    pub(super) fn issue(&mut self, cursor: C) -> String {
        let token = format!("{:032x}", rand::random::<u128>());
        self.0.insert(token.clone(), cursor);
        token
    }
}

pub(crate) fn now() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

fn bad_request(message: &str) -> Response {
    error(
        Service::Graph,
        StatusCode::BAD_REQUEST,
        "Request_UnsupportedQuery",
        message,
    )
}

/// Objects a delta `$filter` may name ("there is a limit of 50 filtered
/// objects": Graph's group and user delta documentation).
const MAX_FILTERED_OBJECTS: usize = 50;

/// The ids of a delta `$filter` (`id eq '…' or id eq '…'`, the only
/// filter delta takes), for at most [`MAX_FILTERED_OBJECTS`] objects; a
/// 400 for any other.
pub(crate) fn filtered_ids(text: &str) -> Result<Vec<String>, Response> {
    let ids = filter::parse(text)
        .ok()
        .as_ref()
        .and_then(filter_ids)
        .ok_or_else(|| unsupported_filter(text))?;
    if ids.len() > MAX_FILTERED_OBJECTS {
        return Err(too_many_filtered(ids.len()));
    }
    Ok(ids)
}

/// 400 for a delta `$filter` other than ids.
fn unsupported_filter(text: &str) -> Response {
    bad_request(&format!(
        "Delta query supports $filter only on id, as id eq '…' joined by or; got '{text}'."
    ))
}

/// 400 for a delta `$filter` naming more than [`MAX_FILTERED_OBJECTS`].
fn too_many_filtered(n: usize) -> Response {
    bad_request(&format!(
        "Delta query $filter names {n} objects; at most {MAX_FILTERED_OBJECTS} are supported."
    ))
}

/// The group ids of `id eq '…' or id eq '…'`, the only filter Graph's
/// delta takes.
fn filter_ids(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Or(a, b) => {
            let mut ids = filter_ids(a)?;
            ids.extend(filter_ids(b)?);
            Some(ids)
        }
        Expr::Equals {
            property,
            value: Literal::Text(id),
            negated: false,
        } if property.eq_ignore_ascii_case("id") => Some(vec![id.clone()]),
        _ => None,
    }
}

/// Reads the options of a round's first request.
fn delta_query(pairs: Vec<(String, String)>) -> Result<DeltaQuery, Response> {
    let mut members = get(&pairs, "$expand").is_some_and(|e| e.eq_ignore_ascii_case("members"));
    let select = match get(&pairs, "$select") {
        None => {
            members = true;
            None
        }
        Some(list) => {
            let mut names = Vec::new();
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name.eq_ignore_ascii_case("members") {
                    members = true;
                } else {
                    names.push(Listing::Groups.property(name)?);
                }
            }
            Some(names)
        }
    };
    let ids = match get(&pairs, "$filter") {
        None => None,
        Some(text) => Some(filtered_ids(text)?),
    };
    Ok(DeltaQuery {
        pairs,
        select,
        members,
        ids,
    })
}

/// 410 Gone: the token cannot be used; start again from `Location`, the
/// round's first request (`path` under `/v1.0`, with its options).
pub(crate) fn gone(s: &Shared, path: &str, pairs: &[(String, String)]) -> Response {
    let mut response = error(
        Service::Graph,
        StatusCode::GONE,
        "syncStateNotFound",
        "The delta token is expired or not valid. Start again with a full synchronization.",
    );
    let restart = if pairs.is_empty() {
        format!("{}/v1.0/{path}", s.base_url)
    } else {
        format!("{}/v1.0/{path}?{}", s.base_url, encode_query(pairs))
    };
    if let Ok(v) = HeaderValue::from_str(&restart) {
        response.headers_mut().insert("location", v);
    }
    response
}

/// `GET /v1.0/groups/delta` (also `/groups/microsoft.graph.delta()`).
pub async fn groups_delta(State(s): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    let pairs = query_pairs(raw.as_deref());
    let skip = get(&pairs, "$skiptoken").map(str::to_string);
    let delta = get(&pairs, "$deltatoken").map(str::to_string);
    let mut d = s.lock();
    let cursor = match (skip, delta) {
        (Some(token), _) => resume(&s, &d, &token),
        (None, Some(token)) if token == "latest" => return latest(&s, &mut d, pairs),
        (None, Some(token)) => resume(&s, &d, &token).map(|c| Cursor {
            // A deltaLink starts a new round: the changes since it, up to now.
            since: Some(c.upto),
            upto: d.membership_changes.len(),
            group: 0,
            entry: 0,
            after_empty: false,
            ..c
        }),
        (None, None) => delta_query(pairs).map(|query| Cursor {
            query: Arc::new(query),
            since: None,
            upto: d.membership_changes.len(),
            group: 0,
            entry: 0,
            issued: now(),
            epoch: d.delta_epoch,
            after_empty: false,
        }),
    };
    match cursor {
        Ok(c) => page(&s, &mut d, c),
        Err(r) => r,
    }
}

/// The cursor a token names, if it is still good.
fn resume(s: &Shared, d: &Data, token: &str) -> Result<Cursor, Response> {
    let Some(found) = d.delta_tokens.0.get(token) else {
        return Err(gone(s, "groups/delta", &[]));
    };
    if found.epoch != d.delta_epoch || now().saturating_sub(found.issued) > TOKEN_LIFETIME_SECS {
        return Err(gone(s, "groups/delta", &found.query.pairs));
    }
    Ok(found.clone())
}

/// `$deltatoken=latest`: no objects, a deltaLink for changes from now on.
fn latest(s: &Shared, d: &mut Data, pairs: Vec<(String, String)>) -> Response {
    let options = pairs
        .into_iter()
        .filter(|(k, _)| k != "$deltatoken")
        .collect();
    let query = match delta_query(options) {
        Ok(q) => Arc::new(q),
        Err(r) => return r,
    };
    let upto = d.membership_changes.len();
    let link = delta_link(s, d, &query, upto);
    Json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups",
        "@odata.deltaLink": link,
        "value": [],
    }))
    .into_response()
}

fn delta_link(s: &Shared, d: &mut Data, query: &Arc<DeltaQuery>, upto: usize) -> String {
    let token = d.delta_tokens.issue(Cursor {
        query: Arc::clone(query),
        since: None,
        upto,
        group: 0,
        entry: 0,
        issued: now(),
        epoch: d.delta_epoch,
        after_empty: false,
    });
    format!(
        "{}/v1.0/groups/delta?{}",
        s.base_url,
        encode_query(&[("$deltatoken".to_string(), token)])
    )
}

/// One `members@delta` entry.
fn entry(kind: &str, id: &str, removed: bool) -> Value {
    let mut e = json!({ "@odata.type": kind, "id": id });
    if removed {
        e["@removed"] = json!({ "reason": "deleted" });
    }
    e
}

/// The net membership changes of each group in `changes`: the last change
/// of each member wins, in the order members first changed.
fn net_changes(changes: &[MembershipChange]) -> HashMap<&str, Vec<(&MembershipChange, bool)>> {
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last.insert((c.group_id.as_str(), c.member.id()), i);
    }
    let mut per_group: HashMap<&str, Vec<(&MembershipChange, bool)>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for c in changes {
        let key = (c.group_id.as_str(), c.member.id());
        if !seen.insert(key) {
            continue;
        }
        let final_change = &changes[last[&key]];
        per_group
            .entry(key.0)
            .or_default()
            .push((c, !final_change.joined));
    }
    per_group
}

/// The page a cursor points at, with the link that follows it.
fn page(s: &Shared, d: &mut Data, cursor: Cursor) -> Response {
    let empty_pages = d.faults.empty_graph_pages;
    if empty_pages && cursor.group == 0 && cursor.entry == 0 && !cursor.after_empty {
        let next = Cursor {
            after_empty: true,
            ..cursor
        };
        let token = d.delta_tokens.issue(next);
        return Json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups",
            "@odata.nextLink": link(s, "$skiptoken", &token),
            "value": [],
        }))
        .into_response();
    }
    let (value, next) = collect(d, &cursor);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!("https://graph.microsoft.com/v1.0/$metadata#groups"),
    );
    match next {
        Some((group, entry)) => {
            let token = d.delta_tokens.issue(Cursor {
                group,
                entry,
                after_empty: true,
                ..cursor
            });
            body.insert(
                "@odata.nextLink".into(),
                json!(link(s, "$skiptoken", &token)),
            );
        }
        None => {
            let token = d.delta_tokens.issue(Cursor {
                group: 0,
                entry: 0,
                issued: now(),
                ..cursor
            });
            body.insert(
                "@odata.deltaLink".into(),
                json!(link(s, "$deltatoken", &token)),
            );
        }
    }
    body.insert("value".into(), Value::Array(value));
    Json(Value::Object(body)).into_response()
}

fn link(s: &Shared, name: &str, token: &str) -> String {
    format!(
        "{}/v1.0/groups/delta?{}",
        s.base_url,
        encode_query(&[(name.to_string(), token.to_string())])
    )
}

/// The group objects of one page, and where the next page starts (`None`
/// when the round is over).
fn collect(d: &Data, cursor: &Cursor) -> (Vec<Value>, Option<(usize, usize)>) {
    let query = &cursor.query;
    let changes = cursor
        .since
        .map(|since| net_changes(&d.membership_changes[since.min(cursor.upto)..cursor.upto]));
    let groups = &d.scenario.groups;
    let (mut value, mut budget) = (Vec::new(), PAGE_MEMBERS);
    let mut position = (cursor.group, cursor.entry);
    while position.0 < groups.len() {
        let (g, start) = position;
        let group = &groups[g];
        let wanted = query.ids.as_ref().is_none_or(|ids| ids.contains(&group.id));
        let changed = changes.as_ref().map(|c| c.get(group.id.as_str()));
        // A later round shows a group for its membership changes only
        // when it selected `members` (the emulator changes nothing else of
        // a group): Graph leaves out objects whose changes are all to
        // properties the round did not select.
        let unseen = matches!(changed, Some(None)) || (changed.is_some() && !query.members);
        if !wanted || unseen {
            position = (g + 1, 0);
            continue;
        }
        if value.len() == PAGE_GROUPS || budget == 0 {
            return (value, Some(position));
        }
        let mut object = match schema::group(group).render(query.select.as_deref(), false) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        object.insert("id".into(), json!(group.id));
        let (entries, total) = if !query.members {
            (Vec::new(), 0)
        } else if let Some(Some(net)) = changed {
            let shown: Vec<Value> = net
                .iter()
                .skip(start)
                .take(budget)
                .map(|(c, removed)| {
                    entry(
                        schema::member_kind(&c.member).odata_type(),
                        c.member.id(),
                        *removed,
                    )
                })
                .collect();
            (shown, net.len())
        } else {
            let shown: Vec<Value> = group
                .members
                .iter()
                .skip(start)
                .take(budget)
                .map(|m| entry(schema::member_kind(m).odata_type(), m.id(), false))
                .collect();
            (shown, group.members.len())
        };
        let end = start + entries.len();
        budget -= entries.len();
        if !entries.is_empty() {
            object.insert("members@delta".into(), Value::Array(entries));
        }
        value.push(Value::Object(object));
        position = if end < total { (g, end) } else { (g + 1, 0) };
    }
    (value, None)
}
