//! For operations: `GET /metrics` (Prometheus text), `GET /healthz`
//! (liveness: 200 when the database answers and, under `sluice serve`, the
//! scheduler's loop does too; 503 naming what does not), `GET /readyz`
//! (readiness: as alive, and the store at this binary's schema version),
//! and the console's embedded stylesheet, script and icon.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use sluice_store::error::NOT_ANSWERING;

use super::Console;
use super::extract::PagePath;
use super::metrics::CONTENT_TYPE;

/// How long a health check waits for the database or the scheduler.
const HEALTH_WAIT: Duration = Duration::from_secs(2);

pub async fn metrics(State(console): State<Arc<Console>>) -> Response {
    if let Err(e) = console.metrics.refresh(&console.data).await {
        super::notice(&format!(
            "console: metrics could not read the run history: {e}"
        ));
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the run history could not be read\n",
        )
            .into_response();
    }
    match console.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            super::notice(&format!("console: metrics could not be encoded: {e}"));
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// One line of a health or readiness answer: what was checked, and what
/// is wrong with it (`None`: ok).
struct Check {
    what: &'static str,
    problem: Option<String>,
}

/// Whether the scheduler's loop answers, under `sluice serve` (`None`
/// for `sluice console`, which has none).
async fn scheduler_check(console: &Console) -> Option<Check> {
    let control = console.scheduler.as_ref()?;
    let ok = control.ping(HEALTH_WAIT).await;
    Some(Check {
        what: "scheduler",
        problem: (!ok).then(|| NOT_ANSWERING.to_string()),
    })
}

/// 200 with a line per check when every one is ok, else 503.
fn answer(checks: Vec<Check>) -> Response {
    let mut text = String::new();
    for c in &checks {
        let state = c.problem.as_deref().unwrap_or("ok");
        text.push_str(&format!("{}: {state}\n", c.what));
    }
    let status = if checks.iter().all(|c| c.problem.is_none()) {
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

/// Why a process whose SQLite file was deleted, moved or replaced is not
/// alive.
const REPLACED: &str = "its file was deleted, moved or replaced since this process opened it: restart to use the one there now";

/// `GET /healthz`, liveness: the database answers (and is the one its
/// location names) and, under `sluice serve`, so does the scheduler's loop.
pub async fn healthz(State(console): State<Arc<Console>>) -> Response {
    let database = match tokio::time::timeout(HEALTH_WAIT, console.data.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.health_word().to_string()),
        Err(_) => Some(NOT_ANSWERING.to_string()),
    };
    // What this process writes goes where no other process reads it: a
    // restart opens the file there now.
    let database = match database {
        None if !still_in_place(&console).await => Some(REPLACED.to_string()),
        other => other,
    };
    let mut checks = vec![Check {
        what: "database",
        problem: database,
    }];
    checks.extend(scheduler_check(&console).await);
    answer(checks)
}

/// Whether the console's database is still the one its location names,
/// asked off the async workers (it looks at the file system) and taken as
/// so when the file system does not answer in time.
async fn still_in_place(console: &Arc<Console>) -> bool {
    let console = console.clone();
    let looked = tokio::task::spawn_blocking(move || console.data.still_in_place());
    !matches!(
        tokio::time::timeout(HEALTH_WAIT, looked).await,
        Ok(Ok(false))
    )
}

/// `GET /readyz`, readiness: this process can do its work now. Beyond
/// liveness, the store must be at the schema version this binary works
/// with: once a newer `sluice` has migrated a shared database, this one
/// stays alive (its history still reads) but is no longer ready, so a load
/// balancer or an orchestrator sends work to the upgraded replicas. And a
/// new session must be had: with the server's connection limit reached,
/// a kept session still answers while every run that needs one fails.
pub async fn readyz(State(console): State<Arc<Console>>) -> Response {
    let store = match tokio::time::timeout(HEALTH_WAIT, console.data.schema()).await {
        Ok(Ok((found, known))) if found == known => {
            match tokio::time::timeout(HEALTH_WAIT, console.data.new_session()).await {
                Ok(outcome) => outcome.err().map(str::to_string),
                Err(_) => Some(NOT_ANSWERING.to_string()),
            }
        }
        Ok(Ok((found, known))) => Some(format!(
            "at schema version {found}, this sluice works with version {known}"
        )),
        // The error's words only: it may name the database's address.
        Ok(Err(e)) => Some(e.health_word().to_string()),
        Err(_) => Some(NOT_ANSWERING.to_string()),
    };
    let mut checks = vec![Check {
        what: "store",
        problem: store,
    }];
    checks.extend(scheduler_check(&console).await);
    answer(checks)
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

pub async fn asset(PagePath(name): PagePath<String>) -> Response {
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
