//! Approval plans and the ledger, each test once per backend from one
//! body: one open plan per flow and step, updated by every run and never
//! duplicated (even when two gates race); decisions with who, when and a
//! note, refused clearly when they cannot be made; a decision made while
//! a run goes on stands; approvals spent once; keys that leave closed as
//! no longer needed (each closing kept in the ledger); the ledger of a key across runs and decisions,
//! case-insensitive, still right after pruning; what a run's gate did in
//! `runs show`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::Db;
use serde_json::{Value, json};
use sluice_store::{
    Acquired, ApprovalError, Decision, DecisionRequest, GateRecord, GateUpdate, HeldItem,
    HistoryWrite, ItemEnd, ItemStatus, LeaseGrant, LedgerEvent, LedgerKeysQuery, NewRun,
    PlanItemState, PlanQuery, PlanStatus, RunRef, RunStatus, Settled, StepEnd, StepStart,
    StepStatus, Store, StoreError, Trigger,
};

both!(
    a_gate_opens_one_plan_and_every_run_updates_it,
    decisions_record_who_when_and_why_and_refuse_what_cannot_be,
    a_decision_made_while_a_run_goes_on_stands,
    a_bulk_decision_leaves_what_someone_decided_since,
    a_decision_naming_a_revision_leaves_what_later_runs_added,
    an_approval_is_spent_once_and_a_spent_plan_takes_no_decision,
    an_items_record_spends_its_approval_in_the_same_write,
    keys_that_leave_are_closed_and_a_key_that_returns_waits_again,
    racing_gates_open_one_plan,
    a_fenced_gate_is_refused,
    the_ledger_tells_a_keys_story_oldest_first_and_survives_pruning,
    the_ledger_lists_each_keys_latest_state,
    runs_show_what_their_gates_did,
);

const FLOW: &str = "sync";
const STEP: &str = "deactivate";

fn held(keys: &[&str]) -> Vec<HeldItem> {
    keys.iter()
        .map(|k| HeldItem {
            key: k.to_string(),
            input: json!({ "user": k }),
        })
        .collect()
}

fn gate(run: &str, keys: &[&str], gone: &[&str]) -> GateUpdate {
    GateUpdate {
        flow: FLOW.into(),
        step: STEP.into(),
        run_id: run.into(),
        flow_file: "flows/sync.toml".into(),
        params: vec![("region".into(), "\"west\"".into())],
        reason: Some("approval is always required".into()),
        held: held(keys),
        gone: gone.iter().map(|k| k.to_string()).collect(),
        fence: None,
    }
}

fn decide(plan: &str, keys: &[&str], decision: Decision, by: &str) -> DecisionRequest {
    DecisionRequest {
        if_pending: Vec::new(),
        plan_id: plan.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        decision,
        by: by.into(),
        note: Some(format!("{by} checked")),
        revision: None,
    }
}

fn approval_error(e: StoreError) -> ApprovalError {
    match e {
        StoreError::Approval(a) => a,
        other => panic!("expected an approval error, got {other}"),
    }
}

/// `key`'s approval in `detail` is spent: done, with `outcome` in `run`.
fn assert_spent(detail: &sluice_store::PlanDetail, key: &str, outcome: &str, run: &str) {
    let item = detail
        .item(key)
        .unwrap_or_else(|| panic!("{key} not in the plan"));
    assert_eq!(item.state, PlanItemState::Done, "{key}");
    let ran = item.outcome.as_ref().unwrap();
    assert_eq!(
        (ran.outcome.as_str(), ran.run_id.as_str()),
        (outcome, run),
        "{key}"
    );
}

async fn state_of(s: &Store, plan: &str, key: &str) -> PlanItemState {
    s.plan_detail(plan)
        .await
        .unwrap()
        .unwrap()
        .item(key)
        .unwrap_or_else(|| panic!("{key} not in {plan}"))
        .state
}

async fn a_gate_opens_one_plan_and_every_run_updates_it(db: Db) {
    let s = &db.store;
    // Nothing held and no plan: nothing is written.
    assert_eq!(s.record_gate(&gate("r0", &[], &[])).await.unwrap(), None);
    assert!(
        s.list_plans(&PlanQuery::default())
            .await
            .unwrap()
            .is_empty()
    );

    let first = s
        .record_gate(&gate("r1", &["a@x.com", "b@x.com", "c@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status, PlanStatus::Open);
    assert_eq!(first.counts.pending, 3);
    assert_eq!(first.created_by_run, "r1");
    let west = vec![("region".to_string(), "\"west\"".to_string())];
    assert_eq!(first.params, west, "the run's --param overrides are kept");

    // The next run holds one more, with a changed input for b: the same plan.
    let mut next = gate("r2", &["a@x.com", "B@X.com", "c@x.com", "d@x.com"], &[]);
    next.held[1].input = json!({"user": "b", "changed": true});
    next.reason = Some("4 items, more than the 3 allowed without approval".into());
    next.params = vec![("region".into(), "east".into())];
    let second = s.record_gate(&next).await.unwrap().unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.counts.pending, 4);
    assert_eq!(second.updated_by_run, "r2");
    assert_eq!(Some(second.reason.clone()), next.reason);
    assert_eq!(
        second.params, next.params,
        "`approve --run` runs as the latest run was run"
    );

    let plans = s.list_plans(&PlanQuery::default()).await.unwrap();
    assert_eq!(plans.len(), 1, "{plans:?}");
    let detail = s.open_plan(FLOW, STEP).await.unwrap().unwrap();
    let keys: Vec<&str> = detail.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["a@x.com", "b@x.com", "c@x.com", "d@x.com"]);
    let b = detail.item("b@x.com").unwrap();
    assert_eq!(b.input, json!({"user": "b", "changed": true}));
    assert_eq!(
        (b.first_seen_run.as_str(), b.last_seen_run.as_str()),
        ("r1", "r2")
    );
    // Another step of the flow, or another flow, has a plan of its own.
    let mut other = gate("r2", &["a@x.com"], &[]);
    other.step = "create".into();
    let other = s.record_gate(&other).await.unwrap().unwrap();
    assert_ne!(other.id, first.id);
    let only_sync = PlanQuery {
        flow: Some("elsewhere".into()),
        ..PlanQuery::default()
    };
    assert!(s.list_plans(&only_sync).await.unwrap().is_empty());
    assert_eq!(s.list_plans(&PlanQuery::default()).await.unwrap().len(), 2);
    // A run that needs no approval says no reason (it holds only rejected
    // keys): the plan keeps its own rather than a stand-in's.
    let mut quiet = next.clone();
    quiet.run_id = "r3".into();
    quiet.reason = None;
    let third = s.record_gate(&quiet).await.unwrap().unwrap();
    assert_eq!(third.reason, second.reason);
}

async fn decisions_record_who_when_and_why_and_refuse_what_cannot_be(db: Db) {
    let s = &db.store;
    let plan = s
        .record_gate(&gate(
            "r1",
            &["a@x.com", "b@x.com", "c@x.com", "d@x.com"],
            &[],
        ))
        .await
        .unwrap()
        .unwrap();
    // Keys are matched without regard to case.
    let out = s
        .decide(&decide(
            &plan.id,
            &["A@X.COM", "b@x.com"],
            Decision::Approved,
            "alice",
        ))
        .await
        .unwrap();
    assert_eq!(out.changed, ["a@x.com", "b@x.com"]);
    assert_eq!(out.plan.counts.approved, 2);
    assert_eq!(out.plan.counts.pending, 2);
    let out = s
        .decide(&decide(&plan.id, &["c@x.com"], Decision::Rejected, "bob"))
        .await
        .unwrap();
    assert_eq!(out.changed, ["c@x.com"]);
    // Approving an approved key again changes nothing and records nothing.
    let again = s
        .decide(&decide(&plan.id, &["a@x.com"], Decision::Approved, "carol"))
        .await
        .unwrap();
    assert!(again.changed.is_empty());
    assert_eq!(again.unchanged, ["a@x.com"]);

    let detail = s
        .plan_detail(&plan.id.to_uppercase())
        .await
        .unwrap()
        .unwrap();
    let a = detail.item("a@x.com").unwrap();
    assert_eq!(a.state, PlanItemState::Approved);
    assert_eq!(a.decided_by.as_deref(), Some("alice"));
    assert_eq!(a.note.as_deref(), Some("alice checked"));
    assert!(a.decided_at.as_deref().unwrap().ends_with('Z'));
    let who: Vec<(&str, &str, Decision)> = detail
        .decisions
        .iter()
        .map(|d| (d.key.as_str(), d.by.as_str(), d.decision))
        .collect();
    assert_eq!(
        who,
        [
            ("a@x.com", "alice", Decision::Approved),
            ("b@x.com", "alice", Decision::Approved),
            ("c@x.com", "bob", Decision::Rejected),
        ]
    );

    // Refusals change nothing, not even the keys before the bad one.
    let e = s
        .decide(&decide(
            &plan.id,
            &["d@x.com", "zed@x.com"],
            Decision::Approved,
            "eve",
        ))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(approval_error(e), ApprovalError::KeyNotInPlan { ref key, .. } if key == "zed@x.com"),
        "{msg}"
    );
    assert!(
        msg.contains("d@x.com"),
        "the message lists the plan's keys: {msg}"
    );
    assert_eq!(
        state_of(s, &plan.id, "d@x.com").await,
        PlanItemState::Pending
    );
    let e = s
        .decide(&decide("ap-000000", &[], Decision::Approved, "eve"))
        .await
        .unwrap_err();
    assert_eq!(
        approval_error(e),
        ApprovalError::UnknownPlan("ap-000000".into())
    );
    let e = s
        .decide(&decide(&plan.id, &[], Decision::Approved, " "))
        .await
        .unwrap_err();
    assert_eq!(approval_error(e), ApprovalError::NoAuthor);
    // A note is a reason, not a document; a name is a name.
    let mut long = decide(&plan.id, &[], Decision::Approved, "eve");
    long.note = Some("n".repeat(sluice_store::approval::MAX_NOTE_CHARS + 1));
    let e = s.decide(&long).await.unwrap_err();
    assert_eq!(approval_error(e), ApprovalError::LongNote { chars: 2001 });
    let e = s
        .decide(&decide(&plan.id, &[], Decision::Approved, &"e".repeat(201)))
        .await
        .unwrap_err();
    assert_eq!(approval_error(e), ApprovalError::LongAuthor { chars: 201 });
    assert_eq!(
        state_of(s, &plan.id, "d@x.com").await,
        PlanItemState::Pending,
        "nothing was decided"
    );

    // No keys: every pending item; then nothing is pending any more.
    let all = s
        .decide(&decide(&plan.id, &[], Decision::Approved, "dave"))
        .await
        .unwrap();
    assert_eq!(all.changed, ["d@x.com"]);
    let e = s
        .decide(&decide(&plan.id, &[], Decision::Approved, "dave"))
        .await
        .unwrap_err();
    assert!(matches!(
        approval_error(e),
        ApprovalError::NothingPending {
            approved: 3,
            rejected: 1,
            ..
        }
    ));
    // A rejected key is approved by naming it, and the reverse.
    s.decide(&decide(&plan.id, &["c@x.com"], Decision::Approved, "bob"))
        .await
        .unwrap();
    s.decide(&decide(&plan.id, &["b@x.com"], Decision::Rejected, "bob"))
        .await
        .unwrap();
    assert_eq!(
        state_of(s, &plan.id, "c@x.com").await,
        PlanItemState::Approved
    );
    assert_eq!(
        state_of(s, &plan.id, "b@x.com").await,
        PlanItemState::Rejected
    );
}

async fn a_decision_made_while_a_run_goes_on_stands(db: Db) {
    let s = &db.store;
    let plan = s
        .record_gate(&gate("r1", &["a@x.com", "b@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    // Run r2 read the plan (both pending) and holds both; meanwhile a
    // person approves one and rejects the other.
    let seen_by_r2 = s.open_plan(FLOW, STEP).await.unwrap().unwrap();
    assert_eq!(seen_by_r2.plan.counts.pending, 2);
    let other_process = db.reopen().await;
    other_process
        .decide(&decide(&plan.id, &["a@x.com"], Decision::Approved, "alice"))
        .await
        .unwrap();
    other_process
        .decide(&decide(&plan.id, &["b@x.com"], Decision::Rejected, "alice"))
        .await
        .unwrap();
    s.record_gate(&gate("r2", &["a@x.com", "b@x.com"], &[]))
        .await
        .unwrap();
    assert_eq!(
        state_of(s, &plan.id, "a@x.com").await,
        PlanItemState::Approved
    );
    assert_eq!(
        state_of(s, &plan.id, "b@x.com").await,
        PlanItemState::Rejected
    );
    // What a run asks again just before it runs an item, by any case of
    // its key.
    let now = |key: &'static str| s.plan_item_state(&plan.id, key);
    assert_eq!(now("A@X.com").await.unwrap(), Some(PlanItemState::Approved));
    assert_eq!(now("b@x.com").await.unwrap(), Some(PlanItemState::Rejected));
    assert_eq!(now("nobody@x.com").await.unwrap(), None);
}

/// "Every pending item shown" from a page loaded before Alice rejected
/// one: that item stays rejected, and the outcome names it.
async fn a_bulk_decision_leaves_what_someone_decided_since(db: Db) {
    let s = &db.store;
    let plan = s
        .record_gate(&gate("r1", &["a@x.com", "b@x.com", "c@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    s.decide(&decide(&plan.id, &["b@x.com"], Decision::Rejected, "alice"))
        .await
        .unwrap();
    let bulk = DecisionRequest {
        if_pending: vec!["a@x.com".into(), "B@x.com".into(), "c@x.com".into()],
        ..decide(&plan.id, &[], Decision::Approved, "root")
    };
    let outcome = s.decide(&bulk).await.unwrap();
    assert_eq!(outcome.changed, ["a@x.com", "c@x.com"]);
    assert_eq!(outcome.left, ["b@x.com"]);
    assert_eq!(
        state_of(s, &plan.id, "b@x.com").await,
        PlanItemState::Rejected
    );
    // Keys named outright are decided whatever their state: that is how
    // a person changes a decision.
    let outcome = s
        .decide(&DecisionRequest {
            if_pending: vec!["b@x.com".into()],
            ..decide(&plan.id, &["b@x.com"], Decision::Approved, "root")
        })
        .await
        .unwrap();
    assert_eq!(
        (outcome.changed, outcome.left),
        (vec!["b@x.com".to_string()], vec![])
    );
    // Nothing still pending: nothing decided, nothing refused.
    let outcome = s.decide(&bulk).await.unwrap();
    assert!(outcome.changed.is_empty(), "{outcome:?}");
    assert_eq!(outcome.unchanged, ["a@x.com", "b@x.com", "c@x.com"]);
}

/// The plan's revision grows only when a run adds a request; a decision
/// that names a revision covers what the plan held then, and leaves
/// pending what later runs added (the audit's case: 7 items reviewed, 5
/// more added by a later run, all 12 approved by a plain `approve`).
async fn a_decision_naming_a_revision_leaves_what_later_runs_added(db: Db) {
    let s = &db.store;
    let first = s
        .record_gate(&gate("r1", &["a@x.com", "b@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.revision, 1);
    let same = s
        .record_gate(&gate("r2", &["A@x.com", "b@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(same.revision, 1, "nothing new joined");
    let grown = s
        .record_gate(&gate(
            "r3",
            &["a@x.com", "b@x.com", "c@x.com", "d@x.com"],
            &[],
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((grown.id.as_str(), grown.revision), (first.id.as_str(), 2));
    let revisions = |d: &sluice_store::PlanDetail| -> Vec<(String, u64)> {
        d.items
            .iter()
            .map(|i| (i.key.clone(), i.revision))
            .collect()
    };
    let detail = s.plan_detail(&first.id).await.unwrap().unwrap();
    assert_eq!(
        revisions(&detail),
        [
            ("a@x.com".to_string(), 1),
            ("b@x.com".to_string(), 1),
            ("c@x.com".to_string(), 2),
            ("d@x.com".to_string(), 2)
        ]
    );
    let at = |revision: u64, keys: &[&str]| DecisionRequest {
        revision: Some(revision),
        ..decide(&first.id, keys, Decision::Approved, "alice")
    };
    // A revision the plan never had, and a key that joined after the
    // revision named, are refused, and nothing is decided.
    let e = approval_error(s.decide(&at(3, &[])).await.unwrap_err());
    assert!(
        matches!(
            e,
            ApprovalError::NoSuchRevision {
                revision: 3,
                current: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let e = approval_error(s.decide(&at(1, &["a@x.com", "C@x.com"])).await.unwrap_err());
    assert!(
        matches!(&e, ApprovalError::KeyAfterRevision { key, joined: 2, revision: 1, .. } if key == "c@x.com"),
        "{e:?}"
    );
    assert!(e.to_string().contains("nothing was decided"), "{e}");
    assert_eq!(
        state_of(s, &first.id, "a@x.com").await,
        PlanItemState::Pending
    );
    // Every pending item of revision 1; c and d stay pending.
    let outcome = s.decide(&at(1, &[])).await.unwrap();
    assert_eq!(outcome.changed, ["a@x.com", "b@x.com"]);
    assert_eq!(outcome.later, ["c@x.com", "d@x.com"]);
    assert_eq!(
        state_of(s, &first.id, "c@x.com").await,
        PlanItemState::Pending
    );
    let e = approval_error(s.decide(&at(1, &[])).await.unwrap_err());
    assert!(
        matches!(
            e,
            ApprovalError::NothingPendingBy {
                revision: 1,
                later: 2,
                ..
            }
        ),
        "{e:?}"
    );
    // a ran; back among the held items it is a new request, of a new
    // revision. b, approved and not yet run, keeps its revision.
    s.settle_items(
        &first.id,
        &[Settled {
            key: "a@x.com".into(),
            status: ItemStatus::Succeeded,
            run_id: "r4".into(),
            error: None,
        }],
    )
    .await
    .unwrap();
    let back = s
        .record_gate(&gate("r5", &["a@x.com", "c@x.com", "d@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.revision, 3);
    let detail = s.plan_detail(&first.id).await.unwrap().unwrap();
    assert_eq!(
        revisions(&detail),
        [
            ("a@x.com".to_string(), 3),
            ("b@x.com".to_string(), 1),
            ("c@x.com".to_string(), 2),
            ("d@x.com".to_string(), 2)
        ]
    );
    let outcome = s.decide(&at(2, &[])).await.unwrap();
    assert_eq!(
        (outcome.changed, outcome.later),
        (
            vec!["c@x.com".to_string(), "d@x.com".to_string()],
            vec!["a@x.com".to_string()]
        )
    );
    // A page's bulk choice names a revision too: a later item already
    // decided is not said to be left pending.
    s.decide(&decide(&first.id, &["a@x.com"], Decision::Rejected, "bob"))
        .await
        .unwrap();
    let outcome = s
        .decide(&DecisionRequest {
            if_pending: vec!["a@x.com".into(), "c@x.com".into()],
            ..at(1, &[])
        })
        .await
        .unwrap();
    assert!(outcome.later.is_empty(), "{outcome:?}");
    assert_eq!(outcome.left, ["a@x.com"]);
    s.decide(&decide(
        &first.id,
        &["a@x.com"],
        Decision::Approved,
        "alice",
    ))
    .await
    .unwrap();
    // Without a revision: every pending item, as before.
    let e = approval_error(
        s.decide(&decide(&first.id, &[], Decision::Approved, "alice"))
            .await
            .unwrap_err(),
    );
    assert!(matches!(e, ApprovalError::NothingPending { .. }), "{e:?}");
}

/// A plan holding a@x.com and b@x.com, both approved by alice.
async fn a_and_b_approved(s: &Store) -> sluice_store::PlanSummary {
    let plan = s
        .record_gate(&gate("r1", &["a@x.com", "b@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    s.decide(&decide(&plan.id, &[], Decision::Approved, "alice"))
        .await
        .unwrap();
    plan
}

async fn an_approval_is_spent_once_and_a_spent_plan_takes_no_decision(db: Db) {
    let s = &db.store;
    let plan = a_and_b_approved(s).await;
    let ran = |key: &str, status: ItemStatus| Settled {
        key: key.into(),
        status,
        run_id: "r2".into(),
        error: (status == ItemStatus::Failed).then(|| "403 forbidden".to_string()),
    };
    s.settle_items(&plan.id, &[ran("A@x.com", ItemStatus::Succeeded)])
        .await
        .unwrap();
    let detail = s.plan_detail(&plan.id).await.unwrap().unwrap();
    assert_spent(&detail, "a@x.com", "succeeded", "r2");
    assert_eq!(detail.plan.status, PlanStatus::Open);
    // A spent key cannot be approved again.
    let e = s
        .decide(&decide(&plan.id, &["a@x.com"], Decision::Approved, "alice"))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(approval_error(e), ApprovalError::KeySpent { ref run, .. } if run == "r2"),
        "{msg}"
    );
    assert!(msg.contains("used once"), "{msg}");
    // A rejection naming both stops b, which has not run, and leaves a,
    // which has, as it is; naming only a is refused as before.
    let e = s
        .decide(&decide(&plan.id, &["a@x.com"], Decision::Rejected, "carol"))
        .await
        .unwrap_err();
    assert!(matches!(approval_error(e), ApprovalError::KeySpent { .. }));
    let stopped = s
        .decide(&decide(
            &plan.id,
            &["a@x.com", "b@x.com"],
            Decision::Rejected,
            "carol",
        ))
        .await
        .unwrap();
    assert_eq!(stopped.changed, ["b@x.com"]);
    assert_eq!(stopped.left, ["a@x.com"]);
    // Approved again; then a rejection of the whole plan stops it too, as
    // it would a pending item.
    s.decide(&decide(&plan.id, &["b@x.com"], Decision::Approved, "alice"))
        .await
        .unwrap();
    let stopped = s
        .decide(&decide(&plan.id, &[], Decision::Rejected, "carol"))
        .await
        .unwrap();
    assert_eq!(stopped.changed, ["b@x.com"]);
    assert_eq!(
        state_of(s, &plan.id, "b@x.com").await,
        PlanItemState::Rejected
    );
    // Nothing left that has not run: nothing to reject.
    let e = s
        .decide(&decide(&plan.id, &[], Decision::Rejected, "carol"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            approval_error(e),
            ApprovalError::NothingPending { approved: 0, .. }
        ),
        "nothing pending or approved is left"
    );
    s.decide(&decide(&plan.id, &["b@x.com"], Decision::Approved, "alice"))
        .await
        .unwrap();
    // The last one fails for good: spent too, and the plan closes.
    s.settle_items(&plan.id, &[ran("b@x.com", ItemStatus::Failed)])
        .await
        .unwrap();
    let detail = s.plan_detail(&plan.id).await.unwrap().unwrap();
    assert_eq!(detail.plan.status, PlanStatus::Closed);
    assert!(detail.plan.closed_at.is_some());
    // Closing changed the plan, by the run whose item closed it; the items
    // were last seen by the run that ran them.
    assert_eq!(
        Some(&detail.plan.updated_at),
        detail.plan.closed_at.as_ref()
    );
    assert_eq!(detail.plan.updated_by_run, "r2");
    for key in ["a@x.com", "b@x.com"] {
        assert_eq!(detail.item(key).unwrap().last_seen_run, "r2", "{key}");
    }
    let b = detail.item("b@x.com").unwrap().outcome.clone().unwrap();
    assert_eq!(b.detail.as_deref(), Some("403 forbidden"));
    assert!(s.open_plan(FLOW, STEP).await.unwrap().is_none());
    assert!(
        s.list_plans(&PlanQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
    let with_closed = PlanQuery {
        include_closed: true,
        ..PlanQuery::default()
    };
    assert_eq!(s.list_plans(&with_closed).await.unwrap().len(), 1);
    // A second approval of the spent plan is a clear error.
    let e = s
        .decide(&decide(&plan.id, &[], Decision::Approved, "alice"))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(approval_error(e), ApprovalError::PlanClosed { done: 2, .. }),
        "{msg}"
    );
    assert!(msg.contains(&plan.id) && msg.contains("closed"), "{msg}");
    // The next run that holds something opens a new plan.
    let fresh = s
        .record_gate(&gate("r3", &["c@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(fresh.id, plan.id);
}

async fn keys_that_leave_are_closed_and_a_key_that_returns_waits_again(db: Db) {
    let s = &db.store;
    let plan = s
        .record_gate(&gate("r1", &["a@x.com", "b@x.com", "c@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    s.decide(&decide(&plan.id, &["a@x.com"], Decision::Approved, "alice"))
        .await
        .unwrap();
    s.decide(&decide(&plan.id, &["b@x.com"], Decision::Rejected, "alice"))
        .await
        .unwrap();
    // a came back before the next run; b left too; c still waits.
    let after = s
        .record_gate(&gate("r2", &["c@x.com"], &["a@x.com", "B@x.com"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.counts.closed, 2);
    assert_eq!(after.counts.pending, 1);
    let detail = s.plan_detail(&plan.id).await.unwrap().unwrap();
    let a = detail.item("a@x.com").unwrap();
    assert_eq!(a.state, PlanItemState::Closed);
    let outcome = a.outcome.as_ref().unwrap();
    assert_eq!(outcome.run_id, "r2");
    assert!(
        outcome
            .detail
            .as_deref()
            .unwrap()
            .contains("no longer needed")
    );
    let e = s
        .decide(&decide(&plan.id, &["a@x.com"], Decision::Approved, "alice"))
        .await
        .unwrap_err();
    assert!(matches!(approval_error(e), ApprovalError::KeyClosed { .. }));
    // a leaves again: a new request, pending, without the old decision.
    s.record_gate(&gate("r3", &["a@x.com", "c@x.com"], &[]))
        .await
        .unwrap();
    let a = s.plan_detail(&plan.id).await.unwrap().unwrap();
    let a = a.item("a@x.com").unwrap();
    assert_eq!(a.state, PlanItemState::Pending);
    assert_eq!((a.decided_by.clone(), a.outcome.clone()), (None, None));
    // Everything leaves: the plan closes.
    let closed = s
        .record_gate(&gate("r4", &[], &["a@x.com", "c@x.com"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, PlanStatus::Closed);
    // The ledger keeps every closing, the approved and the rejected key's
    // alike, and a's first one although its item was a new request since.
    assert_eq!(
        decisions_and_closings(s, "a@x.com").await,
        ["approved by alice", "closed by r2", "closed by r4"]
    );
    assert_eq!(
        decisions_and_closings(s, "b@x.com").await,
        ["rejected by alice", "closed by r2"]
    );
    let story = s.ledger("b@x.com", None).await.unwrap();
    let LedgerEvent::Closed {
        plan_id, detail, ..
    } = &story[1].event
    else {
        panic!("{story:?}")
    };
    assert_eq!(plan_id, &plan.id);
    assert_eq!(story[1].key, "b@x.com", "the key as its item wrote it");
    assert_eq!(
        detail.as_deref(),
        Some("no longer among the items: no longer needed")
    );
}

/// A key's decisions and closings in its ledger, oldest first.
async fn decisions_and_closings(s: &Store, key: &str) -> Vec<String> {
    s.ledger(key, None)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match &e.event {
            LedgerEvent::Decision { decision, by, .. } => Some(format!("{decision} by {by}")),
            LedgerEvent::Closed { run_id, .. } => Some(format!("closed by {run_id}")),
            LedgerEvent::Item { .. } => None,
        })
        .collect()
}

async fn racing_gates_open_one_plan(db: Db) {
    let handles: Vec<Store> = vec![db.store.clone(), db.reopen().await, db.reopen().await];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in handles.into_iter().enumerate() {
        tasks.spawn(async move {
            let key = format!("k{i}@x.com");
            s.record_gate(&gate(
                &format!("r{i}"),
                &[key.as_str(), "shared@x.com"],
                &[],
            ))
            .await
            .unwrap()
            .unwrap()
            .id
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let plan = db.store.plan_detail(&ids[0]).await.unwrap().unwrap();
    assert_eq!(plan.items.len(), 4);
}

async fn a_fenced_gate_is_refused(db: Db) {
    let s = &db.store;
    let grant = |run: &str| LeaseGrant {
        flow: FLOW.into(),
        replica: "one".into(),
        token: "t".into(),
        host: None,
        pid: None,
        run_id: run.into(),
    };
    let ttl = Duration::from_secs(60);
    let Acquired::Granted { fence, .. } = s.acquire_lease(&grant("r1"), ttl).await.unwrap() else {
        panic!("the lease was free")
    };
    let mut fenced = gate("r1", &["a@x.com"], &[]);
    fenced.fence = Some(fence);
    s.record_gate(&fenced).await.unwrap().unwrap();
    s.release_lease(FLOW, fence).await.unwrap();
    let Acquired::Granted { .. } = s.acquire_lease(&grant("r2"), ttl).await.unwrap() else {
        panic!("the lease was released")
    };
    let mut late = gate("r1", &["b@x.com"], &[]);
    late.fence = Some(fence);
    let e = s.record_gate(&late).await.unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    let plan = s.open_plan(FLOW, STEP).await.unwrap().unwrap();
    assert!(plan.item("b@x.com").is_none());
}

/// An item that ran under an approval spends it with its own record, in
/// the same write (a host that dies before its step ends has then left
/// nothing approved that ran); an item that spends nothing, or a key the
/// plan does not hold, changes nothing; the last one spent closes the plan.
async fn an_items_record_spends_its_approval_in_the_same_write(db: Db) {
    let s = &db.store;
    let plan = a_and_b_approved(s).await;
    let spending = |index, key: &str, status, spends: bool| {
        let HistoryWrite::Item(mut item) = keyed(STEP, index, key, status, json!({})) else {
            unreachable!()
        };
        item.error = (status == ItemStatus::Failed).then(|| "403 forbidden".into());
        item.spends_approval = spends.then(|| plan.id.clone());
        HistoryWrite::Item(item)
    };
    s.write(
        &RunRef::unfenced("r2", FLOW),
        vec![
            HistoryWrite::StartRun(new_run("r2", false)),
            spending(0, "A@x.com", ItemStatus::Succeeded, true),
            spending(1, "b@x.com", ItemStatus::Succeeded, false),
            spending(2, "z@x.com", ItemStatus::Succeeded, true),
        ],
    )
    .await
    .unwrap();
    let detail = s.plan_detail(&plan.id).await.unwrap().unwrap();
    assert_spent(&detail, "a@x.com", "succeeded", "r2");
    assert_eq!(
        state_of(s, &plan.id, "b@x.com").await,
        PlanItemState::Approved
    );
    assert_eq!(detail.plan.status, PlanStatus::Open);
    s.write(
        &RunRef::unfenced("r2", FLOW),
        vec![spending(1, "b@x.com", ItemStatus::Failed, true)],
    )
    .await
    .unwrap();
    let detail = s.plan_detail(&plan.id).await.unwrap().unwrap();
    let b = detail.item("b@x.com").unwrap().outcome.clone().unwrap();
    assert_eq!(
        (b.outcome.as_str(), b.detail.as_deref()),
        ("failed", Some("403 forbidden"))
    );
    assert_eq!(detail.plan.status, PlanStatus::Closed);
}

fn new_run(id: &str, dry_run: bool) -> NewRun {
    NewRun {
        id: id.into(),
        flow: FLOW.into(),
        flow_file: "flows/sync.toml".into(),
        trigger: Trigger::Manual,
        dry_run,
        output_dir: String::new(),
        replica: None,
        started_at: chrono::Utc::now(),
    }
}

fn keyed(step: &str, index: usize, key: &str, status: ItemStatus, output: Value) -> HistoryWrite {
    HistoryWrite::Item(ItemEnd {
        step: step.into(),
        index,
        key: Some(key.into()),
        status,
        input: json!({ "key": key }).into(),
        output: Some(output.into()),
        error: None,
        connections: Value::Null,
        duration_ms: 1,
        attempts: None,
        ended_at: chrono::Utc::now(),
        spends_approval: None,
    })
}

/// Records a finished run with these item writes.
async fn run_with(s: &Store, id: &str, dry_run: bool, items: Vec<HistoryWrite>) {
    let mut writes = vec![HistoryWrite::StartRun(new_run(id, dry_run))];
    writes.extend(items);
    writes.push(HistoryWrite::FinishRun {
        status: RunStatus::Succeeded,
        error: None,
        ended_at: chrono::Utc::now(),
    });
    s.write(&RunRef::unfenced(id, FLOW), writes).await.unwrap();
}

/// A manual clock for what the ledger orders by time. The store stamps
/// each write with the wall clock to the millisecond, so writes a test
/// makes one after another may share a timestamp; the clock re-dates what
/// was just written a second after what it dated before (starting an hour
/// ago: recent, so pruning by age keeps it).
struct Clock {
    next: chrono::DateTime<chrono::Utc>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            next: chrono::Utc::now() - chrono::Duration::hours(1),
        }
    }

    fn tick(&mut self) -> String {
        self.next += chrono::Duration::seconds(1);
        sluice_store::timestamp(self.next)
    }

    /// Dates run `id` and its items now.
    async fn run(&mut self, db: &Db, id: &str) {
        let t = self.tick();
        db.sql(&format!(
            "UPDATE runs SET started_at = '{t}', ended_at = '{t}' WHERE id = '{id}';
             UPDATE items SET ended_at = '{t}' WHERE run_id = '{id}';"
        ))
        .await;
    }

    /// Dates the decisions made on plan `id` now.
    async fn decisions(&mut self, db: &Db, id: &str) {
        let t = self.tick();
        db.sql(&format!(
            "UPDATE approval_decisions SET decided_at = '{t}' WHERE plan_id = '{id}'"
        ))
        .await;
    }
}

async fn the_ledger_tells_a_keys_story_oldest_first_and_survives_pruning(db: Db) {
    let s = &db.store;
    let mut clock = Clock::new();
    run_with(
        s,
        "r1",
        false,
        vec![
            keyed(
                "adopt",
                0,
                "Ann@X.com",
                ItemStatus::Succeeded,
                json!({"action": "adopted", "procore_id": 7}),
            ),
            keyed(
                "adopt",
                1,
                "bob@x.com",
                ItemStatus::Succeeded,
                json!({"action": "adopted"}),
            ),
        ],
    )
    .await;
    clock.run(&db, "r1").await;
    run_with(
        s,
        "r2",
        false,
        vec![keyed(
            "deactivate",
            0,
            "ann@x.com",
            ItemStatus::Waiting,
            Value::Null,
        )],
    )
    .await;
    let plan = s
        .record_gate(&gate("r2", &["ann@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    clock.run(&db, "r2").await;
    s.decide(&decide(
        &plan.id,
        &["ANN@x.com"],
        Decision::Approved,
        "alice",
    ))
    .await
    .unwrap();
    clock.decisions(&db, &plan.id).await;
    run_with(
        s,
        "r3",
        true,
        vec![keyed(
            "deactivate",
            0,
            "ann@x.com",
            ItemStatus::Succeeded,
            json!({"action": "would deactivate"}),
        )],
    )
    .await;
    clock.run(&db, "r3").await;
    run_with(
        s,
        "r4",
        false,
        vec![keyed(
            "deactivate",
            0,
            "ann@x.com",
            ItemStatus::Succeeded,
            json!({"action": "deactivated", "procore_id": 7}),
        )],
    )
    .await;

    clock.run(&db, "r4").await;
    let story = s.ledger("aNN@x.COM", None).await.unwrap();
    let lines: Vec<String> = story
        .iter()
        .map(|e| match &e.event {
            LedgerEvent::Item {
                run_id,
                status,
                dry_run,
                ..
            } => {
                format!(
                    "{} {run_id} {status}{}",
                    e.step,
                    if *dry_run { " (dry)" } else { "" }
                )
            }
            LedgerEvent::Decision { decision, by, .. } => format!("{} {decision} by {by}", e.step),
            LedgerEvent::Closed { run_id, .. } => format!("{} closed by {run_id}", e.step),
        })
        .collect();
    assert_eq!(
        lines,
        [
            "adopt r1 succeeded",
            "deactivate r2 waiting",
            "deactivate approved by alice",
            "deactivate r3 succeeded (dry)",
            "deactivate r4 succeeded",
        ]
    );
    assert_eq!(story[0].key, "Ann@X.com", "the key as that entry wrote it");
    let LedgerEvent::Item { output, .. } = &story[4].event else {
        panic!("{story:?}")
    };
    assert_eq!(output.as_ref().unwrap()["action"], "deactivated");
    assert!(story.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(
        s.ledger("ann@x.com", Some("other"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.ledger("nobody@x.com", None).await.unwrap().is_empty());

    // Runs r1 and r2 are pruned: the ledger keeps the rest, and the
    // decision (its plan is still open).
    db.sql(
        "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z', ended_at = '2020-01-01T00:01:00.000Z'
         WHERE id IN ('r1', 'r2')",
    )
    .await;
    let pruned = s
        .prune_older_than(Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(pruned.len(), 2);
    let after: Vec<&str> = s
        .ledger("ann@x.com", None)
        .await
        .unwrap()
        .iter()
        .map(|e| match &e.event {
            LedgerEvent::Item { run_id, .. } => run_id.as_str(),
            LedgerEvent::Decision { .. } => "decision",
            LedgerEvent::Closed { .. } => "closed",
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|s| match s {
            "decision" => "decision",
            "closed" => "closed",
            "r3" => "r3",
            "r4" => "r4",
            other => panic!("pruned run {other} still in the ledger"),
        })
        .collect();
    assert_eq!(after, ["decision", "r3", "r4"]);
    // A closed plan goes with the runs of its time.
    s.settle_items(
        &plan.id,
        &[Settled {
            key: "ann@x.com".into(),
            status: ItemStatus::Succeeded,
            run_id: "r4".into(),
            error: None,
        }],
    )
    .await
    .unwrap();
    db.sql(&format!(
        "UPDATE approval_plans SET closed_at = '2020-01-01T00:00:00.000Z' WHERE id = '{}'",
        plan.id
    ))
    .await;
    s.prune_older_than(Duration::from_secs(86_400))
        .await
        .unwrap();
    assert!(s.plan_detail(&plan.id).await.unwrap().is_none());
    assert_eq!(s.ledger("ann@x.com", None).await.unwrap().len(), 2);
}

async fn the_ledger_lists_each_keys_latest_state(db: Db) {
    let s = &db.store;
    let mut clock = Clock::new();
    run_with(
        s,
        "r1",
        false,
        vec![
            keyed(
                "adopt",
                0,
                "c@x.com",
                ItemStatus::Succeeded,
                json!({"action": "adopted"}),
            ),
            keyed(
                "adopt",
                1,
                "A@x.com",
                ItemStatus::Succeeded,
                json!({"action": "adopted"}),
            ),
            keyed(
                "adopt",
                2,
                "b@x.com",
                ItemStatus::Succeeded,
                json!({"action": "adopted"}),
            ),
        ],
    )
    .await;
    clock.run(&db, "r1").await;
    run_with(
        s,
        "r2",
        false,
        vec![keyed(
            "deactivate",
            0,
            "a@x.com",
            ItemStatus::Waiting,
            Value::Null,
        )],
    )
    .await;
    let plan = s
        .record_gate(&gate("r2", &["a@x.com"], &[]))
        .await
        .unwrap()
        .unwrap();
    s.decide(&decide(&plan.id, &[], Decision::Approved, "alice"))
        .await
        .unwrap();
    clock.run(&db, "r2").await;
    // A dry run changes nobody's state.
    run_with(
        s,
        "r3",
        true,
        vec![keyed(
            "deactivate",
            0,
            "b@x.com",
            ItemStatus::Succeeded,
            json!({"action": "would deactivate"}),
        )],
    )
    .await;
    let first = s
        .ledger_keys(&LedgerKeysQuery {
            flow: FLOW.into(),
            after: None,
            limit: 2,
        })
        .await
        .unwrap();
    assert!(first.more);
    let shown: Vec<(&str, &str, ItemStatus)> = first
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.step.as_str(), k.status))
        .collect();
    assert_eq!(
        shown,
        [
            ("a@x.com", "deactivate", ItemStatus::Waiting),
            ("b@x.com", "adopt", ItemStatus::Succeeded),
        ]
    );
    let a = &first.keys[0];
    assert_eq!(a.approvals.len(), 1);
    assert_eq!(a.approvals[0].state, PlanItemState::Approved);
    assert_eq!(a.approvals[0].by.as_deref(), Some("alice"));
    let rest = s
        .ledger_keys(&LedgerKeysQuery {
            flow: FLOW.into(),
            after: Some("B@x.com".into()),
            limit: 2,
        })
        .await
        .unwrap();
    assert!(!rest.more);
    assert_eq!(rest.keys.len(), 1);
    assert_eq!(rest.keys[0].key, "c@x.com");
}

async fn runs_show_what_their_gates_did(db: Db) {
    let s = &db.store;
    let record = GateRecord {
        step: STEP.into(),
        plan_id: Some("ap-123abc".into()),
        reason: Some("approval is always required".into()),
        approved: 2,
        unapproved: 0,
        waiting: 3,
        rejected: 1,
        closed: 1,
        revision: Some(2),
        // What a run given `--only` printed: kept, so that `runs show`
        // gives the command that approves only what the run showed.
        approve: Some("sluice approve ap-123abc --revision 2 --only 'a b@x.com'".into()),
    };
    let writes = vec![
        HistoryWrite::StartStep(StepStart {
            step: STEP.into(),
            component: "deactivate".into(),
            input: Value::Null,
            items_total: Some(6),
            started_at: chrono::Utc::now(),
        }),
        HistoryWrite::Gate(record.clone()),
        HistoryWrite::FinishStep(StepEnd {
            step: STEP.into(),
            component: "deactivate".into(),
            status: StepStatus::Succeeded,
            output: None,
            error: None,
            connections: Value::Null,
            duration_ms: 1,
            attempts: None,
            ended_at: chrono::Utc::now(),
        }),
    ];
    run_with(s, "r1", false, writes).await;
    let detail = s.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(detail.gates, [record]);
    let text = sluice_store::render_run_detail(&detail);
    assert!(text.contains("ap-123abc"), "{text}");
    assert!(
        text.contains("`sluice approve ap-123abc --revision 2 --only 'a b@x.com'`"),
        "{text}"
    );
}
