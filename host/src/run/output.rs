//! A step's output as the run holds it: the JSON text its component
//! returned, checked once, with the place of each top-level field.
//!
//! At 100k members the members step's output lists a hundred thousand
//! people. As a `serde_json::Value` tree that is several times the size of
//! its text, and it was held for the whole run. A [`StepOutput`] keeps the
//! text alone (shared: events and later steps hold the same `Arc`), and a
//! reference into it (`${steps.members.people}`) reaches a [`Json`] slice
//! of that text: written into the next step's input as it is, walked
//! without building a tree, made a value only when something small needs
//! one (a spliced string, a `for_each` item, a ledger entry).
//!
//! [`ListItems`] is a list an output holds, item by item, shareable beyond
//! the run's borrow: what a component reading a large input list in pages
//! is served from.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Index, Range};
use std::sync::{Arc, OnceLock};

use serde::de::{DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::flow::schema::InputSchema;
use crate::flow::schema::flat::Items;

/// Valid JSON text: a whole output, or a part of one (no surrounding
/// whitespace).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Json<'a>(&'a str);

/// What kind of JSON value a [`Json`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl<'a> Json<'a> {
    /// `text` when it is one valid JSON value (whitespace around it is
    /// dropped).
    pub fn parse(text: &'a str) -> Result<Json<'a>, serde_json::Error> {
        let raw: &RawValue = serde_json::from_str(text)?;
        Ok(Json(raw.get()))
    }

    /// The text, as the component wrote it.
    pub fn text(self) -> &'a str {
        self.0
    }

    pub fn kind(self) -> Kind {
        match self.0.as_bytes().first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') | None => Kind::Null,
            Some(_) => Kind::Number,
        }
    }

    /// The value, as a tree: for the small parts that need one.
    pub fn to_value(self) -> Value {
        // Valid by construction; null only if that were ever not so.
        serde_json::from_str(self.0).unwrap_or(Value::Null)
    }

    /// A string's text, unescaped; `None` for anything else.
    pub fn as_string(self) -> Option<String> {
        match self.kind() {
            Kind::String => serde_json::from_str(self.0).ok(),
            _ => None,
        }
    }

    /// An object's field (the last one, when a key is repeated, as a
    /// parsed object keeps it); `None` for a missing key or a non-object.
    pub fn get(self, key: &str) -> Option<Json<'a>> {
        if self.kind() != Kind::Object {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(self.0);
        de.deserialize_map(FindKey(key)).ok().flatten()
    }

    /// An array's item at `index`; `None` past its end or for a non-array.
    pub fn at(self, index: usize) -> Option<Json<'a>> {
        if self.kind() != Kind::Array {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(self.0);
        de.deserialize_seq(FindIndex(index)).ok().flatten()
    }

    /// Follows a dotted path as a reference does: a field of an object, an
    /// index into a list; `None` when the path leads nowhere.
    pub fn walk(self, path: &[String]) -> Option<Json<'a>> {
        let mut here = self;
        for segment in path {
            here = match here.kind() {
                Kind::Object => here.get(segment)?,
                Kind::Array => here.at(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(here)
    }

    /// An array's items, in order; `None` for a non-array.
    pub fn items(self) -> Option<Vec<Json<'a>>> {
        if self.kind() != Kind::Array {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(self.0);
        de.deserialize_seq(AllItems).ok()
    }

    /// An object's fields, in order (a repeated key once, at its first
    /// place with its last value, as a parsed object keeps it); `None` for
    /// a non-object.
    pub fn fields(self) -> Option<Vec<(String, Json<'a>)>> {
        if self.kind() != Kind::Object {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(self.0);
        de.deserialize_map(AllFields).ok()
    }

    /// How many items an array, or fields an object, holds (0 otherwise).
    pub fn len(self) -> usize {
        let mut de = serde_json::Deserializer::from_str(self.0);
        match self.kind() {
            Kind::Array => de.deserialize_seq(Count).unwrap_or(0),
            Kind::Object => self.fields().map_or(0, |f| f.len()),
            _ => 0,
        }
    }

    pub fn is_empty(self) -> bool {
        match self.kind() {
            Kind::Array | Kind::Object => {
                // After the opening bracket, the closing one (valid JSON).
                let inner = self.0.get(1..).unwrap_or("").trim_start();
                inner.starts_with([']', '}'])
            }
            _ => true,
        }
    }

    /// JSON truthiness for `when`, as [`crate::flow::resolve::truthy`]
    /// judges the value.
    pub fn truthy(self) -> bool {
        match self.kind() {
            Kind::Array | Kind::Object => !self.is_empty(),
            Kind::String => self
                .as_string()
                .is_some_and(|s| !s.is_empty() && s != "false"),
            _ => crate::flow::resolve::truthy(&self.to_value()),
        }
    }

    /// Where this slice lies in `whole`, when it is a part of it.
    fn range_in(self, whole: &str) -> Option<Range<usize>> {
        let start = (self.0.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        let end = start + self.0.len();
        (end <= whole.len()).then_some(start..end)
    }
}

impl fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(80).collect();
        write!(f, "Json({shown})")
    }
}

impl serde::Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

/// A map's key compared with the one sought, without copying it.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// The value of one key of an object.
struct FindKey<'k>(&'k str);

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = Option<Json<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.0))? {
            if matches {
                found = Some(Json(map.next_value::<&RawValue>()?.get()));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// The item of an array at one index.
struct FindIndex(usize);

impl<'de> Visitor<'de> for FindIndex {
    type Value = Option<Json<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut n = 0;
        loop {
            if n == self.0 {
                match seq.next_element::<&RawValue>()? {
                    Some(raw) => found = Some(Json(raw.get())),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            n += 1;
        }
        Ok(found)
    }
}

/// Every item of an array.
struct AllItems;

impl<'de> Visitor<'de> for AllItems {
    type Value = Vec<Json<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(raw) = seq.next_element::<&RawValue>()? {
            items.push(Json(raw.get()));
        }
        Ok(items)
    }
}

/// How many items an array has.
struct Count;

impl<'de> Visitor<'de> for Count {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// Every field of an object, in order, a repeated key kept once.
struct AllFields;

impl<'de> Visitor<'de> for AllFields {
    type Value = Vec<(String, Json<'de>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(String, Json<'de>)> = Vec::new();
        let mut at: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = Json(map.next_value::<&RawValue>()?.get());
            match at.get(&key) {
                Some(&i) => fields[i].1 = value,
                None => {
                    at.insert(key.clone(), fields.len());
                    fields.push((key, value));
                }
            }
        }
        Ok(fields)
    }
}

/// An output's top-level fields, each with its place in the text.
pub(super) type Fields = Vec<(String, Range<usize>)>;

/// A step's output: its JSON text, shared, and where each of its
/// top-level fields lies in it (so `${steps.x.field}` does not read
/// through the rest).
#[derive(Clone)]
pub struct StepOutput(Arc<Inner>);

struct Inner {
    /// The component's text itself (no copy of it is made).
    text: String,
    /// The top-level object's fields, in order; empty for anything else.
    fields: Vec<(String, Range<usize>)>,
    /// The output schema the whole text was found to fit, once it was
    /// ([`StepOutput::fits`]).
    fits: OnceLock<Arc<InputSchema>>,
}

impl Inner {
    fn new(text: String, fields: Fields) -> Inner {
        Inner {
            text,
            fields,
            fits: OnceLock::new(),
        }
    }
}

impl StepOutput {
    /// Says that the whole output fits `schema` (its component's output
    /// schema), as the call found: the lists it holds need not be checked
    /// again against a schema that says the same ([`ListItems::fits`]).
    pub fn fits(&self, schema: &Arc<InputSchema>) {
        let _ = self.0.fits.set(schema.clone());
    }

    /// `text` when it is one valid JSON value, as a `Value` reads it: a
    /// number out of range or a lone surrogate is refused here, where its
    /// step fails naming it, rather than read as `null` by every later
    /// reader (a `when` skipping a step on it, a later step blamed for
    /// it). The error says why not.
    pub fn parse(text: String) -> Result<StepOutput, serde_json::Error> {
        crate::state::json::check(&text)?;
        Self::indexed(text)
    }

    /// `text`, known to be valid JSON, with its top-level fields found.
    fn indexed(text: String) -> Result<StepOutput, serde_json::Error> {
        let len = Json::parse(&text)?.text().len();
        // Whitespace around the value (JSON's is ASCII) is not kept.
        let text = if len == text.len() {
            text
        } else {
            text.trim().to_string()
        };
        let fields = Json(&text)
            .fields()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, value)| Some((key, value.range_in(&text)?)))
            .collect();
        Ok(StepOutput(Arc::new(Inner::new(text, fields))))
    }

    /// An output from its parts, which the caller vouches for: `text` is
    /// one valid JSON value without whitespace around it, and `fields`
    /// are its top-level fields' places, as [`Self::parse`] finds them
    /// (see [`super::splice`], which builds a text from checked parts).
    pub(super) fn from_parts(text: String, fields: Fields) -> StepOutput {
        StepOutput(Arc::new(Inner::new(text, fields)))
    }

    /// The text and its fields' places, taken apart when nothing else
    /// holds this output (else the output itself, unchanged).
    pub(super) fn into_parts(self) -> Result<(String, Fields), StepOutput> {
        match Arc::try_unwrap(self.0) {
            Ok(Inner { text, fields, .. }) => Ok((text, fields)),
            Err(shared) => Err(StepOutput(shared)),
        }
    }

    /// The output of a value the host made (a `for_each` step's).
    pub fn of(value: &Value) -> StepOutput {
        // A `Value` always serialises, and its text always parses.
        StepOutput::indexed(value.to_string()).unwrap_or_else(|_| StepOutput::null())
    }

    /// `null`: the output of a step that was skipped or failed under
    /// `on_error = "continue"`.
    pub fn null() -> StepOutput {
        StepOutput(Arc::new(Inner::new("null".to_string(), Vec::new())))
    }

    /// The whole output.
    pub fn json(&self) -> Json<'_> {
        Json(&self.0.text)
    }

    /// Its text, as the component returned it (without surrounding
    /// whitespace).
    pub fn text(&self) -> &str {
        &self.0.text
    }

    /// The value as a tree: for tests and small outputs only.
    pub fn to_value(&self) -> Value {
        self.json().to_value()
    }

    /// A top-level field.
    pub fn field(&self, key: &str) -> Option<Json<'_>> {
        let range = self.field_range(key)?;
        self.0.text.get(range).map(Json)
    }

    fn field_range(&self, key: &str) -> Option<Range<usize>> {
        let (_, range) = self.0.fields.iter().find(|(k, _)| k == key)?;
        Some(range.clone())
    }

    /// The top-level fields, in order (none when it is not an object).
    pub fn fields(&self) -> impl Iterator<Item = (&str, Json<'_>)> {
        self.0
            .fields
            .iter()
            .filter_map(|(key, range)| Some((key.as_str(), Json(self.0.text.get(range.clone())?))))
    }

    /// What a path reaches (`${steps.x.a.b}` reaches `a.b` here); `None`
    /// when it leads nowhere.
    pub fn walk(&self, path: &[String]) -> Option<Json<'_>> {
        match path.split_first() {
            None => Some(self.json()),
            Some((first, rest)) if self.json().kind() == Kind::Object => {
                self.field(first)?.walk(rest)
            }
            Some(_) => self.json().walk(path),
        }
    }

    /// The items of the list this path reaches, shareable beyond this
    /// borrow; `None` when the path does not reach a list.
    pub fn list_at(&self, path: &[String]) -> Option<ListItems> {
        let list = self.walk(path)?;
        let items = list
            .items()?
            .into_iter()
            .map(|item| item.range_in(&self.0.text))
            .collect::<Option<Vec<_>>>()?;
        Some(ListItems {
            output: self.clone(),
            items: items.into(),
            field: match path {
                [field] if self.json().kind() == Kind::Object => Some(field.clone()),
                _ => None,
            },
        })
    }
}

impl fmt::Debug for StepOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepOutput({} bytes)", self.0.text.len())
    }
}

impl PartialEq<Value> for StepOutput {
    fn eq(&self, other: &Value) -> bool {
        &self.to_value() == other
    }
}

/// A list a step's output holds, item by item: each item's JSON text,
/// shared with the output (nothing is copied).
#[derive(Clone)]
pub struct ListItems {
    output: StepOutput,
    items: Arc<[Range<usize>]>,
    /// The output's top-level field the list is, when it is one.
    field: Option<String>,
}

impl ListItems {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether every item is known to fit `items`: the list is a
    /// top-level field of an output found to fit an output schema whose
    /// list there has items said the same way.
    pub fn fits(&self, items: &Items) -> bool {
        let (Some(field), Some(schema)) = (&self.field, self.output.0.fits.get()) else {
            return false;
        };
        schema
            .items_of_a_fitting_list(field)
            .is_some_and(|checked| checked.says_the_same(items))
    }

    /// The JSON text of the item at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.output.text().get(self.items.get(index)?.clone())
    }

    /// The items from `start`, at most `limit` of them (a page).
    pub fn page(&self, start: usize, limit: usize) -> impl Iterator<Item = &str> {
        let end = start.saturating_add(limit).min(self.items.len());
        let page = self.items.get(start.min(end)..end).unwrap_or(&[]);
        page.iter()
            .filter_map(|r| self.output.text().get(r.clone()))
    }
}

impl ListItems {
    /// The items `keep` keeps, in order, still shared with the output.
    pub fn filter(&self, mut keep: impl FnMut(&str) -> bool) -> ListItems {
        let items: Vec<Range<usize>> = self
            .items
            .iter()
            .filter(|r| self.output.text().get((*r).clone()).is_some_and(&mut keep))
            .cloned()
            .collect();
        ListItems {
            output: self.output.clone(),
            items: items.into(),
            field: self.field.clone(),
        }
    }
}

impl fmt::Debug for ListItems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListItems({} items)", self.items.len())
    }
}

/// Every step's output at the end of a run, each made a tree only when
/// something reads it (a test, the demo's summary): at 100k members
/// making them all trees would need several times their text.
#[derive(Default)]
pub struct Outputs(BTreeMap<String, Kept>);

struct Kept {
    output: StepOutput,
    tree: OnceLock<Value>,
}

impl Outputs {
    pub fn insert(&mut self, step: String, output: StepOutput) {
        let tree = OnceLock::new();
        self.0.insert(step, Kept { output, tree });
    }

    /// A step's output as a tree (made on first asking).
    pub fn get(&self, step: &str) -> Option<&Value> {
        let kept = self.0.get(step)?;
        Some(kept.tree.get_or_init(|| kept.output.to_value()))
    }

    /// A step's output as the run held it.
    pub fn output(&self, step: &str) -> Option<&StepOutput> {
        self.0.get(step).map(|k| &k.output)
    }

    pub fn contains_key(&self, step: &str) -> bool {
        self.0.contains_key(step)
    }

    /// Each step and its output, by step id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StepOutput)> {
        self.0.iter().map(|(step, k)| (step.as_str(), &k.output))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Index<&str> for Outputs {
    type Output = Value;
    /// Like a map's index: a step that has no output is a caller's bug.
    fn index(&self, step: &str) -> &Value {
        match self.get(step) {
            Some(value) => value,
            None => panic!("no output for step `{step}`"),
        }
    }
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, &v.output)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::resolve::{truthy, walk_ref};
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A list is known to fit an input's items only when it is a top-level
    /// field of an output found to fit an output schema whose list there
    /// says the same of its items (whatever else the two roots define).
    #[test]
    fn a_list_fits_an_input_only_as_its_checked_output_schema_says() {
        let person = json!({"type": "object", "properties": {"key": {"type": "string"}},
                            "required": ["key"]});
        let paged = |items: Value, defs: Value| {
            json!({"type": "object", "properties": {"people": {"type": "array",
                "items": items, "x-sluice-paged": true}}, "$defs": defs})
        };
        let output_schema = Arc::new(
            InputSchema::for_output(
                "members",
                &paged(
                    json!({"$ref": "#/$defs/Person"}),
                    json!({"Person": person, "Other": {"type": "integer"}}),
                ),
            )
            .unwrap(),
        );
        let input = |schema: Value| InputSchema::new("compare", &schema).unwrap();
        let same = input(paged(
            json!({"$ref": "#/$defs/Person"}),
            json!({"Person": person, "Group": {"type": "string"}}),
        ));
        let stricter = input(paged(
            json!({"$ref": "#/$defs/Person"}),
            json!({"Person": {"type": "object", "required": ["key", "id"]}}),
        ));
        let (same, stricter) = (
            same.paged_items("people").unwrap(),
            stricter.paged_items("people").unwrap(),
        );
        let output =
            StepOutput::parse(r#"{"people": [{"key": "a"}], "more": {"people": []}}"#.into())
                .unwrap();
        let list = output.list_at(&path("people")).unwrap();
        assert!(!list.fits(same), "not yet found to fit");
        output.fits(&output_schema);
        assert!(list.fits(same));
        assert!(list.filter(|_| true).fits(same));
        assert!(!list.fits(stricter));
        let nested = output.list_at(&path("more.people")).unwrap();
        assert!(!nested.fits(same), "only top-level lists");

        // Not when the producer's list could fit without each item
        // fitting its `items` (its first items checked by `prefixItems`).
        let mut loose = paged(json!({"$ref": "#/$defs/Person"}), json!({"Person": person}));
        loose["properties"]["people"]["prefixItems"] = json!([true]);
        let loose = Arc::new(InputSchema::for_output("members", &loose).unwrap());
        let output = StepOutput::parse(r#"{"people": [42]}"#.into()).unwrap();
        output.fits(&loose);
        assert!(!output.list_at(&path("people")).unwrap().fits(same));

        // Nor when what a reference reaches cannot be told: a pointer
        // into a definition.
        let into = |required: Value| {
            paged(
                json!({"$ref": "#/$defs/Page/properties/person"}),
                json!({"Page": {"properties": {"person": {"type": "object", "required": required}}}}),
            )
        };
        let producer = Arc::new(InputSchema::for_output("members", &into(json!([]))).unwrap());
        let consumer = input(into(json!(["key", "id"])));
        let output = StepOutput::parse(r#"{"people": [{}]}"#.into()).unwrap();
        output.fits(&producer);
        let list = output.list_at(&path("people")).unwrap();
        assert!(!list.fits(consumer.paged_items("people").unwrap()));

        // Nor through a name the resolver decodes (`A~1B` is `A/B`).
        let escaped = |b: Value| {
            paged(
                json!({"$ref": "#/$defs/A~1B"}),
                json!({"A~1B": person, "A/B": b}),
            )
        };
        let producer = Arc::new(InputSchema::for_output("m", &escaped(json!({}))).unwrap());
        let consumer = input(escaped(json!({"required": ["id"]})));
        let output = StepOutput::parse(r#"{"people": [{}]}"#.into()).unwrap();
        output.fits(&producer);
        let list = output.list_at(&path("people")).unwrap();
        assert!(!list.fits(consumer.paged_items("people").unwrap()));

        // Nor from an output that is not an object.
        let output = StepOutput::parse(r#"[[{"key": 1}]]"#.into()).unwrap();
        output.fits(&output_schema);
        let list = output.list_at(&path("0")).unwrap();
        assert!(!list.fits(same));
    }

    /// A path followed on the text reaches what it reaches on the tree,
    /// for fields, indexes, repeated keys, escapes and what is missing.
    #[test]
    fn a_path_on_the_text_reaches_what_it_reaches_on_the_tree() {
        let text = r#" {"a": {"b": [10, {"c": "x\"y"}], "b2": true}, "n": 1.5e3, "k\u00e9": [],
            "dup": 1, "e": {}, "dup": [2], "s": "t \\ u"} "#;
        let output = StepOutput::parse(text.to_string()).unwrap();
        let tree: Value = serde_json::from_str(text).unwrap();
        assert_eq!(output.to_value(), tree);
        for p in [
            "", "a", "a.b", "a.b.0", "a.b.1", "a.b.1.c", "a.b.2", "a.b.x", "a.b2", "n", "n.m",
            "ké", "dup", "dup.0", "e", "s", "zz", "a.b.-1",
        ] {
            let p = path(p);
            let on_text = output.walk(&p);
            let on_tree = walk_ref(&tree, &p);
            assert_eq!(on_text.map(Json::to_value).as_ref(), on_tree, "{p:?}");
            if let (Some(j), Some(v)) = (on_text, on_tree) {
                assert_eq!(j.truthy(), truthy(v), "{p:?}");
                assert_eq!(j.as_string().as_deref(), v.as_str(), "{p:?}");
                let len = v
                    .as_array()
                    .map(Vec::len)
                    .or(v.as_object().map(|o| o.len()));
                assert_eq!(j.len(), len.unwrap_or(0), "{p:?}");
                assert_eq!(j.is_empty(), len.unwrap_or(0) == 0, "{p:?}");
            }
        }
        let names: Vec<&str> = output.fields().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "n", "ké", "dup", "e", "s"]);
        assert_eq!(output.field("dup").unwrap().text(), "[2]");
    }

    #[test]
    fn what_is_not_one_json_value_is_refused() {
        for bad in ["", "{", "[1,]", "{} {}", "nul", "\"\\x\"", "{\"a\":1,}"] {
            assert!(StepOutput::parse(bad.to_string()).is_err(), "{bad:?}");
        }
        for scalar in ["null", "3", "\"x\"", "true"] {
            let output = StepOutput::parse(scalar.to_string()).unwrap();
            assert_eq!(output.fields().count(), 0);
            assert_eq!(output.walk(&path("a")), None);
        }
    }

    /// Truthiness on text is the tree's for every kind of value.
    #[test]
    fn truthiness_on_text_is_the_trees() {
        for v in [
            json!(null),
            json!(false),
            json!(true),
            json!(0),
            json!(0.0),
            json!(2),
            json!(""),
            json!("false"),
            json!("x"),
            json!([]),
            json!([0]),
            json!({}),
            json!({"a": null}),
        ] {
            let text = v.to_string();
            assert_eq!(Json::parse(&text).unwrap().truthy(), truthy(&v), "{v}");
            let spaced = format!("[ {} ]", text.replace(',', " , "));
            let inner = Json::parse(&spaced).unwrap().at(0).unwrap();
            assert_eq!(inner.truthy(), truthy(&v), "{spaced}");
        }
        assert!(Json::parse("[ ]").unwrap().is_empty());
        assert!(Json::parse("{\n}").unwrap().is_empty());
    }

    /// The items of a list are served by page from the output's own text.
    #[test]
    fn a_list_is_served_item_by_item_and_by_page() {
        let people: Vec<Value> = (0..10).map(|i| json!({"key": format!("p{i}")})).collect();
        let output = StepOutput::of(&json!({"n": 10, "people": people}));
        let list = output.list_at(&path("people")).unwrap();
        assert_eq!(list.len(), 10);
        assert_eq!(list.get(3), Some(r#"{"key":"p3"}"#));
        assert_eq!(list.get(10), None);
        let page: Vec<&str> = list.page(8, 5).collect();
        assert_eq!(page, [r#"{"key":"p8"}"#, r#"{"key":"p9"}"#]);
        assert_eq!(list.page(20, 5).count(), 0);
        assert!(output.list_at(&path("n")).is_none());
        assert!(output.list_at(&path("missing")).is_none());
        let nested = output.list_at(&path("people.2.key"));
        assert!(nested.is_none());
    }

    /// Outputs become trees only when read, and read as the trees.
    #[test]
    fn outputs_read_as_trees_when_asked() {
        let mut outputs = Outputs::default();
        outputs.insert("a".into(), StepOutput::of(&json!({"x": [1, 2]})));
        outputs.insert("b".into(), StepOutput::null());
        assert_eq!(outputs["a"]["x"][1], json!(2));
        assert_eq!(outputs.get("b"), Some(&Value::Null));
        assert!(outputs.get("c").is_none());
        assert!(outputs.contains_key("b"));
        let steps: Vec<&str> = outputs.iter().map(|(s, _)| s).collect();
        assert_eq!(steps, ["a", "b"]);
    }
}
