//! Microsoft Graph: collections paged by `@odata.nextLink`, and its error
//! body `{"error": {"code", "message", "innerError"}}`.
//!
//! A collection is read by following `@odata.nextLink` verbatim until it is
//! absent; a page may be empty and still have one.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_guest::{Call, JsonSchema, Response, StepError};

use crate::{MAX_PAGES, read_ok};

/// A Graph group, as the sync reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Group {
    /// The group's object id.
    pub id: String,
    /// Its display name.
    #[serde(rename = "displayName", default)]
    pub display_name: String,
}

/// Every item of a Graph collection, starting with `first` (a GET through
/// `connection`), page after page.
pub fn all(connection: &str, first: Call) -> Result<Vec<Value>, StepError> {
    let mut items = Vec::new();
    let mut call = first;
    for _ in 0..MAX_PAGES {
        let Some((values, next)) = page(read_ok(&call)?.json()?) else {
            return Err(StepError::internal(format!(
                "{}: the response has no `value` list",
                call.url()
            ))
            .with_code("bad-response"));
        };
        items.extend(values);
        match next {
            Some(next) => call = Call::get(connection, &next),
            None => return Ok(items),
        }
    }
    Err(StepError::internal(format!(
        "more than {MAX_PAGES} pages: the service keeps returning a nextLink"
    ))
    .with_code("paging"))
}

/// The items of one page of a Graph collection and its `@odata.nextLink`,
/// verbatim; no link on the last page (of a delta round too, which has an
/// `@odata.deltaLink` instead). `None` when the page has no `value` list.
pub fn page(page: Value) -> Option<(Vec<Value>, Option<String>)> {
    let Value::Object(mut page) = page else {
        return None;
    };
    let next = match page.remove("@odata.nextLink") {
        Some(Value::String(link)) => Some(link),
        _ => None,
    };
    match page.remove("value") {
        Some(Value::Array(values)) => Some((values, next)),
        _ => None,
    }
}

/// `code: message` of a Graph error body, if the body is one.
pub fn error_message(response: &Response) -> Option<String> {
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    let error = body.get("error").filter(|e| e.is_object())?;
    let code = error.get("code").and_then(Value::as_str).unwrap_or("");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    Some(if code.is_empty() {
        message.to_string()
    } else {
        format!("{code}: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_pages_are_read_as_the_documented_examples_give_them() {
        let read = |name: &str| page(crate::tests::documented(name)["body"].clone()).unwrap();
        let (members, next) = read("graph_list_members");
        assert_eq!(members[0]["mail"], "user1@contoso.com");
        assert_eq!(next, None, "no nextLink: the last page");
        let (members, _) = read("graph_list_transitive_members");
        assert_eq!(members[0]["@odata.type"], "#microsoft.graph.user");
        let (groups, next) = read("graph_groups_delta_initial");
        assert_eq!(groups.len(), 2);
        assert_eq!(
            next.as_deref(),
            Some(
                "https://graph.microsoft.com/v1.0/groups/delta?$skiptoken=pqwSUjGYvb3jQpbwVAwEL7yuI3dU1LecfkkfLPtnIjvB7XnF_yllFsCrZJ"
            ),
            "followed verbatim"
        );
        let (groups, next) = read("graph_groups_delta_final");
        assert_eq!(
            (groups.len(), next),
            (2, None),
            "a deltaLink ends the round"
        );
        let (changes, _) = read("graph_groups_delta_changes");
        assert_eq!(
            changes[0]["members@delta"][0]["@removed"]["reason"],
            "deleted"
        );
        assert!(page(crate::tests::documented("graph_throttled")["body"].clone()).is_none());
    }
}
