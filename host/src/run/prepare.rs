//! Everything a run checks before its first step: the run's folder can be
//! made when a step writes files there, every component loads, and every
//! OAuth2 connection a step uses gets a token. A bad data directory, a
//! wrong path or a rejected secret then fails the run before anything is
//! changed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::context::StepFailure;
use crate::connections::Connections;
use crate::engine::{Engine, Prepared, catalog};
use crate::flow::Flow;

/// Makes the run's folder `dir` when the flow writes files there
/// (`artifacts`). A data directory where it cannot be made (`runs` a
/// file, no permission) would otherwise fail the run at its report, after
/// every change it made. `Err` says why, for a sentence that starts with
/// the flow.
pub fn output_folder(flow: &Flow, dir: &Path) -> Result<(), String> {
    if flow.steps.iter().all(|s| s.artifacts.is_empty()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "its report files go to {}, which cannot be made ({}); fix the data directory (`--data-dir`, SLUICE_DATA_DIR) and run again",
            dir.display(),
            sluice_store::location::folder_not_made(dir, &e)
        )
    })
}

/// Loads (compiling or from the cache) and pre-instantiates every step's
/// component, in step order, as validation did ([`catalog::prepare`]).
pub fn components(engine: &Engine, flow: &Flow) -> Result<Vec<Arc<Prepared>>, StepFailure> {
    flow.steps
        .iter()
        .map(|step| {
            catalog::prepare(engine, &step.uses).map_err(|e| {
                StepFailure::Failed(format!(
                    "step `{}` cannot load component `{}`: {}",
                    step.id, step.uses, e.message
                ))
            })
        })
        .collect()
}

/// Fetches a token for every OAuth2 connection a step uses, concurrently.
pub async fn check_credentials(flow: &Flow, connections: &Connections) -> Result<(), StepFailure> {
    let used: BTreeSet<&String> = flow
        .steps
        .iter()
        .flat_map(|s| s.connections.iter().map(|g| &g.connection))
        .collect();
    let checks = used
        .into_iter()
        .filter_map(|name| connections.get(name).map(|c| (name.clone(), c.clone())))
        .filter(|(_, c)| c.needs_token());
    let mut tasks = tokio::task::JoinSet::new();
    for (name, conn) in checks {
        tasks.spawn(async move { (name, conn.check_credentials().await) });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                return Err(StepFailure::Failed(format!(
                    "connection `{name}`: {e}; no step was run"
                )));
            }
            // A check that panicked proved nothing.
            Err(e) => {
                return Err(StepFailure::Failed(format!(
                    "a connection's credentials could not be checked ({e}); no step was run"
                )));
            }
        }
    }
    Ok(())
}
