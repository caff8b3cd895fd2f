//! `sluice console --http ADDR [FLOWS…]`: the web console alone over a data
//! directory, and the `--http` options `sluice serve` shares with it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sluice_store::Location;

use crate::console::listen::HttpAddr;
use crate::console::{self, ConsoleError, Options, Running, access};
use crate::scheduler::control::{Control, ServedFlow};

/// How the console listens and who may use it.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// A file whose first line is the console token (or set SLUICE_CONSOLE_TOKEN);
    /// with a token every page asks for it, and the console may listen beyond loopback
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz without the token on any address
    #[arg(long)]
    pub metrics_public: bool,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where the console listens: HOST:PORT, HOST an IP address or a name
    #[arg(long, value_name = "ADDR", default_value = console::DEFAULT_ADDR)]
    pub http: HttpAddr,
    #[command(flatten)]
    pub access: HttpArgs,
    /// Flow files, or directories of them, whose schedules the Flows page
    /// shows (runs come from the history either way)
    pub paths: Vec<PathBuf>,
}

/// The console's options from the command line and `SLUICE_CONSOLE_TOKEN`,
/// with the address resolved and checked against the token rule.
pub async fn options(
    addr: &HttpAddr,
    args: &HttpArgs,
    database: &Location,
) -> Result<Options, access::AccessError> {
    let env = std::env::var("SLUICE_CONSOLE_TOKEN").ok();
    let token = access::load_token(env, args.token_file.as_deref())?;
    let listen = addr.resolve().await?;
    access::check_address(&listen, token.as_ref())?;
    Ok(Options {
        listen,
        token,
        metrics_public: args.metrics_public,
        database: database.clone(),
    })
}

/// Starts the console (the caller says where it listens); a refusal
/// (address, token) is printed and means exit status 2.
pub async fn start(
    options: Options,
    scheduler: Option<Control>,
    described: Vec<ServedFlow>,
) -> anyhow::Result<Result<Running, ExitCode>> {
    Ok(start_quietly(options, scheduler, described)
        .await?
        .map_err(|refused| {
            eprintln!("error: {refused}");
            ExitCode::from(2)
        }))
}

/// Starts the console; a refusal (address, token) is returned in words
/// for the caller to tell (`sluice serve`: in its log).
pub async fn start_quietly(
    options: Options,
    scheduler: Option<Control>,
    described: Vec<ServedFlow>,
) -> anyhow::Result<Result<Running, String>> {
    match console::start(options, scheduler, described).await {
        Ok(running) => Ok(Ok(running)),
        Err(ConsoleError::Access(e)) => Ok(Err(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// The flows of the files given, for their name, description and
/// schedule. They are compiled, not bound to this process's environment
/// (as `sluice validate` without `--env` checks them): a console host
/// needs none of a flow's variables or secrets. A file that does not
/// validate even so is named, with why, and left out; so is a file whose
/// flow `name` a file before it in path order has (as `sluice serve`
/// would refuse it).
fn describe(paths: &[PathBuf], data_dir: &Path) -> Vec<ServedFlow> {
    let found = crate::scheduler::sources::expand(paths);
    for problem in &found.problems {
        eprintln!("warning: {problem}");
    }
    let mut files = found.files;
    files.sort();
    let mut described: Vec<ServedFlow> = Vec::new();
    for path in files {
        let compiled =
            super::with_context(data_dir, &[], |ctx| crate::flow::compile_file(&path, ctx));
        let flow = match compiled {
            Ok(flow) => flow,
            Err(e) => {
                eprintln!(
                    "warning: {} does not validate, so the Flows page leaves it out (its runs are still shown):\n{}",
                    super::terminal::line(&path.display().to_string()),
                    super::terminal::lines(&e.to_string())
                );
                continue;
            }
        };
        if let Some(first) = described.iter().find(|d| d.name == flow.name) {
            let why = format!(
                "{} is left out: flow `{}` is already shown from {}, which keeps the name (it comes first in path order); {}",
                path.display(),
                flow.name,
                first.path.display(),
                crate::scheduler::SHARED
            );
            eprintln!("warning: {}", super::terminal::line(&why));
            continue;
        }
        described.push(ServedFlow {
            name: flow.name.clone(),
            description: flow.description.clone(),
            path,
            schedule: flow.schedule.clone(),
        });
    }
    described
}

pub async fn console(
    args: ConsoleArgs,
    data_dir: &Path,
    database: &Location,
) -> anyhow::Result<ExitCode> {
    let options = match options(&args.http, &args.access, database).await {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let running = match start(options, None, describe(&args.paths, data_dir)).await? {
        Ok(running) => running,
        Err(code) => return Ok(code),
    };
    eprintln!(
        "{}",
        console::listening_line(&running.url(), running.where_to_open().as_deref())
    );
    let mut signals = super::signals::watch(super::signals::OnHangup::Stop)?;
    let _ = signals.stop.changed().await;
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}
