//! `POST /v1.0/users/{id or address}/sendMail`: 202 with an empty body,
//! the mail recorded for tests and the admin page.
//!
//! Graph reads the JSON property names of a request body without regard to
//! case: the SDKs send `{"Message": …, "SaveToSentItems": …}` (the names in
//! Graph's metadata for the action's parameters), hand-written clients
//! `{"message": …}`, and both are accepted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::error;
use crate::state::{SentMail, Service, Shared};

/// A property of a JSON object, by name without regard to case (an exact
/// match first).
fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string at a path of property names (each read without regard to case).
fn text<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(object, |v, name| field(v, name))?
        .as_str()
}

fn bad(why: &str) -> Response {
    error(
        Service::Graph,
        StatusCode::BAD_REQUEST,
        "ErrorInvalidRequest",
        why,
    )
}

/// The sender's user principal name, if `user` names a user of the tenant.
fn sender(s: &Shared, user: &str) -> Option<String> {
    let d = s.lock();
    d.scenario
        .graph_users
        .iter()
        .find(|u| {
            u.id == user
                || u.user_principal_name.eq_ignore_ascii_case(user)
                || u.mail
                    .as_deref()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case(user))
        })
        .map(|u| u.user_principal_name.clone())
}

/// The message of a sendMail body, as recorded.
fn message(from: String, body: &str) -> Result<SentMail, Response> {
    let Ok(parsed) = serde_json::from_str::<Value>(body) else {
        return Err(bad("Cannot read the request body: it is not JSON."));
    };
    let Some(message) = field(&parsed, "message") else {
        return Err(bad("Required property 'message' is missing."));
    };
    let to: Vec<String> = field(message, "toRecipients")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|r| text(r, &["emailAddress", "address"]))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if to.is_empty() {
        return Err(bad(
            "At least one recipient is required, but none were found.",
        ));
    }
    Ok(SentMail {
        from,
        to,
        subject: text(message, &["subject"]).unwrap_or("").to_string(),
        content_type: text(message, &["body", "contentType"])
            .unwrap_or("Text")
            .to_string(),
        html: text(message, &["body", "content"])
            .unwrap_or("")
            .to_string(),
    })
}

pub async fn send_mail(
    State(s): State<Shared>,
    Path(user): Path<String>,
    body: String,
) -> Response {
    let Some(from) = sender(&s, &user) else {
        return error(
            Service::Graph,
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{user}' is invalid."),
        );
    };
    match message(from, &body) {
        Ok(mail) => {
            s.lock().mails.push(mail);
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_names_are_read_without_case() {
        let sdk = r#"{"Message": {"Subject": "S", "Body": {"ContentType": "html", "Content": "<p>x</p>"},
            "ToRecipients": [{"EmailAddress": {"Address": "a@x.com"}}]}, "SaveToSentItems": false}"#;
        let mail = message("me@x.com".into(), sdk).unwrap();
        assert_eq!(
            (mail.subject.as_str(), mail.content_type.as_str(), mail.to),
            ("S", "html", vec!["a@x.com".to_string()])
        );
        assert!(message("me@x.com".into(), r#"{"subject": "flat"}"#).is_err());
    }
}
