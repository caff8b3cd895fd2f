//! Recording: the real wire, with every answered exchange kept for a
//! cassette, secrets removed.
//!
//! Each exchange is kept as it went over the wire — the request with every
//! header the host added, the response with every header the service sent
//! — less what must never be written: the `Authorization` and
//! `Proxy-Authorization` headers are dropped whole, and every form of every
//! secret and token the run's redactor knows is replaced in the URL, the
//! headers and both bodies. Exchanges that brought no whole answer (a
//! transport failure, a body that broke off or passed the cap) are not
//! kept: the retry that followed is. Token requests are not connection
//! exchanges and are never recorded; a replay needs no token.

use std::sync::Mutex;
use std::time::Duration;

use super::RunId;
use super::cassette::{self, Body, Interaction, Status};
use crate::connections::wire::{Head, Http, NoAnswer, Outgoing, ReadFailure, Wire, read_capped};
use crate::redact::Redactor;

/// Request headers never written to a cassette, whatever their value.
const DROPPED_HEADERS: [&str; 2] = ["authorization", "proxy-authorization"];

/// The exchanges of one connection, as they are answered.
#[derive(Debug)]
pub struct Recorder {
    run: RunId,
    interactions: Mutex<Vec<Interaction>>,
}

impl Recorder {
    pub fn new(run: RunId) -> Recorder {
        Recorder {
            run,
            interactions: Mutex::default(),
        }
    }

    pub fn interactions(&self) -> Vec<Interaction> {
        self.interactions
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default()
    }

    fn keep(&self, interaction: Interaction) {
        if let Ok(mut all) = self.interactions.lock() {
            all.push(interaction);
        }
    }
}

/// The real wire, recording. It reads each body as soon as the head
/// arrives (under the connection's cap) so that answers the send loop
/// does not deliver — a 503 sent again, a 401 — are recorded too.
pub struct Recording<'a> {
    pub http: Http<'a>,
    pub recorder: &'a Recorder,
    pub redactor: &'a Redactor,
    /// The connection's response size cap.
    pub cap: u64,
}

impl Wire for Recording<'_> {
    type Body = Result<Vec<u8>, ReadFailure>;

    async fn send(&self, request: Outgoing<'_>) -> Result<Head<Self::Body>, NoAnswer> {
        let timeout = request.timeout;
        let sent = self.request(&request);
        let head = self.http.send(request).await?;
        let body = read_capped(head.body, self.cap, timeout).await;
        if let Ok(bytes) = &body {
            self.recorder.keep(Interaction {
                request: sent,
                response: self.response(head.status, &head.headers, bytes),
                recorded_at: httpdate::fmt_http_date(std::time::SystemTime::now()),
            });
        }
        Ok(Head {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    async fn read(&self, body: Self::Body, cap: u64, _: Duration) -> Result<Vec<u8>, ReadFailure> {
        let body = body?;
        if body.len() as u64 > cap {
            return Err(ReadFailure::TooLarge);
        }
        Ok(body)
    }
}

impl Recording<'_> {
    fn request(&self, request: &Outgoing<'_>) -> cassette::Request {
        let headers: Vec<(&str, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| !DROPPED_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
            .map(|(name, value)| (*name, self.text(value)))
            .collect();
        cassette::Request {
            method: request.method.to_string().to_ascii_lowercase(),
            uri: self.text(request.url.as_str()),
            body: self.body(request.body.unwrap_or_default()),
            headers: cassette::header_map(headers.iter().map(|(n, v)| (*n, v.as_str()))),
        }
    }

    fn response(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> cassette::Response {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (self.text(name), self.text(value)))
            .collect();
        cassette::Response {
            status: Status {
                code: status,
                message: reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or_default()
                    .to_string(),
            },
            headers: cassette::header_map(headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
            body: self.body(body),
        }
    }

    /// What a cassette keeps of a text: secrets removed, the run's id hidden.
    fn text(&self, text: &str) -> String {
        self.recorder.run.hide_text(&self.redactor.redact(text))
    }

    fn body(&self, bytes: &[u8]) -> Body {
        Body::from_bytes(&self.recorder.run.hide(&self.redactor.scrub(bytes).0))
    }
}
