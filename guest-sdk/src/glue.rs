//! What [`step!`](crate::step) expands to: JSON in and out around a typed
//! step function, and `describe` from its types. Not for direct use.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::__bindings::sluice::flow::types::{ConnectionRole, ErrorKind as WitKind};
use crate::__bindings::{self, Description, RunContext};
use crate::{Context, ErrorKind, StepError, StepOutput};

/// The crate a component is built from, as its `Cargo.toml` says.
pub struct Package {
    /// `CARGO_PKG_NAME`.
    pub name: &'static str,
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
    /// `CARGO_PKG_DESCRIPTION`.
    pub summary: &'static str,
}

/// Parses the input, calls the step, serialises the output (or hands on
/// the text of a [`JsonText`](crate::JsonText) output). The input type may
/// borrow from the input's text (`#[serde(borrow)]`), so a step reading a
/// large list need not copy every string of it.
pub fn run<'a, I, O, F>(
    input: &'a str,
    context: RunContext,
    step: F,
) -> Result<String, __bindings::StepError>
where
    I: Deserialize<'a>,
    O: StepOutput,
    F: FnOnce(I, &Context) -> Result<O, StepError>,
{
    run_typed(input, &Context::new(context), step).map_err(to_wit)
}

fn run_typed<'a, I, O, F>(input: &'a str, context: &Context, step: F) -> Result<String, StepError>
where
    I: Deserialize<'a>,
    O: StepOutput,
    F: FnOnce(I, &Context) -> Result<O, StepError>,
{
    let input: I = serde_json::from_str(input).map_err(|e| {
        StepError::bad_input(format!(
            "the step's `with` does not fit this component: {e}"
        ))
    })?;
    step(input, context)?.into_text()
}

/// The output as JSON text, allocated once at its size: a text grown by
/// doubling may reserve twice what it holds, and a large output (the
/// people of a million-member tenant) must fit under the instance's cap
/// beside what it was written from. Serialising twice costs far less
/// than the step that built it.
pub(crate) fn to_text<O: Serialize>(output: &O) -> Result<String, StepError> {
    let bad = |e: &dyn std::fmt::Display| {
        StepError::internal(format!("the output could not be serialised: {e}"))
            .with_code("bad-output")
    };
    let mut size = Counted(0);
    serde_json::to_writer(&mut size, output).map_err(|e| bad(&e))?;
    let mut text = Vec::with_capacity(size.0);
    serde_json::to_writer(&mut text, output).map_err(|e| bad(&e))?;
    String::from_utf8(text).map_err(|e| bad(&e))
}

/// A writer that only counts what is written to it.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The component's description, from its package and its step's types.
pub fn describe<I, O, F>(_step: F, package: Package, roles: &[(&str, &str)]) -> Description
where
    I: JsonSchema,
    O: JsonSchema,
    F: FnOnce(I, &Context) -> Result<O, StepError>,
{
    Description {
        name: package.name.to_string(),
        version: package.version.to_string(),
        summary: package.summary.to_string(),
        input_schema: schema::<I>(),
        output_schema: schema::<O>(),
        connections: roles
            .iter()
            .map(|(role, summary)| ConnectionRole {
                role: role.to_string(),
                summary: summary.to_string(),
            })
            .collect(),
    }
}

/// The JSON Schema (draft 2020-12, schemars' default) of `T`, as text.
pub fn schema<T: JsonSchema>() -> String {
    schemars::schema_for!(T).as_value().to_string()
}

/// The SDK's error as the WIT's.
pub fn to_wit(e: StepError) -> __bindings::StepError {
    use WitKind as Wit;
    let kind = match e.kind {
        ErrorKind::BadInput => Wit::BadInput,
        ErrorKind::NotFound => Wit::NotFound,
        ErrorKind::Conflict => Wit::Conflict,
        ErrorKind::Forbidden => Wit::Forbidden,
        ErrorKind::Unavailable => Wit::Unavailable,
        ErrorKind::RateLimited => Wit::RateLimited,
        ErrorKind::Internal => Wit::Internal,
    };
    __bindings::StepError {
        kind,
        code: e.code,
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    struct In {
        name: String,
    }

    #[derive(Serialize, JsonSchema)]
    struct Out {
        greeting: String,
    }

    fn greet(input: In, _: &Context) -> Result<Out, StepError> {
        Ok(Out {
            greeting: format!("hi {}", input.name),
        })
    }

    fn context() -> Context {
        Context::new(RunContext {
            run_id: "r".into(),
            flow: "f".into(),
            step: "s".into(),
            item_index: None,
            item_key: None,
            dry_run: false,
            started_at: "2025-01-01T00:00:00+00:00".into(),
            attempt: 1,
        })
    }

    #[test]
    fn typed_in_and_out_and_a_clear_bad_input() {
        let out = run_typed(r#"{"name": "Ada"}"#, &context(), greet).unwrap();
        assert_eq!(out, r#"{"greeting":"hi Ada"}"#);
        let e = run_typed(r#"{"nom": "Ada"}"#, &context(), greet).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
    }

    #[test]
    fn the_output_text_is_allocated_at_its_size() {
        let people: Vec<String> = (0..5000).map(|i| format!("person \"{i}\"")).collect();
        let text = to_text(&people).unwrap();
        assert_eq!(text, serde_json::to_string(&people).unwrap());
        assert_eq!(text.capacity(), text.len(), "nothing reserved beyond it");
    }

    #[test]
    fn describe_carries_draft_2020_12_schemas_and_roles() {
        let d = describe(
            greet,
            Package {
                name: "greet",
                version: "1.0.0",
                summary: "Greets",
            },
            &[("api", "reads names")],
        );
        let input: serde_json::Value = serde_json::from_str(&d.input_schema).unwrap();
        assert_eq!(
            input["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(input["required"], serde_json::json!(["name"]));
        let output: serde_json::Value = serde_json::from_str(&d.output_schema).unwrap();
        assert_eq!(output["properties"]["greeting"]["type"], "string");
        assert_eq!(d.connections[0].role, "api");
        assert_eq!((d.name.as_str(), d.version.as_str()), ("greet", "1.0.0"));
    }

    fn greet_as_text(input: In, _: &Context) -> Result<crate::JsonText<Out>, StepError> {
        let greeting = serde_json::to_string(&format!("hi {}", input.name)).unwrap();
        Ok(crate::JsonText::new(format!(
            r#"{{"greeting":{greeting}}}"#
        )))
    }

    #[test]
    fn an_output_written_as_text_is_handed_on_as_it_is_with_its_shapes_schema() {
        let text = run_typed(r#"{"name": "Ada"}"#, &context(), greet_as_text).unwrap();
        let typed = run_typed(r#"{"name": "Ada"}"#, &context(), greet).unwrap();
        assert_eq!(text, typed);
        let package = || Package {
            name: "greet",
            version: "1.0.0",
            summary: "Greets",
        };
        assert_eq!(
            describe(greet_as_text, package(), &[]).output_schema,
            describe(greet, package(), &[]).output_schema
        );
    }
}
