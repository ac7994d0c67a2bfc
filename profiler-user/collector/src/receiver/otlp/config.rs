//! The `otlp` receiver's config, in the Collector's keys (`receivers.otlp.protocols.grpc` /
//! `.http`) with its defaults, so a Collector config's `receivers:` section works unchanged.
//!
//! Supported: `grpc.{endpoint, transport, max_recv_msg_size_mib, max_concurrent_streams, tls,
//! auth}`, `http.{endpoint, max_request_body_size, tls, auth, traces_url_path,
//! metrics_url_path, logs_url_path}`, `tls.{cert_file, key_file, client_ca_file}`,
//! `auth.bearer_token_file`. Any other key is an error naming it (rather than being silently
//! ignored, which would e.g. leave a `cors:` block without effect).

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::config::ConfigError;

/// `receivers.otlp`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub protocols: Protocols,
}

/// `receivers.otlp.protocols`: a protocol is enabled when its key is present, even with no
/// value (`grpc:` means all defaults), as in the Collector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

/// A key that is present is `Some`, a present `null` meaning the defaults.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `protocols.grpc` (the Collector's `configgrpc.ServerConfig`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
    /// Only `tcp` (the Collector also knows `unix`).
    #[serde(default)]
    pub transport: Option<String>,
    /// Largest message after decompression, in MiB; 0 means the default (4, grpc-go's).
    #[serde(default)]
    pub max_recv_msg_size_mib: u64,
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: default_grpc_endpoint(),
            transport: None,
            max_recv_msg_size_mib: 0,
            max_concurrent_streams: None,
            tls: None,
            auth: None,
        }
    }
}

/// `protocols.http` (the Collector's `confighttp.ServerConfig` plus the URL paths).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_endpoint")]
    pub endpoint: String,
    /// Largest body after decompression, in bytes; 0 means the default (20 MiB).
    #[serde(default)]
    pub max_request_body_size: u64,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default = "default_traces_path")]
    pub traces_url_path: String,
    #[serde(default = "default_metrics_path")]
    pub metrics_url_path: String,
    #[serde(default = "default_logs_path")]
    pub logs_url_path: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            endpoint: default_http_endpoint(),
            max_request_body_size: 0,
            tls: None,
            auth: None,
            traces_url_path: default_traces_path(),
            metrics_url_path: default_metrics_path(),
            logs_url_path: default_logs_path(),
        }
    }
}

/// `tls` of a server (the Collector's `configtls.ServerConfig`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Client certificates must be signed by one of these CAs (mutual TLS): a client without
    /// a valid certificate cannot complete the handshake.
    pub client_ca_file: Option<PathBuf>,
}

/// `auth`: the Collector names an authenticator extension here; otelprof has no extensions
/// yet, so the bearer token is configured in place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file holding the token clients send as `Authorization: Bearer <token>`.
    pub bearer_token_file: Option<PathBuf>,
    /// The Collector's `authenticator: bearertokenauth`: not supported yet (an error).
    pub authenticator: Option<String>,
}

pub const DEFAULT_GRPC_ENDPOINT: &str = "localhost:4317";
pub const DEFAULT_HTTP_ENDPOINT: &str = "localhost:4318";
/// grpc-go's default, which the Collector keeps.
pub const DEFAULT_MAX_RECV_MSG_SIZE_MIB: u64 = 4;
/// confighttp's default.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 20 * 1024 * 1024;

fn default_grpc_endpoint() -> String {
    DEFAULT_GRPC_ENDPOINT.to_string()
}
fn default_http_endpoint() -> String {
    DEFAULT_HTTP_ENDPOINT.to_string()
}
fn default_traces_path() -> String {
    "/v1/traces".to_string()
}
fn default_metrics_path() -> String {
    "/v1/metrics".to_string()
}
fn default_logs_path() -> String {
    "/v1/logs".to_string()
}

/// Checks what serde cannot: at least one protocol, endpoints of the form `host:port`,
/// transports, sizes. Errors name the key path under `path` (`receivers.otlp`).
pub fn validate(config: &mut Config, path: &str) -> Result<(), ConfigError> {
    let protocols = &mut config.protocols;
    if protocols.grpc.is_none() && protocols.http.is_none() {
        return Err(ConfigError::new(
            format!("{path}.protocols"),
            "must specify at least one protocol (`grpc:` or `http:`) when using the OTLP receiver",
        ));
    }
    if let Some(grpc) = &mut protocols.grpc {
        let at = format!("{path}.protocols.grpc");
        check_endpoint(&grpc.endpoint, &format!("{at}.endpoint"))?;
        if let Some(t) = &grpc.transport {
            if t != "tcp" {
                return Err(ConfigError::new(format!("{at}.transport"), format!("`{t}` is not supported, only `tcp`")));
            }
        }
        if grpc.max_recv_msg_size_mib == 0 {
            grpc.max_recv_msg_size_mib = DEFAULT_MAX_RECV_MSG_SIZE_MIB;
        }
        // The limit is a usize in memory; 4 GiB is gRPC's own frame length limit anyway.
        if grpc.max_recv_msg_size_mib > 4095 {
            return Err(ConfigError::new(format!("{at}.max_recv_msg_size_mib"), "must be below 4096 (4 GiB)"));
        }
        if grpc.max_concurrent_streams == Some(0) {
            return Err(ConfigError::new(format!("{at}.max_concurrent_streams"), "must be at least 1"));
        }
    }
    if let Some(http) = &mut protocols.http {
        let at = format!("{path}.protocols.http");
        check_endpoint(&http.endpoint, &format!("{at}.endpoint"))?;
        if http.max_request_body_size == 0 {
            http.max_request_body_size = DEFAULT_MAX_REQUEST_BODY_SIZE;
        }
        if usize::try_from(http.max_request_body_size).is_err() {
            return Err(ConfigError::new(format!("{at}.max_request_body_size"), "too large for this machine"));
        }
        for (key, value) in [
            ("traces_url_path", &mut http.traces_url_path),
            ("metrics_url_path", &mut http.metrics_url_path),
            ("logs_url_path", &mut http.logs_url_path),
        ] {
            *value = sanitize_url_path(value).map_err(|m| ConfigError::new(format!("{at}.{key}"), m))?;
        }
    }
    Ok(())
}

/// `host:port` with a numeric port; an empty host (`:4317`) means every interface.
fn check_endpoint(endpoint: &str, at: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::new(at, format!("`{endpoint}` is not `host:port`: {why}"));
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| bad("no `:port`"))?;
    port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    if host.contains(char::is_whitespace) {
        return Err(bad("the host has spaces"));
    }
    Ok(())
}

/// The address to bind: `:port` binds every IPv4 interface, `[v6]:port` keeps its brackets.
pub fn bind_address(endpoint: &str) -> String {
    match endpoint.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => endpoint.to_string(),
    }
}

/// As the Collector: a path without a leading `/` gets one; a query or fragment is an error.
fn sanitize_url_path(p: &str) -> Result<String, String> {
    if p.contains(['?', '#']) || p.contains(char::is_whitespace) {
        return Err(format!("`{p}` is not a URL path"));
    }
    Ok(if p.starts_with('/') { p.to_string() } else { format!("/{p}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::deserialize_at;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut c: Config = deserialize_at("receivers.otlp", value)?;
        validate(&mut c, "receivers.otlp")?;
        Ok(c)
    }

    #[test]
    fn a_present_key_enables_its_protocol_with_the_collector_defaults() {
        let c = parse("protocols:\n  grpc:\n").unwrap();
        let grpc = c.protocols.grpc.unwrap();
        assert_eq!(grpc.endpoint, "localhost:4317");
        assert_eq!(grpc.max_recv_msg_size_mib, 4);
        assert!(c.protocols.http.is_none());
        let c = parse("protocols:\n  http: {}\n").unwrap();
        let http = c.protocols.http.unwrap();
        assert_eq!(http.endpoint, "localhost:4318");
        assert_eq!(http.max_request_body_size, 20 * 1024 * 1024);
        assert_eq!(http.traces_url_path, "/v1/traces");
        assert!(c.protocols.grpc.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("protocols: {}").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols");
        let e = parse("").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols");
        let e = parse("protocols:\n  grpc:\n    endpoint: localhost\n").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols.grpc.endpoint", "{e}");
        let e = parse("protocols:\n  http:\n    cors: {}\n").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols.http.cors", "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse("protocols:\n  grpc:\n    max_recv_msg_size_mib: lots\n").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols.grpc.max_recv_msg_size_mib", "{e}");
        let e = parse("protocols:\n  grpc:\n    transport: unix\n").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols.grpc.transport", "{e}");
        let e = parse("protocols:\n  grpc:\n    tls:\n      ca_pem: x\n").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols.grpc.tls.ca_pem", "{e}");
    }

    #[test]
    fn url_paths_get_a_leading_slash() {
        let c = parse("protocols:\n  http:\n    traces_url_path: custom/traces\n").unwrap();
        assert_eq!(c.protocols.http.unwrap().traces_url_path, "/custom/traces");
        let e = parse("protocols:\n  http:\n    logs_url_path: /a?b\n").unwrap_err();
        assert_eq!(e.path, "receivers.otlp.protocols.http.logs_url_path");
        assert_eq!(bind_address(":4317"), "0.0.0.0:4317");
        assert_eq!(bind_address("[::1]:4317"), "[::1]:4317");
    }
}
