//! Compiled components on disk, so a second `sluice run` does not compile.
//!
//! An entry is keyed by the SHA-256 of the component's bytes and by the
//! engine's compatibility hash (wasmtime version, target, settings), so a
//! changed component or engine never loads a stale artefact. Entries are
//! written to a temporary file and renamed, so a crash never leaves half
//! an entry; an entry that fails to load is compiled again and replaced.
//!
//! An entry is native code, run with the connections of the component it
//! is named after, so nothing in the cache is trusted for being there:
//! - each entry carries an HMAC-SHA256 over the component's digest, the
//!   engine's key and the compiled bytes, under a per-install key kept
//!   apart from the cache (`cache.key` beside the cache directory, owner
//!   only). An entry whose tag does not verify (replaced, copied from
//!   another component, truncated) is never deserialized: the component is
//!   compiled again and the entry rewritten.
//! - the cache directory and the key must be owner-only and owned by this
//!   user; otherwise the cache is not used at all (components are compiled
//!   on every run) and a warning says why.
//!
//! Directories are created 0700 and files 0600.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

type Tag = Hmac<Sha256>;

/// Bytes of an HMAC-SHA256 tag, stored before the compiled bytes.
const TAG_LEN: usize = 32;
/// Bytes of the per-install key.
const KEY_LEN: usize = 32;

pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn engine_key(engine: &wasmtime::Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

pub fn entry_path(dir: &Path, engine: &wasmtime::Engine, digest: &str) -> PathBuf {
    dir.join(format!("{digest}-{}.cwasm", engine_key(engine)))
}

/// Where the key that signs a cache directory's entries lives: beside the
/// directory (`…/cache` → `…/cache.key`), not in it.
pub fn key_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    dir.with_file_name(name)
}

/// How a component was obtained, for the benchmark and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Cached,
}

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("{} is writable by other users", .0.display())]
    Shared(PathBuf),
    #[error("{} belongs to another user", .0.display())]
    NotOurs(PathBuf),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

pub fn load_or_compile(
    engine: &wasmtime::Engine,
    dir: Option<&Path>,
    bytes: &[u8],
    digest: &str,
) -> anyhow::Result<(Component, Origin)> {
    let key = match dir.map(open_cache) {
        Some(Ok(key)) => dir.zip(Some(key)),
        Some(Err(e)) => {
            warn_once(&e);
            None
        }
        None => None,
    };
    let Some((dir, key)) = key else {
        return Ok((
            Component::new(engine, bytes).map_err(super::to_anyhow)?,
            Origin::Compiled,
        ));
    };
    let path = entry_path(dir, engine, digest);
    let label = format!("{digest}-{}", engine_key(engine));
    // Read into memory rather than mapped: another process replacing or
    // truncating the file must not be able to pull pages from under us.
    if let Ok(entry) = std::fs::read(&path)
        && let Some(compiled) = verified(&key, &label, &entry)
    {
        // SAFETY: the bytes carry a tag that only this install's key can
        // make, over this component's digest and this engine: this engine
        // compiled them from this component. wasmtime checks the header too.
        if let Ok(component) = unsafe { Component::deserialize(engine, compiled) } {
            return Ok((component, Origin::Cached));
        }
    }
    let compiled = engine
        .precompile_component(bytes)
        .map_err(super::to_anyhow)?;
    // A cache that cannot be written only costs time; the run goes on.
    let _ = store(&path, &key, &label, &compiled);
    // SAFETY: `compiled` was produced just now by this engine.
    let component =
        unsafe { Component::deserialize(engine, &compiled) }.map_err(super::to_anyhow)?;
    Ok((component, Origin::Compiled))
}

/// The compiled bytes of an entry whose tag verifies.
fn verified<'a>(key: &[u8; KEY_LEN], label: &str, entry: &'a [u8]) -> Option<&'a [u8]> {
    let (tag, compiled) = entry.split_at_checked(TAG_LEN)?;
    tag_for(key, label, compiled)?.verify_slice(tag).ok()?;
    Some(compiled)
}

/// The MAC over an entry (`None` only if HMAC refused the key, which it
/// does for no length).
fn tag_for(key: &[u8; KEY_LEN], label: &str, compiled: &[u8]) -> Option<Tag> {
    let mut mac = <Tag as Mac>::new_from_slice(key).ok()?;
    // The label is fixed-length (hex digest, dash, hex engine key), so it
    // and the compiled bytes cannot be shifted into each other.
    mac.update(label.as_bytes());
    mac.update(compiled);
    Some(mac)
}

fn store(path: &Path, key: &[u8; KEY_LEN], label: &str, compiled: &[u8]) -> std::io::Result<()> {
    let tag = tag_for(key, label, compiled)
        .ok_or_else(|| std::io::Error::other("no MAC for this key"))?
        .finalize()
        .into_bytes();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = private_file(&tmp, true).and_then(|mut f| {
        f.write_all(&tag)?;
        f.write_all(compiled)
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Makes sure the cache directory is private and returns the key that
/// signs its entries, creating both if needed.
fn open_cache(dir: &Path) -> Result<[u8; KEY_LEN], Unusable> {
    let io = |e| Unusable::Io {
        path: dir.to_path_buf(),
        error: e,
    };
    private_dir(dir).map_err(io)?;
    check_private(dir)?;
    make_private(dir).map_err(io)?;
    let key_file = key_path(dir);
    let key_io = |e| Unusable::Io {
        path: key_file.clone(),
        error: e,
    };
    let mut key = [0u8; KEY_LEN];
    match private_file(&key_file, false) {
        Ok(mut f) => {
            rand::Rng::fill(&mut rand::rng(), &mut key[..]);
            f.write_all(&key).map_err(key_io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            check_private(&key_file)?;
            make_private(&key_file).map_err(key_io)?;
            let read = std::fs::read(&key_file).map_err(key_io)?;
            key = read.try_into().map_err(|_| {
                key_io(std::io::Error::other(
                    "not a cache key; delete it and the cache directory",
                ))
            })?;
        }
        Err(e) => return Err(key_io(e)),
    }
    Ok(key)
}

/// Creates a directory (and its parents) owner-only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Opens a new owner-only file for writing (`replace`: truncating one
/// that exists; otherwise failing with `AlreadyExists`).
fn private_file(path: &Path, replace: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Refuses a path other users can write, or that belongs to another user.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), Unusable> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|error| Unusable::Io {
        path: path.to_path_buf(),
        error,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(Unusable::NotOurs(path.to_path_buf()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Unusable::Shared(path.to_path_buf()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), Unusable> {
    Ok(())
}

/// Makes a path owner-only: 0700 for a directory, 0600 for a file;
/// nothing for a path that does not exist. (The data directory's history
/// files: SQLite gives a new WAL the permissions of its database; the
/// cache and its key, once [`check_private`] found nobody else can write
/// them.)
#[cfg(unix)]
pub fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mode = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn make_private(_: &Path) -> std::io::Result<()> {
    Ok(())
}

impl Unusable {
    /// What makes it usable: owner-only, as a directory or as the key file.
    fn fix(&self) -> String {
        match self {
            Unusable::Shared(path) | Unusable::NotOurs(path) => {
                let mode = if path.is_dir() { "700" } else { "600" };
                format!(
                    "Make it owner-only (chmod {mode} {}) or remove it",
                    path.display()
                )
            }
            Unusable::Io { .. } => "Fix it or remove it".to_string(),
        }
    }
}

/// One warning per process: every component would say the same.
fn warn_once(why: &Unusable) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        let warning = format!(
            "the compiled-component cache is not used ({why}); components are compiled on every run. {}.",
            why.fix()
        );
        match TELL.get() {
            Some(tell) => tell(warning),
            None => eprintln!("warning: {warning}"),
        }
    });
}

/// Where the cache's warning goes instead of stderr, once set.
static TELL: std::sync::OnceLock<fn(String)> = std::sync::OnceLock::new();

/// Sends the cache's warning to `tell` (`sluice serve`: its log, in the
/// log's format) instead of stderr.
pub fn tell_warnings_with(tell: fn(String)) {
    let _ = TELL.set(tell);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key file is a file: its fix is 600, not the directory's 700.
    #[test]
    fn a_shared_cache_says_the_mode_that_fits_what_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("cache.key");
        std::fs::write(&key, [0u8; 32]).unwrap();
        let fix = |p: &Path| Unusable::Shared(p.to_path_buf()).fix();
        assert_eq!(
            fix(dir.path()),
            format!(
                "Make it owner-only (chmod 700 {}) or remove it",
                dir.path().display()
            )
        );
        assert_eq!(
            fix(&key),
            format!(
                "Make it owner-only (chmod 600 {}) or remove it",
                key.display()
            )
        );
    }

    #[test]
    fn an_entry_verifies_only_under_its_own_key_and_label() {
        let key = [7u8; KEY_LEN];
        let label = "ab-cd";
        let tag = tag_for(&key, label, b"native code")
            .unwrap()
            .finalize()
            .into_bytes();
        let mut entry = tag.to_vec();
        entry.extend_from_slice(b"native code");
        assert_eq!(verified(&key, label, &entry), Some(&b"native code"[..]));
        assert_eq!(verified(&[8u8; KEY_LEN], label, &entry), None);
        assert_eq!(verified(&key, "ab-ce", &entry), None);
        let mut changed = entry.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(verified(&key, label, &changed), None);
        assert_eq!(verified(&key, label, &entry[..10]), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_cache_directory_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("cache");
        let key = open_cache(&dir).unwrap();
        assert_eq!(open_cache(&dir).unwrap(), key, "the key is kept");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&key_path(&dir)), 0o600);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(open_cache(&dir), Err(Unusable::Shared(_))));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(key_path(&dir), std::fs::Permissions::from_mode(0o622)).unwrap();
        assert!(matches!(open_cache(&dir), Err(Unusable::Shared(_))));
    }

    /// A cache others can read but not change (an older one, or one a
    /// copy left readable) is used, and made owner-only: the key signs
    /// the compiled code it holds.
    #[cfg(unix)]
    #[test]
    fn a_cache_others_can_only_read_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("cache");
        let key = open_cache(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(key_path(&dir), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(open_cache(&dir).unwrap(), key, "the key is kept");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&key_path(&dir)), 0o600);
    }
}
