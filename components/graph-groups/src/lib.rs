//! The `graph-groups` step: Graph groups whose `displayName` starts with one
//! of the given prefixes.
//!
//! Input `{"prefixes": ["License – Microsoft", …]}`; reads through the
//! `graph` connection role. Asks Graph with
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

use serde::{Deserialize, Serialize};
use sluice_guest::{Call, Context, JsonSchema, StepError};
use sluice_guest_services::graph::{self, Group};

/// Which groups to read.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Group name prefixes, matched exactly from the start (mind the EN
    /// DASH in `License – Microsoft`).
    prefixes: Vec<String>,
}

/// The matching groups, sorted by name.
#[derive(Serialize, JsonSchema)]
struct Output {
    /// How many groups matched.
    count: usize,
    /// The groups.
    groups: Vec<Group>,
    /// Warnings for the report (no group matched).
    warnings: Vec<String>,
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
/// A group Graph returns without an id or a name is not one to sync.
pub fn select(groups: Vec<serde_json::Value>, prefixes: &[String]) -> Vec<Group> {
    let mut kept: Vec<Group> = groups
        .into_iter()
        .filter_map(|g| serde_json::from_value::<Group>(g).ok())
        .filter(|g| {
            prefixes
                .iter()
                .any(|p| g.display_name.starts_with(p.as_str()))
        })
        .collect();
    kept.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    kept.dedup_by(|a, b| a.id == b.id);
    kept
}

fn run(input: Input, _context: &Context) -> Result<Output, StepError> {
    let prefixes: Vec<String> = input
        .prefixes
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if prefixes.is_empty() {
        return Err(StepError::bad_input(
            "`prefixes` is empty: name at least one group name prefix",
        ));
    }
    let first = Call::get(GRAPH, "groups")
        .query("$filter", filter(&prefixes))
        .query("$select", "id,displayName")
        .query("$top", "999");
    let groups = select(graph::all(GRAPH, first)?, &prefixes);
    let warnings = warnings(&groups, &prefixes);
    for w in &warnings {
        sluice_guest::log::warn(w);
    }
    sluice_guest::log::info(&format!(
        "{} groups match {} prefixes",
        groups.len(),
        prefixes.len()
    ));
    Ok(Output {
        count: groups.len(),
        groups,
        warnings,
    })
}

/// A warning when no group matched, naming the prefixes exactly as given
/// (quoted, with any dash that is not a plain hyphen pointed out).
pub fn warnings(groups: &[Group], prefixes: &[String]) -> Vec<String> {
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

/// The connection role this component reads through.
const GRAPH: &str = "graph";

sluice_guest::step!(run, connections: {
    "graph": "Microsoft Graph: lists groups by name (Group.Read.All or GroupMember.Read.All)",
});

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

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
        let some = vec![Group {
            id: "1".into(),
            display_name: "License – Office E1".into(),
        }];
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
        let ids: Vec<&str> = kept.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, vec!["1", "4"]);
    }
}
