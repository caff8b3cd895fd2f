//! One property of a split input schema ([`super::InputSchema`]), compiled
//! so that a value given as JSON text (a part of another step's output)
//! is checked without becoming one tree.
//!
//! At 100k members the compare step's input holds a list of a hundred
//! thousand people, and the report step's input the whole of compare's
//! output. A property whose schema is a list (`type: array` and `items`,
//! as schemars writes a `Vec`) is checked item by item; one whose schema
//! is a plain object (`properties`, `required`, `additionalProperties`
//! true or false; often behind a `$ref` into `$defs`) field by field.
//! Everything else, and any part whose own shape does not fit (a list
//! too short, a key missing), is made a tree and checked whole, so what
//! is found is always what checking the whole finds.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use super::compile;
use super::flat::Items;
use crate::run::output::{Json, Kind};

/// Keywords that only annotate: they never make a value invalid (the last
/// marks a list its component reads in pages).
const ANNOTATIONS: [&str; 6] = [
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    super::PAGED_KEYWORD,
];

/// The keywords a list checked item by item may have besides annotations.
const LIST: [&str; 4] = ["type", "items", "minItems", "maxItems"];

/// The keywords an object checked field by field may have besides
/// annotations.
const OBJECT: [&str; 4] = ["type", "properties", "required", "additionalProperties"];

/// How deep parts nest: deeper than any schema schemars writes for us.
const MAX_DEPTH: usize = 6;

/// How one value is checked.
pub(super) enum Part {
    /// Made a tree and checked whole.
    Whole(jsonschema::Validator),
    /// A list: `shell` checks all but its items (on as many nulls), then
    /// each item is checked by `items`.
    List {
        whole: jsonschema::Validator,
        shell: jsonschema::Validator,
        items: Box<Part>,
    },
    /// An object: `keys` checks its keys (each property's schema `true`,
    /// on its keys with null values), then each field is checked by its
    /// property's part.
    Object {
        whole: jsonschema::Validator,
        keys: jsonschema::Validator,
        fields: BTreeMap<String, Part>,
    },
}

/// A value to check and where it lies in the step's input.
pub(super) struct Checked<'j> {
    pub json: Json<'j>,
    pub at: super::InputPath,
}

impl Part {
    /// `schema` compiled in parts where it allows, with the root's `defs`;
    /// `None` when it does not compile with them.
    pub(super) fn of(schema: &Value, defs: Option<&Value>) -> Option<Part> {
        Part::at_depth(schema, defs, 0)
    }

    fn at_depth(schema: &Value, defs: Option<&Value>, depth: usize) -> Option<Part> {
        let whole = with_defs(schema, defs)?;
        let target = follow(schema, defs);
        let shaped = |keywords: &[&str]| {
            target.as_object().is_some_and(|map| {
                map.keys()
                    .all(|k| keywords.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()))
            })
        };
        if depth >= MAX_DEPTH {
            return Some(Part::Whole(whole));
        }
        if shaped(&LIST) && target.get("items").is_some() {
            let mut shell = target.clone();
            if let Some(map) = shell.as_object_mut() {
                map.insert("items".to_string(), Value::Bool(true));
            }
            let items = target.get("items")?;
            return Some(match Part::at_depth(items, defs, depth + 1) {
                Some(items) => Part::List {
                    whole,
                    shell: with_defs(&shell, defs)?,
                    items: Box::new(items),
                },
                None => Part::Whole(whole),
            });
        }
        let closed = target
            .get("additionalProperties")
            .is_none_or(Value::is_boolean);
        if let (true, true, Some(Value::Object(properties))) =
            (shaped(&OBJECT), closed, target.get("properties"))
        {
            let mut keys = target.clone();
            if let Some(Value::Object(p)) = keys.get_mut("properties") {
                p.values_mut().for_each(|v| *v = Value::Bool(true));
            }
            let fields = properties
                .iter()
                .map(|(k, v)| Some((k.clone(), Part::at_depth(v, defs, depth + 1)?)))
                .collect::<Option<BTreeMap<_, _>>>();
            return Some(match fields {
                Some(fields) => Part::Object {
                    whole,
                    keys: with_defs(&keys, defs)?,
                    fields,
                },
                None => Part::Whole(whole),
            });
        }
        Some(Part::Whole(whole))
    }

    /// The validator of the whole value.
    pub(super) fn whole(&self) -> &jsonschema::Validator {
        match self {
            Part::Whole(v) | Part::List { whole: v, .. } | Part::Object { whole: v, .. } => v,
        }
    }

    /// Splits `value` into what is checked whole (each with its
    /// validator) and goes on into lists and objects; `whole` receives
    /// each value to check as a tree.
    pub(super) fn check<'j>(
        &self,
        value: Checked<'j>,
        whole: &mut dyn FnMut(&jsonschema::Validator, Checked<'j>),
    ) {
        match self {
            Part::List { shell, items, .. } if value.json.kind() == Kind::Array => {
                let list = value.json.items().unwrap_or_default();
                let nulls = Value::Array(vec![Value::Null; list.len()]);
                if !shell.is_valid(&nulls) {
                    return whole(self.whole(), value);
                }
                for (index, json) in list.into_iter().enumerate() {
                    let at = value.at.index(index);
                    items.check(Checked { json, at }, whole);
                }
            }
            Part::Object { keys, fields, .. } if value.json.kind() == Kind::Object => {
                let entries = value.json.fields().unwrap_or_default();
                let shell = Value::Object(
                    entries
                        .iter()
                        .map(|(k, _)| (k.clone(), Value::Null))
                        .collect(),
                );
                if !keys.is_valid(&shell) {
                    return whole(self.whole(), value);
                }
                for (key, json) in entries {
                    if let Some(part) = fields.get(&key) {
                        let at = value.at.child(&key);
                        part.check(Checked { json, at }, whole);
                    }
                }
            }
            _ => whole(self.whole(), value),
        }
    }
}

/// What a schema that is only a `$ref` into `$defs` (and annotations)
/// refers to; the schema itself otherwise.
fn follow<'s>(schema: &'s Value, defs: Option<&'s Value>) -> &'s Value {
    let Some(map) = schema.as_object() else {
        return schema;
    };
    let only_ref = map
        .keys()
        .all(|k| k == "$ref" || ANNOTATIONS.contains(&k.as_str()));
    let target = map
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs?.get(name));
    match target {
        Some(target) if only_ref => target,
        _ => schema,
    }
}

/// `schema` compiled with the root's `$defs` beside it (a part that has
/// its own `$defs` does not split).
pub(super) fn with_defs(schema: &Value, defs: Option<&Value>) -> Option<jsonschema::Validator> {
    let schema = joined(schema, defs)?;
    compile(&schema).ok()
}

/// A list's `items` schema with the root's `defs`, compiled for both
/// forms of an item ([`Items`]); `None` as for [`with_defs`].
pub(super) fn items(schema: &Value, defs: Option<&Value>) -> Option<Items> {
    let said = with_reached_defs(schema, defs).unwrap_or(Value::Null);
    let schema = joined(schema, defs)?;
    Some(Items::new(compile(&schema).ok()?, &schema, said))
}

/// `schema` with only the root's `defs` it reaches (through `#/$defs/…`
/// references, one def leading to another): all that it says about a
/// value, whatever else its root defines, so two components' schemas of
/// the same list compare equal. `None` when a reference is not a def's
/// name itself (a pointer into one, an escaped name): what it reaches is
/// not followed, so nothing is said to be the same.
fn with_reached_defs(schema: &Value, defs: Option<&Value>) -> Option<Value> {
    let empty = serde_json::Map::new();
    let defs = defs.and_then(Value::as_object).unwrap_or(&empty);
    let mut reached = serde_json::Map::new();
    let mut todo = vec![schema];
    while let Some(part) = todo.pop() {
        let mut refs = Vec::new();
        references(part, &mut refs);
        for reference in refs {
            let name = reference.strip_prefix("#/$defs/")?;
            // A name the resolver would decode (`~1` is `/`) is not looked
            // up as written: not followed.
            if name.contains(['~', '/', '%']) {
                return None;
            }
            let def = defs.get(name)?;
            if !reached.contains_key(name) {
                reached.insert(name.to_string(), def.clone());
                todo.push(def);
            }
        }
    }
    let mut said = schema.clone();
    if let (Value::Object(map), false) = (&mut said, reached.is_empty()) {
        map.insert("$defs".to_string(), Value::Object(reached));
    }
    Some(said)
}

/// The references (`$ref`s) in `schema`.
fn references<'s>(schema: &'s Value, found: &mut Vec<&'s str>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    ("$ref", Some(r)) => found.push(r),
                    _ => references(value, found),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

/// `schema` with the root's `defs` put in, or `None` when it has its own.
fn joined<'s>(schema: &'s Value, defs: Option<&Value>) -> Option<Cow<'s, Value>> {
    match (schema, defs) {
        (Value::Object(map), Some(defs)) if !map.contains_key("$defs") => {
            let mut map = map.clone();
            map.insert("$defs".to_string(), defs.clone());
            Some(Cow::Owned(Value::Object(map)))
        }
        (Value::Object(_), Some(_)) => None,
        _ => Some(Cow::Borrowed(schema)),
    }
}
