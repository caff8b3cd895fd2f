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
//! - Before each step or item starts, and before each write request its
//!   connections send, the run asks its [`RunGuard`]: if the lease has not
//!   been renewed for its whole time (the process was paused, say), the
//!   store is asked again first, so a replica resumed after another took
//!   its flow over stops before it acts, not a renewal later.
//! - A sweep, every third of the lease's time, takes over the expired
//!   leases of replicas that died or stalled, recording their runs
//!   interrupted, so the next firing of those flows runs normally.
//! - A run that asks for a lease whose holder's process on this host is
//!   known to be gone (killed mid-run, or before its run wrote anything:
//!   the lease names its process) takes it over at once, the same way,
//!   instead of waiting for it to expire.
//! - On SQLite the same rows serve the processes of one host.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_store::{Acquired, Claim, Firing, Lapse, LeaseGrant, Store};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::run::RunGuard;

/// A lease held by a run of this replica.
struct Held {
    hold: Arc<Hold>,
    renewal: JoinHandle<()>,
}

/// One run's hold on its flow's lease: renewed in the background, and
/// checked before each step or item starts ([`RunGuard`]).
struct Hold {
    store: Store,
    flow: String,
    fence: i64,
    ttl: Duration,
    /// How often it is renewed ([`Replica::renew_every`]), and how long
    /// one renewal may take.
    every: Duration,
    /// Until when the lease is known to be ours: the last grant or
    /// renewal, counted from when it was asked, plus its time. No other
    /// replica can take it before then.
    until: Mutex<Instant>,
    /// Why the lease was lost, once it was.
    lost: Mutex<Option<String>>,
    cancel: Arc<AtomicBool>,
    say: Arc<dyn Fn(String) + Send + Sync>,
}

impl Hold {
    /// Renews the lease; `false` when another replica took it over. A
    /// store that does not answer within a renewal period (a connection
    /// left hanging, not refused) counts as failing: waiting on it would
    /// outlast the lease unnoticed.
    async fn renew(&self) -> Result<bool, String> {
        let asked = Instant::now();
        let within = self.every;
        let renewed = tokio::time::timeout(
            within,
            self.store.renew_lease(&self.flow, self.fence, self.ttl),
        )
        .await
        .map_err(|_| {
            format!(
                "the store did not answer within {}",
                humantime::format_duration(within)
            )
        })?
        .map_err(|e| e.to_string())?;
        if renewed {
            let mut until = lock(&self.until);
            *until = (*until).max(asked + self.ttl);
        }
        Ok(renewed)
    }

    /// Whether the lease may have lapsed: not renewed for its whole time.
    fn lapsed(&self) -> bool {
        Instant::now() >= *lock(&self.until)
    }

    /// The lease is lost: the run stops (said once); returns why.
    fn lose(&self, why: String) -> String {
        let mut lost = lock(&self.lost);
        if let Some(before) = &*lost {
            return before.clone();
        }
        self.cancel.store(true, Ordering::SeqCst);
        (self.say)(format!(
            "✗ {}: {why}; the run stops here (nothing new starts), as another process may hold the flow now, and its record is left to whichever process takes the flow's lease next",
            self.flow
        ));
        *lost = Some(why.clone());
        why
    }

    /// Why the lease is lost, if a renewal found out or it lapsed and the
    /// store does not renew it now.
    async fn check(&self) -> Result<(), String> {
        if let Some(why) = lock(&self.lost).clone() {
            return Err(why);
        }
        if !self.lapsed() {
            return Ok(());
        }
        match self.renew().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lose(sluice_store::lease::lost(self.fence))),
            Err(e) => Err(self.lose(unreachable_text(&e, self.ttl))),
        }
    }
}

impl RunGuard for Hold {
    fn may_go_on(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.check())
    }
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
pub struct Busy {
    /// Why, in a sentence.
    pub why: String,
    /// The run that holds the flow, when it is known.
    pub run_id: Option<String>,
}

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
    /// stops the run if the lease is lost. The fencing number and the
    /// guard the run asks before each step, or why not.
    pub async fn begin(
        &self,
        flow: &str,
        run_id: &str,
        cancel: Arc<AtomicBool>,
    ) -> Result<(i64, Arc<dyn RunGuard>), Busy> {
        let grant = LeaseGrant::for_this_process(flow, &self.name, run_id);
        let asked = Instant::now();
        let fence = match self.store.acquire_lease(&grant, self.ttl).await {
            Ok(Acquired::Granted { fence, took_over }) => {
                if let Some(t) = took_over {
                    (self.say)(took_over_text(&t, &self.name));
                }
                fence
            }
            Ok(Acquired::Held {
                replica,
                run_id,
                expires_at,
            }) => {
                return Err(Busy {
                    why: held_text(&replica, run_id.as_deref(), &expires_at),
                    run_id,
                });
            }
            Err(e) => {
                return Err(Busy {
                    why: format!("the flow's lease could not be taken ({e})"),
                    run_id: None,
                });
            }
        };
        let hold = Arc::new(Hold {
            store: self.store.clone(),
            flow: flow.to_string(),
            fence,
            ttl: self.ttl,
            every: self.renew_every(),
            until: Mutex::new(asked + self.ttl),
            lost: Mutex::new(None),
            cancel,
            say: self.say.clone(),
        });
        let renewal = tokio::spawn(renew(hold.clone()));
        lock(&self.held).insert(
            run_id.to_string(),
            Held {
                hold: hold.clone(),
                renewal,
            },
        );
        Ok((fence, hold))
    }

    /// The fencing number of a run's lease, while it holds one.
    pub fn fence_of(&self, run_id: &str) -> Option<i64> {
        lock(&self.held).get(run_id).map(|h| h.hold.fence)
    }

    /// Stops renewing a run's lease and frees it. Call it once the run's
    /// history is written: a write still queued after the next owner took
    /// the lease would be refused.
    pub async fn end(&self, run_id: &str) {
        let Some(held) = lock(&self.held).remove(run_id) else {
            return;
        };
        held.renewal.abort();
        let Hold { flow, fence, .. } = &*held.hold;
        if let Err(e) = self.store.release_lease(flow, *fence).await {
            (self.say)(format!(
                "warning: {flow}: the lease could not be freed ({e}); it frees itself in {}",
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
                match me.store.take_over_expired(&me.name, me.ttl).await {
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

/// Why a run cannot start while another holds the flow's lease. The
/// holder may be a run still going, or one whose process died without
/// letting go: the lease then lapses at its expiry, and the text says when.
fn held_text(replica: &str, run_id: Option<&str>, expires_at: &str) -> String {
    let run = run_id.map(|r| format!(" (run {r})")).unwrap_or_default();
    // The stores write RFC 3339; should a row hold something else, the
    // time is still shown, only the seconds left are not.
    let lapses = match chrono::DateTime::parse_from_rfc3339(expires_at) {
        Ok(at) => {
            let secs = at
                .signed_duration_since(chrono::Utc::now())
                .num_seconds()
                .max(1);
            format!("the lease lapses in {secs} s")
        }
        Err(_) => "the lease lapses then".to_string(),
    };
    format!(
        "replica {replica} holds the flow's lease{run} until {expires_at}: its run is still going, or it stopped without letting go and {lapses}"
    )
}

fn took_over_text(t: &sluice_store::Takeover, me: &str) -> String {
    let why = match t.cause {
        Lapse::Expired => format!(
            "replica {} stopped renewing its lease (it expired at {})",
            t.from_replica, t.expired_at
        ),
        Lapse::HolderGone { pid } => format!(
            "the process of replica {} that held its lease (pid {pid}, on this host) is gone",
            t.from_replica
        ),
    };
    match &t.run_id {
        Some(run) if t.recorded => format!(
            "⚠ {}: {why}; its run {run} is recorded as interrupted by {me}",
            t.flow
        ),
        // Its process ended before the run wrote anything, or its record
        // was already closed (ended, or recovered as interrupted).
        Some(run) => format!(
            "⚠ {}: {why}; its run {run} has no open record to close (it ended, was recovered, or never began); taken over by {me}",
            t.flow
        ),
        None => format!("⚠ {}: {why}; taken over by {me}", t.flow),
    }
}

/// Renews a lease until aborted; cancels the run when the lease is lost,
/// or when no renewal has succeeded for a whole lease time. Renewals
/// start on a fixed beat, so one that waits its whole period for a store
/// that does not answer leaves room for the next before the lease lapses.
async fn renew(hold: Arc<Hold>) {
    let mut beat = tokio::time::interval_at(Instant::now() + hold.every, hold.every);
    loop {
        beat.tick().await;
        match hold.renew().await {
            Ok(true) => continue,
            Ok(false) => hold.lose(sluice_store::lease::lost(hold.fence)),
            Err(e) if hold.lapsed() => hold.lose(unreachable_text(&e, hold.ttl)),
            Err(_) => continue,
        };
        return;
    }
}

fn unreachable_text(e: &str, ttl: Duration) -> String {
    format!(
        "its lease could not be renewed for {} ({e})",
        humantime::format_duration(ttl)
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica whose database connection hangs (not refused) used to
    /// wait on its renewal for as long as the connection stayed open, and
    /// found its lease lost a minute after another replica could have
    /// taken it. A renewal that gets no answer within a third of the
    /// lease's time counts as failed: the run stops once the lease lapses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_store_connection_stops_the_run_when_its_lease_lapses() {
        let url = sluice_store::testing::TempPostgres::shared()
            .new_database()
            .await;
        let parsed = url::Url::parse(&url).unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let relay =
            sluice_store::testing::freezable_relay(parsed.port().unwrap(), frozen.clone()).await;
        let mut through = parsed.clone();
        through.set_port(Some(relay)).unwrap();
        let store = Store::open(&through.as_str().parse().unwrap())
            .await
            .unwrap();
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let told = said.clone();
        let ttl = Duration::from_secs(3);
        let replica = Replica::new(
            store,
            "r1".into(),
            ttl,
            Arc::new(move |line: String| lock(&told).push(line)),
        );
        let cancel = Arc::new(AtomicBool::new(false));
        let (_, guard) = replica.begin("f", "run-1", cancel.clone()).await.unwrap();
        guard.may_go_on().await.unwrap();
        frozen.store(true, Ordering::SeqCst);
        let hung = Instant::now();
        while !cancel.load(Ordering::SeqCst) {
            assert!(
                hung.elapsed() < Duration::from_secs(20),
                "the run was not stopped: {:?}",
                lock(&said)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let why = tokio::time::timeout(Duration::from_secs(5), guard.may_go_on())
            .await
            .expect("the guard answers")
            .unwrap_err();
        assert!(
            why.contains("its lease could not be renewed for 3s"),
            "{why}"
        );
        assert!(why.contains("the store did not answer within 1s"), "{why}");
    }

    #[test]
    fn a_held_lease_never_claims_its_holder_is_alive() {
        let soon = sluice_store::timestamp(chrono::Utc::now() + chrono::Duration::seconds(20));
        let said = held_text("job-1", Some("r1"), &soon);
        assert!(said.contains(&format!("(run r1) until {soon}")), "{said}");
        assert!(
            said.contains("or it stopped without letting go and the lease lapses in "),
            "{said}"
        );
        // An expiry the stores did not write is still shown, not dropped.
        let said = held_text("job-1", None, "someday");
        assert_eq!(
            said,
            "replica job-1 holds the flow's lease until someday: its run is still going, or it stopped without letting go and the lease lapses then"
        );
    }
}
