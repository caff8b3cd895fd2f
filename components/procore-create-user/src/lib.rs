//! The `procore-create-user` step: one Procore company user per call.
//!
//! Input `{"user": <person>, "company_id", "project_id"?,
//! "permission_template_id"?, "run_started_at"?}`. Sends `POST
//! companies/{id}/users` with the nested `{"user": {…}}` body Procore
//! requires. When a project is configured the user then joins it through
//! `POST projects/{project_id}/users/{id}/actions/add`, with the permission
//! template when one is configured (Procore documents it as optional). In a
//! dry run nothing is sent and the result says what would have been done.
//!
//! The create is marked idempotent so the host may resend it after a lost
//! connection or a 5xx: Procore refuses a second user with the same login,
//! so a resend can never make two. The price is that a resend whose first
//! attempt *was* applied comes back 409/422 "taken". So every "taken" is
//! followed by a look-up of the user (`filters[search]` on the active and the
//! inactive list, matched exactly on login or email, without case), and the
//! rule is:
//!
//! - Found, and Procore says it was created at or after this run started
//!   (`run_started_at`, less [`CLOCK_SKEW_SECS`] for clocks that disagree):
//!   the person was missing when this run read Procore moments earlier, so
//!   this run's own first attempt made it. Reported `created` with its id
//!   (the reason says it was confirmed after a retry) and added to the
//!   project like any new user. A person someone else created in the same
//!   seconds would be reported the same way; nothing on the wire tells the
//!   two apart.
//! - Found, but older than the run (or the run's start is unknown): a real
//!   conflict. Reported `conflict` with the existing `procore_id`; the
//!   project is left alone, because the flow only changes users it creates.
//! - Not found in this company (Procore logins are global, so another
//!   company's user can hold it): `conflict` without an id.
//!
//! Output `{"key", "display_name", "status": "created" | "conflict" |
//! "failed" | "would_create", "procore_id"?, "reason"?, "project"?}`. A
//! service error that a later run could fix (5xx, throttled, unreachable) is
//! returned as a retryable step error instead, so the item is recorded as
//! failed by the host.

use sluice_guest::bindings::sluice::flow::connection::Method;
use sluice_guest::http::{Call, Failure, segment, service_message, status_error};
use sluice_guest::paging::procore_all;
use sluice_guest::{StepError, Value, bad_input, json};

/// How far Procore's clock may trail ours before a user this run created
/// looks older than the run. The run reads Procore after it starts, so a
/// user created minutes before the start would have been seen and never
/// sent for creation.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Page size of the look-up after a "taken"; a search finds a handful.
const LOOKUP_PER_PAGE: usize = 100;

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

/// Words services use to say a value must be unique and already is in use.
const UNIQUENESS_WORDS: &[&str] = &[
    "taken",
    "already",
    "exist",
    "duplicate",
    "in use",
    "unique",
    "registered",
];

/// Whether a 409/422 says the login or email is already in use. A 409 is a
/// conflict by definition. A 422 is one when its `errors` name the login or
/// the email with uniqueness wording ("has already been taken", "already
/// exists", "is not unique", …), or, when the body names no field, when its
/// message has such wording; a 422 about another field (a blank last name)
/// is not.
pub fn is_taken(status: u16, body: &[u8]) -> bool {
    if status == 409 {
        return true;
    }
    if status != 422 {
        return false;
    }
    let unique = |text: &str| {
        let t = text.to_lowercase();
        UNIQUENESS_WORDS.iter().any(|w| t.contains(w))
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let errors = parsed.as_ref().and_then(|b| b.get("errors"));
    match errors {
        Some(Value::Object(fields)) => fields.iter().any(|(field, problems)| {
            // The field, or a general (`base`) message, names the login or email.
            let text = format!("{field} {problems}").to_lowercase();
            let identity = text.contains("login") || text.contains("email");
            identity && unique(&text)
        }),
        Some(Value::Array(list)) => list.iter().any(|p| unique(&p.to_string())),
        Some(other) => unique(&other.to_string()),
        None => unique(&String::from_utf8_lossy(body)),
    }
}

fn optional_id(input: &Value, name: &str) -> Option<String> {
    input.get(name).and_then(id_text)
}

fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time, if it is one.
fn epoch(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp())
}

/// Whether a user Procore created at `created_at` was made by this run,
/// which started at `run_started_at` (see the module's rule).
pub fn created_by_this_run(created_at: Option<&str>, run_started_at: Option<&str>) -> bool {
    match (created_at.and_then(epoch), run_started_at.and_then(epoch)) {
        (Some(created), Some(started)) => created >= started - CLOCK_SKEW_SECS,
        _ => false,
    }
}

/// The user among `candidates` whose login or email is `key`, without case.
pub fn exact_match<'a>(candidates: &'a [Value], key: &str) -> Option<&'a Value> {
    candidates.iter().find(|u| {
        ["login", "email_address"].iter().any(|f| {
            u.get(*f)
                .and_then(Value::as_str)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(key))
        })
    })
}

/// Finds the company user whose login or email is `key`, active or not.
fn look_up(connection: &str, company: &str, key: &str) -> Result<Option<Value>, StepError> {
    for list in ["users", "users/inactive"] {
        let url = format!("companies/{}/{list}", segment(company));
        let found = procore_all(
            connection,
            &url,
            &[("filters[search]", key.to_string())],
            LOOKUP_PER_PAGE,
        )?;
        if let Some(user) = exact_match(&found, key) {
            return Ok(Some(user.clone()));
        }
    }
    Ok(None)
}

struct Target {
    connection: String,
    company: String,
    project: Option<String>,
    template: Option<String>,
}

fn run(input: Value) -> Result<Value, StepError> {
    let person = input
        .get("user")
        .ok_or_else(|| bad_input("`user` is required"))?;
    let target = Target {
        company: optional_id(&input, "company_id")
            .ok_or_else(|| bad_input("`company_id` is required"))?,
        connection: input
            .get("connection")
            .and_then(Value::as_str)
            .unwrap_or("procore")
            .to_string(),
        project: optional_id(&input, "project_id"),
        template: optional_id(&input, "permission_template_id"),
    };
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
    let url = format!("companies/{}/users", segment(&target.company));
    let response = match Call::new(&target.connection, Method::Post, &url)
        .json_body(&body(person, &key))
        .idempotent()
        .send()
    {
        Ok(r) => r,
        Err(Failure::DryRun(_)) => {
            out["status"] = json!("would_create");
            if target.project.is_some() {
                out["project"] = json!("would_add");
            }
            return Ok(out);
        }
        Err(Failure::Error(e)) => return Err(e),
    };
    let detail = || service_message(&response).unwrap_or_else(|| response.text_preview());
    let created = match response.status {
        200 | 201 => response.json()?,
        s if is_taken(s, &response.body) => {
            return taken(&target, &key, &detail(), &input, out);
        }
        s if s == 429 || s >= 500 => return Err(status_error(&url, &response)),
        s => {
            out["status"] = json!("failed");
            out["reason"] = json!(format!("HTTP {s}: {}", detail()));
            return Ok(out);
        }
    };
    let id = created.get("id").cloned().unwrap_or(Value::Null);
    out["status"] = json!("created");
    out["procore_id"] = id.clone();
    if let Some(project) = &target.project {
        out["project"] = json!(add_to_project(&target, project, &id));
    }
    Ok(out)
}

/// A create refused as a duplicate: find out whose login it is (see the
/// module's rule).
fn taken(
    target: &Target,
    key: &str,
    detail: &str,
    input: &Value,
    mut out: Value,
) -> Result<Value, StepError> {
    let Some(existing) = look_up(&target.connection, &target.company, key)? else {
        out["status"] = json!("conflict");
        out["reason"] = json!(format!(
            "Procore refused the login as taken ({detail}), and no user of this company has it: it may belong to another Procore company"
        ));
        return Ok(out);
    };
    let id = existing.get("id").cloned().unwrap_or(Value::Null);
    let created_at = existing.get("created_at").and_then(Value::as_str);
    let started = input.get("run_started_at").and_then(Value::as_str);
    out["procore_id"] = id.clone();
    if created_by_this_run(created_at, started) {
        out["status"] = json!("created");
        out["reason"] = json!(format!(
            "confirmed after a retry: the first attempt was applied (Procore created the user at {})",
            created_at.unwrap_or("?")
        ));
        if let Some(project) = &target.project {
            out["project"] = json!(add_to_project(target, project, &id));
        }
    } else {
        let active = existing
            .get("is_active")
            .and_then(Value::as_bool)
            .map_or("", |a| if a { "" } else { " (inactive)" });
        out["status"] = json!("conflict");
        out["reason"] = json!(format!(
            "already in Procore{active}, created {}: {detail}",
            created_at.unwrap_or("at an unknown time")
        ));
    }
    Ok(out)
}

/// The `actions/add` body: the template only when one is configured.
pub fn project_body(template: Option<&str>) -> Value {
    match template {
        Some(t) => {
            let value = t.parse::<u64>().map_or_else(|_| json!(t), |n| json!(n));
            json!({ "user": { "permission_template_id": value } })
        }
        None => json!({}),
    }
}

fn add_to_project(target: &Target, project: &str, user_id: &Value) -> String {
    let Some(user_id) = id_text(user_id) else {
        return "failed: Procore returned no user id".into();
    };
    let url = format!(
        "projects/{}/users/{}/actions/add",
        segment(project),
        segment(&user_id)
    );
    // Adding a member twice leaves one membership: safe to resend.
    let call = Call::new(&target.connection, Method::Post, &url)
        .json_body(&project_body(target.template.as_deref()))
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
    fn taken_in_every_wording() {
        let taken = |status: u16, body: &str| is_taken(status, body.as_bytes());
        assert!(taken(409, ""));
        assert!(taken(409, "Conflict"));
        for body in [
            r#"{"errors":{"login":["has already been taken"]}}"#,
            r#"{"errors":{"email_address":["is already in use"]}}"#,
            r#"{"errors":{"email_address":["already exists"]}}"#,
            r#"{"errors":{"login":["is not unique"]}}"#,
            r#"{"errors":{"login":["must be unique"]}}"#,
            r#"{"errors":{"email_address":["An existing user has this email"]}}"#,
            r#"{"errors":{"Login":["Duplicate value"]}}"#,
            r#"{"errors":{"email_address":["is already registered"]}}"#,
            r#"{"errors":{"user.login":["has already been taken"],"last_name":["can't be blank"]}}"#,
            r#"{"errors":"Login has already been taken"}"#,
            r#"{"errors":{"base":["Email address has already been taken"]}}"#,
            r#"{"errors":["Email address already exists"]}"#,
            "User with this email already exists",
        ] {
            assert!(taken(422, body), "{body}");
        }
        for body in [
            r#"{"errors":{"last_name":["can't be blank"]}}"#,
            r#"{"errors":{"email_address":["is invalid"]}}"#,
            // Uniqueness of some other field is not about this person.
            r#"{"errors":{"employee_id":["has already been taken"]}}"#,
            r#"{"errors":"param is missing or the value is empty: user"}"#,
            "",
        ] {
            assert!(!taken(422, body), "{body}");
        }
        assert!(!taken(
            400,
            r#"{"errors":{"login":["has already been taken"]}}"#
        ));
        assert!(!taken(500, "already"));
    }

    #[test]
    fn a_user_created_since_the_run_started_is_this_runs_own() {
        let start = Some("2025-06-02T09:00:00.123456+00:00");
        assert!(created_by_this_run(Some("2025-06-02T09:00:07Z"), start));
        // Procore's clock a minute behind ours.
        assert!(created_by_this_run(Some("2025-06-02T08:59:00Z"), start));
        // Other offsets are the same instant.
        assert!(created_by_this_run(
            Some("2025-06-02T02:00:05-07:00"),
            start
        ));
        assert!(!created_by_this_run(Some("2025-06-01T12:00:00Z"), start));
        assert!(!created_by_this_run(Some("2025-06-02T08:50:00Z"), start));
        // Unknown either way: never claimed as ours.
        assert!(!created_by_this_run(None, start));
        assert!(!created_by_this_run(Some("yesterday"), start));
        assert!(!created_by_this_run(Some("2025-06-02T09:00:07Z"), None));
    }

    #[test]
    fn the_look_up_matches_login_or_email_exactly() {
        let found = vec![
            json!({"id": 1, "login": "ann.lee@x.com.au", "email_address": "ann.lee@x.com.au"}),
            json!({"id": 2, "login": "other", "email_address": " Ann.Lee@X.com "}),
        ];
        assert_eq!(
            exact_match(&found, "ann.lee@x.com").unwrap()["id"],
            json!(2)
        );
        assert!(
            exact_match(&found, "lee@x.com").is_none(),
            "a partial match is not the person"
        );
    }

    #[test]
    fn the_template_is_sent_only_when_set() {
        assert_eq!(
            project_body(Some("77")),
            json!({"user": {"permission_template_id": 77}})
        );
        assert_eq!(project_body(None), json!({}));
    }
}
