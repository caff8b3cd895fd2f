//! `cargo bench -p sluice --bench redact`: how fast secrets are searched
//! for in what a run scrubs whole (every response, every output), with the
//! secrets a run knows: two client secrets and two access tokens. Tokens
//! are random, so each round draws new ones in the emulator's shapes.
//!
//! The text is real: the first pages of Procore company users and of Graph
//! group members that the in-process emulator serves for a 100k tenant.
//! Beside Sluice's [`Redactor`] it times an Aho-Corasick automaton with its
//! own (rare-byte) prefilter over the same forms, what Sluice used before:
//! with some tokens that prefilter skipped on bytes common in JSON. Prints
//! per text the median, slowest and fastest throughput over the rounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use aho_corasick::{AhoCorasick, MatchKind};
use rand::Rng;
use sluice::redact::{Redactor, forms};
use sluice_emulator::config::EmulatorConfig;
use sluice_emulator::scenario::Scenario;

const ROUNDS: usize = 24;
/// Pages of each list searched: a few megabytes of each.
const PAGES: usize = 10;

/// The shipped flow's environment, as the emulator gives it.
type Env = std::collections::HashMap<String, String>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let emulator = sluice_emulator::start(EmulatorConfig {
        scenario: Scenario::generate(100_000, 7),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let env: std::collections::HashMap<String, String> = emulator.env_vars().into_iter().collect();
    let http = reqwest::Client::new();
    let texts = [
        ("procore users pages", procore_pages(&http, &env).await),
        ("graph members pages", graph_pages(&http, &env).await),
    ];
    let client_secrets = [
        env["GRAPH_CLIENT_SECRET"].clone(),
        env["PROCORE_CLIENT_SECRET"].clone(),
    ];
    println!(
        "sluice redact bench ({ROUNDS} rounds of random tokens; MB/s median, slowest, fastest)\n"
    );
    for (label, text) in &texts {
        let (mut sluice, mut prefiltered) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut rng = rand::rng();
            let secrets = vec![
                client_secrets[0].clone(),
                client_secrets[1].clone(),
                format!(
                    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.graph-{:016x}-{round}",
                    rng.random::<u64>()
                ),
                format!("procore-{:016x}-{round}", rng.random::<u64>()),
            ];
            let redactor = Redactor::new(secrets.clone());
            let started = Instant::now();
            let (_, found) = redactor.scrub(text.as_bytes());
            sluice.push(mb_per_s(text.len(), started));
            assert_eq!(found, 0, "no secret is in the text");
            let patterns: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .unwrap();
            let started = Instant::now();
            let found = automaton.find_iter(text.as_bytes()).count();
            prefiltered.push(mb_per_s(text.len(), started));
            assert_eq!(found, 0, "no secret is in the text");
        }
        println!("{label} ({:.1} MB):", text.len() as f64 / 1e6);
        show("  Redactor::scrub", sluice);
        show("  automaton with its own prefilter (before)", prefiltered);
    }
}

fn mb_per_s(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

fn show(label: &str, mut rates: Vec<f64>) {
    rates.sort_by(f64::total_cmp);
    println!(
        "{label:<46} {:>8.0} {:>8.0} {:>8.0}",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}

/// An access token of the emulated API `api` (`GRAPH` or `PROCORE`), read
/// from its `{api}_TOKEN_URL`, `{api}_CLIENT_ID` and `{api}_CLIENT_SECRET`.
async fn token(http: &reqwest::Client, env: &Env, api: &str, scope: Option<&str>) -> String {
    let var = |name: &str| env[&format!("{api}_{name}")].clone();
    let mut form = vec![
        ("grant_type", "client_credentials".to_string()),
        ("client_id", var("CLIENT_ID")),
        ("client_secret", var("CLIENT_SECRET")),
    ];
    form.extend(scope.map(|s| ("scope", s.to_string())));
    let answer = http.post(var("TOKEN_URL")).form(&form).send().await;
    let answer: serde_json::Value = answer.unwrap().json().await.unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

async fn procore_pages(http: &reqwest::Client, env: &Env) -> String {
    let token = token(http, env, "PROCORE", None).await;
    let company = &env["PROCORE_COMPANY_ID"];
    let mut text = String::new();
    for page in 1..=PAGES {
        let url = format!(
            "{}/rest/v1.0/companies/{company}/users?page={page}&per_page=1000",
            env["PROCORE_BASE_URL"]
        );
        let answer = http
            .get(url)
            .bearer_auth(&token)
            .header("Procore-Company-Id", company)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
        text.push_str(&answer.text().await.unwrap());
    }
    text
}

async fn graph_pages(http: &reqwest::Client, env: &Env) -> String {
    let token = token(
        http,
        env,
        "GRAPH",
        Some("https://graph.microsoft.com/.default"),
    )
    .await;
    let base = &env["GRAPH_BASE_URL"];
    let groups: serde_json::Value = http
        .get(format!("{base}/groups?$select=id,displayName"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let group = groups["value"][0]["id"].as_str().unwrap().to_string();
    let mut url = format!(
        "{base}/groups/{group}/members?$select=id,mail,userPrincipalName,displayName,accountEnabled&$top=999"
    );
    let mut text = String::new();
    for _ in 0..PAGES {
        let answer = http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
        let page = answer.text().await.unwrap();
        let next = serde_json::from_str::<serde_json::Value>(&page).unwrap()["@odata.nextLink"]
            .as_str()
            .map(str::to_string);
        text.push_str(&page);
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    text
}
