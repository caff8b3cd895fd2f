//! The PostgreSQL backend: one database shared by any number of replicas.
//!
//! - `tokio-postgres` (async; the sync `postgres` crate would start a
//!   runtime of its own inside ours) through a `deadpool` pool, so the
//!   history writer, lease renewals and reads each get a connection.
//! - Transactions run at READ COMMITTED (PostgreSQL's default); where a
//!   decision needs a row to stand still, the row is locked for the
//!   transaction (`FOR UPDATE`, `FOR SHARE`), never for the session.
//! - Times are `timestamptz`, read back as the same RFC 3339 text SQLite
//!   keeps; lease expiry is judged by the server's clock (`now()`).
//! - JSON inputs, outputs and state values are kept as `text`, not
//!   `jsonb`: `jsonb` reorders keys, and the store never queries inside
//!   them. State keys use the `"C"` collation, so they sort by their bytes
//!   as on SQLite, whatever the database's locale.
//! - Connections are plain TCP (or a Unix socket): a server beyond the
//!   local network is reached through a TLS-terminating proxy or sidecar.
//!
//! Modules: [`schema`] (migrations), [`history`] (run writes), [`query`]
//! (reads, pruning, recovery), [`state`] (flow state), [`approval`]
//! (plans and decisions), [`ledger`] (a key's story), [`lease`] (firings
//! and leases), [`browse`] (the web console's reads).

pub mod approval;
pub mod browse;
pub mod history;
pub mod lease;
pub mod ledger;
pub mod query;
pub mod schema;
pub mod state;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::browse::{
    FlowLatest, ItemCount, ItemFilter, ItemMention, ItemPage, RunFilter, RunOverview, RunPage,
};
use crate::{
    Acquired, Backend, Claim, DecisionOutcome, DecisionRequest, Firing, GateUpdate, HistoryWrite,
    LeaseGrant, LedgerEntry, LedgerKeysPage, LedgerKeysQuery, Location, PlanDetail, PlanItemState,
    PlanQuery, PlanSummary, PrunedRun, RunDetail, RunRef, RunSummary, Settled, StateBatch,
    StateKey, StatePage, StateQuery, StoreError, Takeover,
};

/// Connections per process: the history writer, a lease renewal per
/// running flow, the sweep and a few readers. PostgreSQL's default of 100
/// connections then serves a dozen replicas.
const POOL_SIZE: usize = 8;
/// How long to wait for a connection from a busy pool.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long a new connection may take when the URL does not say
/// (`connect_timeout`): an unreachable server fails clearly, not never.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What each session sets when it opens, unless it has a value already
/// (from the server's, the role's or the database's settings, or the
/// URL's `options`):
/// - `idle_in_transaction_session_timeout`: a replica stalled inside a
///   transaction (a paused process, a node gone with its connection left
///   half-open) holds that transaction's row locks, the flow's lease row
///   among them, and every other replica's lease query waited behind it
///   for as long as the server kept the session: the flow stopped
///   everywhere. The server now ends such a session after this long
///   (Sluice's own transactions never wait on their client for seconds).
/// - `lock_timeout`: a statement waits at most this long for a row lock,
///   then fails (a transient failure: written again later), rather than
///   hang a command.
const SESSION_SETTINGS: [(&str, &str); 2] = [
    ("idle_in_transaction_session_timeout", "30s"),
    ("lock_timeout", "60s"),
];

/// Sets each of `settings` that the session has no value for (`0`, off).
/// The names and values are this module's constants, never input.
async fn set_unless_set(
    client: &tokio_postgres::Client,
    settings: &[(&'static str, &'static str)],
) -> Result<(), tokio_postgres::Error> {
    for (name, value) in settings {
        let current: String = client
            .query_one("SELECT current_setting($1)", &[name])
            .await?
            .get(0);
        if current == "0" {
            client
                .batch_execute(&format!("SET {name} = '{value}'"))
                .await?;
        }
    }
    Ok(())
}

/// The PostgreSQL backend.
pub struct PgBackend {
    pool: Pool,
    location: Location,
    /// How the pool's sessions are made, for a session made apart
    /// ([`Backend::new_session_answers`]; its caller bounds its wait).
    config: tokio_postgres::Config,
}

impl PgBackend {
    /// Connects, then migrates the database if it needs it.
    pub async fn open(url: &str) -> Result<PgBackend, StoreError> {
        Self::open_with(url, &SESSION_SETTINGS).await
    }

    /// [`PgBackend::open`], each session setting `settings` first.
    async fn open_with(
        url: &str,
        settings: &'static [(&'static str, &'static str)],
    ) -> Result<PgBackend, StoreError> {
        let location = Location::Postgres(url.to_string());
        let shown = location.to_string();
        let open_error = |why: String| StoreError::Open {
            location: shown.clone(),
            why,
        };
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| open_error(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // tokio-postgres bounds each host's TCP connect with it (trying
        // the next host after), but not the session's startup and login:
        // a server (or a pooler, a load balancer) that takes the
        // connection and never answers would hang every command. So a new
        // connection gets each host's timeout, and one more for startup.
        let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
        let tries = u32::try_from(hosts.max(1)).unwrap_or(u32::MAX);
        let connect_timeout = config
            .get_connect_timeout()
            .map(|t| t.saturating_mul(tries.saturating_add(1)));
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(connect_timeout)
            .recycle_timeout(connect_timeout)
            .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                Box::pin(async move {
                    set_unless_set(client, settings)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| open_error(e.to_string()))?;
        let backend = PgBackend {
            pool,
            location,
            config,
        };
        let mut client = backend
            .client()
            .await
            .map_err(|e| open_error(e.to_string()))?;
        schema::migrate(&mut client, &backend.location).await?;
        Ok(backend)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// A spawned task that is stopped when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A read-only transaction on one snapshot (REPEATABLE READ), for reads
/// of a row and its children that must agree with each other.
async fn snapshot(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

#[async_trait]
impl Backend for PgBackend {
    fn location(&self) -> &Location {
        &self.location
    }

    async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(schema::version(&**self.client().await?).await?)
    }

    async fn write(&self, run: &RunRef, writes: Vec<HistoryWrite>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        history::apply(&tx, run, &writes).await?;
        Ok(tx.commit().await?)
    }

    async fn list_runs(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, StoreError> {
        query::list_runs(&**self.client().await?, flow, limit).await
    }

    async fn run_detail(&self, id: &str) -> Result<Option<RunDetail>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the run and its children.
        let tx = snapshot(&mut client).await?;
        #[allow(clippy::explicit_auto_deref)] // generic: no auto-deref
        let detail = query::run_detail(&*tx, id).await?;
        tx.commit().await?;
        Ok(detail)
    }

    async fn prune_older_than(&self, age: Duration) -> Result<Vec<PrunedRun>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let pruned = query::prune_older_than(&tx, age).await?;
        tx.commit().await?;
        Ok(pruned)
    }

    async fn recover_stale_runs(&self, since: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = query::recover_stale_runs(&tx, since).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        browse::runs_page(&**self.client().await?, filter).await
    }

    async fn run_overview(&self, id: &str) -> Result<Option<RunOverview>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the run and its children.
        let tx = snapshot(&mut client).await?;
        #[allow(clippy::explicit_auto_deref)] // generic: no auto-deref
        let overview = browse::run_overview(&*tx, id).await?;
        tx.commit().await?;
        Ok(overview)
    }

    async fn item_counts(&self, runs: &[String]) -> Result<Vec<Vec<ItemCount>>, StoreError> {
        browse::item_counts(&**self.client().await?, runs).await
    }

    async fn items_page(
        &self,
        run: &str,
        step: &str,
        filter: &ItemFilter,
    ) -> Result<ItemPage, StoreError> {
        browse::items_page(&**self.client().await?, run, step, filter).await
    }

    async fn flows_latest(&self) -> Result<Vec<FlowLatest>, StoreError> {
        browse::flows_latest(&**self.client().await?).await
    }

    async fn runs_from(&self, floor: &str) -> Result<Vec<RunSummary>, StoreError> {
        browse::runs_from(&**self.client().await?, floor).await
    }

    async fn runs_by_id(&self, ids: &[String]) -> Result<Vec<RunSummary>, StoreError> {
        browse::runs_by_id(&**self.client().await?, ids).await
    }

    async fn items_mentioning(
        &self,
        text: &str,
        max: usize,
    ) -> Result<Vec<ItemMention>, StoreError> {
        browse::items_mentioning(&**self.client().await?, text, max).await
    }

    async fn state_get_text(
        &self,
        flow: &str,
        key: &StateKey,
    ) -> Result<Option<String>, StoreError> {
        let text = state::get(&**self.client().await?, flow, key).await?;
        Ok(text.map(crate::state::json_text))
    }

    async fn state_list_text(
        &self,
        flow: &str,
        query: &StateQuery,
    ) -> Result<StatePage<String>, StoreError> {
        let page = state::list(&**self.client().await?, flow, query).await?;
        Ok(page.map(crate::state::json_text))
    }

    async fn state_apply(&self, flow: &str, batch: StateBatch) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        state::apply(&tx, flow, &batch).await?;
        if let Some(run) = batch.history_run(flow)? {
            history::apply(&tx, &run, &batch.history).await?;
        }
        Ok(tx.commit().await?)
    }

    async fn open_plan(&self, flow: &str, step: &str) -> Result<Option<PlanDetail>, StoreError> {
        approval::open_plan(&**self.client().await?, flow, step).await
    }

    async fn record_gate(&self, update: &GateUpdate) -> Result<Option<PlanSummary>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let plan = approval::record_gate(&tx, update).await?;
        tx.commit().await?;
        Ok(plan)
    }

    async fn plan_item_state(
        &self,
        plan_id: &str,
        key: &str,
    ) -> Result<Option<PlanItemState>, StoreError> {
        approval::item_state(&**self.client().await?, plan_id, key).await
    }

    async fn settle_items(&self, plan_id: &str, settled: &[Settled]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        approval::settle(&tx, plan_id, settled).await?;
        Ok(tx.commit().await?)
    }

    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanSummary>, StoreError> {
        approval::list_plans(&**self.client().await?, query).await
    }

    async fn plan_detail(&self, id: &str) -> Result<Option<PlanDetail>, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for the plan, its items and decisions.
        let tx = snapshot(&mut client).await?;
        #[allow(clippy::explicit_auto_deref)] // generic: no auto-deref
        let detail = approval::plan_detail(&*tx, id).await?;
        tx.commit().await?;
        Ok(detail)
    }

    async fn decide(&self, request: &DecisionRequest) -> Result<DecisionOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let outcome = approval::decide(&tx, request).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn ledger(&self, key: &str, flow: Option<&str>) -> Result<Vec<LedgerEntry>, StoreError> {
        ledger::ledger(&**self.client().await?, key, flow).await
    }

    async fn ledger_keys(&self, query: &LedgerKeysQuery) -> Result<LedgerKeysPage, StoreError> {
        ledger::ledger_keys(&**self.client().await?, query).await
    }

    async fn new_session_answers(&self) -> Result<(), StoreError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        // Ended with this call, however it ends: a caller that stops
        // waiting must not leave the session open on the server.
        let mut session = AbortOnDrop(tokio::spawn(connection));
        client.simple_query("SELECT 1").await?;
        // Dropping the client ends the session politely (Terminate); the
        // task then ends by itself.
        drop(client);
        let _ = (&mut session.0).await;
        Ok(())
    }

    async fn claim_firing(&self, firing: &Firing) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        schema::not_newer(&**client, &self.location).await?;
        lease::claim_firing(&**client, firing).await
    }

    async fn acquire_lease(
        &self,
        grant: &LeaseGrant,
        ttl: Duration,
    ) -> Result<Acquired, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        schema::not_newer(&*tx, &self.location).await?;
        let acquired = lease::acquire(&tx, grant, ttl).await?;
        tx.commit().await?;
        Ok(acquired)
    }

    async fn renew_lease(&self, flow: &str, fence: i64, ttl: Duration) -> Result<bool, StoreError> {
        lease::renew(&**self.client().await?, flow, fence, ttl).await
    }

    async fn release_lease(&self, flow: &str, fence: i64) -> Result<(), StoreError> {
        lease::release(&**self.client().await?, flow, fence).await
    }

    async fn take_over_expired(
        &self,
        replica: &str,
        ttl: Duration,
    ) -> Result<Vec<Takeover>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let taken = lease::take_over_expired(&tx, replica, ttl).await?;
        tx.commit().await?;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica's kept session answered while the server refused every
    /// new one (its connection limit reached, the login refused since), so
    /// its health said ok while every run failed. A session made apart is
    /// refused, and says why in words a probe may show.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_new_session_is_told_apart_from_one_not_answering() {
        let url = crate::testing::TempPostgres::shared().new_database().await;
        let name = url.rsplit('/').next().unwrap().to_string();
        let role = format!("r_{name}");
        let (admin, session) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(session);
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN CONNECTION LIMIT 1; ALTER DATABASE {name} OWNER TO {role}"
            ))
            .await
            .unwrap();
        let user = crate::testing::USER;
        let as_role = url.replacen(&format!("//{user}@"), &format!("//{role}@"), 1);
        let backend = PgBackend::open(&as_role).await.unwrap();
        // Its one session, kept by the pool, answers; a second is refused.
        backend.schema_version().await.unwrap();
        let refused = backend.new_session_answers().await.unwrap_err();
        assert_eq!(
            refused.health_word(),
            "refuses new sessions: its connection limit is reached",
            "{refused}"
        );
        admin
            .batch_execute(&format!("ALTER ROLE {role} NOLOGIN CONNECTION LIMIT -1"))
            .await
            .unwrap();
        backend.schema_version().await.unwrap();
        let refused = backend.new_session_answers().await.unwrap_err();
        assert_eq!(
            refused.health_word(),
            "refuses the login (the password, or the role's right to log in)",
            "{refused}"
        );
        admin
            .batch_execute(&format!("ALTER ROLE {role} LOGIN"))
            .await
            .unwrap();
        backend.new_session_answers().await.unwrap();
    }

    /// A value the session has already (here from the URL's `options`;
    /// a role's or a database's setting comes the same way) is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_setting_the_session_has_already_is_kept() {
        let url = crate::testing::TempPostgres::shared().new_database().await;
        let shown = |backend: PgBackend, name: &'static str| async move {
            let client = backend.client().await.unwrap();
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        };
        let plain = PgBackend::open(&url).await.unwrap();
        assert_eq!(shown(plain, "lock_timeout").await, "1min");
        let own = format!("{url}?options=-c%20lock_timeout%3D5s%20-c%20deadlock_timeout%3D2s");
        let own = PgBackend::open(&own).await.unwrap();
        assert_eq!(shown(own, "lock_timeout").await, "5s");
    }

    /// A replica stalled inside a transaction that holds its flow's lease
    /// row (here: a session of the store, left idle with the row locked,
    /// as a paused process leaves it) used to keep every other replica's
    /// lease query waiting for as long as the server kept the session.
    /// The server now ends the stalled session, and the others go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_stalled_in_a_transaction_does_not_hold_the_lease_row_for_ever() {
        let url = crate::testing::TempPostgres::shared().new_database().await;
        const QUICK: [(&str, &str); 2] = [
            ("idle_in_transaction_session_timeout", "1s"),
            ("lock_timeout", "60s"),
        ];
        let stalled = PgBackend::open_with(&url, &QUICK).await.unwrap();
        let other = PgBackend::open(&url).await.unwrap();
        let grant = |replica: &str| LeaseGrant {
            flow: "f".into(),
            replica: replica.into(),
            token: format!("{replica}-token"),
            host: None,
            pid: None,
            run_id: format!("run-of-{replica}"),
        };
        let ttl = Duration::from_secs(600);
        stalled.acquire_lease(&grant("a"), ttl).await.unwrap();
        let mut client = stalled.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute("SELECT fence FROM leases WHERE flow = 'f' FOR UPDATE", &[])
            .await
            .unwrap();
        // The transaction stays open, its client doing nothing.
        let started = std::time::Instant::now();
        let asked = tokio::time::timeout(
            Duration::from_secs(30),
            other.acquire_lease(&grant("b"), ttl),
        )
        .await
        .expect("the lease query must not wait on the stalled session for ever");
        assert!(
            matches!(asked, Ok(Acquired::Held { .. })),
            "the lease is still a's: {asked:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        // The stalled session was ended by the server.
        assert!(tx.commit().await.is_err());
        let shown: String = other
            .client()
            .await
            .unwrap()
            .query_one("SHOW idle_in_transaction_session_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(shown, "30s");
    }

    /// A server that takes the connection and never answers (a wedged
    /// server, a pooler without a backend) fails the open within the
    /// connect timeout, saying so, rather than hanging.
    #[tokio::test]
    async fn a_server_that_never_answers_fails_within_the_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let url = format!("postgres://u:pw@127.0.0.1:{port}/db?connect_timeout=1");
        let opened = tokio::time::timeout(Duration::from_secs(20), PgBackend::open(&url))
            .await
            .expect("the open must not hang");
        let Err(error) = opened else {
            panic!("nothing answers there");
        };
        let text = crate::error::with_causes(&error);
        assert!(
            text.contains("the server did not finish starting a session in time"),
            "{text}"
        );
        assert!(!text.contains("pw@"), "{text}");
        held.abort();
    }
}
