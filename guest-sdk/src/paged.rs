//! Input lists read from the host a page at a time (contract 0.2.1).
//!
//! A list of a million people is about 200 MB of JSON: too much to hold
//! as input text in a component's memory. Declare the field as
//! [`Paged<T>`] instead of `Vec<T>`: its schema marks the property
//! `"x-sluice-paged": true`, the host then leaves the list out of the
//! input text, and [`Paged::iter`] reads the items a page at a time
//! through the `paged` import, so only one page is held at once. The host
//! checks each item against `T`'s schema as it serves it.
//!
//! ```ignore
//! #[derive(Deserialize, JsonSchema)]
//! struct Input { people: Paged<Person> }
//!
//! fn run(input: Input, _: &Context) -> Result<Output, StepError> {
//!     for person in input.people.iter() {
//!         let person = person?;
//!         // …
//!     }
//! }
//! ```
//!
//! A `Paged<T>` also reads a list written whole in the input (a host
//! older than 0.2.1, a component run without its description), so a
//! component works either way.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::__bindings::sluice::flow::paged::{self as wit, PageError};
use crate::StepError;

/// The keyword that marks a paged property, and names the list in the
/// input text's placeholder.
pub const KEYWORD: &str = sluice_contract::PAGED_KEYWORD;

/// The items one page read asks for.
pub const PAGE: u32 = 1000;

/// A list of the step's input, read a page at a time (see the module).
pub struct Paged<T> {
    source: Source,
    _items: PhantomData<fn() -> T>,
}

enum Source {
    /// The host serves the list of this name, of this length.
    Host { name: String, len: u64 },
    /// The input text held the list itself.
    Inline(Vec<serde_json::Value>),
}

/// An empty list: for a `#[serde(default)]` field the step may be given
/// without.
impl<T> Default for Paged<T> {
    fn default() -> Self {
        Paged {
            source: Source::Inline(Vec::new()),
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Paged<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Host { name, len } => write!(f, "Paged({name}, {len} items)"),
            Source::Inline(items) => write!(f, "Paged(inline, {} items)", items.len()),
        }
    }
}

fn to_step_error(e: PageError) -> StepError {
    match e {
        PageError::UnknownList(name) => {
            StepError::internal(format!("the host has no paged list `{name}` for this call"))
                .with_code("paged-list")
        }
        PageError::BadItem(why) => StepError::bad_input(why).with_code("bad-item"),
    }
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StepError> {
    serde_json::from_str(text).map_err(|e| {
        StepError::bad_input(format!("{what} does not fit this component: {e}"))
            .with_code("bad-item")
    })
}

impl<T> Paged<T> {
    /// How many items the list holds.
    pub fn len(&self) -> u64 {
        match &self.source {
            Source::Host { len, .. } => *len,
            Source::Inline(items) => items.len() as u64,
        }
    }

    /// Whether the list holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The list's pages of up to `size` items (0: [`PAGE`]), each as the
    /// JSON text of an array: for a component that reads items borrowed
    /// from the text (`serde_json::from_str::<Vec<ItemRef<'_>>>(&page)`).
    pub fn pages(&self, size: u32) -> Pages<'_> {
        let size = if size == 0 { PAGE } else { size };
        Pages {
            source: &self.source,
            size,
            next: 0,
        }
    }
}

impl<T: DeserializeOwned> Paged<T> {
    /// Every item, in order, read a page at a time.
    pub fn iter(&self) -> Items<'_, T> {
        Items {
            pages: self.pages(PAGE),
            buffered: Vec::new().into_iter(),
            _items: PhantomData,
        }
    }
}

/// The iterator of [`Paged::pages`]: JSON array texts.
pub struct Pages<'p> {
    source: &'p Source,
    size: u32,
    next: u64,
}

impl Iterator for Pages<'_> {
    type Item = Result<String, StepError>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.next;
        match self.source {
            Source::Host { name, len } => {
                if start >= *len {
                    return None;
                }
                self.next = start + u64::from(self.size);
                Some(wit::page(name, start, self.size).map_err(to_step_error))
            }
            Source::Inline(items) => {
                let start = usize::try_from(start).ok().filter(|s| *s < items.len())?;
                let end = start.saturating_add(self.size as usize).min(items.len());
                self.next = end as u64;
                Some(
                    serde_json::to_string(&items[start..end]).map_err(|e| {
                        StepError::internal(format!("a page could not be written: {e}"))
                    }),
                )
            }
        }
    }
}

/// The iterator of [`Paged::iter`].
pub struct Items<'p, T> {
    pages: Pages<'p>,
    buffered: std::vec::IntoIter<T>,
    _items: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Items<'_, T> {
    type Item = Result<T, StepError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.buffered.next() {
                return Some(Ok(item));
            }
            let page = match self.pages.next()? {
                Ok(page) => page,
                Err(e) => return Some(Err(e)),
            };
            match decode::<Vec<T>>("a page of a paged list", &page) {
                Ok(items) if items.is_empty() => return None,
                Ok(items) => self.buffered = items.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl<'de, T> Deserialize<'de> for Paged<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(SourceVisitor)
            .map(|source| Paged {
                source,
                _items: PhantomData,
            })
    }
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = Source;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a list, or the host's `{{\"{KEYWORD}\": name, \"length\": n}}`"
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Source, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            items.push(item);
        }
        Ok(Source::Inline(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Source, A::Error> {
        let (mut name, mut len) = (None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                KEYWORD => name = Some(map.next_value::<String>()?),
                "length" => len = Some(map.next_value::<u64>()?),
                other => return Err(de::Error::unknown_field(other, &[KEYWORD, "length"])),
            }
        }
        match (name, len) {
            (Some(name), Some(len)) => Ok(Source::Host { name, len }),
            (None, _) => Err(de::Error::missing_field(KEYWORD)),
            (_, None) => Err(de::Error::missing_field("length")),
        }
    }
}

impl<T: JsonSchema> JsonSchema for Paged<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Paged_of_{}", T::schema_name()).into()
    }

    /// `Vec<T>`'s schema, marked paged.
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = <Vec<T>>::json_schema(generator);
        schema.insert(KEYWORD.to_string(), true.into());
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, JsonSchema, Debug, PartialEq)]
    struct Person {
        key: String,
    }

    #[derive(Deserialize, JsonSchema)]
    struct Input {
        people: Paged<Person>,
    }

    #[test]
    fn the_schema_is_a_list_of_the_items_marked_paged() {
        let schema: serde_json::Value =
            serde_json::from_str(&crate::glue::schema::<Input>()).unwrap();
        let people = &schema["properties"]["people"];
        assert_eq!(people["type"], "array");
        assert_eq!(people[KEYWORD], true);
        assert_eq!(people["items"]["$ref"], "#/$defs/Person");
    }

    #[test]
    fn the_placeholder_names_the_list_and_a_list_written_whole_is_read_in_pages() {
        let input: Input =
            serde_json::from_str(r#"{"people": {"x-sluice-paged": "people", "length": 3}}"#)
                .unwrap();
        assert_eq!(input.people.len(), 3);
        assert!(matches!(&input.people.source, Source::Host { name, .. } if name == "people"));

        let keys: Vec<String> = (0..2500).map(|i| format!(r#"{{"key":"k{i}"}}"#)).collect();
        let text = format!(r#"{{"people": [{}]}}"#, keys.join(","));
        let input: Input = serde_json::from_str(&text).unwrap();
        assert_eq!(input.people.len(), 2500);
        assert_eq!(input.people.pages(0).count(), 3);
        let read: Vec<Person> = input.people.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(read.len(), 2500);
        assert_eq!(
            read[2499],
            Person {
                key: "k2499".into()
            }
        );
    }

    #[test]
    fn a_placeholder_without_its_length_is_refused() {
        let e = serde_json::from_str::<Input>(r#"{"people": {"x-sluice-paged": "people"}}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("missing field `length`"), "{e}");
    }
}
