//! The send loop driven by a scripted wire on paused tokio time: each
//! case's answers, the moments the loop sent, and how it ended.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

use super::wire::{Head, NoAnswer, Outgoing, ReadFailure, Wire};
use super::*;
use crate::flow::model::RetryPolicy;

/// One scripted answer to one send.
#[derive(Clone)]
enum Answer {
    None { built: bool },
    Status(u16, &'static [(&'static str, &'static str)]),
    BrokenBody,
    Huge,
}

struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    sent_at: Mutex<Vec<Instant>>,
}

impl Scripted {
    fn new(answers: &[Answer]) -> Self {
        Self {
            answers: Mutex::new(answers.iter().cloned().collect()),
            sent_at: Mutex::default(),
        }
    }

    /// Seconds from the first send to each later one.
    fn gaps(&self) -> Vec<f64> {
        let at = self.sent_at.lock().unwrap();
        at.iter()
            .map(|t| (*t - at[0]).as_secs_f64())
            .collect::<Vec<_>>()
    }
}

impl Wire for Scripted {
    type Body = Answer;

    async fn send(&self, _: Outgoing<'_>) -> Result<Head<Answer>, NoAnswer> {
        self.sent_at.lock().unwrap().push(Instant::now());
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted answer");
        let (status, headers) = match &answer {
            Answer::None { built } => {
                return Err(NoAnswer {
                    built: *built,
                    connected: true,
                    reason: "timed out after 1m (operation timed out)".into(),
                });
            }
            Answer::Status(status, headers) => (*status, *headers),
            Answer::BrokenBody | Answer::Huge => (200, &[][..]),
        };
        Ok(Head {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: answer,
        })
    }

    async fn read(&self, body: Answer, _: u64, _: Duration) -> Result<Vec<u8>, ReadFailure> {
        match body {
            Answer::BrokenBody => Err(ReadFailure::Broken("timed out after 1m".into())),
            Answer::Huge => Err(ReadFailure::TooLarge),
            _ => Ok(b"{}".to_vec()),
        }
    }
}

fn connection() -> Connection {
    let mut spec = ConnectionSpec::new("api", url::Url::parse("http://127.0.0.1:9/api").unwrap());
    spec.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(8),
    };
    spec.auth = Auth::Bearer(Secret::new("static-token".into()));
    Connection::new(Arc::new(spec), reqwest::Client::new(), Redactor::default())
}

fn request(method: Method) -> OutgoingRequest {
    OutgoingRequest {
        method,
        url: "things".into(),
        query: vec![],
        headers: vec![],
        body: None,
        idempotent: false,
        retry_when_not_acted: false,
    }
}

const RA_3: &[(&str, &str)] = &[("retry-after", "3")];
const RA_7: &[(&str, &str)] = &[("retry-after", "7")];
const RA_2H: &[(&str, &str)] = &[("retry-after", "7200")];

/// How a case must end.
enum Ends<'a> {
    Delivered(u16),
    Unavailable(&'a [&'a str]),
    TooLarge,
}

struct Case<'a> {
    name: &'a str,
    method: Method,
    answers: &'a [Answer],
    /// Each send's moment, in seconds after the first: exact, or a range
    /// where backoff jitter (half to all of the step) applies.
    at: &'a [(f64, f64)],
    ends: Ends<'a>,
    stats: (u64, u64, u64),
}

const fn exact(s: f64) -> (f64, f64) {
    (s, s)
}

#[tokio::test(start_paused = true)]
async fn the_send_loop_carries_out_each_decision_in_virtual_time() {
    use Answer::*;
    let url_shown = "GET http://127.0.0.1:9/api/things";
    let cases = [
        Case {
            name: "two 500s, then a 200: backoff 1 s then 2 s, jittered",
            method: Method::Get,
            answers: &[Status(500, &[]), Status(502, &[]), Status(200, &[])],
            at: &[exact(0.0), (0.5, 1.0), (1.5, 3.0)],
            ends: Ends::Delivered(200),
            stats: (3, 2, 0),
        },
        Case {
            name: "a write's 429 with Retry-After: sent again exactly then",
            method: Method::Post,
            answers: &[Status(429, RA_3), Status(201, &[])],
            at: &[exact(0.0), exact(3.0)],
            ends: Ends::Delivered(201),
            stats: (2, 0, 1),
        },
        Case {
            name: "a read's 503 with Retry-After: the hold, no backoff on top",
            method: Method::Get,
            answers: &[Status(503, RA_7), Status(200, &[])],
            at: &[exact(0.0), exact(7.0)],
            ends: Ends::Delivered(200),
            stats: (2, 1, 1),
        },
        Case {
            name: "a write's 503 is the component's to read",
            method: Method::Post,
            answers: &[Status(503, RA_7)],
            at: &[exact(0.0)],
            ends: Ends::Delivered(503),
            stats: (1, 0, 0),
        },
        Case {
            name: "a static token's 401 is delivered, not refreshed",
            method: Method::Get,
            answers: &[Status(401, &[])],
            at: &[exact(0.0)],
            ends: Ends::Delivered(401),
            stats: (1, 0, 0),
        },
        Case {
            name: "a read that never answers: three attempts, named",
            method: Method::Get,
            answers: &[
                None { built: true },
                None { built: true },
                None { built: true },
            ],
            at: &[exact(0.0), (0.5, 1.0), (1.5, 3.0)],
            ends: Ends::Unavailable(&[
                "GET http://127.0.0.1:9/api/things failed after 3 attempts: timed out after 1m",
            ]),
            stats: (3, 2, 0),
        },
        Case {
            name: "a write that never answers is not sent twice",
            method: Method::Post,
            answers: &[None { built: true }],
            at: &[exact(0.0)],
            ends: Ends::Unavailable(&["POST", "after 1 attempt:", "not marked idempotent"]),
            stats: (1, 0, 0),
        },
        Case {
            name: "a body that times out every time: the URL and the attempts",
            method: Method::Get,
            answers: &[BrokenBody, BrokenBody, BrokenBody],
            at: &[exact(0.0), (0.5, 1.0), (1.5, 3.0)],
            ends: Ends::Unavailable(&[
                "GET http://127.0.0.1:9/api/things: reading the response failed after 3 attempts: timed out after 1m",
            ]),
            stats: (3, 2, 0),
        },
        Case {
            name: "a Retry-After of two hours closes the connection",
            method: Method::Get,
            answers: &[Status(503, RA_2H)],
            at: &[exact(0.0)],
            ends: Ends::Unavailable(&[url_shown, "answered 503", "try again later"]),
            stats: (1, 0, 1),
        },
        Case {
            name: "a body over the cap",
            method: Method::Get,
            answers: &[Huge],
            at: &[exact(0.0)],
            ends: Ends::TooLarge,
            stats: (1, 0, 0),
        },
    ];
    for case in cases {
        let conn = connection();
        let wire = Scripted::new(case.answers);
        let url = policy::resolve_url(&conn.spec.base_url, "things", &[]).unwrap();
        let mut stats = RequestStats::default();
        let result = conn
            .exchange(&wire, &request(case.method), &url, None, &mut stats)
            .await;
        let name = case.name;
        match (&case.ends, &result) {
            (Ends::Delivered(status), Ok(r)) => assert_eq!(r.status, *status, "{name}"),
            (Ends::Unavailable(parts), Err(SendError::Unavailable(m))) => {
                for part in *parts {
                    assert!(m.contains(part), "{name}: {m:?} lacks {part:?}");
                }
            }
            (Ends::TooLarge, Err(SendError::TooLarge(_))) => {}
            _ => panic!("{name}: ended {result:?}"),
        }
        let gaps = wire.gaps();
        assert_eq!(gaps.len(), case.at.len(), "{name}: sends {gaps:?}");
        for (gap, (low, high)) in gaps.iter().zip(case.at) {
            assert!(
                *gap >= low - 1e-3 && *gap <= high + 1e-3,
                "{name}: sent at {gaps:?}, expected {:?}",
                case.at
            );
        }
        let counted = (stats.requests, stats.retried, stats.throttled);
        assert_eq!(counted, case.stats, "{name}");
        assert!(
            wire.answers.lock().unwrap().is_empty(),
            "{name}: answers left"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_refuses_the_next_request_at_once() {
    let conn = connection();
    let url = policy::resolve_url(&conn.spec.base_url, "things", &[]).unwrap();
    let first = Scripted::new(&[Answer::Status(429, RA_2H)]);
    let mut stats = RequestStats::default();
    let e = conn
        .exchange(&first, &request(Method::Get), &url, None, &mut stats)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("answered 429"), "{e}");
    let none = Scripted::new(&[]);
    let started = Instant::now();
    let e = conn
        .exchange(&none, &request(Method::Get), &url, None, &mut stats)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("try again later"), "{e}");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(none.sent_at.lock().unwrap().is_empty(), "nothing was sent");
}

/// A run's lease that another replica took over while it was paused.
struct TakenOver;

impl RunGuard for TakenOver {
    fn may_go_on(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async { Err("the flow's lease held under fence 4 was taken over".into()) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_that_lost_its_lease_sends_no_write_but_may_read() {
    let conn = connection();
    let url = policy::resolve_url(&conn.spec.base_url, "things", &[]).unwrap();
    let mut stats = RequestStats::default();
    for method in [Method::Post, Method::Patch, Method::Put, Method::Delete] {
        let none = Scripted::new(&[]);
        let e = conn
            .exchange(&none, &request(method), &url, Some(&TakenOver), &mut stats)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "/api/things was not sent: the flow's lease held under fence 4 was taken over"
            ),
            "{e}"
        );
        assert!(
            none.sent_at.lock().unwrap().is_empty(),
            "{method}: not sent"
        );
    }
    assert_eq!(stats.requests, 0);
    let read = Scripted::new(&[Answer::Status(200, &[])]);
    let r = conn
        .exchange(
            &read,
            &request(Method::Get),
            &url,
            Some(&TakenOver),
            &mut stats,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_url_too_long_to_send_is_said_in_words_and_not_retried() {
    let conn = connection();
    let mut request = request(Method::Get);
    request.url = format!("companies/{}/users", "4".repeat(100_000));
    let url = policy::resolve_url(&conn.spec.base_url, &request.url, &[]).unwrap();
    let mut stats = RequestStats::default();
    let e = conn
        .exchange(&wire::Http(&conn.http), &request, &url, None, &mut stats)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("its URL is 100039 bytes long, more than an HTTP request can carry (65534)"),
        "{e}"
    );
    assert!(e.contains("after 1 attempt"), "{e}");
    assert!(!e.contains("Uri"), "{e}");
}

#[test]
fn long_urls_are_cut_in_the_middle() {
    let long = format!("https://graph.example/v1.0/{}/end", "x".repeat(5000));
    let shown = shown_url(&long);
    assert_eq!(shown.chars().count(), MAX_SHOWN_URL);
    assert!(shown.starts_with("https://graph.example/v1.0/"), "{shown}");
    assert!(shown.ends_with("/end") && shown.contains('…'), "{shown}");
    assert_eq!(shown_url("http://a/b"), "http://a/b");
}

#[test]
fn echoed_credentials_are_removed_from_headers_and_body() {
    let conn = connection();
    // Connection::new taught the redactor the connection's own token.
    let response = IncomingResponse {
        status: 403,
        headers: vec![
            ("x-echo-authorization".into(), "Bearer static-token".into()),
            ("x-static-token".into(), "1".into()),
            ("content-type".into(), "text/html".into()),
        ],
        body: b"<p>Forbidden: Authorization: Bearer static-token</p>".to_vec(),
        scrubbed: None,
    };
    let url = policy::resolve_url(&conn.spec.base_url, "things", &[]).unwrap();
    let clean = conn.scrub(response, &request(Method::Get), &url);
    assert_eq!(
        clean.body,
        b"<p>Forbidden: Authorization: Bearer [redacted]</p>".to_vec()
    );
    assert_eq!(clean.headers[0].1, "Bearer [redacted]");
    assert_eq!(clean.headers[1].0, "x-[redacted]");
    assert_eq!(clean.headers[2].1, "text/html");
    let note = clean.scrubbed.unwrap();
    assert!(
        note.contains("removed 3 secrets") && note.contains("GET http://127.0.0.1:9/api/things"),
        "{note}"
    );
}

/// A write resent once (its first attempt provably never reached the
/// service) and then lost is named with both attempts, and only the last
/// is said not to be resent.
#[test]
fn a_lost_write_after_a_resend_says_only_the_last_was_not_resent() {
    let url = url::Url::parse("https://graph.microsoft.com/v1.0/users/a/sendMail").unwrap();
    let what = super::Named {
        method: Method::Post,
        url: &url,
    };
    let lost = super::decide::GiveUp::NoAnswer { unsafe_write: true };
    let cause = super::Cause::NoAnswer("connection reset");
    let once = super::gave_up(&what, lost, cause, super::decide::Tally::default());
    assert!(
        once.ends_with("after 1 attempt: connection reset; it was not retried because the write may have reached the service and is not marked idempotent"),
        "{once}"
    );
    let tally = super::decide::Tally {
        failures: 1,
        ..Default::default()
    };
    let twice = super::gave_up(&what, lost, cause, tally);
    assert!(
        twice.ends_with("after 2 attempts: connection reset; the last attempt was not retried because the write may have reached the service and is not marked idempotent"),
        "{twice}"
    );
}

/// The first request on a connection goes alone (its budget is not known
/// yet). Its answer, a 503 asking for 7 s, wakes the request waiting
/// behind it only once the hold is in force: both go 7 s later, not one
/// of them at once.
#[tokio::test(start_paused = true)]
async fn a_probes_retry_after_holds_the_requests_waiting_behind_it() {
    let conn = connection();
    let url = policy::resolve_url(&conn.spec.base_url, "things", &[]).unwrap();
    let wire = Scripted::new(&[
        Answer::Status(503, RA_7),
        Answer::Status(200, &[]),
        Answer::Status(200, &[]),
    ]);
    let (mut first_stats, mut second_stats) = (RequestStats::default(), RequestStats::default());
    let get = request(Method::Get);
    let (first, second) = tokio::join!(
        conn.exchange(&wire, &get, &url, None, &mut first_stats),
        conn.exchange(&wire, &get, &url, None, &mut second_stats)
    );
    assert_eq!(first.unwrap().status, 200);
    assert_eq!(second.unwrap().status, 200);
    assert_eq!(wire.gaps(), vec![0.0, 7.0, 7.0]);
}
