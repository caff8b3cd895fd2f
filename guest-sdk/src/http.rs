//! Requests through the flow's named connections.

use serde_json::Value;

use crate::bindings::sluice::flow::connection::{self, Method, Request, SendError};
use crate::{StepError, errors};

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

/// A response with helpers for headers and JSON bodies.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
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

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Result<Value, StepError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            errors::fail(
                "bad-response",
                format!(
                    "HTTP {}: the body is not JSON ({e}): {}",
                    self.status,
                    self.text_preview()
                ),
            )
        })
    }

    pub fn text_preview(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect()
    }
}

/// What a send can come back with, besides a response.
#[derive(Debug, Clone)]
pub enum Failure {
    /// A dry run: the write was not sent. Carries its description.
    DryRun(String),
    /// Anything else, already a step error.
    Error(StepError),
}

impl From<Failure> for StepError {
    fn from(f: Failure) -> StepError {
        match f {
            Failure::DryRun(what) => {
                errors::fail("dry-run", format!("dry run: {what} was not sent"))
            }
            Failure::Error(e) => e,
        }
    }
}

/// A request on one named connection.
#[derive(Debug, Clone)]
pub struct Call {
    pub connection: String,
    pub request: Request,
}

impl Call {
    pub fn new(connection: &str, method: Method, url: &str) -> Call {
        Call {
            connection: connection.to_string(),
            request: Request {
                method,
                url: url.to_string(),
                query: Vec::new(),
                headers: vec![("Accept".into(), "application/json".into())],
                body: None,
                idempotent: false,
            },
        }
    }

    pub fn get(connection: &str, url: &str) -> Call {
        Call::new(connection, Method::Get, url)
    }

    pub fn query(mut self, name: &str, value: impl Into<String>) -> Call {
        self.request.query.push((name.to_string(), value.into()));
        self
    }

    pub fn json_body(mut self, body: &Value) -> Call {
        self.request.body = Some(body.to_string().into_bytes());
        self.request
            .headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    /// Marks a write as safe to send twice, so the host may retry it.
    pub fn idempotent(mut self) -> Call {
        self.request.idempotent = true;
        self
    }

    pub fn send(&self) -> Result<Response, Failure> {
        match connection::send(&self.connection, &self.request) {
            Ok(r) => Ok(Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(SendError::DryRun(what)) => Err(Failure::DryRun(what)),
            Err(SendError::Unavailable(why)) => {
                Err(Failure::Error(errors::retryable("unavailable", why)))
            }
            Err(SendError::AuthFailed(why)) => {
                Err(Failure::Error(errors::fail("auth-failed", why)))
            }
            Err(SendError::TooLarge(limit)) => Err(Failure::Error(errors::fail(
                "too-large",
                format!("the response is larger than the connection's limit of {limit} bytes"),
            ))),
        }
    }

    /// Sends and insists on a 2xx, turning anything else into a step error.
    pub fn send_ok(&self) -> Result<Response, StepError> {
        let response = self.send()?;
        if response.is_success() {
            Ok(response)
        } else {
            Err(status_error(&self.request.url, &response))
        }
    }
}

/// A step error from a non-2xx response, using the service's own words:
/// Graph's `{"error": {"code", "message"}}` or Procore's `{"errors": …}`.
pub fn status_error(url: &str, response: &Response) -> StepError {
    let detail = service_message(response).unwrap_or_else(|| response.text_preview());
    let retry = response.status == 429 || response.status >= 500;
    let code = match response.status {
        401 | 403 => "forbidden",
        404 => "not-found",
        409 | 422 => "conflict",
        429 => "throttled",
        s if s >= 500 => "service-error",
        _ => "http-status",
    };
    let message = format!("HTTP {} from {url}: {detail}", response.status);
    if retry {
        errors::retryable(code, message)
    } else {
        errors::fail(code, message)
    }
}

/// The error text a Graph or Procore error body carries, if any.
pub fn service_message(response: &Response) -> Option<String> {
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    if let Some(error) = body.get("error").filter(|e| e.is_object()) {
        let code = error.get("code").and_then(Value::as_str).unwrap_or("");
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        return Some(if code.is_empty() {
            message.to_string()
        } else {
            format!("{code}: {message}")
        });
    }
    let errors = body.get("errors")?;
    Some(match errors {
        Value::String(s) => s.clone(),
        Value::Object(fields) => fields
            .iter()
            .map(|(field, problems)| {
                let problems = match problems {
                    Value::Array(list) => list
                        .iter()
                        .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{field} {problems}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
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
    fn service_messages_of_both_vendors() {
        let graph = response(
            404,
            r#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'x' does not exist","innerError":{}}}"#,
        );
        assert_eq!(
            service_message(&graph).unwrap(),
            "Request_ResourceNotFound: Resource 'x' does not exist"
        );
        let procore = response(422, r#"{"errors":{"login":["has already been taken"]}}"#);
        assert_eq!(
            service_message(&procore).unwrap(),
            "login has already been taken"
        );
        let plain = response(
            400,
            r#"{"errors":"param is missing or the value is empty: user"}"#,
        );
        assert_eq!(
            service_message(&plain).unwrap(),
            "param is missing or the value is empty: user"
        );
        let e = status_error("users", &response(503, "down"));
        assert!(e.retryable && e.code == "service-error" && e.message.contains("down"));
    }
}
