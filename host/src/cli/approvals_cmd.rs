//! `sluice approvals`, `sluice approvals show ID`, `sluice approve ID` and
//! `sluice reject ID`: reading approval plans and recording decisions.
//!
//! A decision names who made it (`--by`, by default the user running the
//! command) and may carry a note. Decisions the store refuses (an unknown
//! plan or key, a plan whose approvals are spent) exit with status 2 and
//! one paragraph saying why and what to do. `approve --run` then runs the
//! flow file of the run that last updated the plan, as `sluice run FILE`
//! would, with the `--param` overrides that run was given (kept with the
//! plan).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sluice_store::{
    Decision, DecisionOutcome, DecisionRequest, Location, PlanDetail, PlanItemState, PlanQuery,
    PlanSummary, Store, StoreError,
};

use sluice_store::render::local_time;
use sluice_store::some_keys;

use super::terminal;

#[derive(Debug, Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    pub action: Option<ApprovalsAction>,
    /// Only plans of this flow (its `name`)
    #[arg(long)]
    pub flow: Option<String>,
    /// Closed plans too (their approvals spent or no longer needed)
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsAction {
    /// One plan: each item with its key, state, decision and input
    Show {
        /// The plan id (`ap-…`)
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

/// `sluice approve` and `sluice reject`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The plan id (`ap-…`), as `sluice approvals` lists it
    pub id: String,
    /// Only the item with this key (repeatable); without it, every pending item
    #[arg(long = "only", value_name = "KEY")]
    pub only: Vec<String>,
    /// Only what the plan held at this revision, as the run's report or
    /// `approvals show` printed it; items a later run added stay pending
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub revision: Option<u64>,
    /// Why, kept with the decision
    #[arg(long)]
    pub note: Option<String>,
    /// Who decides [default: the user running this command]
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub decide: DecideArgs,
    /// Then run the flow now (the file of the run that last updated the plan)
    #[arg(long)]
    pub run: bool,
}

pub async fn approvals(args: ApprovalsArgs, database: &Location) -> anyhow::Result<ExitCode> {
    let store = Store::open(database).await?;
    match args.action {
        None => {
            let query = PlanQuery {
                flow: args.flow.clone(),
                include_closed: args.all,
                limit: 0,
            };
            let plans = store.list_plans(&query).await?;
            if args.json {
                println!("{}", terminal::json(&serde_json::to_string_pretty(&plans)?));
            } else {
                print!("{}", terminal::lines(&plans_table(&plans, args.all)));
            }
        }
        Some(ApprovalsAction::Show { id, json }) => {
            let Some(plan) = store.plan_detail(&id).await? else {
                return refused(&sluice_store::ApprovalError::UnknownPlan(id).to_string());
            };
            if json {
                println!("{}", terminal::json(&serde_json::to_string_pretty(&plan)?));
            } else {
                print!("{}", terminal::lines(&plan_text(&plan)));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn approve(
    args: ApproveArgs,
    data_dir: &Path,
    database: &Location,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(database).await?;
    // `--run` asks for both: a flow file it could not run refuses the
    // approval too, so the same command works once the file is there.
    let mut run_now = args.run;
    if args.run
        && let Some(before) = store.plan_detail(args.decide.id.trim()).await?
    {
        if let Some(why) = unrunnable(&before.plan) {
            return refused(&format!("nothing was approved: {why}"));
        }
        // A path relative to another folder is approved, then refused
        // below: the decision's text must not say the items run now.
        let file = std::path::Path::new(&before.plan.flow_file);
        run_now = !file.is_relative() || file.exists();
    }
    let outcome = match decide(&store, args.decide, Decision::Approved, run_now).await? {
        Ok(outcome) => outcome,
        Err(code) => return Ok(code),
    };
    if !args.run {
        return Ok(ExitCode::SUCCESS);
    }
    let plan = &outcome.plan;
    let file = std::path::PathBuf::from(&plan.flow_file);
    let mut run = super::run_cmd::RunArgs::of(file.clone());
    run.params = plan.params.clone();
    let with: Vec<String> = run
        .params
        .iter()
        .map(|(k, v)| format!(" --param {k}={v}"))
        .collect();
    if file.is_relative() && !file.exists() {
        // Recorded before runs kept absolute paths: relative to wherever
        // that run was started, which is not here.
        let here = std::env::current_dir()
            .map(|d| format!(" ({})", d.display()))
            .unwrap_or_default();
        let why = format!(
            "the flow was not run: plan {} names its flow file {}, a path relative to the directory its run ({}) was started in, and there is no such file here{here}. Run it from that directory (`sluice run {}{}`), or pass the file: `sluice run PATH/TO/{}{}`",
            plan.id,
            plan.flow_file,
            plan.updated_by_run,
            plan.flow_file,
            with.concat(),
            file.file_name()
                .map_or(plan.flow_file.clone(), |n| n.to_string_lossy().into_owned()),
            with.concat(),
        );
        return refused(&why);
    }
    eprintln!(
        "running {}{} now",
        terminal::line(&plan.flow_file),
        terminal::line(&with.concat())
    );
    drop(store);
    super::run_cmd::run(run, data_dir, database).await
}

/// Why `approve --run` could not run `plan`'s flow file, when it could
/// not: missing, or not a file (a relative path recorded by an older
/// version is said where the run is started, with what to do), or a param
/// its run was given held a secret, which the plan keeps redacted.
fn unrunnable(plan: &sluice_store::PlanSummary) -> Option<String> {
    if let Some((name, _)) = plan
        .params
        .iter()
        .find(|(_, v)| v.contains(crate::redact::REDACTED))
    {
        return Some(format!(
            "`--run` would run plan {}'s flow with the params its run was given, but `{name}` held a secret's value, which the history does not keep; approve without `--run` and run the flow with its params yourself (`sluice run {} --param {name}=…`)",
            plan.id, plan.flow_file
        ));
    }
    let file = Path::new(&plan.flow_file);
    if file.is_relative() {
        return None;
    }
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() => None,
        Ok(_) => Some(format!(
            "`--run` would run plan {}'s flow file {}, which is not a file; approve without `--run`, or put the flow back there",
            plan.id, plan.flow_file
        )),
        Err(e) => Some(format!(
            "`--run` would run plan {}'s flow file {}, which cannot be read ({e}); approve without `--run` and run the flow from where it is now (`sluice run PATH`), or put it back there",
            plan.id, plan.flow_file
        )),
    }
}

pub async fn reject(args: DecideArgs, database: &Location) -> anyhow::Result<ExitCode> {
    let store = Store::open(database).await?;
    Ok(
        match decide(&store, args, Decision::Rejected, false).await? {
            Ok(_) => ExitCode::SUCCESS,
            Err(code) => code,
        },
    )
}

/// Records the decision and says what it changed (`run_now`: the flow is
/// run next, by `approve --run`); a refusal is printed and becomes exit
/// status 2.
async fn decide(
    store: &Store,
    args: DecideArgs,
    decision: Decision,
    run_now: bool,
) -> anyhow::Result<Result<DecisionOutcome, ExitCode>> {
    let request = DecisionRequest {
        plan_id: args.id,
        keys: args.only,
        if_pending: Vec::new(),
        decision,
        by: args.by.unwrap_or_else(crate::console::access::os_user),
        note: args.note,
        revision: args.revision,
    };
    match store.decide(&request).await {
        Ok(outcome) => {
            let running = match decision {
                Decision::Rejected if !outcome.changed.is_empty() => {
                    run_under_way(store, &outcome.plan.flow).await
                }
                _ => None,
            };
            print!(
                "{}",
                terminal::lines(&decided_text(
                    &request,
                    &outcome,
                    running.as_deref(),
                    run_now
                ))
            );
            Ok(Ok(outcome))
        }
        Err(StoreError::Approval(e)) => Ok(Err(refused(&e.to_string())?)),
        Err(e) => Err(e.into()),
    }
}

fn refused(why: &str) -> anyhow::Result<ExitCode> {
    eprintln!("error: {}", terminal::line(why));
    Ok(ExitCode::from(2))
}

/// The id of a run of `flow` under way now, if the history knows of one
/// (a history that cannot be read says nothing: the decision is made).
async fn run_under_way(store: &Store, flow: &str) -> Option<String> {
    let runs = store.list_runs(Some(flow), 20).await.ok()?;
    runs.into_iter()
        .find(|r| r.status == sluice_store::RunStatus::Running)
        .map(|r| r.id)
}

/// What a decision did, and what happens next. `running`: a run of the
/// plan's flow under way as a rejection was made; `run_now`: the flow is
/// run next (`approve --run`).
fn decided_text(
    request: &DecisionRequest,
    outcome: &DecisionOutcome,
    running: Option<&str>,
    run_now: bool,
) -> String {
    let plan = &outcome.plan;
    let mut out = String::new();
    let verb = match request.decision {
        Decision::Approved => "approved",
        Decision::Rejected => "rejected",
    };
    // One line, whatever the names and the note hold: the text is printed
    // with its own line breaks kept, and a note's would fake lines.
    let decided = format!(
        "{} {} item{} of plan {} (flow {}, step {}) as {}{}",
        verb,
        outcome.changed.len(),
        plural(outcome.changed.len()),
        plan.id,
        plan.flow,
        plan.step,
        request.by,
        request
            .note
            .as_deref()
            .map(|n| format!(": \"{n}\""))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "{}", terminal::line(&decided));
    for key in &outcome.changed {
        let _ = writeln!(out, "  {}", terminal::line(key));
    }
    for key in &outcome.unchanged {
        let _ = writeln!(out, "  {} (already {verb})", terminal::line(key));
    }
    if !outcome.left.is_empty() {
        let n = outcome.left.len();
        let left = format!(
            "Left as {}: {n} item{} that already ran or {} no longer among the step's items: {}.",
            if n == 1 { "it was" } else { "they were" },
            plural(n),
            if n == 1 { "is" } else { "are" },
            some_keys(&outcome.left)
        );
        let _ = writeln!(out, "{}", terminal::line(&left));
    }
    if let (Some(revision), false) = (request.revision, outcome.later.is_empty()) {
        let n = outcome.later.len();
        let _ = writeln!(
            out,
            "Left pending: {n} item{} that joined the plan after revision {revision}, after what you looked at: {}. Look at {} with `sluice approvals show {}`.",
            plural(n),
            some_keys(&outcome.later),
            if n == 1 { "it" } else { "them" },
            plan.id
        );
    }
    let c = &plan.counts;
    let _ = writeln!(
        out,
        "The plan now has {} approved, {} pending and {} rejected.",
        c.approved, c.pending, c.rejected
    );
    if request.decision == Decision::Approved && run_now {
        let _ = writeln!(
            out,
            "The approved items run now, if they are still among the step's items."
        );
    } else if request.decision == Decision::Approved {
        let _ = writeln!(
            out,
            "The approved items run at the flow's next run, if they are still among the step's items: `sluice run {}` (or `sluice approve {} --run`).",
            plan.flow_file, plan.id
        );
    } else {
        let _ = writeln!(
            out,
            "Rejected items are left alone at every run until someone approves them or they leave the step's items."
        );
        if let Some(run) = running {
            let _ = writeln!(
                out,
                "Run {run} of flow {} is under way: it does not start a rejected item, but an item it had already started when you rejected it is not called back (`sluice runs show {run}` says which ran).",
                plan.flow
            );
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The plans as a table, or a sentence when there are none.
pub fn plans_table(plans: &[PlanSummary], all: bool) -> String {
    if plans.is_empty() {
        return if all {
            "No approval plans recorded.\n".into()
        } else {
            "No pending approvals.\n".into()
        };
    }
    let mut out = format!(
        "{:<10} {:<24} {:<14} {:<7} {:>7} {:>8} {:>8} {:>5}  {:<19}  {}\n",
        "PLAN",
        "FLOW",
        "STEP",
        "STATUS",
        "PENDING",
        "APPROVED",
        "REJECTED",
        "DONE",
        "UPDATED",
        "WHY"
    );
    for p in plans {
        let c = &p.counts;
        // Each cell escaped: a line break in a flow name would split the row.
        let line = format!(
            "{:<10} {:<24} {:<14} {:<7} {:>7} {:>8} {:>8} {:>5}  {:<19}  {}",
            terminal::line(&p.id),
            terminal::line(&p.flow),
            terminal::line(&p.step),
            p.status,
            c.pending,
            c.approved,
            c.rejected,
            c.done,
            local_time(&p.updated_at),
            terminal::line(&p.reason)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if let Some(p) = plans.iter().find(|p| p.counts.pending > 0) {
        let _ = writeln!(
            out,
            "\n`sluice approvals show {id}` lists its items; `sluice approve {id} --revision {rev}` approves them (`--only KEY` for some), `sluice reject {id} --revision {rev}` rejects them.",
            id = p.id,
            rev = p.revision
        );
    }
    out
}

/// One plan and its items, for `sluice approvals show`.
pub fn plan_text(d: &PlanDetail) -> String {
    use terminal::line as cell;
    let p = &d.plan;
    let mut out = String::new();
    // Every value recorded from a run is escaped, so that each stays on
    // its line of the text.
    let _ = writeln!(
        out,
        "Plan {}  {}",
        cell(&p.id),
        p.status.as_str().to_uppercase()
    );
    let _ = writeln!(
        out,
        "  flow      {} ({})",
        cell(&p.flow),
        cell(&p.flow_file)
    );
    let _ = writeln!(out, "  step      {}", cell(&p.step));
    let _ = writeln!(out, "  why       {}", cell(&p.reason));
    let _ = writeln!(
        out,
        "  found     {} by run {}",
        local_time(&p.created_at),
        p.created_by_run
    );
    let _ = writeln!(
        out,
        "  updated   {} by run {}",
        local_time(&p.updated_at),
        p.updated_by_run
    );
    let _ = writeln!(
        out,
        "  revision  {}{}",
        p.revision,
        if p.revision > 1 {
            " (REV: the revision each item joined at)"
        } else {
            ""
        }
    );
    if let Some(closed) = &p.closed_at {
        let _ = writeln!(out, "  closed    {}", local_time(closed));
    }
    let c = &p.counts;
    let _ = writeln!(
        out,
        "  items     {} pending, {} approved, {} rejected, {} done, {} no longer needed",
        c.pending, c.approved, c.rejected, c.done, c.closed
    );
    let width = d
        .items
        .iter()
        .map(|i| cell(&i.key).chars().count())
        .max()
        .unwrap_or(3)
        .clamp(3, 48);
    let _ = writeln!(
        out,
        "\n  {:<width$}  {:<9} {:>3}  DETAIL",
        "KEY", "STATE", "REV"
    );
    for item in &d.items {
        let detail = match (item.state, &item.decided_by, &item.outcome) {
            (PlanItemState::Done | PlanItemState::Closed, _, Some(o)) => format!(
                "{} in run {}{}",
                o.outcome,
                o.run_id,
                o.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            (_, Some(by), _) => format!(
                "by {by} at {}{}",
                item.decided_at
                    .as_deref()
                    .map(local_time)
                    .unwrap_or_default(),
                item.note
                    .as_deref()
                    .map(|n| format!(": \"{n}\""))
                    .unwrap_or_default()
            ),
            _ => format!("input {}", cut(&item.input.to_string(), 100)),
        };
        // Why it waits first: the input after it is cut, and may not get
        // as far as its reason.
        let detail = match item.reason() {
            Some(why) => format!("{why}; {detail}"),
            None => detail,
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:<9} {:>3}  {}",
            cell(&item.key),
            item.state.as_str(),
            item.revision,
            cell(&detail)
        );
    }
    if p.status == sluice_store::PlanStatus::Open && c.pending > 0 {
        let _ = writeln!(
            out,
            "\nApprove: sluice approve {id} --revision {rev} [--only KEY]... [--note TEXT]\nReject:  sluice reject {id} --revision {rev} [--only KEY]... [--note TEXT]\n(--revision {rev}: what this lists; anything a later run adds stays pending)",
            id = p.id,
            rev = p.revision
        );
    }
    out
}

fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let short: String = text.chars().take(chars.saturating_sub(1)).collect();
    format!("{short}…")
}
