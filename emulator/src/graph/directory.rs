//! The directory: `/groups` and `/users` (lists and single objects), and a
//! group's `members` and `transitiveMembers`, each with `$select`,
//! `$filter`, `$top`, `$count` and nextLink paging as Graph serves them.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::paging::page;
use super::query::{Listing, Query};
use super::schema::{self, Object};
use crate::api::error;
use crate::scenario::GraphUser;
use crate::state::{Service, Shared};

/// Graph's 404 for an object that does not exist.
pub fn not_found(id: &str) -> Response {
    error(
        Service::Graph,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// The page of `items` the query asks for, and how many items pass its
/// filter. Without a filter only the page is turned into objects, so a
/// 100k-member group or tenant stays cheap to serve. `@odata.type` is on
/// each item only where a collection mixes types, as Graph does.
fn select_page<T>(
    query: &Query,
    items: &[T],
    object: impl Fn(&T) -> Option<Object>,
    with_type: bool,
) -> (usize, Vec<Value>) {
    let render = |o: &Object| o.render(query.select.as_deref(), with_type);
    if query.filter.is_none() {
        let shown = items[query.window.range(items.len())]
            .iter()
            .filter_map(&object)
            .map(|o| render(&o))
            .collect();
        return (items.len(), shown);
    }
    let matching: Vec<Object> = items
        .iter()
        .filter_map(object)
        .filter(|o| query.keeps(o))
        .collect();
    let shown = matching[query.window.range(matching.len())]
        .iter()
        .map(render)
        .collect();
    (matching.len(), shown)
}

/// One object, with `@odata.context` as Graph gives it.
fn single(object: &Object, query: &Query, context: &str) -> Response {
    let mut body = object.render(query.select.as_deref(), false);
    if let Value::Object(m) = &mut body {
        m.insert(
            "@odata.context".into(),
            json!(format!(
                "https://graph.microsoft.com/v1.0/$metadata#{context}/$entity"
            )),
        );
    }
    Json(body).into_response()
}

/// `GET /v1.0/groups`
pub async fn groups(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = match Query::parse(Listing::Groups, raw.as_deref(), &headers) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (total, shown) = {
        let d = s.lock();
        select_page(
            &query,
            &d.scenario.groups,
            |g| Some(schema::group(g)),
            false,
        )
    };
    page(&s, "/v1.0/groups", &query, total, shown, "groups")
}

/// `GET /v1.0/groups/{id}`
pub async fn group(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = match Query::parse(Listing::Groups, raw.as_deref(), &headers) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let found = s.lock().scenario.group(&id).map(schema::group);
    match found {
        Some(g) => single(&g, &query, "groups"),
        None => not_found(&id),
    }
}

/// `GET /v1.0/users`
pub async fn users(
    State(s): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = match Query::parse(Listing::Users, raw.as_deref(), &headers) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (total, shown) = {
        let mut d = s.lock();
        let d = &mut *d;
        match lagging(&query, d.faults.lookup_lag) {
            // Replication delay: recently changed users are not seen yet.
            Some(n) => {
                let lag = &mut d.lookup_lag;
                let mut hidden =
                    |u: &GraphUser| query.keeps(&schema::user(u)) && lag.hides(&u.id, n);
                let users = d.scenario.graph_users.iter();
                let seen: Vec<&GraphUser> = users.filter(|u| !hidden(u)).collect();
                select_page(&query, &seen, |u| Some(schema::user(u)), false)
            }
            None => select_page(
                &query,
                &d.scenario.graph_users,
                |u| Some(schema::user(u)),
                false,
            ),
        }
    };
    page(&s, "/v1.0/users", &query, total, shown, "users")
}

/// The `lookup_lag` that applies to a users list: only to one filtered on
/// `id` (a look-up of users by id), and only when set.
fn lagging(query: &Query, lag: Option<u32>) -> Option<u32> {
    let by_id = query
        .filter
        .as_ref()
        .is_some_and(|f| f.properties().iter().any(|p| p.eq_ignore_ascii_case("id")));
    lag.filter(|n| *n > 0 && by_id)
}

/// `GET /v1.0/users/{id or userPrincipalName}`
pub async fn user(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = match Query::parse(Listing::Users, raw.as_deref(), &headers) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let found = {
        let d = s.lock();
        let sc = &d.scenario;
        sc.user(&id)
            .or_else(|| {
                sc.graph_users
                    .iter()
                    .find(|u| u.user_principal_name.eq_ignore_ascii_case(&id))
            })
            .map(schema::user)
    };
    match found {
        Some(u) => single(&u, &query, "users"),
        None => not_found(&id),
    }
}

pub async fn members(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    list_members(s, id, raw, &headers, false)
}

pub async fn transitive_members(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    list_members(s, id, raw, &headers, true)
}

/// A group's members (or, `transitive`, its nested groups' members too).
fn list_members(
    s: Shared,
    id: String,
    raw: Option<String>,
    headers: &HeaderMap,
    transitive: bool,
) -> Response {
    let query = match Query::parse(Listing::Members, raw.as_deref(), headers) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (total, items) = {
        let mut d = s.lock();
        let stamp = (d.membership_changes.len(), d.user_changes.len());
        let d = &mut *d;
        let scenario = &d.scenario;
        let Some(group) = scenario.group(&id) else {
            return not_found(&id);
        };
        let members = d.member_lists.of(scenario, stamp, group, transitive);
        select_page(&query, &members, |m| schema::member(scenario, m), true)
    };
    let relation = if transitive {
        "transitiveMembers"
    } else {
        "members"
    };
    page(
        &s,
        &format!("/v1.0/groups/{id}/{relation}"),
        &query,
        total,
        items,
        "directoryObjects",
    )
}
