//! A Graph list request's query options, checked as Graph checks them:
//! `$top` (1–999), the opaque `$skiptoken`, `$select` and `$filter` names
//! that must exist on the listed type, and the advanced query parameters
//! (`$count=true` with a `ConsistencyLevel: eventual` header) that counting
//! and some filters need. Each refusal is Graph's 400 in Graph's envelope.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::filter::{self, Expr, MAX_OR_CLAUSES};
use super::schema::{Kind, Object};
use crate::api::{error, get, query_pairs};
use crate::state::Service;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;

/// What a request lists: it decides which types its items may have and
/// which filters need the advanced query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `/groups` (or one group).
    Groups,
    /// `/users` (or one user).
    Users,
    /// A group's `members` or `transitiveMembers`: directory objects of any type.
    Members,
}

impl Listing {
    fn kinds(self) -> &'static [Kind] {
        match self {
            Listing::Groups => &[Kind::Group],
            Listing::Users => &[Kind::User],
            Listing::Members => &Kind::ALL,
        }
    }

    /// The type Graph names when a property is not found.
    fn type_name(self) -> &'static str {
        match self {
            Listing::Groups => "microsoft.graph.group",
            Listing::Users => "microsoft.graph.user",
            Listing::Members => "microsoft.graph.directoryObject",
        }
    }

    /// The property's canonical name if any type of this listing has it.
    pub fn property(self, name: &str) -> Result<&'static str, Response> {
        self.kinds()
            .iter()
            .find_map(|k| k.property(name))
            .ok_or_else(|| {
                bad_request(
                    "Request_BadRequest",
                    &format!(
                        "Could not find a property named '{name}' on type '{}'.",
                        self.type_name()
                    ),
                )
            })
    }
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub size: usize,
    pub offset: usize,
    /// Whether the (injected) empty first page has been served.
    pub after_empty: bool,
}

impl Window {
    /// The part of a collection of `total` items this page serves.
    pub fn range(&self, total: usize) -> std::ops::Range<usize> {
        self.offset.min(total)..(self.offset.saturating_add(self.size)).min(total)
    }
}

/// The checked query options of one list request.
pub struct Query {
    /// Every option as sent, decoded, for the nextLink.
    pub pairs: Vec<(String, String)>,
    pub window: Window,
    pub select: Option<Vec<&'static str>>,
    pub filter: Option<Expr>,
    /// `@odata.count` is wanted and allowed (`$count=true` with the header).
    pub count: bool,
}

impl Query {
    /// Reads and checks the options of a request listing `listing`.
    pub fn parse(
        listing: Listing,
        raw: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Query, Response> {
        let pairs = query_pairs(raw);
        let eventual = headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
        let counted = get(&pairs, "$count").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let advanced = eventual && counted;
        let select = match get(&pairs, "$select") {
            None => None,
            Some(list) => Some(select(listing, list)?),
        };
        let filter = match get(&pairs, "$filter") {
            None => None,
            Some(text) => Some(checked_filter(listing, text, advanced)?),
        };
        let window = window(&pairs)?;
        Ok(Query {
            // Graph ignores `$count=true` without the header, silently.
            count: advanced,
            pairs,
            window,
            select,
            filter,
        })
    }

    /// Whether an object passes the filter (all do without one).
    pub fn keeps(&self, object: &Object) -> bool {
        self.filter.as_ref().is_none_or(|f| {
            f.matches(&|p| object.get(p).cloned().unwrap_or(serde_json::Value::Null))
        })
    }
}

fn bad_request(code: &str, message: &str) -> Response {
    error(Service::Graph, StatusCode::BAD_REQUEST, code, message)
}

fn select(listing: Listing, list: &str) -> Result<Vec<&'static str>, Response> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| listing.property(p))
        .collect()
}

/// Parses a filter and checks its names and whether it may run without the
/// advanced query parameters. Graph serves no filter on a group's members
/// without them, and `ne`, `not` and `endswith` nowhere without them.
fn checked_filter(listing: Listing, text: &str, advanced: bool) -> Result<Expr, Response> {
    let expr = filter::parse(text).map_err(|e| {
        bad_request(
            "Request_UnsupportedQuery",
            &format!(
                "Unsupported or invalid query filter clause specified: '{text}' ({}).",
                e.0
            ),
        )
    })?;
    for property in expr.properties() {
        listing.property(property)?;
    }
    if advanced {
        return Ok(expr);
    }
    let widest = expr.widest_or();
    if widest > MAX_OR_CLAUSES {
        return Err(bad_request(
            "Request_UnsupportedQuery",
            &format!(
                "Too many child clauses specified in search filter expression containing 'OR' operators: {widest}. Max allowed: {MAX_OR_CLAUSES}."
            ),
        ));
    }
    if listing == Listing::Members {
        return Err(bad_request(
            "Request_UnsupportedQuery",
            "The specified filter to the reference property query is currently not supported.",
        ));
    }
    match expr.advanced_operator() {
        None => Ok(expr),
        Some(op) => Err(bad_request(
            "Request_UnsupportedQuery",
            &format!(
                "Operator '{op}' is not supported because the required parameters might be missing. Try adding $count with a value of true and set the ConsistencyLevel header to eventual."
            ),
        )),
    }
}

fn window(pairs: &[(String, String)]) -> Result<Window, Response> {
    let size = match get(pairs, "$top") {
        None => DEFAULT_PAGE,
        Some(t) => match t.parse::<usize>() {
            Ok(n @ 1..=MAX_PAGE) => n,
            _ => {
                return Err(bad_request(
                    "Request_BadRequest",
                    &format!(
                        "Invalid page size specified: '{t}'. Must be between 1 and {MAX_PAGE} inclusive."
                    ),
                ));
            }
        },
    };
    let (offset, after_empty) = match get(pairs, "$skiptoken") {
        None => (0, false),
        Some(t) => decode_skip(t)
            .ok_or_else(|| bad_request("Request_BadRequest", "Invalid skip token."))?,
    };
    Ok(Window {
        size,
        offset,
        after_empty,
    })
}

/// Skip tokens are opaque to clients: an offset, scrambled, and whether the
/// (injected) empty page has been served.
pub fn encode_skip(offset: usize, after_empty: bool) -> String {
    format!(
        "{}{:x}",
        if after_empty { "RFNT" } else { "X2Q" },
        (offset as u64) ^ 0x5DEE_CE66_D1CE_4E5B
    )
}

fn decode_skip(token: &str) -> Option<(usize, bool)> {
    let (rest, after_empty) = if let Some(r) = token.strip_prefix("RFNT") {
        (r, true)
    } else {
        (token.strip_prefix("X2Q")?, false)
    };
    let n = u64::from_str_radix(rest, 16).ok()? ^ 0x5DEE_CE66_D1CE_4E5B;
    Some((usize::try_from(n).ok()?, after_empty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_tokens_round_trip() {
        assert_eq!(decode_skip(&encode_skip(1998, true)), Some((1998, true)));
        assert_eq!(decode_skip("garbage"), None);
    }
}
