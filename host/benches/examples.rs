//! `cargo bench -p sluice --bench examples`: the example components of
//! other languages (examples/, built by scripts/build-examples with the
//! tools scripts/test-deps installs) beside the Rust built-ins they
//! replace, in one run: size, compiling cold, loading from the disk cache,
//! and one call (instantiate and run) on the same input of a tenant of
//! `PEOPLE` license holders. Prints medians and the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::engine::{Engine, EngineConfig, Prepared};
use sluice::state::{MemoryStore, StateStore};
use support::{call, context, median, show};

/// License holders in the bench's tenant; as many Procore users, a tenth
/// of the holders missing from Procore.
const PEOPLE: usize = 2000;
const CALLS: usize = 30;
const CACHED_LOADS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let built = build_examples();
    println!("sluice examples bench (medians; {PEOPLE} license holders)\n");
    let input = compare_input();
    let diff = pair("compare", "python-compare", &built[0], &input).await;
    pair(
        "html-report",
        "js-csv-report",
        &built[1],
        &report_input(diff),
    )
    .await;
}

/// Runs scripts/build-examples (it rebuilds nothing that is up to date).
fn build_examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(root.join("scripts/build-examples"))
        .current_dir(&root)
        .output()
        .expect("run scripts/build-examples");
    assert!(
        out.status.success(),
        "scripts/build-examples failed (run scripts/test-deps first):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// The built-in and the example on one input, side by side; returns the
/// built-in's output.
async fn pair(builtin: &str, example: &str, path: &Path, input: &Value) -> Value {
    let ours = sluice_builtins::find(builtin).unwrap().wasm.to_vec();
    let theirs = std::fs::read(path).unwrap();
    println!("{builtin} (Rust) beside {example}");
    println!(
        "  size: {} KiB beside {} KiB ({:.0}x)",
        ours.len() / 1024,
        theirs.len() / 1024,
        theirs.len() as f64 / ours.len() as f64
    );
    let (ours_cold, ours_cached) = compile(&ours);
    let (theirs_cold, theirs_cached) = compile(&theirs);
    show(&format!("  cold compile, {builtin}"), ours_cold);
    show(&format!("  cold compile, {example}"), theirs_cold);
    ratio(theirs_cold, ours_cold);
    show(&format!("  from the disk cache, {builtin}"), ours_cached);
    show(&format!("  from the disk cache, {example}"), theirs_cached);
    ratio(theirs_cached, ours_cached);
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let (a, b) = (
        engine.prepare(&ours).unwrap(),
        engine.prepare(&theirs).unwrap(),
    );
    let text = input.to_string();
    let (mut ours_calls, mut theirs_calls) = (Vec::new(), Vec::new());
    let mut output = Value::Null;
    // Interleaved, so drift in machine load hits both alike.
    for _ in 0..CALLS {
        let (d, out) = timed_call(&engine, &a, &text).await;
        ours_calls.push(d);
        output = out;
        theirs_calls.push(timed_call(&engine, &b, &text).await.0);
    }
    let (o, t) = (median(ours_calls), median(theirs_calls));
    println!("  one call (instantiate + run), {CALLS} calls each");
    show(&format!("    {builtin}"), o);
    show(&format!("    {example}"), t);
    ratio(t, o);
    println!();
    output
}

fn ratio(theirs: Duration, ours: Duration) {
    println!(
        "  ratio example / built-in: {:.1}x",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

/// One cold compile (a runtime-sized component takes tens of seconds), then
/// the median of loads from the disk cache by fresh engines.
fn compile(bytes: &[u8]) -> (Duration, Duration) {
    let cache = tempfile::tempdir().unwrap();
    let config = || EngineConfig {
        cache_dir: Some(cache.path().join("cache")),
        ..Default::default()
    };
    let t = Instant::now();
    Engine::new(config()).unwrap().prepare(bytes).unwrap();
    let cold = t.elapsed();
    let cached = (0..CACHED_LOADS)
        .map(|_| {
            let engine = Engine::new(config()).unwrap();
            let t = Instant::now();
            let p = engine.prepare(bytes).unwrap();
            assert_eq!(p.origin, sluice::engine::Origin::Cached);
            t.elapsed()
        })
        .collect();
    (cold, median(cached))
}

async fn timed_call(engine: &Engine, prepared: &Prepared, input: &str) -> (Duration, Value) {
    let ctx = context(BTreeMap::new());
    let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    let t = Instant::now();
    let out = engine
        .call(
            prepared,
            call(&ctx, &state),
            input.to_string(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    // Parsed inside the timing, as the engine used to parse it.
    let output = out.value().unwrap();
    (t.elapsed(), output)
}

/// `PEOPLE` license holders and as many Procore users: every tenth holder
/// is missing from Procore, whose other users hold no license (every
/// twentieth of those is inactive).
fn compare_input() -> Value {
    let person = |i: usize| {
        json!({
            "key": format!("person{i}@contoso.com"),
            "id": format!("00000000-0000-0000-0000-{i:012}"),
            "mail": format!("Person{i}@contoso.com"),
            "userPrincipalName": format!("person{i}@contoso.onmicrosoft.com"),
            "displayName": format!("Person {i}"),
            "givenName": "Person",
            "surname": format!("{i}"),
        })
    };
    let user = |i: usize| {
        json!({
            "id": 1000 + i,
            "login": format!("person{i}@contoso.com"),
            "email_address": format!("Person{i}@contoso.com"),
            "first_name": "Person",
            "last_name": format!("{i}"),
            "is_active": !i.is_multiple_of(20),
        })
    };
    json!({
        "people": (0..PEOPLE).map(person).collect::<Vec<_>>(),
        "procore_users": (0..PEOPLE).filter(|i| !i.is_multiple_of(10)).map(user)
            .chain((PEOPLE..PEOPLE + PEOPLE / 10).map(user)).collect::<Vec<_>>(),
    })
}

/// The report's input: the diff, and a create step that created everyone
/// missing.
fn report_input(diff: Value) -> Value {
    let items: Vec<Value> = diff["missing"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(n, person)| {
            json!({
                "item": person,
                "status": "ok",
                "output": {
                    "key": person["key"],
                    "display_name": person["displayName"],
                    "status": "created",
                    "procore_id": 900_000 + n,
                },
            })
        })
        .collect();
    let ok = items.len();
    json!({
        "diff": diff,
        "created": { "items": items, "ok": ok, "failed": 0 },
        "skipped_disabled": 3,
        "warnings": [],
    })
}
