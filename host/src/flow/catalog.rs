//! What a flow needs to know about its components before anything runs.
//!
//! Compiling a flow asks a [`ComponentCatalog`] to load each step's
//! component and say what it is: its [`Description`] (name, version,
//! summary, input and output JSON Schemas, the connection roles it uses),
//! or that it exports no `describe`, or why it cannot be loaded. The
//! engine implements the catalog; this module stays free of wasmtime, so
//! flows can be checked (and tested) with any catalog.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::ComponentRef;

/// What a component says about itself through its `describe` export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    pub name: String,
    pub version: String,
    /// One line saying what it does.
    pub summary: String,
    /// JSON Schema (draft 2020-12) of the input: the step's resolved `with`.
    pub input_schema: Value,
    /// JSON Schema (draft 2020-12) of what it returns.
    pub output_schema: Value,
    /// The connections it sends requests through, each by the role it plays.
    pub connections: Vec<ConnectionRole>,
}

/// A connection a component expects, named by its role (`graph`,
/// `procore`); the flow binds each role to one of its connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRole {
    pub role: String,
    pub summary: String,
}

/// Why a component could not be loaded, phrased for the flow's author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    pub message: String,
    pub hint: String,
}

impl CatalogError {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CatalogError {}

/// Loads components and reports what they are.
pub trait ComponentCatalog: Send + Sync {
    /// The component's description; `Ok(None)` when it exports no `describe`.
    fn describe(&self, component: &ComponentRef) -> Result<Option<Description>, CatalogError>;
}

/// A catalog that loads nothing and knows no descriptions: every component
/// is taken as one without `describe`. For checks that need no components
/// (and until an engine-backed catalog is wired in).
#[derive(Debug, Default, Clone, Copy)]
pub struct Undescribed;

impl ComponentCatalog for Undescribed {
    fn describe(&self, _: &ComponentRef) -> Result<Option<Description>, CatalogError> {
        Ok(None)
    }
}
