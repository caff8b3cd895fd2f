//! The console's extractors for a page's path, query and form: axum's own
//! answer a value they cannot read (a field given twice, a path that is
//! not UTF-8, a form of another type) with a bare plain-text 400. These
//! answer with the console's error page, its headers and its chrome, like
//! every other page it refuses.

use axum::extract::{Form, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::guard::Seen;
use super::pages::Failure;

/// The path's parameters; one the route cannot read is not a page the
/// console has.
pub struct PagePath<T>(pub T);

/// The query; one the page cannot read is a bad request, and the page
/// says which field.
pub struct PageQuery<T>(pub T);

/// A form sent as `application/x-www-form-urlencoded`.
pub struct PageForm<T>(pub T);

impl<T, S> FromRequestParts<S> for PagePath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let path = Path::<T>::from_request_parts(parts, state).await;
        path.map(|Path(value)| PagePath(value)).map_err(|_| {
            Failure::NotFound("There is no such page.".to_string()).page(&Seen::of(parts))
        })
    }
}

impl<T, S> FromRequestParts<S> for PageQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let query = Query::<T>::from_request_parts(parts, state).await;
        query.map(|Query(value)| PageQuery(value)).map_err(|e| {
            let why = serde_detail(&e.body_text()).to_string();
            Failure::BadRequest(format!(
                "This page cannot read the address's query ({why})."
            ))
            .page(&Seen::of(parts))
        })
    }
}

impl<T, S> FromRequest<S> for PageForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let seen = Seen::of(&parts);
        let form = Form::<T>::from_request(Request::from_parts(parts, body), state).await;
        form.map(|Form(value)| PageForm(value)).map_err(|e| {
            let why = serde_detail(&e.body_text()).to_string();
            Failure::BadRequest(format!(
                "This form could not be read ({why}); send it again from the console's page."
            ))
            .page(&seen)
        })
    }
}

/// What serde said, without axum's prefix ("Failed to deserialize query
/// string: duplicate field `status`" becomes "duplicate field `status`").
fn serde_detail(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, detail)| detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serdes_words_are_kept() {
        assert_eq!(
            serde_detail("Failed to deserialize query string: duplicate field `status`"),
            "duplicate field `status`"
        );
        assert_eq!(
            serde_detail("Failed to deserialize form body: name: invalid type"),
            "name: invalid type"
        );
        assert_eq!(serde_detail("no colon here"), "no colon here");
    }
}
