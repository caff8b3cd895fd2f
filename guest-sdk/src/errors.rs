//! Building [`StepError`]s.

use crate::StepError;

/// A failure a retry would not fix.
pub fn fail(code: &str, message: impl Into<String>) -> StepError {
    StepError {
        code: code.to_string(),
        message: message.into(),
        retryable: false,
    }
}

/// A failure that may go away if the step runs again later.
pub fn retryable(code: &str, message: impl Into<String>) -> StepError {
    StepError {
        code: code.to_string(),
        message: message.into(),
        retryable: true,
    }
}

/// The step's input is wrong.
pub fn bad_input(message: impl Into<String>) -> StepError {
    fail("bad-input", message)
}
