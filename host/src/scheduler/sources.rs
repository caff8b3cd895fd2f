//! Which files `sluice serve` watches — the files named, and every `*.toml`
//! directly inside the directories named — and how it tells that one
//! changed: by a hash of its content, not its modification time (`cp -p`
//! keeps an old time, and two writes within one second share one).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The flow files found under the paths given, what was wrong with the
/// paths that are neither a file nor a readable directory, and the
/// `*.toml` entries of a directory that cannot be read (a link to nothing
/// or to itself).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub files: Vec<PathBuf>,
    pub problems: Vec<String>,
    pub unreadable: Vec<String>,
}

/// Lists the flow files the paths name, sorted within each directory.
pub fn expand(paths: &[PathBuf]) -> Found {
    let mut found = Found::default();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut files = Vec::new();
                    let named: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    for p in named {
                        // A folder named `*.toml` is not a flow; a link
                        // that leads nowhere (or back to itself) was meant
                        // to be one, so it is named, not skipped silently.
                        match std::fs::metadata(&p) {
                            Ok(meta) if meta.is_file() => files.push(p),
                            Ok(_) => {}
                            Err(e) => found
                                .unreadable
                                .push(format!("cannot read {}: {e}", p.display())),
                        }
                    }
                    files.sort();
                    found.files.extend(files);
                }
                Err(e) => found
                    .problems
                    .push(format!("cannot read {}: {e}", path.display())),
            }
        } else if path.is_file() {
            found.files.push(path.clone());
        } else {
            found.problems.push(format!(
                "{} is neither a flow file nor a directory",
                path.display()
            ));
        }
    }
    // A file named directly and through its directory is served once.
    let mut seen = std::collections::HashSet::new();
    found.files.retain(|f| seen.insert(f.clone()));
    found
}

/// What a flow file holds now: a SHA-256 of its bytes. `None` when it
/// cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

/// Reads no more than a flow file may hold (and one byte): a file over
/// that is refused when loaded, so what lies past it changes nothing.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let bytes = crate::capped_read::read(path, crate::flow::MAX_FLOW_BYTES).ok()?;
    Some(Fingerprint(Sha256::digest(&bytes).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_that_keeps_size_and_time_is_still_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "name = \"one\"").unwrap();
        let time = std::fs::metadata(&path).unwrap().modified().unwrap();
        let before = fingerprint(&path);
        // Same length, same modification time (as `cp -p` or a rewrite in
        // the same second leaves it).
        std::fs::write(&path, "name = \"two\"").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(time)
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), time);
        assert_ne!(fingerprint(&path), before);
        // Touching without changing the content is not a change.
        let same = fingerprint(&path);
        std::fs::write(&path, "name = \"two\"").unwrap();
        assert_eq!(fingerprint(&path), same);
        assert_eq!(fingerprint(&dir.path().join("gone.toml")), None);
    }

    #[test]
    fn directories_give_their_toml_files_and_bad_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.toml"), "").unwrap();
        std::fs::write(dir.path().join("a.toml"), "").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
        let looped = dir.path().join("loop.toml");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let missing = dir.path().join("missing");
        let found = expand(&[dir.path().to_path_buf(), missing.clone()]);
        assert_eq!(
            found.files,
            vec![dir.path().join("a.toml"), dir.path().join("b.toml")]
        );
        assert_eq!(
            found.problems,
            vec![format!(
                "{} is neither a flow file nor a directory",
                missing.display()
            )]
        );
        assert_eq!(found.unreadable.len(), 1, "{:?}", found.unreadable);
        assert!(
            found.unreadable[0].starts_with(&format!("cannot read {}: ", looped.display())),
            "{:?}",
            found.unreadable
        );
    }
}
