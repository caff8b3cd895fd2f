//! Procore's token endpoint (`POST /oauth/token`, client credentials) as
//! `login.procore.com` answers it: a JSON, form or multipart body, a
//! lower-case `bearer` token type, and OAuth's error bodies.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::errors;
use crate::api::query_pairs;
use crate::state::{Service, Shared};

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
