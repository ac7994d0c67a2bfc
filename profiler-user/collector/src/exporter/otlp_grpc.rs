//! `otlp` (alias `otlp_grpc`): OTLP/gRPC through tonic, one lazily connected channel shared by
//! the exporter's signals (a backend that is down at start is fine), opentelemetry-proto's
//! generated client per signal (`TraceService`, `MetricsService`, `LogsService`,
//! `v1development.ProfilesService`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use serde::Deserialize;
use tonic::{
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code, Status,
};
use tonic_types::StatusExt;

use super::{
    config::{default_timeout, headers, Compression, CompressionParams, QueueConfig, RetryConfig, TlsConfig},
    queued::QueuedExporter,
    transport::{Payload, Request, SendError, Sent, Transport},
};
use crate::{
    component::{BuildExporter, ComponentError, ComponentId, Exporter, ExporterFactory, Host},
    config::{deserialize_at, ConfigError},
    signal::{Data, Signal},
};

/// `exporters.otlp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpGrpcConfig {
    /// `host:port` (TLS unless `tls.insecure`) or `http://` / `https://host:port`.
    #[serde(default)]
    pub endpoint: String,
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

impl OtlpGrpcConfig {
    /// Collector style `endpoint` with defaults for everything else.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: TlsConfig::default(),
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            compression_params: CompressionParams::default(),
            timeout: default_timeout(),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
        }
    }
}

/// The URL to connect to: `endpoint` with a scheme (https unless `tls.insecure`).
pub fn grpc_url(endpoint: &str, insecure: bool) -> Result<String, String> {
    let e = endpoint.trim();
    if e.is_empty() {
        return Err("required: the backend's host:port".into());
    }
    let url = match e.split_once("://") {
        Some(("http" | "https", _)) => e.to_string(),
        Some((scheme, _)) => {
            return Err(format!("`{e}`: scheme {scheme}:// is not supported; use host:port, http:// or https://"))
        }
        None => format!("{}://{e}", if insecure { "http" } else { "https" }),
    };
    let authority = url.split_once("://").map(|(_, r)| r.split('/').next().unwrap_or("")).unwrap_or("");
    if authority.is_empty() {
        return Err(format!("`{e}` has no host"));
    }
    Ok(url)
}

/// A checked OTLP/gRPC target; connecting is deferred to [`GrpcClient::connect`] because it
/// needs the runtime.
#[derive(Clone)]
pub struct GrpcTarget {
    endpoint: Endpoint,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// The gzip level, when compressing.
    gzip: Option<u32>,
}

impl GrpcTarget {
    /// Checks `cfg` and reads its TLS files; errors name the key under `path`.
    pub fn new(cfg: &OtlpGrpcConfig, path: &str) -> Result<Self, ConfigError> {
        let url =
            grpc_url(&cfg.endpoint, cfg.tls.insecure).map_err(|m| ConfigError::new(format!("{path}.endpoint"), m))?;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ConfigError::new(format!("{path}.endpoint"), format!("`{url}`: {e}")))?
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout);
        if cfg.tls.insecure_skip_verify {
            return Err(ConfigError::new(
                format!("{path}.tls.insecure_skip_verify"),
                "is not supported for OTLP/gRPC; give the server's CA in tls.ca_file",
            ));
        }
        if url.starts_with("https://") {
            let material = cfg.tls.material(&format!("{path}.tls"))?;
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = material.ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = material.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &cfg.tls.server_name_override {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| ConfigError::new(format!("{path}.tls"), e.to_string()))?;
        }
        let headers = headers(&cfg.headers)
            .into_iter()
            .map(|(k, v)| {
                let key = AsciiMetadataKey::from_bytes(k.as_bytes()).map_err(|_| {
                    ConfigError::new(format!("{path}.headers"), format!("`{k}` is not a gRPC metadata name"))
                })?;
                let value = AsciiMetadataValue::try_from(v.as_str())
                    .map_err(|_| ConfigError::new(format!("{path}.headers.{k}"), "not a printable ASCII value"))?;
                Ok((key, value))
            })
            .collect::<Result<_, ConfigError>>()?;
        let gzip = (cfg.compression == Compression::Gzip).then(|| cfg.compression_params.level(path)).transpose()?;
        Ok(Self { endpoint, headers, gzip })
    }
}

/// An OTLP/gRPC client for every signal over one channel.
///
/// A unary call made by hand over the tonic channel (connection, TLS, HTTP/2) rather than
/// with the generated clients: the request is encoded, compressed (at `compression_params.level`,
/// where tonic fixes zlib's 6) and framed once, in [`Transport::prepare`], and every attempt
/// sends those bytes; the generated clients take the message by value, which meant a deep copy
/// of the data per attempt and an encoding per attempt.
#[derive(Clone)]
pub struct GrpcClient {
    channel: Channel,
    headers: http::HeaderMap,
    gzip: Option<u32>,
}

impl GrpcClient {
    /// A lazily connecting client; must be called inside the runtime.
    pub fn connect(target: &GrpcTarget) -> Self {
        let mut headers = http::HeaderMap::new();
        for (k, v) in &target.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(k.as_str().as_bytes()),
                http::HeaderValue::from_bytes(v.as_encoded_bytes()),
            ) {
                headers.insert(name, value);
            }
        }
        Self { channel: target.endpoint.connect_lazy(), headers, gzip: target.gzip }
    }
}

/// The Export method of a signal's service.
fn method(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        Signal::Profiles => "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
    }
}

/// A gRPC length-prefixed message: the compressed flag, the length (big endian), the bytes.
fn frame(message: &[u8], compressed: bool) -> Result<bytes::Bytes, SendError> {
    let len = u32::try_from(message.len())
        .map_err(|_| SendError::Permanent(format!("a request of {} bytes is too large for gRPC", message.len())))?;
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(compressed as u8);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(out.into())
}

/// The message of a unary response body (one frame), decompressed if the server compressed it.
fn unframe(body: &[u8]) -> Result<Vec<u8>, String> {
    let (head, rest) = body.split_at_checked(5).ok_or("a response shorter than its frame header")?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let message = rest.get(..len).ok_or("a response shorter than its frame")?;
    if head[0] == 0 {
        return Ok(message.to_vec());
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(message), &mut out)
        .map_err(|e| format!("a compressed response that does not inflate: {e}"))?;
    Ok(out)
}

/// `rejected_*` and the message of an Export response's partial success.
fn partial_success(signal: Signal, message: &[u8]) -> Sent {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceResponse, metrics::v1::ExportMetricsServiceResponse,
        profiles::v1development::ExportProfilesServiceResponse, trace::v1::ExportTraceServiceResponse,
    };
    use prost::Message;
    let (rejected, text) = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(message)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(message)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(message)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
        Signal::Profiles => ExportProfilesServiceResponse::decode(message)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_profiles, p.error_message)),
    }
    .unwrap_or_default();
    Sent { rejected, message: text }
}

/// A non-200 HTTP status from something in front of the server, as gRPC maps it.
fn http_status(status: http::StatusCode) -> SendError {
    let message = format!("HTTP {status} instead of a gRPC response");
    match status.as_u16() {
        429 | 502 | 503 | 504 => SendError::Retryable { message, retry_after: None },
        _ => SendError::Permanent(message),
    }
}

#[async_trait]
impl Transport for GrpcClient {
    fn prepare(&self, data: Data) -> Result<Request, SendError> {
        let encoded = data.encode_to_vec();
        let body = match self.gzip {
            Some(level) => frame(&super::otlp_http::gzip(&encoded, level), true)?,
            None => frame(&encoded, false)?,
        };
        Ok(Request { signal: data.signal(), items: data.items(), payload: Payload::Wire(body) })
    }

    async fn send(&self, request: &Request) -> Result<Sent, SendError> {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let body = request.as_wire()?.clone();
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri(method(request.signal))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header("grpc-accept-encoding", "gzip")
            .body(tonic::body::Body::new(http_body_util::Full::new(body)))
            .map_err(|e| SendError::Permanent(format!("building the gRPC request: {e}")))?;
        if self.gzip.is_some() {
            req.headers_mut().insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        }
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let resp = self.channel.clone().oneshot(req).await.map_err(|e| {
            let status = Status::from_error(Box::new(e));
            classify(&status)
        })?;
        if resp.status() != http::StatusCode::OK {
            return Err(http_status(resp.status()));
        }
        // Trailers-only: the status is in the headers.
        if let Some(status) = Status::from_header_map(resp.headers()) {
            if status.code() != Code::Ok {
                return Err(classify(&status));
            }
        }
        let collected = resp.into_body().collect().await.map_err(|e| classify(&Status::from_error(Box::new(e))))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let body = collected.to_bytes();
        match Status::from_header_map(&trailers) {
            Some(status) if status.code() != Code::Ok => return Err(classify(&status)),
            Some(_) => {}
            None if body.is_empty() => {
                return Err(SendError::Retryable {
                    message: "a gRPC response without a status".into(),
                    retry_after: None,
                })
            }
            None => {}
        }
        let message = unframe(&body).map_err(SendError::Permanent)?;
        Ok(partial_success(request.signal, &message))
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

/// Makes `otlp` exporters.
pub struct OtlpGrpcFactory;

impl ExporterFactory for OtlpGrpcFactory {
    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["otlp_grpc"]
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
        let cfg: OtlpGrpcConfig = deserialize_at(path, config)?;
        cfg.retry_on_failure.validate(&format!("{path}.retry_on_failure"))?;
        cfg.sending_queue.validate(&format!("{path}.sending_queue"))?;
        let target = GrpcTarget::new(&cfg, path)?;
        Ok(Box::new(BuildOtlpGrpc { id: id.clone(), cfg, target, client: Mutex::new(None) }))
    }
}

struct BuildOtlpGrpc {
    id: ComponentId,
    cfg: OtlpGrpcConfig,
    target: GrpcTarget,
    /// The channel every signal of this exporter shares, made at the first build.
    client: Mutex<Option<Arc<GrpcClient>>>,
}

impl BuildExporter for BuildOtlpGrpc {
    fn build(&self, signal: Signal, host: &Host) -> Result<Arc<dyn Exporter>, ComponentError> {
        let client = {
            let mut cached = self.client.lock().unwrap_or_else(|e| e.into_inner());
            cached.get_or_insert_with(|| Arc::new(GrpcClient::connect(&self.target))).clone()
        };
        Ok(QueuedExporter::start(&self.id, signal, client, &self.cfg.sending_queue, &self.cfg.retry_on_failure, host))
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::ErrorDetails;

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

    #[test]
    fn endpoints_as_the_collector_writes_them() {
        assert_eq!(grpc_url("collector:4317", false).unwrap(), "https://collector:4317");
        assert_eq!(grpc_url("collector:4317", true).unwrap(), "http://collector:4317");
        assert_eq!(grpc_url("http://c:4317", false).unwrap(), "http://c:4317");
        assert!(grpc_url("", true).unwrap_err().contains("required"));
        assert!(grpc_url("unix:///sock", true).is_err());
        assert!(grpc_url("http://", true).unwrap_err().contains("no host"));
        let e = OtlpGrpcFactory
            .create(&ComponentId::parse("otlp").unwrap(), serde_yaml::Value::Null, "exporters.otlp")
            .err()
            .unwrap();
        assert_eq!(e.path, "exporters.otlp.endpoint");
        let yaml = serde_yaml::from_str("{endpoint: x:1, sending_queue: {num_consumers: 0}}").unwrap();
        let e = OtlpGrpcFactory.create(&ComponentId::parse("otlp").unwrap(), yaml, "exporters.otlp").err().unwrap();
        assert_eq!(e.path, "exporters.otlp.sending_queue.num_consumers");
        let yaml = serde_yaml::from_str("{endpoint: x:1, keepalive: {}}").unwrap();
        let e = OtlpGrpcFactory.create(&ComponentId::parse("otlp").unwrap(), yaml, "exporters.otlp").err().unwrap();
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
