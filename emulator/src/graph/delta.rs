//! Graph delta for groups and their members (`GET /v1.0/groups/delta`), as
//! Graph documents it: a first round lists every group (or those named by
//! `$filter=id eq '…' or …`) with its current members in `members@delta`,
//! page after page through `@odata.nextLink`, and ends with an
//! `@odata.deltaLink`; following that link later lists only the groups
//! whose membership changed, each change a `members@delta` entry, a member
//! who left carrying `"@removed": {"reason": "deleted"}` (a user in
//! deleted items keeps its memberships, and is not listed). A large group is split across pages, the same group object
//! coming back with the next part of its `members@delta`, so a client
//! merges per group. `$select` picks the group's properties; `members`
//! among them (or no `$select`, or `$expand=members`) asks for members.
//! `$deltatoken=latest` gives a deltaLink for now without reading.
//!
//! Later rounds list each member's net change once by default; with the
//! `delta_repeats` fault every change in order (a member who left and came
//! back: the `@removed` entry, then the join). With `delta_replays` a round
//! that follows a deltaLink starts with a page holding the previous round's
//! last page again. With `delta_shuffle` each group's `members@delta` is
//! cut into parts of at most half a page, and the parts of different groups
//! take turns in a seeded order, a group's own parts staying in order.
//! `delta_page_members` makes pages smaller than Graph's 1000 entries.
//!
//! Tokens are opaque and kept here. A token older than seven days (Graph's
//! limit for directory objects), one issued before the tokens were expired
//! by the admin, or one never issued is answered 410 Gone with
//! `syncStateNotFound` and a `Location` to start again with a full read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
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
use crate::faults::draw;
use crate::scenario::Member;
use crate::state::{Data, MembershipChange, Service, Shared};

/// Graph keeps delta tokens of directory objects for seven days.
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// At most this many `members@delta` entries on one page, unless the
/// `delta_page_members` fault says otherwise.
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
    /// On a deltaLink: the last page of the round it ends, for
    /// `delta_replays`; on a round's first page: the page to replay first.
    replay: Option<Arc<Vec<Value>>>,
    /// With `delta_shuffle`: the round's parts in the order served, and the
    /// next page's first part.
    plan: Option<Arc<Vec<Part>>>,
    part: usize,
}

/// Entries `start..end` of one group's `members@delta` in a round, by the
/// group's position among all groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Part {
    group: usize,
    start: usize,
    end: usize,
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
            replay: c.replay.clone().filter(|_| d.faults.delta_replays),
            plan: None,
            part: 0,
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
            replay: None,
            plan: None,
            part: 0,
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
        replay: None,
        plan: None,
        part: 0,
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

/// Each member change of one group in a round, and whether it says the
/// member left.
type GroupChanges<'a> = Vec<(&'a MembershipChange, bool)>;

/// The membership changes of each group in `changes`. By default the net
/// change of each member, once, in the order members first changed (the
/// last change wins); with `repeats`, every change in order.
fn group_changes(changes: &[MembershipChange], repeats: bool) -> HashMap<&str, GroupChanges<'_>> {
    let mut per_group: HashMap<&str, GroupChanges<'_>> = HashMap::new();
    if repeats {
        for c in changes {
            per_group
                .entry(c.group_id.as_str())
                .or_default()
                .push((c, !c.joined));
        }
        return per_group;
    }
    let mut last: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last.insert((c.group_id.as_str(), c.member.id()), i);
    }
    let mut seen = HashSet::new();
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

/// A group's `members@delta` entries in a round: its members (a first
/// round) or its changes (a later one).
enum Entries<'a> {
    Members(&'a [Member]),
    Changes(&'a [(&'a MembershipChange, bool)]),
}

impl Entries<'_> {
    fn len(&self) -> usize {
        match self {
            Entries::Members(m) => m.len(),
            Entries::Changes(c) => c.len(),
        }
    }

    fn render(&self, range: Range<usize>) -> Vec<Value> {
        let range = range.start.min(self.len())..range.end.min(self.len());
        match self {
            Entries::Members(m) => m[range]
                .iter()
                .map(|m| entry(schema::member_kind(m).odata_type(), m.id(), false))
                .collect(),
            Entries::Changes(c) => c[range]
                .iter()
                .map(|(c, removed)| {
                    entry(
                        schema::member_kind(&c.member).odata_type(),
                        c.member.id(),
                        *removed,
                    )
                })
                .collect(),
        }
    }
}

/// The groups a round lists, by position among all groups, with their
/// entries when the round asked for members. A later round lists a group
/// only for its membership changes, and only when it selected `members`
/// (the emulator changes nothing else of a group): Graph leaves out
/// objects whose changes are all to properties the round did not select.
fn listed<'a>(
    d: &'a Data,
    query: &DeltaQuery,
    changes: Option<&'a HashMap<&'a str, GroupChanges<'a>>>,
) -> Vec<(usize, Option<Entries<'a>>)> {
    let mut out = Vec::new();
    for (g, group) in d.scenario.groups.iter().enumerate() {
        if !query.ids.as_ref().is_none_or(|ids| ids.contains(&group.id)) {
            continue;
        }
        let entries = match changes {
            None => Entries::Members(&group.members),
            Some(changes) => match changes.get(group.id.as_str()) {
                Some(c) if query.members => Entries::Changes(c),
                _ => continue,
            },
        };
        out.push((g, query.members.then_some(entries)));
    }
    out
}

/// Cuts each listed group's entries into parts of at most `part` and
/// orders them for `delta_shuffle`: groups take turns in an order drawn
/// from `seed` and `salt`, never the same group twice in a row while
/// another has parts left; a group's own parts stay in order. A group
/// without entries is one empty part, so it is still listed.
fn interleave(lens: &[(usize, usize)], part: usize, seed: u64, salt: u64) -> Vec<Part> {
    let part = part.max(1);
    let mut queues: Vec<VecDeque<Part>> = lens
        .iter()
        .map(|&(group, len)| {
            let mut queue = VecDeque::new();
            let mut start = 0;
            loop {
                let end = (start + part).min(len);
                queue.push_back(Part { group, start, end });
                if end >= len {
                    break queue;
                }
                start = end;
            }
        })
        .collect();
    let mut plan = Vec::new();
    let mut last = None;
    for step in 0u64.. {
        let open: Vec<usize> = (0..queues.len())
            .filter(|&i| !queues[i].is_empty())
            .collect();
        let choices: Vec<usize> = match open.len() {
            0 => break,
            1 => open,
            _ => open.into_iter().filter(|&i| Some(i) != last).collect(),
        };
        let drawn = draw(seed, salt, step) * choices.len() as f64;
        let pick = choices[(drawn as usize).min(choices.len() - 1)];
        if let Some(p) = queues[pick].pop_front() {
            plan.push(p);
        }
        last = Some(pick);
    }
    plan
}

/// The page a cursor points at, with the link that follows it.
fn page(s: &Shared, d: &mut Data, mut cursor: Cursor) -> Response {
    if let Some(replayed) = cursor.replay.take().filter(|r| !r.is_empty()) {
        let token = d.delta_tokens.issue(cursor);
        return Json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups",
            "@odata.nextLink": link(s, "$skiptoken", &token),
            "value": *replayed,
        }))
        .into_response();
    }
    let empty_pages = d.faults.empty_graph_pages;
    let at_start = cursor.group == 0 && cursor.entry == 0 && cursor.part == 0;
    if empty_pages && at_start && !cursor.after_empty {
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
    let page_members = d.faults.delta_page_members.unwrap_or(PAGE_MEMBERS).max(1);
    let changes = cursor.since.map(|since| {
        let window = &d.membership_changes[since.min(cursor.upto)..cursor.upto];
        group_changes(window, d.faults.delta_repeats)
    });
    let groups = listed(d, &cursor.query, changes.as_ref());
    if at_start && cursor.plan.is_none() && d.faults.delta_shuffle && cursor.query.members {
        let lens: Vec<(usize, usize)> = groups
            .iter()
            .map(|(g, e)| (*g, e.as_ref().map_or(0, Entries::len)))
            .collect();
        let salt = ((cursor.since.unwrap_or(0) as u64) << 32) ^ cursor.upto as u64;
        cursor.plan = Some(Arc::new(interleave(
            &lens,
            page_members / 2,
            d.faults.seed,
            salt,
        )));
    }
    let (value, next) = match &cursor.plan {
        Some(plan) => {
            let (value, next) = collect_parts(d, &cursor, &groups, plan, page_members);
            (value, next.map(|part| (0, 0, part)))
        }
        None => {
            let (value, next) = collect(d, &cursor, &groups, page_members);
            (value, next.map(|(group, entry)| (group, entry, 0)))
        }
    };
    drop(groups);
    drop(changes);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!("https://graph.microsoft.com/v1.0/$metadata#groups"),
    );
    match next {
        Some((group, entry, part)) => {
            let token = d.delta_tokens.issue(Cursor {
                group,
                entry,
                part,
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
                part: 0,
                plan: None,
                issued: now(),
                replay: Some(Arc::new(value.clone())),
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

/// A group object of a page, with `entries` as its `members@delta` (none
/// when empty).
fn group_object(d: &Data, query: &DeltaQuery, g: usize, entries: Vec<Value>) -> Value {
    let group = &d.scenario.groups[g];
    let mut object = match schema::group(group).render(query.select.as_deref(), false) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    object.insert("id".into(), json!(group.id));
    if !entries.is_empty() {
        object.insert("members@delta".into(), Value::Array(entries));
    }
    Value::Object(object)
}

/// The group objects of one page, each group's entries in one run, and
/// where the next page starts (`None` when the round is over).
fn collect(
    d: &Data,
    cursor: &Cursor,
    groups: &[(usize, Option<Entries<'_>>)],
    page_members: usize,
) -> (Vec<Value>, Option<(usize, usize)>) {
    let (mut value, mut budget) = (Vec::new(), page_members);
    for (g, entries) in groups.iter().filter(|(g, _)| *g >= cursor.group) {
        let start = if *g == cursor.group { cursor.entry } else { 0 };
        if value.len() == PAGE_GROUPS || budget == 0 {
            return (value, Some((*g, start)));
        }
        let total = entries.as_ref().map_or(0, Entries::len);
        let end = total.min(start + budget);
        let shown = entries
            .as_ref()
            .map_or_else(Vec::new, |e| e.render(start..end));
        budget -= end.saturating_sub(start);
        value.push(group_object(d, &cursor.query, *g, shown));
        if end < total {
            return (value, Some((*g, end)));
        }
    }
    (value, None)
}

/// The group objects of one page of a shuffled round (whole parts, from
/// `cursor.part`), and the next page's first part.
fn collect_parts(
    d: &Data,
    cursor: &Cursor,
    groups: &[(usize, Option<Entries<'_>>)],
    plan: &[Part],
    page_members: usize,
) -> (Vec<Value>, Option<usize>) {
    let (mut value, mut budget) = (Vec::new(), page_members);
    let mut next = cursor.part;
    while let Some(part) = plan.get(next) {
        let size = part.end - part.start;
        if value.len() == PAGE_GROUPS || (size > budget && !value.is_empty()) {
            return (value, Some(next));
        }
        let shown = groups
            .binary_search_by_key(&part.group, |(g, _)| *g)
            .ok()
            .and_then(|i| groups[i].1.as_ref())
            .map_or_else(Vec::new, |e| e.render(part.start..part.end));
        budget = budget.saturating_sub(size);
        value.push(group_object(d, &cursor.query, part.group, shown));
        next += 1;
    }
    (value, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_parts_interleave_and_keep_each_group_in_order() {
        let lens = [(0, 5), (3, 2), (4, 0)];
        let plan = interleave(&lens, 2, 7, 1);
        assert_eq!(plan, interleave(&lens, 2, 7, 1), "seeded");
        assert_eq!(plan.len(), 3 + 1 + 1);
        for (i, pair) in plan.windows(2).enumerate() {
            let others_left = plan[i + 1..].iter().any(|p| p.group != pair[0].group);
            assert!(
                pair[0].group != pair[1].group || !others_left,
                "a group's parts are apart while others have parts: {plan:?}"
            );
        }
        let of_0: Vec<(usize, usize)> = plan
            .iter()
            .filter(|p| p.group == 0)
            .map(|p| (p.start, p.end))
            .collect();
        assert_eq!(of_0, [(0, 2), (2, 4), (4, 5)], "in order");
        assert!(
            plan.contains(&Part {
                group: 4,
                start: 0,
                end: 0
            }),
            "listed"
        );
        let orders: HashSet<Vec<Part>> =
            (0..20).map(|seed| interleave(&lens, 2, seed, 1)).collect();
        assert!(orders.len() > 1, "the seed decides the turns");
    }

    #[test]
    fn repeats_list_every_change_and_the_default_the_net_one() {
        let change = |member: &str, joined| MembershipChange {
            group_id: "g".into(),
            member: Member::User { id: member.into() },
            joined,
        };
        let changes = [change("u", false), change("v", true), change("u", true)];
        let shown = |repeats| -> Vec<(String, bool)> {
            group_changes(&changes, repeats)["g"]
                .iter()
                .map(|(c, removed)| (c.member.id().to_string(), *removed))
                .collect()
        };
        let net = [("u".to_string(), false), ("v".to_string(), false)];
        assert_eq!(shown(false), net);
        let every = [
            ("u".to_string(), true),
            ("v".to_string(), false),
            ("u".to_string(), false),
        ];
        assert_eq!(shown(true), every);
    }
}
