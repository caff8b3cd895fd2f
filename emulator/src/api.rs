//! What every API request goes through: the request log, injected faults,
//! bearer tokens (expiry included), and the services' budgets — Procore's
//! `X-Rate-Limit-*` headers on every response and a plain-text 429 past the
//! budget.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::faults::Injected;
use crate::state::{Service, Shared};

/// Logs every request with the status it got.
pub async fn log_requests(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
    let response = next.run(request).await;
    s.log(&method, &path, response.status().as_u16());
    response
}

pub async fn graph_gate(State(s): State<Shared>, request: Request, next: Next) -> Response {
    gate(s, Service::Graph, request, next).await
}

pub async fn procore_gate(State(s): State<Shared>, request: Request, next: Next) -> Response {
    gate(s, Service::Procore, request, next).await
}

async fn gate(s: Shared, service: Service, request: Request, next: Next) -> Response {
    let (injected, slow, retry_after, expire_after) = {
        let mut d = s.lock();
        d.api_requests += 1;
        let n = d.api_requests;
        (
            d.faults.decide(n),
            d.faults.slow_ms,
            d.faults.retry_after_value(),
            d.faults.token_expires_after_calls,
        )
    };
    if let Some(ms) = slow {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match injected {
        Injected::None => {}
        Injected::Drop => return dropped_connection(),
        Injected::Unavailable => {
            let mut r = error(
                service,
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            return r;
        }
        Injected::ServerError => {
            return error(
                service,
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "An internal server error occurred.",
            );
        }
        Injected::TooMany => return too_many(service, retry_after.as_deref(), None),
    }
    if let Err(r) = check_token(&s, service, request.headers(), expire_after) {
        return r;
    }
    let budget = match service {
        Service::Procore => Some(s.config.procore_rate_limit.unwrap_or(100_000)),
        Service::Graph => s.config.graph_rate_limit,
    };
    let Some(limit) = budget else {
        return next.run(request).await;
    };
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let window = now / 60;
    let reset = (window + 1) * 60;
    let used = {
        let mut d = s.lock();
        let slot = match service {
            Service::Procore => &mut d.procore_window,
            Service::Graph => &mut d.graph_window,
        };
        if slot.0 != window {
            *slot = (window, 0);
        }
        slot.1 += 1;
        slot.1
    };
    let headers = [
        ("x-rate-limit-limit", limit.to_string()),
        (
            "x-rate-limit-remaining",
            limit.saturating_sub(used).to_string(),
        ),
        ("x-rate-limit-reset", reset.to_string()),
    ];
    let mut response = if used > limit {
        too_many(
            service,
            Some(&(reset - now).max(1).to_string()),
            Some(limit),
        )
    } else {
        next.run(request).await
    };
    if service == Service::Procore {
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    response
}

fn check_token(
    s: &Shared,
    service: Service,
    headers: &HeaderMap,
    expire_after: Option<u32>,
) -> Result<(), Response> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_string);
    let Some(token) = presented else {
        return Err(unauthorized(service, "Access token is empty."));
    };
    let mut d = s.lock();
    let Some(t) = d.tokens.get_mut(&token) else {
        return Err(unauthorized(service, "Invalid access token."));
    };
    if t.service != service {
        return Err(unauthorized(service, "Invalid audience."));
    }
    t.calls += 1;
    if Instant::now() >= t.expires_at || expire_after.is_some_and(|n| t.calls > n) {
        return Err(unauthorized(
            service,
            "Access token has expired or is not yet valid.",
        ));
    }
    Ok(())
}

fn unauthorized(service: Service, message: &str) -> Response {
    match service {
        Service::Graph => error(
            service,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        ),
        Service::Procore => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "errors": message })),
            )
                .into_response();
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"Procore API\", error=\"invalid_token\""),
            );
            r
        }
    }
}

/// Graph: the error envelope with code, message and innerError; Procore: `{"errors": …}`.
pub fn error(service: Service, status: StatusCode, code: &str, message: &str) -> Response {
    match service {
        Service::Graph => (status, axum::Json(graph_error_body(code, message))).into_response(),
        Service::Procore => (status, axum::Json(json!({ "errors": message }))).into_response(),
    }
}

pub fn graph_error_body(code: &str, message: &str) -> serde_json::Value {
    let id = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rand::random::<u32>(),
        rand::random::<u16>(),
        rand::random::<u16>() & 0xfff,
        rand::random::<u16>() & 0xfff,
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": id,
                "client-request-id": id,
            }
        }
    })
}

fn too_many(service: Service, retry_after: Option<&str>, limit: Option<u32>) -> Response {
    let mut response = match service {
        Service::Graph => error(
            service,
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests have been made; please wait and try again.",
        ),
        Service::Procore => {
            let text = match limit {
                Some(l) => {
                    format!("Rate limit of {l} requests per minute exceeded. Try again later.\n")
                }
                None => "Too Many Requests\n".to_string(),
            };
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("content-type", "text/plain; charset=utf-8")],
                text,
            )
                .into_response()
        }
    };
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

/// Headers, then the connection breaks before the body: what a client sees
/// when a proxy or the network drops it.
fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other(
            "connection dropped (injected fault)",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Query pairs in order, percent-decoded (`+` is a space, as in forms).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Strict query encoding for links we hand out.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'$')
        .remove(b'[')
        .remove(b']');
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, SET),
                percent_encoding::utf8_percent_encode(v, SET)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}
