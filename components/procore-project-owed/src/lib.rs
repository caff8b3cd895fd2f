//! The `procore-project-owed` step: one project call an earlier run owes.
//!
//! The create, reactivate and deactivate steps record in a managed
//! person's record (state `managed/<key>`) that the flow owes them a
//! project add or removal (`owed_project`) until Procore has taken it
//! (the deactivate and reactivate steps before they send it, the create
//! step with the new user). A call Procore refused even after the
//! host's retries, or one a host that died never saw answered, stays
//! owed: `compare` lists it (`project_owed`) in a later run, when it can
//! be made (an add for an active user who holds a license, a removal for
//! a user the flow deactivated who is still inactive), and this step
//! makes it.
//!
//! Input `{"owed": <project_owed entry>, "permission_template_id"?}`
//! (an empty template means none); writes through the `procore`
//! connection role.
//!
//! - Add: `POST projects/{project_id}/users/{id}/actions/add`, with the
//!   permission template when one is set, as for a new user. Adding
//!   someone already on the project changes nothing, so a resend is safe;
//!   a server that refuses the resend (a 4xx but 401, 403 and 429) is
//!   asked whether the user is on the project ("Show project user"), and
//!   an active member counts as added.
//! - Remove: `DELETE projects/{project_id}/users/{id}/actions/remove`; a
//!   404 means they are not on the project, which is what was wanted.
//!
//! Once Procore has taken the call the record is cleared (committed when
//! the item succeeds). Anything else fails the item with Procore's words,
//! retryable or not as the status says, and the record stays owed: the
//! next run tries again. In a dry run nothing is sent or recorded and the
//! output says what would have been done. Output: [`ProjectDone`].

use serde::Deserialize;
use sluice_guest::{Call, Context, JsonSchema, Sent, StepError};
use sluice_guest_services::procore::{self, Id};
use sluice_guest_services::status_error;
use sluice_guest_services::sync::{
    Managed, OwedProject, ProjectAction, ProjectDone, ProjectOwed, ProjectOwedStatus, managed_key,
};

/// The connection role this component writes through.
const PROCORE: &str = "procore";

/// The owed call, and the template an add uses.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The owed call (as `compare` lists them in `project_owed`).
    owed: ProjectOwed,
    /// The project permission template of an add (its id, a whole
    /// number); empty or absent: none.
    #[serde(default)]
    #[schemars(schema_with = "sluice_guest_services::procore::template_id_schema")]
    permission_template_id: Option<Id>,
}

/// What Procore's answer `status` to `action` means: done (and how), or
/// not (`None`).
pub fn outcome(action: ProjectAction, status: u16) -> Option<ProjectOwedStatus> {
    match (action, status) {
        (ProjectAction::Add, 200..=299) => Some(ProjectOwedStatus::Added),
        (ProjectAction::Remove, 200..=299) => Some(ProjectOwedStatus::Removed),
        (ProjectAction::Remove, 404) => Some(ProjectOwedStatus::NotOnProject),
        _ => None,
    }
}

fn run(input: Input, _context: &Context) -> Result<ProjectDone, StepError> {
    let owed = &input.owed;
    let user = owed
        .procore_id
        .text()
        .ok_or_else(|| StepError::bad_input("the owed call has no `procore_id`"))?;
    if owed.project_id.trim().is_empty() {
        return Err(StepError::bad_input("the owed call has no `project_id`"));
    }
    let url = procore::project_action_url(owed.action, &owed.project_id, &user);
    // Adding twice leaves one membership; removing twice is a 404, done.
    let call = match owed.action {
        ProjectAction::Add => {
            let template = procore::permission_template(input.permission_template_id.as_ref())?;
            Call::post(PROCORE, &url).json(&procore::project_body(template))?
        }
        ProjectAction::Remove => Call::delete(PROCORE, &url),
    }
    .idempotent();
    let done = |status, would_send| ProjectDone {
        key: owed.key.clone(),
        name: owed.name.clone(),
        procore_id: owed.procore_id.clone(),
        project_id: owed.project_id.clone(),
        action: owed.action,
        status,
        would_send,
    };
    let response = match call.send()? {
        Sent::Response(response) => response,
        Sent::WouldSend(w) => {
            let status = match owed.action {
                ProjectAction::Add => ProjectOwedStatus::WouldAdd,
                ProjectAction::Remove => ProjectOwedStatus::WouldRemove,
            };
            return Ok(done(status, Some(w)));
        }
    };
    let status = match outcome(owed.action, response.status) {
        Some(status) => status,
        None if owed.action == ProjectAction::Add
            && procore::may_refuse_a_repeat(response.status) =>
        {
            added_after_all(owed, &user, status_error(&call, &response))?
        }
        None => return Err(status_error(&call, &response)),
    };
    settle(owed)?;
    Ok(done(status, None))
}

/// An add refused in a way a resend may be (see
/// [`procore::may_refuse_a_repeat`]): done when Procore has the user on
/// the project, else the refusal. (A removal has no such check: Procore
/// may keep a deactivated user's membership where "Show project user"
/// does not find it, and a removal taken for done would be owed no more.)
fn added_after_all(
    owed: &ProjectOwed,
    user: &str,
    refused: StepError,
) -> Result<ProjectOwedStatus, StepError> {
    match procore::on_project(PROCORE, &owed.project_id, user) {
        Ok(true) => Ok(ProjectOwedStatus::Added),
        Ok(false) => Err(refused),
        Err(e) => Err(StepError {
            message: format!(
                "{}; whether they are on the project could not be read either ({})",
                refused.message, e.message
            ),
            ..refused
        }),
    }
}

/// Clears the record's owed call, when it is still the one this item made
/// (a record whose person left, came back or was re-keyed meanwhile is
/// left as it is).
fn settle(owed: &ProjectOwed) -> Result<(), StepError> {
    let made = OwedProject {
        project_id: owed.project_id.clone(),
        action: owed.action,
    };
    let state_key = managed_key(&owed.key);
    let Some(mut record) = sluice_guest::state::get::<Managed>(&state_key)? else {
        return Ok(());
    };
    if record.owed_project != Some(made) {
        return Ok(());
    }
    record.owed_project = None;
    sluice_guest::state::set(&state_key, &record)
}

sluice_guest::step!(run, connections: {
    "procore": "Procore: adds a managed user to the flow's project, or removes one, when an earlier run owes it, and looks the membership up when Procore refuses an add",
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_what_procore_took_is_done() {
        use ProjectAction::{Add, Remove};
        assert_eq!(outcome(Add, 201), Some(ProjectOwedStatus::Added));
        assert_eq!(outcome(Add, 404), None, "an unknown user is not added");
        assert_eq!(outcome(Add, 500), None);
        assert_eq!(outcome(Remove, 204), Some(ProjectOwedStatus::Removed));
        assert_eq!(outcome(Remove, 404), Some(ProjectOwedStatus::NotOnProject));
        assert_eq!(outcome(Remove, 403), None);
    }

    #[test]
    fn the_input_is_an_entry_as_compare_lists_it() {
        let input: Input = serde_json::from_value(json!({
            "owed": {"key": "bo@x.com", "procore_id": 7, "name": "Bo", "project_id": "5", "action": "remove"},
            "permission_template_id": ""
        }))
        .unwrap();
        assert_eq!(input.owed.action, ProjectAction::Remove);
        assert_eq!(input.owed.procore_id.text().as_deref(), Some("7"));
        let wrong = serde_json::from_value::<Input>(json!({
            "owed": {"key": "bo@x.com", "procore_id": 7, "project_id": "5", "action": "join"}
        }));
        assert!(wrong.is_err());
    }
}
