//! Which `for_each` steps have their items' outputs read after them.
//!
//! A `for_each` step's output lists every item with its result. When no
//! later step reads the items (`${steps.ID}` whole, or `${steps.ID.items…}`
//! in its `with`, `when`, `for_each`, `for_each_key` or `approval`) and the
//! step's own artifacts do not write them, the run does not keep each
//! item's output in the step's output: it goes to the item's record (its
//! `ItemFinished` event, the run history) and nowhere else, so host memory
//! holds only the items running at once. The counts (`ok`, `failed`),
//! every item's status, each failed item's error and the approval summary
//! are always kept.

use super::model::{Approval, Step, Threshold, ValueTemplate};
use super::template::{Root, Template};

/// Sets each step's `items_read` from the steps after it.
pub fn mark_items_read(steps: &mut [Step]) {
    for index in 0..steps.len() {
        let id = steps[index].id.clone();
        let own = steps[index]
            .artifacts
            .iter()
            .any(|(_, path)| reads_items(path));
        let later = steps[index + 1..]
            .iter()
            .any(|s| templates(s).iter().any(|t| names_items(t, &id)));
        steps[index].items_read = own || later;
    }
}

/// Whether a path into a `for_each` step's output reaches its items.
fn reads_items(path: &[String]) -> bool {
    path.first().is_none_or(|first| first == "items")
}

/// Whether `template` reads the items of step `id`.
fn names_items(template: &Template, id: &str) -> bool {
    template
        .references()
        .iter()
        .any(|(r, _)| matches!(&r.root, Root::Step(s) if s == id) && reads_items(&r.path))
}

/// Every template a step resolves at run time.
fn templates(step: &Step) -> Vec<&Template> {
    let mut out: Vec<&Template> = step.when.iter().map(|c| &c.template).collect();
    out.extend(step.for_each.iter());
    out.extend(step.for_each_key.iter());
    if let Some(with) = &step.with {
        value_templates(with, &mut out);
    }
    if let Some(Approval { above, when, .. }) = &step.approval {
        out.extend(when.iter());
        if let Some(Threshold::Reference(t)) = above {
            out.push(t);
        }
    }
    out
}

fn value_templates<'a>(value: &'a ValueTemplate, out: &mut Vec<&'a Template>) {
    match value {
        ValueTemplate::Text(t) => out.push(t),
        ValueTemplate::Literal(_) => {}
        ValueTemplate::Array(values) => values.iter().for_each(|v| value_templates(v, out)),
        ValueTemplate::Object(fields) => fields.iter().for_each(|(_, v)| value_templates(v, out)),
    }
}
