//! The emulators answer only requests addressed to them. They listen on
//! loopback, but a web page can still reach a loopback port by DNS
//! rebinding: its own name, re-pointed at 127.0.0.1, makes the browser send
//! the page's requests (to the admin endpoints, which take faults and show
//! the state, or to the token endpoints) with the page's host name in
//! `Host`. Every request must name the bound address — `127.0.0.1:PORT` or
//! `localhost:PORT` — or it is refused with 421 before anything else sees it.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The port the emulators listen on, for the check.
#[derive(Debug, Clone, Copy)]
pub struct BoundPort(pub u16);

/// Whether a `Host` header value names this emulator.
fn addressed_to(host: &str, port: u16) -> bool {
    let Some((name, given_port)) = host.rsplit_once(':') else {
        return false;
    };
    given_port.parse() == Ok(port)
        && (name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost"))
}

pub async fn only_addressed_to_us(
    State(BoundPort(port)): State<BoundPort>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if addressed_to(host, port) {
        return next.run(request).await;
    }
    (
        StatusCode::MISDIRECTED_REQUEST,
        format!("This emulator answers only requests addressed to 127.0.0.1:{port} or localhost:{port}.\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bound_address_is_ours() {
        assert!(addressed_to("127.0.0.1:8787", 8787));
        assert!(addressed_to("LocalHost:8787", 8787));
        for other in [
            "127.0.0.1:8788",
            "127.0.0.1",
            "evil.example:8787",
            "127.0.0.1.evil.example:8787",
            "localhost.:8787",
            "",
        ] {
            assert!(!addressed_to(other, 8787), "{other}");
        }
    }
}
