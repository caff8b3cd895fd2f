//! `cargo bench -p sluice --bench engine [-- compile|call|send]`: the
//! engine's costs, in pairs so our own layers are visible. Prints medians
//! over many iterations:
//! - compiling a built-in component cold vs loading it from the disk cache;
//! - instantiate-and-call of a trivial step: raw wasmtime and Sluice, each
//!   with the pooling allocator (the same pool configuration, from
//!   `PoolSize::wasmtime`) and with the on-demand allocator;
//! - one request through `connection.send` vs the same request made natively
//!   with reqwest, against a loopback server, and through the host's
//!   `Connection::send` alone (without a component), to tell the
//!   connection's cost from the component boundary's, and through its
//!   wire alone (the reqwest call and body read `Connection::send` makes,
//!   without its retries, throttle and scrub), and through the
//!   same component on raw wasmtime whose import calls reqwest directly:
//!   the floor of the boundary for this component and this contract
//!   (wasmtime's host call and the guest's own work, with nothing of
//!   Sluice's host); made once from the main thread and once from a worker
//!   task, where runs make them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::connections::wire::{self, Wire};
use sluice::connections::{Connection, Method, OutgoingRequest};
use sluice::engine::{Engine, EngineConfig, PoolSize};
use sluice::flow::model::ConnectionSpec;
use sluice::redact::Redactor;
use sluice::state::{MemoryStore, StateStore};
use support::{call, context, median, show};

/// The allocator the `sluice` binary runs with (see its `main.rs`), so
/// that every side of the benches allocates as a run does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod raw {
    //! The same component driven by wasmtime directly, compiled and
    //! allocated as Sluice's engine does (epoch checks, stacks, the same
    //! pool), but with no limits, no deadline callback, no state view and
    //! no output check. The floor our host's cost is compared to.
    use wasmtime::component::{HasSelf, Linker, ResourceTable};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    wasmtime::component::bindgen!({
        path: "../wit",
        world: "step",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub struct State {
        wasi: WasiCtx,
        table: ResourceTable,
        native: Option<Native>,
    }

    /// What the raw host's `connection.send` sends with: reqwest straight,
    /// to `base` followed by the request's URL, with none of Sluice's
    /// connection layer. Without it, `send` answers `unavailable`.
    #[derive(Clone)]
    pub struct Native {
        pub http: reqwest::Client,
        pub base: String,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    impl sluice::flow::types::Host for State {}

    impl sluice::flow::log::Host for State {
        async fn log(&mut self, _: sluice::flow::log::Level, _: String) -> wasmtime::Result<()> {
            Ok(())
        }
    }

    impl sluice::flow::state::Host for State {
        async fn get(
            &mut self,
            _: String,
        ) -> wasmtime::Result<Result<Option<String>, sluice::flow::state::StateError>> {
            Ok(Ok(None))
        }
        async fn set(
            &mut self,
            _: String,
            _: String,
        ) -> wasmtime::Result<Result<(), sluice::flow::state::StateError>> {
            Ok(Ok(()))
        }
        async fn delete(
            &mut self,
            _: String,
        ) -> wasmtime::Result<Result<(), sluice::flow::state::StateError>> {
            Ok(Ok(()))
        }
        async fn commit(
            &mut self,
        ) -> wasmtime::Result<Result<(), sluice::flow::state::StateError>> {
            Ok(Ok(()))
        }
        async fn list(
            &mut self,
            _: String,
            _: Option<String>,
            _: u32,
        ) -> wasmtime::Result<Result<sluice::flow::state::Page, sluice::flow::state::StateError>>
        {
            Ok(Ok(sluice::flow::state::Page {
                entries: vec![],
                next: None,
            }))
        }
    }

    impl sluice::flow::connection::Host for State {
        async fn send(
            &mut self,
            _: String,
            request: sluice::flow::connection::Request,
        ) -> wasmtime::Result<
            Result<sluice::flow::connection::Response, sluice::flow::connection::SendError>,
        > {
            use self::sluice::flow::connection::{Response, SendError};
            let Some(native) = &self.native else {
                return Ok(Err(SendError::Unavailable("raw".into())));
            };
            // The bench's requests are GETs without a body or a query.
            let mut outgoing = native.http.get(format!("{}/{}", native.base, request.url));
            for (name, value) in &request.headers {
                outgoing = outgoing.header(name, value);
            }
            let response = outgoing.send().await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_string(), value)
                })
                .collect();
            let body = response.bytes().await?.to_vec();
            Ok(Ok(Response {
                status,
                headers,
                body,
            }))
        }
    }

    impl sluice::flow::paged::Host for State {
        async fn length(
            &mut self,
            name: String,
        ) -> wasmtime::Result<Result<u64, sluice::flow::paged::PageError>> {
            Ok(Err(sluice::flow::paged::PageError::UnknownList(name)))
        }
        async fn page(
            &mut self,
            name: String,
            _: u64,
            _: u32,
        ) -> wasmtime::Result<Result<String, sluice::flow::paged::PageError>> {
            Ok(Err(sluice::flow::paged::PageError::UnknownList(name)))
        }
    }

    impl sluice::flow::paged_output::Host for State {
        async fn append(
            &mut self,
            name: String,
            _: String,
        ) -> wasmtime::Result<Result<(), sluice::flow::paged_output::AppendError>> {
            Ok(Err(sluice::flow::paged_output::AppendError::UnknownList(
                name,
            )))
        }
    }

    pub struct Raw {
        engine: wasmtime::Engine,
        pre: StepPre<State>,
        native: Option<Native>,
    }

    impl Raw {
        pub fn new(bytes: &[u8], pool: Option<super::PoolSize>) -> Raw {
            let engine_config = super::EngineConfig::default();
            let mut config = wasmtime::Config::new();
            config
                .wasm_component_model(true)
                .epoch_interruption(true)
                .max_wasm_stack(engine_config.max_wasm_stack)
                .async_stack_size(engine_config.async_stack_size())
                .memory_init_cow(true);
            if let Some(pool) = pool {
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                    pool.wasmtime(engine_config.memory_limit),
                ));
            }
            let engine = wasmtime::Engine::new(&config).unwrap();
            let mut linker = Linker::<State>::new(&engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
            Step::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).unwrap();
            let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
            let pre = StepPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
            Raw {
                engine,
                pre,
                native: None,
            }
        }

        /// The same, with a `connection.send` that makes its request
        /// with reqwest (see [`Native`]).
        pub fn with_native(self, native: Native) -> Raw {
            Raw {
                native: Some(native),
                ..self
            }
        }

        pub async fn call(&self, input: &str) -> String {
            let context = sluice::flow::types::RunContext {
                run_id: "bench".into(),
                flow: "bench".into(),
                step: "bench".into(),
                item_index: None,
                item_key: None,
                dry_run: false,
                started_at: "2025-01-01T00:00:00+00:00".into(),
                attempt: 1,
            };
            let state = State {
                wasi: wasmtime_wasi::WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
                native: self.native.clone(),
            };
            let mut store = wasmtime::Store::new(&self.engine, state);
            store.set_epoch_deadline(u64::MAX);
            let instance = self.pre.instantiate_async(&mut store).await.unwrap();
            instance
                .call_run(&mut store, &input.to_string(), &context)
                .await
                .unwrap()
                .unwrap()
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "sluice engine bench (medians; {} build)\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    // `cargo bench --bench engine -- send` runs only the benches whose name
    // holds `send` (`compile`, `call`, `send`): to profile one of them.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let machine = CpuTicks::now();
    if wanted("compile") {
        compile_bench();
    }
    if wanted("call") {
        call_bench().await;
    }
    if wanted("send") {
        send_bench(Placement::MainThread).await;
        tokio::spawn(send_bench(Placement::Worker)).await.unwrap();
    }
    if let (Some(start), Some(end)) = (machine, CpuTicks::now()) {
        println!(
            "steal: the hypervisor took {:.0}% of this machine's CPU time during the bench \
             (on a shared VM, figures from a run with much of it vary more)",
            end.steal_percent_since(&start)
        );
    }
}

/// The machine's CPU time from the `cpu` line of `/proc/stat` (Linux), in
/// clock ticks: all of it, and the part the hypervisor gave to other
/// guests (steal).
struct CpuTicks {
    all: u64,
    steal: u64,
}

impl CpuTicks {
    fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(CpuTicks {
            // guest and guest_nice (after steal) are already in user and nice.
            all: fields.iter().take(8).sum(),
            steal: *fields.get(7)?,
        })
    }

    fn steal_percent_since(&self, start: &CpuTicks) -> f64 {
        let all = self.all.saturating_sub(start.all).max(1);
        100.0 * self.steal.saturating_sub(start.steal) as f64 / all as f64
    }
}

fn compile_bench() {
    let builtin = sluice_builtins::find("compare").expect("the compare built-in");
    let cache = tempfile::tempdir().unwrap();
    let mut cold = Vec::new();
    for _ in 0..5 {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let t = Instant::now();
        engine.prepare(builtin.wasm).unwrap();
        cold.push(t.elapsed());
    }
    // Fill the cache once, then load it from a fresh engine each time.
    Engine::new(EngineConfig {
        cache_dir: Some(cache.path().into()),
        ..Default::default()
    })
    .unwrap()
    .prepare(builtin.wasm)
    .unwrap();
    let mut cached = Vec::new();
    for _ in 0..20 {
        let engine = Engine::new(EngineConfig {
            cache_dir: Some(cache.path().into()),
            ..Default::default()
        })
        .unwrap();
        let t = Instant::now();
        let p = engine.prepare(builtin.wasm).unwrap();
        cached.push(t.elapsed());
        assert_eq!(p.origin, sluice::engine::Origin::Cached);
    }
    let (cold, cached) = (median(cold), median(cached));
    println!("compile `compare` ({} KiB)", builtin.wasm.len() / 1024);
    show("  cold compile + pre-instantiate", cold);
    show("  from the disk cache + pre-instantiate", cached);
    println!(
        "  ratio cold / cached: {:.1}x\n",
        cold.as_secs_f64() / cached.as_secs_f64()
    );
}

/// One instantiate-and-call on raw wasmtime, timed.
async fn timed(raw: &raw::Raw) -> Duration {
    let t = Instant::now();
    raw.call("{}").await;
    t.elapsed()
}

async fn call_bench() {
    let bytes = std::fs::read(sluice_builtins::fixture("noop").unwrap()).unwrap();
    let pool = PoolSize::DEFAULT;
    let pooled = Engine::new(EngineConfig {
        pool,
        ..Default::default()
    })
    .unwrap();
    let on_demand = Engine::new(EngineConfig {
        pool: PoolSize { instances: 0 },
        ..Default::default()
    })
    .unwrap();
    let (p_pooled, p_on_demand) = (
        pooled.prepare(&bytes).unwrap(),
        on_demand.prepare(&bytes).unwrap(),
    );
    let raw_pooled = raw::Raw::new(&bytes, Some(pool));
    let raw_on_demand = raw::Raw::new(&bytes, None);
    let ctx = context(BTreeMap::new());
    let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    let ours = |engine: &Arc<Engine>, prepared: &Arc<sluice::engine::Prepared>| {
        let (engine, prepared, call) = (engine.clone(), prepared.clone(), call(&ctx, &state));
        async move {
            let t = Instant::now();
            engine
                .call(&prepared, call, "{}".into(), Duration::from_secs(5))
                .await
                .unwrap();
            t.elapsed()
        }
    };
    const N: usize = 3000;
    for _ in 0..200 {
        ours(&pooled, &p_pooled).await;
        ours(&on_demand, &p_on_demand).await;
        timed(&raw_pooled).await;
        timed(&raw_on_demand).await;
    }
    let mut samples: [Vec<Duration>; 4] = Default::default();
    // Interleaved, so drift in machine load hits all four alike.
    for _ in 0..N {
        samples[0].push(timed(&raw_pooled).await);
        samples[1].push(ours(&pooled, &p_pooled).await);
        samples[2].push(timed(&raw_on_demand).await);
        samples[3].push(ours(&on_demand, &p_on_demand).await);
    }
    let [raw_p, ours_p, raw_o, ours_o] = samples.map(median);
    let stats = pooled.pool_stats();
    assert_eq!(stats.on_demand, 0, "every pooled call found a slot");
    println!(
        "instantiate-and-call of a trivial step ({N} calls each; pool of {} instances)",
        pool.instances
    );
    println!(
        "  pool slots reset in place (Linux PAGEMAP_SCAN): {}",
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            "yes"
        } else {
            "no, the pages an instance wrote are unmapped"
        }
    );
    show("  raw wasmtime, pooling allocator", raw_p);
    show("  through sluice, pooling allocator", ours_p);
    show("  raw wasmtime, on-demand allocator", raw_o);
    show("  through sluice, on-demand allocator", ours_o);
    println!(
        "  ratio sluice / raw (pooled): {:.2}   (on demand): {:.2}",
        ours_p.as_secs_f64() / raw_p.as_secs_f64(),
        ours_o.as_secs_f64() / raw_o.as_secs_f64()
    );
    println!(
        "  ratio sluice on-demand / sluice pooled: {:.2}\n",
        ours_o.as_secs_f64() / ours_p.as_secs_f64()
    );
}

/// Where the send bench's requests are made from. The same request costs
/// several times more from the main thread, where every response has to
/// wake a thread that is not one of the runtime's workers, than from a
/// worker: `sluice run` and `sluice serve` drive their runs on workers, so
/// the worker's figures are the ones a run sees. Both are printed, since the
/// component's extra cost is a much larger share of the shorter request.
#[derive(Clone, Copy)]
enum Placement {
    MainThread,
    Worker,
}

impl Placement {
    fn describe(self) -> &'static str {
        match self {
            Placement::MainThread => "from the main thread (block_on)",
            Placement::Worker => "from a task on a worker, as a run makes it",
        }
    }
}

/// The sides of the send bench, each run once a round in a rotating order
/// so that none always runs first (a warm connection pool, a just-woken
/// server task).
const SIDES: [&str; 6] = [
    "native reqwest from the host",
    "native reqwest, with the connection's request timeout",
    "Connection::send from the host (no component)",
    "connection.send from a component",
    "component on raw wasmtime, its import calling reqwest",
    "the connection's wire alone (its request and body read)",
];

async fn send_bench(placement: Placement) {
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            r#"{"ok":true,"value":[1,2,3]}"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = sluice::connections::http_client().unwrap();
    let spec = Arc::new(ConnectionSpec::new(
        "api",
        url::Url::parse(&format!("{base}/api")).unwrap(),
    ));
    let timeout = spec.request_timeout;
    let cap = spec.max_response_bytes;
    let conn = Arc::new(Connection::new(spec, http.clone(), Redactor::default()));
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let bytes = std::fs::read(sluice_builtins::fixture("hostile").unwrap()).unwrap();
    let prepared = engine.prepare(&bytes).unwrap();
    // The floor of the component boundary: wasmtime's own host call
    // around a bare reqwest request, with Sluice's pool configuration.
    let raw = raw::Raw::new(&bytes, Some(PoolSize::DEFAULT)).with_native(raw::Native {
        http: http.clone(),
        base: format!("{base}/api"),
    });
    let ctx = context(BTreeMap::from([("api".to_string(), conn.clone())]));
    let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    // Many requests per call: the instance's creation and the step's own
    // input and output are shared by all of them, not measured per send.
    const PER_CALL: usize = 200;
    const ROUNDS: usize = 61;
    let input =
        format!(r#"{{"action":"get-many","connection":"api","url":"things","count":{PER_CALL}}}"#);
    let native_url = format!("{base}/api/things");
    let parsed_url = url::Url::parse(&native_url).unwrap();
    // Each side makes PER_CALL requests and returns the time per request.
    let side = |which: usize| {
        let (http, conn, native_url, parsed_url) = (&http, &conn, &native_url, &parsed_url);
        let (engine, prepared, ctx, state, input) = (&engine, &prepared, &ctx, &state, &input);
        let raw = &raw;
        async move {
            let t = Instant::now();
            match which {
                0 | 1 => {
                    for _ in 0..PER_CALL {
                        let mut request = http.get(native_url).header(ACCEPT.0, ACCEPT.1);
                        if which == 1 {
                            request = request.timeout(timeout);
                        }
                        request.send().await.unwrap().bytes().await.unwrap();
                    }
                }
                2 => {
                    for _ in 0..PER_CALL {
                        let (r, _) = conn.send(get("things"), false, None).await;
                        assert_eq!(r.unwrap().status, 200);
                    }
                }
                4 => {
                    let out: serde_json::Value =
                        serde_json::from_str(&raw.call(input).await).unwrap();
                    assert_eq!(out["ok"], PER_CALL, "every request succeeded");
                }
                5 => {
                    // What `Connection::send` does on the wire for this
                    // request, without its retries, throttle and scrub.
                    for _ in 0..PER_CALL {
                        let head = wire::Http(http)
                            .send(wire::Outgoing {
                                method: Method::Get,
                                url: parsed_url,
                                headers: vec![ACCEPT],
                                body: None,
                                timeout,
                            })
                            .await
                            .unwrap();
                        assert_eq!(head.status, 200);
                        wire::Http(http)
                            .read(head.body, cap, timeout)
                            .await
                            .unwrap();
                    }
                }
                _ => {
                    let out = engine
                        .call(
                            prepared,
                            call(ctx, state),
                            input.clone(),
                            Duration::from_secs(60),
                        )
                        .await
                        .unwrap();
                    assert_eq!(
                        out.value().unwrap()["ok"],
                        PER_CALL,
                        "every request succeeded"
                    );
                }
            }
            t.elapsed() / PER_CALL as u32
        }
    };
    for _ in 0..3 {
        for which in 0..SIDES.len() {
            side(which).await;
        }
    }
    // Interleaved round by round, so drift in the machine's load hits every
    // side alike; ratios are taken within each round, then their median.
    let mut samples: [Vec<Duration>; SIDES.len()] = Default::default();
    let (mut to_native, mut to_timed) = (Vec::new(), Vec::new());
    let (mut floor, mut to_floor) = (Vec::new(), Vec::new());
    let (mut wire_to_timed, mut conn_to_wire) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut this = [Duration::ZERO; SIDES.len()];
        for k in 0..SIDES.len() {
            let which = (round + k) % SIDES.len();
            this[which] = side(which).await;
        }
        for (all, one) in samples.iter_mut().zip(this) {
            all.push(one);
        }
        to_native.push(this[3].as_secs_f64() / this[0].as_secs_f64());
        to_timed.push(this[3].as_secs_f64() / this[1].as_secs_f64());
        floor.push(this[4].as_secs_f64() / this[0].as_secs_f64());
        to_floor.push(this[3].as_secs_f64() / this[4].as_secs_f64());
        wire_to_timed.push(this[5].as_secs_f64() / this[1].as_secs_f64());
        conn_to_wire.push(this[2].as_secs_f64() / this[5].as_secs_f64());
    }
    println!(
        "one GET to a loopback server, {} ({ROUNDS} interleaved rounds of {PER_CALL} requests)",
        placement.describe()
    );
    for (label, samples) in SIDES.iter().zip(samples) {
        show(&format!("  {label}"), median(samples));
    }
    show_ratios(
        "ratio send / native, median of the rounds' ratios:",
        to_native,
    );
    show_ratios("ratio send / native with the same timeout:", to_timed);
    show_ratios("ratio raw wasmtime's send / native (the floor):", floor);
    show_ratios("ratio send / raw wasmtime's send:", to_floor);
    show_ratios(
        "ratio wire alone / native with the same timeout:",
        wire_to_timed,
    );
    show_ratios("ratio Connection::send / its wire alone:", conn_to_wire);
    println!();
}

/// One line of ratios: their median and quartiles.
fn show_ratios(label: &str, ratios: Vec<f64>) {
    let (m, q1, q3) = spread(ratios);
    println!("  {label:<51}{m:.2}   (quartiles {q1:.2}-{q3:.2})");
}

/// The median and quartiles of ratios.
fn spread(mut ratios: Vec<f64>) -> (f64, f64, f64) {
    ratios.sort_by(f64::total_cmp);
    let at = |q: usize| ratios[(ratios.len() - 1) * q / 4];
    (at(2), at(1), at(3))
}

/// The header the guest SDK puts on every request (`Call::new`): every
/// side sends it, so all of them make the same request.
const ACCEPT: (&str, &str) = ("Accept", "application/json");

/// A plain GET, as a component sends it.
fn get(url: &str) -> OutgoingRequest {
    OutgoingRequest {
        method: Method::Get,
        url: url.into(),
        query: Vec::new(),
        headers: vec![(ACCEPT.0.into(), ACCEPT.1.into())],
        body: None,
        idempotent: false,
        retry_when_not_acted: false,
    }
}
