//! The emulators' shared, in-memory state and the request log.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::EmulatorConfig;
use crate::faults::Faults;
use crate::scenario::{ProcoreUser, ProjectUser, Scenario};

pub use crate::tenant_changes::{DeletedUser, MembershipChange, UserChange};

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
    /// The request's body as sent, when it is JSON (`Content-Type:
    /// application/json`) of at most [`MAX_LOGGED_BODY`] bytes: what a
    /// test checks a write sent. Token requests (they carry client
    /// secrets, in a form or in JSON) never have their body logged.
    pub body: Option<String>,
}

/// The longest JSON request body the log keeps.
pub const MAX_LOGGED_BODY: usize = 64 * 1024;

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

/// Look-ups that would otherwise scan every Procore user: where each user
/// is by id, every login and email address taken (trimmed, lower case; in
/// this company or, for logins, another), who is on which project, and who
/// is on the active and on the inactive list. A million-user company is
/// created into and served without a scan per request.
#[derive(Debug, Default)]
pub struct ProcoreIndex {
    positions: HashMap<u64, usize>,
    taken: HashSet<String>,
    memberships: HashSet<(u64, u64)>,
    /// The positions of the active users and of the inactive ones, in
    /// list order; built when a list is served, dropped when a user may
    /// have changed lists (a new user is added to its list).
    lists: Option<[Vec<usize>; 2]>,
}

fn key(value: &str) -> String {
    value.trim().to_lowercase()
}

impl ProcoreIndex {
    fn of(scenario: &Scenario) -> Self {
        let mut index = ProcoreIndex::default();
        for (i, u) in scenario.procore_users.iter().enumerate() {
            index.add_user(i, u);
        }
        index
            .taken
            .extend(scenario.taken_elsewhere.iter().map(|t| key(t)));
        index.memberships = scenario
            .project_users
            .iter()
            .map(|p| (p.project_id, p.user_id))
            .collect();
        index
    }

    fn add_user(&mut self, position: usize, u: &ProcoreUser) {
        self.positions.entry(u.id).or_insert(position);
        for value in [&u.login, &u.email_address] {
            if !value.trim().is_empty() {
                self.taken.insert(key(value));
            }
        }
    }

    /// The positions of the active (or inactive) users, in list order.
    pub fn list(&mut self, users: &[ProcoreUser], active: bool) -> &[usize] {
        let lists = self.lists.get_or_insert_with(|| {
            let mut lists = [Vec::new(), Vec::new()];
            for (i, u) in users.iter().enumerate() {
                lists[usize::from(!u.is_active)].push(i);
            }
            lists
        });
        &lists[usize::from(!active)]
    }

    /// Whether a login or email address is held by any Procore user.
    pub fn is_taken(&self, value: &str) -> bool {
        self.taken.contains(&key(value))
    }
}

pub struct Data {
    pub scenario: Scenario,
    /// Every membership change since the emulator started; a change's
    /// sequence number is its position plus one.
    pub membership_changes: Vec<MembershipChange>,
    /// Bumped to expire every delta token issued so far.
    pub delta_epoch: u64,
    pub delta_tokens: crate::graph::delta::DeltaTokens,
    /// The users changed (enabled, disabled, mail, deleted, restored,
    /// created), in order, for users delta; a change's sequence number is
    /// its position plus one.
    pub user_changes: Vec<UserChange>,
    /// Deleted users, restorable for 30 days as from Entra's deleted items.
    pub deleted_users: Vec<DeletedUser>,
    /// The properties of each user (by id) that were set once and cleared
    /// since: users delta shows them as `null`, and leaves out properties
    /// never set.
    pub cleared: HashMap<String, Vec<&'static str>>,
    /// Which users' recent changes id look-ups do not see yet (the
    /// `lookup_lag` fault).
    pub lookup_lag: crate::graph::lookup_lag::LookupLag,
    /// Users created through the admin API, for their made-up ids.
    pub created_graph_users: u64,
    pub user_deltas: crate::graph::user_delta::UserDeltaTokens,
    /// Groups' member lists, kept while no change is recorded above.
    pub member_lists: crate::graph::member_lists::MemberLists,
    /// Requests answered, and the time the emulator spent answering them.
    pub served: u64,
    pub service_time: Duration,
    pub procore_index: ProcoreIndex,
    pub mails: Vec<SentMail>,
    pub log: Vec<LoggedRequest>,
    pub tokens: HashMap<String, Token>,
    pub faults: Faults,
    pub api_requests: u64,
    /// Requests seen so far by each targeted fault, in `faults.targeted` order.
    pub targeted_seen: Vec<u64>,
    pub next_procore_id: u64,
    /// What each service's rate limits have counted.
    pub procore_budget: crate::budget::Counters,
    pub graph_budget: crate::budget::Counters,
    pub token_counter: u64,
}

impl Data {
    /// The positions of the active (or inactive) Procore users, in list
    /// order, and the users they point into.
    pub fn procore_list(&mut self, active: bool) -> (&[usize], &[ProcoreUser]) {
        let users = &self.scenario.procore_users;
        (self.procore_index.list(users, active), users)
    }

    pub fn procore_user(&self, id: u64) -> Option<&ProcoreUser> {
        let &i = self.procore_index.positions.get(&id)?;
        self.scenario.procore_users.get(i).filter(|u| u.id == id)
    }

    /// A user to change; the active and inactive lists are built again
    /// when next served, since the change may move the user between them.
    pub fn procore_user_mut(&mut self, id: u64) -> Option<&mut ProcoreUser> {
        let &i = self.procore_index.positions.get(&id)?;
        self.procore_index.lists = None;
        self.scenario
            .procore_users
            .get_mut(i)
            .filter(|u| u.id == id)
    }

    pub fn add_procore_user(&mut self, user: ProcoreUser) {
        let position = self.scenario.procore_users.len();
        self.procore_index.add_user(position, &user);
        if let Some(lists) = &mut self.procore_index.lists {
            lists[usize::from(!user.is_active)].push(position);
        }
        self.scenario.procore_users.push(user);
    }

    /// Puts a user on a project, unless already there; returns the
    /// membership as it stands.
    pub fn add_to_project(&mut self, member: ProjectUser) -> ProjectUser {
        let key = (member.project_id, member.user_id);
        if self.procore_index.memberships.insert(key) {
            self.scenario.project_users.push(member.clone());
            return member;
        }
        self.scenario
            .project_users
            .iter()
            .find(|p| (p.project_id, p.user_id) == key)
            .cloned()
            .unwrap_or(member)
    }

    /// Takes a user off a project; false when not on it.
    pub fn remove_from_project(&mut self, project_id: u64, user_id: u64) -> bool {
        if !self
            .procore_index
            .memberships
            .remove(&(project_id, user_id))
        {
            return false;
        }
        self.scenario
            .project_users
            .retain(|p| (p.project_id, p.user_id) != (project_id, user_id));
        true
    }
}

#[derive(Clone)]
pub struct Shared {
    pub data: Arc<Mutex<Data>>,
    /// The configuration, less its scenario: the tenant served is
    /// [`Data::scenario`] and only there.
    pub config: Arc<EmulatorConfig>,
    pub base_url: Arc<str>,
    pub started: Instant,
}

impl Shared {
    pub fn new(mut config: EmulatorConfig, base_url: String) -> Self {
        // Moved, not cloned: a second copy doubled the emulator's memory
        // and start-up (about 1 GiB more at a million users).
        let scenario = std::mem::replace(&mut config.scenario, Scenario::generate(0, 1));
        let next_procore_id = scenario
            .procore_users
            .iter()
            .map(|u| u.id)
            .max()
            .unwrap_or(1000)
            + 1;
        let data = Data {
            membership_changes: Vec::new(),
            delta_epoch: 0,
            delta_tokens: Default::default(),
            user_changes: Vec::new(),
            deleted_users: Vec::new(),
            cleared: HashMap::new(),
            lookup_lag: Default::default(),
            created_graph_users: 0,
            user_deltas: Default::default(),
            member_lists: Default::default(),
            served: 0,
            service_time: Duration::ZERO,
            procore_index: ProcoreIndex::of(&scenario),
            scenario,
            mails: Vec::new(),
            log: Vec::new(),
            tokens: HashMap::new(),
            faults: config.faults.clone(),
            api_requests: 0,
            targeted_seen: Vec::new(),
            next_procore_id,
            procore_budget: Default::default(),
            graph_budget: Default::default(),
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

    pub fn log(&self, request: LoggedRequest) {
        self.lock().log.push(request);
    }

    /// Milliseconds since the emulator started: a logged request's `at_ms`.
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Replaces the faults; request ordinals, target counts and the
    /// look-ups a lagging user missed start again.
    pub fn set_faults(&self, faults: Faults) {
        let mut d = self.lock();
        d.faults = faults;
        d.api_requests = 0;
        d.targeted_seen.clear();
        d.lookup_lag.restart();
    }

    /// Issues a token of `service`; its lifetime in seconds, as
    /// `expires_in` says it.
    pub fn issue_token(&self, service: Service) -> (String, u64) {
        let mut data = self.lock();
        data.token_counter += 1;
        let default = match service {
            Service::Graph => 3599,
            // Procore's client-credentials guide shows `"expires_in": 5400`.
            Service::Procore => 5400,
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
                // A lifetime past the clock's range never ends.
                expires_at: Instant::now()
                    .checked_add(Duration::from_secs(lifetime))
                    .unwrap_or_else(far_future),
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
        self.scenario.created_users().collect()
    }

    pub fn project_users(&self) -> &[ProjectUser] {
        &self.scenario.project_users
    }
}

/// A moment no token lifetime reaches: a century from now.
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists as a scan of every user gives them.
    fn scanned(d: &Data, active: bool) -> Vec<usize> {
        let users = &d.scenario.procore_users;
        (0..users.len())
            .filter(|&i| users[i].is_active == active)
            .collect()
    }

    fn indexed(d: &mut Data, active: bool) -> Vec<usize> {
        d.procore_list(active).0.to_vec()
    }

    #[test]
    fn the_indexed_lists_follow_every_change_to_a_user() {
        let shared = Shared::new(EmulatorConfig::default(), "http://127.0.0.1".into());
        let mut d = shared.lock();
        for active in [true, false] {
            assert_eq!(indexed(&mut d, active), scanned(&d, active));
        }
        let mut new = d.scenario.procore_users[0].clone();
        (new.id, new.is_active) = (d.next_procore_id, false);
        d.add_procore_user(new);
        let first = d.scenario.procore_users[0].id;
        if let Some(u) = d.procore_user_mut(first) {
            u.is_active = !u.is_active;
        }
        for active in [true, false] {
            let lists = indexed(&mut d, active);
            assert_eq!(lists, scanned(&d, active));
            assert!(!lists.is_empty());
        }
        let last = d.scenario.procore_users.len() - 1;
        assert_eq!(indexed(&mut d, false).last(), Some(&last), "added in order");
    }
}
