//! Reading every page of a list, the way each vendor documents it.
//!
//! Graph: follow `@odata.nextLink` verbatim until it is absent; a page may be
//! empty and still have one. Procore: bare JSON arrays paged with `page` and
//! `per_page`; the `Link` header's `rel="next"` says whether there is more
//! (`Total` is the fallback). Never stop on a short page by guesswork.

use serde_json::Value;

use crate::StepError;
use crate::errors;
use crate::http::{Call, Response};

/// Far beyond any real tenant; stops a service that pages forever.
const MAX_PAGES: usize = 100_000;

/// Every item of a Graph collection.
pub fn graph_all(connection: &str, first: Call) -> Result<Vec<Value>, StepError> {
    let mut items = Vec::new();
    let mut call = first;
    for _ in 0..MAX_PAGES {
        let response = call.send_ok()?;
        let page = response.json()?;
        if let Some(values) = page.get("value").and_then(Value::as_array) {
            items.extend(values.iter().cloned());
        } else {
            return Err(errors::fail(
                "bad-response",
                format!("{}: the response has no `value` list", call.request.url),
            ));
        }
        match page.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => call = Call::get(connection, next),
            None => return Ok(items),
        }
    }
    Err(errors::fail(
        "paging",
        "more than 100000 pages: the service keeps returning a nextLink",
    ))
}

/// The URL of the `rel="next"` link of an RFC 5988 `Link` header.
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        let target = target.trim();
        (is_next && target.starts_with('<') && target.ends_with('>'))
            .then(|| target[1..target.len() - 1].to_string())
    })
}

/// Whether Procore has another page after `page` (1-based) of `per_page`.
pub fn procore_has_next(
    response: &Response,
    page: usize,
    per_page: usize,
    received: usize,
) -> bool {
    if let Some(link) = response.header("link") {
        return link_next(link).is_some();
    }
    if let Some(total) = response
        .header("total")
        .and_then(|t| t.trim().parse::<usize>().ok())
    {
        return page * per_page < total;
    }
    // Neither header: a full page may have a successor, an empty one has not.
    received == per_page && received > 0
}

/// Every item of a Procore list endpoint, page by page.
pub fn procore_all(
    connection: &str,
    url: &str,
    query: &[(&str, String)],
    per_page: usize,
) -> Result<Vec<Value>, StepError> {
    let mut items = Vec::new();
    for page in 1..=MAX_PAGES {
        let mut call = Call::get(connection, url)
            .query("page", page.to_string())
            .query("per_page", per_page.to_string());
        for (k, v) in query {
            call = call.query(k, v.clone());
        }
        let response = call.send_ok()?;
        let received = match response.json()? {
            Value::Array(list) => {
                let n = list.len();
                items.extend(list);
                n
            }
            other => {
                return Err(errors::fail(
                    "bad-response",
                    format!("{url}: expected a JSON array, got {}", kind(&other)),
                ));
            }
        };
        if !procore_has_next(&response, page, per_page, received) {
            return Ok(items);
        }
    }
    Err(errors::fail("paging", "more than 100000 pages"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn link_header_next() {
        let h = r#"<https://api.procore.com/rest/v1.0/companies/1/users?page=1&per_page=2>; rel="first", <https://api.procore.com/rest/v1.0/companies/1/users?page=3&per_page=2>; rel="next", <https://x/?page=9>; rel="last""#;
        assert_eq!(
            link_next(h).unwrap(),
            "https://api.procore.com/rest/v1.0/companies/1/users?page=3&per_page=2"
        );
        assert_eq!(
            link_next(r#"<https://x/?page=1>; rel="first", <https://x/?page=1>; rel="last""#),
            None
        );
    }

    #[test]
    fn next_page_from_link_then_total_never_from_a_short_page() {
        assert!(procore_has_next(
            &response(&[("link", r#"<https://x/?page=2>; rel="next""#)]),
            1,
            100,
            3
        ));
        assert!(!procore_has_next(
            &response(&[("link", r#"<https://x/?page=1>; rel="last""#)]),
            1,
            100,
            100
        ));
        assert!(procore_has_next(
            &response(&[("total", "250")]),
            2,
            100,
            100
        ));
        assert!(!procore_has_next(
            &response(&[("total", "250")]),
            3,
            100,
            50
        ));
        // A short page with a Total saying there is more: keep going.
        assert!(procore_has_next(&response(&[("total", "250")]), 1, 100, 60));
    }
}
