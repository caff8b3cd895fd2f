//! The request a call is waiting on in the host, if any. Epochs cannot
//! interrupt a guest that waits in a host call, so a service that accepts a
//! request and never answers ends the step only at its timeout; the timeout
//! then says which request held it, on which connection and for how long,
//! instead of leaving the author to guess.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connections::{Connection, Method};

/// Shared between a call's instance (which sets it around each request)
/// and the engine (which reads it when the call times out).
#[derive(Clone, Default)]
pub struct Waiting(Arc<Mutex<Option<Wait>>>);

struct Wait {
    connection: Arc<Connection>,
    method: Method,
    url: String,
    query: Vec<(String, String)>,
    since: Instant,
}

impl Waiting {
    /// Notes that the call sent `method url` on `connection` and waits.
    /// Not cleared when the call is dropped (its timeout): the engine reads
    /// it after.
    pub fn on(
        &self,
        connection: &Arc<Connection>,
        method: Method,
        url: &str,
        query: &[(String, String)],
    ) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Wait {
                connection: connection.clone(),
                method,
                url: url.to_string(),
                query: query.to_vec(),
                since: Instant::now(),
            });
        }
    }

    /// The request was answered (or given up).
    pub fn answered(&self) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = None;
        }
    }

    /// What the call waits on now, in words: the request as the connection
    /// resolves it, how long it has waited, and the connection's settings
    /// that bound one answer.
    pub fn describe(&self) -> Option<String> {
        let slot = self.0.lock().ok()?;
        let wait = slot.as_ref()?;
        let spec = &wait.connection.spec;
        Some(format!(
            "it was waiting {} for an answer to {} {} on connection `{}`, which waits up to {} for each answer (`request_timeout`) and sends a request up to {} times (`retry.max_attempts`)",
            shown(wait.since.elapsed()),
            wait.method,
            wait.connection.shown_request(&wait.url, &wait.query),
            spec.name,
            shown(spec.request_timeout),
            spec.retry.max_attempts.max(1),
        ))
    }
}

/// A wait to the second: "4m 12s", not nanoseconds.
fn shown(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}
