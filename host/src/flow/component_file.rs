//! A component named by path in `uses`: checked before it is read.
//!
//! `uses` may name any path, so the file is looked at before any of it is
//! read: it must be a regular file (a directory is named as one), no larger
//! than [`MAX_COMPONENT_BYTES`], and start with the WebAssembly component
//! header. What is refused is said in one line that quotes none of the
//! file's content: `uses = "/proc/self/environ"` must not print the
//! environment.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// 64 MiB: the built-in components are well under 1 MiB, a component
/// written in a language that bundles its runtime a few tens of MiB.
/// Anything larger is not a component, and is not read whole.
pub const MAX_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;

/// `\0asm`, then version 0x0d and layer 1: a component, not a core module.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// `\0asm` version 1, layer 0: a core WebAssembly module.
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Why a `uses` path is not a component file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentFileError {
    #[error("component file `{0}` does not exist")]
    Missing(String),
    #[error("`{0}` is a directory, not a component file")]
    Directory(String),
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    #[error("component file `{path}` is {size} bytes, more than the {max} allowed")]
    TooLarge { path: String, size: u64, max: u64 },
    #[error("`{0}` is a core WebAssembly module, not a component")]
    CoreModule(String),
    #[error("`{0}` is not a WebAssembly component")]
    NotAComponent(String),
    #[error("component file `{path}` cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("`{0}` is a symbolic link that leads back to itself (or through too many links)")]
    SymlinkLoop(String),
}

impl ComponentFileError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ComponentFileError::Missing(_) | ComponentFileError::Directory(_) => {
                "paths in `uses` are relative to the flow file and name a .wasm file; build it first (a Rust component: `cargo build --release --target wasm32-wasip2`)"
            }
            ComponentFileError::NotAFile(_) | ComponentFileError::NotAComponent(_) => {
                "`uses` takes a built-in's name or a WebAssembly component (.wasm) built for wasm32-wasip2"
            }
            ComponentFileError::TooLarge { .. } => {
                "components are at most 64 MiB; check that `uses` names the right file"
            }
            ComponentFileError::CoreModule(_) => {
                "build for `wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
            }
            ComponentFileError::Unreadable { .. } => "check the file's permissions",
            ComponentFileError::SymlinkLoop(_) => {
                "point `uses` at the .wasm file itself, or mend the link"
            }
        }
    }
}

/// Checks the file at `path` without reading more than its header.
pub fn check(path: &Path) -> Result<(), ComponentFileError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ComponentFileError::Missing(shown));
        }
        Err(e) => return Err(unreadable(&shown, &e)),
    };
    if meta.is_dir() {
        return Err(ComponentFileError::Directory(shown));
    }
    if !meta.is_file() {
        return Err(ComponentFileError::NotAFile(shown));
    }
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(ComponentFileError::TooLarge {
            path: shown,
            size: meta.len(),
            max: MAX_COMPONENT_BYTES,
        });
    }
    let mut header = [0u8; 8];
    let mut file = File::open(path).map_err(|e| unreadable(&shown, &e))?;
    let read = read_up_to(&mut file, &mut header).map_err(|e| unreadable(&shown, &e))?;
    check_bytes(&header[..read], &shown)
}

/// Checks that `bytes` (all of a component, or its first bytes) start
/// with the component header; `shown` names them in the error.
pub fn check_bytes(bytes: &[u8], shown: &str) -> Result<(), ComponentFileError> {
    match bytes.get(..COMPONENT_HEADER.len()).unwrap_or(bytes) {
        h if h == COMPONENT_HEADER => Ok(()),
        h if h == MODULE_HEADER => Err(ComponentFileError::CoreModule(shown.to_string())),
        _ => Err(ComponentFileError::NotAComponent(shown.to_string())),
    }
}

/// Reads the whole file, after [`check`], never more than the cap (the file
/// may grow between the two).
pub fn read(path: &Path) -> Result<Vec<u8>, ComponentFileError> {
    check(path)?;
    let shown = path.display().to_string();
    let bytes =
        crate::capped_read::read(path, MAX_COMPONENT_BYTES).map_err(|e| unreadable(&shown, &e))?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(ComponentFileError::TooLarge {
            path: shown,
            size: bytes.len() as u64,
            max: MAX_COMPONENT_BYTES,
        });
    }
    Ok(bytes)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn unreadable(path: &str, e: &std::io::Error) -> ComponentFileError {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return ComponentFileError::SymlinkLoop(path.to_string());
    }
    ComponentFileError::Unreadable {
        path: path.to_string(),
        reason: e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_is_named_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.wasm");
        let b = dir.path().join("b.wasm");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = check(&a).unwrap_err();
        assert_eq!(e, ComponentFileError::SymlinkLoop(a.display().to_string()));
        assert!(e.hint().contains("mend the link"));
    }

    #[test]
    fn each_kind_of_wrong_file_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("passwd.wasm");
        std::fs::write(&text, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let e = check(&text).unwrap_err();
        assert!(matches!(e, ComponentFileError::NotAComponent(_)), "{e}");
        assert!(!e.to_string().contains("root:x"), "{e}");
        assert!(matches!(
            check(dir.path()),
            Err(ComponentFileError::Directory(_))
        ));
        assert!(matches!(
            check(&dir.path().join("nope.wasm")),
            Err(ComponentFileError::Missing(_))
        ));
        let module = dir.path().join("module.wasm");
        std::fs::write(&module, MODULE_HEADER).unwrap();
        assert!(matches!(
            check(&module),
            Err(ComponentFileError::CoreModule(_))
        ));
        let component = dir.path().join("c.wasm");
        std::fs::write(&component, COMPONENT_HEADER).unwrap();
        assert_eq!(check(&component), Ok(()));
        assert_eq!(read(&component).unwrap(), COMPONENT_HEADER);
    }

    #[test]
    fn a_file_over_the_cap_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.wasm");
        let file = File::create(&big).unwrap();
        // Sparse: the size is there, the bytes are not written.
        file.set_len(MAX_COMPONENT_BYTES + 1).unwrap();
        assert!(matches!(
            check(&big),
            Err(ComponentFileError::TooLarge { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_device_or_proc_file_is_not_read() {
        assert!(matches!(
            check(Path::new("/dev/zero")),
            Err(ComponentFileError::NotAFile(_))
        ));
        if Path::new("/proc/self/environ").exists() {
            let e = check(Path::new("/proc/self/environ")).unwrap_err();
            // A proc file reports size 0 and holds text: not a component.
            assert!(matches!(e, ComponentFileError::NotAComponent(_)), "{e}");
        }
    }
}
