//! Approval plans on PostgreSQL (see [`crate::approval`] for the rules).
//!
//! Writes to a plan lock its row (`FOR UPDATE`) for their transaction, so
//! a run's gate, a settlement and a person's decision about one plan take
//! turns. Two gates that find no open plan at once both try to open one;
//! the partial unique index lets one in, and the other (`ON CONFLICT DO
//! NOTHING`, then a fresh look) joins it.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};

use super::query::{time, time_opt, word};
use crate::approval::*;
use crate::approval::{params_from, params_text};
use crate::cap::{capped, capped_error, parse_stored};
use crate::{RunRef, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

const PLAN_COLUMNS: &str = "id, flow, step, status, reason, flow_file, created_at, created_by_run, updated_at, updated_by_run, closed_at, params, revision";

fn plan_row(r: &Row) -> Result<PlanSummary> {
    Ok(PlanSummary {
        id: r.try_get(0)?,
        flow: r.try_get(1)?,
        step: r.try_get(2)?,
        status: word(r, 3)?,
        reason: r.try_get(4)?,
        flow_file: r.try_get(5)?,
        created_at: time(r, 6)?,
        created_by_run: r.try_get(7)?,
        updated_at: time(r, 8)?,
        updated_by_run: r.try_get(9)?,
        closed_at: time_opt(r, 10)?,
        params: params_from(r.try_get(11)?),
        revision: revision(r.try_get(12)?),
        counts: PlanCounts::default(),
    })
}

fn item_row(r: &Row) -> Result<PlanItem> {
    let outcome: Option<String> = r.try_get(9)?;
    Ok(PlanItem {
        key: r.try_get(0)?,
        input: parse_stored(r.try_get(1)?).unwrap_or_default(),
        state: word(r, 2)?,
        first_seen_run: r.try_get(3)?,
        last_seen_run: r.try_get(4)?,
        last_seen_at: time(r, 5)?,
        decided_by: r.try_get(6)?,
        decided_at: time_opt(r, 7)?,
        note: r.try_get(8)?,
        outcome: match outcome {
            Some(outcome) => Some(PlanItemOutcome {
                outcome,
                run_id: r.try_get::<_, Option<String>>(10)?.unwrap_or_default(),
                at: time_opt(r, 11)?.unwrap_or_default(),
                detail: r.try_get(12)?,
            }),
            None => None,
        },
        revision: revision(r.try_get(13)?),
    })
}

/// A revision as stored (at least 1).
fn revision(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(1).max(1)
}

async fn counts(c: &impl GenericClient, plan: &str) -> Result<PlanCounts> {
    let rows = c
        .query(
            "SELECT state, count(*) FROM approval_items WHERE plan_id = $1 GROUP BY state",
            &[&plan],
        )
        .await?;
    let mut counts = PlanCounts::default();
    for r in &rows {
        let n: i64 = r.try_get(1)?;
        counts.add(word(r, 0)?, u64::try_from(n).unwrap_or_default());
    }
    Ok(counts)
}

async fn summary(c: &impl GenericClient, id: &str, lock: bool) -> Result<Option<PlanSummary>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = c
        .query_opt(
            &format!("SELECT {PLAN_COLUMNS} FROM approval_plans WHERE id = $1{lock}"),
            &[&id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut plan = plan_row(&row)?;
    plan.counts = counts(c, &plan.id).await?;
    Ok(Some(plan))
}

async fn open_plan_id(
    c: &impl GenericClient,
    flow: &str,
    step: &str,
    lock: bool,
) -> Result<Option<String>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = c
        .query_opt(
            &format!(
                "SELECT id FROM approval_plans WHERE flow = $1 AND step = $2 AND status = 'open'{lock}"
            ),
            &[&flow, &step],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

pub(crate) async fn plan_detail(c: &impl GenericClient, id: &str) -> Result<Option<PlanDetail>> {
    let Some(plan) = summary(c, &id.trim().to_lowercase(), false).await? else {
        return Ok(None);
    };
    let items = c
        .query(
            "SELECT item_key, input, state, first_seen_run, last_seen_run, last_seen_at,
                    decided_by, decided_at, note, outcome, outcome_run, outcome_at, outcome_detail, revision
             FROM approval_items WHERE plan_id = $1 ORDER BY position, key_norm",
            &[&plan.id],
        )
        .await?
        .iter()
        .map(item_row)
        .collect::<Result<Vec<_>>>()?;
    let decisions = c
        .query(
            "SELECT item_key, decision, decided_by, decided_at, note
             FROM approval_decisions WHERE plan_id = $1 ORDER BY seq",
            &[&plan.id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(DecisionRecord {
                plan_id: plan.id.clone(),
                flow: plan.flow.clone(),
                step: plan.step.clone(),
                key: r.try_get(0)?,
                decision: word(r, 1)?,
                by: r.try_get(2)?,
                at: time(r, 3)?,
                note: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(PlanDetail {
        plan,
        items,
        decisions,
    }))
}

pub(crate) async fn open_plan(
    c: &impl GenericClient,
    flow: &str,
    step: &str,
) -> Result<Option<PlanDetail>> {
    match open_plan_id(c, flow, step, false).await? {
        Some(id) => plan_detail(c, &id).await,
        None => Ok(None),
    }
}

pub(crate) async fn item_state(
    c: &impl GenericClient,
    plan: &str,
    key: &str,
) -> Result<Option<PlanItemState>> {
    let row = c
        .query_opt(
            "SELECT state FROM approval_items WHERE plan_id = $1 AND key_norm = $2",
            &[&plan, &key_norm(key)],
        )
        .await?;
    row.map(|r| word(&r, 0)).transpose()
}

pub(crate) async fn list_plans(c: &impl GenericClient, q: &PlanQuery) -> Result<Vec<PlanSummary>> {
    let limit = if q.limit == 0 {
        i64::MAX
    } else {
        i64::try_from(q.limit).unwrap_or(i64::MAX)
    };
    let rows = c
        .query(
            &format!(
                "SELECT {PLAN_COLUMNS} FROM approval_plans
                 WHERE ($1::text IS NULL OR flow = $1) AND ($2 OR status = 'open')
                 ORDER BY status = 'open' DESC, created_at DESC, id LIMIT $3"
            ),
            &[&q.flow, &q.include_closed, &limit],
        )
        .await?;
    let mut plans = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut plan = plan_row(row)?;
        plan.counts = counts(c, &plan.id).await?;
        plans.push(plan);
    }
    Ok(plans)
}

/// The flow's open plan for the step, locked; opened when there is none.
async fn open_or_create(
    tx: &Transaction<'_>,
    u: &GateUpdate,
    now: DateTime<Utc>,
) -> Result<String> {
    for _ in 0..8 {
        if let Some(id) = open_plan_id(tx, &u.flow, &u.step, true).await? {
            return Ok(id);
        }
        let id = new_plan_id();
        let inserted = tx
            .execute(
                "INSERT INTO approval_plans (id, flow, step, status, reason, flow_file, created_at, created_by_run, updated_at, updated_by_run, params)
                 VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[&id, &u.flow, &u.step, &u.opening_reason(), &u.flow_file, &now, &u.run_id, &params_text(&u.params)],
            )
            .await?;
        if inserted == 1 {
            return Ok(id);
        }
    }
    Err(StoreError::Task(
        "no approval plan could be opened after 8 tries".into(),
    ))
}

pub(crate) async fn record_gate(
    tx: &Transaction<'_>,
    u: &GateUpdate,
) -> Result<Option<PlanSummary>> {
    if let Some(fence) = u.fence {
        let run = RunRef {
            id: u.run_id.clone(),
            flow: u.flow.clone(),
            fence: Some(fence),
        };
        super::history::check_fence(tx, &run).await?;
    }
    let now = Utc::now();
    let id = match open_plan_id(tx, &u.flow, &u.step, true).await? {
        Some(id) => id,
        None if u.held.is_empty() => return Ok(None),
        None => open_or_create(tx, u, now).await?,
    };
    // The revision a request joining now gets: the plan's next one, which
    // it takes if some request did join; 1 in a plan this gate opened (or
    // joined as another gate opened it), which has no item yet.
    let (current, empty): (i64, bool) = {
        let row = tx
            .query_one(
                "SELECT revision, NOT EXISTS (SELECT 1 FROM approval_items WHERE plan_id = $1)
                 FROM approval_plans WHERE id = $1",
                &[&id],
            )
            .await?;
        (row.try_get(0)?, row.try_get(1)?)
    };
    let joining: i64 = if empty {
        current
    } else {
        current.saturating_add(1)
    };
    if !u.held.is_empty() {
        tx.execute(
            "UPDATE approval_plans SET reason = COALESCE($2, reason), flow_file = $3, updated_at = $4, updated_by_run = $5, params = $6 WHERE id = $1",
            &[&id, &u.new_reason(), &u.flow_file, &now, &u.run_id, &params_text(&u.params)],
        )
        .await?;
    }
    let next: i64 = tx
        .query_one(
            "SELECT coalesce(max(position) + 1, 0) FROM approval_items WHERE plan_id = $1",
            &[&id],
        )
        .await?
        .try_get(0)?;
    let hold = tx
        .prepare(
            "INSERT INTO approval_items AS a (plan_id, key_norm, item_key, position, input, state, first_seen_run, last_seen_run, last_seen_at, revision)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $7, $8)
             ON CONFLICT (plan_id, key_norm) DO UPDATE SET
                revision = CASE WHEN a.state IN ('done', 'closed') THEN excluded.revision ELSE a.revision END,
                input = excluded.input, last_seen_run = excluded.last_seen_run, last_seen_at = excluded.last_seen_at,
                decided_by = CASE WHEN a.state IN ('done', 'closed') THEN NULL ELSE a.decided_by END,
                decided_at = CASE WHEN a.state IN ('done', 'closed') THEN NULL ELSE a.decided_at END,
                note = CASE WHEN a.state IN ('done', 'closed') THEN NULL ELSE a.note END,
                outcome = CASE WHEN a.state IN ('done', 'closed') THEN NULL ELSE a.outcome END,
                outcome_run = CASE WHEN a.state IN ('done', 'closed') THEN NULL ELSE a.outcome_run END,
                outcome_at = CASE WHEN a.state IN ('done', 'closed') THEN NULL ELSE a.outcome_at END,
                outcome_detail = CASE WHEN a.state IN ('done', 'closed') THEN NULL ELSE a.outcome_detail END,
                state = CASE WHEN a.state IN ('done', 'closed') THEN 'pending' ELSE a.state END",
        )
        .await?;
    for (i, item) in u.held.iter().enumerate() {
        let position = next.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
        tx.execute(
            &hold,
            &[
                &id,
                &key_norm(&item.key),
                &item.key,
                &position,
                &capped(&item.input),
                &u.run_id,
                &now,
                &joining,
            ],
        )
        .await?;
    }
    tx.execute(
        "UPDATE approval_plans SET revision = $2 WHERE id = $1 AND revision < $2
            AND EXISTS (SELECT 1 FROM approval_items WHERE plan_id = $1 AND revision = $2)",
        &[&id, &joining],
    )
    .await?;
    close_gone(tx, &id, &u.gone, &u.run_id, now).await?;
    close_if_settled(tx, &id, now, Some(&u.run_id)).await?;
    summary(tx, &id, false).await
}

/// Closes the live items of keys that left the step's items, each closing
/// kept for the ledger first: the item's own outcome is cleared when its
/// key comes back.
async fn close_gone(
    tx: &Transaction<'_>,
    plan: &str,
    gone: &[String],
    run: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let live = "plan_id = $1 AND key_norm = $2 AND state IN ('pending', 'approved', 'rejected')";
    let keep = tx
        .prepare(&format!(
            "INSERT INTO approval_closings (plan_id, key_norm, item_key, run_id, closed_at, detail)
             SELECT plan_id, key_norm, item_key, $3, $4, $5 FROM approval_items WHERE {live}"
        ))
        .await?;
    let close = tx
        .prepare(&format!(
            "UPDATE approval_items SET state = 'closed', outcome = 'closed', outcome_run = $3, outcome_at = $4,
                outcome_detail = $5
             WHERE {live}"
        ))
        .await?;
    for key in gone {
        let norm = key_norm(key);
        let closing: [&(dyn ToSql + Sync); 5] = [&plan, &norm, &run, &now, &NO_LONGER_NEEDED];
        tx.execute(&keep, &closing).await?;
        tx.execute(&close, &closing).await?;
    }
    Ok(())
}

/// Closes a plan none of whose items is live any more, as changed by
/// `run` (the one whose items settled it) at `now`.
async fn close_if_settled(
    tx: &Transaction<'_>,
    id: &str,
    now: DateTime<Utc>,
    run: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE approval_plans SET status = 'closed', closed_at = $2,
            updated_at = $2, updated_by_run = COALESCE($3, updated_by_run)
         WHERE id = $1 AND status = 'open' AND NOT EXISTS (
            SELECT 1 FROM approval_items WHERE plan_id = $1 AND state IN ('pending', 'approved', 'rejected'))",
        &[&id, &now, &run],
    )
    .await?;
    Ok(())
}

pub(crate) async fn settle(tx: &Transaction<'_>, plan: &str, settled: &[Settled]) -> Result<()> {
    let now = Utc::now();
    // Only the lock: each approved item that runs settles its own key, and
    // counting the plan's items each time made a large plan quadratic.
    let locked = tx
        .query_opt(
            "SELECT 1 FROM approval_plans WHERE id = $1 FOR UPDATE",
            &[&plan],
        )
        .await?;
    if locked.is_none() {
        return Ok(());
    }
    let stmt = tx
        .prepare(
            "UPDATE approval_items SET state = 'done', outcome = $3, outcome_run = $4, outcome_at = $5, outcome_detail = $6,
                last_seen_run = $4, last_seen_at = $5
             WHERE plan_id = $1 AND key_norm = $2 AND state IN ('pending', 'approved', 'rejected')",
        )
        .await?;
    for s in settled {
        tx.execute(
            &stmt,
            &[
                &plan,
                &key_norm(&s.key),
                &s.status.as_str(),
                &s.run_id,
                &now,
                &s.error.as_deref().map(capped_error),
            ],
        )
        .await?;
    }
    let run = settled.last().map(|s| s.run_id.as_str());
    close_if_settled(tx, plan, now, run).await
}

async fn targets(tx: &Transaction<'_>, plan: &str) -> Result<Vec<DecisionTarget>> {
    tx.query(
        "SELECT key_norm, item_key, state, outcome_run, outcome, revision FROM approval_items
         WHERE plan_id = $1 ORDER BY position, key_norm",
        &[&plan],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(DecisionTarget {
            norm: r.try_get(0)?,
            key: r.try_get(1)?,
            state: word(r, 2)?,
            outcome_run: r.try_get(3)?,
            outcome: r.try_get(4)?,
            revision: revision(r.try_get(5)?),
        })
    })
    .collect()
}

pub(crate) async fn decide(tx: &Transaction<'_>, req: &DecisionRequest) -> Result<DecisionOutcome> {
    let Some(plan) = summary(tx, &req.plan_id.trim().to_lowercase(), true).await? else {
        return Err(ApprovalError::UnknownPlan(req.plan_id.clone()).into());
    };
    let items = targets(tx, &plan.id).await?;
    let chosen = choose(&plan, &items, req)?;
    let now = Utc::now();
    let state = req.decision.state().as_str();
    let mut outcome = DecisionOutcome {
        plan: plan.clone(),
        changed: Vec::new(),
        unchanged: Vec::new(),
        left: chosen.left,
        later: chosen.later,
    };
    for item in chosen.items {
        if item.state == req.decision.state() {
            outcome.unchanged.push(item.key.clone());
            continue;
        }
        tx.execute(
            "UPDATE approval_items SET state = $3, decided_by = $4, decided_at = $5, note = $6
             WHERE plan_id = $1 AND key_norm = $2",
            &[&plan.id, &item.norm, &state, &req.by, &now, &req.note],
        )
        .await?;
        tx.execute(
            "INSERT INTO approval_decisions (plan_id, key_norm, item_key, decision, decided_by, decided_at, note)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&plan.id, &item.norm, &item.key, &req.decision.as_str(), &req.by, &now, &req.note],
        )
        .await?;
        outcome.changed.push(item.key.clone());
    }
    outcome.plan.counts = counts(tx, &plan.id).await?;
    Ok(outcome)
}

/// Deletes closed plans closed before `cutoff` (their items, decisions
/// and closings go with them: `ON DELETE CASCADE`).
pub(crate) async fn prune_closed(tx: &Transaction<'_>, cutoff: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "DELETE FROM approval_plans WHERE status = 'closed' AND closed_at < $1",
        &[&cutoff],
    )
    .await?;
    Ok(())
}
