//! The emulators' shared, in-memory state and the request log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::EmulatorConfig;
use crate::faults::Faults;
use crate::scenario::{ProcoreUser, ProjectUser, Scenario};

#[derive(Debug, Clone, Serialize)]
pub struct SentMail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub content_type: String,
    pub html: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at_ms: u64,
    /// The fault injected into this request (`503`, `drop_after_apply`, …).
    pub fault: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Graph,
    Procore,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub service: Service,
    pub expires_at: Instant,
    pub calls: u32,
}

pub struct Data {
    pub scenario: Scenario,
    pub mails: Vec<SentMail>,
    pub log: Vec<LoggedRequest>,
    pub tokens: HashMap<String, Token>,
    pub faults: Faults,
    pub api_requests: u64,
    /// Requests seen so far by each targeted fault, in `faults.targeted` order.
    pub targeted_seen: Vec<u64>,
    pub next_procore_id: u64,
    /// Procore budget: window start (unix minute) and requests used in it.
    pub procore_window: (u64, u32),
    pub graph_window: (u64, u32),
    pub token_counter: u64,
}

#[derive(Clone)]
pub struct Shared {
    pub data: Arc<Mutex<Data>>,
    pub config: Arc<EmulatorConfig>,
    pub base_url: Arc<str>,
    pub started: Instant,
}

impl Shared {
    pub fn new(config: EmulatorConfig, base_url: String) -> Self {
        let next_procore_id = config
            .scenario
            .procore_users
            .iter()
            .map(|u| u.id)
            .max()
            .unwrap_or(1000)
            + 1;
        let data = Data {
            scenario: config.scenario.clone(),
            mails: Vec::new(),
            log: Vec::new(),
            tokens: HashMap::new(),
            faults: config.faults.clone(),
            api_requests: 0,
            targeted_seen: Vec::new(),
            next_procore_id,
            procore_window: (0, 0),
            graph_window: (0, 0),
            token_counter: 0,
        };
        Self {
            data: Arc::new(Mutex::new(data)),
            config: Arc::new(config),
            base_url: base_url.into(),
            started: Instant::now(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn log(&self, method: &str, path: &str, status: u16, fault: Option<&'static str>) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        self.lock().log.push(LoggedRequest {
            method: method.to_string(),
            path: path.to_string(),
            status,
            at_ms,
            fault,
        });
    }

    /// Replaces the faults; request ordinals and target counts start again.
    pub fn set_faults(&self, faults: Faults) {
        let mut d = self.lock();
        d.faults = faults;
        d.api_requests = 0;
        d.targeted_seen.clear();
    }

    pub fn issue_token(&self, service: Service) -> (String, u64) {
        let mut data = self.lock();
        data.token_counter += 1;
        let default = match service {
            Service::Graph => 3599,
            Service::Procore => 7200,
        };
        let lifetime = data.faults.token_lifetime_secs.unwrap_or(default);
        let prefix = match service {
            Service::Graph => "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.graph",
            Service::Procore => "procore",
        };
        let token = format!(
            "{prefix}-{:016x}-{}",
            rand::random::<u64>(),
            data.token_counter
        );
        data.tokens.insert(
            token.clone(),
            Token {
                service,
                expires_at: Instant::now() + Duration::from_secs(lifetime),
                calls: 0,
            },
        );
        (token, lifetime)
    }
}

/// A snapshot of everything, for tests and the admin view.
#[derive(Debug, Clone, Serialize)]
pub struct StateSnapshot {
    pub scenario: Scenario,
    pub mails: Vec<SentMail>,
    pub requests: Vec<LoggedRequest>,
}

impl StateSnapshot {
    pub fn procore_users(&self) -> &[ProcoreUser] {
        &self.scenario.procore_users
    }

    pub fn created_users(&self) -> Vec<&ProcoreUser> {
        self.scenario
            .procore_users
            .iter()
            .filter(|u| u.created_by_api)
            .collect()
    }

    pub fn project_users(&self) -> &[ProjectUser] {
        &self.scenario.project_users
    }
}
