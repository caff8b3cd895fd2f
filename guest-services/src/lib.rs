//! Microsoft Graph and Procore helpers for Sluice step components, shared
//! by the built-ins: reading every page of a list the way each vendor
//! documents it, and turning each vendor's error body into a step error.
//!
//! - [`graph`]: `@odata.nextLink` paging; `{"error": {"code", "message"}}`
//! - [`procore`]: `page`/`per_page` paging by `Link`, `Total` and
//!   `Per-Page`; `{"errors": …}`; company and user ids
//! - [`sync`]: the shapes the license sync's built-ins pass each other
//! - [`duration`]: the form and the reading of their duration params
#![deny(missing_docs)]

pub mod duration;
pub mod graph;
pub mod procore;
pub mod sync;

use sluice_guest::{Call, Response, StepError};

/// Far beyond any real tenant; stops a service that pages forever.
pub const MAX_PAGES: usize = 100_000;

/// The error text a Graph or Procore error body carries, if any.
pub fn service_message(response: &Response) -> Option<String> {
    graph::error_message(response).or_else(|| procore::error_message(response))
}

/// The step error a non-2xx answer to `call` means, in the service's own
/// words where its body has them ([`StepError::from_status`] for the kind).
pub fn status_error(call: &Call, response: &Response) -> StepError {
    let detail = service_message(response).unwrap_or_else(|| response.text_preview());
    StepError::from_status(
        response.status,
        &format!("{} {}", call.method().as_str(), call.url()),
        &detail,
    )
}

/// Sends a read and insists on a 2xx, with the service's words on failure.
pub fn read_ok(call: &Call) -> Result<Response, StepError> {
    let response = call.read()?;
    if response.is_success() {
        Ok(response)
    } else {
        Err(status_error(call, &response))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;
    use sluice_guest::ErrorKind;

    /// A documented example kept with the emulator's tests, where its
    /// source (page, repository, path, commit) is named.
    pub(crate) fn documented(name: &str) -> Value {
        let path = format!(
            "{}/../emulator/tests/documented/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
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
        let e = status_error(&Call::get("graph", "groups/x"), &graph);
        assert_eq!((e.kind, e.code.as_str()), (ErrorKind::NotFound, "http-404"));
        assert_eq!(
            e.message,
            "HTTP 404 from GET groups/x: Request_ResourceNotFound: Resource 'x' does not exist"
        );
        let down = status_error(&Call::get("procore", "users"), &response(503, "down"));
        assert!(down.retryable() && down.message.ends_with("down"));
    }
}
