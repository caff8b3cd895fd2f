//! What a step function returns: a typed value the SDK serialises, or, for
//! an output too large to hold twice, the JSON text the step wrote itself.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::Serialize;

use crate::StepError;

/// A step function's output: anything [`Serialize`] (serialised by the
/// SDK into text allocated once at its size), or a [`JsonText`] handed to
/// the host as it is.
pub trait StepOutput {
    /// The output as the JSON text the host receives.
    fn into_text(self) -> Result<String, StepError>;
}

impl<T: Serialize> StepOutput for T {
    fn into_text(self) -> Result<String, StepError> {
        crate::glue::to_text(&self)
    }
}

/// An output the step wrote as JSON text itself, shaped as `S` (which
/// gives the output schema `describe` reports).
///
/// For a large output: serialising a value writes the whole text beside
/// the value it is written from; text the step wrote once (page by page,
/// into a buffer sized up front) is handed to the host without a copy. The host parses the text
/// and checks it against the schema like any output, so text that is not
/// JSON, or not shaped as `S`, fails the step there.
pub struct JsonText<S> {
    text: String,
    shape: PhantomData<fn() -> S>,
}

impl<S> JsonText<S> {
    /// `text`, which must be the JSON of a value of `S`.
    pub fn new(text: String) -> JsonText<S> {
        JsonText {
            text,
            shape: PhantomData,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<S> StepOutput for JsonText<S> {
    fn into_text(self) -> Result<String, StepError> {
        Ok(self.text)
    }
}

/// The schema of `S`: the text is `S` written out.
impl<S: JsonSchema> JsonSchema for JsonText<S> {
    fn inline_schema() -> bool {
        S::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        S::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        S::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        S::json_schema(generator)
    }
}
