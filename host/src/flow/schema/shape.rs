//! Reading a JSON Schema for what a value there may be: the subschema at a
//! path (through `properties`, `items`, `prefixItems`, `allOf` and local
//! `$ref`s) and the JSON types it allows. Used where a value is not known
//! yet but its schema is: a reference to another step's output.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Segment;

/// `$ref` chains longer than this are a cycle, or not worth following.
const MAX_REF_DEPTH: usize = 32;

/// The schema `schema` stands for, following local `$ref`s (`#/…`) in `root`.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..MAX_REF_DEPTH {
        let Some(pointer) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        else {
            break;
        };
        match root.pointer(pointer) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

/// The subschema a value at `path` must satisfy, when the schema says.
pub fn subschema_at<'a>(root: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    let mut schema = resolve(root, root);
    for segment in path {
        schema = child(root, schema, segment)?;
    }
    Some(schema)
}

fn child<'a>(root: &'a Value, schema: &'a Value, segment: &Segment) -> Option<&'a Value> {
    let found = match segment {
        Segment::Key(key) => schema.get("properties").and_then(|p| p.get(key)),
        Segment::Index(i) => schema
            .get("prefixItems")
            .and_then(|p| p.get(*i))
            .or_else(|| schema.get("items").filter(|i| i.is_object())),
    };
    if let Some(found) = found {
        return Some(resolve(root, found));
    }
    // A property may be declared in one branch of an `allOf`.
    schema
        .get("allOf")?
        .as_array()?
        .iter()
        .find_map(|branch| child(root, resolve(root, branch), segment))
}

/// Why a reference path leads nowhere in an output schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoField {
    pub field: String,
    /// The fields the schema does declare there.
    pub known: Vec<String>,
    /// Where the value there can hold no such field at all (a list
    /// indexed by a word, a text or number given a field): what it is,
    /// and how many segments of the path lead to it.
    pub holds: Option<(Holds, usize)>,
}

/// A value that can hold nothing at a path's next segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// A list, given a word (its places are 0, 1, …).
    List,
    /// A value without fields (or some of those, or a list), in words:
    /// `an integer`, `a text or a boolean`.
    Value(String),
}

impl NoField {
    /// Where the value holds no such field: why, in words, naming the
    /// value `at` its path (of `path`'s segments) is shown as.
    pub fn holds_nothing_there(&self, at: impl Fn(usize) -> String) -> Option<String> {
        let (holds, depth) = self.holds.as_ref()?;
        let (at, field) = (at(*depth), &self.field);
        Some(match holds {
            Holds::List => format!("`{at}` is a list: `{field}` is not a place in it (0, 1, …)"),
            Holds::Value(what) => format!("`{at}` is {what}, which has no field `{field}`"),
        })
    }
}

/// The subschema at a reference's path into an output: `Ok(None)` when
/// the schema does not say, `Err` when it says the field does not exist
/// (it lists its properties and allows no others).
pub fn output_at<'a>(root: &'a Value, path: &[String]) -> Result<Option<&'a Value>, NoField> {
    let mut schema = resolve(root, root);
    for (depth, segment) in path.iter().enumerate() {
        let as_segment = match segment.parse::<usize>() {
            Ok(i) if schema.get("properties").is_none() => Segment::Index(i),
            _ => Segment::Key(segment.clone()),
        };
        match child(root, schema, &as_segment) {
            Some(next) => schema = next,
            None if closed_object(schema) => {
                return Err(NoField {
                    field: segment.clone(),
                    known: keys(schema),
                    holds: None,
                });
            }
            None => {
                return match holds_no(root, schema, &as_segment) {
                    Some(what) => Err(NoField {
                        field: segment.clone(),
                        known: Vec::new(),
                        holds: Some((what, depth)),
                    }),
                    None => Ok(None),
                };
            }
        }
    }
    Ok(Some(schema))
}

/// What a value of `schema` is when the schema says it can have nothing
/// at `segment`: a text, number or boolean has no fields, a list has
/// places (0, 1, …) and no words. `None` when it may (an object, types
/// the schema leaves open).
fn holds_no(root: &Value, schema: &Value, segment: &Segment) -> Option<Holds> {
    let types = types_of(root, schema)?;
    let types: Vec<&str> = types
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "null")
        .collect();
    let may = |t: &str| match t {
        "object" => true,
        "array" => matches!(segment, Segment::Index(_)),
        _ => false,
    };
    if types.is_empty() || types.iter().any(|t| may(t)) {
        return None;
    }
    if types == ["array"] {
        return Some(Holds::List);
    }
    let words: Vec<&str> = types
        .iter()
        .map(|t| match *t {
            "array" => "a list",
            "string" => "a text",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "a boolean",
            other => other,
        })
        .collect();
    Some(Holds::Value(words.join(" or ")))
}

/// An object schema that lists its properties and allows no others (no
/// `additionalProperties` schema, no `patternProperties`, no branches).
fn closed_object(schema: &Value) -> bool {
    schema.get("properties").is_some_and(Value::is_object)
        && !matches!(schema.get("additionalProperties"), Some(v) if v != &Value::Bool(false))
        && ["patternProperties", "anyOf", "oneOf", "allOf", "$ref"]
            .iter()
            .all(|k| schema.get(k).is_none())
}

fn keys(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The property names the schema declares at `path`.
pub fn property_names(root: &Value, path: &[Segment]) -> Vec<String> {
    subschema_at(root, path).map(keys).unwrap_or_default()
}

/// The JSON types (`"string"`, `"integer"`, …) a schema allows; `None` for any.
pub fn types_of(root: &Value, schema: &Value) -> Option<BTreeSet<String>> {
    types_at_depth(root, schema, 0)
}

fn types_at_depth(root: &Value, schema: &Value, depth: usize) -> Option<BTreeSet<String>> {
    let schema = resolve(root, schema);
    if depth > MAX_REF_DEPTH {
        return None;
    }
    if let Some(t) = schema.get("type") {
        let names: BTreeSet<String> = match t {
            Value::String(s) => [s.clone()].into(),
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str())
                .map(String::from)
                .collect(),
            _ => return None,
        };
        return Some(names);
    }
    if let Some(value) = schema.get("const") {
        return Some([json_type(value).to_string()].into());
    }
    if let Some(Value::Array(values)) = schema.get("enum") {
        return Some(values.iter().map(|v| json_type(v).to_string()).collect());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = schema.get(key) {
            let mut all = BTreeSet::new();
            for branch in branches {
                all.extend(types_at_depth(root, branch, depth + 1)?);
            }
            return Some(all);
        }
    }
    None
}

/// The JSON Schema type name of a value.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value of one of `actual` types may be one of `expected`
/// (an integer is a number; a number may be an integer).
pub fn compatible(expected: &BTreeSet<String>, actual: &BTreeSet<String>) -> bool {
    actual.iter().any(|a| {
        expected.contains(a)
            || (a == "integer" && expected.contains("number"))
            || (a == "number" && expected.contains("integer"))
    })
}

/// "an integer", "a string or null", … for type names.
pub fn type_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let words: Vec<&str> = names
        .into_iter()
        .map(|n| match n {
            "integer" => "an integer",
            "array" => "an array",
            "object" => "an object",
            "string" => "a string",
            "boolean" => "a boolean",
            "number" => "a number",
            "null" => "null",
            _ => "a value",
        })
        .collect();
    words.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn output() -> Value {
        json!({
            "type": "object",
            "properties": {
                "people": { "type": "array", "items": { "$ref": "#/$defs/Person" } },
                "count": { "type": "integer" }
            },
            "$defs": { "Person": { "type": "object", "properties": { "key": { "type": "string" } } } }
        })
    }

    #[test]
    fn paths_follow_properties_items_and_refs() {
        let root = output();
        let key = output_at(&root, &["people".into(), "0".into(), "key".into()]).unwrap();
        assert_eq!(
            types_of(&root, key.unwrap()),
            Some(["string".to_string()].into())
        );
        let count = output_at(&root, &["count".into()]).unwrap().unwrap();
        assert_eq!(types_of(&root, count), Some(["integer".to_string()].into()));
    }

    #[test]
    fn a_field_a_closed_schema_does_not_list_is_named() {
        let root = output();
        let e = output_at(&root, &["peple".into()]).unwrap_err();
        assert_eq!(e.field, "peple");
        assert_eq!(e.known, ["people", "count"]);
        let open = json!({"type": "object", "properties": {"a": {}}, "additionalProperties": true});
        assert_eq!(output_at(&open, &["b".into()]), Ok(None));
    }

    #[test]
    fn integers_are_numbers() {
        let number: BTreeSet<String> = ["number".to_string()].into();
        let integer: BTreeSet<String> = ["integer".to_string()].into();
        let string: BTreeSet<String> = ["string".to_string()].into();
        assert!(compatible(&number, &integer) && compatible(&integer, &number));
        assert!(!compatible(&integer, &string));
        assert_eq!(type_names(["string", "null"]), "a string or null");
    }
}
