//! The data directory (run history, report folders, the compile cache and
//! its key) is the operator's to protect, and Sluice keeps it owner-only:
//! every file and folder a `sluice` process creates is (umask 077), the
//! directory itself is made 0700 and the history files 0600, also when an
//! older version created them more open.

use std::path::Path;

/// From now on, files and folders this process creates are owner-only.
pub fn restrict_new_files() {
    #[cfg(unix)]
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data directory owner-only, or makes it so, with the
/// history files in it. What cannot be fixed is reported, not fatal: the
/// command that needs the directory says what went wrong with it.
pub fn prepare(dir: &Path) {
    if let Err(e) = crate::engine::cache::private_dir(dir) {
        eprintln!(
            "warning: cannot create the data directory {}: {}",
            super::terminal::line(&dir.display().to_string()),
            super::terminal::line(&sluice_store::location::folder_not_made(dir, &e))
        );
        return;
    }
    let history = sluice_store::path_in(dir);
    let mut owned = vec![dir.to_path_buf()];
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = history.as_os_str().to_os_string();
        name.push(suffix);
        owned.push(name.into());
    }
    for path in owned {
        if let Err(e) = crate::engine::cache::make_private(&path) {
            eprintln!(
                "warning: {} should be readable by its owner only, and cannot be made so: {e}",
                super::terminal::line(&path.display().to_string())
            );
        }
    }
}
