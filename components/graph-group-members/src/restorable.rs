//! License holders in Entra's deleted items: deleted, but restorable for
//! 30 days. Graph's group delta documentation: "Users that have been
//! temporary deleted keep their group memberships and won't appear in the
//! delta result until they're permanently deleted." A restore says nothing
//! in the group delta either; only the users delta lists the user again.
//! So when the users delta says a member was deleted (`@removed` with
//! reason `changed`), the member leaves the people but the groups it was
//! in are kept here, by group id; when the users delta lists it again, it
//! is a member of those groups again, as Entra restores it.
//!
//! Kept in the flow's state (`members-delta/restorable`), small: at most
//! [`MAX_KEPT`] members in 200 KiB, each for at most [`KEPT_FOR_DAYS`]
//! days (Entra purges a deleted user after 30 days; the group delta then
//! reports the leaves). A full read skips the changes before it, so it
//! keeps only the members Graph still does not list (a look-up of their
//! ids), and adds the members the run before knew that it did not list
//! and Graph does not list either, unverified; when a look-up fails, it
//! keeps every one it asked about, unverified.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_guest::{StepError, state};

use crate::known::Entry;

const KEY: &str = "members-delta/restorable";
/// Entra keeps a deleted user 30 days.
pub const KEPT_FOR_DAYS: i64 = 30;
/// Enough for a wave of leavers; far more is a mass deletion, whose
/// restores the next full read finds (unverified ones first, then the
/// oldest).
pub const MAX_KEPT: usize = 500;
/// Well under the state's 256 KiB a value.
const MAX_BYTES: usize = 200 * 1024;

/// A deleted member: what the step knew of it, and the tracked groups it
/// was in (ids, not positions: the tracked groups may change meanwhile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    /// The entry, its groups left empty.
    #[serde(rename = "e")]
    pub entry: Entry,
    #[serde(rename = "g")]
    pub groups: Vec<String>,
    /// When the deletion was read (Unix seconds).
    #[serde(rename = "at")]
    pub since: i64,
    /// Kept by a full read from what the run before it knew, not read in
    /// a users round: a leave just before the deletion was not seen, so
    /// the groups may be stale. A restore of such a member is not trusted
    /// to them: the run that reads it reads every member instead.
    #[serde(rename = "u", default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

/// The deleted members, by id.
pub type Restorable = BTreeMap<String, Kept>;

/// Reads what the last run kept; nothing when there is none or it is not
/// this shape (the next full read finds the restored).
pub fn load() -> Result<Restorable, StepError> {
    match state::get::<Restorable>(KEY) {
        Ok(kept) => Ok(kept.unwrap_or_default()),
        Err(e) if e.code == "state-shape" => Ok(Restorable::new()),
        Err(e) => Err(e),
    }
}

/// Writes `kept`, without those deleted longer than Entra keeps them and
/// past [`MAX_KEPT`] or [`MAX_BYTES`] (unverified ones first, then the
/// oldest); deletes the key
/// when none is left.
pub fn save(mut kept: Restorable, now: i64) -> Result<(), StepError> {
    prune(&mut kept, now);
    loop {
        if kept.is_empty() {
            return state::delete(KEY);
        }
        let text = serde_json::to_string(&kept).map_err(|e| {
            StepError::internal(format!("the deleted members could not be serialised: {e}"))
        })?;
        if text.len() <= MAX_BYTES {
            return state::set_json(KEY, &text);
        }
        // Long names or many groups: an eighth fewer, as `keep_newest` picks.
        let fewer = kept.len() - kept.len().div_ceil(8);
        keep_newest(&mut kept, fewer);
    }
}

fn prune(kept: &mut Restorable, now: i64) {
    kept.retain(|_, k| now.saturating_sub(k.since) <= KEPT_FOR_DAYS * 24 * 3600);
    keep_newest(kept, MAX_KEPT);
}

/// Keeps the `most` deleted last (of those deleted in the same second,
/// the smallest ids).
fn keep_newest(kept: &mut Restorable, most: usize) {
    if kept.len() <= most {
        return;
    }
    // Those read in a users round first: they restore without a full read.
    let mut by_age: Vec<(bool, i64, String)> = kept
        .iter()
        .map(|(id, k)| (k.unverified, -k.since, id.clone()))
        .collect();
    by_age.sort();
    for (_, _, id) in &by_age[most..] {
        kept.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(since: i64) -> Kept {
        Kept {
            entry: Entry::unknown_user(),
            groups: vec!["g1".into()],
            since,
            unverified: false,
        }
    }

    #[test]
    fn a_deletion_is_kept_as_long_as_entra_keeps_the_user_and_the_newest_first() {
        let day = 24 * 3600;
        let now = 100 * day;
        let mut all: Restorable = [
            ("old".to_string(), kept(now - 31 * day)),
            ("month".to_string(), kept(now - 30 * day)),
            ("new".to_string(), kept(now)),
        ]
        .into();
        prune(&mut all, now);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["month", "new"]);

        let mut many: Restorable = (0..MAX_KEPT as i64 + 3)
            .map(|n| (format!("u{n:04}"), kept(now - n)))
            .collect();
        prune(&mut many, now);
        assert_eq!(many.len(), MAX_KEPT);
        assert!(many.contains_key("u0000") && !many.contains_key(&format!("u{MAX_KEPT:04}")));

        // Deleted in the same second: the smallest ids stay.
        let mut same: Restorable = ["c", "a", "b"].map(|id| (id.to_string(), kept(now))).into();
        keep_newest(&mut same, 2);
        assert_eq!(same.keys().collect::<Vec<_>>(), ["a", "b"]);

        // Those read in a users round go before a full read's unverified
        // ones, however new: they restore without reading every member.
        let mut mixed: Restorable = [
            ("read".to_string(), kept(now - day)),
            (
                "guessed".to_string(),
                Kept {
                    unverified: true,
                    ..kept(now)
                },
            ),
        ]
        .into();
        keep_newest(&mut mixed, 1);
        assert_eq!(mixed.keys().collect::<Vec<_>>(), ["read"]);
    }
}
