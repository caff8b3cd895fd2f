//! One page of a Graph collection: `@odata.context`, `@odata.count` when
//! asked for as an advanced query, the page's `value`, and an absolute
//! `@odata.nextLink` that keeps the request's options and carries an
//! opaque skip token. With the `empty_graph_pages` fault the first page is
//! empty and still has a nextLink, which Graph allows.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::query::{Query, encode_skip};
use crate::api::encode_query;
use crate::state::Shared;

/// The page of a collection of `total` items whose items in
/// `query.window.range(total)` are `value` (only the page is rendered: a
/// 100k-member group is served a page at a time).
pub fn page(
    s: &Shared,
    path: &str,
    query: &Query,
    total: usize,
    value: Vec<Value>,
    context: &str,
) -> Response {
    let empty_pages = s.lock().faults.empty_graph_pages;
    let window = &query.window;
    let link = |offset: usize| {
        let mut q: Vec<(String, String)> = query
            .pairs
            .iter()
            .filter(|(k, _)| k != "$skiptoken")
            .cloned()
            .collect();
        q.push(("$skiptoken".into(), encode_skip(offset, true)));
        format!("{}{path}?{}", s.base_url, encode_query(&q))
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "https://graph.microsoft.com/v1.0/$metadata#{context}"
        )),
    );
    if query.count {
        body.insert("@odata.count".into(), json!(total));
    }
    if empty_pages && window.offset == 0 && !window.after_empty {
        body.insert("@odata.nextLink".into(), json!(link(0)));
        body.insert("value".into(), json!([]));
        return Json(Value::Object(body)).into_response();
    }
    let end = window.range(total).end;
    if end < total {
        body.insert("@odata.nextLink".into(), json!(link(end)));
    }
    body.insert("value".into(), Value::Array(value));
    Json(Value::Object(body)).into_response()
}
