//! The approval gate of a `for_each` step with `approval`: which items run
//! now and which wait for a person.
//!
//! Before any item runs, the gate reads the step's open approval plan and
//! sorts the items by their key (`for_each_key`):
//!
//! - a key **approved** as the run started runs (with its current input),
//!   and its approval is spent once it has run (succeeded, or failed for
//!   good); one approved later stands for the next run, as earlier steps
//!   of this one (`${run.approvals}`) saw it still pending;
//! - a **rejected** key never runs; it is held and reported until someone
//!   approves it or it leaves the list;
//! - every other key runs only when the step does not need approval in
//!   this run: `approval = "always"` always does; `{ above = N }` does
//!   when more than N such keys are left (then **none** of them runs: the
//!   whole batch waits, as a mass-change threshold holds it; counted over
//!   every item, also those `--only` leaves out); `when = …`
//!   does whenever that guard is truthy. Approved keys never count
//!   against `above`.
//!
//! What waits is recorded in the plan (new keys pending; inputs brought up
//! to date; a decision made meanwhile stands), approved or pending keys no
//! longer among the items are closed as no longer needed, and the run goes
//! on. A dry run decides the same way but writes nothing: it says what
//! would run and what would wait.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sluice_store::{
    GateRecord, GateUpdate, HeldItem, ItemStatus, PlanDetail, PlanItemState, Settled, Store,
    key_norm,
};

use super::context::{RunContext, StepFailure};
use super::events::RunEvent;
use crate::flow::model::{Threshold, whole_number};
use crate::flow::resolve::{Scope, truthy};
use crate::flow::{Step, for_each_key};

/// The keys of a step's open plan by state (`${run.approvals.STEP.…}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeysByState {
    pub pending: Vec<String>,
    pub approved: Vec<String>,
    pub rejected: Vec<String>,
}

/// Each step with `approval`: its open plan's keys by state (all empty
/// when it has none, or when the run keeps no approvals).
pub async fn open_keys(
    approvals: Option<&ApprovalStore>,
    flow: &crate::flow::Flow,
) -> Result<std::collections::BTreeMap<String, KeysByState>, StepFailure> {
    let mut all = std::collections::BTreeMap::new();
    for step in flow.steps.iter().filter(|s| s.approval.is_some()) {
        let mut keys = KeysByState::default();
        let plan = match approvals {
            Some(a) => a.store.open_plan(&flow.name, &step.id).await.map_err(|e| {
                StepFailure::Failed(format!(
                    "the approval plan of step `{}` could not be read ({e}), so nothing was run",
                    step.id
                ))
            })?,
            None => None,
        };
        for item in plan.iter().flat_map(|p| &p.items) {
            let list = match item.state {
                PlanItemState::Pending => &mut keys.pending,
                PlanItemState::Approved => &mut keys.approved,
                PlanItemState::Rejected => &mut keys.rejected,
                _ => continue,
            };
            list.push(item.key.clone());
        }
        all.insert(step.id.clone(), keys);
    }
    Ok(all)
}

/// The keys (normalised) of `step`'s plan that were approved as the run
/// started: the approvals `${run.approvals}` gave earlier steps, and the
/// only ones the gate may act on in this run.
fn approved_at_start(ctx: &RunContext<'_>, step: &Step) -> std::collections::HashSet<String> {
    ctx.fields
        .approvals
        .get(&step.id)
        .map(|keys| keys.approved.iter().map(|k| key_norm(k)).collect())
        .unwrap_or_default()
}

/// Where a run keeps approval plans: the run history's store, the flow
/// file (what `sluice approve --run` runs again) and the run's fencing
/// number when it holds the flow's lease.
#[derive(Clone)]
pub struct ApprovalStore {
    pub store: Store,
    pub flow_file: String,
    /// The run's `--param NAME=VALUE` overrides, kept with the plan so
    /// `sluice approve --run` runs the flow with them again.
    pub params: Vec<(String, String)>,
    pub fence: Option<i64>,
}

/// Each item's key, from the step's `for_each_key` (`None` without one):
/// see [`for_each_key::keys`].
pub fn keys(
    step: &Step,
    items: &[Value],
    scope: &Scope<'_>,
) -> Result<Vec<Option<String>>, StepFailure> {
    let Some(template) = &step.for_each_key else {
        return Ok(vec![None; items.len()]);
    };
    for_each_key::keys(template, items, scope, step.approval.is_some())
        .map(|keys| keys.into_iter().map(Some).collect())
        .map_err(|e| StepFailure::Failed(e.to_string()))
}

/// `--only KEY`: the indexes of the items to keep. A step without
/// `for_each_key` keeps none: its items cannot be told apart, and a run
/// for some people must not act on everyone.
pub fn only(ctx: &RunContext<'_>, keys: &[Option<String>]) -> Option<Vec<usize>> {
    if ctx.options.only.is_empty() {
        return None;
    }
    let wanted: Vec<String> = ctx.options.only.iter().map(|k| key_norm(k)).collect();
    Some(
        keys.iter()
            .enumerate()
            .filter(|(_, k)| k.as_ref().is_some_and(|k| wanted.contains(&key_norm(k))))
            .map(|(i, _)| i)
            .collect(),
    )
}

/// Why an item does not run in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Held {
    /// Its key has no decision yet: it waits in the plan.
    Waiting,
    /// Its key was rejected.
    Rejected,
}

impl Held {
    pub fn item_status(self) -> ItemStatus {
        match self {
            Held::Waiting => ItemStatus::Waiting,
            Held::Rejected => ItemStatus::Rejected,
        }
    }
}

/// An item's input by its index, made when asked: a `for_each` keeps no
/// list of every item's input (only the held items' are ever needed here).
pub type InputOf<'a> = dyn Fn(usize) -> Result<Value, StepFailure> + Send + Sync + 'a;

/// What the gate of one step decided, and what it settles after the items ran.
pub struct Gate {
    /// For each item (by index): `None` runs, `Some` is held.
    pub held: Vec<Option<Held>>,
    /// Keys (normalised) that were in the open plan as approved or pending
    /// and run now: their plan item is settled once they have run.
    in_plan: HashMap<String, PlanItemState>,
    plan_id: Option<String>,
    /// The plan's revision after this gate: what its approve command names,
    /// so that a decision made from this run's report covers what it showed.
    revision: Option<u64>,
    pub record: GateRecord,
    dry_run: bool,
    /// The run was given `--only`: it shows only some of the plan's keys.
    only: bool,
    /// False in a rehearsal (a dry run or a replay): the plan is read,
    /// never written, and no approval is spent.
    keeps: bool,
}

/// The plan items a step's items spend: each item that ran for good
/// spends its key's approval with its own record, in the transaction that
/// writes it, so an item whose record is kept is not left approved by a
/// host that dies before the step ends (when [`Gate::settle`] spends
/// what is left).
#[derive(Debug, Clone)]
pub struct Spends {
    plan: String,
    /// The keys (normalised) in the plan that run now.
    keys: std::collections::HashSet<String>,
}

impl Spends {
    /// The plan whose item an item with `key` spends, if it ran for good.
    pub fn plan_of(&self, key: Option<&str>, for_good: bool) -> Option<String> {
        (for_good && self.keys.contains(&key_norm(key?))).then(|| self.plan.clone())
    }
}

/// The gate's decision as later steps read it (the step's output under
/// `approval`) and as the run's outcome lists it: shared with components
/// through `sluice-contract`.
pub use sluice_contract::{GateSummary, HeldEntry};

impl Gate {
    /// Sorts the step's items (their keys and inputs) into those that run
    /// and those held, and records what waits in the step's plan.
    /// `all_keys` are the keys of every item of the list, also those
    /// `--only` leaves out: a key among them has not left the step.
    pub async fn decide(
        ctx: &RunContext<'_>,
        step: &Step,
        keys: &[Option<String>],
        inputs: &InputOf<'_>,
        all_keys: &[Option<String>],
        scope: &Scope<'_>,
    ) -> Result<Option<Gate>, StepFailure> {
        let Some(rule) = &step.approval else {
            return Ok(None);
        };
        let Some(approvals) = &ctx.options.approvals else {
            return Err(StepFailure::Failed(
                "the step needs approval, but this run has no run history to keep approvals in, so nothing was run".into(),
            ));
        };
        let plan = approvals
            .store
            .open_plan(&ctx.flow.name, &step.id)
            .await
            .map_err(|e| {
                StepFailure::Failed(format!(
                    "its approval plan could not be read ({e}), so nothing was run"
                ))
            })?;
        let states = plan_states(plan.as_ref());
        let approved_at_start = approved_at_start(ctx, step);
        // Approved after the run started: earlier steps (compare) saw it
        // pending, so this run treats it as pending too and the approval
        // stands for the next run, as `approve` says.
        let approved_late = |k: &str| {
            states.get(k) == Some(&PlanItemState::Approved) && !approved_at_start.contains(k)
        };
        let state_of = |k: &Option<String>| {
            let k = key_norm(k.as_ref()?);
            if approved_late(&k) {
                Some(PlanItemState::Pending)
            } else {
                states.get(&k).copied()
            }
        };
        // Counted over every item, those `--only` leaves out too: a run
        // for some keys holds them when a whole run would, so naming keys
        // never lets through what a held batch keeps waiting.
        let unapproved = all_keys
            .iter()
            .filter(|k| {
                !matches!(
                    state_of(k),
                    Some(PlanItemState::Approved | PlanItemState::Rejected)
                )
            })
            .count();
        let reason = needs_approval(rule, unapproved, scope)?;
        let mut gate = Gate {
            held: Vec::with_capacity(keys.len()),
            in_plan: HashMap::new(),
            plan_id: plan.as_ref().map(|p| p.plan.id.clone()),
            revision: plan.as_ref().map(|p| p.plan.revision),
            record: GateRecord {
                step: step.id.clone(),
                reason: reason.clone(),
                ..GateRecord::default()
            },
            dry_run: ctx.options.dry_run,
            only: !ctx.options.only.is_empty(),
            keeps: !ctx.options.rehearsal(),
        };
        for key in keys {
            let state = state_of(key);
            let held = match state {
                Some(PlanItemState::Rejected) => Some(Held::Rejected),
                Some(PlanItemState::Approved) => None,
                _ if reason.is_some() => Some(Held::Waiting),
                _ => None,
            };
            match (held, state) {
                (Some(Held::Waiting), _) => gate.record.waiting += 1,
                (Some(Held::Rejected), _) => gate.record.rejected += 1,
                (None, Some(PlanItemState::Approved)) => gate.record.approved += 1,
                (None, _) => gate.record.unapproved += 1,
            }
            if held.is_none()
                && let (Some(k), Some(s @ (PlanItemState::Approved | PlanItemState::Pending))) =
                    (key, state)
            {
                gate.in_plan.insert(key_norm(k), s);
            }
            gate.held.push(held);
        }
        let approved_late = keys
            .iter()
            .flatten()
            .filter(|k| approved_late(&key_norm(k)))
            .count();
        if approved_late > 0 {
            // A warning, so it is shown by default: the gate's line counts
            // these keys among those that wait, though they are approved.
            ctx.emit(&RunEvent::Log {
                step: step.id.clone(),
                level: crate::engine::LogLevel::Warn,
                message: format!(
                    "{approved_late} of its items {} approved after this run started: {} at the next run, as this run's earlier steps saw {} still waiting",
                    if approved_late == 1 { "was" } else { "were" },
                    if approved_late == 1 { "it runs" } else { "they run" },
                    if approved_late == 1 { "it" } else { "them" },
                ),
            });
        }
        let gone = gone_keys(plan.as_ref(), all_keys);
        gate.record.closed = gone.len() as u64;
        if gate.keeps {
            gate.write(ctx, approvals, step, keys, inputs, gone).await?;
        }
        gate.record.plan_id = gate.plan_id.clone();
        gate.record.revision = gate.revision;
        Ok(Some(gate))
    }

    /// Records what waits (and which keys left) in the step's plan.
    async fn write(
        &mut self,
        ctx: &RunContext<'_>,
        approvals: &ApprovalStore,
        step: &Step,
        keys: &[Option<String>],
        inputs: &InputOf<'_>,
        gone: Vec<String>,
    ) -> Result<(), StepFailure> {
        let mut held = Vec::new();
        for (index, (k, h)) in keys.iter().zip(&self.held).enumerate() {
            if let Some(k) = h.and(k.as_ref()) {
                held.push(HeldItem {
                    key: k.clone(),
                    input: ctx.redactor.redact_json(&inputs(index)?),
                });
            }
        }
        let update = GateUpdate {
            flow: ctx.flow.name.clone(),
            step: step.id.clone(),
            run_id: ctx.fields.id.clone(),
            flow_file: approvals.flow_file.clone(),
            // A param given a secret's value keeps it out of the history;
            // `approve --run` then asks for the params again.
            params: approvals
                .params
                .iter()
                .map(|(k, v)| (k.clone(), ctx.redactor.redact(v)))
                .collect(),
            reason: self.record.reason.clone(),
            held,
            gone,
            fence: approvals.fence,
        };
        let plan = approvals.store.record_gate(&update).await.map_err(|e| {
            StepFailure::Failed(format!(
                "what waits for approval could not be recorded ({e}), so nothing was run"
            ))
        })?;
        if let Some(plan) = plan {
            self.plan_id = Some(plan.id);
            self.revision = Some(plan.revision);
        }
        Ok(())
    }

    /// Whether the item at `index` runs.
    pub fn runs(&self, index: usize) -> bool {
        self.held.get(index).is_some_and(Option::is_none)
    }

    /// Whether the item of `key`, which the gate let run on its plan's
    /// word (approved, or pending in a run that needed no approval), may
    /// still start: asked just before it does, because an admin may have
    /// rejected it since the gate read the plan (`sluice reject` while the
    /// step works through its items). Items the plan does not hold, and a
    /// rehearsal's, are not asked about. `Ok(Some(why))`: it may not, as
    /// the plan says now (rejected above all). `Err`: the plan could not
    /// be read.
    pub async fn still_runs(
        &self,
        ctx: &RunContext<'_>,
        key: &str,
    ) -> Result<Option<&'static str>, String> {
        let (Some(plan), Some(approvals), true) =
            (&self.plan_id, &ctx.options.approvals, self.keeps)
        else {
            return Ok(None);
        };
        if !self.in_plan.contains_key(&key_norm(key)) {
            return Ok(None);
        }
        match approvals.store.plan_item_state(plan, key).await {
            Ok(Some(PlanItemState::Approved | PlanItemState::Pending)) => Ok(None),
            Ok(Some(PlanItemState::Rejected)) => Ok(Some("was rejected")),
            // Not while this run holds the flow's lease; said as it is.
            Ok(Some(PlanItemState::Done)) => Ok(Some("was run already")),
            Ok(Some(PlanItemState::Closed)) | Ok(None) => Ok(Some("left its plan")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Holds the item at `index` (of `key`, `item`) as rejected, in the
    /// gate and in its `summary`: its key was rejected after the gate let
    /// it run, before it started ([`Self::still_runs`]).
    pub fn rejected_since(
        &mut self,
        index: usize,
        key: &str,
        item: Value,
        summary: &mut GateSummary,
    ) {
        let Some(slot @ None) = self.held.get_mut(index) else {
            return;
        };
        *slot = Some(Held::Rejected);
        self.record.rejected += 1;
        let counted = match self.in_plan.remove(&key_norm(key)) {
            Some(PlanItemState::Approved) => &mut self.record.approved,
            _ => &mut self.record.unapproved,
        };
        *counted = counted.saturating_sub(1);
        summary.approved = self.record.approved;
        summary.unapproved = self.record.unapproved;
        summary.rejected.push(HeldEntry {
            key: key.to_string(),
            item,
        });
    }

    /// What the items that run spend as each is recorded ([`Spends`]):
    /// `None` when nothing is (no plan, or a rehearsal).
    pub fn spends(&self, ctx: &RunContext<'_>) -> Option<Spends> {
        let (Some(plan), Some(_), true) = (&self.plan_id, &ctx.options.approvals, self.keeps)
        else {
            return None;
        };
        Some(Spends {
            plan: plan.clone(),
            keys: self.in_plan.keys().cloned().collect(),
        })
    }

    /// Spends the approvals of the plan items that ran for good: `results`
    /// holds each such item, by index, with whether it succeeded and why
    /// not. Items never started, interrupted, or failed in a way a later
    /// run could fix are left out by the caller and keep their approval.
    pub async fn settle(
        &self,
        ctx: &RunContext<'_>,
        keys: &[Option<String>],
        results: &[(usize, Result<(), String>)],
    ) {
        let (Some(plan), Some(approvals), true) =
            (&self.plan_id, &ctx.options.approvals, self.keeps)
        else {
            return;
        };
        let settled: Vec<Settled> = results
            .iter()
            .filter_map(|(index, result)| {
                let key = keys.get(*index)?.as_ref()?;
                self.in_plan.contains_key(&key_norm(key)).then(|| Settled {
                    key: key.clone(),
                    status: match result {
                        Ok(()) => ItemStatus::Succeeded,
                        Err(_) => ItemStatus::Failed,
                    },
                    run_id: ctx.fields.id.clone(),
                    error: result.as_ref().err().cloned(),
                })
            })
            .collect();
        if settled.is_empty() {
            return;
        }
        if let Err(e) = approvals.store.settle_items(plan, &settled).await {
            // The items ran; those their records did not spend stay open,
            // so the next run would run them again only if they are still
            // items then.
            ctx.emit(&RunEvent::Log {
                step: self.record.step.clone(),
                level: crate::engine::LogLevel::Warn,
                message: ctx.redactor.redact(&format!(
                    "the approvals of the items that ran could not all be marked as used: {e}"
                )),
            });
        }
    }

    /// What the gate decided, for the step's output and the run's outcome.
    pub fn summary(&self, keys: &[Option<String>], items: &[Value]) -> GateSummary {
        let held = |want: Held| -> Vec<HeldEntry> {
            self.held
                .iter()
                .enumerate()
                .filter(|(_, h)| **h == Some(want))
                .filter_map(|(i, _)| {
                    Some(HeldEntry {
                        key: keys.get(i)?.clone()?,
                        item: items.get(i)?.clone(),
                    })
                })
                .collect()
        };
        let waiting = held(Held::Waiting);
        // A run given `--only` shows some of the plan's pending keys: its
        // command names them, and approves none of the others.
        let shown: Option<Vec<&str>> = self
            .only
            .then(|| waiting.iter().map(|h| h.key.as_str()).collect());
        GateSummary {
            step: self.record.step.clone(),
            plan: self.plan_id.clone(),
            reason: self.record.reason.clone(),
            approve: match (&self.plan_id, waiting.is_empty()) {
                (Some(id), false) => Some(approve_command(id, self.revision, shown.as_deref())),
                _ => None,
            },
            approved: self.record.approved,
            unapproved: self.record.unapproved,
            waiting,
            rejected: held(Held::Rejected),
            closed: self.record.closed,
            dry_run: self.dry_run,
        }
    }
}

/// The command that approves what waits in plan `id` as this run left it:
/// with its revision, so that it approves nothing a later run adds, and
/// with `--only` for each of `keys` when given (what a run given `--only`
/// showed waiting).
pub fn approve_command(id: &str, revision: Option<u64>, keys: Option<&[&str]>) -> String {
    let mut command = match revision {
        Some(revision) => format!("sluice approve {id} --revision {revision}"),
        None => format!("sluice approve {id}"),
    };
    for key in keys.unwrap_or_default() {
        command.push_str(" --only ");
        command.push_str(&shell_word(key));
    }
    command
}

/// The command that approves `key` alone, from `plan`, the plan's command
/// ([`GateSummary::approve_plan`]).
pub fn approve_alone(plan: &str, key: &str) -> String {
    format!("{plan} --only {}", shell_word(key))
}

/// `word` as one word of a shell command line, quoted when it must be.
fn shell_word(word: &str) -> std::borrow::Cow<'_, str> {
    // A key with a NUL byte cannot be a shell word at all: shown as is.
    shlex::try_quote(word).unwrap_or(std::borrow::Cow::Borrowed(word))
}

/// Each key's state in the open plan, by normalised key.
fn plan_states(plan: Option<&PlanDetail>) -> HashMap<String, PlanItemState> {
    plan.map(|p| {
        p.items
            .iter()
            .map(|i| (key_norm(&i.key), i.state))
            .collect()
    })
    .unwrap_or_default()
}

/// Keys still live in the open plan that are no longer among the items.
fn gone_keys(plan: Option<&PlanDetail>, keys: &[Option<String>]) -> Vec<String> {
    let Some(plan) = plan else {
        return Vec::new();
    };
    let now: std::collections::HashSet<String> =
        keys.iter().flatten().map(|k| key_norm(k)).collect();
    plan.items
        .iter()
        .filter(|i| i.state.is_live() && !now.contains(&key_norm(&i.key)))
        .map(|i| i.key.clone())
        .collect()
}

/// Why the step's unapproved items need approval in this run, or `None`.
fn needs_approval(
    rule: &crate::flow::model::Approval,
    unapproved: usize,
    scope: &Scope<'_>,
) -> Result<Option<String>, StepFailure> {
    if rule.always {
        return Ok(Some("this step always needs approval".into()));
    }
    if let Some(guard) = &rule.when {
        let value = scope.resolve(guard).map_err(|e| {
            StepFailure::Failed(format!(
                "its approval `when` could not be evaluated ({e}), so nothing was run"
            ))
        })?;
        if truthy(&value) {
            return Ok(Some(match value {
                Value::String(why) => why,
                _ => "its approval guard (`when`) holds in this run".into(),
            }));
        }
    }
    let Some(threshold) = &rule.above else {
        return Ok(None);
    };
    let limit = match threshold {
        Threshold::Count(n) => *n,
        Threshold::Reference(t) => {
            let value = scope.resolve(t).map_err(|e| {
                StepFailure::Failed(format!(
                    "its approval threshold could not be resolved ({e}), so nothing was run"
                ))
            })?;
            whole_number(&value).ok_or_else(|| {
                StepFailure::Failed(format!(
                    "its approval threshold `above` is {value}, not a whole number, so nothing was run"
                ))
            })?
        }
    };
    Ok((unapproved as u64 > limit).then(|| {
        let items = if unapproved == 1 {
            "1 item without approval is"
        } else {
            &format!("{unapproved} items without approval are")
        };
        format!(
            "{items} more than the {limit} this step may run unapproved (approval above {limit})"
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run given `--only` prints a command that approves what it showed
    /// and nothing else of the plan; each person's own names them alone.
    #[test]
    fn the_approve_command_names_the_keys_a_run_given_only_showed() {
        assert_eq!(
            approve_command("ap-1", Some(4), None),
            "sluice approve ap-1 --revision 4"
        );
        let shown = approve_command("ap-1", Some(4), Some(&["c17@x.com", "Dee Lee"]));
        assert_eq!(
            shown,
            "sluice approve ap-1 --revision 4 --only c17@x.com --only 'Dee Lee'"
        );
        let gate = GateSummary {
            step: "deactivate".into(),
            plan: Some("ap-1".into()),
            reason: None,
            approve: Some(shown),
            approved: 0,
            unapproved: 0,
            waiting: Vec::new(),
            rejected: Vec::new(),
            closed: 0,
            dry_run: false,
        };
        let plan = gate.approve_plan().unwrap();
        assert_eq!(plan, "sluice approve ap-1 --revision 4");
        assert_eq!(
            approve_alone(plan, "dee lee"),
            "sluice approve ap-1 --revision 4 --only 'dee lee'"
        );
    }
}
