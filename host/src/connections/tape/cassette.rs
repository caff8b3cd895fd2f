//! Cassettes: the exchanges of one connection, in the Ruby VCR layout.
//!
//! A cassette is a YAML document with `http_interactions` (each a request
//! — method, uri, body, headers — its response — status, headers, body —
//! and when it was recorded) and `recorded_with`, the layout VCR and the
//! libraries that copied it (vcrpy, go-vcr, Polly) read. Bodies are text
//! (`string`) when they are UTF-8 and base64 (`base64_string`) otherwise,
//! as VCR writes binary bodies.
//!
//! Nothing here knows about secrets: [`super::record`] removes them before
//! an exchange becomes an [`Interaction`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// What writes the cassettes, as VCR names itself in `recorded_with`.
pub const RECORDED_WITH: &str = concat!("Sluice ", env!("CARGO_PKG_VERSION"));

/// One connection's recorded exchanges, in the order they were answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    pub http_interactions: Vec<Interaction>,
    pub recorded_with: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub request: Request,
    pub response: Response,
    /// RFC 7231 date, as VCR writes it.
    pub recorded_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Lower-case, as VCR writes it (`get`, `post`).
    pub method: String,
    pub uri: String,
    pub body: Body,
    /// Every value of each header, by name.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub status: Status,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub code: u16,
    /// The reason phrase; empty when the status has none.
    #[serde(default)]
    pub message: String,
}

/// A body as VCR keeps it: text, or base64 for bytes that are not UTF-8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub encoding: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64_string: Option<String>,
}

impl Body {
    pub fn from_bytes(bytes: &[u8]) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body {
                encoding: "UTF-8".into(),
                string: Some(text.to_string()),
                base64_string: None,
            },
            // VCR's name for bytes without a text encoding.
            Err(_) => Body {
                encoding: "ASCII-8BIT".into(),
                string: None,
                base64_string: Some(STANDARD.encode(bytes)),
            },
        }
    }

    /// The body's bytes; `None` when its base64 does not decode.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match (&self.string, &self.base64_string) {
            (_, Some(b64)) => STANDARD.decode(b64.trim()).ok(),
            (Some(text), None) => Some(text.as_bytes().to_vec()),
            (None, None) => Some(Vec::new()),
        }
    }
}

/// Headers as a cassette keeps them: every value of a name together.
pub fn header_map<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.to_string())
            .or_default()
            .push(value.to_string());
    }
    map
}

/// A cassette that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    #[error("cannot read cassette {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("cassette {} is not a VCR cassette: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write cassette {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
}

impl Cassette {
    pub fn new(http_interactions: Vec<Interaction>) -> Cassette {
        Cassette {
            http_interactions,
            recorded_with: RECORDED_WITH.to_string(),
        }
    }

    pub fn read(path: &Path) -> Result<Cassette, CassetteError> {
        let text = std::fs::read_to_string(path).map_err(|e| CassetteError::Read {
            path: path.to_path_buf(),
            reason: e.kind().to_string(),
        })?;
        // The message names the line and column, never the content.
        serde_norway::from_str(&text).map_err(|e| CassetteError::Invalid {
            path: path.to_path_buf(),
            reason: e.location().map_or_else(
                || "it is not the YAML of a cassette".to_string(),
                |at| {
                    format!(
                        "line {}, column {}: expected http_interactions with request and response",
                        at.line(),
                        at.column()
                    )
                },
            ),
        })
    }

    /// The cassette as YAML, starting with the document marker VCR writes.
    pub fn to_yaml(&self) -> Result<String, String> {
        serde_norway::to_string(self)
            .map(|yaml| format!("---\n{yaml}"))
            .map_err(|e| e.to_string())
    }
}

/// Writes `text` to `path` through a file beside it, so a reader never sees
/// half a cassette, readable by its owner only: recorded answers hold
/// people's names and addresses. The file beside it gets a fresh random
/// name and is created, never opened: a link planted in the directory
/// under a name Sluice would use cannot point the write elsewhere.
pub fn write_private(path: &Path, text: &str) -> Result<(), CassetteError> {
    let failed = |e: std::io::Error| CassetteError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates with O_EXCL (a link at that name fails) and mode 0600.
    let mut partial = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(failed)?;
    std::io::Write::write_all(&mut partial, text.as_bytes()).map_err(failed)?;
    partial.as_file().sync_all().map_err(failed)?;
    // Renaming replaces a link at `path` itself, not what it points to.
    partial.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interaction(body: &[u8]) -> Interaction {
        Interaction {
            request: Request {
                method: "post".into(),
                uri: "https://api.example.com/rest/v1.0/companies/1/users".into(),
                body: Body::from_bytes(br#"{"user":{"last_name":"Ng"}}"#),
                headers: header_map([
                    ("Procore-Company-Id", "1"),
                    ("accept", "a"),
                    ("accept", "b"),
                ]),
            },
            response: Response {
                status: Status {
                    code: 201,
                    message: "Created".into(),
                },
                headers: header_map([("content-type", "application/json")]),
                body: Body::from_bytes(body),
            },
            recorded_at: "Tue, 01 Dec 2026 17:18:52 GMT".into(),
        }
    }

    #[test]
    fn a_cassette_is_vcr_yaml_and_reads_back_the_same() {
        let cassette = Cassette::new(vec![interaction(b"{\"id\":7}"), interaction(&[0xff, 0, 1])]);
        let yaml = cassette.to_yaml().unwrap();
        assert!(
            yaml.starts_with("---\nhttp_interactions:\n- request:\n    method: post\n"),
            "{yaml}"
        );
        assert!(yaml.contains("recorded_with: Sluice "), "{yaml}");
        assert!(
            yaml.contains("encoding: ASCII-8BIT\n      base64_string: /wAB"),
            "{yaml}"
        );
        assert!(yaml.contains("accept:\n      - a\n      - b"), "{yaml}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procore.yml");
        write_private(&path, &yaml).unwrap();
        let back = Cassette::read(&path).unwrap();
        assert_eq!(back, cassette);
        assert_eq!(
            back.http_interactions[1].response.body.bytes().unwrap(),
            [0xff, 0, 1]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// Links planted in the recording's directory, at the name the
    /// partial file used to have and at the cassette's own name, point the
    /// write nowhere: their targets are untouched and the cassette is a
    /// private file of its own.
    #[cfg(unix)]
    #[test]
    fn planted_links_do_not_redirect_a_cassette() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "ORIGINAL").unwrap();
        let elsewhere = dir.path().join("absent.txt");
        symlink(&victim, dir.path().join(".graph.yml.partial")).unwrap();
        symlink(&elsewhere, dir.path().join("graph.yml")).unwrap();
        let path = dir.path().join("graph.yml");
        write_private(&path, "---\nsecret: people\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ORIGINAL");
        assert!(
            !elsewhere.exists(),
            "the link at the cassette's name was followed"
        );
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link was replaced by the file"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "---\nsecret: people\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial") && n != ".graph.yml.partial")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_cassette_written_by_ruby_vcr_is_read() {
        // The shape VCR 6 writes (status message, US-ASCII empty body,
        // capitalised header names).
        let yaml = "---\nhttp_interactions:\n- request:\n    method: get\n    uri: http://example.com/\n    body:\n      encoding: US-ASCII\n      string: ''\n    headers:\n      Accept:\n      - \"*/*\"\n  response:\n    status:\n      code: 200\n      message: OK\n    headers:\n      Content-Type:\n      - text/html\n    body:\n      encoding: UTF-8\n      string: hello\n    http_version:\n  recorded_at: Tue, 01 Nov 2011 04:58:44 GMT\nrecorded_with: VCR 6.2.0\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, yaml).unwrap();
        let c = Cassette::read(&path).unwrap();
        assert_eq!(
            c.http_interactions[0].response.body.bytes().unwrap(),
            b"hello"
        );
        assert_eq!(c.http_interactions[0].request.headers["Accept"], ["*/*"]);
    }

    #[test]
    fn a_broken_cassette_is_named_by_line_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.yml");
        std::fs::write(&path, "http_interactions:\n- request: sekrit-value\n").unwrap();
        let e = Cassette::read(&path).unwrap_err().to_string();
        assert!(e.contains("graph.yml") && e.contains("line 2"), "{e}");
        assert!(!e.contains("sekrit"), "{e}");
    }
}
