//! Helpers shared by the end-to-end tests: fixtures, flow files in temporary
//! folders, an observer that keeps every event, and a loopback HTTP server
//! whose behaviour each test scripts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod console_child;
pub mod emulated;
pub mod examples;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sluice::engine::{Engine, EngineConfig};
use std::collections::BTreeMap;

use sluice::flow::{ComponentCatalog, Context, Flow, Undescribed};
use sluice::run::{Observer, RunEvent, RunOptions, RunOutcome, Runner};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(
        sluice_builtins::fixture(name).unwrap_or_else(|| panic!("fixture {name} was not built")),
    )
}

pub fn write_flow(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn load(path: &Path, env: &[(&str, &str)]) -> Flow {
    load_with(path, env, &Undescribed)
}

/// [`load`] as `sluice run` loads a flow: each component describes itself
/// through `runner`'s engine, and the flow keeps its input schemas (a list
/// marked paged is then read in pages).
pub fn load_described(path: &Path, env: &[(&str, &str)], runner: &Runner) -> Flow {
    let catalog = sluice::engine::catalog::EngineCatalog::new(runner.engine.clone());
    load_with(path, env, &catalog)
}

fn load_with(path: &Path, env: &[(&str, &str)], catalog: &dyn ComponentCatalog) -> Flow {
    let builtins = sluice_builtins::names();
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ctx = Context {
        builtins: &builtins,
        catalog,
        param_overrides: &[],
        remote: &sluice::flow::NoRegistry,
    };
    match sluice::flow::load(path, &ctx, &env) {
        Ok(flow) => flow,
        Err(e) => panic!("flow does not validate:\n{e}"),
    }
}

/// Keeps every event of a run.
#[derive(Default)]
pub struct Collector(pub Mutex<Vec<RunEvent>>);

impl Observer for Collector {
    fn event(&self, event: &RunEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Collector {
    pub fn events(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap().clone()
    }
    pub fn text(&self) -> String {
        self.events()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn runner(config: EngineConfig) -> Runner {
    Runner::new(Engine::new(config).unwrap()).unwrap()
}

pub async fn run(
    runner: &Runner,
    flow: &Flow,
    dir: &Path,
    dry_run: bool,
) -> (RunOutcome, Arc<Collector>) {
    run_with(runner, flow, dir, dry_run, false).await
}

/// [`run`], keeping every `for_each` item's output in its step's output
/// (in `RunOutcome::outputs`) whether or not a later step reads them.
pub async fn run_keeping_items(
    runner: &Runner,
    flow: &Flow,
    dir: &Path,
    dry_run: bool,
) -> (RunOutcome, Arc<Collector>) {
    run_with(runner, flow, dir, dry_run, true).await
}

async fn run_with(
    runner: &Runner,
    flow: &Flow,
    dir: &Path,
    dry_run: bool,
    keep_item_outputs: bool,
) -> (RunOutcome, Arc<Collector>) {
    let collector = Arc::new(Collector::default());
    let run_id = sluice::run::new_run_id();
    let mut options = RunOptions::new(run_id.clone(), dir.join("runs").join(&run_id), dry_run);
    options.keep_item_outputs = keep_item_outputs;
    let outcome = runner.run(flow, &options, collector.clone()).await;
    (outcome, collector)
}

/// One request as the test server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: std::time::Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type Reply = (u16, Vec<(String, String)>, String);
type Script = dyn Fn(&Seen, &[Seen]) -> Reply + Send + Sync;

/// A loopback HTTP server that records every request and answers each with
/// whatever the test's script says (given the request and all earlier ones).
pub struct TestServer {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    pub async fn start(
        script: impl Fn(&Seen, &[Seen]) -> Reply + Send + Sync + 'static,
    ) -> TestServer {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, Uri};
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let state = (seen.clone(), script);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (seen, script) = state.clone();
                async move {
                    let request = Seen {
                        method: method.to_string(),
                        path: uri.path().to_string(),
                        query: uri.query().unwrap_or("").to_string(),
                        headers: headers
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        at: std::time::Instant::now(),
                    };
                    let (status, headers, body) = {
                        let mut all = seen.lock().unwrap();
                        let reply = script(&request, &all);
                        all.push(request);
                        reply
                    };
                    let mut response = axum::response::Response::builder().status(status);
                    for (n, v) in headers {
                        response = response.header(n, v);
                    }
                    response.body(axum::body::Body::from(body)).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer { url, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn to(&self, path: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.path == path)
            .collect()
    }
}

pub fn json_reply(status: u16, body: serde_json::Value) -> Reply {
    (
        status,
        vec![("content-type".into(), "application/json".into())],
        body.to_string(),
    )
}

pub fn token_reply(token: &str, expires_in: u64) -> Reply {
    json_reply(
        200,
        serde_json::json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in}),
    )
}
