//! The run's log: lines shown with the run's progress (warnings and errors
//! always, every level with `sluice run -v`) and in `--json` output. Only a
//! line's first line is kept, up to 2000 characters; secrets the host knows
//! are redacted. Never log personal data in bulk.

use crate::__bindings::sluice::flow::log::{Level, log};

/// Detail for whoever debugs a flow (`sluice run -v`).
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// What the step is doing (`sluice run -v`).
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Something a person should look at; the step goes on.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Something went wrong; say what, and return the error from `run` too
/// if the step cannot go on.
pub fn error(message: &str) {
    log(Level::Error, message);
}
