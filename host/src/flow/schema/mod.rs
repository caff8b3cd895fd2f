//! A component's input schema, and what a `with` that does not fit it is
//! told.
//!
//! [`InputSchema`] compiles a component's input JSON Schema (draft 2020-12,
//! with the `jsonschema` crate) once, when the flow is compiled. Before the
//! component is called, the run loop checks the resolved input with
//! [`InputSchema::check`]; while compiling, the flow checks what it already
//! knows of a `with` (its literal parts, params) with
//! [`InputSchema::known_mismatches`], and what its references are known to
//! be (another step's output schema) with the walker in [`shape`]. Both
//! describe a problem as a [`Mismatch`]: the path of the offending key and
//! the same one-line message. [`paged_output`] reads the lists a
//! component's output schema marks as handed over in pages. The items of
//! paged lists, in and out, are checked from their text ([`flat`]): made a
//! `Value` only when they do not plainly fit.

pub mod flat;
pub mod paged_output;
mod parts;
pub mod shape;

use std::fmt;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use super::resolve::Found;

/// One step of a path into a JSON value: a key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path into a step's input, shown as `with.user.email` or `with.users.3`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputPath(pub Vec<Segment>);

impl InputPath {
    fn from_pointer(pointer: &str) -> Self {
        let segments = pointer
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(s),
            })
            .collect();
        Self(segments)
    }

    fn child(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_string()));
        path
    }

    fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &InputPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl InputPath {
    /// The path written from `root` (`with.user.email`, `output.count`).
    fn written_from(&self, root: &str) -> String {
        let mut text = root.to_string();
        for segment in &self.0 {
            match segment {
                Segment::Key(k) => text.push_str(&format!(".{k}")),
                Segment::Index(i) => text.push_str(&format!(".{i}")),
            }
        }
        text
    }
}

impl fmt::Display for InputPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written_from("with"))
    }
}

/// A part of a step's input that its component's schema refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The offending key (or the object missing a required key).
    pub path: InputPath,
    pub message: String,
    pub hint: String,
}

/// Every mismatch of one input, as the run loop reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|m| m.message.as_str()).collect::<Vec<_>>().join("; "))]
pub struct InputMismatch(pub Vec<Mismatch>);

/// Why an item of a paged list was not served.
#[derive(Debug, thiserror::Error)]
pub enum ItemMisfit {
    #[error("{0}")]
    NotJson(serde_json::Error),
    #[error("{0}")]
    Mismatch(InputMismatch),
}

/// What a compiled schema checks, for the words of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// A step's `with`, before its component is called.
    Input,
    /// What a component returned, against the output schema it describes.
    Output,
}

impl Subject {
    /// What a path into it starts from in messages.
    fn root(self) -> &'static str {
        match self {
            Subject::Input => "with",
            Subject::Output => "output",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Subject::Input => "input",
            Subject::Output => "output",
        }
    }
}

/// A component's input schema, compiled (or its output schema: see
/// [`InputSchema::for_output`]).
pub struct InputSchema {
    subject: Subject,
    component: String,
    schema: Value,
    validator: jsonschema::Validator,
    /// The same schema split by key, when it allows that.
    split: Option<Split>,
}

/// A schema that says nothing about an input object but which keys it
/// has and what each key's value must be (keywords `type: object`,
/// `properties`, `required`, `additionalProperties` true or false, and
/// `$defs` that only `$ref`s of the form `#/$defs/…` use, as schemars
/// writes them), compiled in parts: its keys, and each property's value
/// on its own, with the root's `$defs` (a value given as JSON text is
/// checked in smaller parts still: see [`parts`]). Checking an input part
/// by part finds what checking it whole finds, without the input ever
/// being one value: a step's input can then be written from the outputs
/// it refers to, never copied.
struct Split {
    /// The schema with every property's schema `true`: checks the keys.
    keys: jsonschema::Validator,
    properties: std::collections::BTreeMap<String, parts::Part>,
    /// The properties marked `"x-sluice-paged": true` (lists the component
    /// reads in pages), each with its `items` schema: their items are
    /// checked one by one as they are served, not before the call (unless
    /// another schema that says the same checked them: see
    /// [`crate::run::output::ListItems::fits`]).
    paged: std::collections::BTreeMap<String, flat::Items>,
    /// Those of `paged` whose property says nothing of its items but
    /// `items` (no `prefixItems`, say): a list found to fit the property
    /// has every item fitting `items`.
    items_alone: std::collections::BTreeSet<String>,
}

/// What a paged list's property may say besides its `items` for a list
/// that fits it to have every item fitting them.
const ITEMS_ALONE: [&str; 10] = [
    "type",
    "items",
    "minItems",
    "maxItems",
    PAGED_KEYWORD,
    "title",
    "description",
    "default",
    "examples",
    "$comment",
];

/// The top-level keywords a split schema may have.
const SPLIT_KEYWORDS: [&str; 12] = [
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "title",
    "description",
    "default",
    "examples",
    "type",
    "properties",
    "required",
    "additionalProperties",
];

/// Keywords that tie a part of a schema to another part, or name one, in
/// ways a part compiled on its own would not see.
const TIES: [&str; 5] = [
    "$id",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
];

/// Whether `schema` (below the root) refers to nothing but `#/$defs/…`
/// and names no part of itself.
fn self_contained(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.iter().all(|(k, v)| {
            let tie = TIES.contains(&k.as_str())
                || (k == "$ref" && !v.as_str().is_some_and(|r| r.starts_with("#/$defs/")));
            !tie && self_contained(v)
        }),
        Value::Array(items) => items.iter().all(self_contained),
        _ => true,
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    compile_for(schema)
}

/// [`compile`] for instances in the representation `F`.
fn compile_for<F: jsonschema::json::Json>(
    schema: &Value,
) -> Result<jsonschema::Validator<F>, String> {
    jsonschema::options_for::<F>()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Whether a property's schema marks a list the component reads in pages:
/// `{"type": "array", "items": {…}, "x-sluice-paged": true}`.
fn paged_list(schema: &Value) -> bool {
    schema.get(PAGED_KEYWORD) == Some(&Value::Bool(true))
        && schema.get("type").is_some_and(|t| t == "array")
        && schema.get("items").is_some_and(Value::is_object)
}

/// Whether a resolved entry is a list, or null: what a paged list may be
/// (null is served as no items).
fn is_list_or_null(value: &Found<'_>) -> bool {
    use crate::run::output::Kind;
    match value {
        Found::Value(v) => v.is_array() || v.is_null(),
        Found::Json(j) => matches!(j.kind(), Kind::Array | Kind::Null),
    }
}

/// The keyword of a paged property (the WIT's `paged` interface).
pub const PAGED_KEYWORD: &str = "x-sluice-paged";

impl Split {
    /// The schema in parts, or `None` when it does not allow that.
    fn of(schema: &Value) -> Option<Split> {
        let root = schema.as_object()?;
        let plain = root.keys().all(|k| SPLIT_KEYWORDS.contains(&k.as_str()))
            && root.get("type").is_none_or(|t| t == "object")
            && root
                .get("additionalProperties")
                .is_none_or(Value::is_boolean);
        let below = root.iter().filter(|(k, _)| k.as_str() != "$id");
        if !plain || !below.map(|(_, v)| v).all(self_contained) {
            return None;
        }
        let empty = serde_json::Map::new();
        let properties = match root.get("properties") {
            None => &empty,
            Some(p) => p.as_object()?,
        };
        let mut keys = schema.clone();
        if let Some(Value::Object(p)) = keys.get_mut("properties") {
            p.values_mut().for_each(|v| *v = Value::Bool(true));
        }
        let defs = root.get("$defs");
        let paged: std::collections::BTreeMap<_, _> = properties
            .iter()
            .filter(|(_, v)| paged_list(v))
            .filter_map(|(k, v)| Some((k.clone(), parts::items(v.get("items")?, defs)?)))
            .collect();
        let items_alone = paged
            .keys()
            .filter(|k| {
                let list = properties.get(k.as_str()).and_then(Value::as_object);
                list.is_some_and(|l| l.keys().all(|w| ITEMS_ALONE.contains(&w.as_str())))
            })
            .cloned()
            .collect();
        Some(Split {
            keys: compile(&keys).ok()?,
            properties: properties
                .iter()
                .map(|(k, v)| Some((k.clone(), parts::Part::of(v, defs)?)))
                .collect::<Option<_>>()?,
            paged,
            items_alone,
        })
    }
}

impl fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputSchema")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl InputSchema {
    /// Compiles `schema`; the error says why it is not a usable schema.
    pub fn new(component: &str, schema: &Value) -> Result<Self, String> {
        let validator = compile(schema)?;
        Ok(Self {
            subject: Subject::Input,
            component: component.to_string(),
            schema: schema.clone(),
            validator,
            split: Split::of(schema),
        })
    }

    /// A component's output schema, compiled: [`Self::check_output`]
    /// checks what it returns, in the same parts as an input, and the
    /// messages name `output.…` paths.
    pub fn for_output(component: &str, schema: &Value) -> Result<Self, String> {
        Ok(Self {
            subject: Subject::Output,
            ..Self::new(component, schema)?
        })
    }

    /// Checks a component's output; `handed` names the lists it handed
    /// over in pages, whose items were checked one by one as they came.
    pub fn check_output(
        &self,
        output: &crate::run::output::StepOutput,
        handed: &[&str],
    ) -> Result<(), InputMismatch> {
        if output.json().kind() != crate::run::output::Kind::Object {
            return self.check(&output.to_value());
        }
        let entries: Vec<(&str, Found<'_>)> =
            output.fields().map(|(k, j)| (k, Found::Json(j))).collect();
        self.check_entries_paged(&entries, handed)
    }

    /// The schema as the component gave it.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The run-time check, made before the component is called.
    pub fn check(&self, input: &Value) -> Result<(), InputMismatch> {
        let found = self.mismatches(input, &[]);
        if found.is_empty() {
            Ok(())
        } else {
            Err(InputMismatch(found))
        }
    }

    /// The run-time check of an input object given as its entries (each
    /// value where it lives): part by part when the schema allows it (see
    /// [`Split`]), else on a copy made whole. It finds what [`Self::check`]
    /// finds on the object.
    pub fn check_entries(&self, entries: &[(&str, Found<'_>)]) -> Result<(), InputMismatch> {
        self.check_entries_paged(entries, &[])
    }

    /// The check of one property's value alone (a `with` value known once
    /// the flow is bound to its environment); nothing is checked when the
    /// schema cannot be checked in parts, or does not name the property.
    pub fn check_property(&self, key: &str, value: &Value) -> Result<(), InputMismatch> {
        let Some(part) = self.split.as_ref().and_then(|s| s.properties.get(key)) else {
            return Ok(());
        };
        let found = self.found(part.whole(), value, &InputPath::default().child(key), &[]);
        if found.is_empty() {
            Ok(())
        } else {
            Err(InputMismatch(found))
        }
    }

    /// The properties whose lists the component reads in pages (see the
    /// WIT's `paged`); none when the schema cannot be checked in parts.
    pub fn paged(&self) -> impl Iterator<Item = &str> {
        self.split
            .iter()
            .flat_map(|s| s.paged.keys().map(String::as_str))
    }

    /// The items' schema of the list `key` among [`Self::paged`].
    pub fn paged_items(&self, key: &str) -> Option<&flat::Items> {
        self.split.as_ref()?.paged.get(key)
    }

    /// The items' schema of the list `key` among [`Self::paged`] when a
    /// value that fits this schema has every item of that list fitting it
    /// (its property says nothing else of its items).
    pub fn items_of_a_fitting_list(&self, key: &str) -> Option<&flat::Items> {
        let split = self.split.as_ref()?;
        split
            .items_alone
            .contains(key)
            .then(|| split.paged.get(key))?
    }

    /// [`Self::check_entries`], except that the entries named in `paged`
    /// (lists, among [`Self::paged`]) are left to [`Self::check_item`]:
    /// their items are checked as they are served (unless the producer's
    /// schema already checked them the same way: see `run::paged`).
    pub fn check_entries_paged(
        &self,
        entries: &[(&str, Found<'_>)],
        paged: &[&str],
    ) -> Result<(), InputMismatch> {
        let Some(split) = &self.split else {
            let whole = entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone().into_value()))
                .collect();
            return self.check(&Value::Object(whole));
        };
        let keys = entries
            .iter()
            .map(|(k, _)| (k.to_string(), Value::Null))
            .collect();
        let root = InputPath::default();
        let mut found = self.found(&split.keys, &Value::Object(keys), &root, &[]);
        for (key, value) in entries {
            if paged.contains(key) && split.paged.contains_key(*key) && is_list_or_null(value) {
                continue;
            }
            let Some(part) = split.properties.get(*key) else {
                continue;
            };
            let at = root.child(key);
            match value {
                Found::Value(v) => found.extend(self.found(part.whole(), v, &at, &[])),
                // In parts: only what is checked whole becomes a tree, one
                // at a time (an item of a list, say).
                Found::Json(json) => {
                    part.check(parts::Checked { json: *json, at }, &mut |validator, c| {
                        found.extend(self.found(validator, &c.json.to_value(), &c.at, &[]))
                    })
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found.dedup();
        if found.is_empty() {
            Ok(())
        } else {
            Err(InputMismatch(found))
        }
    }

    /// Checks `item`, at `index` in the paged list `key`, against the
    /// list's `items` schema.
    pub fn check_item(&self, key: &str, index: usize, item: &Value) -> Result<(), InputMismatch> {
        let Some(items) = self.split.as_ref().and_then(|s| s.paged.get(key)) else {
            return Ok(());
        };
        let mut at = InputPath::default().child(key);
        at.0.push(Segment::Index(index));
        let found = self.found(&items.value, item, &at, &[]);
        if found.is_empty() {
            Ok(())
        } else {
            Err(InputMismatch(found))
        }
    }

    /// [`Self::check_item`] of an item given as its JSON text: made a
    /// `Value` only when it is not plain that it fits (see [`flat`]).
    pub fn check_item_text(&self, key: &str, index: usize, item: &str) -> Result<(), ItemMisfit> {
        let Some(items) = self.split.as_ref().and_then(|s| s.paged.get(key)) else {
            return Ok(());
        };
        if items.fits(item) {
            return Ok(());
        }
        let value: Value = serde_json::from_str(item).map_err(ItemMisfit::NotJson)?;
        self.check_item(key, index, &value)
            .map_err(ItemMisfit::Mismatch)
    }

    /// The mismatches of an input only partly known: the parts at
    /// `unknown` hold placeholders, and nothing said about them (or about a
    /// value that contains them) counts, except missing and unexpected keys.
    pub fn known_mismatches(&self, input: &Value, unknown: &[InputPath]) -> Vec<Mismatch> {
        self.mismatches(input, unknown)
    }

    fn mismatches(&self, input: &Value, unknown: &[InputPath]) -> Vec<Mismatch> {
        let mut out = self.found(&self.validator, input, &InputPath::default(), unknown);
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup();
        out
    }

    /// What `validator` finds in `input`, which lies at `at` in the step's
    /// input, unsorted.
    fn found(
        &self,
        validator: &jsonschema::Validator,
        input: &Value,
        at: &InputPath,
        unknown: &[InputPath],
    ) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for error in validator.iter_errors(input) {
            let mut path = at.clone();
            path.0
                .extend(InputPath::from_pointer(error.instance_path().as_str()).0);
            let about_keys = matches!(
                error.kind(),
                ValidationErrorKind::Required { .. }
                    | ValidationErrorKind::AdditionalProperties { .. }
            );
            let touches_unknown = unknown
                .iter()
                .any(|u| u.starts_with(&path) || path.starts_with(u));
            if touches_unknown && !about_keys {
                continue;
            }
            let text = error.to_string();
            out.extend(self.describe(&path, error.kind(), error.instance(), &text));
        }
        out
    }

    fn describe(
        &self,
        path: &InputPath,
        kind: &ValidationErrorKind,
        found: &Value,
        text: &str,
    ) -> Vec<Mismatch> {
        let c = &self.component;
        let noun = self.subject.noun();
        let shown = |path: &InputPath| path.written_from(self.subject.root());
        let one = |path: InputPath, message: String, hint: String| {
            vec![Mismatch {
                path,
                message,
                hint,
            }]
        };
        let at = shown(path);
        match kind {
            ValidationErrorKind::Type { kind } => one(
                path.clone(),
                format!(
                    "`{at}` must be {}, not {} ({noun} of `{c}`)",
                    expected_types(kind),
                    kind_of(found)
                ),
                format!("give `{at}` {}", expected_types(kind)),
            ),
            ValidationErrorKind::Required { property } => {
                let key = property.as_str().unwrap_or_default();
                one(
                    path.clone(),
                    format!("`{at}` has no `{key}`, which `{c}` requires"),
                    format!("add `{key}` to `{at}`"),
                )
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
                .iter()
                .map(|key| Mismatch {
                    path: path.child(key),
                    message: format!("`{}` is not an {noun} of `{c}`", shown(&path.child(key))),
                    hint: self.known_keys_hint(path),
                })
                .collect(),
            ValidationErrorKind::Enum { options } => one(
                path.clone(),
                format!("`{at}` must be one of {options} ({noun} of `{c}`)"),
                "use one of the values listed".to_string(),
            ),
            ValidationErrorKind::Pattern { pattern } => {
                // The field's own words say what it takes better than a
                // regex (a list item's are its list's: only list indexes
                // are stepped over); without them, the regex is all there
                // is to go by.
                let listed = path
                    .0
                    .iter()
                    .rev()
                    .take_while(|s| matches!(s, Segment::Index(_)))
                    .count();
                let said = (path.0.len() - listed..=path.0.len())
                    .rev()
                    .find_map(|depth| {
                        shape::subschema_at(&self.schema, &path.0[..depth])
                            .and_then(|s| s.get("description"))
                            .and_then(Value::as_str)
                    })
                    .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "));
                let mut value = found.to_string();
                if value.chars().count() > 60 {
                    value = value.chars().take(57).collect::<String>() + "...";
                }
                one(
                    path.clone(),
                    format!("`{at}` = {value} is not in the form `{c}` takes ({noun} of `{c}`)"),
                    match said {
                        Some(said) => format!("`{c}` says of `{at}`: {said}"),
                        None => format!("`{at}` must match the pattern `{pattern}`"),
                    },
                )
            }
            ValidationErrorKind::Constant { expected_value } => one(
                path.clone(),
                format!("`{at}` must be {expected_value} ({noun} of `{c}`)"),
                format!("set it to {expected_value}"),
            ),
            _ => one(
                path.clone(),
                format!(
                    "`{at}` does not fit the {noun} of `{c}`: {}",
                    first_line(text)
                ),
                format!("see the component's {noun} schema"),
            ),
        }
    }

    /// The keys the schema allows at `path`, as a hint.
    fn known_keys_hint(&self, path: &InputPath) -> String {
        let keys = shape::property_names(&self.schema, &path.0);
        if keys.is_empty() {
            "remove it".to_string()
        } else {
            format!("remove it; `{}` takes: {}", self.component, keys.join(", "))
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn expected_types(kind: &TypeKind) -> String {
    let names: Vec<&str> = match kind {
        TypeKind::Single(t) => vec![t.as_str()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
    };
    shape::type_names(names.iter().copied())
}

/// "a string", "an integer", … for a JSON value.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::output::StepOutput;
    use serde_json::json;
    use std::borrow::Cow;

    fn schema() -> InputSchema {
        InputSchema::new(
            "procore-users",
            &json!({
                "type": "object",
                "properties": {
                    "company_id": { "type": "integer" },
                    "mode": { "enum": ["all", "active"] },
                    "user": { "$ref": "#/$defs/User" }
                },
                "required": ["company_id"],
                "additionalProperties": false,
                "$defs": { "User": { "type": "object", "properties": { "email": { "type": "string" } } } }
            }),
        )
        .unwrap()
    }

    #[test]
    fn a_fitting_input_passes() {
        assert_eq!(
            schema().check(&json!({"company_id": 42, "mode": "all"})),
            Ok(())
        );
    }

    #[test]
    fn each_mismatch_names_its_path_and_the_expected_type() {
        let e = schema()
            .check(&json!({"company_id": "42", "user": {"email": 5}, "extra": 1}))
            .unwrap_err();
        let messages: Vec<&str> = e.0.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "`with.company_id` must be an integer, not a string (input of `procore-users`)",
                "`with.extra` is not an input of `procore-users`",
                "`with.user.email` must be a string, not an integer (input of `procore-users`)",
            ]
        );
        assert_eq!(
            e.0[1].hint,
            "remove it; `procore-users` takes: company_id, mode, user"
        );
        let e = schema().check(&json!({})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`with` has no `company_id`, which `procore-users` requires"
        );
    }

    /// The author tester's own component said only "see the component's
    /// input schema" of a value its `pattern` refused.
    #[test]
    fn a_pattern_without_words_is_named() {
        let schema = |field: serde_json::Value| {
            InputSchema::new(
                "tagger",
                &json!({"type": "object", "properties": { "tag": field }}),
            )
            .unwrap()
        };
        let bare = schema(json!({"type": "string", "pattern": "^[a-z]+-[0-9]+$"}));
        let e = bare.check(&json!({"tag": "ABC"})).unwrap_err();
        assert_eq!(
            e.0[0].message,
            "`with.tag` = \"ABC\" is not in the form `tagger` takes (input of `tagger`)"
        );
        assert_eq!(
            e.0[0].hint,
            "`with.tag` must match the pattern `^[a-z]+-[0-9]+$`"
        );
        // A field that says what it takes is described in its own words.
        let said = schema(json!({
            "type": "string", "pattern": "^[a-z]+-[0-9]+$",
            "description": "A team and a number, like `ops-7`."
        }));
        let e = said.check(&json!({"tag": "ABC"})).unwrap_err();
        assert_eq!(
            e.0[0].hint,
            "`tagger` says of `with.tag`: A team and a number, like `ops-7`."
        );
        // A list's item is described by its list's words.
        let listed = schema(json!({
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z]+-[0-9]+$"},
            "description": "Teams and numbers, like `ops-7`."
        }));
        let e = listed.check(&json!({"tag": ["ops-7", "ABC"]})).unwrap_err();
        assert_eq!(
            e.0[0].hint,
            "`tagger` says of `with.tag.1`: Teams and numbers, like `ops-7`."
        );
        // …but a field is not described by the object that holds it.
        let held = schema(json!({
            "type": "object",
            "properties": {"code": {"type": "string", "pattern": "^[a-z]+-[0-9]+$"}},
            "description": "Where the team sits."
        }));
        let e = held.check(&json!({"tag": {"code": "ABC"}})).unwrap_err();
        assert_eq!(
            e.0[0].hint,
            "`with.tag.code` must match the pattern `^[a-z]+-[0-9]+$`"
        );
    }

    #[test]
    fn unknown_parts_are_not_judged_but_their_keys_are() {
        let unknown = [InputPath(vec![Segment::Key("company_id".into())])];
        let found = schema().known_mismatches(&json!({"company_id": null, "nope": 1}), &unknown);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].message,
            "`with.nope` is not an input of `procore-users`"
        );
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        assert!(InputSchema::new("x", &json!({"type": 5})).is_err());
    }

    /// Checked by its entries, an input gets exactly what checking it
    /// whole gets: split when the schema allows it (schemars' shape, with
    /// `$defs`), whole otherwise.
    #[test]
    fn checking_entries_finds_what_checking_the_whole_finds() {
        let person = json!({"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]});
        let split = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Input",
            "type": "object",
            "properties": {
                "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
                "count": {"type": "integer", "minimum": 0},
                "mode": {"enum": ["all", "active"]},
                "anything": true
            },
            "required": ["people", "count"],
            "additionalProperties": false,
            "$defs": {"Person": person}
        });
        let mut whole_only = split.clone();
        whole_only["allOf"] = json!([{"required": ["mode"]}]);
        let inputs = [
            json!({"people": [{"email": "a@x"}], "count": 1}),
            json!({"people": [{"email": 5}, {}], "count": -1, "mode": "x", "extra": 1}),
            json!({"people": "none", "anything": [1]}),
            json!({}),
        ];
        for (schema, splits) in [(split, true), (whole_only, false)] {
            let schema = InputSchema::new("compare", &schema).unwrap();
            assert_eq!(schema.split.is_some(), splits);
            for input in &inputs {
                let entries: Vec<(&str, Found)> = input
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.as_str(), Found::Value(Cow::Borrowed(v))))
                    .collect();
                assert_eq!(
                    schema.check_entries(&entries),
                    schema.check(input),
                    "{input}"
                );
                // The same entries as JSON text, as a step's output holds them.
                let output = StepOutput::of(input);
                let entries: Vec<(&str, Found)> =
                    output.fields().map(|(k, j)| (k, Found::Json(j))).collect();
                assert_eq!(
                    schema.check_entries(&entries),
                    schema.check(input),
                    "{input}"
                );
            }
        }
        let referring = json!({"properties": {"a": {"$ref": "#/properties/b"}, "b": {}}});
        assert!(InputSchema::new("x", &referring).unwrap().split.is_none());
    }

    /// A list marked `x-sluice-paged` is left out of the check before the
    /// call, and each item is checked against its `items` schema (with the
    /// root's `$defs`) as it is served, named by its index.
    #[test]
    fn a_paged_list_is_checked_item_by_item() {
        let schema = InputSchema::new(
            "compare",
            &json!({
                "type": "object",
                "properties": {
                    "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}, "x-sluice-paged": true},
                    "others": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
                    "count": {"type": "integer"}
                },
                "$defs": {"Person": {"type": "object", "required": ["email"]}}
            }),
        )
        .unwrap();
        assert_eq!(schema.paged().collect::<Vec<_>>(), ["people"]);
        let bad = json!([{"email": "a"}, {}]);
        let count = json!("x");
        let entries = [
            ("people", Found::Value(Cow::Borrowed(&bad))),
            ("count", Found::Value(Cow::Borrowed(&count))),
        ];
        let found = schema
            .check_entries_paged(&entries, &["people"])
            .unwrap_err();
        assert_eq!(found.0.len(), 1, "{found}");
        assert!(found.to_string().contains("with.count"), "{found}");
        assert!(schema.check_entries(&entries).is_err());
        // Null, served as no items, is left to the call too.
        let null = json!(null);
        let entries = [("people", Found::Value(Cow::Borrowed(&null)))];
        assert!(schema.check_entries_paged(&entries, &["people"]).is_ok());
        assert!(schema.check_entries(&entries).is_err());
        assert!(schema.check_item("people", 0, &bad[0]).is_ok());
        let e = schema.check_item("people", 1, &bad[1]).unwrap_err();
        assert_eq!(e.0[0].path.to_string(), "with.people.1", "{e}");
        assert!(e.to_string().contains("email"), "{e}");
        // Given as text (as items are served), the same answers.
        assert!(
            schema
                .check_item_text("people", 0, r#"{"email": "a"}"#)
                .is_ok()
        );
        let text = schema.check_item_text("people", 1, "{}").unwrap_err();
        assert_eq!(text.to_string(), e.to_string());
        let twice = r#"{"email": 1, "email": 2}"#;
        assert!(schema.check_item_text("people", 2, twice).is_ok());
        assert!(matches!(
            schema.check_item_text("people", 3, "{"),
            Err(ItemMisfit::NotJson(_))
        ));
    }

    /// A value given as JSON text is checked in parts (lists item by
    /// item, objects field by field, through `$ref`s) and gets exactly
    /// what checking the whole input gets, whatever is wrong where.
    #[test]
    fn checking_text_in_parts_finds_what_checking_the_whole_finds() {
        let schema = json!({
            "type": "object",
            "properties": {
                "diff": {"$ref": "#/$defs/Diff", "description": "compare's output"},
                "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}, "minItems": 1},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 2},
                "odd": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true}
            },
            "additionalProperties": false,
            "$defs": {
                "Person": {"type": "object", "properties": {"email": {"type": "string"},
                    "n": {"enum": [1, 2]}}, "required": ["email"], "additionalProperties": false},
                "Diff": {"type": "object", "properties": {
                    "missing": {"type": "array", "items": {"$ref": "#/$defs/Person"}},
                    "count": {"type": "integer", "minimum": 0},
                    "inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
                }, "required": ["missing"]}
            }
        });
        let schema = InputSchema::new("compare", &schema).unwrap();
        let split = schema.split.as_ref().unwrap();
        assert!(matches!(
            split.properties["diff"],
            parts::Part::Object { .. }
        ));
        assert!(matches!(
            split.properties["people"],
            parts::Part::List { .. }
        ));
        assert!(matches!(split.properties["tags"], parts::Part::List { .. }));
        assert!(matches!(split.properties["odd"], parts::Part::Whole(_)));
        let inputs = [
            json!({"diff": {"missing": [{"email": "a"}], "count": 1}, "people": [{"email": "b", "n": 1}],
                "tags": ["x"], "odd": [1, 2]}),
            json!({"diff": {"missing": [{"email": 5}, {}, {"email": "c", "zz": 1}], "count": -1,
                "inner": {"ok": "yes"}, "more": true}, "people": [{"email": "b", "n": 3}, "p"],
                "tags": ["x", 2, "z"], "odd": [1, 1, "k"]}),
            json!({"diff": {"count": 2}, "people": [], "tags": null, "odd": {}}),
            json!({"diff": [], "people": "none", "tags": "t", "odd": null}),
            json!({"diff": null, "people": {"email": "x"}}),
        ];
        for input in &inputs {
            let output = StepOutput::of(input);
            let entries: Vec<(&str, Found)> =
                output.fields().map(|(k, j)| (k, Found::Json(j))).collect();
            let whole = schema.check(input);
            assert_eq!(schema.check_entries(&entries), whole, "{input}");
        }
        assert!(schema.check(&inputs[0]).is_ok());
        assert!(schema.check(&inputs[1]).unwrap_err().0.len() > 8);
    }

    #[test]
    fn a_schema_with_a_foreign_reference_is_not_split() {
        let referring = json!({"properties": {"a": {"$ref": "#/properties/b"}, "b": {}}});
        assert!(InputSchema::new("x", &referring).unwrap().split.is_none());
    }
}
