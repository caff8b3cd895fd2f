//! For operations: `GET /metrics` (Prometheus text), `GET /healthz` (200
//! when the database answers and, under `sluice serve`, the scheduler's
//! loop does too; 503 naming what does not), and the console's embedded
//! stylesheet, script and icon.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::metrics::CONTENT_TYPE;

/// How long a health check waits for the database or the scheduler.
const HEALTH_WAIT: Duration = Duration::from_secs(2);

pub async fn metrics(State(console): State<Arc<Console>>) -> Response {
    if let Err(e) = console.metrics.refresh(&console.data).await {
        eprintln!("console: metrics could not read the run history: {e}");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the run history could not be read\n",
        )
            .into_response();
    }
    match console.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            eprintln!("console: metrics could not be encoded: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub async fn healthz(State(console): State<Arc<Console>>) -> Response {
    let database = matches!(
        tokio::time::timeout(HEALTH_WAIT, console.data.ping()).await,
        Ok(Ok(()))
    );
    let scheduler = match &console.scheduler {
        Some(control) => Some(control.ping(HEALTH_WAIT).await),
        None => None,
    };
    let word = |ok: bool| if ok { "ok" } else { "not answering" };
    let mut text = format!("database: {}\n", word(database));
    if let Some(ok) = scheduler {
        text.push_str(&format!("scheduler: {}\n", word(ok)));
    }
    let healthy = database && scheduler.unwrap_or(true);
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The console's own files, compiled into the binary.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            let mut response = (StatusCode::OK, *body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            response
        }
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}
