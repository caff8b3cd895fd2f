//! The flow state store on PostgreSQL (keys in the `"C"` collation: byte
//! order, as on SQLite).

use chrono::Utc;
use tokio_postgres::{GenericClient, Transaction};

use crate::state::{Run, StateEntry, runs};
use crate::{RunRef, StateBatch, StateKey, StatePage, StateQuery, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// The most keys one statement of a batch writes (as two arrays of text).
const ROWS_PER_STATEMENT: usize = 10_000;

pub(crate) async fn get(
    c: &impl GenericClient,
    flow: &str,
    key: &StateKey,
) -> Result<Option<String>> {
    let row = c
        .query_opt(
            "SELECT value FROM flow_state WHERE flow = $1 AND key = $2",
            &[&flow, &key.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

pub(crate) async fn list(
    c: &impl GenericClient,
    flow: &str,
    q: &StateQuery,
) -> Result<StatePage<String>> {
    let size = q.page_size();
    let from = match &q.start_after {
        Some(after) if after.as_str() > q.prefix.as_str() => after.as_str(),
        _ => q.prefix.as_str(),
    };
    let end = q.prefix_end();
    let rows = c
        .query(
            "SELECT key, value FROM flow_state
             WHERE flow = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)
               AND ($4::text IS NULL OR key > $4)
             ORDER BY key LIMIT $5",
            &[
                &flow,
                &from,
                &end,
                &q.start_after,
                &i64::try_from(size + 1).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    let entries = rows
        .iter()
        .map(|r| {
            Ok(StateEntry {
                key: r.try_get(0)?,
                value: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StatePage::from_rows(entries, size))
}

pub(crate) async fn apply(tx: &Transaction<'_>, flow: &str, batch: &StateBatch) -> Result<()> {
    let texts = batch.texts()?;
    if let Some(fence) = batch.fence {
        let run = RunRef {
            id: batch.run_id.clone().unwrap_or_default(),
            flow: flow.to_string(),
            fence: Some(fence),
        };
        super::history::check_fence(tx, &run).await?;
    }
    let now = Utc::now();
    // A first run may set a key per person of the tenant: each statement
    // takes a run of up to ROWS_PER_STATEMENT keys as two arrays, rather
    // than one round trip to the server per key.
    let set = tx
        .prepare(
            "INSERT INTO flow_state (flow, key, value, updated_at, run_id)
             SELECT $1::text, k, v, $4::timestamptz, $5::text
             FROM unnest($2::text[], $3::text[]) AS t(k, v)
             ON CONFLICT (flow, key) DO UPDATE SET
                value = excluded.value, updated_at = excluded.updated_at, run_id = excluded.run_id",
        )
        .await?;
    let delete = tx
        .prepare("DELETE FROM flow_state WHERE flow = $1 AND key = ANY($2::text[])")
        .await?;
    for run in runs(&texts, ROWS_PER_STATEMENT) {
        match run {
            Run::Set { keys, values } => {
                tx.execute(&set, &[&flow, &keys, &values, &now, &batch.run_id])
                    .await?
            }
            Run::Delete { keys } => tx.execute(&delete, &[&flow, &keys]).await?,
        };
    }
    Ok(())
}
