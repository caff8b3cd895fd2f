//! The `graph-group-members` step: the people in the license groups.
//!
//! Input `{"groups": [{id, displayName}…], "transitive": false}`. Reads each
//! group's `members` (or `transitiveMembers`) with `$select` including
//! `accountEnabled` (Graph returns it only when asked) and `$top=999`, every
//! page. Keeps enabled `#microsoft.graph.user` objects; the key is `mail`
//! trimmed and lower-cased, or the `userPrincipalName` where mail is empty.
//! The same person in several groups is one entry listing every group.

use std::collections::{BTreeMap, BTreeSet};

use sluice_guest::http::Call;
use sluice_guest::paging::graph_all;
use sluice_guest::{StepError, Value, json, parse_input};

#[derive(serde::Deserialize)]
struct Input {
    groups: Vec<Group>,
    #[serde(default)]
    transitive: bool,
    #[serde(default = "default_connection")]
    connection: String,
}

#[derive(serde::Deserialize)]
struct Group {
    id: String,
    #[serde(rename = "displayName", default)]
    display_name: String,
}

fn default_connection() -> String {
    "graph".into()
}

const SELECT: &str = "id,displayName,givenName,surname,mail,userPrincipalName,accountEnabled";

/// The identity key of a Graph user, or `None` when it has neither address.
pub fn key(member: &Value) -> Option<String> {
    let field = |name: &str| {
        member
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    field("mail")
        .or_else(|| field("userPrincipalName"))
        .map(str::to_lowercase)
}

/// Folds the members of each group into one entry per person.
#[derive(Default)]
pub struct People {
    by_key: BTreeMap<String, (Value, BTreeSet<String>)>,
    disabled: BTreeSet<String>,
    non_users: usize,
}

impl People {
    pub fn add(&mut self, group: &str, member: &Value) {
        if member.get("@odata.type").and_then(Value::as_str) != Some("#microsoft.graph.user") {
            self.non_users += 1;
            return;
        }
        let Some(key) = key(member) else { return };
        if member.get("accountEnabled").and_then(Value::as_bool) != Some(true) {
            self.disabled.insert(key);
            return;
        }
        let entry = self.by_key.entry(key.clone()).or_insert_with(|| {
            let text = |name: &str| member.get(name).cloned().unwrap_or(Value::Null);
            let person = json!({
                "key": key,
                "id": text("id"),
                "mail": text("mail"),
                "userPrincipalName": text("userPrincipalName"),
                "displayName": text("displayName"),
                "givenName": text("givenName"),
                "surname": text("surname"),
            });
            (person, BTreeSet::new())
        });
        entry.1.insert(group.to_string());
    }

    pub fn finish(self) -> Value {
        // Someone disabled in one place but enabled elsewhere is still enabled.
        let disabled = self
            .disabled
            .iter()
            .filter(|k| !self.by_key.contains_key(*k))
            .count();
        let people: Vec<Value> = self
            .by_key
            .into_values()
            .map(|(mut person, groups)| {
                person["groups"] = json!(groups);
                person
            })
            .collect();
        json!({ "count": people.len(), "people": people, "skipped_disabled": disabled, "skipped_non_user": self.non_users })
    }
}

fn run(input: Value) -> Result<Value, StepError> {
    let input: Input = parse_input(input)?;
    let relation = if input.transitive {
        "transitiveMembers"
    } else {
        "members"
    };
    let mut people = People::default();
    for group in &input.groups {
        let first = Call::get(
            &input.connection,
            &format!(
                "groups/{}/{relation}",
                sluice_guest::http::segment(&group.id)
            ),
        )
        .query("$select", SELECT)
        .query("$top", "999");
        let members = graph_all(&input.connection, first)?;
        sluice_guest::log::info(&format!(
            "{}: {} members",
            group.display_name,
            members.len()
        ));
        for member in &members {
            people.add(&group.display_name, member);
        }
    }
    Ok(people.finish())
}

sluice_guest::step!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn user(mail: Option<&str>, upn: &str, enabled: bool) -> Value {
        json!({"@odata.type": "#microsoft.graph.user", "id": upn, "mail": mail, "userPrincipalName": upn, "accountEnabled": enabled, "givenName": "G", "surname": "S", "displayName": "G S"})
    }

    #[test]
    fn keys_follow_the_identity_rules() {
        assert_eq!(
            key(&user(Some("  Alice.Smith@Contoso.com "), "x@y", true)).unwrap(),
            "alice.smith@contoso.com"
        );
        assert_eq!(
            key(&user(Some("  "), "Bob@Contoso.onmicrosoft.com", true)).unwrap(),
            "bob@contoso.onmicrosoft.com"
        );
        assert_eq!(key(&user(None, "Carl@c.com", true)).unwrap(), "carl@c.com");
        assert_eq!(key(&json!({})), None);
    }

    #[test]
    fn one_entry_per_person_only_enabled_users() {
        let mut p = People::default();
        p.add("License – Microsoft E3", &user(Some("a@x.com"), "a", true));
        p.add("License – Office E1", &user(Some("A@X.com"), "a", true));
        p.add("License – Office E1", &user(Some("d@x.com"), "d", false));
        p.add("License – Office E1", &user(Some("e@x.com"), "e", false));
        p.add("License – Microsoft E3", &user(Some("e@x.com"), "e", true));
        p.add(
            "License – Office E1",
            &json!({"@odata.type": "#microsoft.graph.device", "id": "dev"}),
        );
        p.add(
            "License – Office E1",
            &json!({"@odata.type": "#microsoft.graph.group", "id": "g"}),
        );
        p.add(
            "License – Office E1",
            &json!({"@odata.type": "#microsoft.graph.user", "mail": "f@x.com"}),
        );
        let out = p.finish();
        assert_eq!(out["count"], json!(2));
        assert_eq!(out["people"][0]["key"], json!("a@x.com"));
        assert_eq!(
            out["people"][0]["groups"],
            json!(["License – Microsoft E3", "License – Office E1"])
        );
        assert_eq!(
            out["skipped_disabled"],
            json!(2),
            "d, and f whose accountEnabled is missing"
        );
        assert_eq!(out["skipped_non_user"], json!(2));
    }
}
