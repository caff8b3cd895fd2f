//! Talking to an OCI registry: resolving a tag, pulling a manifest and its
//! wasm layer by digest, publishing a component.
//!
//! Credentials come from `SLUICE_REGISTRY_USERNAME` and
//! `SLUICE_REGISTRY_PASSWORD`, else from the Docker config file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, with its
//! credential helpers); without either, pulls are anonymous. Never from the
//! flow file. Plain http is used only for a registry on this machine.

use std::time::Duration;

use docker_credential::CredentialRetrievalError;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::cache::sha256;
use super::manifest::{self, ManifestError};
use super::reference::is_loopback;
use crate::redact::Redactor;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry}: {reason}")]
    Request { registry: String, reason: String },
    #[error("registry {registry} refused {}: {}", .credentials.refused(), .credentials.hint(.registry))]
    Unauthorized {
        registry: String,
        credentials: CredentialSource,
    },
    #[error("{reference}: the registry served a manifest that does not hash to {expected}")]
    ManifestDigest { reference: String, expected: String },
    #[error("{reference}: the registry served a component that does not hash to {expected}")]
    LayerDigest { reference: String, expected: String },
    #[error("{reference} is not a component: {source}")]
    Manifest {
        reference: String,
        source: ManifestError,
    },
}

/// A manifest and its component, both verified.
pub struct Pulled {
    pub digest: String,
    pub manifest: Vec<u8>,
    pub wasm: Vec<u8>,
}

/// Where the credentials for a registry came from: said when the registry
/// refuses them, never with the credentials themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Environment,
    DockerConfig,
    Anonymous,
    /// Anonymous because the Docker config file exists but could not be
    /// read or parsed (or its credential helper failed).
    UnreadableDockerConfig,
}

impl CredentialSource {
    fn refused(self) -> &'static str {
        match self {
            CredentialSource::Environment => {
                "the credentials in SLUICE_REGISTRY_USERNAME and SLUICE_REGISTRY_PASSWORD"
            }
            CredentialSource::DockerConfig => "the credentials of the Docker config file",
            CredentialSource::Anonymous => "an anonymous request (it needs credentials)",
            CredentialSource::UnreadableDockerConfig => {
                "an anonymous request, made because the Docker config file could not be read"
            }
        }
    }

    fn hint(self, registry: &str) -> String {
        match self {
            CredentialSource::Anonymous => format!(
                "set SLUICE_REGISTRY_USERNAME and SLUICE_REGISTRY_PASSWORD, or log in with \
                 `docker login {registry}` (Sluice reads $DOCKER_CONFIG/config.json, else \
                 ~/.docker/config.json)"
            ),
            CredentialSource::UnreadableDockerConfig => format!(
                "fix $DOCKER_CONFIG/config.json (else ~/.docker/config.json): it is unreadable \
                 or not valid JSON, or its credential helper failed (`docker login {registry}` \
                 rewrites it); or set SLUICE_REGISTRY_USERNAME and SLUICE_REGISTRY_PASSWORD"
            ),
            _ => "check the user name and password, and that the user may use this repository"
                .to_string(),
        }
    }
}

/// A client for the registry of one reference.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    source: CredentialSource,
    registry: String,
    /// The password, and `user:password` (whose base64 is the Basic
    /// header): a registry's error text may echo either, and it is shown.
    redactor: Redactor,
}

impl Registry {
    pub fn for_registry(registry: &str) -> Self {
        let protocol = if is_loopback(registry) {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        let (auth, source) = credentials(registry);
        let redactor = Redactor::default();
        if let RegistryAuth::Basic(user, password) = &auth {
            redactor.add(password.clone());
            redactor.add(format!("{user}:{password}"));
        }
        Registry {
            client,
            auth,
            source,
            registry: registry.to_string(),
            redactor,
        }
    }

    fn failed(&self, e: OciDistributionError) -> RegistryError {
        if refused(&e) {
            return RegistryError::Unauthorized {
                registry: self.registry.clone(),
                credentials: self.source,
            };
        }
        RegistryError::Request {
            registry: self.registry.clone(),
            reason: self.redactor.redact(&sluice_store::error::with_causes(&e)),
        }
    }

    /// The digest a tag (or digest) reference points at now.
    pub async fn resolve(&self, reference: &Reference) -> Result<String, RegistryError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, manifest::ACCEPTED)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(sha256(&bytes))
    }

    /// The manifest at `digest` in `reference`'s repository and its wasm
    /// layer, each checked against its digest.
    pub async fn pull(&self, reference: &Reference, digest: &str) -> Result<Pulled, RegistryError> {
        let at = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            digest.to_string(),
        );
        let (manifest_bytes, _) = self
            .client
            .pull_manifest_raw(&at, &self.auth, manifest::ACCEPTED)
            .await
            .map_err(|e| self.failed(e))?;
        if sha256(&manifest_bytes) != digest {
            return Err(RegistryError::ManifestDigest {
                reference: at.whole(),
                expected: digest.to_string(),
            });
        }
        let layer = manifest::wasm_layer(&manifest_bytes).map_err(|source| {
            // A manifest that does not parse is quoted in part.
            let source = match source {
                ManifestError::Invalid(why) => ManifestError::Invalid(self.redactor.redact(&why)),
                other => other,
            };
            RegistryError::Manifest {
                reference: at.whole(),
                source,
            }
        })?;
        let mut wasm = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0));
        self.client
            .pull_blob(&at, &layer, &mut wasm)
            .await
            .map_err(|e| self.failed(e))?;
        if sha256(&wasm) != layer.digest {
            return Err(RegistryError::LayerDigest {
                reference: at.whole(),
                expected: layer.digest,
            });
        }
        Ok(Pulled {
            digest: digest.to_string(),
            manifest: manifest_bytes,
            wasm,
        })
    }

    /// Publishes `wasm` at `reference` in the `wkg oci push` layout and
    /// returns the manifest's digest.
    pub async fn push(
        &self,
        reference: &Reference,
        wasm: Vec<u8>,
    ) -> Result<String, RegistryError> {
        let config = serde_json::json!({
            "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [sha256(&wasm)],
        });
        let config = Config::new(
            config.to_string().into_bytes(),
            manifest::WASM_CONFIG.into(),
            None,
        );
        let layer = ImageLayer::new(wasm, manifest::WASM_LAYER.into(), None);
        self.client
            .push(reference, &[layer], config, &self.auth, None)
            .await
            .map_err(|e| self.failed(e))?;
        self.resolve(reference).await
    }
}

/// Whether the registry refused the request for want of (valid)
/// credentials: 401, 403, or the spec's UNAUTHORIZED and DENIED codes.
fn refused(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

/// The credentials for `registry`: the environment first, then Docker's.
fn credentials(registry: &str) -> (RegistryAuth, CredentialSource) {
    if let (Ok(user), Ok(password)) = (
        std::env::var("SLUICE_REGISTRY_USERNAME"),
        std::env::var("SLUICE_REGISTRY_PASSWORD"),
    ) {
        return (
            RegistryAuth::Basic(user, password),
            CredentialSource::Environment,
        );
    }
    match docker_credential::get_credential(registry) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => (
            RegistryAuth::Basic(user, password),
            CredentialSource::DockerConfig,
        ),
        // An identity token is exchanged by Docker's own flow, which this
        // client does not speak; a missing file or entry means anonymous.
        Ok(docker_credential::DockerCredential::IdentityToken(_))
        | Err(
            CredentialRetrievalError::NoCredentialConfigured
            | CredentialRetrievalError::ConfigNotFound,
        ) => (RegistryAuth::Anonymous, CredentialSource::Anonymous),
        // The crate says ConfigReadError for a missing file too.
        Err(CredentialRetrievalError::ConfigReadError) if !docker_config_exists() => {
            (RegistryAuth::Anonymous, CredentialSource::Anonymous)
        }
        // A broken config still pulls anonymously (public repositories
        // work), but a refusal says why no login was sent.
        Err(_) => (
            RegistryAuth::Anonymous,
            CredentialSource::UnreadableDockerConfig,
        ),
    }
}

/// Whether the Docker config file exists where docker_credential looks:
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_exists() -> bool {
    let home = || std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"));
    std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(home)
        .is_some_and(|dir| dir.join("config.json").exists())
}
