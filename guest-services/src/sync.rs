//! The shapes the license sync's built-ins pass each other: a person who
//! holds a license (from `graph-group-members`), a Procore user (from
//! `procore-users`), who is missing, who left and who came back (from
//! `compare`), what creating, deactivating or reactivating someone came to
//! (from `procore-create-user`, `procore-deactivate-user` and
//! `procore-reactivate-user`, read by `html-report`), and the record the
//! flow keeps of each person it manages (its state store, `managed/<key>`).
//! Defined once, so a step's output and the next step's input cannot drift,
//! and so each component's `describe` schema says exactly this.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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

    /// Whether the key came from the mail (the identity rule's first
    /// choice) or, for someone without one, the UPN.
    pub fn matched_by(&self) -> MatchedBy {
        MatchedBy::of(&self.key, self.mail.as_deref())
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
    /// When Procore created the user (RFC 3339), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
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
    /// License holders this run began to manage (adopted): the shipped
    /// flow's `ledger` records each in the person's story.
    #[serde(default)]
    pub adopted: Vec<Adopted>,
    /// Managed, active Procore users who hold no license now: to be
    /// deactivated (after approval).
    #[serde(default)]
    pub leavers: Vec<Leaver>,
    /// Managed people who hold no license, still inside `leaver_grace`.
    #[serde(default)]
    pub leaving: Vec<Leaving>,
    /// Inactive Procore users the flow deactivated who hold a license
    /// again: to be reactivated.
    #[serde(default)]
    pub returners: Vec<Returner>,
    /// Inactive Procore users the flow did not deactivate: reported,
    /// never touched.
    #[serde(default)]
    pub inactive_unmanaged: Vec<InactiveUnmanaged>,
    /// Whether this run's reads look too thin to trust for deactivations.
    #[serde(default)]
    pub guard: Guard,
    /// License holders whose key matches no Procore user but whose Entra
    /// user is a managed Procore user's (their mail appeared or changed):
    /// not created, reported so an admin can change Procore's address.
    #[serde(default)]
    pub known_as: Vec<KnownAs>,
    /// Project calls earlier runs owe managed people on the flow's project
    /// (Procore refused them or never answered): to be made now.
    #[serde(default)]
    pub project_owed: Vec<ProjectOwed>,
    /// Deactivations a run sent and Procore applied, whose host died
    /// before recording them, and which an admin rejected only after:
    /// recorded as deactivated (too late to refuse; also in `adopted`, for
    /// the ledger), and listed so the report tells the admin.
    #[serde(default)]
    pub rejected_too_late: Vec<Adopted>,
}

/// Why a managed person is a leaver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LeaveReason {
    /// The person is in no license group any more.
    #[serde(rename = "no license group")]
    NoLicenseGroup,
    /// The Entra account is disabled.
    #[serde(rename = "account disabled")]
    AccountDisabled,
    /// The Entra user no longer exists.
    #[serde(rename = "user gone")]
    UserGone,
}

impl LeaveReason {
    /// The reason as people read it (and as it is spelled in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::NoLicenseGroup => "no license group",
            LeaveReason::AccountDisabled => "account disabled",
            LeaveReason::UserGone => "user gone",
        }
    }
}

/// How a person was matched to their Procore user: by the Graph field
/// that gave their key, or by the Entra user id a record of the flow kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// `mail`.
    Mail,
    /// `userPrincipalName` (the person has no mail).
    Upn,
    /// The Entra user id the flow's record of the Procore user keeps: the
    /// person's key has changed since (a new mail or UPN), so no key
    /// matches the user.
    EntraId,
}

impl MatchedBy {
    /// Which field gave `key`, for a person with this `mail`: the mail
    /// when it is the key, else the UPN.
    pub fn of(key: &str, mail: Option<&str>) -> MatchedBy {
        let mail = mail.and_then(sluice_identity::Key::of);
        if mail.is_some() && mail == sluice_identity::Key::of(key) {
            MatchedBy::Mail
        } else {
            MatchedBy::Upn
        }
    }

    /// How people read it: `mail`, `UPN` or `Entra id`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Mail => "mail",
            MatchedBy::Upn => "UPN",
            MatchedBy::EntraId => "Entra id",
        }
    }
}

/// A managed, active Procore user who holds no license now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Leaver {
    /// The person's key (the Procore login or email, normalised).
    pub key: String,
    /// The Procore user to deactivate.
    pub procore_id: Id,
    /// The Procore user's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The Procore user's email address.
    #[serde(default)]
    pub email: Option<String>,
    /// The Procore user's login.
    #[serde(default)]
    pub login: Option<String>,
    /// Why the person is a leaver.
    pub reason: LeaveReason,
    /// Procore lists the user inactive already: a deactivation the flow
    /// sent in an earlier run (its record says `deactivating`) whose
    /// answer that run never saw. The deactivate step confirms it on the
    /// inactive list instead of sending it again, then records it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inactive: bool,
    /// The person's Entra object id, when the flow's record may not keep
    /// it (someone managed for their domain whose account is disabled):
    /// the deactivate step keeps it in the record, by which a later run
    /// knows them when they come back under another mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<String>,
}

/// A managed person without a license, not yet past `leaver_grace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Leaving {
    /// The person's key.
    pub key: String,
    /// The Procore user.
    pub procore_id: Id,
    /// Since when the person holds no license (RFC 3339).
    pub since: String,
    /// Why the person is leaving.
    pub reason: LeaveReason,
}

/// An inactive Procore user the flow deactivated who holds a license again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Returner {
    /// The person's key.
    pub key: String,
    /// The inactive Procore user to reactivate.
    pub procore_id: Id,
    /// The person's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The email address.
    #[serde(default)]
    pub email: Option<String>,
    /// The Procore login.
    #[serde(default)]
    pub login: Option<String>,
    /// The license group that grants access again (the first, by name).
    #[serde(default)]
    pub license_group: Option<String>,
    /// Whether the key came from the person's mail or UPN.
    pub matched_by: MatchedBy,
}

/// A license holder the flow manages under another key: their key (mail,
/// else UPN) matches no Procore user, but their Entra user is the one a
/// managed Procore user's record keeps (typically the mailbox came after
/// the license, so the first key was the UPN). The same person: nobody is
/// created, Procore's address is not changed, and the record keeps its key
/// (`managed_as`), under which the ledger and approvals know them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KnownAs {
    /// The license holder's key now.
    pub key: String,
    /// The managed Procore user who is this person.
    pub procore_id: Id,
    /// The key the flow manages them under (`managed/<key>`, the ledger's
    /// and approvals' key).
    pub managed_as: String,
    /// The Procore user's login.
    #[serde(default)]
    pub login: Option<String>,
    /// The Procore user's email address.
    #[serde(default)]
    pub email: Option<String>,
    /// The person's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The license group that grants access (the first, by name).
    #[serde(default)]
    pub license_group: Option<String>,
    /// Whether the key came from the person's mail or UPN.
    pub matched_by: MatchedBy,
}

impl KnownAs {
    /// The address Procore knows them by: its email, else its login, else
    /// the key the flow manages them under.
    pub fn procore_address(&self) -> &str {
        [&self.email, &self.login]
            .into_iter()
            .flatten()
            .map(|a| a.trim())
            .find(|a| !a.is_empty())
            .unwrap_or(&self.managed_as)
    }
}

/// An inactive Procore user the flow did not deactivate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InactiveUnmanaged {
    /// The person's key.
    pub key: String,
    /// The Procore user.
    pub procore_id: Id,
    /// The Procore login.
    #[serde(default)]
    pub login: Option<String>,
}

/// Holds deactivations back for a person to look at, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Guard {
    /// Whether every deactivation must wait for approval in this run.
    pub hold: bool,
    /// Why (empty when not holding).
    #[serde(default)]
    pub reason: String,
    /// Which of the guard's rules holds them (absent when not holding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<GuardKind>,
    /// Whether the flow's deactivate step may run at all: false when the
    /// reads did not say who holds a license (no license group matched)
    /// or not of everyone (a joiner Graph does not list yet). Then nobody
    /// is deactivated, not even someone approved earlier, and the plan
    /// waits as it is for the next run.
    #[serde(default = "yes")]
    pub deactivate: bool,
}

fn yes() -> bool {
    true
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            hold: false,
            reason: String::new(),
            kind: None,
            deactivate: true,
        }
    }
}

/// Why the guard holds deactivations back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardKind {
    /// No license group matched the prefixes: nothing is known of who holds
    /// a license, so the leavers are every managed person, unchecked.
    NoLicenseGroup,
    /// The flow's first run found leavers (through `managed_domains`).
    FirstRun,
    /// The license holders fell by more than half since the last run.
    HoldersFell,
    /// Those the first run found leaving are not all decided yet.
    FirstRunUndecided,
    /// Users joined a license group whom Graph does not list yet: one of
    /// them may be a leaver who holds a license again.
    UnlistedJoiners,
}

/// What deactivating one leaver came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeactivateStatus {
    /// Procore deactivated the user.
    Deactivated,
    /// A dry run: would be deactivated.
    WouldDeactivate,
}

/// What became of a deactivated user's project membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRemoval {
    /// Removed from the project.
    Removed,
    /// Was not on the project (Procore answered 404): nothing to remove.
    NotOnProject,
    /// A dry run: would be removed.
    WouldRemove,
    /// Procore refused the removal (the user is deactivated all the same;
    /// `problem` says why).
    Failed,
}

/// `procore-deactivate-user`'s output for one leaver: the facts the
/// report and the ledger show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Deactivated {
    /// The person's key.
    pub key: String,
    /// The person's name, when known.
    #[serde(default)]
    pub name: Option<String>,
    /// The Procore user.
    pub procore_id: Id,
    /// What happened.
    pub status: DeactivateStatus,
    /// Whether Procore now has the user inactive.
    pub deactivated: bool,
    /// With a project configured: what became of the membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_from_project: Option<ProjectRemoval>,
    /// Why the project removal failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Why the person was a leaver.
    pub reason: LeaveReason,
    /// In a dry run: the writes that were not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_send: Vec<sluice_guest::WouldSend>,
}

/// What reactivating one returner came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReactivateStatus {
    /// Procore reactivated the user.
    Reactivated,
    /// Procore had the user active already (reactivated by someone else,
    /// or by an earlier attempt of this call): nothing was changed.
    AlreadyActive,
    /// A dry run: would be reactivated.
    WouldReactivate,
}

/// `procore-reactivate-user`'s output for one returner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reactivated {
    /// The person's key.
    pub key: String,
    /// The person's name, when known.
    #[serde(default)]
    pub name: Option<String>,
    /// The Procore user.
    pub procore_id: Id,
    /// What happened.
    pub status: ReactivateStatus,
    /// Whether Procore now has the user active.
    pub reactivated: bool,
    /// With a project configured: `added`, `would_add` or `failed: …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The license group that grants access again.
    #[serde(default)]
    pub license_group: Option<String>,
    /// Whether the key came from the person's mail or UPN.
    pub matched_by: MatchedBy,
    /// In a dry run: the writes that were not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_send: Vec<sluice_guest::WouldSend>,
}

/// The state key of the record of a managed person.
pub fn managed_key(key: &str) -> String {
    format!("{MANAGED_PREFIX}{key}")
}

/// Records that the flow left the managed person `key` (Procore user
/// `procore_id`) `status`, keeping the rest of the record; `now` (RFC
/// 3339) starts a record the flow had not kept yet; `entra_id` is kept in
/// a record that has none. A person who is no longer a leaver loses
/// `leaving_since`. Written when the step (or its item) succeeds; never in
/// a dry run.
pub fn mark_managed(
    key: &str,
    procore_id: &Id,
    status: ManagedStatus,
    now: &str,
    entra_id: Option<&str>,
) -> Result<Managed, sluice_guest::StepError> {
    let state_key = managed_key(key);
    let mut record = match sluice_guest::state::get::<Managed>(&state_key)? {
        Some(mut record) => {
            record.procore_id = procore_id.clone();
            record.status = status;
            record
        }
        None => Managed {
            procore_id: procore_id.clone(),
            origin: Origin::Adopted,
            status,
            since: now.to_string(),
            leaving_since: None,
            owed_project: None,
            other: Map::new(),
        },
    };
    // The Entra id a record lacks is learnt; one it keeps is never changed
    // here (it is the person's, by which the record was found).
    if let Some(id) = entra_id.filter(|id| !id.trim().is_empty())
        && record.entra_id().is_none()
    {
        record.other.insert(ENTRA_ID.into(), id.into());
    }
    let owed_project = still_owed(record.owed_project.take(), status);
    let record = match status {
        ManagedStatus::Active => Managed {
            leaving_since: None,
            owed_project,
            ..record
        },
        ManagedStatus::Deactivating | ManagedStatus::Deactivated => Managed {
            owed_project,
            ..record
        },
    };
    sluice_guest::state::set(&state_key, &record)?;
    Ok(record)
}

/// What a managed person is still owed once the flow leaves them
/// `status`: a project add is moot for someone deactivated, and a removal
/// for someone active again (their reactivation adds them back). An add
/// outlives `deactivating`: a deactivation that never took leaves them
/// active, still owed it.
pub fn still_owed(owed: Option<OwedProject>, status: ManagedStatus) -> Option<OwedProject> {
    owed.filter(|o| match o.action {
        ProjectAction::Add => status != ManagedStatus::Deactivated,
        ProjectAction::Remove => status != ManagedStatus::Active,
    })
}

/// Records in `key`'s managed record that the flow owes them `owed` (or,
/// with `None`, nothing any more): kept when a project call fails so a
/// later run makes it. A person without a record is left alone (only
/// the flow's own people are owed anything).
pub fn owe_project(key: &str, owed: Option<OwedProject>) -> Result<(), sluice_guest::StepError> {
    let state_key = managed_key(key);
    let Some(mut record) = sluice_guest::state::get::<Managed>(&state_key)? else {
        return Ok(());
    };
    if record.owed_project == owed {
        return Ok(());
    }
    record.owed_project = owed;
    sluice_guest::state::set(&state_key, &record)
}

/// A project call the flow owes a managed person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OwedProject {
    /// The project.
    pub project_id: String,
    /// Add them to it, or remove them from it.
    pub action: ProjectAction,
}

/// What is owed on a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProjectAction {
    /// `POST projects/{id}/users/{user}/actions/add`.
    Add,
    /// `DELETE projects/{id}/users/{user}/actions/remove`.
    Remove,
}

/// One owed project call, as `compare` lists them for the flow's project
/// (`project_owed`): the managed person, their Procore user and the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectOwed {
    /// The person's key (`managed/<key>`).
    pub key: String,
    /// The Procore user.
    pub procore_id: Id,
    /// The person's name in Procore, when known.
    #[serde(default)]
    pub name: Option<String>,
    /// The project.
    pub project_id: String,
    /// Add or remove.
    pub action: ProjectAction,
}

/// What `procore-project-owed` made of one owed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectOwedStatus {
    /// Added to the project.
    Added,
    /// Removed from the project.
    Removed,
    /// Not on the project any more (Procore answered 404): nothing to remove.
    NotOnProject,
    /// A dry run: would be added.
    WouldAdd,
    /// A dry run: would be removed.
    WouldRemove,
}

/// `procore-project-owed`'s output for one owed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectDone {
    /// The person's key.
    pub key: String,
    /// The person's name in Procore, when known.
    #[serde(default)]
    pub name: Option<String>,
    /// The Procore user.
    pub procore_id: Id,
    /// The project.
    pub project_id: String,
    /// What was owed.
    pub action: ProjectAction,
    /// What came of it.
    pub status: ProjectOwedStatus,
    /// In a dry run: the write that was not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_send: Option<sluice_guest::WouldSend>,
}

/// How the flow came to manage a Procore user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The flow created the user.
    Created,
    /// Matched to a license holder in an earlier run (or first acted on by
    /// the flow without a record).
    Adopted,
    /// Matched to a license holder while its login was in one of the
    /// `managed_domains`. (Versions before `domain-leaving/` also wrote it,
    /// with a `leaving_since` and no Entra id, for an unlicensed in-domain
    /// user they did not manage: `compare` reads such a record as that
    /// user's grace clock only.)
    Domain,
}

/// Whether a managed user is active in Procore, as the flow left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManagedStatus {
    /// Active.
    Active,
    /// The flow is deactivating them: kept (and committed) before the
    /// deactivation is sent, so a change Procore applied but whose answer
    /// the run never saw (a host killed mid-request, an error answer that
    /// could not be checked) is still known as the flow's. A later run
    /// finishes it when Procore has them inactive, and reads the record
    /// as active while Procore does.
    Deactivating,
    /// Deactivated by the flow.
    Deactivated,
}

/// The field of a managed record (`other`) that keeps the person's Entra
/// object id, by which `graph-group-members` tells a user Graph no longer
/// has (a leaver for "user gone") from one who left the groups.
pub const ENTRA_ID: &str = "entra_id";

/// The record of a managed person (state `managed/<key>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Managed {
    /// The Procore user.
    pub procore_id: Id,
    /// How the flow came to manage them.
    pub origin: Origin,
    /// Active or deactivated.
    pub status: ManagedStatus,
    /// When the flow began to manage them (RFC 3339).
    pub since: String,
    /// Since when they have been a leaver (RFC 3339), while they are one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaving_since: Option<String>,
    /// A project call the flow owes them: one Procore refused or never
    /// answered after the user was created, reactivated or deactivated.
    /// A later run lists it (`compare`'s `project_owed`) and makes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owed_project: Option<OwedProject>,
    /// Fields other components keep in the record, carried over as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Managed {
    /// A new record of the active Procore user `procore_id`, managed
    /// since `since` (RFC 3339), with the person's Entra object id when
    /// Graph gave one.
    pub fn new(procore_id: Id, origin: Origin, since: &str, entra_id: Option<&str>) -> Managed {
        let mut other = Map::new();
        if let Some(id) = entra_id.filter(|id| !id.trim().is_empty()) {
            other.insert(ENTRA_ID.into(), id.into());
        }
        Managed {
            procore_id,
            origin,
            status: ManagedStatus::Active,
            since: since.to_string(),
            leaving_since: None,
            owed_project: None,
            other,
        }
    }

    /// The person's Entra object id, when the record keeps one.
    pub fn entra_id(&self) -> Option<&str> {
        self.other.get(ENTRA_ID).and_then(Value::as_str)
    }
}

/// A ledger entry of `compare`: mostly a license holder this run began
/// to manage (matched to an active Procore user no record named yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Adopted {
    /// The person's key.
    pub key: String,
    /// How a ledger line names what happened.
    pub status: AdoptedStatus,
    /// The Procore user now managed.
    pub procore_id: Id,
    /// Whether the key came from the person's mail or UPN (none for a
    /// deactivation: nobody holds a license).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<MatchedBy>,
    /// The license group that grants access (the first, by name).
    #[serde(default)]
    pub license_group: Option<String>,
    /// `adopted`, `created` (a run created them), or `domain` when the
    /// login is in `managed_domains`.
    pub origin: Origin,
    /// Why, when the status needs explaining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The Procore user's name, where no license holder names them (a
    /// deactivation applied before its rejection): the report's row has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What [`Adopted`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdoptedStatus {
    /// The flow manages them from this run on.
    Adopted,
    /// A deactivation an earlier run sent, which Procore shows applied
    /// although an admin rejected it after (the run died before recording
    /// it): recorded as the flow's, never sent again.
    Deactivated,
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
    /// Set only when the match was not by the person's key
    /// ([`MatchedBy::EntraId`]); a compare of a user's own that leaves it
    /// out is read as matched by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<MatchedBy>,
}

impl InactivePerson {
    /// How the person was matched to the inactive user.
    pub fn matched_by(&self) -> MatchedBy {
        self.matched_by.unwrap_or_else(|| self.person.matched_by())
    }
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
    /// Present but inactive, returners apart (`present_inactive`'s length).
    pub present_inactive: usize,
    /// Procore users who hold no license (left alone unless managed).
    pub procore_only: usize,
    /// People adopted by this run (matched, now managed).
    #[serde(default)]
    pub adopted: usize,
    /// Leavers.
    #[serde(default)]
    pub leavers: usize,
    /// Returners.
    #[serde(default)]
    pub returners: usize,
    /// Project calls earlier runs owe on the flow's project.
    #[serde(default)]
    pub project_owed: usize,
}

/// The state key of the license-holder count of the last complete read
/// ([`Holders`]), for the mass-change guard.
pub const HOLDERS_KEY: &str = "meta/holders";

/// The prefix of the state key of a license holder missing from Procore
/// (`creating/<key>`, a [`Creating`]), kept while they are. A later run
/// that matches them to a user Procore created since takes it for one the
/// flow created, whose record a host that died mid-create never wrote
/// (`compare`'s lifecycle).
pub const CREATING_PREFIX: &str = "creating/";

/// A license holder missing from Procore (state `creating/<key>`): since
/// when, and who. The Entra id finds the user a killed run created under
/// this key once the person's key has changed (their mail appeared).
/// Versions before it kept the time alone, as a bare RFC 3339 text;
/// `compare` reads both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Creating {
    /// When the first run that found them missing started (RFC 3339).
    pub since: String,
    /// The person's Entra object id, when Graph gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<String>,
}

/// The prefix of every managed person's state key.
pub const MANAGED_PREFIX: &str = "managed/";

/// The prefix of the state key of an in-domain user's grace clock
/// ([`DomainLeaving`], `domain-leaving/<key>`).
pub const DOMAIN_LEAVING_PREFIX: &str = "domain-leaving/";

/// Since when an active Procore user whom only `managed_domains` manages
/// has held no license (state `domain-leaving/<key>`): the `leaver_grace`
/// clock, and nothing more. It is kept apart from the `managed/` records on
/// purpose: whether the domain manages someone is the param of each run,
/// so this record never makes anyone managed once the param stops naming
/// their domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DomainLeaving {
    /// The Procore user (a clock of another user with the same key does
    /// not count).
    pub procore_id: Id,
    /// Since when (RFC 3339).
    pub since: String,
}

/// The state key of a license holder missing from Procore
/// ([`CREATING_PREFIX`]).
pub fn creating_key(key: &str) -> String {
    format!("{CREATING_PREFIX}{key}")
}

/// The state key of an in-domain user's grace clock.
pub fn domain_leaving_key(key: &str) -> String {
    format!("{DOMAIN_LEAVING_PREFIX}{key}")
}

/// How many license holders a complete read found, and when (`meta/holders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Holders {
    /// Distinct license holders.
    pub count: usize,
    /// When (the run's start, RFC 3339).
    pub at: String,
    /// The first run's start, while deactivations it held may still wait
    /// for an admin: they hold every deactivation back until decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_held: Option<String>,
    /// While the count above is kept through a drop of more than half:
    /// the last run that held every deactivation for it, and its count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_drop: Option<HeldDrop>,
}

/// The last run that held every deactivation because license holders fell
/// by more than half. Those found leaving by then are the ones it held:
/// once an admin has decided each, the drop's count is let go, and the
/// next run is measured from this run's count, not the one before the
/// drop (a leaver found after it no longer keeps the hold on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldDrop {
    /// When (the run's start, RFC 3339).
    pub at: String,
    /// The license holders that run counted.
    pub count: usize,
}

/// What creating one person came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateStatus {
    /// Created (or confirmed created by this run after a retry).
    Created,
    /// Already in Procore, or the login is taken: left as it is.
    Conflict,
    /// Procore refused the create for another reason. Outputs recorded
    /// before such a refusal became a failed item carry it; the step no
    /// longer writes it.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn owed(action: ProjectAction) -> Option<OwedProject> {
        Some(OwedProject {
            project_id: "5".into(),
            action,
        })
    }

    #[test]
    fn an_owed_call_outlives_only_the_status_it_is_for() {
        use ManagedStatus::{Active, Deactivated, Deactivating};
        use ProjectAction::{Add, Remove};
        assert_eq!(still_owed(owed(Add), Active), owed(Add));
        assert_eq!(
            still_owed(owed(Add), Deactivating),
            owed(Add),
            "a deactivation that never took leaves them owed it"
        );
        assert_eq!(still_owed(owed(Add), Deactivated), None);
        assert_eq!(still_owed(owed(Remove), Deactivated), owed(Remove));
        assert_eq!(still_owed(owed(Remove), Deactivating), owed(Remove));
        assert_eq!(still_owed(owed(Remove), Active), None, "back again");
        assert_eq!(still_owed(None, Active), None);
    }

    #[test]
    fn a_record_without_an_owed_call_reads_and_writes_as_before() {
        let text = r#"{"procore_id":7,"origin":"created","status":"active","since":"2026-01-01T00:00:00Z","entra_id":"e-1"}"#;
        let record: Managed = serde_json::from_str(text).unwrap();
        assert_eq!(record.owed_project, None);
        assert_eq!(record.entra_id(), Some("e-1"));
        assert_eq!(serde_json::to_string(&record).unwrap(), text);
        let mut owing = record.clone();
        owing.owed_project = owed(ProjectAction::Remove);
        let text = serde_json::to_string(&owing).unwrap();
        assert!(
            text.contains(r#""owed_project":{"project_id":"5","action":"remove"}"#),
            "{text}"
        );
        let read: Managed = serde_json::from_str(&text).unwrap();
        assert_eq!(read, owing);
    }
}
