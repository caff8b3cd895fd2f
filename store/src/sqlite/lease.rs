//! Claimed firings and flow leases on SQLite, by this host's clock (see
//! [`crate::lease`] for the protocol; every function runs inside one
//! `BEGIN IMMEDIATE` transaction, so each decision is atomic).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::history::end_unfinished;
use crate::lease::{FIRINGS_KEPT, Writer, holder_gone};
use crate::{
    Acquired, Claim, Firing, Lapse, LeaseGrant, RunStatus, StoreError, Takeover, timestamp,
};

/// `now` + `ttl`, or the latest time there is (a lease too long to end).
fn after(now: DateTime<Utc>, ttl: Duration) -> String {
    let end = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    timestamp(end)
}

pub(crate) fn claim_firing(tx: &Transaction<'_>, f: &Firing) -> Result<Claim, StoreError> {
    let now = Utc::now();
    let inserted = tx.execute(
        "INSERT INTO firings (flow, scheduled_at, replica, run_id, claimed_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (flow, scheduled_at) DO NOTHING",
        params![f.flow, timestamp(f.scheduled_at), f.replica, f.run_id, timestamp(now)],
    )?;
    if inserted == 1 {
        let kept = chrono::Duration::from_std(FIRINGS_KEPT).unwrap_or(chrono::Duration::MAX);
        tx.execute(
            "DELETE FROM firings WHERE claimed_at < ?1",
            params![timestamp(now - kept)],
        )?;
        return Ok(Claim::Won);
    }
    let replica: String = tx.query_row(
        "SELECT replica FROM firings WHERE flow = ?1 AND scheduled_at = ?2",
        params![f.flow, timestamp(f.scheduled_at)],
        |r| r.get(0),
    )?;
    Ok(Claim::Lost { replica })
}

/// The lease row of a flow.
struct Lease {
    fence: i64,
    holder: Option<String>,
    holder_token: Option<String>,
    /// The holder's process, when the lease names it.
    holding: Option<Writer>,
    run_id: Option<String>,
    expires_at: String,
}

fn lease_of(tx: &Transaction<'_>, flow: &str) -> rusqlite::Result<Option<Lease>> {
    tx.query_row(
        "SELECT fence, holder, holder_token, run_id, expires_at, holder_host, holder_pid
         FROM leases WHERE flow = ?1",
        params![flow],
        |r| {
            Ok(Lease {
                fence: r.get(0)?,
                holder: r.get(1)?,
                holder_token: r.get(2)?,
                holding: Writer::holding(r.get(5)?, r.get(6)?, r.get(2)?),
                run_id: r.get(3)?,
                expires_at: r.get(4)?,
            })
        },
    )
    .optional()
}

/// The process that wrote a run, if its row exists yet.
fn writer_of(tx: &Transaction<'_>, run: &str) -> rusqlite::Result<Option<Writer>> {
    tx.query_row(
        "SELECT host, pid, process_token FROM runs WHERE id = ?1",
        params![run],
        |r| {
            Ok(Writer {
                host: r.get(0)?,
                pid: r.get(1)?,
                token: r.get(2)?,
            })
        },
    )
    .optional()
}

/// Why a held lease may be taken over now, if it may: it expired, or its
/// holder is known to be gone ([`holder_gone`]), judged by the process the
/// lease names (or, for a lease that names none, by its run's writer).
fn lapse_of(tx: &Transaction<'_>, lease: &Lease, now: &str) -> rusqlite::Result<Option<Lapse>> {
    if lease.expires_at.as_str() <= now {
        return Ok(Some(Lapse::Expired));
    }
    let writer = match (&lease.holding, &lease.run_id) {
        (Some(holding), _) => Some(holding.clone()),
        (None, Some(run)) => writer_of(tx, run)?,
        (None, None) => None,
    };
    Ok(holder_gone(lease.holder_token.as_deref(), writer.as_ref()))
}

/// Records the run a lapsed lease covered as interrupted.
fn settle_lapsed(
    tx: &Transaction<'_>,
    flow: &str,
    lease: &Lease,
    cause: Lapse,
    by: &str,
    fence: i64,
    ttl: Duration,
) -> Result<Takeover, StoreError> {
    let from = lease.holder.clone().unwrap_or_default();
    let mut recorded = false;
    if let Some(run) = &lease.run_id {
        let why = cause.reason(&from, &lease.expires_at, by);
        // Ended when it was last heard of, not when the lease was found
        // lapsed (later by up to a lease): its last record, or its
        // holder's last renewal, whichever came later.
        let parse = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let renewed = parse(&lease.expires_at)
            .and_then(|t| chrono::Duration::from_std(ttl).ok().map(|ttl| t - ttl));
        let heard = super::query::last_sign_of_life(tx, run)?
            .as_deref()
            .and_then(parse);
        let ended = timestamp(renewed.max(heard).unwrap_or_else(Utc::now).min(Utc::now()));
        recorded = end_unfinished(tx, run, RunStatus::Interrupted, &why, &ended)?;
    }
    Ok(Takeover {
        flow: flow.to_string(),
        run_id: lease.run_id.clone(),
        recorded,
        from_replica: from,
        expired_at: lease.expires_at.clone(),
        cause,
        fence,
    })
}

pub(crate) fn acquire(
    tx: &Transaction<'_>,
    grant: &LeaseGrant,
    ttl: Duration,
) -> Result<Acquired, StoreError> {
    let now = Utc::now();
    let (fence, took_over) = match lease_of(tx, &grant.flow)? {
        None => (1, None),
        Some(lease) if lease.holder.is_none() => (lease.fence + 1, None),
        Some(lease) => {
            let Some(cause) = lapse_of(tx, &lease, &timestamp(now))? else {
                return Ok(Acquired::Held {
                    replica: lease.holder.unwrap_or_default(),
                    run_id: lease.run_id,
                    expires_at: lease.expires_at,
                });
            };
            let fence = lease.fence + 1;
            let took = settle_lapsed(tx, &grant.flow, &lease, cause, &grant.replica, fence, ttl)?;
            (fence, Some(took))
        }
    };
    tx.execute(
        "INSERT INTO leases (flow, fence, holder, holder_token, run_id, expires_at, holder_host, holder_pid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (flow) DO UPDATE SET
            fence = excluded.fence, holder = excluded.holder, holder_token = excluded.holder_token,
            run_id = excluded.run_id, expires_at = excluded.expires_at,
            holder_host = excluded.holder_host, holder_pid = excluded.holder_pid",
        params![
            grant.flow,
            fence,
            grant.replica,
            grant.token,
            grant.run_id,
            after(now, ttl),
            grant.host,
            grant.pid
        ],
    )?;
    Ok(Acquired::Granted { fence, took_over })
}

pub(crate) fn renew(
    tx: &Transaction<'_>,
    flow: &str,
    fence: i64,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "UPDATE leases SET expires_at = ?3 WHERE flow = ?1 AND fence = ?2 AND holder IS NOT NULL",
        params![flow, fence, after(Utc::now(), ttl)],
    )?;
    Ok(changed == 1)
}

pub(crate) fn release(tx: &Transaction<'_>, flow: &str, fence: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE leases SET holder = NULL, holder_token = NULL, holder_host = NULL,
                holder_pid = NULL, run_id = NULL, expires_at = ?3
         WHERE flow = ?1 AND fence = ?2",
        params![flow, fence, timestamp(Utc::now())],
    )?;
    Ok(())
}

pub(crate) fn take_over_expired(
    tx: &Transaction<'_>,
    replica: &str,
    ttl: Duration,
) -> Result<Vec<Takeover>, StoreError> {
    let now = timestamp(Utc::now());
    let flows: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT flow FROM leases WHERE holder IS NOT NULL AND expires_at <= ?1 ORDER BY flow",
        )?;
        stmt.query_map(params![now], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let mut taken = Vec::new();
    for flow in flows {
        let Some(lease) = lease_of(tx, &flow)? else {
            continue;
        };
        let fence = lease.fence + 1;
        taken.push(settle_lapsed(
            tx,
            &flow,
            &lease,
            Lapse::Expired,
            replica,
            fence,
            ttl,
        )?);
        tx.execute(
            "UPDATE leases SET fence = ?2, holder = NULL, holder_token = NULL, holder_host = NULL,
                    holder_pid = NULL, run_id = NULL
             WHERE flow = ?1",
            params![flow, fence],
        )?;
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease too long for the calendar ends at its last moment rather
    /// than overflowing it.
    #[test]
    fn a_lease_past_the_calendar_ends_at_its_last_moment() {
        let now = Utc::now();
        assert_eq!(
            after(now, Duration::from_secs(3600 * 24 * 365 * 300_000)),
            timestamp(DateTime::<Utc>::MAX_UTC)
        );
        assert_eq!(
            after(now, Duration::MAX),
            timestamp(DateTime::<Utc>::MAX_UTC)
        );
        assert_eq!(
            after(now, Duration::from_secs(30)),
            timestamp(now + chrono::Duration::seconds(30))
        );
    }
}
