//! Procore: `login.procore.com`-style tokens and REST v1.0, served under
//! `/rest/v1.0`: company users (active and inactive lists, create with the
//! nested `{"user": …}` body checked against Procore's documented fields,
//! update — `is_active: false` deactivates — and reactivation) and project
//! users (list, add, remove), paged with `page`/`per_page`, `Total`,
//! `Per-Page` and an RFC 8288 `Link` header. Every request must carry
//! `Procore-Company-Id`; errors are `{"errors": …}`.

mod company_users;
pub(crate) use company_users::procore_now;
mod paging;
mod project_users;
mod token;
pub mod user_fields;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use crate::scenario::ProcoreUser;
use crate::state::Shared;

pub use token::token;

/// Procore's REST routes, to be nested under `/rest/v1.0`, behind the
/// Procore gate (faults, token, budget, rate-limit headers), which also
/// guards the answer to a path Procore does not have.
pub fn router(shared: Shared) -> Router<Shared> {
    Router::new()
        .route(
            "/companies/{company}/users",
            get(company_users::active).post(company_users::create),
        )
        .route(
            "/companies/{company}/users/inactive",
            get(company_users::inactive),
        )
        .route(
            "/companies/{company}/users/inactive/{id}",
            patch(company_users::reactivate),
        )
        .route(
            "/companies/{company}/users/{id}",
            patch(company_users::update),
        )
        .route("/projects/{project}/users", get(project_users::list))
        .route("/projects/{project}/users/{id}", get(project_users::show))
        .route(
            "/projects/{project}/users/{id}/actions/add",
            post(project_users::add),
        )
        .route(
            "/projects/{project}/users/{id}/actions/remove",
            delete(project_users::remove),
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

/// A company user as Procore's list and show answers give it (the fields
/// the emulator models), written straight from the user: a page of a
/// million-user company is rendered without a JSON tree per user.
#[derive(Serialize)]
pub struct UserJson<'a> {
    id: u64,
    login: &'a str,
    email_address: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    name: String,
    is_active: bool,
    is_employee: bool,
    job_title: Option<&'a str>,
    business_phone: Option<&'a str>,
    mobile_phone: Option<&'a str>,
    employee_id: Option<&'a str>,
    vendor: Option<Value>,
    created_at: &'a str,
    updated_at: &'a str,
}

impl<'a> UserJson<'a> {
    pub fn of(u: &'a ProcoreUser) -> UserJson<'a> {
        UserJson {
            id: u.id,
            login: &u.login,
            email_address: &u.email_address,
            first_name: &u.first_name,
            last_name: &u.last_name,
            name: format!("{} {}", u.first_name, u.last_name)
                .trim()
                .to_string(),
            is_active: u.is_active,
            is_employee: u.is_employee,
            job_title: u.job_title.as_deref(),
            business_phone: None,
            mobile_phone: None,
            employee_id: None,
            vendor: None,
            created_at: &u.created_at,
            updated_at: &u.updated_at,
        }
    }
}

pub fn user_json(u: &ProcoreUser) -> Value {
    serde_json::to_value(UserJson::of(u)).unwrap_or(Value::Null)
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
