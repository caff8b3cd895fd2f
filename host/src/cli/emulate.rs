//! `sluice emulate` and `sluice demo`: the built-in Graph and Procore
//! emulators, served for people, or driven through the shipped flow.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use sluice_emulator::config::PROCORE_DEFAULT_RATE_LIMIT;
use sluice_emulator::{EmulatorConfig, Faults, Scenario};

use super::progress::{Mode, Progress};
use super::run_cmd::{engine_for, pool_for, watch_and_record};
use crate::flow::SourceFile;
use crate::run::{RunOptions, Runner, Status};

/// The shipped flow, embedded so the demo works from any directory.
pub const LICENSE_SYNC_FLOW: &str = include_str!("../../../flows/procore-license-sync.toml");
const LICENSE_SYNC_PATH: &str = "flows/procore-license-sync.toml";

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// A named scenario: `demo` (about 40 people, every edge case) or `empty`
    #[arg(long, default_value = "demo", conflicts_with = "users")]
    pub scenario: String,
    /// A generated tenant of this many users instead of a named scenario
    /// (at most 5,000,000: the emulator holds them all in memory)
    #[arg(long, value_parser = parse_users)]
    pub users: Option<usize>,
    /// Seed of the generated tenant
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The most users `--users` generates: the emulator holds each in memory
/// (with its Procore user), and far more than this fails to allocate.
const MAX_USERS: usize = 5_000_000;

/// `--users N`: a whole number up to [`MAX_USERS`].
fn parse_users(text: &str) -> Result<usize, String> {
    let users: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of users"))?;
    if users > MAX_USERS {
        return Err(format!(
            "{users} users is more than the emulator holds (at most {MAX_USERS}, all in memory)"
        ));
    }
    Ok(users)
}

/// `--faults`: what the emulators should get wrong, to rehearse bad days.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Inject faults: JSON as `PUT /_admin/faults` takes it, or @FILE holding
    /// it, e.g. '{"rate_503": 0.05, "rate_429": 0.05, "seed": 3}'
    #[arg(long, value_name = "JSON|@FILE")]
    pub faults: Option<String>,
}

impl FaultArgs {
    fn faults(&self) -> anyhow::Result<Faults> {
        let Some(spec) = self.faults.as_deref() else {
            return Ok(Faults::default());
        };
        let text = match spec.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--faults: cannot read {path}: {e}"))?,
            None => spec.to_string(),
        };
        let faults: Faults = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "--faults is not a valid fault description ({e}); for example '{{\"rate_503\": 0.05, \"seed\": 3}}'"
            )
        })?;
        match faults.problem() {
            Some(problem) => Err(anyhow::anyhow!("--faults: {problem}")),
            None => Ok(faults),
        }
    }
}

impl ScenarioArgs {
    fn scenario(&self) -> anyhow::Result<Scenario> {
        match self.users {
            Some(n) => Ok(Scenario::generate(n, self.seed)),
            None => Scenario::named(&self.scenario).ok_or_else(|| {
                anyhow::anyhow!(
                    "there is no scenario `{}`; use `demo`, `empty` or --users N",
                    self.scenario
                )
            }),
        }
    }
}

#[derive(Debug, Args)]
pub struct EmulateArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Port to listen on (127.0.0.1); 0 picks a free one
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Procore requests a minute the emulator allows (and announces in
    /// `X-Rate-Limit-*`); past it, 429 with `Retry-After`
    #[arg(
        long,
        value_name = "N",
        default_value_t = PROCORE_DEFAULT_RATE_LIMIT,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub procore_rate_limit: u32,
    /// Procore's spike limit: requests the emulator allows in any 10
    /// seconds, a window that rolls; the headers report it until the
    /// minute's budget is nearly spent, as Procore's do [default: none]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub procore_spike_limit: Option<u32>,
    /// Graph requests a minute the emulator allows; past it, 429 with
    /// `Retry-After` [default: no limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub graph_rate_limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Rehearse: read everything, change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub faults: FaultArgs,
}

impl EmulateArgs {
    /// The emulators these arguments ask for.
    fn config(&self) -> anyhow::Result<EmulatorConfig> {
        Ok(EmulatorConfig {
            port: self.port,
            scenario: self.scenario.scenario()?,
            faults: self.faults.faults()?,
            procore_rate_limit: Some(self.procore_rate_limit),
            procore_spike_limit: self.procore_spike_limit,
            graph_rate_limit: self.graph_rate_limit,
            ..EmulatorConfig::default()
        })
    }
}

pub async fn emulate(args: EmulateArgs) -> anyhow::Result<ExitCode> {
    let emulator = sluice_emulator::start(args.config()?).await?;
    println!(
        "Graph and Procore emulators listening on {}",
        emulator.base_url()
    );
    println!("State and request log: {}/_admin\n", emulator.base_url());
    println!("Point the shipped flow at them with:\n");
    for (k, v) in emulator.env_vars() {
        println!("export {k}={}", shell_quote(&v));
    }
    println!("\nthen: sluice run {LICENSE_SYNC_PATH}\n\nCtrl-C stops the emulators.");
    tokio::signal::ctrl_c().await?;
    emulator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn shell_quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

pub async fn demo(
    args: DemoArgs,
    data_dir: &Path,
    database: &sluice_store::Location,
) -> anyhow::Result<ExitCode> {
    let scenario = args.scenario.scenario()?;
    let faults = args.faults.faults()?;
    let expected = scenario.expected_sync();
    let emulator = sluice_emulator::start(EmulatorConfig {
        port: 0,
        scenario,
        faults,
        ..EmulatorConfig::default()
    })
    .await?;
    eprintln!(
        "Started the Microsoft Graph and Procore emulators on {}.",
        emulator.base_url()
    );
    eprintln!(
        "Running {LICENSE_SYNC_PATH} against them{}:\n",
        if args.dry_run { " as a dry run" } else { "" }
    );
    let env: BTreeMap<String, String> = emulator.env_vars().into_iter().collect();
    let source = SourceFile::new(LICENSE_SYNC_PATH, LICENSE_SYNC_FLOW);
    let flow = match super::with_context(data_dir, &[], |ctx| {
        crate::flow::load_source(source, ctx, &env)
    }) {
        Ok(flow) => flow,
        Err(e) => anyhow::bail!("the embedded flow does not validate:\n{e}"),
    };
    let engine = engine_for(data_dir)?;
    engine.size_pool(pool_for(&flow));
    let runner = Runner::new(engine)?;
    let run_id = crate::run::new_run_id();
    let mut options = RunOptions::new(
        run_id.clone(),
        sluice_store::run_dir(data_dir, &run_id),
        args.dry_run,
    );
    // The demo works on its own emulators: it takes no lease, so it never
    // waits for (nor blocks) the real flow of the same name.
    let recording = watch_and_record(
        database,
        Progress::new(Mode::Human, false),
        LICENSE_SYNC_PATH,
        sluice_store::Trigger::Demo,
        None,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    options.approvals = recording.approvals(LICENSE_SYNC_PATH, &[]);
    // The flow's state stays in memory: the emulated tenant is new each
    // time, and what a demo remembers must not reach the real flow's
    // state, which has the same name.
    let outcome = runner
        .run(&flow, &options, recording.observer.clone())
        .await;
    recording.finish().await;
    let state = emulator.snapshot();
    emulator.shutdown().await;
    let succeeded = outcome.status == Status::Succeeded;
    if !succeeded {
        eprintln!(
            "\nerror: {}",
            super::terminal::line(outcome.error.as_deref().unwrap_or("the run failed"))
        );
    }
    // Even a failed run says what it did and where its (partial) report is.
    eprintln!();
    super::summary::print(&outcome, &state, &expected, args.dry_run);
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};

    fn emulate_args(args: &[&str]) -> Result<super::EmulateArgs, clap::Error> {
        let cli = Cli::try_parse_from(["sluice", "emulate"].iter().chain(args))?;
        match cli.command {
            Command::Emulate(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// A tenant too large to hold is refused with the limit, not an
    /// allocation failure that aborts the process.
    #[test]
    fn a_tenant_too_large_to_hold_is_refused() {
        let ok = emulate_args(&["--users", "1000000"]).unwrap();
        assert_eq!(ok.scenario.users, Some(1_000_000));
        for huge in ["99999999999999", "18446744073709551615"] {
            let e = emulate_args(&["--users", huge]).unwrap_err().to_string();
            assert!(e.contains("at most 5000000"), "{e}");
        }
        let e = emulate_args(&["--users", "many"]).unwrap_err().to_string();
        assert!(e.contains("not a whole number"), "{e}");
    }

    #[test]
    fn the_budgets_asked_for_are_the_emulators_and_unasked_ones_are_the_defaults() {
        let asked = emulate_args(&[
            "--procore-rate-limit",
            "5",
            "--procore-spike-limit",
            "3",
            "--graph-rate-limit",
            "7",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(asked.procore_rate_limit, Some(5));
        assert_eq!(asked.procore_spike_limit, Some(3));
        assert_eq!(asked.graph_rate_limit, Some(7));

        let default = emulate_args(&[]).unwrap().config().unwrap();
        assert_eq!(
            default.procore_rate_limit,
            Some(super::PROCORE_DEFAULT_RATE_LIMIT)
        );
        assert_eq!(default.graph_rate_limit, None);
        assert_eq!(default.procore_spike_limit, None);
    }

    #[test]
    fn a_budget_of_nothing_or_not_a_number_is_refused_by_name() {
        for flag in ["--procore-rate-limit", "--procore-spike-limit"] {
            for bad in ["0", "-3", "many"] {
                let arg = format!("{flag}={bad}");
                let error = emulate_args(&[&arg]).unwrap_err();
                let text = error.to_string();
                assert!(text.contains(flag), "{bad}: {text}");
            }
        }
    }
}
