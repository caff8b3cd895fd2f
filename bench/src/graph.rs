//! Graph: the license groups and their enabled users, one entry per person.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::api::{Api, segment};

/// Every item of a Graph collection, following `@odata.nextLink`.
async fn all(
    api: &Api,
    first: &str,
    query: &[(&str, String)],
    mut each: impl FnMut(&Value),
) -> anyhow::Result<()> {
    let mut page = api.get(first, query).await?.json()?;
    loop {
        for item in page
            .get("value")
            .and_then(Value::as_array)
            .context("no `value` list")?
        {
            each(item);
        }
        match page.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => page = api.get(next, &[]).await?.json()?,
            None => return Ok(()),
        }
    }
}

/// The groups whose name starts with one of the prefixes, exactly.
pub async fn license_groups(
    api: &Api,
    prefixes: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let filter = prefixes
        .iter()
        .map(|p| format!("startswith(displayName,'{}')", p.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" or ");
    let query = [
        ("$filter", filter),
        ("$select", "id,displayName".to_string()),
        ("$top", "999".to_string()),
    ];
    let mut groups = Vec::new();
    all(api, "groups", &query, |g| {
        let (Some(id), Some(name)) = (
            g.get("id").and_then(Value::as_str),
            g.get("displayName").and_then(Value::as_str),
        ) else {
            return;
        };
        if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            groups.push((id.to_string(), name.to_string()));
        }
    })
    .await?;
    groups.sort_by(|a, b| a.1.cmp(&b.1));
    groups.dedup_by(|a, b| a.0 == b.0);
    Ok(groups)
}

const SELECT: &str = "id,displayName,givenName,surname,mail,userPrincipalName,accountEnabled";

/// The identity key: mail trimmed and lower-cased, else the UPN.
fn key(member: &Value) -> Option<String> {
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

/// Enabled users of the groups by key, each with the groups they are in.
pub async fn license_holders(
    api: &Api,
    groups: &[(String, String)],
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut people: BTreeMap<String, Value> = BTreeMap::new();
    let query = [("$select", SELECT.to_string()), ("$top", "999".to_string())];
    for (id, name) in groups {
        let url = format!("groups/{}/members", segment(id));
        all(api, &url, &query, |member| {
            let is_user = member.get("@odata.type").and_then(Value::as_str) == Some("#microsoft.graph.user");
            let enabled = member.get("accountEnabled").and_then(Value::as_bool) == Some(true);
            let Some(key) = key(member).filter(|_| is_user && enabled) else {
                return;
            };
            let person = people.entry(key.clone()).or_insert_with(|| {
                let text = |f: &str| member.get(f).cloned().unwrap_or(Value::Null);
                json!({ "key": key, "displayName": text("displayName"), "givenName": text("givenName"), "surname": text("surname"), "groups": [] })
            });
            if let Some(list) = person.get_mut("groups").and_then(Value::as_array_mut) {
                list.push(Value::String(name.clone()));
            }
        })
        .await?;
    }
    Ok(people)
}
