//! The URL and header rules that both flow checking and the connection
//! layer apply.
//!
//! A flow file is checked against these rules before anything runs (a
//! connection's base URL and static headers), and the connection layer
//! applies the same rules to every request a component makes. Keeping them
//! here, below both, means neither imports the other and a rule changes in
//! one place.

use std::time::Duration;

use url::Url;

/// The longest the host waits for a remote service: a `Retry-After`, a
/// rate-limit window, a retry delay. Longer than an hour is an outage, and a
/// larger value would overflow deadline arithmetic.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Headers only the host may set: credentials, framing, content encoding
/// (the host decodes responses and checks them for secrets), hop-by-hop
/// headers (they speak to proxies and to the connection, not the service),
/// forwarding headers (a service may trust them to say who is calling), and
/// method overrides (`GET` with `X-HTTP-Method-Override: DELETE` is a
/// delete to many services, and would slip past a dry run).
pub fn is_reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("x-forwarded-")
        || matches!(
            name.as_str(),
            "authorization"
                | "proxy-authorization"
                | "cookie"
                | "host"
                | "content-length"
                | "transfer-encoding"
                | "accept-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "upgrade"
                | "te"
                | "trailer"
                | "expect"
                | "forwarded"
                | "via"
                | "x-http-method-override"
                | "x-http-method"
                | "x-method-override"
        )
}

/// Whether a header name is a valid HTTP token, as reqwest will accept it.
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        && reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// Whether a header value is one HTTP and reqwest allow: printable ASCII
/// (bytes past it, obsolete in HTTP, reach each server as something
/// different), no control characters.
pub fn valid_header_value(value: &str) -> bool {
    value.is_ascii() && reqwest::header::HeaderValue::from_str(value).is_ok()
}

/// Whether the URL's host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether a header's name says it carries a credential (`X-Api-Key`,
/// `Ocp-Apim-Subscription-Key`, `X-Auth-Token`, `X-Signature`…): a flow
/// must then take its value from `[secrets]`, so that it is kept out of
/// everything the host shows. Only a secret is known to be one.
pub fn names_a_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let credential = [
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word));
    credential || (name.ends_with("key") && name != "idempotency-key")
}

/// Whether a URL carries a user name or password, which reqwest would turn
/// into an `Authorization` header.
pub fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `text`, a URL or what was meant as one, as errors show it: a user name
/// and password (a credential) become `…@`, a query (where services put
/// keys) `?…`, and a fragment is dropped. Works on text that does not
/// parse, which is when it is shown most.
pub fn shown_endpoint(text: &str) -> String {
    let text = text.split('#').next().unwrap_or_default();
    let (text, query) = match text.split_once('?') {
        Some((before, _)) => (before, "?…"),
        None => (text, ""),
    };
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rfind('@') {
        Some(at) => format!("…@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    format!("{scheme}{authority}{path}{query}")
}

/// Why a text cannot be a connection's base URL (or token URL). The URL is
/// shown as [`shown_endpoint`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlError {
    #[error("`{text}` is not a valid URL: {reason}")]
    Invalid { text: String, reason: String },
    #[error("`{0}` uses plain http to a host that is not loopback")]
    PlainHttp(String),
    #[error("`{text}` has scheme `{scheme}`")]
    Scheme { text: String, scheme: String },
    #[error("credentials in a URL are not allowed")]
    UserInfo,
    /// The query itself is not shown: it is where services put keys.
    #[error("a base URL cannot carry a query (`?…`)")]
    Query,
    /// Shown up to the `#` only, like a query.
    #[error("`{0}#…` has a fragment")]
    Fragment(String),
}

impl BaseUrlError {
    /// What to do about it, for a flow file's diagnostic.
    pub fn hint(&self) -> &'static str {
        match self {
            BaseUrlError::Invalid { .. } => {
                "write an absolute URL such as `https://graph.microsoft.com/v1.0`"
            }
            BaseUrlError::PlainHttp(_) => {
                "use https; http is accepted only for 127.0.0.1, ::1 and localhost"
            }
            BaseUrlError::Scheme { .. } => "use https",
            BaseUrlError::UserInfo => "use the connection's `auth` instead",
            BaseUrlError::Fragment(_) => {
                "remove the `#…`: it is never sent, and a path joined after it (`${env.X}/rest/v1.0`) would be lost in it"
            }
            BaseUrlError::Query => {
                "requests would not carry it, and URLs are shown in errors: put a key in `auth` or `headers` (from `[secrets]`), other values in each request"
            }
        }
    }
}

/// Parses a URL a connection sends requests (or token requests) to: https,
/// or http to loopback only, and no credentials in it.
pub fn endpoint_url(text: &str) -> Result<Url, BaseUrlError> {
    let url = Url::parse(text).map_err(|e| BaseUrlError::Invalid {
        text: shown_endpoint(text),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(BaseUrlError::PlainHttp(shown_endpoint(text))),
        other => {
            return Err(BaseUrlError::Scheme {
                text: shown_endpoint(text),
                scheme: other.to_string(),
            });
        }
    }
    if has_userinfo(&url) {
        return Err(BaseUrlError::UserInfo);
    }
    if url.fragment().is_some() {
        return Err(BaseUrlError::Fragment(shown_endpoint(text)));
    }
    Ok(url)
}

/// Parses a connection's base URL: an [`endpoint_url`] without a query
/// (requests are built from its path; a query there would be dropped, and
/// is where services put keys that errors would then print).
pub fn base_url(text: &str) -> Result<Url, BaseUrlError> {
    let url = endpoint_url(text)?;
    match url.query() {
        Some(_) => Err(BaseUrlError::Query),
        None => Ok(url),
    }
}

/// Checks a static header value a connection sends: the message and hint
/// of the problem, if any.
pub fn header_value(name: &str, value: &str) -> Result<(), (String, &'static str)> {
    match header_value_problem(value) {
        Some((problem, hint)) => Err((format!("header `{name}` {problem}"), hint)),
        None => Ok(()),
    }
}

/// Why a text cannot be sent as a header value, and what to do about it;
/// the text itself is not quoted, since it may be a credential.
pub fn header_value_problem(value: &str) -> Option<(&'static str, &'static str)> {
    if value.contains(['\r', '\n']) {
        Some(("contains a line break", "remove CR/LF from the value"))
    } else if !valid_header_value(value) {
        Some((
            "has a value HTTP does not allow",
            "header values are printable ASCII: no accented letters, dashes other than `-`, or control characters",
        ))
    } else {
        None
    }
}

/// The URL with runs of `/` in its path made one. A base URL is often
/// built from a root and a path (`${env.PROCORE_BASE_URL}/rest/v1.0`), and
/// a root written with a trailing slash would otherwise give `//rest/v1.0`,
/// which services answer with 404s.
pub fn collapse_slashes(mut url: Url) -> Url {
    if url.path().contains("//") {
        let mut path = String::with_capacity(url.path().len());
        for c in url.path().chars() {
            if !(c == '/' && path.ends_with('/')) {
                path.push(c);
            }
        }
        url.set_path(&path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_hop_by_hop_and_forwarding_headers_are_the_hosts() {
        for name in [
            "X-HTTP-Method-Override",
            "x-method-override",
            "X-HTTP-Method",
            "Upgrade",
            "TE",
            "Expect",
            "Keep-Alive",
            "Proxy-Connection",
            "Connection",
            "Forwarded",
            "X-Forwarded-For",
            "x-forwarded-host",
            "Via",
            "Accept-Encoding",
            "Authorization",
        ] {
            assert!(is_reserved_header(name), "{name}");
        }
        for name in [
            "Accept",
            "Content-Type",
            "Prefer",
            "ConsistencyLevel",
            "If-Match",
        ] {
            assert!(!is_reserved_header(name), "{name}");
        }
    }

    #[test]
    fn base_url_paths_lose_doubled_slashes() {
        for (given, expected) in [
            (
                "http://127.0.0.1:9000//rest/v1.0",
                "http://127.0.0.1:9000/rest/v1.0",
            ),
            (
                "https://api.procore.com/rest/v1.0",
                "https://api.procore.com/rest/v1.0",
            ),
            (
                "https://graph.example/v1.0///x//",
                "https://graph.example/v1.0/x/",
            ),
            (
                "https://a.example//v1?next=//kept",
                "https://a.example/v1?next=//kept",
            ),
            ("https://a.example/", "https://a.example/"),
        ] {
            let url = collapse_slashes(Url::parse(given).unwrap());
            assert_eq!(url.as_str(), expected, "{given}");
        }
    }

    #[test]
    fn loopback_detection() {
        for u in [
            "http://127.0.0.1:8080/",
            "http://localhost/",
            "http://[::1]:1/",
            "http://127.9.9.9/",
        ] {
            assert!(is_loopback(&Url::parse(u).unwrap()), "{u}");
        }
        for u in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://localhost.evil.com/",
        ] {
            assert!(!is_loopback(&Url::parse(u).unwrap()), "{u}");
        }
    }

    #[test]
    fn endpoints_are_https_or_loopback_http_without_credentials() {
        assert!(endpoint_url("https://graph.microsoft.com/v1.0").is_ok());
        assert!(endpoint_url("http://127.0.0.1:8080/v1.0").is_ok());
        assert!(matches!(
            endpoint_url("http://graph.example/v1.0"),
            Err(BaseUrlError::PlainHttp(_))
        ));
        assert!(matches!(
            endpoint_url("ftp://graph.example/"),
            Err(BaseUrlError::Scheme { .. })
        ));
        assert_eq!(
            endpoint_url("https://u:p@graph.example/"),
            Err(BaseUrlError::UserInfo)
        );
        assert!(matches!(
            endpoint_url("graph.example"),
            Err(BaseUrlError::Invalid { .. })
        ));
    }

    #[test]
    fn a_base_url_with_a_query_is_refused_without_echoing_it() {
        let e = base_url("https://api.example.com/v1?api_key=hunter2").unwrap_err();
        assert_eq!(e, BaseUrlError::Query);
        // A fragment, as a root with `#` pasted into a variable makes it
        // (`http://127.0.0.1:8080#x/rest/v1.0`): every request would 404.
        for text in [
            "http://127.0.0.1:8080#frag/rest/v1.0",
            "https://login.example.com/token#",
        ] {
            assert!(
                matches!(base_url(text), Err(BaseUrlError::Fragment(_))),
                "{text}"
            );
        }
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(base_url("https://api.example.com/v1").is_ok());
        // A token URL may carry one (Azure AD B2C names its policy so).
        assert!(endpoint_url("https://login.example/token?p=b2c_1_signin").is_ok());
    }

    #[test]
    fn credential_headers_are_told_by_their_names() {
        for name in [
            "X-Api-Key",
            "apikey",
            "Ocp-Apim-Subscription-Key",
            "X-Auth-Token",
            "X-Client-Secret",
            "X-Signature",
        ] {
            assert!(names_a_credential(name), "{name}");
        }
        for name in [
            "Procore-Company-Id",
            "Idempotency-Key",
            "Accept-Language",
            "X-Tenant",
        ] {
            assert!(!names_a_credential(name), "{name}");
        }
    }

    /// Whatever else is wrong with it, an error never quotes a URL's
    /// password or query: the rules that refuse them come after the ones
    /// that quote the text.
    #[test]
    fn a_refused_url_is_shown_without_its_credentials_or_query() {
        for text in [
            "https://admin:hunter2@host:99999/v1.0",
            "http://admin:hunter2@graph.example/v1.0?key=hunter2",
            "ftp://admin:hunter2@graph.example/",
            "admin:hunter2@graph.example/v1.0",
            "https://host:99999/v1.0?api_key=hunter2",
            "https://graph.example/v1.0?key=hunter2#frag",
        ] {
            let e = endpoint_url(text).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{text}: {e}");
        }
        assert_eq!(
            shown_endpoint("http://admin:pw@graph.example/v1.0?key=k#f"),
            "http://…@graph.example/v1.0?…"
        );
        assert_eq!(
            shown_endpoint("https://graph.example/v1.0"),
            "https://graph.example/v1.0"
        );
        assert_eq!(
            endpoint_url("http://graph.example/v1.0?key=k")
                .unwrap_err()
                .to_string(),
            "`http://graph.example/v1.0?…` uses plain http to a host that is not loopback"
        );
    }
}
