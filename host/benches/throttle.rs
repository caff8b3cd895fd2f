//! `cargo bench -p sluice --bench throttle [-- --per-minute]`: a connection
//! at a server's budget. The server allows R requests per fixed window (one
//! second by default; one minute with `--per-minute`, as Procore counts)
//! and answers 429 past it; the client sends N requests, four at a time.
//! Prints the elapsed time beside the ideal N/R and beside the best any
//! client can do against fixed windows (all of a window's budget at its
//! start), and how many 429s the server sent, for a server that announces
//! its budget (`X-Rate-Limit-*`) and for one that only says `Retry-After`
//! when it is too late.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use sluice::connections::{Connection, Method, OutgoingRequest};
use sluice::flow::model::ConnectionSpec;
use sluice::redact::Redactor;

const CONCURRENCY: usize = 4;

/// The server's budget: `budget` requests per `window_secs`, and the run.
#[derive(Clone, Copy)]
struct Setup {
    window_secs: u64,
    budget: u64,
    requests: u64,
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

async fn server(setup: Setup, announce: bool) -> (String, Arc<AtomicU64>) {
    let windows: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let r = refused.clone();
    let app = axum::Router::new().fallback(move || {
        let (windows, refused) = (windows.clone(), r.clone());
        async move {
            let now = unix_now();
            let window = now.as_secs() / setup.window_secs;
            let reset = (window + 1) * setup.window_secs;
            let used = {
                let mut w = windows.lock().unwrap();
                let used = w.entry(window).or_default();
                *used += 1;
                *used
            };
            let mut headers = HeaderMap::new();
            if announce {
                headers.insert("x-rate-limit-limit", setup.budget.into());
                headers.insert(
                    "x-rate-limit-remaining",
                    setup.budget.saturating_sub(used).into(),
                );
                headers.insert("x-rate-limit-reset", reset.into());
            }
            if used > setup.budget {
                refused.fetch_add(1, Ordering::SeqCst);
                let wait = reset as f64 - now.as_secs_f64();
                headers.insert("retry-after", format!("{wait:.3}").parse().unwrap());
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    headers,
                    "Too Many Requests".to_string(),
                );
            }
            (StatusCode::OK, headers, "{}".to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, refused)
}

/// The soonest the last request can go out when the run starts at `start`
/// (Unix time): each window lets `budget` through at its start.
fn best_possible(setup: Setup, start: Duration) -> Duration {
    let windows_needed = setup.requests.div_ceil(setup.budget);
    let window = Duration::from_secs(setup.window_secs);
    let first_window_end =
        Duration::from_secs((start.as_secs() / setup.window_secs + 1) * setup.window_secs);
    if windows_needed <= 1 {
        return Duration::ZERO;
    }
    (first_window_end - start) + window * (windows_needed as u32 - 2)
}

async fn run(setup: Setup, announce: bool) {
    let (url, refused) = server(setup, announce).await;
    let spec = Arc::new(ConnectionSpec::new(
        "api",
        url::Url::parse(&format!("{url}/api")).unwrap(),
    ));
    let conn = Arc::new(Connection::new(
        spec,
        sluice::connections::http_client().unwrap(),
        Redactor::default(),
    ));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let best = best_possible(setup, unix_now());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (conn, next) = (conn.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < setup.requests {
                let request = OutgoingRequest {
                    method: Method::Get,
                    url: "x".into(),
                    query: vec![],
                    headers: vec![],
                    body: None,
                    idempotent: false,
                    retry_when_not_acted: false,
                };
                let (result, _) = conn.send(request, false, None).await;
                assert_eq!(result.unwrap().status, 200);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let ideal = setup.requests as f64 * setup.window_secs as f64 / setup.budget as f64;
    println!(
        "{:<44} elapsed {:>7.2} s   N/R {:>7.2} s (x{:.3})   best vs fixed windows {:>7.2} s (x{:.3})   429s {}",
        if announce {
            "server announces its budget (X-Rate-Limit-*)"
        } else {
            "server only answers 429 + Retry-After"
        },
        elapsed,
        ideal,
        elapsed / ideal,
        best.as_secs_f64(),
        elapsed / best.as_secs_f64().max(f64::EPSILON),
        refused.load(Ordering::SeqCst)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let per_minute = std::env::args().any(|a| a == "--per-minute");
    let setup = if per_minute {
        Setup {
            window_secs: 60,
            budget: 100,
            requests: 300,
        }
    } else {
        Setup {
            window_secs: 1,
            budget: 20,
            requests: 200,
        }
    };
    println!(
        "N = {} requests, budget R = {} per {}-second window, {CONCURRENCY} at a time\n",
        setup.requests, setup.budget, setup.window_secs
    );
    run(setup, true).await;
    run(setup, false).await;
}
