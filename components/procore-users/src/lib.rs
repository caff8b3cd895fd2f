//! The `procore-users` step: every company user in Procore.
//!
//! Procore lists active company users at `companies/{id}/users` and inactive
//! ones separately at `companies/{id}/users/inactive`; both are read, every
//! page (by the `Link` header, then `Total`, else until an empty page).
//! Input `{"company_id"}`; reads through the `procore` connection role.
//! Output `{"users": [{id, login, email_address, first_name, last_name,
//! is_active}], "active_count", "inactive_count"}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_guest::{Context, JsonSchema, StepError};
use sluice_guest_services::procore::{self, Id};
use sluice_guest_services::sync::ProcoreUser;

/// Well under the 10,000 Procore documents as the most `per_page` may ask
/// (and the 2,000 it recommends), so a 100k-user company costs about a
/// hundred requests of its hourly budget rather than a thousand. A server
/// that pages by fewer is fine: the paging headers say when to stop.
const PER_PAGE: usize = 1000;

/// The connection role this component reads through.
const PROCORE: &str = "procore";

/// Which company.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The Procore company id.
    company_id: Id,
}

/// Every company user.
#[derive(Serialize, JsonSchema)]
struct Output {
    /// Active users first, then inactive ones.
    users: Vec<ProcoreUser>,
    /// How many are active.
    active_count: usize,
    /// How many are inactive.
    inactive_count: usize,
}

/// A user from one of the two lists; the inactive list may leave out
/// `is_active`, which the list then decides.
pub fn slim(user: Value, active: bool) -> Result<ProcoreUser, StepError> {
    let stated = user.get("is_active").and_then(Value::as_bool);
    let mut slim: ProcoreUser = serde_json::from_value(user).map_err(|e| {
        StepError::internal(format!("Procore listed a user this step cannot read: {e}"))
            .with_code("bad-response")
    })?;
    slim.is_active = stated.unwrap_or(active);
    Ok(slim)
}

fn run(input: Input, _context: &Context) -> Result<Output, StepError> {
    let company = input
        .company_id
        .text()
        .ok_or_else(|| StepError::bad_input("`company_id` is empty"))?;
    let company = sluice_guest::http::segment(&company);
    let active = procore::all(
        PROCORE,
        &format!("companies/{company}/users"),
        &[],
        PER_PAGE,
    )?;
    let inactive = procore::all(
        PROCORE,
        &format!("companies/{company}/users/inactive"),
        &[],
        PER_PAGE,
    )?;
    let (active_count, inactive_count) = (active.len(), inactive.len());
    let users = active
        .into_iter()
        .map(|u| slim(u, true))
        .chain(inactive.into_iter().map(|u| slim(u, false)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Output {
        users,
        active_count,
        inactive_count,
    })
}

sluice_guest::step!(run, connections: {
    "procore": "Procore: lists the company's users, active and inactive",
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inactive_list_entries_are_inactive_even_without_the_flag() {
        let u = json!({"id": 7, "login": "a@x.com", "email_address": "a@x.com", "first_name": "A", "last_name": "B", "vendor": {}});
        assert!(!slim(u.clone(), false).unwrap().is_active);
        assert!(slim(u.clone(), true).unwrap().is_active);
        let mut stated = u;
        stated["is_active"] = json!(false);
        assert!(!slim(stated, true).unwrap().is_active);
        assert_eq!(Id::Number(42).text().unwrap(), "42");
        assert_eq!(Id::Text(" 42 ".into()).text().unwrap(), "42");
        assert_eq!(Id::Text("".into()).text(), None);
    }
}
