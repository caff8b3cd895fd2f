//! The `graph-send-mail` step: an HTML mail through Graph's `sendMail`.
//!
//! Input `{"from": mailbox, "to": "a@x.com; b@x.com" or a list, "subject",
//! "html"}`. Sends `POST users/{from}/sendMail`; Graph answers 202 with an
//! empty body. In a dry run nothing is sent. Output `{"sent", "to"}` (and
//! `"would_send": true` in a dry run).
//!
//! The POST is marked idempotent although `sendMail` is not: by the time it
//! runs, users have been created, and a mail lost to one 503 or one dropped
//! connection would hide that from the people who must know. The host may
//! therefore resend it, and in the rare case where the first attempt was
//! delivered but its answer was lost the recipients get the report twice —
//! far better than not at all. When the mail still cannot be sent after the
//! host's retries, the step fails and so does the run, naming the cause.

use sluice_guest::bindings::sluice::flow::connection::Method;
use sluice_guest::http::{Call, Failure, status_error};
use sluice_guest::{StepError, Value, bad_input, json};

pub fn recipients(to: &Value) -> Vec<String> {
    let parts: Vec<String> = match to {
        Value::String(s) => s.split([';', ',']).map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .flat_map(|s| s.split([';', ',']))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    parts
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
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

fn run(input: Value) -> Result<Value, StepError> {
    let from = input
        .get("from")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if from.is_empty() {
        return Err(bad_input("`from` (the sending mailbox) is required"));
    }
    let to = recipients(input.get("to").unwrap_or(&Value::Null));
    if to.is_empty() {
        return Err(bad_input("`to` names no recipient"));
    }
    let subject = input
        .get("subject")
        .and_then(Value::as_str)
        .unwrap_or("Sluice report");
    let html = input.get("html").and_then(Value::as_str).unwrap_or("");
    let connection = input
        .get("connection")
        .and_then(Value::as_str)
        .unwrap_or("graph");
    let url = format!("users/{}/sendMail", sluice_guest::http::segment(from));
    match Call::new(connection, Method::Post, &url)
        .json_body(&message(subject, html, &to))
        .idempotent()
        .send()
    {
        Ok(r) if r.is_success() => Ok(json!({ "sent": true, "to": to })),
        Ok(r) => Err(status_error(&url, &r)),
        Err(Failure::DryRun(_)) => Ok(json!({ "sent": false, "would_send": true, "to": to })),
        Err(Failure::Error(e)) => Err(e),
    }
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_split_and_trim() {
        assert_eq!(
            recipients(&json!("a@x.com; b@x.com,,c@x.com ")),
            vec!["a@x.com", "b@x.com", "c@x.com"]
        );
        assert_eq!(
            recipients(&json!(["a@x.com", " b@x.com;c@x.com"])),
            vec!["a@x.com", "b@x.com", "c@x.com"]
        );
        assert!(recipients(&json!(null)).is_empty());
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
