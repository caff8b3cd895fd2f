//! Faithful in-memory emulators of the Microsoft identity platform,
//! Microsoft Graph v1.0 and Procore (login and REST v1.0), served by one
//! axum server on loopback. They behave as the vendors document: paging,
//! error envelopes, token expiry, 429s with Retry-After, Procore's nested
//! bodies and rate-limit headers, so a client bug the real services would
//! expose is exposed here too; Graph delta's documented untidiness (the
//! same entity more than once, replays, a group's parts anywhere in the
//! page sequence, look-ups behind by replication delay) is there on demand
//! through [`Faults`]. Used by `sluice emulate`, `sluice demo` and the
//! end-to-end tests.

// Handlers return `Result<_, Response>` so an early error is the response
// itself; the size of axum's Response does not matter on this path.
#![allow(clippy::result_large_err)]

pub mod addressing;
pub mod admin;
pub mod api;
pub mod budget;
pub mod config;
pub mod faults;
pub mod graph;
pub mod procore;
pub mod scenario;
pub mod state;
pub mod tenant_changes;

use axum::Router;
use axum::routing::{get, patch, post, put};
use tokio::sync::oneshot;

pub use config::PagingHeaders;
pub use config::{Credentials, EmulatorConfig};
pub use faults::{FaultKind, Faults, RetryAfterStyle, TargetedFault};
pub use scenario::{ExpectedSync, Scenario};
pub use state::{SentMail, StateSnapshot};
pub use tenant_changes::{NewUser, UserError};

use anyhow::Context as _;
use state::Shared;

pub struct RunningEmulator {
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the emulators on 127.0.0.1 (`port` 0 picks one).
pub async fn start(config: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{} (`--port 0` picks a free port)",
                config.port
            )
        })?;
    let bound = listener.local_addr()?;
    let base_url = format!("http://{bound}");
    let shared = Shared::new(config, base_url);
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(graph::token))
        .route("/oauth/token", post(procore::token))
        .route("/_admin", get(admin::page))
        .route("/_admin/state", get(admin::state))
        .route("/_admin/faults", put(admin::set_faults).get(admin::faults))
        .route(
            "/_admin/groups/{group}/members/{member}",
            post(admin::add_member).delete(admin::remove_member),
        )
        .route("/_admin/stats", get(admin::stats))
        .route("/_admin/delta/expire", post(admin::expire_delta_tokens))
        .route("/_admin/users", post(admin::create_user))
        .route(
            "/_admin/users/{id}",
            patch(admin::change_user).delete(admin::delete_user),
        )
        .route("/_admin/users/{id}/restore", post(admin::restore_user))
        .nest("/v1.0", graph::router(shared.clone()))
        .nest("/rest/v1.0", procore::router(shared.clone()))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            api::log_requests,
        ))
        .with_state(shared.clone())
        .layer(axum::middleware::from_fn_with_state(
            addressing::BoundPort(bound.port()),
            addressing::only_addressed_to_us,
        ));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(RunningEmulator {
        shared,
        shutdown: Some(tx),
        task,
    })
}

pub(crate) fn snapshot_of(s: &Shared) -> StateSnapshot {
    let d = s.lock();
    StateSnapshot {
        scenario: d.scenario.clone(),
        mails: d.mails.clone(),
        requests: d.log.clone(),
    }
}

impl RunningEmulator {
    pub fn base_url(&self) -> String {
        self.shared.base_url.to_string()
    }

    /// The shipped flow's environment, pointing at this emulator.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let base = self.base_url();
        let d = self.shared.lock();
        let sc = &d.scenario;
        let c = &self.shared.config.credentials;
        vec![
            ("GRAPH_TENANT_ID".into(), sc.tenant_id.clone()),
            ("GRAPH_CLIENT_ID".into(), c.graph_client_id.clone()),
            ("GRAPH_CLIENT_SECRET".into(), c.graph_client_secret.clone()),
            ("GRAPH_BASE_URL".into(), format!("{base}/v1.0")),
            (
                "GRAPH_TOKEN_URL".into(),
                format!("{base}/{}/oauth2/v2.0/token", sc.tenant_id),
            ),
            ("PROCORE_CLIENT_ID".into(), c.procore_client_id.clone()),
            (
                "PROCORE_CLIENT_SECRET".into(),
                c.procore_client_secret.clone(),
            ),
            ("PROCORE_COMPANY_ID".into(), sc.company_id.to_string()),
            ("PROCORE_BASE_URL".into(), base.clone()),
            ("PROCORE_TOKEN_URL".into(), format!("{base}/oauth/token")),
            (
                "PROCORE_PROJECT_ID".into(),
                sc.project_ids
                    .first()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            ),
            (
                "PROCORE_PERMISSION_TEMPLATE_ID".into(),
                sc.permission_template_ids
                    .first()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            ),
            ("REPORT_MAIL_FROM".into(), sc.mail_from.clone()),
            ("REPORT_MAIL_TO".into(), sc.mail_to.clone()),
        ]
    }

    pub fn snapshot(&self) -> StateSnapshot {
        snapshot_of(&self.shared)
    }

    /// Everything a client must never print or store: the client secrets
    /// the token endpoints accept and every access token they issued.
    pub fn secrets(&self) -> Vec<String> {
        let c = &self.shared.config.credentials;
        let mut all = vec![
            c.graph_client_secret.clone(),
            c.procore_client_secret.clone(),
        ];
        all.extend(self.shared.lock().tokens.keys().cloned());
        all
    }

    /// Replaces the faults; request ordinals and target counts start again.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Removes a member (by object id) from a group's direct members, as an
    /// admin does in Entra between runs; false when there is no such
    /// group or member.
    pub fn remove_member(&self, group_id: &str, member_id: &str) -> bool {
        self.shared.lock().remove_member(group_id, member_id)
    }

    /// Makes an existing user a direct member of a group again; false when
    /// either does not exist or the user already is one.
    pub fn add_member(&self, group_id: &str, user_id: &str) -> bool {
        self.shared.lock().add_member(group_id, user_id)
    }

    /// Disables (or enables) an Entra account; false when there is no such user.
    pub fn set_account_enabled(&self, user_id: &str, enabled: bool) -> bool {
        self.shared.lock().set_account_enabled(user_id, enabled)
    }

    /// Sets (or clears) an Entra user's mail; false when there is no such
    /// user.
    pub fn set_mail(&self, user_id: &str, mail: Option<&str>) -> bool {
        self.shared.lock().set_mail(user_id, mail)
    }

    /// Deletes an Entra user, who waits 30 days in deleted items, no longer
    /// listed among its groups' members (only the users delta tells);
    /// false when there is no such user.
    pub fn delete_user(&self, user_id: &str) -> bool {
        self.shared.lock().delete_user(user_id)
    }

    /// Restores a deleted user with the group memberships it had; returns
    /// the ids of those groups.
    pub fn restore_user(&self, user_id: &str) -> Result<Vec<String>, UserError> {
        self.shared.lock().restore_user(user_id)
    }

    /// Creates an Entra user (a new hire), a direct member of the groups it
    /// names; returns its id.
    pub fn create_user(&self, user: NewUser) -> Result<String, UserError> {
        self.shared.lock().create_user(user)
    }

    /// Creates an active Procore company user now, as another integration
    /// does through the API while a run is under way; returns its id, or
    /// `None` when the address is already a user's login or email.
    pub fn create_procore_user(
        &self,
        email: &str,
        first_name: &str,
        last_name: &str,
    ) -> Option<u64> {
        let mut d = self.shared.lock();
        if d.procore_index.is_taken(email) {
            return None;
        }
        let id = d.next_procore_id;
        d.next_procore_id += 1;
        let now = procore::procore_now();
        d.add_procore_user(scenario::ProcoreUser {
            id,
            login: email.to_string(),
            email_address: email.to_string(),
            first_name: first_name.to_string(),
            last_name: last_name.to_string(),
            is_active: true,
            is_employee: true,
            job_title: None,
            created_by_api: true,
            created_at: now.clone(),
            updated_at: now,
        });
        Some(id)
    }

    /// Activates or deactivates a Procore company user, as an admin does
    /// by hand in Procore between runs; false when there is no such user.
    pub fn set_procore_active(&self, id: u64, active: bool) -> bool {
        let mut d = self.shared.lock();
        let Some(user) = d.procore_user_mut(id) else {
            return false;
        };
        user.is_active = active;
        user.updated_at = procore::procore_now();
        true
    }

    /// Expires every Graph delta token issued so far: following one is
    /// answered 410 Gone, as after Graph's seven days.
    pub fn expire_delta_tokens(&self) {
        self.shared.lock().delta_epoch += 1;
    }

    /// Requests answered so far and the time the emulator spent on them.
    pub fn stats(&self) -> admin::Stats {
        admin::stats_of(&self.shared)
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
