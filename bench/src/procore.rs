//! Procore: every company user, and creating the missing ones.

use std::sync::Arc;

use anyhow::bail;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::api::{Answer, Api, segment};

/// The page size the `procore-users` component asks for.
const PER_PAGE: usize = 1000;

#[derive(Deserialize)]
pub struct User {
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub email_address: Option<String>,
    #[serde(default = "active")]
    pub is_active: bool,
}

fn active() -> bool {
    true
}

/// Whether the list goes on after `page`: the `Link` header's next, else
/// `Total`, else until an empty page.
fn has_next(answer: &Answer, page: usize, on_page: usize, so_far: usize) -> bool {
    if on_page == 0 {
        return false;
    }
    if let Some(link) = answer.header("link") {
        return link.contains("rel=\"next\"");
    }
    match answer
        .header("total")
        .and_then(|t| t.trim().parse::<usize>().ok())
    {
        Some(total) => match answer
            .header("per-page")
            .and_then(|p| p.trim().parse::<usize>().ok())
        {
            Some(per_page) if per_page > 0 => page * per_page < total,
            _ => so_far < total,
        },
        None => true,
    }
}

async fn list(api: &Api, url: &str, inactive: bool, users: &mut Vec<User>) -> anyhow::Result<()> {
    let mut so_far = 0;
    for page in 1.. {
        let query = [
            ("page", page.to_string()),
            ("per_page", PER_PAGE.to_string()),
        ];
        let answer = api.get(url, &query).await?;
        let mut found: Vec<User> = serde_json::from_slice(&answer.body)?;
        let on_page = found.len();
        so_far += on_page;
        if inactive {
            found.iter_mut().for_each(|u| u.is_active = false);
        }
        users.extend(found);
        if !has_next(&answer, page, on_page, so_far) {
            break;
        }
    }
    Ok(())
}

/// Active and inactive company users.
pub async fn company_users(api: &Api, company: &str) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::new();
    let base = format!("companies/{}/users", segment(company));
    list(api, &base, false, &mut users).await?;
    list(api, &format!("{base}/inactive"), true, &mut users).await?;
    Ok(users)
}

/// Where new users go.
pub struct Target {
    pub company: String,
    pub project: Option<String>,
    pub template: Option<String>,
}

/// Creates one person (and adds them to the project); `Ok(key)` or `Err(key)`.
async fn create(api: &Api, target: &Target, person: &Value) -> anyhow::Result<()> {
    let key = person
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let text = |f: &str| {
        person
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let last = Some(text("surname"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text("displayName"));
    let body = json!({ "user": { "first_name": text("givenName"), "last_name": last, "email_address": key, "is_employee": true } });
    let url = format!("companies/{}/users", segment(&target.company));
    let answer = api.post(&url, &body).await?;
    if !matches!(answer.status, 200 | 201) {
        bail!("create answered {}", answer.status);
    }
    let Some(project) = &target.project else {
        return Ok(());
    };
    let id = answer.json()?.get("id").cloned().unwrap_or(Value::Null);
    let body = match &target.template {
        Some(t) => {
            json!({ "user": { "permission_template_id": t.parse::<u64>().map_or_else(|_| json!(t), |n| json!(n)) } })
        }
        None => json!({}),
    };
    let url = format!("projects/{}/users/{id}/actions/add", segment(project));
    let answer = api.post(&url, &body).await?;
    if !answer.status.to_string().starts_with('2') {
        bail!("project add answered {}", answer.status);
    }
    Ok(())
}

/// Creates every missing person, `concurrency` at a time, in order.
pub async fn create_all(
    api: Arc<Api>,
    target: Arc<Target>,
    missing: &[&Value],
    concurrency: usize,
) -> Vec<Result<String, String>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, person) in missing.iter().enumerate() {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (api, target, person) = (api.clone(), target.clone(), (*person).clone());
        tasks.spawn(async move {
            let key = person
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let outcome = create(&api, &target, &person).await;
            drop(permit);
            (index, outcome.map(|()| key.clone()).map_err(|_| key))
        });
    }
    let mut outcomes: Vec<(usize, Result<String, String>)> = tasks.join_all().await;
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}
