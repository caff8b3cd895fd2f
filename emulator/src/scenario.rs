//! Tenants to emulate: the data, a seeded generator of realistic tenants of
//! any size, and the expected outcome of a correct sync computed from the
//! identity rules independently of the flow's components.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

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
                let k = k.trim().to_lowercase();
                if k.is_empty() {
                    continue;
                }
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

/// The key of a Graph user: mail trimmed and lower-cased, else the UPN.
pub fn identity_key(u: &GraphUser) -> Option<String> {
    let mail = u.mail.as_deref().map(str::trim).filter(|m| !m.is_empty());
    let upn = Some(u.user_principal_name.trim()).filter(|m| !m.is_empty());
    mail.or(upn).map(str::to_lowercase)
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
