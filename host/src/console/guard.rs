//! The gate every request passes ([`guard`]): the loopback `Host` check,
//! on an open console whether the connection is its owner's, who is
//! asking (session cookie, bearer token, or the OS user on an open
//! loopback console), the origin and CSRF checks of every POST, and the
//! security headers of every response.
//!
//! Account: an open console serves only its own OS account and root (the
//! connection's account is found as it is accepted, [`super::peer`]);
//! anyone else is told to use that account or set a token.
//!
//! Origin: a POST whose `Origin` is not the console's own (the scheme and
//! the `Host` it was asked for), or without `Origin` whose `Sec-Fetch-Site`
//! says another site sent it, is refused. A request with neither is not
//! from a browser, and goes on to the CSRF check.
//!
//! CSRF: each browser gets a random value in an HttpOnly, SameSite=Strict
//! cookie; every form carries that value signed with the console's
//! [`CsrfKey`](super::access::CsrfKey) in a hidden `csrf` field (or a
//! request sends it as `X-CSRF-Token`). A POST whose field is not its
//! cookie's signature is refused before any handler sees it.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};

use super::Console;
use super::access::{self, CsrfKey};
use super::peer::{Owner, Peer};
use super::view::{Chrome, ErrorPage, href, render};

pub const SESSION_COOKIE: &str = "sluice_session";
pub const CSRF_COOKIE: &str = "sluice_csrf";
const CSRF_FIELD: &str = "csrf";
const CSRF_HEADER: &str = "x-csrf-token";
/// The largest form read, before anyone is known to have signed in; a
/// bigger body is refused before it is read whole. A plan's decision form
/// names the pending keys its page showed, at most a page of 200 (about
/// 40 bytes each), and ticks as many: well within. (Unpaged, a plan of
/// 1,700 pending did not fit in 64 KiB.)
pub const MAX_FORM_BYTES: usize = 256 * 1024;

/// The policy of every page: nothing from elsewhere, scripts and styles
/// only from the console's own files, no inline script or style, frames
/// only of its own (the sandboxed report), and never framed by others.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Who is looking at the console.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The name approvals are recorded under.
    pub name: String,
    pub how: Via,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An open console on loopback: the OS user.
    Loopback,
    /// The login form's session cookie.
    Session,
    /// `Authorization: Bearer`.
    Bearer,
}

/// The CSRF value this browser's forms carry (its cookie, signed).
#[derive(Debug, Clone)]
pub struct Csrf(pub String);

/// What the guard knows of a request, for handlers: who, and the CSRF
/// value for their forms.
pub struct Seen {
    pub viewer: Option<Viewer>,
    pub csrf: String,
}

impl Seen {
    pub fn chrome(&self) -> Chrome {
        Chrome {
            who: self
                .viewer
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_default(),
            csrf: self.csrf.clone(),
            signed_in: self.viewer.as_ref().is_some_and(|v| v.how == Via::Session),
            notice: None,
        }
    }

    /// What the guard left on the request.
    pub fn of(parts: &Parts) -> Seen {
        Seen {
            viewer: parts.extensions.get::<Viewer>().cloned(),
            csrf: parts
                .extensions
                .get::<Csrf>()
                .map(|c| c.0.clone())
                .unwrap_or_default(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Seen {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Seen::of(parts))
    }
}

/// What a path is, for the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Stylesheet, script, icon: open to all, no CSRF.
    Asset,
    /// The login form: open, with CSRF.
    Login,
    /// `/metrics`, `/healthz`, `/readyz`.
    Operations,
    /// Everything else.
    Page,
}

fn kind(path: &str) -> Kind {
    match path {
        "/login" => Kind::Login,
        "/metrics" | "/healthz" | "/readyz" => Kind::Operations,
        p if p.starts_with("/static/") => Kind::Asset,
        _ => Kind::Page,
    }
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Whether the request came through a TLS proxy, as its
/// `X-Forwarded-Proto` says: the browser then reaches the console over
/// https, and its cookies must never go over plain http.
pub fn behind_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A cookie the console sets: HttpOnly, SameSite=Strict, for the whole
/// console, and `Secure` when the browser came over https
/// ([`behind_https`]); `max_age` 0 deletes it.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age: Option<std::time::Duration>,
    secure: bool,
) -> HeaderValue {
    let mut c = Cookie::build((name.to_string(), value.to_string()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .path("/");
    if let Some(age) = max_age {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        c = c.max_age(cookie::time::Duration::seconds(secs));
    }
    // Names and values are ours: hex, digits and dots.
    HeaderValue::from_str(&c.build().to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// Who a request comes from, or why it is refused (a wrong bearer token).
fn identify(console: &Console, headers: &HeaderMap) -> Result<Option<Viewer>, ()> {
    let Some(token) = &console.token else {
        return Ok(Some(Viewer {
            name: console.os_user.clone(),
            how: Via::Loopback,
        }));
    };
    // A signed-in browser is its person, even behind a proxy that adds
    // the token to every request.
    if let Some(name) = cookie(headers, SESSION_COOKIE)
        .filter(|v| !console.signed_out.ended(v))
        .and_then(|v| access::verify_session(token, &v))
    {
        return Ok(Some(Viewer {
            name,
            how: Via::Session,
        }));
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let given = auth.to_str().ok().and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        });
        return match given {
            Some(given) if token.matches(given.trim()) => Ok(Some(Viewer {
                name: "api".to_string(),
                how: Via::Bearer,
            })),
            _ => Err(()),
        };
    }
    Ok(None)
}

/// A short refusal page for a request that cannot be shown the console.
fn refusal(status: StatusCode, title: &str, message: &str) -> Response {
    let page = ErrorPage {
        chrome: Chrome::default(),
        title: title.to_string(),
        message: message.to_string(),
    };
    match render(&page) {
        Ok(html) => (status, axum::response::Html(html)).into_response(),
        Err(_) => (status, message.to_string()).into_response(),
    }
}

/// Where to go after signing in: only a path on this console.
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if ok {
        next.to_string()
    } else {
        "/".to_string()
    }
}

/// Checks the CSRF value of a POST against its browser's `cookie` (empty
/// when it sent none), reading (a bounded) body and handing it on
/// unchanged.
async fn check_csrf(request: Request, key: &CsrfKey, cookie: &str) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let refused = || {
        refusal(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form did not carry the console's CSRF token (it may be old, or it came from another site). Reload the page and try again.",
        )
    };
    if let Some(given) = parts.headers.get(CSRF_HEADER) {
        let given = given.to_str().unwrap_or("");
        return if key.verifies(cookie, given) {
            Ok(Request::from_parts(parts, body))
        } else {
            Err(refused())
        };
    }
    let bytes = to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Form too large",
            "The form sent more than the console accepts (256 KiB); its own pages' forms are far smaller. Reload the page and try again.",
        )
    })?;
    let given = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if key.verifies(cookie, &given) {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(refused())
    }
}

/// The console's own origin as this request names it: the scheme (`https`
/// when a proxy in front says so with `X-Forwarded-Proto`) and the `Host`.
fn own_origin(request: &Request) -> String {
    let headers = request.headers();
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .or_else(|| request.uri().scheme_str().map(str::to_string))
        .unwrap_or_else(|| "http".to_string());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    format!("{scheme}://{host}")
}

/// Refuses a POST a browser sent from another origin: its `Origin` must be
/// the console's own; without one, its `Sec-Fetch-Site` (if any) must say
/// the same origin, or the user's own action (`none`).
fn refuse_other_origin(request: &Request) -> Option<Response> {
    let headers = request.headers();
    let from_elsewhere =
        |message: String| refusal(StatusCode::FORBIDDEN, "Form from another site", &message);
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(unreadable)");
        let ours = own_origin(request);
        if origin.eq_ignore_ascii_case(&ours) {
            return None;
        }
        return Some(from_elsewhere(format!(
            "This form was sent from {origin}, not from this console ({ours}), so it was refused: a page of another site cannot make changes here. Open the console itself and use its form. Behind a proxy, have the proxy pass the Host header on unchanged and set X-Forwarded-Proto."
        )));
    }
    match headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None | Some("same-origin") | Some("none") => None,
        Some(site) => Some(from_elsewhere(format!(
            "This form was sent from another site (Sec-Fetch-Site: {site}), so it was refused: a page of another site cannot make changes here. Open the console itself and use its form."
        ))),
    }
}

/// On an open console, refuses a connection that is not the console's own
/// account's (or root's), and one whose account could not be found.
fn refuse_other_account(console: &Console, request: &Request) -> Option<Response> {
    let owner = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(peer)| peer.owner.clone());
    let advice = format!(
        "This console has no token, so only the account that started it ({}) and root may use it. Use that account (for example `ssh -L 8700:127.0.0.1:PORT` as that user), or start the console with a token (SLUICE_CONSOLE_TOKEN or --token-file) and sign in.",
        console.os_user
    );
    let why = match owner {
        Some(Owner::Uid(uid)) if uid == console.os_uid || uid == 0 => return None,
        Some(Owner::Uid(uid)) => {
            super::notice(&format!(
                "console: refused a connection from uid {uid}: not the console's owner and no token is set"
            ));
            format!("This connection comes from another account (uid {uid}).")
        }
        Some(Owner::Unknown(why)) => {
            super::notice(&format!(
                "console: refused a connection whose account could not be found: {why}"
            ));
            format!("The account this connection comes from could not be found ({why}).")
        }
        Some(Owner::NotChecked) | None => {
            "The account this connection comes from was not looked up.".to_string()
        }
    };
    Some(refusal(
        StatusCode::FORBIDDEN,
        "Not your console",
        &format!("{why} {advice}"),
    ))
}

fn secure_headers(response: &mut Response) {
    let headers = response.headers_mut();
    let defaults = [
        (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: under it a browser sends `Origin: null` with
        // the console's own forms, which the origin check must refuse.
        // `same-origin` still tells other sites nothing.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

/// The middleware in front of every route.
pub async fn guard(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let mut response = pass(&console, request, next).await;
    secure_headers(&mut response);
    response
}

async fn pass(console: &Console, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    if console.token.is_none() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !access::is_loopback_host(host) {
            return refusal(
                StatusCode::FORBIDDEN,
                "Not on this address",
                "This console answers only at a loopback address (127.0.0.1, [::1] or localhost) while no console token is configured.",
            );
        }
    }
    let kind = kind(request.uri().path());
    if console.token.is_none()
        && matches!(kind, Kind::Page | Kind::Login)
        && let Some(refused) = refuse_other_account(console, &request)
    {
        return refused;
    }
    let headers = request.headers();
    let viewer = match identify(console, headers) {
        Ok(viewer) => viewer,
        Err(()) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "Wrong token",
                "The bearer token is not the console token.",
            );
        }
    };
    match kind {
        Kind::Asset => return next.run(request).await,
        Kind::Operations if console.operations_open || viewer.is_some() => {
            return next.run(request).await;
        }
        Kind::Operations => {
            return (
                StatusCode::UNAUTHORIZED,
                "this endpoint needs the console token (Authorization: Bearer …) or --metrics-public\n",
            )
                .into_response();
        }
        Kind::Page if viewer.is_none() => return sign_in_first(&request),
        Kind::Page | Kind::Login => {}
    }
    // The bearer token is for scripts that read; a change (a decision, a
    // run) is a person's, from a signed-in page or the command line.
    if request.method() == Method::POST
        && kind == Kind::Page
        && viewer.as_ref().is_some_and(|v| v.how == Via::Bearer)
    {
        return refusal(
            StatusCode::FORBIDDEN,
            "Changes need a person",
            "The bearer token reads pages and metrics only: a decision or a run is made from the console's own pages once signed in at /login (approvals are recorded under your name), or with `sluice approve` and `sluice reject`.",
        );
    }
    let secure = behind_https(headers);
    let (cookie, fresh) = match cookie(headers, CSRF_COOKIE) {
        Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => (v, false),
        _ => (access::new_csrf_value(), true),
    };
    if request.method() == Method::POST {
        if let Some(refused) = refuse_other_origin(&request) {
            return refused;
        }
        let sent = if fresh { "" } else { cookie.as_str() };
        request = match check_csrf(request, &console.csrf_key, sent).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
    }
    if let Some(viewer) = viewer {
        request.extensions_mut().insert(viewer);
    }
    request
        .extensions_mut()
        .insert(Csrf(console.csrf_key.sign(&cookie)));
    let mut response = next.run(request).await;
    if fresh {
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, &cookie, None, secure),
        );
    }
    response
}

/// A page asked for without signing in: a browser is sent to the login
/// form (and back afterwards); anything else is told it is unauthorized.
fn sign_in_first(request: &Request) -> Response {
    if request.method() == Method::GET {
        let next = request.uri().path_and_query().map_or("/", |p| p.as_str());
        return Redirect::to(&href("/login", &[("next", next)])).into_response();
    }
    refusal(
        StatusCode::UNAUTHORIZED,
        "Sign in first",
        "This console needs its token: sign in at /login, or send Authorization: Bearer TOKEN.",
    )
}
