//! Pulled components, kept by the digest of their manifest, so that a run
//! works offline once a component has been pulled.
//!
//! `DIR/sha256/HEX/manifest.json` is the manifest as the registry served
//! it and `component.wasm` its wasm layer. Both are checked each time they
//! are read: the manifest must hash to the digest asked for, the layer to
//! the digest the manifest gives it. Bytes that do not match are refused,
//! never used.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::{self, ManifestError};

/// Where a run finds pulled components.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "the cached copy of {digest} does not match its digest ({what}); it was changed after it was pulled"
    )]
    Tampered { digest: String, what: &'static str },
    #[error("the cached copy of {digest} is not usable: {0}", .source)]
    Manifest {
        digest: String,
        source: ManifestError,
    },
    #[error("cannot use the component cache {path}: {reason}")]
    Io { path: String, reason: String },
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    fn entry(&self, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.dir.join(algorithm).join(hex)
    }

    /// The verified component file for `digest`, or `None` when it was
    /// never pulled.
    pub fn get(&self, digest: &str) -> Result<Option<PathBuf>, CacheError> {
        let entry = self.entry(digest);
        let manifest_bytes = match std::fs::read(entry.join("manifest.json")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&entry, &e)),
        };
        if sha256(&manifest_bytes) != digest {
            return Err(CacheError::Tampered {
                digest: digest.to_string(),
                what: "manifest",
            });
        }
        let layer =
            manifest::wasm_layer(&manifest_bytes).map_err(|source| CacheError::Manifest {
                digest: digest.to_string(),
                source,
            })?;
        let wasm = entry.join("component.wasm");
        let bytes = match std::fs::read(&wasm) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&wasm, &e)),
        };
        if sha256(&bytes) != layer.digest {
            return Err(CacheError::Tampered {
                digest: digest.to_string(),
                what: "component",
            });
        }
        Ok(Some(wasm))
    }

    /// Keeps a pulled component (already verified by the caller) and
    /// returns its file. Each file is written whole, then renamed.
    pub fn put(&self, digest: &str, manifest: &[u8], wasm: &[u8]) -> Result<PathBuf, CacheError> {
        let entry = self.entry(digest);
        std::fs::create_dir_all(&entry).map_err(|e| io(&entry, &e))?;
        write_whole(&entry, "component.wasm", wasm)?;
        // The manifest last: an entry without one is not there.
        write_whole(&entry, "manifest.json", manifest)?;
        Ok(entry.join("component.wasm"))
    }
}

fn write_whole(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
    let path = dir.join(name);
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(dir, &e))?;
    std::io::Write::write_all(&mut file, bytes).map_err(|e| io(&path, &e))?;
    file.persist(&path).map_err(|e| io(&path, &e.error))?;
    Ok(())
}

fn io(path: &Path, e: &std::io::Error) -> CacheError {
    CacheError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(wasm: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": manifest::WASM_CONFIG, "digest": sha256(b"{}"), "size": 2},
            "layers": [{"mediaType": manifest::WASM_LAYER, "digest": sha256(wasm), "size": wasm.len()}],
        }))
        .unwrap()
    }

    #[test]
    fn a_cached_component_is_found_by_digest_and_a_changed_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let wasm = b"\0asm\r\0\x01\0 component".to_vec();
        let manifest = manifest_for(&wasm);
        let digest = sha256(&manifest);
        assert!(cache.get(&digest).unwrap().is_none());
        let path = cache.put(&digest, &manifest, &wasm).unwrap();
        assert_eq!(cache.get(&digest).unwrap(), Some(path.clone()));
        std::fs::write(&path, b"\0asm\r\0\x01\0 something else").unwrap();
        let e = cache.get(&digest).unwrap_err();
        assert!(
            matches!(
                e,
                CacheError::Tampered {
                    what: "component",
                    ..
                }
            ),
            "{e}"
        );
    }
}
