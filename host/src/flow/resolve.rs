//! Turning templates into JSON values against what is known at that moment.
//!
//! When a flow is bound, params, the environment and the declared secrets
//! are known (connections are resolved then, and every `${env.…}` in a step
//! is replaced by its value); at run time params, step outputs, the current
//! `for_each` item and the run's own fields are. A `${env.X:-default}` whose
//! variable was unset when the flow was bound reads its default.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::Value;

use super::environment::Environment;
use super::model::ValueTemplate;
use super::template::{Part, Reference, Root, Template};
use crate::run::output::{Json, ListItems, StepOutput};

/// What references can see.
#[derive(Default, Clone, Copy)]
pub struct Scope<'a> {
    pub params: Option<&'a BTreeMap<String, Value>>,
    pub env: Option<&'a dyn Environment>,
    /// Declared secrets' values: seen only by connection settings.
    pub secrets: Option<&'a BTreeMap<String, String>>,
    /// Each finished step's output, as the run holds it (JSON text).
    pub steps: Option<&'a BTreeMap<String, StepOutput>>,
    pub item: Option<&'a Value>,
    pub run: Option<&'a Value>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("`{0}` is not available here")]
    Unavailable(String),
}

/// What a reference to nothing reads as.
static NULL: Value = Value::Null;

/// What a template resolved to, borrowed where it lives: a value (a param,
/// the item, a run field, or one made from text), or the JSON text of a
/// part of a step's output, never made a tree here.
#[derive(Debug, Clone)]
pub enum Found<'a> {
    Value(Cow<'a, Value>),
    Json(Json<'a>),
}

impl<'a> Found<'a> {
    /// As a value: a copy of what lives elsewhere, a tree of JSON text.
    pub fn into_value(self) -> Value {
        match self {
            Found::Value(v) => v.into_owned(),
            Found::Json(j) => j.to_value(),
        }
    }

    /// JSON truthiness (see [`truthy`]).
    pub fn truthy(&self) -> bool {
        match self {
            Found::Value(v) => truthy(v),
            Found::Json(j) => j.truthy(),
        }
    }

    /// What a false value is, in words (see [`truthy`]): what a skipped
    /// step's reason says of the `when` condition that did not hold.
    pub fn falsy_words(&self) -> &'static str {
        use crate::run::output::Kind;
        let kind = match self {
            Found::Value(v) => match v.as_ref() {
                Value::Null => Kind::Null,
                Value::Bool(_) => Kind::Bool,
                Value::Number(_) => Kind::Number,
                Value::String(s) => return string_words(s),
                Value::Array(_) => Kind::Array,
                Value::Object(_) => Kind::Object,
            },
            Found::Json(j) => match j.kind() {
                Kind::String => return string_words(&j.as_string().unwrap_or_default()),
                other => other,
            },
        };
        match kind {
            Kind::Null => "null or absent",
            Kind::Bool => "false",
            Kind::Number => "0",
            Kind::String => "empty",
            Kind::Array => "an empty list",
            Kind::Object => "an empty table",
        }
    }

    /// Appends its JSON text to `out`: a step's output as it was written.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Found::Value(v) => out.push_str(&v.to_string()),
            Found::Json(j) => out.push_str(j.text()),
        }
    }

    /// Text as a spliced template reads it: a string's own text, nothing
    /// for null, JSON text for anything else.
    fn splice_into(&self, out: &mut String) {
        match self {
            Found::Value(v) => match v.as_ref() {
                Value::String(s) => out.push_str(s),
                Value::Null => {}
                other => out.push_str(&other.to_string()),
            },
            Found::Json(j) => match j.kind() {
                crate::run::output::Kind::String => {
                    out.push_str(&j.as_string().unwrap_or_default())
                }
                crate::run::output::Kind::Null => {}
                _ => out.push_str(&j.to_value().to_string()),
            },
        }
    }
}

impl<'a> Scope<'a> {
    pub fn resolve(&self, template: &Template) -> Result<Value, ResolveError> {
        self.resolve_in_place(template).map(Found::into_value)
    }

    /// A template that is not one whole reference: its parts as text.
    fn splice(&self, template: &Template) -> Result<String, ResolveError> {
        let mut text = String::new();
        for part in &template.parts {
            match part {
                Part::Literal(s) => text.push_str(s),
                Part::Ref(r, _) => self.lookup_ref(r)?.splice_into(&mut text),
            }
        }
        Ok(text)
    }

    pub fn resolve_string(&self, template: &Template) -> Result<String, ResolveError> {
        Ok(match self.resolve(template)? {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        })
    }

    pub fn resolve_value(&self, template: &ValueTemplate) -> Result<Value, ResolveError> {
        Ok(match template {
            ValueTemplate::Text(t) => self.resolve(t)?,
            ValueTemplate::Literal(v) => v.clone(),
            ValueTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.resolve_value(i))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTemplate::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve_value(v)?)))
                    .collect::<Result<_, ResolveError>>()?,
            ),
        })
    }

    /// A value template resolved, borrowed from where it lives when it is
    /// one whole reference to a param, a step's output, the item or a run
    /// field: `${steps.members.people}` is read in place, not copied.
    pub fn resolve_borrowed(&self, template: &ValueTemplate) -> Result<Found<'a>, ResolveError> {
        match template {
            ValueTemplate::Text(t) => self.resolve_in_place(t),
            other => self
                .resolve_value(other)
                .map(|v| Found::Value(Cow::Owned(v))),
        }
    }

    /// A template resolved, borrowed when it is one whole reference (see
    /// [`Self::resolve_borrowed`]).
    pub fn resolve_in_place(&self, template: &Template) -> Result<Found<'a>, ResolveError> {
        match template.as_single_ref() {
            Some(reference) => self.lookup_ref(reference),
            None => Ok(Found::Value(Cow::Owned(Value::String(
                self.splice(template)?,
            )))),
        }
    }

    /// The items of the list a value template reaches when it is one whole
    /// reference into a step's output (`${steps.members.people}`), shared
    /// with that output; `None` for anything else (then resolve it).
    pub fn list(&self, template: &ValueTemplate) -> Option<ListItems> {
        let ValueTemplate::Text(t) = template else {
            return None;
        };
        let reference = t.as_single_ref()?;
        let Root::Step(id) = &reference.root else {
            return None;
        };
        self.steps?.get(id)?.list_at(&reference.path)
    }

    /// What a reference names. The path is followed where the value lives
    /// and what it reaches is borrowed: `${steps.members.skipped_disabled}`
    /// reaches that field of the output's text, not a list of a million
    /// people beside it. Only the environment and secrets, read as text,
    /// are new values.
    fn lookup_ref(&self, reference: &Reference) -> Result<Found<'a>, ResolveError> {
        let unavailable = |what: &str| ResolveError::Unavailable(what.to_string());
        let path = &reference.path;
        let within =
            |root: &'a Value| Found::Value(Cow::Borrowed(walk_ref(root, path).unwrap_or(&NULL)));
        let owned = |value: Value| Found::Value(Cow::Owned(walk(value, path)));
        Ok(match &reference.root {
            Root::Param(name) => within(
                self.params
                    .and_then(|p| p.get(name))
                    .ok_or_else(|| unavailable(&format!("params.{name}")))?,
            ),
            Root::Env { name, default } => match self.env.and_then(|e| e.var(name)) {
                Some(value) => owned(Value::String(value)),
                None => match default {
                    Some(d) => owned(Value::String(self.resolve_string(d)?)),
                    None => return Err(ResolveError::MissingEnv(name.clone())),
                },
            },
            Root::Secret(name) => owned(
                self.secrets
                    .and_then(|s| s.get(name))
                    .map(|v| Value::String(v.clone()))
                    .ok_or_else(|| unavailable(&format!("secrets.{name}")))?,
            ),
            // A step that was skipped or failed under `continue` reads as null.
            Root::Step(id) => match self.steps.and_then(|s| s.get(id)) {
                Some(output) => output
                    .walk(path)
                    .map_or(Found::Value(Cow::Borrowed(&NULL)), Found::Json),
                None => Found::Value(Cow::Borrowed(&NULL)),
            },
            Root::Item => within(self.item.ok_or_else(|| unavailable("item"))?),
            Root::Run(field) => within(
                self.run
                    .and_then(|r| r.get(field))
                    .ok_or_else(|| unavailable(&format!("run.{field}")))?,
            ),
        })
    }
}

/// Follows a dotted path on a borrowed value; a missing field or index is
/// `None`.
pub fn walk_ref<'v>(mut value: &'v Value, path: &[String]) -> Option<&'v Value> {
    for segment in path {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Follows a dotted path; a missing field or index reads as null.
pub fn walk(mut value: Value, path: &[String]) -> Value {
    for segment in path {
        value = match value {
            Value::Object(mut map) => map.remove(segment).unwrap_or(Value::Null),
            Value::Array(mut items) => match segment.parse::<usize>() {
                Ok(i) if i < items.len() => items.swap_remove(i),
                _ => Value::Null,
            },
            _ => Value::Null,
        };
    }
    value
}

/// A false string in words: empty, or the text "false".
fn string_words(s: &str) -> &'static str {
    if s.is_empty() {
        "empty"
    } else {
        "the text \"false\""
    }
}

/// JSON truthiness for `when`: null, false, 0, "" and empty collections are false.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty() && s != "false",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_reference_keeps_its_type_and_splices_as_text_otherwise() {
        let steps = BTreeMap::from([(
            "diff".to_string(),
            StepOutput::of(&json!({"missing": [1, 2], "n": 2, "s": "t", "z": null})),
        )]);
        let scope = Scope {
            steps: Some(&steps),
            ..Default::default()
        };
        let whole = Template::parse("${steps.diff.missing}").unwrap();
        assert_eq!(scope.resolve(&whole).unwrap(), json!([1, 2]));
        let spliced = Template::parse("n=${steps.diff.n}").unwrap();
        assert_eq!(scope.resolve(&spliced).unwrap(), json!("n=2"));
        let index = Template::parse("${steps.diff.missing.1}").unwrap();
        assert_eq!(scope.resolve(&index).unwrap(), json!(2));
        let texts = Template::parse("${steps.diff.s}-${steps.diff.z}-${steps.diff.missing}");
        assert_eq!(scope.resolve(&texts.unwrap()).unwrap(), json!("t--[1,2]"));
        let missing = Template::parse("${steps.diff.nope}").unwrap();
        assert_eq!(scope.resolve(&missing).unwrap(), json!(null));
        let skipped = Template::parse("${steps.other.x}").unwrap();
        assert_eq!(scope.resolve(&skipped).unwrap(), json!(null));
    }

    /// Following a path on the borrowed value reaches what following it on a
    /// copy does, for fields, indexes and what is missing.
    #[test]
    fn a_path_followed_by_reference_reaches_what_a_copy_does() {
        let value = json!({"a": {"b": [10, {"c": "x"}]}, "n": 1});
        for path in [
            "", "a", "a.b", "a.b.0", "a.b.1.c", "a.b.2", "a.b.x", "n.m", "zz", "a.b.-1",
        ] {
            let path: Vec<String> = path
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            assert_eq!(
                walk_ref(&value, &path).cloned().unwrap_or(Value::Null),
                walk(value.clone(), &path),
                "{path:?}"
            );
        }
    }

    #[test]
    fn env_defaults_nest() {
        let env = BTreeMap::from([("TENANT".to_string(), "t1".to_string())]);
        let scope = Scope {
            env: Some(&env),
            ..Default::default()
        };
        let t = Template::parse("${env.TOKEN_URL:-https://login/${env.TENANT}/token}").unwrap();
        assert_eq!(scope.resolve(&t).unwrap(), json!("https://login/t1/token"));
        let missing = Template::parse("${env.NOPE}").unwrap();
        assert_eq!(
            scope.resolve(&missing),
            Err(ResolveError::MissingEnv("NOPE".into()))
        );
    }

    #[test]
    fn truthiness() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(""),
            json!([]),
            json!({}),
            json!("false"),
        ] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!("x"),
            json!([0]),
            json!({"a": 1}),
        ] {
            assert!(truthy(&v), "{v}");
        }
    }
}
