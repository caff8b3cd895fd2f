//! Why a step failed: a kind the host acts on, a code, a message.

use sluice_contract::ErrorKind;

/// Why a step failed. Its [`ErrorKind`] decides what the host does next:
/// `unavailable` and `rate-limited` may be retried by the step's `retry`
/// policy; every other kind is final. The code names the failure more
/// precisely (kebab-case, stable); it defaults to the kind's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// A short, stable, kebab-case code.
    pub code: String,
    /// What happened and what to do about it, for people; no secrets.
    pub message: String,
}

impl StepError {
    /// An error of `kind`, coded with the kind's own name.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: kind.as_str().to_string(),
            message: message.into(),
        }
    }

    /// The same error with a more precise code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    /// The step's input is wrong.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// Something the step needed does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The change clashes with what is already there.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// The service refused the credentials or lacks a permission.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// The service could not be reached or failed; retryable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// The service asked to slow down; retryable.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RateLimited, message)
    }

    /// Anything else: a response the component cannot read, a bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The error an HTTP status means, coded `http-<status>`: 400 and 422
    /// bad input, 401 and 403 forbidden, 404 and 410 not found, 409 and
    /// 412 conflict, 429 rate-limited, 5xx unavailable (but 501, which no
    /// retry fixes, internal), anything else internal. `what` names the
    /// request (`GET groups`), `detail` what the service said.
    pub fn from_status(status: u16, what: &str, detail: &str) -> Self {
        let kind = match status {
            400 | 422 => ErrorKind::BadInput,
            401 | 403 => ErrorKind::Forbidden,
            404 | 410 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::Conflict,
            429 => ErrorKind::RateLimited,
            501 => ErrorKind::Internal,
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, format!("HTTP {status} from {what}: {detail}"))
            .with_code(format!("http-{status}"))
    }

    /// Whether the step's `retry` may call the step again.
    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

impl std::error::Error for StepError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds_and_codes() {
        let cases = [
            (400, ErrorKind::BadInput),
            (401, ErrorKind::Forbidden),
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (422, ErrorKind::BadInput),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Unavailable),
            (501, ErrorKind::Internal),
            (503, ErrorKind::Unavailable),
            (302, ErrorKind::Internal),
        ];
        for (status, kind) in cases {
            let e = StepError::from_status(status, "GET x", "why");
            assert_eq!(e.kind, kind, "{status}");
            assert_eq!(e.code, format!("http-{status}"));
            assert_eq!(e.message, format!("HTTP {status} from GET x: why"));
        }
        assert!(StepError::from_status(503, "x", "").retryable());
        assert!(!StepError::from_status(404, "x", "").retryable());
    }
}
