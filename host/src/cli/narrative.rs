//! `sluice run FILE --only KEY`: each person's story through the run, told
//! from the steps' outputs once the run is over, as Entra's "provision on
//! demand" tells it: in which license group they were found and whether by
//! mail or UPN, which Procore user they are, and what was done (or waits
//! for approval, with the command that approves it).
//!
//! Nothing here knows the flow: a step's output mentions a person where an
//! object's `key` (or a Procore user's `login` or `email_address`) is the
//! person's key, in whatever list holds it; a `for_each` step's output
//! mentions them through its items and its approval gate. The facts shown
//! are the fields the built-ins use for them (`groups`, `license_group`,
//! `matched_by`, `procore_id`, `status`, `reason`, project fields).

use serde_json::Value;
use sluice_contract::{ForEachOutput, ItemResult};
use sluice_store::key_norm;

/// How deep into a step's output a person is looked for.
const MAX_DEPTH: usize = 6;

/// `run --only`: each named person's story, on stderr with the rest of
/// the run's lines, escaped for the terminal.
pub fn print_stories(flow: &crate::flow::Flow, outcome: &crate::run::RunOutcome, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    let steps: Vec<(&str, &Value)> = flow
        .steps
        .iter()
        .filter_map(|s| Some((s.id.as_str(), outcome.outputs.get(&s.id)?)))
        .collect();
    eprintln!("  what happened to each person asked about:");
    for key in keys {
        eprintln!("{}", super::terminal::lines(&story(key, &steps)));
    }
}

/// The story of `key`: one line per step that mentions them, in the order
/// the steps ran (`steps` holds each step's id and output).
pub fn story(key: &str, steps: &[(&str, &Value)]) -> String {
    let norm = key_norm(key);
    let mut lines = vec![format!("  {key}:")];
    let width = steps.iter().map(|(id, _)| id.len()).max().unwrap_or(0);
    for (step, output) in steps {
        for said in mentions(&norm, output) {
            lines.push(format!("    {step:<width$}  {said}"));
        }
    }
    if lines.len() == 1 {
        lines.push(
            "    not found in any step's output: no license holder and no Procore user the flow read has this key".into(),
        );
    }
    lines.join("\n")
}

/// What one step's output says about the person with key `norm`.
fn mentions(norm: &str, output: &Value) -> Vec<String> {
    if let Some(step) = for_each(output) {
        return item_mentions(norm, &step);
    }
    let mut found = Vec::new();
    walk(norm, output, None, 0, &mut found);
    found
        .into_iter()
        .map(|(list, object)| {
            let facts = facts(norm, object);
            match (listed_as(list), facts.is_empty()) {
                (label, true) => label,
                (label, false) => format!("{label}: {facts}"),
            }
        })
        .collect()
}

/// A `for_each` step's output, if `output` is one.
fn for_each(output: &Value) -> Option<ForEachOutput> {
    let map = output.as_object()?;
    if !(map.contains_key("items") && map.contains_key("ok") && map.contains_key("failed")) {
        return None;
    }
    serde_json::from_value(output.clone()).ok()
}

/// Whether an object is the person: its `key`, or a Procore user's `login`
/// or `email_address`, is theirs.
fn matches_key(norm: &str, v: &Value) -> bool {
    ["key", "login", "email_address"].iter().any(|f| {
        v.get(f)
            .and_then(Value::as_str)
            .is_some_and(|s| key_norm(s) == norm)
    })
}

/// A `for_each` step's items that are the person, and its gate's word on them.
fn item_mentions(norm: &str, step: &ForEachOutput) -> Vec<String> {
    let mut said = Vec::new();
    for entry in step.items.iter().filter(|e| matches_key(norm, &e.item)) {
        said.push(match &entry.result {
            ItemResult::Ok { output } => match facts(norm, output) {
                f if f.is_empty() => "done".to_string(),
                f => f,
            },
            ItemResult::Failed { error } => format!("failed: {}", error.message),
        });
    }
    let Some(gate) = &step.approval else {
        return said;
    };
    if gate.waiting.iter().any(|h| key_norm(&h.key) == norm) {
        said.push(match gate.approve_plan() {
            Some(plan) => format!(
                "waits for approval; approve with `{}`",
                crate::run::approval::approve_alone(plan, norm)
            ),
            None => "would wait for approval".into(),
        });
    }
    if gate.rejected.iter().any(|h| key_norm(&h.key) == norm) {
        said.push("rejected: left alone until someone approves it".into());
    }
    said
}

/// Every object in `value` that is the person, with the name of the field
/// holding it (or the list holding it).
fn walk<'a>(
    norm: &str,
    value: &'a Value,
    field: Option<&'a str>,
    depth: usize,
    found: &mut Vec<(Option<&'a str>, &'a Value)>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(_) if depth > 0 && matches_key(norm, value) => found.push((field, value)),
        Value::Object(map) => {
            for (name, inner) in map {
                walk(norm, inner, Some(name), depth + 1, found);
            }
        }
        Value::Array(list) => {
            for inner in list {
                walk(norm, inner, field, depth + 1, found);
            }
        }
        _ => {}
    }
}

/// What being in a list of this name means.
fn listed_as(list: Option<&str>) -> String {
    match list.unwrap_or("") {
        "people" => "holds a license".into(),
        "missing" => "missing from Procore: to be created".into(),
        "present" => "already in Procore".into(),
        "present_inactive" => "holds a license; inactive in Procore".into(),
        "leavers" => "a leaver".into(),
        "leaving" => "leaving (inside the grace period)".into(),
        "returners" => "a returner".into(),
        "inactive_unmanaged" => "inactive in Procore, not managed by this flow".into(),
        "known_as" => "holds a license; in Procore under another address (not created)".into(),
        "users" => "a Procore user".into(),
        "" => "mentioned".into(),
        other => format!("in `{other}`"),
    }
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The facts an object holds about the person, in reading order.
fn facts(norm: &str, v: &Value) -> String {
    let mut facts = Vec::new();
    let groups: Vec<&str> = match v.get("groups") {
        Some(Value::Array(g)) => g.iter().filter_map(Value::as_str).collect(),
        _ => text(v, "license_group").into_iter().collect(),
    };
    if !groups.is_empty() {
        facts.push(format!("license group {}", groups.join(", ")));
    }
    if let Some(by) = matched_by(norm, v) {
        facts.push(format!("matched by {by}"));
    }
    if let Some(id) = v
        .get("procore_id")
        .or_else(|| v.get("login").and(v.get("id")))
    {
        facts.push(format!("Procore user {}", plain(id)));
    }
    if v.get("is_active") == Some(&Value::Bool(false)) {
        facts.push("inactive".into());
    }
    if let Some(status) = text(v, "status") {
        facts.push(status.replace('_', " "));
    }
    for (field, label) in [
        ("reason", "reason"),
        ("removed_from_project", "project"),
        ("project", "project"),
        ("problem", "problem"),
    ] {
        if let Some(t) = text(v, field) {
            facts.push(format!("{label}: {}", t.replace('_', " ")));
        }
    }
    facts.join(", ")
}

/// `mail`, `UPN` or `Entra id`: said outright, or seen from which
/// Graph field the key equals.
fn matched_by(norm: &str, v: &Value) -> Option<&'static str> {
    match text(v, "matched_by") {
        Some("mail") => return Some("mail"),
        Some("entra_id") => return Some("Entra id"),
        Some(_) => return Some("UPN"),
        None => {}
    }
    if text(v, "mail").is_some_and(|m| key_norm(m) == norm) {
        return Some("mail");
    }
    text(v, "userPrincipalName")
        .filter(|u| key_norm(u) == norm)
        .map(|_| "UPN")
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run() -> Vec<(&'static str, Value)> {
        vec![
            (
                "members",
                json!({"people": [
                {"key": "ann@x.com", "mail": "Ann@x.com", "groups": ["License – Microsoft E3"]},
                {"key": "bo@x.com", "mail": null, "userPrincipalName": "bo@x.com", "groups": ["License – Office"]}
            ], "skipped_disabled": 0}),
            ),
            (
                "procore",
                json!({"users": [
                    {"id": 42, "login": "ann@x.com", "email_address": "ann@x.com", "is_active": true},
                    {"id": 7, "login": "bo@x.com", "email_address": "bo@x.com", "is_active": false}
                ]}),
            ),
            (
                "diff",
                json!({"missing": [], "present": [{"key": "ann@x.com", "procore_id": 42}],
                "leavers": [{"key": "cy@x.com", "procore_id": 43, "reason": "no license group"}],
                "returners": [{"key": "bo@x.com", "procore_id": 7, "license_group": "License – Office", "matched_by": "upn"}]}),
            ),
            (
                "deactivate",
                json!({"items": [], "ok": 0, "failed": 0, "approval": {
                "step": "deactivate", "plan": "ap-1", "reason": "always", "approve": "sluice approve ap-1",
                "approved": 0, "unapproved": 0, "closed": 0, "dry_run": false, "rejected": [],
                "waiting": [{"key": "cy@x.com", "item": {"key": "cy@x.com"}}]}}),
            ),
            (
                "reactivate",
                json!({"ok": 1, "failed": 0, "items": [
                    {"item": {"key": "bo@x.com"}, "status": "ok", "output": {"key": "bo@x.com", "procore_id": 7,
                     "status": "reactivated", "project": "added", "matched_by": "upn", "license_group": "License – Office"}}
                ]}),
            ),
        ]
    }

    fn told(key: &str) -> String {
        let steps = run();
        let refs: Vec<(&str, &Value)> = steps.iter().map(|(s, v)| (*s, v)).collect();
        story(key, &refs)
    }

    #[test]
    fn how_a_person_was_matched_is_said_in_words() {
        let said = |v: Value| matched_by("bo@x.com", &v);
        assert_eq!(said(json!({"matched_by": "entra_id"})), Some("Entra id"));
        assert_eq!(said(json!({"matched_by": "upn"})), Some("UPN"));
        assert_eq!(said(json!({"matched_by": "mail"})), Some("mail"));
        assert_eq!(said(json!({"mail": "Bo@x.com"})), Some("mail"));
        assert_eq!(said(json!({"userPrincipalName": "bo@x.com"})), Some("UPN"));
        assert_eq!(said(json!({"mail": "other@x.com"})), None);
    }

    #[test]
    fn a_returner_is_traced_from_license_group_to_reactivation() {
        let s = told("Bo@X.com");
        assert!(
            s.contains(
                "members     holds a license: license group License – Office, matched by UPN"
            ),
            "{s}"
        );
        assert!(
            s.contains("procore     a Procore user: Procore user 7, inactive"),
            "{s}"
        );
        assert!(s.contains("diff        a returner: license group License – Office, matched by UPN, Procore user 7"), "{s}");
        assert!(s.contains("reactivate  license group License – Office, matched by UPN, Procore user 7, reactivated, project: added"), "{s}");
    }

    #[test]
    fn a_leaver_waiting_is_given_the_approve_command_for_them_alone() {
        let s = told("cy@x.com");
        assert!(
            s.contains("diff        a leaver: Procore user 43, reason: no license group"),
            "{s}"
        );
        assert!(
            s.contains(
                "deactivate  waits for approval; approve with `sluice approve ap-1 --only cy@x.com`"
            ),
            "{s}"
        );
        assert!(!s.contains("members"), "{s}");
    }

    #[test]
    fn someone_nobody_mentions_is_said_to_be_unknown() {
        assert!(told("zed@x.com").contains("not found in any step's output"));
        let ann = told("ann@x.com");
        assert!(ann.contains("matched by mail"), "{ann}");
        assert!(ann.contains("already in Procore: Procore user 42"), "{ann}");
    }
}
