//! Tenants to emulate: the data, a seeded generator of realistic tenants of
//! any size, and the expected outcome of a correct sync computed from the
//! identity rule (the one the components share, `sluice-identity`) and the
//! tenant data alone, independently of the components' code.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sluice_identity::Key;

#[derive(Debug, Clone, Serialize)]
pub struct GraphUser {
    pub id: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub mail: Option<String>,
    pub user_principal_name: String,
    pub account_enabled: bool,
    pub job_title: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Member {
    User { id: String },
    Group { id: String },
    Device { id: String, display_name: String },
    ServicePrincipal { id: String, display_name: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphGroup {
    pub id: String,
    pub display_name: String,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcoreUser {
    pub id: u64,
    pub login: String,
    pub email_address: String,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_employee: bool,
    pub job_title: Option<String>,
    /// True for users created through the API during this emulator's life.
    pub created_by_api: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectUser {
    pub project_id: u64,
    pub user_id: u64,
    pub permission_template_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub tenant_id: String,
    pub graph_users: Vec<GraphUser>,
    pub groups: Vec<GraphGroup>,
    pub company_id: u64,
    pub project_ids: Vec<u64>,
    pub permission_template_ids: Vec<u64>,
    pub procore_users: Vec<ProcoreUser>,
    pub project_users: Vec<ProjectUser>,
    /// The mailbox that sends the report (a user of the tenant).
    pub mail_from: String,
    pub mail_to: String,
    /// Logins held by users of other Procore companies: Procore logins are
    /// global, so creating one here is refused as taken although this
    /// company's lists do not show it.
    pub taken_elsewhere: Vec<String>,
    /// Positions of users and groups by id, built on first look-up: a
    /// 100k-member tenant is served without a linear search per member.
    #[serde(skip)]
    index: OnceLock<Index>,
}

#[derive(Debug, Clone, Default)]
struct Index {
    users: HashMap<String, usize>,
    groups: HashMap<String, usize>,
}

fn position_by_id<'a>(ids: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut positions = HashMap::new();
    for (i, id) in ids.enumerate() {
        positions.entry(id.to_string()).or_insert(i);
    }
    positions
}

/// The license group prefixes of the shipped flow (EN DASH).
pub const LICENSE_PREFIXES: &[&str] = &["License – Microsoft", "License – Office"];

/// What a correct sync does to this tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpectedSync {
    /// Keys (lower case) a correct sync creates in Procore.
    pub to_create: BTreeSet<String>,
    /// Keys matched to an inactive Procore user: reported, not created.
    pub inactive: BTreeSet<String>,
    /// Keys already matched to an active Procore user.
    pub present: BTreeSet<String>,
    /// Distinct disabled users in license groups (and not enabled elsewhere).
    pub skipped_disabled: usize,
}

impl Scenario {
    pub fn named(name: &str) -> Option<Scenario> {
        match name {
            "demo" => Some(Scenario::generate(40, 7)),
            "empty" => Some(Scenario::generate(0, 1)),
            _ => None,
        }
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| Index {
            users: position_by_id(self.graph_users.iter().map(|u| u.id.as_str())),
            groups: position_by_id(self.groups.iter().map(|g| g.id.as_str())),
        })
    }

    /// The Graph user with this id. The fields are public, so a caller may
    /// have changed the lists since the index was built: a position that no
    /// longer holds the id falls back to a search.
    pub fn user(&self, id: &str) -> Option<&GraphUser> {
        let indexed = self
            .index()
            .users
            .get(id)
            .and_then(|&i| self.graph_users.get(i));
        match indexed {
            Some(u) if u.id == id => Some(u),
            _ => self.graph_users.iter().find(|u| u.id == id),
        }
    }

    /// The group with this id (see [`Scenario::user`] on the index).
    pub fn group(&self, id: &str) -> Option<&GraphGroup> {
        let indexed = self
            .index()
            .groups
            .get(id)
            .and_then(|&i| self.groups.get(i));
        match indexed {
            Some(g) if g.id == id => Some(g),
            _ => self.groups.iter().find(|g| g.id == id),
        }
    }

    /// The Procore users created through the API.
    pub fn created_users(&self) -> impl Iterator<Item = &ProcoreUser> {
        self.procore_users.iter().filter(|u| u.created_by_api)
    }

    /// Applies DESIGN.md's identity rules to the data (direct members).
    pub fn expected_sync(&self) -> ExpectedSync {
        self.expected(false)
    }

    /// The same, following nested groups (`transitiveMembers`).
    pub fn expected_sync_transitive(&self) -> ExpectedSync {
        self.expected(true)
    }

    /// A group's members in a stable order, each object once, as Graph
    /// lists them; with `transitive`, the members of nested groups too (the
    /// nested groups themselves are listed, as Graph does). Members whose
    /// user or group does not exist are left out.
    pub fn members<'a>(&'a self, group: &'a GraphGroup, transitive: bool) -> Vec<&'a Member> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![group];
        let mut visited = BTreeSet::new();
        while let Some(g) = stack.pop() {
            if !visited.insert(g.id.as_str()) {
                continue;
            }
            for m in &g.members {
                let id = match m {
                    Member::User { id } => {
                        if self.user(id).is_none() {
                            continue;
                        }
                        id
                    }
                    Member::Group { id } => {
                        let Some(inner) = self.group(id) else {
                            continue;
                        };
                        if transitive {
                            stack.push(inner);
                        }
                        id
                    }
                    Member::Device { id, .. } | Member::ServicePrincipal { id, .. } => id,
                };
                if seen.insert(id.as_str()) {
                    out.push(m);
                }
            }
        }
        out
    }

    fn expected(&self, transitive: bool) -> ExpectedSync {
        let mut enabled = BTreeSet::new();
        let mut disabled = BTreeSet::new();
        for g in self.groups.iter().filter(|g| {
            LICENSE_PREFIXES
                .iter()
                .any(|p| g.display_name.starts_with(p))
        }) {
            for m in self.members(g, transitive) {
                let Member::User { id } = m else { continue };
                let Some(user) = self.user(id) else { continue };
                let Some(key) = identity_key(user) else {
                    continue;
                };
                if user.account_enabled {
                    enabled.insert(key);
                } else {
                    disabled.insert(key);
                }
            }
        }
        let mut active_keys = BTreeSet::new();
        let mut inactive_keys = BTreeSet::new();
        for p in &self.procore_users {
            for k in [&p.login, &p.email_address] {
                let Some(k) = Key::of(k).map(Key::into_string) else {
                    continue;
                };
                if p.is_active {
                    active_keys.insert(k);
                } else {
                    inactive_keys.insert(k);
                }
            }
        }
        let mut out = ExpectedSync::default();
        for key in &enabled {
            if active_keys.contains(key) {
                out.present.insert(key.clone());
            } else if inactive_keys.contains(key) {
                out.inactive.insert(key.clone());
            } else {
                out.to_create.insert(key.clone());
            }
        }
        out.skipped_disabled = disabled.difference(&enabled).count();
        out
    }

    /// A realistic tenant of `users` people, the same for the same seed.
    ///
    /// Always includes the edge cases (when `users >= 1`): padded mixed-case
    /// mail, no mail (UPN key), a guest, a disabled holder, a hostile name,
    /// non-ASCII names, a person in two license groups, one matched in
    /// Procore only by email, one inactive in Procore, a Procore-only
    /// subcontractor, nested groups, devices and service principals, and a
    /// decoy group named like a license group but in lower case.
    pub fn generate(users: usize, seed: u64) -> Scenario {
        Generator::new(seed).build(users)
    }
}

/// The key of a Graph user, by the identity rule the components use
/// (`sluice-identity`): mail trimmed and lower-cased, else the UPN.
pub fn identity_key(u: &GraphUser) -> Option<String> {
    Key::of_graph_user(u.mail.as_deref(), Some(&u.user_principal_name)).map(Key::into_string)
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Zoë", "José", "Łukasz", "Amélie", "Søren", "Priya", "Mei", "Olu",
    "Fatima", "Noah", "Liam", "Emma", "Sofia", "Mateo", "Chidi", "Yuki", "Björn", "Ana", "Omar",
    "Ines", "Kai", "Lena", "Raj", "Sara", "Tom",
];
const LAST: &[&str] = &[
    "Smith",
    "Lovelace",
    "Hopper",
    "Turing",
    "García",
    "Kowalski",
    "Müller",
    "O'Brien",
    "Nguyen",
    "Okafor",
    "Haddad",
    "Rossi",
    "Johansson",
    "Tanaka",
    "Silva",
    "Dubois",
    "Novák",
    "Fernández",
    "Kim",
    "Patel",
    "Brown",
    "Wilson",
    "山田",
];

struct Generator {
    rng: StdRng,
    next_guid: u64,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            next_guid: 1,
        }
    }

    fn guid(&mut self) -> String {
        let n = self.next_guid;
        self.next_guid += 1;
        let r: u64 = self.rng.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (r >> 32) as u32,
            n & 0xffff,
            (r >> 8) & 0xfff,
            r & 0xfff,
            n
        )
    }

    fn build(mut self, n: usize) -> Scenario {
        let license_names = [
            "License – Microsoft 365 E3",
            "License – Microsoft 365 E5",
            "License – Office 365 E1",
        ];
        let decoy_names = [
            "License - Microsoft 365 E3 (retired)",
            "Licenses – Microsoft Visio",
            "Microsoft License – E5 Trial",
            "All Staff",
        ];
        let mut groups: Vec<GraphGroup> = license_names
            .iter()
            .chain(decoy_names.iter())
            .map(|name| GraphGroup {
                id: self.guid(),
                display_name: name.to_string(),
                members: Vec::new(),
            })
            .collect();
        let nested = GraphGroup {
            id: self.guid(),
            display_name: "Field Crews".into(),
            members: Vec::new(),
        };
        groups.push(nested);
        let nested_index = groups.len() - 1;
        let mut graph_users = Vec::with_capacity(n + 2);
        // People who hold no license, for the lower-case decoy group below.
        let mut unlicensed = Vec::new();
        let mut procore_users = Vec::with_capacity(n + n / 10 + 4);
        let mut next_procore_id = 1000u64;
        let stamp = "2025-06-01T12:00:00Z".to_string();
        let mut add_procore = |users: &mut Vec<ProcoreUser>,
                               login: String,
                               email: String,
                               first: &str,
                               last: &str,
                               active: bool| {
            next_procore_id += 1;
            users.push(ProcoreUser {
                id: next_procore_id,
                login,
                email_address: email,
                first_name: first.to_string(),
                last_name: last.to_string(),
                is_active: active,
                is_employee: true,
                job_title: None,
                created_by_api: false,
                created_at: stamp.clone(),
                updated_at: stamp.clone(),
            });
        };
        // The mailbox that sends reports: a user, not a license holder.
        let mailbox_id = self.guid();
        graph_users.push(GraphUser {
            id: mailbox_id,
            display_name: "IT Automation".into(),
            given_name: None,
            surname: None,
            mail: Some("it-automation@contoso.com".into()),
            user_principal_name: "it-automation@contoso.com".into(),
            account_enabled: true,
            job_title: None,
        });
        for i in 0..n {
            let id = self.guid();
            let first = FIRST[self.rng.random_range(0..FIRST.len())];
            let last = LAST[self.rng.random_range(0..LAST.len())];
            let ascii = |s: &str| -> String {
                s.chars()
                    .map(|c| match c {
                        'ë' | 'é' => 'e',
                        'Ł' => 'L',
                        'ü' => 'u',
                        'ø' => 'o',
                        'á' => 'a',
                        'ö' => 'o',
                        'í' => 'i',
                        c => c,
                    })
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_lowercase()
            };
            let local = format!(
                "{}.{}{}",
                ascii(first),
                if ascii(last).is_empty() {
                    "yamada".into()
                } else {
                    ascii(last)
                },
                i
            );
            let address = format!("{local}@contoso.com");
            let mut user = GraphUser {
                id: id.clone(),
                display_name: format!("{first} {last}"),
                given_name: Some(first.to_string()),
                surname: Some(last.to_string()),
                mail: Some(address.clone()),
                user_principal_name: address.clone(),
                account_enabled: true,
                job_title: Some("Project Engineer".into()),
            };
            // Edge cases first, then a realistic mix.
            let case = if i < 12 {
                i
            } else {
                12 + self.rng.random_range(0..100)
            };
            let mut licensed = true;
            let mut in_procore: Option<bool> = None; // Some(active)
            let mut procore_by_email_only = false;
            match case {
                0 => user.mail = Some(format!("  {}  ", mixed_case(&address))),
                1 => user.mail = None,
                2 => user.mail = Some(String::new()),
                3 => {
                    user.user_principal_name =
                        format!("{local}_fabrikam.com#EXT#@contoso.onmicrosoft.com");
                    user.mail = Some(format!("{local}@fabrikam.com"));
                    user.display_name = format!("{first} {last} (Fabrikam)");
                }
                4 => user.account_enabled = false,
                5 => {
                    user.display_name = "<img src=x onerror=alert(1)>".into();
                    user.given_name = Some("<script>alert('x')</script>".into());
                    user.surname = Some("\"Quotes\" & 'Apostrophes'".into());
                }
                6 => in_procore = Some(false),
                7 => {
                    in_procore = Some(true);
                    procore_by_email_only = true;
                }
                8 => in_procore = Some(true),
                9 => {
                    user.given_name = None;
                    user.surname = None;
                }
                10 => licensed = false,
                11 => in_procore = Some(true),
                c if c < 17 => user.account_enabled = false,
                c if c < 27 => licensed = false,
                c if c < 30 => in_procore = Some(false),
                c if c < 33 => user.mail = Some(format!(" {} ", mixed_case(&address))),
                c if c < 36 => user.mail = None,
                c if c < 102 => in_procore = Some(true),
                _ => {}
            }
            // About 10% of license holders are missing from Procore.
            if case >= 12 && in_procore.is_none() && self.rng.random_range(0..100) < 50 {
                in_procore = Some(true);
            }
            let key = identity_key(&user).unwrap_or_default();
            if let Some(active) = in_procore {
                let (login, email) = if procore_by_email_only {
                    (format!("{}-login", ascii(first)), mixed_case(&key))
                } else if self.rng.random_range(0..3) == 0 {
                    (mixed_case(&key), mixed_case(&key))
                } else {
                    (key.clone(), key.clone())
                };
                add_procore(&mut procore_users, login, email, first, last, active);
            }
            let member = Member::User { id: id.clone() };
            if !licensed {
                unlicensed.push(member.clone());
            }
            if licensed {
                let g = self.rng.random_range(0..license_names.len());
                groups[g].members.push(member.clone());
                if i == 8 || self.rng.random_range(0..5) == 0 {
                    groups[(g + 1) % license_names.len()]
                        .members
                        .push(member.clone());
                }
            } else if self.rng.random_range(0..2) == 0 {
                // Only in a nested group of a license group: counted only transitively.
                groups[nested_index].members.push(member.clone());
            }
            if self.rng.random_range(0..3) == 0 {
                let d = license_names.len() + self.rng.random_range(0..decoy_names.len());
                groups[d].members.push(member);
            }
            graph_users.push(user);
        }
        // Nesting, devices and service principals inside license groups.
        let nested_id = groups[nested_index].id.clone();
        groups[2].members.push(Member::Group { id: nested_id });
        let device = Member::Device {
            id: self.guid(),
            display_name: "CONTOSO-LAPTOP-17".into(),
        };
        let sp = Member::ServicePrincipal {
            id: self.guid(),
            display_name: "Backup Service".into(),
        };
        groups[0].members.push(device);
        groups[1].members.push(sp);
        // Procore-only people: subcontractors who hold no Microsoft license.
        for i in 0..(n / 10).max(if n > 0 { 1 } else { 0 }) {
            add_procore(
                &mut procore_users,
                format!("sub{i}@buildright-contractors.com"),
                format!("sub{i}@buildright-contractors.com"),
                "Sub",
                &format!("Contractor {i}"),
                true,
            );
        }
        // A decoy that only differs in case. The directory's startswith is
        // case-insensitive, so the filter returns it; only the component's
        // exact re-check keeps these people out. Made last, so the rest of
        // the tenant is the same as before it existed.
        groups.push(GraphGroup {
            id: self.guid(),
            display_name: "license – microsoft old".into(),
            members: unlicensed,
        });
        Scenario {
            tenant_id: "8f6c2b6e-1d3a-4c55-9a7e-5b2f0c4d9e11".into(),
            graph_users,
            groups,
            company_id: 4242,
            project_ids: vec![1001, 1002],
            permission_template_ids: vec![77, 78],
            procore_users,
            project_users: Vec::new(),
            mail_from: "it-automation@contoso.com".into(),
            mail_to: "it-team@contoso.com".into(),
            taken_elsewhere: Vec::new(),
            index: OnceLock::new(),
        }
    }
}

fn mixed_case(s: &str) -> String {
    s.char_indices()
        .map(|(i, c)| {
            if i % 3 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Small tenants written by hand, person by person, for tests whose
/// expected outcome is written by hand too (not computed by
/// [`Scenario::expected_sync`]). Ids are made up in order, so the same
/// calls give the same tenant; they stay unique while entries are only
/// added.
impl Scenario {
    /// A tenant with no people and no groups but the report's mailbox,
    /// with the ids the generated tenants use (company 4242, project 1001
    /// with template 77).
    pub fn hand_written() -> Scenario {
        let mut scenario = Scenario::generate(0, 1);
        scenario.groups.clear();
        scenario.procore_users.clear();
        scenario
            .graph_users
            .retain(|u| u.mail.as_deref() == Some(&*scenario.mail_from));
        scenario
    }

    fn next_guid(&self) -> String {
        let n = self.graph_users.len() + self.groups.len() + 1;
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    /// Adds a group named `display_name`; returns its id.
    pub fn add_group(&mut self, display_name: &str) -> String {
        let id = self.next_guid();
        self.groups.push(GraphGroup {
            id: id.clone(),
            display_name: display_name.to_string(),
            members: Vec::new(),
        });
        id
    }

    /// Adds an enabled Graph user with this `mail` and UPN, a direct member
    /// of the groups with these ids; returns it for further changes
    /// (`account_enabled`, `given_name`…). The display name's first word is
    /// its given name, the rest its surname.
    pub fn add_user(
        &mut self,
        display_name: &str,
        mail: Option<&str>,
        user_principal_name: &str,
        group_ids: &[&str],
    ) -> &mut GraphUser {
        let id = self.next_guid();
        for group in self
            .groups
            .iter_mut()
            .filter(|g| group_ids.contains(&&*g.id))
        {
            group.members.push(Member::User { id: id.clone() });
        }
        let (given, surname) = match display_name.split_once(' ') {
            Some((given, surname)) => (Some(given.to_string()), Some(surname.to_string())),
            None => (Some(display_name.to_string()), None),
        };
        self.graph_users.push(GraphUser {
            id,
            display_name: display_name.to_string(),
            given_name: given,
            surname,
            mail: mail.map(str::to_string),
            user_principal_name: user_principal_name.to_string(),
            account_enabled: true,
            job_title: None,
        });
        let last = self.graph_users.len() - 1;
        &mut self.graph_users[last]
    }

    /// Adds a user to this Procore company; returns it.
    pub fn add_procore_user(
        &mut self,
        login: &str,
        email_address: &str,
        is_active: bool,
    ) -> &mut ProcoreUser {
        let id = self
            .procore_users
            .iter()
            .map(|u| u.id)
            .max()
            .unwrap_or(2000)
            + 1;
        let stamp = "2025-06-01T12:00:00Z".to_string();
        self.procore_users.push(ProcoreUser {
            id,
            login: login.to_string(),
            email_address: email_address.to_string(),
            first_name: "Existing".into(),
            last_name: format!("User {id}"),
            is_active,
            is_employee: true,
            job_title: None,
            created_by_api: false,
            created_at: stamp.clone(),
            updated_at: stamp,
        });
        let last = self.procore_users.len() - 1;
        &mut self.procore_users[last]
    }
}

/// Changes to the directory between runs, as an admin makes them: a member
/// leaves or joins a group, an account is disabled, a user is deleted.
impl Scenario {
    /// Removes `member_id` from the group's direct members; false when the
    /// group does not exist or does not hold it.
    pub fn remove_member(&mut self, group_id: &str, member_id: &str) -> bool {
        let Some(group) = self.groups.iter_mut().find(|g| g.id == group_id) else {
            return false;
        };
        let before = group.members.len();
        group.members.retain(|m| m.id() != member_id);
        group.members.len() != before
    }

    /// Makes an existing user a direct member of the group; false when
    /// either does not exist or the user is already a member.
    pub fn add_member(&mut self, group_id: &str, user_id: &str) -> bool {
        if self.user(user_id).is_none() {
            return false;
        }
        let Some(group) = self.groups.iter_mut().find(|g| g.id == group_id) else {
            return false;
        };
        if group.members.iter().any(|m| m.id() == user_id) {
            return false;
        }
        group.members.push(Member::User {
            id: user_id.to_string(),
        });
        true
    }

    /// Enables or disables an Entra account; false when there is no such user.
    pub fn set_account_enabled(&mut self, user_id: &str, enabled: bool) -> bool {
        match self.graph_users.iter_mut().find(|u| u.id == user_id) {
            Some(u) => {
                u.account_enabled = enabled;
                true
            }
            None => false,
        }
    }

    /// Sets (or, with `None`, clears) a user's `mail`, as when Exchange
    /// provisions a mailbox after the license or an admin changes the
    /// address; false when there is no such user.
    pub fn set_mail(&mut self, user_id: &str, mail: Option<&str>) -> bool {
        match self.graph_users.iter_mut().find(|u| u.id == user_id) {
            Some(u) => {
                u.mail = mail.map(str::to_string);
                true
            }
            None => false,
        }
    }

    /// Deletes a user, who leaves every group as in Entra; returns the user
    /// and the ids of the groups it left, or `None` when there is no such
    /// user.
    pub fn delete_user(&mut self, user_id: &str) -> Option<(GraphUser, Vec<String>)> {
        let position = self.graph_users.iter().position(|u| u.id == user_id)?;
        let user = self.graph_users.remove(position);
        // Positions after it moved: look-ups must not fall back to scans.
        self.index = OnceLock::new();
        let mut left = Vec::new();
        for group in &mut self.groups {
            let before = group.members.len();
            group.members.retain(|m| m.id() != user_id);
            if group.members.len() != before {
                left.push(group.id.clone());
            }
        }
        Some((user, left))
    }

    /// Puts a user (new, or restored from deleted items) into the
    /// directory, a direct member of those of `group_ids` that exist;
    /// returns the ids of the groups it joined. The caller makes sure the
    /// id is free.
    pub fn insert_user(&mut self, user: GraphUser, group_ids: &[String]) -> Vec<String> {
        let mut joined = Vec::new();
        for group in &mut self.groups {
            if group_ids.contains(&group.id) && !group.members.iter().any(|m| m.id() == user.id) {
                group.members.push(Member::User {
                    id: user.id.clone(),
                });
                joined.push(group.id.clone());
            }
        }
        self.graph_users.push(user);
        // Built again on the next look-up, so the new user is found
        // without a scan.
        self.index = OnceLock::new();
        joined
    }
}

impl Member {
    /// The member's object id.
    pub fn id(&self) -> &str {
        match self {
            Member::User { id }
            | Member::Group { id }
            | Member::Device { id, .. }
            | Member::ServicePrincipal { id, .. } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    /// The oracle against an outcome worked out by hand from the rules.
    #[test]
    fn the_oracle_agrees_with_a_hand_written_outcome() {
        let mut s = Scenario::hand_written();
        let e3 = s.add_group("License – Microsoft 365 E3");
        let office = s.add_group("License – Office 365 E1");
        let hyphen = s.add_group("License - Microsoft 365 E3");
        let lower = s.add_group("license – microsoft old");
        s.add_user(
            "Ana Lima",
            Some(" Ana@Contoso.com "),
            "ana@contoso.com",
            &[&e3],
        );
        s.add_user(
            "Ben Ode",
            Some("ben@contoso.com"),
            "ben@contoso.com",
            &[&hyphen],
        );
        s.add_user(
            "Cy Ray",
            Some("cy@contoso.com"),
            "cy@contoso.com",
            &[&lower],
        );
        s.add_user("Di Fox", None, "Di@contoso.com", &[&e3, &office]);
        s.add_user("Ed Moe", Some("ed@contoso.com"), "ed@contoso.com", &[&e3])
            .account_enabled = false;
        s.add_user(
            "Flo Ng",
            Some("flo@contoso.com"),
            "flo@contoso.com",
            &[&office],
        );
        s.add_user("Gil Bo", Some("gil@contoso.com"), "gil@contoso.com", &[&e3]);
        s.add_procore_user("FLO@contoso.com", "flo.ng@contoso.com", true);
        s.add_procore_user("gil.bo", "gil@contoso.com", false);
        let expected = s.expected_sync();
        assert_eq!(
            expected.to_create,
            keys(&["ana@contoso.com", "di@contoso.com"])
        );
        assert_eq!(expected.present, keys(&["flo@contoso.com"]));
        assert_eq!(expected.inactive, keys(&["gil@contoso.com"]));
        assert_eq!(expected.skipped_disabled, 1);
        // Only what was added: the report's mailbox and these seven.
        assert_eq!(s.graph_users.len(), 8);
        assert_eq!((s.groups.len(), s.procore_users.len()), (4, 2));
    }
}
