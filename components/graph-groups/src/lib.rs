//! The `graph-groups` step: Graph groups whose `displayName` starts with one
//! of the given prefixes.
//!
//! Input `{"prefixes": ["License – Microsoft", …]}`. Asks Graph with
//! `$filter=startswith(displayName,'…') or …` (quotes doubled; the host
//! percent-encodes, so the EN DASH survives), follows every nextLink, and
//! checks the prefix again on what comes back: the filter is a hint, the
//! exact, case-sensitive prefix is the rule (the directory compares without
//! case, so `license – microsoft old` comes back too). Output `{"groups":
//! [{id, displayName}], "count", "warnings"}` sorted by name.
//!
//! No matching group at all is almost always a mistyped prefix (a hyphen
//! typed for the EN DASH): the step still succeeds, since an empty list is a
//! valid answer, but logs a warning naming the prefixes and returns it in
//! `warnings` for the report to show.

use sluice_guest::http::Call;
use sluice_guest::paging::graph_all;
use sluice_guest::{StepError, Value, bad_input, json, parse_input};

#[derive(serde::Deserialize)]
struct Input {
    prefixes: Vec<String>,
    #[serde(default = "default_connection")]
    connection: String,
}

fn default_connection() -> String {
    "graph".into()
}

/// The OData filter for the prefixes.
pub fn filter(prefixes: &[String]) -> String {
    prefixes
        .iter()
        .map(|p| format!("startswith(displayName,'{}')", p.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Keeps groups whose name starts with a prefix exactly, sorted by name.
pub fn select(groups: Vec<Value>, prefixes: &[String]) -> Vec<Value> {
    let mut kept: Vec<Value> = groups
        .into_iter()
        .filter_map(|g| {
            let name = g.get("displayName")?.as_str()?;
            let id = g.get("id")?.as_str()?;
            prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
                .then(|| json!({ "id": id, "displayName": name }))
        })
        .collect();
    kept.sort_by(|a, b| a["displayName"].as_str().cmp(&b["displayName"].as_str()));
    kept.dedup_by(|a, b| a["id"] == b["id"]);
    kept
}

fn run(input: Value) -> Result<Value, StepError> {
    let input: Input = parse_input(input)?;
    let prefixes: Vec<String> = input
        .prefixes
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if prefixes.is_empty() {
        return Err(bad_input(
            "`prefixes` is empty: name at least one group name prefix",
        ));
    }
    let first = Call::get(&input.connection, "groups")
        .query("$filter", filter(&prefixes))
        .query("$select", "id,displayName")
        .query("$top", "999");
    let groups = select(graph_all(&input.connection, first)?, &prefixes);
    let warnings = warnings(&groups, &prefixes);
    for w in &warnings {
        sluice_guest::log::warn(w);
    }
    sluice_guest::log::info(&format!(
        "{} groups match {} prefixes",
        groups.len(),
        prefixes.len()
    ));
    Ok(json!({ "count": groups.len(), "groups": groups, "warnings": warnings }))
}

/// A warning when no group matched, naming the prefixes exactly as given
/// (quoted, with any dash that is not a plain hyphen pointed out).
pub fn warnings(groups: &[Value], prefixes: &[String]) -> Vec<String> {
    if !groups.is_empty() {
        return Vec::new();
    }
    let quoted: Vec<String> = prefixes.iter().map(|p| format!("\"{p}\"")).collect();
    let hyphen = prefixes.iter().any(|p| p.contains(" - "));
    let hint = if hyphen {
        " A prefix has a hyphen (-) where license group names usually have an EN DASH (–)."
    } else {
        " Check the spelling, including dashes (– is not -)."
    };
    vec![format!(
        "no Graph group's name starts with {}: nobody is synced.{hint}",
        quoted.join(" or ")
    )]
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_doubles_quotes_and_keeps_the_dash() {
        let f = filter(&["License – Microsoft".into(), "O'Brien".into()]);
        assert_eq!(
            f,
            "startswith(displayName,'License – Microsoft') or startswith(displayName,'O''Brien')"
        );
    }

    #[test]
    fn no_matching_group_is_a_warning_naming_the_prefixes() {
        let prefixes = vec![
            "License - Microsoft".to_string(),
            "License – Office".to_string(),
        ];
        let w = warnings(&[], &prefixes);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("\"License - Microsoft\" or \"License – Office\""),
            "{}",
            w[0]
        );
        assert!(w[0].contains("EN DASH"), "{}", w[0]);
        let some = vec![json!({"id": "1", "displayName": "License – Office E1"})];
        assert!(warnings(&some, &prefixes).is_empty());
    }

    #[test]
    fn the_prefix_is_checked_again_exactly() {
        let groups = vec![
            json!({"id": "1", "displayName": "License – Microsoft 365 E3"}),
            json!({"id": "2", "displayName": "License - Microsoft 365 E3"}),
            json!({"id": "3", "displayName": "license – microsoft"}),
            json!({"id": "4", "displayName": "License – Office E1"}),
            json!({"id": "4", "displayName": "License – Office E1"}),
        ];
        let kept = select(
            groups,
            &["License – Microsoft".into(), "License – Office".into()],
        );
        let ids: Vec<&str> = kept.iter().filter_map(|g| g["id"].as_str()).collect();
        assert_eq!(ids, vec!["1", "4"]);
    }
}
