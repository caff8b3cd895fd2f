//! The `procore-users` step: every company user in Procore.
//!
//! Procore lists active company users at `companies/{id}/users` and inactive
//! ones separately at `companies/{id}/users/inactive`; both are read, every
//! page (by the `Link` header, then `Total`, else until an empty page).
//! Input `{"company_id"}`.
//! Output `{"users": [{id, login, email_address, first_name, last_name,
//! is_active}], "active_count", "inactive_count"}`.

use sluice_guest::paging::procore_all;
use sluice_guest::{StepError, Value, bad_input, json};

/// Well under the 10,000 Procore documents as the most `per_page` may ask
/// (and the 2,000 it recommends), so a 100k-user company costs about a
/// hundred requests of its hourly budget rather than a thousand. A server
/// that pages by fewer is fine: the paging headers say when to stop.
const PER_PAGE: usize = 1000;

pub fn slim(user: &Value, active: bool) -> Value {
    let field = |name: &str| user.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "id": field("id"),
        "login": field("login"),
        "email_address": field("email_address"),
        "first_name": field("first_name"),
        "last_name": field("last_name"),
        "is_active": user.get("is_active").and_then(Value::as_bool).unwrap_or(active),
    })
}

pub fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn run(input: Value) -> Result<Value, StepError> {
    let company =
        id_text(input.get("company_id")).ok_or_else(|| bad_input("`company_id` is required"))?;
    let connection = input
        .get("connection")
        .and_then(Value::as_str)
        .unwrap_or("procore")
        .to_string();
    let company = sluice_guest::http::segment(&company);
    let active = procore_all(
        &connection,
        &format!("companies/{company}/users"),
        &[],
        PER_PAGE,
    )?;
    let inactive = procore_all(
        &connection,
        &format!("companies/{company}/users/inactive"),
        &[],
        PER_PAGE,
    )?;
    let (active_count, inactive_count) = (active.len(), inactive.len());
    let users: Vec<Value> = active
        .iter()
        .map(|u| slim(u, true))
        .chain(inactive.iter().map(|u| slim(u, false)))
        .collect();
    Ok(json!({ "users": users, "active_count": active_count, "inactive_count": inactive_count }))
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_list_entries_are_inactive_even_without_the_flag() {
        let u = json!({"id": 7, "login": "a@x.com", "email_address": "a@x.com", "first_name": "A", "last_name": "B", "vendor": {}});
        assert_eq!(slim(&u, false)["is_active"], json!(false));
        assert_eq!(slim(&u, true)["is_active"], json!(true));
        assert_eq!(id_text(Some(&json!(42))).unwrap(), "42");
        assert_eq!(id_text(Some(&json!(" 42 "))).unwrap(), "42");
        assert_eq!(id_text(Some(&json!(""))), None);
    }
}
