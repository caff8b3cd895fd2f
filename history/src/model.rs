//! What the history holds.

use serde::Serialize;

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub id: &'a str,
    pub flow: &'a str,
    pub flow_file: &'a str,
    /// `manual`, `schedule` or `demo`.
    pub trigger: &'a str,
    pub dry_run: bool,
    pub output_dir: &'a str,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub id: String,
    pub flow: String,
    pub trigger: String,
    pub dry_run: bool,
    /// As stored, except that a `running` run whose process is gone reads `interrupted`.
    pub status: String,
    pub error: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub output_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step_id: String,
    pub component: String,
    pub status: String,
    pub started_at: String,
    pub duration_ms: Option<i64>,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub connections: Option<String>,
    pub items_total: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemRecord {
    pub step_id: String,
    pub index: i64,
    pub status: String,
    pub duration_ms: i64,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    pub run: RunSummary,
    pub flow_file: String,
    pub steps: Vec<StepRecord>,
    pub items: Vec<ItemRecord>,
    pub artifacts: Vec<(String, String)>,
}
