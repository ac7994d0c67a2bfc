//! OTLP/gRPC through tonic.

use anyhow::Context;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    profiles_service_client::ProfilesServiceClient, ExportProfilesServiceRequest,
};
use tonic::{
    codec::CompressionEncoding,
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code, Status,
};
use tonic_types::StatusExt;

use super::{Compression, EndpointConfig, SendError, Sent};

pub struct GrpcClient {
    client: ProfilesServiceClient<Channel>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl GrpcClient {
    pub fn new(cfg: &EndpointConfig) -> anyhow::Result<Self> {
        let url = cfg.url()?;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad gRPC endpoint {url}"))?
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout);
        if cfg.tls.insecure_skip_verify {
            anyhow::bail!(
                "tls.insecure_skip_verify is not supported for OTLP/gRPC; give the server's CA in tls.ca_file"
            );
        }
        if url.starts_with("https://") {
            let super::config::TlsFiles { ca, identity } = cfg.tls.read()?;
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        let mut client = ProfilesServiceClient::new(endpoint.connect_lazy());
        if cfg.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
        }
        let headers = cfg
            .headers
            .iter()
            .map(|(k, v)| {
                let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .with_context(|| format!("bad header name {k:?}"))?;
                let value =
                    AsciiMetadataValue::try_from(v.as_str()).with_context(|| format!("bad value of header {k}"))?;
                Ok((key, value))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { client, headers })
    }

    pub async fn send(&self, req: &ExportProfilesServiceRequest) -> Result<Sent, SendError> {
        let mut request = tonic::Request::new(req.clone());
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        match self.client.clone().export(request).await {
            Ok(resp) => {
                let p = resp.into_inner().partial_success.unwrap_or_default();
                Ok(Sent { rejected_profiles: p.rejected_profiles, message: p.error_message })
            }
            Err(status) => Err(classify(&status)),
        }
    }
}

/// OTLP/gRPC retry rules: these codes are transient; RESOURCE_EXHAUSTED only when the server
/// says when to come back (RetryInfo); everything else is permanent.
pub fn classify(status: &Status) -> SendError {
    let retry_after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let message = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => SendError::Retryable { message, retry_after },
        Code::ResourceExhausted if retry_after.is_some() => SendError::Retryable { message, retry_after },
        _ => SendError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    #[test]
    fn grpc_codes_follow_the_otlp_retry_rules() {
        assert!(matches!(classify(&Status::unavailable("down")), SendError::Retryable { retry_after: None, .. }));
        assert!(matches!(classify(&Status::invalid_argument("bad")), SendError::Permanent(_)));
        assert!(matches!(classify(&Status::resource_exhausted("full")), SendError::Permanent(_)));
        let with_info = Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        assert_eq!(
            classify(&with_info),
            SendError::Retryable {
                message: "gRPC ResourceExhausted: slow down".into(),
                retry_after: Some(Duration::from_millis(1500))
            }
        );
    }
}
