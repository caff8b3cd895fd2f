//! Signing in and out of a console that has a token: the login form asks
//! for a name (approvals are recorded under it) and the token, and sets a
//! session cookie signed with the token ([`super::access::sign_session`]).
//! The token is never echoed back, put in a URL or logged.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Console;
use super::access::{self, SESSION_LIFETIME};
use super::extract::{PageForm, PageQuery};
use super::guard::{SESSION_COOKIE, Seen, behind_https, cookie, safe_next, set_cookie};
use super::pages::page;
use super::view::LoginPage;

#[derive(Debug, Deserialize, Default)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

pub async fn form(
    State(console): State<Arc<Console>>,
    seen: Seen,
    PageQuery(q): PageQuery<NextQuery>,
) -> Response {
    let next = safe_next(&q.next);
    if console.token.is_none() || seen.viewer.is_some() {
        return Redirect::to(&next).into_response();
    }
    login_page(&seen, next, String::new(), None, StatusCode::OK)
}

fn login_page(
    seen: &Seen,
    next: String,
    name: String,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    page(
        status,
        &LoginPage {
            csrf: seen.csrf.clone(),
            next,
            name,
            problem: problem.map(str::to_string),
        },
    )
}

#[derive(Deserialize)]
pub struct Login {
    #[serde(default)]
    name: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    State(console): State<Arc<Console>>,
    seen: Seen,
    headers: HeaderMap,
    PageForm(form): PageForm<Login>,
) -> Response {
    let next = safe_next(&form.next);
    let Some(token) = &console.token else {
        return Redirect::to(&next).into_response();
    };
    let name = form.name.trim().to_string();
    if !access::valid_name(&name) {
        let problem = format!(
            "Give your name (1 to {} characters); approvals are recorded under it.",
            access::MAX_NAME_CHARS
        );
        return login_page(
            &seen,
            next,
            String::new(),
            Some(&problem),
            StatusCode::BAD_REQUEST,
        );
    }
    if !token.matches(&form.token) {
        super::notice("console: a sign-in was refused (wrong token)");
        return login_page(
            &seen,
            next,
            name,
            Some("That is not the console token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let Some(session) = access::sign_session(token, &name) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session could not be signed",
        )
            .into_response();
    };
    let cookie = set_cookie(
        SESSION_COOKIE,
        &session,
        Some(SESSION_LIFETIME),
        behind_https(&headers),
    );
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// Signs out: the browser forgets its session cookie, and this console
/// refuses that cookie from now on, should a copy of it come back.
pub async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let (Some(token), Some(session)) = (&console.token, cookie(&headers, SESSION_COOKIE))
        && access::verify_session(token, &session).is_some()
    {
        console.signed_out.end(&session);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            Some(std::time::Duration::ZERO),
            behind_https(&headers),
        ),
    );
    response
}
