//! Replicas of `sluice serve` sharing one store: which one takes a firing,
//! and the lease a run holds while it goes (the protocol is the store's:
//! [`sluice_store::lease`]).
//!
//! - A firing is run by the replica whose claim lands; the others leave it.
//! - A run holds its flow's lease, renewed every third of the lease's time
//!   ([`Replica::renew_every`]). If a renewal finds the lease taken over,
//!   or none succeeds for a whole lease time (the store unreachable), the
//!   run is cancelled — no new step or item starts — since another replica
//!   may own the flow by then, and the store refuses its writes anyway.
//! - A sweep, every third of the lease's time, takes over the expired
//!   leases of replicas that died or stalled, recording their runs
//!   interrupted, so the next firing of those flows runs normally.
//! - On SQLite the same rows serve the processes of one host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_store::{Acquired, Claim, Firing, LeaseGrant, Store, StoreError};
use tokio::task::JoinHandle;

/// A lease held by a run of this replica.
struct Held {
    flow: String,
    fence: i64,
    renewal: JoinHandle<()>,
}

/// This replica: its name, its store, and the leases its runs hold.
pub struct Replica {
    store: Store,
    pub name: String,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    held: Mutex<HashMap<String, Held>>,
    say: Arc<dyn Fn(String) + Send + Sync>,
}

/// Why a run cannot start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy(pub String);

impl Replica {
    pub fn new(
        store: Store,
        name: String,
        ttl: Duration,
        say: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Replica {
        Replica {
            store,
            name,
            ttl,
            held: Mutex::new(HashMap::new()),
            say,
        }
    }

    /// How often a held lease is renewed and expired ones are swept: a
    /// third of its time, so two renewals may fail before it lapses.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }

    /// Whether this replica takes the firing of `flow` at `at`, to run it
    /// as `run_id`. A store that cannot be reached takes nothing: running
    /// unclaimed could run a firing twice.
    pub async fn claim(&self, flow: &str, at: DateTime<Utc>, run_id: &str) -> bool {
        let firing = Firing {
            flow: flow.to_string(),
            scheduled_at: at,
            replica: self.name.clone(),
            run_id: run_id.to_string(),
        };
        match self.store.claim_firing(&firing).await {
            Ok(Claim::Won) => true,
            Ok(Claim::Lost { .. }) => false,
            Err(e) => {
                (self.say)(format!(
                    "✗ {flow}: the firing at {at} could not be claimed ({e}); it is not run here"
                ));
                false
            }
        }
    }

    /// Takes `flow`'s lease for `run_id` and starts renewing it; `cancel`
    /// stops the run if the lease is lost. The fencing number, or why not.
    pub async fn begin(
        &self,
        flow: &str,
        run_id: &str,
        cancel: Arc<AtomicBool>,
    ) -> Result<i64, Busy> {
        let grant = LeaseGrant {
            flow: flow.to_string(),
            replica: self.name.clone(),
            token: sluice_store::process::this_process().token.clone(),
            run_id: run_id.to_string(),
        };
        let fence = match self.store.acquire_lease(&grant, self.ttl).await {
            Ok(Acquired::Granted { fence, took_over }) => {
                if let Some(t) = took_over {
                    (self.say)(took_over_text(&t, &self.name));
                }
                fence
            }
            Ok(Acquired::Held { replica, run_id }) => {
                let run = run_id.map(|r| format!(" (run {r})")).unwrap_or_default();
                return Err(Busy(format!(
                    "the previous run is still going on replica {replica}{run}"
                )));
            }
            Err(e) => return Err(Busy(format!("the flow's lease could not be taken ({e})"))),
        };
        let renewal = tokio::spawn(renew(
            self.store.clone(),
            flow.to_string(),
            fence,
            self.ttl,
            self.renew_every(),
            cancel,
            self.say.clone(),
        ));
        lock(&self.held).insert(
            run_id.to_string(),
            Held {
                flow: flow.to_string(),
                fence,
                renewal,
            },
        );
        Ok(fence)
    }

    /// The fencing number of a run's lease, while it holds one.
    pub fn fence_of(&self, run_id: &str) -> Option<i64> {
        lock(&self.held).get(run_id).map(|h| h.fence)
    }

    /// Stops renewing a run's lease and frees it. Call it once the run's
    /// history is written: a write still queued after the next owner took
    /// the lease would be refused.
    pub async fn end(&self, run_id: &str) {
        let Some(held) = lock(&self.held).remove(run_id) else {
            return;
        };
        held.renewal.abort();
        if let Err(e) = self.store.release_lease(&held.flow, held.fence).await {
            (self.say)(format!(
                "warning: {}: the lease could not be freed ({e}); it frees itself in {}",
                held.flow,
                humantime::format_duration(self.ttl)
            ));
        }
    }

    /// Frees every lease still held (the host is stopping).
    pub async fn end_all(&self) {
        let runs: Vec<String> = lock(&self.held).keys().cloned().collect();
        for run in runs {
            self.end(&run).await;
        }
    }

    /// Takes over expired leases now and then, until aborted.
    pub fn sweep(self: &Arc<Self>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(me.renew_every());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match me.store.take_over_expired(&me.name).await {
                    Ok(taken) => {
                        for t in &taken {
                            (me.say)(took_over_text(t, &me.name));
                        }
                    }
                    Err(e) => {
                        (me.say)(format!("warning: expired leases could not be checked: {e}"))
                    }
                }
            }
        })
    }
}

fn took_over_text(t: &sluice_store::Takeover, me: &str) -> String {
    match &t.run_id {
        Some(run) => format!(
            "⚠ {}: replica {} stopped renewing its lease (it expired at {}); its run {run} is recorded as interrupted by {me}",
            t.flow, t.from_replica, t.expired_at
        ),
        None => format!(
            "⚠ {}: replica {} stopped renewing its lease (it expired at {}); taken over by {me}",
            t.flow, t.from_replica, t.expired_at
        ),
    }
}

/// Renews a lease until aborted; cancels the run when the lease is lost,
/// or when no renewal has succeeded for a whole lease time.
async fn renew(
    store: Store,
    flow: String,
    fence: i64,
    ttl: Duration,
    every: Duration,
    cancel: Arc<AtomicBool>,
    say: Arc<dyn Fn(String) + Send + Sync>,
) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let lost = match store.renew_lease(&flow, fence, ttl).await {
            Ok(true) => {
                last_ok = tokio::time::Instant::now();
                continue;
            }
            Ok(false) => "another replica took its lease over".to_string(),
            Err(e) if last_ok.elapsed() >= ttl => unreachable_text(&e, ttl),
            Err(_) => continue,
        };
        cancel.store(true, Ordering::SeqCst);
        say(format!(
            "✗ {flow}: {lost}; the run stops here (nothing new starts) and its record is left to the flow's new owner"
        ));
        return;
    }
}

fn unreachable_text(e: &StoreError, ttl: Duration) -> String {
    format!(
        "its lease could not be renewed for {} ({e})",
        humantime::format_duration(ttl)
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
