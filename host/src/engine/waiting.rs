//! The request a call is waiting on in the host, if any. Epochs cannot
//! interrupt a guest that waits in a host call, so a service that accepts a
//! request and never answers ends the step only at its timeout; the timeout
//! then says which request held it, on which connection and for how long,
//! instead of leaving the author to guess.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connections::{Connection, MAY_HAVE_REACHED, Method};

/// Shared between a call's instance (which sets it around each request)
/// and the engine (which reads it when the call times out).
#[derive(Clone, Default)]
pub struct Waiting(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    wait: Option<Wait>,
    /// The call's latest write whose answer leaves open whether the
    /// service acted, until a write to the same request is answered.
    unsettled: Option<Unsettled>,
}

/// A write that got no answer, or a 500, 502 or 504: it may have been
/// applied. A timeout that cuts the call off later (while it looks the
/// change up) says so, as the component can no longer.
struct Unsettled {
    method: Method,
    url: String,
    said: String,
}

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
            slot.wait = Some(Wait {
                connection: connection.clone(),
                method,
                url: url.to_string(),
                query: query.to_vec(),
                since: Instant::now(),
            });
        }
    }

    /// The request was answered (or given up). `outcome` is what came of
    /// it: the status, `Err` with the connection's words when no answer
    /// came, `None` when it was not sent or its answer is unknown.
    pub fn answered(&self, outcome: Option<Result<u16, &str>>) {
        let Ok(mut slot) = self.0.lock() else {
            return;
        };
        let (Some(wait), Some(outcome)) = (slot.wait.take(), outcome) else {
            return;
        };
        if wait.method.is_read() {
            return;
        }
        let said = match outcome {
            Err(why) if why.contains(MAY_HAVE_REACHED) => why.to_string(),
            // Never sent (no connection), or safe to send again.
            Err(_) => return,
            Ok(status @ (500 | 502 | 504)) => format!(
                "{} {} was answered HTTP {status}",
                wait.method,
                wait.connection.shown_request(&wait.url, &wait.query)
            ),
            Ok(_) => {
                if slot
                    .unsettled
                    .as_ref()
                    .is_some_and(|u| u.method == wait.method && u.url == wait.url)
                {
                    slot.unsettled = None;
                }
                return;
            }
        };
        slot.unsettled = Some(Unsettled {
            method: wait.method,
            url: wait.url,
            said,
        });
    }

    /// What the call waits on now, in words: the request as the connection
    /// resolves it, how long it has waited, and the connection's settings
    /// that bound one answer.
    ///
    /// A write the call sent before that got no answer that settles it is
    /// named too: its change may have been made.
    pub fn describe(&self) -> Option<String> {
        let slot = self.0.lock().ok()?;
        let waiting = slot.wait.as_ref().map(|wait| {
            let spec = &wait.connection.spec;
            // Held back by the service's own word (a spent rate budget, a
            // Retry-After), with nothing of the API in flight, so not this
            // request either: that, not an answer it is slow to give, is
            // what the time went on.
            let busy = wait.connection.busy();
            let queued = busy.in_flight == 0
                && busy
                    .held
                    .is_some_and(|(_, why)| why != crate::connections::throttle::Held::Closed);
            if let Some(held) = busy.held_words().filter(|_| queued) {
                return format!(
                    "it was waiting {} to send {} {} on connection `{}`: {held}",
                    shown(wait.since.elapsed()),
                    wait.method,
                    wait.connection.shown_request(&wait.url, &wait.query),
                    spec.name,
                );
            }
            format!(
                "it was waiting {} for an answer to {} {} on connection `{}`, which waits up to {} for each answer (`request_timeout`) and sends a request up to {} times (`retry.max_attempts`)",
                shown(wait.since.elapsed()),
                wait.method,
                wait.connection.shown_request(&wait.url, &wait.query),
                spec.name,
                shown(spec.request_timeout),
                spec.retry.max_attempts.max(1),
            )
        });
        let unsettled = slot.unsettled.as_ref().map(|u| {
            format!(
                "earlier, {}, so that change may have been made although the step did not finish",
                u.said
            )
        });
        match (waiting, unsettled) {
            (Some(w), Some(u)) => Some(format!("{w}; {u}")),
            (w, u) => w.or(u),
        }
    }
}

/// A wait to the second: "4m 12s", not nanoseconds.
fn shown(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}
