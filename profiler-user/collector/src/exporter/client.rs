//! Sending outside a pipeline: `otelprof record --export URL` sends one request, with the same
//! clients and retry rules as the `otlp` and `otlphttp` exporters.
//!
//! ```no_run
//! # async fn f(data: otelprof_collector::signal::Data) {
//! use otelprof_collector::exporter::{export_once, Client, RetryConfig};
//! let client = Client::from_url("grpc://127.0.0.1:4317", &Default::default()).unwrap();
//! match export_once(&client, data, &RetryConfig::default()).await {
//!     Ok(out) if out.rejected > 0 => eprintln!("{} rejected: {}", out.rejected, out.message),
//!     Ok(_) => {}
//!     Err(e) => eprintln!("export failed: {e}"),
//! }
//! # }
//! ```

use std::{collections::BTreeMap, sync::OnceLock};

use super::{
    otlp_grpc::{GrpcClient, GrpcTarget, OtlpGrpcConfig},
    otlp_http::{HttpClient, OtlpHttpConfig},
    retry::{send_with_retry, ExportError, SendOutcome},
    transport::Transport,
    RetryConfig,
};
use crate::{config::ConfigError, signal::Data};

/// An OTLP client, gRPC or HTTP. Making one checks the settings and reads TLS files; the
/// connection is made at the first send, so it can be made before the runtime starts.
pub struct Client(Inner);

enum Inner {
    Grpc(Box<GrpcTarget>, OnceLock<GrpcClient>),
    Http(HttpClient),
}

impl Client {
    /// From a command-line URL: `grpc://host:port` (plaintext gRPC), `grpcs://host:port` (gRPC
    /// over TLS), `http(s)://host:port[/path]` (OTLP/HTTP: a base URL, or the full URL of the
    /// signal when it ends in the signal's path).
    pub fn from_url(url: &str, headers: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let path = "--export";
        if let Some(rest) = url.strip_prefix("grpc://").or_else(|| url.strip_prefix("grpcs://")) {
            let scheme = if url.starts_with("grpc://") { "http" } else { "https" };
            let mut cfg = OtlpGrpcConfig::new(format!("{scheme}://{rest}"));
            cfg.headers = headers.clone();
            return Self::grpc(&cfg, path);
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            let mut cfg = OtlpHttpConfig::new(url);
            let signal_path = OtlpHttpConfig::signal_path(crate::signal::Signal::Profiles);
            if url.trim_end_matches('/').ends_with(signal_path) {
                cfg.profiles_endpoint = Some(url.to_string());
            }
            cfg.headers = headers.clone();
            return Self::http(&cfg, path);
        }
        Err(ConfigError::new(
            path,
            format!("bad export URL {url:?}: use grpc://host:port, grpcs://host:port or http(s)://host:port"),
        ))
    }

    /// An `otlp` exporter's client (`path` names its config in errors).
    pub fn grpc(cfg: &OtlpGrpcConfig, path: &str) -> Result<Self, ConfigError> {
        Ok(Client(Inner::Grpc(Box::new(GrpcTarget::new(cfg, path)?), OnceLock::new())))
    }

    /// An `otlphttp` exporter's client.
    pub fn http(cfg: &OtlpHttpConfig, path: &str) -> Result<Self, ConfigError> {
        Ok(Client(Inner::Http(HttpClient::new(cfg, path)?)))
    }

    /// The transport; connecting (lazily) needs the runtime, which sending has.
    fn transport(&self) -> &dyn Transport {
        match &self.0 {
            Inner::Grpc(target, client) => client.get_or_init(|| GrpcClient::connect(target)),
            Inner::Http(c) => c,
        }
    }
}

/// Sends `data` once, retrying as `retry` allows; the outcome carries the server's partial
/// success (rejected items and its message).
pub async fn export_once(client: &Client, data: Data, retry: &RetryConfig) -> Result<SendOutcome, ExportError> {
    let transport = client.transport();
    let request =
        transport.prepare(data).map_err(|e| ExportError::Permanent { message: e.to_string(), attempts: 0 })?;
    send_with_retry(transport, &request, retry, |message, wait| {
        tracing::info!("export failed ({message}); retrying in {wait:?}");
    })
    .await
}
