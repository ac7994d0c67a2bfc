//! Endpoint settings, spelled like the OpenTelemetry Collector's `otlp` / `otlphttp` exporters.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use serde::Deserialize;

/// OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC, `opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export`.
    #[default]
    Grpc,
    /// OTLP/HTTP, `POST …/v1development/profiles` with `application/x-protobuf`.
    Http,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// `tls:` of an exporter.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// gRPC without TLS (plaintext), as the Collector's `insecure: true`.
    #[serde(default)]
    pub insecure: bool,
    /// TLS without verifying the server's certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM CA bundle to trust in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The PEM contents of a [`TlsConfig`]'s files.
#[derive(Default)]
pub struct TlsFiles {
    /// Extra CA bundle.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsConfig {
    /// Reads the PEM files, with the path in any error.
    pub fn read(&self) -> anyhow::Result<TlsFiles> {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let ca = self.ca_file.as_ref().map(read).transpose()?;
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => bail!("tls: cert_file and key_file go together"),
        };
        Ok(TlsFiles { ca, identity })
    }
}

/// `retry_on_failure:` of an exporter (Collector defaults).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

/// Byte sizer: the only one that bounds memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    #[default]
    Bytes,
}

/// `sending_queue:` of an exporter. Always bounded by bytes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub enabled: bool,
    pub sizer: Sizer,
    /// Bytes of encoded requests the queue holds at most.
    pub queue_size: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { enabled: true, sizer: Sizer::Bytes, queue_size: 64 << 20 }
    }
}

/// One exporter's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Set by the exporter's kind (`otlp` → gRPC, `otlphttp` → HTTP), not by a key.
    #[serde(skip)]
    pub protocol: Protocol,
    /// `host:port` or a URL (`http://`, `https://`; `grpc://`/`grpcs://` on the command line).
    pub endpoint: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub sending_queue: QueueConfig,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl EndpointConfig {
    /// From a command-line URL: `grpc://host:port` (plaintext gRPC), `grpcs://host:port` (gRPC
    /// over TLS), `http(s)://host:port[/path]` (OTLP/HTTP).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let (protocol, endpoint, insecure) = if let Some(rest) = url.strip_prefix("grpc://") {
            (Protocol::Grpc, format!("http://{rest}"), true)
        } else if let Some(rest) = url.strip_prefix("grpcs://") {
            (Protocol::Grpc, format!("https://{rest}"), false)
        } else if url.starts_with("http://") || url.starts_with("https://") {
            (Protocol::Http, url.to_string(), false)
        } else {
            bail!("bad export URL {url:?}: use grpc://host:port, grpcs://host:port or http(s)://host:port");
        };
        let cfg = Self {
            protocol,
            endpoint,
            headers: BTreeMap::new(),
            compression: Compression::Gzip,
            timeout: default_timeout(),
            tls: TlsConfig { insecure, ..Default::default() },
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
        };
        cfg.url()?;
        Ok(cfg)
    }

    /// The URL to connect to. gRPC: `endpoint` with a scheme (https unless `tls.insecure`).
    /// HTTP: the base URL plus `/v1development/profiles` unless it already names that path.
    pub fn url(&self) -> anyhow::Result<String> {
        let e = self.endpoint.trim();
        if e.is_empty() {
            bail!("endpoint is empty");
        }
        let url = match self.protocol {
            Protocol::Grpc if e.contains("://") => e.to_string(),
            Protocol::Grpc => format!("{}://{e}", if self.tls.insecure { "http" } else { "https" }),
            Protocol::Http => {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    bail!("otlphttp endpoint {e:?} needs http:// or https://");
                }
                if e.ends_with("/v1development/profiles") {
                    e.to_string()
                } else {
                    format!("{}/v1development/profiles", e.trim_end_matches('/'))
                }
            }
        };
        let authority = url.split_once("://").map(|(_, r)| r.split('/').next().unwrap_or("")).unwrap_or("");
        if authority.is_empty() {
            bail!("endpoint {e:?} has no host");
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_the_command_line() {
        let g = EndpointConfig::from_url("grpc://127.0.0.1:4317").unwrap();
        assert_eq!((g.protocol, g.url().unwrap()), (Protocol::Grpc, "http://127.0.0.1:4317".to_string()));
        assert!(g.tls.insecure);
        let gs = EndpointConfig::from_url("grpcs://otel.example:4317").unwrap();
        assert_eq!(gs.url().unwrap(), "https://otel.example:4317");
        let h = EndpointConfig::from_url("http://localhost:4040").unwrap();
        assert_eq!(
            (h.protocol, h.url().unwrap()),
            (Protocol::Http, "http://localhost:4040/v1development/profiles".to_string())
        );
        let h2 = EndpointConfig::from_url("https://x:4318/v1development/profiles").unwrap();
        assert_eq!(h2.url().unwrap(), "https://x:4318/v1development/profiles");
        assert!(EndpointConfig::from_url("ftp://x").unwrap_err().to_string().contains("bad export URL"));
        assert!(EndpointConfig::from_url("http://").unwrap_err().to_string().contains("no host"));
    }

    #[test]
    fn collector_style_grpc_endpoints() {
        let mut c = EndpointConfig::from_url("grpc://x:1").unwrap();
        c.endpoint = "collector:4317".into();
        c.tls.insecure = false;
        assert_eq!(c.url().unwrap(), "https://collector:4317");
        c.tls.insecure = true;
        assert_eq!(c.url().unwrap(), "http://collector:4317");
    }
}
