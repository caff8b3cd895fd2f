//! Requests through the flow's connections.
//!
//! A [`Call`] names the connection role it goes through (as the component's
//! `describe` declares it) and is built up and sent:
//!
//! ```ignore
//! let groups = Call::get("graph", "groups").query("$top", "999").read_ok()?;
//! match Call::post("procore", "companies/1/users").json(&body)?.idempotent().send()? {
//!     Sent::Response(r) => { /* the service's answer, any status */ }
//!     Sent::WouldSend(w) => { /* a dry run: report `w` as what would be done */ }
//! }
//! ```
//!
//! The host retries reads itself; writes only as their flags allow
//! ([`Call::idempotent`], [`Call::retry_when_not_acted`]).

use serde::{Deserialize, Serialize};

use crate::__bindings::sluice::flow::connection::{self, Request, SendError};
use crate::StepError;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET: a read.
    Get,
    /// HEAD: a read.
    Head,
    /// POST: a write.
    Post,
    /// PUT: a write.
    Put,
    /// PATCH: a write.
    Patch,
    /// DELETE: a write.
    Delete,
}

impl Method {
    fn to_wit(self) -> connection::Method {
        match self {
            Method::Get => connection::Method::Get,
            Method::Head => connection::Method::Head,
            Method::Post => connection::Method::Post,
            Method::Put => connection::Method::Put,
            Method::Patch => connection::Method::Patch,
            Method::Delete => connection::Method::Delete,
        }
    }

    /// The method's name (`GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// Characters a URL path segment may carry as they are (RFC 3986
/// `pchar` minus `/`): an address like `it@contoso.com` stays readable.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':');

/// One path segment (an id, a mailbox) made safe to put in a URL path.
pub fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

/// The service's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// Headers, lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, decompressed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name` (any case), joined with `", "` as RFC
    /// 9110 §5.3 allows for list-valued fields such as `Link`; `None` when
    /// there is none.
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON of type `T` (an empty body reads as `null`). `T`
    /// may borrow its strings from the body (`Cow<str>`, `&str`), so a
    /// large page is read without copying each text out of it.
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, StepError> {
        let body: &[u8] = if self.body.is_empty() {
            b"null"
        } else {
            &self.body
        };
        serde_json::from_slice(body).map_err(|e| {
            StepError::internal(format!(
                "HTTP {}: the body is not the JSON expected ({e}): {}",
                self.status,
                self.text_preview()
            ))
            .with_code("bad-response")
        })
    }

    /// The body for messages: its first 300 characters on one line, or,
    /// for an HTML page (a gateway's or proxy's answer, not the
    /// service's), what names it: its title, first heading or first words.
    pub fn text_preview(&self) -> String {
        // The start of a large body is enough for either.
        let start = &self.body[..self.body.len().min(PREVIEW_READS)];
        let text = String::from_utf8_lossy(start);
        match html_name(&text) {
            Some(Some(name)) => {
                return format!("an HTML page, \"{name}\", not the service's own answer");
            }
            Some(None) => {
                // The body's words: the head's are a script's or a style's.
                let lower = text.to_ascii_lowercase();
                let body = lower.find("<body").map_or(&text[..], |at| &text[at..]);
                let words = page_words(body);
                if words.is_empty() {
                    return "an HTML page, not the service's own answer".to_string();
                }
                return format!("an HTML page, \"{words}\", not the service's own answer");
            }
            None => {}
        }
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        one_line.chars().take(300).collect()
    }
}

/// How much of a body a preview reads: a page's `<title>` is in its head.
const PREVIEW_READS: usize = 8 * 1024;

/// The title of `text` when it is an HTML page (`None` when it is not):
/// its `<title>`, else its first `<h1>` (a gateway's bare error page has
/// only that), blanks and tags collapsed; `Some(None)` for a page with
/// neither.
fn html_name(text: &str) -> Option<Option<String>> {
    let start = text.trim_start();
    let head: String = start
        .chars()
        .take(15)
        .collect::<String>()
        .to_ascii_lowercase();
    if !(head.starts_with("<html") || head.starts_with("<!doctype html")) {
        return None;
    }
    Some(element_text(text, "title").or_else(|| element_text(text, "h1")))
}

/// The text of the first `<tag>` element of `text`, as [`page_words`]
/// gives it; `None` when it has none, or none with words.
fn element_text(text: &str, tag: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let open = lower.find(&format!("<{tag}"))?;
    let from = open + lower[open..].find('>')? + 1;
    let to = from + lower[from..].find(&format!("</{tag}"))?;
    let name = page_words(text.get(from..to)?);
    (!name.is_empty()).then_some(name)
}

/// The words of an HTML fragment: tags dropped, blanks collapsed, at most
/// 120 characters.
fn page_words(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words = text.split_whitespace().collect::<Vec<_>>();
    words.join(" ").chars().take(120).collect()
}

/// A write a dry run did not send: what it would have been. Serialises
/// as `{"method": "POST", "url": "https://…/users"}`, ready to put in the
/// step's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct WouldSend {
    /// The method.
    pub method: String,
    /// The URL as the host resolved it (or the host's description of the
    /// request).
    pub url: String,
}

/// What sending a request came to: the service's response, or, in a dry
/// run, the write that was not sent.
#[derive(Debug, Clone)]
pub enum Sent {
    /// The service answered (any status).
    Response(Response),
    /// A dry run: the write was not sent.
    WouldSend(WouldSend),
}

/// The header every request asks for JSON with, unless the component
/// sets its own.
const ACCEPT: &str = "Accept";
const DEFAULT_ACCEPT: &str = "application/json";

/// A request through one connection role.
#[derive(Debug, Clone)]
pub struct Call {
    connection: String,
    method: Method,
    request: Request,
}

impl Call {
    /// A request with `method` to `url` (relative to the connection's base
    /// URL, or an absolute URL under it) through `connection`.
    pub fn new(connection: &str, method: Method, url: &str) -> Call {
        Call {
            connection: connection.to_string(),
            method,
            request: Request {
                method: method.to_wit(),
                url: url.to_string(),
                query: Vec::new(),
                headers: vec![(ACCEPT.into(), DEFAULT_ACCEPT.into())],
                body: None,
                idempotent: false,
                retry_when_not_acted: false,
            },
        }
    }

    /// A GET.
    pub fn get(connection: &str, url: &str) -> Call {
        Call::new(connection, Method::Get, url)
    }

    /// A POST.
    pub fn post(connection: &str, url: &str) -> Call {
        Call::new(connection, Method::Post, url)
    }

    /// A PUT.
    pub fn put(connection: &str, url: &str) -> Call {
        Call::new(connection, Method::Put, url)
    }

    /// A PATCH.
    pub fn patch(connection: &str, url: &str) -> Call {
        Call::new(connection, Method::Patch, url)
    }

    /// A DELETE.
    pub fn delete(connection: &str, url: &str) -> Call {
        Call::new(connection, Method::Delete, url)
    }

    /// The request's method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The request's URL, as given.
    pub fn url(&self) -> &str {
        &self.request.url
    }

    /// Adds a query parameter (unencoded: the host encodes it).
    pub fn query(mut self, name: &str, value: impl Into<String>) -> Call {
        self.request.query.push((name.to_string(), value.into()));
        self
    }

    /// Adds a header. An `Accept` replaces the default one
    /// (`application/json`) instead of being sent beside it.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Call {
        if name.eq_ignore_ascii_case(ACCEPT) {
            self.request
                .headers
                .retain(|(n, v)| !(n == ACCEPT && v == DEFAULT_ACCEPT));
        }
        self.request.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sets a JSON body (and its `Content-Type`).
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Call, StepError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            StepError::internal(format!("the request body could not be serialised: {e}"))
        })?;
        self.request.body = Some(bytes);
        self.request
            .headers
            .push(("Content-Type".into(), "application/json".into()));
        Ok(self)
    }

    /// Marks a write the service applies at most once however often it
    /// arrives (a PUT of a value, a DELETE, a create the service refuses as
    /// a duplicate the second time): the host may send it again after any
    /// 5xx or lost connection, as it does a read.
    pub fn idempotent(mut self) -> Call {
        self.request.idempotent = true;
        self
    }

    /// Marks a write that must not take effect twice (a mail) but may be
    /// sent again when the service's answer proves it did not act: a 503,
    /// or a connection that could not be opened. Never after a 500, 502,
    /// 504, a timeout or a connection lost after sending.
    pub fn retry_when_not_acted(mut self) -> Call {
        self.request.retry_when_not_acted = true;
        self
    }

    /// Sends the request: the service's response, whatever its status, or
    /// in a dry run, for a write, what would have been sent.
    pub fn send(&self) -> Result<Sent, StepError> {
        match connection::send(&self.connection, &self.request) {
            Ok(r) => Ok(Sent::Response(Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })),
            Err(SendError::DryRun(what)) => Ok(Sent::WouldSend(WouldSend {
                method: self.method.as_str().to_string(),
                url: what
                    .strip_prefix(self.method.as_str())
                    .map(str::trim)
                    .unwrap_or(&what)
                    .to_string(),
            })),
            Err(SendError::Unavailable(why)) => Err(StepError::unavailable(why)),
            Err(SendError::AuthFailed(why)) => {
                Err(StepError::forbidden(why).with_code("auth-failed"))
            }
            Err(SendError::TooLarge(limit)) => Err(StepError::internal(format!(
                "the response to {} {} is larger than the connection's limit of {limit} bytes",
                self.method.as_str(),
                self.request.url
            ))
            .with_code("too-large")),
        }
    }

    /// Sends and insists on a 2xx; any other status is an error of the
    /// kind it means ([`StepError::from_status`]).
    pub fn send_ok(&self) -> Result<Sent, StepError> {
        match self.send()? {
            Sent::Response(r) if !r.is_success() => Err(self.status_error(&r)),
            sent => Ok(sent),
        }
    }

    /// Sends a read (GET or HEAD) and returns the response, any status. A
    /// read is never held back by a dry run; a write sent this way in a
    /// dry run is an `internal` error (send writes with [`Call::send`]).
    pub fn read(&self) -> Result<Response, StepError> {
        match self.send()? {
            Sent::Response(r) => Ok(r),
            Sent::WouldSend(w) => Err(StepError::internal(format!(
                "{} {} was not sent (dry run): send writes with `send`, which reports what would be done",
                w.method, w.url
            ))
            .with_code("dry-run")),
        }
    }

    /// Like [`Call::read`], insisting on a 2xx.
    pub fn read_ok(&self) -> Result<Response, StepError> {
        let response = self.read()?;
        if response.is_success() {
            Ok(response)
        } else {
            Err(self.status_error(&response))
        }
    }

    /// The error a non-2xx answer to this request means, with the start
    /// of its body as the detail.
    pub fn status_error(&self, response: &Response) -> StepError {
        StepError::from_status(
            response.status,
            &format!("{} {}", self.method.as_str(), self.request.url),
            &response.text_preview(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_components_own_accept_replaces_the_default_and_other_headers_add_up() {
        let call = Call::get("c", "/x");
        assert_eq!(
            call.request.headers,
            [(ACCEPT.into(), DEFAULT_ACCEPT.into())]
        );
        let call = call
            .header("accept", "text/csv")
            .header("X-A", "1")
            .header("X-A", "2");
        let headers: Vec<(&str, &str)> = call
            .request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [("accept", "text/csv"), ("X-A", "1"), ("X-A", "2")]
        );
    }

    fn response(body: &str) -> Response {
        Response {
            status: 504,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// A gateway's HTML page was quoted whole, line breaks and all, in
    /// reports and the ledger.
    #[test]
    fn a_preview_names_an_html_page_by_its_title_and_keeps_text_on_one_line() {
        let page = "<html>\r\n<head><title>504 Gateway\r\n Time-out</title></head>\r\n<body><h1>504</h1></body></html>";
        assert_eq!(
            response(page).text_preview(),
            "an HTML page, \"504 Gateway Time-out\", not the service's own answer"
        );
        assert_eq!(
            response("<!DOCTYPE html><html><head><TITLE>Bad gateway</TITLE>").text_preview(),
            "an HTML page, \"Bad gateway\", not the service's own answer"
        );
        assert_eq!(
            response("upstream\n  timed out").text_preview(),
            "upstream timed out"
        );
        // A gateway's bare page, with a heading and no title, was quoted
        // whole.
        assert_eq!(
            response("<html><body><h1>504 Gateway <b>Time-out</b></h1>The server didn't respond in time.</body></html>").text_preview(),
            "an HTML page, \"504 Gateway Time-out\", not the service's own answer"
        );
        assert_eq!(
            response("<html><head><style>p {}</style></head><body>Service <i>Unavailable</i></body></html>").text_preview(),
            "an HTML page, \"Service Unavailable\", not the service's own answer"
        );
        assert_eq!(
            response("<html><body></body></html>").text_preview(),
            "an HTML page, not the service's own answer"
        );
        assert_eq!(response(&"x".repeat(400)).text_preview().len(), 300);
    }

    #[test]
    fn segments_keep_addresses_readable_and_escape_separators() {
        assert_eq!(
            segment("it-automation@contoso.com"),
            "it-automation@contoso.com"
        );
        assert_eq!(segment("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(segment(".."), "..", "the host refuses dot segments itself");
    }

    #[test]
    fn bodies_read_as_typed_json() {
        let r = Response {
            status: 200,
            headers: vec![("Link".into(), "a".into()), ("link".into(), "b".into())],
            body: br#"{"n": 3}"#.to_vec(),
        };
        #[derive(serde::Deserialize)]
        struct N {
            n: u32,
        }
        assert_eq!(r.json::<N>().unwrap().n, 3);
        assert_eq!(r.header_joined("LINK").unwrap(), "a, b");
        let empty = Response {
            status: 202,
            headers: vec![],
            body: vec![],
        };
        assert_eq!(
            empty.json::<serde_json::Value>().unwrap(),
            serde_json::Value::Null
        );
        let bad = r.json::<Vec<u32>>().unwrap_err();
        assert_eq!(bad.code, "bad-response");
    }
}
