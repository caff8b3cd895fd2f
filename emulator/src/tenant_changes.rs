//! Changes to the Entra tenant between runs, as an admin makes them: a
//! member leaves or joins a group, an account is disabled, a mail changes,
//! a user is deleted (softly: Entra keeps it 30 days in deleted items),
//! restored with its group memberships, or created. Each change is recorded
//! in order for Graph delta (group delta reports joins and leaves, users
//! delta the users changed) and numbered for the `lookup_lag` fault.

use serde::Deserialize;

use crate::graph::delta::now;
use crate::scenario::{GraphUser, Member};
use crate::state::Data;

/// Entra keeps a deleted user this long in deleted items.
pub const RESTORABLE_SECS: u64 = 30 * 24 * 3600;

/// A change to a group's direct members, kept in order for Graph delta.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub group_id: String,
    pub member: Member,
    /// Joined (added, or created a member), or left (removed). Deleting
    /// and restoring a user are not membership changes: Graph's group
    /// delta says nothing of a user in deleted items.
    pub joined: bool,
}

/// One change to a user, for users delta.
#[derive(Debug, Clone)]
pub struct UserChange {
    pub user_id: String,
    /// The property that changed, or `None` when the whole user was
    /// deleted, restored or created. A round whose `$select` leaves the
    /// property out does not see the change (Graph: "if a change is to a
    /// property that was not selected, the object does not appear in the
    /// next delta"); every round sees the others.
    pub property: Option<&'static str>,
    /// The user as the change left it; `None` when it was deleted. Users
    /// delta with `delta_repeats` shows each change as it happened.
    pub after: Option<GraphUser>,
}

/// A deleted user in deleted items, with the groups it was a member of.
#[derive(Debug, Clone)]
pub struct DeletedUser {
    pub user: GraphUser,
    pub groups: Vec<String>,
    /// When it was deleted (Unix seconds).
    pub deleted_at: u64,
}

/// A user to create (`POST /_admin/users`), as JSON in Graph's names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewUser {
    /// The object id; made up (deterministically) when not given.
    #[serde(default)]
    pub id: Option<String>,
    pub display_name: String,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    pub user_principal_name: String,
    #[serde(default = "enabled")]
    pub account_enabled: bool,
    #[serde(default)]
    pub job_title: Option<String>,
    /// Ids of the groups it is a direct member of from the start.
    #[serde(default)]
    pub groups: Vec<String>,
}

fn enabled() -> bool {
    true
}

impl NewUser {
    /// An enabled user with only a display name and a UPN.
    pub fn new(display_name: &str, user_principal_name: &str) -> Self {
        NewUser {
            id: None,
            display_name: display_name.to_string(),
            given_name: None,
            surname: None,
            mail: None,
            user_principal_name: user_principal_name.to_string(),
            account_enabled: true,
            job_title: None,
            groups: Vec::new(),
        }
    }
}

/// Why a user could not be created or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("there is no deleted user `{0}` to restore")]
    NotDeleted(String),
    #[error("user `{0}` was deleted more than 30 days ago and cannot be restored")]
    Purged(String),
    #[error("the id `{0}` is taken by another user, deleted user or group")]
    IdTaken(String),
    #[error("the userPrincipalName `{0}` is taken by user `{1}`")]
    UpnTaken(String, String),
    #[error("there is no group `{0}`")]
    NoSuchGroup(String),
    #[error("{0}")]
    Invalid(&'static str),
}

/// Entries that do not say "unset" with an empty text.
fn given(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

impl Data {
    /// Records a membership change for group delta.
    fn record_membership(&mut self, group_id: String, member: Member, joined: bool) {
        self.lookup_lag.record(member.id());
        self.membership_changes.push(MembershipChange {
            group_id,
            member,
            joined,
        });
    }

    /// Records a change to a user (as it stands now) for users delta.
    fn record_user(&mut self, user_id: &str, property: Option<&'static str>) {
        self.lookup_lag.record(user_id);
        let after = self.scenario.user(user_id).cloned();
        self.user_changes.push(UserChange {
            user_id: user_id.to_string(),
            property,
            after,
        });
    }

    pub fn remove_member(&mut self, group_id: &str, member_id: &str) -> bool {
        let member = self
            .scenario
            .group(group_id)
            .and_then(|g| g.members.iter().find(|m| m.id() == member_id))
            .cloned();
        let Some(member) = member else {
            return false;
        };
        self.scenario.remove_member(group_id, member_id);
        self.record_membership(group_id.to_string(), member, false);
        true
    }

    pub fn add_member(&mut self, group_id: &str, user_id: &str) -> bool {
        if !self.scenario.add_member(group_id, user_id) {
            return false;
        }
        let member = Member::User {
            id: user_id.to_string(),
        };
        self.record_membership(group_id.to_string(), member, true);
        true
    }

    /// Enables or disables an account; false when there is no such user.
    pub fn set_account_enabled(&mut self, user_id: &str, enabled: bool) -> bool {
        if !self.scenario.set_account_enabled(user_id, enabled) {
            return false;
        }
        self.record_user(user_id, Some("accountEnabled"));
        true
    }

    pub fn set_mail(&mut self, user_id: &str, mail: Option<&str>) -> bool {
        let had_mail = self
            .scenario
            .user(user_id)
            .is_some_and(|u| u.mail.is_some());
        if !self.scenario.set_mail(user_id, mail) {
            return false;
        }
        if had_mail && mail.is_none() {
            let cleared = self.cleared.entry(user_id.to_string()).or_default();
            if !cleared.contains(&"mail") {
                cleared.push("mail");
            }
        }
        self.record_user(user_id, Some("mail"));
        true
    }

    /// Deletes a user, who waits in deleted items, no longer listed among
    /// its groups' members; false when there is no such user. Only the
    /// users delta tells (`@removed`, reason `changed`): Graph's group
    /// delta documentation says "Users that have been temporary deleted
    /// keep their group memberships and won't appear in the delta result
    /// until they're permanently deleted."
    pub fn delete_user(&mut self, user_id: &str) -> bool {
        let Some((user, left)) = self.scenario.delete_user(user_id) else {
            return false;
        };
        self.record_user(user_id, None);
        self.deleted_users.push(DeletedUser {
            user,
            groups: left,
            deleted_at: now(),
        });
        true
    }

    /// Restores a deleted user from deleted items, a member again of the
    /// groups it was in when deleted (those that still exist), as Entra
    /// restores it; returns the ids of those groups. The users delta lists
    /// the user again; the group delta says nothing (the memberships were
    /// kept all along).
    pub fn restore_user(&mut self, user_id: &str) -> Result<Vec<String>, UserError> {
        let position = self
            .deleted_users
            .iter()
            .position(|d| d.user.id == user_id)
            .ok_or_else(|| UserError::NotDeleted(user_id.to_string()))?;
        let deleted = &self.deleted_users[position];
        if now().saturating_sub(deleted.deleted_at) > RESTORABLE_SECS {
            return Err(UserError::Purged(user_id.to_string()));
        }
        self.upn_free(&deleted.user.user_principal_name)?;
        let deleted = self.deleted_users.remove(position);
        let id = deleted.user.id.clone();
        let back = self.scenario.insert_user(deleted.user, &deleted.groups);
        self.record_user(&id, None);
        Ok(back)
    }

    /// Creates a user, a direct member of the groups it names; returns
    /// its id.
    pub fn create_user(&mut self, new: NewUser) -> Result<String, UserError> {
        let display_name = given(Some(new.display_name))
            .ok_or(UserError::Invalid("`displayName` must not be empty"))?;
        let upn = new.user_principal_name.trim().to_string();
        if !upn
            .split_once('@')
            .is_some_and(|(name, domain)| !name.is_empty() && !domain.is_empty())
        {
            return Err(UserError::Invalid(
                "`userPrincipalName` must be name@domain, e.g. ann.lee@contoso.com",
            ));
        }
        let id = new.id.map(|id| id.trim().to_string());
        if let Some(id) = &id {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(UserError::Invalid(
                    "`id` must be letters, digits and dashes, like a GUID",
                ));
            }
            if self.id_taken(id) {
                return Err(UserError::IdTaken(id.clone()));
            }
        }
        self.upn_free(&upn)?;
        if let Some(missing) = new.groups.iter().find(|g| self.scenario.group(g).is_none()) {
            return Err(UserError::NoSuchGroup(missing.clone()));
        }
        let id = match id {
            Some(id) => id,
            None => self.made_up_id(),
        };
        let user = GraphUser {
            id: id.clone(),
            display_name,
            given_name: given(new.given_name),
            surname: given(new.surname),
            mail: given(new.mail),
            user_principal_name: upn,
            account_enabled: new.account_enabled,
            job_title: given(new.job_title),
        };
        self.insert(user, &new.groups);
        Ok(id)
    }

    /// Puts a user into the directory and records it and its joins.
    fn insert(&mut self, user: GraphUser, groups: &[String]) -> Vec<String> {
        let id = user.id.clone();
        let joined = self.scenario.insert_user(user, groups);
        self.record_user(&id, None);
        for group_id in &joined {
            let member = Member::User { id: id.clone() };
            self.record_membership(group_id.clone(), member, true);
        }
        joined
    }

    /// An error when a user holds this UPN (UPNs are unique, without case).
    fn upn_free(&self, upn: &str) -> Result<(), UserError> {
        match self
            .scenario
            .graph_users
            .iter()
            .find(|u| u.user_principal_name.eq_ignore_ascii_case(upn))
        {
            Some(holder) => Err(UserError::UpnTaken(upn.to_string(), holder.id.clone())),
            None => Ok(()),
        }
    }

    fn id_taken(&self, id: &str) -> bool {
        self.scenario.user(id).is_some()
            || self.scenario.group(id).is_some()
            || self.deleted_users.iter().any(|d| d.user.id == id)
    }

    /// The next free id of the form `0000ad00-0000-4000-8000-00000000000N`:
    /// the same creations give the same ids on every run.
    fn made_up_id(&mut self) -> String {
        loop {
            self.created_graph_users += 1;
            let id = format!("0000ad00-0000-4000-8000-{:012x}", self.created_graph_users);
            if !self.id_taken(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmulatorConfig;
    use crate::scenario::Scenario;
    use crate::state::Shared;

    fn tenant() -> (Shared, String, String) {
        let mut scenario = Scenario::hand_written();
        let g = scenario.add_group("License – Microsoft 365 E3");
        let ann = scenario
            .add_user("Ann Lee", Some("ann@x.com"), "ann@x.com", &[&g])
            .id
            .clone();
        let config = EmulatorConfig {
            scenario,
            ..EmulatorConfig::default()
        };
        (Shared::new(config, "http://127.0.0.1".into()), g, ann)
    }

    fn member_of(d: &Data, group: &str, user: &str) -> bool {
        let g = d.scenario.group(group).unwrap();
        g.members.iter().any(|m| m.id() == user)
    }

    #[test]
    fn a_deleted_user_is_restored_with_its_memberships_and_recorded() {
        let (shared, g, ann) = tenant();
        let mut d = shared.lock();
        assert!(d.delete_user(&ann));
        assert!(d.scenario.user(&ann).is_none() && !member_of(&d, &g, &ann));
        assert_eq!(d.restore_user(&ann), Ok(vec![g.clone()]));
        assert!(d.scenario.user(&ann).is_some() && member_of(&d, &g, &ann));
        // Graph's group delta says nothing of either: the memberships are
        // kept while the user is in deleted items.
        assert!(
            d.membership_changes.is_empty(),
            "{:?}",
            d.membership_changes
        );
        let users: Vec<bool> = d.user_changes.iter().map(|c| c.after.is_some()).collect();
        assert_eq!(users, [false, true], "deleted, then restored");
        assert_eq!(
            d.restore_user(&ann),
            Err(UserError::NotDeleted(ann.clone()))
        );
        assert!(d.delete_user(&ann));
        d.deleted_users[0].deleted_at -= RESTORABLE_SECS + 1;
        assert_eq!(d.restore_user(&ann), Err(UserError::Purged(ann.clone())));
    }

    #[test]
    fn a_restore_is_refused_while_another_user_holds_the_upn() {
        let (shared, _, ann) = tenant();
        let mut d = shared.lock();
        assert!(d.delete_user(&ann));
        let other = d.create_user(NewUser::new("Ann Two", "ANN@x.com")).unwrap();
        assert_eq!(
            d.restore_user(&ann),
            Err(UserError::UpnTaken("ann@x.com".into(), other))
        );
    }

    #[test]
    fn a_new_user_joins_its_groups_and_gets_a_repeatable_id() {
        let (shared, g, ann) = tenant();
        let mut d = shared.lock();
        let mut new = NewUser::new(" Bo Ode ", "bo@x.com");
        new.groups = vec![g.clone()];
        new.mail = Some("  ".into());
        let bo = d.create_user(new).unwrap();
        assert_eq!(bo, "0000ad00-0000-4000-8000-000000000001");
        let user = d.scenario.user(&bo).unwrap();
        assert_eq!((user.display_name.as_str(), &user.mail), ("Bo Ode", &None));
        assert!(user.account_enabled && member_of(&d, &g, &bo));
        assert_eq!(d.membership_changes.len(), 1);
        assert!(d.membership_changes[0].joined);
        for (new, error) in [
            (
                NewUser::new("Ann", "ann@X.com"),
                UserError::UpnTaken("ann@X.com".into(), ann.clone()),
            ),
            (
                NewUser {
                    id: Some(ann.clone()),
                    ..NewUser::new("Ann", "other@x.com")
                },
                UserError::IdTaken(ann.clone()),
            ),
            (
                NewUser {
                    groups: vec!["nope".into()],
                    ..NewUser::new("Cy", "cy@x.com")
                },
                UserError::NoSuchGroup("nope".into()),
            ),
            (
                NewUser::new("Cy", "cy"),
                UserError::Invalid(
                    "`userPrincipalName` must be name@domain, e.g. ann.lee@contoso.com",
                ),
            ),
            (
                NewUser::new(" ", "cy@x.com"),
                UserError::Invalid("`displayName` must not be empty"),
            ),
        ] {
            assert_eq!(d.create_user(new), Err(error));
        }
        assert_eq!(d.user_changes.len(), 1, "refused creations change nothing");
    }
}
