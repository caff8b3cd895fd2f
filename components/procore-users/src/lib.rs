//! The `procore-users` step: every company user in Procore.
//!
//! Procore lists active company users at `companies/{id}/users` and inactive
//! ones separately at `companies/{id}/users/inactive`; both are read, every
//! page (by the `Link` header, then `Total`, else until an empty page).
//! Input `{"company_id"}`; reads through the `procore` connection role.
//! Output `{"users": [{id, login, email_address, first_name, last_name,
//! is_active, created_at?}], "active_count", "inactive_count"}`.
//!
//! Memory: a Procore user record has some thirty fields, of which the sync
//! needs seven. Each page is read typed into those seven and handed to the
//! host at once as part of the `users` list (an [`OutputList`], paged
//! output), so the step holds one page of records, never every user, and
//! never the output's text.

use serde::{Deserialize, Serialize};
use sluice_guest::{Context, JsonSchema, OutputList, StepError};
use sluice_guest_services::procore::{Id, Pages};
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
    /// The Procore company id (a whole number).
    #[schemars(schema_with = "sluice_guest_services::procore::company_id_schema")]
    company_id: Id,
}

/// Every company user.
#[derive(Serialize, JsonSchema)]
struct Output {
    /// Active users first, then inactive ones.
    users: OutputList<ProcoreUser>,
    /// How many are active.
    active_count: usize,
    /// How many are inactive.
    inactive_count: usize,
}

/// A user as either list gives it: the fields the sync reads (the rest of
/// the record is skipped as it is parsed), and `is_active` as stated.
#[derive(Deserialize)]
pub struct Listed {
    id: Id,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    email_address: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    is_active: Option<bool>,
    #[serde(default)]
    created_at: Option<String>,
}

impl Listed {
    /// The user, from the list that says whether it is `active`: the
    /// inactive list may leave out `is_active`, which the list then decides.
    pub fn slim(self, active: bool) -> ProcoreUser {
        ProcoreUser {
            id: self.id,
            login: self.login,
            email_address: self.email_address,
            first_name: self.first_name,
            last_name: self.last_name,
            is_active: self.is_active.unwrap_or(active),
            created_at: self.created_at,
        }
    }
}

fn run(input: Input, _context: &Context) -> Result<Output, StepError> {
    let company = input
        .company_id
        .text()
        .ok_or_else(|| StepError::bad_input("`company_id` is empty"))?;
    let company = sluice_guest::http::segment(&company);
    let mut users = OutputList::new("users");
    let active_url = format!("companies/{company}/users");
    let active_count = read(&mut users, &active_url, true)?;
    let inactive_url = format!("companies/{company}/users/inactive");
    let inactive_count = read(&mut users, &inactive_url, false)?;
    users.finish()?;
    Ok(Output {
        users,
        active_count,
        inactive_count,
    })
}

/// Adds every user of the list at `url` (the `active` one or not) to
/// `users`; returns how many.
fn read(users: &mut OutputList<ProcoreUser>, url: &str, active: bool) -> Result<usize, StepError> {
    let mut pages = Pages::new(PROCORE, url, &[], PER_PAGE);
    let mut count = 0;
    while let Some(page) = pages.next_page::<Listed>()? {
        for user in page.items {
            users.push(&user.slim(active))?;
            count += 1;
        }
    }
    Ok(count)
}

sluice_guest::step!(run, connections: {
    "procore": "Procore: lists the company's users, active and inactive",
});

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(text: &str) -> Listed {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn inactive_list_entries_are_inactive_even_without_the_flag() {
        let u = r#"{"id": 7, "login": "a@x.com", "email_address": "a@x.com", "first_name": "A", "last_name": "B", "vendor": {}}"#;
        assert!(!listed(u).slim(false).is_active);
        assert!(listed(u).slim(true).is_active);
        let stated = u.replace(r#""id": 7"#, r#""id": 7, "is_active": false"#);
        assert!(!listed(&stated).slim(true).is_active);
        assert_eq!(Id::Number(42).text().unwrap(), "42");
        assert_eq!(Id::Text(" 42 ".into()).text().unwrap(), "42");
        assert_eq!(Id::Text("".into()).text(), None);
    }

    #[test]
    fn a_full_record_is_read_into_the_seven_fields_and_nulls_are_absent() {
        let full = r#"{"id": 9, "login": null, "email_address": "b@x.com", "name": "B",
            "first_name": "B", "last_name": null, "is_employee": true, "job_title": "Super",
            "business_phone": null, "vendor": {"id": 1, "name": "V"}, "origin_data": null,
            "permission_template": {"id": 3}, "created_at": "2025-06-01T12:00:00Z"}"#;
        let user = listed(full).slim(true);
        assert_eq!(user.id, Id::Number(9));
        assert_eq!(
            (user.login, user.email_address.as_deref(), user.last_name),
            (None, Some("b@x.com"), None)
        );
        assert_eq!(user.created_at.as_deref(), Some("2025-06-01T12:00:00Z"));
    }

    #[test]
    fn the_users_are_written_as_a_list_of_procore_users() {
        let mut users = OutputList::new("users");
        let user =
            listed(r#"{"id": 7, "login": "a@x.com", "first_name": "Zoë \"Z\""}"#).slim(false);
        users.push(&user).unwrap();
        users.finish().unwrap();
        let out = Output {
            users,
            active_count: 0,
            inactive_count: 1,
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            serde_json::json!({"users": [user], "active_count": 0, "inactive_count": 1})
        );
    }
}
