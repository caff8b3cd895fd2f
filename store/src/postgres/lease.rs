//! Claimed firings and flow leases on PostgreSQL, by the server's clock
//! (see [`crate::lease`] for the protocol). Each decision locks the rows
//! it reads for its transaction only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Transaction};

use super::history::end_unfinished;
use crate::lease::{FIRINGS_KEPT, Writer, holder_gone};
use crate::{
    Acquired, Claim, Firing, Lapse, LeaseGrant, RunStatus, StoreError, Takeover, timestamp,
};

type Result<T> = std::result::Result<T, StoreError>;

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) async fn claim_firing(c: &impl GenericClient, f: &Firing) -> Result<Claim> {
    let inserted = c
        .execute(
            "INSERT INTO firings (flow, scheduled_at, replica, run_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (flow, scheduled_at) DO NOTHING",
            &[&f.flow, &f.scheduled_at, &f.replica, &f.run_id],
        )
        .await?;
    if inserted == 1 {
        c.execute(
            "DELETE FROM firings WHERE claimed_at < now() - make_interval(secs => $1)",
            &[&seconds(FIRINGS_KEPT)],
        )
        .await?;
        return Ok(Claim::Won);
    }
    let replica: String = c
        .query_one(
            "SELECT replica FROM firings WHERE flow = $1 AND scheduled_at = $2",
            &[&f.flow, &f.scheduled_at],
        )
        .await?
        .try_get(0)?;
    Ok(Claim::Lost { replica })
}

/// A flow's lease row, locked for the transaction.
struct Lease {
    fence: i64,
    holder: Option<String>,
    holder_token: Option<String>,
    /// The holder's process, when the lease names it.
    holding: Option<Writer>,
    run_id: Option<String>,
    expires_at: DateTime<Utc>,
    live: bool,
}

async fn lock_lease(tx: &Transaction<'_>, flow: &str) -> Result<Option<Lease>> {
    let row = tx
        .query_opt(
            "SELECT fence, holder, holder_token, run_id, expires_at, expires_at > now(),
                    holder_host, holder_pid
             FROM leases WHERE flow = $1 FOR UPDATE",
            &[&flow],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Lease {
        fence: r.try_get(0)?,
        holder: r.try_get(1)?,
        holder_token: r.try_get(2)?,
        holding: Writer::holding(r.try_get(6)?, r.try_get(7)?, r.try_get(2)?),
        run_id: r.try_get(3)?,
        expires_at: r.try_get(4)?,
        live: r.try_get(5)?,
    }))
}

/// The process that wrote a run, if its row exists yet. Read apart from
/// the locked lease row, not joined to it: a lease re-read after another
/// transaction changed its run must not lose its row to the join.
async fn writer_of(tx: &Transaction<'_>, run: &str) -> Result<Option<Writer>> {
    let row = tx
        .query_opt(
            "SELECT host, pid, process_token FROM runs WHERE id = $1",
            &[&run],
        )
        .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Writer {
        host: r.try_get(0)?,
        pid: r.try_get(1)?,
        token: r.try_get(2)?,
    }))
}

/// Why a held lease may be taken over now, if it may: it expired, or its
/// holder is known to be gone ([`holder_gone`]), judged by the process the
/// lease names (or, for a lease that names none, by its run's writer).
async fn lapse_of(tx: &Transaction<'_>, lease: &Lease) -> Result<Option<Lapse>> {
    if !lease.live {
        return Ok(Some(Lapse::Expired));
    }
    let writer = match (&lease.holding, &lease.run_id) {
        (Some(holding), _) => Some(holding.clone()),
        (None, Some(run)) => writer_of(tx, run).await?,
        (None, None) => None,
    };
    Ok(holder_gone(lease.holder_token.as_deref(), writer.as_ref()))
}

/// Records the run a lapsed lease covered as interrupted.
async fn settle_lapsed(
    tx: &Transaction<'_>,
    flow: &str,
    lease: &Lease,
    cause: Lapse,
    by: &str,
    fence: i64,
    ttl: Duration,
) -> Result<Takeover> {
    let from = lease.holder.clone().unwrap_or_default();
    let expired_at = timestamp(lease.expires_at);
    let mut recorded = false;
    if let Some(run) = &lease.run_id {
        let why = cause.reason(&from, &expired_at, by);
        // Ended when it was last heard of, not when the lease was found
        // lapsed: that is the takeover's time, later by up to a lease.
        // Its last record, or its holder's last renewal, whichever came
        // later.
        let renewed = chrono::Duration::from_std(ttl)
            .ok()
            .map(|ttl| lease.expires_at - ttl);
        let heard = super::query::last_sign_of_life(tx, run).await?;
        let ended = renewed.max(heard).unwrap_or_else(Utc::now).min(Utc::now());
        recorded = end_unfinished(tx, run, RunStatus::Interrupted, &why, ended).await?;
    }
    Ok(Takeover {
        flow: flow.to_string(),
        run_id: lease.run_id.clone(),
        recorded,
        from_replica: from,
        expired_at,
        cause,
        fence,
    })
}

pub(crate) async fn acquire(
    tx: &Transaction<'_>,
    grant: &LeaseGrant,
    ttl: Duration,
) -> Result<Acquired> {
    // A free row at fence 0 the first time, so there is always a row to lock.
    tx.execute(
        "INSERT INTO leases (flow, fence, expires_at) VALUES ($1, 0, now())
         ON CONFLICT (flow) DO NOTHING",
        &[&grant.flow],
    )
    .await?;
    let Some(lease) = lock_lease(tx, &grant.flow).await? else {
        return Err(StoreError::Task(format!(
            "the lease row of flow `{}` vanished",
            grant.flow
        )));
    };
    let fence = lease.fence + 1;
    let took_over = match &lease.holder {
        None => None,
        Some(holder) => {
            let Some(cause) = lapse_of(tx, &lease).await? else {
                return Ok(Acquired::Held {
                    replica: holder.clone(),
                    run_id: lease.run_id,
                    expires_at: timestamp(lease.expires_at),
                });
            };
            let by = &grant.replica;
            Some(settle_lapsed(tx, &grant.flow, &lease, cause, by, fence, ttl).await?)
        }
    };
    tx.execute(
        "UPDATE leases SET fence = $2, holder = $3, holder_token = $4, run_id = $5,
                expires_at = now() + make_interval(secs => $6), holder_host = $7, holder_pid = $8
         WHERE flow = $1",
        &[
            &grant.flow,
            &fence,
            &grant.replica,
            &grant.token,
            &grant.run_id,
            &seconds(ttl),
            &grant.host,
            &grant.pid,
        ],
    )
    .await?;
    Ok(Acquired::Granted { fence, took_over })
}

pub(crate) async fn renew(
    c: &impl GenericClient,
    flow: &str,
    fence: i64,
    ttl: Duration,
) -> Result<bool> {
    let changed = c
        .execute(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $3)
             WHERE flow = $1 AND fence = $2 AND holder IS NOT NULL",
            &[&flow, &fence, &seconds(ttl)],
        )
        .await?;
    Ok(changed == 1)
}

pub(crate) async fn release(c: &impl GenericClient, flow: &str, fence: i64) -> Result<()> {
    c.execute(
        "UPDATE leases SET holder = NULL, holder_token = NULL, holder_host = NULL,
                holder_pid = NULL, run_id = NULL, expires_at = now()
         WHERE flow = $1 AND fence = $2",
        &[&flow, &fence],
    )
    .await?;
    Ok(())
}

pub(crate) async fn take_over_expired(
    tx: &Transaction<'_>,
    replica: &str,
    ttl: Duration,
) -> Result<Vec<Takeover>> {
    // Expired at its instant (`acquire` counts a lease live only before
    // it). SKIP LOCKED: replicas sweeping at once split the expired leases
    // between them instead of queueing on the same rows.
    let rows = tx
        .query(
            "SELECT flow FROM leases WHERE holder IS NOT NULL AND expires_at <= now()
             ORDER BY flow FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await?;
    let mut taken = Vec::new();
    for row in rows {
        let flow: String = row.try_get(0)?;
        let Some(lease) = lock_lease(tx, &flow).await? else {
            continue;
        };
        let fence = lease.fence + 1;
        taken.push(settle_lapsed(tx, &flow, &lease, Lapse::Expired, replica, fence, ttl).await?);
        tx.execute(
            "UPDATE leases SET fence = $2, holder = NULL, holder_token = NULL, holder_host = NULL,
                    holder_pid = NULL, run_id = NULL
             WHERE flow = $1",
            &[&flow, &fence],
        )
        .await?;
    }
    Ok(taken)
}
