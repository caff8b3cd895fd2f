//! Replaying: a wire that answers from a cassette and reaches nothing.
//!
//! A request is matched on its method, its URL and its body (as the
//! recorder wrote them: with the run's secrets replaced, so a request
//! carrying one matches its recording). Each recorded exchange answers
//! once; a request made several times gets the recorded answers in the
//! order they were recorded. A request with no answer left fails without
//! leaving the host, and says which recorded request came nearest.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::RunId;
use super::cassette::{Cassette, Interaction};
use crate::connections::shown_url;
use crate::connections::wire::{Head, NoAnswer, Outgoing, ReadFailure, Wire};
use crate::redact::Redactor;

/// How much of a body a message quotes.
const SHOWN_BODY_CHARS: usize = 200;
/// How much of a body is compared when looking for the nearest request:
/// enough to tell two creates apart, cheap on a page of a thousand users.
const COMPARED_BODY_CHARS: usize = 2000;

/// What a request is matched on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    method: String,
    url: String,
    body: Vec<u8>,
}

/// One connection's cassette, being played.
#[derive(Debug)]
pub struct Player {
    /// The cassette's file, for messages.
    file: String,
    recorded: Vec<(Key, Interaction)>,
    run: RunId,
    /// Indexes into `recorded` not yet played, by key, in recorded order.
    unplayed: Mutex<HashMap<Key, VecDeque<usize>>>,
    misses: Mutex<Vec<String>>,
}

impl Player {
    pub fn new(file: String, cassette: Cassette, run: RunId) -> Player {
        let recorded: Vec<(Key, Interaction)> = cassette
            .http_interactions
            .into_iter()
            .map(|i| {
                let key = Key {
                    method: i.request.method.to_ascii_uppercase(),
                    url: i.request.uri.clone(),
                    body: i.request.body.bytes().unwrap_or_default(),
                };
                (key, i)
            })
            .collect();
        let mut unplayed: HashMap<Key, VecDeque<usize>> = HashMap::new();
        for (index, (key, _)) in recorded.iter().enumerate() {
            unplayed.entry(key.clone()).or_default().push_back(index);
        }
        Player {
            file,
            recorded,
            run,
            unplayed: Mutex::new(unplayed),
            misses: Mutex::default(),
        }
    }

    /// Every request that found no recorded answer, as its message said.
    pub fn misses(&self) -> Vec<String> {
        self.misses.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The next recorded answer to `key`, or why there is none.
    fn answer(&self, key: &Key) -> Result<&Interaction, String> {
        let next = self
            .unplayed
            .lock()
            .map_err(|_| "the cassette's player failed earlier".to_string())?
            .get_mut(key)
            .and_then(VecDeque::pop_front);
        if let Some(index) = next {
            return Ok(&self.recorded[index].1);
        }
        let message = self.miss(key);
        if let Ok(mut misses) = self.misses.lock() {
            misses.push(message.clone());
        }
        Err(message)
    }

    fn miss(&self, key: &Key) -> String {
        let what = format!("replay: {} has no recorded answer", shown(key));
        let times = self.recorded.iter().filter(|(k, _)| k == key).count();
        if times > 0 {
            return format!(
                "{what} left in {}: it was recorded {times} time{} and every answer was already played",
                self.file,
                if times == 1 { "" } else { "s" }
            );
        }
        match self.nearest(key) {
            Some(near) => format!(
                "{what} in {}; the nearest recorded request is {}",
                self.file,
                shown(near)
            ),
            None => format!("{what}: {} holds no interaction", self.file),
        }
    }

    /// The recorded request most like `key`: the same method first, then
    /// the closest URL and body.
    fn nearest(&self, key: &Key) -> Option<&Key> {
        let text = |k: &Key| {
            let body = String::from_utf8_lossy(&k.body);
            let body: String = body.chars().take(COMPARED_BODY_CHARS).collect();
            format!("{} {body}", k.url)
        };
        let wanted = text(key);
        self.recorded
            .iter()
            .map(|(k, _)| {
                let likeness = strsim::normalized_levenshtein(&wanted, &text(k));
                (k.method == key.method, likeness, k)
            })
            .max_by(|a, b| {
                (a.0, a.1)
                    .partial_cmp(&(b.0, b.1))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(_, _, k)| k)
    }
}

/// A request as a message shows it: method, URL and the start of its body.
fn shown(key: &Key) -> String {
    let url = shown_url(&key.url);
    if key.body.is_empty() {
        return format!("{} {url}", key.method);
    }
    let body = String::from_utf8_lossy(&key.body);
    let mut quoted: String = body.chars().take(SHOWN_BODY_CHARS).collect();
    if body.chars().count() > SHOWN_BODY_CHARS {
        quoted.push('…');
    }
    format!("{} {url} with body {quoted}", key.method)
}

/// The wire of a replayed connection.
pub struct Replaying<'a> {
    pub player: &'a Player,
    pub redactor: &'a Redactor,
}

impl Wire for Replaying<'_> {
    type Body = Vec<u8>;

    async fn send(&self, request: Outgoing<'_>) -> Result<Head<Vec<u8>>, NoAnswer> {
        // The request as the recorder would have written it.
        let run = &self.player.run;
        let key = Key {
            method: request.method.to_string(),
            url: run.hide_text(&self.redactor.redact(request.url.as_str())),
            body: run.hide(&self.redactor.scrub(request.body.unwrap_or_default()).0),
        };
        // `built: false`: the request never leaves, and sending it again
        // would find no answer either.
        let recorded = self.player.answer(&key).map_err(|reason| NoAnswer {
            built: false,
            connected: false,
            reason,
        })?;
        let response = &recorded.response;
        let headers = response
            .headers
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.to_ascii_lowercase(), run.fill_text(v)))
            })
            .collect();
        let body = response.body.bytes().ok_or_else(|| NoAnswer {
            built: false,
            connected: false,
            reason: format!(
                "replay: the recorded answer to {} in {} has a body that is not valid base64",
                shown(&key),
                self.player.file
            ),
        })?;
        Ok(Head {
            status: response.status.code,
            headers,
            body: run.fill(&body),
        })
    }

    async fn read(&self, body: Vec<u8>, cap: u64, _: Duration) -> Result<Vec<u8>, ReadFailure> {
        if body.len() as u64 > cap {
            return Err(ReadFailure::TooLarge);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::super::cassette::{self, Body, Request, Response, Status};
    use super::*;
    use crate::connections::Method;

    fn recorded(method: &str, uri: &str, body: &str, answer: &str) -> Interaction {
        Interaction {
            request: Request {
                method: method.into(),
                uri: uri.into(),
                body: Body::from_bytes(body.as_bytes()),
                headers: Default::default(),
            },
            response: Response {
                status: Status {
                    code: 200,
                    message: "OK".into(),
                },
                headers: cassette::header_map([("Content-Type", "application/json")]),
                body: Body::from_bytes(answer.as_bytes()),
            },
            recorded_at: String::new(),
        }
    }

    async fn send(
        player: &Player,
        method: Method,
        url: &str,
        body: &str,
    ) -> Result<String, String> {
        let url = url::Url::parse(url).unwrap();
        let redactor = Redactor::new(["s3cret-token".to_string()]);
        let wire = Replaying {
            player,
            redactor: &redactor,
        };
        let request = Outgoing {
            method,
            url: &url,
            headers: vec![("authorization", "Bearer live-token")],
            body: (!body.is_empty()).then_some(body.as_bytes()),
            timeout: Duration::from_secs(1),
        };
        match wire.send(request).await {
            Ok(head) => {
                assert_eq!(
                    head.headers,
                    [("content-type".to_string(), "application/json".to_string())]
                );
                let body = wire.read(head.body, 1 << 20, Duration::ZERO).await.unwrap();
                Ok(String::from_utf8(body).unwrap())
            }
            Err(no) => {
                assert!(!no.built);
                Err(no.reason)
            }
        }
    }

    #[tokio::test]
    async fn repeated_requests_get_their_answers_in_order_then_none() {
        let player = Player::new(
            "graph.yml".into(),
            Cassette::new(vec![
                recorded("get", "http://h/users?page=1", "", "first"),
                recorded("post", "http://h/users", r#"{"a":1}"#, "created a"),
                recorded("get", "http://h/users?page=1", "", "second"),
            ]),
            RunId::new("20261201T000000Z-000000"),
        );
        let page = "http://h/users?page=1";
        assert_eq!(send(&player, Method::Get, page, "").await.unwrap(), "first");
        assert_eq!(
            send(&player, Method::Get, page, "").await.unwrap(),
            "second"
        );
        let third = send(&player, Method::Get, page, "").await.unwrap_err();
        assert_eq!(
            third,
            "replay: GET http://h/users?page=1 has no recorded answer left in graph.yml: it was recorded 2 times and every answer was already played"
        );
        assert_eq!(
            send(&player, Method::Post, "http://h/users", r#"{"a":1}"#)
                .await
                .unwrap(),
            "created a"
        );
        assert_eq!(player.misses(), [third]);
    }

    #[tokio::test]
    async fn a_request_without_a_recording_names_the_nearest_one() {
        let player = Player::new(
            "procore.yml".into(),
            Cassette::new(vec![
                recorded("get", "http://h/users?page=1", "", "[]"),
                recorded(
                    "post",
                    "http://h/users",
                    r#"{"user":{"email_address":"ann@x.com"}}"#,
                    "{}",
                ),
                recorded(
                    "post",
                    "http://h/users",
                    r#"{"user":{"email_address":"bob@x.com"}}"#,
                    "{}",
                ),
            ]),
            RunId::new("20261201T000000Z-000000"),
        );
        let miss = send(
            &player,
            Method::Post,
            "http://h/users",
            r#"{"user":{"email_address":"bo@x.com"}}"#,
        )
        .await
        .unwrap_err();
        assert_eq!(
            miss,
            r#"replay: POST http://h/users with body {"user":{"email_address":"bo@x.com"}} has no recorded answer in procore.yml; the nearest recorded request is POST http://h/users with body {"user":{"email_address":"bob@x.com"}}"#
        );
    }

    #[tokio::test]
    async fn a_recorded_request_matches_once_the_live_secret_is_replaced() {
        let player = Player::new(
            "c.yml".into(),
            Cassette::new(vec![recorded(
                "post",
                "http://h/echo",
                r#"{"t":"[redacted]"}"#,
                "ok",
            )]),
            RunId::new("20261201T000000Z-000000"),
        );
        assert_eq!(
            send(
                &player,
                Method::Post,
                "http://h/echo",
                r#"{"t":"s3cret-token"}"#
            )
            .await
            .unwrap(),
            "ok"
        );
    }
}
