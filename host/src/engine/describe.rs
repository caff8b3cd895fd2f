//! A component's `describe` export: what it is, the JSON Schemas of its
//! input and output, and the connection roles it uses. Optional in the
//! contract; called at most once per component (the engine caches the
//! answer with the prepared component), in an instance of its own that can
//! call nothing. The answer is the flow's [`Description`]: what validation
//! checks a step against is exactly what the component said.

use serde_json::Value;

use super::bindings::types;
use crate::flow::{ConnectionRole, Description};

/// Checks what `describe` returned: both schemas must be JSON objects (or
/// `true`), and roles must be distinct names a flow can write.
pub(super) fn from_wit(d: types::Description) -> Result<Description, String> {
    let schema = |which: &str, text: &str| -> Result<Value, String> {
        match serde_json::from_str::<Value>(text) {
            Ok(v @ (Value::Object(_) | Value::Bool(true))) => Ok(v),
            Ok(_) => Err(format!("its {which} schema is not a JSON Schema object")),
            Err(e) => Err(format!("its {which} schema is not JSON: {e}")),
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for c in &d.connections {
        if !valid_role(&c.role) {
            return Err(format!(
                "its connection role `{}` is not lower-case letters, digits, `-` and `_`",
                c.role
            ));
        }
        if !seen.insert(c.role.as_str()) {
            return Err(format!("it declares connection role `{}` twice", c.role));
        }
    }
    let input_schema = schema("input", &d.input_schema)?;
    object_input(&input_schema)?;
    Ok(Description {
        input_schema,
        output_schema: schema("output", &d.output_schema)?,
        connections: d
            .connections
            .into_iter()
            .map(|c| ConnectionRole {
                role: c.role,
                summary: c.summary,
            })
            .collect(),
        name: d.name,
        version: d.version,
        summary: d.summary,
    })
}

/// A step's `with` is always a table: an input schema whose `type`
/// leaves objects out could never be met, and is the component's mistake,
/// not the flow's.
fn object_input(schema: &Value) -> Result<(), String> {
    let allows_object = match schema.get("type") {
        None => true,
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        Some(_) => false,
    };
    match allows_object {
        true => Ok(()),
        false => Err(format!(
            "its input schema says `type` {}, but a step's input is always an object (the flow's `with` table): describe the input as an object",
            schema["type"]
        )),
    }
}

fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_input_schema_must_allow_an_object() {
        assert!(object_input(&json!(true)).is_ok());
        assert!(object_input(&json!({"properties": {}})).is_ok());
        assert!(object_input(&json!({"type": "object"})).is_ok());
        assert!(object_input(&json!({"type": ["object", "null"]})).is_ok());
        let e = object_input(&json!({"type": "array"})).unwrap_err();
        assert!(
            e.contains("`type` \"array\"") && e.contains("always an object"),
            "{e}"
        );
    }
}
