//! A step's artifacts: fields of its output written as files into the
//! run's folder, redacted, because a report file is read by people and
//! mailed and must not carry a secret a step saw.

use super::context::{Results, RunContext, StepFailure};
use super::events::RunEvent;
use super::output::{Kind, StepOutput};
use crate::flow::Step;

/// Writes each of the step's artifacts that its output has. A null field
/// writes nothing (the component made no file this time); a missing one
/// writes nothing and says so in the run's log (a component that does not
/// describe its output cannot be checked before the run).
pub fn write(
    ctx: &RunContext<'_>,
    step: &Step,
    output: &StepOutput,
    results: &mut Results,
) -> Result<(), StepFailure> {
    let dir = &ctx.options.output_dir;
    for (name, path) in &step.artifacts {
        let content = match output.walk(path) {
            None => {
                ctx.emit(&RunEvent::Log {
                    step: step.id.clone(),
                    level: crate::engine::LogLevel::Warn,
                    message: format!(
                        "artifact {name} was not written: the step's output has no field `{}`",
                        path.join(".")
                    ),
                });
                continue;
            }
            Some(field) => match field.kind() {
                Kind::Null => continue,
                Kind::String => field.as_string().unwrap_or_default(),
                _ => serde_json::to_string_pretty(&field.to_value()).unwrap_or_default(),
            },
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
