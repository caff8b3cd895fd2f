//! `cargo bench -p sluice --bench paged_output [-- PEOPLE]`: a component
//! outputting PEOPLE small people (default 1,000,000) handed to the host
//! in pages (contract 0.2.2's `paged-output`, through `OutputList`)
//! beside the same list written whole in its output text, in one run,
//! alternating. Each is timed from the call to the output the run keeps
//! (spliced, or parsed and indexed), with the host's splice or parse
//! alone beside it, and the process's peak RSS above where it started
//! (the instance's memory and the host's together). Prints medians.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::engine::{Engine, EngineConfig, ListRules, OutputCap, OutputLists, Prepared};
use sluice::run::StepOutput;
use sluice::state::{MemoryStore, StateStore};
use support::{call, context, median, show};

const ROUNDS: usize = 3;

/// The output cap a run allows at most (1 GiB): no cap is measured.
const CAP: OutputCap = OutputCap {
    bytes: 1 << 30,
    key: "max_output_bytes",
};

/// One variant's figures for one round.
struct Round {
    total: Duration,
    host: Duration,
    peak_mib: f64,
    bytes: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let people: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let path = sluice_builtins::fixture("paged-output").expect("the fixture is built");
    let prepared = engine.prepare(&std::fs::read(path).unwrap()).unwrap();
    let description = engine.describe(&prepared).await.unwrap().unwrap();
    let rules = sluice::run::paged::list_rules(&description).expect("people is marked");
    println!("sluice paged output bench ({people} people, medians of {ROUNDS})\n");
    let (mut paged, mut whole) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        paged.push(once(&engine, &prepared, Some(rules.clone()), people).await);
        whole.push(once(&engine, &prepared, None, people).await);
    }
    let report = |label: &str, rounds: &[Round]| {
        let total = median(rounds.iter().map(|r| r.total).collect());
        let host = median(rounds.iter().map(|r| r.host).collect());
        let mut peaks: Vec<f64> = rounds.iter().map(|r| r.peak_mib).collect();
        peaks.sort_by(f64::total_cmp);
        show(&format!("{label}: call to kept output"), total);
        show(&format!("{label}: the host's splice or parse"), host);
        println!(
            "{:<58} {:>12.1} MiB   (output {:.1} MB)",
            format!("{label}: peak RSS above the start"),
            peaks[peaks.len() / 2],
            rounds[0].bytes as f64 / 1e6
        );
        total
    };
    let p = report("in pages", &paged);
    let w = report("whole", &whole);
    println!(
        "\nin pages / whole (call to kept output): {:.2}x",
        p.as_secs_f64() / w.as_secs_f64()
    );
}

/// One call of the fixture: in pages when `rules` are given, else whole.
async fn once(
    engine: &Engine,
    prepared: &Prepared,
    rules: Option<Arc<dyn ListRules>>,
    people: u64,
) -> Round {
    let ctx = context(BTreeMap::new());
    let state: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    let paged = rules.is_some();
    let mut call = call(&ctx, &state);
    call.outputs = OutputLists::new(rules, CAP);
    let input = format!(r#"{{"count": {people}, "whole": {}}}"#, !paged);
    let start_rss = reset_peak();
    let t = Instant::now();
    let out = engine
        .call(prepared, call, input, Duration::from_secs(600))
        .await
        .unwrap();
    let h = Instant::now();
    let output = match paged {
        true => sluice::run::splice::spliced(out.output, out.lists).unwrap(),
        false => StepOutput::parse(out.output).unwrap(),
    };
    let host = h.elapsed();
    let total = t.elapsed();
    let peak_mib = (peak_rss() - start_rss) as f64 / 1024.0;
    assert_eq!(
        output.list_at(&["people".into()]).unwrap().len() as u64,
        people
    );
    Round {
        total,
        host,
        peak_mib,
        bytes: output.text().len(),
    }
}

/// Resets the process's peak RSS to its current RSS (Linux: writing 5 to
/// `clear_refs`), and returns that, in KiB.
fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

/// The process's peak RSS since the last reset, in KiB.
fn peak_rss() -> u64 {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
