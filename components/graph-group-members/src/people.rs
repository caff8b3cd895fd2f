//! One entry per person from the members of the license groups: enabled
//! `#microsoft.graph.user` objects keyed by the identity rule
//! (`sluice-identity`: mail, else UPN, trimmed, lower-cased); the same
//! person in several groups is one entry listing every group.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use sluice_identity::Key;

use crate::Output;
use crate::id::Id;
use crate::known::{Entry, Groups};
use crate::user::User;

/// The identity key of a Graph user, or `None` when it has neither address.
pub fn key(user: &User) -> Option<Key> {
    Key::of_graph_user(user.mail(), user.user_principal_name())
}

/// Folds the member objects into one entry per person.
pub struct People {
    /// The tracked groups' display names, by position.
    names: Vec<String>,
    /// Every enabled user with a key, in the order added; sorted by key
    /// and merged per person at the end (a million inserts into a tree by
    /// key would read a key's text at every step down the tree).
    held: Vec<Held>,
    /// Members whose account is disabled, with the first of their ids.
    disabled: BTreeMap<Key, Id>,
    non_users: usize,
    /// The ids of the members that are not users (devices, groups…).
    others: Vec<Id>,
}

/// A person as held until the output is written: the first object's id
/// and properties (moved, not copied), and the groups of all of them.
#[derive(Debug)]
struct Held {
    /// The key's first 16 bytes (zero after its end) as big-endian
    /// numbers: they order as the key does, so most comparisons while
    /// sorting never read the key's text.
    head: [u32; 4],
    /// The key, unless it is the user's mail as it is (most are).
    own_key: Option<Box<str>>,
    id: Id,
    user: User,
    groups: Groups,
}

impl Held {
    fn new(key: Key, id: Id, user: User, groups: Groups) -> Held {
        let head = head_of(key.as_str());
        let own_key = (user.mail() != Some(key.as_str())).then(|| key.into_string().into());
        Held {
            head,
            own_key,
            id,
            user,
            groups,
        }
    }

    fn key(&self) -> &str {
        match &self.own_key {
            Some(key) => key,
            None => self.user.mail().unwrap_or_default(),
        }
    }

    fn by_key(&self, other: &Held) -> Ordering {
        self.head
            .cmp(&other.head)
            .then_with(|| self.key().cmp(other.key()))
    }
}

fn head_of(key: &str) -> [u32; 4] {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key.as_bytes()[..n]);
    std::array::from_fn(|i| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    })
}

impl People {
    /// `names[i]` is the display name of tracked group `i`.
    #[cfg(test)]
    pub fn new(names: Vec<String>) -> People {
        People::with_capacity(names, 0)
    }

    /// Room for `objects` objects, so the list is not grown (and held
    /// twice while it grows) as they are added.
    pub fn with_capacity(names: Vec<String>, objects: usize) -> People {
        People {
            names,
            held: Vec::with_capacity(objects),
            disabled: BTreeMap::new(),
            non_users: 0,
            others: Vec::new(),
        }
    }

    /// Adds the object `id` (in the groups its entry lists). Of the objects
    /// of one person, the one with the first id gives their names.
    pub fn add(&mut self, id: Id, entry: Entry) {
        let tracked = self.names.len();
        let groups: Groups = entry
            .groups
            .iter()
            .filter(|&g| usize::from(g) < tracked)
            .collect();
        if groups.is_empty() {
            return;
        }
        if entry.kind.is_some() {
            // Counted once per group it is in, as a members list shows it.
            self.non_users += groups.iter().count();
            self.others.push(id);
            return;
        }
        let Some(user) = entry.user else { return };
        let Some(key) = key(&user) else { return };
        if user.account_enabled() != Some(true) {
            let first = self.disabled.entry(key).or_insert_with(|| id.clone());
            if id < *first {
                *first = id;
            }
            return;
        }
        self.held.push(Held::new(key, id, user, groups));
    }

    /// The people, and the output but for its `people` list.
    pub fn finish(mut self) -> (Roster, Output) {
        self.held
            .sort_unstable_by(|a, b| a.by_key(b).then_with(|| a.id.cmp(&b.id)));
        // `dedup_by` hands each later object with the one kept before it.
        self.held.dedup_by(|later, first| {
            let same = later.by_key(first) == Ordering::Equal;
            if same {
                first.groups.extend(&later.groups);
            }
            same
        });
        self.held.shrink_to_fit();
        self.others.sort_unstable();
        let people = Roster {
            names: self.names,
            people: self.held,
            others: self.others,
        };
        // Someone disabled in one place but enabled elsewhere is still enabled.
        let disabled_ids: BTreeMap<String, String> = self
            .disabled
            .into_iter()
            .filter(|(k, _)| !people.contains(k.as_str()))
            .map(|(k, id)| (k.into_string(), id.with_text(str::to_string)))
            .collect();
        let disabled: Vec<String> = disabled_ids.keys().cloned().collect();
        let out = Output {
            count: people.len(),
            people: serde_json::Value::Null,
            skipped_disabled: disabled.len(),
            disabled,
            disabled_ids,
            gone: Vec::new(),
            skipped_non_user: self.non_users,
            read: crate::Read::Full,
            full_because: None,
            unlisted_joiners: 0,
            warnings: Vec::new(),
        };
        (people, out)
    }
}

/// The people of the output, sorted by key. Written as a list of
/// `Person` (the shape `compare` reads) straight from what was held: a
/// tenant of a million members has no second copy of its people in memory
/// beside the output text.
#[derive(Debug)]
pub struct Roster {
    names: Vec<String>,
    /// Sorted by key, one per key.
    people: Vec<Held>,
    /// The ids of the members that are not users, sorted.
    others: Vec<Id>,
}

impl Roster {
    pub fn len(&self) -> usize {
        self.people.len()
    }

    /// The keys that are a guest's sign-in name (a UPN with `#ext#`, as
    /// Entra makes for an invited guest with no mail): no mailbox gets
    /// what is sent there.
    pub fn guest_sign_in_keys(&self) -> impl Iterator<Item = &str> {
        self.people
            .iter()
            .map(Held::key)
            .filter(|key| key.contains("#ext#"))
    }

    /// Whether someone has this key.
    pub fn contains(&self, key: &str) -> bool {
        let head = head_of(key);
        self.people
            .binary_search_by(|held| held.head.cmp(&head).then_with(|| held.key().cmp(key)))
            .is_ok()
    }

    /// Whether the read listed `id` as a member that is not a user.
    pub fn lists_as_other(&self, id: &Id) -> bool {
        self.others.binary_search(id).is_ok()
    }

    /// The Entra object ids of the people.
    pub fn ids(&self) -> impl Iterator<Item = &Id> {
        self.people.iter().map(|held| &held.id)
    }

    /// The people's keys, in order.
    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.people.iter().map(Held::key)
    }

    /// The people, in key order, as `Person`s borrowed from what was held.
    pub fn persons(&self) -> impl Iterator<Item = PersonText<'_>> {
        self.people.iter().map(|held| {
            let mut groups: Vec<&str> = held
                .groups
                .iter()
                .filter_map(|g| self.names.get(usize::from(g)).map(String::as_str))
                .collect();
            groups.sort_unstable();
            groups.dedup();
            let [display_name, given_name, surname, mail, user_principal_name] = held.user.texts();
            PersonText {
                key: held.key(),
                id: Some(&held.id),
                mail,
                user_principal_name,
                display_name,
                given_name,
                surname,
                groups,
            }
        })
    }
}

/// A `Person` (`sluice_guest_services::sync`) borrowed from what was held:
/// the same fields in the same order, so the text is the one `Person`
/// writes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonText<'a> {
    key: &'a str,
    id: Option<&'a Id>,
    mail: Option<&'a str>,
    user_principal_name: Option<&'a str>,
    display_name: Option<&'a str>,
    given_name: Option<&'a str>,
    surname: Option<&'a str>,
    groups: Vec<&'a str>,
}

impl Serialize for Roster {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.persons())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::Member;
    use serde_json::{Value, json};
    use sluice_guest_services::sync::Person;

    fn entry(value: Value, groups: &[u16]) -> Entry {
        let mut e = Entry::of(&Member::owned(value).unwrap());
        groups.iter().for_each(|&g| e.groups.insert(g));
        e
    }

    fn user(mail: Option<&str>, upn: &str, enabled: bool, groups: &[u16]) -> Entry {
        entry(
            json!({"@odata.type": "#microsoft.graph.user", "id": upn, "mail": mail, "userPrincipalName": upn, "accountEnabled": enabled, "givenName": "G", "surname": "S", "displayName": "G S"}),
            groups,
        )
    }

    #[test]
    fn keys_follow_the_identity_rules() {
        let k = |e: Entry| key(&e.user.unwrap()).unwrap().into_string();
        assert_eq!(
            k(user(Some("  Alice.Smith@Contoso.com "), "x@y", true, &[])),
            "alice.smith@contoso.com"
        );
        assert_eq!(
            k(user(Some("  "), "Bob@Contoso.onmicrosoft.com", true, &[])),
            "bob@contoso.onmicrosoft.com"
        );
        assert_eq!(k(user(None, "Carl@c.com", true, &[])), "carl@c.com");
        assert_eq!(key(&entry(json!({}), &[]).user.unwrap()), None);
    }

    #[test]
    fn one_entry_per_person_only_enabled_users() {
        const E3: &str = "License – Microsoft E3";
        const E1: &str = "License – Office E1";
        // Positions follow the group ids, not the names: E1 is group 0.
        let mut p = People::new(vec![E1.into(), E3.into()]);
        p.add("a1".into(), user(Some("a@x.com"), "a", true, &[1]));
        p.add("a2".into(), user(Some("A@X.com"), "a", true, &[0]));
        p.add("d2".into(), user(Some("d@x.com"), "d", false, &[1]));
        p.add("d".into(), user(Some("d@x.com"), "d", false, &[0]));
        p.add("e1".into(), user(Some("e@x.com"), "e", false, &[0]));
        p.add("e2".into(), user(Some("e@x.com"), "e", true, &[1]));
        let device = entry(
            json!({"@odata.type": "#microsoft.graph.device", "id": "dev"}),
            &[0, 1],
        );
        p.add("dev".into(), device);
        let group = entry(
            json!({"@odata.type": "#microsoft.graph.group", "id": "g"}),
            &[0],
        );
        p.add("g".into(), group);
        let f = entry(
            json!({"@odata.type": "#microsoft.graph.user", "mail": "f@x.com"}),
            &[0],
        );
        p.add("f".into(), f);
        p.add("z".into(), user(Some("z@x.com"), "z", true, &[]));
        p.add("y".into(), user(Some("y@x.com"), "y", true, &[7]));
        let (roster, out) = p.finish();
        assert_eq!(out.count, 2);
        let people: Vec<Person> =
            serde_json::from_str(&serde_json::to_string(&roster).unwrap()).unwrap();
        assert_eq!(people[0].key, "a@x.com");
        assert_eq!(people[0].id.as_deref(), Some("a1"), "the first one's");
        assert_eq!(people[0].groups, [E3, E1], "by name");
        assert_eq!(people[1].key, "e@x.com");
        assert_eq!(roster.keys().collect::<Vec<_>>(), ["a@x.com", "e@x.com"]);
        assert_eq!(out.disabled, ["d@x.com", "f@x.com"]);
        // Each with the first of its ids (e is enabled elsewhere: not there).
        let ids: Vec<(&str, &str)> = out
            .disabled_ids
            .iter()
            .map(|(k, id)| (k.as_str(), id.as_str()))
            .collect();
        assert_eq!(ids, [("d@x.com", "d"), ("f@x.com", "f")]);
        assert_eq!(
            out.skipped_disabled, 2,
            "d, and f whose accountEnabled is missing"
        );
        assert_eq!(out.skipped_non_user, 3, "once per group");
    }

    #[test]
    fn the_roster_is_written_as_people_are() {
        let mut p = People::new(vec!["G1".into(), "G0".into()]);
        let mut e = Entry::of(
            &Member::owned(
                json!({"id": "u", "mail": "M@x.com", "displayName": "Zoë \"Q\" Ng",
                "givenName": null, "surname": "Ng", "userPrincipalName": "m@x",
                "accountEnabled": true}),
            )
            .unwrap(),
        );
        e.groups.insert(0);
        e.groups.insert(1);
        p.add("u".into(), e);
        let written = serde_json::to_string(&p.finish().0).unwrap();
        let person = Person {
            key: "m@x.com".into(),
            id: Some("u".into()),
            mail: Some("M@x.com".into()),
            user_principal_name: Some("m@x".into()),
            display_name: Some("Zoë \"Q\" Ng".into()),
            given_name: None,
            surname: Some("Ng".into()),
            groups: vec!["G0".into(), "G1".into()],
        };
        assert_eq!(written, serde_json::to_string(&vec![person]).unwrap());
    }
}
