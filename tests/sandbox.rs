//! Hostile components are contained: each fails its own step with a message
//! naming the step, the component and what happened, the host stays usable
//! for the next run, and a user's `.wasm` replaces a built-in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use sluice::engine::EngineConfig;
use sluice::run::{RunEvent, Status};

fn hostile_flow(action_with: &str, extra: &str) -> String {
    let hostile = fixture("hostile");
    format!(
        r#"
name = "hostile"

[connections.api]
base_url = "http://127.0.0.1:9/api"

[connections.other]
base_url = "http://127.0.0.1:9/other"

[[step]]
id = "bad"
uses = "{}"
connections = ["api"]
timeout = "2s"
with = {action_with}
{extra}

[[step]]
id = "after"
uses = "{}"
with = {{ action = "echo", value = "still here" }}
"#,
        hostile.display(),
        hostile.display()
    )
}

/// Runs the hostile step, expects it contained; returns its run's events.
async fn expect_contained(action_with: &str, expected: &[&str]) -> Vec<RunEvent> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(dir.path(), "flow.toml", &hostile_flow(action_with, ""));
    let flow = load(&path, &[]);
    let config = EngineConfig {
        memory_limit: 64 * 1024 * 1024,
        ..EngineConfig::default()
    };
    let runner = runner(config);
    let (outcome, events) = run(&runner, &flow, dir.path(), false).await;
    assert_eq!(outcome.status, Status::Failed, "{}", events.text());
    let contained = events.events();
    let error = outcome.error.clone().unwrap_or_default();
    assert!(error.contains("step `bad`"), "{error}");
    assert!(error.contains("hostile"), "names the component: {error}");
    for needle in expected {
        assert!(error.contains(needle), "expected {needle:?} in {error:?}");
    }
    assert!(
        !outcome.outputs.contains_key("after"),
        "the flow stopped at the failed step"
    );
    // The same runner (engine, linker, caches) still works.
    let ok = write_flow(
        dir.path(),
        "ok.toml",
        &hostile_flow(r#"{ action = "echo", value = 1 }"#, ""),
    );
    let (outcome, events) = run(&runner, &load(&ok, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["after"]["value"], json!("still here"));
    contained
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_the_timeout() {
    let events = expect_contained(
        r#"{ action = "loop" }"#,
        &["ran longer than its timeout of 2s"],
    )
    .await;
    let ran = events
        .iter()
        .find_map(|e| match e {
            RunEvent::StepFinished { step, duration, .. } if step == "bad" => Some(*duration),
            _ => None,
        })
        .expect("the step's end is recorded");
    // Stopped at its timeout: not before (a loop is not an error), and not
    // much after. The engine checks the deadline every 10 ms epoch tick;
    // the second allowed past it is for a busy machine, not the engine.
    assert!(ran >= Duration::from_secs(2), "stopped after {ran:?}");
    assert!(ran < Duration::from_secs(3), "stopped after {ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_cap() {
    expect_contained(
        r#"{ action = "hog" }"#,
        &["exceeded its memory limit", "limit 67108864 bytes"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_trap_with_the_panic_message() {
    expect_contained(
        r#"{ action = "trap" }"#,
        &["it trapped", "panicked", "hostile component asked to trap"],
    )
    .await;
}

/// The hostile component recurses ever deeper and calls `then` (`log` or
/// `send`) at the bottom each time. At some depth the host function runs
/// with almost no WebAssembly stack left; it must still have room of its
/// own, so the step ends with a stack-overflow trap and the host lives on.
async fn deep_recursion_is_contained(then: &str) {
    let server = TestServer::start(|_, _| json_reply(200, json!({"ok": true}))).await;
    let hostile = fixture("hostile");
    let flow = |action: &str| {
        format!(
            r#"
name = "deep"
[connections.api]
base_url = "{}/api"

[[step]]
id = "bad"
uses = "{}"
connections = ["api"]
timeout = "2m"
with = {action}
"#,
            server.url,
            hostile.display()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(EngineConfig::default());
    let path = write_flow(
        dir.path(),
        "deep.toml",
        &flow(&format!(
            r#"{{ action = "deep", then = "{then}", connection = "api", step = 16 }}"#
        )),
    );
    let (outcome, events) = run(&runner, &load(&path, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Failed, "{}", events.text());
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("step `bad`") && error.contains("call stack exhausted"),
        "{error}"
    );
    let calls = if then == "send" {
        server.to("/api/deep").len()
    } else {
        events.text().matches(r#""message":"deep""#).count()
    };
    assert!(
        calls > 10,
        "{then} was called at growing depths before the stack ran out ({calls})"
    );
    // The same runner still runs components and sends requests.
    let path = write_flow(
        dir.path(),
        "ok.toml",
        &flow(r#"{ action = "get", connection = "api", url = "after" }"#),
    );
    let (outcome, events) = run(&runner, &load(&path, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["bad"]["status"], json!(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_then_log_is_a_stack_overflow_not_a_host_crash() {
    deep_recursion_is_contained("log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_then_send_is_a_stack_overflow_not_a_host_crash() {
    deep_recursion_is_contained("send").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_output_is_refused() {
    expect_contained(r#"{ action = "bad-json" }"#, &["output is not valid JSON"]).await;
}

/// JSON that a `Value` cannot hold (a number out of range, a lone
/// surrogate) fails its own step: accepted, it was read as `null`, `0` or
/// empty by every later reader, a `when` skipped steps on it and the run
/// succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_a_value_cannot_hold_is_refused() {
    expect_contained(
        r#"{ action = "raw", raw = '{"n": 1e400}' }"#,
        &["output is not valid JSON", "number out of range"],
    )
    .await;
    expect_contained(
        r#"{ action = "raw", raw = '{"s": "caf\ud800e"}' }"#,
        &["output is not valid JSON", "hex escape"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_not_granted_is_a_sandbox_violation() {
    expect_contained(
        r#"{ action = "ungranted", connection = "other" }"#,
        &["sandbox violation", "not granted connection `other`"],
    )
    .await;
    expect_contained(
        r#"{ action = "ungranted", connection = "nonexistent" }"#,
        &["not granted connection `nonexistent`"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_the_base_url_is_a_sandbox_violation() {
    for (url, needle) in [
        (
            "https://evil.example/steal",
            "outside the connection's base URL",
        ),
        (
            "http://127.0.0.1:9/other/x",
            "outside the connection's base URL",
        ),
        ("../other/x", "`..` or `.` path segment"),
        ("%2e%2e/other", "`..` or `.` path segment"),
        ("a%2f..%2fother", "encoded"),
        (
            "http://user:pw@127.0.0.1:9/api/x",
            "carries a user name or password",
        ),
        (
            "http://127.0.0.2:9/api/x",
            "outside the connection's base URL",
        ),
    ] {
        expect_contained(
            &format!(r#"{{ action = "escape", connection = "api", url = "{url}" }}"#),
            &["sandbox violation", needle],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_continue_lets_the_flow_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(
        dir.path(),
        "flow.toml",
        &hostile_flow(r#"{ action = "trap" }"#, r#"on_error = "continue""#),
    );
    let runner = runner(EngineConfig::default());
    let (outcome, events) = run(&runner, &load(&path, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["bad"], json!(null));
    assert_eq!(outcome.outputs["after"]["value"], json!("still here"));
    assert!(events.text().contains(r#""status":"failed""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_state_leaks_between_items_and_items_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = fixture("hostile");
    let text = format!(
        r#"
name = "items"
[params]
items = [1, 2, 3, 4, 5, 6, 7, 8]

[[step]]
id = "each"
uses = "{}"
for_each = "${{params.items}}"
concurrency = 3
with = {{ action = "counter", item = "${{item}}" }}
"#,
        hostile.display()
    );
    let path = write_flow(dir.path(), "flow.toml", &text);
    let runner = runner(EngineConfig::default());
    let (outcome, events) = run_keeping_items(&runner, &load(&path, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let items = outcome.outputs["each"]["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 8);
    for (i, entry) in items.iter().enumerate() {
        assert_eq!(entry["item"], json!(i + 1));
        // A static counter inside the component starts at zero in every fresh instance.
        assert_eq!(entry["output"]["calls"], json!(1), "{entry}");
    }
}

/// A failed item stops its step naming the item, counted from 1, and its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_item_is_named_by_its_place_and_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = fixture("hostile");
    let text = format!(
        r#"
name = "items"
[params]
items = [{{ key = "ann@x.com", action = "echo" }}, {{ key = "bob@x.com", action = "unavailable" }}]

[[step]]
id = "each"
uses = "{}"
for_each = "${{params.items}}"
for_each_key = "${{item.key}}"
with = {{ action = "${{item.action}}", message = "down" }}
"#,
        hostile.display()
    );
    let path = write_flow(dir.path(), "flow.toml", &text);
    let runner = runner(EngineConfig::default());
    let (outcome, events) = run(&runner, &load(&path, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Failed, "{}", events.text());
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("item 2 of 2 (key `bob@x.com`) failed"),
        "{error}"
    );
}

/// Each step's end says how much linear memory its instances held beside
/// their cap: one call's, and under `for_each` the largest item's (not
/// their sum: each item has its own instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_end_says_how_near_its_memory_cap_it_came() {
    const MIB: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let hostile = fixture("hostile");
    let text = format!(
        r#"
name = "memory"
[params]
sizes = [2, 40, 8]

[[step]]
id = "once"
uses = "{hostile}"
with = {{ action = "hold", mib = 20 }}

[[step]]
id = "each"
uses = "{hostile}"
for_each = "${{params.sizes}}"
concurrency = 1
with = {{ action = "hold", mib = "${{item}}" }}
"#,
        hostile = hostile.display()
    );
    let path = write_flow(dir.path(), "flow.toml", &text);
    let config = EngineConfig {
        memory_limit: 64 * MIB,
        ..EngineConfig::default()
    };
    let (outcome, events) = run(&runner(config), &load(&path, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let memory = |step: &str| {
        events
            .events()
            .into_iter()
            .find_map(|e| match e {
                RunEvent::StepFinished {
                    step: s, memory, ..
                } if s == step => memory,
                _ => None,
            })
            .unwrap_or_else(|| panic!("no memory for step {step}: {}", events.text()))
    };
    let once = memory("once");
    assert_eq!(once.limit, 64 * MIB);
    // What it held, and less than that plus the component's own few MiB.
    assert!((20 * MIB..30 * MIB).contains(&once.peak), "{once:?}");
    let each = memory("each");
    assert!((40 * MIB..50 * MIB).contains(&each.peak), "{each:?}");
    // `--json` and the serve log carry it as the event's field.
    let json = format!(
        "\"memory\":{{\"peak\":{},\"limit\":{}}}",
        each.peak,
        64 * MIB
    );
    assert!(events.text().contains(&json), "{}", events.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_component_replaces_a_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let flow = |uses: &str| {
        format!(
            r#"
name = "custom"
[params]
people = [{{ key = "a@x.com" }}, {{ key = "b@x.com" }}]
procore = [{{ id = 1, login = "A@x.com", email_address = "a@x.com", is_active = true }}]

[[step]]
id = "diff"
uses = "{uses}"
with = {{ people = "${{params.people}}", procore_users = "${{params.procore}}" }}
"#
        )
    };
    let runner = runner(EngineConfig::default());
    let builtin = write_flow(dir.path(), "builtin.toml", &flow("compare"));
    let (outcome, events) = run(&runner, &load(&builtin, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(
        outcome.outputs["diff"]["missing"][0]["key"],
        json!("b@x.com")
    );
    assert_eq!(outcome.outputs["diff"].get("custom"), None);
    // The same flow pointing at the user's own build of compare.
    std::fs::copy(
        fixture("custom-compare"),
        dir.path().join("my-compare.wasm"),
    )
    .unwrap();
    let custom = write_flow(dir.path(), "custom.toml", &flow("./my-compare.wasm"));
    let (outcome, events) = run(&runner, &load(&custom, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    assert_eq!(outcome.outputs["diff"]["custom"], json!(true));
    assert_eq!(
        outcome.outputs["diff"]["missing"][0]["key"],
        json!("b@x.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_component_fails_before_any_step_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A component's header, so that the flow compiles; junk after it, which
    // the engine refuses when the run loads it.
    std::fs::write(
        dir.path().join("junk.wasm"),
        b"\0asm\x0d\x00\x01\x00 not really",
    )
    .unwrap();
    let hostile = fixture("hostile");
    let text = format!(
        "name = \"junk\"\n[[step]]\nid = \"first\"\nuses = \"{}\"\nwith = {{ action = \"echo\" }}\n[[step]]\nid = \"second\"\nuses = \"junk.wasm\"\n",
        hostile.display()
    );
    let path = write_flow(dir.path(), "flow.toml", &text);
    let runner = runner(EngineConfig::default());
    let (outcome, events) = run(&runner, &load(&path, &[]), dir.path(), false).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("step `second` cannot load component"),
        "{error}"
    );
    assert!(
        !events.text().contains("step_started"),
        "no step may run: {}",
        events.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = std::fs::read(fixture("noop")).unwrap();
    let first = sluice::engine::Engine::new(EngineConfig {
        cache_dir: Some(cache.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        first.prepare(&bytes).unwrap().origin,
        sluice::engine::Origin::Compiled
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    // A second process (a fresh engine) loads it instead of compiling.
    let second = sluice::engine::Engine::new(EngineConfig {
        cache_dir: Some(cache.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        second.prepare(&bytes).unwrap().origin,
        sluice::engine::Origin::Cached
    );
    // A corrupt entry is compiled again rather than trusted.
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = sluice::engine::Engine::new(EngineConfig {
        cache_dir: Some(cache),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        third.prepare(&bytes).unwrap().origin,
        sluice::engine::Origin::Compiled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_filesystem_no_environment_no_sockets() {
    // A port that is really listening on loopback, so only the sandbox can stop the connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = write_flow(
        dir.path(),
        "flow.toml",
        &hostile_flow(
            &format!(r#"{{ action = "escape-sandbox", address = "{address}" }}"#),
            "",
        ),
    );
    let runner = runner(EngineConfig::default());
    let (outcome, events) = run(
        &runner,
        &load(&path, &[("HOME", "/root")]),
        dir.path(),
        false,
    )
    .await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
    let out = &outcome.outputs["bad"];
    assert!(
        out["read_dir"].as_str().unwrap().starts_with("Err"),
        "{out}"
    );
    assert!(
        out["read_file"].as_str().unwrap().starts_with("Err"),
        "{out}"
    );
    assert_eq!(out["env"], json!([]), "{out}");
    assert!(out["socket"].as_str().unwrap().starts_with("Err"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_component_builds_and_runs() {
    // The fixture is the README's code, but for where it finds the WIT.
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let fixture_src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/readme-example/src/lib.rs"),
    )
    .unwrap();
    let body = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.starts_with("//") && !l.contains("wit_bindgen::generate!"))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string()
    };
    let start = readme.find("`src/lib.rs`:\n\n```rust\n").unwrap();
    let block = &readme[start..];
    let block = &block[block.find("```rust\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    assert_eq!(
        body(block),
        body(&fixture_src),
        "README example and fixture differ"
    );

    let server =
        common::TestServer::start(|_, _| common::json_reply(200, json!({"value": []}))).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name = \"readme\"\n[connections.graph]\nbase_url = \"{}/v1.0\"\n[[step]]\nid = \"mine\"\nuses = \"{}\"\nconnections = [\"graph\"]\nwith = {{ name = \"Ada\" }}\n",
        server.url,
        fixture("readme-example").display()
    );
    let path = write_flow(dir.path(), "flow.toml", &text);
    let flow = load(&path, &[]);
    let runner = runner(EngineConfig::default());
    // Two runs count two greetings; a rehearsal in between sees the count
    // and keeps nothing.
    for (dry_run, times) in [(false, 1), (true, 2), (false, 2)] {
        let (outcome, events) = run(&runner, &flow, dir.path(), dry_run).await;
        assert_eq!(outcome.status, Status::Succeeded, "{}", events.text());
        assert_eq!(
            outcome.outputs["mine"],
            json!({"greeting": "Hello, Ada!", "times": times, "graph_status": 200}),
            "dry run: {dry_run}"
        );
    }
    assert_eq!(server.requests()[0].path, "/v1.0/groups");
    assert_eq!(server.requests()[0].query, "$top=1");
    // What `describe` says, from the types and the crate.
    let bytes = std::fs::read(fixture("readme-example")).unwrap();
    let prepared = runner.engine.prepare(&bytes).unwrap();
    let described = runner.engine.describe(&prepared).await.unwrap().unwrap();
    assert_eq!(described.name, "readme-example");
    assert_eq!(described.connections[0].role, "graph");
    assert_eq!(described.input_schema["required"], json!(["name"]));
    assert_eq!(described.input_schema["additionalProperties"], json!(false));
}

/// The step context and run context of a call made on the engine directly.
fn direct_call(
    state: &Arc<dyn sluice::state::StateStore>,
    cap: sluice::engine::OutputCap,
) -> sluice::engine::Call {
    let step = Arc::new(sluice::engine::StepContext {
        step_id: "pool".into(),
        component: "hostile".into(),
        granted: Default::default(),
        dry_run: false,
        lease: None,
        log: Arc::new(|_: sluice::engine::LogLevel, _: &str| {}),
        stats: Default::default(),
        memory: Default::default(),
    });
    sluice::engine::Call {
        step,
        invocation: sluice::engine::Invocation {
            run_id: "pool".into(),
            flow: "pool".into(),
            step: "pool".into(),
            item_index: None,
            item_key: None,
            dry_run: false,
            started_at: "2025-01-01T00:00:00+00:00".into(),
            attempt: 1,
        },
        state: sluice::state::CallState::new(state.clone(), "pool", "run", None),
        paged: Default::default(),
        outputs: sluice::engine::OutputLists::none(cap),
        waiting: Default::default(),
    }
}

/// A call of a component, as a future that owns what it uses (so it can
/// be spawned).
type PendingCall = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<sluice::engine::CallOutput, sluice::engine::CallError>,
            > + Send,
    >,
>;

/// The hostile fixture on an engine whose pool holds one instance, and a
/// call of it with the given input.
fn hostile_on_a_pool_of_one() -> (Arc<sluice::engine::Engine>, impl Fn(&str) -> PendingCall) {
    use sluice::engine::{Engine, OutputCap, PoolSize};
    let engine = Engine::new(EngineConfig {
        pool: PoolSize { instances: 1 },
        ..EngineConfig::default()
    })
    .unwrap();
    let hostile = engine
        .prepare(&std::fs::read(fixture("hostile")).unwrap())
        .unwrap();
    let state: Arc<dyn sluice::state::StateStore> = Arc::new(sluice::state::MemoryStore::default());
    let cap = OutputCap {
        bytes: 1 << 20,
        key: "max_output_bytes",
    };
    let on = engine.clone();
    let call = move |input: &str| {
        let (engine, hostile, state) = (on.clone(), hostile.clone(), state.clone());
        let input = input.to_string();
        Box::pin(async move {
            engine
                .call(
                    &hostile,
                    direct_call(&state, cap),
                    input,
                    Duration::from_secs(600),
                )
                .await
        }) as PendingCall
    };
    (engine, call)
}

/// A pool of one instance: while a call holds its slot, the next call is
/// served by the on-demand allocator and succeeds; once the slot is free
/// again, the pool serves the call after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_serves_the_next_call_on_demand() {
    let (engine, call) = hostile_on_a_pool_of_one();
    // The first call sleeps (in the host, on WASI's clock) holding the slot.
    let holder = tokio::spawn(call(r#"{"action":"sleep","ms":600000}"#));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // Counted once its instance is made (holding the slot alone is not
    // enough: a call aborted while instantiating is never counted).
    while engine.pool_stats().pooled == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first call never took the slot"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = call(r#"{"action":"echo","value":"on demand"}"#)
        .await
        .unwrap();
    assert_eq!(second.value().unwrap()["value"], "on demand");
    let stats = engine.pool_stats();
    assert_eq!((stats.in_use, stats.on_demand), (1, 1), "{stats:?}");
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert_eq!(engine.pool_stats().in_use, 0);
    let third = call(r#"{"action":"echo","value":"pooled"}"#).await.unwrap();
    assert_eq!(third.value().unwrap()["value"], "pooled");
    let stats = engine.pool_stats();
    assert_eq!(
        (stats.pooled, stats.on_demand, stats.in_use),
        (2, 1, 0),
        "{stats:?}"
    );
}

/// A pool of one instance, reused by every call: whatever an instance
/// wrote (a static counter, megabytes of heap, the state of a trap) is
/// gone when the next one starts in the same slot, whether the slot was
/// reset in place or unmapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_pool_slot_starts_from_the_components_image() {
    use sluice::engine::CallError;
    let (engine, call) = hostile_on_a_pool_of_one();
    let counter = r#"{"action":"counter"}"#;
    for round in 0..3 {
        // More written than a slot keeps resident, then less.
        let held = call(r#"{"action":"hold","mib":4}"#).await.unwrap();
        assert_eq!(held.value().unwrap()["held_mib"], 4, "round {round}");
        assert_eq!(call(counter).await.unwrap().value().unwrap()["calls"], 1);
        assert_eq!(call(counter).await.unwrap().value().unwrap()["calls"], 1);
        let trapped = call(r#"{"action":"trap"}"#).await.unwrap_err();
        assert!(matches!(trapped, CallError::Trap(_)), "{trapped:?}");
        assert_eq!(call(counter).await.unwrap().value().unwrap()["calls"], 1);
    }
    let stats = engine.pool_stats();
    assert_eq!(
        (stats.pooled, stats.on_demand, stats.in_use),
        (15, 0, 0),
        "{stats:?}"
    );
}
