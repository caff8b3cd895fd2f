//! The admin view: the state as JSON for tests, a readable page for people,
//! faults set at run time, and changes to the Entra tenant between runs (a
//! member leaves or joins a group, an account is disabled, a user deleted,
//! restored or created; see [`crate::tenant_changes`]).
//! No auth: it listens on loopback only, and
//! answers only requests addressed to it (see [`crate::addressing`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use html_escape::encode_text as esc;
use serde::Deserialize;

use crate::faults::Faults;
use crate::state::Shared;
use crate::tenant_changes::{NewUser, UserError};

pub async fn state(State(s): State<Shared>) -> Response {
    Json(crate::snapshot_of(&s)).into_response()
}

pub async fn set_faults(State(s): State<Shared>, Json(faults): Json<Faults>) -> Response {
    if let Some(problem) = faults.problem() {
        return (StatusCode::UNPROCESSABLE_ENTITY, problem).into_response();
    }
    s.set_faults(faults);
    StatusCode::NO_CONTENT.into_response()
}

/// The faults in force, as JSON (what `PUT /_admin/faults` takes).
pub async fn faults(State(s): State<Shared>) -> Response {
    Json(s.lock().faults.clone()).into_response()
}

pub async fn page(State(s): State<Shared>) -> Html<String> {
    let snap = crate::snapshot_of(&s);
    let sc = &snap.scenario;
    let mut out = String::from(
        "<!doctype html><meta charset=utf-8><title>Sluice emulators</title><style>body{font-family:sans-serif;margin:20px}td,th{border:1px solid #ccc;padding:2px 6px}table{border-collapse:collapse;margin-bottom:16px}th{background:#1C6EA4;color:#fff}</style>",
    );
    out.push_str(&format!(
        "<h1>Graph and Procore emulators</h1><p>{} Graph users, {} groups, {} Procore users ({} created through the API), {} mails, {} requests.</p>",
        sc.graph_users.len(),
        sc.groups.len(),
        sc.procore_users.len(),
        snap.created_users().len(),
        snap.mails.len(),
        snap.requests.len()
    ));
    out.push_str("<h2>Groups</h2><table><tr><th>Name</th><th>Members</th></tr>");
    for g in &sc.groups {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&g.display_name),
            g.members.len()
        ));
    }
    out.push_str("</table><h2>Procore users</h2><table><tr><th>Id</th><th>Login</th><th>Email</th><th>Name</th><th>Active</th><th>Created by API</th></tr>");
    for u in &sc.procore_users {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            u.id,
            esc(&u.login),
            esc(&u.email_address),
            esc(&u.first_name),
            esc(&u.last_name),
            u.is_active,
            u.created_by_api
        ));
    }
    out.push_str("</table><h2>Mails</h2><table><tr><th>From</th><th>To</th><th>Subject</th></tr>");
    for m in &snap.mails {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.from),
            esc(&m.to.join(", ")),
            esc(&m.subject)
        ));
    }
    out.push_str("</table><h2>Last requests</h2><table><tr><th>ms</th><th>Method</th><th>Path</th><th>Status</th><th>Injected fault</th></tr>");
    for r in snap.requests.iter().rev().take(200) {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.at_ms,
            esc(&r.method),
            esc(&r.path),
            r.status,
            r.fault.unwrap_or("")
        ));
    }
    out.push_str("</table>");
    Html(out)
}

fn done(found: bool) -> Response {
    if found {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// `POST /_admin/groups/{group}/members/{user}`: the user joins the group.
pub async fn add_member(
    State(s): State<Shared>,
    Path((group, user)): Path<(String, String)>,
) -> Response {
    done(s.lock().add_member(&group, &user))
}

/// `DELETE /_admin/groups/{group}/members/{member}`: the member leaves it.
pub async fn remove_member(
    State(s): State<Shared>,
    Path((group, member)): Path<(String, String)>,
) -> Response {
    done(s.lock().remove_member(&group, &member))
}

/// What `PATCH /_admin/users/{id}` may change: either or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserChange {
    #[serde(default)]
    pub account_enabled: Option<bool>,
    /// The new mail; an empty one clears it.
    #[serde(default)]
    pub mail: Option<String>,
}

/// `PATCH /_admin/users/{id}` with `{"accountEnabled": false}` disables the
/// Entra account (`true` enables it again); with `{"mail": "…"}` sets the
/// user's mail (`""` clears it).
pub async fn change_user(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Json(change): Json<UserChange>,
) -> Response {
    if change.account_enabled.is_none() && change.mail.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "give `accountEnabled`, `mail` or both",
        )
            .into_response();
    }
    let mut data = s.lock();
    let mut found = true;
    if let Some(enabled) = change.account_enabled {
        found &= data.set_account_enabled(&id, enabled);
    }
    if let Some(mail) = &change.mail {
        let mail = Some(mail.trim()).filter(|m| !m.is_empty());
        found &= data.set_mail(&id, mail);
    }
    done(found)
}

/// `DELETE /_admin/users/{id}`: the Entra user is deleted, leaves every
/// group and waits 30 days in deleted items.
pub async fn delete_user(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    done(s.lock().delete_user(&id))
}

/// The status and plain-text reason of a refused create or restore.
fn refused(e: &UserError) -> Response {
    let status = match e {
        UserError::NotDeleted(_) | UserError::Purged(_) => StatusCode::NOT_FOUND,
        UserError::IdTaken(_) | UserError::UpnTaken(..) => StatusCode::CONFLICT,
        UserError::NoSuchGroup(_) | UserError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    (status, e.to_string()).into_response()
}

/// `POST /_admin/users/{id}/restore`: a deleted user comes back from
/// deleted items with its group memberships; 200 with
/// `{"id": …, "groups": [the groups it is a member of again]}`.
pub async fn restore_user(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.lock().restore_user(&id) {
        Ok(groups) => Json(serde_json::json!({ "id": id, "groups": groups })).into_response(),
        Err(e) => refused(&e),
    }
}

/// `POST /_admin/users` with a [`NewUser`] (`displayName` and
/// `userPrincipalName` required; `id`, `givenName`, `surname`, `mail`,
/// `jobTitle`, `accountEnabled` (default true) and `groups` optional): a new
/// hire; 201 with `{"id": …}`.
pub async fn create_user(State(s): State<Shared>, Json(user): Json<NewUser>) -> Response {
    match s.lock().create_user(user) {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response(),
        Err(e) => refused(&e),
    }
}

/// The emulator's own work so far: requests answered and the time spent
/// answering them, so a benchmark can tell the emulator's cost from its
/// client's; and the Procore users created through the API, so it can check
/// the outcome without fetching the whole state (gigabytes of JSON at a
/// million users).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Stats {
    pub requests: u64,
    pub service_time_ms: f64,
    pub created_users: u64,
}

pub fn stats_of(s: &Shared) -> Stats {
    let d = s.lock();
    let created = d.scenario.created_users().count();
    Stats {
        requests: d.served,
        service_time_ms: d.service_time.as_secs_f64() * 1000.0,
        created_users: u64::try_from(created).unwrap_or(u64::MAX),
    }
}

/// `GET /_admin/stats`
pub async fn stats(State(s): State<Shared>) -> Response {
    Json(stats_of(&s)).into_response()
}

/// `POST /_admin/delta/expire`: every Graph delta token issued so far is
/// answered 410 Gone from now on, as when Graph's seven days have passed.
pub async fn expire_delta_tokens(State(s): State<Shared>) -> Response {
    s.lock().delta_epoch += 1;
    StatusCode::NO_CONTENT.into_response()
}
