//! The `sluice` command line: argument parsing and the commands.
//!
//! Exit status: 0 when the command (or the flow) ran to the end, 1 when a
//! run failed, 2 when the input was wrong (a bad flow file, a bad argument).

pub mod approvals_cmd;
pub mod components_cmd;
pub mod console_cmd;
pub mod data_dir;
pub mod emulate;
pub mod ledger_cmd;
pub mod log_lines;
pub mod narrative;
pub mod progress;
pub mod run_cmd;
pub mod runs_cmd;
pub mod serve_cmd;
pub mod serve_log;
pub mod signals;
pub mod summary;
pub mod terminal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_store::Location;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Runs automation flows whose steps are sandboxed WebAssembly components"
)]
pub struct Cli {
    /// Where run history, reports and the compile cache live
    /// [default: $SLUICE_DATA_DIR, else $XDG_DATA_HOME/sluice, else ~/.local/share/sluice]
    #[arg(long, global = true, env = "SLUICE_DATA_DIR", value_parser = data_dir_path())]
    pub data_dir: Option<PathBuf>,
    /// The database of run history and flow state: postgres://USER@HOST:PORT/DB
    /// for one shared by several hosts, sqlite:PATH for a file
    /// [default: history.sqlite in the data directory]
    #[arg(
        long,
        global = true,
        env = "SLUICE_DATABASE_URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// `--data-dir`: clap's own refusal of an empty one ("a value is required
/// … but none was supplied") did not say that `SLUICE_DATA_DIR=` set to
/// nothing can be the cause. Any other path is taken as it is, in any
/// encoding.
fn data_dir_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser as _;
    clap::builder::OsStringValueParser::new().try_map(|text| {
        if text.is_empty() {
            return Err(
                "an empty path names no directory; give one (a SLUICE_DATA_DIR that is set but empty counts as one: unset it to use the default)",
            );
        }
        Ok(PathBuf::from(text))
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a flow and run it now
    Run(run_cmd::RunArgs),
    /// Check a flow file and report every problem, without running anything.
    /// Needs no environment unless `--env` is given
    Validate {
        /// The flow file
        file: PathBuf,
        /// Also bind the flow to this environment: every variable and
        /// secret it reads must be set, connection URLs and headers are
        /// checked with their real values
        #[arg(long)]
        env: bool,
    },
    /// List the built-in components; pull, update and push components in
    /// OCI registries
    Components(components_cmd::ComponentsArgs),
    /// Serve the Microsoft Graph and Procore emulators in the foreground
    Emulate(emulate::EmulateArgs),
    /// Run the license sync against fresh emulators and summarise what it did
    Demo(emulate::DemoArgs),
    /// Run scheduled flows at their times (the timer host)
    Serve(serve_cmd::ServeArgs),
    /// Serve the web console over the data directory's run history
    Console(console_cmd::ConsoleArgs),
    /// Show the run history: `runs`, `runs show ID`, `runs prune --older-than 30d`
    Runs(runs_cmd::RunsArgs),
    /// List the approval plans waiting for a decision, or show one
    Approvals(approvals_cmd::ApprovalsArgs),
    /// Approve a plan's items (all pending ones, or `--only KEY`); they run
    /// at the flow's next run
    Approve(approvals_cmd::ApproveArgs),
    /// Reject a plan's items (all that have not run yet, approved ones too, or `--only KEY`); they are left alone until approved
    Reject(approvals_cmd::DecideArgs),
    /// Everything that happened to one key (person) across runs, or each
    /// key's latest state with `--flow`
    Ledger(ledger_cmd::LedgerArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| match readable(&e) {
        Some(said) => {
            eprint!("{said}");
            std::process::exit(2)
        }
        None => e.exit(),
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let data_dir = cli.data_dir.clone().or_else(sluice_store::default_data_dir);
    let data_dir = data_dir.unwrap_or_else(|| {
        if !matches!(cli.command, Command::Emulate(_)) {
            eprintln!(
                "warning: no data directory is set and this user has no home (HOME is unset or empty, and the system names no usable one), so the data directory is .sluice in the current folder: runs started elsewhere will not share its history, state and approvals; give --data-dir DIR or set SLUICE_DATA_DIR"
            );
        }
        PathBuf::from(".sluice")
    });
    data_dir::restrict_new_files();
    // Parsed here rather than by clap, whose error would echo the URL and
    // its password; this error hides it.
    let database = match Location::from_option(cli.database.as_deref(), &data_dir) {
        Ok(database) => database,
        Err(e) => {
            eprintln!("error: --database: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = missing_history(&database) {
        match cli.command {
            Command::Runs(_)
            | Command::Approvals(_)
            | Command::Approve(_)
            | Command::Reject(_)
            | Command::Ledger(_) => {
                eprintln!("error: {}", terminal::line(&why));
                return ExitCode::from(2);
            }
            // A service, perhaps started before the first run: it goes on,
            // and its pages fill once a run has made the history.
            Command::Console(_) => eprintln!("warning: {}", terminal::line(&why)),
            _ => {}
        }
    }
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Demo(_)
            | Command::Serve(_)
            | Command::Runs(_)
            | Command::Approve(_)
            | Command::Reject(_)
    ) {
        data_dir::prepare(&data_dir);
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => {
                on_worker(async move { run_cmd::run(args, &data_dir, &database).await }).await
            }
            Command::Validate { file, env } => validate(&file, &data_dir, env),
            Command::Components(args) => components_cmd::components(args, &data_dir).await,
            Command::Emulate(args) => emulate::emulate(args).await,
            Command::Demo(args) => {
                on_worker(async move { emulate::demo(args, &data_dir, &database).await }).await
            }
            Command::Serve(args) => serve_cmd::serve(args, &data_dir, &database).await,
            Command::Runs(args) => runs_cmd::runs(args, &data_dir, &database).await,
            Command::Approvals(args) => approvals_cmd::approvals(args, &database).await,
            Command::Approve(args) => approvals_cmd::approve(args, &data_dir, &database).await,
            Command::Reject(args) => approvals_cmd::reject(args, &database).await,
            Command::Ledger(args) => ledger_cmd::ledger(args, &database).await,
            Command::Console(args) => console_cmd::console(args, &data_dir, &database).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "error: {}",
                terminal::line(&sluice_store::error::with_causes(e.as_ref()))
            );
            ExitCode::from(1)
        }
    }
}

/// Why a command that reads the run history (`runs`, `approvals`,
/// `approve`, `reject`, `ledger`; `console` only warns) must not open
/// `database`: an SQLite file that is not there. Opening it would create
/// an empty history, and a mistyped `--data-dir` would then answer "no
/// runs", "no pending approvals", as if nothing waited for anyone.
fn missing_history(database: &Location) -> Option<String> {
    let Location::Sqlite(path) = database else {
        return None;
    };
    // Only a file that is surely not there: one that cannot be looked at
    // (a private data directory) is opened, and says why it cannot be.
    matches!(path.try_exists(), Ok(false)).then(|| {
        format!(
            "there is no run history at {}: nothing has run with this data directory yet, or `--data-dir` (SLUICE_DATA_DIR) or `--database` (SLUICE_DATABASE_URL) names the wrong place",
            path.display()
        )
    })
}

/// Runs `work` as a task on one of the runtime's worker threads rather
/// than on the thread that waits for it. A run's driver (the one that
/// starts each `for_each` item as the previous one ends) then wakes on a
/// worker, beside its items, instead of waking the main thread and having
/// it wake a worker for every item. In eight alternating pairs of 100k
/// syncs, the create step was faster this way in seven, by 12% at the
/// median.
async fn on_worker<T: Send + 'static>(
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::spawn(work).await?
}

/// The name this process records its runs under: `$SLUICE_REPLICA`, else
/// the host name (in Kubernetes, the pod's).
pub fn replica_name() -> String {
    std::env::var("SLUICE_REPLICA")
        .ok()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(sluice_store::process::host_name)
}

/// A replica's name (`serve --replica`, SLUICE_REPLICA), trimmed: runs
/// are recorded and leases held under it, so it may not be blank (a
/// Kubernetes variable that resolved to nothing would otherwise make every
/// pod the same nameless replica).
pub fn parse_replica(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err(
            "a replica needs a name; give one, or leave --replica and SLUICE_REPLICA unset for the host name"
                .to_string(),
        );
    }
    if name.chars().any(char::is_control) {
        return Err("a replica's name may not hold control characters".to_string());
    }
    Ok(name.to_string())
}

/// The longest `--lease`: a crashed host's flows wait out its lease.
const MAX_LEASE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Clap's error for a bad value, where clap's own words would mislead or
/// flood: named by its environment variable when it came from one
/// ([`from_the_environment`]), and a huge value cut (a 100,000-character
/// `--param` was printed whole, twice). `None`: clap's words as they are.
fn readable(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let said = from_the_environment(error);
    let text = said.clone().unwrap_or_else(|| error.render().to_string());
    match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) if value.chars().count() > 80 => {
            let start: String = value.chars().take(60).collect();
            let cut = format!("{start}… ({} characters)", value.chars().count());
            Some(text.replace(value.as_str(), &cut))
        }
        _ => said,
    }
}

/// Clap's error for a bad value that came from an environment variable,
/// naming the variable: clap names the flag (`--lease`), which the
/// operator never typed when `SLUICE_LEASE=abc` gave it.
fn from_the_environment(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = shown.split_whitespace().next()?;
    let typed = std::env::args_os().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    if typed {
        return None;
    }
    let variable = env_of(
        &<Cli as clap::CommandFactory>::command(),
        flag.strip_prefix("--")?,
    )?;
    std::env::var_os(&variable)?;
    Some(error.render().to_string().replacen(
        &format!("'{shown}'"),
        &format!("{variable} (the environment's {flag})"),
        1,
    ))
}

/// The environment variable of the option `--long` in `command` or any
/// of its subcommands.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|c| env_of(c, long)))
}

/// A lease of at least a second (`--lease`): renewals every third of it
/// must be able to reach the store in time. At most [`MAX_LEASE`].
pub fn parse_lease(text: &str) -> Result<std::time::Duration, String> {
    let lease = parse_span(text)?;
    if lease < std::time::Duration::from_secs(1) {
        return Err(format!("`{text}` is too short; a lease lasts at least 1s"));
    }
    if lease > MAX_LEASE {
        return Err(format!(
            "`{text}` is too long; a lease lasts at most 1d (it is renewed while its run goes on, and a host that dies keeps its flows from running elsewhere until it lapses)"
        ));
    }
    Ok(lease)
}

/// A span of time written as `30s`, `2m` or `1h`; the error says so, not
/// only where the parser stopped ("expected number at 0").
pub fn parse_span(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a span of time like `30s`, `2m` or `1h` ({e})"))
}

/// What compiling a flow is told about the components: the built-ins by
/// name, the engine that loads each component and reads its `describe`
/// (so inputs and roles are checked before anything runs), and the
/// registry resolver (components pulled into `data_dir`, pinned in
/// `sluice.lock`).
pub fn with_context<T>(
    data_dir: &Path,
    overrides: &[(String, String)],
    f: impl FnOnce(&crate::flow::Context<'_>) -> T,
) -> T {
    let remote = crate::oci::Resolver::new(data_dir, crate::oci::Mode::Locked);
    match run_cmd::engine_for(data_dir) {
        Ok(engine) => {
            let catalog = crate::engine::catalog::EngineCatalog::new(engine);
            with_resolver(&remote, &catalog, overrides, f)
        }
        Err(e) => {
            eprintln!(
                "warning: components cannot be loaded ({}); their inputs and connection roles are not checked",
                terminal::line(&sluice_store::error::with_causes(e.as_ref()))
            );
            with_resolver(&remote, &crate::flow::Undescribed, overrides, f)
        }
    }
}

/// [`with_context`] with a resolver and a catalog of the caller's.
pub fn with_resolver<T>(
    remote: &crate::oci::Resolver,
    catalog: &dyn crate::flow::ComponentCatalog,
    overrides: &[(String, String)],
    f: impl FnOnce(&crate::flow::Context<'_>) -> T,
) -> T {
    let builtins = sluice_builtins::names();
    let ctx = crate::flow::Context {
        builtins: &builtins,
        catalog,
        param_overrides: overrides,
        remote,
    };
    f(&ctx)
}

/// A flow file's path as the run history records it (a run's and an
/// approval plan's `flow_file`): absolute, so that `sluice approve --run`,
/// `approvals show` and `runs show` name a file that works from any
/// directory. Its directory is canonicalised when it exists (no `..`, no
/// links in it); the file's own name is kept as given, so a file that is a
/// link (as a Kubernetes ConfigMap mounts each file, through a folder that
/// changes at every update) is recorded under the name that stays.
pub fn recorded_path(file: &Path) -> String {
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let canonical = match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir).ok().map(|d| d.join(name)),
        _ => None,
    };
    canonical.unwrap_or(absolute).display().to_string()
}

/// Loads a flow and binds it to the process environment, printing its
/// problems; `None` means exit status 2.
pub fn load_flow(
    file: &Path,
    data_dir: &Path,
    overrides: &[(String, String)],
) -> Option<crate::flow::Flow> {
    try_load_flow(file, data_dir, overrides)
        .map_err(|e| eprintln!("{}", terminal::lines(&e.to_string())))
        .ok()
}

/// Loads a flow and binds it to the process environment.
pub fn try_load_flow(
    file: &Path,
    data_dir: &Path,
    overrides: &[(String, String)],
) -> Result<crate::flow::Flow, crate::flow::LoadError> {
    with_context(data_dir, overrides, |ctx| {
        crate::flow::load(file, ctx, &crate::flow::ProcessEnv)
    })
}

/// `sluice validate [--env] FILE`.
fn validate(file: &Path, data_dir: &Path, bind: bool) -> anyhow::Result<ExitCode> {
    let compiled = with_context(data_dir, &[], |ctx| crate::flow::compile_file(file, ctx));
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(e) => {
            // With `--env`, what binding finds is told with what compiling
            // found: every problem at once, as `run` tells them.
            let e = match bind {
                true => with_context(data_dir, &[], |ctx| {
                    crate::flow::load(file, ctx, &crate::flow::ProcessEnv)
                })
                .err()
                .unwrap_or(e),
                false => e,
            };
            eprintln!("{}", terminal::lines(&e.to_string()));
            return Ok(ExitCode::from(2));
        }
    };
    let variables: Vec<String> = compiled.variables().iter().map(|v| v.to_string()).collect();
    let (name, steps, schedule) = (
        compiled.name.clone(),
        compiled.steps.len(),
        compiled.schedule.clone(),
    );
    if bind && let Err(e) = crate::flow::bind_flow(compiled, &crate::flow::ProcessEnv) {
        eprintln!("{}", terminal::lines(&e.to_string()));
        return Ok(ExitCode::from(2));
    }
    let mut line = format!(
        "✓ {}: flow `{name}` is valid ({steps} step{}",
        file.display(),
        if steps == 1 { "" } else { "s" }
    );
    if let Some(schedule) = &schedule
        && let Some(next) = schedule.next_after(chrono::Utc::now())
    {
        line.push_str(&format!(
            "; scheduled `{}` {}, next at {}",
            schedule.cron,
            schedule.timezone,
            next.with_timezone(&schedule.timezone)
                .format("%a %Y-%m-%d %H:%M:%S %Z")
        ));
    }
    println!("{})", terminal::line(&line));
    match (bind, variables.is_empty()) {
        (true, _) => {
            println!("  bound to this environment: every variable and secret it reads is set")
        }
        (false, true) => {}
        (false, false) => println!(
            "  reads {}; `sluice validate --env` also checks them",
            terminal::line(&variables.join(", "))
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease is between a second and a day: shorter cannot be renewed
    /// in time, longer would keep a dead host's flows from running (and
    /// one of centuries overflowed the clock).
    #[test]
    fn a_lease_is_between_a_second_and_a_day() {
        assert_eq!(parse_lease("30s"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(parse_lease("1d"), Ok(MAX_LEASE));
        let short = parse_lease("500ms").unwrap_err();
        assert!(short.contains("at least 1s"), "{short}");
        for text in ["25h", "300000y"] {
            let long = parse_lease(text).unwrap_err();
            assert!(long.contains("at most 1d"), "{long}");
        }
        assert!(parse_lease("99999999999999999999999y").is_err());
    }

    /// `--grace abc` said only "expected number at 0".
    #[test]
    fn a_span_that_is_not_one_says_what_one_looks_like() {
        assert_eq!(parse_span(" 2m "), Ok(std::time::Duration::from_secs(120)));
        for text in ["abc", "", "5 parsecs"] {
            let said = parse_span(text).unwrap_err();
            assert!(said.contains("like `30s`, `2m` or `1h`"), "{said}");
            assert_eq!(parse_lease(text).unwrap_err(), said);
        }
    }
}
