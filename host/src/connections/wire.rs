//! One HTTP exchange, as the send loop sees it: send a request and get its
//! status and headers (or why none came), then read the body under a cap.
//!
//! [`Wire`] is the seam between the loop's decisions and the network:
//! [`Http`] is reqwest, and tests drive the same loop with a scripted wire
//! on paused time. Bodies arrive decompressed (gzip, deflate, brotli: the
//! encodings the client offers) and the cap counts decompressed bytes, so a
//! small compressed answer cannot become a large one in memory.

use std::future::Future;
use std::time::Duration;

use super::Method;

/// A request ready to go: every header (the connection's, the component's,
/// the credential) is already in place.
pub struct Outgoing<'a> {
    pub method: Method,
    pub url: &'a url::Url,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub timeout: Duration,
}

/// A response whose status and headers have arrived; its body has not been read.
pub struct Head<B> {
    pub status: u16,
    /// Names lower-case, values as text (bytes outside UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    pub body: B,
}

/// Why no response came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAnswer {
    /// False when the request could not even be built (it never left).
    pub built: bool,
    /// False when no connection could be opened: nothing was sent.
    pub connected: bool,
    /// One line: what failed, and its root cause.
    pub reason: String,
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// Larger than the cap (after decompression).
    TooLarge,
    /// The connection broke or timed out mid-body.
    Broken(String),
}

pub trait Wire: Sync {
    type Body: Send;
    fn send(
        &self,
        request: Outgoing<'_>,
    ) -> impl Future<Output = Result<Head<Self::Body>, NoAnswer>> + Send;
    /// Reads the body; `timeout` is the request's, named if it runs out.
    fn read(
        &self,
        body: Self::Body,
        cap: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, ReadFailure>> + Send;
}

/// The real wire: one shared reqwest client.
pub struct Http<'a>(pub &'a reqwest::Client);

impl Wire for Http<'_> {
    type Body = reqwest::Response;

    async fn send(&self, request: Outgoing<'_>) -> Result<Head<reqwest::Response>, NoAnswer> {
        if let Some(reason) = url_too_long(request.url) {
            return Err(NoAnswer {
                built: false,
                connected: false,
                reason,
            });
        }
        let mut builder = self
            .0
            .request(request.method.as_reqwest(), request.url.clone())
            .timeout(request.timeout);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body.to_vec());
        }
        let response = builder.send().await.map_err(|e| NoAnswer {
            built: !e.is_builder(),
            connected: !e.is_connect(),
            reason: describe_reqwest_error(&e, request.timeout),
        })?;
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok(Head {
            status: response.status().as_u16(),
            headers,
            body: response,
        })
    }

    async fn read(
        &self,
        body: reqwest::Response,
        cap: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReadFailure> {
        read_capped(body, cap, timeout).await
    }
}

/// The longest URL an HTTP request can carry here (the `http` crate's
/// limit); servers refuse far shorter ones, most above 8 KiB, with 414.
const MAX_URL_BYTES: usize = u16::MAX as usize - 1;

/// Why `url` cannot be sent, when it is too long to be: said in words,
/// where the HTTP stack would say "Parsed Url is not a valid Uri".
fn url_too_long(url: &url::Url) -> Option<String> {
    let len = url.as_str().len();
    (len > MAX_URL_BYTES).then(|| {
        format!(
            "the request was not sent: its URL is {len} bytes long, more than an HTTP request \
             can carry ({MAX_URL_BYTES}); a value put into its path or query is far too long"
        )
    })
}

/// The most [`read_capped`] reserves before a body's bytes arrive.
const MAX_RESERVED: u64 = 16 << 20;

/// Reads a body, refusing it once it passes `cap` bytes (decompressed).
/// `timeout` is the request's, named when a read times out.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: u64,
    timeout: Duration,
) -> Result<Vec<u8>, ReadFailure> {
    // Only trustworthy for an uncompressed body: reqwest drops the header
    // when it decompresses.
    let announced = response.content_length();
    if announced.is_some_and(|len| len > cap) {
        return Err(ReadFailure::TooLarge);
    }
    // Room for the announced length at once, rather than growing (and
    // copying) as chunks arrive; up to a bound, so a server announcing
    // more than it sends cannot make the host reserve the whole cap.
    let room = announced.map_or(0, |len| len.min(MAX_RESERVED));
    let mut body = Vec::with_capacity(usize::try_from(room).unwrap_or(0));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > cap {
                    return Err(ReadFailure::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(ReadFailure::Broken(describe_reqwest_error(&e, timeout))),
        }
    }
}

/// A one-line reason for a transport failure, with its root cause; a
/// timeout says how long was waited.
pub fn describe_reqwest_error(e: &reqwest::Error, timeout: Duration) -> String {
    let kind = if e.is_timeout() && !timeout.is_zero() {
        format!("timed out after {}", humantime::format_duration(timeout))
    } else if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else if e.is_decode() {
        "the response could not be decoded".to_string()
    } else {
        "transport error".to_string()
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    match causes.last() {
        Some(root) => format!("{kind} ({root})"),
        None => kind,
    }
}
