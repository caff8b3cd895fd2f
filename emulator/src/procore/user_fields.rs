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

/// What is wrong with `user`, by field (`{"vendor_id": ["must be an
/// integer"]}`): a documented field of another type, a required field
/// absent, null or blank. Empty when Procore would take it.
pub fn problems(user: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, kind) in FIELDS {
        if let Some(value) = user.get(name)
            && !kind.fits(value)
        {
            out.insert((*name).into(), json!([format!("must be {}", kind.name())]));
        }
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
}
