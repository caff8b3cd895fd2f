//! `reference-sync`: the Procore license sync written as a plain native
//! client, so `scripts/bench-sync` can show what Sluice's own layers cost.
//!
//! It makes the requests the shipped flow makes, in the same order and with
//! the same concurrency: the license groups, every member page of each,
//! every active and inactive Procore company user, then one create (and a
//! project add, when a project is configured) per missing person at the
//! `concurrency` of the flow's `create` step, and the report mail. It reads
//! the same environment as the flow (README: "Running the license sync for
//! real") and the flow file for its group prefixes and create concurrency.
//!
//! It is a yardstick, not a second implementation to maintain: no retries
//! beyond one token refresh and honouring a 429's `Retry-After`, no dry
//! run, no history. It prints one JSON line: wall time, requests, people,
//! missing, created, and each phase's time (`phases_ms`: graph, procore,
//! diff, create, report), the floor of the flow's matching steps.

mod api;
mod graph;
mod procore;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Value, json};

use api::Api;

/// What the flow file decides about the sync.
struct FlowSettings {
    prefixes: Vec<String>,
    concurrency: usize,
}

/// Reads the group prefixes and the create step's concurrency from the flow.
fn flow_settings(path: &str) -> anyhow::Result<FlowSettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let flow: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {path}"))?;
    let prefixes = flow
        .get("params")
        .and_then(|p| p.get("group_prefixes"))
        .and_then(|p| p.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .context("the flow has no params.group_prefixes list")?;
    let concurrency = flow
        .get("step")
        .and_then(|s| s.as_array())
        .and_then(|steps| steps.iter().find(|s| s.get("for_each").is_some()))
        .and_then(|s| s.get("concurrency"))
        .and_then(|c| c.as_integer())
        .map_or(1, |c| c.max(1) as usize);
    Ok(FlowSettings {
        prefixes,
        concurrency,
    })
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

fn env_or(name: &str, default: String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flow_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "flows/procore-license-sync.toml".into());
    let settings = flow_settings(&flow_path)?;
    let started = Instant::now();
    let mut phases = Phases::new();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let graph = Arc::new(graph_api(&http)?);
    let procore = Arc::new(procore_api(&http)?);
    let groups = graph::license_groups(&graph, &settings.prefixes).await?;
    let people = graph::license_holders(&graph, &groups).await?;
    phases.end("graph");
    let company = env("PROCORE_COMPANY_ID")?;
    let users = procore::company_users(&procore, &company).await?;
    phases.end("procore");
    let missing = missing(&people, &users);
    phases.end("diff");
    let target = procore::Target {
        company,
        project: std::env::var("PROCORE_PROJECT_ID")
            .ok()
            .filter(|v| !v.is_empty()),
        template: std::env::var("PROCORE_PERMISSION_TEMPLATE_ID")
            .ok()
            .filter(|v| !v.is_empty()),
    };
    let outcomes = procore::create_all(
        procore.clone(),
        Arc::new(target),
        &missing,
        settings.concurrency,
    )
    .await;
    let created = outcomes.iter().filter(|o| o.is_ok()).count();
    phases.end("create");
    send_report(&graph, &outcomes).await?;
    phases.end("report");
    let requests =
        graph.requests.load(Ordering::Relaxed) + procore.requests.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "wall_ms": started.elapsed().as_millis() as u64,
            "requests": requests,
            "people": people.len(),
            "missing": missing.len(),
            "created": created,
            "phases_ms": phases.done,
        })
    );
    Ok(())
}

/// How long each phase took, in milliseconds, in order: the floor each of
/// the flow's steps is compared with.
struct Phases {
    since: Instant,
    done: serde_json::Map<String, Value>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            since: Instant::now(),
            done: serde_json::Map::new(),
        }
    }

    /// Ends the phase called `name` now; the next starts.
    fn end(&mut self, name: &str) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.done.insert(name.to_string(), json!(ms));
        self.since = Instant::now();
    }
}

fn graph_api(http: &reqwest::Client) -> anyhow::Result<Api> {
    let tenant = std::env::var("GRAPH_TENANT_ID").unwrap_or_default();
    Ok(Api::new(
        http.clone(),
        env_or("GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0".into()),
        env_or(
            "GRAPH_TOKEN_URL",
            format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
        ),
        env("GRAPH_CLIENT_ID")?,
        env("GRAPH_CLIENT_SECRET")?,
        Some("https://graph.microsoft.com/.default".into()),
        Vec::new(),
    ))
}

fn procore_api(http: &reqwest::Client) -> anyhow::Result<Api> {
    let base = env_or("PROCORE_BASE_URL", "https://api.procore.com".into());
    Ok(Api::new(
        http.clone(),
        format!("{}/rest/v1.0", base.trim_end_matches('/')),
        env_or(
            "PROCORE_TOKEN_URL",
            "https://login.procore.com/oauth/token".into(),
        ),
        env("PROCORE_CLIENT_ID")?,
        env("PROCORE_CLIENT_SECRET")?,
        None,
        vec![("Procore-Company-Id".into(), env("PROCORE_COMPANY_ID")?)],
    ))
}

/// The people no Procore user matches by login or email, without case.
fn missing<'a>(people: &'a BTreeMap<String, Value>, users: &[procore::User]) -> Vec<&'a Value> {
    let mut known: HashMap<String, bool> = HashMap::with_capacity(users.len() * 2);
    for user in users {
        for address in [&user.login, &user.email_address].into_iter().flatten() {
            let key = address.trim().to_lowercase();
            if !key.is_empty() {
                known.insert(key, user.is_active);
            }
        }
    }
    people
        .iter()
        .filter(|(key, _)| !known.contains_key(*key))
        .map(|(_, person)| person)
        .collect()
}

/// Rows the report mail shows, as the flow's `html-report` mails them.
const MAIL_ROWS: usize = 1000;

/// The report mail: the counts and the first [`MAIL_ROWS`] people the run
/// acted on (a mail of every row is over Graph's 4 MB at a million members).
async fn send_report(graph: &Api, outcomes: &[Result<String, String>]) -> anyhow::Result<()> {
    let (Ok(from), Ok(to)) = (env("REPORT_MAIL_FROM"), env("REPORT_MAIL_TO")) else {
        return Ok(());
    };
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    let mut html = format!(
        "<p>{} created, {failed} failed.</p><table><tr><th>Person</th><th>Outcome</th></tr>",
        outcomes.len() - failed
    );
    for outcome in outcomes.iter().take(MAIL_ROWS) {
        let (who, what) = match outcome {
            Ok(key) => (key.as_str(), "created"),
            Err(key) => (key.as_str(), "failed"),
        };
        html.push_str(&format!("<tr><td>{who}</td><td>{what}</td></tr>"));
    }
    html.push_str("</table>");
    if outcomes.len() > MAIL_ROWS {
        html.push_str(&format!(
            "<p>… and {} more.</p>",
            outcomes.len() - MAIL_ROWS
        ));
    }
    let message = json!({ "message": {
        "subject": "Procore license sync",
        "body": { "contentType": "HTML", "content": html },
        "toRecipients": to.split(';').map(|a| json!({ "emailAddress": { "address": a.trim() } })).collect::<Vec<_>>(),
    }, "saveToSentItems": false });
    let url = format!("users/{}/sendMail", api::segment(&from));
    graph.post(&url, &message).await?;
    Ok(())
}
