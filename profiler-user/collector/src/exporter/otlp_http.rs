//! `otlphttp` (alias `otlp_http`): OTLP/HTTP through reqwest (rustls), protobuf or OTLP/JSON,
//! one HTTP client shared by the exporter's signals. Each signal posts to `endpoint` plus
//! `/v1/traces`, `/v1/metrics`, `/v1/logs` or `/v1development/profiles`, unless its own
//! `<signal>_endpoint` is set (used as it is).

use std::{
    collections::BTreeMap,
    io::Write,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use prost::Message;
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER},
    StatusCode,
};
use serde::Deserialize;

use super::{
    config::{default_timeout, Compression, CompressionParams, QueueConfig, RetryConfig, TlsConfig},
    json,
    queued::QueuedExporter,
    transport::{Payload, Request, SendError, Sent, Transport},
};
use crate::{
    component::{BuildExporter, ComponentError, ComponentId, Exporter, ExporterFactory, Host},
    config::{deserialize_at, ConfigError},
    signal::{Data, Signal},
};

/// `encoding:` of `otlphttp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Proto,
    Json,
}

/// `exporters.otlphttp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpConfig {
    /// Base URL (`https://collector:4318`); the signal's path is appended.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    #[serde(default)]
    pub logs_endpoint: Option<String>,
    #[serde(default)]
    pub profiles_endpoint: Option<String>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub compression_params: CompressionParams,
    /// Per attempt.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

impl OtlpHttpConfig {
    /// A base URL with defaults for everything else.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            profiles_endpoint: None,
            encoding: Encoding::Proto,
            tls: TlsConfig::default(),
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            compression_params: CompressionParams::default(),
            timeout: default_timeout(),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
        }
    }

    /// The path OTLP/HTTP gives `signal` under a base URL.
    pub fn signal_path(signal: Signal) -> &'static str {
        match signal {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
            Signal::Profiles => "/v1development/profiles",
        }
    }

    fn override_for(&self, signal: Signal) -> Option<&String> {
        match signal {
            Signal::Traces => self.traces_endpoint.as_ref(),
            Signal::Metrics => self.metrics_endpoint.as_ref(),
            Signal::Logs => self.logs_endpoint.as_ref(),
            Signal::Profiles => self.profiles_endpoint.as_ref(),
        }
    }

    /// Where `signal` is posted, or `None` when neither `endpoint` nor its own key is set.
    fn url(&self, signal: Signal, path: &str) -> Result<Option<String>, ConfigError> {
        let (key, url) = match (self.override_for(signal), &self.endpoint) {
            (Some(u), _) => (format!("{signal}_endpoint"), u.trim().to_string()),
            (None, Some(base)) => {
                ("endpoint".to_string(), format!("{}{}", base.trim().trim_end_matches('/'), Self::signal_path(signal)))
            }
            (None, None) => return Ok(None),
        };
        let bad = |m: String| ConfigError::new(format!("{path}.{key}"), m);
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(format!("`{url}` needs http:// or https://")));
        };
        if scheme != "http" && scheme != "https" {
            return Err(bad(format!("`{url}` needs http:// or https://")));
        }
        if rest.split('/').next().unwrap_or("").is_empty() {
            return Err(bad(format!("`{url}` has no host")));
        }
        reqwest::Url::parse(&url).map_err(|e| bad(format!("`{url}`: {e}")))?;
        Ok(Some(url))
    }
}

/// An OTLP/HTTP client for every signal the config gives a URL for.
pub struct HttpClient {
    client: reqwest::Client,
    /// By [`Signal::index`].
    urls: [Option<String>; 4],
    headers: HeaderMap,
    /// The gzip level, when compressing.
    gzip: Option<u32>,
    json: bool,
}

impl HttpClient {
    /// Checks `cfg`, reads its TLS files and builds the client; errors name the key under
    /// `path`.
    pub fn new(cfg: &OtlpHttpConfig, path: &str) -> Result<Self, ConfigError> {
        let mut urls: [Option<String>; 4] = Default::default();
        for s in Signal::ALL {
            urls[s.index()] = cfg.url(s, path)?;
        }
        if urls.iter().all(Option::is_none) {
            return Err(ConfigError::new(
                format!("{path}.endpoint"),
                "required: the backend's base URL (or a <signal>_endpoint)",
            ));
        }
        let tls_path = format!("{path}.tls");
        let material = cfg.tls.material(&tls_path)?;
        let mut b = reqwest::Client::builder().timeout(cfg.timeout).connect_timeout(cfg.timeout).use_rustls_tls();
        if let Some(ca) = material.ca {
            let cert = reqwest::Certificate::from_pem(&ca)
                .map_err(|e| ConfigError::new(format!("{tls_path}.ca_file"), format!("not a PEM certificate: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        if let Some((cert, key)) = material.identity {
            let pem = [cert, b"\n".to_vec(), key].concat();
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ConfigError::new(format!("{tls_path}.cert_file"), format!("not a PEM certificate and key: {e}"))
            })?;
            b = b.identity(id);
        }
        if cfg.tls.server_name_override.is_some() {
            return Err(ConfigError::new(
                format!("{tls_path}.server_name_override"),
                "is not supported for OTLP/HTTP; use a host name the certificate names",
            ));
        }
        if cfg.tls.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| ConfigError::new(format!("{path}.headers"), format!("`{k}` is not a header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| ConfigError::new(format!("{path}.headers.{k}"), "not a valid header value"))?;
            headers.insert(name, value);
        }
        let client = b.build().map_err(|e| ConfigError::new(path, format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            urls,
            headers,
            gzip: (cfg.compression == Compression::Gzip).then(|| cfg.compression_params.level(path)).transpose()?,
            json: cfg.encoding == Encoding::Json,
        })
    }

    /// Where `signal` goes, if anywhere.
    pub fn url(&self, signal: Signal) -> Option<&str> {
        self.urls[signal.index()].as_deref()
    }
}

#[async_trait]
impl Transport for HttpClient {
    /// OTLP/JSON or protobuf, gzipped when asked, once: retries send the same bytes.
    fn prepare(&self, data: Data) -> Result<Request, SendError> {
        let signal = data.signal();
        if self.url(signal).is_none() {
            return Err(SendError::Permanent(format!("no endpoint for {signal}")));
        }
        let body = if self.json {
            json::encode(&data).map_err(|e| SendError::Permanent(format!("OTLP/JSON encoding: {e}")))?
        } else {
            data.encode_to_vec()
        };
        let body = if let Some(level) = self.gzip { gzip(&body, level) } else { body };
        Ok(Request { signal, items: data.items(), payload: Payload::Wire(body.into()) })
    }

    async fn send(&self, request: &Request) -> Result<Sent, SendError> {
        let signal = request.signal;
        let Some(url) = self.url(signal) else {
            return Err(SendError::Permanent(format!("no endpoint for {signal}")));
        };
        let body = request.as_wire()?.clone();
        let content_type = if self.json { "application/json" } else { "application/x-protobuf" };
        let mut rb = self.client.post(url).headers(self.headers.clone()).header(CONTENT_TYPE, content_type);
        if self.gzip.is_some() {
            rb = rb.header(CONTENT_ENCODING, "gzip");
        }
        let resp = match rb.body(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => return Err(SendError::Permanent(format!("HTTP request to {url}: {e}"))),
            Err(e) => return Err(SendError::Retryable { message: format!("HTTP to {url}: {e}"), retry_after: None }),
        };
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let json_body = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        let bytes = resp.bytes().await.unwrap_or_default();
        classify(signal, status, retry_after, json_body, &bytes)
    }
}

/// gzip at `level` (writing into a vector cannot fail).
pub fn gzip(body: &[u8], level: u32) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::new(level));
    let _ = gz.write_all(body);
    gz.finish().unwrap_or_default()
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// OTLP/HTTP rules: 2xx is success (the body may carry a partial success), 429/502/503/504 are
/// retryable, every other status is permanent.
pub fn classify(
    signal: Signal,
    status: StatusCode,
    retry_after: Option<Duration>,
    json_body: bool,
    body: &[u8],
) -> Result<Sent, SendError> {
    if status.is_success() {
        let (rejected, message) = json::partial_success(signal, json_body, body);
        return Ok(Sent { rejected, message });
    }
    // The body should be a google.rpc.Status; plain text from proxies is common too.
    let detail = match (json_body, tonic_types::pb::Status::decode(body)) {
        (false, Ok(s)) if !s.message.is_empty() => s.message,
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string(),
    };
    let message = format!("HTTP {status}: {detail}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(SendError::Retryable { message, retry_after }),
        _ => Err(SendError::Permanent(message)),
    }
}

/// Makes `otlphttp` exporters.
pub struct OtlpHttpFactory;

impl ExporterFactory for OtlpHttpFactory {
    fn kind(&self) -> &'static str {
        "otlphttp"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["otlp_http"]
    }

    fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    fn create(
        &self,
        id: &ComponentId,
        config: serde_yaml::Value,
        path: &str,
    ) -> Result<Box<dyn BuildExporter>, ConfigError> {
        let cfg: OtlpHttpConfig = deserialize_at(path, config)?;
        cfg.retry_on_failure.validate(&format!("{path}.retry_on_failure"))?;
        cfg.sending_queue.validate(&format!("{path}.sending_queue"))?;
        let client = Arc::new(HttpClient::new(&cfg, path)?);
        Ok(Box::new(BuildOtlpHttp { id: id.clone(), cfg, client }))
    }
}

struct BuildOtlpHttp {
    id: ComponentId,
    cfg: OtlpHttpConfig,
    client: Arc<HttpClient>,
}

impl BuildExporter for BuildOtlpHttp {
    fn build(&self, signal: Signal, host: &Host) -> Result<Arc<dyn Exporter>, ComponentError> {
        if self.client.url(signal).is_none() {
            return Err(ComponentError::new(
                &self.id,
                format!("no URL for {signal}: set endpoint or {signal}_endpoint"),
            ));
        }
        let client = self.client.clone();
        Ok(QueuedExporter::start(&self.id, signal, client, &self.cfg.sending_queue, &self.cfg.retry_on_failure, host))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};

    use super::*;

    #[test]
    fn http_statuses_follow_the_otlp_retry_rules() {
        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess { rejected_spans: 2, error_message: "too old".into() }),
        };
        assert_eq!(
            classify(Signal::Traces, StatusCode::OK, None, false, &partial.encode_to_vec()),
            Ok(Sent { rejected: 2, message: "too old".into() })
        );
        let as_json = br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"dup"}}"#;
        assert_eq!(
            classify(Signal::Traces, StatusCode::OK, None, true, as_json),
            Ok(Sent { rejected: 3, message: "dup".into() })
        );
        assert_eq!(classify(Signal::Logs, StatusCode::OK, None, false, b""), Ok(Sent::default()));
        for code in [429, 502, 503, 504] {
            let s = StatusCode::from_u16(code).unwrap();
            let r = classify(Signal::Logs, s, Some(Duration::from_secs(3)), false, b"");
            assert!(matches!(r, Err(SendError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(3)));
        }
        for code in [400, 401, 404, 413, 500] {
            let r = classify(Signal::Logs, StatusCode::from_u16(code).unwrap(), None, false, b"no");
            assert!(matches!(r, Err(SendError::Permanent(_))), "{code}");
        }
        let status = tonic_types::pb::Status { code: 3, message: "bad span".into(), details: vec![] };
        let r = classify(Signal::Traces, StatusCode::BAD_REQUEST, None, false, &status.encode_to_vec());
        assert_eq!(r, Err(SendError::Permanent("HTTP 400 Bad Request: bad span".into())));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "in the past");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn urls_per_signal_from_the_base_or_their_own_key() {
        let mut cfg = OtlpHttpConfig::new("https://c:4318/otlp/");
        cfg.logs_endpoint = Some("http://l:1/custom".into());
        let c = HttpClient::new(&cfg, "exporters.otlphttp").unwrap();
        assert_eq!(c.url(Signal::Traces), Some("https://c:4318/otlp/v1/traces"));
        assert_eq!(c.url(Signal::Profiles), Some("https://c:4318/otlp/v1development/profiles"));
        assert_eq!(c.url(Signal::Logs), Some("http://l:1/custom"));
        let only = OtlpHttpConfig { endpoint: None, metrics_endpoint: Some("http://m:1/x".into()), ..cfg.clone() };
        let c = HttpClient::new(&only, "e").unwrap();
        assert_eq!((c.url(Signal::Metrics), c.url(Signal::Traces)), (Some("http://m:1/x"), None));
        let bad = OtlpHttpConfig { traces_endpoint: Some("c:4318".into()), ..cfg };
        assert_eq!(HttpClient::new(&bad, "e").err().unwrap().path, "e.traces_endpoint");
        let none = OtlpHttpConfig { endpoint: None, ..OtlpHttpConfig::new("") };
        assert_eq!(HttpClient::new(&none, "e").err().unwrap().path, "e.endpoint");
        let yaml = serde_yaml::from_str("{endpoint: 'http://x:1', encoding: xml}").unwrap();
        let e =
            OtlpHttpFactory.create(&ComponentId::parse("otlphttp").unwrap(), yaml, "exporters.otlphttp").err().unwrap();
        assert_eq!(e.path, "exporters.otlphttp.encoding");
    }
}
