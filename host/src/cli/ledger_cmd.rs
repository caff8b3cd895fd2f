//! `sluice ledger KEY [--flow NAME]` — everything that happened to one key
//! (one person) across runs, oldest first: each item run or held with the
//! details its component returned, each approval decision with who made
//! it, each approval closed as no longer needed — and `sluice ledger
//! --flow NAME`, each key's latest state. Keys are looked up without
//! regard to case.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;
use sluice_store::render::local_time;
use sluice_store::{
    KeyApproval, LedgerEntry, LedgerEvent, LedgerKey, LedgerKeysQuery, Location, PlanItemState,
    Store,
};

use super::terminal;

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The key (for the license sync: the person's mail or UPN); without
    /// it, `--flow` lists every key's latest state
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub key: Option<String>,
    /// Only this flow (its `name`)
    #[arg(long)]
    pub flow: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Keys read per page when listing a flow's keys: the most a page holds.
/// Each page ranks the latest entry of every key after the last one, so
/// pages of 1,000 made 82 passes over a 100k-member flow's items, and
/// listing its keys took 12 to 35 seconds.
const PAGE: usize = sluice_store::MAX_KEYS_PAGE;

pub async fn ledger(args: LedgerArgs, database: &Location) -> anyhow::Result<ExitCode> {
    let store = Store::open(database).await?;
    match (&args.key, &args.flow) {
        (Some(key), flow) => {
            let entries = store.ledger(key, flow.as_deref()).await?;
            if args.json {
                println!(
                    "{}",
                    terminal::json(&serde_json::to_string_pretty(&entries)?)
                );
            } else {
                print!("{}", terminal::lines(&story_text(key, &entries)));
            }
        }
        (None, Some(flow)) => {
            let keys = all_keys(&store, flow).await?;
            if args.json {
                println!("{}", terminal::json(&serde_json::to_string_pretty(&keys)?));
            } else {
                print!("{}", terminal::lines(&keys_text(flow, &keys)));
            }
        }
        (None, None) => {
            eprintln!(
                "error: give a KEY (`sluice ledger ann.lee@example.com`), or `--flow NAME` to list each key's latest state"
            );
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn all_keys(store: &Store, flow: &str) -> anyhow::Result<Vec<LedgerKey>> {
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .ledger_keys(&LedgerKeysQuery {
                flow: flow.to_string(),
                after: after.take(),
                limit: PAGE,
            })
            .await?;
        after = page.keys.last().map(|k| k.key.clone());
        keys.extend(page.keys);
        if !page.more {
            return Ok(keys);
        }
    }
}

/// One key's story, oldest first.
pub fn story_text(key: &str, entries: &[LedgerEntry]) -> String {
    if entries.is_empty() {
        return format!(
            "Nothing is recorded for `{key}` (keys are compared without case; runs pruned with `sluice runs prune` are gone from the ledger).\n\
             A flow keeps someone under the key it first knew them by: the license sync keeps a person whose mail appeared or changed under their old address (its report lists them as \"in Procore under another address\"); `sluice ledger --flow NAME` lists every key.\n"
        );
    }
    let mut out = format!(
        "{} — {} entr{}, oldest first\n",
        terminal::line(&entries[0].key),
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    let _ = writeln!(
        out,
        "{:<19}  {:<24}  {:<36}  WHAT",
        "TIME", "RUN", "FLOW / STEP"
    );
    for e in entries {
        let (run, what) = match &e.event {
            LedgerEvent::Item {
                run_id,
                dry_run,
                status,
                output,
                error,
                ..
            } => {
                let mut what = status.to_string();
                if *dry_run {
                    what.push_str(" (dry run or replay: nothing changed)");
                }
                if let Some(details) = output.as_ref().and_then(details) {
                    let _ = write!(what, ": {details}");
                }
                if let Some(error) = error {
                    let _ = write!(what, ": {}", first_line(error));
                }
                (run_id.as_str(), what)
            }
            LedgerEvent::Decision {
                plan_id,
                decision,
                by,
                note,
            } => (
                "—",
                format!(
                    "{decision} by {by} (plan {plan_id}){}",
                    note.as_deref()
                        .map(|n| format!(": \"{n}\""))
                        .unwrap_or_default()
                ),
            ),
            LedgerEvent::Closed {
                plan_id,
                run_id,
                detail,
            } => (
                run_id.as_str(),
                format!(
                    "approval closed (plan {plan_id}): {}",
                    detail.as_deref().unwrap_or("no longer needed")
                ),
            ),
        };
        // Each cell escaped: a line break in a flow name would split the row.
        let line = format!(
            "{:<19}  {:<24}  {:<36}  {}",
            local_time(&e.at),
            terminal::line(run),
            terminal::line(&format!("{} / {}", e.flow, e.step)),
            terminal::line(&what)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Each key's latest state in a flow.
pub fn keys_text(flow: &str, keys: &[LedgerKey]) -> String {
    if keys.is_empty() {
        return format!("No keyed items are recorded for flow `{flow}`.\n");
    }
    let width = keys
        .iter()
        .map(|k| terminal::line(&k.key).chars().count())
        .max()
        .unwrap_or(3)
        .clamp(3, 48);
    let mut out = format!(
        "{:<width$}  {:<19}  {:<14}  {:<10}  LATEST\n",
        "KEY", "TIME", "STEP", "STATUS"
    );
    for k in keys {
        let mut what = k.output.as_ref().and_then(details).unwrap_or_default();
        if let Some(error) = &k.error {
            what = first_line(error).to_string();
        }
        for a in &k.approvals {
            let _ = write!(what, " [{}: {} in plan {}]", a.step, standing(a), a.plan_id);
        }
        // Each cell escaped: a line break in a key would split the row.
        let line = format!(
            "{:<width$}  {:<19}  {:<14}  {:<10}  {}",
            terminal::line(&k.key),
            local_time(&k.at),
            terminal::line(&k.step),
            k.status,
            terminal::line(what.trim())
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(
        out,
        "{} key{}",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    );
    out
}

/// Where a key stands in a plan, in words. `by` is who made the latest
/// decision, so it goes with the decision: an item closed because its key
/// left the step's items was closed by a run, not by its approver.
fn standing(a: &KeyApproval) -> String {
    let by =
        a.by.as_deref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
    match a.state {
        PlanItemState::Pending => "waiting for approval".to_string(),
        PlanItemState::Approved => format!("approved{by}, runs at the next run"),
        PlanItemState::Rejected => format!("rejected{by}"),
        PlanItemState::Done => format!("approved{by}, done"),
        PlanItemState::Closed => "no longer needed (closed by a run)".to_string(),
    }
}

/// The details a component returned, on one line: its output's plain
/// fields (`status=deactivated, procore_id=42, …`), or the output itself.
fn details(output: &Value) -> Option<String> {
    const LONGEST: usize = 240;
    let text = match output {
        Value::Null => return None,
        Value::Object(fields) => fields
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) if !s.is_empty() => Some(format!("{k}={s}")),
                Value::Number(n) => Some(format!("{k}={n}")),
                Value::Bool(b) => Some(format!("{k}={b}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    if text.is_empty() {
        return None;
    }
    Some(if text.chars().count() > LONGEST {
        let cut: String = text.chars().take(LONGEST - 1).collect();
        format!("{cut}…")
    } else {
        text
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_a_plan_says_who_decided_only_of_a_decision() {
        let key = |state: PlanItemState| LedgerKey {
            key: "yuki@x.com".into(),
            step: "deactivate".into(),
            at: "2026-12-06T08:00:00Z".into(),
            run_id: "r1".into(),
            status: sluice_store::ItemStatus::Waiting,
            output: None,
            error: None,
            approvals: vec![KeyApproval {
                plan_id: "ap-1".into(),
                step: "deactivate".into(),
                state,
                by: Some("Dana Admin".into()),
            }],
        };
        let said = |state| keys_text("f", &[key(state)]);
        assert!(
            said(PlanItemState::Closed)
                .contains("[deactivate: no longer needed (closed by a run) in plan ap-1]")
        );
        assert!(!said(PlanItemState::Closed).contains("Dana"));
        assert!(
            said(PlanItemState::Rejected)
                .contains("[deactivate: rejected by Dana Admin in plan ap-1]")
        );
        assert!(said(PlanItemState::Done).contains("approved by Dana Admin, done"));
        assert!(
            said(PlanItemState::Approved).contains("approved by Dana Admin, runs at the next run")
        );
        assert!(
            said(PlanItemState::Pending)
                .contains("[deactivate: waiting for approval in plan ap-1]")
        );
    }

    /// An empty key (`sluice ledger ''`, `run --only ''`, a shell variable
    /// that was not set) is refused, not taken as a key nobody has.
    #[test]
    fn an_empty_key_is_refused_where_it_is_given() {
        use clap::Parser;
        for args in [
            &["sluice", "ledger", ""][..],
            &["sluice", "run", "f.toml", "--only", ""],
        ] {
            let e = super::super::Cli::try_parse_from(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::InvalidValue,
                "{args:?}: {e}"
            );
            assert!(
                e.to_string().contains("a value is required"),
                "{args:?}: {e}"
            );
        }
        assert!(super::super::Cli::try_parse_from(["sluice", "ledger", "ann@x.com"]).is_ok());
    }

    #[test]
    fn an_unknown_key_points_to_the_key_a_flow_may_keep_instead() {
        let text = story_text("sara.silva@contoso.com", &[]);
        assert!(text.starts_with("Nothing is recorded for `sara.silva@contoso.com`"));
        assert!(
            text.contains("under their old address")
                && text.contains("`sluice ledger --flow NAME` lists every key"),
            "{text}"
        );
    }
}
