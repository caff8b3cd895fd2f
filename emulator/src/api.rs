//! What every API request goes through: the request log, injected faults,
//! bearer tokens (expiry included), and the services' budgets. Procore's
//! `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` (Unix seconds) are added
//! in one place, here, to every Procore API response whatever produced it:
//! a handler, an expired token, the budget's own 429 or an injected fault.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::budget::Budget;
use crate::faults::{FaultKind, RetryAfterStyle};
use crate::state::{LoggedRequest, MAX_LOGGED_BODY, Service, Shared};

/// Marks a response with the fault injected into it, for the request log.
#[derive(Debug, Clone, Copy)]
pub struct InjectedFault(pub FaultKind);

/// The largest request body a targeted fault reads to match on.
const MAX_INSPECTED_BODY: usize = 16 * 1024 * 1024;

/// Logs every request with the status it got (and the fault, if one was
/// injected), and adds the time spent answering it to the emulator's own
/// service time (from the request's arrival to its response's headers; an
/// injected `slow_ms` counts too).
pub async fn log_requests(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
    // A token request carries a client secret, form-encoded or (Procore
    // accepts it) JSON: never logged.
    let (request, body) = if request.uri().path().ends_with("/token") {
        (request, None)
    } else {
        json_body(request).await
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let spent = started.elapsed();
    {
        let mut d = s.lock();
        d.served += 1;
        d.service_time += spent;
    }
    let fault = response
        .extensions()
        .get::<InjectedFault>()
        .map(|f| f.0.name());
    s.log(LoggedRequest {
        method,
        path,
        status: response.status().as_u16(),
        at_ms: s.elapsed_ms(),
        fault,
        body,
    });
    response
}

/// A JSON request's body, for the log, and the request to pass on (with
/// the same body). Other bodies are not read here.
async fn json_body(request: Request) -> (Request, Option<String>) {
    let json = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return (request, None);
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_INSPECTED_BODY)
        .await
        .unwrap_or_default();
    let text =
        (bytes.len() <= MAX_LOGGED_BODY).then(|| String::from_utf8_lossy(&bytes).into_owned());
    (Request::from_parts(parts, Body::from(bytes)), text)
}

pub async fn graph_gate(State(s): State<Shared>, request: Request, next: Next) -> Response {
    gate(s, Service::Graph, request, next).await
}

pub async fn procore_gate(State(s): State<Shared>, request: Request, next: Next) -> Response {
    gate(s, Service::Procore, request, next).await
}

async fn gate(s: Shared, service: Service, request: Request, next: Next) -> Response {
    let budget = crate::budget::count(&s, service);
    let mut response = guarded(&s, service, budget.as_ref(), request, next).await;
    if service == Service::Procore
        && let Some(b) = &budget
    {
        for (name, value) in b.headers() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    response
}

/// Faults, token, budget, then the handler.
async fn guarded(
    s: &Shared,
    service: Service,
    budget: Option<&Budget>,
    request: Request,
    next: Next,
) -> Response {
    let needs_body = s.lock().faults.needs_body();
    let (request, body_text) = if needs_body {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_INSPECTED_BODY)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (Request::from_parts(parts, Body::from(bytes)), text)
    } else {
        (request, String::new())
    };
    let method = request.method().to_string();
    // Routers nested under `/v1.0` or `/rest/v1.0` see the path without it.
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |o| o.path())
        .to_string();
    let (ordinal_fault, slow, retry_after, expire_after) = {
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
    if let Some(kind) = ordinal_fault.filter(|k| !k.after_apply()) {
        return marked(before_apply(service, kind, retry_after.as_deref()), kind);
    }
    if let Err(r) = check_token(s, service, request.headers(), expire_after) {
        return r;
    }
    if let Some(b) = budget.filter(|b| b.exceeded()) {
        let style = s.lock().faults.retry_after;
        let wait = budget_retry_after(service, style, b.wait_secs());
        return too_many(service, wait.as_deref());
    }
    // A targeted fault strikes the Nth matching request that reaches the
    // service: one refused for its token or its budget is not counted, so
    // a fault aimed at the fifth create is not lost to a 401.
    let targeted = {
        let mut d = s.lock();
        let mut seen = std::mem::take(&mut d.targeted_seen);
        let targeted = d
            .faults
            .targeted_fault(&mut seen, &method, &path, &body_text);
        d.targeted_seen = seen;
        targeted
    };
    if let Some(kind) = targeted.filter(|k| !k.after_apply()) {
        return marked(before_apply(service, kind, retry_after.as_deref()), kind);
    }
    let fault = targeted.or(ordinal_fault);
    let served_url = request
        .extensions()
        .get::<OriginalUri>()
        .and_then(|o| o.path_and_query().map(|p| p.to_string()));
    let response = next.run(request).await;
    match fault {
        Some(FaultKind::RepeatNextLink) if service == Service::Graph => {
            let url = format!("{}{}", s.base_url, served_url.unwrap_or_default());
            marked(
                repeat_next_link(response, &url).await,
                FaultKind::RepeatNextLink,
            )
        }
        Some(FaultKind::NoAccountEnabled) if service == Service::Graph => marked(
            without_account_enabled(response).await,
            FaultKind::NoAccountEnabled,
        ),
        Some(FaultKind::UsersAsDevices) if service == Service::Graph => {
            marked(users_as_devices(response).await, FaultKind::UsersAsDevices)
        }
        Some(FaultKind::EmptyPage) if service == Service::Procore => {
            let (mut parts, _) = response.into_parts();
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            marked(
                Response::from_parts(parts, Body::from("[]")),
                FaultKind::EmptyPage,
            )
        }
        Some(FaultKind::DropAfterApply) => marked(dropped_connection(), FaultKind::DropAfterApply),
        Some(FaultKind::ServerErrorAfterApply) => marked(
            error(
                service,
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "An internal server error occurred.",
            ),
            FaultKind::ServerErrorAfterApply,
        ),
        Some(FaultKind::GatewayTimeoutAfterApply) => marked(
            gateway_page(StatusCode::GATEWAY_TIMEOUT),
            FaultKind::GatewayTimeoutAfterApply,
        ),
        _ => response,
    }
}

/// `r`, marked as carrying the injected fault `kind` (the request log
/// names it).
fn marked(mut r: Response, kind: FaultKind) -> Response {
    r.extensions_mut().insert(InjectedFault(kind));
    r
}

/// The answer of a fault that strikes before the service acts.
fn before_apply(service: Service, kind: FaultKind, retry_after: Option<&str>) -> Response {
    match kind {
        FaultKind::Drop => dropped_connection(),
        FaultKind::Unavailable => {
            let mut r = error(
                service,
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            r
        }
        FaultKind::TooMany => too_many(service, retry_after),
        FaultKind::BadGateway => gateway_page(StatusCode::BAD_GATEWAY),
        _ => error(
            service,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "An internal server error occurred.",
        ),
    }
}

/// What a gateway in front of a service answers when it could not reach
/// it, or gave up waiting: its own HTML page, not the service's JSON
/// error, so a client that reads every error body as JSON fails here.
fn gateway_page(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let page = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html"),
        )],
        page,
    )
        .into_response()
}

/// A Graph page whose `@odata.nextLink` is `url`, the page's own address,
/// and which has no `@odata.deltaLink`: following it serves the same page
/// again.
async fn repeat_next_link(response: Response, url: &str) -> Response {
    let url = url.to_string();
    rewrite_page(response, move |fields| {
        fields.remove("@odata.deltaLink");
        fields.insert("@odata.nextLink".into(), json!(url));
    })
    .await
}

/// `response`, a Graph page, with `accountEnabled` taken off its users.
async fn without_account_enabled(response: Response) -> Response {
    rewrite_items(response, |item| {
        item.remove("accountEnabled");
    })
    .await
}

/// `response`, a Graph page, with its users labelled devices.
async fn users_as_devices(response: Response) -> Response {
    rewrite_items(response, |item| {
        if item.get("@odata.type") == Some(&json!("#microsoft.graph.user")) {
            item.insert("@odata.type".into(), json!("#microsoft.graph.device"));
        }
    })
    .await
}

/// `response`, a Graph page, with each object of its `value` list changed
/// by `change`.
async fn rewrite_items(
    response: Response,
    change: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> Response {
    rewrite_page(response, |fields| {
        let items = fields.get_mut("value").and_then(|v| v.as_array_mut());
        for item in items
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_object_mut())
        {
            change(item);
        }
    })
    .await
}

/// `response`, a Graph page, with its fields changed by `change`. Answers
/// that are not a page (no `value` list) are left alone.
async fn rewrite_page(
    response: Response,
    change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_INSPECTED_BODY)
        .await
        .unwrap_or_default();
    let mut page: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    let Some(fields) = page.as_object_mut().filter(|m| m.get("value").is_some()) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    change(fields);
    let text = page.to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

/// The Retry-After of a budget 429. Procore documents none (a client is to
/// read `X-Rate-Limit-Reset`), so with the `absent` style it sends none;
/// otherwise it says how long until its window resets, in whole seconds.
/// Graph's follows the configured style, since Graph sends integers,
/// fractions or nothing at all.
fn budget_retry_after(service: Service, style: RetryAfterStyle, wait: u64) -> Option<String> {
    match (service, style) {
        (_, RetryAfterStyle::Absent) => None,
        (Service::Procore, _) | (Service::Graph, RetryAfterStyle::Integer) => {
            Some(wait.to_string())
        }
        (Service::Graph, RetryAfterStyle::Fractional) => Some(format!("{wait}.128")),
        (Service::Graph, RetryAfterStyle::HttpDate) => Some(httpdate::fmt_http_date(
            std::time::SystemTime::now() + Duration::from_secs(wait + 1),
        )),
    }
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

/// Graph's 401 names the authority to get a token from, as Graph does.
const GRAPH_CHALLENGE: &str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"";

fn unauthorized(service: Service, message: &str) -> Response {
    match service {
        Service::Graph => {
            let mut r = error(
                service,
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            );
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static(GRAPH_CHALLENGE),
            );
            r
        }
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

/// What Procore's 429 says, word for word from its rate-limiting guide.
pub const PROCORE_RATE_LIMITED: &str = "You have surpassed the max number of requests for an hour. Please wait until your limit resets.";

/// A random request id in Graph's GUID form.
fn request_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rand::random::<u32>(),
        rand::random::<u16>(),
        rand::random::<u16>() & 0xfff,
        rand::random::<u16>() & 0xfff,
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

pub fn graph_error_body(code: &str, message: &str) -> serde_json::Value {
    let id = request_id();
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

fn too_many(service: Service, retry_after: Option<&str>) -> Response {
    let mut response = match service {
        // Graph's throttling guide: this innerError carries the status as
        // `code` and `status` and a `message` of its own.
        Service::Graph => (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "error": {
                    "code": "TooManyRequests",
                    "message": "Please retry again later.",
                    "innerError": {
                        "code": "429",
                        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                        "message": "Please retry after",
                        "request-id": request_id(),
                        "status": "429",
                    }
                }
            })),
        )
            .into_response(),
        // Procore's rate-limiting guide: the same sentence for the hourly
        // and the spike limits, as text.
        Service::Procore => (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "text/plain; charset=utf-8")],
            PROCORE_RATE_LIMITED,
        )
            .into_response(),
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
