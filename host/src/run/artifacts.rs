//! A step's artifacts: fields of its output written as files into the
//! run's folder, redacted, because a report file is read by people and
//! mailed and must not carry a secret a step saw.

use serde_json::Value;

use super::context::{Results, RunContext, StepFailure};
use super::events::RunEvent;
use crate::flow::Step;
use crate::flow::resolve::walk_ref;

/// Writes each of the step's artifacts that its output has (a missing or
/// null field writes nothing).
pub fn write(
    ctx: &RunContext<'_>,
    step: &Step,
    output: &Value,
    results: &mut Results,
) -> Result<(), StepFailure> {
    let dir = &ctx.options.output_dir;
    for (name, path) in &step.artifacts {
        let content = match walk_ref(output, path) {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => continue,
            Some(other) => serde_json::to_string_pretty(other).unwrap_or_default(),
        };
        let content = ctx.redactor.redact(&content);
        let target = dir.join(name);
        let written = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&target, content));
        if let Err(e) = written {
            return Err(StepFailure::Failed(format!(
                "step `{}` could not write artifact {}: {e}",
                step.id,
                target.display()
            )));
        }
        ctx.emit(&RunEvent::Artifact {
            step: step.id.clone(),
            name: name.clone(),
            path: target.clone(),
        });
        results.artifacts.push(target);
    }
    Ok(())
}
