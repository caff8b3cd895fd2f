//! What a component may ask a connection for.
//!
//! A component names a path under the connection's base URL (or an absolute
//! URL under it, such as Graph's `@odata.nextLink`). Everything else is a
//! sandbox violation: another scheme, host or port, a path outside the base
//! path, `..`/`.` segments written plainly or percent-encoded, encoded
//! slashes or backslashes, control characters, and headers that carry
//! credentials or framing. Violations are not returned to the component:
//! they fail its step.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

use crate::http_rules::{has_userinfo, is_reserved_header, valid_header_name, valid_header_value};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("the step was not granted connection `{0}`")]
    NotGranted(String),
    #[error("`{url}` is outside the connection's base URL {base}")]
    OutsideBase { url: String, base: String },
    #[error("`{0}` contains a `..` or `.` path segment, plain or encoded")]
    DotSegment(String),
    #[error("`{0}` contains an encoded `/`, `\\` or control character")]
    EncodedSeparator(String),
    #[error(
        "`{0}` contains percent-encoded bytes that are not UTF-8 (such as an overlong `.` or `/`)"
    )]
    NotUtf8(String),
    #[error("`{0}` contains a control character or a backslash")]
    BadCharacter(String),
    #[error("header `{0}` may not be set by a component")]
    ForbiddenHeader(String),
    #[error("a {0} request may not carry a body (services may read one as another method)")]
    BodyOnRead(String),
    #[error("header `{0}` has a name or value that is not allowed (CR/LF or invalid characters)")]
    BadHeader(String),
    #[error(
        "`{0}` carries a user name or password; credentials come only from the connection's auth"
    )]
    UserInfo(String),
}

/// Query values are encoded strictly: everything but unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Query names keep `$` (OData's `$filter`, `$select`) readable.
const QUERY_NAME: &AsciiSet = &QUERY_VALUE.remove(b'$').remove(b'[').remove(b']');

/// Builds the URL to send, or says why the request must not be sent.
pub fn resolve_url(
    base: &Url,
    requested: &str,
    query: &[(String, String)],
) -> Result<Url, Violation> {
    Base::new(base).resolve(requested, query)
}

/// A connection's base URL and the directory its requests resolve in,
/// worked out once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct Base {
    url: Url,
    dir: Url,
}

impl Base {
    pub fn new(url: &Url) -> Base {
        Base {
            url: url.clone(),
            dir: base_with_slash(url),
        }
    }

    /// [`resolve_url`] against this base.
    pub fn resolve(&self, requested: &str, query: &[(String, String)]) -> Result<Url, Violation> {
        resolve_in(&self.url, &self.dir, requested, query)
    }
}

fn resolve_in(
    base: &Url,
    base_dir: &Url,
    requested: &str,
    query: &[(String, String)],
) -> Result<Url, Violation> {
    if requested.chars().any(|c| c.is_control() || c == '\\') {
        return Err(Violation::BadCharacter(super::shown_url(
            &requested.escape_debug().to_string(),
        )));
    }
    let outside = || Violation::OutsideBase {
        url: super::shown_url(requested),
        base: base.to_string(),
    };
    let has_scheme = requested.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !scheme.contains('/')
    }) && !requested.starts_with('/');
    let mut url = if has_scheme {
        let url = Url::parse(requested).map_err(|_| outside())?;
        // Userinfo first: a URL carrying a password must not be echoed as
        // "outside the base URL" with the password in it.
        refuse_userinfo(&url)?;
        if !same_origin(&url, base) {
            return Err(outside());
        }
        check_segments(requested, raw_path(requested))?;
        url
    } else {
        if requested.starts_with("//") {
            return Err(outside());
        }
        let relative = requested.strip_prefix('/').unwrap_or(requested);
        check_segments(requested, relative.split(['?', '#']).next().unwrap_or(""))?;
        base_dir.join(relative).map_err(|_| outside())?
    };
    if url.fragment().is_some() {
        url.set_fragment(None);
    }
    refuse_userinfo(&url)?;
    if !under_base(&url, base_dir) {
        return Err(outside());
    }
    if !query.is_empty() {
        let mut q = url.query().map(str::to_string).unwrap_or_default();
        for (name, value) in query {
            if !q.is_empty() {
                q.push('&');
            }
            q.extend(utf8_percent_encode(name, QUERY_NAME));
            q.push('=');
            q.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        url.set_query(Some(&q));
    }
    Ok(url)
}

fn base_with_slash(base: &Url) -> Url {
    let mut b = base.clone();
    if !b.path().ends_with('/') {
        let path = format!("{}/", b.path());
        b.set_path(&path);
    }
    b.set_query(None);
    b.set_fragment(None);
    b
}

fn refuse_userinfo(url: &Url) -> Result<(), Violation> {
    if has_userinfo(url) {
        return Err(Violation::UserInfo(super::shown_url(&redact_userinfo(url))));
    }
    Ok(())
}

/// The URL as text with its password (and user name) replaced, for errors.
fn redact_userinfo(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    // `Url` percent-encodes a user name it is given, so the mark that
    // stands for the credential goes in as text.
    let text = shown.to_string();
    match text.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://…@{rest}"),
        None => text,
    }
}

/// Same scheme, literal host and port. `localhost`, `127.0.0.1` and
/// `[::1]` are different sockets, which different users may bind: a token
/// meant for one must never reach another.
fn same_origin(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.host() == base.host()
}

fn under_base(url: &Url, base_dir: &Url) -> bool {
    same_origin(url, base_dir)
        && (url.path().starts_with(base_dir.path())
            || format!("{}/", url.path()) == base_dir.path())
}

fn raw_path(absolute: &str) -> &str {
    let after_scheme = absolute
        .split_once("://")
        .map_or(absolute, |(_, rest)| rest);
    let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
    after_scheme[path_start..]
        .split(['?', '#'])
        .next()
        .unwrap_or("")
}

/// How many rounds of percent-decoding a segment may need: far more than
/// any real path (one), enough that nesting cannot be used to hide a form.
const MAX_DECODING_ROUNDS: usize = 16;

/// Refuses path segments that some server could read as `.` or `..`, or as
/// a separator: written plainly, percent-encoded any number of times, with
/// a `;` parameter (`..;/` is `..` to Tomcat and Spring), in overlong UTF-8
/// (`%c0%ae`), or with dots from other scripts (`．`, fullwidth) that
/// Unicode normalisation turns into `.`.
fn check_segments(requested: &str, path: &str) -> Result<(), Violation> {
    let dot = || Violation::DotSegment(super::shown_url(requested));
    let separator = || Violation::EncodedSeparator(super::shown_url(requested));
    for segment in path.split('/') {
        // Most segments hold no escape: nothing to decode, and the plain
        // name is all there is to check.
        if !segment.contains('%') {
            if is_dot_segment(segment.split(';').next().unwrap_or("")) {
                return Err(dot());
            }
            continue;
        }
        let mut text = segment.to_string();
        for round in 0.. {
            // `..;x` is `..` to servers that strip path parameters.
            let name = text.split(';').next().unwrap_or("");
            if is_dot_segment(name) {
                return Err(dot());
            }
            let bytes: Vec<u8> = percent_decode_str(&text).collect();
            if bytes == text.as_bytes() {
                break;
            }
            if bytes
                .iter()
                .any(|b| *b == b'/' || *b == b'\\' || b.is_ascii_control())
            {
                return Err(separator());
            }
            // Overlong forms (`%c0%ae`) and other invalid UTF-8 are not
            // text; some decoders read them as `.` or `/`.
            let Ok(next) = String::from_utf8(bytes) else {
                return Err(Violation::NotUtf8(super::shown_url(requested)));
            };
            if round + 1 >= MAX_DECODING_ROUNDS {
                return Err(separator());
            }
            text = next;
        }
    }
    Ok(())
}

/// `.` or `..`, counting the characters Unicode compatibility
/// normalisation (NFKC) turns into dots.
fn is_dot_segment(name: &str) -> bool {
    let mut dots = 0;
    for c in name.chars() {
        dots += match c {
            // FULL STOP, ONE DOT LEADER, SMALL FULL STOP, FULLWIDTH FULL STOP
            '.' | '\u{2024}' | '\u{FE52}' | '\u{FF0E}' => 1,
            // TWO DOT LEADER
            '\u{2025}' => 2,
            _ => return false,
        };
    }
    dots == 1 || dots == 2
}

/// Refuses a body on GET and HEAD: a read that carries one is a write to
/// some services, and would go out during a dry run.
pub fn check_body(method: super::Method, body: Option<&[u8]>) -> Result<(), Violation> {
    match body {
        Some(body) if method.is_read() && !body.is_empty() => {
            Err(Violation::BodyOnRead(method.to_string()))
        }
        _ => Ok(()),
    }
}

/// Checks a component's extra request headers.
pub fn check_headers(
    headers: &[(String, String)],
    connection_headers: &[(String, String)],
) -> Result<(), Violation> {
    for (name, value) in headers {
        // The rules reqwest applies when it builds the request, checked here
        // so a bad header is the component's mistake, not a transport
        // failure to retry.
        if !valid_header_name(name) || !valid_header_value(value) {
            return Err(Violation::BadHeader(super::shown_url(
                &name.escape_debug().to_string(),
            )));
        }
        if is_reserved_header(name)
            || connection_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Err(Violation::ForbiddenHeader(name.clone()));
        }
    }
    Ok(())
}

/// Response headers a component never sees.
pub fn hidden_response_header(name: &str) -> bool {
    matches!(name, "set-cookie" | "authorization" | "proxy-authenticate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://api.example.com/rest/v1.0").unwrap()
    }

    #[test]
    fn relative_paths_and_absolute_urls_under_the_base_are_allowed() {
        let u = resolve_url(&base(), "companies/1/users", &[("page".into(), "2".into())]).unwrap();
        assert_eq!(
            u.as_str(),
            "https://api.example.com/rest/v1.0/companies/1/users?page=2"
        );
        let u = resolve_url(&base(), "/companies/1/users", &[]).unwrap();
        assert_eq!(u.path(), "/rest/v1.0/companies/1/users");
        let next = "https://api.example.com/rest/v1.0/groups?$skiptoken=abc%3D%3D";
        assert_eq!(resolve_url(&base(), next, &[]).unwrap().as_str(), next);
        // Dots and `;` inside names, and text past ASCII, are fine.
        for ok in [
            "users/first.last@example.com",
            "files/a..b",
            "matrix;v=1/x",
            "users/J%C3%B6rg",
            "files/...",
            "users/%2525",
        ] {
            assert!(resolve_url(&base(), ok, &[]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn query_values_are_strictly_encoded() {
        let u = resolve_url(
            &base(),
            "groups",
            &[(
                "$filter".into(),
                "startswith(displayName,'License – M')".into(),
            )],
        )
        .unwrap();
        assert_eq!(
            u.query(),
            Some("$filter=startswith%28displayName%2C%27License%20%E2%80%93%20M%27%29")
        );
    }

    #[test]
    fn escapes_are_refused() {
        let cases = [
            "https://evil.example/rest/v1.0/x",
            "http://api.example.com/rest/v1.0/x",
            "https://api.example.com:444/rest/v1.0/x",
            "https://api.example.com/rest/v2.0/x",
            "https://api.example.com/rest/v1.0/../v2.0/x",
            "../v2.0/x",
            "a/../../v2.0",
            "%2e%2e/v2.0",
            "%2E%2e/v2.0",
            "%252e%252e/v2.0",
            "a%2fb",
            "a%5c..",
            "//evil.example/x",
            "a\\..\\b",
            "x\r\nHost: evil",
            "file:///etc/passwd",
            "https://api.example.com@evil.example/rest/v1.0/x",
            "https://user:pw@api.example.com/rest/v1.0/x",
            "https://user@api.example.com/rest/v1.0/x",
            "https://:pw@api.example.com/rest/v1.0/x",
            // Forms servers normalise to `..`.
            "..;/v2.0/x",
            "a/..;/..;/v2.0",
            "..;jsessionid=1/v2.0",
            "%2e%2e;/v2.0",
            "%2e%2e%3b/v2.0",
            "https://api.example.com/rest/v1.0/..;/v2.0/x",
            "\u{FF0E}\u{FF0E}/v2.0",
            "%EF%BC%8E%EF%BC%8E/v2.0",
            "\u{2025}/v2.0",
            "%c0%ae%c0%ae/v2.0",
            "%C0%AE/x",
            "%e0%80%ae%e0%80%ae/v2.0",
            "a%c0%afb",
            "%25252e%25252e/v2.0",
            "%2525252e%2525252e/v2.0",
            "%252525252e%252525252e/v2.0",
        ];
        for case in cases {
            assert!(
                resolve_url(&base(), case, &[]).is_err(),
                "{case} was allowed"
            );
        }
    }

    #[test]
    fn credential_and_framing_headers_are_refused() {
        let company = vec![("Procore-Company-Id".to_string(), "1".to_string())];
        assert!(check_headers(&[("Accept".into(), "application/json".into())], &company).is_ok());
        for name in [
            "Authorization",
            "authorization",
            "Cookie",
            "Host",
            "procore-company-id",
            "Content-Length",
        ] {
            assert_eq!(
                check_headers(&[(name.into(), "x".into())], &company),
                Err(Violation::ForbiddenHeader(name.into()))
            );
        }
        for (name, value) in [
            ("X-A", "a\r\nB: c"),
            ("X-A", "é"),
            ("X-A", "a\u{7f}b"),
            ("X-A", "a\u{1}b"),
            ("X-A", "a\0b"),
            ("X A", "x"),
            ("", "x"),
            ("X-Ä", "x"),
        ] {
            assert!(
                matches!(
                    check_headers(&[(name.into(), value.into())], &company),
                    Err(Violation::BadHeader(_))
                ),
                "{name:?}: {value:?} was allowed"
            );
        }
        assert!(check_headers(&[("X-A".into(), "tab\tand space ok".into())], &company).is_ok());
    }

    #[test]
    fn user_info_is_refused_and_not_echoed() {
        let e = resolve_url(
            &base(),
            "https://user:hunter2@api.example.com/rest/v1.0/x",
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, Violation::UserInfo(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("`https://…@api.example.com/rest/v1.0/x` carries a user name"),
            "{e}"
        );
    }

    #[test]
    fn loopback_aliases_are_different_origins() {
        let base = Url::parse("http://127.0.0.1:8787/v1.0").unwrap();
        assert!(resolve_url(&base, "http://127.0.0.1:8787/v1.0/groups?$skiptoken=x", &[]).is_ok());
        for other in [
            "http://localhost:8787/v1.0/groups",
            "http://[::1]:8787/v1.0/groups",
            "http://127.0.0.2:8787/v1.0/groups",
            "http://127.0.0.1:8788/v1.0/groups",
            "http://LOCALHOST:8787/v1.0/groups",
        ] {
            assert!(resolve_url(&base, other, &[]).is_err(), "{other}");
        }
        let v6 = Url::parse("http://[::1]:8787/v1.0").unwrap();
        assert!(resolve_url(&v6, "http://[::1]:8787/v1.0/groups", &[]).is_ok());
        assert!(resolve_url(&v6, "http://127.0.0.1:8787/v1.0/groups", &[]).is_err());
        assert!(resolve_url(&v6, "http://localhost:8787/v1.0/groups", &[]).is_err());
    }
}
