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
        if let Err(e) = make_private(&path) {
            eprintln!(
                "warning: {} should be readable by its owner only, and cannot be made so: {e}",
                super::terminal::line(&path.display().to_string())
            );
        }
    }
}

/// 0700 for a directory, 0600 for a file; nothing for a path that does not
/// exist. SQLite gives a new WAL the permissions of its database.
#[cfg(unix)]
fn make_private(path: &Path) -> std::io::Result<()> {
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
fn make_private(_: &Path) -> std::io::Result<()> {
    Ok(())
}
