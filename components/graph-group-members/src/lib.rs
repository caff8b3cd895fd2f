//! The `graph-group-members` step: the people in the license groups.
//!
//! Input `{"groups": [{id, displayName}…], "transitive": false}`; reads
//! through the `graph` connection role. Reads each
//! group's `members` (or `transitiveMembers`) with `$select` including
//! `accountEnabled` (Graph returns it only when asked) and `$top=999`, every
//! page. Keeps enabled `#microsoft.graph.user` objects, keyed by the
//! identity rule (`sluice-identity`: mail, else UPN, trimmed, lower-cased).
//! The same person in several groups is one entry listing every group.
//!
//! For the license sync's leavers it also says why someone who held a
//! license holds none now: `disabled` lists the keys of members whose
//! account is disabled, and `gone` the keys of people the flow manages
//! (its state's `managed/<key>` records, with the Entra id) who are in no
//! license group and whose Entra user no longer exists (`GET users/{id}`
//! answers 404). A look-up that fails otherwise fails the step: a read
//! that did not finish never makes anyone a leaver.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_guest::state;
use sluice_guest::{Call, Context, JsonSchema, StepError};
use sluice_guest_services::graph::{self, Group};
use sluice_guest_services::sync::{MANAGED_PREFIX, Managed, ManagedStatus, Person};
use sluice_identity::Key;

/// The groups to read.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// The license groups (as `graph-groups` lists them).
    groups: Vec<Group>,
    /// Also follow nested groups (`transitiveMembers`).
    #[serde(default)]
    transitive: bool,
}

/// The license holders, one entry per person.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// How many people.
    pub count: usize,
    /// The people, sorted by key.
    pub people: Vec<Person>,
    /// Members with a disabled account (and enabled nowhere else).
    pub skipped_disabled: usize,
    /// Their keys, sorted.
    pub disabled: Vec<String>,
    /// Keys of managed people in no license group whose Entra user is gone.
    pub gone: Vec<String>,
    /// Members that are not users (devices, groups, service principals).
    pub skipped_non_user: usize,
}

/// The connection role this component reads through.
const GRAPH: &str = "graph";

const SELECT: &str = "id,displayName,givenName,surname,mail,userPrincipalName,accountEnabled";

/// The identity key of a Graph user, or `None` when it has neither address.
pub fn key(member: &Value) -> Option<Key> {
    let text = |name: &str| member.get(name).and_then(Value::as_str);
    Key::of_graph_user(text("mail"), text("userPrincipalName"))
}

/// Folds the members of each group into one entry per person.
#[derive(Default)]
pub struct People {
    by_key: BTreeMap<Key, (Person, BTreeSet<String>)>,
    disabled: BTreeSet<Key>,
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
            let text = |name: &str| member.get(name).and_then(Value::as_str).map(str::to_string);
            let person = Person {
                key: key.into_string(),
                id: text("id"),
                mail: text("mail"),
                user_principal_name: text("userPrincipalName"),
                display_name: text("displayName"),
                given_name: text("givenName"),
                surname: text("surname"),
                groups: Vec::new(),
            };
            (person, BTreeSet::new())
        });
        entry.1.insert(group.to_string());
    }

    pub fn finish(self) -> Output {
        // Someone disabled in one place but enabled elsewhere is still enabled.
        let disabled: Vec<String> = self
            .disabled
            .iter()
            .filter(|k| !self.by_key.contains_key(*k))
            .map(|k| k.to_string())
            .collect();
        let people: Vec<Person> = self
            .by_key
            .into_values()
            .map(|(mut person, groups)| {
                person.groups = groups.into_iter().collect();
                person
            })
            .collect();
        Output {
            count: people.len(),
            people,
            skipped_disabled: disabled.len(),
            disabled,
            gone: Vec::new(),
            skipped_non_user: self.non_users,
        }
    }
}

fn run(input: Input, _context: &Context) -> Result<Output, StepError> {
    let relation = if input.transitive {
        "transitiveMembers"
    } else {
        "members"
    };
    let mut people = People::default();
    for group in &input.groups {
        let first = Call::get(
            GRAPH,
            &format!(
                "groups/{}/{relation}",
                sluice_guest::http::segment(&group.id)
            ),
        )
        .query("$select", SELECT)
        .query("$top", "999");
        let members = graph::all(GRAPH, first)?;
        sluice_guest::log::info(&format!(
            "{}: {} members",
            group.display_name,
            members.len()
        ));
        for member in &members {
            people.add(&group.display_name, member);
        }
    }
    let mut out = people.finish();
    out.gone = gone(&out)?;
    Ok(out)
}

/// The managed people (state `managed/<key>`, active, with an Entra id)
/// who are in no license group and whose Entra user Graph no longer has.
fn gone(out: &Output) -> Result<Vec<String>, StepError> {
    let held: BTreeSet<&str> = out
        .people
        .iter()
        .map(|p| p.key.as_str())
        .chain(out.disabled.iter().map(String::as_str))
        .collect();
    let mut gone = Vec::new();
    for entry in state::entries::<Managed>(MANAGED_PREFIX) {
        let (state_key, record) = entry?;
        let Some(key) = state_key.strip_prefix(MANAGED_PREFIX) else {
            continue;
        };
        let entra_id = record.other.get("entra_id").and_then(Value::as_str);
        let (Some(entra_id), ManagedStatus::Active) = (entra_id, record.status) else {
            continue;
        };
        if held.contains(key) {
            continue;
        }
        let call = Call::get(
            GRAPH,
            &format!("users/{}", sluice_guest::http::segment(entra_id)),
        )
        .query("$select", "id,accountEnabled");
        let response = call.read()?;
        match response.status {
            404 => gone.push(key.to_string()),
            s if (200..300).contains(&s) => {}
            _ => return Err(sluice_guest_services::status_error(&call, &response)),
        }
    }
    Ok(gone)
}

sluice_guest::step!(run, connections: {
    "graph": "Microsoft Graph: reads the members of the license groups (GroupMember.Read.All, User.Read.All)",
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(mail: Option<&str>, upn: &str, enabled: bool) -> Value {
        json!({"@odata.type": "#microsoft.graph.user", "id": upn, "mail": mail, "userPrincipalName": upn, "accountEnabled": enabled, "givenName": "G", "surname": "S", "displayName": "G S"})
    }

    #[test]
    fn keys_follow_the_identity_rules() {
        let k = |v: &Value| key(v).unwrap().into_string();
        assert_eq!(
            k(&user(Some("  Alice.Smith@Contoso.com "), "x@y", true)),
            "alice.smith@contoso.com"
        );
        assert_eq!(
            k(&user(Some("  "), "Bob@Contoso.onmicrosoft.com", true)),
            "bob@contoso.onmicrosoft.com"
        );
        assert_eq!(k(&user(None, "Carl@c.com", true)), "carl@c.com");
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
        assert_eq!(out.count, 2);
        assert_eq!(out.people[0].key, "a@x.com");
        assert_eq!(
            out.people[0].groups,
            ["License – Microsoft E3", "License – Office E1"]
        );
        assert_eq!(
            out.skipped_disabled, 2,
            "d, and f whose accountEnabled is missing"
        );
        assert_eq!(out.skipped_non_user, 2);
    }
}
