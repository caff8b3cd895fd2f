//! Approval plans on SQLite (see [`crate::approval`] for the rules).
//! Every write runs in one `IMMEDIATE` transaction, so the check of the
//! open plan and the write that follows it cannot interleave with another
//! writer's.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::approval::*;
use crate::approval::{params_from, params_text};
use crate::cap::{capped, capped_error, parse_stored};
use crate::{RunRef, StoreError, now_text};

const PLAN_COLUMNS: &str = "id, flow, step, status, reason, flow_file, created_at, created_by_run, updated_at, updated_by_run, closed_at, params, revision";

fn plan_row(r: &Row<'_>) -> rusqlite::Result<PlanSummary> {
    Ok(PlanSummary {
        id: r.get(0)?,
        flow: r.get(1)?,
        step: r.get(2)?,
        status: r.get(3)?,
        reason: r.get(4)?,
        flow_file: r.get(5)?,
        created_at: r.get(6)?,
        created_by_run: r.get(7)?,
        updated_at: r.get(8)?,
        updated_by_run: r.get(9)?,
        closed_at: r.get(10)?,
        params: params_from(r.get(11)?),
        revision: revision(r.get(12)?),
        counts: PlanCounts::default(),
    })
}

fn item_row(r: &Row<'_>) -> rusqlite::Result<PlanItem> {
    let outcome: Option<String> = r.get(9)?;
    Ok(PlanItem {
        key: r.get(0)?,
        input: parse_stored(r.get(1)?).unwrap_or_default(),
        state: r.get(2)?,
        first_seen_run: r.get(3)?,
        last_seen_run: r.get(4)?,
        last_seen_at: r.get(5)?,
        decided_by: r.get(6)?,
        decided_at: r.get(7)?,
        note: r.get(8)?,
        outcome: match outcome {
            Some(outcome) => Some(PlanItemOutcome {
                outcome,
                run_id: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                at: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                detail: r.get(12)?,
            }),
            None => None,
        },
        revision: revision(r.get(13)?),
    })
}

/// A revision as stored (at least 1).
fn revision(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(1).max(1)
}

fn counts(tx: &Transaction<'_>, plan: &str) -> Result<PlanCounts, StoreError> {
    let mut stmt =
        tx.prepare("SELECT state, COUNT(*) FROM approval_items WHERE plan_id = ?1 GROUP BY state")?;
    let mut counts = PlanCounts::default();
    let rows = stmt.query_map(params![plan], |r| {
        Ok((r.get::<_, PlanItemState>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (state, n) = row?;
        counts.add(state, u64::try_from(n).unwrap_or_default());
    }
    Ok(counts)
}

fn summary(tx: &Transaction<'_>, id: &str) -> Result<Option<PlanSummary>, StoreError> {
    let plan = tx
        .query_row(
            &format!("SELECT {PLAN_COLUMNS} FROM approval_plans WHERE id = ?1"),
            params![id],
            plan_row,
        )
        .optional()?;
    let Some(mut plan) = plan else {
        return Ok(None);
    };
    plan.counts = counts(tx, &plan.id)?;
    Ok(Some(plan))
}

fn open_plan_id(
    tx: &Transaction<'_>,
    flow: &str,
    step: &str,
) -> Result<Option<String>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT id FROM approval_plans WHERE flow = ?1 AND step = ?2 AND status = 'open'",
            params![flow, step],
            |r| r.get(0),
        )
        .optional()?)
}

/// A plan with its items and decisions.
pub(crate) fn plan_detail(
    tx: &Transaction<'_>,
    id: &str,
) -> Result<Option<PlanDetail>, StoreError> {
    let Some(plan) = summary(tx, &id.trim().to_lowercase())? else {
        return Ok(None);
    };
    let mut stmt = tx.prepare(
        "SELECT item_key, input, state, first_seen_run, last_seen_run, last_seen_at,
                decided_by, decided_at, note, outcome, outcome_run, outcome_at, outcome_detail, revision
         FROM approval_items WHERE plan_id = ?1 ORDER BY position, key_norm",
    )?;
    let items = stmt
        .query_map(params![plan.id], item_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = tx.prepare(
        "SELECT item_key, decision, decided_by, decided_at, note
         FROM approval_decisions WHERE plan_id = ?1 ORDER BY seq",
    )?;
    let decisions = stmt
        .query_map(params![plan.id], |r| {
            Ok(DecisionRecord {
                plan_id: plan.id.clone(),
                flow: plan.flow.clone(),
                step: plan.step.clone(),
                key: r.get(0)?,
                decision: r.get(1)?,
                by: r.get(2)?,
                at: r.get(3)?,
                note: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(PlanDetail {
        plan,
        items,
        decisions,
    }))
}

/// The open plan of a flow's step, whole.
pub(crate) fn open_plan(
    tx: &Transaction<'_>,
    flow: &str,
    step: &str,
) -> Result<Option<PlanDetail>, StoreError> {
    match open_plan_id(tx, flow, step)? {
        Some(id) => plan_detail(tx, &id),
        None => Ok(None),
    }
}

/// Plans, open ones first, then newest first.
pub(crate) fn list_plans(
    tx: &Transaction<'_>,
    q: &PlanQuery,
) -> Result<Vec<PlanSummary>, StoreError> {
    let limit = if q.limit == 0 {
        i64::MAX
    } else {
        i64::try_from(q.limit).unwrap_or(i64::MAX)
    };
    let mut stmt = tx.prepare(&format!(
        "SELECT {PLAN_COLUMNS} FROM approval_plans
         WHERE (?1 IS NULL OR flow = ?1) AND (?2 OR status = 'open')
         ORDER BY status = 'open' DESC, created_at DESC, id LIMIT ?3"
    ))?;
    let mut plans = stmt
        .query_map(params![q.flow, q.include_closed, limit], plan_row)?
        .collect::<Result<Vec<_>, _>>()?;
    for plan in &mut plans {
        plan.counts = counts(tx, &plan.id)?;
    }
    Ok(plans)
}

/// Opens a plan for a flow's step: a fresh id, drawn again on a clash.
fn create_plan(tx: &Transaction<'_>, u: &GateUpdate, t: &str) -> Result<String, StoreError> {
    for _ in 0..8 {
        let id = new_plan_id();
        let inserted = tx.execute(
            "INSERT INTO approval_plans (id, flow, step, status, reason, flow_file, created_at, created_by_run, updated_at, updated_by_run, params)
             VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
            params![id, u.flow, u.step, u.opening_reason(), u.flow_file, t, u.run_id, params_text(&u.params)],
        )?;
        if inserted == 1 {
            return Ok(id);
        }
    }
    Err(StoreError::Task(
        "no free approval plan id after 8 draws".into(),
    ))
}

/// Records what a run's gate held back and which keys left (see
/// [`GateUpdate`]); the plan after it, when there is one.
pub(crate) fn record_gate(
    tx: &Transaction<'_>,
    u: &GateUpdate,
) -> Result<Option<PlanSummary>, StoreError> {
    if let Some(fence) = u.fence {
        let run = RunRef {
            id: u.run_id.clone(),
            flow: u.flow.clone(),
            fence: Some(fence),
        };
        super::history::check_fence(tx, &run)?;
    }
    let t = now_text();
    // The revision a request joining now gets: 1 in a new plan, else the
    // next one, which the plan takes if some request did join.
    let (id, joining) = match open_plan_id(tx, &u.flow, &u.step)? {
        Some(id) => {
            let current: i64 = tx.query_row(
                "SELECT revision FROM approval_plans WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            (id, current.saturating_add(1))
        }
        None if u.held.is_empty() => return Ok(None),
        None => (create_plan(tx, u, &t)?, 1),
    };
    if !u.held.is_empty() {
        tx.execute(
            "UPDATE approval_plans SET reason = COALESCE(?2, reason), flow_file = ?3, updated_at = ?4, updated_by_run = ?5, params = ?6 WHERE id = ?1",
            params![id, u.new_reason(), u.flow_file, t, u.run_id, params_text(&u.params)],
        )?;
    }
    let next: i64 = tx.query_row(
        "SELECT COALESCE(MAX(position) + 1, 0) FROM approval_items WHERE plan_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    // A key already in the plan keeps its state (a decision stands), unless
    // it had run or left: then it is a new request and waits again.
    let mut hold = tx.prepare(
        "INSERT INTO approval_items (plan_id, key_norm, item_key, position, input, state, first_seen_run, last_seen_run, last_seen_at, revision)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?7, ?8)
         ON CONFLICT (plan_id, key_norm) DO UPDATE SET
            revision = CASE WHEN state IN ('done', 'closed') THEN excluded.revision ELSE revision END,
            input = excluded.input, last_seen_run = excluded.last_seen_run, last_seen_at = excluded.last_seen_at,
            decided_by = CASE WHEN state IN ('done', 'closed') THEN NULL ELSE decided_by END,
            decided_at = CASE WHEN state IN ('done', 'closed') THEN NULL ELSE decided_at END,
            note = CASE WHEN state IN ('done', 'closed') THEN NULL ELSE note END,
            outcome = CASE WHEN state IN ('done', 'closed') THEN NULL ELSE outcome END,
            outcome_run = CASE WHEN state IN ('done', 'closed') THEN NULL ELSE outcome_run END,
            outcome_at = CASE WHEN state IN ('done', 'closed') THEN NULL ELSE outcome_at END,
            outcome_detail = CASE WHEN state IN ('done', 'closed') THEN NULL ELSE outcome_detail END,
            state = CASE WHEN state IN ('done', 'closed') THEN 'pending' ELSE state END",
    )?;
    for (i, item) in u.held.iter().enumerate() {
        let position = next.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
        hold.execute(params![
            id,
            key_norm(&item.key),
            item.key,
            position,
            capped(&item.input),
            u.run_id,
            t,
            joining
        ])?;
    }
    drop(hold);
    tx.execute(
        "UPDATE approval_plans SET revision = ?2 WHERE id = ?1 AND revision < ?2
            AND EXISTS (SELECT 1 FROM approval_items WHERE plan_id = ?1 AND revision = ?2)",
        params![id, joining],
    )?;
    close_gone(tx, &id, &u.gone, &u.run_id, &t)?;
    close_if_settled(tx, &id, &t, Some(&u.run_id))?;
    summary(tx, &id)
}

/// Closes the live items of keys that left the step's items, each closing
/// kept for the ledger first: the item's own outcome is cleared when its
/// key comes back.
fn close_gone(
    tx: &Transaction<'_>,
    plan: &str,
    gone: &[String],
    run: &str,
    t: &str,
) -> Result<(), StoreError> {
    let live = "plan_id = ?1 AND key_norm = ?2 AND state IN ('pending', 'approved', 'rejected')";
    let mut keep = tx.prepare(&format!(
        "INSERT INTO approval_closings (plan_id, key_norm, item_key, run_id, closed_at, detail)
         SELECT plan_id, key_norm, item_key, ?3, ?4, ?5 FROM approval_items WHERE {live}"
    ))?;
    let mut close = tx.prepare(&format!(
        "UPDATE approval_items SET state = 'closed', outcome = 'closed', outcome_run = ?3, outcome_at = ?4,
            outcome_detail = ?5
         WHERE {live}"
    ))?;
    for key in gone {
        let closing = params![plan, key_norm(key), run, t, NO_LONGER_NEEDED];
        keep.execute(closing)?;
        close.execute(closing)?;
    }
    Ok(())
}

/// Closes a plan none of whose items is live any more, as changed by
/// `run` (the one whose items settled it) at `t`.
/// Closes plan `?1` at `?2` (by run `?3`) once none of its items is open.
/// The open items' condition is the partial index's (schema 12), word for
/// word: that is what makes this a look-up, not a scan of every item the
/// plan ever had, each time an approved item settles.
const CLOSE_IF_SETTLED: &str = "UPDATE approval_plans SET status = 'closed', closed_at = ?2,
        updated_at = ?2, updated_by_run = COALESCE(?3, updated_by_run)
     WHERE id = ?1 AND status = 'open' AND NOT EXISTS (
        SELECT 1 FROM approval_items WHERE plan_id = ?1 AND state IN ('pending', 'approved', 'rejected'))";

fn close_if_settled(
    tx: &Connection,
    id: &str,
    t: &str,
    run: Option<&str>,
) -> Result<(), StoreError> {
    tx.prepare_cached(CLOSE_IF_SETTLED)?
        .execute(params![id, t, run])?;
    Ok(())
}

/// Where one item of a plan stands now (`None`: no such key).
pub(crate) fn item_state(
    tx: &Transaction<'_>,
    plan: &str,
    key: &str,
) -> Result<Option<PlanItemState>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT state FROM approval_items WHERE plan_id = ?1 AND key_norm = ?2")?
        .query_row(params![plan, key_norm(key)], |r| r.get(0))
        .optional()?)
}

/// Marks items that ran as done: their approval is spent.
pub(crate) fn settle(tx: &Connection, plan: &str, settled: &[Settled]) -> Result<(), StoreError> {
    let t = now_text();
    // Cached: each approved item that runs settles its own key.
    let mut stmt = tx.prepare_cached(
        "UPDATE approval_items SET state = 'done', outcome = ?3, outcome_run = ?4, outcome_at = ?5, outcome_detail = ?6,
            last_seen_run = ?4, last_seen_at = ?5
         WHERE plan_id = ?1 AND key_norm = ?2 AND state IN ('pending', 'approved', 'rejected')",
    )?;
    for s in settled {
        stmt.execute(params![
            plan,
            key_norm(&s.key),
            s.status.as_str(),
            s.run_id,
            t,
            s.error.as_deref().map(capped_error)
        ])?;
    }
    let run = settled.last().map(|s| s.run_id.as_str());
    close_if_settled(tx, plan, &t, run)
}

fn targets(tx: &Transaction<'_>, plan: &str) -> Result<Vec<DecisionTarget>, StoreError> {
    let mut stmt = tx.prepare(
        "SELECT key_norm, item_key, state, outcome_run, outcome, revision FROM approval_items
         WHERE plan_id = ?1 ORDER BY position, key_norm",
    )?;
    let rows = stmt
        .query_map(params![plan], |r| {
            Ok(DecisionTarget {
                norm: r.get(0)?,
                key: r.get(1)?,
                state: r.get(2)?,
                outcome_run: r.get(3)?,
                outcome: r.get(4)?,
                revision: revision(r.get(5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Records a person's decision, all of it or none of it.
pub(crate) fn decide(
    tx: &Transaction<'_>,
    req: &DecisionRequest,
) -> Result<DecisionOutcome, StoreError> {
    let Some(plan) = summary(tx, &req.plan_id.trim().to_lowercase())? else {
        return Err(ApprovalError::UnknownPlan(req.plan_id.clone()).into());
    };
    let items = targets(tx, &plan.id)?;
    let chosen = choose(&plan, &items, req)?;
    let t = now_text();
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
            "UPDATE approval_items SET state = ?3, decided_by = ?4, decided_at = ?5, note = ?6
             WHERE plan_id = ?1 AND key_norm = ?2",
            params![
                plan.id,
                item.norm,
                req.decision.state().as_str(),
                req.by,
                t,
                req.note
            ],
        )?;
        tx.execute(
            "INSERT INTO approval_decisions (plan_id, key_norm, item_key, decision, decided_by, decided_at, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![plan.id, item.norm, item.key, req.decision.as_str(), req.by, t, req.note],
        )?;
        outcome.changed.push(item.key.clone());
    }
    outcome.plan.counts = counts(tx, &plan.id)?;
    Ok(outcome)
}

/// Deletes closed plans (with their items, decisions and closings)
/// closed before `cutoff`, as pruning runs of that age does.
pub(crate) fn prune_closed(tx: &Transaction<'_>, cutoff: &str) -> Result<(), StoreError> {
    let doomed = "SELECT id FROM approval_plans WHERE status = 'closed' AND closed_at < ?1";
    for table in ["approval_items", "approval_decisions", "approval_closings"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE plan_id IN ({doomed})"),
            params![cutoff],
        )?;
    }
    tx.execute(
        "DELETE FROM approval_plans WHERE status = 'closed' AND closed_at < ?1",
        params![cutoff],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whether_a_plan_is_settled_is_a_look_up_in_its_open_items() {
        let conn = Connection::open_in_memory().unwrap();
        crate::sqlite::schema::migrate(&conn, std::path::Path::new(":memory:")).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CLOSE_IF_SETTLED}"))
            .unwrap()
            .query_map(params!["ap-1", "t", "r"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX approval_items_open")),
            "{plan:?}"
        );
    }
}
