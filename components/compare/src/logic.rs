//! Who is missing from Procore.
//!
//! Input: `{"people": [person…], "procore_users": [{id, login,
//! email_address, is_active, …}…]}`. A person matches a Procore user when its
//! key equals the user's login or email address, trimmed and without case,
//! active or not (the identity rule, `sluice-identity`). Output: `missing` (people to
//! create), `present` (`{key, procore_id}`), `present_inactive` (the person
//! plus `procore_id`: reported, never created again) and `counts`. One hash
//! index makes it linear in both lists.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use sluice_guest::{Context, JsonSchema, StepError};
use sluice_guest_services::procore::Id;
use sluice_guest_services::sync::{Counts, Diff, InactivePerson, Person, Present, ProcoreUser};
use sluice_identity::Key;

/// The people and the Procore users to match.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// License holders (as `graph-group-members` lists them).
    pub people: Vec<Person>,
    /// Every Procore company user, active and inactive.
    pub procore_users: Vec<ProcoreUser>,
}

#[derive(Clone, Copy)]
struct Match<'a> {
    id: &'a Id,
    active: bool,
    index: usize,
}

pub fn compare_input(input: Input, _context: &Context) -> Result<Diff, StepError> {
    Ok(compare(&input.people, &input.procore_users))
}

/// Every Procore login and email address, keyed, to the user it belongs
/// to; an active account wins over an inactive one with the same address.
fn index(users: &[ProcoreUser]) -> HashMap<Key, Match<'_>> {
    let mut index: HashMap<Key, Match<'_>> = HashMap::with_capacity(users.len() * 2);
    for (i, user) in users.iter().enumerate() {
        let candidate = Match {
            id: &user.id,
            active: user.is_active,
            index: i,
        };
        for field in [&user.login, &user.email_address] {
            let Some(key) = field.as_deref().and_then(Key::of) else {
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

pub fn compare(people: &[Person], users: &[ProcoreUser]) -> Diff {
    let index = index(users);
    let mut diff = Diff::default();
    let mut matched: HashSet<usize> = HashSet::new();
    let mut seen: HashSet<Key> = HashSet::new();
    for person in people {
        let Some(key) = Key::of(&person.key) else {
            continue;
        };
        if !seen.insert(key.clone()) {
            continue;
        }
        match index.get(&key) {
            Some(m) => {
                matched.insert(m.index);
                if m.active {
                    diff.present.push(Present {
                        key: key.into_string(),
                        procore_id: m.id.clone(),
                    });
                } else {
                    diff.present_inactive.push(InactivePerson {
                        person: person.clone(),
                        procore_id: m.id.clone(),
                    });
                }
            }
            None => diff.missing.push(person.clone()),
        }
    }
    diff.counts = Counts {
        people: seen.len(),
        missing: diff.missing.len(),
        present: diff.present.len(),
        present_inactive: diff.present_inactive.len(),
        procore_only: users.len() - matched.len(),
    };
    diff
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
        let out = compare(&people, &users);
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
                procore_only: 1
            }
        );
    }

    #[test]
    fn an_active_account_beats_an_inactive_one() {
        let users = vec![
            user(1, "a@x.com", "a@x.com", false),
            user(2, "a2", "A@x.com", true),
        ];
        let out = compare(&[person("a@x.com")], &users);
        assert_eq!(out.present, vec![present("a@x.com", 2)]);
        assert_eq!(out.counts.present_inactive, 0);
    }

    #[test]
    fn the_same_person_twice_is_one_person() {
        let out = compare(&[person("a@x.com"), person(" A@x.com")], &[]);
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
        let out = compare(&people, &users);
        assert_eq!(out.counts.missing, n / 10);
        assert_eq!(out.counts.present_inactive, n / 50);
        assert_eq!(out.counts.procore_only, n / 10);
        assert_eq!(out.missing[0].key, "user0@contoso.com");
    }
}
