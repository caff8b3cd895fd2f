//! Looking for a secret the way an attacker reading our output would: in
//! every encoding a service, a component or a log might have put it in,
//! in every byte a run left behind.
//!
//! The spellings are worked out here, independently of the host's own
//! redactor, so a form the redactor forgets is a form this finds.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 3986's unreserved characters kept; everything else percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Every spelling of `secret` to look for: plain, percent-encoded (upper
/// and lower hex), form-encoded (`~` as `%7E`, space as `+`), JSON-escaped
/// (`\/`, `\u00XX`), and base64 (standard and URL-safe) wherever it starts
/// inside a longer base64 text; and each of these escaped once more as
/// inside a JSON string.
pub fn secret_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    let percent = utf8_percent_encode(secret, UNRESERVED).to_string();
    forms.push(lower_hex(&percent));
    forms.push(percent);
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    forms.push(lower_hex(&form));
    forms.push(form);
    forms.push(secret.replace('/', "\\/"));
    forms.push(
        secret
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else {
                    format!("\\u{:04x}", c as u32)
                }
            })
            .collect(),
    );
    for offset in 0..3 {
        forms.extend(base64_core(secret.as_bytes(), offset));
    }
    // Each of those as it stands inside a JSON string (a service that
    // echoes `tok\/en` in JSON writes `tok\\/en`).
    let in_json: Vec<String> = forms
        .iter()
        .map(|f| f.replace('\\', "\\\\").replace('"', "\\\""))
        .collect();
    forms.extend(in_json);
    forms.retain(|f| f.len() >= 6);
    forms.sort();
    forms.dedup();
    forms
}

/// `%2F` as `%2f`: encoders differ on the case of hex digits.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

/// The base64 characters that encode only `secret`'s own bits when it
/// starts `offset` bytes into a 3-byte group: the same whatever surrounds it.
fn base64_core(secret: &[u8], offset: usize) -> Vec<String> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(secret);
    let skip = (offset * 8).div_ceil(6);
    let whole = (padded.len() * 8) / 6;
    [STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .map(|engine| {
            let encoded = engine.encode(&padded);
            encoded
                .get(skip..whole.max(skip))
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Every file under `dir`, with its bytes: a data directory's history
/// database and its WAL, run folders, reports, cassettes.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                files.push((path.display().to_string(), bytes));
            }
        }
    }
    files
}

/// Where any spelling of any of `secrets` turns up in `places` (name,
/// bytes), as "secret #i (form #n) in PLACE" lines; empty when nowhere.
/// The secrets are named by index so a failure does not print them.
pub fn secrets_found(places: &[(String, Vec<u8>)], secrets: &[String]) -> Vec<String> {
    let mut owners = Vec::new();
    let mut patterns = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        for (n, form) in secret_forms(secret).into_iter().enumerate() {
            owners.push((i, n));
            patterns.push(form);
        }
    }
    let matcher = aho_corasick::AhoCorasick::new(&patterns).expect("secret forms");
    let mut found = Vec::new();
    for (place, bytes) in places {
        for hit in matcher.find_overlapping_iter(bytes) {
            let (i, n) = owners[hit.pattern().as_usize()];
            let line = format!("secret #{i} (form #{n}) in {place}");
            if !found.contains(&line) {
                found.push(line);
            }
        }
    }
    found
}
