//! Procore: bare JSON arrays paged with `page` and `per_page`, and its
//! error body `{"errors": …}`.
//!
//! Whether there is another page is read from the headers, in this order:
//! the `Link` header's `rel="next"` (every `Link` field, since RFC 8288
//! allows several), else `Total` against `Per-Page` (or, without
//! `Per-Page`, against what has been received so far, because a server may
//! hand out fewer per page than asked), else — no paging headers at all —
//! keep asking until a page comes back empty. A short page alone never ends
//! the list; an empty one always does, so a server whose `Total` overstates
//! cannot keep the flow asking for ever. A list that ends with fewer items
//! than the last page's `Total` fails the read (`short-read`): the missing
//! users would be taken for absent.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_guest::http::segment;
use sluice_guest::{Call, JsonSchema, Response, Sent, StepError};
use sluice_identity::Key;

use crate::sync::ProjectAction;
use crate::{MAX_PAGES, read_ok};

/// A Procore id: a number as Procore sends it, or text as the environment
/// gives it (`PROCORE_COMPANY_ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Id {
    /// A number.
    Number(u64),
    /// Text; empty (or only spaces) means no id.
    Text(String),
}

impl Id {
    /// The id as text, trimmed, or `None` when it is empty.
    pub fn text(&self) -> Option<String> {
        match self {
            Id::Number(n) => Some(n.to_string()),
            Id::Text(t) => Some(t.trim().to_string()).filter(|t| !t.is_empty()),
        }
    }

    /// The id, unless it is empty text (an unset optional variable).
    pub fn present(self) -> Option<Id> {
        self.text().is_some().then_some(self)
    }
}

/// Read by kind, not as an untagged enum: that would buffer the value and
/// build an error for each variant it tries, and a create reads several ids.
impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Id, D::Error> {
        struct IdVisitor;

        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = Id;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Procore id: a whole number from 0, or text")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Id, E> {
                Ok(Id::Number(n))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Id, E> {
                u64::try_from(n)
                    .map(Id::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Id, E> {
                Ok(Id::Text(text.to_string()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Id, E> {
                Ok(Id::Text(text))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

/// One `type` list, inline, rather than the derived `anyOf` of two
/// definitions: a wrong value is then reported as "must be an integer or a
/// string, not a boolean".
impl JsonSchema for Id {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProcoreId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "minimum": 0,
            "description": "A Procore id: a number, or its digits as text (an environment variable); empty text means none."
        })
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(t) => f.write_str(t.trim()),
        }
    }
}

/// How far Procore's clock may trail ours before a user the flow created
/// looks older than the run that created it. A run reads Procore after it
/// starts, so a user created minutes before the start would have been seen
/// and never sent for creation.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Seconds since the Unix epoch of an RFC 3339 time, if it is one.
pub fn epoch(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp())
}

/// Whether Procore says it created a user (its `created_at`, RFC 3339) at
/// or after `since` (seconds since the epoch), less [`CLOCK_SKEW_SECS`].
/// An unknown or unreadable creation time says no.
pub fn created_since(created_at: Option<&str>, since: i64) -> bool {
    created_at
        .and_then(epoch)
        .is_some_and(|created| created >= since.saturating_sub(CLOCK_SKEW_SECS))
}

/// The link-values of an RFC 8288 `Link` header: each target URI with its
/// parameters (names lower-cased, quotes removed). Commas inside `<…>` or a
/// quoted string do not split values.
pub fn link_values(header: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let target = rest[open + 1..open + close].trim().to_string();
        rest = &rest[open + close + 1..];
        // Parameters run to the next comma that is not inside quotes.
        let mut params_text = String::new();
        let mut in_quotes = false;
        let mut consumed = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    consumed = i + 1;
                    break;
                }
                _ => {}
            }
            params_text.push(c);
        }
        rest = &rest[consumed.min(rest.len())..];
        let params = params_text
            .split(';')
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                Some((
                    name.trim().to_ascii_lowercase(),
                    value.trim().trim_matches('"').to_string(),
                ))
            })
            .collect();
        out.push((target, params));
    }
    out
}

/// The URL of the `rel="next"` link of an RFC 8288 `Link` header (`rel`
/// may list several relation types, separated by spaces).
pub fn link_next(header: &str) -> Option<String> {
    link_values(header)
        .into_iter()
        .find_map(|(target, params)| {
            params
                .iter()
                .any(|(name, value)| {
                    name == "rel"
                        && value
                            .split_ascii_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .then_some(target)
        })
}

/// Why a page cannot say whether the list goes on.
#[derive(Debug, PartialEq)]
pub enum Unpageable {
    /// A paging header that is there but is not a whole number (`abc`,
    /// `-1`, `0x27`): the page cannot be measured against it.
    Unreadable {
        /// The header, lower-cased.
        header: &'static str,
        /// Its text, cut to 40 characters.
        value: String,
    },
    /// An empty page whose `Link` names a next one: the list says both
    /// that it is over and that it goes on.
    EmptyWithNext,
}

/// A paging header's whole number, if the page sends the header.
fn number_header(response: &Response, name: &'static str) -> Result<Option<usize>, Unpageable> {
    let Some(text) = response.header(name) else {
        return Ok(None);
    };
    text.trim()
        .parse::<usize>()
        .map(Some)
        .map_err(|_| Unpageable::Unreadable {
            header: name,
            value: text.chars().take(40).collect(),
        })
}

/// Whether Procore has another page after `page` (1-based), given how many
/// items this page held and how many all pages so far held together.
pub fn has_next(
    response: &Response,
    page: usize,
    on_this_page: usize,
    so_far: usize,
) -> Result<bool, Unpageable> {
    let next_link = response
        .header_joined("link")
        .map(|link| link_next(&link).is_some());
    if on_this_page == 0 {
        return match next_link {
            Some(true) => Err(Unpageable::EmptyWithNext),
            Some(false) => Ok(false),
            // The caller checks the list's length against `Total`: one it
            // cannot read would let a short read pass for the end.
            None => number_header(response, "total").map(|_| false),
        };
    }
    if let Some(next) = next_link {
        return Ok(next);
    }
    // Read only when no Link decides: a header the answer does not need
    // does not stop the read, however it is written.
    let total = number_header(response, "total")?;
    let per_page = number_header(response, "per-page")?.filter(|n| *n > 0);
    Ok(match (total, per_page) {
        (Some(total), Some(per_page)) => page.saturating_mul(per_page) < total,
        (Some(total), None) => so_far < total,
        // No paging headers at all: only an empty page says the list is over.
        (None, _) => true,
    })
}

/// One page of a Procore list, read as `T`.
#[derive(Debug)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// The list's length by the `Total` header, when the server sends it.
    pub total: Option<usize>,
}

/// A Procore list endpoint, read one page at a time, so that a caller
/// holds no more than one page of the service's full records.
pub struct Pages<'a> {
    connection: &'a str,
    url: String,
    query: &'a [(&'a str, String)],
    per_page: usize,
    /// The last page read (1-based); 0 before the first.
    page: usize,
    /// Items on the pages read so far.
    so_far: usize,
    done: bool,
}

impl<'a> Pages<'a> {
    /// The list at `url` (relative to the connection), with `query`
    /// added to every page's `page` and `per_page`.
    pub fn new(
        connection: &'a str,
        url: &str,
        query: &'a [(&'a str, String)],
        per_page: usize,
    ) -> Pages<'a> {
        Pages {
            connection,
            url: url.to_string(),
            query,
            per_page,
            page: 0,
            so_far: 0,
            done: false,
        }
    }

    /// The next page, or `None` once the paging headers (or an empty
    /// page) said the list is over.
    pub fn next_page<T: DeserializeOwned>(&mut self) -> Result<Option<Page<T>>, StepError> {
        if self.done {
            return Ok(None);
        }
        if self.page >= MAX_PAGES {
            return Err(
                StepError::internal(format!("more than {MAX_PAGES} pages")).with_code("paging")
            );
        }
        self.page += 1;
        let mut call = Call::get(self.connection, &self.url)
            .query("page", self.page.to_string())
            .query("per_page", self.per_page.to_string());
        for (k, v) in self.query {
            call = call.query(k, v.clone());
        }
        let response = read_ok(&call)?;
        let items: Vec<T> = page_items(&self.url, &response.body)?;
        self.so_far += items.len();
        self.done = !has_next(&response, self.page, items.len(), self.so_far)
            .map_err(|why| unpageable(&self.url, self.page, why))?;
        let total = number_header(&response, "total").ok().flatten();
        if let Some(total) = total.filter(|&t| self.done && self.so_far < t) {
            return Err(short_read(&self.url, total, self.so_far));
        }
        Ok(Some(Page { items, total }))
    }
}

/// The error of a list whose pages ended short of the `Total` its last
/// page gave: users a page left out would be taken for absent (created
/// again, or never matched), so the read stops instead. Retryable. A list
/// that shrank while it was paged gives its new Total on its last page,
/// so that alone does not get here; nor does the user such a shift can
/// skip, which page numbers cannot tell (at worst a create that Procore
/// refuses as taken, never a deactivation).
fn short_read(url: &str, total: usize, read: usize) -> StepError {
    StepError::unavailable(format!(
        "{url}: Procore's Total header says the list holds {total}, but its pages held {read} when it ended; the list was not read whole, so the step stops rather than take the rest for absent"
    ))
    .with_code("short-read")
}

/// The error of a page that cannot say whether the list goes on. Taking
/// it for the end would take every user after it for absent, so the read
/// stops instead: retryable for an empty page that links a next one (a
/// list that changed under the read), not for a header that is no number.
fn unpageable(url: &str, page: usize, why: Unpageable) -> StepError {
    match why {
        Unpageable::Unreadable { header, value } => StepError::internal(format!(
            "{url}: page {page}'s {header} header is `{value}`, not a whole number, so the step cannot tell whether the list goes on"
        ))
        .with_code("bad-response"),
        Unpageable::EmptyWithNext => StepError::unavailable(format!(
            "{url}: page {page} came back empty while its Link header names a next page; the list was not read whole, so the step stops rather than take the rest for absent"
        ))
        .with_code("short-read"),
    }
}

/// A page's body: a bare JSON array of `T`. Read typed, so a page of
/// full records is never held as a JSON tree.
fn page_items<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<Vec<T>, StepError> {
    serde_json::from_slice(body).map_err(|e| {
        let message = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(_)) => {
                format!("{url}: Procore listed an item this step cannot read: {e}")
            }
            Ok(other) => format!("{url}: expected a JSON array, got {}", kind(&other)),
            Err(e) => format!("{url}: the body is not JSON: {e}"),
        };
        StepError::internal(message).with_code("bad-response")
    })
}

/// Hands every item of a Procore list endpoint, read as `T`, to `each`,
/// page after page: only one page is held at a time.
pub fn each<T: DeserializeOwned>(
    connection: &str,
    url: &str,
    query: &[(&str, String)],
    per_page: usize,
    mut each: impl FnMut(T),
) -> Result<(), StepError> {
    let mut pages = Pages::new(connection, url, query, per_page);
    while let Some(page) = pages.next_page::<T>()? {
        page.items.into_iter().for_each(&mut each);
    }
    Ok(())
}

/// Every item of a Procore list endpoint, page by page.
pub fn all(
    connection: &str,
    url: &str,
    query: &[(&str, String)],
    per_page: usize,
) -> Result<Vec<Value>, StepError> {
    let mut items = Vec::new();
    each(connection, url, query, per_page, |item: Value| {
        items.push(item)
    })?;
    Ok(items)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The text of a Procore `errors` body (`login has already been taken`),
/// if the body is one.
pub fn error_message(response: &Response) -> Option<String> {
    let body: Value = serde_json::from_slice(&response.body).ok()?;
    let errors = body.get("errors")?;
    Some(match errors {
        Value::String(s) => s.clone(),
        Value::Object(fields) => fields
            .iter()
            .map(|(field, problems)| {
                let problems = match problems {
                    Value::Array(list) => list
                        .iter()
                        .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                format!("{field} {problems}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    })
}

/// The user among `candidates` whose login or email is `key` (the
/// identity rule: trimmed, without case).
pub fn exact_match<'a>(candidates: &'a [Value], key: &Key) -> Option<&'a Value> {
    candidates.iter().find(|u| {
        let text = |f: &str| u.get(f).and_then(Value::as_str);
        key.matches_procore(text("login"), text("email_address"))
    })
}

/// Page size of a look-up on the inactive list. Procore documents
/// `filters[search]` only on the active list: the inactive one may answer
/// with every inactive user, so it is read in pages as large as a full
/// read's (the search is still sent, and narrows the list where honoured).
pub const INACTIVE_LOOKUP_PER_PAGE: usize = 1000;

/// Finds the company user whose login or email is `key`, in the active
/// list and then the inactive one (`filters[search]` for `search`, matched
/// exactly with [`exact_match`]), `per_page` at a time on the active list
/// and [`INACTIVE_LOOKUP_PER_PAGE`] on the inactive one. `search` is the
/// address as Procore was sent it: a key is lower-cased, and a search may
/// not fold a non-ASCII capital the same way.
pub fn find_user(
    connection: &str,
    company: &str,
    (key, search): (&Key, &str),
    per_page: usize,
) -> Result<Option<Value>, StepError> {
    for (list, per_page) in [
        ("users", per_page),
        ("users/inactive", INACTIVE_LOOKUP_PER_PAGE),
    ] {
        let url = format!("companies/{}/{list}", segment(company));
        let found = all(
            connection,
            &url,
            &[("filters[search]", search.to_string())],
            per_page,
        )?;
        if let Some(user) = exact_match(&found, key) {
            return Ok(Some(user.clone()));
        }
    }
    Ok(None)
}

/// Whether the user `found` (as Procore lists it) has the Procore id `id`,
/// which Procore sends as a number and a caller holds as text.
pub fn same_id(found: &Value, id: &str) -> bool {
    match found.get("id") {
        Some(Value::Number(n)) => n.to_string() == id.trim(),
        Some(Value::String(s)) => s.trim() == id.trim(),
        _ => false,
    }
}

/// Whether Procore lists the company user `id` as inactive: its inactive
/// list, searched for `search` (`filters[search]`: names and the email
/// address, where Procore honours it) and read [`INACTIVE_LOOKUP_PER_PAGE`]
/// at a time, holds a user with that id who is not marked active. Only
/// such a listing says inactive; a user found nowhere is not, and a read
/// that fails is an error, never an answer.
pub fn listed_inactive(
    connection: &str,
    company: &str,
    id: &str,
    search: &str,
) -> Result<bool, StepError> {
    let per_page = INACTIVE_LOOKUP_PER_PAGE;
    let url = format!("companies/{}/users/inactive", segment(company));
    let mut listed = false;
    each(
        connection,
        &url,
        &[("filters[search]", search.to_string())],
        per_page,
        |user: Value| listed |= is_inactive(&user, id),
    )?;
    Ok(listed)
}

/// A user of the inactive list that is `id` and does not say it is active.
pub fn is_inactive(found: &Value, id: &str) -> bool {
    same_id(found, id) && found.get("is_active").and_then(Value::as_bool) != Some(true)
}

/// The `actions/add` body: the permission template only when one is
/// configured (Procore documents it as optional, and as an integer).
pub fn project_body(template: Option<u64>) -> Value {
    match template {
        Some(t) => json!({ "user": { "permission_template_id": t } }),
        None => json!({}),
    }
}

/// The input schema of a permission template id (an `Option<Id>` field):
/// a whole number, or its digits as text, or empty or absent for none.
/// Procore takes only an integer, and [`permission_template`] refuses
/// anything else; saying so in the schema lets the host refuse a flow whose
/// variable is not one before anything runs, not each item after.
pub fn template_id_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["integer", "string", "null"],
        "minimum": 0,
        "pattern": "^\\s*[0-9]*\\s*$",
        "description": "A Procore permission template id: a whole number, or its digits as text (an environment variable); empty or absent means none."
    })
}

/// The input schema of a company id (an [`Id`] field): a whole number, or
/// its digits as text. Said in the schema so that a mistyped
/// `PROCORE_COMPANY_ID` is refused by `sluice validate --env` and before a
/// run reads anything, not by Procore after Graph was read.
pub fn company_id_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["integer", "string"],
        "minimum": 0,
        "pattern": "^\\s*[0-9]+\\s*$",
        "description": "The Procore company id: a whole number, or its digits as text (an environment variable)."
    })
}

/// The input schema of a project id (an `Option<Id>` field): a whole
/// number, or its digits as text, or empty or absent for none; refused
/// before anything runs otherwise, as [`company_id_schema`] says why.
pub fn project_id_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["integer", "string", "null"],
        "minimum": 0,
        "pattern": "^\\s*[0-9]*\\s*$",
        "description": "A Procore project id: a whole number, or its digits as text (an environment variable); empty or absent means none."
    })
}

/// The permission template a new or returning user gets on the project:
/// none when `id` is absent or empty, else its number. Procore takes only
/// an integer; anything else is refused before a request is made, so a
/// mistyped `PROCORE_PERMISSION_TEMPLATE_ID` stops the item instead of
/// creating a user whom the project add then fails.
pub fn permission_template(id: Option<&Id>) -> Result<Option<u64>, StepError> {
    let Some(text) = id.and_then(Id::text) else {
        return Ok(None);
    };
    text.parse::<u64>().map(Some).map_err(|_| {
        StepError::bad_input(format!(
            "`permission_template_id` is `{text}`, not a Procore permission template id (a whole number); in the shipped flow it comes from PROCORE_PERMISSION_TEMPLATE_ID"
        ))
    })
}

/// The documented route of `action` for the company user `user` on
/// `project`: `projects/{project}/users/{user}/actions/add` (a `POST`) or
/// `…/actions/remove` (a `DELETE`). Each id stays inside its path segment.
pub fn project_action_url(action: ProjectAction, project: &str, user: &str) -> String {
    let verb = match action {
        ProjectAction::Add => "add",
        ProjectAction::Remove => "remove",
    };
    format!(
        "projects/{}/users/{}/actions/{verb}",
        segment(project),
        segment(user)
    )
}

/// Whether a refusal of a write may be what the resend of one Procore had
/// already applied met: a 4xx other than 401 and 403 (the token, the app's
/// permissions) and 429 (which says nothing of the write). Procore
/// documents no answer to repeating these writes (adding a project member
/// again, deactivating an inactive user, reactivating an active one), so
/// after an answer lost on the way back a strict server may refuse the
/// host's resend; the step then asks Procore how things stand instead of
/// taking the refusal as the truth.
pub fn may_refuse_a_repeat(status: u16) -> bool {
    (400..=499).contains(&status) && !matches!(status, 401 | 403 | 429)
}

/// Whether the company user `user` is an active member of `project`:
/// Procore's "Show project user" (`GET projects/{project}/users/{id}`)
/// answers 200 with the project user for a member and 404 for anyone
/// else; a member it marks inactive does not count. Any other answer, or
/// none, is an error, never "not a member".
pub fn on_project(connection: &str, project: &str, user: &str) -> Result<bool, StepError> {
    let url = format!("projects/{}/users/{}", segment(project), segment(user));
    let call = Call::get(connection, &url);
    let response = call.read()?;
    match response.status {
        200..=299 => Ok(active_member(&response.body)),
        404 => Ok(false),
        _ => Err(crate::status_error(&call, &response)),
    }
}

/// A "Show project user" body that does not say the user is inactive.
pub fn active_member(body: &[u8]) -> bool {
    let user: Option<Value> = serde_json::from_slice(body).ok();
    user.as_ref()
        .and_then(|u| u.get("is_active"))
        .and_then(Value::as_bool)
        != Some(false)
}

/// Adds the company user `user_id` to `project` through `POST
/// projects/{project}/users/{id}/actions/add`, with the permission
/// `template` when there is one. What came of it, as the sync's outputs
/// report it: `added`, `would_add` (a dry run) or `failed: …`. Adding a
/// member twice leaves one membership, so the host may resend it; a
/// refusal that may be the resend's ([`may_refuse_a_repeat`]) is `added`
/// when Procore has the user on the project.
pub fn add_to_project(
    connection: &str,
    project: &str,
    user_id: Option<&Id>,
    template: Option<u64>,
) -> String {
    let Some(user_id) = user_id.and_then(Id::text) else {
        return "failed: Procore returned no user id".into();
    };
    let url = project_action_url(ProjectAction::Add, project, &user_id);
    let sent = Call::post(connection, &url)
        .json(&project_body(template))
        .and_then(|call| call.idempotent().send());
    match sent {
        Ok(Sent::Response(r)) if r.is_success() => "added".into(),
        Ok(Sent::Response(r)) => {
            let refused = format!(
                "HTTP {}: {}",
                r.status,
                crate::service_message(&r).unwrap_or_else(|| r.text_preview())
            );
            if !may_refuse_a_repeat(r.status) {
                return format!("failed: {refused}");
            }
            match on_project(connection, project, &user_id) {
                Ok(true) => {
                    sluice_guest::log::info(&format!(
                        "Procore answered {refused} to adding user {user_id} to project {project}, but has them on it: added"
                    ));
                    "added".into()
                }
                Ok(false) => format!("failed: {refused}"),
                Err(e) => format!(
                    "failed: {refused}; whether they are on the project could not be read either ({})",
                    e.message
                ),
            }
        }
        Ok(Sent::WouldSend(_)) => "would_add".into(),
        Err(e) => format!("failed: {}", e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_project_action_has_its_documented_route() {
        let url = project_action_url;
        assert_eq!(
            url(ProjectAction::Add, "5", "42"),
            "projects/5/users/42/actions/add"
        );
        assert_eq!(
            url(ProjectAction::Remove, "5", "42"),
            "projects/5/users/42/actions/remove"
        );
        // An id from the environment cannot leave its path segment.
        assert_eq!(
            url(ProjectAction::Add, "5/../x", "42"),
            "projects/5%2F..%2Fx/users/42/actions/add"
        );
    }

    #[test]
    fn an_inactive_listing_counts_only_for_the_same_user_not_marked_active() {
        assert!(same_id(&json!({"id": 42}), "42"));
        assert!(same_id(&json!({"id": " 42 "}), "42"));
        assert!(!same_id(&json!({"id": 420}), "42"));
        assert!(!same_id(&json!({"login": "42"}), "42"));
        assert!(is_inactive(&json!({"id": 42, "is_active": false}), "42"));
        assert!(is_inactive(&json!({"id": 42}), "42"), "the list says it");
        assert!(!is_inactive(&json!({"id": 42, "is_active": true}), "42"));
        assert!(!is_inactive(&json!({"id": 43, "is_active": false}), "42"));
    }

    #[test]
    fn a_project_user_marked_inactive_is_no_member() {
        assert!(active_member(br#"{"id": 42, "is_active": true}"#));
        assert!(active_member(br#"{"id": 42}"#));
        assert!(!active_member(br#"{"id": 42, "is_active": false}"#));
    }

    #[test]
    fn only_a_refusal_a_resend_could_meet_is_checked_again() {
        for status in [400, 404, 409, 410, 422] {
            assert!(may_refuse_a_repeat(status), "{status}");
        }
        for status in [200, 201, 204, 401, 403, 429, 500, 503] {
            assert!(!may_refuse_a_repeat(status), "{status}");
        }
    }

    #[test]
    fn the_template_is_sent_only_when_set() {
        assert_eq!(
            project_body(Some(77)),
            json!({"user": {"permission_template_id": 77}})
        );
        assert_eq!(project_body(None), json!({}));
    }

    #[test]
    fn a_permission_template_is_a_number_or_none() {
        let text = |t: &str| Id::Text(t.into());
        assert_eq!(permission_template(None).unwrap(), None);
        assert_eq!(permission_template(Some(&text(" "))).unwrap(), None);
        assert_eq!(permission_template(Some(&text(" 77 "))).unwrap(), Some(77));
        assert_eq!(
            permission_template(Some(&Id::Number(78))).unwrap(),
            Some(78)
        );
        let error = permission_template(Some(&text("tpl-a"))).unwrap_err();
        assert!(error.message.contains("`tpl-a`"), "{}", error.message);
        assert!(error.message.contains("PROCORE_PERMISSION_TEMPLATE_ID"));
    }

    #[test]
    fn an_id_is_a_number_or_text_in_one_inline_schema() {
        let schema = schemars::schema_for!(Id);
        let types = serde_json::json!(["integer", "string"]);
        assert_eq!(schema.get("type"), Some(&types));
        let id: Id = serde_json::from_str("\" 42 \"").unwrap();
        assert_eq!(id.text().as_deref(), Some("42"));
        assert_eq!(serde_json::from_str::<Id>("7").unwrap(), Id::Number(7));
    }

    #[test]
    fn an_id_reads_from_text_and_from_a_value_and_refuses_other_kinds() {
        let max = u64::MAX.to_string();
        assert_eq!(
            serde_json::from_str::<Id>(&max).unwrap(),
            Id::Number(u64::MAX)
        );
        assert_eq!(
            serde_json::from_value::<Id>(json!(12)).unwrap(),
            Id::Number(12)
        );
        assert_eq!(
            serde_json::from_value::<Id>(json!("12")).unwrap(),
            Id::Text("12".into())
        );
        for wrong in ["-1", "1.5", "true", "null", "[1]", "{}"] {
            let error = serde_json::from_str::<Id>(wrong).unwrap_err().to_string();
            assert!(error.contains("a Procore id"), "{wrong}: {error}");
        }
        #[derive(Deserialize)]
        struct Record {
            id: Option<Id>,
        }
        let record: Record = serde_json::from_str(r#"{"id": null}"#).unwrap();
        assert_eq!(record.id, None);
    }

    /// Whether the list goes on, for a page whose headers can say it.
    fn has_next(response: &Response, page: usize, on_this_page: usize, so_far: usize) -> bool {
        super::has_next(response, page, on_this_page, so_far).unwrap()
    }

    fn response(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 200,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: vec![],
        }
    }

    #[test]
    fn the_errors_body_in_each_shape() {
        let body = |text: &str| Response {
            status: 422,
            headers: vec![],
            body: text.as_bytes().to_vec(),
        };
        assert_eq!(
            error_message(&body(
                r#"{"errors":{"login":["has already been taken"],"last_name":"can't be blank"}}"#
            ))
            .unwrap(),
            "login has already been taken; last_name can't be blank"
        );
        assert_eq!(
            error_message(&body(
                r#"{"errors":"param is missing or the value is empty: user"}"#
            ))
            .unwrap(),
            "param is missing or the value is empty: user"
        );
        assert_eq!(error_message(&body("plain text")), None);
    }

    #[test]
    fn link_header_next() {
        let h = r#"<https://api.procore.com/rest/v1.0/companies/1/users?page=1&per_page=2>; rel="first", <https://api.procore.com/rest/v1.0/companies/1/users?page=3&per_page=2>; rel="next", <https://x/?page=9>; rel="last""#;
        assert_eq!(
            link_next(h).unwrap(),
            "https://api.procore.com/rest/v1.0/companies/1/users?page=3&per_page=2"
        );
        assert_eq!(
            link_next(r#"<https://x/?page=1>; rel="first", <https://x/?page=1>; rel="last""#),
            None
        );
        // Unquoted, upper case, a relation list, and commas inside the URL.
        assert_eq!(
            link_next("<https://x/?ids=1,2&page=2>; REL=next").unwrap(),
            "https://x/?ids=1,2&page=2"
        );
        assert_eq!(
            link_next(r#"<https://x/?page=1>; title="a, b"; rel="prev", <https://x/?page=3>; rel="next last""#)
                .unwrap(),
            "https://x/?page=3"
        );
        assert_eq!(link_next(""), None);
        assert_eq!(link_next("garbage, <unclosed"), None);
    }

    #[test]
    fn every_link_field_is_read() {
        // RFC 8288 lets a server send its links in several Link fields.
        let r = response(&[
            ("link", r#"<https://x/?page=1>; rel="first""#),
            ("total", "250"),
            ("link", r#"<https://x/?page=2>; rel="next""#),
        ]);
        assert!(has_next(&r, 1, 100, 100));
        let last = response(&[
            ("link", r#"<https://x/?page=1>; rel="first""#),
            ("Link", r#"<https://x/?page=2>; rel="prev""#),
        ]);
        assert!(!has_next(&last, 3, 50, 250));
    }

    #[test]
    fn the_link_header_decides_first() {
        assert!(has_next(
            &response(&[("link", r#"<https://x/?page=2>; rel="next""#)]),
            1,
            3,
            3
        ));
        assert!(!has_next(
            &response(&[
                ("link", r#"<https://x/?page=1>; rel="last""#),
                ("total", "900")
            ]),
            1,
            100,
            100
        ));
    }

    #[test]
    fn total_is_read_against_the_servers_page_size() {
        // The server pages by 50 although 100 were asked for: Per-Page says so.
        let r = response(&[("total", "120"), ("per-page", "50")]);
        assert!(has_next(&r, 1, 50, 50));
        assert!(has_next(&r, 2, 50, 100));
        assert!(!has_next(&r, 3, 20, 120));
        // Without Per-Page, what has been received counts, never what was asked.
        let r = response(&[("total", "120")]);
        assert!(has_next(&r, 1, 50, 50));
        assert!(has_next(&r, 2, 50, 100));
        assert!(!has_next(&r, 3, 20, 120));
        // A short page with a Total saying there is more: keep going.
        assert!(has_next(&response(&[("total", "250")]), 1, 60, 60));
    }

    #[test]
    fn procore_paging_reads_the_documented_headers() {
        let example = crate::tests::documented("procore_pagination");
        let headers: Vec<(String, String)> = example["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let third = Response {
            status: 200,
            headers: headers.clone(),
            body: vec![],
        };
        assert_eq!(
            link_next(third.header("link").unwrap()).as_deref(),
            Some("https://api.procore.com/rest/v1.0/punch_items?page=4&per_page=5")
        );
        assert!(has_next(&third, 3, 5, 15));
        // The last page (30 × 5 = 150, the documented Total) has no next link.
        let last = Response {
            status: 200,
            headers: headers
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "Link" => (
                        k,
                        "<https://api.procore.com/rest/v1.0/punch_items?page=1&per_page=5>; rel=\"first\"".into(),
                    ),
                    _ => (k, v),
                })
                .collect(),
            body: vec![],
        };
        assert!(!has_next(&last, 30, 5, 150));
        let without_link = Response {
            status: 200,
            headers: vec![
                ("Total".into(), "150".into()),
                ("Per-Page".into(), "5".into()),
            ],
            body: vec![],
        };
        assert!(has_next(&without_link, 29, 5, 145));
        assert!(!has_next(&without_link, 30, 5, 150));
    }

    #[test]
    fn a_page_is_read_typed_and_a_page_that_is_not_a_list_says_what_it_is() {
        #[derive(Debug, Deserialize)]
        struct Slim {
            id: u64,
        }
        let body = br#"[{"id": 1, "vendor": {"id": 9}, "name": "A"}, {"id": 2}]"#;
        let items: Vec<Slim> = page_items("u", body).unwrap();
        assert_eq!(items.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2]);
        let e = page_items::<Slim>("companies/1/users", br#"{"errors": "x"}"#).unwrap_err();
        assert_eq!(e.code, "bad-response");
        assert_eq!(
            e.message,
            "companies/1/users: expected a JSON array, got an object"
        );
        let e = page_items::<Slim>("u", br#"[{"id": "seven"}]"#).unwrap_err();
        assert!(
            e.message
                .starts_with("u: Procore listed an item this step cannot read: invalid type"),
            "{}",
            e.message
        );
        let e = page_items::<Slim>("u", b"<html>").unwrap_err();
        assert!(
            e.message.starts_with("u: the body is not JSON"),
            "{}",
            e.message
        );
    }

    #[test]
    fn without_headers_only_an_empty_page_ends_the_list() {
        assert!(
            has_next(&response(&[]), 1, 7, 7),
            "a short page is not the end"
        );
        assert!(has_next(&response(&[]), 2, 100, 107));
        assert!(!has_next(&response(&[]), 3, 0, 107));
        // An empty page ends the list even when Total overstates.
        assert!(!has_next(&response(&[("total", "500")]), 2, 0, 100));
    }

    #[test]
    fn a_page_that_cannot_say_whether_the_list_goes_on_stops_the_read() {
        for value in ["abc", "-1", "0x27", ""] {
            for header in ["total", "per-page"] {
                let page = response(&[(header, value), ("total", "10")]);
                assert_eq!(
                    super::has_next(&page, 1, 5, 5),
                    Err(Unpageable::Unreadable {
                        header,
                        value: value.into()
                    }),
                    "{header}: {value}"
                );
            }
        }
        // A Link decides alone: the numbers are not read.
        let linked = |rel: &str| {
            response(&[
                ("total", "abc"),
                ("per-page", "-1"),
                ("link", &format!(r#"<https://x/?page=3>; rel="{rel}""#)),
            ])
        };
        assert_eq!(super::has_next(&linked("next"), 1, 5, 5), Ok(true));
        // An empty page without a Link ends the list only by a Total that
        // can be checked against what was read.
        assert_eq!(
            super::has_next(&response(&[("total", "abc")]), 3, 0, 200),
            Err(Unpageable::Unreadable {
                header: "total",
                value: "abc".into()
            })
        );
        assert_eq!(super::has_next(&linked("last"), 1, 5, 5), Ok(false));
        let empty_with_next = response(&[("link", r#"<https://x/?page=3>; rel="next""#)]);
        assert_eq!(
            super::has_next(&empty_with_next, 2, 0, 100),
            Err(Unpageable::EmptyWithNext)
        );
        let error = unpageable("companies/1/users", 2, Unpageable::EmptyWithNext);
        assert_eq!(
            (error.code.as_str(), error.kind),
            ("short-read", sluice_guest::ErrorKind::Unavailable)
        );
        let long = "9".repeat(100);
        let error = unpageable(
            "companies/1/users",
            4,
            super::has_next(&response(&[("total", &long)]), 4, 5, 20).unwrap_err(),
        );
        assert_eq!(error.code, "bad-response");
        assert!(
            error
                .message
                .contains(&format!("page 4's total header is `{}`", &long[..40])),
            "{}",
            error.message
        );
        // An empty last page without a next link still ends the list.
        let last = response(&[("link", r#"<https://x/?page=1>; rel="first""#)]);
        assert_eq!(super::has_next(&last, 3, 0, 100), Ok(false));
    }
}
