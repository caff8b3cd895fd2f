//! The demo's last words: what the run did, checked against what the
//! emulator's data says a correct sync does, and where the report is. A run
//! that failed gets the same account of what it changed before it stopped,
//! and the report it managed to write, if any.

use std::collections::BTreeSet;

use serde_json::Value;
use sluice_emulator::{ExpectedSync, StateSnapshot};

use crate::run::{RunOutcome, Status};

pub fn print(outcome: &RunOutcome, state: &StateSnapshot, expected: &ExpectedSync, dry_run: bool) {
    let succeeded = outcome.status == Status::Succeeded;
    let created = state.created_users();
    let summary = outcome
        .outputs
        .get("report")
        .and_then(|r| r.get("summary"))
        .cloned()
        .unwrap_or(Value::Null);
    let n = |k: &str| summary.get(k).and_then(Value::as_u64).unwrap_or(0);
    if dry_run {
        eprintln!(
            "Rehearsal: {} people would be created in Procore; nothing was changed.",
            n("would_create")
        );
    } else if created.is_empty() && !succeeded {
        eprintln!("No Procore user was created before the run stopped.");
    } else if created.is_empty() {
        eprintln!("Nothing to create: every license holder is already in Procore.");
    } else {
        eprintln!(
            "Created {} Procore user{}:",
            created.len(),
            if created.len() == 1 { "" } else { "s" }
        );
        let width = created
            .iter()
            .map(|u| format!("{} {}", u.first_name, u.last_name).chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        for u in &created {
            let name: String = format!("{} {}", u.first_name, u.last_name)
                .chars()
                .take(40)
                .collect();
            eprintln!("  + {name:<width$}  {}", u.email_address);
        }
    }
    if !summary.is_null() {
        eprintln!(
            "Already in Procore: {}   inactive there (not re-created): {}   conflicts: {}   failed: {}   disabled accounts skipped: {}",
            n("present"),
            n("inactive_in_procore"),
            n("conflicts"),
            n("failed"),
            n("skipped_disabled")
        );
    }
    if !dry_run && succeeded {
        let made: BTreeSet<String> = created
            .iter()
            .map(|u| u.email_address.to_lowercase())
            .collect();
        if made == expected.to_create {
            eprintln!(
                "✓ Matches the emulator's ground truth: exactly the {} missing license holders were created.",
                made.len()
            );
        } else {
            eprintln!(
                "✗ Differs from the emulator's ground truth ({} expected, {} created).",
                expected.to_create.len(),
                made.len()
            );
        }
    }
    match state.mails.last() {
        Some(mail) => eprintln!(
            "Mailed the report from {} to {}: \"{}\"",
            mail.from,
            mail.to.join(", "),
            mail.subject
        ),
        None => eprintln!(
            "No mail sent{}.",
            if dry_run {
                " (dry run)"
            } else if !succeeded {
                ""
            } else {
                " (nothing created or failed)"
            }
        ),
    }
    let faults = state.requests.iter().filter(|r| r.fault.is_some()).count();
    if faults > 0 {
        eprintln!("Faults injected by the emulators: {faults} requests.");
    }
    for path in &outcome.artifacts {
        let what = if succeeded {
            "Report"
        } else {
            "Partial report"
        };
        eprintln!("\n{what}: {}", path.display());
    }
    if outcome.artifacts.is_empty() {
        eprintln!("\nNo report was written: the run stopped before its report step.");
    }
    if succeeded {
        eprintln!(
            "\nNext: `sluice emulate` serves these emulators for your own runs; set the GRAPH_* and PROCORE_* variables and `sluice run flows/procore-license-sync.toml --dry-run` to rehearse against your tenant."
        );
    }
}
