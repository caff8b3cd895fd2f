//! `GET /metrics`: the run history as Prometheus metrics, in the text
//! exposition format (the `prometheus` crate encodes it).
//!
//! Runs may be written by this process (`sluice serve --http`) or by any
//! other (`sluice run`, another `serve`), so the metrics follow the history
//! rather than the events of this process: at each scrape the runs that
//! finished since the last one are counted once. At start every finished
//! run of the history is counted, so a restart does not lower a counter
//! (Prometheus would read that as a reset), and pruning old runs lowers
//! nothing either, since what was counted stays counted.
//!
//! Run ids begin with their start time, so new runs are found by reading
//! the runs from an hour before the newest one seen (a run is written
//! within moments of getting its id; the hour absorbs clocks that differ
//! between processes); runs seen running are asked for by id until they
//! end, however long they take.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use serde_json::Value;
use sluice_store::browse::RunOverview;
use sluice_store::{PlanQuery, RunStatus, RunSummary, StepStatus};
use tokio::sync::Mutex;

use super::data::{Data, DataError};

/// Run durations: from a quick run to a long sync of a large tenant.
const RUN_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];
/// Step durations: from one request to a long paged read.
const STEP_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];
/// How far before the newest run seen the next scrape looks for new runs.
const LOOK_BACK: chrono::Duration = chrono::Duration::hours(1);

/// The metrics and what has been counted into them.
pub struct Metrics {
    registry: Registry,
    series: Series,
    follow: Mutex<Follow>,
}

struct Series {
    runs: IntCounterVec,
    running: IntGaugeVec,
    run_seconds: HistogramVec,
    step_seconds: HistogramVec,
    requests: IntCounterVec,
    retries: IntCounterVec,
    throttled: IntCounterVec,
    wait_seconds: CounterVec,
    last_success: GaugeVec,
    approvals_pending: IntGaugeVec,
}

/// Where the reading of the history stands.
#[derive(Default)]
struct Follow {
    /// Runs counted, among those at or after `floor` (older ones are not
    /// read again, so they are forgotten).
    counted: HashSet<String>,
    /// Runs seen running, by id, with their flow.
    running: HashMap<String, String>,
    /// Every flow seen in a run or a plan: its gauges read 0 rather than
    /// vanish when nothing runs or waits (an alert on `== 0`, or a
    /// dashboard's line, needs the series).
    flows: BTreeSet<String>,
    /// Read runs whose id is at least this.
    floor: String,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<T>,
) -> prometheus::Result<T> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Series {
    fn new(r: &Registry) -> prometheus::Result<Series> {
        let conn = ["flow", "connection"];
        Ok(Series {
            runs: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sluice_runs_total",
                        "Runs that ended, by flow and status (succeeded, failed, skipped, interrupted).",
                    ),
                    &["flow", "status"],
                ),
            )?,
            running: register(
                r,
                IntGaugeVec::new(
                    Opts::new("sluice_runs_running", "Runs going now, by flow."),
                    &["flow"],
                ),
            )?,
            run_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "sluice_run_duration_seconds",
                        "How long runs took, by flow and status.",
                    )
                    .buckets(RUN_BUCKETS.to_vec()),
                    &["flow", "status"],
                ),
            )?,
            step_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "sluice_step_duration_seconds",
                        "How long steps that ran took, by flow and step.",
                    )
                    .buckets(STEP_BUCKETS.to_vec()),
                    &["flow", "step"],
                ),
            )?,
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sluice_connection_requests_total",
                        "Requests steps sent through each connection, retries included.",
                    ),
                    &conn,
                ),
            )?,
            retries: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sluice_connection_retries_total",
                        "Requests sent again after a failure, per connection.",
                    ),
                    &conn,
                ),
            )?,
            throttled: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "sluice_connection_throttled_total",
                        "Answers that said to slow down (429, or 503 with Retry-After), per connection.",
                    ),
                    &conn,
                ),
            )?,
            wait_seconds: register(
                r,
                CounterVec::new(
                    Opts::new(
                        "sluice_connection_wait_seconds_total",
                        "Time requests waited for a rate limit or a Retry-After, per connection.",
                    ),
                    &conn,
                ),
            )?,
            last_success: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "sluice_last_success_timestamp_seconds",
                        "When the latest succeeded run of each flow ended (Unix seconds).",
                    ),
                    &["flow"],
                ),
            )?,
            approvals_pending: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "sluice_approvals_pending",
                        "Items of open approval plans waiting for a decision, by flow.",
                    ),
                    &["flow"],
                ),
            )?,
        })
    }

    /// Counts one run that ended.
    fn count(&self, overview: &RunOverview) {
        let run = &overview.run;
        let status = run.status.as_str();
        self.runs.with_label_values(&[&run.flow, status]).inc();
        if let Some(ms) = run.duration_ms {
            self.run_seconds
                .with_label_values(&[&run.flow, status])
                .observe(ms as f64 / 1000.0);
        }
        if run.status == RunStatus::Succeeded
            && let Some(end) = run.ended_at.as_deref().and_then(unix_seconds)
        {
            let gauge = self.last_success.with_label_values(&[&run.flow]);
            if end > gauge.get() {
                gauge.set(end);
            }
        }
        for step in &overview.steps {
            if step.status != StepStatus::Skipped
                && let Some(ms) = step.duration_ms
            {
                self.step_seconds
                    .with_label_values(&[&run.flow, &step.step_id])
                    .observe(ms as f64 / 1000.0);
            }
            if let Some(Value::Object(conns)) = &step.connections {
                for (name, stats) in conns {
                    self.count_requests(&run.flow, name, stats);
                }
            }
        }
    }

    fn count_requests(&self, flow: &str, connection: &str, stats: &Value) {
        let n = |field: &str| stats.get(field).and_then(Value::as_u64).unwrap_or(0);
        let labels = [flow, connection];
        self.requests
            .with_label_values(&labels)
            .inc_by(n("requests"));
        self.retries.with_label_values(&labels).inc_by(n("retried"));
        self.throttled
            .with_label_values(&labels)
            .inc_by(n("throttled"));
        self.wait_seconds
            .with_label_values(&labels)
            .inc_by(n("wait_ms") as f64 / 1000.0);
    }
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let t = DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(t.timestamp_millis() as f64 / 1000.0)
}

/// The id prefix of runs that started at `t` or later.
fn id_floor(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let series = Series::new(&registry)?;
        Ok(Metrics {
            registry,
            series,
            follow: Mutex::new(Follow::default()),
        })
    }

    /// Counts the runs that ended since the last call.
    pub async fn refresh(&self, data: &Data) -> Result<(), DataError> {
        let mut follow = self.follow.lock().await;
        let mut seen = data.runs_from(follow.floor.clone()).await?;
        let known: HashSet<&str> = seen.iter().map(|r| r.id.as_str()).collect();
        let older: Vec<String> = follow
            .running
            .keys()
            .filter(|id| !known.contains(id.as_str()))
            .cloned()
            .collect();
        // A run pruned while it was seen running is simply no longer there.
        let still: Vec<RunSummary> = data.runs_by_id(older.clone()).await?;
        for id in older {
            follow.running.remove(&id);
        }
        seen.extend(still);
        let newest = seen.iter().map(|r| r.started_at.clone()).max();
        for run in seen {
            follow.flows.insert(run.flow.clone());
            if follow.counted.contains(&run.id) {
                continue;
            }
            if run.status == RunStatus::Running {
                follow.running.insert(run.id.clone(), run.flow.clone());
                continue;
            }
            follow.running.remove(&run.id);
            if let Some(overview) = data.overview(run.id.clone()).await? {
                self.series.count(&overview);
            }
            follow.counted.insert(run.id);
        }
        if let Some(t) = newest
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            let floor = id_floor(t.with_timezone(&Utc) - LOOK_BACK);
            if floor > follow.floor {
                follow.floor = floor;
            }
        }
        let floor = follow.floor.clone();
        follow.counted.retain(|id| *id >= floor);
        self.series.running.reset();
        for flow in &follow.flows {
            self.series.running.with_label_values(&[flow]).set(0);
        }
        for flow in follow.running.values() {
            self.series.running.with_label_values(&[flow]).inc();
        }
        self.count_pending(data, &mut follow.flows).await
    }

    /// Sets the pending approvals from the open plans (0 for each other
    /// flow in `flows`, which gains the plans' flows).
    async fn count_pending(
        &self,
        data: &Data,
        flows: &mut BTreeSet<String>,
    ) -> Result<(), DataError> {
        let open = PlanQuery {
            flow: None,
            include_closed: false,
            limit: 0,
        };
        let plans = data.plans(open).await?;
        self.series.approvals_pending.reset();
        flows.extend(plans.iter().map(|p| p.flow.clone()));
        for flow in flows.iter() {
            self.series
                .approvals_pending
                .with_label_values(&[flow])
                .set(0);
        }
        for plan in plans {
            let pending = i64::try_from(plan.counts.pending).unwrap_or(i64::MAX);
            self.series
                .approvals_pending
                .with_label_values(&[&plan.flow])
                .add(pending);
        }
        Ok(())
    }

    /// Every metric in the text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
