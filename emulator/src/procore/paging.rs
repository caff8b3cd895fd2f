//! Procore's list pages: a bare JSON array, `page` (from 1) and
//! `per_page`, with `Total`, `Per-Page` and an RFC 8288 `Link` header.

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::{encode_query, get};
use crate::config::{PROCORE_MAX_PER_PAGE, PagingHeaders};
use crate::state::Shared;

/// Procore's page size when `per_page` is not given.
const DEFAULT_PER_PAGE: usize = 100;

/// A bare JSON array page with `Total`, `Per-Page` and an RFC 8288 `Link`
/// (as the configured [`PagingHeaders`] allow). Links follow Procore's
/// pagination guide: `first` from page 2, `prev` from page 3, `last` and
/// `next` except on the last page, so a single page has no `Link` at all.
/// One page of `items`, rendering only the items on it (a 100k-user company
/// is served a page at a time without turning every user into JSON).
pub fn paged<T, R: Serialize>(
    s: &Shared,
    path: &str,
    pairs: &[(String, String)],
    items: &[T],
    render: impl Fn(&T) -> R,
) -> Response {
    let max = s.config.procore_max_per_page.clamp(1, PROCORE_MAX_PER_PAGE);
    let per_page = get(pairs, "per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, max);
    let page = get(pairs, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = (start + per_page).min(total);
    let link = |p: usize| {
        let mut q: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .cloned()
            .collect();
        q.push(("page".into(), p.to_string()));
        q.push(("per_page".into(), per_page.to_string()));
        format!("<{}{path}?{}>", s.base_url, encode_query(&q))
    };
    // The guide's order (first, prev, last, next), and its rule that page 2
    // has no `prev`: the first page is already linked as `first`.
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link(1)));
    }
    if page > 2 {
        links.push(format!("{}; rel=\"prev\"", link((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"last\"", link(last)));
        links.push(format!("{}; rel=\"next\"", link(page + 1)));
    }
    let separate = s.config.procore_paging == PagingHeaders::SeparateLinkFields;
    if separate {
        // `next` goes last, so only a client that reads every field finds it.
        links.sort_by_key(|l| l.ends_with("rel=\"next\""));
    }
    let page_items: Vec<R> = items[start..end].iter().map(render).collect();
    let mut response = Json(page_items).into_response();
    // As the pagination guide shows Procore's lists, with the charset.
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    let (with_total, with_per_page, with_link) = match s.config.procore_paging {
        PagingHeaders::All | PagingHeaders::SeparateLinkFields => (true, true, true),
        PagingHeaders::NoLink => (true, true, false),
        PagingHeaders::TotalOnly => (true, false, false),
        PagingHeaders::None => (false, false, false),
    };
    let h = response.headers_mut();
    for (name, value, wanted) in [
        ("total", total.to_string(), with_total),
        ("per-page", per_page.to_string(), with_per_page),
        (
            "link",
            links.join(", "),
            with_link && !separate && !links.is_empty(),
        ),
    ] {
        if let (true, Ok(v)) = (wanted, HeaderValue::from_str(&value)) {
            h.insert(name, v);
        }
    }
    if separate {
        for l in &links {
            if let Ok(v) = HeaderValue::from_str(l) {
                h.append("link", v);
            }
        }
    }
    response
}
