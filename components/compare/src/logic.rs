//! Who is missing from Procore, and who leaves or returns.
//!
//! Input: `{"people": [person…], "procore_users": [{id, login,
//! email_address, is_active, …}…]}` and the lifecycle settings (below). A
//! person matches a Procore user when its key equals the user's login or
//! email address, trimmed and without case, active or not (the identity
//! rule, `sluice-identity`). Output: `missing` (people to create),
//! `present` (`{key, procore_id}`), `present_inactive` (the person plus
//! `procore_id`: reported, never created again), `counts`, and the
//! lifecycle half [`crate::lifecycle`] computes from the managed-people
//! records in the flow's state: `leavers`, `leaving`, `returners`,
//! `inactive_unmanaged` and the mass-change `guard`. One hash index makes
//! the match linear in both lists.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use sluice_guest::{Context, JsonSchema, StepError, state};
use sluice_guest_services::procore::Id;
use sluice_guest_services::sync::{
    Counts, Diff, HOLDERS_KEY, Holders, InactivePerson, MANAGED_PREFIX, Managed, Person, Present,
    ProcoreUser, managed_key,
};
use sluice_identity::Key;

use crate::input::{PersonRef, UserRef};
use crate::keys;
use crate::lifecycle::{self, Known, Policy, Write};

/// The people and the Procore users to match, and the lifecycle settings.
// Both lists are read in place (`crate::input`); the schema says what they
// hold, as the shared types define it.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input<'a> {
    /// License holders (as `graph-group-members` lists them).
    #[serde(borrow)]
    #[schemars(with = "Vec<Person>")]
    pub people: Vec<PersonRef<'a>>,
    /// Every Procore company user, active and inactive.
    #[serde(borrow)]
    #[schemars(with = "Vec<ProcoreUser>")]
    pub procore_users: Vec<UserRef<'a>>,
    /// How many license groups matched (`graph-groups`' `count`): none at
    /// all holds every deactivation for an admin.
    #[serde(default)]
    pub license_groups: Option<usize>,
    /// Keys of license-group members whose Entra account is disabled
    /// (`graph-group-members`' `disabled`).
    #[serde(default)]
    pub disabled: Vec<String>,
    /// Keys of managed people whose Entra user is gone
    /// (`graph-group-members`' `gone`).
    #[serde(default)]
    pub gone: Vec<String>,
    /// Every active Procore user whose login is in one of these domains is
    /// managed (deactivated when it holds no license).
    #[serde(default)]
    pub managed_domains: Vec<String>,
    /// How long someone holds no license before being a leaver, such as
    /// `0s`, `12h` or `3days`.
    #[serde(default)]
    pub leaver_grace: Option<String>,
    /// Keys whose deactivation an admin rejected (the deactivate step's
    /// open plan, `${run.approvals.deactivate.rejected}`): decided, so they
    /// do not keep the guard's old holder count.
    #[serde(default)]
    pub rejected: Vec<String>,
}

#[derive(Clone, Copy)]
struct Match<'a> {
    id: &'a Id,
    active: bool,
    index: usize,
}

pub fn compare_input(input: Input<'_>, context: &Context) -> Result<Diff, StepError> {
    let policy = policy(&input, context)?;
    let known = read_known()?;
    let mut diff = compare(&input.people, &input.procore_users);
    // Each write goes to the host as it is made: a first run adopts every
    // match, and 100k records held at once would be tens of MiB.
    let mut failed = None;
    lifecycle::apply_with(
        &mut diff,
        &input.people,
        &input.procore_users,
        &known,
        &policy,
        &mut |write| {
            if failed.is_some() {
                return;
            }
            let written = match write {
                Write::Managed(key, record) => state::set(&managed_key(&key), &record),
                Write::Holders(holders) => state::set(HOLDERS_KEY, &holders),
            };
            failed = written.err();
        },
    );
    match failed {
        Some(e) => Err(e),
        None => Ok(diff),
    }
}

/// The lifecycle settings of `input`, checked.
pub fn policy(input: &Input<'_>, context: &Context) -> Result<Policy, StepError> {
    let now = lifecycle::parse_time(context.started_at()).ok_or_else(|| {
        StepError::internal(format!(
            "the run's start time `{}` is not RFC 3339",
            context.started_at()
        ))
    })?;
    let grace = match input.leaver_grace.as_deref().map(str::trim) {
        None | Some("") => std::time::Duration::ZERO,
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            StepError::bad_input(format!(
                "`leaver_grace = \"{text}\"` is not a duration ({e}); write for example `0s`, `12h` or `3days`"
            ))
        })?,
    };
    let keys = |list: &[String]| {
        list.iter()
            .filter_map(|k| Key::of(k))
            .collect::<HashSet<_>>()
    };
    Ok(Policy {
        domains: input
            .managed_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_lowercase())
            .filter(|d| !d.is_empty())
            .collect(),
        grace,
        license_groups: input.license_groups,
        disabled: keys(&input.disabled),
        gone: keys(&input.gone),
        rejected: keys(&input.rejected),
        now,
    })
}

/// The managed-people records and the holder count, from the flow's state.
fn read_known() -> Result<Known, StepError> {
    let mut managed_people = BTreeMap::new();
    for entry in state::entries::<Managed>(MANAGED_PREFIX) {
        let (state_key, record) = entry?;
        if let Some(key) = state_key.strip_prefix(MANAGED_PREFIX) {
            managed_people.insert(key.to_string(), record);
        }
    }
    Ok(Known {
        managed: managed_people,
        holders: state::get::<Holders>(HOLDERS_KEY)?,
    })
}

/// Every Procore login and email address, keyed, to the user it belongs
/// to; an active account wins over an inactive one with the same address.
fn index<'a>(users: &'a [UserRef<'_>]) -> HashMap<Cow<'a, str>, Match<'a>> {
    let mut index: HashMap<Cow<'a, str>, Match<'a>> = HashMap::with_capacity(users.len() * 2);
    for (i, user) in users.iter().enumerate() {
        let candidate = Match {
            id: &user.id,
            active: user.is_active,
            index: i,
        };
        for field in [&user.login, &user.email_address] {
            let Some(key) = field.as_deref().and_then(keys::normal) else {
                continue;
            };
            let entry = index.entry(key).or_insert(candidate);
            if candidate.active && !entry.active {
                *entry = candidate;
            }
        }
    }
    index
}

pub fn compare(people: &[PersonRef<'_>], users: &[UserRef<'_>]) -> Diff {
    let index = index(users);
    let mut diff = Diff::default();
    let mut matched = vec![false; users.len()];
    let mut seen: HashSet<Cow<'_, str>> = HashSet::with_capacity(people.len());
    for person in people {
        let Some(key) = keys::normal(&person.key) else {
            continue;
        };
        if seen.contains(&key) {
            continue;
        }
        match index.get(&key) {
            Some(m) => {
                matched[m.index] = true;
                if m.active {
                    diff.present.push(Present {
                        key: key.to_string(),
                        procore_id: m.id.clone(),
                    });
                } else {
                    diff.present_inactive.push(InactivePerson {
                        person: person.to_person(),
                        procore_id: m.id.clone(),
                    });
                }
            }
            None => diff.missing.push(person.to_person()),
        }
        seen.insert(key);
    }
    diff.counts = Counts {
        people: seen.len(),
        missing: diff.missing.len(),
        present: diff.present.len(),
        present_inactive: diff.present_inactive.len(),
        procore_only: matched.iter().filter(|m| !**m).count(),
        ..Counts::default()
    };
    diff
}

/// [`compare`] of the owned forms, for tests.
#[cfg(test)]
pub fn diff(people: &[Person], users: &[ProcoreUser]) -> Diff {
    use crate::input::from_owned;
    let people: Vec<PersonRef> = people.iter().map(from_owned::person).collect();
    let users: Vec<UserRef> = users.iter().map(from_owned::user).collect();
    compare(&people, &users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(key: &str) -> Person {
        Person {
            key: key.to_string(),
            id: None,
            mail: None,
            user_principal_name: None,
            display_name: Some(key.to_string()),
            given_name: None,
            surname: None,
            groups: Vec::new(),
        }
    }

    fn user(id: u64, login: &str, email: &str, active: bool) -> ProcoreUser {
        ProcoreUser {
            id: Id::Number(id),
            login: Some(login.to_string()),
            email_address: Some(email.to_string()),
            first_name: None,
            last_name: None,
            is_active: active,
        }
    }

    fn present(key: &str, id: u64) -> Present {
        Present {
            key: key.to_string(),
            procore_id: Id::Number(id),
        }
    }

    #[test]
    fn matches_by_login_or_email_without_case_and_keeps_inactive_apart() {
        let people = vec![
            person("a@x.com"),
            person("b@x.com"),
            person("c@x.com"),
            person("d@x.com"),
        ];
        let users = vec![
            user(1, " A@X.com ", "other@x.com", true),
            user(2, "bee", "B@x.COM", true),
            user(3, "c@x.com", "c@x.com", false),
            user(4, "sub@contractor.com", "sub@contractor.com", true),
        ];
        let out = diff(&people, &users);
        assert_eq!(out.missing, vec![person("d@x.com")]);
        assert_eq!(
            out.present,
            vec![present("a@x.com", 1), present("b@x.com", 2)]
        );
        assert_eq!(out.present_inactive[0].procore_id, Id::Number(3));
        assert_eq!(
            out.counts,
            Counts {
                people: 4,
                missing: 1,
                present: 2,
                present_inactive: 1,
                procore_only: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn the_input_schema_is_the_shared_types() {
        // The lists are read through borrowed types; `describe` must still
        // say what `graph-group-members` and `procore-users` write.
        let text = sluice_guest::glue::schema::<Input>();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let items = |field: &str| schema["properties"][field]["items"]["$ref"].clone();
        assert_eq!(items("people"), "#/$defs/Person");
        assert_eq!(items("procore_users"), "#/$defs/ProcoreUser");
        let person = &schema["$defs"]["Person"];
        assert_eq!(person["required"], serde_json::json!(["key"]));
        assert!(person["properties"]["userPrincipalName"].is_object());
        assert!(schema["$defs"]["ProcoreUser"]["properties"]["is_active"].is_object());
    }

    #[test]
    fn an_active_account_beats_an_inactive_one() {
        let users = vec![
            user(1, "a@x.com", "a@x.com", false),
            user(2, "a2", "A@x.com", true),
        ];
        let out = diff(&[person("a@x.com")], &users);
        assert_eq!(out.present, vec![present("a@x.com", 2)]);
        assert_eq!(out.counts.present_inactive, 0);
    }

    #[test]
    fn the_same_person_twice_is_one_person() {
        let out = diff(&[person("a@x.com"), person(" A@x.com")], &[]);
        assert_eq!(out.counts.missing, 1);
    }

    #[test]
    fn a_hundred_thousand_by_a_hundred_thousand() {
        let n = 100_000;
        let people: Vec<Person> = (0..n)
            .map(|i| person(&format!("user{i}@contoso.com")))
            .collect();
        // Every tenth person is missing; every 50th present one is inactive; plus n/10 Procore-only users.
        let mut users: Vec<ProcoreUser> = (0..n)
            .filter(|i| i % 10 != 0)
            .map(|i| user(i as u64, &format!("USER{i}@contoso.com"), "", i % 50 != 1))
            .collect();
        users.extend(
            (0..n / 10).map(|i| user((n + i) as u64, &format!("sub{i}@contractor.com"), "", true)),
        );
        let out = diff(&people, &users);
        assert_eq!(out.counts.missing, n / 10);
        assert_eq!(out.counts.present_inactive, n / 50);
        assert_eq!(out.counts.procore_only, n / 10);
        assert_eq!(out.missing[0].key, "user0@contoso.com");
    }
}
