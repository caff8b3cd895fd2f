//! The report's people, one table per section: new users (and license
//! holders already in Procore who need someone: inactive there, or known
//! there under another address), leavers, returners, and inactive Procore
//! users the flow does not manage. Each
//! row says what was done (or waits), and why: the license group and
//! whether the person was matched by mail or UPN, or why they left.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;
use sluice_guest::{ForEachOutput, GateSummary, HeldEntry, ItemEntry, ItemResult, StepError};
use sluice_guest_services::sync::{
    CreateStatus, Created, DeactivateStatus, Deactivated, GuardKind, Leaver, MatchedBy, Person,
    ProjectDone, ProjectOwedStatus, ProjectRemoval, ReactivateStatus, Reactivated,
};

use crate::input::{CreateItems, Input, Parts};

/// What a row says was done (or waits), as the report shows it.
pub mod status {
    pub const CREATED: &str = "created";
    pub const CONFLICT: &str = "conflict";
    pub const FAILED: &str = "failed";
    pub const WOULD_CREATE: &str = "would create";
    pub const INACTIVE: &str = "inactive in Procore";
    /// The same Entra user as a managed Procore user under another address.
    pub const KNOWN_AS: &str = "in Procore under another address";
    /// Created, but Procore refused the project add: counts as created
    /// and as failed.
    pub const CREATED_NOT_ADDED: &str = "created, not added to project";
    pub const DEACTIVATED: &str = "deactivated";
    /// Deactivated, but Procore refused the project removal: counts as
    /// deactivated and as failed.
    pub const DEACTIVATED_NOT_REMOVED: &str = "deactivated, not removed from project";
    /// Deactivated by an earlier run whose host died, which Procore had
    /// applied before an admin rejected it: recorded now, counts as
    /// deactivated.
    pub const DEACTIVATED_BEFORE_REJECTION: &str = "deactivated before the rejection";
    pub const WOULD_DEACTIVATE: &str = "would deactivate";
    pub const WAITING: &str = "waiting for approval";
    pub const REJECTED: &str = "rejected";
    pub const NOT_ACTED_ON: &str = "leaver (not acted on)";
    pub const REACTIVATED: &str = "reactivated";
    /// Reactivated, but Procore refused the project add: counts as
    /// reactivated and as failed.
    pub const REACTIVATED_NOT_ADDED: &str = "reactivated, not added to project";
    pub const ALREADY_ACTIVE: &str = "already active";
    pub const WOULD_REACTIVATE: &str = "would reactivate";
    pub const NOT_MANAGED: &str = "inactive, not managed";
    /// A project call an earlier run owed, made now.
    pub const ADDED_TO_PROJECT: &str = "added to project";
    pub const REMOVED_FROM_PROJECT: &str = "removed from project";
    pub const NOT_ON_PROJECT: &str = "not on project";
    pub const WOULD_ADD_TO_PROJECT: &str = "would add to project";
    pub const WOULD_REMOVE_FROM_PROJECT: &str = "would remove from project";
}

/// One person in one section.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub status: &'static str,
    pub name: String,
    pub key: String,
    /// Why: license group and how matched, or why they left.
    pub why: String,
    pub detail: String,
}

/// A titled table of people, with a line under the title when there is
/// something to say (the approve command): every row, as [`all`] collects
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: &'static str,
    pub note: Option<String>,
    pub rows: Vec<Row>,
}

/// Where the rows go as they are made, one at a time, section by section
/// (the page, the mail and the counts; or a list of every row): at a
/// million members the rows are never all held at once.
pub trait Sink {
    /// A section begins; the rows until the next one are its own.
    fn section(&mut self, title: &'static str, note: Option<String>);
    /// A row of the current section.
    fn row(&mut self, row: Row);
}

/// Every row, each in its section: for a caller that wants them all.
#[derive(Default)]
pub struct AllRows(pub Vec<Section>);

impl Sink for AllRows {
    fn section(&mut self, title: &'static str, note: Option<String>) {
        self.0.push(Section {
            title,
            note,
            rows: Vec::new(),
        });
    }

    fn row(&mut self, row: Row) {
        if let Some(section) = self.0.last_mut() {
            section.rows.push(row);
        }
    }
}

/// Every section, in the order shown, each row handed to `sink`. The
/// paged lists are read a page at a time; a page that cannot be read
/// ends the report with the error.
pub fn write(input: &Input, sink: &mut impl Sink) -> Result<(), StepError> {
    let parts = input.parts()?;
    // Keys only, so a returner's inactive row and an unmanaged user who
    // holds a license are left out without comparing every pair.
    let returning = parts
        .returners
        .iter()
        .map(|r| r.map(|r| r.key))
        .collect::<Result<HashSet<String>, _>>()?;
    let inactive_keys = joiners(&parts, &returning, sink)?;
    leavers(input, &parts, sink)?;
    returners(input, sink);
    owed_projects(input, sink);
    not_managed(&parts, &inactive_keys, sink)
}

fn text(item: &Value, name: &str) -> String {
    item.get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// "License – Microsoft E3 (matched by mail)".
fn licensed(groups: &[String], matched_by: &str) -> String {
    match groups.join(", ") {
        g if g.is_empty() => format!("matched by {matched_by}"),
        g => format!("{g} (matched by {matched_by})"),
    }
}

fn person_why(item: &Value) -> String {
    serde_json::from_value::<Person>(item.clone())
        .map(|p| licensed(&p.groups, p.matched_by().as_str()))
        .unwrap_or_default()
}

/// Whether a project add was refused (the step says `failed: …`): the
/// person has a Procore account but not the project, which someone must
/// fix, so the row counts as failed too.
fn project_failed(project: Option<&str>) -> bool {
    project.is_some_and(|p| p.starts_with("failed"))
}

/// The row of one person the create step handled.
fn created_row(item: &Value, output: &Created) -> Row {
    let status = match output.status {
        CreateStatus::Created if project_failed(output.project.as_deref()) => {
            status::CREATED_NOT_ADDED
        }
        CreateStatus::Created => status::CREATED,
        CreateStatus::Conflict => status::CONFLICT,
        CreateStatus::WouldCreate => status::WOULD_CREATE,
        CreateStatus::Failed => status::FAILED,
    };
    let mut parts = Vec::new();
    if let Some(id) = &output.procore_id {
        parts.push(format!("Procore id {id}"));
    }
    if let Some(reason) = output.reason.as_deref().filter(|r| !r.is_empty()) {
        parts.push(reason.to_string());
    }
    let mut detail = parts.join("; ");
    if let Some(project) = output.project.as_deref().filter(|p| !p.is_empty()) {
        detail = format!("{detail}; project: {}", project.replace('_', " "));
    }
    Row {
        status,
        name: text(item, "displayName"),
        key: text(item, "key"),
        why: person_why(item),
        detail,
    }
}

/// The row of one item of a `for_each` step: its own row for an output,
/// a failed row for an error.
fn item_row<O>(
    entry: &ItemEntry<O>,
    name_of: &str,
    why: impl Fn(&Value) -> String,
    row: impl Fn(&Value, &O) -> Row,
) -> Row {
    match &entry.result {
        ItemResult::Ok { output } => row(&entry.item, output),
        ItemResult::Failed { error } => Row {
            status: status::FAILED,
            name: text(&entry.item, name_of),
            key: text(&entry.item, "key"),
            why: why(&entry.item),
            detail: error.message.clone(),
        },
    }
}

/// Rows of a `for_each` step's output.
fn item_rows<O>(
    step: Option<&ForEachOutput<O>>,
    name_of: &str,
    why: impl Fn(&Value) -> String,
    row: impl Fn(&Value, &O) -> Row,
    sink: &mut impl Sink,
) {
    for entry in step.into_iter().flat_map(|s| s.items.iter()) {
        sink.row(item_row(entry, name_of, &why, &row));
    }
}

/// The row of one person the create step's gate held back.
fn held_person_row(entry: &HeldEntry, status: &'static str, detail: &str) -> Row {
    Row {
        status,
        name: text(&entry.item, "displayName"),
        key: entry.key.clone(),
        why: person_why(&entry.item),
        detail: detail.to_string(),
    }
}

/// New users: what the create step did, who waits for approval to be
/// created (with the approve command) or was rejected, then license
/// holders whose Procore user is inactive and who are not returners, and
/// those known in Procore under another address (not created: the same
/// Entra user; Procore's address is for an admin to change).
/// Returns the keys of every license holder whose Procore user is inactive.
fn joiners(
    parts: &Parts<'_>,
    returning: &HashSet<String>,
    sink: &mut impl Sink,
) -> Result<HashSet<String>, StepError> {
    let gate = parts.created_gate;
    sink.section("New users", gate.and_then(approve_note));
    match parts.created {
        CreateItems::Whole(step) => item_rows(step, "displayName", person_why, created_row, sink),
        CreateItems::Items(items) => {
            for entry in items.iter() {
                sink.row(item_row(&entry?, "displayName", person_why, created_row));
            }
        }
    }
    if let Some(gate) = gate {
        held_rows(
            gate,
            held_person_row,
            [
                "not created until someone approves",
                "rejected: not created unless approved",
            ],
            sink,
        );
    }
    let mut inactive_keys = HashSet::new();
    for inactive in parts.present_inactive.iter() {
        let inactive = inactive?;
        let matched_by = inactive.matched_by();
        let person = inactive.person;
        if !returning.contains(&person.key) {
            sink.row(Row {
                status: status::INACTIVE,
                why: licensed(&person.groups, matched_by.as_str()),
                name: person.display_name.unwrap_or_default(),
                key: person.key.clone(),
                detail: format!(
                    "holds a license but Procore user {} is inactive; not created again",
                    inactive.procore_id
                ),
            });
        }
        inactive_keys.insert(person.key);
    }
    for known in parts.known_as.iter() {
        let known = known?;
        let address = known.procore_address();
        let mut detail = format!(
            "the same Entra user as Procore user {}, known in Procore as {address}; Procore's email was not changed (change it there by hand); not created",
            known.procore_id
        );
        if !address.eq_ignore_ascii_case(&known.managed_as) {
            detail.push_str(&format!("; managed as {}", known.managed_as));
        }
        let groups: Vec<String> = known.license_group.iter().cloned().collect();
        sink.row(Row {
            status: status::KNOWN_AS,
            name: known.name.unwrap_or_default(),
            // Their key matches no Procore user: what the flow kept of their
            // Entra user (its record of them, or the mark of a create a
            // killed run made for them) does.
            why: licensed(&groups, MatchedBy::EntraId.as_str()),
            detail,
            key: known.key,
        });
    }
    Ok(inactive_keys)
}

fn leaver_why(item: &Value) -> String {
    serde_json::from_value::<Leaver>(item.clone())
        .map(|l| l.reason.as_str().to_string())
        .unwrap_or_default()
}

fn deactivated_row(item: &Value, out: &Deactivated) -> Row {
    let status = match (out.status, out.removed_from_project) {
        (DeactivateStatus::Deactivated, Some(ProjectRemoval::Failed)) => {
            status::DEACTIVATED_NOT_REMOVED
        }
        (DeactivateStatus::Deactivated, _) => status::DEACTIVATED,
        (DeactivateStatus::WouldDeactivate, _) => status::WOULD_DEACTIVATE,
    };
    let mut detail = format!("Procore id {}", out.procore_id);
    let project = match out.removed_from_project {
        Some(ProjectRemoval::Removed) => Some("removed from the project"),
        Some(ProjectRemoval::NotOnProject) => Some("was not on the project"),
        Some(ProjectRemoval::WouldRemove) => Some("would be removed from the project"),
        Some(ProjectRemoval::Failed) => None,
        None => None,
    };
    for part in project
        .map(str::to_string)
        .into_iter()
        .chain(out.problem.clone())
    {
        detail.push_str("; ");
        detail.push_str(&part);
    }
    Row {
        status,
        name: out.name.clone().unwrap_or_else(|| text(item, "name")),
        key: out.key.clone(),
        why: out.reason.as_str().to_string(),
        detail,
    }
}

fn held_row(entry: &HeldEntry, status: &'static str, detail: &str) -> Row {
    let leaver = serde_json::from_value::<Leaver>(entry.item.clone()).ok();
    Row {
        status,
        name: leaver
            .as_ref()
            .and_then(|l| l.name.clone())
            .unwrap_or_default(),
        key: entry.key.clone(),
        why: leaver_why(&entry.item),
        detail: match leaver {
            Some(l) => format!("Procore id {}; {detail}", l.procore_id),
            None => detail.to_string(),
        },
    }
}

/// A row for each item of `gate` that waits for approval and each one
/// rejected, made by `row` with the detail `[waiting, rejected]` says.
fn held_rows(
    gate: &GateSummary,
    row: fn(&HeldEntry, &'static str, &str) -> Row,
    [waiting, rejected]: [&str; 2],
    sink: &mut impl Sink,
) {
    for e in &gate.waiting {
        sink.row(row(e, status::WAITING, waiting));
    }
    for e in &gate.rejected {
        sink.row(row(e, status::REJECTED, rejected));
    }
}

/// The line that says how to approve what waits (or that a real run
/// would wait).
fn approve_note(gate: &GateSummary) -> Option<String> {
    if gate.waiting.is_empty() {
        return None;
    }
    let n = gate.waiting.len();
    let why = gate
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    Some(match (&gate.approve, gate.approve_plan(), &gate.plan) {
        (Some(cmd), Some(whole), Some(plan)) => format!(
            "{n} waiting for approval{why}. Approve with: {cmd} (one person: {whole} --only KEY; look first: sluice approvals show {plan})"
        ),
        _ => format!("{n} would wait for approval{why}."),
    })
}

/// Leavers: deactivated (or failed), waiting for approval, rejected; and,
/// when the flow has no deactivate step that ran, leavers not acted on.
fn leavers(input: &Input, parts: &Parts<'_>, sink: &mut impl Sink) -> Result<(), StepError> {
    let step = input.deactivated.as_ref();
    let gate = step.and_then(|s| s.approval.as_ref());
    sink.section("Leavers", gate.and_then(approve_note));
    // No license group matched: nothing says who holds a license, so the
    // managed people compare found leaving (every one of them) are not
    // listed; the guard's warning says why.
    let unchecked = step.is_none() && parts.guard.kind == Some(GuardKind::NoLicenseGroup);
    item_rows(step, "name", leaver_why, deactivated_row, sink);
    for told in parts.rejected_too_late {
        sink.row(Row {
            status: status::DEACTIVATED_BEFORE_REJECTION,
            name: told.name.clone().unwrap_or_default(),
            why: "the deactivation was rejected after a run that died had sent it".into(),
            detail: format!(
                "Procore id {}; Procore had applied it, so it stands (nothing more was done; reactivate them in Procore by hand, or license them again and the flow reactivates them)",
                told.procore_id
            ),
            key: told.key.clone(),
        });
    }
    if let Some(gate) = gate {
        held_rows(
            gate,
            held_row,
            [
                "not deactivated until someone approves",
                "rejected: left active until approved",
            ],
            sink,
        );
    }
    if step.is_none() && !unchecked {
        for l in parts.leavers.iter() {
            let l = l?;
            sink.row(Row {
                status: status::NOT_ACTED_ON,
                name: l.name.unwrap_or_default(),
                why: l.reason.as_str().to_string(),
                detail: format!(
                    "Procore id {}; the deactivate step did not run",
                    l.procore_id
                ),
                key: l.key,
            });
        }
    }
    Ok(())
}

fn returner_why(item: &Value) -> String {
    let group = text(item, "license_group");
    let by = item
        .get("matched_by")
        .and_then(|by| MatchedBy::deserialize(by).ok())
        .unwrap_or(MatchedBy::Mail)
        .as_str();
    licensed(
        &[group]
            .into_iter()
            .filter(|g| !g.is_empty())
            .collect::<Vec<_>>(),
        by,
    )
}

fn reactivated_row(_item: &Value, out: &Reactivated) -> Row {
    let status = match out.status {
        ReactivateStatus::Reactivated | ReactivateStatus::AlreadyActive
            if project_failed(out.project.as_deref()) =>
        {
            status::REACTIVATED_NOT_ADDED
        }
        ReactivateStatus::Reactivated => status::REACTIVATED,
        ReactivateStatus::AlreadyActive => status::ALREADY_ACTIVE,
        ReactivateStatus::WouldReactivate => status::WOULD_REACTIVATE,
    };
    let mut detail = format!("Procore id {}", out.procore_id);
    if let Some(project) = out.project.as_deref().filter(|p| !p.is_empty()) {
        detail.push_str(&format!("; project: {}", project.replace('_', " ")));
    }
    let groups: Vec<String> = out.license_group.clone().into_iter().collect();
    Row {
        status,
        name: out.name.clone().unwrap_or_default(),
        key: out.key.clone(),
        why: licensed(&groups, out.matched_by.as_str()),
        detail,
    }
}

/// Returners: people the flow deactivated who hold a license again.
fn returners(input: &Input, sink: &mut impl Sink) {
    sink.section("Returners", None);
    item_rows(
        input.reactivated.as_ref(),
        "name",
        returner_why,
        reactivated_row,
        sink,
    );
}

fn owed_why(item: &Value) -> String {
    let action = match text(item, "action").as_str() {
        "remove" => "removal from",
        _ => "add to",
    };
    format!(
        "an earlier run owed the {action} project {}: Procore refused it or never answered, or the run was stopped before it recorded the call",
        text(item, "project_id")
    )
}

fn owed_row(item: &Value, out: &ProjectDone) -> Row {
    let status = match out.status {
        ProjectOwedStatus::Added => status::ADDED_TO_PROJECT,
        ProjectOwedStatus::Removed => status::REMOVED_FROM_PROJECT,
        ProjectOwedStatus::NotOnProject => status::NOT_ON_PROJECT,
        ProjectOwedStatus::WouldAdd => status::WOULD_ADD_TO_PROJECT,
        ProjectOwedStatus::WouldRemove => status::WOULD_REMOVE_FROM_PROJECT,
    };
    Row {
        status,
        name: out.name.clone().unwrap_or_default(),
        key: out.key.clone(),
        why: owed_why(item),
        detail: format!("Procore id {}; project {}", out.procore_id, out.project_id),
    }
}

/// Project calls earlier runs owed (a project add or removal Procore
/// refused or never answered), made in this run; shown only when there
/// were some.
fn owed_projects(input: &Input, sink: &mut impl Sink) {
    let Some(step) = input.project.as_ref().filter(|s| !s.items.is_empty()) else {
        return;
    };
    sink.section("Project calls owed by earlier runs", None);
    item_rows(Some(step), "name", owed_why, owed_row, sink);
}

/// Inactive Procore users this flow did not deactivate: reported, never
/// touched. A license holder whose Procore user is inactive already has
/// its row under "inactive in Procore" (`inactive_keys`): one row per
/// person.
fn not_managed(
    parts: &Parts<'_>,
    inactive_keys: &HashSet<String>,
    sink: &mut impl Sink,
) -> Result<(), StepError> {
    sink.section("Inactive in Procore, not managed by this flow", None);
    for u in parts.inactive_unmanaged.iter() {
        let u = u?;
        if inactive_keys.contains(&u.key) {
            continue;
        }
        sink.row(Row {
            status: status::NOT_MANAGED,
            name: String::new(),
            why: String::new(),
            detail: format!(
                "Procore id {}{}; left alone: this flow did not deactivate them",
                u.procore_id,
                u.login
                    .as_deref()
                    .map(|l| format!(", login {l}"))
                    .unwrap_or_default()
            ),
            key: u.key,
        });
    }
    Ok(())
}
