//! The project directory: a project's users, adding a company user to a
//! project (with an optional permission template) and removing one.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::paging::paged;
use super::{company_check, errors, user_json};
use crate::api::query_pairs;
use crate::scenario::ProjectUser;
use crate::state::{Data, Shared};

/// A user of a project as Procore lists it: the company user with its
/// permission template.
fn project_user_json(d: &Data, p: &ProjectUser) -> Option<Value> {
    let user = d.procore_user(p.user_id)?;
    let mut v = user_json(user);
    v["permission_template"] = json!(p.permission_template_id.map(|id| json!({ "id": id })));
    Some(v)
}

fn unknown_project(d: &Data, project: u64) -> Option<Response> {
    (!d.scenario.project_ids.contains(&project)).then(|| {
        errors(
            StatusCode::NOT_FOUND,
            json!(format!("Project {project} not found")),
        )
    })
}

/// `GET /rest/v1.0/projects/{project_id}/users`
pub async fn list(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(project): Path<u64>,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = company_check(&s, &headers, None) {
        return r;
    }
    let d = s.lock();
    if let Some(r) = unknown_project(&d, project) {
        return r;
    }
    let members: Vec<&ProjectUser> = d
        .scenario
        .project_users
        .iter()
        .filter(|p| p.project_id == project && d.procore_user(p.user_id).is_some())
        .collect();
    let pairs = query_pairs(q.as_deref());
    paged(
        &s,
        &format!("/rest/v1.0/projects/{project}/users"),
        &pairs,
        &members,
        |p| project_user_json(&d, p).unwrap_or(Value::Null),
    )
}

/// The permission template of an `actions/add` body, which is optional, as
/// its `user` is. Procore documents it as an integer; a numeric string is
/// taken as Rails takes it, anything else is a 400 (never quietly dropped,
/// which would hide a mistyped template id).
fn template_of(body: &str) -> Result<Option<u64>, Response> {
    if body.trim().is_empty() {
        return Ok(None);
    }
    let Ok(parsed) = serde_json::from_str::<Value>(body) else {
        return Err(errors(
            StatusCode::BAD_REQUEST,
            json!("body is not valid JSON"),
        ));
    };
    let Some(value) = parsed
        .pointer("/user/permission_template_id")
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    match value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
    {
        Some(template) => Ok(Some(template)),
        None => Err(errors(
            StatusCode::BAD_REQUEST,
            json!({ "permission_template_id": ["must be an integer"] }),
        )),
    }
}

/// `GET /rest/v1.0/projects/{project_id}/users/{id}` (Procore's "Show
/// project user"): 200 with the project user, 404 for someone not on the
/// project.
pub async fn show(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((project, user_id)): Path<(u64, u64)>,
) -> Response {
    if let Err(r) = company_check(&s, &headers, None) {
        return r;
    }
    let d = s.lock();
    if let Some(r) = unknown_project(&d, project) {
        return r;
    }
    let member = d
        .scenario
        .project_users
        .iter()
        .find(|p| p.project_id == project && p.user_id == user_id)
        .and_then(|p| project_user_json(&d, p));
    match member {
        Some(user) => Json(user).into_response(),
        None => not_on_project(project, user_id),
    }
}

fn not_on_project(project: u64, user_id: u64) -> Response {
    errors(
        StatusCode::NOT_FOUND,
        json!(format!("User {user_id} is not on project {project}")),
    )
}

/// `POST /rest/v1.0/projects/{project_id}/users/{id}/actions/add`: 201
/// with the project user (Procore's documented status); adding someone
/// already on the project changes nothing (a 422 with `refuse_repeats`).
pub async fn add(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((project, user_id)): Path<(u64, u64)>,
    body: String,
) -> Response {
    if let Err(r) = company_check(&s, &headers, None) {
        return r;
    }
    let template = match template_of(&body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut d = s.lock();
    if let Some(r) = unknown_project(&d, project) {
        return r;
    }
    if d.procore_user(user_id).is_none() {
        return errors(
            StatusCode::NOT_FOUND,
            json!(format!("User {user_id} not found")),
        );
    }
    if let Some(t) = template
        && !d.scenario.permission_template_ids.contains(&t)
    {
        return errors(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "permission_template_id": ["is invalid"] }),
        );
    }
    let on_project = |p: &ProjectUser| p.project_id == project && p.user_id == user_id;
    if d.faults.refuse_repeats && d.scenario.project_users.iter().any(on_project) {
        return errors(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "base": [format!("user {user_id} is already in the project directory")] }),
        );
    }
    let membership = ProjectUser {
        project_id: project,
        user_id,
        permission_template_id: template,
    };
    let stored = d.add_to_project(membership);
    let body = project_user_json(&d, &stored);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `DELETE /rest/v1.0/projects/{project_id}/users/{id}/actions/remove`:
/// 204 with no body; someone not on the project is a 404. The user stays
/// in the company directory.
pub async fn remove(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((project, user_id)): Path<(u64, u64)>,
) -> Response {
    if let Err(r) = company_check(&s, &headers, None) {
        return r;
    }
    let mut d = s.lock();
    if let Some(r) = unknown_project(&d, project) {
        return r;
    }
    if !d.remove_from_project(project, user_id) {
        return not_on_project(project, user_id);
    }
    StatusCode::NO_CONTENT.into_response()
}
