//! The `graph-group-members` step: the people in the license groups.
//!
//! Input `{"groups": [{id, displayName}…], "transitive": false,
//! "incremental": true, "full_sync_every": "24h"}`; reads through the
//! `graph` connection role. A full read reads each group's `members` (or
//! `transitiveMembers`) with `$select` including `accountEnabled` (Graph
//! returns it only when asked) and `$top=999`, every page. Keeps enabled
//! `#microsoft.graph.user` objects, keyed by the identity rule
//! (`sluice-identity`: mail, else UPN, trimmed, lower-cased). The same
//! person in several groups is one entry listing every group.
//!
//! Incremental (the default): the step keeps the members it read and Graph
//! delta links in the flow's state ([`known`], [`delta`]) and later runs
//! read only the changes since. It reads fully instead, and says why in
//! `full_because`, on the first run, when the license groups changed, when
//! the kept link is older than three days (Graph keeps them seven), when
//! Graph refuses the link (410 Gone) or delta altogether, and at least
//! every `full_sync_every` as a safety net, as Entra's own provisioning
//! does. `transitive = true` always reads fully (Graph has no delta for
//! nested membership) and warns so. Graph throttling or failing a round
//! (after the host's retries) fails the step rather than reading fully; a
//! joined user Graph does not list yet is looked up again next run (see
//! [`delta`]).
//!
//! For the license sync's leavers it also says why someone who held a
//! license holds none now: `disabled` lists the keys of members whose
//! account is disabled, and `gone` the keys of people the flow manages
//! (its state's `managed/<key>` records, with the Entra id) who are in no
//! license group and whose Entra user no longer exists (`GET users/{id}`
//! answers 404). Such a record whose Entra user holds a license under
//! another key (a mail that appeared since) is not asked about; one whose
//! Entra user is disabled has its key in `disabled` too, since the member
//! said so under the new key only. A look-up that fails otherwise fails
//! the step: a read that did not finish never makes anyone a leaver.

mod delta;
mod id;
mod known;
mod member;
mod people;
mod plan;
mod restorable;
mod user;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_guest::state;
use sluice_guest::{Call, Context, JsonSchema, OutputList, StepError};
use sluice_guest_services::duration;
use sluice_guest_services::graph::Group;
use sluice_guest_services::sync::{MANAGED_PREFIX, Managed, ManagedStatus, Person};

use id::Id;
use known::Known;
use plan::Meta;

/// The groups to read.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The license groups (as `graph-groups` lists them).
    groups: Vec<Group>,
    /// Also follow nested groups (`transitiveMembers`); always a full read.
    #[serde(default)]
    transitive: bool,
    /// Read only the changes since the last run through Graph delta
    /// (default true); false reads every member every run.
    #[serde(default = "yes")]
    incremental: bool,
    /// A full read at least this often (default "24h"), e.g. "12h", "7days".
    #[serde(default)]
    #[schemars(regex(pattern = duration::PATTERN))]
    full_sync_every: Option<String>,
}

fn yes() -> bool {
    true
}

/// How the members were read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Read {
    /// Every member of every group.
    Full,
    /// Only the changes since the last run (Graph delta).
    Incremental,
}

/// The license holders, one entry per person.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// How many people.
    pub count: usize,
    /// The people, sorted by key: handed to the host a page at a time
    /// (a million people are some 250 MB of text), so this is the list's
    /// placeholder (the list itself in unit tests).
    #[schemars(with = "OutputList<Person>")]
    pub people: Value,
    /// Members with a disabled account (and enabled nowhere else).
    pub skipped_disabled: usize,
    /// Their keys, sorted, and the keys the flow manages their Procore
    /// users under where those differ (see the module's notes).
    pub disabled: Vec<String>,
    /// The Entra object id of each disabled member, by key (those
    /// `disabled` names by the key a record keeps are left out: the record
    /// has the id). The flow's leaver keeps it, so someone deactivated for
    /// a disabled account who comes back under another mail is known.
    #[serde(default)]
    pub disabled_ids: BTreeMap<String, String>,
    /// Keys of managed people in no license group whose Entra user is gone.
    pub gone: Vec<String>,
    /// Members that are not users (devices, groups, service principals).
    pub skipped_non_user: usize,
    /// `full` or `incremental`.
    pub read: Read,
    /// Why the read was full, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_because: Option<String>,
    /// Users who joined a license group whom Graph does not list yet (its
    /// replication delay), looked up again next run: until they are, the
    /// read does not say whether they hold a license (one may be a leaver
    /// back in a group), so the license sync deactivates nobody.
    pub unlisted_joiners: usize,
    /// What an admin should know (delta refused, transitive reads fully).
    pub warnings: Vec<String>,
}

/// The connection role this component reads through.
const GRAPH: &str = "graph";

const SELECT: &str = "id,displayName,givenName,surname,mail,userPrincipalName,accountEnabled";

/// The groups read: ids sorted (a member's groups are positions in
/// them), and each one's display name.
struct Tracked {
    ids: Vec<String>,
    names: Vec<String>,
}

impl Tracked {
    fn of(groups: &[Group]) -> Result<Tracked, StepError> {
        let mut sorted: Vec<&Group> = groups.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        sorted.dedup_by(|a, b| a.id == b.id);
        if sorted.len() > usize::from(u16::MAX) {
            return Err(StepError::bad_input("more than 65535 groups"));
        }
        Ok(Tracked {
            ids: sorted.iter().map(|g| g.id.clone()).collect(),
            names: sorted.iter().map(|g| g.display_name.clone()).collect(),
        })
    }
}

/// Every member of every group.
fn full_read(tracked: &Tracked, transitive: bool) -> Result<Known, StepError> {
    let relation = if transitive {
        "transitiveMembers"
    } else {
        "members"
    };
    let mut listed = Vec::new();
    for (g, (id, name)) in tracked.ids.iter().zip(&tracked.names).enumerate() {
        let path = format!("groups/{}/{relation}", sluice_guest::http::segment(id));
        let first = Call::get(GRAPH, &path)
            .query("$select", SELECT)
            .query("$top", "999");
        let mut count = 0usize;
        member::each(first, |member| {
            count += 1;
            let Some(member_id) = member.id() else {
                return;
            };
            let mut entry = known::Entry::of(&member);
            entry.groups.insert(g as u16);
            listed.push((id::Id::new(member_id), entry));
        })?;
        sluice_guest::log::info(&format!("{name}: {count} members"));
    }
    Ok(known::from_listings(listed))
}

/// License holders keyed by a guest's sign-in name (no mail in Entra, a
/// UPN with `#EXT#`): the identity rule keys them so, and Procore then
/// invites an address no mailbox receives. Said, not changed: the key
/// is the flow's contract.
fn guest_sign_in_warning(roster: &people::Roster) -> Option<String> {
    let mut keys = roster.guest_sign_in_keys();
    let first = keys.next()?;
    let more = keys.count();
    let (who, more) = match more {
        0 => (
            "1 license holder has no mail in Entra and is".to_string(),
            String::new(),
        ),
        n => (
            format!("{} license holders have no mail in Entra and are", n + 1),
            format!(" and {n} more"),
        ),
    };
    Some(format!(
        "{who} keyed by their guest sign-in name (`{first}`{more}), which no mailbox receives: Procore's invitation will not reach them; give them a mail in Entra"
    ))
}

/// How a run read the members.
struct Outcome {
    known: Known,
    read: Read,
    full_because: Option<String>,
    /// Joined users Graph does not list yet (an incremental read only).
    unlisted_joiners: usize,
    warnings: Vec<String>,
}

fn run(input: Input, context: &Context) -> Result<Output, StepError> {
    let tracked = Tracked::of(&input.groups)?;
    let outcome = if tracked.ids.is_empty() {
        // Nothing to read, and no delta round to keep: Graph refuses a
        // delta filter that names no group.
        Outcome {
            known: full_read(&tracked, false)?,
            read: Read::Full,
            full_because: Some("no license group".into()),
            unlisted_joiners: 0,
            warnings: Vec::new(),
        }
    } else if input.transitive {
        let warning = "transitive = true: Graph has no delta for nested group membership, \
                       so every member was read (a full read)";
        sluice_guest::log::warn(warning);
        Outcome {
            known: full_read(&tracked, true)?,
            read: Read::Full,
            full_because: Some("transitive membership".into()),
            unlisted_joiners: 0,
            warnings: vec![warning.into()],
        }
    } else if !input.incremental {
        Outcome {
            known: full_read(&tracked, false)?,
            read: Read::Full,
            full_because: Some("incremental = false".into()),
            unlisted_joiners: 0,
            warnings: Vec::new(),
        }
    } else {
        synced(&tracked, &input, context)?
    };
    let (roster, mut out) = known::people(outcome.known, &tracked.names).finish();
    out.read = outcome.read;
    out.full_because = outcome.full_because;
    out.unlisted_joiners = outcome.unlisted_joiners;
    out.warnings = outcome.warnings;
    if let Some(warning) = guest_sign_in_warning(&roster) {
        sluice_guest::log::warn(&warning);
        out.warnings.push(warning);
    }
    // With no license group the flow deactivates nobody, so asking Graph
    // about every managed person would only spend requests.
    if !tracked.ids.is_empty() {
        let unheld = unheld(&roster, &out.disabled)?;
        out.gone = unheld.gone;
        // Their old key goes into `disabled` beside the new one, so compare
        // gives the record's leaver its true reason.
        out.disabled.extend(unheld.disabled);
        out.disabled.sort_unstable();
        out.disabled.dedup();
    }
    let mut people = OutputList::new("people");
    for person in roster.persons() {
        people.push(&person)?;
    }
    people.finish()?;
    out.people = serde_json::to_value(&people).map_err(|e| {
        StepError::internal(format!("the people could not be written: {e}")).with_code("bad-output")
    })?;
    Ok(out)
}

/// The incremental read, or a full one that keeps what the next run needs.
fn synced(tracked: &Tracked, input: &Input, context: &Context) -> Result<Outcome, StepError> {
    let now = plan::parse_time(context.started_at()).ok_or_else(|| {
        StepError::internal(format!(
            "the run's start `{}` is not an RFC 3339 time",
            context.started_at()
        ))
    })?;
    let every = plan::full_sync_every(input.full_sync_every.as_deref())?;
    let mut warnings = Vec::new();
    let (meta, unusable) = match plan::load_meta()? {
        plan::Kept::Meta(meta) => (Some(meta), false),
        plan::Kept::Nothing => (None, false),
        plan::Kept::Unusable => (None, true),
    };
    let decided = if unusable {
        let warning = format!("{}, so every member was read", plan::UNUSABLE);
        sluice_guest::log::warn(&warning);
        warnings.push(warning);
        Err(plan::UNUSABLE.to_string())
    } else {
        plan::decide(meta.as_ref(), &tracked.ids, now, every)
    };
    let why = match decided {
        Err(why) => why,
        Ok((meta, links)) => match changes_since(meta, links, now)? {
            Ok(Incremental { known, unfound }) => {
                if unfound > 0 {
                    let who = match unfound {
                        1 => "1 user who joined a license group is".to_string(),
                        n => format!("{n} users who joined a license group are"),
                    };
                    let warning = format!(
                        "{who} not listed by Graph yet (Graph's replication delay): \
                         the next run looks them up again, and this run's people \
                         may lack them"
                    );
                    sluice_guest::log::warn(&warning);
                    warnings.push(warning);
                }
                return Ok(Outcome {
                    known,
                    read: Read::Incremental,
                    full_because: None,
                    unlisted_joiners: unfound,
                    warnings,
                });
            }
            Err(Instead::Refused(delta::Refused(why))) => {
                let warning =
                    format!("Graph delta could not be used, so every member was read: {why}");
                sluice_guest::log::warn(&warning);
                warnings.push(warning);
                why
            }
            Err(Instead::Restore) => RESTORED.to_string(),
        },
    };
    sluice_guest::log::info(&format!("full read of the members: {why}"));
    let links = match delta::latest(&tracked.ids) {
        Ok(links) => Some(links),
        // The full read follows either way: only the next run's is at
        // stake, so even throttling here is a warning.
        Err(stop) => {
            let why = match stop {
                delta::Stop::Refused(delta::Refused(why)) => why,
                delta::Stop::Failed(e) => e.to_string(),
            };
            let warning = format!(
                "Graph delta is not available, so the next run reads every member again: {why}"
            );
            sluice_guest::log::warn(&warning);
            warnings.push(warning);
            None
        }
    };
    // The changes before the links just taken are skipped, a restore among
    // them too: of the deleted members kept, only those Graph still does
    // not list are kept, asked before the read, so that one restored while
    // it reads is among the members it lists or in the next round.
    let kept = match &links {
        Some(_) => Some(still_deleted(&mut warnings)?),
        None => None,
    };
    let known = full_read(tracked, false)?;
    if let (Some(links), Some(mut kept)) = (links, kept) {
        if let Some(meta) = &meta {
            deleted_since(
                meta,
                tracked,
                &known,
                now.timestamp(),
                &mut kept,
                &mut warnings,
            )?;
        }
        let before = meta.as_ref().map_or(0, |m| m.chunks);
        let chunks = known::save(&known, before, None)?;
        kept.retain(|id, _| !known.contains_key(&Id::new(id)));
        restorable::save(kept, now.timestamp())?;
        plan::save_meta(&Meta::after_full(tracked.ids.clone(), links, now, chunks))?;
    }
    Ok(Outcome {
        known,
        read: Read::Full,
        full_because: Some(why),
        unlisted_joiners: 0,
        warnings,
    })
}

/// The deleted members kept that Graph does not list now (see
/// [`restorable`]); no request when none is kept. A look-up that fails
/// (throttled too: as for the links, only the next run's read is at
/// stake) keeps them all, unverified, with a warning: one restored before
/// this run is then read by the full read itself, and a change to one
/// listed since makes the run that reads it read every member, where a
/// stale entry could put someone back into groups they left.
fn still_deleted(warnings: &mut Vec<String>) -> Result<restorable::Restorable, StepError> {
    let mut kept = restorable::load()?;
    let ids: Vec<String> = kept.keys().cloned().collect();
    let mut listed = Vec::new();
    match delta::each_listed(&ids, |_, id| listed.push(id.to_string())) {
        Ok(()) => {
            listed.iter().for_each(|id| {
                kept.remove(id);
            });
            Ok(kept)
        }
        Err(e) => {
            let warning = format!(
                "the look-up of the deleted license holders kept ({}) failed ({e}): each is kept as possibly restored, and a change to one of them makes the run that reads it read every member",
                ids.len()
            );
            sluice_guest::log::warn(&warning);
            warnings.push(warning);
            kept.values_mut().for_each(|k| k.unverified = true);
            Ok(kept)
        }
    }
}

/// Keeps in `kept` the members the last run knew that this full read did
/// not list because Entra deleted them since (Graph does not list them
/// among the members, yet they keep their groups): the changes before
/// the read are skipped, so no users round tells of the deletion, and only
/// the users delta will tell of a restore. Each is kept unverified
/// ([`restorable::Kept::unverified`]): someone who left a group just
/// before the deletion would be kept in it, so a restore makes the run
/// that reads it read every member rather than trust the groups. Only
/// members of groups still tracked count; at most
/// [`restorable::MAX_KEPT`] are asked about, and a look-up that fails
/// keeps every one, with a warning, as [`still_deleted`] does. One restored
/// while the read ran, after their group's pages, is listed by the
/// look-up and not kept: the next full read finds them.
fn deleted_since(
    meta: &Meta,
    tracked: &Tracked,
    known: &Known,
    now: i64,
    kept: &mut restorable::Restorable,
    warnings: &mut Vec<String>,
) -> Result<(), StepError> {
    let mut vanished: BTreeMap<String, (known::Entry, Vec<String>)> = BTreeMap::new();
    let mut more = 0usize;
    let whole = known::each_kept(meta.chunks, |id, mut entry| {
        if entry.kind.is_some() || known.contains_key(&id) {
            return;
        }
        // Positions in the groups the state was written for, kept by id.
        let groups: Vec<String> = std::mem::take(&mut entry.groups)
            .iter()
            .filter_map(|g| meta.groups.get(usize::from(g)))
            .filter(|g| tracked.ids.binary_search(*g).is_ok())
            .cloned()
            .collect();
        if groups.is_empty() {
            return;
        }
        if vanished.len() < restorable::MAX_KEPT {
            vanished.insert(id.to_string(), (entry, groups));
        } else {
            more += 1;
        }
    })?;
    if !whole || vanished.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = vanished.keys().cloned().collect();
    let mut listed = Vec::new();
    if let Err(e) = delta::each_listed(&ids, |_, id| listed.push(id.to_string())) {
        // Every one is kept: a listed one whose account changes later
        // costs a full read, where one dropped and restored would count
        // as holding no license until the next.
        let warning = format!(
            "the look-up of the license holders this full read did not list ({}) failed ({e}): each is kept as possibly deleted, and a change to one of them makes the run that reads it read every member",
            ids.len()
        );
        sluice_guest::log::warn(&warning);
        warnings.push(warning);
    } else {
        listed.iter().for_each(|id| {
            vanished.remove(id);
        });
    }
    if more > 0 {
        let warning = format!(
            "{more} more license holders than the {} asked about are not listed since the last run; one of them Entra deleted and restores later counts only from the next full read",
            restorable::MAX_KEPT
        );
        sluice_guest::log::warn(&warning);
        warnings.push(warning);
    }
    for (id, (entry, groups)) in vanished {
        kept.entry(id).or_insert(restorable::Kept {
            entry,
            groups,
            since: now,
            unverified: true,
        });
    }
    Ok(())
}

/// Why an incremental read gave way to a full one.
enum Instead {
    /// Delta could not be used (an expired link, a refusal): warned of.
    Refused(delta::Refused),
    /// A restore of a member a full read kept unverified: said, not
    /// warned of (nothing is wrong).
    Restore,
}

impl From<delta::Refused> for Instead {
    fn from(refused: delta::Refused) -> Instead {
        Instead::Refused(refused)
    }
}

/// `full_because` when a restore of an unverified member is read.
const RESTORED: &str = "a license holder a full read did not find listed (deleted, or not \
                        listed yet) is listed again, and the groups they were in then were not seen";

/// The most joined users Graph did not list yet that a run keeps for the
/// next one.
const MAX_UNFOUND: usize = 10_000;

/// What an incremental read found.
struct Incremental {
    known: Known,
    /// Joined users Graph did not list yet, kept for the next run.
    unfound: usize,
}

/// The members now, from the kept ones and the changes since `links`;
/// keeps them and the new links. `Err(Instead)` when delta cannot be used
/// or a restore needs every member read (the caller reads fully). Graph throttling or failing (after the host's
/// retries) fails the step, as a failure of the flow's state does: the
/// kept links stay, and the next run reads the changes again.
fn changes_since(
    meta: &Meta,
    links: &delta::Links,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<Incremental, Instead>, StepError> {
    let changes = match delta::read(links) {
        Ok(changes) => changes,
        Err(delta::Stop::Refused(refused)) => return Ok(Err(refused.into())),
        Err(delta::Stop::Failed(e)) => return Err(e),
    };
    let Some(mut known) = known::load(meta.chunks)? else {
        let why = "the members kept by the last run are missing or unreadable";
        return Ok(Err(delta::Refused(why.into()).into()));
    };
    let mut changed = BTreeSet::new();
    let mut restorable = restorable::load()?;
    if delta::restores_unverified(&changes, &restorable) {
        return Ok(Err(Instead::Restore));
    }
    let pending = delta::apply(
        &mut known,
        &meta.groups,
        &changes,
        meta.unfound.clone(),
        &mut restorable,
        now.timestamp(),
        &mut changed,
    );
    let asked = pending.len();
    let unfound = match delta::look_up(&mut known, pending, &mut changed) {
        Ok(unfound) => unfound,
        Err(e) if e.retryable() => return Err(e),
        Err(e) => {
            let why = format!("looking up the users who joined failed: {e}");
            return Ok(Err(delta::Refused(why).into()));
        }
    };
    // So many that something else is wrong: kept, they could outgrow a
    // state value; a full read lists members from the groups themselves.
    if unfound.len() > MAX_UNFOUND {
        let why = format!(
            "{} users who joined are not listed by Graph's look-up",
            unfound.len()
        );
        return Ok(Err(delta::Refused(why).into()));
    }
    let chunks = known::save(&known, meta.chunks, Some(&changed))?;
    restorable::save(restorable, now.timestamp())?;
    let unfound_count = unfound.len();
    plan::save_meta(&meta.relinked(changes.links, now, chunks, unfound))?;
    sluice_guest::log::info(&format!(
        "Graph delta: {} membership changes, {} user changes, {asked} users looked up",
        changes.members.len(),
        changes.users.len()
    ));
    Ok(Ok(Incremental {
        known,
        unfound: unfound_count,
    }))
}

/// What Graph says of the managed people whose key holds no license now.
#[derive(Debug, Default)]
struct Unheld {
    /// Keys whose Entra user Graph no longer has.
    gone: Vec<String>,
    /// Keys whose Entra user is disabled though no member under this key
    /// said so: the user's key changed since the flow recorded them (a
    /// mail that appeared), and the member with the new key is disabled.
    disabled: Vec<String>,
}

/// The managed people (state `managed/<key>`, active, with an Entra id)
/// who are in no license group under their key: each whose Entra user is
/// not a license holder under another key is looked up in Graph, which
/// says whether the user is gone or disabled.
fn unheld(people: &people::Roster, disabled: &[String]) -> Result<Unheld, StepError> {
    let mut out = Unheld::default();
    // Built on first need: most runs find every record by its key.
    let mut holders: Option<HashSet<&Id>> = None;
    for entry in state::entries::<Managed>(MANAGED_PREFIX) {
        let (state_key, record) = entry?;
        let Some(key) = state_key.strip_prefix(MANAGED_PREFIX) else {
            continue;
        };
        // A deactivation never seen answered may not have been applied:
        // such a person is still a leaver to tell the reason of.
        let (Some(entra_id), ManagedStatus::Active | ManagedStatus::Deactivating) =
            (record.entra_id(), record.status)
        else {
            continue;
        };
        // `disabled` is sorted, as the people are.
        if people.contains(key) || disabled.binary_search_by(|d| d.as_str().cmp(key)).is_ok() {
            continue;
        }
        // The same Entra user holds a license under a new key: neither
        // gone nor disabled, and nothing to ask.
        let holders = holders.get_or_insert_with(|| people.ids().collect());
        if holders.contains(&Id::new(entra_id)) {
            continue;
        }
        // Object ids are unique across the directory: a user the flow
        // knows, listed as a device (or any other kind) in a license
        // group, is a read that contradicts itself, and taking them for
        // someone in no license group would make a leaver of them.
        if people.lists_as_other(&Id::new(entra_id)) {
            return Err(StepError::internal(format!(
                "Graph listed {entra_id}, the Entra user of {key}, as a member that is not a user (its `@odata.type`) in a license group; the read contradicts itself, so the step stops rather than take {key} for a leaver"
            ))
            .with_code("bad-response"));
        }
        let call = Call::get(
            GRAPH,
            &format!("users/{}", sluice_guest::http::segment(entra_id)),
        )
        .query("$select", "id,accountEnabled");
        let response = call.read()?;
        match response.status {
            404 => out.gone.push(key.to_string()),
            s if (200..300).contains(&s) => {
                let user: Value = response.json()?;
                if user.get("accountEnabled") == Some(&Value::Bool(false)) {
                    out.disabled.push(key.to_string());
                }
            }
            _ => return Err(sluice_guest_services::status_error(&call, &response)),
        }
    }
    Ok(out)
}

sluice_guest::step!(run, connections: {
    "graph": "Microsoft Graph: reads the members of the license groups (GroupMember.Read.All, User.Read.All)",
});

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::known::Entry;
    use crate::member::Member;

    fn holder(mail: Option<&str>, upn: &str) -> Entry {
        let mut entry = Entry::of(
            &Member::owned(json!({"@odata.type": "#microsoft.graph.user", "id": upn, "mail": mail, "userPrincipalName": upn, "accountEnabled": true})).unwrap(),
        );
        entry.groups.insert(0);
        entry
    }

    /// Guests without mail are keyed by their `#EXT#` sign-in name, as the
    /// identity rule says; the run says that no mailbox gets their invite.
    #[test]
    fn guests_keyed_by_their_sign_in_name_are_warned_of() {
        let roster = |holders: Vec<Entry>| {
            let mut people = people::People::new(vec!["License – Microsoft E3".into()]);
            for (i, h) in holders.into_iter().enumerate() {
                people.add(id::Id::new(&format!("id{i}")), h);
            }
            people.finish().0
        };
        let guest = "ann_partner.example#EXT#@contoso.onmicrosoft.com";
        assert_eq!(
            guest_sign_in_warning(&roster(vec![
                holder(Some("bob@contoso.com"), "bob@contoso.com"),
                holder(Some("cy_x.com#EXT#@contoso.onmicrosoft.com"), "cy_x.com#EXT#@contoso.onmicrosoft.com"),
            ])),
            Some("1 license holder has no mail in Entra and is keyed by their guest sign-in name (`cy_x.com#ext#@contoso.onmicrosoft.com`), which no mailbox receives: Procore's invitation will not reach them; give them a mail in Entra".into()),
        );
        let two = guest_sign_in_warning(&roster(vec![
            holder(None, guest),
            holder(None, "dee_y.org#EXT#@contoso.onmicrosoft.com"),
        ]))
        .unwrap();
        assert!(
            two.starts_with("2 license holders have no mail in Entra and are keyed by their guest sign-in name (`ann_partner.example#ext#@contoso.onmicrosoft.com` and 1 more)"),
            "{two}"
        );
        assert_eq!(
            guest_sign_in_warning(&roster(vec![holder(Some("ann@partner.example"), guest)])),
            None,
            "a guest with a mail is keyed by it"
        );
    }
}
