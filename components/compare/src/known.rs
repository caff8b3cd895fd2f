//! What the flow's state says before this run: the managed people, the
//! last holder count and the license holders earlier runs found missing,
//! kept compactly.
//!
//! A tenant of a million has some 740,000 managed records. Held whole, each
//! record's `other` fields are a map of their own, about 700 bytes a
//! record, and a second run at a million members overran the step's
//! 512 MiB. So each record is kept as the fields the rules decide with
//! ([`Record`]), sorted by key; the few records a run rewrites (a leaver
//! marked, a returner made active again) are read again whole
//! ([`Known::full`]), so the fields this step never looks at are carried
//! over as they were.
//!
//! Each record's Entra object id is kept too (as 16 bytes, [`EntraKey`]),
//! with an index by it ([`Known::by_entra`]): a record whose Entra user
//! holds a license now is that person's Procore user, whatever its key.
//!
//! The grace clocks of in-domain users whom only `managed_domains` manages
//! ([`Clock`]) are kept apart: they never make anyone managed. A record an
//! older version wrote under `managed/` for such a user (origin `domain`,
//! a `leaving_since`, no Entra id, still active) is read as a clock too.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use sluice_guest::{StepError, state};
use sluice_guest_services::procore::{self, Id};
use sluice_guest_services::sync::{
    CREATING_PREFIX, Creating, DOMAIN_LEAVING_PREFIX, DomainLeaving, HOLDERS_KEY, Holders,
    MANAGED_PREFIX, Managed, ManagedStatus as Status, Origin, OwedProject, managed_key,
};

use crate::keys::{EntraKey, IdKey};

/// One managed person, as the rules decide with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The person's identity key (`managed/<key>`).
    pub key: Box<str>,
    /// The Procore user.
    pub procore_id: Id,
    /// Active or deactivated.
    pub status: Status,
    /// Since when they have been a leaver (RFC 3339), while they are one.
    pub leaving_since: Option<Box<str>>,
    /// The person's Entra object id, when the record keeps one.
    pub entra: Option<EntraKey>,
    /// A project call an earlier run owes them (boxed: it is rare).
    pub owed_project: Option<Box<OwedProject>>,
}

/// Since when an in-domain user whom only `managed_domains` manages holds
/// no license: the grace clock, which never makes them managed.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    /// The key it was kept under.
    pub key: Box<str>,
    /// The Procore user.
    pub procore_id: Id,
    /// Since when (RFC 3339).
    pub since: Box<str>,
    /// Kept under `managed/` by a version before `domain-leaving/`.
    pub legacy: bool,
}

/// A stored record as it is read here: the fields of [`Managed`] the rules
/// need, and those it must have (so a record `Managed` would refuse is
/// refused here too), without its `other` fields but the Entra id.
#[derive(Deserialize)]
struct Stored {
    procore_id: Id,
    origin: Origin,
    status: Status,
    #[serde(rename = "since")]
    _since: String,
    #[serde(default)]
    leaving_since: Option<String>,
    #[serde(default)]
    entra_id: Option<Value>,
    #[serde(default)]
    owed_project: Option<OwedProject>,
}

impl Stored {
    /// A record a version before `domain-leaving/` wrote for an unlicensed
    /// in-domain user only to time their grace: origin `domain`, never
    /// matched to a license holder (no Entra id, and a match clears
    /// `leaving_since`), never deactivated or reactivated by the flow (the
    /// status, and a reactivation clears `leaving_since`). Such a user was
    /// managed by the param alone, so the record is their clock, not a
    /// reason to manage them.
    fn is_domain_clock(&self) -> bool {
        self.origin == Origin::Domain
            && self.status == Status::Active
            && self.entra_id.is_none()
            && self.leaving_since.is_some()
    }
}

/// Where a whole record comes from when the run rewrites it.
#[derive(Debug)]
enum Source {
    /// The flow's state, read again.
    State,
    /// Held here whole (records given natively, as tests do).
    Held(BTreeMap<String, Managed>),
}

/// The managed people and the last holder count.
#[derive(Debug)]
pub struct Known {
    /// Sorted by key, one a key.
    managed: Vec<Record>,
    /// Positions in `managed` of the records with an Entra id, sorted by
    /// it (several records may keep one id).
    by_entra: Vec<u32>,
    /// The in-domain users' grace clocks, sorted by key, one a key.
    clocks: Vec<Clock>,
    /// The license holders of the last complete read.
    pub holders: Option<Holders>,
    /// License holders found missing from Procore by an earlier run
    /// (`creating/<key>`): a user of theirs Procore created since is one
    /// such a run may have made and not recorded.
    pub creating: Marks,
    source: Source,
}

impl Default for Known {
    fn default() -> Self {
        Known::held(Vec::new(), Vec::new(), None)
    }
}

impl Known {
    /// What the flow's state holds, read a page at a time.
    pub fn read() -> Result<Known, StepError> {
        let mut managed = Vec::new();
        let mut clocks = Vec::new();
        for entry in state::entries::<Stored>(MANAGED_PREFIX) {
            let (state_key, stored) = entry?;
            if let Some(key) = state_key.strip_prefix(MANAGED_PREFIX) {
                sort_in(key, stored, &mut managed, &mut clocks);
            }
        }
        for entry in state::entries::<DomainLeaving>(DOMAIN_LEAVING_PREFIX) {
            let (state_key, clock) = entry?;
            if let Some(key) = state_key.strip_prefix(DOMAIN_LEAVING_PREFIX) {
                clocks.push(Clock {
                    key: key.into(),
                    procore_id: clock.procore_id,
                    since: clock.since.into(),
                    legacy: false,
                });
            }
        }
        let mut known = Known::sorted(
            managed,
            clocks,
            state::get::<Holders>(HOLDERS_KEY)?,
            Source::State,
        );
        let mut marks = Vec::new();
        for entry in state::entries::<Value>(CREATING_PREFIX) {
            let (state_key, value) = entry?;
            if let Some(key) = state_key.strip_prefix(CREATING_PREFIX) {
                marks.push(Mark::stored(key, &value));
            }
        }
        known.creating = Marks::new(marks);
        Ok(known)
    }

    /// The Procore ids of the records the flow deactivated, or was
    /// deactivating.
    pub fn deactivated_ids(&self) -> hashbrown::HashSet<IdKey<'_>> {
        self.managed
            .iter()
            .filter(|r| matches!(r.status, Status::Deactivated | Status::Deactivating))
            .map(|r| IdKey::of(&r.procore_id))
            .collect()
    }

    /// `managed` and `clocks` sorted by key, one a key (a clock of today's
    /// kind before a legacy one). The store lists keys in order; sorting
    /// again costs nothing then and keeps the search right whatever a
    /// store does.
    fn sorted(
        mut managed: Vec<Record>,
        mut clocks: Vec<Clock>,
        holders: Option<Holders>,
        source: Source,
    ) -> Known {
        managed.sort_by(|a, b| a.key.cmp(&b.key));
        managed.dedup_by(|a, b| a.key == b.key);
        managed.shrink_to_fit();
        let mut by_entra: Vec<u32> = (0..managed.len() as u32)
            .filter(|&i| managed[i as usize].entra.is_some())
            .collect();
        by_entra.sort_by(|&a, &b| managed[a as usize].entra.cmp(&managed[b as usize].entra));
        clocks.sort_by(|a, b| a.key.cmp(&b.key).then(a.legacy.cmp(&b.legacy)));
        clocks.dedup_by(|a, b| a.key == b.key);
        Known {
            managed,
            by_entra,
            clocks,
            holders,
            creating: Marks::default(),
            source,
        }
    }

    /// Records given whole (keyed by identity key), today's clocks and a
    /// holder count.
    pub fn held(
        records: Vec<(String, Managed)>,
        clocks: Vec<(String, DomainLeaving)>,
        holders: Option<Holders>,
    ) -> Known {
        let records: BTreeMap<String, Managed> = records.into_iter().collect();
        let mut managed = Vec::new();
        let mut kept = Vec::new();
        for (key, record) in &records {
            let stored = Stored {
                procore_id: record.procore_id.clone(),
                origin: record.origin,
                status: record.status,
                _since: record.since.clone(),
                leaving_since: record.leaving_since.clone(),
                entra_id: record.entra_id().map(Value::from),
                owed_project: record.owed_project.clone(),
            };
            sort_in(key, stored, &mut managed, &mut kept);
        }
        kept.extend(clocks.into_iter().map(|(key, clock)| Clock {
            key: key.into(),
            procore_id: clock.procore_id,
            since: clock.since.into(),
            legacy: false,
        }));
        Known::sorted(managed, kept, holders, Source::Held(records))
    }

    /// Every managed person, by key.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.managed.iter()
    }

    /// How many managed records there are ([`Known::records`] in order are
    /// `0..count`).
    pub fn count(&self) -> usize {
        self.managed.len()
    }

    /// The record at `index` of [`Known::records`].
    pub fn record(&self, index: u32) -> &Record {
        &self.managed[index as usize]
    }

    /// The positions (in [`Known::records`]) of the records that keep the
    /// Entra id `id`.
    pub fn by_entra(&self, id: &EntraKey) -> &[u32] {
        let entra = |i: &u32| self.managed[*i as usize].entra.as_ref();
        let start = self.by_entra.partition_point(|i| entra(i) < Some(id));
        let end = self.by_entra.partition_point(|i| entra(i) <= Some(id));
        &self.by_entra[start..end]
    }

    /// Every in-domain grace clock, by key.
    pub fn clocks(&self) -> impl Iterator<Item = &Clock> {
        self.clocks.iter()
    }

    /// The grace clock kept under `key`.
    pub fn clock(&self, key: &str) -> Option<&Clock> {
        self.clocks
            .binary_search_by(|c| c.key.as_ref().cmp(key))
            .ok()
            .map(|i| &self.clocks[i])
    }

    /// Whether a record names `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.managed
            .binary_search_by(|r| r.key.as_ref().cmp(key))
            .is_ok()
    }

    /// `record` whole, as stored, to be rewritten.
    pub fn full(&self, record: &Record) -> Result<Managed, StepError> {
        let found = match &self.source {
            Source::State => state::get::<Managed>(&managed_key(&record.key))?,
            Source::Held(records) => records.get(record.key.as_ref()).cloned(),
        };
        found.ok_or_else(|| {
            StepError::internal(format!(
                "the managed record of `{}` was read at the start of this run and is gone now",
                record.key
            ))
        })
    }
}

/// A license holder an earlier run found missing (`creating/<key>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// The person's key then.
    pub key: Box<str>,
    /// When (seconds since the epoch) the first run that found them
    /// missing started; [`Mark::UNREAD`] for one that is not a time.
    pub since: i64,
    /// The person's Entra object id, when the mark keeps one (marks of
    /// versions before [`Creating`] do not).
    pub entra: Option<EntraKey>,
}

impl Mark {
    /// The time of a mark that is not one (written by hand, say): it
    /// takes no user for the flow's, and the run marks the person again.
    pub const UNREAD: i64 = i64::MAX;

    /// The mark stored under `key`: a [`Creating`], or the bare RFC 3339
    /// time older versions wrote.
    pub fn stored(key: &str, value: &Value) -> Mark {
        let (since, entra) = match value {
            Value::String(since) => (procore::epoch(since), None),
            other => match Creating::deserialize(other) {
                Ok(mark) => (procore::epoch(&mark.since), mark.entra_id),
                Err(_) => (None, None),
            },
        };
        Mark {
            key: key.into(),
            since: since.unwrap_or(Mark::UNREAD),
            entra: entra.as_deref().and_then(EntraKey::of),
        }
    }
}

/// The marks, sorted by key (one a key), with an index by Entra id.
#[derive(Debug, Default)]
pub struct Marks {
    marks: Vec<Mark>,
    /// Positions in `marks` of those with an Entra id, sorted by it.
    by_entra: Vec<u32>,
}

impl Marks {
    pub fn new(mut marks: Vec<Mark>) -> Marks {
        marks.sort_by(|a, b| a.key.cmp(&b.key));
        marks.dedup_by(|a, b| a.key == b.key);
        let mut by_entra: Vec<u32> = (0..marks.len() as u32)
            .filter(|&i| marks[i as usize].entra.is_some())
            .collect();
        by_entra.sort_by(|&a, &b| marks[a as usize].entra.cmp(&marks[b as usize].entra));
        Marks { marks, by_entra }
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Every mark, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Mark> {
        self.marks.iter()
    }

    /// The mark of `key`.
    pub fn get(&self, key: &str) -> Option<&Mark> {
        self.marks
            .binary_search_by(|m| m.key.as_ref().cmp(key))
            .ok()
            .map(|i| &self.marks[i])
    }

    /// The marks that keep the Entra id `id`.
    pub fn of_entra<'m>(&'m self, id: &EntraKey) -> impl Iterator<Item = &'m Mark> {
        let entra = |i: &u32| self.marks[*i as usize].entra.as_ref();
        let start = self.by_entra.partition_point(|i| entra(i) < Some(id));
        let end = self.by_entra.partition_point(|i| entra(i) <= Some(id));
        self.by_entra[start..end]
            .iter()
            .map(|&i| &self.marks[i as usize])
    }
}

/// Files the stored `managed/<key>` record as a managed person, or as a
/// legacy grace clock ([`Stored::is_domain_clock`]).
fn sort_in(key: &str, stored: Stored, managed: &mut Vec<Record>, clocks: &mut Vec<Clock>) {
    let clock = stored.is_domain_clock();
    match stored.leaving_since {
        Some(since) if clock => clocks.push(Clock {
            key: key.into(),
            procore_id: stored.procore_id,
            since: since.into(),
            legacy: true,
        }),
        leaving_since => managed.push(Record {
            key: key.into(),
            procore_id: stored.procore_id,
            status: stored.status,
            leaving_since: leaving_since.map(Into::into),
            entra: stored
                .entra_id
                .as_ref()
                .and_then(Value::as_str)
                .and_then(EntraKey::of),
            owed_project: stored.owed_project.map(Box::new),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn managed(id: u64, leaving: Option<&str>) -> Managed {
        let mut other = Map::new();
        other.insert("entra_id".into(), json!("e-1"));
        Managed {
            procore_id: Id::Number(id),
            origin: Origin::Created,
            status: Status::Active,
            since: "2026-01-01T00:00:00Z".into(),
            leaving_since: leaving.map(str::to_string),
            owed_project: None,
            other,
        }
    }

    #[test]
    fn a_record_keeps_what_the_rules_decide_with_and_is_found_by_key() {
        let known = Known::held(
            vec![
                ("b@x.com".into(), managed(2, Some("2026-02-01T00:00:00Z"))),
                ("a@x.com".into(), managed(1, None)),
            ],
            Vec::new(),
            None,
        );
        let keys: Vec<&str> = known.records().map(|r| r.key.as_ref()).collect();
        assert_eq!(keys, ["a@x.com", "b@x.com"]);
        assert!(known.contains("b@x.com"));
        assert!(!known.contains("c@x.com"));
        let b = known.records().nth(1).unwrap();
        assert_eq!(b.procore_id, Id::Number(2));
        assert_eq!(b.leaving_since.as_deref(), Some("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn records_are_found_by_their_entra_id_several_to_an_id() {
        let with = |id: u64, entra: Option<&str>| {
            let mut record = managed(id, None);
            match entra {
                Some(e) => record.other.insert("entra_id".into(), json!(e)),
                None => record.other.remove("entra_id"),
            };
            record
        };
        let guid = "0F4C2A9E-7B1D-4E53-9A64-2C8F1B3D5E70";
        let known = Known::held(
            vec![
                ("d@x.com".into(), with(4, Some("e-2"))),
                ("c@x.com".into(), with(3, None)),
                ("b@x.com".into(), with(2, Some(guid))),
                ("a@x.com".into(), with(1, Some("e-2"))),
            ],
            Vec::new(),
            None,
        );
        let ids = |entra: &str| -> Vec<Id> {
            let key = EntraKey::of(entra).unwrap();
            let found = known.by_entra(&key).iter();
            found.map(|&i| known.record(i).procore_id.clone()).collect()
        };
        assert_eq!(ids("e-2"), [Id::Number(1), Id::Number(4)]);
        assert_eq!(ids(&guid.to_lowercase()), [Id::Number(2)]);
        assert_eq!(ids("e-3"), Vec::<Id>::new());
        assert_eq!(known.count(), 4);
    }

    #[test]
    fn a_whole_record_comes_back_with_the_fields_the_rules_never_read() {
        let known = Known::held(vec![("a@x.com".into(), managed(1, None))], Vec::new(), None);
        let record = known.records().next().unwrap();
        let full = known.full(record).unwrap();
        assert_eq!(full, managed(1, None));
        assert_eq!(full.other["entra_id"], "e-1");
    }

    #[test]
    fn a_mark_is_read_in_todays_form_and_in_the_bare_time_older_versions_wrote() {
        let guid = "0F4C2A9E-7B1D-4E53-9A64-2C8F1B3D5E70";
        let eleven = 1_772_362_800;
        let today = json!({"since": "2026-03-01T11:00:00Z", "entra_id": guid});
        let read = Mark::stored("a@x.com", &today);
        assert_eq!(
            (read.since, read.entra.clone()),
            (eleven, EntraKey::of(guid))
        );
        let older = Mark::stored("a@x.com", &json!("2026-03-01T11:00:00+00:00"));
        assert_eq!((older.since, older.entra.clone()), (eleven, None));
        for unread in [json!("soon"), json!({"entra_id": guid}), json!(7)] {
            assert_eq!(Mark::stored("a@x.com", &unread).since, Mark::UNREAD);
        }
        let marks = Marks::new(vec![read, Mark::stored("b@x.com", &today), older]);
        let keys = |id: &str| -> Vec<&str> {
            let id = EntraKey::of(id).unwrap();
            marks.of_entra(&id).map(|m| m.key.as_ref()).collect()
        };
        assert_eq!(keys(&guid.to_lowercase()), ["a@x.com", "b@x.com"]);
        assert!(keys("e-2").is_empty());
        assert_eq!(marks.get("a@x.com").map(|m| m.since), Some(eleven));
    }

    #[test]
    fn a_stored_record_missing_a_field_managed_requires_is_refused() {
        let stored = json!({"procore_id": 1, "status": "active", "since": "x"});
        assert!(serde_json::from_value::<Stored>(stored).is_err());
        let stored = json!({"procore_id": 1, "origin": "adopted", "status": "active",
            "since": "x", "entra_id": "e", "anything": [1]});
        assert!(serde_json::from_value::<Stored>(stored).is_ok());
    }
}
