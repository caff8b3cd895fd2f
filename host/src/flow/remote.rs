//! Components named by a registry reference in `uses`.
//!
//! `uses = "oci://REGISTRY/REPO:TAG"` (or `…@sha256:…`) names a component
//! published to an OCI registry. Compiling the flow asks a
//! [`RemoteComponents`] to turn the reference into a verified component
//! file on disk (pinning the tag in the lock file beside the flow on first
//! use); the registry client itself lives in `crate::oci`, so this module
//! stays free of the network.

use std::path::{Path, PathBuf};

/// The scheme that marks a registry reference in `uses`.
pub const OCI_SCHEME: &str = "oci://";

/// Why a registry reference could not be turned into a component file,
/// phrased for the flow's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// Resolves `oci://` references to component files.
pub trait RemoteComponents: Sync {
    /// The verified component file for `reference` (the whole `uses`
    /// text), used by the flow file at `flow_file`.
    fn resolve(&self, reference: &str, flow_file: &Path) -> Result<PathBuf, RemoteError>;
}

/// For callers that use no registry: every reference is refused.
pub struct NoRegistry;

impl RemoteComponents for NoRegistry {
    fn resolve(&self, reference: &str, _: &Path) -> Result<PathBuf, RemoteError> {
        Err(RemoteError {
            message: format!("`{reference}` names a registry, and none is reachable here"),
            hint: "use a built-in's name or a path to a .wasm file".into(),
        })
    }
}
