//! The Microsoft identity platform token endpoint and Graph v1.0: groups
//! with `$filter=startswith(…)` (case-insensitive, as the directory
//! compares strings), members and transitiveMembers with `$select`,
//! `@odata.nextLink` paging, and `sendMail`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::api::{encode_query, error, get, query_pairs};
use crate::scenario::{GraphGroup, GraphUser, Member, Scenario};
use crate::state::{SentMail, Service, Shared};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;
const USER_DEFAULT_PROPERTIES: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace = format!("{:032x}", rand::random::<u128>());
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ")),
        "error_codes": [code],
        "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": trace,
        "correlation_id": trace,
    });
    (status, Json(body)).into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token`, client credentials, form body.
pub async fn token(State(s): State<Shared>, Path(tenant): Path<String>, body: String) -> Response {
    let form: HashMap<String, String> = query_pairs(Some(&body)).into_iter().collect();
    let scenario_tenant = s.lock().scenario.tenant_id.clone();
    if tenant != scenario_tenant && tenant != "contoso.onmicrosoft.com" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let creds = &s.config.credentials;
    if form.get("client_id") != Some(&creds.graph_client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    if form.get("client_secret") != Some(&creds.graph_client_secret) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    if form.get("scope").map(String::as_str) != Some(GRAPH_SCOPE) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        );
    }
    let (token, lifetime) = s.issue_token(Service::Graph);
    Json(json!({ "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token })).into_response()
}

/// Parses `startswith(displayName,'a') or startswith(displayName,'b')`.
pub fn parse_filter(filter: &str) -> Option<Vec<String>> {
    let mut prefixes = Vec::new();
    let mut rest = filter.trim();
    loop {
        let lower = rest.to_ascii_lowercase();
        if !lower.starts_with("startswith(displayname,") {
            return None;
        }
        rest = rest["startswith(displayName,".len()..].trim_start();
        let body = rest.strip_prefix('\'')?;
        let mut literal = String::new();
        let mut chars = body.char_indices().peekable();
        let end = loop {
            let (i, c) = chars.next()?;
            if c == '\'' {
                if chars.peek().map(|(_, c)| *c) == Some('\'') {
                    chars.next();
                    literal.push('\'');
                } else {
                    break i;
                }
            } else {
                literal.push(c);
            }
        };
        rest = body[end + 1..].trim_start().strip_prefix(')')?.trim_start();
        prefixes.push(literal);
        if rest.is_empty() {
            return Some(prefixes);
        }
        let lower = rest.to_ascii_lowercase();
        rest = if lower.starts_with("or ") {
            rest[3..].trim_start()
        } else {
            return None;
        };
    }
}

fn page_size(pairs: &[(String, String)]) -> Result<usize, Response> {
    match get(pairs, "$top") {
        None => Ok(DEFAULT_PAGE),
        Some(t) => match t.parse::<usize>() {
            Ok(n @ 1..=MAX_PAGE) => Ok(n),
            _ => Err(error(
                Service::Graph,
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                &format!(
                    "Invalid page size specified: '{t}'. Must be between 1 and {MAX_PAGE} inclusive."
                ),
            )),
        },
    }
}

fn select(pairs: &[(String, String)]) -> Option<Vec<String>> {
    get(pairs, "$select").map(|s| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

/// Skip tokens are opaque to clients: an offset, scrambled, and whether the
/// (injected) empty page has been served.
fn encode_skip(offset: usize, after_empty: bool) -> String {
    format!(
        "{}{:x}",
        if after_empty { "RFNT" } else { "X2Q" },
        (offset as u64) ^ 0x5DEE_CE66_D1CE_4E5B
    )
}

fn decode_skip(token: &str) -> Option<(usize, bool)> {
    let (rest, after_empty) = if let Some(r) = token.strip_prefix("RFNT") {
        (r, true)
    } else {
        (token.strip_prefix("X2Q")?, false)
    };
    let n = u64::from_str_radix(rest, 16).ok()? ^ 0x5DEE_CE66_D1CE_4E5B;
    Some((usize::try_from(n).ok()?, after_empty))
}

/// Where a page starts and how long it is: `$top` and the opaque `$skiptoken`.
struct Window {
    size: usize,
    offset: usize,
    after_empty: bool,
}

fn window(pairs: &[(String, String)]) -> Result<Window, Response> {
    let size = page_size(pairs)?;
    let (offset, after_empty) = match get(pairs, "$skiptoken") {
        None => (0, false),
        Some(t) => decode_skip(t).ok_or_else(|| {
            error(
                Service::Graph,
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                "Invalid skip token.",
            )
        })?,
    };
    Ok(Window {
        size,
        offset,
        after_empty,
    })
}

impl Window {
    /// The part of a collection of `total` items this page serves.
    fn range(&self, total: usize) -> std::ops::Range<usize> {
        self.offset.min(total)..(self.offset.saturating_add(self.size)).min(total)
    }
}

/// One page of a collection of `total` items, whose items in
/// `window.range(total)` are `value` (only the page is rendered: a 100k
/// member group is served a page at a time without projecting it all), with
/// an absolute nextLink that keeps the query.
fn page(
    s: &Shared,
    path: &str,
    pairs: &[(String, String)],
    window: &Window,
    total: usize,
    value: Vec<Value>,
    context: &str,
) -> Response {
    let empty_pages = s.lock().faults.empty_graph_pages;
    let keep: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "$skiptoken")
        .cloned()
        .collect();
    let link = |offset: usize, after_empty: bool| {
        let mut q = keep.clone();
        q.push(("$skiptoken".into(), encode_skip(offset, after_empty)));
        format!("{}{path}?{}", s.base_url, encode_query(&q))
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "https://graph.microsoft.com/v1.0/$metadata#{context}"
        )),
    );
    if empty_pages && window.offset == 0 && !window.after_empty {
        body.insert("value".into(), json!([]));
        body.insert("@odata.nextLink".into(), json!(link(0, true)));
        return Json(Value::Object(body)).into_response();
    }
    let end = window.range(total).end;
    body.insert("value".into(), Value::Array(value));
    if end < total {
        body.insert("@odata.nextLink".into(), json!(link(end, true)));
    }
    Json(Value::Object(body)).into_response()
}

fn project(
    full: Map<String, Value>,
    kind: &str,
    selected: Option<&[String]>,
    defaults: Option<&[&str]>,
) -> Value {
    let mut out = Map::new();
    out.insert("@odata.type".into(), json!(kind));
    for (k, v) in full {
        let keep = match (selected, defaults) {
            (Some(sel), _) => sel.iter().any(|s| s.eq_ignore_ascii_case(&k)),
            (None, Some(d)) => d.contains(&k.as_str()),
            (None, None) => true,
        };
        if keep {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

fn user_json(u: &GraphUser) -> Map<String, Value> {
    let v = json!({
        "id": u.id,
        "businessPhones": [],
        "displayName": u.display_name,
        "givenName": u.given_name,
        "jobTitle": u.job_title,
        "mail": u.mail,
        "mobilePhone": null,
        "officeLocation": null,
        "preferredLanguage": null,
        "surname": u.surname,
        "userPrincipalName": u.user_principal_name,
        "accountEnabled": u.account_enabled,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// `GET /v1.0/groups`
pub async fn groups(State(s): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let pairs = query_pairs(query.as_deref());
    let prefixes = match get(&pairs, "$filter") {
        None => None,
        Some(f) => match parse_filter(f) {
            Some(p) => Some(p),
            None => {
                return error(
                    Service::Graph,
                    StatusCode::BAD_REQUEST,
                    "Request_UnsupportedQuery",
                    &format!("Unsupported or invalid query filter clause specified: '{f}'."),
                );
            }
        },
    };
    let selected = select(&pairs);
    let window = match window(&pairs) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (total, items): (usize, Vec<Value>) = {
        let d = s.lock();
        let matching: Vec<&GraphGroup> = d
            .scenario
            .groups
            .iter()
            // Like the directory, startswith compares without case.
            .filter(|g| {
                prefixes.as_ref().is_none_or(|p| {
                    let name = g.display_name.to_lowercase();
                    p.iter().any(|p| name.starts_with(&p.to_lowercase()))
                })
            })
            .collect();
        let shown = matching[window.range(matching.len())]
            .iter()
            .map(|g| {
                let full = json!({ "id": g.id, "displayName": g.display_name, "description": null, "mailEnabled": false, "securityEnabled": true, "groupTypes": [] });
                let Value::Object(m) = full else { return Value::Null };
                project(m, "#microsoft.graph.group", selected.as_deref(), None)
            })
            .map(|mut v| {
                // Collections of one type carry no per-item @odata.type.
                if let Value::Object(m) = &mut v {
                    m.remove("@odata.type");
                }
                v
            })
            .collect();
        (matching.len(), shown)
    };
    page(&s, "/v1.0/groups", &pairs, &window, total, items, "groups")
}

pub async fn members(
    State(s): State<Shared>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    list_members(s, id, query, false)
}

pub async fn transitive_members(
    State(s): State<Shared>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    list_members(s, id, query, true)
}

fn list_members(s: Shared, id: String, query: Option<String>, transitive: bool) -> Response {
    let pairs = query_pairs(query.as_deref());
    let selected = select(&pairs);
    let window = match window(&pairs) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (total, items) = {
        let d = s.lock();
        let scenario = &d.scenario;
        let Some(group) = scenario.group(&id) else {
            return error(
                Service::Graph,
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &format!(
                    "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
                ),
            );
        };
        let members = scenario.members(group, transitive);
        let shown = members[window.range(members.len())]
            .iter()
            .filter_map(|m| member_json(scenario, m, selected.as_deref()))
            .collect::<Vec<_>>();
        (members.len(), shown)
    };
    let relation = if transitive {
        "transitiveMembers"
    } else {
        "members"
    };
    page(
        &s,
        &format!("/v1.0/groups/{id}/{relation}"),
        &pairs,
        &window,
        total,
        items,
        "directoryObjects",
    )
}

/// One member as Graph shows it, with its `@odata.type` and `$select` applied.
fn member_json(scenario: &Scenario, member: &Member, selected: Option<&[String]>) -> Option<Value> {
    let object = |full: Value, kind: &str| match full {
        Value::Object(m) => Some(project(m, kind, selected, None)),
        _ => None,
    };
    match member {
        Member::User { id } => {
            let user = scenario.user(id)?;
            Some(project(
                user_json(user),
                "#microsoft.graph.user",
                selected,
                Some(USER_DEFAULT_PROPERTIES),
            ))
        }
        Member::Group { id } => {
            let inner = scenario.group(id)?;
            object(
                json!({ "id": inner.id, "displayName": inner.display_name }),
                "#microsoft.graph.group",
            )
        }
        Member::Device { id, display_name } => object(
            json!({ "id": id, "displayName": display_name, "accountEnabled": true }),
            "#microsoft.graph.device",
        ),
        Member::ServicePrincipal { id, display_name } => object(
            json!({ "id": id, "displayName": display_name, "accountEnabled": true }),
            "#microsoft.graph.servicePrincipal",
        ),
    }
}

pub async fn send_mail(
    State(s): State<Shared>,
    Path(user): Path<String>,
    body: String,
) -> Response {
    let sender = {
        let d = s.lock();
        d.scenario
            .graph_users
            .iter()
            .find(|u| {
                u.id == user
                    || u.user_principal_name.eq_ignore_ascii_case(&user)
                    || u.mail
                        .as_deref()
                        .is_some_and(|m| m.trim().eq_ignore_ascii_case(&user))
            })
            .map(|u| u.user_principal_name.clone())
    };
    let Some(sender) = sender else {
        return error(
            Service::Graph,
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{user}' is invalid."),
        );
    };
    let bad = |why: &str| {
        error(
            Service::Graph,
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            why,
        )
    };
    let Ok(parsed) = serde_json::from_str::<Value>(&body) else {
        return bad("Cannot read the request body: it is not JSON.");
    };
    let Some(message) = parsed.get("message") else {
        return bad("Required property 'message' is missing.");
    };
    let to: Vec<String> = message
        .get("toRecipients")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|r| {
                    r.pointer("/emailAddress/address")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    if to.is_empty() {
        return bad("At least one recipient is required, but none were found.");
    }
    let mail = SentMail {
        from: sender,
        to,
        subject: message
            .get("subject")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        content_type: message
            .pointer("/body/contentType")
            .and_then(Value::as_str)
            .unwrap_or("Text")
            .to_string(),
        html: message
            .pointer("/body/content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    };
    s.lock().mails.push(mail);
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_with_doubled_quotes_and_dashes() {
        assert_eq!(
            parse_filter(
                "startswith(displayName,'License – Microsoft') or startswith(displayName,'O''Brien')"
            ),
            Some(vec![
                "License – Microsoft".to_string(),
                "O'Brien".to_string()
            ])
        );
        assert_eq!(parse_filter("displayName eq 'x'"), None);
        assert_eq!(
            parse_filter("startswith(displayName,'x') and startswith(displayName,'y')"),
            None
        );
    }

    #[test]
    fn skip_tokens_round_trip() {
        assert_eq!(decode_skip(&encode_skip(1998, true)), Some((1998, true)));
        assert_eq!(decode_skip("garbage"), None);
    }
}
