//! The `procore-create-user` step: one Procore company user per call.
//!
//! Input `{"user": <person>, "company_id", "project_id"?,
//! "permission_template_id"?}`. Sends `POST companies/{id}/users` with the
//! nested `{"user": {…}}` body Procore requires. The POST is marked
//! idempotent: Procore refuses a second user with the same login, so a
//! retried create can never make two. A 409/422 "already taken" is a
//! conflict, not a crash. When a project and a permission template are
//! configured, the new user is added to the project. In a dry run nothing is
//! sent and the result says what would have been done.
//!
//! Output `{"key", "display_name", "status": "created" | "conflict" |
//! "failed" | "would_create", "procore_id"?, "reason"?, "project"?}`. A
//! service error that a later run could fix (5xx, throttled, unreachable) is
//! returned as a retryable step error instead, so the item is recorded as
//! failed by the host.

use sluice_guest::bindings::sluice::flow::connection::Method;
use sluice_guest::http::{Call, Failure, service_message, status_error};
use sluice_guest::{StepError, Value, bad_input, json};

/// `first_name` and `last_name` for Procore, which requires a last name.
pub fn names(person: &Value) -> (String, String) {
    let text = |name: &str| {
        person
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let (given, surname, display) = (text("givenName"), text("surname"), text("displayName"));
    let key = text("key");
    let words: Vec<&str> = display.split_whitespace().collect();
    let last = if !surname.is_empty() {
        surname
    } else if let Some(last) = words.last().filter(|_| words.len() > 1) {
        last.to_string()
    } else if !display.is_empty() {
        display.clone()
    } else {
        key.split('@').next().unwrap_or(&key).to_string()
    };
    let first = if !given.is_empty() {
        given
    } else if words.len() > 1 {
        words[..words.len() - 1].join(" ")
    } else {
        String::new()
    };
    (first, last)
}

pub fn body(person: &Value, key: &str) -> Value {
    let (first, last) = names(person);
    json!({ "user": { "first_name": first, "last_name": last, "email_address": key, "login": key, "is_employee": true } })
}

/// Whether a 409/422 error body says the login or email is already in use.
pub fn is_taken(status: u16, message: &str) -> bool {
    let m = message.to_lowercase();
    status == 409
        || (status == 422
            && ["taken", "already", "exists", "duplicate", "in use"]
                .iter()
                .any(|w| m.contains(w)))
}

fn optional_id(input: &Value, name: &str) -> Option<String> {
    match input.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn run(input: Value) -> Result<Value, StepError> {
    let person = input
        .get("user")
        .ok_or_else(|| bad_input("`user` is required"))?;
    let company =
        optional_id(&input, "company_id").ok_or_else(|| bad_input("`company_id` is required"))?;
    let connection = input
        .get("connection")
        .and_then(Value::as_str)
        .unwrap_or("procore")
        .to_string();
    let key = person
        .get("key")
        .and_then(Value::as_str)
        .map(|k| k.trim().to_lowercase())
        .unwrap_or_default();
    if key.is_empty() {
        return Err(bad_input(
            "the user has no `key` (mail or userPrincipalName)",
        ));
    }
    let display_name = person
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or(&key)
        .to_string();
    let mut out = json!({ "key": key, "display_name": display_name });
    let url = format!("companies/{}/users", sluice_guest::http::segment(&company));
    let response = match Call::new(&connection, Method::Post, &url)
        .json_body(&body(person, &key))
        .idempotent()
        .send()
    {
        Ok(r) => r,
        Err(Failure::DryRun(_)) => {
            out["status"] = json!("would_create");
            if optional_id(&input, "project_id").is_some()
                && optional_id(&input, "permission_template_id").is_some()
            {
                out["project"] = json!("would_add");
            }
            return Ok(out);
        }
        Err(Failure::Error(e)) => return Err(e),
    };
    let detail = service_message(&response).unwrap_or_else(|| response.text_preview());
    match response.status {
        200 | 201 => {}
        s if is_taken(s, &detail) => {
            out["status"] = json!("conflict");
            out["reason"] = json!(format!("already in Procore: {detail}"));
            return Ok(out);
        }
        s if s == 429 || s >= 500 => return Err(status_error(&url, &response)),
        s => {
            out["status"] = json!("failed");
            out["reason"] = json!(format!("HTTP {s}: {detail}"));
            return Ok(out);
        }
    }
    let created = response.json()?;
    let id = created.get("id").cloned().unwrap_or(Value::Null);
    out["status"] = json!("created");
    out["procore_id"] = id.clone();
    if let (Some(project), Some(template)) = (
        optional_id(&input, "project_id"),
        optional_id(&input, "permission_template_id"),
    ) {
        out["project"] = json!(add_to_project(&connection, &project, &id, &template));
    }
    Ok(out)
}

fn add_to_project(connection: &str, project: &str, user_id: &Value, template: &str) -> String {
    let user_id = match user_id {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return "failed: Procore returned no user id".into(),
    };
    let template_value = template
        .parse::<u64>()
        .map_or_else(|_| json!(template), |n| json!(n));
    let url = format!(
        "projects/{}/users/{}/actions/add",
        sluice_guest::http::segment(project),
        sluice_guest::http::segment(&user_id)
    );
    let call = Call::new(connection, Method::Post, &url)
        .json_body(&json!({ "user": { "permission_template_id": template_value } }))
        .idempotent();
    match call.send() {
        Ok(r) if r.is_success() => "added".into(),
        Ok(r) => format!(
            "failed: HTTP {}: {}",
            r.status,
            service_message(&r).unwrap_or_else(|| r.text_preview())
        ),
        Err(Failure::DryRun(_)) => "would_add".into(),
        Err(Failure::Error(e)) => format!("failed: {}", e.message),
    }
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fall_back_sensibly() {
        let p = json!({"key": "a@x.com", "givenName": "Ada", "surname": "Lovelace", "displayName": "Ada Lovelace"});
        assert_eq!(names(&p), ("Ada".into(), "Lovelace".into()));
        let p = json!({"key": "a@x.com", "givenName": null, "surname": "", "displayName": "Grace Brewster Hopper"});
        assert_eq!(names(&p), ("Grace Brewster".into(), "Hopper".into()));
        let p = json!({"key": "a@x.com", "displayName": "Cher"});
        assert_eq!(names(&p), ("".into(), "Cher".into()));
        let p = json!({"key": "zoe.smith@x.com", "displayName": ""});
        assert_eq!(names(&p), ("".into(), "zoe.smith".into()));
    }

    #[test]
    fn the_body_is_nested_and_keyed() {
        let p = json!({"key": "a@x.com", "givenName": "Ada", "surname": "L"});
        assert_eq!(
            body(&p, "a@x.com"),
            json!({"user": {"first_name": "Ada", "last_name": "L", "email_address": "a@x.com", "login": "a@x.com", "is_employee": true}})
        );
    }

    #[test]
    fn taken_detection() {
        assert!(is_taken(422, "login has already been taken"));
        assert!(is_taken(409, ""));
        assert!(is_taken(422, "email_address is already in use"));
        assert!(!is_taken(422, "last_name can't be blank"));
    }
}
