//! One entry per person from the members of the license groups: enabled
//! `#microsoft.graph.user` objects keyed by the identity rule
//! (`sluice-identity`: mail, else UPN, trimmed, lower-cased); the same
//! person in several groups is one entry listing every group.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sluice_guest_services::sync::Person;
use sluice_identity::Key;

use crate::Output;

/// The identity key of a Graph user, or `None` when it has neither address.
pub fn key(member: &Value) -> Option<Key> {
    let text = |name: &str| member.get(name).and_then(Value::as_str);
    Key::of_graph_user(text("mail"), text("userPrincipalName"))
}

/// Folds the members of each group into one entry per person.
#[derive(Default)]
pub struct People {
    by_key: BTreeMap<Key, (Person, BTreeSet<String>)>,
    disabled: BTreeSet<Key>,
    non_users: usize,
}

impl People {
    pub fn add(&mut self, group: &str, member: &Value) {
        if member.get("@odata.type").and_then(Value::as_str) != Some("#microsoft.graph.user") {
            self.non_users += 1;
            return;
        }
        let Some(key) = key(member) else { return };
        if member.get("accountEnabled").and_then(Value::as_bool) != Some(true) {
            self.disabled.insert(key);
            return;
        }
        let entry = self.by_key.entry(key.clone()).or_insert_with(|| {
            let text = |name: &str| member.get(name).and_then(Value::as_str).map(str::to_string);
            let person = Person {
                key: key.into_string(),
                id: text("id"),
                mail: text("mail"),
                user_principal_name: text("userPrincipalName"),
                display_name: text("displayName"),
                given_name: text("givenName"),
                surname: text("surname"),
                groups: Vec::new(),
            };
            (person, BTreeSet::new())
        });
        entry.1.insert(group.to_string());
    }

    pub fn finish(self) -> Output {
        // Someone disabled in one place but enabled elsewhere is still enabled.
        let disabled: Vec<String> = self
            .disabled
            .iter()
            .filter(|k| !self.by_key.contains_key(*k))
            .map(|k| k.to_string())
            .collect();
        let people: Vec<Person> = self
            .by_key
            .into_values()
            .map(|(mut person, groups)| {
                person.groups = groups.into_iter().collect();
                person
            })
            .collect();
        Output {
            count: people.len(),
            people,
            skipped_disabled: disabled.len(),
            disabled,
            gone: Vec::new(),
            skipped_non_user: self.non_users,
            read: crate::Read::Full,
            full_because: None,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(mail: Option<&str>, upn: &str, enabled: bool) -> Value {
        json!({"@odata.type": "#microsoft.graph.user", "id": upn, "mail": mail, "userPrincipalName": upn, "accountEnabled": enabled, "givenName": "G", "surname": "S", "displayName": "G S"})
    }

    #[test]
    fn keys_follow_the_identity_rules() {
        let k = |v: &Value| key(v).unwrap().into_string();
        assert_eq!(
            k(&user(Some("  Alice.Smith@Contoso.com "), "x@y", true)),
            "alice.smith@contoso.com"
        );
        assert_eq!(
            k(&user(Some("  "), "Bob@Contoso.onmicrosoft.com", true)),
            "bob@contoso.onmicrosoft.com"
        );
        assert_eq!(k(&user(None, "Carl@c.com", true)), "carl@c.com");
        assert_eq!(key(&json!({})), None);
    }

    #[test]
    fn one_entry_per_person_only_enabled_users() {
        let mut p = People::default();
        p.add("License – Microsoft E3", &user(Some("a@x.com"), "a", true));
        p.add("License – Office E1", &user(Some("A@X.com"), "a", true));
        p.add("License – Office E1", &user(Some("d@x.com"), "d", false));
        p.add("License – Office E1", &user(Some("e@x.com"), "e", false));
        p.add("License – Microsoft E3", &user(Some("e@x.com"), "e", true));
        p.add(
            "License – Office E1",
            &json!({"@odata.type": "#microsoft.graph.device", "id": "dev"}),
        );
        p.add(
            "License – Office E1",
            &json!({"@odata.type": "#microsoft.graph.group", "id": "g"}),
        );
        p.add(
            "License – Office E1",
            &json!({"@odata.type": "#microsoft.graph.user", "mail": "f@x.com"}),
        );
        let out = p.finish();
        assert_eq!(out.count, 2);
        assert_eq!(out.people[0].key, "a@x.com");
        assert_eq!(
            out.people[0].groups,
            ["License – Microsoft E3", "License – Office E1"]
        );
        assert_eq!(
            out.skipped_disabled, 2,
            "d, and f whose accountEnabled is missing"
        );
        assert_eq!(out.skipped_non_user, 2);
    }
}
