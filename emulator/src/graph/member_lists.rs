//! The member lists that `members` and `transitiveMembers` pages are cut
//! from, worked out once per group and relation and reused until the
//! directory changes. Working one out walks the whole group (and, for
//! `transitiveMembers`, its nested groups); doing that for every page made
//! a 100k-member group cost the emulator 90-180 ms a page, more than the
//! client it serves. Directory changes at run time go through [`Data`]'s
//! methods, which record each one for delta, so the number of recorded
//! changes says whether a list is still current.
//!
//! [`Data`]: crate::state::Data

use std::collections::HashMap;
use std::sync::Arc;

use crate::scenario::{GraphGroup, Member, Scenario};

/// How many membership and user changes had been recorded: a list worked
/// out at one stamp holds until the stamp moves.
pub type Stamp = (usize, usize);

/// The lists worked out at `stamp`, by group id and whether transitive.
#[derive(Debug, Default)]
pub struct MemberLists {
    stamp: Stamp,
    lists: HashMap<(String, bool), Arc<[Member]>>,
}

impl MemberLists {
    /// `group`'s members as [`Scenario::members`] lists them, from the
    /// lists kept when nothing changed since `stamp`.
    pub fn of(
        &mut self,
        scenario: &Scenario,
        stamp: Stamp,
        group: &GraphGroup,
        transitive: bool,
    ) -> Arc<[Member]> {
        if stamp != self.stamp {
            self.lists.clear();
            self.stamp = stamp;
        }
        self.lists
            .entry((group.id.clone(), transitive))
            .or_insert_with(|| {
                scenario
                    .members(group, transitive)
                    .into_iter()
                    .cloned()
                    .collect()
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_reused_until_the_stamp_moves() {
        let mut scenario = Scenario::hand_written();
        let g = scenario.add_group("License – Microsoft 365 E3");
        scenario.add_user("Ana Lima", Some("ana@x.com"), "ana@x.com", &[&g]);
        let mut lists = MemberLists::default();
        let group = scenario.group(&g).unwrap().clone();
        let first = lists.of(&scenario, (0, 0), &group, false);
        assert_eq!(first.len(), 1);
        scenario.add_user("Ben Ode", Some("ben@x.com"), "ben@x.com", &[&g]);
        let group = scenario.group(&g).unwrap().clone();
        let same = lists.of(&scenario, (0, 0), &group, false);
        assert!(Arc::ptr_eq(&first, &same), "nothing recorded: reused");
        let moved = lists.of(&scenario, (1, 0), &group, false);
        assert_eq!(moved.len(), 2, "a recorded change: worked out again");
    }
}
