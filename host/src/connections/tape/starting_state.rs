//! `DIR/state.json`: the flow's state as a recorded run found it, one
//! JSON object of key to value. A replay starts from it, so it asks what
//! the recorded run asked (a delta link the run then replaced, say), and
//! never from the state the recorded run left behind. Written with the
//! cassettes, private to its owner, scrubbed of secrets as they are
//! (components never see a secret, so state should hold none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;

use super::cassette::{CassetteError, write_private};
use crate::redact::Redactor;
use crate::state::{Json, parse_value};

/// The file's name in a recording's directory.
pub const FILE: &str = "state.json";

/// Writes `entries` into `dir`; returns the file's path.
pub fn write(
    dir: &Path,
    entries: &[(String, Json)],
    redactor: &Redactor,
) -> Result<PathBuf, CassetteError> {
    let path = dir.join(FILE);
    let mut text = String::from("{");
    for (n, (key, value)) in entries.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push('\n');
        text.push_str(&serde_json::Value::from(key.as_str()).to_string());
        text.push(':');
        text.push_str(value.as_str());
    }
    text.push_str("\n}\n");
    write_private(&path, &redactor.redact(&text))?;
    Ok(path)
}

/// The entries `dir` holds; `None` when it has no state file (a recording
/// made before Sluice kept one).
pub fn read(dir: &Path) -> Result<Option<Vec<(String, Json)>>, CassetteError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CassetteError::Read {
                path,
                reason: e.kind().to_string(),
            });
        }
    };
    let invalid = |reason: String| CassetteError::Invalid {
        path: path.clone(),
        reason,
    };
    // The message names the line and column, never the content.
    let raw: BTreeMap<String, Box<RawValue>> = serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "not a JSON object of state keys and values (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    raw.into_iter()
        .map(|(key, value)| {
            let json = parse_value(value.get())
                .map_err(|e| invalid(format!("the value of state key {key:?}: {e}")))?;
            Ok((key, json))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_written_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let entries = vec![
            (
                "delta/\"groups\"".to_string(),
                Json::of(&json!("https://x/?t=1")),
            ),
            (
                "managed/a@x.com".to_string(),
                Json::of(&json!({"id": 7, "on": true})),
            ),
        ];
        let path = write(dir.path(), &entries, &Redactor::default()).unwrap();
        assert!(path.ends_with(FILE));
        assert_eq!(read(dir.path()).unwrap(), Some(entries));
    }

    #[test]
    fn a_damaged_state_file_is_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{\"k\": [1, 2,\n").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("line 2"), "{e}");
    }
}
