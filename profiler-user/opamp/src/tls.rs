//! rustls client configuration from [`TlsSettings`]. Built anew for every connection attempt, so
//! replacing the CA, certificate or key files on disk (rotation) takes effect on the next connect
//! without restarting the agent.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::{Error, TlsSettings};

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no PEM certificate", path.display())));
    }
    Ok(certs)
}

fn roots(tls: &TlsSettings) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            for c in certs(ca)? {
                store.add(c).map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(Error::Tls(format!(
                    "no usable system CA certificates ({} errors) and no ca_file",
                    native.errors.len()
                )));
            }
        }
    }
    Ok(store)
}

/// The client configuration for one connection attempt.
pub(crate) fn client_config(tls: &TlsSettings) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(tls)?), provider.clone())
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        match &tls.server_name_override {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| Error::Config(format!("server_name_override {name:?}: {e}")))?;
                builder.dangerous().with_custom_certificate_verifier(Arc::new(OverrideName { inner: verifier, name }))
            }
            None => builder.with_webpki_verifier(verifier),
        }
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| Error::Tls(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(Error::Config("cert_file and key_file must be set together".into())),
    }
}

/// Checks the certificate against `name` instead of the host in the URL: for servers reached
/// by IP address or through a tunnel whose certificate names the real host.
#[derive(Debug)]
struct OverrideName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for OverrideName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: accepts any certificate (signatures are still checked, so the
/// handshake is well-formed). For test servers only; the client logs a warning when used.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
