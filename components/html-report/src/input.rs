//! What the report reads, in either of its two shapes.
//!
//! The shipped flow gives the compare step's parts one by one, each list a
//! top-level input read a page at a time (contract 0.2.1, [`Paged`]):
//! `counts`, `guard`, `present_inactive`, `leavers`, `returners`,
//! `inactive_unmanaged`, `known_as`, `rejected_too_late` (small: read
//! whole, null for none), and the create step's items as `created_items`
//! with its approval gate as `created_approval`. At
//! a million members the compare output holds some 900,000 people the
//! report only counts (`present`, `missing`); read whole they would fill
//! most of an instance's memory.
//!
//! A flow written before may still give `diff = "${steps.diff}"` (the whole
//! compare output) and `created = "${steps.create}"` (the whole `for_each`
//! output): those are read as they always were, inline, fine for tenants
//! of some hundred thousand; their `present` and `missing` are skipped
//! unread. Giving a list both ways is refused, naming both.

use serde::Deserialize;
use sluice_guest::{ForEachOutput, GateSummary, ItemEntry, JsonSchema, Paged, StepError};
use sluice_guest_services::sync::{
    Adopted, Counts, Created, Deactivated, Guard, InactivePerson, InactiveUnmanaged, KnownAs,
    Leaver, ProjectDone, Reactivated, Returner,
};

use crate::mail;

/// What to report.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The `compare` step's output, whole (`${steps.diff}`): the earlier
    /// shape, read inline. Its `present` and `missing` are not read. Give
    /// either this or the parts below (`counts` … `inactive_unmanaged`).
    #[serde(default)]
    pub diff: Option<DiffParts>,
    /// The compare step's counts (`${steps.diff.counts}`).
    #[serde(default)]
    pub counts: Option<Counts>,
    /// The compare step's guard (`${steps.diff.guard}`).
    #[serde(default)]
    pub guard: Option<Guard>,
    /// License holders whose Procore user is inactive
    /// (`${steps.diff.present_inactive}`).
    #[serde(default)]
    pub present_inactive: Paged<InactivePerson>,
    /// Leavers (`${steps.diff.leavers}`): shown as not acted on when no
    /// `deactivated` is given.
    #[serde(default)]
    pub leavers: Paged<Leaver>,
    /// Returners (`${steps.diff.returners}`).
    #[serde(default)]
    pub returners: Paged<Returner>,
    /// Inactive Procore users the flow does not manage
    /// (`${steps.diff.inactive_unmanaged}`).
    #[serde(default)]
    pub inactive_unmanaged: Paged<InactiveUnmanaged>,
    /// License holders the flow manages under another key: the same Entra
    /// user, not created (`${steps.diff.known_as}`).
    #[serde(default)]
    pub known_as: Paged<KnownAs>,
    /// Deactivations an admin rejected after Procore had applied them
    /// (a run that died sent them): `${steps.diff.rejected_too_late}`;
    /// null (a compare step that did not run) is none.
    #[serde(default)]
    pub rejected_too_late: Option<Vec<Adopted>>,
    /// The `procore-create-user` step's output, whole (`${steps.create}`):
    /// the earlier shape, read inline. Or give `created_items`.
    #[serde(default)]
    pub created: Option<ForEachOutput<Created>>,
    /// The `procore-create-user` step's items (`${steps.create.items}`).
    #[serde(default)]
    pub created_items: Paged<ItemEntry<Created>>,
    /// The create step's approval gate (`${steps.create.approval}`): who
    /// waits for approval to be created, and the approve command. Given
    /// with `created_items` (the whole `created` carries its own).
    #[serde(default)]
    pub created_approval: Option<GateSummary>,
    /// The `procore-deactivate-user` step's output, with its approval
    /// gate's decision (null when it did not run).
    #[serde(default)]
    pub deactivated: Option<ForEachOutput<Deactivated>>,
    /// The `procore-reactivate-user` step's output (null when it did not run).
    #[serde(default)]
    pub reactivated: Option<ForEachOutput<Reactivated>>,
    /// The `procore-project-owed` step's output: project calls earlier
    /// runs owed (null when it did not run).
    #[serde(default)]
    pub project: Option<ForEachOutput<ProjectDone>>,
    /// How many license group members were skipped as disabled.
    #[serde(default)]
    pub skipped_disabled: usize,
    /// Lines to show above the tables; empty ones are left out.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The members step's own warnings (`${steps.members.warnings}`): why
    /// it read every member instead of the changes, joiners Graph did not
    /// list yet. Shown after `warnings`, the same way.
    #[serde(default)]
    pub members_warnings: Vec<String>,
    /// Earlier runs of the flow, since its last success, that were
    /// stopped or failed after doing something (`${run.earlier_unfinished}`):
    /// no report told their work, so this one does, each as a warning line,
    /// and mails it.
    #[serde(default)]
    pub earlier_unfinished: Vec<EarlierRun>,
    /// The keys a `--only KEY` run was limited to (`${run.only}`): the
    /// report says so, and that everyone else was left as they were, since
    /// its counts and tables tell only of them.
    #[serde(default)]
    pub only: Vec<String>,
    /// How many rows of each section the mail body shows (the page shows
    /// them all).
    #[serde(default = "default_mail_rows")]
    pub mail_rows: usize,
}

/// An earlier run that ended without succeeding, as the host tells it.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct EarlierRun {
    /// The run's id.
    pub id: String,
    /// How it ended: `interrupted` or `failed`.
    pub status: String,
    /// When it started.
    #[serde(default)]
    pub started_at: String,
    /// Why it ended, as its record says (not shown: its record has it).
    #[serde(default)]
    pub error: Option<String>,
    /// How many items of each step it did.
    #[serde(default)]
    pub done: std::collections::BTreeMap<String, u64>,
    /// How many items of each step failed.
    #[serde(default)]
    pub failed: std::collections::BTreeMap<String, u64>,
    /// How many items of each step have no record (its process was
    /// killed): not started, or cut off under way (maybe done: the next
    /// run reads the services again and acts on what is still left).
    #[serde(default)]
    pub unrecorded: std::collections::BTreeMap<String, u64>,
}

impl EarlierRun {
    /// The line the report shows for it: what it did first, as the mail
    /// cuts a warning at 200 characters; why it ended is in its record.
    pub fn line(&self) -> String {
        let steps: std::collections::BTreeSet<&String> = (self.done.keys())
            .chain(self.failed.keys())
            .chain(self.unrecorded.keys())
            .collect();
        let told: Vec<String> = steps
            .into_iter()
            .map(|step| {
                let mut parts = Vec::new();
                for (counts, what) in [
                    (&self.done, "done"),
                    (&self.failed, "failed"),
                    (&self.unrecorded, "not started or cut off"),
                ] {
                    if let Some(n) = counts.get(step).filter(|n| **n > 0) {
                        parts.push(format!("{n} {what}"));
                    }
                }
                format!("{step} {}", parts.join(", "))
            })
            .collect();
        format!(
            "run {} ({}, started {}) did not finish; its work may be unreported: {} (`sluice runs show {}`)",
            self.id,
            self.status,
            self.started_at,
            told.join("; "),
            self.id
        )
    }
}

fn default_mail_rows() -> usize {
    mail::DEFAULT_MAIL_ROWS
}

/// The parts of the compare step's output the report reads; the rest
/// (`present`, `missing`, `adopted`, …) is skipped without being built.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct DiffParts {
    /// The counts.
    #[serde(default)]
    pub counts: Counts,
    /// The guard.
    #[serde(default)]
    pub guard: Guard,
    /// License holders whose Procore user is inactive.
    #[serde(default)]
    pub present_inactive: Paged<InactivePerson>,
    /// Leavers.
    #[serde(default)]
    pub leavers: Paged<Leaver>,
    /// Returners.
    #[serde(default)]
    pub returners: Paged<Returner>,
    /// Inactive Procore users the flow does not manage.
    #[serde(default)]
    pub inactive_unmanaged: Paged<InactiveUnmanaged>,
    /// License holders the flow manages under another key.
    #[serde(default)]
    pub known_as: Paged<KnownAs>,
    /// Deactivations an admin rejected too late.
    #[serde(default)]
    pub rejected_too_late: Option<Vec<Adopted>>,
}

/// The lists and figures to report, wherever the input gave them.
pub struct Parts<'a> {
    pub counts: Counts,
    pub guard: Guard,
    pub present_inactive: &'a Paged<InactivePerson>,
    pub leavers: &'a Paged<Leaver>,
    pub returners: &'a Paged<Returner>,
    pub inactive_unmanaged: &'a Paged<InactiveUnmanaged>,
    pub known_as: &'a Paged<KnownAs>,
    pub rejected_too_late: &'a [Adopted],
    pub created: CreateItems<'a>,
    /// What the create step's approval gate decided, when it has one.
    pub created_gate: Option<&'a GateSummary>,
}

/// The create step's items: its whole output, or its items alone.
#[derive(Clone, Copy)]
pub enum CreateItems<'a> {
    Whole(Option<&'a ForEachOutput<Created>>),
    Items(&'a Paged<ItemEntry<Created>>),
}

fn both(whole: &str, part: &str) -> StepError {
    StepError::bad_input(format!(
        "the input gives `{whole}` and `{part}`: give the whole output or its parts, not both"
    ))
    .with_code("both-shapes")
}

impl Input {
    /// The parts to report; an error when a list is given both ways.
    pub fn parts(&self) -> Result<Parts<'_>, StepError> {
        let created = match (&self.created, self.created_items.is_empty()) {
            (Some(_), false) => return Err(both("created", "created_items")),
            (Some(whole), true) => CreateItems::Whole(Some(whole)),
            (None, false) => CreateItems::Items(&self.created_items),
            (None, true) => CreateItems::Whole(None),
        };
        let created_gate = match (&self.created, &self.created_approval) {
            (Some(_), Some(_)) => return Err(both("created", "created_approval")),
            (Some(whole), None) => whole.approval.as_ref(),
            (None, gate) => gate.as_ref(),
        };
        let Some(diff) = &self.diff else {
            return Ok(Parts {
                counts: self.counts.unwrap_or_default(),
                guard: self.guard.clone().unwrap_or_default(),
                present_inactive: &self.present_inactive,
                leavers: &self.leavers,
                returners: &self.returners,
                inactive_unmanaged: &self.inactive_unmanaged,
                known_as: &self.known_as,
                rejected_too_late: self.rejected_too_late.as_deref().unwrap_or_default(),
                created,
                created_gate,
            });
        };
        let given = [
            ("counts", self.counts.is_some()),
            ("guard", self.guard.is_some()),
            ("present_inactive", !self.present_inactive.is_empty()),
            ("leavers", !self.leavers.is_empty()),
            ("returners", !self.returners.is_empty()),
            ("inactive_unmanaged", !self.inactive_unmanaged.is_empty()),
            ("known_as", !self.known_as.is_empty()),
            (
                "rejected_too_late",
                self.rejected_too_late
                    .as_ref()
                    .is_some_and(|l| !l.is_empty()),
            ),
        ];
        if let Some((part, _)) = given.iter().find(|(_, given)| *given) {
            return Err(both("diff", part));
        }
        Ok(Parts {
            counts: diff.counts,
            guard: diff.guard.clone(),
            present_inactive: &diff.present_inactive,
            leavers: &diff.leavers,
            returners: &diff.returners,
            inactive_unmanaged: &diff.inactive_unmanaged,
            known_as: &diff.known_as,
            rejected_too_late: diff.rejected_too_late.as_deref().unwrap_or_default(),
            created,
            created_gate,
        })
    }
}
