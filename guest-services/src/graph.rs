//! Microsoft Graph: collections paged by `@odata.nextLink`, and its error
//! body `{"error": {"code", "message", "innerError"}}`.
//!
//! A collection is read by following `@odata.nextLink` until it is absent
//! (a page may be empty and still have one), under the connection's base
//! URL ([`follow`]).

use serde::de::DeserializeOwned;
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
    each(connection, first, |item: Value| items.push(item))?;
    Ok(items)
}

/// One page of a collection, typed: only its items and its nextLink are
/// read, so a large page is never held as a JSON tree. Its items may
/// borrow their strings from the response's body.
#[derive(Deserialize)]
pub struct Page<T> {
    value: Option<Vec<T>>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

impl<T> Page<T> {
    /// The items and the nextLink of this page, an answer to `call`; a
    /// page without a `value` list is not a collection's.
    pub fn into_parts(self, call: &Call) -> Result<(Vec<T>, Option<String>), StepError> {
        match self.value {
            Some(items) => Ok((items, self.next_link)),
            None => Err(StepError::internal(format!(
                "{}: the response has no `value` list",
                call.url()
            ))
            .with_code("bad-response")),
        }
    }
}

/// The pages a paging walk has read, so a nextLink that leads back to one
/// of them stops the walk at once: a service that loops would otherwise
/// be asked the same page until [`MAX_PAGES`], tens of thousands of
/// requests later. Only a hash of each link is kept.
#[derive(Debug, Default)]
pub struct Visited(std::collections::HashSet<u64>);

impl Visited {
    /// Notes that the nextLink `url` is to be read; an error when this
    /// walk was led to it before.
    pub fn enter(&mut self, url: &str) -> Result<(), StepError> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        url.hash(&mut hasher);
        if self.0.insert(hasher.finish()) {
            Ok(())
        } else {
            Err(StepError::internal(format!(
                "the service's @odata.nextLink leads back to a page already read ({url}): \
                 it is paging in a loop, so the read stopped"
            ))
            .with_code("paging-loop"))
        }
    }
}

/// `link`, a link Graph wrote (an `@odata.nextLink`, a delta link), as a
/// path under the connection's base URL: from the last path segment named
/// `segment` on (`groups/{id}/members?$skiptoken=…`), path and query as
/// Graph wrote them. Graph writes its links on its own host whatever URL
/// it was reached through, so under a base URL that names it another way
/// (a gateway or proxy in front of it, `localhost`, another port) the link
/// as written would leave the base: a sandbox violation. A link without
/// that segment, or not absolute, is left as it is.
pub fn under_current_base(link: &str, segment: &str) -> String {
    let Some((_, after_scheme)) = link.split_once("://") else {
        return link.to_string();
    };
    let Some(path_start) = after_scheme.find('/') else {
        return link.to_string();
    };
    let path_and_query = &after_scheme[path_start..];
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    let named = format!("/{segment}");
    let at = path
        .rmatch_indices(&named)
        .map(|(at, _)| at)
        .find(|&at| matches!(path.as_bytes().get(at + named.len()), None | Some(b'/')));
    match at {
        Some(at) => path_and_query[at + 1..].to_string(),
        None => link.to_string(),
    }
}

/// The call that reads `link`, a link Graph gave while reading the
/// collection that `first` (a relative URL: `groups/{id}/members?…`)
/// began: under the connection's base URL from that collection's first
/// segment on ([`under_current_base`]).
pub fn follow(connection: &str, first: &str, link: &str) -> Call {
    let segment = first
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .filter(|s| !s.is_empty() && !first.contains("://"));
    match segment {
        Some(segment) => Call::get(connection, &under_current_base(link, segment)),
        None => Call::get(connection, link),
    }
}

/// Hands every page of a Graph collection to `read`, starting with
/// `first` (a GET through `connection`), until `read` returns no nextLink:
/// only one page is held at a time. `read` gets the call each page
/// answers, for its messages.
pub fn pages(
    connection: &str,
    first: Call,
    mut read: impl FnMut(&Call, &Response) -> Result<Option<String>, StepError>,
) -> Result<(), StepError> {
    let first_url = first.url().to_string();
    let mut call = first;
    let mut visited = Visited::default();
    for _ in 0..MAX_PAGES {
        let response = read_ok(&call)?;
        match read(&call, &response)? {
            Some(next) => {
                // The link as it is followed: two that differ only in
                // the host Graph wrote are the same page.
                call = follow(connection, &first_url, &next);
                visited.enter(call.url())?;
            }
            None => return Ok(()),
        }
    }
    Err(StepError::internal(format!(
        "more than {MAX_PAGES} pages: the service keeps returning a nextLink"
    ))
    .with_code("paging"))
}

/// Hands every item of a Graph collection, read as `T`, to `each`, page
/// after page: only one page is held at a time.
pub fn each<T: DeserializeOwned>(
    connection: &str,
    first: Call,
    mut each: impl FnMut(T),
) -> Result<(), StepError> {
    pages(connection, first, |call, response| {
        let (items, next) = response.json::<Page<T>>()?.into_parts(call)?;
        items.into_iter().for_each(&mut each);
        Ok(next)
    })
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
    fn a_link_graph_wrote_is_followed_under_the_current_base() {
        let link = "https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=a%2Bb/c";
        assert_eq!(
            under_current_base(link, "groups"),
            "groups/delta?$deltatoken=a%2Bb/c"
        );
        // The last `groups` segment of the path is the collection's, even
        // under a base whose path names groups too; the query may hold one.
        assert_eq!(
            under_current_base(
                "http://127.0.0.1:8080/groups/graph/v1.0/groups/microsoft.graph.delta()?$skiptoken=x/groups/y",
                "groups"
            ),
            "groups/microsoft.graph.delta()?$skiptoken=x/groups/y"
        );
        assert_eq!(
            under_current_base("http://localhost/v1.0/users/delta?$deltatoken=1", "users"),
            "users/delta?$deltatoken=1"
        );
        // A collection read at its root: the segment ends the path.
        assert_eq!(
            under_current_base(
                "https://graph.microsoft.com/v1.0/users?$filter=id%20in%20(%27a%27)&$skiptoken=Z",
                "users"
            ),
            "users?$filter=id%20in%20(%27a%27)&$skiptoken=Z"
        );
        // A segment that only starts with the name is not it.
        assert_eq!(
            under_current_base("https://h/v1.0/groupsx/1?$skiptoken=z", "groups"),
            "https://h/v1.0/groupsx/1?$skiptoken=z"
        );
        for odd in [
            "groups/delta?$deltatoken=1",
            "https://graph.microsoft.com/v1.0/delta?x",
            "https://h",
        ] {
            assert_eq!(under_current_base(odd, "groups"), odd);
        }
    }

    #[test]
    fn a_next_link_is_followed_from_the_first_calls_collection() {
        let next = "https://graph.microsoft.com/v1.0/groups/g1/members?$top=999&$skiptoken=X";
        let first = "groups/g1/members?$select=id&$top=999";
        assert_eq!(
            follow("graph", first, next).url(),
            "groups/g1/members?$top=999&$skiptoken=X"
        );
        assert_eq!(
            follow("graph", "/groups/g1/members", next).url(),
            "groups/g1/members?$top=999&$skiptoken=X"
        );
        // A first call that is itself absolute: the link as written.
        assert_eq!(follow("graph", "https://x/v1.0/groups", next).url(), next);
    }

    #[test]
    fn a_next_link_back_to_a_page_already_read_stops_the_walk() {
        let mut visited = Visited::default();
        let a = "https://graph.microsoft.com/v1.0/groups/g/members?$skiptoken=a";
        let b = "https://graph.microsoft.com/v1.0/groups/g/members?$skiptoken=b";
        visited.enter(a).unwrap();
        visited.enter(b).unwrap();
        let looped = visited.enter(a).unwrap_err();
        assert_eq!(looped.code, "paging-loop");
        assert!(looped.message.contains("skiptoken=a"), "{looped}");
    }

    #[test]
    fn graph_pages_are_read_as_the_documented_examples_give_them() {
        let page = |name: &str| {
            let body = crate::tests::documented(name)["body"].clone();
            let page: Page<Value> = serde_json::from_value(body).unwrap();
            page
        };
        let read = |name: &str| {
            let page = page(name);
            (page.value.unwrap(), page.next_link)
        };
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
        assert!(page("graph_throttled").value.is_none());
    }
}
