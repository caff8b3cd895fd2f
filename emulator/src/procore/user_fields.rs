//! The `user` object of Procore's "Create company user" body, as Procore's
//! reference documents it: every field with its JSON type, and the two it
//! requires. `tests/documented/procore_create_company_user.json` holds the
//! documented table with its source; `tests/documented.rs` holds this list
//! to it. Procore says a request with missing required fields or invalid
//! parameter values is a 400 Bad Request, and says nothing of fields it
//! does not list, so those are neither refused nor used.

use serde_json::{Map, Value, json};

/// The JSON type Procore documents for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Boolean,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Integer => "an integer",
            Kind::Boolean => "a boolean",
        }
    }

    /// Whether `value` is of this type. Null stands for "not given": the
    /// reference does not say Procore refuses it for an optional field.
    fn fits(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string() || value.is_null(),
            Kind::Integer => value.is_i64() || value.is_u64() || value.is_null(),
            Kind::Boolean => value.is_boolean() || value.is_null(),
        }
    }
}

/// The documented fields of `user`, in the reference's order.
pub const FIELDS: &[(&str, Kind)] = &[
    ("first_name", Kind::String),
    ("last_name", Kind::String),
    ("job_title", Kind::String),
    ("address", Kind::String),
    ("city", Kind::String),
    ("zip", Kind::String),
    ("business_phone", Kind::String),
    ("business_phone_extension", Kind::Integer),
    ("mobile_phone", Kind::String),
    ("fax_number", Kind::String),
    ("email_address", Kind::String),
    ("email_signature", Kind::String),
    ("is_active", Kind::Boolean),
    ("is_employee", Kind::Boolean),
    ("employee_id", Kind::String),
    ("notes", Kind::String),
    ("country_code", Kind::String),
    ("state_code", Kind::String),
    ("initials", Kind::String),
    ("origin_id", Kind::String),
    ("origin_data", Kind::String),
    ("vendor_id", Kind::Integer),
    ("default_permission_template_id", Kind::Integer),
    ("company_permission_template_id", Kind::Integer),
    ("work_classification_id", Kind::Integer),
    ("avatar", Kind::String),
];

/// The fields Procore requires.
pub const REQUIRED: &[&str] = &["last_name", "email_address"];

/// What is wrong with a user to create, by field (`{"vendor_id": ["must
/// be an integer"]}`): a documented field of another type, a required
/// field absent, null or blank, an email address that is not one.
/// Empty when Procore would take it.
pub fn problems(user: &Value) -> Map<String, Value> {
    let mut out = type_problems(user);
    if let Some(email) = user.get("email_address").and_then(Value::as_str)
        && !email.trim().is_empty()
        && !is_email(email.trim())
    {
        out.insert("email_address".into(), json!(["is invalid"]));
    }
    for name in REQUIRED {
        let blank = user
            .get(name)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty());
        if blank && !out.contains_key(*name) {
            out.insert((*name).into(), json!(["can't be blank"]));
        }
    }
    out
}

/// The documented fields of `user` (a create or an update) that hold a
/// value of another type, by field.
pub fn type_problems(user: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, kind) in FIELDS {
        if let Some(value) = user.get(name)
            && !kind.fits(value)
        {
            out.insert((*name).into(), json!([format!("must be {}", kind.name())]));
        }
    }
    out
}

/// Whether `text` has the shape of an email address (Procore's reference
/// gives `email_address` the `email` format): one `@` between a local part
/// and a dotted domain, no spaces.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let labels_ok = domain.split('.').all(|l| !l.is_empty());
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && labels_ok
        && !text.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_body_has_no_problems_and_unlisted_fields_are_not_refused() {
        let user = json!({"last_name": "L", "email_address": "a@x.com",
            "vendor_id": 7, "is_active": true, "job_title": null, "login": 3});
        assert!(problems(&user).is_empty());
    }

    #[test]
    fn wrong_types_and_blank_required_fields_are_named() {
        let user = json!({"last_name": " ", "vendor_id": "7", "is_employee": "true"});
        let p = problems(&user);
        let names: std::collections::BTreeSet<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["email_address", "is_employee", "last_name", "vendor_id"].into()
        );
        assert_eq!(p["vendor_id"], json!(["must be an integer"]));
        assert_eq!(p["last_name"], json!(["can't be blank"]));
    }

    #[test]
    fn an_email_address_that_is_not_one_is_invalid() {
        for good in [
            "a@x.com",
            " Ann.Lee@Contoso.co.uk ",
            "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        ] {
            let user = json!({"last_name": "L", "email_address": good});
            assert!(problems(&user).is_empty(), "{good}");
        }
        for bad in [
            "not-an-email",
            "a@x",
            "@x.com",
            "a@@x.com",
            "a b@x.com",
            "a@x..com",
        ] {
            let user = json!({"last_name": "L", "email_address": bad});
            assert_eq!(
                problems(&user)["email_address"],
                json!(["is invalid"]),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_update_is_checked_for_types_only() {
        assert!(type_problems(&json!({"is_active": false})).is_empty());
        assert_eq!(
            type_problems(&json!({"is_active": "false"}))["is_active"],
            json!(["must be a boolean"])
        );
    }
}
