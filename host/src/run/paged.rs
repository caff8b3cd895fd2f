//! The lists of a step's input its component reads in pages (the WIT's
//! `paged`): which entries of the `with` they are, what the input text
//! holds in their place, and the list each one serves, checked item by
//! item against its component's `items` schema. And the lists of its
//! output it hands over in pages (`paged-output`): which names its output
//! schema marks, and what their items must be ([`output_rules`]).
//!
//! A list that is one whole reference into another step's output
//! (`people = "${steps.members.people}"`) is served from that output's
//! text, shared ([`ListItems`]): nothing is copied. Any other list (a
//! literal, a param) is written once and held by the call. Null (a
//! skipped step's list) is an empty list. A list from an output that was
//! found to fit its component's output schema, whose items that schema
//! says the same of as this input schema, is not checked again
//! ([`ListItems::fits`]): `compare`'s 190k people and users at 100k.

use std::sync::Arc;

use serde_json::Value;

use super::output::{ListItems, StepOutput};
use serde_json::value::RawValue;

use crate::engine::paged::{BadItem, PagedList, placeholder};
use crate::engine::{ListRules, PagedInputs};
use crate::flow::model::ValueTemplate;
use crate::flow::resolve::{Found, Scope};
use crate::flow::schema::InputSchema;
use crate::flow::schema::paged_output::OutputListSchemas;
use crate::flow::{Description, Step};

/// A list where it lives, and how to check its items.
struct Held {
    items: ListItems,
    key: String,
    schema: Arc<InputSchema>,
    /// Whether its items are known to fit already: the producer's output
    /// schema, which they were checked against, says the same of them.
    fit: bool,
}

impl PagedList for Held {
    fn len(&self) -> u64 {
        self.items.len() as u64
    }

    fn page(&self, start: u64, limit: usize) -> Result<String, BadItem> {
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        // Sized once: a page of people is hundreds of KB.
        let size: usize = self.items.page(start, limit).map(|i| i.len() + 1).sum();
        let mut text = String::with_capacity(size + 2);
        text.push('[');
        for (i, item) in self.items.page(start, limit).enumerate() {
            if !self.fit {
                self.schema
                    .check_item_text(&self.key, start + i, item)
                    .map_err(|e| BadItem(e.to_string()))?;
            }
            if i > 0 {
                text.push(',');
            }
            text.push_str(item);
        }
        text.push(']');
        Ok(text)
    }
}

/// The entries of `with` (resolved as `resolved`) that the component reads
/// in pages: those its input schema marks, whose value is a list. Returns
/// what the input text holds in place of each, and the lists.
pub fn split(
    step: &Step,
    scope: &Scope<'_>,
    with: &[(String, ValueTemplate)],
    resolved: &[(&str, Found<'_>)],
) -> (Vec<(String, Value)>, PagedInputs) {
    let mut placeholders = Vec::new();
    let mut lists = PagedInputs::default();
    let Some(schema) = &step.input_schema else {
        return (placeholders, lists);
    };
    for key in schema.paged() {
        let Some((_, found)) = resolved.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        let template = with.iter().find(|(k, _)| k == key).map(|(_, t)| t);
        let Some(items) = template
            .and_then(|t| scope.list(t))
            .or_else(|| held_apart(found))
        else {
            continue;
        };
        placeholders.push((key.to_string(), placeholder(key, items.len() as u64)));
        let fit = schema.paged_items(key).is_some_and(|ours| items.fits(ours));
        let held = Held {
            items,
            key: key.to_string(),
            schema: schema.clone(),
            fit,
        };
        lists.insert(key, Arc::new(held));
    }
    (placeholders, lists)
}

/// A list that is not part of a step's output, written once to be served;
/// `None` when the value is not a list. Null (what a reference to a
/// skipped step's list reads as) is served as no items, as `for_each`
/// takes null for no items.
fn held_apart(found: &Found<'_>) -> Option<ListItems> {
    let value = match found {
        Found::Value(v) if v.is_array() => v.as_ref().clone(),
        Found::Json(j) if j.kind() == super::output::Kind::Array => j.to_value(),
        Found::Value(v) if v.is_null() => Value::Array(Vec::new()),
        Found::Json(j) if j.kind() == super::output::Kind::Null => Value::Array(Vec::new()),
        _ => return None,
    };
    StepOutput::of(&value).list_at(&[])
}

/// The lists a step's component may hand over in pages: those its output
/// schema marks. `None` when it marks none (or describes nothing).
pub fn output_rules(step: &Step) -> Option<Arc<dyn ListRules>> {
    list_rules(step.description.as_ref()?)
}

/// The lists a component's output schema marks (see [`output_rules`]).
pub fn list_rules(description: &Description) -> Option<Arc<dyn ListRules>> {
    let schemas = OutputListSchemas::of(&description.name, &description.output_schema)?;
    Some(Arc::new(OutputRules(schemas)))
}

/// An output schema's marked lists, as the engine asks about them.
struct OutputRules(OutputListSchemas);

impl ListRules for OutputRules {
    fn names(&self) -> Vec<String> {
        self.0.names().map(str::to_string).collect()
    }

    fn check(&self, name: &str, index: u64, item: &RawValue) -> Result<(), String> {
        self.0.check_text(name, index, item.get())
    }
}
