//! One item of a list, read from its JSON text only to be checked
//! ([`Flat`]): every value in one flat list of nodes, strings borrowed
//! from the text wherever they hold no escape.
//!
//! A paged list's items are checked one by one as they are served, and
//! each item a component appends to a paged output list as it arrives: at
//! 100k members some 350,000 items per run. Made a `serde_json::Value`
//! each, an item costs an allocation per string and a hash map per object
//! (more than the check itself); read flat it costs one vector. `jsonschema`
//! checks this form as it checks a `Value` (its custom representations:
//! `jsonschema::options_for`), and a text it reads differently from a
//! `Value` (an object with a key twice) is not read flat at all
//! ([`Doc::parse`] says `None`), so the caller checks a `Value` instead.

use std::borrow::Cow;
use std::fmt;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// The representation `jsonschema` validators of flat items are built for
/// (`jsonschema::options_for::<Flat>()`).
pub struct Flat;

/// A JSON text read flat: its values in document order, each container
/// followed by its members.
pub struct Doc<'t> {
    nodes: Vec<Slot<'t>>,
}

/// One value, with its key when it is an object's member.
struct Slot<'t> {
    key: Cow<'t, str>,
    leaf: Leaf<'t>,
    /// The index just past this value and everything inside it: where its
    /// next sibling is.
    next: u32,
}

enum Leaf<'t> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'t, str>),
    /// A list of this many items.
    Array(u32),
    /// An object of this many members, no key twice.
    Object(u32),
}

impl<'t> Doc<'t> {
    /// `text` read flat, or `None` when it is not one JSON value or when
    /// it has an object with a key twice (which a `Value` keeps once).
    pub fn parse(text: &'t str) -> Option<Doc<'t>> {
        let mut nodes = Vec::with_capacity(16);
        let mut de = serde_json::Deserializer::from_str(text);
        NodeSeed::from(&mut nodes).deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(Doc { nodes })
    }

    /// The value the text is.
    pub fn root(&self) -> FlatNode<'_> {
        FlatNode { doc: self, at: 0 }
    }
}

/// Reads one value (with its key, for a member) into the nodes.
struct NodeSeed<'n, 't> {
    nodes: &'n mut Vec<Slot<'t>>,
    key: Cow<'t, str>,
}

impl<'n, 't> From<&'n mut Vec<Slot<'t>>> for NodeSeed<'n, 't> {
    fn from(nodes: &'n mut Vec<Slot<'t>>) -> Self {
        NodeSeed {
            nodes,
            key: Cow::Borrowed(""),
        }
    }
}

impl<'de: 't, 't> DeserializeSeed<'de> for NodeSeed<'_, 't> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'t> NodeSeed<'_, 't> {
    fn push(self, leaf: Leaf<'t>) {
        let next = self.nodes.len() as u32 + 1;
        self.nodes.push(Slot {
            key: self.key,
            leaf,
            next,
        });
    }
}

impl<'de: 't, 't> Visitor<'de> for NodeSeed<'_, 't> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(Leaf::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(Leaf::Number(v.into()));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(Leaf::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // As a `Value` reads it: a number that is not finite is null.
        match Number::from_f64(v) {
            Some(n) => self.push(Leaf::Number(n)),
            None => self.push(Leaf::Null),
        }
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.push(Leaf::String(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.push(Leaf::String(Cow::Owned(v.to_string())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.push(Leaf::String(Cow::Owned(v)));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.push(Leaf::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.push(Leaf::Null);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let NodeSeed { nodes, key } = self;
        let at = nodes.len();
        nodes.push(Slot {
            key,
            leaf: Leaf::Array(0),
            next: 0,
        });
        let mut len = 0u32;
        while seq
            .next_element_seed(NodeSeed::from(&mut *nodes))?
            .is_some()
        {
            len += 1;
        }
        let next = nodes.len() as u32;
        nodes[at].leaf = Leaf::Array(len);
        nodes[at].next = next;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let NodeSeed { nodes, key } = self;
        let at = nodes.len();
        nodes.push(Slot {
            key,
            leaf: Leaf::Object(0),
            next: 0,
        });
        let mut len = 0u32;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let seed = NodeSeed {
                nodes: &mut *nodes,
                key,
            };
            map.next_value_seed(seed)?;
            len += 1;
        }
        let next = nodes.len() as u32;
        nodes[at].leaf = Leaf::Object(len);
        nodes[at].next = next;
        if has_duplicate(nodes, at) {
            // Not read flat: the caller reads a `Value`, which keeps one.
            return Err(serde::de::Error::custom("a key twice"));
        }
        Ok(())
    }
}

/// Whether the object at `at` has a key twice: each pair compared in
/// place for a small object (most are), a set for a large one.
fn has_duplicate(nodes: &[Slot<'_>], at: usize) -> bool {
    let members = Members {
        nodes,
        at: at + 1,
        end: nodes[at].next as usize,
    };
    if matches!(nodes[at].leaf, Leaf::Object(n) if n > 16) {
        let mut seen = std::collections::HashSet::new();
        return !members.clone().all(|i| seen.insert(&*nodes[i].key));
    }
    let mut rest = members;
    while let Some(i) = rest.next() {
        if rest.clone().any(|j| nodes[j].key == nodes[i].key) {
            return true;
        }
    }
    false
}

/// The indices of a container's members, in order.
#[derive(Clone)]
struct Members<'n, 't> {
    nodes: &'n [Slot<'t>],
    at: usize,
    end: usize,
}

impl Iterator for Members<'_, '_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let here = self.at;
        (here < self.end).then(|| {
            self.at = self.nodes[here].next as usize;
            here
        })
    }
}

/// A member's key: borrowed unless it had to be unescaped.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// A value of a [`Doc`], as `jsonschema` reads it.
#[derive(Clone, Copy)]
pub struct FlatNode<'a> {
    doc: &'a Doc<'a>,
    at: u32,
}

impl<'a> FlatNode<'a> {
    fn slot(&self) -> &'a Slot<'a> {
        &self.doc.nodes[self.at as usize]
    }

    /// The indices inside this container, each member in turn.
    fn children(self) -> Children<'a> {
        Children {
            doc: self.doc,
            at: self.at + 1,
            end: self.slot().next,
        }
    }
}

/// The members of an object or the items of a list.
#[derive(Clone)]
pub struct Children<'a> {
    doc: &'a Doc<'a>,
    at: u32,
    end: u32,
}

impl<'a> Iterator for Children<'a> {
    type Item = FlatNode<'a>;

    fn next(&mut self) -> Option<FlatNode<'a>> {
        if self.at >= self.end {
            return None;
        }
        let node = FlatNode {
            doc: self.doc,
            at: self.at,
        };
        self.at = node.slot().next;
        Some(node)
    }
}

/// An object's members, as `jsonschema` iterates them.
pub struct MembersIter<'a>(Children<'a>);

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, FlatNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|n| (&*n.slot().key, n))
    }
}

impl Json for Flat {
    type Node<'a> = FlatNode<'a>;
    type PreparedKey = String;
    // Objects are short lists of members: scanning them beats lookups.
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;
    type StringBuffer = ();

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(FlatNode<'_>) -> T) -> T {
        let doc = Doc {
            nodes: vec![Slot {
                key: Cow::Borrowed(""),
                leaf: Leaf::String(Cow::Borrowed(string)),
                next: 1,
            }],
        };
        f(doc.root())
    }
}

impl<'a> Node<'a, Flat> for FlatNode<'a> {
    type Object = FlatNode<'a>;
    type Array = FlatNode<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<FlatNode<'a>> {
        matches!(self.slot().leaf, Leaf::Object(_)).then_some(*self)
    }

    fn as_array(&self) -> Option<FlatNode<'a>> {
        matches!(self.slot().leaf, Leaf::Array(_)).then_some(*self)
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match &self.slot().leaf {
            Leaf::String(s) => Some(Cow::Borrowed(&**s)),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match &self.slot().leaf {
            Leaf::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.slot().leaf {
            Leaf::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.slot().leaf, Leaf::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.slot().leaf {
            Leaf::Null => JsonType::Null,
            Leaf::Bool(_) => JsonType::Boolean,
            Leaf::Number(_) => JsonType::Number,
            Leaf::String(_) => JsonType::String,
            Leaf::Array(_) => JsonType::Array,
            Leaf::Object(_) => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // Strings (an `enum` of names, say) compare without a `Value`.
        match (&self.slot().leaf, expected) {
            (Leaf::String(s), _) => expected.as_str() == Some(&**s),
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(value_of(*self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(std::ptr::from_ref(self.slot()) as usize))
    }
}

/// The node as a `Value` (for error messages and other cold paths).
fn value_of(node: FlatNode<'_>) -> Value {
    match &node.slot().leaf {
        Leaf::Null => Value::Null,
        Leaf::Bool(b) => Value::Bool(*b),
        Leaf::Number(n) => Value::Number(n.clone()),
        Leaf::String(s) => Value::String(s.to_string()),
        Leaf::Array(_) => Value::Array(node.children().map(value_of).collect()),
        Leaf::Object(_) => Value::Object(
            node.children()
                .map(|m| (m.slot().key.to_string(), value_of(m)))
                .collect(),
        ),
    }
}

impl<'a> Object<'a, Flat> for FlatNode<'a> {
    type Node = FlatNode<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        match self.slot().leaf {
            Leaf::Object(n) => n as usize,
            _ => 0,
        }
    }

    fn get(&self, key: &String) -> Option<FlatNode<'a>> {
        self.children().find(|m| m.slot().key == key.as_str())
    }

    fn members(&self) -> MembersIter<'a> {
        MembersIter(self.children())
    }
}

impl<'a> Array<'a, Flat> for FlatNode<'a> {
    type Node = FlatNode<'a>;
    type ElementsIter = Children<'a>;

    fn len(&self) -> usize {
        match self.slot().leaf {
            Leaf::Array(n) => n as usize,
            _ => 0,
        }
    }

    fn elements(&self) -> Children<'a> {
        self.children()
    }
}

/// A list's items' schema, compiled for `Value`s (which find and explain
/// every mismatch) and for flat items (which tell quickly that an item
/// fits: nearly every item does).
pub struct Items {
    /// What checks an item made a `Value`.
    pub value: jsonschema::Validator,
    /// The same schema for flat items; `None` if it did not compile so
    /// (then every item is made a `Value`).
    flat: Option<jsonschema::Validator<Flat>>,
    /// What the schema says, with only the definitions it uses
    /// ([`Items::says_the_same`]); null when that cannot be told.
    said: Value,
}

impl Items {
    /// `value`, compiled from `schema`, and `schema` compiled for flat
    /// items with the same options; `said` is the schema with only the
    /// definitions it uses.
    pub fn new(value: jsonschema::Validator, schema: &Value, said: Value) -> Items {
        let flat = super::compile_for::<Flat>(schema).ok();
        Items { value, flat, said }
    }

    /// Whether `other` says what this schema says of an item: an item
    /// that fits one fits the other. A list another step's output schema
    /// checked, item by item, with the same schema as a component's input
    /// schema need not be checked again for that input (100k people read
    /// by `compare` from `members`).
    pub fn says_the_same(&self, other: &Items) -> bool {
        !self.said.is_null() && self.said == other.said
    }

    /// Whether the item `text` is known to fit, without making it a
    /// `Value`. `false` says only that the `Value` check must decide (it
    /// finds the mismatches, or that the text is not read flat).
    pub fn fits(&self, text: &str) -> bool {
        match (&self.flat, Doc::parse(text)) {
            (Some(flat), Some(doc)) => flat.is_valid(doc.root()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A schema like those schemars writes for the shipped lists: `$ref`s
    /// into `$defs`, optional fields as `["string", "null"]`, an `enum`,
    /// integers with bounds, a nested list and `additionalProperties`.
    fn items() -> Items {
        let schema = json!({
            "$ref": "#/$defs/Person",
            "$defs": {
                "Person": {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string", "minLength": 1},
                        "mail": {"type": ["string", "null"]},
                        "status": {"enum": ["adopted", "created"]},
                        "procore_id": {"anyOf": [
                            {"type": "integer", "format": "uint64", "minimum": 0},
                            {"type": "string"}
                        ]},
                        "groups": {"type": "array", "items": {"type": "string"}},
                        "tags": {"type": "object", "additionalProperties": false,
                            "properties": {"a": {"type": "boolean"}}}
                    },
                    "required": ["key"]
                }
            }
        });
        let value = super::super::compile(&schema).unwrap();
        Items::new(value, &schema, schema.clone())
    }

    #[test]
    fn a_flat_item_fits_exactly_when_its_value_does() {
        let items = items();
        let texts = [
            r#"{"key": "a@x.com"}"#,
            r#"{"key": "a@x.com", "mail": null, "status": "adopted", "procore_id": 7}"#,
            r#"{"key": "Zo\u00eb \"Z\"", "procore_id": "7", "groups": ["G\\1", "G2"]}"#,
            r#"{"key": "a", "tags": {"a": true}, "other": [1, {"x": null}]}"#,
            r#"{"key": ""}"#,
            r#"{"mail": "a@x.com"}"#,
            r#"{"key": "a", "status": "gone"}"#,
            r#"{"key": "a", "procore_id": -1}"#,
            r#"{"key": "a", "procore_id": 1.5}"#,
            r#"{"key": "a", "procore_id": 1.0}"#,
            r#"{"key": "a", "groups": ["x", 5]}"#,
            r#"{"key": "a", "tags": {"b": true}}"#,
            r#"{"key": "a", "mail": 5}"#,
            r#"{"key": 5}"#,
            r#"["key"]"#,
            r#""key""#,
            r#"null"#,
        ];
        for text in texts {
            let value: Value = serde_json::from_str(text).unwrap();
            let expected = items.value.is_valid(&value);
            assert_eq!(items.fits(text), expected, "{text}");
        }
    }

    #[test]
    fn a_key_twice_or_a_text_that_is_not_json_is_left_to_the_value_check() {
        let items = items();
        // A `Value` keeps the last `key` (valid); read flat it would be
        // read otherwise, so it is not read flat.
        let twice = r#"{"key": 5, "key": "a@x.com"}"#;
        assert!(Doc::parse(twice).is_none());
        assert!(!items.fits(twice));
        assert!(items.value.is_valid(&serde_json::from_str(twice).unwrap()));
        // A large object is told by a set, a small one pair by pair.
        let wide = |last: &str| {
            let fields: Vec<String> = (0..40).map(|i| format!(r#""f{i}": {i}"#)).collect();
            format!(r#"{{"key": "a", {}, "{last}": 0}}"#, fields.join(", "))
        };
        assert!(Doc::parse(&wide("f39")).is_none());
        assert!(items.fits(&wide("g")));
        assert!(Doc::parse(r#"{"a": {}, "b": [], "c": {"d": 1, "e": {"d": 2}}}"#).is_some());
        assert!(Doc::parse(r#"{"a": {}, "b": [], "c": {"d": 1, "e": 2, "d": 3}}"#).is_none());
        for text in [r#"{"key": "a"} x"#, r#"{"key": "a",}"#, ""] {
            assert!(Doc::parse(text).is_none(), "{text}");
            assert!(!items.fits(text), "{text}");
        }
    }

    #[test]
    fn a_flat_document_is_the_value_it_was_read_from() {
        let text = r#"{"a": [1, -2, 2.5, "x\n", true, null, {}], "b": {"c": []}, "d": 18446744073709551615}"#;
        let doc = Doc::parse(text).unwrap();
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(doc.root().to_value().into_owned(), expected);
        let root = doc.root();
        let object = root.as_object().unwrap();
        assert_eq!(Object::len(&object), 3);
        let a = object.get(&"a".to_string()).unwrap().as_array().unwrap();
        assert_eq!(Array::len(&a), 7);
        let kinds: Vec<JsonType> = a.elements().map(|n| n.json_type()).collect();
        assert_eq!(
            kinds,
            [
                JsonType::Number,
                JsonType::Number,
                JsonType::Number,
                JsonType::String,
                JsonType::Boolean,
                JsonType::Null,
                JsonType::Object
            ]
        );
        let names: Vec<&str> = object.members().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert!(object.get(&"z".to_string()).is_none());
    }
}
