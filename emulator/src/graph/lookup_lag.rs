//! Replication delay for id look-ups (the `lookup_lag` fault). Graph warns
//! that "some requests might have replication delays for objects that were
//! recently created, updated, or deleted": a look-up right after a delta
//! round may not see a user the round reported yet.
//!
//! The rule, with `lookup_lag: N`: every directory change (a join or leave,
//! an account or mail change, a deletion, a restore, a creation) is
//! numbered; a user whose latest change is among the last N is left out of
//! the next N `GET /users?$filter=…` answers that filter on `id` and would
//! otherwise hold them. A later change of the same user starts its N
//! look-ups again; so does setting the faults. Nothing random: the same
//! changes and look-ups hide the same users on every run.

use std::collections::HashMap;

/// The numbered changes per user, and the look-ups each has missed since.
#[derive(Debug, Default)]
pub struct LookupLag {
    /// Directory changes recorded so far.
    changes: u64,
    /// The number of each user's latest change.
    latest: HashMap<String, u64>,
    /// Look-ups that left a user out, and the change they were for.
    missed: HashMap<String, (u64, u32)>,
}

impl LookupLag {
    /// Numbers a change of `user_id`.
    pub fn record(&mut self, user_id: &str) {
        self.changes += 1;
        self.latest.insert(user_id.to_string(), self.changes);
    }

    /// Whether a look-up that would return `user_id` leaves it out, with
    /// a lag of `n` (counting the look-up when it does).
    pub fn hides(&mut self, user_id: &str, n: u32) -> bool {
        let Some(&latest) = self.latest.get(user_id) else {
            return false;
        };
        if n == 0 || self.changes - latest >= u64::from(n) {
            return false;
        }
        let missed = self
            .missed
            .entry(user_id.to_string())
            .or_insert((latest, 0));
        if missed.0 != latest {
            *missed = (latest, 0);
        }
        if missed.1 >= n {
            return false;
        }
        missed.1 += 1;
        true
    }

    /// Forgets the look-ups missed so far (the faults were set again).
    pub fn restart(&mut self) {
        self.missed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_of_the_last_n_changes_miss_their_next_n_look_ups() {
        let mut lag = LookupLag::default();
        for user in ["a", "b", "c"] {
            lag.record(user);
        }
        assert!(!lag.hides("a", 2), "a's change is not among the last two");
        assert!(!lag.hides("unchanged", 2));
        assert!(lag.hides("b", 2) && lag.hides("b", 2));
        assert!(!lag.hides("b", 2), "seen on the third look-up");
        assert!(lag.hides("c", 2));
        lag.record("b");
        assert!(lag.hides("b", 2), "a new change starts again");
        assert!(lag.hides("c", 2) && !lag.hides("c", 2));
        lag.restart();
        assert!(lag.hides("c", 2), "setting the faults starts again");
        assert!(!lag.hides("c", 0), "no lag");
    }
}
