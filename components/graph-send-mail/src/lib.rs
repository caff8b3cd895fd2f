//! The `graph-send-mail` step: an HTML mail through Graph's `sendMail`.
//!
//! Input `{"from": mailbox, "to": "a@x.com; b@x.com" or a list, "subject",
//! "html"}`. Sends `POST users/{from}/sendMail`; Graph answers 202 with an
//! empty body. In a dry run nothing is sent. Output `{"sent", "to"}` (and
//! in a dry run `"would_send": {"method", "url"}`).
//!
//! `sendMail` is not idempotent: a resend after the first attempt was
//! delivered mails the recipients twice. The POST is therefore marked
//! `retry_when_not_acted`: the host sends it again only when Graph's answer
//! proves the mail was not accepted (a 503, which Graph sends when
//! throttling or down; a 429; a connection that could not be opened), and
//! never after a 500, a 502, a 504 or a connection lost after sending.
//! When the mail still cannot be sent, the step fails (and with it the
//! run, naming the cause), so the people who must know that users were
//! created learn that the report did not reach them.
//!
//! Graph takes at most 4 MB in one sendMail request (the whole JSON body;
//! more is refused with 413). A larger mail is refused here, before
//! anything is sent, as `bad-input` with code `mail-too-large`, naming its
//! size: mail a summary (html-report's `mail_html`) and keep the whole
//! report as the run's file.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_guest::{Call, Context, JsonSchema, Sent, StepError, WouldSend};
use sluice_guest_services::status_error;

/// The connection role this component sends through.
const GRAPH: &str = "graph";

/// The largest sendMail request Graph takes: 4 MB (4,096 KiB) of JSON.
pub const SEND_MAIL_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The mail to send.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The sending mailbox (its address or object id).
    from: String,
    /// Recipients: `"a@x.com; b@x.com"` (`;` or `,` between them) or a list.
    to: Recipients,
    /// The subject.
    #[serde(default = "default_subject")]
    subject: String,
    /// The HTML body.
    #[serde(default)]
    html: String,
}

fn default_subject() -> String {
    "Sluice report".into()
}

/// One text of addresses, or a list of them.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recipients {
    /// `"a@x.com; b@x.com"`.
    Text(String),
    /// `["a@x.com", "b@x.com"]`.
    List(Vec<String>),
}

/// What was done.
#[derive(Serialize, JsonSchema)]
struct Output {
    /// Whether Graph accepted the mail.
    sent: bool,
    /// The recipients, one address each.
    to: Vec<String>,
    /// In a dry run: the request that was not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_send: Option<WouldSend>,
}

/// Each address of `to`, trimmed, without empty ones.
pub fn recipients(to: &Recipients) -> Vec<String> {
    let texts: Vec<&str> = match to {
        Recipients::Text(s) => vec![s.as_str()],
        Recipients::List(items) => items.iter().map(String::as_str).collect(),
    };
    texts
        .into_iter()
        .flat_map(|s| s.split([';', ',']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn message(subject: &str, html: &str, to: &[String]) -> Value {
    json!({
        "message": {
            "subject": subject,
            "body": { "contentType": "HTML", "content": html },
            "toRecipients": to.iter().map(|a| json!({ "emailAddress": { "address": a } })).collect::<Vec<_>>(),
        },
        "saveToSentItems": false,
    })
}

/// The request body, refused when Graph would refuse it for its size.
fn within_graphs_limit(body: &Value) -> Result<(), StepError> {
    let size = serde_json::to_vec(body)
        .map_err(|e| StepError::internal(format!("the mail could not be serialised: {e}")))?
        .len();
    if size <= SEND_MAIL_MAX_BYTES {
        return Ok(());
    }
    Err(StepError::bad_input(format!(
        "the mail is {:.1} MiB ({size} bytes) as a sendMail request, over Graph's 4 MiB ({SEND_MAIL_MAX_BYTES} bytes) limit; nothing was sent. Mail a shorter body (html-report's `mail_html` is a bounded summary) and keep the whole report as a file of the run",
        size as f64 / (1024.0 * 1024.0)
    ))
    .with_code("mail-too-large"))
}

fn run(input: Input, _context: &Context) -> Result<Output, StepError> {
    let from = input.from.trim();
    if from.is_empty() {
        return Err(StepError::bad_input(
            "`from` (the sending mailbox) is required",
        ));
    }
    let to = recipients(&input.to);
    if to.is_empty() {
        return Err(StepError::bad_input("`to` names no recipient"));
    }
    let url = format!("users/{}/sendMail", sluice_guest::http::segment(from));
    let body = message(&input.subject, &input.html, &to);
    within_graphs_limit(&body)?;
    let call = Call::post(GRAPH, &url).json(&body)?.retry_when_not_acted();
    match call.send()? {
        Sent::Response(r) if r.is_success() => Ok(Output {
            sent: true,
            to,
            would_send: None,
        }),
        Sent::Response(r) => Err(status_error(&call, &r)),
        Sent::WouldSend(w) => Ok(Output {
            sent: false,
            to,
            would_send: Some(w),
        }),
    }
}

sluice_guest::step!(run, connections: {
    "graph": "Microsoft Graph: sends the report from a mailbox (Mail.Send)",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_split_and_trim() {
        assert_eq!(
            recipients(&Recipients::Text("a@x.com; b@x.com,,c@x.com ".into())),
            vec!["a@x.com", "b@x.com", "c@x.com"]
        );
        assert_eq!(
            recipients(&Recipients::List(vec![
                "a@x.com".into(),
                " b@x.com;c@x.com".into()
            ])),
            vec!["a@x.com", "b@x.com", "c@x.com"]
        );
        assert!(recipients(&Recipients::List(vec![])).is_empty());
    }

    #[test]
    fn a_mail_over_graphs_limit_is_refused_as_bad_input_naming_its_size() {
        let to = ["a@x.com".to_string()];
        let overhead = serde_json::to_vec(&message("S", "", &to)).unwrap().len();
        let fits = message("S", &"x".repeat(SEND_MAIL_MAX_BYTES - overhead), &to);
        assert!(within_graphs_limit(&fits).is_ok());
        let over = message("S", &"x".repeat(SEND_MAIL_MAX_BYTES - overhead + 1), &to);
        let e = within_graphs_limit(&over).unwrap_err();
        assert_eq!(e.kind, sluice_guest::ErrorKind::BadInput);
        assert_eq!(e.code, "mail-too-large");
        assert!(
            e.message
                .contains(&format!("({} bytes)", SEND_MAIL_MAX_BYTES + 1))
                && e.message.contains("nothing was sent"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_message_has_graphs_shape() {
        let m = message("S", "<p>x</p>", &["a@x.com".into()]);
        assert_eq!(m["message"]["body"]["contentType"], json!("HTML"));
        assert_eq!(
            m["message"]["toRecipients"][0]["emailAddress"]["address"],
            json!("a@x.com")
        );
    }
}
