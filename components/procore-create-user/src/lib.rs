//! The `procore-create-user` step: one Procore company user per call.
//!
//! Input `{"user": <person>, "company_id", "project_id"?,
//! "permission_template_id"?}` (an empty id means none); writes through the
//! `procore` connection role. Sends `POST
//! companies/{id}/users` with the nested `{"user": {…}}` body Procore
//! requires. When a project is configured the user then joins it through
//! `POST projects/{project_id}/users/{id}/actions/add`, with the permission
//! template when one is configured (Procore documents it as optional). In a
//! dry run nothing is sent and the result says what would have been done.
//!
//! A resend must never make a second user, and a user someone else made
//! must never be taken for one this run made. So the first create is sent
//! as a write the host resends only when the answer proves Procore did not
//! act (a 503, a connection that could not be opened). When its answer is
//! lost or ambiguous (a timeout, a connection lost after sending, a 500,
//! 502 or 504), the component looks the user up (`filters[search]` for the
//! address sent, on the active and the inactive list, matched exactly on
//! login or email, without case):
//!
//! - Found, created at or after this run started (the run context's
//!   `started_at`, less [`CLOCK_SKEW_SECS`] for clocks that disagree),
//!   with the names this item sent: that create made it. Reported
//!   `created` with its id (the reason says the look-up confirmed it) and
//!   added to the project like any new user. A user someone else created
//!   in the same seconds with the same names would be taken the same way;
//!   nothing on the wire tells the two apart.
//! - Not found: the create is sent again, now marked idempotent so the host
//!   resends it after any 5xx or lost connection: Procore refuses a second
//!   user with the same login, so a resend can never make two.
//! - The look-up failed too: the item fails, retryable; the next run reads
//!   Procore and finds out.
//!
//! A 409/422 "taken" (or a 400 naming the login or email as taken) is
//! followed by the same look-up, and the rule is:
//!
//! - Found, created at or after this run started, with the names sent,
//!   and this item sent a create before (the resend above, or an earlier
//!   call of the item under the step's `retry` policy): that earlier
//!   create was applied. Reported `created`, confirmed after a retry, and
//!   added to the project.
//! - This item sent a create before, and the look-up fails or finds
//!   nobody: that create was most likely applied, but nothing confirms it.
//!   The item fails, retryable; the next run reads Procore and finds out.
//! - Found, in any other case: a real conflict. Reported `conflict` with the
//!   existing `procore_id`; the project is left alone, because the flow only
//!   changes users it creates. A user created during the run by someone
//!   else is such a conflict, and the reason says so.
//! - Not found in this company (Procore logins are global, so another
//!   company's user can hold it): `conflict` without an id.
//!
//! A conflict drops the `creating/<key>` mark `compare` left for the
//! person: it would make the next run take the user Procore has for one
//! this flow created (owed the project add). The next run matches and
//! adopts them instead, as it does anyone already in Procore.
//!
//! A person created (or confirmed created) is recorded in the flow's state
//! as managed (`managed/<key>`, origin `created`): the flow may deactivate
//! them when they leave. With a project, the record says the flow owes the
//! project add (`owed_project`) until Procore took it: an add refused or
//! never answered (even after the host's retries) is made by a later run
//! (`compare` lists it in `project_owed`, and `procore-project-owed` makes
//! it). The record is committed with the item: a host that dies before
//! the item ends loses it, and the next run's `compare` finds the user
//! created since a run found them missing, so takes them as the flow's
//! (origin `created`, owed the add).
//!
//! Output `{"key", "display_name", "status": "created" | "conflict" |
//! "would_create", "procore_id"?, "reason"?, "project"?, "would_send"?}`.
//! A create Procore refused for any other reason creates nobody, so it is
//! returned as a step error and the host records the item as failed: one a
//! later run could fix (5xx, throttled, unreachable) retryable, a refusal
//! (400/422 invalid data, 401/403 forbidden) not. The error carries
//! Procore's own words.

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_guest::http::segment;
use sluice_guest::{Call, Context, ErrorKind, JsonSchema, Response, Sent, StepError};
use sluice_guest_services::procore::{self, Id};
use sluice_guest_services::sync::{
    CreateStatus, Created, Managed, Origin, OwedProject, Person, ProjectAction, creating_key,
    managed_key,
};
use sluice_guest_services::{service_message, status_error};
use sluice_identity::Key;

/// The connection role this component writes through.
const PROCORE: &str = "procore";

/// Who to create, and where.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The person (as `compare` lists the missing ones).
    user: Person,
    /// The Procore company id (a whole number).
    #[schemars(schema_with = "sluice_guest_services::procore::company_id_schema")]
    company_id: Id,
    /// Also add the new user to this project (its id, a whole number);
    /// empty or absent: no project.
    #[serde(default)]
    #[schemars(schema_with = "sluice_guest_services::procore::project_id_schema")]
    project_id: Option<Id>,
    /// The project permission template (its id, a whole number); empty
    /// or absent: none.
    #[serde(default)]
    #[schemars(schema_with = "sluice_guest_services::procore::template_id_schema")]
    permission_template_id: Option<Id>,
}

pub use sluice_guest_services::procore::CLOCK_SKEW_SECS;

/// Page size of the look-up after a "taken"; a search finds a handful.
const LOOKUP_PER_PAGE: usize = 100;

/// `first_name` and `last_name` for Procore, which requires a last name.
pub fn names(person: &Person) -> (String, String) {
    let text = |value: &Option<String>| value.as_deref().map(str::trim).unwrap_or("").to_string();
    let (given, surname, display) = (
        text(&person.given_name),
        text(&person.surname),
        text(&person.display_name),
    );
    let key = person.key.trim().to_string();
    let words: Vec<&str> = display.split_whitespace().collect();
    let last = if !surname.is_empty() {
        surname
    } else if let Some(last) = words.last().filter(|_| words.len() > 1) {
        last.to_string()
    } else if !display.is_empty() {
        display.clone()
    } else {
        key.split('@').next().unwrap_or(&key).to_string()
    };
    let first = if !given.is_empty() {
        given
    } else if words.len() > 1 {
        words[..words.len() - 1].join(" ")
    } else {
        String::new()
    };
    (first, last)
}

/// The create body: only fields Procore documents for "Create company
/// user", at their documented types (its table has no `login`, so none is
/// sent; `tests/license_sync.rs` checks every body sent against the table).
pub fn body(person: &Person, key: &str) -> Value {
    let (first, last) = names(person);
    let email = email_address(person, key);
    json!({ "user": { "first_name": first, "last_name": last, "email_address": email, "is_employee": true } })
}

/// The address the key came from (the mail, else the UPN), trimmed, with
/// only its ASCII letters lower-cased: the key itself for an ASCII
/// address, and the person's own mailbox for one whose letters Unicode
/// lower-casing changes into others (`İ` becomes `i` and a dot above).
fn email_address<'a>(person: &'a Person, key: &'a str) -> std::borrow::Cow<'a, str> {
    let source = [&person.mail, &person.user_principal_name]
        .into_iter()
        .flatten()
        .map(|a| a.trim())
        .find(|a| !a.is_empty());
    match source {
        Some(address) if !address.is_ascii() => {
            let address = address.to_ascii_lowercase();
            if Key::of(&address).is_some_and(|k| k.as_str() == key) {
                return address.into();
            }
            key.into()
        }
        _ => key.into(),
    }
}

/// Words services use to say a value must be unique and already is in use.
const UNIQUENESS_WORDS: &[&str] = &[
    "taken",
    "already",
    "exist",
    "duplicate",
    "in use",
    "unique",
    "registered",
];

/// Whether a 409/422 (or a 400) says the login or email is already in
/// use. A 409 is a conflict by definition. A 422 is one when its `errors`
/// name the login or the email with uniqueness wording ("has already been
/// taken", "already exists", "is not unique", …), or, when they name no
/// field (a message, a list, or a body without `errors`), when that has
/// such wording ("User already exists": a duplicate the look-up then
/// confirms or not); a 422 about another field (a blank last name) is
/// not. Procore documents 409 and 422. A 400 counts only when it names
/// the login or email address too, whatever its shape: some Rails APIs
/// answer validation errors with one, but a 400 is mostly a malformed
/// request ("Vendor does not exist").
pub fn is_taken(status: u16, body: &[u8]) -> bool {
    if status == 409 {
        return true;
    }
    if !matches!(status, 400 | 422) {
        return false;
    }
    let names_identity = |t: &str| t.contains("login") || t.contains("email");
    let unique = |text: &str| {
        let t = text.to_lowercase();
        UNIQUENESS_WORDS.iter().any(|w| t.contains(w)) && (status == 422 || names_identity(&t))
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let errors = parsed.as_ref().and_then(|b| b.get("errors"));
    match errors {
        Some(Value::Object(fields)) => fields.iter().any(|(field, problems)| {
            // The field, or a general (`base`) message, names the login or email.
            let text = format!("{field} {problems}").to_lowercase();
            names_identity(&text) && unique(&text)
        }),
        Some(Value::Array(list)) => list.iter().any(|p| unique(&p.to_string())),
        Some(other) => unique(&other.to_string()),
        None => unique(&String::from_utf8_lossy(body)),
    }
}

/// Whether a user Procore created at `created_at` was made by this run,
/// which started at `run_started_at` (see the module's rule).
pub fn created_by_this_run(created_at: Option<&str>, run_started_at: Option<&str>) -> bool {
    run_started_at
        .and_then(procore::epoch)
        .is_some_and(|started| procore::created_since(created_at, started))
}

/// Finds the company user whose login or email is `key`, active or not,
/// searching for the address this run sent (`sent`).
fn look_up(company: &str, key: &Key, sent: &str) -> Result<Option<Value>, StepError> {
    procore::find_user(PROCORE, company, (key, sent), LOOKUP_PER_PAGE)
}

/// Where the user goes.
struct Target {
    company: String,
    project: Option<String>,
    template: Option<u64>,
}

impl Target {
    fn of(input: &Input) -> Result<Target, StepError> {
        let id = |id: &Option<Id>| id.as_ref().and_then(Id::text);
        Ok(Target {
            company: input
                .company_id
                .text()
                .ok_or_else(|| StepError::bad_input("`company_id` is empty"))?,
            project: id(&input.project_id),
            template: procore::permission_template(input.permission_template_id.as_ref())?,
        })
    }
}

/// The output for `person`, with nothing decided yet.
fn created(person: &Person, key: &Key, status: CreateStatus) -> Created {
    Created {
        key: key.to_string(),
        display_name: person.name().to_string(),
        status,
        procore_id: None,
        reason: None,
        project: None,
        would_send: None,
    }
}

fn run(input: Input, context: &Context) -> Result<Created, StepError> {
    let target = Target::of(&input)?;
    let person = &input.user;
    let key = Key::of(&person.key)
        .ok_or_else(|| StepError::bad_input("the user has no `key` (mail or userPrincipalName)"))?;
    // An earlier call of this item (the step's `retry` policy) may have
    // created the user.
    let mut sent_before = context.attempt() > 1;
    let first = create_call(&target, person, &key)?.retry_when_not_acted();
    let (call, response) = match first.send() {
        Ok(Sent::WouldSend(w)) => {
            let mut out = created(person, &key, CreateStatus::WouldCreate);
            out.project = target.project.as_ref().map(|_| "would_add".to_string());
            out.would_send = Some(w);
            return Ok(out);
        }
        Ok(Sent::Response(r)) if !may_have_acted(r.status) => (first, r),
        outcome => {
            let lost = match outcome {
                Ok(Sent::Response(r)) => format!("answered {}: {}", r.status, detail(&r)),
                Err(e) if e.kind == ErrorKind::Unavailable => e.message,
                Err(e) => return Err(e),
                Ok(Sent::WouldSend(_)) => unreachable!("matched above"),
            };
            if let Some(out) = confirm_lost_answer(&target, person, &key, &lost, context)? {
                return Ok(out);
            }
            sent_before = true;
            let again = create_call(&target, person, &key)?.idempotent();
            match again.send()? {
                Sent::Response(r) => (again, r),
                Sent::WouldSend(_) => {
                    return Err(StepError::internal(
                        "a resent create was taken for a dry run",
                    ));
                }
            }
        }
    };
    match response.status {
        200 | 201 => {}
        s if is_taken(s, &response.body) => {
            let detail = detail(&response);
            return taken(&target, person, &key, &detail, sent_before, context);
        }
        // Anything else created nobody: the item fails, retryable or not as
        // the status says, so the run's counts, `runs show` and the ledger
        // say so, not only the report.
        _ => return Err(status_error(&call, &response)),
    }
    let new: Value = response.json()?;
    let mut out = created(person, &key, CreateStatus::Created);
    out.procore_id = new
        .get("id")
        .cloned()
        .and_then(|id| serde_json::from_value(id).ok());
    remember_and_add(&mut out, &target, person, context)?;
    Ok(out)
}

/// The create request for `person`.
fn create_call(target: &Target, person: &Person, key: &Key) -> Result<Call, StepError> {
    let url = format!("companies/{}/users", segment(&target.company));
    Call::post(PROCORE, &url).json(&body(person, key.as_str()))
}

/// Whether a create answered `status` may have been applied all the same:
/// a 500, 502 or 504 (the server may have failed after acting). A 503 and
/// a 501 say it did not act; any other status is a clear answer.
pub fn may_have_acted(status: u16) -> bool {
    (500..=599).contains(&status) && status != 501 && status != 503
}

/// A create whose answer was lost (`lost` says how): looks the user up.
/// `Some` when Procore has them, created since this run started (that
/// create made them) or before (a conflict); `None` when it does not, so
/// the create is sent again.
fn confirm_lost_answer(
    target: &Target,
    person: &Person,
    key: &Key,
    lost: &str,
    context: &Context,
) -> Result<Option<Created>, StepError> {
    let sent = email_address(person, key.as_str());
    let existing = look_up(&target.company, key, &sent).map_err(|e| {
        StepError::new(
            e.kind,
            format!(
                "the create's answer was lost ({lost}), and looking the user up failed too ({}); the next run reads Procore and finds out whether the user was created",
                e.message
            ),
        )
        .with_code(e.code)
    })?;
    let Some(existing) = existing else {
        return Ok(None);
    };
    let found = Found::of(&existing, person, context);
    if found.since_start && found.as_sent {
        let reason = format!(
            "confirmed by a look-up: the create's answer was lost ({lost}), and Procore created the user at {}",
            found.created_at.unwrap_or("?")
        );
        return found
            .confirmed(target, person, key, reason, context)
            .map(Some);
    }
    let detail = if found.since_start {
        format!("{lost}; the user was created during this run under other names, by someone else")
    } else {
        lost.to_string()
    };
    found.conflict(person, key, &detail).map(Some)
}

/// The user a look-up found, and what it says of whose create made them.
struct Found<'a> {
    existing: &'a Value,
    id: Option<Id>,
    created_at: Option<&'a str>,
    /// Procore created them at or after this run started.
    since_start: bool,
    /// They carry the names this item sent ([`made_as_sent`]).
    as_sent: bool,
}

impl<'a> Found<'a> {
    fn of(existing: &'a Value, person: &Person, context: &Context) -> Found<'a> {
        let created_at = existing.get("created_at").and_then(Value::as_str);
        Found {
            existing,
            id: existing
                .get("id")
                .cloned()
                .and_then(|id| serde_json::from_value(id).ok()),
            created_at,
            since_start: created_by_this_run(created_at, Some(context.started_at())),
            as_sent: made_as_sent(existing, person),
        }
    }

    /// This item's own create, confirmed (`reason` says how): reported
    /// `created`, recorded as the flow's and added to the project.
    fn confirmed(
        self,
        target: &Target,
        person: &Person,
        key: &Key,
        reason: String,
        context: &Context,
    ) -> Result<Created, StepError> {
        let mut out = created(person, key, CreateStatus::Created);
        out.reason = Some(reason);
        out.procore_id = self.id;
        remember_and_add(&mut out, target, person, context)?;
        Ok(out)
    }

    /// Someone else's user: see [`conflict`].
    fn conflict(self, person: &Person, key: &Key, detail: &str) -> Result<Created, StepError> {
        conflict(person, key, self.existing, self.id, self.created_at, detail)
    }
}

/// Whether the user Procore has carries the names this item sent: a user
/// someone else made in the same seconds usually does not (their own
/// spelling, a suffix). Compared trimmed and without case; a name Procore
/// does not give is no evidence either way.
pub fn made_as_sent(existing: &Value, person: &Person) -> bool {
    let (first, last) = names(person);
    let same = |field: &str, sent: &str| {
        existing
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(|had| had.trim().to_lowercase() == sent.trim().to_lowercase())
    };
    same("first_name", &first) && same("last_name", &last)
}

/// With a project, adds the person this run created to it; then records
/// them as managed (origin `created`), with their Entra object id, so a
/// later run deactivates them when they leave and says "user gone" when
/// Graph no longer has them, and, when Procore did not take the add, that
/// the flow owes it, so a later run makes it. The record is written once,
/// with the item's other writes (a commit of its own before the add would
/// cost the create step a third of its time at 100k members, and would
/// save only an add whose host died while it waited).
fn remember_and_add(
    out: &mut Created,
    target: &Target,
    person: &Person,
    context: &Context,
) -> Result<(), StepError> {
    let mut owed = None;
    if let Some(project) = &target.project {
        let added = add_to_project(target, project, out.procore_id.as_ref());
        if added != "added" {
            owed = Some(OwedProject {
                project_id: project.clone(),
                action: ProjectAction::Add,
            });
        }
        out.project = Some(added);
    }
    let Some(id) = out.procore_id.clone() else {
        return Ok(());
    };
    let mut record = Managed::new(
        id,
        Origin::Created,
        context.started_at(),
        person.id.as_deref(),
    );
    record.owed_project = owed;
    sluice_guest::state::set(&managed_key(&out.key), &record)
}

/// What the service said about a refusal, in its own words if it has them.
fn detail(response: &Response) -> String {
    service_message(response).unwrap_or_else(|| response.text_preview())
}

/// A create refused as a duplicate: find out whose login it is (see the
/// module's rule). `sent_before`: this item sent a create earlier, which
/// may have been applied.
fn taken(
    target: &Target,
    person: &Person,
    key: &Key,
    detail: &str,
    sent_before: bool,
    context: &Context,
) -> Result<Created, StepError> {
    let sent = email_address(person, key.as_str());
    // After this item's own create may have been applied, a look-up that
    // fails or finds nobody proves nothing: the item fails, and the next
    // run reads Procore and finds out (its `creating/` mark is kept).
    let unsure = |why: String| {
        StepError::unavailable(format!(
            "Procore refused the resent create as taken ({detail}), so this item's earlier create was most likely applied, but {why}; the next run reads Procore and finds out"
        ))
        .with_code("created-unconfirmed")
    };
    let found = match look_up(&target.company, key, &sent) {
        Ok(found) => found,
        Err(e) if sent_before => {
            return Err(unsure(format!(
                "looking the user up failed ({})",
                e.message
            )));
        }
        Err(e) => return Err(e),
    };
    let Some(existing) = found else {
        if sent_before {
            return Err(unsure("looking the user up found nobody yet".to_string()));
        }
        let mut out = created(person, key, CreateStatus::Conflict);
        out.reason = Some(format!(
            "Procore refused the login as taken ({detail}), and no user of this company has it: it may belong to another Procore company"
        ));
        forget_missing(key)?;
        return Ok(out);
    };
    let found = Found::of(&existing, person, context);
    if found.since_start && sent_before && found.as_sent {
        let reason = format!(
            "confirmed after a retry: an earlier attempt was applied (Procore created the user at {})",
            found.created_at.unwrap_or("?")
        );
        return found.confirmed(target, person, key, reason, context);
    }
    let detail = match (found.since_start, sent_before) {
        (true, false) => format!(
            "{detail}; it was created during this run, by someone else: this run's first create was refused"
        ),
        (true, true) => {
            format!("{detail}; it was created during this run under other names, by someone else")
        }
        _ => detail.to_string(),
    };
    found.conflict(person, key, &detail)
}

/// Drops the mark `compare` left for a person it found missing
/// (`creating/<key>`): it tells a later run that a user Procore created
/// since is the flow's own, which a conflict's user is not. That user is
/// then matched and adopted like any other, never taken as created (owed
/// the project add) by the flow.
fn forget_missing(key: &Key) -> Result<(), StepError> {
    sluice_guest::state::delete(&creating_key(key.as_str()))
}

/// A user Procore already has, reported and left as it is.
fn conflict(
    person: &Person,
    key: &Key,
    existing: &Value,
    id: Option<Id>,
    created_at: Option<&str>,
    detail: &str,
) -> Result<Created, StepError> {
    let inactive = existing.get("is_active").and_then(Value::as_bool) == Some(false);
    let mut out = created(person, key, CreateStatus::Conflict);
    out.procore_id = id;
    out.reason = Some(format!(
        "already in Procore{}, created {}: {detail}",
        if inactive { " (inactive)" } else { "" },
        created_at.unwrap_or("at an unknown time")
    ));
    forget_missing(key)?;
    Ok(out)
}

fn add_to_project(target: &Target, project: &str, user_id: Option<&Id>) -> String {
    procore::add_to_project(PROCORE, project, user_id, target.template)
}

sluice_guest::step!(run, connections: {
    "procore": "Procore: creates company users, adds them to a project, and looks a user up when a create's answer is lost or it is refused as taken",
});

#[cfg(test)]
mod tests {
    use super::*;

    fn person(value: Value) -> Person {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn names_fall_back_sensibly() {
        let p = person(
            json!({"key": "a@x.com", "givenName": "Ada", "surname": "Lovelace", "displayName": "Ada Lovelace"}),
        );
        assert_eq!(names(&p), ("Ada".into(), "Lovelace".into()));
        let p = person(
            json!({"key": "a@x.com", "givenName": null, "surname": "", "displayName": "Grace Brewster Hopper"}),
        );
        assert_eq!(names(&p), ("Grace Brewster".into(), "Hopper".into()));
        let p = person(json!({"key": "a@x.com", "displayName": "Cher"}));
        assert_eq!(names(&p), ("".into(), "Cher".into()));
        let p = person(json!({"key": "zoe.smith@x.com", "displayName": ""}));
        assert_eq!(names(&p), ("".into(), "zoe.smith".into()));
    }

    #[test]
    fn the_body_is_nested_and_keyed() {
        let p = person(json!({"key": "a@x.com", "givenName": "Ada", "surname": "L"}));
        assert_eq!(
            body(&p, "a@x.com"),
            json!({"user": {"first_name": "Ada", "last_name": "L", "email_address": "a@x.com", "is_employee": true}})
        );
    }

    /// An ASCII address is sent as the key; one whose letters Unicode
    /// lower-casing would change into others keeps them (only its ASCII
    /// letters are lower-cased), so Procore gets the person's mailbox.
    #[test]
    fn the_email_address_is_the_persons_own() {
        let sent = |p: Value, key: &str| {
            body(&person(p), key)["user"]["email_address"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let key = |text: &str| Key::of(text).unwrap().as_str().to_string();
        assert_eq!(
            sent(
                json!({"key": "ann@x.com", "mail": " Ann@X.com "}),
                "ann@x.com"
            ),
            "ann@x.com"
        );
        let ipek = key("İPEK@Contoso.com");
        assert_eq!(
            sent(json!({"key": ipek, "mail": "İPEK@Contoso.com"}), &ipek),
            "İpek@contoso.com"
        );
        assert_eq!(key("İpek@contoso.com"), ipek, "the next run matches it");
        let upn = key("Zoë@x.onmicrosoft.com");
        assert_eq!(
            sent(
                json!({"key": upn, "mail": "", "userPrincipalName": "Zoë@x.onmicrosoft.com"}),
                &upn
            ),
            "zoë@x.onmicrosoft.com"
        );
    }

    /// A user found after a lost answer is this item's only when Procore
    /// has the names it sent (trimmed, any case); a name Procore leaves
    /// out is no evidence.
    #[test]
    fn the_users_names_tell_whose_create_it_was() {
        let p = person(json!({"key": "e@x.com", "givenName": "Emma", "surname": "Silva"}));
        assert!(made_as_sent(
            &json!({"first_name": "emma ", "last_name": "SILVA"}),
            &p
        ));
        assert!(made_as_sent(&json!({"id": 3}), &p));
        assert!(!made_as_sent(
            &json!({"first_name": "Emma", "last_name": "Silva (HR)"}),
            &p
        ));
        assert!(!made_as_sent(
            &json!({"first_name": "E.", "last_name": "Silva"}),
            &p
        ));
    }

    /// Which answers to a create may hide a user made: the server errors
    /// that can come after the work (500, 502, 504), not those that say
    /// nothing was done (501, 503) nor any other status.
    #[test]
    fn only_server_errors_after_the_work_may_hide_a_user() {
        for status in [500, 502, 504, 505, 599] {
            assert!(may_have_acted(status), "{status}");
        }
        for status in [200, 201, 400, 404, 409, 422, 429, 501, 503] {
            assert!(!may_have_acted(status), "{status}");
        }
    }

    #[test]
    fn taken_in_every_wording() {
        let taken = |status: u16, body: &str| is_taken(status, body.as_bytes());
        assert!(taken(409, ""));
        assert!(taken(409, "Conflict"));
        for body in [
            r#"{"errors":{"login":["has already been taken"]}}"#,
            r#"{"errors":{"email_address":["is already in use"]}}"#,
            r#"{"errors":{"email_address":["already exists"]}}"#,
            r#"{"errors":{"login":["is not unique"]}}"#,
            r#"{"errors":{"login":["must be unique"]}}"#,
            r#"{"errors":{"email_address":["An existing user has this email"]}}"#,
            r#"{"errors":{"Login":["Duplicate value"]}}"#,
            r#"{"errors":{"email_address":["is already registered"]}}"#,
            r#"{"errors":{"user.login":["has already been taken"],"last_name":["can't be blank"]}}"#,
            r#"{"errors":"Login has already been taken"}"#,
            r#"{"errors":{"base":["Email address has already been taken"]}}"#,
            r#"{"errors":["Email address already exists"]}"#,
            "User with this email already exists",
        ] {
            assert!(taken(422, body), "{body}");
        }
        for body in [
            r#"{"errors":{"last_name":["can't be blank"]}}"#,
            r#"{"errors":{"email_address":["is invalid"]}}"#,
            // Uniqueness of some other field is not about this person.
            r#"{"errors":{"employee_id":["has already been taken"]}}"#,
            r#"{"errors":"param is missing or the value is empty: user"}"#,
            "",
        ] {
            assert!(!taken(422, body), "{body}");
        }
        // A 400 in the same words, as some Rails APIs answer.
        assert!(taken(
            400,
            r#"{"errors":{"login":["has already been taken"]}}"#
        ));
        assert!(!taken(
            400,
            r#"{"errors":{"last_name":["can't be blank"]}}"#
        ));
        assert!(taken(400, r#"{"errors":"Login has already been taken"}"#));
        for body in [
            r#"{"errors":"Vendor does not exist"}"#,
            r#"{"errors":["Project already archived"]}"#,
            "Company already exists",
        ] {
            assert!(!taken(400, body), "{body}");
            // A 422 message naming no field: taken, as before (the
            // look-up that follows tells).
            assert!(taken(422, body), "{body}");
        }
        for body in [r#"{"errors":["User already exists"]}"#, "Duplicate user"] {
            assert!(taken(422, body), "{body}");
            assert!(!taken(400, body), "{body}: a 400 names the login or email");
        }
        assert!(!taken(500, "already"));
    }

    #[test]
    fn a_user_created_since_the_run_started_is_this_runs_own() {
        let start = Some("2025-06-02T09:00:00.123456+00:00");
        assert!(created_by_this_run(Some("2025-06-02T09:00:07Z"), start));
        // Procore's clock a minute behind ours.
        assert!(created_by_this_run(Some("2025-06-02T08:59:00Z"), start));
        // Other offsets are the same instant.
        assert!(created_by_this_run(
            Some("2025-06-02T02:00:05-07:00"),
            start
        ));
        assert!(!created_by_this_run(Some("2025-06-01T12:00:00Z"), start));
        assert!(!created_by_this_run(Some("2025-06-02T08:50:00Z"), start));
        // Unknown either way: never claimed as ours.
        assert!(!created_by_this_run(None, start));
        assert!(!created_by_this_run(Some("yesterday"), start));
        assert!(!created_by_this_run(Some("2025-06-02T09:00:07Z"), None));
    }

    #[test]
    fn the_look_up_matches_login_or_email_exactly() {
        let found = vec![
            json!({"id": 1, "login": "ann.lee@x.com.au", "email_address": "ann.lee@x.com.au"}),
            json!({"id": 2, "login": "other", "email_address": " Ann.Lee@X.com "}),
        ];
        let key = |k: &str| Key::of(k).unwrap();
        assert_eq!(
            procore::exact_match(&found, &key("ann.lee@x.com")).unwrap()["id"],
            json!(2)
        );
        assert!(
            procore::exact_match(&found, &key("lee@x.com")).is_none(),
            "a partial match is not the person"
        );
    }
}
