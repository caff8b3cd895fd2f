//! The shapes the license sync's built-ins pass each other: a person who
//! holds a license (from `graph-group-members`), a Procore user (from
//! `procore-users`), who is missing (from `compare`) and what creating
//! someone came to (from `procore-create-user`, read by `html-report`).
//! Defined once, so a step's output and the next step's input cannot drift,
//! and so each component's `describe` schema says exactly this.

use serde::{Deserialize, Serialize};
use sluice_guest::JsonSchema;

use crate::procore::Id;

/// A license holder: an enabled Graph user, one entry per person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// The identity key: mail, else userPrincipalName, trimmed and
    /// lower-cased (see `sluice-identity`).
    pub key: String,
    /// The Entra object id.
    #[serde(default)]
    pub id: Option<String>,
    /// The mail address, as Graph has it.
    #[serde(default)]
    pub mail: Option<String>,
    /// The user principal name, as Graph has it.
    #[serde(default)]
    pub user_principal_name: Option<String>,
    /// The display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The given name.
    #[serde(default)]
    pub given_name: Option<String>,
    /// The surname.
    #[serde(default)]
    pub surname: Option<String>,
    /// The license groups the person is in, by display name.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Person {
    /// The display name, or the key when there is none.
    pub fn name(&self) -> &str {
        self.display_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&self.key)
    }
}

/// A Procore company user, active or inactive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProcoreUser {
    /// Procore's id.
    pub id: Id,
    /// The login (an email address).
    #[serde(default)]
    pub login: Option<String>,
    /// The email address.
    #[serde(default)]
    pub email_address: Option<String>,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Whether the account is active.
    #[serde(default = "active")]
    pub is_active: bool,
}

fn active() -> bool {
    true
}

/// Who is missing from Procore, who is there, who is there but inactive.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Diff {
    /// License holders with no Procore user: to be created.
    pub missing: Vec<Person>,
    /// License holders with an active Procore user.
    pub present: Vec<Present>,
    /// License holders whose Procore user is inactive: reported, never
    /// created again.
    pub present_inactive: Vec<InactivePerson>,
    /// The counts.
    pub counts: Counts,
}

/// A license holder matched to an active Procore user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Present {
    /// The person's key.
    pub key: String,
    /// The Procore user's id.
    pub procore_id: Id,
}

/// A license holder whose Procore user is inactive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InactivePerson {
    /// The person.
    #[serde(flatten)]
    pub person: Person,
    /// The inactive Procore user's id.
    pub procore_id: Id,
}

/// How many of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    /// Distinct license holders.
    pub people: usize,
    /// Missing from Procore.
    pub missing: usize,
    /// Present and active.
    pub present: usize,
    /// Present but inactive.
    pub present_inactive: usize,
    /// Procore users who hold no license (left alone).
    pub procore_only: usize,
}

/// What creating one person came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateStatus {
    /// Created (or confirmed created by this run after a retry).
    Created,
    /// Already in Procore, or the login is taken: left as it is.
    Conflict,
    /// Procore refused the create for another reason.
    Failed,
    /// A dry run: would be created.
    WouldCreate,
}

/// `procore-create-user`'s output for one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Created {
    /// The person's key.
    pub key: String,
    /// The person's display name.
    pub display_name: String,
    /// What happened.
    pub status: CreateStatus,
    /// The Procore user's id, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procore_id: Option<Id>,
    /// Why, when the status needs explaining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With a project configured: `added`, `would_add` or `failed: …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// In a dry run: the create that was not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_send: Option<sluice_guest::WouldSend>,
}
