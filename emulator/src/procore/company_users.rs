//! The company directory: active and inactive users, create with the
//! nested `{"user": …}` body, update (`is_active: false` deactivates) and
//! reactivation.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::paging::paged;
use super::{UserJson, company_check, errors, nested_user, text, user_fields, user_json};
use crate::api::{get, query_pairs};
use crate::scenario::ProcoreUser;
use crate::state::Shared;

fn list(
    s: Shared,
    headers: HeaderMap,
    company: String,
    query: Option<String>,
    active: bool,
    path: String,
) -> Response {
    if let Err(r) = company_check(&s, &headers, Some(&company)) {
        return r;
    }
    let pairs = query_pairs(query.as_deref());
    // Procore documents `filters[search]` on the active list only; the
    // inactive list takes paging and sort, so a search there is ignored
    // and a client that counts on it reads the whole list, as it would.
    let search = get(&pairs, "filters[search]")
        .filter(|_| active)
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let mut d = s.lock();
    let (list, users) = d.procore_list(active);
    let found: Vec<usize>;
    let list = match &search {
        None => list,
        Some(q) => {
            found = list
                .iter()
                .copied()
                .filter(|&i| matches_search(&users[i], q))
                .collect();
            &found
        }
    };
    paged(&s, &path, &pairs, list, |&i| UserJson::of(&users[i]))
}

/// Procore's `filters[search]`: first name, last name, email address, job
/// title (keywords and company name are not modelled); not the login.
/// `query` is lower case.
fn matches_search(u: &ProcoreUser, query: &str) -> bool {
    let has = |field: &str| field.to_lowercase().contains(query);
    [
        u.first_name.as_str(),
        u.last_name.as_str(),
        u.email_address.as_str(),
        u.job_title.as_deref().unwrap_or(""),
    ]
    .into_iter()
    .any(has)
        || has(&format!("{} {}", u.first_name, u.last_name))
}

pub async fn active(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(company): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/rest/v1.0/companies/{company}/users");
    list(s, headers, company, q, true, path)
}

pub async fn inactive(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(company): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/rest/v1.0/companies/{company}/users/inactive");
    list(s, headers, company, q, false, path)
}

/// The fields of a user to create, checked against Procore's documented
/// table ([`user_fields`]): a missing required field or a value of another
/// type is a 400, as Procore's reference lists. Fields it does not list are
/// ignored; a new user's login is its email address.
fn new_user(body: &str) -> Result<(String, Value), Response> {
    let user = nested_user(body)?;
    let problems = user_fields::problems(&user);
    if !problems.is_empty() {
        return Err(errors(StatusCode::BAD_REQUEST, Value::Object(problems)));
    }
    let email = text(&user, "email_address").unwrap_or_default();
    Ok((email, user))
}

/// `POST /rest/v1.0/companies/{company_id}/users`: 201 with the user, or
/// the configured conflict status when the login or the email address is
/// taken (logins are global: a user of another company may hold one).
pub async fn create(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(company): Path<String>,
    body: String,
) -> Response {
    if let Err(r) = company_check(&s, &headers, Some(&company)) {
        return r;
    }
    let (email, user) = match new_user(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let conflict =
        StatusCode::from_u16(s.config.conflict_status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let mut d = s.lock();
    // The email address is the new user's login: taken when it is any
    // user's login or email address.
    if d.procore_index.is_taken(&email) {
        return errors(conflict, json!({ "login": ["has already been taken"] }));
    }
    let id = d.next_procore_id;
    d.next_procore_id += 1;
    let now = procore_now();
    let flag =
        |name: &str, default: bool| user.get(name).and_then(Value::as_bool).unwrap_or(default);
    let created = ProcoreUser {
        id,
        login: email.clone(),
        email_address: email,
        first_name: text(&user, "first_name").unwrap_or_default(),
        last_name: text(&user, "last_name").unwrap_or_default(),
        is_active: flag("is_active", true),
        is_employee: flag("is_employee", false),
        job_title: text(&user, "job_title"),
        created_by_api: true,
        created_at: now.clone(),
        updated_at: now,
    };
    let body = user_json(&created);
    d.add_procore_user(created);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `PATCH /rest/v1.0/companies/{company_id}/users/{id}` with
/// `{"user": {…}}`: updates names and `is_active`; `is_active: false`
/// deactivates (the user moves to the inactive list and keeps its project
/// memberships, as in Procore). 200 with the user. The route reaches
/// active users only: Procore keeps inactive ones under `users/inactive`
/// (listed, and reactivated, there), so an inactive user is a 404 here,
/// as an unknown one is; a deactivation sent twice gets one on the second
/// (a 422 with `refuse_repeats`).
pub async fn update(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((company, user_id)): Path<(String, u64)>,
    body: String,
) -> Response {
    if let Err(r) = company_check(&s, &headers, Some(&company)) {
        return r;
    }
    let changes = match nested_user(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    // A field of another type (`"is_active": "false"`) is refused, as on
    // create, rather than ignored.
    let problems = user_fields::type_problems(&changes);
    if !problems.is_empty() {
        return errors(StatusCode::BAD_REQUEST, Value::Object(problems));
    }
    let mut d = s.lock();
    let refuse_repeats = d.faults.refuse_repeats;
    let Some(u) = d.procore_user_mut(user_id).filter(|u| u.is_active) else {
        if refuse_repeats && d.procore_user(user_id).is_some() {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "is_active": [format!("user {user_id} is already inactive")] }),
            );
        }
        return errors(
            StatusCode::NOT_FOUND,
            json!(format!("User {user_id} not found")),
        );
    };
    if let Some(active) = changes.get("is_active").and_then(Value::as_bool) {
        u.is_active = active;
    }
    for (field, slot) in [
        ("first_name", &mut u.first_name),
        ("last_name", &mut u.last_name),
    ] {
        if let Some(v) = text(&changes, field) {
            *slot = v;
        }
    }
    u.updated_at = procore_now();
    Json(user_json(u)).into_response()
}

/// `PATCH /rest/v1.0/companies/{company_id}/users/inactive/{id}` (no
/// body): Procore's "Reactivate company user". 200 with the user; a user
/// who is not on the inactive list (unknown, or active) is a 404, or a 422
/// for an active user with `refuse_repeats`.
pub async fn reactivate(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((company, user_id)): Path<(String, u64)>,
) -> Response {
    if let Err(r) = company_check(&s, &headers, Some(&company)) {
        return r;
    }
    let mut d = s.lock();
    let refuse_repeats = d.faults.refuse_repeats;
    let Some(u) = d.procore_user_mut(user_id).filter(|u| !u.is_active) else {
        if refuse_repeats && d.procore_user(user_id).is_some() {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "is_active": [format!("user {user_id} is already active")] }),
            );
        }
        return errors(
            StatusCode::NOT_FOUND,
            json!(format!("Inactive user {user_id} not found")),
        );
    };
    u.is_active = true;
    u.updated_at = procore_now();
    Json(user_json(u)).into_response()
}

/// Now, as Procore writes its timestamps: UTC with a `Z`, to the second
/// (`2025-06-01T12:00:00Z`), not chrono's default `+00:00` with nanoseconds.
pub(crate) fn procore_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
