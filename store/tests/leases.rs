//! Replica coordination in the store, each test once per backend from one
//! body: a firing claimed by exactly one of many at once, a lease held,
//! renewed, freed and taken over when it expires (its run recorded
//! interrupted) or at once when its holder on this host is gone (before
//! its run wrote anything, too), writes fenced by the lease's number, and
//! migrations when
//! several stores (each with its own connections, as replicas have) open
//! an empty database at once. The same with separate processes is
//! `sqlite_open.rs` (SQLite) and the replicas test of `sluice serve`
//! (PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{Db, Kind};
use sluice_store::{
    Acquired, Claim, Firing, HistoryWrite, Lapse, LeaseGrant, NewRun, RunRef, RunStatus, StepStart,
    StepStatus, Store, StoreError, Trigger,
};

const MINUTE: Duration = Duration::from_secs(60);

fn grant(flow: &str, replica: &str, run: &str) -> LeaseGrant {
    LeaseGrant {
        flow: flow.into(),
        replica: replica.into(),
        token: format!("{replica}-token"),
        host: None,
        pid: None,
        run_id: run.into(),
    }
}

fn new_run(id: &str, replica: &str) -> NewRun {
    NewRun {
        id: id.into(),
        flow: "f".into(),
        flow_file: "f.toml".into(),
        trigger: Trigger::Schedule,
        dry_run: false,
        output_dir: String::new(),
        replica: Some(replica.into()),
        started_at: chrono::Utc::now(),
    }
}

const TEN_MINUTES: Duration = Duration::from_secs(600);

async fn granted(s: &Store, g: &LeaseGrant, ttl: Duration) -> i64 {
    match s.acquire_lease(g, ttl).await.unwrap() {
        Acquired::Granted { fence, .. } => fence,
        held => panic!("expected the lease, got {held:?}"),
    }
}

both!(
    a_firing_is_claimed_by_exactly_one_of_many_at_once,
    a_lease_is_held_renewed_freed_and_numbered,
    an_expired_lease_is_taken_over_and_its_run_recorded_interrupted,
    a_lease_whose_holder_on_this_host_is_gone_is_taken_over_at_once,
    a_lease_naming_a_gone_process_is_taken_over_even_before_its_run_is_written,
    writes_of_a_run_whose_lease_moved_on_are_refused,
    stores_opening_an_empty_database_at_once_migrate_it_once,
    a_store_a_newer_sluice_migrated_since_gives_no_firing_or_lease,
);

/// A replica left on the old version in a rolling upgrade kept claiming
/// firings and running them with the old rules, while its `/readyz` said
/// the schema was newer: it now takes neither a firing nor a lease.
async fn a_store_a_newer_sluice_migrated_since_gives_no_firing_or_lease(db: Db) {
    let at = Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).unwrap();
    let firing = |run: &str| Firing {
        flow: "f".into(),
        scheduled_at: at,
        replica: "old".into(),
        run_id: run.into(),
    };
    // Before the upgrade, both are had.
    assert!(matches!(
        db.store.claim_firing(&firing("r1")).await.unwrap(),
        Claim::Won
    ));
    let fence = granted(&db.store, &grant("f", "old", "r1"), MINUTE).await;
    db.store.release_lease("f", fence).await.unwrap();
    // A newer Sluice migrates the database while this store stays open.
    match db.kind {
        Kind::Sqlite => db.sql("PRAGMA user_version = 999").await,
        Kind::Postgres => {
            db.sql("INSERT INTO sluice_schema (version, applied_by) VALUES (999, 'newer')")
                .await
        }
    }
    let later = Firing {
        scheduled_at: at + chrono::Duration::minutes(1),
        ..firing("r2")
    };
    let refused = db.store.claim_firing(&later).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::TooNew { found: 999, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("upgrade Sluice"), "{refused}");
    let refused = db
        .store
        .acquire_lease(&grant("f", "old", "r2"), MINUTE)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::TooNew { found: 999, .. }),
        "{refused}"
    );
    // The firing is left for the upgraded replicas to claim.
    assert_eq!(
        db.count("SELECT count(*) FROM firings WHERE run_id = 'r2'")
            .await,
        0
    );
}

async fn a_firing_is_claimed_by_exactly_one_of_many_at_once(db: Db) {
    let at = Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).unwrap();
    let mut tasks = Vec::new();
    for r in 0..6 {
        // Each replica with a store of its own, as separate processes have.
        let store = db.reopen().await;
        tasks.push(tokio::spawn(async move {
            let firing = Firing {
                flow: "f".into(),
                scheduled_at: at,
                replica: format!("r{r}"),
                run_id: format!("run-{r}"),
            };
            (r, store.claim_firing(&firing).await.unwrap())
        }));
    }
    let mut won = Vec::new();
    let mut lost_to = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (r, Claim::Won) => won.push(format!("r{r}")),
            (_, Claim::Lost { replica }) => lost_to.push(replica),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(lost_to.len(), 5);
    assert!(lost_to.iter().all(|r| *r == won[0]), "{lost_to:?}");
    // The next second is a firing of its own; another flow's too.
    let next = Firing {
        flow: "f".into(),
        scheduled_at: at + chrono::Duration::seconds(1),
        replica: "r9".into(),
        run_id: "run-9".into(),
    };
    assert_eq!(db.store.claim_firing(&next).await.unwrap(), Claim::Won);
    let other = Firing {
        flow: "g".into(),
        ..next.clone()
    };
    assert_eq!(db.store.claim_firing(&other).await.unwrap(), Claim::Won);
    assert_eq!(db.count("SELECT count(*) FROM firings").await, 3);
}

async fn a_lease_is_held_renewed_freed_and_numbered(db: Db) {
    let s = &db.store;
    let first = granted(s, &grant("f", "a", "r1"), MINUTE).await;
    assert_eq!(first, 1);
    // Held: another replica, or a second run here, is told who has it.
    match s
        .acquire_lease(&grant("f", "b", "r2"), MINUTE)
        .await
        .unwrap()
    {
        Acquired::Held {
            replica,
            run_id,
            expires_at,
        } => {
            assert_eq!((replica.as_str(), run_id.as_deref()), ("a", Some("r1")));
            // When it lapses unless renewed: a minute from its grant.
            let lapses = chrono::DateTime::parse_from_rfc3339(&expires_at).unwrap();
            let left = lapses.signed_duration_since(chrono::Utc::now());
            assert!(
                left > chrono::Duration::seconds(30) && left <= chrono::Duration::seconds(60),
                "{expires_at}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Another flow's lease is its own.
    assert_eq!(granted(s, &grant("g", "b", "r3"), MINUTE).await, 1);
    assert!(s.renew_lease("f", first, MINUTE).await.unwrap());
    assert!(!s.renew_lease("f", first + 1, MINUTE).await.unwrap());
    // A stale release changes nothing; the holder's frees it.
    s.release_lease("f", first + 7).await.unwrap();
    assert!(matches!(
        s.acquire_lease(&grant("f", "b", "r2"), MINUTE)
            .await
            .unwrap(),
        Acquired::Held { .. }
    ));
    s.release_lease("f", first).await.unwrap();
    assert!(!s.renew_lease("f", first, MINUTE).await.unwrap());
    let second = granted(s, &grant("f", "b", "r2"), MINUTE).await;
    assert_eq!(second, first + 1);
    // Nothing had expired: the sweep takes nothing.
    assert!(s.take_over_expired("c", MINUTE).await.unwrap().is_empty());
}

async fn an_expired_lease_is_taken_over_and_its_run_recorded_interrupted(db: Db) {
    let s = &db.store;
    // A lease of no time has expired at once: no clock needs to be waited for.
    let fence = granted(s, &grant("f", "a", "r1"), Duration::ZERO).await;
    let run = RunRef {
        id: "r1".into(),
        flow: "f".into(),
        fence: Some(fence),
    };
    // Last heard of two minutes ago, when its step started.
    let heard = chrono::Utc::now() - chrono::Duration::seconds(120);
    let mut started = new_run("r1", "a");
    started.started_at = heard - chrono::Duration::seconds(5);
    let writes = vec![
        HistoryWrite::StartRun(started),
        HistoryWrite::StartStep(StepStart {
            step: "long".into(),
            component: "c".into(),
            input: serde_json::json!({}),
            items_total: None,
            started_at: heard,
        }),
    ];
    s.write(&run, writes).await.unwrap();
    let taken = s.take_over_expired("b", TEN_MINUTES).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        (taken[0].run_id.as_deref(), taken[0].from_replica.as_str()),
        (Some("r1"), "a")
    );
    assert_eq!(taken[0].fence, fence + 1);
    let d = s.run_detail("r1").await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Interrupted);
    let error = d.run.error.unwrap();
    assert!(
        error.contains("replica a stopped renewing the flow's lease")
            && error.contains("recorded as interrupted by replica b"),
        "{error}"
    );
    assert_eq!(d.steps[0].status, StepStatus::Interrupted);
    // Ended when it was last heard of, not when the lease was taken over:
    // its step started after the holder's last renewal (the replicas'
    // leases last ten minutes).
    let ended = |t: Option<&String>| {
        chrono::DateTime::parse_from_rfc3339(t.unwrap())
            .unwrap()
            .timestamp()
    };
    assert_eq!(ended(d.run.ended_at.as_ref()), heard.timestamp());
    assert_eq!(ended(d.steps[0].ended_at.as_ref()), heard.timestamp());
    // Taken once: the lease is free now, and the next run takes it.
    assert!(s.take_over_expired("c", MINUTE).await.unwrap().is_empty());
    assert_eq!(granted(s, &grant("f", "c", "r2"), MINUTE).await, fence + 2);
    // An expired lease found by the next taker is settled the same way.
    let h = granted(s, &grant("h", "a", "r3"), Duration::ZERO).await;
    let r3 = RunRef {
        id: "r3".into(),
        flow: "h".into(),
        fence: Some(h),
    };
    let mut r3_new = new_run("r3", "a");
    r3_new.flow = "h".into();
    s.write_one(&r3, HistoryWrite::StartRun(r3_new))
        .await
        .unwrap();
    match s
        .acquire_lease(&grant("h", "b", "r4"), MINUTE)
        .await
        .unwrap()
    {
        Acquired::Granted { fence, took_over } => {
            assert_eq!(fence, h + 1);
            let t = took_over.unwrap();
            assert_eq!(
                (t.run_id.as_deref(), t.from_replica.as_str()),
                (Some("r3"), "a")
            );
        }
        other => panic!("{other:?}"),
    }
    let r3 = s.run_detail("r3").await.unwrap().unwrap();
    assert_eq!(r3.run.status, RunStatus::Interrupted);
    // A long step records nothing until it ends; its holder renewing the
    // lease is what says it was alive: the run ends at the last renewal
    // (with leases of no time here, when the lease expired), not at the
    // step's start five minutes earlier.
    let k = granted(s, &grant("k", "a", "r5"), Duration::ZERO).await;
    let mut r5 = new_run("r5", "a");
    r5.flow = "k".into();
    r5.started_at = chrono::Utc::now() - chrono::Duration::seconds(300);
    let r5_ref = RunRef {
        id: "r5".into(),
        flow: "k".into(),
        fence: Some(k),
    };
    s.write_one(&r5_ref, HistoryWrite::StartRun(r5))
        .await
        .unwrap();
    let before = chrono::Utc::now().timestamp();
    s.take_over_expired("b", Duration::ZERO).await.unwrap();
    let r5 = s.run_detail("r5").await.unwrap().unwrap();
    assert_eq!(r5.run.status, RunStatus::Interrupted);
    assert!(
        ended(r5.run.ended_at.as_ref()) >= before - 5,
        "{:?}",
        r5.run
    );
}

/// Takes `flow`'s lease for a minute under `token` (naming no process, as
/// a lease written before leases named theirs) and starts its run `run`
/// with a step; returns the fencing number.
async fn holding(db: &Db, flow: &str, run: &str, token: &str) -> i64 {
    let g = LeaseGrant {
        token: token.into(),
        ..grant(flow, "a", run)
    };
    holding_as(db, &g).await
}

/// Takes the lease `g` asks for, for a minute, and starts its run with a
/// step; returns the fencing number.
async fn holding_as(db: &Db, g: &LeaseGrant) -> i64 {
    let fence = granted(&db.store, g, MINUTE).await;
    let (flow, run) = (g.flow.as_str(), g.run_id.as_str());
    let at = RunRef {
        id: run.into(),
        flow: flow.into(),
        fence: Some(fence),
    };
    let start = NewRun {
        flow: flow.into(),
        ..new_run(run, "a")
    };
    let step = StepStart {
        step: "long".into(),
        component: "c".into(),
        input: serde_json::json!({}),
        items_total: None,
        started_at: chrono::Utc::now(),
    };
    let writes = vec![HistoryWrite::StartRun(start), HistoryWrite::StartStep(step)];
    db.store.write(&at, writes).await.unwrap();
    fence
}

async fn a_lease_whose_holder_on_this_host_is_gone_is_taken_over_at_once(db: Db) {
    let s = &db.store;
    let me = sluice_store::process::this_process();
    // The run and its lease were written by an earlier process on this host
    // with this pid (a restarted container's pid 1): known to be gone.
    let fence = holding(&db, "f", "r1", "earlier").await;
    db.sql("UPDATE runs SET process_token = 'earlier' WHERE id = 'r1'")
        .await;
    match s
        .acquire_lease(&grant("f", "b", "r2"), MINUTE)
        .await
        .unwrap()
    {
        Acquired::Granted {
            fence: next,
            took_over,
        } => {
            assert_eq!(next, fence + 1);
            let t = took_over.unwrap();
            assert_eq!(
                (t.run_id.as_deref(), t.from_replica.as_str(), t.fence),
                (Some("r1"), "a", fence + 1)
            );
            let pid = i64::from(me.pid);
            assert_eq!(t.cause, Lapse::HolderGone { pid });
        }
        other => panic!("{other:?}"),
    }
    // Recorded, not only read, as interrupted: the stored row says so.
    assert_eq!(
        db.text("SELECT status FROM runs WHERE id = 'r1'").await,
        "interrupted"
    );
    let d = s.run_detail("r1").await.unwrap().unwrap();
    let error = d.run.error.unwrap();
    assert!(
        error.contains(&format!("(pid {}, on this host) ended", me.pid))
            && error.contains(
                "recorded as interrupted by replica b, which took the lease over at once"
            ),
        "{error}"
    );
    assert_eq!(d.steps[0].status, StepStatus::Interrupted);

    // A lease that names no process (written before leases did) is judged
    // by its run's writer: anything not known to be gone keeps it until it
    // expires: a run of this very process, of another host, a run whose
    // writer is not the process the lease names, and a run not written yet.
    let held = |flow: &'static str| async move {
        let asked = s.acquire_lease(&grant(flow, "b", "later"), MINUTE).await;
        assert!(
            matches!(asked.as_ref().unwrap(), Acquired::Held { .. }),
            "{flow}: {asked:?}"
        );
    };
    holding(&db, "alive", "r3", &me.token).await;
    held("alive").await;
    holding(&db, "elsewhere", "r4", "earlier").await;
    db.sql(
        "UPDATE runs SET process_token = 'earlier', host = 'another-host', pid = 999999999
         WHERE id = 'r4'",
    )
    .await;
    held("elsewhere").await;
    holding(&db, "not-its-run", "r5", "another").await;
    db.sql("UPDATE runs SET process_token = 'earlier' WHERE id = 'r5'")
        .await;
    held("not-its-run").await;
    granted(s, &grant("unwritten", "a", "r6"), MINUTE).await;
    held("unwritten").await;
    for run in ["r3", "r4", "r5"] {
        let status = db
            .text(&format!("SELECT status FROM runs WHERE id = '{run}'"))
            .await;
        assert_eq!(status, "running", "{run}");
    }
}

/// A lease names its holder's process (host, pid, token), so a holder gone
/// on this host is seen gone whether it died mid-run or after it took the
/// lease but before its run wrote anything: the next asker takes the lease
/// over at once either way.
async fn a_lease_naming_a_gone_process_is_taken_over_even_before_its_run_is_written(db: Db) {
    let s = &db.store;
    let me = sluice_store::process::this_process();
    let pid = i64::from(me.pid);
    // An earlier process on this host with this pid (a restarted
    // container's pid 1): known to be gone.
    let named = |flow: &str, run: &str, token: &str, host: &str| LeaseGrant {
        token: token.into(),
        host: Some(host.into()),
        pid: Some(pid),
        ..grant(flow, "a", run)
    };
    let take = |flow: &'static str| async move {
        match s
            .acquire_lease(&grant(flow, "b", "next"), MINUTE)
            .await
            .unwrap()
        {
            Acquired::Granted { took_over, .. } => took_over.unwrap(),
            other => panic!("{flow}: {other:?}"),
        }
    };

    // Killed before its run wrote anything: taken over at once, with no
    // record to close (and none made up).
    let fence = granted(s, &named("early", "r1", "earlier", &me.host), MINUTE).await;
    let t = take("early").await;
    assert_eq!(
        (t.run_id.as_deref(), t.recorded, t.cause, t.fence),
        (Some("r1"), false, Lapse::HolderGone { pid }, fence + 1)
    );
    assert_eq!(db.count("SELECT count(*) FROM runs").await, 0);

    // Killed mid-run: the same, and its run is recorded interrupted.
    let fence = holding_as(&db, &named("late", "r2", "earlier", &me.host)).await;
    let t = take("late").await;
    assert_eq!(
        (t.run_id.as_deref(), t.recorded, t.cause, t.fence),
        (Some("r2"), true, Lapse::HolderGone { pid }, fence + 1)
    );
    assert_eq!(
        db.text("SELECT status FROM runs WHERE id = 'r2'").await,
        "interrupted"
    );

    // Not known to be gone, written or not: held until it expires. This
    // very process, and a process of another host.
    let held = |flow: &'static str| async move {
        let asked = s.acquire_lease(&grant(flow, "b", "later"), MINUTE).await;
        assert!(
            matches!(asked.as_ref().unwrap(), Acquired::Held { .. }),
            "{flow}: {asked:?}"
        );
    };
    granted(s, &LeaseGrant::for_this_process("alive", "a", "r3"), MINUTE).await;
    held("alive").await;
    granted(
        s,
        &named("elsewhere", "r4", "earlier", "another-host"),
        MINUTE,
    )
    .await;
    held("elsewhere").await;
}

async fn writes_of_a_run_whose_lease_moved_on_are_refused(db: Db) {
    let s = &db.store;
    let fence = granted(s, &grant("f", "a", "r1"), Duration::ZERO).await;
    let stale = RunRef {
        id: "r1".into(),
        flow: "f".into(),
        fence: Some(fence),
    };
    s.write_one(&stale, HistoryWrite::StartRun(new_run("r1", "a")))
        .await
        .unwrap();
    s.take_over_expired("b", MINUTE).await.unwrap();
    let next = granted(s, &grant("f", "b", "r2"), MINUTE).await;
    let owner = RunRef {
        id: "r2".into(),
        flow: "f".into(),
        fence: Some(next),
    };
    s.write_one(&owner, HistoryWrite::StartRun(new_run("r2", "b")))
        .await
        .unwrap();
    // The paused replica wakes and tries to finish its run, start a new
    // one, or write into the new owner's run: all refused.
    for (target, write) in [
        (
            stale.clone(),
            HistoryWrite::FinishRun {
                status: RunStatus::Succeeded,
                error: None,
                ended_at: chrono::Utc::now(),
            },
        ),
        (
            RunRef {
                id: "r9".into(),
                ..stale.clone()
            },
            HistoryWrite::StartRun(new_run("r9", "a")),
        ),
        (
            RunRef {
                id: "r2".into(),
                ..stale.clone()
            },
            HistoryWrite::FinishRun {
                status: RunStatus::Failed,
                error: Some("stale".into()),
                ended_at: chrono::Utc::now(),
            },
        ),
    ] {
        let err = s.write_one(&target, write).await.unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
        assert!(err.to_string().contains("lease held under fence"), "{err}");
    }
    let r1 = s.run_detail("r1").await.unwrap().unwrap().run;
    assert_eq!(r1.status, RunStatus::Interrupted);
    assert_eq!(r1.fence, Some(fence));
    let r2 = s.run_detail("r2").await.unwrap().unwrap().run;
    assert_eq!((r2.status, r2.fence), (RunStatus::Running, Some(next)));
    assert!(s.run_detail("r9").await.unwrap().is_none());
    // The owner's own writes land.
    let end = HistoryWrite::FinishRun {
        status: RunStatus::Succeeded,
        error: None,
        ended_at: chrono::Utc::now(),
    };
    s.write_one(&owner, end).await.unwrap();
}

async fn stores_opening_an_empty_database_at_once_migrate_it_once(db: Db) {
    // A second, empty database of the same kind (its folder removed when
    // the test ends).
    let dir = tempfile::tempdir().unwrap();
    let location = match db.kind {
        Kind::Sqlite => sluice_store::Location::Sqlite(sluice_store::path_in(dir.path())),
        Kind::Postgres => sluice_store::Location::Postgres(
            sluice_store::testing::TempPostgres::shared()
                .new_database()
                .await,
        ),
    };
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let location = location.clone();
            tokio::spawn(async move { Store::open(&location).await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap().unwrap();
        assert!(store.schema_version().await.unwrap() > 0);
    }
    if db.kind == Kind::Postgres {
        let store = Store::open(&location).await.unwrap();
        let version = store.schema_version().await.unwrap();
        assert_eq!(version, sluice_store::postgres::schema::SCHEMA_VERSION);
    }
}
