//! OTLP/HTTP through reqwest (rustls).

use std::{io::Write, time::Duration};

use anyhow::Context;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER},
    StatusCode,
};

use super::{Compression, EndpointConfig, SendError, Sent};

pub struct HttpClient {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    gzip: bool,
}

impl HttpClient {
    pub fn new(cfg: &EndpointConfig) -> anyhow::Result<Self> {
        let url = cfg.url()?;
        let super::config::TlsFiles { ca, identity } = cfg.tls.read()?;
        let mut b = reqwest::Client::builder().timeout(cfg.timeout).connect_timeout(cfg.timeout).use_rustls_tls();
        if let Some(ca) = ca {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&ca).context("tls.ca_file is not PEM")?);
        }
        if let Some((cert, key)) = identity {
            let pem = [cert, b"\n".to_vec(), key].concat();
            b = b.identity(
                reqwest::Identity::from_pem(&pem)
                    .context("tls.cert_file/key_file are not a PEM certificate and key")?,
            );
        }
        if cfg.tls.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("bad header name {k:?}"))?;
            let value = HeaderValue::from_str(v).with_context(|| format!("bad value of header {k}"))?;
            headers.insert(name, value);
        }
        Ok(Self {
            client: b.build().context("building the HTTP client")?,
            url,
            headers,
            gzip: cfg.compression == Compression::Gzip,
        })
    }

    pub async fn send(&self, req: &ExportProfilesServiceRequest) -> Result<Sent, SendError> {
        let mut body = req.encode_to_vec();
        let mut rb =
            self.client.post(&self.url).headers(self.headers.clone()).header(CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            let mut gz =
                flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
            gz.write_all(&body)
                .and_then(|_| gz.finish())
                .map(|b| body = b)
                .map_err(|e| SendError::Permanent(format!("gzip: {e}")))?;
            rb = rb.header(CONTENT_ENCODING, "gzip");
        }
        let resp = match rb.body(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => return Err(SendError::Permanent(format!("HTTP request: {e}"))),
            Err(e) => return Err(SendError::Retryable { message: format!("HTTP: {e}"), retry_after: None }),
        };
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let bytes = resp.bytes().await.unwrap_or_default();
        classify(status, retry_after, &bytes)
    }
}

/// `Retry-After` as delta-seconds (the HTTP-date form is rare for OTLP backends and is ignored,
/// falling back to backoff).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// OTLP/HTTP rules: 2xx is success (body: partial success), 429/502/503/504 are retryable,
/// everything else is permanent.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Result<Sent, SendError> {
    if status.is_success() {
        let p = ExportProfilesServiceResponse::decode(body).ok().and_then(|r| r.partial_success).unwrap_or_default();
        return Ok(Sent { rejected_profiles: p.rejected_profiles, message: p.error_message });
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let message = format!("HTTP {status}: {text}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(SendError::Retryable { message, retry_after }),
        _ => Err(SendError::Permanent(message)),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesPartialSuccess;

    use super::*;

    #[test]
    fn http_statuses_follow_the_otlp_retry_rules() {
        let partial = ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess {
                rejected_profiles: 2,
                error_message: "too old".into(),
            }),
        };
        assert_eq!(
            classify(StatusCode::OK, None, &partial.encode_to_vec()),
            Ok(Sent { rejected_profiles: 2, message: "too old".into() })
        );
        assert_eq!(classify(StatusCode::OK, None, b""), Ok(Sent::default()));
        for code in [429, 502, 503, 504] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, Some(Duration::from_secs(3)), b""), Err(SendError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(3))
            );
        }
        for code in [400, 401, 404, 413, 500] {
            assert!(
                matches!(classify(StatusCode::from_u16(code).unwrap(), None, b"no"), Err(SendError::Permanent(_))),
                "{code}"
            );
        }
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
