//! One entry per person from the members of the license groups: enabled
//! `#microsoft.graph.user` objects keyed by the identity rule
//! (`sluice-identity`: mail, else UPN, trimmed, lower-cased); the same
//! person in several groups is one entry listing every group.

use std::collections::{BTreeMap, BTreeSet};

use sluice_guest_services::sync::Person;
use sluice_identity::Key;

use crate::Output;
use crate::known::{Entry, User};

/// The identity key of a Graph user, or `None` when it has neither address.
pub fn key(user: &User) -> Option<Key> {
    Key::of_graph_user(user.mail.as_deref(), user.user_principal_name.as_deref())
}

/// Folds the member objects into one entry per person.
#[derive(Default)]
pub struct People<'a> {
    by_key: BTreeMap<Key, (Person, BTreeSet<&'a str>)>,
    disabled: BTreeSet<Key>,
    non_users: usize,
}

impl<'a> People<'a> {
    /// Adds the object `id`, a member of the groups named `groups`. The
    /// first object of a person (in the order added) gives their names.
    pub fn add(&mut self, id: String, entry: Entry, groups: Vec<&'a str>) {
        if groups.is_empty() {
            return;
        }
        if entry.kind.is_some() {
            // Counted once per group it is in, as a members list shows it.
            self.non_users += groups.len();
            return;
        }
        let Some(user) = entry.user else { return };
        let Some(key) = key(&user) else { return };
        if user.account_enabled != Some(true) {
            self.disabled.insert(key);
            return;
        }
        let held = &mut self.by_key;
        let (_, named) = held.entry(key).or_insert_with_key(|key| {
            let person = Person {
                key: key.to_string(),
                id: Some(id),
                mail: user.mail,
                user_principal_name: user.user_principal_name,
                display_name: user.display_name,
                given_name: user.given_name,
                surname: user.surname,
                groups: Vec::new(),
            };
            (person, BTreeSet::new())
        });
        named.extend(groups);
    }

    pub fn finish(self) -> Output {
        // Someone disabled in one place but enabled elsewhere is still enabled.
        let disabled: Vec<String> = self
            .disabled
            .into_iter()
            .filter(|k| !self.by_key.contains_key(k))
            .map(Key::into_string)
            .collect();
        let people: Vec<Person> = self
            .by_key
            .into_values()
            .map(|(mut person, groups)| {
                person.groups = groups.into_iter().map(str::to_string).collect();
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
    use crate::known::Member;
    use serde_json::{Value, json};

    fn entry(value: Value) -> Entry {
        Entry::of(Member::of(&value).unwrap())
    }

    fn user(mail: Option<&str>, upn: &str, enabled: bool) -> Entry {
        entry(
            json!({"@odata.type": "#microsoft.graph.user", "id": upn, "mail": mail, "userPrincipalName": upn, "accountEnabled": enabled, "givenName": "G", "surname": "S", "displayName": "G S"}),
        )
    }

    #[test]
    fn keys_follow_the_identity_rules() {
        let k = |e: Entry| key(&e.user.unwrap()).unwrap().into_string();
        assert_eq!(
            k(user(Some("  Alice.Smith@Contoso.com "), "x@y", true)),
            "alice.smith@contoso.com"
        );
        assert_eq!(
            k(user(Some("  "), "Bob@Contoso.onmicrosoft.com", true)),
            "bob@contoso.onmicrosoft.com"
        );
        assert_eq!(k(user(None, "Carl@c.com", true)), "carl@c.com");
        assert_eq!(key(&entry(json!({})).user.unwrap()), None);
    }

    #[test]
    fn one_entry_per_person_only_enabled_users() {
        const E3: &str = "License – Microsoft E3";
        const E1: &str = "License – Office E1";
        let mut p = People::default();
        p.add("a1".into(), user(Some("a@x.com"), "a", true), vec![E3]);
        p.add("a2".into(), user(Some("A@X.com"), "a", true), vec![E1]);
        p.add("d".into(), user(Some("d@x.com"), "d", false), vec![E1]);
        p.add("e1".into(), user(Some("e@x.com"), "e", false), vec![E1]);
        p.add("e2".into(), user(Some("e@x.com"), "e", true), vec![E3]);
        let device = entry(json!({"@odata.type": "#microsoft.graph.device", "id": "dev"}));
        p.add("dev".into(), device, vec![E1, E3]);
        let group = entry(json!({"@odata.type": "#microsoft.graph.group", "id": "g"}));
        p.add("g".into(), group, vec![E1]);
        let f = entry(json!({"@odata.type": "#microsoft.graph.user", "mail": "f@x.com"}));
        p.add("f".into(), f, vec![E1]);
        p.add("z".into(), user(Some("z@x.com"), "z", true), vec![]);
        let out = p.finish();
        assert_eq!(out.count, 2);
        assert_eq!(out.people[0].key, "a@x.com");
        assert_eq!(out.people[0].id.as_deref(), Some("a1"), "the first one's");
        assert_eq!(out.people[0].groups, [E3, E1]);
        assert_eq!(out.people[1].key, "e@x.com");
        assert_eq!(out.disabled, ["d@x.com", "f@x.com"]);
        assert_eq!(
            out.skipped_disabled, 2,
            "d, and f whose accountEnabled is missing"
        );
        assert_eq!(out.skipped_non_user, 3, "once per group");
    }
}
