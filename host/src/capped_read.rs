//! Reading a file whole, but never more than a cap: a path that names a
//! device (`/dev/zero`) or a runaway file must not take the host's memory.

use std::io::Read;
use std::path::Path;

/// The file's bytes, at most `cap + 1` of them: more than `cap` says the
/// file is over it (the caller names the cap in its own error).
/// A named pipe or a socket is refused before it is opened: opening a pipe
/// waits for a writer, for ever if none comes.
pub fn read(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = std::fs::metadata(path)?.file_type();
        if kind.is_fifo() || kind.is_socket() {
            return Err(std::io::Error::other(
                "it is a named pipe or a socket, not a file",
            ));
        }
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_byte_past_the_cap_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read(&path, 10).unwrap(), b"0123456789");
        assert_eq!(read(&path, 4).unwrap(), b"01234");
        assert_eq!(read(Path::new("/dev/zero"), 16).unwrap().len(), 17);
        assert!(read(&dir.path().join("missing"), 4).is_err());
    }

    /// It was opened, which waits for a writer: `sluice validate` on a
    /// named pipe hung for ever.
    #[cfg(unix)]
    #[test]
    fn a_named_pipe_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("flow.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap();
        assert!(made.success());
        let refused = read(&pipe, 16).unwrap_err();
        assert!(refused.to_string().contains("named pipe"), "{refused}");
    }
}
