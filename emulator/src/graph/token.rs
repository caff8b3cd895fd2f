//! The Microsoft identity platform's token endpoint
//! (`POST /{tenant}/oauth2/v2.0/token`, client credentials) with its
//! documented error bodies (`error`, `error_description` starting with the
//! AADSTS code, `error_codes`, trace and correlation ids).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::query_pairs;
use crate::state::{Service, Shared};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace = format!("{:032x}", rand::random::<u128>());
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ")),
        "error_codes": [code],
        "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": trace,
        "correlation_id": trace,
    });
    (status, Json(body)).into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token`, client credentials, form body.
pub async fn token(State(s): State<Shared>, Path(tenant): Path<String>, body: String) -> Response {
    let form: HashMap<String, String> = query_pairs(Some(&body)).into_iter().collect();
    let scenario_tenant = s.lock().scenario.tenant_id.clone();
    if tenant != scenario_tenant && tenant != "contoso.onmicrosoft.com" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let creds = &s.config.credentials;
    if form.get("client_id") != Some(&creds.graph_client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    if form.get("client_secret") != Some(&creds.graph_client_secret) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    if form.get("scope").map(String::as_str) != Some(GRAPH_SCOPE) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    let (token, lifetime) = s.issue_token(Service::Graph);
    Json(json!({ "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token })).into_response()
}
