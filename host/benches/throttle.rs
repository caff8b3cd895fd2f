//! `cargo bench -p sluice --bench throttle`: a connection at a server's
//! budget. The server allows R requests per one-second window and answers
//! 429 past it; the client sends N requests, four at a time. Prints the
//! elapsed time beside the ideal N/R and how many 429s the server sent, for
//! a server that announces its budget (`X-Rate-Limit-*`) and for one that
//! only says `Retry-After` when it is too late.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use sluice::connections::{Connection, Method, OutgoingRequest};
use sluice::flow::model::ConnectionSpec;
use sluice::redact::Redactor;

const R: u64 = 20;
const N: u64 = 200;
const CONCURRENCY: usize = 4;

async fn server(announce: bool) -> (String, Arc<AtomicU64>) {
    let windows: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let refused = Arc::new(AtomicU64::new(0));
    let r = refused.clone();
    let app = axum::Router::new().fallback(move || {
        let (windows, refused) = (windows.clone(), r.clone());
        async move {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            let window = now.as_secs();
            let used = {
                let mut w = windows.lock().unwrap();
                let used = w.entry(window).or_default();
                *used += 1;
                *used
            };
            let mut headers = HeaderMap::new();
            if announce {
                headers.insert("x-rate-limit-limit", R.into());
                headers.insert("x-rate-limit-remaining", R.saturating_sub(used).into());
                headers.insert("x-rate-limit-reset", (window + 1).into());
            }
            if used > R {
                refused.fetch_add(1, Ordering::SeqCst);
                let wait = 1.0 - now.subsec_millis() as f64 / 1000.0;
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

async fn run(announce: bool) {
    let (url, refused) = server(announce).await;
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
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (conn, next) = (conn.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < N {
                let request = OutgoingRequest {
                    method: Method::Get,
                    url: "x".into(),
                    query: vec![],
                    headers: vec![],
                    body: None,
                    idempotent: false,
                };
                let (result, _) = conn.send(request, false).await;
                assert_eq!(result.unwrap().status, 200);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let ideal = Duration::from_secs_f64(N as f64 / R as f64);
    println!(
        "{:<44} elapsed {:>6.2} s   ideal N/R {:>5.2} s   ratio {:.3}   429s {}",
        if announce {
            "server announces its budget (X-Rate-Limit-*)"
        } else {
            "server only answers 429 + Retry-After"
        },
        elapsed.as_secs_f64(),
        ideal.as_secs_f64(),
        elapsed.as_secs_f64() / ideal.as_secs_f64(),
        refused.load(Ordering::SeqCst)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "N = {N} requests, budget R = {R} per 1-second window ({} per minute), {CONCURRENCY} at a time\n",
        R * 60
    );
    run(true).await;
    run(false).await;
}
