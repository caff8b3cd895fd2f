//! Components from OCI registries: `uses = "oci://REGISTRY/REPO:TAG"` or
//! `"oci://REGISTRY/REPO@sha256:…"`.
//!
//! - [`reference`]: parsing the reference; which registries may be plain http
//! - [`lock`]: `sluice.lock` beside the flow pins each tag to a digest
//! - [`cache`]: pulled components kept by digest, checked on every read
//! - [`manifest`]: the `wkg oci push` layout (one `application/wasm` layer)
//! - [`registry`]: the client (oci-client): resolve, pull, push; credentials
//!
//! [`Resolver`] is what compiling a flow uses: a tag is pinned to the digest
//! it points at on first use; afterwards the pinned digest is used, from
//! the cache when it is there (so a run works offline), else pulled by
//! digest and verified. [`Mode::Update`] re-resolves tags instead.

pub mod cache;
pub mod lock;
pub mod manifest;
pub mod reference;
pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::flow::remote::{RemoteComponents, RemoteError};
use cache::Cache;
use lock::Lock;
use reference::OciRef;
use registry::Registry;

/// Whether tags already in the lock are looked up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Use the digest the lock pins; pin a tag that is not in it yet.
    Locked,
    /// Resolve every tag again and pin what it points at now.
    Update,
}

/// One reference, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub reference: String,
    pub digest: String,
    /// The digest the lock held before, when it changed.
    pub replaced: Option<String>,
    /// Whether its bytes came from the registry (not from the cache).
    pub pulled: bool,
}

/// Resolves `oci://` references for compiling flows.
pub struct Resolver {
    cache: Cache,
    mode: Mode,
    /// What was resolved, in order; also serialises lock file updates.
    resolved: Mutex<Vec<Resolved>>,
}

impl Resolver {
    /// Pulled components are kept in `data_dir/components`.
    pub fn new(data_dir: &Path, mode: Mode) -> Self {
        Resolver {
            cache: Cache::new(data_dir.join("components")),
            mode,
            resolved: Mutex::new(Vec::new()),
        }
    }

    pub fn resolved(&self) -> Vec<Resolved> {
        self.resolved.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn resolve_ref(&self, r: &OciRef, flow_file: &Path) -> Result<Resolved, String> {
        let lock_path = lock::path_for(flow_file);
        let mut lock = Lock::load(&lock_path).map_err(|e| e.to_string())?;
        let pinned = lock.components.get(&r.text).cloned();
        let known = match (r.digest(), self.mode, &pinned) {
            (Some(digest), _, _) => Some(digest.to_string()),
            (None, Mode::Locked, Some(digest)) => Some(digest.clone()),
            (None, _, _) => None,
        };
        let cached = match &known {
            Some(digest) => self.cache.get(digest).map_err(|e| {
                format!(
                    "{e}; remove the cached copy (under the data directory's `components`) \
                     and run again to pull it by its pinned digest"
                )
            })?,
            None => None,
        };
        let (digest, pulled) = match (known, cached) {
            (Some(digest), Some(_)) => (digest, false),
            (known, _) => (self.pull(r, known)?, true),
        };
        let mut replaced = None;
        if r.digest().is_none() && pinned.as_deref() != Some(&digest) {
            replaced = pinned;
            lock.components.insert(r.text.clone(), digest.clone());
            lock.save(&lock_path).map_err(|e| e.to_string())?;
        }
        Ok(Resolved {
            reference: r.text.clone(),
            digest,
            replaced,
            pulled,
        })
    }

    /// Pulls `digest` (or what the tag points at now) into the cache.
    fn pull(&self, r: &OciRef, digest: Option<String>) -> Result<String, String> {
        let registry = Registry::for_registry(r.registry());
        let pulled = block_on(async {
            let digest = match digest {
                Some(digest) => digest,
                None => registry.resolve(&r.reference).await?,
            };
            registry.pull(&r.reference, &digest).await
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        crate::flow::component_file::check_bytes(&pulled.wasm, &r.text)
            .map_err(|e| e.to_string())?;
        self.cache
            .put(&pulled.digest, &pulled.manifest, &pulled.wasm)
            .map_err(|e| e.to_string())?;
        Ok(pulled.digest)
    }
}

impl RemoteComponents for Resolver {
    fn resolve(&self, text: &str, flow_file: &Path) -> Result<PathBuf, RemoteError> {
        let r = OciRef::parse(text).map_err(|e| RemoteError {
            message: e.to_string(),
            hint: "write `oci://REGISTRY/REPO:TAG` or `oci://REGISTRY/REPO@sha256:…`".into(),
        })?;
        // One reference at a time: the lock file is read, then rewritten.
        let mut done = self.resolved.lock().map_err(|_| RemoteError {
            message: "an earlier pull failed midway".into(),
            hint: "run again".into(),
        })?;
        let resolved = self
            .resolve_ref(&r, flow_file)
            .map_err(|message| RemoteError {
                message: format!("component `{text}` cannot be used: {message}"),
                hint: "`sluice components pull FLOW` fetches and pins components ahead of a run; \
                   `sluice components update FLOW` pins what the tags point at now"
                    .into(),
            })?;
        let path = self
            .cache
            .get(&resolved.digest)
            .ok()
            .flatten()
            .ok_or_else(|| RemoteError {
                message: format!("component `{text}` was pulled but is not in the cache"),
                hint: "check that the data directory is writable".into(),
            })?;
        done.push(resolved);
        Ok(path)
    }
}

/// Runs `future` to its end on a runtime of its own, on a thread of its
/// own: compiling is synchronous and may itself be called from async code.
fn block_on<F: std::future::Future + Send>(future: F) -> Result<F::Output, String>
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(future))
                    .map_err(|e| format!("cannot start a runtime for the registry client: {e}"))
            })
            .join()
            .map_err(|_| "the registry client stopped unexpectedly".to_string())?
    })
}
