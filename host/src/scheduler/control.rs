//! What a process serving the scheduler (the web console of `sluice serve
//! --http`) may ask of it while it runs: which flows it serves, to run one
//! now, and whether its loop still answers.
//!
//! Requests go through a channel into the serving loop, so the loop stays
//! the only owner of the scheduler's state; a loop that is stuck or gone
//! answers nothing, which is exactly what a health check wants to learn.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::flow::schedule::Schedule;

/// A flow file the scheduler serves, as the console lists it.
#[derive(Debug, Clone)]
pub struct ServedFlow {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub schedule: Option<Schedule>,
}

/// Why a "run now" did not start a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNowRefused {
    #[error("no served flow is named `{0}`")]
    Unknown(String),
    #[error("flow `{0}` is served from several files; run it with `sluice run FILE`")]
    Ambiguous(String),
    #[error("flow `{flow}` is no longer served: its file {} is gone", .file.display())]
    Gone { flow: String, file: PathBuf },
    #[error("flow `{flow}` cannot run now: {why}")]
    Busy { flow: String, why: String },
    #[error("the scheduler is stopping or does not answer")]
    Unavailable,
}

pub(crate) enum Request {
    /// Answered at once by a loop that is alive.
    Ping(oneshot::Sender<()>),
    /// Start a run of the flow named so now; answered with its run id.
    RunNow {
        flow: String,
        reply: oneshot::Sender<Result<String, RunNowRefused>>,
    },
}

/// A handle on a serving scheduler, cheap to clone.
#[derive(Clone)]
pub struct Control {
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) flows: watch::Receiver<Vec<ServedFlow>>,
}

/// How many requests may wait for the loop; more fail as unavailable
/// rather than pile up behind a stuck loop.
pub(crate) const QUEUE: usize = 32;

impl Control {
    /// The flows served now, by file path.
    pub fn flows(&self) -> Vec<ServedFlow> {
        self.flows.borrow().clone()
    }

    /// Whether the serving loop answers within `within`.
    pub async fn ping(&self, within: Duration) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.requests.try_send(Request::Ping(reply)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, answer).await, Ok(Ok(())))
    }

    /// Starts a run of the flow named `flow` now (trigger `manual`), and
    /// returns its run id.
    pub async fn run_now(&self, flow: &str, within: Duration) -> Result<String, RunNowRefused> {
        let (reply, answer) = oneshot::channel();
        let request = Request::RunNow {
            flow: flow.to_string(),
            reply,
        };
        if self.requests.try_send(request).is_err() {
            return Err(RunNowRefused::Unavailable);
        }
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(RunNowRefused::Unavailable),
        }
    }
}
