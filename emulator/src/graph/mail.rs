//! `POST /v1.0/users/{id or address}/sendMail`: 202 with an empty body,
//! the mail recorded for tests and the admin page.
//!
//! A request body over Graph's 4 MB request limit is refused with 413
//! before it is read further, in Graph's error envelope (see
//! [`SEND_MAIL_MAX_BYTES`]).
//!
//! Graph reads the JSON property names of a request body without regard to
//! case: the SDKs send `{"Message": …, "SaveToSentItems": …}` (the names in
//! Graph's metadata for the action's parameters), hand-written clients
//! `{"message": …}`, and both are accepted.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
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

/// The largest sendMail request Graph takes: 4 MB (4,096 KiB), the
/// whole JSON body. Graph's sendMail page gives no figure; Microsoft's
/// answers and Graph's own 413 ("The maximum request length supported is
/// 4MB.") do, and Graph's errors page documents 413 as "Request Entity Too
/// Large: the request size exceeds the maximum limit". Larger mail goes
/// through a draft and an upload session, which the emulator does not serve.
pub const SEND_MAIL_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Graph's answer to a request over [`SEND_MAIL_MAX_BYTES`].
fn too_large() -> Response {
    error(
        Service::Graph,
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        "The maximum request length supported is 4MB.",
    )
}

/// The request body as text, or Graph's 413 when it is over the limit: by
/// its `Content-Length` before anything is read, else as it is read.
async fn body_within_limit(headers: &HeaderMap, body: Body) -> Result<String, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > SEND_MAIL_MAX_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, SEND_MAIL_MAX_BYTES)
        .await
        .map_err(|_| too_large())?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| bad("Cannot read the request body: it is not UTF-8."))
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
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match body_within_limit(&headers, body).await {
        Ok(text) => text,
        Err(r) => return r,
    };
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
