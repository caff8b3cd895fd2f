//! Who is missing from Procore.
//!
//! Input: `{"people": [person…], "procore_users": [{id, login,
//! email_address, is_active, …}…]}`. A person matches a Procore user when its
//! key equals the user's login or email address, trimmed and without case,
//! active or not (DESIGN.md's identity rules). Output: `missing` (people to
//! create), `present` (`{key, procore_id}`), `present_inactive` (the person
//! plus `procore_id`: reported, never created again) and `counts`. One hash
//! index makes it linear in both lists.

use std::collections::{HashMap, HashSet};

use sluice_guest::{StepError, Value, bad_input, json};

pub fn normalise(s: &str) -> String {
    s.trim().to_lowercase()
}

#[derive(Clone, Copy)]
struct Match<'a> {
    id: &'a Value,
    active: bool,
    index: usize,
}

pub fn compare_input(input: Value) -> Result<Value, StepError> {
    let people = input
        .get("people")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_input("`people` must be a list"))?;
    let users = input
        .get("procore_users")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_input("`procore_users` must be a list"))?;
    Ok(compare(people, users))
}

pub fn compare(people: &[Value], users: &[Value]) -> Value {
    let mut index: HashMap<String, Match<'_>> = HashMap::with_capacity(users.len() * 2);
    for (i, user) in users.iter().enumerate() {
        // Procore's inactive list may omit is_active; absent means active only on the active list.
        let active = user
            .get("is_active")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let candidate = Match {
            id: user.get("id").unwrap_or(&Value::Null),
            active,
            index: i,
        };
        for field in ["login", "email_address"] {
            let Some(value) = user.get(field).and_then(Value::as_str) else {
                continue;
            };
            let key = normalise(value);
            if key.is_empty() {
                continue;
            }
            let entry = index.entry(key).or_insert(candidate);
            // An active account wins over an inactive one with the same address.
            if active && !entry.active {
                *entry = candidate;
            }
        }
    }
    let (mut missing, mut present, mut present_inactive) = (Vec::new(), Vec::new(), Vec::new());
    let mut matched: HashSet<usize> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    for person in people {
        let key = normalise(person.get("key").and_then(Value::as_str).unwrap_or(""));
        if key.is_empty() || !seen.insert(key.clone()) {
            continue;
        }
        match index.get(&key) {
            Some(m) => {
                matched.insert(m.index);
                if m.active {
                    present.push(json!({ "key": key, "procore_id": m.id }));
                } else {
                    let mut entry = person.clone();
                    if let Value::Object(map) = &mut entry {
                        map.insert("procore_id".into(), m.id.clone());
                    }
                    present_inactive.push(entry);
                }
            }
            None => missing.push(person.clone()),
        }
    }
    let counts = json!({
        "people": seen.len(),
        "missing": missing.len(),
        "present": present.len(),
        "present_inactive": present_inactive.len(),
        "procore_only": users.len() - matched.len(),
    });
    json!({ "missing": missing, "present": present, "present_inactive": present_inactive, "counts": counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(key: &str) -> Value {
        json!({ "key": key, "displayName": key })
    }

    fn user(id: u64, login: &str, email: &str, active: bool) -> Value {
        json!({ "id": id, "login": login, "email_address": email, "is_active": active })
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
        assert_eq!(out["missing"], json!([person("d@x.com")]));
        assert_eq!(
            out["present"],
            json!([{"key": "a@x.com", "procore_id": 1}, {"key": "b@x.com", "procore_id": 2}])
        );
        assert_eq!(out["present_inactive"][0]["procore_id"], json!(3));
        assert_eq!(
            out["counts"],
            json!({"people": 4, "missing": 1, "present": 2, "present_inactive": 1, "procore_only": 1})
        );
    }

    #[test]
    fn an_active_account_beats_an_inactive_one() {
        let users = vec![
            user(1, "a@x.com", "a@x.com", false),
            user(2, "a2", "A@x.com", true),
        ];
        let out = compare(&[person("a@x.com")], &users);
        assert_eq!(out["present"], json!([{"key": "a@x.com", "procore_id": 2}]));
        assert_eq!(out["counts"]["present_inactive"], json!(0));
    }

    #[test]
    fn the_same_person_twice_is_one_person() {
        let out = compare(&[person("a@x.com"), person(" A@x.com")], &[]);
        assert_eq!(out["counts"]["missing"], json!(1));
    }

    #[test]
    fn a_hundred_thousand_by_a_hundred_thousand() {
        let n = 100_000;
        let people: Vec<Value> = (0..n)
            .map(|i| person(&format!("user{i}@contoso.com")))
            .collect();
        // Every tenth person is missing; every 50th present one is inactive; plus n/10 Procore-only users.
        let mut users: Vec<Value> = (0..n)
            .filter(|i| i % 10 != 0)
            .map(|i| user(i as u64, &format!("USER{i}@contoso.com"), "", i % 50 != 1))
            .collect();
        users.extend(
            (0..n / 10).map(|i| user((n + i) as u64, &format!("sub{i}@contractor.com"), "", true)),
        );
        let out = compare(&people, &users);
        assert_eq!(out["counts"]["missing"], json!(n / 10));
        assert_eq!(out["counts"]["present_inactive"], json!(n / 50));
        assert_eq!(out["counts"]["procore_only"], json!(n / 10));
        assert_eq!(out["missing"][0]["key"], json!("user0@contoso.com"));
    }
}
