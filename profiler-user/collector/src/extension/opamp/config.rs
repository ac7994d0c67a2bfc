//! `extensions.opamp`:
//!
//! ```yaml
//! extensions:
//!   opamp:
//!     server: { ws: { endpoint: wss://opamp:4320/v1/opamp, headers: {}, tls: {} } }   # or http: {…, polling_interval}
//!     instance_uid: ""                    # optional; else made once and kept in storage.directory
//!     storage: { directory: /var/lib/otelprof/opamp }
//!     config_apply_timeout: 5s
//!     remote_config:
//!       enabled: false                    # the default: the server can watch, not change
//!       allowed_paths: ["receivers.profiling", "processors.transform/*", "exporters.otlp.endpoint"]
//!       files_dir: /var/lib/otelprof/remote-files
//!       signature: { public_key_file: /etc/otelprof/opamp-ed25519.pub }
//! ```

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{
    config::{deserialize_at, ConfigError},
    exporter::config::TlsConfig,
};

/// The checked `extensions.opamp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpampConfig {
    pub server: ServerConfig,
    /// A UUID (any version) to use instead of the stored one; empty: the stored one.
    #[serde(default)]
    pub instance_uid: String,
    #[serde(default)]
    pub storage: StorageConfig,
    /// How long components have to report healthy after a remote config is swapped in.
    #[serde(default = "default_apply_timeout", with = "humantime_serde")]
    pub config_apply_timeout: Duration,
    #[serde(default)]
    pub remote_config: RemoteConfigPolicy,
}

fn default_apply_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `server:`: exactly one of `ws` and `http`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub ws: Option<Endpoint>,
    pub http: Option<Endpoint>,
}

/// `server.ws` / `server.http`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub endpoint: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// HTTP only: how often to poll when nothing changed (the server's heartbeat interval,
    /// when it offers one, replaces it). Default 30 s, as opamp-go's.
    #[serde(default, with = "humantime_serde")]
    pub polling_interval: Option<Duration>,
}

/// `storage:`: where the instance UID and the last good remote config are kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub directory: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { directory: PathBuf::from("/var/lib/otelprof/opamp") }
    }
}

/// `remote_config:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfigPolicy {
    /// Off by default: the agent then does not report AcceptsRemoteConfig and ignores offers.
    pub enabled: bool,
    /// Dotted key paths a remote config may set; `*` matches one segment, an entry covers
    /// everything below it.
    pub allowed_paths: Vec<String>,
    /// Every file path in a remote config must lie under this directory.
    pub files_dir: PathBuf,
    pub signature: Option<SignaturePolicy>,
}

impl Default for RemoteConfigPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_paths: Vec::new(),
            files_dir: PathBuf::from("/var/lib/otelprof/remote-files"),
            signature: None,
        }
    }
}

/// `remote_config.signature`: a remote config is applied only with a detached Ed25519
/// signature over its bytes (`otelprof.yaml.sig`) that this key verifies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePolicy {
    pub public_key_file: PathBuf,
}

impl OpampConfig {
    /// Parses `extensions.opamp` (at `path`) and checks what can be checked without the network.
    pub fn parse(path: &str, value: serde_yaml::Value) -> Result<Self, ConfigError> {
        let c: OpampConfig = deserialize_at(path, value)?;
        let (kind, endpoint) = match (&c.server.ws, &c.server.http) {
            (Some(e), None) => ("ws", e),
            (None, Some(e)) => ("http", e),
            _ => return Err(ConfigError::new(format!("{path}.server"), "give exactly one of `ws` and `http`")),
        };
        let at = format!("{path}.server.{kind}.endpoint");
        let schemes: &[&str] = if kind == "ws" { &["ws://", "wss://"] } else { &["http://", "https://"] };
        if !schemes.iter().any(|s| endpoint.endpoint.starts_with(s)) {
            return Err(ConfigError::new(at, format!("`{}` is not a {} URL", endpoint.endpoint, schemes.join(" or "))));
        }
        if kind == "ws" && endpoint.polling_interval.is_some() {
            return Err(ConfigError::new(
                format!("{path}.server.ws.polling_interval"),
                "a WebSocket connection is not polled: polling_interval is for `http`",
            ));
        }
        endpoint.tls.material(&format!("{path}.server.{kind}.tls"))?;
        if !c.instance_uid.is_empty() && parse_uuid(&c.instance_uid).is_none() {
            return Err(ConfigError::new(
                format!("{path}.instance_uid"),
                format!("`{}` is not a UUID (8-4-4-4-12 hex digits)", c.instance_uid),
            ));
        }
        if c.config_apply_timeout.is_zero() {
            return Err(ConfigError::new(format!("{path}.config_apply_timeout"), "must be more than 0"));
        }
        for (i, p) in c.remote_config.allowed_paths.iter().enumerate() {
            if p.is_empty() || p.split('.').any(str::is_empty) {
                return Err(ConfigError::new(
                    format!("{path}.remote_config.allowed_paths[{i}]"),
                    format!("`{p}` is not a dotted key path (`processors.transform/*`)"),
                ));
            }
        }
        if c.remote_config.enabled && c.remote_config.allowed_paths.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.remote_config.allowed_paths"),
                "remote configuration is enabled but no key may be changed: list the allowed key paths",
            ));
        }
        if let Some(s) = &c.remote_config.signature {
            super::remote::read_public_key(&s.public_key_file)
                .map_err(|e| ConfigError::new(format!("{path}.remote_config.signature.public_key_file"), e))?;
        }
        Ok(c)
    }

    /// The configured server endpoint and whether it is the WebSocket one (`None` only for a
    /// config that did not go through [`OpampConfig::parse`]).
    pub fn endpoint(&self) -> Option<(&Endpoint, bool)> {
        match (&self.server.ws, &self.server.http) {
            (Some(e), _) => Some((e, true)),
            (None, Some(e)) => Some((e, false)),
            (None, None) => None,
        }
    }

    /// `instance_uid` as 16 bytes, when set.
    pub fn configured_uid(&self) -> Option<[u8; 16]> {
        parse_uuid(&self.instance_uid)
    }
}

/// A UUID's 16 bytes from its text form (hyphens optional).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OpampConfig, ConfigError> {
        OpampConfig::parse("extensions.opamp", serde_yaml::from_str(text).unwrap())
    }

    #[test]
    fn defaults_and_errors() {
        let c = parse("server: {ws: {endpoint: ws://127.0.0.1:4320/v1/opamp}}").unwrap();
        assert!(!c.remote_config.enabled, "remote config is off by default");
        assert_eq!(c.config_apply_timeout, Duration::from_secs(5));
        assert!(c.endpoint().is_some_and(|(_, ws)| ws));
        let cases = [
            ("server: {}", "extensions.opamp.server: give exactly one of `ws` and `http`"),
            (
                "server: {http: {endpoint: ws://x}}",
                "extensions.opamp.server.http.endpoint: `ws://x` is not a http:// or https:// URL",
            ),
            (
                "server: {ws: {endpoint: ws://x, polling_interval: 1s}}",
                "extensions.opamp.server.ws.polling_interval: a WebSocket",
            ),
            (
                "server: {ws: {endpoint: ws://x}}\ninstance_uid: nope",
                "extensions.opamp.instance_uid: `nope` is not a UUID",
            ),
            (
                "server: {ws: {endpoint: ws://x}}\nremote_config: {enabled: true}",
                "extensions.opamp.remote_config.allowed_paths: remote configuration is enabled",
            ),
            (
                "server: {ws: {endpoint: ws://x}}\nremote_config: {allowed_paths: [a..b]}",
                "extensions.opamp.remote_config.allowed_paths[0]: `a..b`",
            ),
            (
                "server: {ws: {endpoint: ws://x}}\nremote_config: {signature: {public_key_file: /nonexistent/k.pub}}",
                "extensions.opamp.remote_config.signature.public_key_file: ",
            ),
            ("server: {ws: {endpoint: ws://x}}\nsurprise: 1", "extensions.opamp.surprise: unknown field `surprise`"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
        assert_eq!(parse_uuid("0192a4c1-7d5e-7b3a-9f00-0123456789ab").map(|u| u[0]), Some(0x01));
    }
}
