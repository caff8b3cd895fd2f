//! Output lists handed to the host a page at a time (contract 0.2.2).
//!
//! A list of a million people is about 200 MB of JSON: too much to build
//! as output text in a component's memory beside what it was made from.
//! Declare the output field as [`OutputList<T>`] instead of `Vec<T>`: its
//! schema marks the property `"x-sluice-paged": true`, and
//! [`OutputList::push`] writes each item's JSON at once and hands the
//! host a page (1,000 items, or 1 MiB) at a time through the
//! `paged-output` import, so the component holds one page. The output
//! text then holds a placeholder (`{"x-sluice-paged": "people", "length":
//! 1000000}`) and the host puts the list in its place: later steps see an
//! ordinary list. The host checks each item against `T`'s schema as it is
//! appended.
//!
//! ```ignore
//! #[derive(Serialize, JsonSchema)]
//! struct Output { people: OutputList<Person>, count: u64 }
//!
//! fn run(input: Input, _: &Context) -> Result<Output, StepError> {
//!     let mut people = OutputList::new("people"); // the field's name
//!     for person in make_people(&input) {
//!         people.push(&person)?;
//!     }
//!     people.finish()?;
//!     Ok(Output { count: people.len(), people })
//! }
//! ```
//!
//! A step that writes its output text itself ([`JsonText`](crate::JsonText))
//! writes `serde_json::to_string(&people)` at the field.
//!
//! The list is written whole in the output instead (an ordinary array)
//! when the component runs natively (unit tests), when the host does not
//! know the list (its output schema does not mark it, or the component's
//! description is not used), and when it holds less than a page: a
//! component works either way. A component that uses `OutputList` imports
//! `paged-output`, so it needs a host of contract 0.2.2 or later.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::ser::{Error as _, Serializer};
use serde_json::value::RawValue;
use sluice_contract::PagedPlaceholder;

use crate::__bindings::sluice::flow::paged_output::{self as wit, AppendError};
use crate::StepError;
use crate::paged::KEYWORD;

/// The items a page holds at most before it is handed over.
pub const PAGE_ITEMS: usize = 1000;
/// The bytes of JSON a page holds at most before it is handed over.
pub const PAGE_BYTES: usize = 1 << 20;

/// Hands a page (a JSON array's text) of the list `name` to the host.
type Sink = fn(&str, &str) -> Result<(), AppendError>;

/// A list of the step's output, handed to the host a page at a time (see
/// the module).
pub struct OutputList<T> {
    name: String,
    writer: RefCell<Writer>,
    _items: PhantomData<fn(&T)>,
}

struct Writer {
    /// The items not handed over yet: a JSON array's text without its
    /// closing bracket. Once the host refused the list, every item.
    page: String,
    /// How many items `page` holds (every item, once the host refused
    /// the list).
    in_page: usize,
    /// How many items were pushed in all.
    len: u64,
    /// Where pages go; `None` keeps every item to write it whole.
    sink: Option<Sink>,
    /// Whether a page went to the host: the output then names the list.
    handed: bool,
    /// Where one item's JSON is written before it joins `page`: written
    /// as bytes and checked as UTF-8 once, rather than a check per
    /// fragment the serializer writes (a dozen or more an item).
    item: Vec<u8>,
}

impl Writer {
    fn new(sink: Option<Sink>) -> Writer {
        Writer {
            page: String::from("["),
            in_page: 0,
            len: 0,
            sink,
            handed: false,
            item: Vec::new(),
        }
    }

    /// Hands the page to the host. A host that does not know the list
    /// before any page went to it gets the whole list in the output.
    fn flush(&mut self, name: &str) -> Result<(), StepError> {
        let Some(sink) = self.sink else {
            return Ok(());
        };
        if self.in_page == 0 {
            return Ok(());
        }
        self.page.push(']');
        let sent = sink(name, &self.page);
        self.page.pop();
        match sent {
            Ok(()) => {
                self.page.truncate(1);
                self.in_page = 0;
                self.handed = true;
                Ok(())
            }
            Err(AppendError::UnknownList(_)) if !self.handed => {
                self.sink = None;
                Ok(())
            }
            Err(e) => Err(refused(name, e)),
        }
    }
}

fn refused(name: &str, e: AppendError) -> StepError {
    let why = match e {
        AppendError::UnknownList(name) => {
            format!("the host no longer knows the output list `{name}`")
        }
        AppendError::NotAList(why) | AppendError::BadItem(why) => why,
    };
    StepError::internal(format!("the output list `{name}` was refused: {why}"))
        .with_code("bad-output")
}

fn host_sink(name: &str, items: &str) -> Result<(), AppendError> {
    wit::append(name, items)
}

impl<T> OutputList<T> {
    /// An empty list for the output field `name` (the placeholder names
    /// the list by it, and the host finds it there).
    pub fn new(name: &str) -> OutputList<T> {
        // Natively (unit tests) there is no host to hand pages to.
        let sink = cfg!(target_arch = "wasm32").then_some(host_sink as Sink);
        OutputList::with_sink(name, sink)
    }

    fn with_sink(name: &str, sink: Option<Sink>) -> OutputList<T> {
        OutputList {
            name: name.to_string(),
            writer: RefCell::new(Writer::new(sink)),
            _items: PhantomData,
        }
    }

    /// The list's name (its output field's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many items were pushed.
    pub fn len(&self) -> u64 {
        self.writer.borrow().len
    }

    /// Whether no item was pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands the host the items not handed over yet. Serialising the list
    /// does this too; call it first to get a refusal (an item that does
    /// not fit the schema) as the step's error.
    pub fn finish(&mut self) -> Result<(), StepError> {
        self.writer.get_mut().flush(&self.name)
    }
}

impl<T: Serialize> OutputList<T> {
    /// Adds `item` at the end: its JSON is written now, and a full page
    /// goes to the host.
    pub fn push(&mut self, item: &T) -> Result<(), StepError> {
        let writer = self.writer.get_mut();
        writer.item.clear();
        let failed = |e: &dyn fmt::Display| {
            StepError::internal(format!(
                "an item of `{}` could not be written: {e}",
                self.name
            ))
            .with_code("bad-output")
        };
        serde_json::to_writer(&mut writer.item, item).map_err(|e| failed(&e))?;
        let text = std::str::from_utf8(&writer.item).map_err(|e| failed(&e))?;
        if writer.in_page > 0 {
            writer.page.push(',');
        }
        writer.page.push_str(text);
        writer.in_page += 1;
        writer.len += 1;
        if writer.in_page >= PAGE_ITEMS || writer.page.len() >= PAGE_BYTES {
            writer.flush(&self.name)?;
        }
        Ok(())
    }
}

impl<T> fmt::Debug for OutputList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OutputList({}, {} items)", self.name, self.len())
    }
}

/// The placeholder naming the list, once a page went to the host (what
/// was left is handed over first); else the items, written whole.
impl<T> Serialize for OutputList<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut writer = self.writer.borrow_mut();
        if writer.handed {
            writer
                .flush(&self.name)
                .map_err(|e| S::Error::custom(e.message))?;
            let placeholder = PagedPlaceholder {
                name: self.name.clone(),
                length: writer.len,
            };
            return placeholder.serialize(serializer);
        }
        // Lent to the serializer as the array's text, not copied (the
        // whole list, when the host refused it), and taken back.
        let mut page = std::mem::take(&mut writer.page);
        page.push(']');
        let whole = RawValue::from_string(page)
            .map_err(|e| S::Error::custom(format!("`{}` is not JSON: {e}", self.name)))?;
        let written = whole.serialize(serializer);
        let mut page = String::from(Box::<str>::from(whole));
        page.pop();
        writer.page = page;
        written
    }
}

impl<T: JsonSchema> JsonSchema for OutputList<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("OutputList_of_{}", T::schema_name()).into()
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
    use std::cell::RefCell;

    #[derive(Serialize, JsonSchema, Clone)]
    struct Person {
        key: String,
    }

    #[derive(Serialize, JsonSchema)]
    struct Output {
        people: OutputList<Person>,
        count: u64,
    }

    fn person(i: usize) -> Person {
        Person {
            key: format!("p{i}"),
        }
    }

    thread_local! {
        /// The pages a fake host was handed, and what it answers.
        static HANDED: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
        static KNOWN: RefCell<bool> = const { RefCell::new(true) };
    }

    fn fake_host(name: &str, items: &str) -> Result<(), AppendError> {
        if !KNOWN.with(|k| *k.borrow()) {
            return Err(AppendError::UnknownList(name.to_string()));
        }
        if items.contains("\"bad\"") {
            return Err(AppendError::BadItem("item 3 of `people`: bad".into()));
        }
        HANDED.with(|h| h.borrow_mut().push((name.to_string(), items.to_string())));
        Ok(())
    }

    fn handed() -> Vec<(String, String)> {
        HANDED.with(|h| std::mem::take(&mut *h.borrow_mut()))
    }

    #[test]
    fn the_schema_is_a_list_of_the_items_marked_paged() {
        let schema: serde_json::Value =
            serde_json::from_str(&crate::glue::schema::<Output>()).unwrap();
        let people = &schema["properties"]["people"];
        assert_eq!(people["type"], "array");
        assert_eq!(people[KEYWORD], true);
        assert_eq!(people["items"]["$ref"], "#/$defs/Person");
    }

    #[test]
    fn an_item_that_cannot_be_written_leaves_the_list_as_it_was() {
        // A map keyed by pairs has no JSON form: serde_json fails once it
        // has begun the object.
        let mut list: OutputList<std::collections::BTreeMap<(u8, u8), u8>> =
            OutputList::new("pairs");
        list.push(&Default::default()).unwrap();
        let e = list.push(&[((1, 2), 3)].into()).unwrap_err();
        assert!(e.message.contains("could not be written"), "{}", e.message);
        list.push(&Default::default()).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(serde_json::to_string(&list).unwrap(), "[{},{}]");
    }

    #[test]
    fn natively_the_list_is_written_whole() {
        let mut people = OutputList::new("people");
        for i in 0..2500 {
            people.push(&person(i)).unwrap();
        }
        people.finish().unwrap();
        let text = crate::glue::to_text(&Output {
            count: people.len(),
            people,
        })
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["people"].as_array().unwrap().len(), 2500);
        assert_eq!(value["people"][2499]["key"], "p2499");
        assert_eq!(value["count"], 2500);
        let empty = OutputList::<Person>::new("people");
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
    }

    #[test]
    fn pages_go_to_the_host_in_order_and_the_output_names_the_list() {
        KNOWN.with(|k| *k.borrow_mut() = true);
        let mut people = OutputList::with_sink("people", Some(fake_host as Sink));
        for i in 0..2500 {
            people.push(&person(i)).unwrap();
        }
        let pages = handed();
        assert_eq!(pages.len(), 2, "two full pages so far");
        let keys = |page: &str| -> Vec<String> {
            let items: Vec<serde_json::Value> = serde_json::from_str(page).unwrap();
            items
                .iter()
                .map(|p| p["key"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(keys(&pages[0].1).len(), PAGE_ITEMS);
        assert_eq!(keys(&pages[0].1)[0], "p0");
        assert_eq!(keys(&pages[1].1)[0], "p1000");
        // Serialising hands over the rest and writes the placeholder,
        // the same twice (the SDK counts the output's size first).
        let output = Output {
            count: people.len(),
            people,
        };
        let text = crate::glue::to_text(&output).unwrap();
        assert_eq!(
            text,
            r#"{"people":{"x-sluice-paged":"people","length":2500},"count":2500}"#
        );
        let rest = handed();
        assert_eq!(rest.len(), 1);
        assert_eq!(keys(&rest[0].1).len(), 500);
        assert_eq!(keys(&rest[0].1)[499], "p2499");
    }

    #[test]
    fn a_host_that_does_not_know_the_list_gets_it_whole() {
        KNOWN.with(|k| *k.borrow_mut() = false);
        let mut people = OutputList::with_sink("people", Some(fake_host as Sink));
        for i in 0..1500 {
            people.push(&person(i)).unwrap();
        }
        people.finish().unwrap();
        let text = serde_json::to_string(&people).unwrap();
        let items: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(items.len(), 1500);
        assert_eq!(items[1000]["key"], "p1000");
        KNOWN.with(|k| *k.borrow_mut() = true);
        assert!(handed().is_empty());
    }

    #[test]
    fn a_page_the_host_refuses_is_the_steps_error() {
        KNOWN.with(|k| *k.borrow_mut() = true);
        let mut people = OutputList::with_sink("people", Some(fake_host as Sink));
        people.push(&person(1)).unwrap();
        people.push(&Person { key: "bad".into() }).unwrap();
        let e = people.finish().unwrap_err();
        assert_eq!(e.code, "bad-output");
        assert_eq!(
            e.message,
            "the output list `people` was refused: item 3 of `people`: bad"
        );
        handed();
    }
}
