//! The manifest of a component published in the `wkg oci push` layout: a
//! `application/vnd.wasm.config.v0+json` config and one `application/wasm`
//! layer holding the component.

use oci_client::manifest::OciImageManifest;

use crate::flow::component_file::MAX_COMPONENT_BYTES;

pub const WASM_LAYER: &str = "application/wasm";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer type of the older wasm-to-oci layout, still read.
const LEGACY_WASM_LAYER: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;

/// The manifest types asked for.
pub const ACCEPTED: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("its manifest is not an OCI image manifest: {0}")]
    Invalid(String),
    #[error(
        "it holds {0} wasm layers; a component is published as exactly one `application/wasm` layer"
    )]
    Layers(usize),
    #[error("its component is {0} bytes, more than the {MAX_COMPONENT_BYTES} allowed")]
    TooLarge(i64),
}

/// The wasm layer's descriptor.
pub fn wasm_layer(bytes: &[u8]) -> Result<oci_client::manifest::OciDescriptor, ManifestError> {
    let manifest: OciImageManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    let mut wasm: Vec<_> = manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == WASM_LAYER || l.media_type == LEGACY_WASM_LAYER)
        .collect();
    if wasm.len() != 1 {
        return Err(ManifestError::Layers(wasm.len()));
    }
    let layer = wasm.remove(0);
    if layer.size < 0 || layer.size as u64 > MAX_COMPONENT_BYTES {
        return Err(ManifestError::TooLarge(layer.size));
    }
    Ok(layer)
}
