//! Procore: `login.procore.com`-style tokens and REST v1.0 company users
//! (active and inactive lists, create with the nested `{"user": …}` body,
//! update/deactivate) and project users, paged with `page`/`per_page`,
//! `Total`, `Per-Page` and an RFC 5988 `Link` header.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::api::{encode_query, get, query_pairs};
use crate::config::{PROCORE_MAX_PER_PAGE, PagingHeaders};
use crate::scenario::{ProcoreUser, ProjectUser};
use crate::state::{Service, Shared};

/// Procore's page size when `per_page` is not given.
const DEFAULT_PER_PAGE: usize = 100;

/// Procore's REST routes, to be nested under `/rest/v1.0`, behind the
/// Procore gate (faults, token, budget, rate-limit headers), which also
/// guards the answer to a path Procore does not have.
pub fn router(shared: Shared) -> Router<Shared> {
    Router::new()
        .route(
            "/companies/{company}/users",
            routing::get(active_users).post(create_user),
        )
        .route(
            "/companies/{company}/users/inactive",
            routing::get(inactive_users),
        )
        .route("/companies/{company}/users/{id}", patch(update_user))
        .route("/projects/{project}/users", routing::get(project_users))
        .route(
            "/projects/{project}/users/{id}/actions/add",
            post(add_to_project),
        )
        .fallback(|| async { errors(StatusCode::NOT_FOUND, json!("Not Found")) })
        .layer(axum::middleware::from_fn_with_state(
            shared,
            crate::api::procore_gate,
        ))
}

fn errors(status: StatusCode, body: Value) -> Response {
    (status, Json(json!({ "errors": body }))).into_response()
}

/// `POST /oauth/token`: JSON, form or multipart body.
pub async fn token(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let raw_content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let content_type = raw_content_type.to_ascii_lowercase();
    let fields: HashMap<String, String> = if content_type.starts_with("application/json") {
        match serde_json::from_str::<HashMap<String, Value>>(&body) {
            Ok(map) => map
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            Err(_) => return errors(StatusCode::BAD_REQUEST, json!("invalid JSON body")),
        }
    } else if content_type.starts_with("multipart/form-data") {
        // The boundary is case-sensitive: read it from the header as sent.
        match raw_content_type.split("boundary=").nth(1) {
            Some(boundary) => multipart_fields(&body, boundary.trim_matches('"')),
            None => {
                return errors(
                    StatusCode::BAD_REQUEST,
                    json!("multipart body without a boundary"),
                );
            }
        }
    } else {
        query_pairs(Some(&body)).into_iter().collect()
    };
    let invalid_client = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "invalid_client",
                "error_description": "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."
            })),
        )
            .into_response()
    };
    if fields.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "unsupported_grant_type", "error_description": "The authorization grant type is not supported by the authorization server." })),
        )
            .into_response();
    }
    let creds = &s.config.credentials;
    if fields.get("client_id") != Some(&creds.procore_client_id)
        || fields.get("client_secret") != Some(&creds.procore_client_secret)
    {
        return invalid_client();
    }
    let (token, lifetime) = s.issue_token(Service::Procore);
    Json(json!({ "access_token": token, "token_type": "bearer", "expires_in": lifetime, "created_at": chrono::Utc::now().timestamp() })).into_response()
}

fn multipart_fields(body: &str, boundary: &str) -> HashMap<String, String> {
    let delimiter = format!("--{boundary}");
    body.split(delimiter.as_str())
        .filter_map(|part| {
            let (head, value) = part
                .split_once("\r\n\r\n")
                .or_else(|| part.split_once("\n\n"))?;
            let name = head.split("name=\"").nth(1)?.split('"').next()?;
            Some((
                name.to_string(),
                value
                    .trim_end_matches(['\r', '\n'])
                    .trim_end_matches("--")
                    .to_string(),
            ))
        })
        .collect()
}

/// Checks the company in the path and the `Procore-Company-Id` header.
fn company_check(s: &Shared, headers: &HeaderMap, company: Option<&str>) -> Result<(), Response> {
    let expected = s.lock().scenario.company_id.to_string();
    match headers
        .get("procore-company-id")
        .and_then(|v| v.to_str().ok())
    {
        None => {
            return Err(errors(
                StatusCode::BAD_REQUEST,
                json!("Procore-Company-Id header is required"),
            ));
        }
        Some(h) if h.trim() != expected => {
            return Err(errors(
                StatusCode::FORBIDDEN,
                json!(format!("You do not have access to company {h}")),
            ));
        }
        Some(_) => {}
    }
    if let Some(c) = company
        && c != expected
    {
        return Err(errors(
            StatusCode::NOT_FOUND,
            json!(format!("Company {c} not found")),
        ));
    }
    Ok(())
}

pub fn user_json(u: &ProcoreUser) -> Value {
    json!({
        "id": u.id,
        "login": u.login,
        "email_address": u.email_address,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "name": format!("{} {}", u.first_name, u.last_name).trim().to_string(),
        "is_active": u.is_active,
        "is_employee": u.is_employee,
        "job_title": u.job_title,
        "business_phone": null,
        "mobile_phone": null,
        "employee_id": null,
        "vendor": null,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

/// A bare JSON array page with `Total`, `Per-Page` and an RFC 8288 `Link`
/// (as the configured [`PagingHeaders`] allow). Links follow Procore's guide:
/// `first` and `prev` except on page 1, `next` and `last` except on the last
/// page, so a single page has no `Link` at all.
/// One page of `items`, rendering only the items on it (a 100k-user company
/// is served a page at a time without turning every user into JSON).
fn paged<T>(
    s: &Shared,
    path: &str,
    pairs: &[(String, String)],
    items: &[T],
    render: impl Fn(&T) -> Value,
) -> Response {
    let max = s.config.procore_max_per_page.clamp(1, PROCORE_MAX_PER_PAGE);
    let per_page = get(pairs, "per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, max);
    let page = get(pairs, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = (start + per_page).min(total);
    let link = |p: usize| {
        let mut q: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .cloned()
            .collect();
        q.push(("page".into(), p.to_string()));
        q.push(("per_page".into(), per_page.to_string()));
        format!("<{}{path}?{}>", s.base_url, encode_query(&q))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link(1)));
        links.push(format!("{}; rel=\"prev\"", link((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", link(page + 1)));
        links.push(format!("{}; rel=\"last\"", link(last)));
    }
    let separate = s.config.procore_paging == PagingHeaders::SeparateLinkFields;
    if separate {
        // `next` goes last, so only a client that reads every field finds it.
        links.sort_by_key(|l| l.ends_with("rel=\"next\""));
    }
    let page_items = items[start..end].iter().map(render).collect();
    let mut response = Json(Value::Array(page_items)).into_response();
    let (with_total, with_per_page, with_link) = match s.config.procore_paging {
        PagingHeaders::All | PagingHeaders::SeparateLinkFields => (true, true, true),
        PagingHeaders::NoLink => (true, true, false),
        PagingHeaders::TotalOnly => (true, false, false),
        PagingHeaders::None => (false, false, false),
    };
    let h = response.headers_mut();
    for (name, value, wanted) in [
        ("total", total.to_string(), with_total),
        ("per-page", per_page.to_string(), with_per_page),
        (
            "link",
            links.join(", "),
            with_link && !separate && !links.is_empty(),
        ),
    ] {
        if let (true, Ok(v)) = (wanted, HeaderValue::from_str(&value)) {
            h.insert(name, v);
        }
    }
    if separate {
        for l in &links {
            if let Ok(v) = HeaderValue::from_str(l) {
                h.append("link", v);
            }
        }
    }
    response
}

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
    let search = get(&pairs, "filters[search]")
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let d = s.lock();
    let users: Vec<&ProcoreUser> = d
        .scenario
        .procore_users
        .iter()
        .filter(|u| u.is_active == active)
        .filter(|u| {
            // Procore: first name, last name, email address, job title
            // (keywords and company name are not modelled); not the login.
            search.as_ref().is_none_or(|q| {
                [
                    u.first_name.as_str(),
                    u.last_name.as_str(),
                    u.email_address.as_str(),
                    u.job_title.as_deref().unwrap_or(""),
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(q.as_str()))
                    || format!("{} {}", u.first_name, u.last_name)
                        .to_lowercase()
                        .contains(q.as_str())
            })
        })
        .collect();
    paged(&s, &path, &pairs, &users, |u| user_json(u))
}

pub async fn active_users(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(company): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/rest/v1.0/companies/{company}/users");
    list(s, headers, company, q, true, path)
}

pub async fn inactive_users(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(company): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let path = format!("/rest/v1.0/companies/{company}/users/inactive");
    list(s, headers, company, q, false, path)
}

fn text(v: &Value, name: &str) -> Option<String> {
    v.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn nested_user(body: &str) -> Result<Value, Response> {
    let parsed: Value = serde_json::from_str(body)
        .map_err(|_| errors(StatusCode::BAD_REQUEST, json!("body is not valid JSON")))?;
    match parsed.get("user") {
        Some(u) if u.is_object() => Ok(u.clone()),
        _ => Err(errors(
            StatusCode::BAD_REQUEST,
            json!("param is missing or the value is empty: user"),
        )),
    }
}

/// `POST /rest/v1.0/companies/{id}/users`
pub async fn create_user(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(company): Path<String>,
    body: String,
) -> Response {
    if let Err(r) = company_check(&s, &headers, Some(&company)) {
        return r;
    }
    let user = match nested_user(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let mut missing = serde_json::Map::new();
    for field in ["last_name", "email_address"] {
        if text(&user, field).is_none() {
            missing.insert(field.into(), json!(["can't be blank"]));
        }
    }
    if !missing.is_empty() {
        return errors(StatusCode::UNPROCESSABLE_ENTITY, Value::Object(missing));
    }
    let email = text(&user, "email_address").unwrap_or_default();
    let login = text(&user, "login").unwrap_or_else(|| email.clone());
    let conflict =
        StatusCode::from_u16(s.config.conflict_status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let mut d = s.lock();
    let taken = |field: &str, value: &str, d: &crate::state::Data| {
        d.scenario.procore_users.iter().any(|u| match field {
            "login" => {
                u.login.trim().eq_ignore_ascii_case(value)
                    || u.email_address.trim().eq_ignore_ascii_case(value)
            }
            _ => {
                u.email_address.trim().eq_ignore_ascii_case(value)
                    || u.login.trim().eq_ignore_ascii_case(value)
            }
        })
    };
    // Procore logins are global: a user of another company can hold one.
    let elsewhere = |value: &str| {
        d.scenario
            .taken_elsewhere
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(value))
    };
    if elsewhere(&login) {
        return errors(conflict, json!({ "login": ["has already been taken"] }));
    }
    if elsewhere(&email) {
        return errors(
            conflict,
            json!({ "email_address": ["has already been taken"] }),
        );
    }
    if taken("login", &login, &d) {
        return errors(conflict, json!({ "login": ["has already been taken"] }));
    }
    if taken("email_address", &email, &d) {
        return errors(
            conflict,
            json!({ "email_address": ["has already been taken"] }),
        );
    }
    let id = d.next_procore_id;
    d.next_procore_id += 1;
    let now = chrono::Utc::now().to_rfc3339();
    let created = ProcoreUser {
        id,
        login,
        email_address: email,
        first_name: text(&user, "first_name").unwrap_or_default(),
        last_name: text(&user, "last_name").unwrap_or_default(),
        is_active: user
            .get("is_active")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        is_employee: user
            .get("is_employee")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        job_title: text(&user, "job_title"),
        created_by_api: true,
        created_at: now.clone(),
        updated_at: now,
    };
    let body = user_json(&created);
    d.scenario.procore_users.push(created);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `PATCH /rest/v1.0/companies/{id}/users/{user_id}`: update; `is_active: false` deactivates.
pub async fn update_user(
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
    let mut d = s.lock();
    let Some(u) = d
        .scenario
        .procore_users
        .iter_mut()
        .find(|u| u.id == user_id)
    else {
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
    u.updated_at = chrono::Utc::now().to_rfc3339();
    Json(user_json(u)).into_response()
}

/// `GET /rest/v1.0/projects/{id}/users`
pub async fn project_users(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(project): Path<u64>,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = company_check(&s, &headers, None) {
        return r;
    }
    let items: Vec<Value> = {
        let d = s.lock();
        if !d.scenario.project_ids.contains(&project) {
            return errors(
                StatusCode::NOT_FOUND,
                json!(format!("Project {project} not found")),
            );
        }
        d.scenario
            .project_users
            .iter()
            .filter(|p| p.project_id == project)
            .filter_map(|p| {
                d.scenario
                    .procore_users
                    .iter()
                    .find(|u| u.id == p.user_id)
                    .map(|u| (u, p))
            })
            .map(|(u, p)| {
                let mut v = user_json(u);
                v["permission_template"] =
                    json!(p.permission_template_id.map(|id| json!({ "id": id })));
                v
            })
            .collect()
    };
    let pairs = query_pairs(q.as_deref());
    paged(
        &s,
        &format!("/rest/v1.0/projects/{project}/users"),
        &pairs,
        &items,
        Value::clone,
    )
}

/// `POST /rest/v1.0/projects/{id}/users/{user_id}/actions/add`
pub async fn add_to_project(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((project, user_id)): Path<(u64, u64)>,
    body: String,
) -> Response {
    if let Err(r) = company_check(&s, &headers, None) {
        return r;
    }
    // The body and its `user` are optional: only a permission template may be given.
    let template = if body.trim().is_empty() {
        None
    } else {
        let Ok(parsed) = serde_json::from_str::<Value>(&body) else {
            return errors(StatusCode::BAD_REQUEST, json!("body is not valid JSON"));
        };
        parsed
            .pointer("/user/permission_template_id")
            .filter(|v| !v.is_null())
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
    };
    let mut d = s.lock();
    if !d.scenario.project_ids.contains(&project) {
        return errors(
            StatusCode::NOT_FOUND,
            json!(format!("Project {project} not found")),
        );
    }
    let Some(user) = d
        .scenario
        .procore_users
        .iter()
        .find(|u| u.id == user_id)
        .cloned()
    else {
        return errors(
            StatusCode::NOT_FOUND,
            json!(format!("User {user_id} not found")),
        );
    };
    if let Some(t) = template
        && !d.scenario.permission_template_ids.contains(&t)
    {
        return errors(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "permission_template_id": ["is invalid"] }),
        );
    }
    if !d
        .scenario
        .project_users
        .iter()
        .any(|p| p.project_id == project && p.user_id == user_id)
    {
        d.scenario.project_users.push(ProjectUser {
            project_id: project,
            user_id,
            permission_template_id: template,
        });
    }
    let mut v = user_json(&user);
    v["permission_template"] = json!(template.map(|id| json!({ "id": id })));
    Json(v).into_response()
}
