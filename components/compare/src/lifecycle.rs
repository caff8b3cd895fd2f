//! Leavers, returners and adoption: what the managed-people records
//! (`managed/<key>` in the flow's state, [`Managed`]) and this run's match
//! say.
//!
//! It takes what the flow's state holds and hands the state writes to
//! make to its caller one at a time (never all held at once), so the
//! rules are tested natively. Adoption is decided person by person as the
//! match finds them ([`Run::adopt`]); the rest once every license holder
//! has been read ([`Run::finish`]).
//!
//! - **Adopt** every license holder matched to an active Procore user that
//!   no record names yet, all in the run that first sees them (one record
//!   each: the host bounds a call's writes by memory, about 0.25 KiB a
//!   record, so a tenant of a million fits). A first run therefore changes
//!   nobody. A user Procore created since a run found its person missing
//!   (`creating/<key>`, kept while they are), whose creation no admin
//!   rejected, is such a run's creation, which its host did not live to
//!   record: its record says `created`, and it is owed the project add.
//! - **Leaver**: a managed Procore user who is active and whom no license
//!   holder matches now, once `leaver_grace` has passed since the first run
//!   that saw it so; with `managed_domains`, also every active user whose
//!   login is in one of them. Someone in another license group still
//!   matches, so is not a leaver.
//! - **The same Entra user under a new key**: a record keeps the person's
//!   Entra object id, and a record whose Entra user holds a license now is
//!   never a leaver, whatever its key ([`Run::holder`]). Keys change: the
//!   key is the mail, else the UPN, and the mailbox usually comes after the
//!   license, so someone first known by their UPN gets a new key once their
//!   mail appears (or changes). Such a license holder, whose key matches no
//!   Procore user, is that record's Procore user ([`Run::same_person`]):
//!   present (or a returner, or inactive), never created again, and listed
//!   in `known_as` for the report, since Procore still has the old address
//!   and the flow does not change it. The record keeps its key: it is the
//!   address Procore knows them by, and the key their ledger and any open
//!   approval are under, so `sluice ledger OLD-KEY` stays their whole story
//!   and a later deactivation waits under the key an admin finds in
//!   Procore.
//! - **Created under the old key**: a `creating/<key>` mark keeps the
//!   person's Entra id too, so a user a killed run created for them under
//!   the old key (active, created since the mark, no record names it, no
//!   license holder of the run has its key, wherever in the list: it is
//!   decided once every holder is matched, and no admin rejected that
//!   create) is found when their key changed before the next run
//!   ([`Run::created_under_old_key`]): taken as the flow's creation, as a
//!   record of theirs would say (kept under the old key, origin `created`,
//!   owed the project add, listed in `known_as`), never created again. A
//!   mark without an Entra id (an older version's) cannot tell: the next
//!   run that finds the person missing adds it.
//! - **In-domain users** are managed by this run's `managed_domains` only:
//!   their grace clock is kept apart (`domain-leaving/<key>`, [`Clock`])
//!   and never makes them managed, so a run without the param leaves them
//!   alone. They become managed only as anyone does: matched to a license
//!   holder, created, or deactivated by the flow. A clock whose user is no
//!   longer such a candidate is dropped, so the grace starts afresh.
//! - **Returner**: a license holder matched to an inactive Procore user the
//!   flow deactivated. Inactive matches the flow did not deactivate are
//!   `inactive_unmanaged`: reported, never touched.
//! - **Guard**: deactivations are held back whatever the threshold says
//!   when no license group matched (the shipped flow then skips its
//!   `deactivate` step: nobody at all), or when the license holders fell
//!   by more than half since the last complete read (they wait for an
//!   admin), or in a first run with leavers, and after it until an admin
//!   has decided everyone the first run found leaving (once their grace
//!   is over). After a drop, the count it measures from is kept
//!   only once every deactivation it held is approved or rejected; those
//!   the drop found still in their grace hold it on until they are too.
//! - **A deactivation never applied**: a record left `deactivating` (a
//!   host that died while Procore had not applied it) whose user is still
//!   active is active again; one whose user is inactive is listed for the
//!   deactivate step to confirm, unless an admin rejected it since: then
//!   it is recorded `deactivated` here, with a ledger entry saying so, and
//!   nothing more is done ([`Run::applied_before_rejection`]).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use sluice_guest::{Paged, StepError};
use sluice_guest_services::procore::Id;
use sluice_guest_services::sync::{
    Adopted, AdoptedStatus, Creating, DomainLeaving, Guard, GuardKind, HeldDrop, Holders,
    InactiveUnmanaged, KnownAs, LeaveReason, Leaver, Leaving, Managed, ManagedStatus as Status,
    MatchedBy, Origin, OwedProject, ProcoreUser, ProjectAction, ProjectOwed, Returner, still_owed,
};
use sluice_identity::Key;

use crate::input::PersonRef;
use crate::keys::{EntraKey, IdKey};
pub use crate::known::Known;
use crate::known::{Clock, Record};
use crate::output::Written;
use crate::users::{Details, User, Users};

/// The flow's lifecycle settings and this run's facts besides the match.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    /// Logins in these domains (lower case, no `@`) are managed.
    pub domains: Vec<String>,
    /// How long someone holds no license before being a leaver.
    pub grace: Duration,
    /// How many license groups matched, when the flow says.
    pub license_groups: Option<usize>,
    /// Users who joined a license group whom Graph does not list yet.
    pub unlisted_joiners: usize,
    /// Keys of license-group members whose Entra account is disabled.
    pub disabled: HashSet<Key>,
    /// Their Entra object ids, where Graph gave them.
    pub disabled_ids: HashMap<Key, String>,
    /// Keys of managed people whose Entra user no longer exists.
    pub gone: HashSet<Key>,
    /// Keys whose deactivation an admin rejected.
    pub rejected: HashSet<Key>,
    /// Keys whose deactivation an admin approved.
    pub approved: HashSet<Key>,
    /// Keys whose creation an admin rejected: never sent.
    pub creates_rejected: HashSet<Key>,
    /// The flow's Procore project, when it has one.
    pub project: Option<String>,
    /// When this run started.
    pub now: DateTime<Utc>,
}

impl Policy {
    /// Whether the reads said of everyone whether they hold a license: a
    /// license group matched, and Graph listed every user who joined one.
    pub fn says_who_holds_a_license(&self) -> bool {
        self.license_groups != Some(0) && self.unlisted_joiners == 0
    }
}

/// A state write the run makes when the step succeeds.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `managed/<key>`.
    Managed(String, Managed),
    /// `domain-leaving/<key>`: an in-domain user's grace clock, set or
    /// (`None`) dropped.
    Clock(String, Option<DomainLeaving>),
    /// Drops `managed/<key>`: a grace clock an older version kept there.
    Forget(String),
    /// `meta/holders`.
    Holders(Holders),
    /// `creating/<key>`: since when a license holder (and which Entra
    /// user) has been missing from Procore, set or (`None`) dropped.
    Creating(String, Option<Creating>),
}

/// Whose Procore user a license holder whom no user matches by key is
/// ([`Run::same_person`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Same {
    /// This user (its id, and whether it is active), claimed for them.
    User(Id, bool),
    /// Nobody's: they are missing from Procore.
    Nobody,
    /// Maybe one a killed run created under their old key: decided once
    /// every license holder is matched.
    Later,
}

/// The lifecycle of one run.
pub struct Run<'a, 'w> {
    /// Managed records (their positions in `known`) by Procore id.
    by_id: HashMap<IdKey<'a>, u32>,
    /// By record: whether its Entra user holds a license in this run.
    entra_held: Vec<bool>,
    /// By record: whether this run has made it active and not leaving.
    settled: Vec<bool>,
    /// License holders known in Procore under another key, and the index
    /// of their user (its login and email are read with the leavers').
    known_as: Vec<(KnownAs, u32)>,
    known: &'a Known,
    policy: &'a Policy,
    now: String,
    /// Keys of legacy clocks (under `managed/`) that this run's adoption
    /// wrote a record over: theirs now, not a clock to drop.
    reclaimed: HashSet<Box<str>>,
    /// Where each state write goes, as it is made.
    write: &'w mut dyn FnMut(Write) -> Result<(), StepError>,
    /// Records (by index) owed a project call on the flow's project that
    /// this run can make, with their user's index and the call
    /// ([`Run::owed_projects`]).
    owed: Vec<(u32, u32, ProjectAction)>,
    /// Records (by index) that [`Run::settle`] found active again after
    /// the flow deactivated them: owed the project add from this run on,
    /// though their stored record (in `known`) does not say so yet.
    owed_add_now: HashSet<u32>,
    /// People this run took as created by the flow ([`Run::adopt`]) and
    /// owed the project add: key, Procore id and user index.
    owed_created: Vec<(String, Id, u32)>,
    /// Users this run took as the flow's creation under a license holder's
    /// old key ([`Run::same_person`]): their ledger entries, written out
    /// by [`Run::finish`] (the match holds the output meanwhile).
    created_under_old_key: Vec<Adopted>,
    /// Whether someone the first run found leaving is a leaver now whom
    /// no admin has approved or rejected yet: everyone waits.
    first_run_undecided: bool,
    /// Whether someone the first run found leaving is undecided still, a
    /// leaver or still in their grace: the first run's mark is kept.
    first_run_pending: bool,
    /// When the first run found people leaving, while some may be
    /// undecided (the holder count's `first_held`), read once.
    first_held: Option<DateTime<Utc>>,
    /// Whether someone found leaving by the last run a drop of the count
    /// held ([`HeldDrop`]) is a leaver still undecided: the drop's count
    /// is kept.
    drop_pending: bool,
    /// When that run was (the holder count's `held_drop`), read once.
    drop_held: Option<DateTime<Utc>>,
    /// The latest time a leaver of this run was found leaving: a run that
    /// holds for a drop is marked no earlier, so that a replica whose
    /// clock is behind the one that found them still counts them held.
    latest_leaving: Option<DateTime<Utc>>,
}

impl<'a, 'w> Run<'a, 'w> {
    pub fn new(
        known: &'a Known,
        policy: &'a Policy,
        write: &'w mut dyn FnMut(Write) -> Result<(), StepError>,
    ) -> Self {
        let by_id = known
            .records()
            .enumerate()
            .map(|(i, r)| (IdKey::of(&r.procore_id), i as u32))
            .collect();
        Run {
            by_id,
            entra_held: vec![false; known.count()],
            settled: vec![false; known.count()],
            known_as: Vec::new(),
            known,
            policy,
            now: policy.now.to_rfc3339(),
            reclaimed: HashSet::new(),
            write,
            owed: Vec::new(),
            owed_add_now: HashSet::new(),
            owed_created: Vec::new(),
            created_under_old_key: Vec::new(),
            first_run_undecided: false,
            first_run_pending: false,
            first_held: known
                .holders
                .as_ref()
                .and_then(|h| h.first_held.as_deref())
                .and_then(parse_time),
            drop_pending: false,
            latest_leaving: None,
            drop_held: known
                .holders
                .as_ref()
                .and_then(|h| h.held_drop.as_ref())
                .and_then(|d| parse_time(&d.at)),
        }
    }

    /// Marks the Procore user `id` as matched by a license holder (only
    /// ids of this run's users are ever asked about).
    fn hold(users: &mut Users, id: &Id) {
        if let Some(user) = users.by_id(IdKey::of(id)) {
            users.hold(user);
        }
    }

    fn record(&self, user: &User, origin: Origin, entra_id: Option<&str>) -> Managed {
        Managed::new(user.id.clone(), origin, &self.now, entra_id)
    }

    /// The managed record at `index`, whose active Procore user holds a
    /// license: loses its `leaving_since` and is active again (once a run).
    /// Someone the flow deactivated who is active again without the run
    /// that reactivated them seeing it through (a host that died after
    /// Procore took the reactivation, or an admin's hand) is owed the
    /// project add a returner gets; an owed removal is moot.
    fn settle(&mut self, index: u32) -> Result<(), StepError> {
        if std::mem::replace(&mut self.settled[index as usize], true) {
            return Ok(());
        }
        let record = self.known.record(index);
        if record.leaving_since.is_some() || record.status != Status::Active {
            let mut whole = self.known.full(record)?;
            let returned = whole.status == Status::Deactivated;
            whole.leaving_since = None;
            whole.status = Status::Active;
            whole.owed_project = still_owed(whole.owed_project.take(), Status::Active);
            if let Some(project) = self.policy.project.as_ref().filter(|_| returned) {
                whole.owed_project = Some(OwedProject {
                    project_id: project.clone(),
                    action: ProjectAction::Add,
                });
                // Made in this run, not the next: its user is active and
                // holds a license, so nothing waits for it.
                self.owed_add_now.insert(index);
            }
            (self.write)(Write::Managed(record.key.to_string(), whole))?;
        }
        Ok(())
    }

    /// `person` holds a license now: every record that keeps their Entra
    /// id is their Procore user, whatever its key, so none is a leaver;
    /// one whose user is active is settled as a match would settle it.
    pub fn holder(&mut self, users: &Users, person: &PersonRef<'_>) -> Result<(), StepError> {
        let Some(entra) = person.id.as_deref().and_then(EntraKey::of) else {
            return Ok(());
        };
        let known = self.known;
        for &index in known.by_entra(&entra) {
            if std::mem::replace(&mut self.entra_held[index as usize], true) {
                continue;
            }
            let user = users.by_id(IdKey::of(&known.record(index).procore_id));
            if user.is_some_and(|u| users.get(u).active) {
                self.settle(index)?;
            }
        }
        Ok(())
    }

    /// `person` (key `key`, the first entry of it) matches no Procore user
    /// by key: when a record keeps their Entra id and its Procore user is
    /// in this run's list (an active one before an inactive one), that
    /// user is theirs; else one a killed run created for them under an
    /// old key ([`Run::created_under_old_key`]) is. Claims it, lists it in
    /// `known_as` (Procore has the old address, active or not) and
    /// answers its id and whether it is active.
    ///
    /// A user under an old key is not decided while `holders_left`: a
    /// license holder later in the list may have that old key, and then
    /// the user is theirs (a holder matched by key wins, whatever the
    /// list's order). The person is asked again once every holder is
    /// matched.
    pub fn same_person(
        &mut self,
        users: &mut Users,
        key: &str,
        person: &PersonRef<'_>,
        holders_left: bool,
    ) -> Result<Same, StepError> {
        let Some(entra) = person.id.as_deref().and_then(EntraKey::of) else {
            return Ok(Same::Nobody);
        };
        let mut best: Option<(u32, u32)> = None;
        for &index in self.known.by_entra(&entra) {
            let Some(user) = users.by_id(IdKey::of(&self.known.record(index).procore_id)) else {
                continue;
            };
            let better = best.is_none_or(|(_, b)| users.get(user).active && !users.get(b).active);
            if better {
                best = Some((index, user));
            }
        }
        let Some((index, user)) = best else {
            if holders_left {
                let maybe = self.created_under_old_key(users, key, &entra).is_some();
                return Ok(if maybe { Same::Later } else { Same::Nobody });
            }
            return self.take_created_under_old_key(users, key, person, &entra);
        };
        users.claim(user);
        let found = users.get(user);
        let (procore_id, active) = (found.id.clone(), found.active);
        // Inactive too: a returner reactivated under the old address is
        // told of in the run that brings them back, not only the next.
        let managed_as = self.known.record(index).key.to_string();
        let known_as = known_as_entry(key, &procore_id, managed_as, person);
        self.known_as.push((known_as, user));
        Ok(Same::User(procore_id, active))
    }

    /// The active user, unmanaged and matched by nobody yet, that Procore
    /// created since a run found the Entra user `entra` missing under
    /// another key (`creating/<old key>` keeps their id), and whose
    /// creation no admin rejected: that run's creation, whose host died
    /// before recording it, and whose person's key changed since (their
    /// mail appeared). Returns the old key and the user's index.
    fn created_under_old_key(
        &self,
        users: &Users,
        key: &str,
        entra: &EntraKey,
    ) -> Option<(&'a str, u32)> {
        let known = self.known;
        known.creating.of_entra(entra).find_map(|mark| {
            let old = mark.key.as_ref();
            let rejected = Key::of(old).is_some_and(|k| self.policy.creates_rejected.contains(&k));
            if old == key || rejected || known.contains(old) {
                return None;
            }
            let index = users.unseen_key(old)?;
            let user = users.get(index);
            let unmanaged = !self.by_id.contains_key(&IdKey::of(&user.id));
            let ours = user.active && user.created_lately && !user.matched && !user.held;
            (ours && unmanaged).then_some((old, index))
        })
    }

    /// Takes the user [`Run::created_under_old_key`] finds as the flow's
    /// creation, under the old key (the address Procore has, and the key
    /// of its create's ledger), as a record an earlier run would have
    /// kept, listed in `known_as` like one: nobody is created again.
    fn take_created_under_old_key(
        &mut self,
        users: &mut Users,
        key: &str,
        person: &PersonRef<'_>,
        entra: &EntraKey,
    ) -> Result<Same, StepError> {
        let Some((old, index)) = self.created_under_old_key(users, key, entra) else {
            return Ok(Same::Nobody);
        };
        // A later license holder with the old key is the same user again.
        users.find_key(old);
        users.claim(index);
        let adopted = self.manage(users, old, index, Origin::Created, person)?;
        let known_as = known_as_entry(key, &adopted.procore_id, old.to_string(), person);
        self.known_as.push((known_as, index));
        let procore_id = adopted.procore_id.clone();
        self.created_under_old_key.push(adopted);
        Ok(Same::User(procore_id, true))
    }

    /// `person` (key `key`) matches the active Procore user `procore_id`:
    /// adopts them unless managed; a managed one holding a license again
    /// loses its `leaving_since`. The person is the first entry of their
    /// key (`graph-group-members` gives one entry a person).
    pub fn adopt(
        &mut self,
        users: &mut Users,
        out: &mut Written,
        key: &str,
        procore_id: &Id,
        person: &PersonRef<'_>,
    ) -> Result<(), StepError> {
        Self::hold(users, procore_id);
        let id = IdKey::of(procore_id);
        if let Some(&index) = self.by_id.get(&id) {
            return self.settle(index);
        }
        if self.known.contains(key) {
            return Ok(());
        }
        let Some(index) = users.by_id(id) else {
            return Ok(());
        };
        let user = users.get(index);
        // Found missing by an earlier run, and created since: that run's
        // creation, whose host died before the item ended (the record and
        // the project add are written then). Taken as the flow's own, and
        // owed the add a new user gets. Someone an admin created by hand
        // meanwhile is taken the same way (a license holder the flow was
        // creating and adding itself), unless an admin rejected their
        // creation: then it was never sent.
        let ours = user.created_lately
            && Key::of(key).is_some_and(|k| !self.policy.creates_rejected.contains(&k));
        let origin = if ours {
            Origin::Created
        } else if user.in_domain {
            Origin::Domain
        } else {
            Origin::Adopted
        };
        let adopted = self.manage(users, key, index, origin, person)?;
        out.adopted.push(&adopted)?;
        out.counts.adopted += 1;
        Ok(())
    }

    /// Writes the record of the user at `index`, now managed under `key`
    /// as `person`'s, with the project add owed to one the flow created;
    /// returns its ledger entry.
    fn manage(
        &mut self,
        users: &Users,
        key: &str,
        index: u32,
        origin: Origin,
        person: &PersonRef<'_>,
    ) -> Result<Adopted, StepError> {
        let user = users.get(index);
        let mut record = self.record(user, origin, person.id.as_deref());
        let created = origin == Origin::Created;
        if let Some(project) = self.policy.project.as_ref().filter(|_| created) {
            record.owed_project = Some(OwedProject {
                project_id: project.clone(),
                action: ProjectAction::Add,
            });
            self.owed_created
                .push((key.to_string(), user.id.clone(), index));
        }
        (self.write)(Write::Managed(key.to_string(), record))?;
        if self.known.clock(key).is_some_and(|c| c.legacy) {
            self.reclaimed.insert(key.into());
        }
        Ok(Adopted {
            key: key.to_string(),
            status: AdoptedStatus::Adopted,
            procore_id: user.id.clone(),
            matched_by: Some(MatchedBy::of(key, person.mail.as_deref())),
            license_group: person.license_group(),
            origin,
            detail: None,
            name: None,
        })
    }

    /// Once every license holder is matched (and adopted): returners,
    /// leavers and the guard. `list` is the Procore users' list, read
    /// again for the names of leavers.
    pub fn finish(
        mut self,
        users: &mut Users,
        list: &Paged<ProcoreUser>,
        out: &mut Written,
    ) -> Result<(), StepError> {
        for adopted in std::mem::take(&mut self.created_under_old_key) {
            out.adopted.push(&adopted)?;
            out.counts.adopted += 1;
        }
        self.returners(users, list, out)?;
        self.owed = self.owed_now(users);
        self.leavers(users, list, out)?;
        self.owed_projects(users, out);
        self.known_as(users, out);
        self.guard(out)?;
        out.counts.leavers = out.leavers.len();
        out.counts.returners = out.returners.len();
        // Returners left the inactive list: the count says what it lists,
        // as the report does.
        out.counts.present_inactive = out.present_inactive.len();
        Ok(())
    }

    /// Splits the inactive matches into returners and the rest.
    fn returners(
        &mut self,
        users: &mut Users,
        list: &Paged<ProcoreUser>,
        out: &mut Written,
    ) -> Result<(), StepError> {
        let inactive = std::mem::take(&mut out.present_inactive);
        let named: Vec<u32> = inactive
            .iter()
            .filter_map(|found| users.by_id(IdKey::of(&found.procore_id)))
            .collect();
        users.fetch_details(list, named)?;
        for found in inactive {
            Self::hold(users, &found.procore_id);
            let id = IdKey::of(&found.procore_id);
            let details = users.by_id(id).and_then(|i| users.details(i));
            let login = details.and_then(|d| d.login.clone());
            match self.by_id.get(&id).map(|&i| self.known.record(i)) {
                // The record's key, which the reactivate step marks: the
                // person's own unless their key changed since. A
                // deactivation the flow sent but never saw answered is
                // the flow's too, now that Procore has them inactive.
                Some(record)
                    if matches!(record.status, Status::Deactivated | Status::Deactivating) =>
                {
                    out.returners.push(Returner {
                        key: record.key.to_string(),
                        procore_id: found.procore_id.clone(),
                        name: Some(found.person.name().to_string()),
                        email: details.and_then(|d| d.email_address.clone()),
                        login,
                        license_group: found.person.groups.first().cloned(),
                        matched_by: found.matched_by(),
                    });
                }
                _ => {
                    out.inactive_unmanaged.push(InactiveUnmanaged {
                        key: found.person.key.clone(),
                        procore_id: found.procore_id.clone(),
                        login,
                    });
                    out.present_inactive.push(found);
                }
            }
        }
        Ok(())
    }

    /// Managed (or in-domain) active users whom no license holder matches.
    /// A user with a second account of a license holder (their login or
    /// email address is the holder's key, but the match chose the other
    /// account) is not one: the key holds a license. Nor is a record whose
    /// Entra user holds a license under another key ([`Run::holder`]).
    /// The users listed in `known_as` have their details read here too, so
    /// the list is read again once at most.
    fn leavers(
        &mut self,
        users: &mut Users,
        list: &Paged<ProcoreUser>,
        out: &mut Written,
    ) -> Result<(), StepError> {
        let known = self.known;
        // A run that matched no license group checked nobody: it lists no
        // leaver and starts or drops no grace clock (its deactivate step
        // does not run either). The details of the rest are still read.
        let checked = self.policy.license_groups != Some(0);
        let mut managed: Vec<(&Record, u32)> = Vec::new();
        let mut too_late: Vec<(&Record, u32)> = Vec::new();
        for (index, record) in known.records().enumerate() {
            if !checked || self.entra_held[index] {
                continue;
            }
            let Some(i) = users.by_id(IdKey::of(&record.procore_id)) else {
                continue;
            };
            let user = users.get(i);
            // An inactive user whose record says `deactivating` is the
            // flow's own deactivation, never seen answered: listed again
            // (as `inactive`) for the deactivate step to confirm, unless
            // an admin rejected it since: then it is finished here.
            let ours = user.active || record.status == Status::Deactivating;
            if ours && !user.held && !users.holds_license(&record.key) {
                if !user.active && self.rejected(&record.key) {
                    too_late.push((record, i));
                } else {
                    managed.push((record, i));
                }
            }
        }
        let mut in_domains = Vec::new();
        if checked && !self.policy.domains.is_empty() {
            for (i, user) in users.iter() {
                let id = IdKey::of(&user.id);
                // A repeated id counts once, as its last user.
                if users.by_id(id) != Some(i) {
                    continue;
                }
                if user.active && !user.held && !self.by_id.contains_key(&id) && user.in_domain {
                    in_domains.push(i);
                }
            }
        }
        let mut still_rejected = match checked {
            true => self.still_rejected(users),
            false => Vec::new(),
        };
        let wanted = managed
            .iter()
            .map(|(_, i)| *i)
            .chain(in_domains.iter().copied())
            .chain(still_rejected.iter().map(|(_, i)| *i))
            .chain(self.known_as.iter().map(|(_, i)| *i))
            .chain(self.owed.iter().map(|(_, i, _)| *i))
            .chain(self.owed_created.iter().map(|(_, _, i)| *i))
            .chain(too_late.iter().map(|(_, i)| *i));
        let wanted: Vec<u32> = wanted.collect();
        users.fetch_details(list, wanted)?;
        let details = |i: u32| users.details(i).cloned().unwrap_or_default();
        for (record, i) in too_late {
            self.applied_before_rejection(out, record, procore_name(&details(i)))?;
        }
        let mut candidates: Vec<(String, Candidate, Details)> = managed
            .into_iter()
            .map(|(record, i)| {
                let candidate = Candidate::Known {
                    record,
                    inactive: !users.get(i).active,
                };
                (record.key.to_string(), candidate, details(i))
            })
            .collect();
        if !self.policy.domains.is_empty() {
            for i in in_domains {
                let found = details(i);
                let keys: Vec<Key> = [&found.login, &found.email_address]
                    .into_iter()
                    .filter_map(|f| f.as_deref().and_then(Key::of))
                    .collect();
                if keys.iter().any(|k| users.holds_license(k.as_str())) {
                    continue;
                }
                let Some(key) = keys.into_iter().next() else {
                    continue;
                };
                let procore_id = users.get(i).id.clone();
                let clock = self
                    .known
                    .clock(key.as_str())
                    .filter(|c| IdKey::of(&c.procore_id) == IdKey::of(&procore_id));
                let candidate = Candidate::Domain { procore_id, clock };
                candidates.push((key.into_string(), candidate, found));
            }
            candidates.sort_by(|a, b| a.0.cmp(&b.0));
        }
        // A key a candidate has is listed once, as the candidate.
        let taken: HashSet<Key> = candidates
            .iter()
            .filter_map(|(k, _, _)| Key::of(k))
            .collect();
        still_rejected.retain(|(key, _)| Key::of(key).is_none_or(|k| !taken.contains(&k)));
        let mut timed: HashSet<String> = HashSet::new();
        for (key, candidate, user) in candidates {
            if let Candidate::Domain { .. } = candidate {
                timed.insert(key.clone());
            }
            self.leaver(out, key, candidate, &user)?;
        }
        // Held as rejected whatever a grace says: nothing to count or keep.
        for (key, i) in still_rejected {
            let user = details(i);
            out.leavers.push(Leaver {
                reason: self.reason(&key, &user),
                key,
                procore_id: users.get(i).id.clone(),
                name: procore_name(&user),
                email: user.email_address.clone(),
                login: user.login.clone(),
                inactive: false,
                entra_id: None,
            });
        }
        match checked {
            true => self.drop_clocks(&timed),
            false => Ok(()),
        }
    }

    /// The users of keys an admin rejected whom this run would not list
    /// as leavers though they still are: active, holding no license, and
    /// not managed by this run (a run without the `managed_domains` that
    /// made them leavers). Listed all the same, the deactivate step's gate
    /// holds them as rejected: a rejection stands until the person holds
    /// a license again or is inactive or gone in Procore, not until one
    /// run happens to leave them out, after which a later run would take
    /// them for a new leaver, under `max_unapproved_deactivations`.
    ///
    /// Only users without a record: a record's user was judged by the
    /// record (a leaver or not, also when its Entra user holds a license
    /// under a new key). A key a candidate also has is dropped by the
    /// caller, so no key is listed twice.
    fn still_rejected(&self, users: &Users) -> Vec<(String, u32)> {
        let mut keys: Vec<&Key> = self.policy.rejected.iter().collect();
        keys.sort();
        let mut seen: HashSet<u32> = HashSet::new();
        let mut found: Vec<(String, u32)> = Vec::new();
        for key in keys {
            let Some(i) = users.unseen_key(key.as_str()) else {
                continue;
            };
            let user = users.get(i);
            let id = IdKey::of(&user.id);
            // A repeated id counts once, as its last user.
            let last = users.by_id(id) == Some(i);
            // `matched`: a license holder has its other key (login or
            // email address): that holder's account, no leaver.
            let leaving = user.active && !user.held && !user.matched;
            let unrecorded = !self.by_id.contains_key(&id);
            if leaving && last && unrecorded && seen.insert(i) {
                found.push((key.as_str().to_string(), i));
            }
        }
        found
    }

    /// The license holders known in Procore under another key, with the
    /// login and email address Procore has for them (read by
    /// [`Run::leavers`]).
    fn known_as(&mut self, users: &Users, out: &mut Written) {
        for (mut known_as, i) in std::mem::take(&mut self.known_as) {
            if let Some(details) = users.details(i) {
                known_as.login = details.login.clone();
                known_as.email = details.email_address.clone();
            }
            out.known_as.push(known_as);
        }
    }

    /// The records owed a project call on the flow's project that this run
    /// can make, each with its user: an add for an active user who holds a
    /// license now (never one who is leaving), a removal for a user the
    /// flow deactivated who is still inactive and holds no license (never
    /// a returner, whom the reactivate step puts back). A call owed on another
    /// project (the flow's changed since) or by someone Procore no longer
    /// lists waits. A record this run settled as active again is owed the
    /// add already (see [`Run::settle`]).
    fn owed_now(&self, users: &Users) -> Vec<(u32, u32, ProjectAction)> {
        let Some(project) = self.policy.project.as_deref() else {
            return Vec::new();
        };
        let mut owed = Vec::new();
        for (index, record) in self.known.records().enumerate() {
            let (action, status) = if self.owed_add_now.contains(&(index as u32)) {
                (ProjectAction::Add, Status::Active)
            } else {
                match record
                    .owed_project
                    .as_deref()
                    .filter(|o| o.project_id == project)
                {
                    Some(call) => (call.action, record.status),
                    None => continue,
                }
            };
            let Some(i) = users.by_id(IdKey::of(&record.procore_id)) else {
                continue;
            };
            let user = users.get(i);
            let due = match action {
                ProjectAction::Add => {
                    status == Status::Active && user.active && (user.held || self.entra_held[index])
                }
                // A returner (licensed again) is put back on the project
                // by the reactivate step, never taken off it.
                ProjectAction::Remove => {
                    status == Status::Deactivated
                        && !user.active
                        && !user.matched
                        && !self.entra_held[index]
                        && !users.holds_license(&record.key)
                }
            };
            if due {
                owed.push((index as u32, i, action));
            }
        }
        owed
    }

    /// Lists the project calls [`Run::owed_now`] found, with the names
    /// Procore has for the people (read with the leavers').
    fn owed_projects(&mut self, users: &Users, out: &mut Written) {
        // Only calls on the flow's project are ever listed.
        let project = self.policy.project.as_deref().unwrap_or_default();
        for (index, i, action) in std::mem::take(&mut self.owed) {
            let record = self.known.record(index);
            out.project_owed.push(ProjectOwed {
                key: record.key.to_string(),
                procore_id: record.procore_id.clone(),
                name: users.details(i).and_then(procore_name),
                project_id: project.to_string(),
                action,
            });
        }
        for (key, procore_id, i) in std::mem::take(&mut self.owed_created) {
            out.project_owed.push(ProjectOwed {
                key,
                procore_id,
                name: users.details(i).and_then(procore_name),
                project_id: project.to_string(),
                action: ProjectAction::Add,
            });
        }
        out.counts.project_owed = out.project_owed.len();
    }

    /// Drops the grace clocks of users who are not in-domain candidates in
    /// this run (`timed` are): they hold a license, are inactive, left the
    /// domain, or the run names no domain. A clock left behind would count
    /// a later grace from a stale start.
    fn drop_clocks(&mut self, timed: &HashSet<String>) -> Result<(), StepError> {
        for clock in self.known.clocks() {
            if timed.contains(clock.key.as_ref()) {
                continue;
            }
            if !clock.legacy {
                (self.write)(Write::Clock(clock.key.to_string(), None))?;
            } else if !self.reclaimed.contains(&clock.key) {
                (self.write)(Write::Forget(clock.key.to_string()))?;
            }
        }
        Ok(())
    }

    fn leaver(
        &mut self,
        out: &mut Written,
        key: String,
        candidate: Candidate<'_>,
        user: &Details,
    ) -> Result<(), StepError> {
        let reason = self.reason(&key, user);
        let inactive = matches!(candidate, Candidate::Known { inactive: true, .. });
        let (procore_id, leaving_since) = match &candidate {
            Candidate::Known { record, .. } => {
                (record.procore_id.clone(), record.leaving_since.as_deref())
            }
            Candidate::Domain { procore_id, clock } => {
                (procore_id.clone(), clock.map(|c| c.since.as_ref()))
            }
        };
        // Its deactivation was sent already (approved, past any grace):
        // the grace is not counted again, even from a record the step
        // started for an in-domain user.
        if !inactive {
            let since = leaving_since.and_then(parse_time);
            let since = match (candidate, since) {
                (Candidate::Known { record, .. }, since)
                    if record.status != Status::Deactivating =>
                {
                    // Deactivated by the flow, active again (an admin's
                    // hand) and still without a license: the record is
                    // active again, so an admin's later deactivation is
                    // never taken for the flow's (and undone for a
                    // returner). The admin's act starts a new leaving, so
                    // its grace counts from now; and, as for a returner,
                    // the project add is owed (made once they hold a
                    // license, never while they are leaving).
                    let reactivated = record.status == Status::Deactivated;
                    match since {
                        Some(since) if !reactivated => since,
                        since => {
                            let mut whole = self.known.full(record)?;
                            let since = if reactivated {
                                self.policy.now
                            } else {
                                since.unwrap_or(self.policy.now)
                            };
                            if reactivated {
                                whole.status = Status::Active;
                                whole.owed_project =
                                    self.policy.project.as_ref().map(|project| OwedProject {
                                        project_id: project.clone(),
                                        action: ProjectAction::Add,
                                    });
                            }
                            whole.leaving_since = Some(since.to_rfc3339());
                            (self.write)(Write::Managed(key.clone(), whole))?;
                            since
                        }
                    }
                }
                (Candidate::Known { record, .. }, since) => {
                    let mut whole = self.known.full(record)?;
                    // Still active although the record says `deactivating`:
                    // Procore never applied the deactivation a run sent (its
                    // host died before the answer). The record is active
                    // again, so an admin's later deactivation is never
                    // taken for the flow's; the step marks it anew when it
                    // sends one. Its grace had run out already.
                    let since = since
                        .or_else(|| parse_time(&whole.since))
                        .unwrap_or(self.policy.now);
                    whole.status = Status::Active;
                    whole.owed_project = still_owed(whole.owed_project.take(), Status::Active);
                    if whole.leaving_since.is_none() {
                        whole.leaving_since = Some(since.to_rfc3339());
                    }
                    (self.write)(Write::Managed(key.clone(), whole))?;
                    since
                }
                (Candidate::Domain { clock, .. }, since) => {
                    // A legacy clock moves out of `managed/`, keeping its start.
                    let legacy = clock.is_some_and(|c| c.legacy);
                    let start = since.unwrap_or(self.policy.now);
                    if since.is_none() || legacy {
                        self.start_clock(&key, &procore_id, start.to_rfc3339())?;
                    }
                    if legacy {
                        (self.write)(Write::Forget(key.clone()))?;
                    }
                    start
                }
            };
            let waited = (self.policy.now - since).to_std().unwrap_or_default();
            if self.held_by_first_run(since) && !self.decided(&key) {
                self.first_run_pending = true;
                self.first_run_undecided |= waited >= self.policy.grace;
            }
            // A leaver the last run held for a drop (found leaving by
            // then), not decided yet, in their grace or past it: the
            // drop's count is kept.
            if self.drop_held.is_some_and(|held| since <= held) && !self.decided(&key) {
                self.drop_pending = true;
            }
            self.latest_leaving = self.latest_leaving.max(Some(since));
            // In their grace (a run with a longer `leaver_grace` than the
            // one that found them): listed all the same when an admin
            // rejected their deactivation, so the gate holds the rejection
            // rather than close it as no longer needed.
            if waited < self.policy.grace && !self.rejected(&key) {
                out.leaving.push(Leaving {
                    key,
                    procore_id,
                    since: since.to_rfc3339(),
                    reason,
                });
                return Ok(());
            }
        }
        let entra_id = match reason {
            LeaveReason::AccountDisabled => self.disabled_entra_id(&key, user),
            _ => None,
        };
        out.leavers.push(Leaver {
            key,
            procore_id,
            name: procore_name(user),
            email: user.email_address.clone(),
            login: user.login.clone(),
            reason,
            inactive,
            entra_id,
        });
        Ok(())
    }

    /// Whether someone leaving since `since` was found so by the first run
    /// (while the holder count says some may be undecided still).
    fn held_by_first_run(&self, since: DateTime<Utc>) -> bool {
        self.first_held.is_some_and(|first| since <= first)
    }

    /// Whether an admin rejected the deactivation of `key`.
    fn rejected(&self, key: &str) -> bool {
        Key::of(key).is_some_and(|k| self.policy.rejected.contains(&k))
    }

    /// `record` says `deactivating` and Procore has its user inactive: the
    /// deactivation a run sent (approved then) was applied, and its host
    /// died before recording it; an admin rejected it only after. Listed
    /// for the deactivate step, it would be held as rejected run after
    /// run, and never recorded. Too late to refuse, and undoing it would
    /// change Procore without approval: the record says `deactivated` (a
    /// later license makes them a returner), the ledger says so, and
    /// nothing else is done (no project removal is made or owed).
    fn applied_before_rejection(
        &mut self,
        out: &mut Written,
        record: &Record,
        name: Option<String>,
    ) -> Result<(), StepError> {
        let mut whole = self.known.full(record)?;
        whole.status = Status::Deactivated;
        whole.owed_project = still_owed(whole.owed_project.take(), Status::Deactivated);
        let origin = whole.origin;
        (self.write)(Write::Managed(record.key.to_string(), whole))?;
        let told = Adopted {
            key: record.key.to_string(),
            status: AdoptedStatus::Deactivated,
            procore_id: record.procore_id.clone(),
            matched_by: None,
            license_group: None,
            origin,
            detail: Some(APPLIED_BEFORE_REJECTION.to_string()),
            name,
        };
        out.adopted.push(&told)?;
        out.rejected_too_late.push(told);
        Ok(())
    }

    /// Whether an admin approved or rejected the deactivation of `key`.
    fn decided(&self, key: &str) -> bool {
        Key::of(key)
            .is_some_and(|k| self.policy.rejected.contains(&k) || self.policy.approved.contains(&k))
    }

    fn start_clock(&mut self, key: &str, procore_id: &Id, since: String) -> Result<(), StepError> {
        let clock = DomainLeaving {
            procore_id: procore_id.clone(),
            since,
        };
        (self.write)(Write::Clock(key.to_string(), Some(clock)))
    }

    /// The Entra id of the disabled member `key` or `user` is.
    fn disabled_entra_id(&self, key: &str, user: &Details) -> Option<String> {
        leaver_keys(key, user).find_map(|k| self.policy.disabled_ids.get(&k).cloned())
    }

    fn reason(&self, key: &str, user: &Details) -> LeaveReason {
        let keys: Vec<Key> = leaver_keys(key, user).collect();
        if keys.iter().any(|k| self.policy.gone.contains(k)) {
            LeaveReason::UserGone
        } else if keys.iter().any(|k| self.policy.disabled.contains(k)) {
            LeaveReason::AccountDisabled
        } else {
            LeaveReason::NoLicenseGroup
        }
    }

    /// The mass-change guard, and the holder count kept for the next run.
    fn guard(&mut self, out: &mut Written) -> Result<(), StepError> {
        let count = out.counts.people;
        // A run that matched no license group counts nobody, and one that
        // missed joiners counts too few: neither count is kept.
        let counted = self.policy.says_who_holds_a_license();
        // The count this run is measured from: the one kept, or, once an
        // admin has decided everyone a drop held, the count of the last
        // run that held them (a new drop since is held again).
        let known: &'a Known = self.known;
        // A mark whose time does not read holds on: nobody can be told
        // apart as found after it.
        let released = !self.drop_pending && self.drop_held.is_some();
        let baseline = known.holders.as_ref().map(|h| match &h.held_drop {
            Some(drop) if released => (drop.count, drop.at.as_str()),
            _ => (h.count, h.at.as_str()),
        });
        let fell = |(was, _): (usize, &str)| count * 2 < was;
        let reason = if self.policy.license_groups == Some(0) {
            Some((
                GuardKind::NoLicenseGroup,
                "no license group matched the group prefixes, so nobody was checked for leaving and nobody is deactivated in this run (check the prefixes)"
                    .to_string(),
            ))
        } else if self.policy.unlisted_joiners > 0 && !out.leavers.is_empty() {
            let who = match self.policy.unlisted_joiners {
                1 => "1 user who joined a license group is".to_string(),
                n => format!("{n} users who joined a license group are"),
            };
            Some((
                GuardKind::UnlistedJoiners,
                format!(
                    "nobody is deactivated in this run, not even someone approved: {who} not listed by Graph yet (Graph's replication delay) and may be a leaver who holds a license again; the next run looks them up again"
                ),
            ))
        } else if self.policy.unlisted_joiners > 0 {
            // Nobody to hold: the step is skipped all the same (the plan
            // waits as it is), with nothing to tell.
            None
        } else {
            match baseline {
                // Only `managed_domains` makes leavers in a first run: a
                // first run changes nobody without an admin, whatever the
                // params say.
                None if !out.leavers.is_empty() => Some((
                    GuardKind::FirstRun,
                    "this is the flow's first run (no count of license holders is kept yet), so nobody is deactivated without approval"
                        .to_string(),
                )),
                None => None,
                Some((was, at)) if fell((was, at)) => Some((
                    GuardKind::HoldersFell,
                    format!(
                        "license holders fell from {was} to {count} (more than half) since the run of {}, so nobody is deactivated without approval",
                        shown_time(at)
                    ),
                )),
                // …and until an admin has decided those, nobody else is.
                Some(_) if self.first_run_undecided => Some((
                    GuardKind::FirstRunUndecided,
                    "the deactivations of people the first run found leaving are not all approved or rejected yet, so nobody is deactivated without approval"
                        .to_string(),
                )),
                Some(_) => None,
            }
        };
        // After a drop, the old count is kept until every deactivation the
        // guard held is decided (approved ones leave the leavers once
        // done), with the last run that held them: then that run's count
        // is the one an admin has seen, and a later drop is measured from
        // it. A first run's count is kept at once (it is no drop), with
        // when it held its leavers, which hold every deactivation back
        // until they are decided.
        // Those in their grace cannot be decided yet: when it ends, they
        // are measured from the count before the drop.
        let undecided =
            !out.leaving.is_empty() || out.leavers.iter().any(|l| !self.decided(&l.key));
        let held_by_drop = baseline.is_some_and(fell) && undecided;
        if counted {
            // Those in their grace too: they were found leaving by a run
            // that changes nobody without an admin.
            let found_leaving = !out.leavers.is_empty() || !out.leaving.is_empty();
            let first_held = match &self.known.holders {
                None => found_leaving.then(|| self.now.clone()),
                Some(h) if self.first_run_pending => h.first_held.clone(),
                Some(_) => None,
            };
            let holders = match baseline {
                Some((was, at)) if held_by_drop => Holders {
                    count: was,
                    at: at.to_owned(),
                    first_held,
                    held_drop: Some(HeldDrop {
                        at: match self.latest_leaving {
                            Some(latest) if latest > self.policy.now => latest.to_rfc3339(),
                            _ => self.now.clone(),
                        },
                        count,
                    }),
                },
                _ => Holders {
                    count,
                    at: self.now.clone(),
                    first_held,
                    held_drop: None,
                },
            };
            (self.write)(Write::Holders(holders))?;
        }
        out.guard = match reason {
            Some((kind, reason)) => Guard {
                hold: true,
                reason,
                kind: Some(kind),
                deactivate: counted,
            },
            None => Guard {
                deactivate: counted,
                ..Guard::default()
            },
        };
        Ok(())
    }
}

/// What the ledger says of a deactivation [`Run::applied_before_rejection`]
/// finished.
const APPLIED_BEFORE_REJECTION: &str = "Procore shows the deactivation an earlier run sent (approved then) applied, though an admin rejected it since: recorded as deactivated; nothing more is done (not taken off the project)";

/// Someone who may be a leaver: a managed record, or an in-domain user
/// whom only this run's `managed_domains` manages (with the grace clock
/// kept for the same Procore user, if any).
enum Candidate<'a> {
    Known {
        record: &'a Record,
        /// Procore has the user inactive (the record says `deactivating`).
        inactive: bool,
    },
    Domain {
        procore_id: Id,
        clock: Option<&'a Clock>,
    },
}

/// The `known_as` entry of `person` (key `key`), whose Procore user
/// `procore_id` is managed under `managed_as`.
fn known_as_entry(
    key: &str,
    procore_id: &Id,
    managed_as: String,
    person: &PersonRef<'_>,
) -> KnownAs {
    KnownAs {
        key: key.to_string(),
        procore_id: procore_id.clone(),
        managed_as,
        login: None,
        email: None,
        name: Some(person.name().to_string()),
        license_group: person.license_group(),
        matched_by: person.matched_by(),
    }
}

/// The keys a leaver may be listed under in `disabled` and `gone`: the
/// record's key, then the Procore user's login and email address.
fn leaver_keys<'a>(key: &'a str, user: &'a Details) -> impl Iterator<Item = Key> + 'a {
    [
        Some(key),
        user.login.as_deref(),
        user.email_address.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(Key::of)
}

fn procore_name(user: &Details) -> Option<String> {
    let name = [&user.first_name, &user.last_name]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        user.login.clone().or_else(|| user.email_address.clone())
    } else {
        Some(name)
    }
}

/// An RFC 3339 time as people read it (`2026-12-07 10:26 UTC`); text
/// that is no such time as it is.
fn shown_time(text: &str) -> String {
    parse_time(text).map_or_else(
        || text.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// An RFC 3339 time, in UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::known::{Mark, Marks};
    use crate::logic::{paged, sync};
    use crate::output::parsed;
    use serde_json::Map;
    use sluice_guest_services::sync::{Diff, ENTRA_ID, OwedProject, Person, Present};

    fn person(key: &str, mail: bool) -> Person {
        Person {
            key: key.to_string(),
            id: Some(format!("entra-{key}")),
            mail: mail.then(|| key.to_string()),
            user_principal_name: Some(key.to_string()),
            display_name: Some(format!("Name {key}")),
            given_name: None,
            surname: None,
            groups: vec!["License – Microsoft E3".to_string()],
        }
    }

    fn user(id: u64, login: &str, active: bool) -> ProcoreUser {
        ProcoreUser {
            id: Id::Number(id),
            login: Some(login.to_string()),
            email_address: Some(login.to_string()),
            first_name: Some("First".into()),
            last_name: Some(format!("L{id}")),
            is_active: active,
            created_at: None,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            license_groups: Some(2),
            now: at("2026-03-01T12:00:00Z"),
            ..Policy::default()
        }
    }

    fn managed(id: u64, status: Status) -> Managed {
        Managed {
            procore_id: Id::Number(id),
            origin: Origin::Adopted,
            status,
            since: "2026-01-01T00:00:00Z".into(),
            leaving_since: None,
            owed_project: None,
            other: Map::new(),
        }
    }

    fn known(records: &[(&str, Managed)]) -> Known {
        let records = records.iter().map(|(k, m)| (k.to_string(), m.clone()));
        Known::held(records.collect(), Vec::new(), None)
    }

    fn run(
        people: &[Person],
        users: &[ProcoreUser],
        known: &Known,
        p: &Policy,
    ) -> (Diff, Vec<Write>) {
        let mut writes = Vec::new();
        let mut write = |w| {
            writes.push(w);
            Ok(())
        };
        let out = sync(&paged(people), &paged(users), known, p, &mut write).unwrap();
        (parsed(out), writes)
    }

    fn managed_writes(writes: &[Write]) -> Vec<(&str, &Managed)> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::Managed(k, m) => Some((k.as_str(), m)),
                _ => None,
            })
            .collect()
    }

    /// A `creating/<key>` mark since `since` (seconds since the epoch).
    fn mark(key: &str, since: i64, entra: Option<&str>) -> Mark {
        Mark {
            key: key.into(),
            since,
            entra: entra.and_then(EntraKey::of),
        }
    }

    /// The `creating/` marks set (`Some`) or dropped (`None`), by key.
    fn mark_writes(writes: &[Write]) -> Vec<(String, Option<Creating>)> {
        let mut marks: Vec<_> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Creating(k, mark) => Some((k.clone(), mark.clone())),
                _ => None,
            })
            .collect();
        marks.sort_by(|a, b| a.0.cmp(&b.0));
        marks
    }

    /// The grace clocks set (`Some`) or dropped (`None`), by key.
    fn clock_writes(writes: &[Write]) -> Vec<(&str, Option<&str>)> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::Clock(k, c) => Some((k.as_str(), c.as_ref().map(|c| c.since.as_str()))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn project_calls_owed_on_the_flows_project_are_listed_when_they_can_be_made() {
        let owed = |id: u64, status: Status, project: &str, action: ProjectAction| Managed {
            owed_project: Some(OwedProject {
                project_id: project.into(),
                action,
            }),
            ..managed(id, status)
        };
        let k = known(&[
            // Licensed and active: the add is made.
            ("a@x.com", owed(1, Status::Active, "5", ProjectAction::Add)),
            // Owed on a project the flow no longer names: waits.
            ("b@x.com", owed(2, Status::Active, "6", ProjectAction::Add)),
            // Holds no license now: a leaver, never added.
            ("c@x.com", owed(3, Status::Active, "5", ProjectAction::Add)),
            // Deactivated by the flow and still inactive: removed.
            (
                "d@x.com",
                owed(4, Status::Deactivated, "5", ProjectAction::Remove),
            ),
            // Active again in Procore (someone else reactivated them): the
            // removal is not made behind their back.
            (
                "e@x.com",
                owed(5, Status::Deactivated, "5", ProjectAction::Remove),
            ),
            // Procore no longer lists them: waits.
            ("f@x.com", owed(6, Status::Active, "5", ProjectAction::Add)),
            // Licensed again: a returner, put back on the project by the
            // reactivate step, never taken off it.
            (
                "g@x.com",
                owed(7, Status::Deactivated, "5", ProjectAction::Remove),
            ),
        ]);
        let people = [
            person("a@x.com", true),
            person("b@x.com", true),
            person("f@x.com", true),
            person("g@x.com", true),
        ];
        let users = [
            user(1, "a@x.com", true),
            user(2, "b@x.com", true),
            user(3, "c@x.com", true),
            user(4, "d@x.com", false),
            user(5, "e@x.com", true),
            user(7, "g@x.com", false),
        ];
        let mut p = policy();
        p.project = Some("5".into());
        let (diff, _) = run(&people, &users, &k, &p);
        assert_eq!(diff.returners.len(), 1, "{:?}", diff.returners);
        let listed: Vec<(&str, ProjectAction, Option<&str>)> = diff
            .project_owed
            .iter()
            .map(|o| (o.key.as_str(), o.action, o.name.as_deref()))
            .collect();
        assert_eq!(
            listed,
            [
                ("a@x.com", ProjectAction::Add, Some("First L1")),
                ("d@x.com", ProjectAction::Remove, Some("First L4")),
            ]
        );
        assert_eq!(diff.counts.project_owed, 2);
        assert!(diff.project_owed.iter().all(|o| o.project_id == "5"));
        // Without a project the flow owes nothing it can make.
        let (diff, _) = run(&people, &users, &k, &policy());
        assert!(diff.project_owed.is_empty());
    }

    #[test]
    fn someone_the_flow_deactivated_found_active_again_is_owed_the_project_add() {
        let record = Managed {
            owed_project: Some(OwedProject {
                project_id: "5".into(),
                action: ProjectAction::Remove,
            }),
            ..managed(1, Status::Deactivated)
        };
        let k = known(&[("a@x.com", record.clone())]);
        let people = [person("a@x.com", true)];
        let users = [user(1, "a@x.com", true)];
        let mut p = policy();
        p.project = Some("5".into());
        let (diff, writes) = run(&people, &users, &k, &p);
        let written = managed_writes(&writes);
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0].1.status, Status::Active);
        // Listed in this run, not only kept for the next one.
        let listed: Vec<_> = diff
            .project_owed
            .iter()
            .map(|o| {
                (
                    o.key.as_str(),
                    &o.procore_id,
                    o.project_id.as_str(),
                    o.action,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [("a@x.com", &Id::Number(1), "5", ProjectAction::Add)]
        );
        assert_eq!(diff.counts.project_owed, 1);
        assert_eq!(
            written[0].1.owed_project,
            Some(OwedProject {
                project_id: "5".into(),
                action: ProjectAction::Add,
            }),
            "the removal is moot; the add a returner gets is owed"
        );
        // Without a project, nothing is owed; a `deactivating` record found
        // active is not one the flow took off the project.
        let (diff, writes) = run(&people, &users, &k, &policy());
        assert_eq!(managed_writes(&writes)[0].1.owed_project, None);
        assert!(diff.project_owed.is_empty());
        let k = known(&[("a@x.com", managed(1, Status::Deactivating))]);
        let (diff, writes) = run(&people, &users, &k, &p);
        assert_eq!(managed_writes(&writes)[0].1.owed_project, None);
        assert!(diff.project_owed.is_empty());
    }

    #[test]
    fn a_first_run_adopts_every_match_and_deactivates_nobody() {
        let people = [person("a@x.com", true), person("b@x.com", false)];
        let users = [
            user(1, "a@x.com", true),
            user(2, "B@x.com", true),
            user(3, "external@sub.com", true),
        ];
        let (diff, writes) = run(&people, &users, &Known::default(), &policy());
        assert!(diff.leavers.is_empty() && diff.returners.is_empty());
        assert_eq!(diff.counts.adopted, 2);
        let adopted = managed_writes(&writes);
        assert_eq!(adopted.len(), 2);
        assert_eq!(adopted[0].0, "a@x.com");
        assert_eq!(adopted[0].1.origin, Origin::Adopted);
        assert_eq!(adopted[0].1.other[ENTRA_ID], "entra-a@x.com");
        assert!(writes.contains(&Write::Holders(Holders {
            count: 2,
            at: policy().now.to_rfc3339(),
            first_held: None,
            held_drop: None,
        })));
    }

    /// A run that started at 11:00 found Bob and Cy missing and left no
    /// record of them (its host died mid-create): Procore created Bob at
    /// 11:01, so he is the flow's creation, owed the project add. Ann,
    /// created at the same time but never found missing, and Cy, whose
    /// creation time Procore did not give, are adopted as ever. Their
    /// marks go.
    #[test]
    fn a_user_created_since_a_run_found_them_missing_is_the_flows() {
        let people = [
            person("ann@x.com", true),
            person("bob@x.com", true),
            person("cy@x.com", true),
        ];
        let created = |id: u64, login: &str, at: Option<&str>| ProcoreUser {
            created_at: at.map(str::to_string),
            ..user(id, login, true)
        };
        let users = [
            created(1, "ann@x.com", Some("2026-03-01T11:01:00Z")),
            created(2, "bob@x.com", Some("2026-03-01T11:01:00Z")),
            created(3, "cy@x.com", None),
        ];
        let mut known = Known::default();
        let eleven = at("2026-03-01T11:00:00Z").timestamp();
        known.creating = Marks::new(vec![
            mark("bob@x.com", eleven, Some("entra-bob@x.com")),
            mark("cy@x.com", eleven, Some("entra-cy@x.com")),
        ]);
        let p = Policy {
            project: Some("77".into()),
            ..policy()
        };
        let (diff, writes) = run(&people, &users, &known, &p);
        let origins: Vec<(&str, Origin, Option<&OwedProject>)> = managed_writes(&writes)
            .into_iter()
            .map(|(k, m)| (k, m.origin, m.owed_project.as_ref()))
            .collect();
        let add = OwedProject {
            project_id: "77".into(),
            action: ProjectAction::Add,
        };
        assert_eq!(
            origins,
            [
                ("ann@x.com", Origin::Adopted, None),
                ("bob@x.com", Origin::Created, Some(&add)),
                ("cy@x.com", Origin::Adopted, None),
            ]
        );
        let owed: Vec<(&str, ProjectAction)> = diff
            .project_owed
            .iter()
            .map(|o| (o.key.as_str(), o.action))
            .collect();
        assert_eq!(owed, [("bob@x.com", ProjectAction::Add)]);
        assert_eq!(diff.adopted[1].origin, Origin::Created);
        let marks = |writes: &[Write]| -> Vec<(String, Option<String>)> {
            let since = |(k, m): (String, Option<Creating>)| (k, m.map(|m| m.since));
            mark_writes(writes).into_iter().map(since).collect()
        };
        assert_eq!(
            marks(&writes),
            [("bob@x.com".into(), None), ("cy@x.com".into(), None)],
            "present now: their marks go"
        );

        // Without a project the record says created, and nothing is owed.
        let (diff, writes) = run(&people, &users, &known, &policy());
        assert_eq!(managed_writes(&writes)[1].1.origin, Origin::Created);
        assert_eq!(managed_writes(&writes)[1].1.owed_project, None);
        assert!(diff.project_owed.is_empty());

        // An admin rejected Bob's creation: never sent, so his user is
        // someone else's doing.
        let mut rejected = p.clone();
        rejected.creates_rejected = [Key::of("bob@x.com").unwrap()].into();
        let (diff, writes) = run(&people, &users, &known, &rejected);
        assert_eq!(managed_writes(&writes)[1].1.origin, Origin::Adopted);
        assert!(diff.project_owed.is_empty());

        // Never found missing, Bob is adopted.
        let (_, writes) = run(&people, &users, &Known::default(), &p);
        assert_eq!(managed_writes(&writes)[1].1.origin, Origin::Adopted);
        assert!(marks(&writes).is_empty());

        // Still missing: marked once, when first found so.
        let (_, writes) = run(&people, &users[..1], &Known::default(), &p);
        let now = Some(p.now.to_rfc3339());
        assert_eq!(
            marks(&writes),
            [("bob@x.com".into(), now.clone()), ("cy@x.com".into(), now)]
        );
        let (_, writes) = run(&people, &users[..1], &known, &p);
        assert!(marks(&writes).is_empty(), "marked already");
        // A mark an older version wrote (the time alone) is marked again
        // with the person's Entra id, keeping its time.
        let mut old_form = Known::default();
        old_form.creating = Marks::new(vec![
            mark("bob@x.com", eleven, None),
            mark("cy@x.com", eleven, Some("entra-cy@x.com")),
        ]);
        let (_, writes) = run(&people, &users[..1], &old_form, &p);
        let bob = Creating {
            since: "2026-03-01T11:00:00+00:00".into(),
            entra_id: Some("entra-bob@x.com".into()),
        };
        assert_eq!(mark_writes(&writes), [("bob@x.com".into(), Some(bob))]);
        // A run that matched no license group found nobody: it drops no
        // mark.
        let none = Policy {
            license_groups: Some(0),
            ..p.clone()
        };
        let (_, writes) = run(&[], &users, &known, &none);
        assert!(marks(&writes).is_empty(), "{:?}", marks(&writes));

        // Bob's user is older than the run that found him missing (less
        // the clocks' leeway): someone else's, adopted.
        let older = [
            users[0].clone(),
            created(2, "bob@x.com", Some("2026-03-01T10:54:59Z")),
            users[2].clone(),
        ];
        let (_, writes) = run(&people, &older, &known, &p);
        assert_eq!(managed_writes(&writes)[1].1.origin, Origin::Adopted);
        let within = [
            users[0].clone(),
            created(2, "bob@x.com", Some("2026-03-01T10:55:00Z")),
            users[2].clone(),
        ];
        let (_, writes) = run(&people, &within, &known, &p);
        assert_eq!(managed_writes(&writes)[1].1.origin, Origin::Created);
    }

    #[test]
    fn a_second_account_of_a_license_holder_is_not_a_leaver() {
        // Two active accounts have the key a@x.com: 2 by login (the match
        // takes it), 1 by email (managed since an earlier run), and 3 is
        // in a managed domain with its email the key b@x.com.
        let people = [person("a@x.com", true), person("b@x.com", true)];
        let mut old = user(1, "a.old", true);
        old.email_address = Some("A@x.com".into());
        let mut in_domain = user(3, "b.second@corp.com", true);
        in_domain.email_address = Some("b@x.com".into());
        let users = [
            user(2, "a@x.com", true),
            old,
            user(4, "b@x.com", true),
            in_domain,
            user(5, "nobody@corp.com", true),
        ];
        let k = known(&[("a@x.com", managed(1, Status::Active))]);
        let mut p = policy();
        p.domains = vec!["corp.com".into()];
        let (diff, _) = run(&people, &users, &k, &p);
        let leavers: Vec<&str> = diff.leavers.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(leavers, ["nobody@corp.com"], "{:?}", diff.leavers);
    }

    #[test]
    fn managed_people_without_a_license_leave_with_their_reason() {
        let people = [person("a@x.com", true)];
        let users = [
            user(1, "a@x.com", true),
            user(2, "b@x.com", true),
            user(3, "c@x.com", true),
            user(4, "d@x.com", true),
            user(5, "e@x.com", false),
            user(6, "stranger@x.com", true),
        ];
        let k = known(&[
            ("a@x.com", managed(1, Status::Active)),
            ("b@x.com", managed(2, Status::Active)),
            ("c@x.com", managed(3, Status::Active)),
            ("d@x.com", managed(4, Status::Active)),
            ("e@x.com", managed(5, Status::Deactivated)),
        ]);
        let mut p = policy();
        p.disabled = HashSet::from([Key::of("c@x.com").unwrap()]);
        p.disabled_ids = HashMap::from([(Key::of("C@x.com").unwrap(), "entra-c".to_string())]);
        p.gone = HashSet::from([Key::of("D@x.com").unwrap()]);
        let (diff, writes) = run(&people, &users, &k, &p);
        let got: Vec<(&str, LeaveReason, Option<&str>)> = diff
            .leavers
            .iter()
            .map(|l| (l.key.as_str(), l.reason, l.entra_id.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("b@x.com", LeaveReason::NoLicenseGroup, None),
                // The disabled member's Entra id, for the record.
                ("c@x.com", LeaveReason::AccountDisabled, Some("entra-c")),
                ("d@x.com", LeaveReason::UserGone, None),
            ],
            "the stranger is not managed; the deactivated one is inactive"
        );
        assert_eq!(diff.leavers[0].name.as_deref(), Some("First L2"));
        assert_eq!(diff.leavers[0].login.as_deref(), Some("b@x.com"));
        // Each leaver's record learns since when it holds no license.
        let marked = managed_writes(&writes);
        assert_eq!(marked.len(), 3);
        assert!(marked.iter().all(|(_, m)| m.leaving_since.is_some()));
        assert_eq!(diff.counts.adopted, 0);
    }

    #[test]
    fn someone_in_another_license_group_is_not_a_leaver() {
        let mut moved = person("a@x.com", true);
        moved.groups = vec!["License – Office E1".into()];
        let k = known(&[("a@x.com", managed(1, Status::Active))]);
        let (diff, writes) = run(&[moved], &[user(1, "a@x.com", true)], &k, &policy());
        assert!(diff.leavers.is_empty());
        assert!(managed_writes(&writes).is_empty(), "nothing to change");
    }

    #[test]
    fn a_rewritten_record_keeps_every_field_the_run_did_not_change() {
        // Records are held compactly and read again whole to be rewritten:
        // what the rules never look at (origin, since, the Entra id) stays.
        let mut record = managed(1, Status::Active);
        record.origin = Origin::Created;
        record.other.insert(ENTRA_ID.into(), "entra-a".into());
        let mut p = policy();
        p.grace = Duration::from_secs(3600);
        let users = [user(1, "a@x.com", true)];
        let (_, writes) = run(&[], &users, &known(&[("a@x.com", record.clone())]), &p);
        let marked = managed_writes(&writes)[0].1.clone();
        assert_eq!(
            marked,
            Managed {
                leaving_since: Some(p.now.to_rfc3339()),
                ..record.clone()
            }
        );
        // The license comes back before the grace ends: only the mark goes.
        let people = [person("a@x.com", true)];
        let (_, writes) = run(&people, &users, &known(&[("a@x.com", marked)]), &p);
        assert_eq!(managed_writes(&writes), [("a@x.com", &record)]);
    }

    #[test]
    fn grace_counts_from_the_first_run_without_a_license() {
        let mut p = policy();
        p.grace = Duration::from_secs(24 * 3600);
        let users = [user(1, "a@x.com", true)];
        let k = known(&[("a@x.com", managed(1, Status::Active))]);
        let (diff, writes) = run(&[], &users, &k, &p);
        assert!(diff.leavers.is_empty());
        assert_eq!(diff.leaving[0].key, "a@x.com");
        let Write::Managed(_, marked) = &writes[0] else {
            panic!("{writes:?}")
        };
        let later = known(&[("a@x.com", marked.clone())]);
        p.now = at("2026-03-02T11:00:00Z");
        assert!(
            run(&[], &users, &later, &p).0.leavers.is_empty(),
            "23 hours"
        );
        p.now = at("2026-03-02T12:00:00Z");
        let (diff, writes) = run(&[], &users, &later, &p);
        assert_eq!(diff.leavers[0].key, "a@x.com");
        assert!(managed_writes(&writes).is_empty(), "the start is kept");
        // The license comes back: the mark is cleared.
        let (diff, writes) = run(&[person("a@x.com", true)], &users, &later, &p);
        assert!(diff.leavers.is_empty() && diff.leaving.is_empty());
        assert_eq!(managed_writes(&writes)[0].1.leaving_since, None);
    }

    #[test]
    fn a_deactivation_never_seen_answered_is_finished_or_undone_as_the_flows() {
        // a: Procore applied it (inactive), no license: listed again, to confirm.
        // b: Procore did not (active), no license: a leaver as before.
        // c: Procore applied it and the person holds a license again: a returner.
        // d: not applied and licensed again: present, and active again.
        let people = [person("c@x.com", true), person("d@x.com", true)];
        let users = [
            user(1, "a@x.com", false),
            user(2, "b@x.com", true),
            user(3, "c@x.com", false),
            user(4, "d@x.com", true),
        ];
        // a's record is one the step started (an in-domain user): no
        // `leaving_since`, yet the grace is not counted again.
        let mut leaving = managed(2, Status::Deactivating);
        leaving.leaving_since = Some("2026-01-01T00:00:00Z".into());
        let k = known(&[
            ("a@x.com", managed(1, Status::Deactivating)),
            ("b@x.com", leaving),
            ("c@x.com", managed(3, Status::Deactivating)),
            ("d@x.com", managed(4, Status::Deactivating)),
        ]);
        let mut p = policy();
        p.grace = std::time::Duration::from_secs(7 * 24 * 3600);
        let (diff, writes) = run(&people, &users, &k, &p);
        let leavers: Vec<(&str, bool)> = diff
            .leavers
            .iter()
            .map(|l| (l.key.as_str(), l.inactive))
            .collect();
        assert_eq!(leavers, [("a@x.com", true), ("b@x.com", false)]);
        let returners: Vec<&str> = diff.returners.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(returners, ["c@x.com"]);
        assert!(
            diff.inactive_unmanaged.is_empty(),
            "{:?}",
            diff.inactive_unmanaged
        );
        // d holds a license and is active: settled. b, a leaver still
        // active, was never deactivated: active again in the record (its
        // grace kept), so an admin's later deactivation is not the flow's.
        let settled: Vec<(&str, Status, Option<&str>)> = managed_writes(&writes)
            .into_iter()
            .map(|(k, m)| (k, m.status, m.leaving_since.as_deref()))
            .collect();
        assert_eq!(
            settled,
            [
                ("d@x.com", Status::Active, None),
                ("b@x.com", Status::Active, Some("2026-01-01T00:00:00Z")),
            ]
        );
        let b_now = managed_writes(&writes)[1].1.clone();
        // A record the step started (no `leaving_since`) whose user is
        // still active: its grace counts from the record's start, so it is
        // a leaver at once again.
        let k = known(&[("e@x.com", managed(5, Status::Deactivating))]);
        let (diff, writes) = run(&[], &[user(5, "e@x.com", true)], &k, &p);
        assert_eq!(diff.leavers.len(), 1, "{:?}", diff.leaving);
        let rewritten = managed_writes(&writes);
        assert_eq!(
            (
                rewritten[0].1.status,
                rewritten[0].1.leaving_since.as_deref()
            ),
            (Status::Active, Some("2026-01-01T00:00:00+00:00"))
        );
        // b, deactivated by hand since and licensed again, is no returner
        // with the record this run wrote (with the old one, still
        // `deactivating`, b was reactivated).
        let users = [user(2, "b@x.com", false)];
        let k = known(&[("b@x.com", b_now)]);
        let (diff, _) = run(&[person("b@x.com", true)], &users, &k, &p);
        assert!(diff.returners.is_empty(), "{:?}", diff.returners);
        assert_eq!(diff.inactive_unmanaged.len(), 1);
    }

    /// Cy's approved deactivation reached Procore (inactive), but the run
    /// that sent it died before recording it (`deactivating`), and an
    /// admin rejected it since. Listed again, the deactivate step's gate
    /// would hold it as rejected run after run, never recorded: it is
    /// finished in the record and told in the ledger, no removal from the
    /// project is owed, and Cy is no leaver; licensed again, Cy returns.
    #[test]
    fn a_deactivation_applied_before_an_admin_rejected_it_is_recorded() {
        let users = [user(3, "cy@x.com", false)];
        let k = known(&[("cy@x.com", managed(3, Status::Deactivating))]);
        let rejected = Policy {
            rejected: [Key::of("cy@x.com").unwrap()].into(),
            project: Some("5".into()),
            ..policy()
        };
        let (diff, writes) = run(&[], &users, &k, &rejected);
        assert!(diff.leavers.is_empty(), "{:?}", diff.leavers);
        let written = managed_writes(&writes);
        let done: Vec<(&str, Status, Option<&OwedProject>)> = written
            .iter()
            .map(|(k, m)| (*k, m.status, m.owed_project.as_ref()))
            .collect();
        assert_eq!(done, [("cy@x.com", Status::Deactivated, None)]);
        let told: Vec<(&str, AdoptedStatus, Origin)> = diff
            .adopted
            .iter()
            .map(|a| (a.key.as_str(), a.status, a.origin))
            .collect();
        assert_eq!(
            told,
            [("cy@x.com", AdoptedStatus::Deactivated, Origin::Adopted)]
        );
        assert_eq!(
            diff.adopted[0].detail.as_deref(),
            Some(APPLIED_BEFORE_REJECTION)
        );
        assert_eq!(
            diff.adopted[0].name.as_deref(),
            Some("First L3"),
            "named from Procore: no license holder names them"
        );
        assert_eq!(diff.rejected_too_late, diff.adopted, "told the report too");
        assert_eq!(diff.counts.adopted, 0);
        assert!(diff.project_owed.is_empty(), "{:?}", diff.project_owed);

        // The runs after: nothing more to do; licensed again, a returner.
        let finished = known(&[("cy@x.com", written[0].1.clone())]);
        let (diff, writes) = run(&[], &users, &finished, &policy());
        assert!(diff.leavers.is_empty() && diff.adopted.is_empty());
        assert!(diff.rejected_too_late.is_empty());
        assert!(managed_writes(&writes).is_empty(), "{writes:?}");
        let (diff, _) = run(&[person("cy@x.com", true)], &users, &finished, &policy());
        assert_eq!(diff.returners.len(), 1, "{:?}", diff.inactive_unmanaged);

        // Approved or pending still: listed for the step to confirm.
        let (diff, writes) = run(&[], &users, &k, &policy());
        let leavers: Vec<(&str, bool)> = diff
            .leavers
            .iter()
            .map(|l| (l.key.as_str(), l.inactive))
            .collect();
        assert_eq!(leavers, [("cy@x.com", true)]);
        assert!(managed_writes(&writes).is_empty(), "{writes:?}");
    }

    /// Two inactive users have Max's key: one the flow deactivated (listed
    /// second, by its login) and an older account (listed first, by its
    /// email address). Max holds a license again: the flow's user is his
    /// returner, whatever order Procore lists them in.
    #[test]
    fn a_returner_is_found_beside_another_inactive_account_with_the_key() {
        let people = [person("max@x.com", true)];
        let old = ProcoreUser {
            login: Some("max.old@x.com".into()),
            email_address: Some("MAX@x.com".into()),
            ..user(61, "max.old@x.com", false)
        };
        let users = [old.clone(), user(60, "max@x.com", false)];
        let k = known(&[("max@x.com", managed(60, Status::Deactivated))]);
        for users in [users.clone(), [users[1].clone(), users[0].clone()]] {
            let (diff, _) = run(&people, &users, &k, &policy());
            let returners: Vec<(&str, &Id)> = diff
                .returners
                .iter()
                .map(|r| (r.key.as_str(), &r.procore_id))
                .collect();
            assert_eq!(returners, [("max@x.com", &Id::Number(60))]);
            assert!(
                diff.inactive_unmanaged.is_empty(),
                "{:?}",
                diff.inactive_unmanaged
            );
        }
    }

    /// The flow deactivated Ann; an admin reactivated her by hand while
    /// she held no license, then deactivated her by hand. Her license
    /// back, she is no returner: the last deactivation was the admin's.
    #[test]
    fn a_deactivation_undone_by_hand_is_no_longer_the_flows() {
        let mut deactivated = managed(1, Status::Deactivated);
        deactivated.leaving_since = Some("2026-02-01T00:00:00Z".into());
        deactivated.owed_project = Some(OwedProject {
            project_id: "5".into(),
            action: ProjectAction::Remove,
        });
        let k = known(&[("ann@x.com", deactivated)]);
        // Active again without a license: a leaver, her record active
        // again (no removal owed any more: the project add is, for when
        // she holds a license), her grace counted from now.
        let mut p = policy();
        p.project = Some("5".into());
        let (diff, writes) = run(&[], &[user(1, "ann@x.com", true)], &k, &p);
        let leavers: Vec<(&str, bool)> = diff
            .leavers
            .iter()
            .map(|l| (l.key.as_str(), l.inactive))
            .collect();
        assert_eq!(leavers, [("ann@x.com", false)]);
        let rewritten = managed_writes(&writes);
        assert_eq!(rewritten.len(), 1);
        let now = rewritten[0].1.clone();
        let add = OwedProject {
            project_id: "5".into(),
            action: ProjectAction::Add,
        };
        assert_eq!(
            (now.status, now.leaving_since.as_deref(), &now.owed_project),
            (
                Status::Active,
                Some("2026-03-01T12:00:00+00:00"),
                &Some(add)
            )
        );
        assert!(diff.project_owed.is_empty(), "not while she is leaving");
        // Her license back while active: the add is made.
        let k = known(&[("ann@x.com", now.clone())]);
        let people = [person("ann@x.com", true)];
        let (diff, _) = run(&people, &[user(1, "ann@x.com", true)], &k, &p);
        let owed: Vec<(&str, ProjectAction)> = diff
            .project_owed
            .iter()
            .map(|o| (o.key.as_str(), o.action))
            .collect();
        assert_eq!(owed, [("ann@x.com", ProjectAction::Add)]);
        // Deactivated by hand since, her license back: reported, untouched.
        let k = known(&[("ann@x.com", now)]);
        let (diff, _) = run(&people, &[user(1, "ann@x.com", false)], &k, &p);
        assert!(diff.returners.is_empty(), "{:?}", diff.returners);
        let reported: Vec<&str> = diff
            .inactive_unmanaged
            .iter()
            .map(|u| u.key.as_str())
            .collect();
        assert_eq!(reported, ["ann@x.com"]);
    }

    #[test]
    fn returners_are_those_the_flow_deactivated_and_the_rest_is_reported() {
        let people = [person("a@x.com", true), person("b@x.com", false)];
        let users = [user(1, "a@x.com", false), user(2, "b@x.com", false)];
        let k = known(&[("a@x.com", managed(1, Status::Deactivated))]);
        let (diff, _) = run(&people, &users, &k, &policy());
        assert_eq!(diff.returners.len(), 1);
        let r = &diff.returners[0];
        assert_eq!(
            (r.key.as_str(), r.matched_by),
            ("a@x.com", sluice_guest_services::sync::MatchedBy::Mail)
        );
        assert_eq!(r.license_group.as_deref(), Some("License – Microsoft E3"));
        assert_eq!(diff.inactive_unmanaged.len(), 1);
        assert_eq!(diff.inactive_unmanaged[0].key, "b@x.com");
        assert_eq!(diff.present_inactive.len(), 1, "only the unmanaged one");
        assert_eq!(
            (diff.counts.present_inactive, diff.counts.returners),
            (1, 1)
        );
        assert!(diff.leavers.is_empty());
    }

    #[test]
    fn managed_domains_make_unlicensed_users_in_them_leavers_from_the_first_run() {
        let users = [
            user(1, "a@corp.com", true),
            user(2, "old@Corp.com", true),
            user(3, "sub@partner.com", true),
        ];
        let mut p = policy();
        p.domains = vec!["corp.com".into()];
        let (diff, writes) = run(&[person("a@corp.com", true)], &users, &Known::default(), &p);
        let keys: Vec<&str> = diff.leavers.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["old@corp.com"]);
        // The license holder is adopted; the leaver gets a grace clock,
        // not a managed record.
        let records = managed_writes(&writes);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].0, "a@corp.com");
        assert_eq!(records[0].1.origin, Origin::Domain);
        let now = p.now.to_rfc3339();
        assert_eq!(
            clock_writes(&writes),
            [("old@corp.com", Some(now.as_str()))]
        );
    }

    #[test]
    fn an_in_domain_leaver_is_managed_only_while_the_run_names_the_domain() {
        let users = [user(2, "old@corp.com", true)];
        let clock = DomainLeaving {
            procore_id: Id::Number(2),
            since: "2026-02-01T00:00:00Z".into(),
        };
        let k = Known::held(Vec::new(), vec![("old@corp.com".into(), clock)], None);
        let mut p = policy();
        p.grace = Duration::from_secs(24 * 3600);
        p.domains = vec!["corp.com".into()];
        // Named: the clock kept counts, and nothing is written.
        let (diff, writes) = run(&[], &users, &k, &p);
        assert_eq!(diff.leavers[0].key, "old@corp.com");
        assert!(writes.iter().all(|w| matches!(w, Write::Holders(_))));
        // Not named: no leaver, and the clock goes (a later grace starts
        // afresh); no record makes them managed.
        p.domains.clear();
        let (diff, writes) = run(&[], &users, &k, &p);
        assert!(diff.leavers.is_empty() && diff.leaving.is_empty());
        assert_eq!(clock_writes(&writes), [("old@corp.com", None)]);
        assert!(managed_writes(&writes).is_empty());
    }

    /// A rejection stands while the person is a leaver: a run that would
    /// not list them (without the `managed_domains` that made them one, or
    /// with a longer grace) lists them all the same, for the gate to hold
    /// as rejected rather than close, after which a later run would take
    /// them for a new leaver (and deactivate them under
    /// `max_unapproved_deactivations`). It ends when they hold a license
    /// again, or are inactive in Procore.
    #[test]
    fn a_rejected_leaver_stays_listed_while_still_a_leaver() {
        let users = [user(2, "old@corp.com", true), user(3, "b@x.com", true)];
        let k = known(&[("b@x.com", managed(3, Status::Active))]);
        let mut p = policy();
        p.rejected = [Key::of("old@corp.com").unwrap()].into();
        // No `managed_domains`: listed, nothing written for them.
        let (diff, writes) = run(&[person("b@x.com", true)], &users, &k, &p);
        let keys: Vec<&str> = diff.leavers.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["old@corp.com"]);
        assert_eq!(diff.leavers[0].procore_id, Id::Number(2));
        assert_eq!(diff.counts.leavers, 1);
        assert!(clock_writes(&writes).is_empty() && managed_writes(&writes).is_empty());
        // Named by the domains too: listed once.
        p.domains = vec!["corp.com".into()];
        let (diff, _) = run(&[person("b@x.com", true)], &users, &k, &p);
        assert_eq!(diff.leavers.len(), 1);
        p.domains.clear();
        // Not a leaver any more: holding a license (under either key),
        // or inactive.
        let (diff, _) = run(
            &[person("b@x.com", true), person("old@corp.com", true)],
            &users,
            &k,
            &p,
        );
        assert!(diff.leavers.is_empty(), "holds a license");
        let mut two_keys = user(2, "old@corp.com", true);
        two_keys.email_address = Some("new@x.com".into());
        let (diff, _) = run(
            &[person("b@x.com", true), person("new@x.com", true)],
            &[two_keys, users[1].clone()],
            &k,
            &p,
        );
        assert!(
            diff.leavers.is_empty(),
            "holds a license under its email address"
        );
        let inactive = [user(2, "old@corp.com", false), users[1].clone()];
        let (diff, _) = run(&[person("b@x.com", true)], &inactive, &k, &p);
        assert!(diff.leavers.is_empty(), "inactive");
        // A rejected key now the login of a managed leaver's user is
        // listed once, as that leaver (two items of one key would fail the
        // deactivate step).
        let record = known(&[("old@corp.com", managed(3, Status::Active))]);
        let renamed = [user(3, "new@corp.com", true), user(2, "old@corp.com", true)];
        let (diff, _) = run(&[], &renamed, &record, &p);
        let listed: Vec<(&str, &Id)> = diff
            .leavers
            .iter()
            .map(|l| (l.key.as_str(), &l.procore_id))
            .collect();
        assert_eq!(
            listed,
            [("old@corp.com", &Id::Number(3))],
            "the record's leaver only"
        );
        // Someone no admin rejected, and whom the flow does not manage,
        // is never listed.
        p.rejected.clear();
        let (diff, _) = run(&[person("b@x.com", true)], &users, &k, &p);
        assert!(diff.leavers.is_empty());
    }

    /// A managed leaver an admin rejected stays listed (as rejected) in a
    /// run whose longer grace would put them back in their grace.
    #[test]
    fn a_rejected_leaver_in_a_longer_grace_stays_listed() {
        let mut record = managed(1, Status::Active);
        record.leaving_since = Some("2026-03-01T11:00:00Z".into());
        let k = known(&[("a@x.com", record)]);
        let users = [user(1, "a@x.com", true)];
        let mut p = policy();
        p.grace = Duration::from_secs(24 * 3600);
        let (diff, _) = run(&[], &users, &k, &p);
        assert_eq!(diff.leaving.len(), 1, "in their grace, nobody rejected");
        assert!(diff.leavers.is_empty());
        p.rejected = [Key::of("a@x.com").unwrap()].into();
        let (diff, writes) = run(&[], &users, &k, &p);
        assert!(diff.leaving.is_empty());
        assert_eq!(diff.leavers.len(), 1, "held as rejected by the gate");
        assert!(
            managed_writes(&writes).is_empty(),
            "the record's start is kept"
        );
    }

    #[test]
    fn a_domain_record_an_older_version_kept_for_a_leaver_does_not_manage_them() {
        // What versions before `domain-leaving/` wrote for an unlicensed
        // in-domain user: origin domain, a leaving_since, no Entra id.
        let mut old = managed(2, Status::Active);
        old.origin = Origin::Domain;
        old.leaving_since = Some("2026-02-01T00:00:00Z".into());
        // A license holder adopted in a managed domain keeps being managed.
        let mut adopted = managed(3, Status::Active);
        adopted.origin = Origin::Domain;
        adopted.other.insert(ENTRA_ID.into(), "entra-b".into());
        let k = known(&[("old@corp.com", old), ("b@corp.com", adopted)]);
        let users = [user(2, "old@corp.com", true), user(3, "b@corp.com", true)];
        let (diff, writes) = run(&[], &users, &k, &policy());
        let keys: Vec<&str> = diff.leavers.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["b@corp.com"], "the old record is no reason");
        assert!(writes.contains(&Write::Forget("old@corp.com".into())));
        // Named: still a leaver, its start kept in a clock of today's kind.
        let mut p = policy();
        p.grace = Duration::from_secs(24 * 3600);
        p.domains = vec!["corp.com".into()];
        let (diff, writes) = run(&[], &users, &k, &p);
        assert!(diff.leavers.iter().any(|l| l.key == "old@corp.com"));
        assert_eq!(
            clock_writes(&writes),
            [("old@corp.com", Some("2026-02-01T00:00:00+00:00"))]
        );
        assert!(writes.contains(&Write::Forget("old@corp.com".into())));
        // Matched to a license holder now: adopted over the old record.
        let (diff, writes) = run(&[person("old@corp.com", true)], &users, &k, &policy());
        assert_eq!(diff.counts.adopted, 1);
        assert_eq!(managed_writes(&writes)[0].0, "old@corp.com");
        assert!(!writes.contains(&Write::Forget("old@corp.com".into())));
    }

    /// A joiner Graph does not list yet may be a leaver back in a license
    /// group: the run deactivates nobody, not even someone approved, and
    /// keeps no holder count (it counted too few).
    #[test]
    fn a_joiner_graph_does_not_list_yet_stops_every_deactivation() {
        let users = [user(1, "a@x.com", true), user(2, "b@x.com", true)];
        let mut k = known(&[
            ("a@x.com", managed(1, Status::Active)),
            ("b@x.com", managed(2, Status::Active)),
        ]);
        k.holders = Some(Holders {
            count: 2,
            at: "2026-02-28T12:00:00Z".into(),
            first_held: None,
            held_drop: None,
        });
        let mut p = policy();
        p.approved = [Key::of("a@x.com").unwrap()].into();
        p.unlisted_joiners = 1;
        let (diff, writes) = run(&[person("b@x.com", true)], &users, &k, &p);
        assert!(diff.guard.hold);
        assert_eq!(diff.guard.kind, Some(GuardKind::UnlistedJoiners));
        assert!(!diff.guard.deactivate);
        assert!(
            diff.guard.reason.starts_with(
                "nobody is deactivated in this run, not even someone approved: 1 user who joined a license group is not listed by Graph yet (Graph's replication delay) and may be a leaver who holds a license again"
            ),
            "{}",
            diff.guard.reason
        );
        assert_eq!(diff.leavers.len(), 1, "listed, so its approval waits");
        assert!(!writes.iter().any(|w| matches!(w, Write::Holders(_))));
        // No leaver: nothing held or told, but the step is skipped all
        // the same.
        let (diff, _) = run(
            &[person("a@x.com", true), person("b@x.com", true)],
            &users,
            &k,
            &p,
        );
        assert!(!diff.guard.hold, "{}", diff.guard.reason);
        assert!(!diff.guard.deactivate);
        // Everyone listed: the deactivation may run.
        p.unlisted_joiners = 0;
        let (diff, _) = run(&[person("b@x.com", true)], &users, &k, &p);
        assert!(!diff.guard.hold, "{}", diff.guard.reason);
        assert!(diff.guard.deactivate);
    }

    #[test]
    fn no_license_group_or_a_halved_count_holds_deactivations() {
        let users = [user(1, "a@x.com", true)];
        let k = known(&[("a@x.com", managed(1, Status::Active))]);
        let mut p = policy();
        p.license_groups = Some(0);
        let (diff, writes) = run(&[], &users, &k, &p);
        assert!(diff.guard.hold);
        assert!(diff.guard.reason.contains("no license group"));
        assert_eq!(diff.guard.kind, Some(GuardKind::NoLicenseGroup));
        assert!(!diff.guard.deactivate, "the deactivate step does not run");
        // Nobody was checked: nobody is a leaver, and no grace starts.
        assert!(diff.leavers.is_empty() && diff.leaving.is_empty());
        assert!(writes.is_empty(), "{writes:?}");
        let mut domains = p.clone();
        domains.domains = vec!["x.com".into()];
        let (diff, writes) = run(&[], &[user(2, "d@x.com", true)], &k, &domains);
        assert!(diff.leavers.is_empty() && diff.leaving.is_empty());
        assert!(writes.is_empty(), "no clock started or dropped: {writes:?}");

        let people: Vec<Person> = (0..4)
            .map(|i| person(&format!("p{i}@x.com"), true))
            .collect();
        let mut k = k;
        k.holders = Some(Holders {
            count: 9,
            at: "2026-02-28T12:00:00Z".into(),
            first_held: None,
            held_drop: None,
        });
        let (diff, _) = run(&people, &users, &k, &policy());
        assert!(diff.guard.hold, "4 of 9");
        assert!(
            diff.guard
                .reason
                .contains("from 9 to 4 (more than half) since the run of 2026-02-28 12:00 UTC,"),
            "{}",
            diff.guard.reason
        );
        assert_eq!(diff.guard.kind, Some(GuardKind::HoldersFell));
        k.holders.as_mut().unwrap().count = 8;
        let (diff, writes) = run(&people, &users, &k, &policy());
        assert!(!diff.guard.hold, "4 of 8 is half, not more");
        assert!(
            writes
                .iter()
                .any(|w| matches!(w, Write::Holders(h) if h.count == 4))
        );
    }

    /// `managed_domains` can make leavers in a flow's first run; they all
    /// wait for an admin, whatever `max_unapproved_deactivations` says.
    /// The count is kept at once (it is no drop), with when the first run
    /// held its leavers.
    #[test]
    fn a_first_runs_leavers_all_wait_for_an_admin() {
        let people = [person("a@x.com", true)];
        let users = [user(1, "a@x.com", true), user(2, "old@corp.com", true)];
        let mut p = policy();
        p.domains = vec!["corp.com".into()];
        let (diff, writes) = run(&people, &users, &Known::default(), &p);
        assert_eq!(diff.leavers.len(), 1, "{:?}", diff.leavers);
        assert!(diff.guard.hold);
        assert!(
            diff.guard.reason.contains("first run"),
            "{}",
            diff.guard.reason
        );
        let now = p.now.to_rfc3339();
        assert!(writes.contains(&Write::Holders(Holders {
            count: 1,
            at: now.clone(),
            first_held: Some(now),
            held_drop: None,
        })));
        // A first run without leavers holds nothing, and keeps the count.
        let (diff, writes) = run(&people, &users, &Known::default(), &policy());
        assert!(!diff.guard.hold);
        assert!(writes.contains(&Write::Holders(Holders {
            count: 1,
            at: policy().now.to_rfc3339(),
            first_held: None,
            held_drop: None,
        })));
    }

    /// After a first run (at `T0`) that held `old@corp.com`, Ann leaves:
    /// while the first run's leaver waits, every deactivation waits (and
    /// the run says why, not that it is the first); once it is decided,
    /// nobody is held for it, and the first run's mark goes.
    #[test]
    fn the_first_runs_hold_ends_when_its_leavers_are_decided() {
        const T0: &str = "2026-02-28T12:00:00+00:00";
        let people = [person("b@x.com", true)];
        let users = [
            user(1, "a@x.com", true),
            user(2, "old@corp.com", true),
            user(3, "b@x.com", true),
        ];
        let clock = DomainLeaving {
            procore_id: Id::Number(2),
            since: T0.into(),
        };
        let records = [
            ("a@x.com", managed(1, Status::Active)),
            ("b@x.com", managed(3, Status::Active)),
        ];
        let mut k = Known::held(
            records
                .iter()
                .map(|(k, m)| (k.to_string(), m.clone()))
                .collect(),
            vec![("old@corp.com".to_string(), clock)],
            Some(Holders {
                count: 2,
                at: T0.into(),
                first_held: Some(T0.into()),
                held_drop: None,
            }),
        );
        let mut p = policy();
        p.domains = vec!["corp.com".into()];
        let holders = |writes: &[Write]| {
            writes.iter().find_map(|w| match w {
                Write::Holders(h) => Some(h.clone()),
                _ => None,
            })
        };
        let (diff, writes) = run(&people, &users, &k, &p);
        assert_eq!(diff.leavers.len(), 2, "{:?}", diff.leavers);
        assert!(diff.guard.hold);
        assert!(
            diff.guard
                .reason
                .contains("people the first run found leaving are not all"),
            "{}",
            diff.guard.reason
        );
        let kept = holders(&writes).unwrap();
        assert_eq!((kept.count, kept.first_held.as_deref()), (1, Some(T0)));
        // Ann's clock started in this run: the record says so now.
        k = Known::held(
            vec![
                (
                    "a@x.com".to_string(),
                    Managed {
                        leaving_since: Some(p.now.to_rfc3339()),
                        ..managed(1, Status::Active)
                    },
                ),
                ("b@x.com".to_string(), managed(3, Status::Active)),
            ],
            vec![(
                "old@corp.com".to_string(),
                DomainLeaving {
                    procore_id: Id::Number(2),
                    since: T0.into(),
                },
            )],
            Some(kept),
        );
        p.approved = [Key::of("old@corp.com").unwrap()].into();
        let (diff, writes) = run(&people, &users, &k, &p);
        assert!(!diff.guard.hold, "{}", diff.guard.reason);
        assert_eq!(holders(&writes).unwrap().first_held, None);
    }

    /// With a grace, the first run finds `old@corp.com` leaving but holds
    /// nobody yet: its mark is kept, and once the grace is over the
    /// deactivation waits for an admin (and every other with it), whatever
    /// the threshold says, until decided.
    #[test]
    fn the_first_runs_leavers_wait_for_an_admin_after_their_grace_too() {
        let people = [person("a@x.com", true), person("b@x.com", true)];
        let users = [
            user(1, "a@x.com", true),
            user(2, "old@corp.com", true),
            user(3, "b@x.com", true),
        ];
        let mut p = policy();
        p.domains = vec!["corp.com".into()];
        p.grace = std::time::Duration::from_secs(3 * 24 * 3600);
        let holders = |writes: &[Write]| {
            writes.iter().find_map(|w| match w {
                Write::Holders(h) => Some(h.clone()),
                _ => None,
            })
        };
        let (diff, writes) = run(&people, &users, &Known::default(), &p);
        assert!(diff.leavers.is_empty() && diff.leaving.len() == 1);
        assert!(!diff.guard.hold);
        let first = holders(&writes).unwrap();
        let t0 = p.now.to_rfc3339();
        assert_eq!(first.first_held.as_deref(), Some(t0.as_str()));
        let clock = |writes: &[Write]| {
            writes.iter().find_map(|w| match w {
                Write::Clock(k, Some(c)) => Some((k.clone(), c.clone())),
                _ => None,
            })
        };
        let clocks = vec![clock(&writes).unwrap()];
        let records = |writes: &[Write]| -> Vec<(String, Managed)> {
            managed_writes(writes)
                .into_iter()
                .map(|(k, m)| (k.to_string(), m.clone()))
                .collect()
        };
        let k = Known::held(records(&writes), clocks.clone(), Some(first));
        // A day later: still in the grace; the mark stays.
        let mut later = Policy {
            now: p.now + chrono::Duration::days(1),
            ..p.clone()
        };
        let (diff, writes) = run(&people, &users, &k, &later);
        assert!(!diff.guard.hold);
        let kept = holders(&writes).unwrap();
        assert_eq!(kept.first_held.as_deref(), Some(t0.as_str()));
        // Four days later: a leaver, and everyone waits with them.
        later.now = p.now + chrono::Duration::days(4);
        let k = Known::held(records(&writes), clocks.clone(), Some(kept));
        let (diff, writes) = run(&people, &users, &k, &later);
        assert_eq!(diff.leavers.len(), 1, "{:?}", diff.leavers);
        assert!(diff.guard.hold, "the first run found them leaving");
        let kept = holders(&writes).unwrap();
        assert_eq!(kept.first_held.as_deref(), Some(t0.as_str()));
        // Rejected: decided; the hold and the mark go.
        later.rejected = [Key::of("old@corp.com").unwrap()].into();
        let k = Known::held(records(&writes), clocks, Some(kept));
        let (diff, writes) = run(&people, &users, &k, &later);
        assert!(!diff.guard.hold, "{}", diff.guard.reason);
        assert_eq!(holders(&writes).unwrap().first_held, None);
    }

    #[test]
    fn the_guard_keeps_its_old_count_until_every_held_leaver_is_decided() {
        // Nine holders last time; now one, and two managed people left.
        let users = [
            user(1, "a@x.com", true),
            user(2, "b@x.com", true),
            user(3, "c@x.com", true),
        ];
        let before = Holders {
            count: 9,
            at: "2026-02-28T12:00:00Z".into(),
            first_held: None,
            held_drop: None,
        };
        // The run that found the drop (policy's now) found b and c leaving.
        let found = policy().now.to_rfc3339();
        let leaving = |id| Managed {
            leaving_since: Some(found.clone()),
            ..managed(id, Status::Active)
        };
        let records = |holders: &Holders| {
            let mut k = known(&[
                ("a@x.com", managed(1, Status::Active)),
                ("b@x.com", leaving(2)),
                ("c@x.com", leaving(3)),
            ]);
            k.holders = Some(holders.clone());
            k
        };
        let people = [person("a@x.com", true)];
        let holders = |writes: &[Write]| {
            writes.iter().find_map(|w| match w {
                Write::Holders(h) => Some(h.clone()),
                _ => None,
            })
        };
        // Nothing decided yet: the guard holds, keeps the old count, and
        // remembers this run held them.
        let (diff, writes) = run(&people, &users, &records(&before), &policy());
        assert!(diff.guard.hold);
        let held = holders(&writes).unwrap();
        assert_eq!(
            held,
            Holders {
                held_drop: Some(HeldDrop {
                    at: found.clone(),
                    count: 1
                }),
                ..before.clone()
            }
        );
        // An hour later, one rejected, one still waiting: the count is kept.
        let mut p = policy();
        p.now += chrono::TimeDelta::hours(1);
        let later = p.now.to_rfc3339();
        p.rejected = [Key::of("B@x.com").unwrap()].into();
        let (diff, writes) = run(&people, &users, &records(&held), &p);
        assert!(diff.guard.hold);
        assert!(
            diff.guard.reason.contains("from 9 to 1"),
            "{}",
            diff.guard.reason
        );
        let held = holders(&writes).unwrap();
        assert_eq!((held.count, held.at.as_str()), (9, before.at.as_str()));
        assert_eq!(
            held.held_drop.as_ref().unwrap().at,
            later,
            "c@x.com is not decided"
        );
        // Both rejected: nothing holds any more, and the count the admin
        // has seen is the one kept; rejected leavers are still listed.
        p.rejected.insert(Key::of("c@x.com").unwrap());
        let (diff, writes) = run(&people, &users, &records(&held), &p);
        assert!(!diff.guard.hold, "{}", diff.guard.reason);
        assert_eq!(diff.leavers.len(), 2);
        let settled = holders(&writes).unwrap();
        assert_eq!((settled.count, &settled.held_drop), (1, &None));
        // A new drop from that count fires it again.
        let (diff, writes) = run(&[], &users, &records(&settled), &p);
        assert!(diff.guard.hold, "from 1 to 0");
        let again = holders(&writes).unwrap();
        assert_eq!((again.count, again.held_drop.unwrap().count), (1, 0));
    }

    /// Two edges of the drop's mark: one whose time does not read keeps
    /// the hold (nobody can be told apart as found after it), and one made
    /// by a replica whose clock is behind the replica that found a leaver
    /// is no earlier than that leaver's start, so they count as held.
    #[test]
    fn a_drop_mark_holds_on_when_unreadable_and_covers_a_leaver_from_a_clock_ahead() {
        let users = [
            user(1, "a@x.com", true),
            user(2, "b@x.com", true),
            user(3, "c@x.com", true),
        ];
        let later = (policy().now + chrono::TimeDelta::minutes(10)).to_rfc3339();
        let mut k = known(&[
            ("a@x.com", managed(1, Status::Active)),
            ("b@x.com", managed(2, Status::Active)),
            (
                "c@x.com",
                Managed {
                    leaving_since: Some(later.clone()),
                    ..managed(3, Status::Active)
                },
            ),
        ]);
        k.holders = Some(Holders {
            count: 9,
            at: "2026-02-28T12:00:00Z".into(),
            first_held: None,
            held_drop: Some(HeldDrop {
                at: "not a time".into(),
                count: 3,
            }),
        });
        let people = [person("a@x.com", true), person("b@x.com", true)];
        let (diff, writes) = run(&people, &users, &k, &policy());
        assert!(diff.guard.hold, "{}", diff.guard.reason);
        assert!(
            diff.guard.reason.contains("from 9 to 2"),
            "{}",
            diff.guard.reason
        );
        let mark = writes
            .iter()
            .find_map(|w| match w {
                Write::Holders(h) => h.held_drop.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(mark.at, later, "no earlier than c's start");
    }

    /// Everyone a drop held was decided, and then one more person left:
    /// the tester's run held them for the old drop ("fell from 33 to 8")
    /// and it took one more approval by hand to let the guard go.
    #[test]
    fn a_leaver_found_after_a_drop_was_decided_is_not_held_for_it() {
        let users = [
            user(1, "a@x.com", true),
            user(2, "b@x.com", true),
            user(3, "c@x.com", true),
            user(4, "d@x.com", true),
        ];
        let found = policy().now.to_rfc3339();
        let mut k = known(&[
            ("a@x.com", managed(1, Status::Active)),
            ("b@x.com", managed(2, Status::Active)),
            (
                "c@x.com",
                Managed {
                    leaving_since: Some(found.clone()),
                    ..managed(3, Status::Active)
                },
            ),
            ("d@x.com", managed(4, Status::Active)),
        ]);
        // 9 before the drop; the run that held c counted 3.
        k.holders = Some(Holders {
            count: 9,
            at: "2026-02-28T12:00:00Z".into(),
            first_held: None,
            held_drop: Some(HeldDrop {
                at: found,
                count: 3,
            }),
        });
        let mut p = policy();
        p.now += chrono::TimeDelta::hours(1);
        p.rejected = [Key::of("c@x.com").unwrap()].into();
        // d leaves now: 3 to 2 is no drop of more than half.
        let people = [person("a@x.com", true), person("b@x.com", true)];
        let (diff, writes) = run(&people, &users, &k, &p);
        assert!(!diff.guard.hold, "{}", diff.guard.reason);
        assert!(diff.leavers.iter().any(|l| l.key == "d@x.com"));
        assert!(writes.iter().any(|w| matches!(
            w,
            Write::Holders(h) if h.count == 2 && h.held_drop.is_none()
        )));
        // Had the count fallen by more than half since that run, it holds
        // again, from that run's count.
        let (diff, _) = run(&people[..1], &users, &k, &p);
        assert!(diff.guard.hold);
        assert!(
            diff.guard.reason.contains("from 3 to 1"),
            "{}",
            diff.guard.reason
        );
    }

    #[test]
    fn a_drop_whose_leavers_are_all_in_their_grace_is_held_when_it_ends() {
        let keys = ["a", "b", "c", "d", "e", "f"].map(|k| format!("{k}@x.com"));
        let users: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| user(i as u64 + 1, k, true))
            .collect();
        let records: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), managed(i as u64 + 1, Status::Active)))
            .collect();
        let mut k = known(&records);
        k.holders = Some(Holders {
            count: 6,
            at: "2026-02-28T12:00:00Z".into(),
            first_held: None,
            held_drop: None,
        });
        let mut p = policy();
        p.grace = Duration::from_secs(24 * 3600);
        // Four of six leave at once: all in their grace, nobody to hold yet.
        let people = [person("a@x.com", true), person("b@x.com", true)];
        let (diff, writes) = run(&people, &users, &k, &p);
        assert_eq!((diff.leavers.len(), diff.leaving.len()), (0, 4));
        let held = |writes: &[Write]| {
            writes.iter().find_map(|w| match w {
                Write::Holders(h) => Some(h.clone()),
                _ => None,
            })
        };
        let holders = held(&writes).unwrap();
        assert_eq!(holders.count, 6, "the count before the drop is kept");
        assert_eq!(holders.held_drop.as_ref().map(|d| d.count), Some(2));
        // A day later their grace is over: they are held for the drop
        // (whatever the flow's threshold would let through).
        let marked = managed_writes(&writes);
        assert_eq!(marked.len(), 4, "their grace clocks start");
        let records: Vec<_> = records
            .into_iter()
            .map(|(key, record)| {
                let now = marked.iter().find(|(k, _)| *k == key).map(|(_, m)| *m);
                (key, now.unwrap_or(&record).clone())
            })
            .collect();
        let mut later = known(&records);
        later.holders = Some(holders);
        // A run while they are still in their grace keeps the count too.
        p.now += chrono::TimeDelta::hours(12);
        let (diff, writes) = run(&people, &users, &later, &p);
        assert_eq!(diff.leaving.len(), 4);
        assert_eq!(held(&writes).unwrap().count, 6);
        p.now += chrono::TimeDelta::hours(13);
        let (diff, writes) = run(&people, &users, &later, &p);
        assert_eq!(diff.leavers.len(), 4);
        assert!(diff.guard.hold);
        assert!(
            diff.guard.reason.contains("from 6 to 2"),
            "{}",
            diff.guard.reason
        );
        assert_eq!(held(&writes).unwrap().count, 6);
        // Once an admin has decided them, the drop's count is the one
        // trusted, and the hold lets go.
        p.rejected = keys[2..].iter().map(|k| Key::of(k).unwrap()).collect();
        let (diff, writes) = run(&people, &users, &later, &p);
        assert!(!diff.guard.hold, "{}", diff.guard.reason);
        assert_eq!(held(&writes).unwrap().count, 2);
    }

    /// Bob as Entra has him now: his mailbox came after his license, so
    /// his key was his UPN when the flow first managed him.
    fn bob_with_mail() -> Person {
        let mut bob = person("bob.smith@x.com", true);
        bob.id = Some("entra-bob".into());
        bob.mail = Some("Bob.Smith@x.com".into());
        bob.user_principal_name = Some("bob@x.onmicrosoft.com".into());
        bob.display_name = Some("Bob Smith".into());
        bob
    }

    fn with_entra(mut record: Managed, entra: &str) -> Managed {
        record.other.insert(ENTRA_ID.into(), entra.into());
        record
    }

    #[test]
    fn a_holder_whose_key_changed_is_their_managed_user_and_nobody_is_created() {
        let upn = "bob@x.onmicrosoft.com";
        let k = known(&[(upn, with_entra(managed(1, Status::Active), "entra-bob"))]);
        let users = [user(1, upn, true)];
        let (diff, writes) = run(&[bob_with_mail()], &users, &k, &policy());
        assert!(
            diff.missing.is_empty(),
            "not created again: {:?}",
            diff.missing
        );
        assert!(diff.leavers.is_empty() && diff.leaving.is_empty());
        assert_eq!(
            diff.present,
            [Present {
                key: "bob.smith@x.com".into(),
                procore_id: Id::Number(1)
            }]
        );
        assert_eq!(
            diff.known_as,
            [KnownAs {
                key: "bob.smith@x.com".into(),
                procore_id: Id::Number(1),
                managed_as: upn.into(),
                login: Some(upn.into()),
                email: Some(upn.into()),
                name: Some("Bob Smith".into()),
                license_group: Some("License – Microsoft E3".into()),
                matched_by: sluice_guest_services::sync::MatchedBy::Mail,
            }]
        );
        assert_eq!(diff.known_as[0].procore_address(), upn);
        assert_eq!(
            (
                diff.counts.people,
                diff.counts.missing,
                diff.counts.present,
                diff.counts.procore_only,
                diff.counts.adopted
            ),
            (1, 0, 1, 0, 0)
        );
        assert!(
            managed_writes(&writes).is_empty(),
            "the record keeps its key: {writes:?}"
        );
        // Without the Entra id to tell, it is the old behaviour: a new key.
        let mut stranger = bob_with_mail();
        stranger.id = Some("entra-someone-else".into());
        let (diff, _) = run(&[stranger], &users, &k, &policy());
        assert_eq!(diff.missing.len(), 1);
        assert!(diff.known_as.is_empty());
    }

    /// A run that started at 11:00 found Bob missing under his UPN (no
    /// mailbox yet) and created him at 11:01, but its host died before
    /// recording it; his mail has appeared since, so his key is his mail
    /// now. The mark keeps his Entra id: the user created under the UPN is
    /// the flow's creation, kept under the UPN (the address Procore has),
    /// owed the project add and reported as known under another address;
    /// nobody is created again, and the UPN's mark goes.
    #[test]
    fn a_user_a_killed_run_created_before_the_key_changed_is_the_flows() {
        let upn = "bob@x.onmicrosoft.com";
        let created = |at: &str| ProcoreUser {
            created_at: Some(at.into()),
            ..user(1, upn, true)
        };
        let users = [created("2026-03-01T11:01:00Z")];
        let eleven = at("2026-03-01T11:00:00Z").timestamp();
        let marked = |entra: Option<&str>| {
            let mut known = Known::default();
            known.creating = Marks::new(vec![mark(upn, eleven, entra)]);
            known
        };
        let known = marked(Some("entra-bob"));
        let p = Policy {
            project: Some("77".into()),
            ..policy()
        };
        let (diff, writes) = run(&[bob_with_mail()], &users, &known, &p);
        assert!(diff.missing.is_empty(), "created again: {:?}", diff.missing);
        assert_eq!(
            diff.present,
            [Present {
                key: "bob.smith@x.com".into(),
                procore_id: Id::Number(1)
            }]
        );
        let add = OwedProject {
            project_id: "77".into(),
            action: ProjectAction::Add,
        };
        let written: Vec<_> = managed_writes(&writes)
            .into_iter()
            .map(|(k, m)| (k, m.origin, m.entra_id(), m.owed_project.as_ref()))
            .collect();
        assert_eq!(
            written,
            [(upn, Origin::Created, Some("entra-bob"), Some(&add))]
        );
        assert_eq!(
            diff.adopted,
            [Adopted {
                key: upn.into(),
                status: AdoptedStatus::Adopted,
                procore_id: Id::Number(1),
                matched_by: Some(MatchedBy::Upn),
                license_group: Some("License – Microsoft E3".into()),
                origin: Origin::Created,
                detail: None,
                name: None,
            }]
        );
        assert_eq!((diff.counts.adopted, diff.counts.missing), (1, 0));
        let known_as: Vec<(&str, &str, Option<&str>)> = diff
            .known_as
            .iter()
            .map(|k| (k.key.as_str(), k.managed_as.as_str(), k.login.as_deref()))
            .collect();
        assert_eq!(known_as, [("bob.smith@x.com", upn, Some(upn))]);
        let owed: Vec<(&str, ProjectAction)> = diff
            .project_owed
            .iter()
            .map(|o| (o.key.as_str(), o.action))
            .collect();
        assert_eq!(owed, [(upn, ProjectAction::Add)]);
        assert!(diff.leavers.is_empty() && diff.leaving.is_empty());
        assert_eq!(mark_writes(&writes), [(upn.to_string(), None)]);

        // Not taken, so Bob is missing under his mail: a mark that keeps
        // no Entra id (an older version's: nobody can tell whose), a
        // creation an admin rejected (never sent), or a user older than
        // the mark (less the clocks' leeway).
        let mut rejected = p.clone();
        rejected.creates_rejected = [Key::of(upn).unwrap()].into();
        let older = [created("2026-03-01T10:54:59Z")];
        for (known, users, p) in [
            (marked(None), &users, &p),
            (marked(Some("entra-bob")), &users, &rejected),
            (marked(Some("entra-bob")), &older, &p),
        ] {
            let (diff, writes) = run(&[bob_with_mail()], users, &known, p);
            assert_eq!(diff.missing.len(), 1, "{:?}", diff.adopted);
            assert!(managed_writes(&writes).is_empty(), "{writes:?}");
            assert!(diff.known_as.is_empty());
        }
    }

    /// Bob's user, which a killed run created under his UPN after a run
    /// marked him missing (with his Entra id) at 11:00: the UPN, the
    /// user, and what the flow kept.
    fn bobs_user_created_under_his_upn() -> (&'static str, [ProcoreUser; 1], Known) {
        let upn = "bob@x.onmicrosoft.com";
        let users = [ProcoreUser {
            created_at: Some("2026-03-01T11:01:00Z".into()),
            ..user(1, upn, true)
        }];
        let mut known = Known::default();
        let eleven = at("2026-03-01T11:00:00Z").timestamp();
        known.creating = Marks::new(vec![mark(upn, eleven, Some("entra-bob"))]);
        (upn, users, known)
    }

    /// The address a killed run created Bob's user under is now another
    /// license holder's key (Eve's). The holder matched by key wins, so
    /// Eve has the user and Bob is missing, wherever either is in the
    /// list: before, Bob took the user when he came first, and Eve was
    /// then neither created nor listed.
    #[test]
    fn a_user_under_an_old_key_is_the_holder_with_that_key_in_either_order() {
        let (upn, users, known) = bobs_user_created_under_his_upn();
        let eve = person(upn, true);
        let seen = |people: &[Person]| {
            let (diff, writes) = run(people, &users, &known, &policy());
            let missing: Vec<String> = diff.missing.iter().map(|p| p.key.clone()).collect();
            let present: Vec<(String, Id)> = diff
                .present
                .iter()
                .map(|p| (p.key.clone(), p.procore_id.clone()))
                .collect();
            let managed: Vec<String> = managed_writes(&writes)
                .into_iter()
                .map(|(k, m)| format!("{k} {:?}", m.entra_id()))
                .collect();
            (missing, present, managed, diff.known_as.len())
        };
        let bob_first = seen(&[bob_with_mail(), eve.clone()]);
        let eve_first = seen(&[eve, bob_with_mail()]);
        assert_eq!(bob_first, eve_first);
        assert_eq!(bob_first.0, ["bob.smith@x.com"]);
        assert_eq!(bob_first.1, [(upn.to_string(), Id::Number(1))]);
        assert_eq!(bob_first.3, 0, "Bob is not known under Eve's user");
    }

    /// Bob, taken under his old key when he comes first, is taken the same
    /// when later entries of his key follow: he is one person, listed once.
    #[test]
    fn a_holder_waiting_for_the_old_key_decision_is_listed_once() {
        let (_, users, known) = bobs_user_created_under_his_upn();
        let (diff, _) = run(
            &[bob_with_mail(), person("ann@x.com", true), bob_with_mail()],
            &users,
            &known,
            &policy(),
        );
        let present: Vec<&str> = diff.present.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(present, ["bob.smith@x.com"]);
        let missing: Vec<&str> = diff.missing.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(missing, ["ann@x.com"]);
        assert_eq!((diff.counts.people, diff.counts.present), (2, 1));
        assert_eq!(diff.known_as.len(), 1);
    }

    #[test]
    fn a_record_whose_entra_user_holds_a_license_is_never_a_leaver() {
        // Bob's first account (under his UPN, marked leaving by an older
        // version once his key changed) and the one that version then
        // created under his mail; Cy really left.
        let upn = "bob@x.onmicrosoft.com";
        let mut first = with_entra(managed(1, Status::Active), "entra-bob");
        first.leaving_since = Some("2026-02-27T00:00:00Z".into());
        let k = known(&[
            (upn, first.clone()),
            (
                "bob.smith@x.com",
                with_entra(managed(2, Status::Active), "entra-bob"),
            ),
            (
                "cy@x.com",
                with_entra(managed(3, Status::Active), "entra-cy"),
            ),
        ]);
        let users = [
            user(1, upn, true),
            user(2, "bob.smith@x.com", true),
            user(3, "cy@x.com", true),
        ];
        let (diff, writes) = run(&[bob_with_mail()], &users, &k, &policy());
        let leavers: Vec<(&str, LeaveReason)> = diff
            .leavers
            .iter()
            .map(|l| (l.key.as_str(), l.reason))
            .collect();
        assert_eq!(leavers, [("cy@x.com", LeaveReason::NoLicenseGroup)]);
        assert!(diff.missing.is_empty() && diff.known_as.is_empty());
        // A rejection of the old key does not make the old account a
        // leaver either: its record was judged (a reviewer's case).
        let mut rejected = policy();
        rejected.rejected = [Key::of(upn).unwrap()].into();
        let (kept, _) = run(&[bob_with_mail()], &users, &k, &rejected);
        assert_eq!(kept.leavers.len(), 1, "{:?}", kept.leavers);
        // The old mark goes, as when a license comes back.
        let marked = managed_writes(&writes);
        assert_eq!(marked.len(), 2, "{marked:?}");
        assert_eq!(
            marked[0],
            (
                upn,
                &Managed {
                    leaving_since: None,
                    ..first
                }
            )
        );
        assert_eq!(marked[1].0, "cy@x.com");
        // Disabled or gone (no longer a license holder), Bob is a leaver.
        let (diff, _) = run(&[], &users, &k, &policy());
        assert_eq!(diff.leavers.len(), 3, "{:?}", diff.leavers);
    }

    #[test]
    fn a_holder_whose_key_changed_returns_under_the_key_the_flow_keeps() {
        let upn = "bob@x.onmicrosoft.com";
        let k = known(&[(
            upn,
            with_entra(managed(1, Status::Deactivated), "entra-bob"),
        )]);
        let (diff, _) = run(&[bob_with_mail()], &[user(1, upn, false)], &k, &policy());
        assert!(diff.missing.is_empty(), "{:?}", diff.missing);
        let returners: Vec<(&str, &Id)> = diff
            .returners
            .iter()
            .map(|r| (r.key.as_str(), &r.procore_id))
            .collect();
        assert_eq!(returners, [(upn, &Id::Number(1))], "the record's key");
        assert_eq!(diff.returners[0].name.as_deref(), Some("Bob Smith"));
        // Not by key: no key of Bob's names the user.
        assert_eq!(diff.returners[0].matched_by, MatchedBy::EntraId);
        assert!(diff.present_inactive.is_empty());
        // Procore has his old address: said in the run that brings him back.
        let known_as: Vec<(&str, &Id, &str)> = diff
            .known_as
            .iter()
            .map(|k| (k.key.as_str(), &k.procore_id, k.managed_as.as_str()))
            .collect();
        assert_eq!(known_as, [("bob.smith@x.com", &Id::Number(1), upn)]);
        // Inactive, but not by the flow: reported as such, matched the same way.
        let k = known(&[(upn, with_entra(managed(1, Status::Active), "entra-bob"))]);
        let (diff, _) = run(&[bob_with_mail()], &[user(1, upn, false)], &k, &policy());
        assert!(diff.returners.is_empty(), "{:?}", diff.returners);
        let inactive = &diff.present_inactive[0];
        assert_eq!(inactive.procore_id, Id::Number(1));
        assert_eq!(inactive.matched_by(), MatchedBy::EntraId);
        let text = serde_json::to_value(inactive).unwrap();
        assert_eq!(text["matched_by"], "entra_id");
    }

    #[test]
    fn a_first_run_adopts_a_large_tenant_at_once() {
        let n = 25_000;
        let people: Vec<Person> = (0..n)
            .map(|i| person(&format!("u{i}@x.com"), true))
            .collect();
        let users: Vec<ProcoreUser> = (0..n)
            .map(|i| user(i as u64, &format!("u{i}@x.com"), true))
            .collect();
        let (diff, writes) = run(&people, &users, &Known::default(), &policy());
        assert_eq!(diff.counts.adopted, n);
        assert_eq!(writes.len(), n + 1, "a record each and the holder count");
        assert!(diff.leavers.is_empty());
    }
}
