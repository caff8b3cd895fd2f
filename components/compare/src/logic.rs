//! Who is missing from Procore, and who leaves or returns.
//!
//! Input: `{"people": [person…], "procore_users": [{id, login,
//! email_address, is_active, …}…]}` and the lifecycle settings (below). A
//! person matches a Procore user when its key equals the user's login or
//! email address, trimmed and without case, active or not (the identity
//! rule, `sluice-identity`). A person whose key matches no user but whose
//! Entra id a managed record keeps is that record's Procore user (their
//! key changed since: [`crate::lifecycle`]). Output: `missing` (people to
//! create), `present` (`{key, procore_id}`), `present_inactive` (the
//! person plus `procore_id`: reported, never created again), `counts`, and
//! the lifecycle half [`crate::lifecycle`] computes from the managed-people
//! records in the flow's state: `leavers`, `leaving`, `returners`,
//! `inactive_unmanaged`, `known_as` and the mass-change `guard`.
//!
//! Both lists are read a page at a time (`Paged`: a million license
//! holders and their Procore users are some 600 MB of JSON, more than an
//! instance may hold): first the Procore users, into a compact index
//! ([`crate::users`]), then the people, each decided as its page is read
//! and written straight into the output ([`crate::output`]). One hash
//! index makes the match linear in both lists.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::DateTime;
use serde::Deserialize;
use sluice_guest::{Context, JsonSchema, Paged, StepError, state};
use sluice_guest_services::duration;
use sluice_guest_services::procore::Id;
use sluice_guest_services::sync::{
    Counts, Creating, HOLDERS_KEY, InactivePerson, MatchedBy, Person, Present, ProcoreUser,
    creating_key, domain_leaving_key, managed_key,
};
use sluice_identity::Key;

use crate::input::PersonRef;
use crate::keys;
use crate::known::Mark;
use crate::lifecycle::{self, Known, Policy, Run, Same, Write};
use crate::output::Written;
use crate::users::{self, Found, Rules, Users};

/// A `managed_domains` entry: a whole domain of two labels or more,
/// optionally after `@`. An entry that is blank, a wildcard (`*`) or a
/// suffix (`.com`) matched nobody without a word, and quietly turned the
/// domain's management off.
pub const DOMAIN_PATTERN: &str = r"^\s*@?[^\s@*./\\]+(\.[^\s@*./\\]+)+\s*$";

/// The people and the Procore users to match, and the lifecycle settings.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// License holders (as `graph-group-members` lists them), read a page
    /// at a time.
    pub people: Paged<Person>,
    /// Every Procore company user, active and inactive, read a page at a
    /// time.
    pub procore_users: Paged<ProcoreUser>,
    /// How many license groups matched (`graph-groups`' `count`): none at
    /// all holds every deactivation back.
    #[serde(default)]
    pub license_groups: Option<usize>,
    /// How many users joined a license group whom Graph does not list yet
    /// (`graph-group-members`' `unlisted_joiners`): any at all, and the
    /// read does not say of everyone whether they hold a license, so
    /// nobody is deactivated in this run (the guard says so).
    #[serde(default)]
    pub unlisted_joiners: usize,
    /// Keys of license-group members whose Entra account is disabled
    /// (`graph-group-members`' `disabled`).
    #[serde(default)]
    pub disabled: Vec<String>,
    /// The Entra object ids of those disabled members, by key
    /// (`graph-group-members`' `disabled_ids`): a leaver for a disabled
    /// account keeps theirs, by which a later run knows them when they
    /// come back under another mail.
    #[serde(default)]
    pub disabled_ids: BTreeMap<String, String>,
    /// Keys of managed people whose Entra user is gone
    /// (`graph-group-members`' `gone`).
    #[serde(default)]
    pub gone: Vec<String>,
    /// Every active Procore user whose login is in one of these domains is
    /// managed (deactivated when it holds no license): whole domains such
    /// as `contoso.com` (or `@contoso.com`), matched exactly and ignoring
    /// case; no wildcard, no leading dot, no blank entry.
    #[serde(default)]
    #[schemars(inner(regex(pattern = DOMAIN_PATTERN)))]
    pub managed_domains: Vec<String>,
    /// How long someone holds no license before being a leaver, such as
    /// `0s`, `12h` or `3days`.
    #[serde(default)]
    #[schemars(regex(pattern = duration::OR_BLANK_PATTERN))]
    pub leaver_grace: Option<String>,
    /// Keys whose deactivation an admin rejected (the deactivate step's
    /// open plan, `${run.approvals.deactivate.rejected}`): decided, so they
    /// do not keep the guard's old holder count.
    #[serde(default)]
    pub rejected: Vec<String>,
    /// Keys whose deactivation an admin approved
    /// (`${run.approvals.deactivate.approved}`): decided too.
    #[serde(default)]
    pub approved: Vec<String>,
    /// Keys whose creation an admin rejected
    /// (`${run.approvals.create.rejected}`): never sent, so a Procore user
    /// of theirs is not the flow's.
    #[serde(default)]
    pub creates_rejected: Vec<String>,
    /// The flow's Procore project (`PROCORE_PROJECT_ID`, its id, a whole
    /// number; empty or absent: none): project calls earlier runs owe on
    /// it are listed in `project_owed`.
    #[serde(default)]
    #[schemars(schema_with = "sluice_guest_services::procore::project_id_schema")]
    pub project_id: Option<Id>,
}

pub fn compare_input(input: Input, context: &Context) -> Result<Written, StepError> {
    let policy = policy(&input, context)?;
    let known = Known::read()?;
    // Each write goes to the host as it is made: a first run adopts every
    // match, and a million records held at once would be hundreds of MiB.
    let mut write = |write: Write| match write {
        Write::Managed(key, record) => state::set(&managed_key(&key), &record),
        Write::Clock(key, Some(clock)) => state::set(&domain_leaving_key(&key), &clock),
        Write::Clock(key, None) => state::delete(&domain_leaving_key(&key)),
        Write::Forget(key) => state::delete(&managed_key(&key)),
        Write::Holders(holders) => state::set(HOLDERS_KEY, &holders),
        Write::Creating(key, Some(since)) => state::set(&creating_key(&key), &since),
        Write::Creating(key, None) => state::delete(&creating_key(&key)),
    };
    sync(
        &input.people,
        &input.procore_users,
        &known,
        &policy,
        &mut write,
    )?
    .finish()
}

/// The match and the lifecycle of one run: the whole output, the state
/// writes handed to `write` as they are made.
pub fn sync(
    people: &Paged<Person>,
    list: &Paged<ProcoreUser>,
    known: &Known,
    policy: &Policy,
    write: &mut dyn FnMut(Write) -> Result<(), StepError>,
) -> Result<Written, StepError> {
    let rules = Rules {
        domains: policy.domains.clone(),
        creating: Some(&known.creating),
        deactivated: known.deactivated_ids(),
    };
    let mut users = Users::read(list, &rules)?;
    let mut run = Run::new(known, policy, write);
    let mut out = Written::default();
    let mut matcher = Matcher::default();
    each_person(people, |person| {
        run.holder(&users, person)?;
        let mut same = |users: &mut Users, key: &str| run.same_person(users, key, person, true);
        if let Some((key, procore_id)) = matcher.person(&mut users, person, &mut out, &mut same)? {
            run.adopt(&mut users, &mut out, &key, &procore_id, person)?;
        }
        Ok(())
    })?;
    // Those a user under an old key may be, now that every holder matched.
    matcher.later_keys.clear();
    for person in std::mem::take(&mut matcher.later) {
        let person = PersonRef::of(&person);
        let mut same = |users: &mut Users, key: &str| run.same_person(users, key, &person, false);
        matcher.person(&mut users, &person, &mut out, &mut same)?;
    }
    matcher.count(&users, &mut out);
    run.finish(&mut users, list, &mut out)?;
    mark_missing(&matcher.missing, known, policy, write)?;
    Ok(out)
}

/// Whom a later run may find created without a record: those `missing`
/// now (key, Entra id), marked when first found so (a mark that is not a
/// time, again), and marked again, keeping its time, when the mark does
/// not keep their Entra id (an older version's). The others' marks go,
/// but not in a run that matched no license group, which found nobody.
fn mark_missing(
    missing: &HashMap<String, Option<Box<str>>>,
    known: &Known,
    policy: &Policy,
    write: &mut dyn FnMut(Write) -> Result<(), StepError>,
) -> Result<(), StepError> {
    for (key, entra_id) in missing {
        let entra = entra_id.as_deref().and_then(keys::EntraKey::of);
        let since = match known.creating.get(key) {
            Some(mark) if mark.since != Mark::UNREAD && mark.entra == entra => continue,
            Some(mark) if mark.since != Mark::UNREAD => DateTime::from_timestamp(mark.since, 0),
            _ => None,
        };
        let mark = Creating {
            since: since.unwrap_or(policy.now).to_rfc3339(),
            entra_id: entra_id.as_deref().map(str::to_string),
        };
        write(Write::Creating(key.clone(), Some(mark)))?;
    }
    // A read that did not list everyone drops no mark: someone it missed
    // may still be missing from Procore.
    if policy.says_who_holds_a_license() {
        for mark in known.creating.iter() {
            if !missing.contains_key(mark.key.as_ref()) {
                write(Write::Creating(mark.key.to_string(), None))?;
            }
        }
    }
    Ok(())
}

/// Calls `f` with each person of `people`, read a page at a time and
/// borrowed from the page's text.
fn each_person(
    people: &Paged<Person>,
    mut f: impl FnMut(&PersonRef<'_>) -> Result<(), StepError>,
) -> Result<(), StepError> {
    for page in people.pages(users::PAGE) {
        let page = page?;
        let batch: Vec<PersonRef> =
            serde_json::from_str(&page).map_err(|e| users::bad_page("people", e))?;
        for person in &batch {
            f(person)?;
        }
    }
    Ok(())
}

/// Finds the Procore user of a license holder (key given) whom no user
/// matches by key, by their Entra id ([`Run::same_person`](lifecycle::Run::same_person)):
/// its id and whether it is active.
type SamePerson<'f> = dyn FnMut(&mut Users, &str) -> Result<Same, StepError> + 'f;

/// The match, person by person.
#[derive(Default)]
struct Matcher {
    /// Keys of the people whom no Procore user matches (the matched ones'
    /// keys are marked in the index), with their Entra ids.
    missing: HashMap<String, Option<Box<str>>>,
    /// Keys of the people whom no Procore user matches by key but one by
    /// their Entra id.
    elsewhere: HashSet<String>,
    /// The people whose user may be one created under their old key
    /// ([`Same::Later`]), asked again once every holder is matched, and
    /// their keys.
    later: Vec<Person>,
    later_keys: HashSet<String>,
    /// Distinct license holders.
    people: usize,
    /// License holders with an active Procore user.
    present: usize,
}

impl Matcher {
    /// Matches `person` and writes the match's part of the output: a
    /// person missing from Procore, present, or present but inactive (the
    /// first entry of a key counts; later ones are the same person). One
    /// whom no user matches by key is asked of `same` before being missing.
    /// Returns the key and the user's id of an active match by key.
    fn person(
        &mut self,
        users: &mut Users,
        person: &PersonRef<'_>,
        out: &mut Written,
        same: &mut SamePerson<'_>,
    ) -> Result<Option<(String, Id)>, StepError> {
        let Some(key) = keys::normal(&person.key) else {
            return Ok(None);
        };
        match users.find_key(&key) {
            Found::Again => Ok(None),
            Found::Nobody => {
                if self.missing.contains_key(key.as_ref())
                    || self.elsewhere.contains(key.as_ref())
                    || self.later_keys.contains(key.as_ref())
                {
                    return Ok(None);
                }
                match same(users, &key)? {
                    Same::User(procore_id, active) => {
                        self.elsewhere.insert(key.to_string());
                        let by = Some(MatchedBy::EntraId);
                        self.found(key, procore_id, active, by, person, out)?;
                        return Ok(None);
                    }
                    Same::Later => {
                        self.later_keys.insert(key.into_owned());
                        self.later.push(person.to_person());
                        return Ok(None);
                    }
                    Same::Nobody => {}
                }
                let entra_id = person.id.as_deref().map(Box::from);
                self.missing.insert(key.into_owned(), entra_id);
                self.people += 1;
                out.missing.push(&person.to_person())?;
                Ok(None)
            }
            Found::User(user) => {
                let user = users.get(user);
                self.found(key, user.id.clone(), user.active, None, person, out)
            }
        }
    }

    /// Writes `person` (key `key`) as present in Procore as the user
    /// `procore_id`, active or not; returns the key and id when active.
    /// `matched_by` is set when the match was not by key.
    fn found(
        &mut self,
        key: Cow<'_, str>,
        procore_id: Id,
        active: bool,
        matched_by: Option<MatchedBy>,
        person: &PersonRef<'_>,
        out: &mut Written,
    ) -> Result<Option<(String, Id)>, StepError> {
        self.people += 1;
        if active {
            let present = Present {
                key: key.into_owned(),
                procore_id,
            };
            out.present.push(&present)?;
            self.present += 1;
            Ok(Some((present.key, present.procore_id)))
        } else {
            out.present_inactive.push(InactivePerson {
                person: person.to_person(),
                procore_id,
                matched_by,
            });
            Ok(None)
        }
    }

    /// The match's counts.
    fn count(&self, users: &Users, out: &mut Written) {
        out.counts = Counts {
            people: self.people,
            missing: self.missing.len(),
            present: self.present,
            present_inactive: out.present_inactive.len(),
            procore_only: users.iter().filter(|(_, u)| !u.matched).count(),
            ..out.counts
        };
    }
}

/// The lifecycle settings of `input`, checked.
pub fn policy(input: &Input, context: &Context) -> Result<Policy, StepError> {
    let now = lifecycle::parse_time(context.started_at()).ok_or_else(|| {
        StepError::internal(format!(
            "the run's start time `{}` is not RFC 3339",
            context.started_at()
        ))
    })?;
    let grace = match input.leaver_grace.as_deref().map(str::trim) {
        None | Some("") => std::time::Duration::ZERO,
        Some(text) => duration::parse(text).map_err(|e| {
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
        unlisted_joiners: input.unlisted_joiners,
        disabled: keys(&input.disabled),
        disabled_ids: input
            .disabled_ids
            .iter()
            .filter_map(|(k, id)| Some((Key::of(k)?, id.clone())))
            .filter(|(_, id)| !id.trim().is_empty())
            .collect(),
        gone: keys(&input.gone),
        rejected: keys(&input.rejected),
        approved: keys(&input.approved),
        creates_rejected: keys(&input.creates_rejected),
        project: input.project_id.as_ref().and_then(Id::text),
        now,
    })
}

/// A list as the host would hand it inline, for tests.
#[cfg(test)]
pub fn paged<T: serde::Serialize>(items: &[T]) -> Paged<T> {
    serde_json::from_str(&serde_json::to_string(items).unwrap()).unwrap()
}

/// The match alone, of the owned forms (the lifecycle left out), for
/// tests.
#[cfg(test)]
pub fn diff(people: &[Person], users: &[ProcoreUser]) -> sluice_guest_services::sync::Diff {
    let mut index = Users::read(&paged(users), &Rules::default()).unwrap();
    let mut out = Written::default();
    let mut matcher = Matcher::default();
    each_person(&paged(people), |person| {
        let mut nobody = |_: &mut Users, _: &str| Ok(Same::Nobody);
        matcher
            .person(&mut index, person, &mut out, &mut nobody)
            .map(drop)
    })
    .unwrap();
    matcher.count(&index, &mut out);
    crate::output::parsed(out)
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
            created_at: None,
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
        // say what `graph-group-members` and `procore-users` write, and
        // mark both lists for the host to serve a page at a time.
        let text = sluice_guest::glue::schema::<Input>();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let items = |field: &str| schema["properties"][field]["items"]["$ref"].clone();
        assert_eq!(items("people"), "#/$defs/Person");
        assert_eq!(items("procore_users"), "#/$defs/ProcoreUser");
        for list in ["people", "procore_users"] {
            assert_eq!(schema["properties"][list]["x-sluice-paged"], true, "{list}");
        }
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
