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
use opentelemetry_proto::tonic::collector::{
    logs::v1::logs_service_client::LogsServiceClient, metrics::v1::metrics_service_client::MetricsServiceClient,
    profiles::v1development::profiles_service_client::ProfilesServiceClient,
    trace::v1::trace_service_client::TraceServiceClient,
};
use serde::Deserialize;
use tonic::{
    codec::CompressionEncoding,
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Code, Status,
};
use tonic_types::StatusExt;

use super::{
    config::{default_timeout, headers, Compression, QueueConfig, RetryConfig, TlsConfig},
    queued::QueuedExporter,
    transport::{SendError, Sent, Transport},
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
    gzip: bool,
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
        Ok(Self { endpoint, headers, gzip: cfg.compression == Compression::Gzip })
    }
}

/// An OTLP/gRPC client for every signal over one channel.
#[derive(Clone)]
pub struct GrpcClient {
    channel: Channel,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    gzip: bool,
}

impl GrpcClient {
    /// A lazily connecting client; must be called inside the runtime.
    pub fn connect(target: &GrpcTarget) -> Self {
        Self { channel: target.endpoint.connect_lazy(), headers: target.headers.clone(), gzip: target.gzip }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        request
    }
}

/// One export call with a signal's generated client: compression, headers, partial success.
macro_rules! export {
    ($self:ident, $client:ident, $req:expr, $rejected:ident) => {{
        let mut client = $client::new($self.channel.clone()).max_decoding_message_size(usize::MAX);
        if $self.gzip {
            client = client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
        }
        match client.export($self.request($req.clone())).await {
            Ok(resp) => {
                let p = resp.into_inner().partial_success.unwrap_or_default();
                Ok(Sent { rejected: p.$rejected, message: p.error_message })
            }
            Err(status) => Err(classify(&status)),
        }
    }};
}

#[async_trait]
impl Transport for GrpcClient {
    async fn send(&self, data: &Data) -> Result<Sent, SendError> {
        match data {
            Data::Traces(r) => export!(self, TraceServiceClient, r, rejected_spans),
            Data::Metrics(r) => export!(self, MetricsServiceClient, r, rejected_data_points),
            Data::Logs(r) => export!(self, LogsServiceClient, r, rejected_log_records),
            Data::Profiles(r) => export!(self, ProfilesServiceClient, r, rejected_profiles),
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
