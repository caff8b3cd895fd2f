//! `oci://REGISTRY/REPO:TAG` and `oci://REGISTRY/REPO@sha256:…` in `uses`.

use std::net::IpAddr;
use std::str::FromStr;

use oci_client::Reference;

use crate::flow::remote::OCI_SCHEME;

/// A registry reference as written in a flow, parsed.
#[derive(Debug, Clone)]
pub struct OciRef {
    /// As written, `oci://` included: the key in the lock file.
    pub text: String,
    pub reference: Reference,
}

/// Why a reference is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("`{0}` does not start with `oci://`")]
    Scheme(String),
    #[error("`{0}` is not a registry reference: {1}")]
    Malformed(String, String),
    #[error("`{0}` names no registry host")]
    NoRegistry(String),
    #[error("`{0}` names neither a tag nor a digest")]
    NoTag(String),
    #[error("`{0}`: `{1}` is not a registry host name or address ({2})")]
    BadHost(String, String, String),
}

impl OciRef {
    pub fn parse(text: &str) -> Result<Self, RefError> {
        let rest = text
            .strip_prefix(OCI_SCHEME)
            .ok_or_else(|| RefError::Scheme(text.to_string()))?;
        // Without a host, the parser would quietly read Docker Hub.
        let host = rest.split('/').next().unwrap_or_default();
        if !rest.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost")
        {
            return Err(RefError::NoRegistry(text.to_string()));
        }
        let last = rest.rsplit('/').next().unwrap_or_default();
        if !last.contains(':') && !last.contains('@') {
            return Err(RefError::NoTag(text.to_string()));
        }
        let reference = Reference::from_str(rest)
            .map_err(|e| RefError::Malformed(text.to_string(), e.to_string()))?;
        // The client would fail on it later with words of its own
        // ("could not clone request builder" for `256.1.1.1`).
        url::Url::parse(&format!("https://{}/", reference.registry())).map_err(|e| {
            RefError::BadHost(
                text.to_string(),
                reference.registry().to_string(),
                e.to_string(),
            )
        })?;
        Ok(OciRef {
            text: text.to_string(),
            reference,
        })
    }

    /// The registry's host and port, as written.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The digest written in the reference itself (`…@sha256:…`).
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// The same repository at `digest`.
    pub fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }
}

/// Plain http is allowed only to a registry on this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        // `[::1]:5000`, `127.0.0.1:5000`, `localhost:5000`
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || IpAddr::from_str(host).is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests_parse_and_a_missing_host_or_tag_is_refused() {
        let r = OciRef::parse("oci://127.0.0.1:5000/sluice/compare:1.0").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.reference.repository(), "sluice/compare");
        assert_eq!(r.reference.tag(), Some("1.0"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = OciRef::parse(&format!("oci://ghcr.io/acme/compare@{digest}")).unwrap();
        assert_eq!(r.digest(), Some(digest.as_str()));
        assert!(matches!(
            OciRef::parse("oci://compare:1.0"),
            Err(RefError::NoRegistry(_))
        ));
        assert!(matches!(
            OciRef::parse("oci://ghcr.io/acme/compare"),
            Err(RefError::NoTag(_))
        ));
        assert!(matches!(
            OciRef::parse("https://ghcr.io/acme/compare:1"),
            Err(RefError::Scheme(_))
        ));
        let e = OciRef::parse("oci://256.1.1.1/x:1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`oci://256.1.1.1/x:1`: `256.1.1.1` is not a registry host name or address (invalid IPv4 address)"
        );
        assert!(OciRef::parse("oci://10.1.1.1:5000/x:1").is_ok());
    }

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.0.0.9",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["ghcr.io", "10.0.0.1:5000", "localhost.example.com:5000"] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
