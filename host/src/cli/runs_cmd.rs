//! `sluice runs`: reading and pruning the run history.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sluice_history::{History, render};

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: Option<RunsAction>,
    /// Only runs of this flow (its `name`)
    #[arg(long)]
    pub flow: Option<String>,
    /// How many runs to list, newest first
    #[arg(long, default_value_t = 20)]
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
    },
    /// Delete runs that started longer ago than this (e.g. 30d, 12h)
    Prune {
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
}

pub fn runs(args: RunsArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let history = History::open(&sluice_history::path_in(data_dir))?;
    match args.action {
        None => {
            let runs = history.list_runs(args.flow.as_deref(), args.limit)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                print!("{}", render::runs_table(&runs));
            }
        }
        Some(RunsAction::Show { run_id, json }) => match history.run_detail(&run_id)? {
            Some(detail) if json => println!("{}", serde_json::to_string_pretty(&detail)?),
            Some(detail) => print!("{}", render::run_detail(&detail)),
            None => {
                eprintln!(
                    "error: no run `{run_id}` in {}; `sluice runs` lists them",
                    history.path.display()
                );
                return Ok(ExitCode::from(2));
            }
        },
        Some(RunsAction::Prune { older_than }) => {
            let removed = history.prune_older_than(older_than)?;
            println!(
                "removed {removed} run{} older than {}",
                if removed == 1 { "" } else { "s" },
                humantime::format_duration(older_than)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
