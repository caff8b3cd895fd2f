//! The console's reads ([`crate::browse`]) on PostgreSQL, meaning what
//! SQLite's do ([`crate::sqlite::browse`]).

use tokio_postgres::{GenericClient, Row};

use super::query::{RUN_COLUMNS, item, step, summary, time_opt, word};
use crate::browse::{
    FlowLatest, ItemCount, ItemFilter, ItemMention, ItemPage, RunFilter, RunOverview, RunPage,
    stored_statuses,
};
use crate::{Artifact, RunStatus, RunSummary, StepStatus, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn counts_row(r: &Row) -> Result<ItemCount> {
    Ok(ItemCount {
        step_id: r.try_get(0)?,
        status: word(r, 1)?,
        count: count(r.try_get(2)?),
    })
}

async fn runs_batch(
    c: &impl GenericClient,
    filter: &RunFilter,
    after: Option<&str>,
    n: usize,
) -> Result<Vec<RunSummary>> {
    let statuses: Vec<&str> = filter.status.map(stored_statuses).unwrap_or(&[]).to_vec();
    c.query(
        &format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE ($1::text IS NULL OR flow = $1)
               AND (cardinality($2::text[]) = 0 OR status = ANY($2))
               AND ($3::text IS NULL OR (started_at, id) < (SELECT started_at, id FROM runs WHERE id = $3))
             ORDER BY started_at DESC, id DESC LIMIT $4"
        ),
        &[&filter.flow, &statuses, &after, &limit(n)],
    )
    .await?
    .iter()
    .map(summary)
    .collect()
}

pub(crate) async fn runs_page(c: &impl GenericClient, filter: &RunFilter) -> Result<RunPage> {
    let mut cursor = match &filter.after {
        Some(id) => c
            .query_opt("SELECT id FROM runs WHERE id = $1", &[id])
            .await?
            .map(|_| id.clone()),
        None => None,
    };
    // As on SQLite (`crate::browse::fill_page`), batch by batch.
    let wanted = filter.limit.max(1);
    let mut runs = Vec::new();
    loop {
        let rows = runs_batch(c, filter, cursor.as_deref(), wanted + 1).await?;
        let exhausted = rows.len() <= wanted;
        cursor = rows.last().map(|r| r.id.clone());
        runs.extend(
            rows.into_iter()
                .filter(|r| filter.status.is_none_or(|s| r.status == s)),
        );
        if runs.len() > wanted || exhausted {
            break;
        }
    }
    let more = runs.len() > wanted;
    runs.truncate(wanted);
    Ok(RunPage { runs, more })
}

async fn item_counts_of(c: &impl GenericClient, run: &str) -> Result<Vec<ItemCount>> {
    c.query(
        "SELECT step_id, status, count(*) FROM items WHERE run_id = $1
         GROUP BY step_id, status ORDER BY step_id, status",
        &[&run],
    )
    .await?
    .iter()
    .map(counts_row)
    .collect()
}

pub(crate) async fn item_counts(
    c: &impl GenericClient,
    runs: &[String],
) -> Result<Vec<Vec<ItemCount>>> {
    let mut all = Vec::with_capacity(runs.len());
    for run in runs {
        all.push(item_counts_of(c, run).await?);
    }
    Ok(all)
}

pub(crate) async fn run_overview(c: &impl GenericClient, id: &str) -> Result<Option<RunOverview>> {
    let Some(row) = c
        .query_opt(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let run = summary(&row)?;
    let mut steps = c
        .query(
            "SELECT step_id, component, status, started_at, ended_at, duration_ms, input, output, error, connections, items_total, attempts
             FROM steps WHERE run_id = $1 ORDER BY position, started_at",
            &[&id],
        )
        .await?
        .iter()
        .map(step)
        .collect::<Result<Vec<_>>>()?;
    if run.status == RunStatus::Interrupted {
        for s in steps.iter_mut().filter(|s| s.status == StepStatus::Running) {
            s.status = StepStatus::Interrupted;
        }
    }
    let artifacts = c
        .query(
            "SELECT name, path FROM artifacts WHERE run_id = $1 ORDER BY seq",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Artifact {
                name: r.try_get(0)?,
                path: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RunOverview {
        item_counts: item_counts_of(c, id).await?,
        run,
        steps,
        artifacts,
    }))
}

pub(crate) async fn items_page(
    c: &impl GenericClient,
    run: &str,
    step_id: &str,
    filter: &ItemFilter,
) -> Result<ItemPage> {
    let search = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let matches = "run_id = $1 AND step_id = $2 AND ($3::text IS NULL OR strpos(lower(
            coalesce(item_key, '') || chr(10) || coalesce(input, '') || chr(10) || coalesce(output, '') || chr(10) || coalesce(error, '')
        ), lower($3)) > 0)";
    let matching: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM items WHERE {matches}"),
            &[&run, &step_id, &search],
        )
        .await?
        .try_get(0)?;
    let items = c
        .query(
            &format!(
                "SELECT step_id, idx, status, duration_ms, ended_at, input, output, error, connections, item_key, attempts
                 FROM items WHERE {matches}
                 ORDER BY CASE status WHEN 'failed' THEN 0 WHEN 'interrupted' THEN 1 ELSE 2 END, idx
                 LIMIT $4 OFFSET $5"
            ),
            &[
                &run,
                &step_id,
                &search,
                &limit(filter.limit.max(1)),
                &limit(filter.offset),
            ],
        )
        .await?
        .iter()
        .map(item)
        .collect::<Result<Vec<_>>>()?;
    Ok(ItemPage {
        items,
        matching: count(matching),
    })
}

pub(crate) async fn flows_latest(c: &impl GenericClient) -> Result<Vec<FlowLatest>> {
    c.query(
        &format!(
            "SELECT {RUN_COLUMNS},
                (SELECT max(s.ended_at) FROM runs s WHERE s.flow = r.flow AND s.status = 'succeeded')
             FROM runs r
             WHERE r.id = (SELECT l.id FROM runs l WHERE l.flow = r.flow ORDER BY l.started_at DESC, l.id DESC LIMIT 1)
             ORDER BY r.flow"
        ),
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        let last_run = summary(r)?;
        Ok(FlowLatest {
            flow: last_run.flow.clone(),
            last_run,
            last_success: time_opt(r, 15)?,
        })
    })
    .collect()
}

pub(crate) async fn runs_from(c: &impl GenericClient, floor: &str) -> Result<Vec<RunSummary>> {
    c.query(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id >= $1 ORDER BY id"),
        &[&floor],
    )
    .await?
    .iter()
    .map(summary)
    .collect()
}

pub(crate) async fn runs_by_id(c: &impl GenericClient, ids: &[String]) -> Result<Vec<RunSummary>> {
    c.query(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1) ORDER BY id"),
        &[&ids],
    )
    .await?
    .iter()
    .map(summary)
    .collect()
}

pub(crate) async fn items_mentioning(
    c: &impl GenericClient,
    text: &str,
    max: usize,
) -> Result<Vec<ItemMention>> {
    c.query(
        "SELECT i.step_id, i.idx, i.status, i.duration_ms, i.ended_at, i.input, i.output, i.error, i.connections, i.item_key, i.attempts,
                r.id, r.flow, r.dry_run
         FROM items i JOIN runs r ON r.id = i.run_id
         WHERE strpos(lower(coalesce(i.item_key, '') || chr(10) || coalesce(i.input, '') || chr(10) || coalesce(i.output, '')), lower($1)) > 0
         ORDER BY r.started_at, r.id, i.idx LIMIT $2",
        &[&text, &limit(max)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ItemMention {
            item: item(r)?,
            run_id: r.try_get(11)?,
            flow: r.try_get(12)?,
            dry_run: r.try_get(13)?,
        })
    })
    .collect()
}
