//! The history as text for `sluice runs` and `sluice runs show`.

use std::fmt::Write as _;

use crate::{RunDetail, RunSummary};

fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn duration(start: &str, end: Option<&str>) -> String {
    let (Ok(s), Some(Ok(e))) = (
        chrono::DateTime::parse_from_rfc3339(start),
        end.map(chrono::DateTime::parse_from_rfc3339),
    ) else {
        return "—".into();
    };
    let ms = (e - s).num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

pub fn runs_table(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "No runs recorded yet.\n".into();
    }
    let mut out = format!(
        "{:<26} {:<24} {:<9} {:<12} {:<19} {:>8}\n",
        "RUN", "FLOW", "TRIGGER", "STATUS", "STARTED", "TOOK"
    );
    for r in runs {
        let status = if r.dry_run {
            format!("{} (dry)", r.status)
        } else {
            r.status.clone()
        };
        let _ = writeln!(
            out,
            "{:<26} {:<24} {:<9} {:<12} {:<19} {:>8}",
            r.id,
            r.flow.chars().take(24).collect::<String>(),
            r.trigger,
            status,
            short_time(&r.started_at),
            duration(&r.started_at, r.ended_at.as_deref())
        );
    }
    out
}

pub fn run_detail(d: &RunDetail) -> String {
    let r = &d.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {}  {}{}",
        r.id,
        r.status.to_uppercase(),
        if r.dry_run { "  (dry run)" } else { "" }
    );
    let _ = writeln!(out, "  flow      {} ({})", r.flow, d.flow_file);
    let _ = writeln!(out, "  trigger   {}", r.trigger);
    let _ = writeln!(
        out,
        "  started   {}   took {}",
        short_time(&r.started_at),
        duration(&r.started_at, r.ended_at.as_deref())
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error     {e}");
    }
    for (name, path) in &d.artifacts {
        let _ = writeln!(out, "  {name:<9} {path}");
    }
    if !d.steps.is_empty() {
        let _ = writeln!(out, "\nSteps:");
    }
    for s in &d.steps {
        let took = s.duration_ms.map_or("—".to_string(), |ms| {
            if ms < 1000 {
                format!("{ms} ms")
            } else {
                format!("{:.1} s", ms as f64 / 1000.0)
            }
        });
        let _ = writeln!(
            out,
            "  {:<12} {:<22} {:<12} {:>8}",
            s.step_id,
            s.component.rsplit('/').next().unwrap_or(&s.component),
            s.status,
            took
        );
        if let Some(total) = s.items_total {
            let items: Vec<_> = d.items.iter().filter(|i| i.step_id == s.step_id).collect();
            let failed = items.iter().filter(|i| i.status == "failed").count();
            let _ = writeln!(
                out,
                "      items: {} of {total} recorded, {failed} failed",
                items.len()
            );
            for i in items.iter().filter(|i| i.status == "failed").take(20) {
                let _ = writeln!(
                    out,
                    "        #{} {}",
                    i.index + 1,
                    i.error.as_deref().unwrap_or("failed")
                );
            }
        }
        for (label, value) in [("input", &s.input), ("output", &s.output)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty() && *v != "null") {
                let short: String = v.chars().take(160).collect();
                let more = if v.chars().count() > 160 { "…" } else { "" };
                let _ = writeln!(out, "      {label}: {short}{more}");
            }
        }
        if let Some(c) = s.connections.as_deref().filter(|c| *c != "{}") {
            let _ = writeln!(out, "      requests: {c}");
        }
        if let Some(e) = &s.error {
            let _ = writeln!(out, "      error: {e}");
        }
    }
    out
}
