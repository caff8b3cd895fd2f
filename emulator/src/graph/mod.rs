//! Microsoft Graph v1.0, served under `/v1.0`, and the identity platform's
//! token endpoint. What Graph does, the emulator does: groups and users with
//! `$filter` (`startswith` on the en-dash license prefixes, compared
//! without case as the directory compares), `$select` checked against each
//! type's properties, members and transitiveMembers with their
//! `@odata.type`, `$count` and member filters as advanced queries,
//! `@odata.nextLink` paging, `sendMail`, and Graph's error envelope for
//! every error — a missing object (404 `Request_ResourceNotFound`), a path
//! it does not serve (400 `BadRequest`, "Resource not found for the
//! segment …") and a method it does not take included — so a Graph SDK
//! reads every answer as it reads Graph's.

pub(crate) mod delta;
mod directory;
mod filter;
pub(crate) mod lookup_lag;
mod mail;
pub(crate) mod member_lists;
mod paging;
mod query;
mod schema;
mod token;
pub(crate) mod user_delta;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use crate::api::{self, error};
use crate::state::{Service, Shared};

pub use mail::SEND_MAIL_MAX_BYTES;
pub use token::token;

/// The path segments under `/v1.0` that the emulator serves, in the order a
/// path may hold them; an id may stand between them.
const KNOWN_SEGMENTS: &[&str] = &[
    "groups",
    "delta",
    "users",
    "members",
    "transitiveMembers",
    "sendMail",
];

/// Graph's routes, to be nested under `/v1.0`, behind the Graph gate
/// (faults, token, budget), which also guards the answers to unknown paths.
pub fn router(shared: Shared) -> Router<Shared> {
    Router::new()
        .route("/groups", get(directory::groups))
        .route("/groups/delta", get(delta::groups_delta))
        .route("/groups/microsoft.graph.delta()", get(delta::groups_delta))
        .route("/groups/{id}", get(directory::group))
        .route("/groups/{id}/members", get(directory::members))
        .route(
            "/groups/{id}/transitiveMembers",
            get(directory::transitive_members),
        )
        .route("/users", get(directory::users))
        .route("/users/delta", get(user_delta::users_delta))
        .route(
            "/users/microsoft.graph.delta()",
            get(user_delta::users_delta),
        )
        .route("/users/{id}", get(directory::user))
        .route("/users/{user}/sendMail", post(mail::send_mail))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            shared,
            api::graph_gate,
        ))
}

/// The first segment of a path (under `/v1.0`) that the emulator does not
/// serve: ids stand at every other place after a collection's name.
fn unknown_segment(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments
        .iter()
        .enumerate()
        .find(|(i, s)| i % 2 == 0 && !KNOWN_SEGMENTS.contains(s))
        .map(|(_, s)| s)
        .or(segments.last())
        .map(|s| (*s).to_string())
        .unwrap_or_default()
}

async fn unknown_path(request: Request) -> Response {
    let segment = unknown_segment(request.uri().path());
    error(
        Service::Graph,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("Resource not found for the segment '{segment}'."),
    )
}

async fn method_not_allowed() -> Response {
    error(
        Service::Graph,
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_segment_is_named() {
        assert_eq!(unknown_segment("/foo"), "foo");
        assert_eq!(unknown_segment("/groups/abc/owners"), "owners");
        assert_eq!(unknown_segment("/users/a@x.com/messages/1"), "messages");
        assert_eq!(unknown_segment("/groups/abc/members/def"), "def");
    }
}
