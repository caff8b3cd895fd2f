//! This run's Procore users, held compactly: an id and three flags each,
//! one text of every login and email key with a hash table into it, and
//! a second table from id to user. At a million members the users are
//! about 900k; as owned records (or as the input text they were read
//! from) they alone would take much of the instance's memory, so the
//! lists are read a page at a time and only these compact forms stay.
//!
//! The names and addresses the output carries of a user are kept for
//! inactive users only (returners and the inactive-but-unmanaged report
//! name them; they are few). The lifecycle asks for the rest
//! ([`Users::fetch_details`]) by reading the list again, which it does
//! only for the leavers, if there are any.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
use sluice_guest::{Paged, StepError};
use sluice_guest_services::procore::{self, Id};
use sluice_guest_services::sync::ProcoreUser;

use crate::input::{self, UserRef};
use crate::keys::{self, IdKey};
use crate::known::Marks;

/// A Procore user, as the match and the lifecycle need it.
#[derive(Debug)]
pub struct User {
    /// Procore's id, as the list gave it (the output repeats it).
    pub id: Id,
    /// Whether the account is active.
    pub active: bool,
    /// Whether its login (else its email address) is in one of the
    /// flow's managed domains.
    pub in_domain: bool,
    /// Whether some license holder's key is its login or email address.
    pub matched: bool,
    /// Whether some license holder matches its id now (kept on the user
    /// [`Users::by_id`] finds for the id).
    pub held: bool,
    /// Whether it is active and Procore created it since an earlier run
    /// found its person missing ([`Rules::creating`]): a user such a run
    /// may have made without living to record it.
    pub created_lately: bool,
    /// Whether the flow's record says it deactivated the user (or was
    /// deactivating them).
    pub deactivated_by_flow: bool,
}

/// What the output says of a user besides its id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    pub login: Option<String>,
    pub email_address: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl Details {
    fn of(user: &UserRef<'_>) -> Details {
        Details {
            login: user.login(),
            email_address: user.email_address(),
            first_name: input::owned(&user.first_name),
            last_name: input::owned(&user.last_name),
        }
    }
}

/// What reading the users goes by, besides their list.
#[derive(Default)]
pub struct Rules<'a> {
    /// The managed domains (lower case, no `@`).
    pub domains: Vec<String>,
    /// License holders earlier runs found missing, with since when: an
    /// active user with one of their keys whom Procore created since is
    /// `created_lately`.
    pub creating: Option<&'a Marks>,
    /// The ids of the users the flow's records say it deactivated (or was
    /// deactivating): of two inactive users with one key, such a user
    /// keeps it.
    pub deactivated: HashSet<IdKey<'a>>,
}

/// A login or email key and the user it leads to.
#[derive(Debug, Clone, Copy)]
struct KeyEntry {
    /// Where the key ends in [`KeyIndex::text`] (it starts where the
    /// previous entry's ends).
    end: u32,
    /// The user a license holder with this key matches.
    user: u32,
    /// Whether a license holder with this key was seen already.
    seen: bool,
}

/// Every login and email key of the users, each once, in one text.
#[derive(Default)]
struct KeyIndex {
    text: String,
    entries: Vec<KeyEntry>,
    table: HashTable<u32>,
}

impl KeyIndex {
    fn key(&self, entry: u32) -> &str {
        let e = entry as usize;
        let start = if e == 0 {
            0
        } else {
            self.entries[e - 1].end as usize
        };
        &self.text[start..self.entries[e].end as usize]
    }

    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        self.table.find(hash, |&e| self.key(e) == key).copied()
    }
}

/// Where a license holder's key leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// To this user (by index), seen for the first time.
    User(u32),
    /// To a user, through a key an earlier license holder had.
    Again,
    /// To nobody.
    Nobody,
}

/// The users of one run (see the module).
pub struct Users {
    list: Vec<User>,
    keys: KeyIndex,
    /// Users by [`IdKey`]: the last user of each id.
    ids: HashTable<u32>,
    details: HashMap<u32, Details>,
    hasher: DefaultHashBuilder,
}

/// The users one page read asks for: a page of a million-user list is
/// about 150 KB of text.
pub const PAGE: u32 = 1000;

/// The error for a page of `list` that does not parse as its items.
pub fn bad_page(list: &str, e: serde_json::Error) -> StepError {
    StepError::bad_input(format!(
        "a page of `{list}` does not fit this component: {e}"
    ))
    .with_code("bad-item")
}

impl Users {
    /// Reads every user of `list`, a page at a time, by `rules`.
    pub fn read(list: &Paged<ProcoreUser>, rules: &Rules<'_>) -> Result<Users, StepError> {
        let mut users = Users::with_capacity(usize::try_from(list.len()).unwrap_or(0));
        for page in list.pages(PAGE) {
            let page = page?;
            let batch: Vec<UserRef> =
                serde_json::from_str(&page).map_err(|e| bad_page("procore_users", e))?;
            for user in &batch {
                users.push(user, rules);
            }
        }
        Ok(users)
    }

    fn with_capacity(n: usize) -> Users {
        // Most users have one key (login and email alike) of some 30 bytes.
        let mut keys = KeyIndex::default();
        keys.text.reserve(n.saturating_mul(32));
        keys.entries.reserve(n);
        Users {
            list: Vec::with_capacity(n),
            keys,
            ids: HashTable::with_capacity(n),
            details: HashMap::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Adds `user`: its keys lead to it unless an earlier user has them,
    /// and an active account wins a key over an inactive one (of two
    /// inactive ones, the one the flow deactivated).
    pub fn push(&mut self, user: &UserRef<'_>, rules: &Rules<'_>) {
        let index = self.list.len() as u32;
        let id = IdKey::of(&user.id);
        let hash = self.hasher.hash_one(id);
        let Users {
            list, ids, hasher, ..
        } = self;
        match ids.find_mut(hash, |&i| IdKey::of(&list[i as usize].id) == id) {
            Some(last) => *last = index,
            None => {
                ids.insert_unique(hash, index, |&i| {
                    hasher.hash_one(IdKey::of(&list[i as usize].id))
                });
            }
        }
        if !user.is_active {
            self.details.insert(index, Details::of(user));
        }
        self.list.push(User {
            id: user.id.clone(),
            active: user.is_active,
            in_domain: in_domain(user, &rules.domains),
            matched: false,
            held: false,
            created_lately: user.is_active && created_lately(user, rules),
            deactivated_by_flow: !user.is_active && rules.deactivated.contains(&id),
        });
        for field in [&user.login, &user.email_address] {
            if let Some(key) = field.as_deref().and_then(keys::normal) {
                self.offer(&key, index);
            }
        }
    }

    fn offer(&mut self, key: &str, index: u32) {
        let hash = self.hasher.hash_one(key);
        if let Some(entry) = self.keys.find(hash, key) {
            let entry = &mut self.keys.entries[entry as usize];
            let (new, old) = (&self.list[index as usize], &self.list[entry.user as usize]);
            let wins = if new.active == old.active {
                // Of two inactive users, the one the flow deactivated: the
                // person is its returner.
                !new.active && new.deactivated_by_flow && !old.deactivated_by_flow
            } else {
                new.active
            };
            if wins {
                entry.user = index;
            }
            return;
        }
        let KeyIndex {
            text,
            entries,
            table,
        } = &mut self.keys;
        text.push_str(key);
        let entry = entries.len() as u32;
        entries.push(KeyEntry {
            end: text.len() as u32,
            user: index,
            seen: false,
        });
        let hasher = &self.hasher;
        table.insert_unique(hash, entry, |&e| {
            let e = e as usize;
            let start = if e == 0 {
                0
            } else {
                entries[e - 1].end as usize
            };
            hasher.hash_one(&text[start..entries[e].end as usize])
        });
    }

    /// Where the license holder key `key` (normal) leads, marking the key
    /// seen and the user matched.
    pub fn find_key(&mut self, key: &str) -> Found {
        let hash = self.hasher.hash_one(key);
        let Some(entry) = self.keys.find(hash, key) else {
            return Found::Nobody;
        };
        let entry = &mut self.keys.entries[entry as usize];
        if entry.seen {
            return Found::Again;
        }
        entry.seen = true;
        self.list[entry.user as usize].matched = true;
        Found::User(entry.user)
    }

    /// The user the key `key` (normal) leads to, while no license holder
    /// has had it; nothing is marked.
    pub fn unseen_key(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let entry = &self.keys.entries[self.keys.find(hash, key)? as usize];
        (!entry.seen).then_some(entry.user)
    }

    /// Whether a license holder of this run has the key `key` (normal), as
    /// some user's login or email address: a user with that key is the
    /// license holder's account, whichever of several the match chose.
    pub fn holds_license(&self, key: &str) -> bool {
        let hash = self.hasher.hash_one(key);
        self.keys
            .find(hash, key)
            .is_some_and(|entry| self.keys.entries[entry as usize].seen)
    }

    /// The user (by index) with this id: the last one, when several are.
    pub fn by_id(&self, id: IdKey<'_>) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.ids
            .find(hash, |&i| IdKey::of(&self.list[i as usize].id) == id)
            .copied()
    }

    /// The user at `index`.
    pub fn get(&self, index: u32) -> &User {
        &self.list[index as usize]
    }

    /// Marks the user `index` as matched by a license holder's id.
    pub fn hold(&mut self, index: u32) {
        self.list[index as usize].held = true;
    }

    /// Marks the user `index` as a license holder's, found by their Entra
    /// id rather than their key: matched and held.
    pub fn claim(&mut self, index: u32) {
        let user = &mut self.list[index as usize];
        user.matched = true;
        user.held = true;
    }

    /// Every user, in list order, with its index.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &User)> {
        self.list.iter().enumerate().map(|(i, u)| (i as u32, u))
    }

    /// The details of user `index`, if they are held.
    pub fn details(&self, index: u32) -> Option<&Details> {
        self.details.get(&index)
    }

    /// Reads `list` again for the details of the users `wanted` (indices)
    /// that are not held yet; reads nothing when all are.
    pub fn fetch_details(
        &mut self,
        list: &Paged<ProcoreUser>,
        wanted: impl IntoIterator<Item = u32>,
    ) -> Result<(), StepError> {
        let mut wanted: Vec<u32> = wanted
            .into_iter()
            .filter(|i| !self.details.contains_key(i))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut next = wanted.iter().copied().peekable();
        let mut start = 0u32;
        for page in list.pages(PAGE) {
            let page = page?;
            let batch: Vec<UserRef> =
                serde_json::from_str(&page).map_err(|e| bad_page("procore_users", e))?;
            let end = start + batch.len() as u32;
            while let Some(i) = next.next_if(|i| *i < end) {
                self.details
                    .insert(i, Details::of(&batch[(i - start) as usize]));
            }
            if next.peek().is_none() {
                break;
            }
            start = end;
        }
        Ok(())
    }
}

/// Whether Procore created `user` since an earlier run found someone with
/// its login or email address missing (see [`Rules::creating`]).
fn created_lately(user: &UserRef<'_>, rules: &Rules<'_>) -> bool {
    let Some(creating) = rules.creating.filter(|c| !c.is_empty()) else {
        return false;
    };
    [&user.login, &user.email_address]
        .into_iter()
        .filter_map(|field| field.as_deref().and_then(keys::normal))
        .filter_map(|key| creating.get(key.as_ref()))
        .any(|mark| procore::created_since(user.created_at.as_deref(), mark.since))
}

/// Whether the login (else the email address) of `user` is in one of
/// `domains`.
fn in_domain(user: &UserRef<'_>, domains: &[String]) -> bool {
    if domains.is_empty() {
        return false;
    }
    let login = user.login.as_deref().or(user.email_address.as_deref());
    login
        .and_then(|l| l.trim().rsplit_once('@'))
        .is_some_and(|(_, domain)| domains.contains(&domain.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logic::paged;

    fn user(id: Id, login: &str, email: &str, active: bool) -> ProcoreUser {
        ProcoreUser {
            id,
            login: Some(login.to_string()),
            email_address: Some(email.to_string()),
            first_name: Some(format!("F{login}")),
            last_name: None,
            is_active: active,
            created_at: None,
        }
    }

    #[test]
    fn keys_lead_to_the_first_user_unless_a_later_one_is_active() {
        let list = paged(&[
            user(Id::Number(1), "a@x.com", "shared@x.com", false),
            user(Id::Number(2), "B@x.com", "SHARED@x.com", true),
            user(Id::Number(3), "b@X.com", "c@x.com", true),
        ]);
        let mut users = Users::read(&list, &Rules::default()).unwrap();
        assert_eq!(
            users.find_key("shared@x.com"),
            Found::User(1),
            "active wins"
        );
        assert_eq!(
            users.find_key("b@x.com"),
            Found::User(1),
            "first of two active"
        );
        assert_eq!(users.find_key("a@x.com"), Found::User(0));
        assert_eq!(users.find_key("c@x.com"), Found::User(2));
        assert_eq!(users.find_key("shared@x.com"), Found::Again);
        assert_eq!(users.find_key("nobody@x.com"), Found::Nobody);
        assert!(users.iter().all(|(_, u)| u.matched));
    }

    #[test]
    fn an_id_leads_to_its_last_user_whatever_its_form() {
        let list = paged(&[
            user(Id::Number(42), "a@x.com", "a@x.com", true),
            user(Id::Text(" 42 ".into()), "b@x.com", "b@x.com", true),
            user(Id::Text("abc".into()), "c@x.com", "c@x.com", true),
        ]);
        let users = Users::read(&list, &Rules::default()).unwrap();
        assert_eq!(users.by_id(IdKey::of(&Id::Text("42".into()))), Some(1));
        assert_eq!(users.by_id(IdKey::of(&Id::Text("abc".into()))), Some(2));
        assert_eq!(users.by_id(IdKey::of(&Id::Number(7))), None);
    }

    #[test]
    fn details_are_kept_for_inactive_users_and_read_again_for_others() {
        // More users than a page, so the second read crosses pages.
        let all: Vec<ProcoreUser> = (0..2500)
            .map(|i| {
                let login = format!("u{i}@corp.com");
                user(Id::Number(i), &login, &login, i % 1000 != 7)
            })
            .collect();
        let list = paged(&all);
        let mut users = Users::read(
            &list,
            &Rules {
                domains: vec!["corp.com".to_string()],
                ..Rules::default()
            },
        )
        .unwrap();
        assert!(users.iter().all(|(_, u)| u.in_domain));
        assert_eq!(
            users.details(1007).unwrap().login.as_deref(),
            Some("u1007@corp.com")
        );
        assert_eq!(users.details(5), None);
        users.fetch_details(&list, [2499, 5, 1500]).unwrap();
        for i in [5u32, 1500, 2499] {
            let details = users.details(i).unwrap();
            assert_eq!(details.login, all[i as usize].login);
            assert_eq!(details.first_name, all[i as usize].first_name);
        }
    }
}
