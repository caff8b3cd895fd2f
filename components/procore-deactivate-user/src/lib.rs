//! The `procore-deactivate-user` step: one leaver per call.
//!
//! Input `{"user": <leaver>, "company_id", "project_id"?}` (a leaver as
//! `compare` lists them: `{key, procore_id, name, email, login, reason}`; an
//! empty project id means none); writes through the `procore` connection
//! role, whose connection carries the `Procore-Company-Id` header Procore
//! wants on every request (the host refuses a component header that the
//! connection already sets, so the flow's connection owns it).
//!
//! 1. `PATCH companies/{company_id}/users/{id}` with `{"user": {"is_active":
//!    false}}`: Procore has no DELETE of a company user; deactivation keeps
//!    the user and their history. Sending it twice leaves the user inactive,
//!    so the host may resend it after a lost connection or a 5xx. A 5xx or a
//!    lost connection may hide a change Procore made anyway, and a resend
//!    after one is answered 404 (inactive users are not under `users/{id}`
//!    but `users/inactive`), or by a server strict about repeats with
//!    another 4xx (Procore documents no answer to it). So after any of
//!    these (a 4xx but 401 and 403), the step looks the user up on
//!    the inactive list (`filters[search]` with their email address, else
//!    their key, which Procore documents on the active list only, so the
//!    list may come whole; matched on the id): listed there, they are
//!    deactivated, as after a 2xx. The same goes for a 429 the host gave
//!    up on: it says nothing of the user, and an attempt the host resent
//!    may have been applied. Not listed (still active, or not found), or a look-up
//!    that fails, and the item fails with the PATCH's own error and the
//!    step error its status means (401/403 forbidden, 400/422 bad input …).
//!    Before the PATCH, the flow's record of the person (state
//!    `managed/<key>`) gets `status: "deactivating"` and is committed: a
//!    host killed while Procore applies the change, or an error answer
//!    whose look-up fails too, would otherwise leave a deactivation nobody
//!    knows is the flow's (never reactivated, its approval closed as no
//!    longer needed). `compare` then lists the person again, as a leaver
//!    whose Procore user is `inactive` already, and this step confirms it
//!    on the inactive list instead of sending the PATCH again (or, when an
//!    admin rejected it meanwhile, `compare` records it itself). A PATCH
//!    refused for sure (a 401 or 403; any other error whose look-up finds
//!    the user active) puts the record back as it
//!    was, so a later deactivation by someone else is never taken for the
//!    flow's.
//! 2. With a project: `DELETE projects/{project_id}/users/{id}/actions/remove`
//!    (deactivation does not end project memberships). A 404 means the person
//!    was not on the project, which is fine. Any other refusal, or a service
//!    that cannot be reached, is reported (`removed_from_project: failed`,
//!    with the `problem`) rather than failing the item: the person *is*
//!    deactivated, and that must be recorded.
//!    The flow's record of the person (state `managed/<key>`) then gets
//!    `status: "deactivated"`, kept when the item ends, in one transaction
//!    with the item's record (its ledger line). A host that dies during
//!    the removal leaves the record `deactivating`, which already tells a
//!    later run the deactivation is the flow's: it confirms it and makes
//!    the removal, or reactivates a returner.
//!    With a project, the record also says the removal is owed
//!    (`owed_project`) until Procore has taken it (removed, or not on the
//!    project): a removal refused or never answered is made by a later run
//!    (`compare`'s `project_owed`, `procore-project-owed`).
//!
//! In a dry run nothing is sent or recorded, and the output says what would
//! have been done. Output: [`Deactivated`] (`procore_id`, `deactivated`,
//! `removed_from_project`, `reason`, …), the facts the report and the
//! ledger show.

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_guest::http::segment;
use sluice_guest::{Call, Context, ErrorKind, JsonSchema, Response, Sent, StepError};
use sluice_guest_services::procore::{self, Id};
use sluice_guest_services::sync::{
    DeactivateStatus, Deactivated, Leaver, Managed, ManagedStatus, OwedProject, ProjectAction,
    ProjectRemoval, managed_key, mark_managed, owe_project,
};
use sluice_guest_services::{service_message, status_error};

/// The connection role this component writes through.
const PROCORE: &str = "procore";

/// Who to deactivate, and where.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The leaver (as `compare` lists them).
    user: Leaver,
    /// The Procore company id (a whole number).
    #[schemars(schema_with = "sluice_guest_services::procore::company_id_schema")]
    company_id: Id,
    /// Also remove the user from this project (its id, a whole number);
    /// empty or absent: no project.
    #[serde(default)]
    #[schemars(schema_with = "sluice_guest_services::procore::project_id_schema")]
    project_id: Option<Id>,
}

/// The body that deactivates a company user (Procore's nested form).
pub fn body() -> Value {
    json!({ "user": { "is_active": false } })
}

/// The company user's address.
pub fn user_url(company: &str, user: &str) -> String {
    format!("companies/{}/users/{}", segment(company), segment(user))
}

/// What a project removal's answer means: removed, not on the project
/// (404), or refused with the service's words.
pub fn removal(status: u16, detail: impl FnOnce() -> String) -> Result<ProjectRemoval, String> {
    match status {
        200..=299 => Ok(ProjectRemoval::Removed),
        404 => Ok(ProjectRemoval::NotOnProject),
        s => Err(format!("HTTP {s}: {}", detail())),
    }
}

/// A 2xx whose user is still active is not a deactivation: Procore
/// ignored the change (a field it did not take), and saying "deactivated"
/// would be a lie.
pub fn still_active(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|user| user.get("is_active").and_then(Value::as_bool))
        == Some(true)
}

fn detail(response: &Response) -> String {
    service_message(response).unwrap_or_else(|| response.text_preview())
}

/// The ids as text, or a bad-input error naming the empty one.
fn ids(input: &Input) -> Result<(String, String, Option<String>), StepError> {
    let company = input
        .company_id
        .text()
        .ok_or_else(|| StepError::bad_input("`company_id` is empty"))?;
    let user = input
        .user
        .procore_id
        .text()
        .ok_or_else(|| StepError::bad_input("the leaver has no `procore_id`"))?;
    let project = input.project_id.as_ref().and_then(Id::text);
    Ok((company, user, project))
}

fn output(leaver: &Leaver, status: DeactivateStatus) -> Deactivated {
    Deactivated {
        key: leaver.key.clone(),
        name: leaver.name.clone(),
        procore_id: leaver.procore_id.clone(),
        status,
        deactivated: status == DeactivateStatus::Deactivated,
        removed_from_project: None,
        problem: None,
        reason: leaver.reason,
        would_send: Vec::new(),
    }
}

fn run(input: Input, context: &Context) -> Result<Deactivated, StepError> {
    let (company, user, project) = ids(&input)?;
    let leaver = &input.user;
    let mut out = if leaver.inactive {
        finish(context, &company, &user, leaver)?
    } else {
        deactivate(context, &company, &user, leaver)?
    };
    if out.deactivated {
        // Kept with the item's record when it ends, not before the project
        // removal: a host that dies during the removal leaves the record
        // `deactivating`, and the next run confirms the deactivation and
        // makes the removal in an item of its own, which the ledger shows
        // (or, with a license again, reactivates them as a returner).
        mark_managed(
            &leaver.key,
            &leaver.procore_id,
            ManagedStatus::Deactivated,
            context.started_at(),
            leaver.entra_id.as_deref(),
        )?;
        // The removal is owed until Procore has taken it (see the module
        // docs).
        if let Some(project) = &project {
            owe_project(&leaver.key, Some(removal_owed(project)))?;
        }
    }
    if let Some(project) = &project {
        remove_from_project(&mut out, project, &user);
        let done = matches!(
            out.removed_from_project,
            Some(ProjectRemoval::Removed | ProjectRemoval::NotOnProject)
        );
        if out.deactivated && done {
            owe_project(&leaver.key, None)?;
        }
    }
    Ok(out)
}

/// Why a deactivation did not go through: refused for sure (nothing was
/// applied), or with an outcome nobody can tell (Procore may have applied
/// it, and the look-up that would say failed too).
struct Failure {
    error: StepError,
    unknown: bool,
}

impl Failure {
    fn refused(error: StepError) -> Failure {
        Failure {
            error,
            unknown: false,
        }
    }
}

/// Sends the deactivation, its intent recorded first (see the module
/// docs), and insists it took. A deactivation refused for sure puts the
/// record back as it was (none, for an in-domain user the flow kept no
/// record of), so the flow never takes a later hand deactivation for its
/// own; only an unknown outcome keeps `deactivating`.
fn deactivate(
    context: &Context,
    company: &str,
    user: &str,
    leaver: &Leaver,
) -> Result<Deactivated, StepError> {
    let state_key = managed_key(&leaver.key);
    let before = match context.dry_run() {
        true => None,
        false => {
            let before = sluice_guest::state::get::<Managed>(&state_key)?;
            mark_managed(
                &leaver.key,
                &leaver.procore_id,
                ManagedStatus::Deactivating,
                context.started_at(),
                leaver.entra_id.as_deref(),
            )?;
            sluice_guest::state::commit()?;
            Some(before)
        }
    };
    match send_deactivation(company, user, leaver) {
        Ok(out) => Ok(out),
        Err(Failure {
            error,
            unknown: true,
        }) => Err(error),
        Err(Failure { error, .. }) => {
            if let Some(before) = before {
                match before {
                    Some(record) => sluice_guest::state::set(&state_key, &record)?,
                    None => sluice_guest::state::delete(&state_key)?,
                }
                sluice_guest::state::commit()?;
            }
            Err(error)
        }
    }
}

/// The PATCH and what its answer means.
fn send_deactivation(company: &str, user: &str, leaver: &Leaver) -> Result<Deactivated, Failure> {
    let call = Call::patch(PROCORE, &user_url(company, user))
        .json(&body())
        .map_err(Failure::refused)?
        .idempotent();
    match call.send() {
        Ok(Sent::Response(response)) => {
            deactivated(&call, &response, company, user, leaver)?;
            Ok(output(leaver, DeactivateStatus::Deactivated))
        }
        Ok(Sent::WouldSend(w)) => {
            let mut out = output(leaver, DeactivateStatus::WouldDeactivate);
            out.would_send.push(w);
            Ok(out)
        }
        // The connection was lost, perhaps after Procore applied the
        // change; or throttled, perhaps after an attempt it applied.
        Err(error) if matches!(error.kind, ErrorKind::Unavailable | ErrorKind::RateLimited) => {
            confirm_inactive(error, company, user, leaver)?;
            Ok(output(leaver, DeactivateStatus::Deactivated))
        }
        Err(error) => Err(Failure::refused(error)),
    }
}

/// A deactivation an earlier run sent but never saw answered, which
/// Procore shows applied (the user is inactive): confirmed on the
/// inactive list, not sent again. In a dry run it is only said.
fn finish(
    context: &Context,
    company: &str,
    user: &str,
    leaver: &Leaver,
) -> Result<Deactivated, StepError> {
    if context.dry_run() {
        return Ok(output(leaver, DeactivateStatus::WouldDeactivate));
    }
    let unconfirmed = StepError::unavailable(format!(
        "an earlier run's deactivation of Procore user {user} was never answered"
    ))
    .with_code("deactivation-unconfirmed");
    confirm_inactive(unconfirmed, company, user, leaver).map_err(|f| f.error)?;
    Ok(output(leaver, DeactivateStatus::Deactivated))
}

/// Whether an error answer to the PATCH may hide a deactivation that
/// happened: a 5xx (the change may be applied before the answer fails),
/// a refusal a resend meets once the user is inactive (a 404 as the
/// route no longer finds them, or a strict server's 400/409/422: see
/// [`procore::may_refuse_a_repeat`]), or a 429 (it says nothing of the
/// user, and the host resends after a 5xx: the attempt before it may have
/// been applied). Not a 401 or 403: the app may not make the change.
pub fn may_have_applied(status: u16) -> bool {
    status == 429 || procore::may_refuse_a_repeat(status) || (500..=599).contains(&status)
}

/// What to search the inactive list for: the Procore email address
/// (which `filters[search]` covers; the login it does not), else the key.
pub fn search_term(leaver: &Leaver) -> &str {
    leaver
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .unwrap_or(&leaver.key)
}

/// Insists that Procore deactivated the user: a 2xx whose user is not
/// still active, or an answer that may hide an applied change (see
/// [`may_have_applied`]) while Procore lists the user as inactive.
fn deactivated(
    call: &Call,
    response: &Response,
    company: &str,
    user: &str,
    leaver: &Leaver,
) -> Result<(), Failure> {
    if !response.is_success() {
        let error = status_error(call, response);
        if !may_have_applied(response.status) {
            return Err(Failure::refused(error));
        }
        return confirm_inactive(error, company, user, leaver);
    }
    if still_active(&response.body) {
        return Err(Failure::refused(
            StepError::internal(format!(
                "Procore answered HTTP {} to the deactivation of user {user} but still has them active",
                response.status
            ))
            .with_code("still-active"),
        ));
    }
    Ok(())
}

/// After `error` from the PATCH: Ok when Procore lists `user` as inactive
/// (the change was applied, its answer lost), else `error`, saying what
/// the look-up found: not applied when the user is not listed, unknown
/// when the look-up fails (which never counts as inactive).
fn confirm_inactive(
    error: StepError,
    company: &str,
    user: &str,
    leaver: &Leaver,
) -> Result<(), Failure> {
    let search = search_term(leaver);
    let found = procore::listed_inactive(PROCORE, company, user, search);
    let (note, unknown) = match found {
        Ok(true) => {
            sluice_guest::log::info(&format!(
                "Procore answered the deactivation of user {user} with an error but lists them inactive: deactivated ({})",
                error.message
            ));
            return Ok(());
        }
        Ok(false) => (
            format!("Procore does not list user {user} as inactive"),
            false,
        ),
        Err(e) => (
            format!(
                "the look-up of user {user} failed too ({}), so the deactivation may have been applied; the next run reads Procore and finds out",
                e.message
            ),
            true,
        ),
    };
    Err(Failure {
        error: StepError {
            message: format!("{}; {note}", error.message),
            ..error
        },
        unknown,
    })
}

/// The removal from `project` the flow owes a person it deactivated.
fn removal_owed(project: &str) -> OwedProject {
    OwedProject {
        project_id: project.to_string(),
        action: ProjectAction::Remove,
    }
}

/// Takes the user off `project` (in a dry run: says it would).
fn remove_from_project(out: &mut Deactivated, project: &str, user: &str) {
    // Removing someone who is gone already is a 404, which counts as done.
    // A removal that fails, even after the host's retries, is reported, not
    // raised: the deactivation happened and must be recorded.
    let call = Call::delete(
        PROCORE,
        &procore::project_action_url(ProjectAction::Remove, project, user),
    )
    .idempotent();
    let problem = match call.send() {
        Ok(Sent::Response(r)) => match removal(r.status, || detail(&r)) {
            Ok(done) => {
                out.removed_from_project = Some(done);
                return;
            }
            Err(problem) => problem,
        },
        Ok(Sent::WouldSend(w)) => {
            out.removed_from_project = Some(ProjectRemoval::WouldRemove);
            out.would_send.push(w);
            return;
        }
        Err(e) => e.message,
    };
    out.removed_from_project = Some(ProjectRemoval::Failed);
    out.problem = Some(format!(
        "deactivated, but not removed from project {project}: {problem}"
    ));
}

sluice_guest::step!(run, connections: {
    "procore": "Procore: deactivates company users who left and removes them from a project, and looks a user up on the inactive list when Procore's answer to a deactivation was an error",
});

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest_services::sync::LeaveReason;

    fn leaver() -> Leaver {
        serde_json::from_value(json!({
            "key": "ann@x.com", "procore_id": 42, "name": "Ann Lee",
            "email": "ann@x.com", "login": "ann@x.com", "reason": "account disabled"
        }))
        .unwrap()
    }

    #[test]
    fn the_patch_is_procores_nested_deactivation() {
        assert_eq!(body(), json!({"user": {"is_active": false}}));
        assert_eq!(user_url("9", "42"), "companies/9/users/42");
        // An id from the environment cannot leave its path segment.
        assert_eq!(user_url("9/../x", "42"), "companies/9%2F..%2Fx/users/42");
    }

    #[test]
    fn a_404_on_removal_means_not_on_the_project() {
        let detail = || "Not Found".to_string();
        assert_eq!(removal(204, detail), Ok(ProjectRemoval::Removed));
        assert_eq!(removal(200, detail), Ok(ProjectRemoval::Removed));
        assert_eq!(removal(404, detail), Ok(ProjectRemoval::NotOnProject));
        assert_eq!(
            removal(403, || "no permission".into()),
            Err("HTTP 403: no permission".into())
        );
    }

    #[test]
    fn a_success_that_leaves_the_user_active_is_not_a_deactivation() {
        assert!(still_active(br#"{"id": 42, "is_active": true}"#));
        assert!(!still_active(br#"{"id": 42, "is_active": false}"#));
        // Procore's answer without the field, or no body: trusted.
        assert!(!still_active(br#"{"id": 42}"#));
        assert!(!still_active(b""));
    }

    #[test]
    fn only_a_5xx_a_429_or_a_refusal_a_resend_could_meet_may_hide_an_applied_deactivation() {
        for status in [400, 404, 409, 422, 429, 500, 502, 503, 504] {
            assert!(may_have_applied(status), "{status}");
        }
        for status in [200, 401, 403] {
            assert!(!may_have_applied(status), "{status}");
        }
    }

    #[test]
    fn the_look_up_searches_for_the_email_address_else_the_key() {
        assert_eq!(search_term(&leaver()), "ann@x.com");
        let mut other = leaver();
        other.email = Some(" ann.lee@x.com ".into());
        assert_eq!(search_term(&other), "ann.lee@x.com");
        other.email = Some("  ".into());
        assert_eq!(search_term(&other), "ann@x.com");
        other.email = None;
        assert_eq!(search_term(&other), "ann@x.com");
    }

    #[test]
    fn the_input_is_a_leaver_as_compare_lists_it() {
        let input: Input = serde_json::from_value(json!({
            "user": {"key": "ann@x.com", "procore_id": 42, "name": "Ann Lee",
                     "email": "ann@x.com", "login": "ann@x.com", "reason": "no license group"},
            "company_id": "9", "project_id": ""
        }))
        .unwrap();
        let (company, user, project) = ids(&input).unwrap();
        assert_eq!(
            (company.as_str(), user.as_str(), project),
            ("9", "42", None)
        );
        assert_eq!(input.user.reason, LeaveReason::NoLicenseGroup);
        let empty: Input = serde_json::from_value(json!({
            "user": leaver(), "company_id": " "
        }))
        .unwrap();
        assert_eq!(
            ids(&empty).unwrap_err().kind,
            sluice_guest::ErrorKind::BadInput
        );
        let unknown = serde_json::from_value::<Input>(json!({
            "user": leaver(), "company_id": 9, "dry": true
        }));
        assert!(unknown.is_err(), "a misspelt `with` key is refused");
    }

    #[test]
    fn the_output_carries_the_ledgers_facts() {
        let mut out = output(&leaver(), DeactivateStatus::Deactivated);
        out.removed_from_project = Some(ProjectRemoval::NotOnProject);
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"key": "ann@x.com", "name": "Ann Lee", "procore_id": 42,
                   "status": "deactivated", "deactivated": true,
                   "removed_from_project": "not_on_project", "reason": "account disabled"})
        );
        let mut dry = output(&leaver(), DeactivateStatus::WouldDeactivate);
        dry.removed_from_project = Some(ProjectRemoval::WouldRemove);
        let dry = serde_json::to_value(&dry).unwrap();
        assert_eq!(dry["status"], "would_deactivate");
        assert_eq!(dry["deactivated"], false);
        assert_eq!(dry["removed_from_project"], "would_remove");
    }
}
