//! `sluice runs`: reading and pruning the run history.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sluice_store::{DetailOptions, Location, Store, StoreError, render};

use super::terminal;

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: Option<RunsAction>,
    /// Only runs of this flow (its `name`)
    #[arg(long)]
    pub flow: Option<String>,
    /// How many runs to list, newest first
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub limit: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsAction {
    /// One run: its steps, items, errors and where its report is
    Show {
        /// The run id (a unique prefix is enough)
        run_id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        /// List every `for_each` item with its requests, not only the failed ones
        #[arg(long)]
        items: bool,
    },
    /// Delete runs that ended longer ago than this (e.g. 30d, 12h, 2w), with
    /// their report folders; runs still going are never deleted
    Prune {
        /// How long ago a run must have ended: 30d, 12h, 2w, 1d12h…
        #[arg(long, value_parser = sluice_store::parse_duration)]
        older_than: std::time::Duration,
    },
}

pub async fn runs(
    args: RunsArgs,
    data_dir: &Path,
    database: &Location,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(database).await?;
    match args.action {
        None => {
            let runs = store.list_runs(args.flow.as_deref(), args.limit).await?;
            if args.json {
                println!("{}", terminal::json(&serde_json::to_string_pretty(&runs)?));
            } else if let (true, Some(flow)) = (runs.is_empty(), &args.flow) {
                // Not "no runs yet": there may be runs of other flows.
                println!(
                    "{}",
                    terminal::line(&format!(
                        "No runs of flow `{flow}` recorded (`sluice runs` lists every flow's)."
                    ))
                );
            } else {
                let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
                let items = store.item_counts(&ids).await?;
                print!(
                    "{}",
                    terminal::lines(&render::render_runs_table(&runs, &items))
                );
            }
        }
        Some(RunsAction::Show {
            run_id,
            json,
            items,
        }) => match store.run_detail(&run_id).await {
            Ok(Some(detail)) if json => println!(
                "{}",
                terminal::json(&serde_json::to_string_pretty(&detail)?)
            ),
            Ok(Some(mut detail)) => print!(
                "{}",
                terminal::lines(&render::render_run_detail_with(
                    {
                        // A run that wrote no report has no folder: none is named.
                        let dir = detail.run.output_dir.as_deref().unwrap_or_default();
                        if !Path::new(dir).is_dir() {
                            detail.run.output_dir = None;
                        }
                        &detail
                    },
                    DetailOptions { all_items: items }
                ))
            ),
            Ok(None) => {
                eprintln!(
                    "error: {}",
                    terminal::line(&format!(
                        "no run `{run_id}` in {}; `sluice runs` lists them",
                        store.location()
                    ))
                );
                return Ok(ExitCode::from(2));
            }
            // Like an unknown id, a prefix that fits several runs is the
            // caller's to fix.
            Err(e @ StoreError::AmbiguousRun { .. }) => {
                eprintln!("error: {}", terminal::line(&e.to_string()));
                return Ok(ExitCode::from(2));
            }
            Err(e) => return Err(e.into()),
        },
        Some(RunsAction::Prune { older_than }) => {
            let pruned = store.prune_older_than(older_than).await?;
            let mut folders = 0;
            for run in &pruned {
                let Some(dir) = &run.output_dir else { continue };
                match remove_run_folder(Path::new(dir), data_dir) {
                    Ok(true) => folders += 1,
                    Ok(false) => {}
                    Err(e) => eprintln!("warning: cannot delete {dir}: {e}"),
                }
            }
            println!(
                "removed {} run{} that ended more than {} ago, and {folders} run folder{}",
                pruned.len(),
                if pruned.len() == 1 { "" } else { "s" },
                age_in_words(older_than),
                if folders == 1 { "" } else { "s" },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A cutoff as people write it: `30 days`, `1 year 2 months`, `12h`
/// (humantime writes `30days`).
fn age_in_words(age: std::time::Duration) -> String {
    humantime::format_duration(age)
        .to_string()
        .split(' ')
        .map(|part| match part.find(|c: char| !c.is_ascii_digit()) {
            Some(at) if part.len() - at > 2 => format!("{} {}", &part[..at], &part[at..]),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Deletes a pruned run's folder when it lies inside `data_dir/runs` once
/// links are resolved; a folder anywhere else was not made by Sluice for
/// the run and is left alone. `Ok(false)`: nothing was deleted.
fn remove_run_folder(dir: &Path, data_dir: &Path) -> std::io::Result<bool> {
    let (Ok(runs), Ok(target)) = (
        sluice_store::runs_dir(data_dir).canonicalize(),
        dir.canonicalize(),
    ) else {
        // No runs folder, or this one is already gone.
        return Ok(false);
    };
    if target == runs || !target.starts_with(&runs) || !target.is_dir() {
        return Ok(false);
    }
    std::fs::remove_dir_all(&target)?;
    Ok(true)
}

/// `--limit 0` would list nothing and say "no runs recorded", which is not
/// true: a limit is one run or more.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("list at least one run (the newest: --limit 1)".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number of runs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prune_cutoff_reads_as_people_write_it() {
        let day = 24 * 3600;
        for (secs, words) in [
            (30 * day, "30 days"),
            (day, "1 day"),
            (12 * 3600, "12h"),
            (day + 90 * 60, "1 day 1h 30m"),
        ] {
            assert_eq!(age_in_words(std::time::Duration::from_secs(secs)), words);
        }
    }

    #[test]
    fn only_folders_inside_the_data_directory_runs_are_deleted() {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = data.path().join("runs/r1");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("report.html"), "x").unwrap();
        assert!(remove_run_folder(&inside, data.path()).unwrap());
        assert!(!inside.exists());
        // Outside the data directory, the runs folder itself, or a path
        // that climbs out of it: kept.
        std::fs::create_dir_all(data.path().join("runs/r2")).unwrap();
        for dir in [
            elsewhere.path().to_path_buf(),
            data.path().join("runs"),
            data.path().join("runs/r2/../.."),
            data.path().to_path_buf(),
        ] {
            assert!(!remove_run_folder(&dir, data.path()).unwrap(), "{dir:?}");
            assert!(dir.exists(), "{dir:?}");
        }
        #[cfg(unix)]
        {
            let link = data.path().join("runs/link");
            std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
            assert!(!remove_run_folder(&link, data.path()).unwrap());
            assert!(elsewhere.path().exists());
        }
        assert!(!remove_run_folder(&data.path().join("runs/gone"), data.path()).unwrap());
    }
}
