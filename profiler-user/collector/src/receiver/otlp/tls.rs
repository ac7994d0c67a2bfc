//! TLS for the receiver's servers (`tls.cert_file`, `key_file`, `client_ca_file`), with rustls.
//!
//! The files are read and checked when the config is checked, so a bad certificate fails the
//! agent's start naming the key, not the first handshake. With `client_ca_file` a client must
//! present a certificate signed by one of its CAs (mutual TLS, the Collector's
//! `RequireAndVerifyClientCert`); without it, no client certificate is asked for.

use std::{path::Path, sync::Arc};

use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::config::TlsConfig;
use crate::config::ConfigError;

/// A checked TLS config: the PEM files as read, for both servers.
#[derive(Clone)]
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    /// The HTTP server's config, built once (it also proves the files are usable).
    http: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("mutual", &self.client_ca_pem.is_some()).finish()
    }
}

impl Tls {
    /// Reads and checks the files of `config` (at `path`, e.g. `receivers.otlp.protocols.http.tls`).
    pub fn load(config: &TlsConfig, path: &str) -> Result<Self, ConfigError> {
        let read = |file: &Option<std::path::PathBuf>, key: &str| -> Result<Vec<u8>, ConfigError> {
            let at = format!("{path}.{key}");
            let file = file.as_deref().ok_or_else(|| ConfigError::new(&at, "required when `tls` is set"))?;
            read_file(file, &at)
        };
        let cert_pem = read(&config.cert_file, "cert_file")?;
        let key_pem = read(&config.key_file, "key_file")?;
        let client_ca_pem = match &config.client_ca_file {
            Some(file) => Some(read_file(file, &format!("{path}.client_ca_file"))?),
            None => None,
        };
        let http = server_config(&cert_pem, &key_pem, client_ca_pem.as_deref(), path)?;
        Ok(Self { cert_pem, key_pem, client_ca_pem, http: Arc::new(http) })
    }

    /// For the HTTP server: offers HTTP/2 and HTTP/1.1 by ALPN.
    pub fn http_config(&self) -> Arc<ServerConfig> {
        self.http.clone()
    }

    /// For the gRPC server (tonic builds its own rustls config from the same files).
    pub fn tonic_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => config,
        }
    }
}

fn read_file(file: &Path, at: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(file).map_err(|e| ConfigError::new(at, format!("cannot read `{}`: {e}", file.display())))
}

fn server_config(cert: &[u8], key: &[u8], client_ca: Option<&[u8]>, path: &str) -> Result<ServerConfig, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::new(format!("{path}.cert_file"), format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(format!("{path}.cert_file"), "holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| ConfigError::new(format!("{path}.key_file"), format!("no PEM private key: {e}")))?;
    // An explicit provider: the process may link more than one rustls backend (reqwest, tonic).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new(path, e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let at = format!("{path}.client_ca_file");
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| ConfigError::new(&at, format!("not PEM certificates: {e}")))?;
                roots.add(c).map_err(|e| ConfigError::new(&at, format!("not a CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ConfigError::new(at, "holds no PEM certificate"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ConfigError::new(&at, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::new(format!("{path}.key_file"), format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
