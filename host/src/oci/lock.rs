//! `sluice.lock`: the digest each tag in `uses` resolved to when first
//! pulled, kept beside the flow file.
//!
//! Later runs use the pinned digest whatever the tag points at now, so a
//! component re-published under the same tag is not run until `sluice
//! components update` pins it. The file is TOML, one entry per reference
//! as written, shared by the flows of a directory; it is written whole
//! through a temporary file so a reader never sees half of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const LOCK_FILE: &str = "sluice.lock";
const HEADER: &str = "# sluice.lock: the digest each OCI component in `uses` was pinned to when\n\
# first pulled. Runs use these digests whatever the tags point at now;\n\
# `sluice components update FLOW` re-resolves the tags. Commit this file.\n";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub version: u32,
    /// Reference as written in `uses` → `sha256:…` of its manifest.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is not a lock file sluice wrote: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// The lock file of the flow at `flow_file`.
pub fn path_for(flow_file: &Path) -> PathBuf {
    flow_file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(LOCK_FILE)
}

impl Lock {
    /// The lock at `path`, or an empty one when there is none yet.
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lock {
                    version: 1,
                    ..Lock::default()
                });
            }
            Err(e) => {
                return Err(LockError::Read {
                    path: shown,
                    reason: e.to_string(),
                });
            }
        };
        let lock: Lock = toml::from_str(&text).map_err(|e| LockError::Invalid {
            path: shown.clone(),
            reason: e.message().to_string(),
        })?;
        if lock.version != 1 {
            return Err(LockError::Invalid {
                path: shown,
                reason: format!("version {} is not 1", lock.version),
            });
        }
        Ok(lock)
    }

    pub fn save(&self, path: &Path) -> Result<(), LockError> {
        let failed = |e: &dyn std::fmt::Display| LockError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let body = toml::to_string(self).map_err(|e| failed(&e))?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| failed(&e))?;
        std::io::Write::write_all(&mut file, format!("{HEADER}{body}").as_bytes())
            .map_err(|e| failed(&e))?;
        file.persist(path).map_err(|e| failed(&e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_round_trips_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        assert!(Lock::load(&path).unwrap().components.is_empty());
        let mut lock = Lock::load(&path).unwrap();
        lock.components.insert(
            "oci://127.0.0.1:5000/sluice/compare:1".into(),
            format!("sha256:{}", "b".repeat(64)),
        );
        lock.save(&path).unwrap();
        assert_eq!(Lock::load(&path).unwrap(), lock);
        std::fs::write(&path, "version = 7\n").unwrap();
        assert!(matches!(Lock::load(&path), Err(LockError::Invalid { .. })));
    }
}
