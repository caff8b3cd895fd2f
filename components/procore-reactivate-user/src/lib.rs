//! The `procore-reactivate-user` step: one returner per call.
//!
//! Input `{"user": <returner>, "company_id", "project_id"?,
//! "permission_template_id"?}` (a returner as `compare` lists them: an
//! inactive Procore user this flow deactivated who holds a license again,
//! `{key, procore_id, name, email, login, license_group, matched_by}`; an
//! empty id means none); writes through the `procore` connection role, whose
//! connection carries the `Procore-Company-Id` header.
//!
//! 1. `PATCH companies/{company_id}/users/inactive/{id}` with no body:
//!    Procore's "Reactivate company user". Procore answers 404 for a user
//!    who is not inactive, which is also what a resend after a lost answer
//!    gets (the first attempt was applied); a server strict about repeats
//!    may answer it with another 4xx. So a 4xx but 401, 403 and 429 is
//!    followed by a look-up
//!    of the person (`filters[search]`, matched exactly on login or email):
//!    the same user, active, is `already_active` and counts as done; anyone
//!    else, or nobody, fails the item as `not-found`. Any other non-2xx
//!    fails the item with the step error its status means.
//! 2. The flow's record (state `managed/<key>`) gets `status: "active"`,
//!    committed at once, so it holds even if the host dies after this.
//! 3. With a project: `POST projects/{project_id}/users/{id}/actions/add`,
//!    with the permission template when one is set, as for a new user.
//!    An add refused as a resend may be is checked as `procore-project-owed`
//!    checks it. The record written in 2 says the add is owed (`owed_project`) until
//!    Procore has taken it: an add refused or never answered is made by a
//!    later run (`compare`'s `project_owed`, `procore-project-owed`).
//!
//! In a dry run nothing is sent or recorded and the output says what would
//! have been done. Output: [`Reactivated`].

use serde::Deserialize;
use serde_json::Value;
use sluice_guest::http::segment;
use sluice_guest::{Call, Context, JsonSchema, Response, Sent, StepError};
use sluice_guest_services::procore::{self, Id};
use sluice_guest_services::status_error;
use sluice_guest_services::sync::{
    ManagedStatus, OwedProject, ProjectAction, ReactivateStatus, Reactivated, Returner,
    mark_managed, owe_project,
};
use sluice_identity::Key;

/// The connection role this component writes through.
const PROCORE: &str = "procore";

/// Page size of the look-up after a refusal; a search finds a handful.
const LOOKUP_PER_PAGE: usize = 100;

/// Who to reactivate, and where.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The returner (as `compare` lists them).
    user: Returner,
    /// The Procore company id (a whole number).
    #[schemars(schema_with = "sluice_guest_services::procore::company_id_schema")]
    company_id: Id,
    /// Also add the user to this project again (its id, a whole number);
    /// empty or absent: no project.
    #[serde(default)]
    #[schemars(schema_with = "sluice_guest_services::procore::project_id_schema")]
    project_id: Option<Id>,
    /// The project permission template (its id, a whole number); empty
    /// or absent: none.
    #[serde(default)]
    #[schemars(schema_with = "sluice_guest_services::procore::template_id_schema")]
    permission_template_id: Option<Id>,
}

/// Procore's "Reactivate company user" address.
pub fn reactivate_url(company: &str, user: &str) -> String {
    format!(
        "companies/{}/users/inactive/{}",
        segment(company),
        segment(user)
    )
}

/// Whether a user found after a 404 is this returner, active again: the
/// same Procore id, and not inactive.
pub fn is_active_again(found: &Value, id: &str) -> bool {
    procore::same_id(found, id) && found.get("is_active").and_then(Value::as_bool) != Some(false)
}

fn output(returner: &Returner, status: ReactivateStatus) -> Reactivated {
    Reactivated {
        key: returner.key.clone(),
        name: returner.name.clone(),
        procore_id: returner.procore_id.clone(),
        status,
        reactivated: status != ReactivateStatus::WouldReactivate,
        project: None,
        license_group: returner.license_group.clone(),
        matched_by: returner.matched_by,
        would_send: Vec::new(),
    }
}

/// The ids as text: company, user, project, template.
struct Ids {
    company: String,
    user: String,
    project: Option<String>,
    template: Option<u64>,
}

impl Ids {
    fn of(input: &Input) -> Result<Ids, StepError> {
        let id = |id: &Option<Id>| id.as_ref().and_then(Id::text);
        Ok(Ids {
            company: input
                .company_id
                .text()
                .ok_or_else(|| StepError::bad_input("`company_id` is empty"))?,
            user: input
                .user
                .procore_id
                .text()
                .ok_or_else(|| StepError::bad_input("the returner has no `procore_id`"))?,
            project: id(&input.project_id),
            template: procore::permission_template(input.permission_template_id.as_ref())?,
        })
    }
}

fn run(input: Input, context: &Context) -> Result<Reactivated, StepError> {
    let ids = Ids::of(&input)?;
    let returner = &input.user;
    // Reactivating twice leaves the user active; a resend's 404 is looked into.
    let call = Call::patch(PROCORE, &reactivate_url(&ids.company, &ids.user)).idempotent();
    let mut out = match call.send()? {
        Sent::Response(response) => {
            output(returner, reactivated(&call, &response, &ids, returner)?)
        }
        Sent::WouldSend(w) => {
            let mut out = output(returner, ReactivateStatus::WouldReactivate);
            out.would_send.push(w);
            out
        }
    };
    if out.reactivated {
        // Kept before the project add, as the deactivation is kept before
        // the removal: the record says what the flow last did to them.
        mark_managed(
            &returner.key,
            &returner.procore_id,
            ManagedStatus::Active,
            context.started_at(),
            None,
        )?;
        // The add is owed until Procore has taken it (see the module docs).
        if let Some(project) = &ids.project {
            let owed = OwedProject {
                project_id: project.clone(),
                action: ProjectAction::Add,
            };
            owe_project(&returner.key, Some(owed))?;
        }
        sluice_guest::state::commit()?;
    }
    if let Some(project) = &ids.project {
        let id = Id::Text(ids.user.clone());
        let added = procore::add_to_project(PROCORE, project, Some(&id), ids.template);
        if out.reactivated && added == "added" {
            owe_project(&returner.key, None)?;
        }
        out.project = Some(added);
    }
    Ok(out)
}

/// What Procore's answer to the reactivation means (see the module's rule).
fn reactivated(
    call: &Call,
    response: &Response,
    ids: &Ids,
    returner: &Returner,
) -> Result<ReactivateStatus, StepError> {
    if response.is_success() {
        return Ok(ReactivateStatus::Reactivated);
    }
    // A 404 (the user is not on the inactive list), or a strict server's
    // refusal of a resend once the first reactivation went through.
    if !procore::may_refuse_a_repeat(response.status) {
        return Err(status_error(call, response));
    }
    let key =
        Key::of(&returner.key).ok_or_else(|| StepError::bad_input("the returner has no `key`"))?;
    match procore::find_user(PROCORE, &ids.company, (&key, key.as_str()), LOOKUP_PER_PAGE)? {
        Some(found) if is_active_again(&found, &ids.user) => Ok(ReactivateStatus::AlreadyActive),
        _ => Err(status_error(call, response)),
    }
}

sluice_guest::step!(run, connections: {
    "procore": "Procore: reactivates company users the flow deactivated, adds them to a project again, and looks a user up when Procore says they are not inactive (or a membership up when it refuses the add)",
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_guest_services::sync::MatchedBy;

    fn returner() -> Returner {
        serde_json::from_value(json!({
            "key": "bo@x.com", "procore_id": 7, "name": "Bo",
            "email": "bo@x.com", "login": "bo@x.com",
            "license_group": "License – Microsoft E3", "matched_by": "upn"
        }))
        .unwrap()
    }

    #[test]
    fn reactivation_is_a_patch_on_the_inactive_list() {
        assert_eq!(reactivate_url("9", "7"), "companies/9/users/inactive/7");
        assert_eq!(
            reactivate_url("9", "7?x=1"),
            "companies/9/users/inactive/7%3Fx=1"
        );
    }

    #[test]
    fn after_a_404_only_the_same_active_user_counts_as_done() {
        assert!(is_active_again(&json!({"id": 7, "is_active": true}), "7"));
        assert!(is_active_again(&json!({"id": "7"}), "7"));
        assert!(!is_active_again(&json!({"id": 7, "is_active": false}), "7"));
        assert!(!is_active_again(&json!({"id": 8, "is_active": true}), "7"));
        assert!(!is_active_again(&json!({"login": "bo@x.com"}), "7"));
    }

    #[test]
    fn the_input_is_a_returner_as_compare_lists_it() {
        let input: Input = serde_json::from_value(json!({
            "user": returner(), "company_id": 9, "project_id": "5",
            "permission_template_id": ""
        }))
        .unwrap();
        let ids = Ids::of(&input).unwrap();
        assert_eq!((ids.company.as_str(), ids.user.as_str()), ("9", "7"));
        assert_eq!((ids.project.as_deref(), ids.template), (Some("5"), None));
        assert_eq!(input.user.matched_by, MatchedBy::Upn);
    }

    #[test]
    fn the_output_carries_the_ledgers_facts() {
        let mut out = output(&returner(), ReactivateStatus::Reactivated);
        out.project = Some("added".into());
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"key": "bo@x.com", "name": "Bo", "procore_id": 7,
                   "status": "reactivated", "reactivated": true, "project": "added",
                   "license_group": "License – Microsoft E3", "matched_by": "upn"})
        );
        let dry = output(&returner(), ReactivateStatus::WouldReactivate);
        assert!(!dry.reactivated);
        assert!(output(&returner(), ReactivateStatus::AlreadyActive).reactivated);
    }
}
